//! Statistics counters per scope, kept from the table's change stream (a DynamoDB Streams event
//! source mapping deployed; a local poller on DynamoDB Local's stream locally), never on the
//! payment write path.
//!
//! - Each stream record is applied at most once: one transaction writes a marker named after the
//!   record's event id (kept two days, longer than the stream keeps records) and adds the
//!   record's changes to the counters. A retried batch finds the markers and adds nothing.
//! - The counters of a scope are spread over a few shard items, chosen by the record, so that no
//!   single item takes every write; reading them is one BatchGetItem of those items, whatever
//!   the number of payments.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::codec::{get_s, n, payment_from_item, Fields, Item};
use super::keys::{hash_parts, key, split_scope};
use super::{Store, StoreError};
use crate::domain::records::now_ms;
use crate::domain::stats::{entry_added, payment_change, StatsDelta};

/// How many items a scope's counters are spread over.
pub const STATS_SHARDS: u32 = 4;
/// How long a record's marker is kept: longer than a stream keeps records (24 h).
const MARKER_TTL_SECS: i64 = 2 * 24 * 60 * 60;

/// One change of the table, as the stream tells it.
#[derive(Clone, Debug, Default)]
pub struct StreamRecord {
    pub event_id: String,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    pub old: Option<Item>,
    pub new: Option<Item>,
    /// When the change was made, as the stream says (Unix seconds).
    pub created_at_secs: Option<i64>,
    /// Its place in its shard (`dynamodb.SequenceNumber`): what a function answers Lambda to go
    /// on from this record, and what a parked record's pointer names.
    pub sequence: Option<String>,
}

/// What applying a record did.
#[derive(Debug, PartialEq, Eq)]
pub enum StatsOutcome {
    Counted,
    /// Applied before (a retried batch).
    AlreadyCounted,
    /// It changes no counter.
    Nothing,
}

/// The scope prefix and the counters' change of one record; `None` when it counts for nothing.
pub fn record_delta(record: &StreamRecord) -> Option<(String, StatsDelta)> {
    let image = record.new.as_ref().or(record.old.as_ref())?;
    let (pk, sk) = (get_s(image, "pk")?, get_s(image, "sk")?);
    let (prefix, rest) = split_scope(pk);
    let delta = if sk == "PAY" && rest.starts_with("PAY#") {
        let decode = |item: &Option<Item>| match item {
            None => Ok(None),
            Some(item) => payment_from_item(item).map(Some),
        };
        match (decode(&record.old), decode(&record.new)) {
            (Ok(old), Ok(new)) => payment_change(old.as_ref(), new.as_ref()),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "a payment in the stream does not decode; not counted");
                return None;
            }
        }
    } else if sk.starts_with("ENTRY#") && rest.starts_with("USER#") && record.event_name == "INSERT"
    {
        let f = Fields::of(image);
        let (Ok(Some(kind)), Ok(amount)) = (f.opt_text("kind"), f.int("amount")) else {
            tracing::error!("an entry in the stream does not decode; not counted");
            return None;
        };
        entry_added(kind, amount)
    } else {
        return None;
    };
    (!delta.is_empty()).then(|| (prefix.to_owned(), delta))
}

fn shard_key(prefix: &str, shard: u32) -> Item {
    key(format!("{prefix}STATS"), format!("SHARD#{shard}"))
}

