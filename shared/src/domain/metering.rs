//! Metered billing: usage records of metered plans are reported to Stripe as billing meter
//! events, in batches that follow a watermark. Pure rules: how a batch of records becomes the
//! meter events to send, and the identifiers that make a resent batch count once at Stripe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The partitions metered usage records are spread over (each read by the reporter in order).
pub const METER_SHARDS: usize = 8;

/// A usage record to report, as the reporter reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeteredRecord {
    /// The scope's key prefix (the record's project and mode).
    pub scope_prefix: String,
    /// Its place in the shard: `<created ms>#<record hash>`.
    pub sort_key: String,
    pub event_name: String,
    pub customer: String,
    pub quantity: i64,
    pub created_at_ms: i64,
}

/// One meter event of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    pub scope_prefix: String,
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    /// Unix seconds: the latest record of the event.
    pub timestamp: i64,
    pub identifier: String,
    /// Stripe has it (accepted, or its identifier was counted before): not sent again.
    #[serde(default)]
    pub acknowledged: bool,
    /// Stripe refused it for good (the reason): set aside, logged, not sent again.
    #[serde(default)]
    pub parked: Option<String>,
}

/// A batch decided and saved before it is sent: resent as it is after a crash, so its
/// identifiers are the same and Stripe counts it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingBatch {
    /// The watermark once the batch is sent: the sort key of its last record.
    pub to: String,
    pub events: Vec<PendingEvent>,
    /// How many times sending it was started.
    #[serde(default)]
    pub attempts: u32,
}

impl PendingBatch {
    /// Whether every event is acknowledged or set aside.
    pub fn done(&self) -> bool {
        self.events
            .iter()
            .all(|e| e.acknowledged || e.parked.is_some())
    }
}

/// The batch that reports `records` (read after the watermark `after`, in sort-key order):
/// one event per scope, customer and meter, summing the quantities, with an identifier derived
/// from the shard, the records' range and the event's own fields. `None` for no records.
pub fn batch_of(shard: usize, after: &str, records: &[MeteredRecord]) -> Option<PendingBatch> {
    let last = records.last()?;
    let mut sums: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    for record in records {
        let slot = sums
            .entry((&record.scope_prefix, &record.customer, &record.event_name))
            .or_insert((0, 0));
        slot.0 = slot.0.saturating_add(record.quantity);
        slot.1 = slot.1.max(record.created_at_ms / 1000);
    }
    let shard = shard.to_string();
    let events = sums
        .into_iter()
        .map(
            |((scope, customer, event_name), (value, timestamp))| PendingEvent {
                identifier: format!(
                    "coffer_{}",
                    &digest(&[&shard, after, &last.sort_key, scope, customer, event_name])[..40]
                ),
                scope_prefix: scope.to_owned(),
                event_name: event_name.to_owned(),
                customer: customer.to_owned(),
                value,
                timestamp,
                acknowledged: false,
                parked: None,
            },
        )
        .collect();
    Some(PendingBatch {
        to: last.sort_key.clone(),
        events,
        attempts: 0,
    })
}

/// Hex SHA-256 of the parts, each length-prefixed so that no two lists collide.
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sort_key: &str, customer: &str, quantity: i64) -> MeteredRecord {
        MeteredRecord {
            scope_prefix: String::new(),
            sort_key: sort_key.into(),
            event_name: "api_requests".into(),
            customer: customer.into(),
            quantity,
            created_at_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn a_batch_sums_per_customer_and_its_identifiers_depend_only_on_its_records() {
        let records = [
            record("1#a", "cus_1", 2),
            record("2#b", "cus_2", 5),
            record("3#c", "cus_1", 3),
        ];
        let batch = batch_of(0, "", &records).expect("a batch");
        assert_eq!(batch.to, "3#c");
        let values: Vec<(&str, i64)> = batch
            .events
            .iter()
            .map(|e| (e.customer.as_str(), e.value))
            .collect();
        assert_eq!(values, [("cus_1", 5), ("cus_2", 5)]);
        // The same records after the same watermark: the same identifiers (a resend).
        assert_eq!(batch_of(0, "", &records), Some(batch.clone()));
        // Another range or shard: other identifiers.
        let next = batch_of(0, "3#c", &records[..1]).expect("batch");
        assert_ne!(next.events[0].identifier, batch.events[0].identifier);
        let other_shard = batch_of(1, "", &records).expect("batch");
        assert_ne!(other_shard.events[0].identifier, batch.events[0].identifier);
        assert!(batch.events.iter().all(|e| e.identifier.len() <= 100));
        assert_eq!(batch_of(0, "", &[]), None);
    }
}
