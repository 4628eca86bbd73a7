//! Statistics counters per scope, kept from the table's change stream (a DynamoDB Streams event
//! source mapping deployed; a local poller on DynamoDB Local's stream locally), never on the
//! payment write path.
//!
//! - A new entry is counted at most once: one transaction writes a marker named after the
//!   record's event id (kept two days, longer than the stream keeps records) and adds the
//!   entry's counts. A retried batch finds the markers and adds nothing.
//! - A payment counts once, as it stands: a record per payment (`STATSPAY#<intent>`) says what
//!   it was last counted for and at which stream position; a change adds the difference, in
//!   one transaction with that record. A resent or replayed older change adds nothing, and a
//!   change whose earlier ones were never streamed (data older than the stream) never makes a
//!   counter negative.
//! - A backfill (`coffer-dev backfill-stats`) starts a new epoch with a cutoff a few minutes
//!   ahead: the stream counts the entries made from the cutoff on into the epoch's shards; once
//!   the cutoff has passed, the backfill counts the entries made before it into the epoch's
//!   baseline and recounts every payment as it stands.
//! - The counters of a scope are spread over a few shard items, chosen by the record, so that no
//!   single item takes every write; reading them is one BatchGetItem of those items, whatever
//!   the number of payments.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::codec::{get_s, n, payment_from_item, s, Fields, Item};
use super::keys::{hash_parts, key, split_scope};
use super::{Store, StoreError};
use crate::domain::records::now_ms;
use crate::domain::stats::{
    contribution, daily_part, day_of, entry_added, recount, subscription_contribution, Counted,
    StatsDelta,
};
use crate::domain::subscriptions::SubscriptionState;

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

/// What a record counts for: a payment or an account's subscription as it now stands (`None`
/// image: removed), or a new entry's change. `None` when it counts for nothing.
enum Counts {
    Payment {
        prefix: String,
        /// The payment's intent id, or `sub:<account>` for an account's subscription: what its
        /// count record is named after.
        intent: String,
        now: StatsDelta,
        /// In epoch 0, what the record's old image is taken as counted for (`None`: nothing;
        /// always `None` for a subscription, which the counters never held before).
        before: Option<StatsDelta>,
        /// What this change itself changed (the new image's counts less the old's), for the
        /// day it was made.
        change: StatsDelta,
    },
    Entry {
        prefix: String,
        created_at_ms: i64,
        delta: StatsDelta,
    },
}

