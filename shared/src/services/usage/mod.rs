//! Recording usage against a plan's allowance: "may this account do this now?", and the record
//! that it did. The allowance of the period is opened on first use (no batch job resets it),
//! raised at once by an upgrade, and kept by a downgrade until the period ends. Beyond it, a plan
//! with an overage price takes credits in the same transaction as the usage record; otherwise
//! the request is refused and nothing is written.
//!
//! `machine` decides each step (no I/O); this file does the steps; `terms` reads what the
//! account may use; `lease` keeps the blocks of an allowance leased to this instance.

mod lease;
mod machine;
mod terms;

pub use lease::settle_ended_leases;
pub use terms::{usage_overview, MetricStanding, UsageStanding};

use crate::adapters::store::{Allowance, AllowanceKey, MeterTag, MoveOutcome, NewUsage, Store};
use crate::app::Exhausted;
use crate::domain::ledger::CreditMove;
use crate::domain::plans::Plan;
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::domain::usage::{
    take_from_shards, UsageDecision, UsageOutcome, UsageTerms, LEASE_MAX_QUANTITY,
};
use crate::services::Failure;
use crate::App;

use machine::{Outcome, Paid, Refusal, Step, UsageLoop};

pub struct UsageRequest<'a> {
    pub account: &'a UserId,
    pub metric: &'a str,
    pub quantity: i64,
    /// The hash of the caller's key (caller, account and key).
    pub key_hash: &'a str,
    pub dry_run: bool,
}

/// What one round has read and decided so far.
struct Round<'a> {
    account: &'a UserId,
    metric: &'a str,
    terms: UsageTerms,
    cache_key: String,
    allowance: Option<Allowance>,
    takes: Vec<(usize, i64, Option<i64>)>,
    short: i64,
}

impl Round<'_> {
    /// The allowance this round counts against.
    fn at(&self) -> AllowanceKey<'_> {
        AllowanceKey {
            account: self.account,
            metric: self.metric,
            period: &self.terms.period.id,
        }
    }
}

