//! Recording usage against a plan's allowance: "may this account do this now?", and the record
//! that it did. The allowance of the period is opened on first use (no batch job resets it),
//! raised at once by an upgrade, and kept by a downgrade until the period ends. Beyond it, a plan
//! with an overage price takes credits in the same transaction as the usage record; otherwise
//! the request is refused (429) and nothing is written.

use serde_json::{json, Value};

use crate::api::{Major, MetricUsage, UsageAnswer, UsageOverview};

use crate::adapters::store::{
    Allowance, AllowanceKey, LeaseItem, MeterTag, MoveOutcome, NewUsage, Store, LEASE_INDEX_SHARDS,
    USAGE_RECORD_TTL_SECS,
};
use crate::domain::ledger::CreditMove;
use crate::domain::plans::Plan;
use crate::domain::records::{now_ms, rfc3339, UserId};
use crate::domain::scope::Scope;
use crate::domain::subscriptions::SubscriptionStatus;
use crate::domain::usage::{
    lease_shard, period_for, take_from_shards, HeldLease, Period, UsageDecision, UsageTerms,
    LEASE_BLOCK, LEASE_MAX_QUANTITY,
};
use crate::services::billing::{self, entitlement_among};
use crate::services::Failure;
use crate::App;

/// Rounds of read-decide-write before a busy allowance answers 503.
const USAGE_ATTEMPTS: u32 = 30;

pub struct UsageRequest<'a> {
    pub account: &'a UserId,
    pub metric: &'a str,
    pub quantity: i64,
    /// The hash of the caller's key (caller, account and key).
    pub key_hash: &'a str,
    pub dry_run: bool,
}

/// The account's plan now, the period its allowances count in, and the Stripe customer its
/// subscription to that plan bills (for metered plans), from the scope's plans.
async fn plan_and_period(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plans: &[Plan],
) -> Result<(Plan, Period, Option<String>), Failure> {
    let now = entitlement_among(app, scope, account, plans).await?;
    // The subscription gives the period when the plan comes from it: its own plan, or the
    // higher plan a downgrade holds to the end of the paid period.
    let subscribed = now.subscription.as_ref().filter(|s| {
        (s.plan_id == now.plan.id || s.held_plan_id.as_deref() == Some(now.plan.id.as_str()))
            && matches!(
                s.status,
                SubscriptionStatus::Active
                    | SubscriptionStatus::Trialing
                    | SubscriptionStatus::PastDue
            )
    });
    let period = period_for(subscribed.map(|s| s.current_period_end), now_ms() / 1000);
    let customer = subscribed
        .map(|s| s.customer_id.clone())
        .filter(|c| !c.is_empty());
    Ok((now.plan, period, customer))
}

/// The account's usage terms: from this instance's cache unless `fresh`, else read (plans,
/// settings, subscription and tier) and cached.
async fn usage_terms(
    app: &App,
    scope: &Scope,
    store: &Store,
    account: &UserId,
    fresh: bool,
) -> Result<UsageTerms, Failure> {
    let key = format!("{}|{}", store.keys().prefix(), account.as_str());
    if !fresh {
        if let Some(terms) = app.usage_terms.get(&key) {
            return Ok(terms);
        }
    }
    let plans = billing::plans(app, scope).await?;
    let (plan, period, customer) = plan_and_period(app, scope, account, &plans).await?;
    let mut known_metrics: Vec<String> = plans
        .iter()
        .flat_map(|p| p.limits.keys().cloned())
        .collect();
    known_metrics.sort();
    known_metrics.dedup();
    let terms = UsageTerms {
        plan,
        period,
        customer,
        known_metrics,
    };
    app.usage_terms.put(key, terms.clone());
    Ok(terms)
}

fn allowance_cache_key(store: &Store, at: &AllowanceKey<'_>) -> String {
    format!(
        "{}|{}|{}|{}",
        store.keys().prefix(),
        at.account.as_str(),
        at.metric,
        at.period
    )
}