fn record_counts(record: &StreamRecord) -> Option<Counts> {
    let image = record.new.as_ref().or(record.old.as_ref())?;
    let (pk, sk) = (get_s(image, "pk")?, get_s(image, "sk")?);
    let (prefix, rest) = split_scope(pk);
    if sk == "PAY" && rest.starts_with("PAY#") {
        let now = match &record.new {
            None => StatsDelta::default(),
            Some(item) => match payment_from_item(item) {
                Ok(payment) => contribution(&payment),
                Err(err) => {
                    tracing::error!(error = %err, "a payment in the stream does not decode; not counted");
                    return None;
                }
            },
        };
        let old = record.old.as_ref().map(payment_from_item);
        let before = match &old {
            Some(Ok(payment)) => Some(contribution(payment)),
            _ => None,
        };
        // What this change changed, for its day; unknown when the old image does not decode
        // (the day then gets nothing rather than the payment's whole value again).
        let change = if matches!(old, Some(Err(_))) {
            tracing::error!(
                "a payment's old image in the stream does not decode; its day not counted"
            );
            StatsDelta::default()
        } else {
            now.minus(&before.clone().unwrap_or_default())
        };
        return Some(Counts::Payment {
            prefix: prefix.to_owned(),
            intent: rest.trim_start_matches("PAY#").to_owned(),
            now,
            before,
            change,
        });
    }
    if sk == "SUB" && rest.starts_with("ACCT#") {
        let doc = |item: Option<&Item>| item.and_then(|i| get_s(i, "doc")).map(str::to_owned);
        let (new_doc, old_doc) = (doc(record.new.as_ref()), doc(record.old.as_ref()));
        if record.new.is_some() && new_doc == old_doc {
            // A write of the item's lock or times only: the subscription did not change.
            return None;
        }
        // No doc: the item holds only the create lock, no subscription yet.
        let state = |doc: &Option<String>| -> Result<Option<SubscriptionState>, ()> {
            doc.as_deref()
                .map(serde_json::from_str::<SubscriptionState>)
                .transpose()
                .map_err(|_| ())
        };
        let (Ok(now), Ok(before)) = (state(&new_doc), state(&old_doc)) else {
            tracing::error!("a subscription in the stream does not decode; not counted");
            return None;
        };
        let now = subscription_contribution(now.as_ref());
        let before = subscription_contribution(before.as_ref());
        return Some(Counts::Payment {
            prefix: prefix.to_owned(),
            intent: format!("sub:{}", rest.trim_start_matches("ACCT#")),
            change: now.minus(&before),
            now,
            before: None,
        });
    }
    if sk.starts_with("ENTRY#") && rest.starts_with("USER#") && record.event_name == "INSERT" {
        let f = Fields::of(image);
        let (Ok(Some(kind)), Ok(amount)) = (f.opt_text("kind"), f.int("amount")) else {
            tracing::error!("an entry in the stream does not decode; not counted");
            return None;
        };
        let delta = entry_added(kind, amount);
        return (!delta.is_empty()).then(|| Counts::Entry {
            prefix: prefix.to_owned(),
            created_at_ms: f.opt_int("createdAt").ok().flatten().unwrap_or(i64::MAX),
            delta,
        });
    }
    None
}

/// The scope prefix and the counters' change of one record, as a first count of it would make
/// it (a payment from nothing to what it is now); `None` when it counts for nothing.
#[cfg(test)]
pub fn record_delta(record: &StreamRecord) -> Option<(String, StatsDelta)> {
    let (prefix, delta) = match record_counts(record)? {
        Counts::Payment { prefix, now, .. } => (prefix, now),
        Counts::Entry { prefix, delta, .. } => (prefix, delta),
    };
    (!delta.is_empty()).then_some((prefix, delta))
}

/// Which counters a scope's records go to. A backfill starts a new epoch: the entries made
/// from `cutoff_ms` on are counted from the stream into the epoch's shards, the ones before
/// into its `baseline` (from the table), and each payment counts once, as it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsEpoch {
    pub epoch: i64,
    pub cutoff_ms: i64,
    /// The counts of the entries made before the cutoff; `None` until the backfill wrote it.
    pub baseline: Option<StatsDelta>,
}

fn epoch_key(prefix: &str) -> Item {
    key(format!("{prefix}STATS"), "EPOCH")
}

fn shard_key(prefix: &str, epoch: i64, shard: u32) -> Item {
    if epoch == 0 {
        key(format!("{prefix}STATS"), format!("SHARD#{shard}"))
    } else {
        key(format!("{prefix}STATS"), format!("SHARD#{epoch}#{shard}"))
    }
}

/// A scope's changes of one day, spread over the shards like its counters.
fn day_key(prefix: &str, day: &str, shard: u32) -> Item {
    key(format!("{prefix}STATS"), format!("DAY#{day}#{shard}"))
}

/// How long a day of the series is kept (well beyond the 30 days the console charts).
const DAY_TTL_SECS: i64 = 400 * 24 * 60 * 60;

fn counted_key(prefix: &str, intent: &str, epoch: i64) -> Item {
    key(format!("{prefix}STATSPAY#{intent}"), format!("E#{epoch}"))
}

fn delta_to_text(delta: &StatsDelta) -> String {
    serde_json::to_string(&delta.0).unwrap_or_else(|_| "{}".into())
}

