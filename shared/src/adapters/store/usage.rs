//! Usage allowances: per account, metric and period, a head item with the limit and
//! `USAGE_SHARDS` counter items, each in a partition of its own, each holding a share of what
//! remains. A usage request takes
//! from one shard (or, near the end, from several) in one transaction with its usage record, each
//! shard conditioned so that the sum taken never passes the limit. Overage is paid from credits
//! in the same transaction as the ledger entry and the balance.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::codec::{get_s, n, s, Fields, Item};
use super::keys::history_sk;
use super::{MoveOutcome, Store, StoreError};
use crate::domain::ledger::CreditMove;
use crate::domain::ledger::EntryKind;
use crate::domain::metering::METER_SHARDS;
use crate::domain::money::Currency;
use crate::domain::records::{now_ms, UserId};
use crate::domain::usage::{split_allowance, USAGE_SHARDS};

/// Seconds a usage record that no meter bills is kept for replays.
pub const USAGE_RECORD_TTL_SECS: i64 = 7 * 24 * 3600;

/// What an allowance holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub limit: i64,
    /// What each shard has left, by shard number.
    pub remaining: Vec<i64>,
}

impl Allowance {
    pub fn used(&self) -> i64 {
        self.limit - self.remaining.iter().sum::<i64>()
    }
}

/// The first answer to a usage key, with what it was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub metric: String,
    pub quantity: i64,
    /// The answer as JSON text.
    pub answer: String,
    /// The attempt that wrote it (leased usages), to tell a retried write of one's own from
    /// another request's.
    pub attempt: Option<String>,
}

/// A usage to record: its key's hash, quantity, the answer given, and where it is metered.
pub struct NewUsage<'a> {
    pub hash: &'a str,
    pub quantity: i64,
    pub answer: &'a str,
    pub meter: Option<MeterTag<'a>>,
}

/// A usage of a metered plan: the Stripe meter's event name and the customer billed.
pub struct MeterTag<'a> {
    pub event_name: &'a str,
    pub customer: &'a str,
}

/// The gsi2 partition of one meter shard (unscoped: the reporter reads every scope's records,
/// each record's own key names its scope).
pub fn meter_pk(shard: usize) -> String {
    format!("METER#{shard}")
}

/// A block of an allowance leased to one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseItem {
    pub id: String,
    pub shard: usize,
    /// Units granted and not given back.
    pub granted: i64,
    /// When the lease ends (Unix milliseconds).
    pub until_ms: i64,
}

/// Partitions of the lease index the scheduled settle reads.
pub const LEASE_INDEX_SHARDS: usize = 4;

/// The gsi2 partition that lists a lease by its end (chosen by its id).
pub fn leases_pk(lease: &str) -> String {
    let shard = lease.bytes().map(usize::from).sum::<usize>() % LEASE_INDEX_SHARDS;
    format!("LEASES#{shard}")
}

/// A lease as the scheduled settle finds it: its scope and allowance, and the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedLease {
    pub scope_prefix: String,
    pub account: UserId,
    pub metric: String,
    pub period: String,
    pub lease: LeaseItem,
}

/// Where one allowance lives.
pub struct AllowanceKey<'a> {
    pub account: &'a UserId,
    pub metric: &'a str,
    pub period: &'a str,
}

impl Store {
    fn head_item(&self, at: &AllowanceKey<'_>) -> Item {
        self.keys.usage_head(at.account, at.metric, at.period)
    }

    fn shard_item(&self, at: &AllowanceKey<'_>, shard: usize) -> Item {
        self.keys
            .usage_shard(at.account, at.metric, at.period, shard)
    }

    pub async fn usage_record(&self, hash: &str) -> Result<Option<UsageRecord>, StoreError> {
        let Some(item) = self.get(self.keys.usage_record(hash)).await? else {
            return Ok(None);
        };
        let f = Fields::of(&item);
        Ok(Some(UsageRecord {
            metric: f.text("metric")?.to_owned(),
            quantity: f.int("quantity")?,
            answer: f.text("answer")?.to_owned(),
            attempt: f.opt_text("attempt")?.map(str::to_owned),
        }))
    }