/// The allowance of the period, opened on first use and raised to `limit` when the plan grew.
async fn current_allowance(
    store: &Store,
    at: &AllowanceKey<'_>,
    limit: i64,
) -> Result<Allowance, Failure> {
    for _ in 0..USAGE_ATTEMPTS {
        match store.allowance(at).await? {
            None => {
                store.open_allowance(at, limit).await?;
            }
            Some(allowance) if allowance.limit < limit => {
                store.raise_allowance(at, allowance.limit, limit).await?;
            }
            Some(allowance) => return Ok(allowance),
        }
    }
    Err(Failure::Unavailable("the allowance kept changing".into()))
}

/// The answer to a usage, kept as JSON: a replay answers the stored first answer.
fn answer(allowed: bool, used: i64, limit: i64, period: &Period, paid: Option<Major>) -> Value {
    json!(UsageAnswer {
        allowed,
        used,
        limit,
        remaining: (limit - used).max(0),
        resets_at: rfc3339(period.resets_at.saturating_mul(1000)),
        paid_with_credits: paid,
    })
}

/// Records (or, with `dry_run`, only checks) a usage; the same key answers the first answer.
///
/// The fast path reads nothing: the account's terms and the allowance's shards come from this
/// instance's cache, and one transaction takes the quantity from a shard that has room (its
/// condition makes the limit exact whatever the cache says) and writes the usage record. A
/// failed condition (another instance took that room, or the key was used before) reads afresh;
/// and nothing is refused, and no overage paid, without reading the terms and the allowance
/// afresh, so an upgrade counts at once.
pub async fn record_usage(
    app: &App,
    scope: &Scope,
    request: &UsageRequest<'_>,
) -> Result<Value, Failure> {
    let store = app.store_for(scope);
    let currency = &app.config.default_currency;
    let quantity = request.quantity;
    // Whether the terms and the allowance must be read afresh (after a failed condition, and
    // before any refusal or overage).
    let mut fresh = false;
    // Whether leased units were given back once in this request.
    let mut reclaimed = false;
    for _ in 0..USAGE_ATTEMPTS {
        let terms = usage_terms(app, scope, &store, request.account, fresh).await?;
        if !terms.known_metrics.iter().any(|m| m == request.metric) {
            if !fresh {
                fresh = true;
                continue;
            }
            return Err(Failure::invalid(format!(
                "{} is not a metric of this project's plans.",
                request.metric
            )));
        }
        let limit = terms.plan.limits.get(request.metric).copied().unwrap_or(0);
        let period = &terms.period;
        let at = AllowanceKey {
            account: request.account,
            metric: request.metric,
            period: &period.id,
        };
        let cache_key = allowance_cache_key(&store, &at);
        // Too little left, as a fresh read here found a moment ago: a replay still gets its
        // first answer; anything larger than what was left is refused without reading again (a
        // hot account past its limit would otherwise read its subscription and shards on every
        // request).
        if !fresh && !request.dry_run {
            if let Some((limit, left, held)) = app.exhausted.get(&cache_key) {
                if quantity > left {
                    if let Some(first) = replayed(&store, request).await? {
                        return Ok(first);
                    }
                    return Err(if held {
                        held_for_now()
                    } else {
                        limit_reached(request.metric, limit)
                    });
                }
            }
        }
        let allowance = match app.allowances.get(&cache_key) {
            Some(cached) if !fresh && cached.limit >= limit => cached,
            _ => {
                let read = current_allowance(&store, &at, limit).await?;
                app.allowances.put(cache_key.clone(), read.clone());
                read
            }
        };
        let seed = usize::from(uuid::Uuid::new_v4().as_bytes()[0]);
        let decision = take_from_shards(&allowance.remaining, quantity, seed);
        let (takes, short) = match decision {
            UsageDecision::FromShard(shard) => (vec![(shard, quantity, None)], 0),
            UsageDecision::Spread(takes) => (
                takes
                    .into_iter()
                    .map(|(shard, take)| (shard, take, allowance.remaining.get(shard).copied()))
                    .collect(),
                0,
            ),
            UsageDecision::Short { short } => (Vec::new(), short),
        };
        if short == 0 && !request.dry_run && !fresh && quantity <= LEASE_MAX_QUANTITY {
            match from_lease(app, &store, &at, &cache_key, &allowance, request, &terms).await? {
                Leased::Answered(result) => return Ok(result),
                Leased::NoLease => {}
                Leased::ReadAgain => {
                    fresh = true;
                    continue;
                }
            }
        }
        if short == 0 {
            let used = allowance.used().saturating_add(quantity);
            let result = answer(true, used, allowance.limit, period, None);
            if request.dry_run {
                return Ok(result);
            }
            let text = result.to_string();
            let record = new_usage(request, &text, &terms.customer, &terms.plan);
            if store.take_allowance(&at, &takes, &record).await? {
                app.allowances.update(&cache_key, |cached| {
                    for (shard, amount, _) in &takes {
                        if let Some(left) = cached.remaining.get_mut(*shard) {
                            *left -= amount;
                        }
                    }
                });
                return Ok(result);
            }
            app.allowances.remove(&cache_key);
            if let Some(first) = replayed(&store, request).await? {
                return Ok(first);
            }
            fresh = true;
            continue;
        }
        // Beyond the allowance as last known here: decide only on what is stored now.
        if !fresh {
            fresh = true;
            continue;
        }
        // The first answer if this key was recorded, else overage from credits, or refused.
        if let Some(first) = replayed(&store, request).await? {
            return Ok(first);
        }
        // Units held in leases go back first: this instance's unused ones, and what expired
        // leases did not use. Then the allowance is read again.
        if !reclaimed {
            reclaimed = true;
            if reclaim_leases(app, &store, &at, &cache_key).await? > 0 {
                app.allowances.remove(&cache_key);
                continue;
            }
        }
        // Units still held in other instances' blocks come back within seconds: neither a
        // refusal nor an overage charge is right until then.
        if !request.dry_run && held_elsewhere(app, &store, &at).await? > 0 {
            let left = allowance.limit - allowance.used();
            app.exhausted
                .put(cache_key.clone(), (allowance.limit, left, true));
            return Err(held_for_now());
        }
        let refused = || limit_reached(request.metric, allowance.limit);
        // A metric a Stripe meter bills is never also paid in credits (a plan stored with both,
        // from before such plans were refused, bills the meter only).
        let overage_price = terms
            .plan
            .overage_prices
            .get(request.metric)
            .copied()
            .filter(|_| !terms.plan.meter_events.contains_key(request.metric));
        let Some(price) = overage_price else {
            if !request.dry_run {
                note_limit_reached(&store, &at, allowance.limit).await;
                let left = allowance.limit - allowance.used();
                app.exhausted
                    .put(cache_key.clone(), (allowance.limit, left, false));
            }
            return Err(refused());
        };
        let cost = short.checked_mul(price).ok_or_else(refused)?;
        let balance = store
            .balance(request.account)
            .await?
            .map_or(0, |b| b.balance);
        let paid = Major::of(currency, cost);
        let result = answer(true, allowance.limit, allowance.limit, period, Some(paid));
        if request.dry_run {
            return if balance >= cost {
                Ok(result)
            } else {
                Err(refused())
            };
        }
        let drains: Vec<(usize, i64)> = allowance
            .remaining
            .iter()
            .enumerate()
            .filter(|(_, left)| **left > 0)
            .map(|(shard, left)| (shard, *left))
            .collect();
        let overage = CreditMove {
            delta: -cost,
            reason: format!("{} {} beyond the plan", short, request.metric),
        };
        let entry_id = crate::domain::idempotency::overage_entry(request.key_hash);
        let text = result.to_string();
        app.allowances.remove(&cache_key);
        match store
            .pay_overage(
                &at,
                &drains,
                &entry_id,
                &overage,
                currency,
                &new_usage(request, &text, &terms.customer, &terms.plan),
            )
            .await?
        {
            Some(MoveOutcome::Done { .. }) => return Ok(result),
            Some(MoveOutcome::Insufficient) => {
                note_limit_reached(&store, &at, allowance.limit).await;
                return Err(refused());
            }
            Some(MoveOutcome::CurrencyMismatch) => {
                return Err(Failure::Conflict(
                    "The account's credits are in another currency.".into(),
                ))
            }
            Some(MoveOutcome::Replayed { .. }) | Some(MoveOutcome::KeyConflict) | None => {
                if let Some(first) = replayed(&store, request).await? {
                    return Ok(first);
                }
            }
        }
    }
    Err(Failure::Unavailable("the allowance kept changing".into()))
}