impl Store {
    /// Adds one stream record's changes to its scope's counters, at most once.
    pub async fn count_stream_record(
        &self,
        record: &StreamRecord,
    ) -> Result<StatsOutcome, StoreError> {
        let Some((prefix, delta)) = record_delta(record) else {
            return Ok(StatsOutcome::Nothing);
        };
        let mut marker = key(format!("STATSREC#{}", record.event_id), "STATSREC");
        marker.insert("expiresAt".into(), n(now_ms() / 1000 + MARKER_TTL_SECS));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(StoreError::build)?;
        let shard = u32::from_str_radix(&hash_parts(&[&record.event_id])[..4], 16).unwrap_or(0)
            % STATS_SHARDS;
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(shard_key(&prefix, shard)));
        let mut adds = Vec::new();
        for (i, (name, by)) in delta.0.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), format!("c_{name}"))
                .expression_attribute_values(format!(":c{i}"), n(*by));
        }
        let update = update
            .update_expression(format!("ADD {}", adds.join(", ")))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        Ok(match self.transact(items).await? {
            Ok(()) => StatsOutcome::Counted,
            Err(_) => StatsOutcome::AlreadyCounted,
        })
    }

    /// A scope's counters: the sum of its shards (one BatchGetItem).
    pub async fn stats(&self) -> Result<StatsDelta, StoreError> {
        let prefix = self.keys.prefix().to_owned();
        let keys = (0..STATS_SHARDS).map(|i| shard_key(&prefix, i)).collect();
        let mut total = StatsDelta::default();
        for item in self.get_many(keys).await? {
            let mut shard = StatsDelta::default();
            for (name, value) in &item {
                let (Some(name), AttributeValue::N(text)) = (name.strip_prefix("c_"), value) else {
                    continue;
                };
                let count: i64 = text.parse().map_err(|_| {
                    StoreError::Refused(format!("stats counter {name} is not a whole number"))
                })?;
                shard.0.insert(name.to_owned(), count);
            }
            total.merge(&shard);
        }
        Ok(total)
    }
}

/// A DynamoDB-JSON image (`{"pk": {"S": "…"}, "amount": {"N": "5"}}`), as stream events carry
/// it, as an item.
pub fn item_from_stream_json(image: &serde_json::Value) -> Option<Item> {
    image
        .as_object()?
        .iter()
        .map(|(name, value)| Some((name.clone(), attribute_from_json(value)?)))
        .collect::<Option<HashMap<_, _>>>()
}

fn attribute_from_json(value: &serde_json::Value) -> Option<AttributeValue> {
    let (kind, inner) = value.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "S" => AttributeValue::S(inner.as_str()?.to_owned()),
        "N" => AttributeValue::N(inner.as_str()?.to_owned()),
        "BOOL" => AttributeValue::Bool(inner.as_bool()?),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(item_from_stream_json(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()?
                .iter()
                .map(attribute_from_json)
                .collect::<Option<_>>()?,
        ),
        "SS" => AttributeValue::Ss(
            inner
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        ),
        "NS" => AttributeValue::Ns(
            inner
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// The records of a DynamoDB Streams Lambda event (`{"Records": [...]}`).
pub fn records_from_event(event: &serde_json::Value) -> Vec<StreamRecord> {
    let Some(records) = event.get("Records").and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    records
        .iter()
        .filter_map(|record| {
            let change = record.get("dynamodb")?;
            Some(StreamRecord {
                event_id: record.get("eventID")?.as_str()?.to_owned(),
                event_name: record
                    .get("eventName")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                old: change.get("OldImage").and_then(item_from_stream_json),
                new: change.get("NewImage").and_then(item_from_stream_json),
                created_at_secs: change
                    .get("ApproximateCreationDateTime")
                    .and_then(serde_json::Value::as_f64)
                    .map(|secs| secs as i64),
                sequence: change
                    .get("SequenceNumber")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_events_decode_into_records_with_typed_images() {
        let event = json!({"Records": [{
            "eventID": "e1", "eventName": "INSERT",
            "dynamodb": {"NewImage": {
                "pk": {"S": "P#acme#test#USER#u"}, "sk": {"S": "ENTRY#spend:x"},
                "kind": {"S": "spend"}, "amount": {"N": "-250"},
                "facts": {"M": {"a": {"L": [{"BOOL": true}, {"NULL": true}]}}}
            }}
        }]});
        let records = records_from_event(&event);
        assert_eq!(records.len(), 1);
        let (prefix, delta) = record_delta(&records[0]).unwrap();
        assert_eq!(prefix, "P#acme#test#");
        assert_eq!(delta.0["credits_spent"], 250);
        assert_eq!(delta.0["credits_outstanding"], -250);
    }

    #[test]
    fn records_that_count_for_nothing_are_skipped() {
        let balance = StreamRecord {
            event_id: "e2".into(),
            event_name: "MODIFY".into(),
            old: None,
            new: item_from_stream_json(&json!({"pk": {"S": "USER#u"}, "sk": {"S": "BALANCE"}})),
            created_at_secs: None,
            sequence: None,
        };
        assert!(record_delta(&balance).is_none());
    }
}
