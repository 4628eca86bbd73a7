//! Blocks of an allowance leased to one instance, so that a hot account's small usages write
//! no shared item: taking from a block, leasing one, giving unused units back, and settling
//! the leases that ended (from their usage records), on a refusal and on a schedule.

use crate::adapters::store::{
    Allowance, AllowanceKey, LeaseItem, Store, LEASE_INDEX_SHARDS, USAGE_RECORD_TTL_SECS,
};
use crate::app::HeldTake;
use crate::domain::records::now_ms;
use crate::domain::scope::Scope;
use crate::domain::usage::{lease_shard, HeldLease, UsageOutcome, UsageTerms, LEASE_BLOCK};
use crate::services::Failure;
use crate::App;

use super::machine::Leased;
use super::{new_usage, replayed, UsageRequest};

/// A small usage taken from this instance's block of the allowance (leasing one when it has
/// none): only the usage record is written, a put of its own item, so a hot account's events
/// write no shared item. The block was taken from a shard with its condition, so the sum of
/// blocks and direct takes never passes the limit.
pub(super) async fn from_lease(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
    cache_key: &str,
    allowance: &Allowance,
    request: &UsageRequest<'_>,
    terms: &UsageTerms,
) -> Result<(Leased, Option<UsageOutcome>), Failure> {
    let quantity = request.quantity;
    let mut held = take_held(app, store, at, cache_key, quantity).await;
    // Only one request of this instance leases a block; the others wait and take from it.
    let _gate = if held.is_none() {
        let gate = app.usage.lease_gate.lock().await;
        held = take_held(app, store, at, cache_key, quantity).await;
        Some(gate)
    } else {
        None
    };
    let now = now_ms();
    if held.is_none() {
        let seed = usize::from(uuid::Uuid::new_v4().as_bytes()[1]);
        let Some(shard) = lease_shard(&allowance.remaining, LEASE_BLOCK, seed) else {
            return Ok((Leased::NoLease, None));
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let until_ms = now
            .saturating_add(i64::try_from(app.config.usage_lease.as_millis()).unwrap_or(i64::MAX));
        if !store
            .take_lease(at, shard, LEASE_BLOCK, &id, until_ms)
            .await?
        {
            app.usage.allowances.remove(cache_key);
            return Ok((Leased::ReadAgain, None));
        }
        if now_ms() >= until_ms {
            // The write took longer than the lease lasts: nothing is taken from it here; the
            // settle gives its units back.
            app.usage.allowances.remove(cache_key);
            return Ok((Leased::NoLease, None));
        }
        let lease = HeldLease {
            id,
            shard,
            left: LEASE_BLOCK - quantity,
            until_ms,
        };
        app.usage.allowances.update(cache_key, |cached| {
            if let Some(left) = cached.remaining.get_mut(shard) {
                *left -= LEASE_BLOCK;
            }
        });
        // A block another request leased at the same moment is replaced; its units go back
        // when it is settled.
        app.usage.hold(cache_key, lease.clone());
        held = Some(lease);
    }
    let Some(lease) = held else {
        return Ok((Leased::NoLease, None));
    };
    // What this allowance has used as known here: blocks count as used where they are held,
    // so this instance's unused units are taken off.
    let snapshot = app
        .usage
        .allowances
        .get(cache_key)
        .unwrap_or_else(|| allowance.clone());
    let used = snapshot.used().saturating_sub(lease.left).max(quantity);
    let result = UsageOutcome::allowed(used, snapshot.limit, &terms.period, None);
    let text = result.to_record(&app.config.default_currency);
    let record = new_usage(request, &text, &terms.customer, &terms.plan);
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    if store
        .record_leased_usage(&record, at.metric, &lease.id, &attempt)
        .await?
    {
        return Ok((Leased::Answered, Some(result)));
    }
    // A record of the key exists. If this put wrote it (its first try succeeded and the SDK's
    // retry found it), the units are taken and the answer is this one.
    if store
        .usage_record(request.key_hash)
        .await?
        .is_some_and(|r| r.attempt.as_deref() == Some(attempt.as_str()))
    {
        return Ok((Leased::Answered, Some(result)));
    }
    // The key was used before: the units were not taken.
    app.usage.untake(cache_key, &lease.id, quantity);
    match replayed(app, store, request).await? {
        Some(first) => Ok((Leased::Answered, Some(first))),
        None => Ok((Leased::ReadAgain, None)),
    }
}

/// Takes `quantity` from the block this instance holds for the allowance, if it has that
/// much and has not ended; a block that ended with units left gives them back.
async fn take_held(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
    cache_key: &str,
    quantity: i64,
) -> Option<HeldLease> {
    match app.usage.take_held(cache_key, quantity, now_ms()) {
        HeldTake::Taken(lease) => Some(lease),
        HeldTake::Ended(ended) => {
            if ended.left > 0 {
                give_back(store, at, &ended).await;
            }
            None
        }
        HeldTake::None => None,
    }
}

/// Gives a block's unused units back to its shard (they were never handed out here).
async fn give_back(store: &Store, at: &AllowanceKey<'_>, lease: &HeldLease) {
    let item = LeaseItem {
        id: lease.id.clone(),
        shard: lease.shard,
        granted: 0,
        until_ms: lease.until_ms,
    };
    if let Err(err) = store.return_lease_units(at, &item, lease.left).await {
        // Settled later from its records, like the block of an instance that stopped.
        tracing::warn!(error = %err, "unused leased units were not given back");
    }
}

/// Before a refusal: this instance's block goes back, and every lease that ended long enough
/// ago (`usage_lease_margin`: its last records are written and indexed) is settled from its
/// records. Returns how many leases were given back or settled.
pub(super) async fn reclaim_leases(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
    cache_key: &str,
) -> Result<usize, Failure> {
    let mut reclaimed = 0;
    let own = app.usage.release(cache_key);
    if let Some(own) = own.filter(|l| l.left > 0) {
        give_back(store, at, &own).await;
        reclaimed += 1;
    }
    let margin = i64::try_from(app.config.usage_lease_margin.as_millis()).unwrap_or(i64::MAX);
    for lease in store
        .expired_leases(at, now_ms().saturating_sub(margin))
        .await?
        .iter()
        .take(SETTLES_PER_REQUEST)
    {
        if settle_one(store, at, lease).await? {
            reclaimed += 1;
        }
    }
    Ok(reclaimed)
}

/// Leases a request settles at most before it answers (the scheduled settle does the rest).
const SETTLES_PER_REQUEST: usize = 25;
/// Leases the scheduled settle reads per index partition and run.
const SETTLES_PER_RUN: i32 = 500;

/// Settles one ended lease from its records. A lease older than its records' time to live
/// (its records may be gone) is closed as fully used: nothing is given back on a count that
/// could be short.
async fn settle_one(
    store: &Store,
    at: &AllowanceKey<'_>,
    lease: &LeaseItem,
) -> Result<bool, Failure> {
    let records_kept_until = lease
        .until_ms
        .saturating_add((USAGE_RECORD_TTL_SECS - 24 * 3600).saturating_mul(1000));
    let used = if now_ms() >= records_kept_until {
        tracing::warn!(
            granted = lease.granted,
            "a usage lease outlived its records; closed as fully used"
        );
        lease.granted
    } else {
        store.leased_units(&lease.id).await?
    };
    let settled = store.settle_lease(at, lease, used).await?;
    if settled {
        tracing::info!(
            granted = lease.granted,
            used,
            "an ended usage lease was settled"
        );
    }
    Ok(settled)
}

/// The scheduled settle (with the meter reporter): every lease of every scope that ended more
/// than the margin ago goes back to its shard, so blocks never wait for a refusal and never
/// outlive their records. Returns how many were settled.
pub async fn settle_ended_leases(app: &App) -> Result<usize, Failure> {
    let margin = i64::try_from(app.config.usage_lease_margin.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(margin);
    let mut settled = 0;
    for index_shard in 0..LEASE_INDEX_SHARDS {
        for ended in app
            .store
            .ended_leases(index_shard, before, SETTLES_PER_RUN)
            .await?
        {
            let Some(scope) = Scope::from_key_prefix(&ended.scope_prefix, app.config.default_mode)
            else {
                continue;
            };
            let store = app.store_for(&scope);
            let at = AllowanceKey {
                account: &ended.account,
                metric: &ended.metric,
                period: &ended.period,
            };
            if settle_one(&store, &at, &ended.lease).await? {
                settled += 1;
            }
        }
    }
    Ok(settled)
}

/// Units of the allowance other instances may still hold: what live (or just ended) leases
/// granted beyond their records.
pub(super) async fn held_elsewhere(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
) -> Result<i64, Failure> {
    let margin = i64::try_from(app.config.usage_lease_margin.as_millis()).unwrap_or(i64::MAX);
    let mut held: i64 = 0;
    for lease in store
        .recent_leases(at, now_ms().saturating_sub(margin))
        .await?
        .iter()
        .filter(|l| l.granted > 0)
        .take(SETTLES_PER_REQUEST)
    {
        let used = store.leased_units(&lease.id).await?;
        held = held.saturating_add((lease.granted - used).max(0));
    }
    Ok(held)
}
