//! Amazon EventBridge: billing events out to the deployment's bus. Each entry is one event with
//! its own id in `detail.id`; a batch that fails is failed as a whole, so that the stream batch
//! it came from is retried (entries already accepted are then sent again with the same ids, and
//! subscribers drop them).

use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

/// The `source` of every event Coffer publishes.
pub const EVENT_SOURCE: &str = "coffer";
/// PutEvents takes at most this many entries.
pub const ENTRIES_PER_CALL: usize = 10;

/// One event ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingEvent {
    /// The `detail-type`: `plan.changed`, `credits.low`, …
    pub detail_type: String,
    /// When the change happened (Unix seconds).
    pub time_secs: i64,
    /// The whole event as subscribers read it (with `id`).
    pub detail: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("EventBridge call failed: {0}")]
    Call(String),
    #[error("EventBridge refused {failed} of {sent} entries (first: {code})")]
    Refused {
        failed: i32,
        sent: usize,
        code: String,
    },
    #[error("an event could not be built: {0}")]
    Build(String),
}

pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        Self {
            client,
            bus_name: bus_name.into(),
        }
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// Sends every event, ten to a call; an error when any entry was not accepted.
    pub async fn publish(&self, events: &[OutgoingEvent]) -> Result<(), PublishError> {
        for chunk in events.chunks(ENTRIES_PER_CALL) {
            let mut request = self.client.put_events();
            for event in chunk {
                request = request.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus_name)
                        .source(EVENT_SOURCE)
                        .detail_type(&event.detail_type)
                        .detail(event.detail.to_string())
                        .time(DateTime::from_secs(event.time_secs))
                        .build(),
                );
            }
            let output = request.send().await.map_err(|err| {
                PublishError::Call(
                    aws_sdk_eventbridge::error::DisplayErrorContext(&err).to_string(),
                )
            })?;
            let failed = output.failed_entry_count();
            if failed > 0 {
                let code = output
                    .entries()
                    .iter()
                    .find_map(|e| e.error_code())
                    .unwrap_or("unknown")
                    .to_owned();
                return Err(PublishError::Refused {
                    failed,
                    sent: chunk.len(),
                    code,
                });
            }
        }
        Ok(())
    }
}
