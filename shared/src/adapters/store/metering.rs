//! The meter reporter's data: the metered usage records of one meter shard in time order
//! (gsi2), and the shard's watermark with the batch decided but not yet confirmed sent.
//!
//! | item            | pk              | sk          | notes                                       |
//! |-----------------|-----------------|-------------|---------------------------------------------|
//! | meter watermark | `METER#<shard>` | `WATERMARK` | `after` (last reported sort key), `pending` |

use super::codec::{get_s, n, s, Fields, Item};
use super::keys::{key, split_scope, GSI2};
use super::usage::meter_pk;
use super::{written, Store, StoreError};
use crate::domain::metering::{MeteredRecord, PendingBatch};
use crate::domain::records::now_ms;

/// Where a meter shard's reporting stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterWatermark {
    /// The sort key of the last record reported ("" before the first).
    pub after: String,
    /// A batch saved before sending and not yet confirmed.
    pub pending: Option<PendingBatch>,
    pub version: i64,
}

fn watermark_key(shard: usize) -> Item {
    key(meter_pk(shard), "WATERMARK")
}

impl Store {
    pub async fn meter_watermark(&self, shard: usize) -> Result<MeterWatermark, StoreError> {
        let Some(item) = self.get(watermark_key(shard)).await? else {
            return Ok(MeterWatermark::default());
        };
        let f = Fields::of(&item);
        let pending = match f.opt_text("pending")? {
            Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                StoreError::Refused("a meter watermark's pending batch is not readable".into())
            })?),
            None => None,
        };
        Ok(MeterWatermark {
            after: f.opt_text("after")?.unwrap_or_default().to_owned(),
            pending,
            version: f.opt_int("ver")?.unwrap_or(0),
        })
    }

    /// Saves the batch to send (only if the watermark is still at `version`).
    pub async fn save_meter_batch(
        &self,
        shard: usize,
        version: i64,
        batch: &PendingBatch,
    ) -> Result<bool, StoreError> {
        let text = serde_json::to_string(batch)
            .map_err(|e| StoreError::Refused(format!("batch could not be written: {e}")))?;
        self.write_watermark(shard, version, WatermarkChange::Pending(text))
            .await
    }

    /// The pending batch was sent: the watermark moves to its end and the batch is dropped
    /// (only if the watermark is still at `version`).
    pub async fn confirm_meter_batch(
        &self,
        shard: usize,
        version: i64,
        to: &str,
    ) -> Result<bool, StoreError> {
        self.write_watermark(shard, version, WatermarkChange::MoveTo(to))
            .await
    }

    async fn write_watermark(
        &self,
        shard: usize,
        version: i64,
        change: WatermarkChange<'_>,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(watermark_key(shard)))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":now", n(now_ms()));
        let request = match change {
            WatermarkChange::Pending(text) => request
                .update_expression("SET pending = :pending, ver = :next, updatedAt = :now")
                .expression_attribute_values(":pending", s(text)),
            WatermarkChange::MoveTo(to) => request
                .update_expression("SET #after = :to, ver = :next, updatedAt = :now REMOVE pending")
                .expression_attribute_names("#after", "after")
                .expression_attribute_values(":to", s(to)),
        };
        let request = if version == 0 {
            request.condition_expression("attribute_not_exists(ver)")
        } else {
            request
                .condition_expression("ver = :ver")
                .expression_attribute_values(":ver", n(version))
        };
        written(request.send().await)
    }

    /// Up to `limit` metered records of a shard after `after` and before `before` (sort keys),
    /// oldest first.
    pub async fn metered_records(
        &self,
        shard: usize,
        after: &str,
        before: &str,
        limit: i32,
    ) -> Result<Vec<MeteredRecord>, StoreError> {
        let from = format!("{after}\u{1}");
        if from.as_str() > before {
            // The watermark is past the settled time (a clock step, a longer settle time).
            return Ok(Vec::new());
        }
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI2)
            .key_condition_expression("gsi2pk = :pk AND gsi2sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(meter_pk(shard)))
            // The sort keys are `<15-digit ms>#<hash>`: `after` + a byte is the first key past it.
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(before))
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        output
            .items()
            .iter()
            .map(|item| {
                let f = Fields::of(item);
                let pk = get_s(item, "pk").unwrap_or_default();
                Ok(MeteredRecord {
                    scope_prefix: split_scope(pk).0.to_owned(),
                    sort_key: f.text("gsi2sk")?.to_owned(),
                    event_name: f.text("meterEvent")?.to_owned(),
                    customer: f.text("customer")?.to_owned(),
                    quantity: f.int("quantity")?,
                    created_at_ms: f.int("createdAt")?,
                })
            })
            .collect()
    }
}

enum WatermarkChange<'a> {
    Pending(String),
    MoveTo(&'a str),
}