/// Records (or, with `dry_run`, only checks) a usage; the same key answers the first answer.
///
/// The fast path reads nothing: the account's terms and the allowance's shards come from this
/// instance's cache, and one transaction takes the quantity from a shard that has room (its
/// condition makes the limit exact whatever the cache says) and writes the usage record. A
/// failed condition (another instance took that room, or the key was used before) reads afresh;
/// and nothing is refused, and no overage paid, without reading the terms and the allowance
/// afresh, so an upgrade counts at once. The order of these steps is `machine`'s.
pub async fn record_usage(
    app: &App,
    scope: &Scope,
    request: &UsageRequest<'_>,
) -> Result<UsageOutcome, Failure> {
    // Overage spends in the project's bucket order.
    let store = app.spending_store(scope).await?;
    let currency = &app.config.default_currency;
    let quantity = request.quantity;
    let mut machine = UsageLoop::new(request.dry_run, quantity <= LEASE_MAX_QUANTITY);
    let mut step = machine.start();
    let mut round: Option<Round<'_>> = None;
    // The answer the last step made, or the key's first answer.
    let mut answer: Option<UsageOutcome> = None;
    // The limit a used-up verdict of this instance named (for its refusal).
    let mut verdict_limit: Option<i64> = None;
    loop {
        let outcome = match step {
            Step::Terms { fresh } => {
                let terms = terms::usage_terms(app, scope, &store, request.account, fresh).await?;
                let known_metric = terms.known_metrics.iter().any(|m| m == request.metric);
                let mut now = Round {
                    account: request.account,
                    metric: request.metric,
                    terms,
                    cache_key: String::new(),
                    allowance: None,
                    takes: Vec::new(),
                    short: 0,
                };
                now.cache_key = terms::allowance_cache_key(&store, &now.at());
                round = Some(now);
                Outcome::Terms { known_metric }
            }
            Step::Exhausted => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                match app.usage.exhausted.get(&now.cache_key) {
                    Some(seen) if quantity > seen.left => {
                        verdict_limit = Some(seen.limit);
                        Outcome::Exhausted(Some(seen.held_elsewhere))
                    }
                    _ => Outcome::Exhausted(None),
                }
            }
            Step::Allowance { fresh } => {
                let now = round.as_mut().ok_or_else(out_of_order)?;
                let limit = now
                    .terms
                    .plan
                    .limits
                    .get(request.metric)
                    .copied()
                    .unwrap_or(0);
                let allowance = match app.usage.allowances.get(&now.cache_key) {
                    Some(cached) if !fresh && cached.limit >= limit => cached,
                    _ => {
                        let read = terms::current_allowance(&store, &now.at(), limit).await?;
                        app.usage
                            .allowances
                            .put(now.cache_key.clone(), read.clone());
                        read
                    }
                };
                let seed = usize::from(uuid::Uuid::new_v4().as_bytes()[0]);
                let (takes, short) = match take_from_shards(&allowance.remaining, quantity, seed) {
                    UsageDecision::FromShard(shard) => (vec![(shard, quantity, None)], 0),
                    UsageDecision::Spread(takes) => (
                        takes
                            .into_iter()
                            .map(|(shard, take)| {
                                (shard, take, allowance.remaining.get(shard).copied())
                            })
                            .collect(),
                        0,
                    ),
                    UsageDecision::Short { short } => (Vec::new(), short),
                };
                now.allowance = Some(allowance);
                now.takes = takes;
                now.short = short;
                Outcome::Allowance { short }
            }
            Step::Lease => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                let allowance = now.allowance.as_ref().ok_or_else(out_of_order)?;
                let (leased, made) = lease::from_lease(
                    app,
                    &store,
                    &now.at(),
                    &now.cache_key,
                    allowance,
                    request,
                    &now.terms,
                )
                .await?;
                answer = made;
                Outcome::Lease(leased)
            }
            Step::Take => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                let allowance = now.allowance.as_ref().ok_or_else(out_of_order)?;
                let used = allowance.used().saturating_add(quantity);
                let result = UsageOutcome::allowed(used, allowance.limit, &now.terms.period, None);
                if request.dry_run {
                    answer = Some(result);
                    Outcome::Took(true)
                } else {
                    let text = result.to_record(currency);
                    let record = new_usage(request, &text, &now.terms.customer, &now.terms.plan);
                    let took = store.take_allowance(&now.at(), &now.takes, &record).await?;
                    if took {
                        app.usage.allowances.update(&now.cache_key, |cached| {
                            for (shard, amount, _) in &now.takes {
                                if let Some(left) = cached.remaining.get_mut(*shard) {
                                    *left -= amount;
                                }
                            }
                        });
                        answer = Some(result);
                    } else {
                        app.usage.allowances.remove(&now.cache_key);
                    }
                    Outcome::Took(took)
                }
            }
            Step::Replay => {
                answer = replayed(app, &store, request).await?;
                Outcome::Replay {
                    found: answer.is_some(),
                }
            }
            Step::Reclaim => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                let reclaimed =
                    lease::reclaim_leases(app, &store, &now.at(), &now.cache_key).await?;
                if reclaimed > 0 {
                    app.usage.allowances.remove(&now.cache_key);
                }
                Outcome::Reclaimed(reclaimed)
            }
            Step::HeldElsewhere => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                Outcome::HeldElsewhere(lease::held_elsewhere(app, &store, &now.at()).await?)
            }
            Step::Overage => {
                let now = round.as_ref().ok_or_else(out_of_order)?;
                let (paid, made) = pay_overage(app, &store, request, now).await?;
                answer = made;
                Outcome::Overage(paid)
            }
            Step::Answer | Step::AnswerFirst => {
                return answer.ok_or_else(out_of_order);
            }
            Step::Refuse(refusal) => {
                return Err(
                    refuse(app, &store, request, round.as_ref(), verdict_limit, refusal).await,
                )
            }
            Step::GiveUp => return Err(Failure::Unavailable("the allowance kept changing".into())),
        };
        step = machine.next(outcome);
    }
}

/// A step the machine never asks before the one it needs (a bug, not a request's fault).
fn out_of_order() -> Failure {
    Failure::Internal("the usage steps ran out of order".into())
}

