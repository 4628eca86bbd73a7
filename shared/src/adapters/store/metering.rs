//! The meter reporter's data: the metered usage records of one meter shard in time order
//! (gsi2), and the shard's watermark with the batch decided but not yet confirmed sent.
//!
//! | item            | pk              | sk             | notes                                     |
//! |-----------------|-----------------|----------------|-------------------------------------------|
//! | meter watermark | `METER#<shard>` | `WATERMARK`    | `after` (last reported sort key), `pending`, `stamped` (records up to it carry their expiry) |
//! | run cursor      | `METER#RUN`     | `CURSOR`       | `next`: the shard the next run starts at  |
//! | held event      | `METERHOLD#<scope>` | `<identifier>` | an event Stripe did not take, its project's reason, tries; `released` once Stripe has it |
//! | scopes with holds | `METERHOLD`   | `S#<scope>`    | `v`: holds made (a scope leaves the list only if none was made meanwhile) |

use futures_util::{stream, StreamExt, TryStreamExt};

use super::codec::{get_s, n, s, Fields, Item};
use super::keys::{key, split_scope, GSI2};
use super::usage::meter_pk;
use super::{written, Store, StoreError};
use crate::domain::metering::{billed_record_expiry, MeteredRecord, PendingBatch, PendingEvent};
use crate::domain::records::now_ms;

/// The list of scopes with held meter events (`S#<scope prefix>`, each with its count of holds
/// made); a scope's held events are in a partition of their own (`holds_pk`).
const HOLDS_PK: &str = "METERHOLD";
/// How long a released hold is kept (longer than any batch stays pending).
const RELEASED_KEEP_SECS: i64 = 7 * 24 * 3600;

fn holds_pk(scope_prefix: &str) -> String {
    format!("METERHOLD#{scope_prefix}")
}

fn scope_sk(scope_prefix: &str) -> String {
    format!("S#{scope_prefix}")
}
/// Records stamped with their expiry at once.
const STAMP_CONCURRENCY: usize = 16;

type BoxedStamp<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A meter event waiting for its project to be fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterHold {
    pub event: PendingEvent,
    /// Why it waits (the last refusal).
    pub reason: String,
    pub held_at_ms: i64,
    pub tries: i64,
    /// When it was last tried again (0: never).
    pub tried_at_ms: i64,
}

/// Where a meter shard's reporting stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterWatermark {
    /// The sort key of the last record reported ("" before the first).
    pub after: String,
    /// A batch saved before sending and not yet confirmed.
    pub pending: Option<PendingBatch>,
    pub version: i64,
    /// The records up to this sort key were billed and carry their expiry ("" before any).
    pub stamped: String,
}

