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
    /// Stripe certainly did not take it (the reason: a key refused, the project's Stripe not
    /// configured, the event refused): moved to its project's holds, where it waits, alarmed,
    /// and is sent again with the same identifier once the project is fixed. Never set for a
    /// failure whose outcome is unknown (a timeout): that one stays in the batch and is resent
    /// within minutes, inside the window in which Stripe recognises its identifier.
    #[serde(default, alias = "parked")]
    pub held: Option<String>,
    /// A send of it had an unknown outcome (a timeout, a 5xx, another request with its key in
    /// flight): Stripe may have it. Such an event is never held: it stays in its batch and is
    /// resent with its identifier within minutes, inside the window in which Stripe recognises
    /// it, however Stripe answers meanwhile.
    #[serde(default)]
    pub uncertain: bool,
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
    /// Whether every event is acknowledged or held.
    pub fn done(&self) -> bool {
        self.events
            .iter()
            .all(|e| e.acknowledged || e.held.is_some())
    }
}

/// The order a run visits the meter shards in: from `start` (where the last run stopped)
/// round the ring, so that a run cut short by its deadline does not always serve the same
/// shards first.
pub fn rotation(start: usize, shards: usize) -> Vec<usize> {
    if shards == 0 {
        return Vec::new();
    }
    (0..shards).map(|i| (start % shards + i) % shards).collect()
}

/// Seconds a usage record is kept once billed (it answers a replay of its idempotency key).
pub const BILLED_RECORD_KEEP_SECS: i64 = 7 * 24 * 3600;

/// When a metered record may be removed (Unix seconds), stamped once it is billed: a week
/// after it was made, and never sooner than a day after it was billed.
pub fn billed_record_expiry(created_at_ms: i64, billed_at_ms: i64) -> i64 {
    (created_at_ms / 1000)
        .saturating_add(BILLED_RECORD_KEEP_SECS)
        .max((billed_at_ms / 1000).saturating_add(24 * 3600))
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
                held: None,
                uncertain: false,
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

    #[test]
    fn a_run_starts_where_the_last_one_stopped_and_visits_every_shard_once() {
        assert_eq!(rotation(0, 4), [0, 1, 2, 3]);
        assert_eq!(rotation(6, 4), [2, 3, 0, 1]);
        assert!(rotation(3, 0).is_empty());
        for start in 0..20 {
            let mut order = rotation(start, METER_SHARDS);
            assert_eq!(order[0], start % METER_SHARDS);
            order.sort_unstable();
            assert_eq!(order, (0..METER_SHARDS).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_billed_record_stays_a_week_from_its_making_and_at_least_a_day_after_billing() {
        let made = 1_800_000_000_000;
        assert_eq!(
            billed_record_expiry(made, made),
            made / 1000 + BILLED_RECORD_KEEP_SECS
        );
        // Billed after three weeks (a project fixed late): kept one more day.
        let late = made + 21 * 24 * 3600 * 1000;
        assert_eq!(billed_record_expiry(made, late), late / 1000 + 24 * 3600);
    }

    #[test]
    fn a_batch_saved_before_holds_existed_reads_its_parked_events_as_held() {
        let saved = r#"{"to":"1#a","events":[{"scopePrefix":"","eventName":"m","customer":"c","value":1,"timestamp":1,"identifier":"i","acknowledged":false,"parked":"400: no meter"}]}"#;
        let batch: PendingBatch = serde_json::from_str(saved).expect("readable");
        assert_eq!(batch.events[0].held.as_deref(), Some("400: no meter"));
        assert!(batch.done());
    }
}