/// The units beyond the allowance paid with credits, in the usage record's transaction: the
/// shards are drained (each on the value read) and the overage entry moves the balance.
async fn pay_overage(
    app: &App,
    store: &Store,
    request: &UsageRequest<'_>,
    now: &Round<'_>,
) -> Result<(Paid, Option<UsageOutcome>), Failure> {
    let currency = &app.config.default_currency;
    let allowance = now.allowance.as_ref().ok_or_else(out_of_order)?;
    let Some(price) = overage_price(&now.terms.plan, request.metric) else {
        return Ok((Paid::NoPrice, None));
    };
    let Some(cost) = crate::domain::usage::overage_cost(now.short, price) else {
        return Ok((Paid::Overflow, None));
    };
    let balance = store
        .balance(request.account)
        .await?
        .map_or(0, |b| b.balance);
    let result = UsageOutcome::allowed(
        allowance.limit,
        allowance.limit,
        &now.terms.period,
        Some(cost),
    );
    if request.dry_run {
        return Ok(match balance >= cost {
            true => (Paid::Done, Some(result)),
            false => (Paid::WouldNotPay, None),
        });
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
        reason: format!("{} {} beyond the plan", now.short, request.metric),
    };
    let entry_id = crate::domain::idempotency::overage_entry(request.key_hash);
    let text = result.to_record(currency);
    app.usage.allowances.remove(&now.cache_key);
    let paid = store
        .pay_overage(
            &now.at(),
            &drains,
            &entry_id,
            &overage,
            currency,
            &new_usage(request, &text, &now.terms.customer, &now.terms.plan),
        )
        .await?;
    Ok(match paid {
        Some(MoveOutcome::Done { .. }) => (Paid::Done, Some(result)),
        Some(MoveOutcome::Insufficient) => (Paid::Insufficient, None),
        Some(MoveOutcome::CurrencyMismatch) => (Paid::OtherCurrency, None),
        Some(MoveOutcome::Replayed { .. })
        | Some(MoveOutcome::KeyConflict)
        | Some(MoveOutcome::TooManyBuckets)
        | None => (Paid::Retry, None),
    })
}

/// The price in credits of one unit beyond the allowance. A metric a Stripe meter bills is
/// never also paid in credits (a plan stored with both, from before such plans were refused,
/// bills the meter only).
fn overage_price(plan: &Plan, metric: &str) -> Option<i64> {
    crate::domain::plans::overage_price(plan, metric)
}

/// Refuses, after noting what the refusal says to note.
async fn refuse(
    app: &App,
    store: &Store,
    request: &UsageRequest<'_>,
    round: Option<&Round<'_>>,
    verdict_limit: Option<i64>,
    refusal: Refusal,
) -> Failure {
    let allowance = round.and_then(|r| r.allowance.as_ref());
    // A refusal on a verdict of a moment ago names that verdict's limit.
    let limit = allowance.map(|a| a.limit).or(verdict_limit).unwrap_or(0);
    match refusal {
        Refusal::UnknownMetric => Failure::invalid(format!(
            "{} is not a metric of this project's plans.",
            request.metric
        )),
        Refusal::OtherCurrency => {
            Failure::Conflict("The account's credits are in another currency.".into())
        }
        Refusal::HeldForNow { remember } => {
            if let (true, Some(round), Some(allowance)) = (remember, round, allowance) {
                app.usage.exhausted.put(
                    round.cache_key.clone(),
                    Exhausted {
                        limit: allowance.limit,
                        left: allowance.limit - allowance.used(),
                        held_elsewhere: true,
                    },
                );
            }
            held_for_now()
        }
        Refusal::LimitReached { mark, remember } => {
            if let (Some(round), Some(allowance)) = (round, allowance) {
                if mark {
                    note_limit_reached(app, store, &round.at(), allowance.limit).await;
                }
                if remember {
                    app.usage.exhausted.put(
                        round.cache_key.clone(),
                        Exhausted {
                            limit: allowance.limit,
                            left: allowance.limit - allowance.used(),
                            held_elsewhere: false,
                        },
                    );
                }
            }
            limit_reached(request.metric, limit)
        }
    }
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

/// The usage record to write; a metered plan's record is tagged for the meter reporter.
pub(super) fn new_usage<'a>(
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

/// Marks the allowance reached (for `limit.reached`), at most once per instance; a failure to
/// mark does not change the answer (the next refusal marks it).
async fn note_limit_reached(app: &App, store: &Store, at: &AllowanceKey<'_>, limit: i64) {
    let name = format!(
        "{}/{}{}#{}#{}",
        store.table(),
        store.keys().prefix(),
        at.account.as_str(),
        at.metric,
        at.period
    );
    if app.usage.is_marked(&name) {
        return;
    }
    match store.mark_limit_reached(at, limit).await {
        Ok(_) => app.usage.mark(name),
        Err(err) => tracing::warn!(error = %err, "the limit mark was not written"),
    }
}

/// The first answer to this key, if it was recorded; 409 when the key was used for another
/// metric or quantity.
pub(super) async fn replayed(
    app: &App,
    store: &Store,
    request: &UsageRequest<'_>,
) -> Result<Option<UsageOutcome>, Failure> {
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
    UsageOutcome::from_record(&record.answer, &app.config.default_currency)
        .map(Some)
        .ok_or_else(|| Failure::Internal("a usage record's answer is not readable".into()))
}

/// The hash that names a usage key: the caller, the account and the key.
pub fn usage_key_hash(caller: &str, account: &UserId, key: &str) -> String {
    crate::domain::idempotency::usage_key(caller, account, key)
}