fn delta_from_text(text: &str) -> Result<StatsDelta, StoreError> {
    serde_json::from_str(text)
        .map(StatsDelta)
        .map_err(|_| StoreError::Refused("stats counts are not readable".into()))
}

/// Where a payment's recount comes from.
#[derive(Clone, Copy, Debug)]
pub enum Recount<'a> {
    /// A stream record: its position, and in epoch 0 what its old image counts for.
    Stream {
        position: Option<&'a str>,
        legacy: Option<&'a StatsDelta>,
    },
    /// A backfill's read of the table.
    Backfill,
}

/// Attempts of a payment's recount that lost a race with another one.
const RECOUNT_ATTEMPTS: u32 = 8;

impl Store {
    /// The scope's stats epoch (epoch 0, no cutoff, before any backfill).
    pub async fn stats_epoch(&self, prefix: &str) -> Result<StatsEpoch, StoreError> {
        let Some(item) = self.get(epoch_key(prefix)).await? else {
            return Ok(StatsEpoch::default());
        };
        let f = Fields::of(&item);
        Ok(StatsEpoch {
            epoch: f.opt_int("epoch")?.unwrap_or(0),
            cutoff_ms: f.opt_int("cutoffMs")?.unwrap_or(0),
            baseline: f.opt_text("baseline")?.map(delta_from_text).transpose()?,
        })
    }

    /// Starts a backfill: a new epoch whose cutoff is `lead_ms` from now (the stream counts the
    /// entries made from then on into it). An epoch whose baseline is not written yet is taken
    /// up again instead, so a backfill that stopped is resumed, not restarted.
    pub async fn begin_stats_epoch(
        &self,
        prefix: &str,
        lead_ms: i64,
    ) -> Result<StatsEpoch, StoreError> {
        let current = self.stats_epoch(prefix).await?;
        if current.epoch > 0 && current.baseline.is_none() {
            return Ok(current);
        }
        let next = StatsEpoch {
            epoch: current.epoch + 1,
            cutoff_ms: now_ms().saturating_add(lead_ms),
            baseline: None,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some({
                let mut item = epoch_key(prefix);
                item.insert("epoch".into(), n(next.epoch));
                item.insert("cutoffMs".into(), n(next.cutoff_ms));
                item
            }))
            .condition_expression("attribute_not_exists(pk) OR epoch = :current")
            .expression_attribute_values(":current", n(current.epoch))
            .send()
            .await;
        if super::written(result)? {
            Ok(next)
        } else {
            Err(StoreError::Contention(
                "another backfill began an epoch".into(),
            ))
        }
    }