fn held_for_now() -> Failure {
    Failure::RetryLater(
        "Part of this allowance is held by other instances for a few seconds; try again.".into(),
    )
}

fn limit_reached(metric: &str, limit: i64) -> Failure {
    Failure::LimitReached(format!(
        "The plan's {metric} allowance for this period ({limit}) is used up."
    ))
}

enum Leased {
    Answered(Value),
    /// No block could be leased here: take from the shards.
    NoLease,
    /// The shard had less than the cache said: read afresh.
    ReadAgain,
}

/// A small usage taken from this instance's block of the allowance (leasing one when it has
/// none): only the usage record is written, a put of its own item, so a hot account's events
/// write no shared item. The block was taken from a shard with its condition, so the sum of
/// blocks and direct takes never passes the limit.
async fn from_lease(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
    cache_key: &str,
    allowance: &Allowance,
    request: &UsageRequest<'_>,
    terms: &UsageTerms,
) -> Result<Leased, Failure> {
    let quantity = request.quantity;
    let mut held = take_held(app, store, at, cache_key, quantity).await;
    // Only one request of this instance leases a block; the others wait and take from it.
    let _gate = if held.is_none() {
        let gate = app.lease_gate.lock().await;
        held = take_held(app, store, at, cache_key, quantity).await;
        Some(gate)
    } else {
        None
    };
    let now = now_ms();
    if held.is_none() {
        let seed = usize::from(uuid::Uuid::new_v4().as_bytes()[1]);
        let Some(shard) = lease_shard(&allowance.remaining, LEASE_BLOCK, seed) else {
            return Ok(Leased::NoLease);
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let until_ms = now
            .saturating_add(i64::try_from(app.config.usage_lease.as_millis()).unwrap_or(i64::MAX));
        if !store
            .take_lease(at, shard, LEASE_BLOCK, &id, until_ms)
            .await?
        {
            app.allowances.remove(cache_key);
            return Ok(Leased::ReadAgain);
        }
        if now_ms() >= until_ms {
            // The write took longer than the lease lasts: nothing is taken from it here; the
            // settle gives its units back.
            app.allowances.remove(cache_key);
            return Ok(Leased::NoLease);
        }
        let lease = HeldLease {
            id,
            shard,
            left: LEASE_BLOCK - quantity,
            until_ms,
        };
        app.allowances.update(cache_key, |cached| {
            if let Some(left) = cached.remaining.get_mut(shard) {
                *left -= LEASE_BLOCK;
            }
        });
        if let Ok(mut leases) = app.leases.lock() {
            // A block another request leased at the same moment is replaced; its units go
            // back when it is settled.
            leases.insert(cache_key.to_owned(), lease.clone());
        }
        held = Some(lease);
    }
    let Some(lease) = held else {
        return Ok(Leased::NoLease);
    };
    // What this allowance has used as known here: blocks count as used where they are held,
    // so this instance's unused units are taken off.
    let snapshot = app
        .allowances
        .get(cache_key)
        .unwrap_or_else(|| allowance.clone());
    let used = snapshot.used().saturating_sub(lease.left).max(quantity);
    let result = answer(true, used, snapshot.limit, &terms.period, None);
    let text = result.to_string();
    let record = new_usage(request, &text, &terms.customer, &terms.plan);
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    if store
        .record_leased_usage(&record, at.metric, &lease.id, &attempt)
        .await?
    {
        return Ok(Leased::Answered(result));
    }
    // A record of the key exists. If this put wrote it (its first try succeeded and the SDK's
    // retry found it), the units are taken and the answer is this one.
    if store
        .usage_record(request.key_hash)
        .await?
        .is_some_and(|r| r.attempt.as_deref() == Some(attempt.as_str()))
    {
        return Ok(Leased::Answered(result));
    }
    // The key was used before: the units were not taken.
    if let Ok(mut leases) = app.leases.lock() {
        if let Some(current) = leases.get_mut(cache_key).filter(|l| l.id == lease.id) {
            current.left += quantity;
        }
    }
    match replayed(store, request).await? {
        Some(first) => Ok(Leased::Answered(first)),
        None => Ok(Leased::ReadAgain),
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
    let now = now_ms();
    let (held, ended) = {
        let mut leases = app.leases.lock().ok()?;
        match leases.get_mut(cache_key) {
            Some(lease) if now < lease.until_ms && lease.left >= quantity => {
                lease.left -= quantity;
                (Some(lease.clone()), None)
            }
            Some(_) => (None, leases.remove(cache_key)),
            None => (None, None),
        }
    };
    if let Some(ended) = ended.filter(|l| l.left > 0) {
        give_back(store, at, &ended).await;
    }
    held
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
async fn reclaim_leases(
    app: &App,
    store: &Store,
    at: &AllowanceKey<'_>,
    cache_key: &str,
) -> Result<usize, Failure> {
    let mut reclaimed = 0;
    let own = app
        .leases
        .lock()
        .ok()
        .and_then(|mut leases| leases.remove(cache_key));
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
async fn held_elsewhere(app: &App, store: &Store, at: &AllowanceKey<'_>) -> Result<i64, Failure> {
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

/// The usage record to write; a metered plan's record is tagged for the meter reporter.
fn new_usage<'a>(
    request: &'a UsageRequest<'_>,
    answer: &'a str,
    customer: &'a Option<String>,
    plan: &'a Plan,
) -> NewUsage<'a> {
    let meter = match (plan.meter_events.get(request.metric), customer.as_deref()) {
        (Some(event_name), Some(customer)) => Some(MeterTag {
            event_name,
            customer,
        }),
        _ => None,
    };
    NewUsage {
        hash: request.key_hash,
        quantity: request.quantity,
        answer,
        meter,
    }
}

/// Allowances this instance has already marked as reached (the mark is written once per
/// period; this spares a hot account's refusals a write each).
static MARKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Marks the allowance reached (for `limit.reached`), at most once per instance; a failure to
/// mark does not change the answer (the next refusal marks it).
async fn note_limit_reached(store: &Store, at: &AllowanceKey<'_>, limit: i64) {
    let name = format!(
        "{}/{}{}#{}#{}",
        store.table(),
        store.keys().prefix(),
        at.account.as_str(),
        at.metric,
        at.period
    );
    if MARKED.lock().is_ok_and(|marked| marked.contains(&name)) {
        return;
    }
    match store.mark_limit_reached(at, limit).await {
        Ok(_) => {
            if let Ok(mut marked) = MARKED.lock() {
                if marked.len() >= 10_000 {
                    marked.clear();
                }
                marked.push(name);
            }
        }
        Err(err) => tracing::warn!(error = %err, "the limit mark was not written"),
    }
}

/// The first answer to this key, if it was recorded; 409 when the key was used for another
/// metric or quantity.
async fn replayed(store: &Store, request: &UsageRequest<'_>) -> Result<Option<Value>, Failure> {
    if request.dry_run {
        return Ok(None);
    }
    let Some(record) = store.usage_record(request.key_hash).await? else {
        return Ok(None);
    };
    if record.metric != request.metric || record.quantity != request.quantity {
        return Err(Failure::Conflict(
            "This idempotencyKey was already used for another usage.".into(),
        ));
    }
    serde_json::from_str(&record.answer)
        .map(Some)
        .map_err(|_| Failure::Internal("a usage record's answer is not JSON".into()))
}

/// The hash that names a usage key: the caller, the account and the key.
pub fn usage_key_hash(caller: &str, account: &UserId, key: &str) -> String {
    crate::domain::idempotency::usage_key(caller, account, key)
}

/// The account's metrics on its plan now: used, limit and reset time of each.
pub async fn usage_overview(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<UsageOverview, Failure> {
    let store = app.store_for(scope);
    let plans = billing::plans(app, scope).await?;
    let (plan, period, _) = plan_and_period(app, scope, account, &plans).await?;
    let mut metrics = Vec::new();
    for (metric, plan_limit) in &plan.limits {
        let at = AllowanceKey {
            account,
            metric,
            period: &period.id,
        };
        let stored = store.allowance(&at).await?;
        // A downgrade keeps the period's higher limit until the period ends.
        let limit = stored
            .as_ref()
            .map_or(*plan_limit, |a| a.limit.max(*plan_limit));
        let used = stored.as_ref().map_or(0, Allowance::used);
        metrics.push(MetricUsage {
            metric: metric.clone(),
            used,
            limit,
            remaining: (limit - used).max(0),
            resets_at: rfc3339(period.resets_at.saturating_mul(1000)),
        });
    }
    Ok(UsageOverview {
        plan_id: plan.id,
        metrics,
    })
}
