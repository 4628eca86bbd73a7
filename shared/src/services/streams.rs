//! The table's change stream as use cases see it: how a batch of records went (`StreamBatch`,
//! which the stream-fed functions answer Lambda with), and the stats counters kept from it.

use serde_json::{json, Value};

use crate::telemetry::error_chain;
use crate::App;

/// How a batch of stream records went: its figures, and the first record that could not be
/// handled, if any. The records before that one are done; it and the ones after it are not.
#[derive(Debug)]
pub struct StreamBatch {
    pub figures: Value,
    pub failed: Option<FailedRecord>,
}

/// The record a batch stopped at.
#[derive(Debug)]
pub struct FailedRecord {
    /// Its sequence number in its shard (`None` only for a record the stream gave none).
    pub sequence: Option<String>,
    /// It is the batch's first record.
    pub first: bool,
    /// Why, in words for the log (never the record itself).
    pub cause: String,
}

/// Counts the records of a stream event in order, up to the first that fails.
pub async fn count_stream_event(app: &App, event: &Value) -> StreamBatch {
    use crate::adapters::store::{records_from_event, StatsOutcome};
    let records = records_from_event(event);
    let (mut counted, mut repeated) = (0, 0);
    let mut failed = None;
    let mut epochs = std::collections::HashMap::new();
    for (index, record) in records.iter().enumerate() {
        match app.store.count_stream_record(record, &mut epochs).await {
            Ok(StatsOutcome::Counted) => counted += 1,
            Ok(StatsOutcome::AlreadyCounted) => repeated += 1,
            Ok(StatsOutcome::Nothing) => {}
            Err(err) => {
                failed = Some(FailedRecord {
                    sequence: record.sequence.clone(),
                    first: index == 0,
                    cause: error_chain(&err),
                });
                break;
            }
        }
    }
    StreamBatch {
        figures: json!({ "records": records.len(), "counted": counted, "alreadyCounted": repeated }),
        failed,
    }
}