    /// Writes the epoch's baseline (the entries made before its cutoff): from now on its
    /// counters are whole.
    pub async fn save_stats_baseline(
        &self,
        prefix: &str,
        epoch: i64,
        baseline: &StatsDelta,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(epoch_key(prefix)))
            .update_expression("SET baseline = :baseline")
            .condition_expression("epoch = :epoch")
            .expression_attribute_values(":baseline", s(delta_to_text(baseline)))
            .expression_attribute_values(":epoch", n(epoch))
            .send()
            .await;
        if super::written(result)? {
            Ok(())
        } else {
            Err(StoreError::Contention(
                "a later backfill began meanwhile".into(),
            ))
        }
    }

    /// Adds one stream record's changes to its scope's counters, at most once. `epochs` holds
    /// the scopes' epochs read in this batch.
    pub async fn count_stream_record(
        &self,
        record: &StreamRecord,
        epochs: &mut HashMap<String, StatsEpoch>,
    ) -> Result<StatsOutcome, StoreError> {
        let Some(counts) = record_counts(record) else {
            return Ok(StatsOutcome::Nothing);
        };
        let prefix = match &counts {
            Counts::Payment { prefix, change, .. } => {
                // A payment's or subscription's day: under a marker of its own (the totals'
                // count is the recount's, versioned per payment).
                let change = daily_part(change);
                if !change.is_empty() {
                    self.count_day(record, prefix, &change).await?;
                }
                prefix.clone()
            }
            Counts::Entry { prefix, .. } => prefix.clone(),
        };
        let epoch = match epochs.get(&prefix) {
            Some(epoch) => epoch.clone(),
            None => {
                let epoch = self.stats_epoch(&prefix).await?;
                epochs.insert(prefix.clone(), epoch.clone());
                epoch
            }
        };
        match counts {
            Counts::Payment {
                intent,
                now,
                before,
                ..
            } => {
                // Epoch 0 (no backfill yet): the counters already hold what the stream brought
                // before payments were recounted, so a payment with no count of its own yet is
                // taken as counted for its old image, as the stream counted it then.
                let legacy = (epoch.epoch == 0).then_some(before).flatten();
                self.recount_payment(
                    &prefix,
                    &intent,
                    epoch.epoch,
                    &now,
                    Recount::Stream {
                        position: record.sequence.as_deref(),
                        legacy: legacy.as_ref(),
                    },
                )
                .await
            }
            Counts::Entry {
                created_at_ms,
                delta,
                ..
            } => {
                // Made before the cutoff, the epoch's baseline counts it in the totals; its day
                // is counted either way, under the same marker.
                let totals = (created_at_ms >= epoch.cutoff_ms).then_some(epoch.epoch);
                self.count_entry(record, &prefix, totals, &delta).await
            }
        }
    }

    /// A new entry, once per stream record (its marker): into the totals of `epoch` (none: the
    /// baseline counts it) and into its day, in one transaction.
    async fn count_entry(
        &self,
        record: &StreamRecord,
        prefix: &str,
        epoch: Option<i64>,
        delta: &StatsDelta,
    ) -> Result<StatsOutcome, StoreError> {
        let day = daily_part(delta);
        if epoch.is_none() && day.is_empty() {
            return Ok(StatsOutcome::Nothing);
        }
        let (put, shard) = self.record_marker(record, "STATSREC")?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if let Some(epoch) = epoch {
            items.push(self.add_counts(prefix, epoch, shard, delta)?);
        }
        if !day.is_empty() {
            items.push(self.add_to_day(record, prefix, shard, &day)?);
        }
        Ok(match self.transact(items).await? {
            Ok(()) => StatsOutcome::Counted,
            Err(_) => StatsOutcome::AlreadyCounted,
        })
    }

    /// The marker (`<kind>#<stream event id>`) that lets a record count once, written only if
    /// absent, and the shard the record's counts go to.
    fn record_marker(&self, record: &StreamRecord, kind: &str) -> Result<(Put, u32), StoreError> {
        let mut marker = key(format!("{kind}#{}", record.event_id), kind);
        marker.insert("expiresAt".into(), n(now_ms() / 1000 + MARKER_TTL_SECS));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(StoreError::build)?;
        let shard = u32::from_str_radix(&hash_parts(&[&record.event_id])[..4], 16).unwrap_or(0)
            % STATS_SHARDS;
        Ok((put, shard))
    }

    /// The update that adds `change` to the day `record` was made (its shard of that day).
    fn add_to_day(
        &self,
        record: &StreamRecord,
        prefix: &str,
        shard: u32,
        change: &StatsDelta,
    ) -> Result<TransactWriteItem, StoreError> {
        let secs = record.created_at_secs.unwrap_or_else(|| now_ms() / 1000);
        let day = day_of(secs);
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(day_key(prefix, &day, shard)))
            .expression_attribute_values(":expires", n(secs.saturating_add(DAY_TTL_SECS)));
        let mut adds = Vec::new();
        for (i, (name, by)) in change.0.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), format!("c_{name}"))
                .expression_attribute_values(format!(":c{i}"), n(*by));
        }
        let update =
            update.update_expression(format!("SET expiresAt = :expires ADD {}", adds.join(", ")));
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(StoreError::build)?)
            .build())
    }

    /// Adds a payment's or subscription's change to the day it was made, at most once per
    /// stream record (a marker of its own): the day series are kept from the stream only,
    /// whatever the epoch, and a retried batch adds nothing.
    async fn count_day(
        &self,
        record: &StreamRecord,
        prefix: &str,
        change: &StatsDelta,
    ) -> Result<(), StoreError> {
        let (put, shard) = self.record_marker(record, "STATSDAY")?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            self.add_to_day(record, prefix, shard, change)?,
        ];
        // A condition that failed: the marker is there, the day counted this record before.
        let _ = self.transact(items).await?;
        Ok(())
    }

    /// A scope's changes per day from `from` to `to` (`YYYY-MM-DD`, both included), the shards
    /// of each day summed; days with no change are absent.
    pub async fn stats_days(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, StatsDelta)>, StoreError> {
        let prefix = self.keys.prefix().to_owned();
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(format!("{prefix}STATS")))
            .expression_attribute_values(":from", s(format!("DAY#{from}")))
            // `~` sorts after the digits and `#` of a day's shard keys.
            .expression_attribute_values(":to", s(format!("DAY#{to}~")))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(StoreError::from_sdk)?;
        let mut days: std::collections::BTreeMap<String, StatsDelta> = Default::default();
        for item in &items {
            let Some(day) = get_s(item, "sk")
                .and_then(|sk| sk.strip_prefix("DAY#"))
                .and_then(|rest| rest.split('#').next())
            else {
                continue;
            };
            days.entry(day.to_owned())
                .or_default()
                .merge(&counters_of(item)?);
        }
        Ok(days.into_iter().collect())
    }

    fn add_counts(
        &self,
        prefix: &str,
        epoch: i64,
        shard: u32,
        delta: &StatsDelta,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(shard_key(prefix, epoch, shard)));
        let mut adds = Vec::new();
        for (i, (name, by)) in delta.0.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), format!("c_{name}"))
                .expression_attribute_values(format!(":c{i}"), n(*by));
        }
        let update = if adds.is_empty() {
            update
                .update_expression("SET touchedAt = :now")
                .expression_attribute_values(":now", n(now_ms()))
        } else {
            update.update_expression(format!("ADD {}", adds.join(", ")))
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(StoreError::build)?)
            .build())
    }

    /// Counts a payment as it now stands (`now`), in place of what it was last counted for, in
    /// one transaction with the record of what it counts for. From the stream, a change not
    /// newer than the one counted changes nothing; from a backfill, a payment the stream has
    /// counted in this epoch already is left to it (the stream's count is the newer).
    pub async fn recount_payment(
        &self,
        prefix: &str,
        intent: &str,
        epoch: i64,
        now: &StatsDelta,
        how: Recount<'_>,
    ) -> Result<StatsOutcome, StoreError> {
        let counted_at = counted_key(prefix, intent, epoch);
        for _ in 0..RECOUNT_ATTEMPTS {
            let stored = self.get(counted_at.clone()).await?;
            let (version, counted) = match &stored {
                None => (0, None),
                Some(item) => {
                    let f = Fields::of(item);
                    (
                        f.opt_int("v")?.unwrap_or(0),
                        Some(Counted {
                            counts: delta_from_text(f.opt_text("counts")?.unwrap_or("{}"))?,
                            position: f.opt_text("position")?.map(str::to_owned),
                        }),
                    )
                }
            };
            let position = match how {
                Recount::Stream { position, .. } => position,
                Recount::Backfill => None,
            };
            if matches!(how, Recount::Backfill) && counted.is_some() {
                return Ok(StatsOutcome::AlreadyCounted);
            }
            let legacy = match (&counted, how) {
                (
                    None,
                    Recount::Stream {
                        legacy: Some(before),
                        ..
                    },
                ) => Some(Counted {
                    counts: before.clone(),
                    position: None,
                }),
                _ => None,
            };
            let Some(delta) = recount(counted.as_ref().or(legacy.as_ref()), now, position) else {
                return Ok(StatsOutcome::AlreadyCounted);
            };
            let mut item = counted_at.clone();
            item.insert("v".into(), n(version + 1));
            item.insert("counts".into(), s(delta_to_text(now)));
            let kept = position
                .map(str::to_owned)
                .or_else(|| counted.as_ref().and_then(|c| c.position.clone()));
            if let Some(position) = kept {
                item.insert("position".into(), s(position));
            }
            let put = Put::builder().table_name(&self.table).set_item(Some(item));
            let put = if version == 0 {
                put.condition_expression("attribute_not_exists(pk)")
            } else {
                put.condition_expression("v = :v")
                    .expression_attribute_values(":v", n(version))
            };
            let shard =
                u32::from_str_radix(&hash_parts(&[intent])[..4], 16).unwrap_or(0) % STATS_SHARDS;
            let items = vec![
                TransactWriteItem::builder()
                    .put(put.build().map_err(StoreError::build)?)
                    .build(),
                self.add_counts(prefix, epoch, shard, &delta)?,
            ];
            if self.transact(items).await?.is_ok() {
                return Ok(if delta.is_empty() {
                    StatsOutcome::AlreadyCounted
                } else {
                    StatsOutcome::Counted
                });
            }
        }
        Err(StoreError::Contention(
            "a payment's count kept changing".into(),
        ))
    }

    /// A scope's counters: its epoch's baseline and the sum of the epoch's shards.
    pub async fn stats(&self) -> Result<StatsDelta, StoreError> {
        let prefix = self.keys.prefix().to_owned();
        let epoch = self.stats_epoch(&prefix).await?;
        let keys = (0..STATS_SHARDS)
            .map(|i| shard_key(&prefix, epoch.epoch, i))
            .collect();
        let mut total = epoch.baseline.unwrap_or_default();
        for item in self.get_many(keys).await? {
            total.merge(&counters_of(&item)?);
        }
        Ok(total)
    }

    /// One page of the whole table for a stats backfill (after `start`): the payments, and the
    /// entries with their scope, time and counts.
    pub async fn stats_backfill_page(
        &self,
        start: Option<(String, String)>,
    ) -> Result<BackfillPage, StoreError> {
        let (items, next) = self.scan_page(None, start, 1000).await?;
        let mut page = BackfillPage {
            next,
            ..BackfillPage::default()
        };
        for item in items {
            let record = StreamRecord {
                event_name: "INSERT".into(),
                new: Some(item),
                ..StreamRecord::default()
            };
            match record_counts(&record) {
                Some(Counts::Payment {
                    prefix,
                    intent,
                    now,
                    ..
                }) => page.payments.push((prefix, intent, now)),
                Some(Counts::Entry {
                    prefix,
                    created_at_ms,
                    delta,
                }) => page.entries.push((prefix, created_at_ms, delta)),
                None => {}
            }
        }
        Ok(page)
    }
}

/// The counters (`c_<name>` numbers) of a shard or day item.
fn counters_of(item: &Item) -> Result<StatsDelta, StoreError> {
    let mut counters = StatsDelta::default();
    for (name, value) in item {
        let (Some(name), AttributeValue::N(text)) = (name.strip_prefix("c_"), value) else {
            continue;
        };
        let count: i64 = text.parse().map_err(|_| {
            StoreError::Refused(format!("stats counter {name} is not a whole number"))
        })?;
        counters.0.insert(name.to_owned(), count);
    }
    Ok(counters)
}

/// What a backfill reads from one page of the table.
#[derive(Debug, Default)]
pub struct BackfillPage {
    /// Scope prefix, intent, what the payment counts for.
    pub payments: Vec<(String, String, StatsDelta)>,
    /// Scope prefix, when the entry was made, what it counts for.
    pub entries: Vec<(String, i64, StatsDelta)>,
    pub next: Option<(String, String)>,
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