fn meter_pk_run() -> &'static str {
    "METER#RUN"
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
            stamped: f.opt_text("stamped")?.unwrap_or_default().to_owned(),
        })
    }

    /// The shard the next run starts at (0 before the first run).
    pub async fn meter_cursor(&self) -> Result<usize, StoreError> {
        let Some(item) = self.get(key(meter_pk_run(), "CURSOR")).await? else {
            return Ok(0);
        };
        let next = Fields::of(&item).opt_int("next")?.unwrap_or(0);
        Ok(usize::try_from(next).unwrap_or(0))
    }

    /// Where the next run starts (last writer wins: two runs at once only share the start).
    pub async fn save_meter_cursor(&self, next: usize) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(meter_pk_run(), "CURSOR")))
            .update_expression("SET #next = :next, updatedAt = :now")
            .expression_attribute_names("#next", "next")
            .expression_attribute_values(":next", n(i64::try_from(next).unwrap_or(0)))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Keeps events Stripe did not take until their project is fixed. An event held before, or
    /// released since (Stripe has it), is left as it is: a batch resent after a crash never
    /// brings back a hold that was already billed.
    pub async fn hold_meter_events(&self, events: &[&PendingEvent]) -> Result<(), StoreError> {
        for event in events {
            let text = serde_json::to_string(event)
                .map_err(|e| StoreError::Refused(format!("event could not be written: {e}")))?;
            let mut item = key(holds_pk(&event.scope_prefix), &event.identifier);
            item.insert("event".into(), s(text));
            item.insert("reason".into(), s(event.held.clone().unwrap_or_default()));
            item.insert("heldAt".into(), n(now_ms()));
            item.insert("tries".into(), n(0));
            self.put_if_absent(item).await?;
            // The scope is listed among those with holds (its count of holds made), after the
            // hold and whether or not the hold was new: a run that stopped between the two
            // lists it when the batch is resent. A listing with nothing held is dropped later.
            {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(HOLDS_PK, scope_sk(&event.scope_prefix))))
                    .update_expression("ADD v :one SET scopePrefix = :scope")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":scope", s(event.scope_prefix.clone()))
                    .send()
                    .await
                    .map_err(StoreError::from_sdk)?;
            }
        }
        Ok(())
    }

    /// A query of the events held (not released) for a scope.
    fn held_in(
        &self,
        scope_prefix: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("attribute_not_exists(released)")
            .expression_attribute_values(":pk", s(holds_pk(scope_prefix)))
    }

    /// The scopes with held events: each scope's key prefix and its count of holds made.
    pub async fn meter_hold_scopes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.partition(HOLDS_PK)
            .await?
            .iter()
            .map(|item| {
                let f = Fields::of(item);
                Ok((
                    f.opt_text("scopePrefix")?.unwrap_or_default().to_owned(),
                    f.opt_int("v")?.unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Up to `limit` events held for a scope (not released), by identifier.
    pub async fn meter_holds(
        &self,
        scope_prefix: &str,
        limit: usize,
    ) -> Result<Vec<MeterHold>, StoreError> {
        let mut pages = self
            .held_in(scope_prefix)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::new();
        while items.len() < limit {
            match pages.next().await {
                Some(item) => items.push(item.map_err(StoreError::from_sdk)?),
                None => break,
            }
        }
        items
            .iter()
            .map(|item| {
                let f = Fields::of(item);
                let event = serde_json::from_str(f.text("event")?).map_err(|_| {
                    StoreError::Refused("a held meter event is not readable".into())
                })?;
                Ok(MeterHold {
                    event,
                    reason: f.opt_text("reason")?.unwrap_or_default().to_owned(),
                    held_at_ms: f.opt_int("heldAt")?.unwrap_or(0),
                    tries: f.opt_int("tries")?.unwrap_or(0),
                    tried_at_ms: f.opt_int("triedAt")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// A scope with no held event left leaves the list, unless an event was held meanwhile
    /// (its count moved from `seen`).
    pub async fn forget_hold_scope(&self, scope_prefix: &str, seen: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(HOLDS_PK, scope_sk(scope_prefix))))
            .condition_expression("v = :seen")
            .expression_attribute_values(":seen", n(seen))
            .send()
            .await;
        written(result).map(|_| ())
    }

    /// How many events are held, in every scope.
    pub async fn count_meter_holds(&self) -> Result<usize, StoreError> {
        let mut count = 0usize;
        for (scope, _) in self.meter_hold_scopes().await? {
            let mut pages = self
                .held_in(&scope)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(StoreError::from_sdk)?;
                count = count.saturating_add(usize::try_from(page.count()).unwrap_or(0));
            }
        }
        Ok(count)
    }

    /// Stripe has the held event now: it is released (kept a week as released, so that a
    /// batch resent after a crash does not hold it again).
    pub async fn release_meter_hold(
        &self,
        scope_prefix: &str,
        identifier: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(holds_pk(scope_prefix), identifier)))
            .update_expression("SET released = :now, expiresAt = :expires")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", n(now / 1000 + RELEASED_KEEP_SECS))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// A held event was tried again and not taken (refused, or no answer): the reason and the
    /// count of tries (the next try uses a new idempotency key).
    pub async fn note_meter_hold_refused(
        &self,
        scope_prefix: &str,
        identifier: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(holds_pk(scope_prefix), identifier)))
            .update_expression("SET reason = :reason, triedAt = :now ADD tries :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        written(result).map(|_| ())
    }

    /// Stamps the expiry on the billed records of a shard after `from` up to `to` (sort keys),
    /// at most `limit` of them, and moves the shard's `stamped` mark to the last one. The
    /// number stamped; fewer than `limit` means the shard is caught up to `to`.
    pub async fn stamp_billed_records(
        &self,
        shard: usize,
        from: &str,
        to: &str,
        limit: i32,
    ) -> Result<usize, StoreError> {
        let items = self.meter_range(shard, from, to, limit).await?;
        let Some(last) = items.last().and_then(|i| get_s(i, "gsi2sk")) else {
            return Ok(0);
        };
        let billed_at = now_ms();
        // Boxed: a stream of borrowing futures is otherwise not `Send` for every lifetime.
        let stamps: Vec<BoxedStamp<'_>> = items
            .iter()
            .map(|item| -> BoxedStamp<'_> {
                Box::pin(async move {
                    let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
                        return Ok::<(), StoreError>(());
                    };
                    let created = Fields::of(item)
                        .opt_int("createdAt")
                        .ok()
                        .flatten()
                        .unwrap_or(billed_at);
                    let result = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key(pk, sk)))
                        .update_expression("SET expiresAt = :at")
                        .condition_expression("attribute_exists(pk)")
                        .expression_attribute_values(
                            ":at",
                            n(billed_record_expiry(created, billed_at)),
                        )
                        .send()
                        .await;
                    written(result).map(|_| ())
                })
            })
            .collect();
        stream::iter(stamps)
            .buffer_unordered(STAMP_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        // Only forward: a slower run that stamped less never moves it back.
        let moved = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(watermark_key(shard)))
            .update_expression("SET stamped = :last")
            .condition_expression("attribute_not_exists(stamped) OR stamped < :last")
            .expression_attribute_values(":last", s(last))
            .send()
            .await;
        written(moved)?;
        Ok(items.len())
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

    /// Up to `limit` items of a meter shard's index partition after `after` up to `to` (sort
    /// keys), oldest first; none when `after` is past `to` (a clock step, a longer settle time).
    async fn meter_range(
        &self,
        shard: usize,
        after: &str,
        to: &str,
        limit: i32,
    ) -> Result<Vec<Item>, StoreError> {
        // The sort keys are `<15-digit ms>#<hash>`: `after` + a byte is the first key past it.
        let from = format!("{after}\u{1}");
        if from.as_str() > to {
            return Ok(Vec::new());
        }
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI2)
            .key_condition_expression("gsi2pk = :pk AND gsi2sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(meter_pk(shard)))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(output.items.unwrap_or_default())
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
        self.meter_range(shard, after, before, limit)
            .await?
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