    /// The allowance as stored (one BatchGetItem of the head and the shards); `None` before its
    /// first use in the period.
    pub async fn allowance(&self, at: &AllowanceKey<'_>) -> Result<Option<Allowance>, StoreError> {
        let mut wanted = vec![self.head_item(at)];
        wanted.extend((0..USAGE_SHARDS).map(|shard| self.shard_item(at, shard)));
        let items = self.get_many(wanted).await?;
        let Some(head) = items.iter().find(|i| get_s(i, "sk") == Some("HEAD")) else {
            return Ok(None);
        };
        let limit = Fields::of(head).int("limit")?;
        let mut remaining = vec![0; USAGE_SHARDS];
        for item in items.iter().filter(|i| get_s(i, "sk") == Some("SHARD")) {
            let Some(number) = get_s(item, "pk")
                .and_then(|pk| pk.rsplit('#').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some(slot) = remaining.get_mut(number) {
                *slot = Fields::of(item).int("remaining")?;
            }
        }
        Ok(Some(Allowance { limit, remaining }))
    }

    /// Opens the period's allowance at `limit`, split over the shards; `false` if it is open.
    pub async fn open_allowance(
        &self,
        at: &AllowanceKey<'_>,
        limit: i64,
    ) -> Result<bool, StoreError> {
        let mut head = self.head_item(at);
        head.insert("limit".into(), n(limit));
        head.insert("openedAt".into(), n(now_ms()));
        let mut items = vec![self.put_new(head)?];
        for (shard, share) in split_allowance(limit, USAGE_SHARDS).into_iter().enumerate() {
            let mut item = self.shard_item(at, shard);
            item.insert("remaining".into(), n(share));
            items.push(self.put_new(item)?);
        }
        Ok(self.transact(items).await?.is_ok())
    }

    /// Raises the limit from `from` to `to` (an upgrade in the period): the difference goes to
    /// the first shard. `false` if the limit was no longer `from`.
    pub async fn raise_allowance(
        &self,
        at: &AllowanceKey<'_>,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let head = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.head_item(at)))
            .update_expression("SET #limit = :to")
            .condition_expression("#limit = :from")
            .expression_attribute_names("#limit", "limit")
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":from", n(from))
            .build()
            .map_err(StoreError::build)?;
        let shard = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.shard_item(at, 0)))
            .update_expression("SET remaining = remaining + :delta")
            .expression_attribute_values(":delta", n(to - from))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().update(head).build(),
            TransactWriteItem::builder().update(shard).build(),
        ];
        Ok(self.transact(items).await?.is_ok())
    }

    /// A shard update taking `amount`: only while it has that much left (`exact`: only if it
    /// still has exactly what was read).
    fn take_item(
        &self,
        at: &AllowanceKey<'_>,
        shard: usize,
        amount: i64,
        exact: Option<i64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.shard_item(at, shard)))
            .update_expression("SET remaining = remaining - :amount")
            .expression_attribute_values(":amount", n(amount));
        let update = match exact {
            Some(read) => update
                .condition_expression("remaining = :read")
                .expression_attribute_values(":read", n(read)),
            None => update.condition_expression("remaining >= :amount"),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(StoreError::build)?)
            .build())
    }

    /// The usage record's item (a lease's records are also listed under the lease in gsi1).
    fn record_attributes(&self, record: &NewUsage<'_>, metric: &str, lease: Option<&str>) -> Item {
        let mut item = self.keys.usage_record(record.hash);
        item.insert("metric".into(), s(metric));
        item.insert("quantity".into(), n(record.quantity));
        item.insert("answer".into(), s(record.answer));
        let now = now_ms();
        item.insert("createdAt".into(), n(now));
        // A metered record has no expiry until it is billed: the meter reporter stamps it then
        // (`stamp_billed_records`), so that no record leaves before Stripe has it.
        if record.meter.is_none() {
            item.insert("expiresAt".into(), n(now / 1000 + USAGE_RECORD_TTL_SECS));
        }
        if let Some(meter) = &record.meter {
            // Listed for the reporter, in time order, in one of the meter partitions.
            let shard = usize::from_str_radix(&record.hash[..4.min(record.hash.len())], 16)
                .unwrap_or(0)
                % METER_SHARDS;
            item.insert("meterEvent".into(), s(meter.event_name));
            item.insert("customer".into(), s(meter.customer));
            item.insert("gsi2pk".into(), s(meter_pk(shard)));
            item.insert("gsi2sk".into(), s(history_sk(now, record.hash)));
        }
        if let Some(lease) = lease {
            item.insert("lease".into(), s(lease));
            item.insert("gsi1pk".into(), s(self.keys.leased_records_pk(lease)));
            item.insert("gsi1sk".into(), s(record.hash));
        }
        item
    }

    fn record_item(
        &self,
        record: &NewUsage<'_>,
        metric: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        self.put_new(self.record_attributes(record, metric, None))
    }

    /// Writes a usage taken from `lease` (one conditional put: nothing shared is written),
    /// marked with `attempt`. `false`: a record of the key exists (a replay, or this very put
    /// retried by the SDK after its first try was written: the record's attempt tells).
    pub async fn record_leased_usage(
        &self,
        record: &NewUsage<'_>,
        metric: &str,
        lease: &str,
        attempt: &str,
    ) -> Result<bool, StoreError> {
        let mut item = self.record_attributes(record, metric, Some(lease));
        item.insert("attempt".into(), s(attempt));
        self.put_if_absent(item).await
    }

    /// Leases `block` units of one shard to an instance until `expires_ms`, in one
    /// transaction with the lease's item. `false`: the shard no longer has that much.
    pub async fn take_lease(
        &self,
        at: &AllowanceKey<'_>,
        shard: usize,
        block: i64,
        lease: &str,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut item = self
            .keys
            .usage_lease(at.account, at.metric, at.period, lease);
        item.insert("shard".into(), n(i64::try_from(shard).unwrap_or(0)));
        item.insert("granted".into(), n(block));
        item.insert("leaseUntil".into(), n(expires_ms));
        item.insert("account".into(), s(at.account.as_str()));
        item.insert("metric".into(), s(at.metric));
        item.insert("period".into(), s(at.period));
        // Listed by end time for the scheduled settle (unscoped; the item's key names its scope).
        item.insert("gsi2pk".into(), s(leases_pk(lease)));
        item.insert("gsi2sk".into(), s(history_sk(expires_ms, lease)));
        // Removed by the table's TTL well after any period (a lease is settled long before).
        item.insert("expiresAt".into(), n(expires_ms / 1000 + 400 * 24 * 3600));
        let items = vec![self.take_item(at, shard, block, None)?, self.put_new(item)?];
        Ok(self.transact(items).await?.is_ok())
    }

    /// Gives `amount` unused units of a live lease back to its shard (its owner, which knows
    /// they were not taken). `false`: the lease was settled meanwhile.
    pub async fn return_lease_units(
        &self,
        at: &AllowanceKey<'_>,
        lease: &LeaseItem,
        amount: i64,
    ) -> Result<bool, StoreError> {
        let lease_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(
                self.keys
                    .usage_lease(at.account, at.metric, at.period, &lease.id),
            ))
            .update_expression("SET granted = granted - :amount")
            .condition_expression("granted >= :amount")
            .expression_attribute_values(":amount", n(amount))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().update(lease_update).build(),
            self.give_item(at, lease.shard, amount)?,
        ];
        Ok(self.transact(items).await?.is_ok())
    }

    /// The allowance's leases that ended before `before_ms` (the first page: the scheduled
    /// settle keeps the partition short).
    pub async fn expired_leases(
        &self,
        at: &AllowanceKey<'_>,
        before_ms: i64,
    ) -> Result<Vec<LeaseItem>, StoreError> {
        self.leases_where(at, "leaseUntil < :at", before_ms).await
    }

    /// The allowance's leases that ended at or after `since_ms` or still run.
    pub async fn recent_leases(
        &self,
        at: &AllowanceKey<'_>,
        since_ms: i64,
    ) -> Result<Vec<LeaseItem>, StoreError> {
        self.leases_where(at, "leaseUntil >= :at", since_ms).await
    }

    async fn leases_where(
        &self,
        at: &AllowanceKey<'_>,
        filter: &str,
        at_ms: i64,
    ) -> Result<Vec<LeaseItem>, StoreError> {
        let pk = self.keys.usage_lease(at.account, at.metric, at.period, "");
        let pk = get_s(&pk, "pk").unwrap_or_default().to_owned();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression(filter)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":at", n(at_ms))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        output
            .items()
            .iter()
            .map(|item| {
                let f = Fields::of(item);
                Ok(LeaseItem {
                    id: f.text("sk")?.to_owned(),
                    shard: usize::try_from(f.int("shard")?).unwrap_or(0),
                    granted: f.int("granted")?,
                    until_ms: f.int("leaseUntil")?,
                })
            })
            .collect()
    }

    /// Leases of every scope that ended before `before_ms`, from one partition of the lease
    /// index, oldest first (up to `limit`).
    pub async fn ended_leases(
        &self,
        index_shard: usize,
        before_ms: i64,
        limit: i32,
    ) -> Result<Vec<EndedLease>, StoreError> {
        self.index_before(
            format!("LEASES#{index_shard}"),
            format!("{before_ms:015}"),
            limit,
            None,
        )
        .await?
        .0
        .iter()
        .map(|item| {
            let f = Fields::of(item);
            let pk = get_s(item, "pk").unwrap_or_default();
            Ok(EndedLease {
                scope_prefix: super::keys::split_scope(pk).0.to_owned(),
                account: f.user("account")?,
                metric: f.text("metric")?.to_owned(),
                period: f.text("period")?.to_owned(),
                lease: LeaseItem {
                    id: f.text("sk")?.to_owned(),
                    shard: usize::try_from(f.int("shard")?).unwrap_or(0),
                    granted: f.int("granted")?,
                    until_ms: f.int("leaseUntil")?,
                },
            })
        })
        .collect()
    }

    /// The units recorded against a lease (its records, read from gsi1).
    pub async fn leased_units(&self, lease: &str) -> Result<i64, StoreError> {
        let mut total: i64 = 0;
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(super::keys::GSI1)
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(self.keys.leased_records_pk(lease)))
                .projection_expression("quantity")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for item in output.items() {
                total = total.saturating_add(Fields::of(item).int("quantity")?);
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(total),
            }
        }
    }

    /// Ends an expired lease: what it granted beyond `used` goes back to its shard, and the
    /// lease is removed, in one transaction (only if nobody changed it since it was read).
    pub async fn settle_lease(
        &self,
        at: &AllowanceKey<'_>,
        lease: &LeaseItem,
        used: i64,
    ) -> Result<bool, StoreError> {
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(
                self.keys
                    .usage_lease(at.account, at.metric, at.period, &lease.id),
            ))
            .condition_expression("granted = :granted")
            .expression_attribute_values(":granted", n(lease.granted))
            .build()
            .map_err(StoreError::build)?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        let unused = lease.granted.saturating_sub(used).max(0);
        if unused > 0 {
            items.push(self.give_item(at, lease.shard, unused)?);
        }
        Ok(self.transact(items).await?.is_ok())
    }

    fn give_item(
        &self,
        at: &AllowanceKey<'_>,
        shard: usize,
        amount: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.shard_item(at, shard)))
            .update_expression("SET remaining = remaining + :amount")
            .condition_expression("attribute_exists(remaining)")
            .expression_attribute_values(":amount", n(amount))
            .build()
            .map_err(StoreError::build)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Marks the allowance as reached in its period (once; the stream turns the mark into the
    /// `limit.reached` event). `true`: marked now.
    pub async fn mark_limit_reached(
        &self,
        at: &AllowanceKey<'_>,
        limit: i64,
    ) -> Result<bool, StoreError> {
        let mut item = self.keys.usage_limit(at.account, at.metric, at.period);
        item.insert("account".into(), s(at.account.as_str()));
        item.insert("metric".into(), s(at.metric));
        item.insert("period".into(), s(at.period));
        item.insert("limit".into(), n(limit));
        let now = now_ms();
        item.insert("createdAt".into(), n(now));
        // Kept past any period's end (the longest is a year), then removed.
        item.insert("expiresAt".into(), n(now / 1000 + 400 * 24 * 3600));
        self.put_if_absent(item).await
    }

    /// Takes `takes` (shard, amount, what was read when several are taken) and writes the usage
    /// record, in one transaction. `false`: a condition failed (read again, or a replay).
    pub async fn take_allowance(
        &self,
        at: &AllowanceKey<'_>,
        takes: &[(usize, i64, Option<i64>)],
        record: &NewUsage<'_>,
    ) -> Result<bool, StoreError> {
        let mut items = Vec::with_capacity(takes.len() + 1);
        for (shard, amount, exact) in takes {
            items.push(self.take_item(at, *shard, *amount, *exact)?);
        }
        items.push(self.record_item(record, at.metric)?);
        Ok(self.transact(items).await?.is_ok())
    }

    /// Takes what is left of the allowance (`drains`, each conditioned on what was read) and
    /// spends `overage` credits as the ledger entry `entry_id`, with the usage record, in one
    /// transaction. `None`: a condition kept failing; read again.
    #[allow(clippy::too_many_arguments)]
    pub async fn pay_overage(
        &self,
        at: &AllowanceKey<'_>,
        drains: &[(usize, i64)],
        entry_id: &str,
        overage: &CreditMove,
        currency: &Currency,
        record: &NewUsage<'_>,
    ) -> Result<Option<MoveOutcome>, StoreError> {
        let mut extra = Vec::with_capacity(drains.len() + 1);
        for (shard, read) in drains {
            extra.push(self.take_item(at, *shard, *read, Some(*read))?);
        }
        extra.push(self.record_item(record, at.metric)?);
        self.move_credits_with(
            at.account,
            entry_id,
            EntryKind::Spend,
            overage,
            currency,
            None,
            &extra,
            3,
        )
        .await
    }
}
