//! Billing events out: the table's stream (committed changes only) is read by the publisher
//! function, each change is turned into the events it means (`domain::events`), and they go to
//! the EventBridge bus. Nothing on the payment or usage path publishes, so an event is never sent
//! for a write that did not commit, and a write that committed is in the stream. A record that
//! fails is retried a bounded number of times, then parked (a pointer in the failure queue, for
//! `coffer-dev replay-parked`) while the records behind it go on. Each event's id is derived
//! from the stream record, so a retried or replayed record sends the same ids again and
//! subscribers drop the repeats.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::adapters::events::{OutgoingEvent, ENTRIES_PER_CALL};
use crate::adapters::store::{AccountAlert, Change, StreamRecord};

use crate::domain::events::{
    balance_events, duplicate_subscription_events, expiry_events, invoice_events, limit_events,
    payment_events, recharge_events, subscription_events, tier_events, DomainEvent, LowAlert,
};
use crate::domain::recharge::RechargeBounds;
use crate::domain::records::UserId;
use crate::domain::records::{now_ms, rfc3339};
use crate::domain::scope::Scope;
use crate::services::streams::{FailedRecord, StreamBatch};
use crate::services::Failure;
use crate::App;

/// What one stream record means, before thresholds: the events, or a balance change that
/// needs the scope's threshold.
enum Meaning {
    Events(Vec<DomainEvent>),
    Balance {
        account: String,
        old: i64,
        new: i64,
        currency: String,
    },
}

/// The events a change means.
fn meaning(change: Change, currency: &str) -> Meaning {
    Meaning::Events(match change {
        Change::Subscription { account, old, new } => {
            subscription_events(&account, old.as_ref(), &new)
        }
        Change::Tier {
            account,
            old_plan,
            new_plan,
        } => tier_events(&account, old_plan.as_deref(), new_plan.as_deref()),
        Change::Payment { before, payment } => payment_events(before, &payment),
        Change::Invoice {
            account,
            invoice_id,
            subscription_id,
            plan_id,
            amount,
            currency,
            old_status,
            status,
        } => invoice_events(
            &account,
            old_status.as_deref(),
            &status,
            json!({
                "invoiceId": invoice_id,
                "subscriptionId": subscription_id,
                "planId": plan_id,
                "amount": amount,
                "currency": currency,
            }),
        ),
        Change::Balance {
            account,
            old,
            new,
            currency,
        } => {
            return Meaning::Balance {
                account,
                old,
                new,
                currency,
            }
        }
        Change::DuplicateSubscription {
            account,
            subscription_id,
            kept_subscription_id,
            refunded,
            currency,
        } => duplicate_subscription_events(
            &account,
            &subscription_id,
            &kept_subscription_id,
            refunded,
            &currency,
        ),
        Change::LimitReached {
            account,
            metric,
            period,
            limit,
        } => limit_events(&account, &metric, &period, limit),
        Change::CreditsExpiring {
            account,
            bucket,
            left,
            expires_at,
            currency,
        } => expiry_events(&account, false, &bucket, left, Some(expires_at), &currency),
        Change::CreditsExpired {
            account,
            bucket,
            amount,
            expires_at,
            currency,
        } => expiry_events(&account, true, &bucket, amount, expires_at, &currency),
        Change::Recharge { account, old, new } => recharge_events(
            &account,
            old.as_ref().map(|o| &o.state),
            &new.state,
            currency,
        ),
    })
}

/// The event as subscribers read it, with an id that is the same whenever this record is read.
fn outgoing(
    scope: &Scope,
    record: &StreamRecord,
    index: usize,
    event: DomainEvent,
) -> OutgoingEvent {
    let name = event.kind.name();
    let id = crate::domain::idempotency::billing_event(&record.event_id, name, index);
    let time_secs = record.created_at_secs.unwrap_or_else(|| now_ms() / 1000);
    OutgoingEvent {
        detail_type: name.to_owned(),
        time_secs,
        detail: json!({
            "id": id,
            "type": name,
            "project": scope.project.as_str(),
            "mode": scope.mode.as_str(),
            "account": event.account,
            "occurredAt": rfc3339(time_secs.saturating_mul(1000)),
            "data": event.data,
        }),
    }
}

/// What a batch keeps as it goes: each scope's threshold and margin, each account's alert as
/// read and as the records so far left it, and which record last changed which account's.
#[derive(Default)]
struct BatchState {
    thresholds: HashMap<Scope, (Option<i64>, Option<i64>)>,
    alerts: HashMap<(Scope, String), (AccountAlert, bool)>,
    /// Record index, scope, account, armed after it.
    armed_by: Vec<(usize, Scope, String, bool)>,
}

/// Every event one stream record means, in order.
async fn events_of_record(
    app: &App,
    record: &StreamRecord,
    index: usize,
    state: &mut BatchState,
) -> Result<Vec<OutgoingEvent>, Failure> {
    let Some((scope, change)) = record.change(app.config.default_mode) else {
        return Ok(Vec::new());
    };
    let events = match meaning(change, app.config.default_currency.as_str()) {
        Meaning::Events(events) => events,
        Meaning::Balance {
            account,
            old,
            new,
            currency,
        } => {
            let (project_threshold, margin) = match state.thresholds.get(&scope) {
                Some(known) => *known,
                None => {
                    let settings = app.store_for(&scope).settings().await?;
                    let known = settings
                        .map(|s| (s.credits_low_threshold, s.credits_low_margin))
                        .unwrap_or_default();
                    state.thresholds.insert(scope.clone(), known);
                    known
                }
            };
            let key = (scope.clone(), account.clone());
            let (stored, armed) = match state.alerts.get(&key) {
                Some(known) => *known,
                None => {
                    let user = crate::domain::records::UserId::parse(&account)
                        .ok_or_else(|| Failure::Internal("a balance of no account".into()))?;
                    let stored = app.store_for(&scope).account_alert(&user).await?;
                    state.alerts.insert(key.clone(), (stored, stored.armed));
                    (stored, stored.armed)
                }
            };
            // The threshold is in the deployment's currency: another currency's balance is
            // only ever depleted.
            let threshold = stored
                .threshold
                .or(project_threshold)
                .filter(|_| currency == app.config.default_currency.as_str());
            let alert = LowAlert {
                threshold,
                margin: margin.unwrap_or_else(|| threshold.unwrap_or(0) / 10),
                armed,
            };
            let (events, armed_after) = balance_events(&account, old, new, alert, &currency);
            if armed_after != armed {
                state.alerts.insert(key, (stored, armed_after));
                state
                    .armed_by
                    .push((index, scope.clone(), account, armed_after));
            }
            events
        }
    };
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(index, event)| outgoing(&scope, record, index, event))
        .collect())
}

/// Each account's alert as the records before `until` left it (its stored one when none
/// changed it).
fn alerts_as_of(state: &BatchState, until: usize) -> HashMap<(Scope, String), (usize, bool)> {
    let mut last: HashMap<(Scope, String), (usize, bool)> = HashMap::new();
    for (index, scope, account, armed) in state.armed_by.iter().filter(|c| c.0 < until) {
        let key = (scope.clone(), account.clone());
        let first = last.get(&key).map_or(*index, |(first, _)| *first);
        last.insert(key, (first, *armed));
    }
    last
}

/// Saves the alerts the records before `done` armed or disarmed. When one save fails, the
/// batch goes on again from that account's first record: every account is then saved as of
/// that record, so that the records handed over again start from the state they started from.
/// Where the batch must go on from (and why), if a save failed.
async fn save_alerts(app: &App, state: &BatchState, done: usize) -> Option<(usize, String)> {
    let mut restart: Option<(usize, String)> = None;
    for ((scope, account), (first, armed)) in alerts_as_of(state, done) {
        let Some(user) = crate::domain::records::UserId::parse(&account) else {
            continue;
        };
        if let Err(err) = app.store_for(&scope).save_alert_armed(&user, armed).await {
            if restart.as_ref().is_none_or(|(index, _)| first < *index) {
                restart = Some((first, format!("saving a balance alert: {err}")));
            }
        }
    }
    let (from, why) = restart?;
    // Back to what the records before `from` left (or what was stored): a failure here goes
    // on from the batch's start, which recomputes everything from the stored state.
    let before = alerts_as_of(state, from);
    for (scope, account) in state.alerts.keys() {
        let key = (scope.clone(), account.clone());
        let armed = match before.get(&key) {
            Some((_, armed)) => *armed,
            None => match state.alerts.get(&key) {
                Some((stored, _)) => stored.armed,
                None => continue,
            },
        };
        let Some(user) = crate::domain::records::UserId::parse(account) else {
            continue;
        };
        if app
            .store_for(scope)
            .save_alert_armed(&user, armed)
            .await
            .is_err()
        {
            return Some((0, why));
        }
    }
    Some((from, why))
}

/// The auto-recharge work of the records, in order: a committed balance may start (or go on
/// with) its account's recharge, and a recharge's payment settles it (`services::recharge`).
/// Where it stopped (and why), if a record's work failed: the records before it are done.
async fn recharge_work(app: &App, records: &[StreamRecord]) -> Option<(usize, String)> {
    let mut bounds: HashMap<Scope, Option<RechargeBounds>> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let Some((scope, change)) = record.change(app.config.default_mode) else {
            continue;
        };
        use crate::services::recharge::{on_account, on_balance, on_payment, Wake};
        // What wakes the account's recharge: a committed balance (it may start one), or its own
        // change with one never charged in flight (left waiting by an attempt that failed, or
        // turned off meanwhile: woken on the balance as it is now, it goes on or is dropped
        // without waiting for the next spend, and never starts one). A payment settles its own.
        let (account, balance, wake) = match change {
            // Credits are kept in the deployment's currency: another currency is never recharged.
            Change::Balance {
                account,
                new,
                currency,
                ..
            } if currency == app.config.default_currency.as_str() => {
                (account, Some(new), Wake::MayStart)
            }
            Change::Recharge { account, new, .. }
                if new.state.in_flight.as_ref().is_some_and(|f| !f.launched) =>
            {
                (account, None, Wake::GoOn)
            }
            Change::Payment { payment, .. } => {
                if let Err(err) = Box::pin(on_payment(app, &scope, &payment)).await {
                    return Some((
                        index,
                        format!("auto-recharge: {}: {}", err.code(), err.cause()),
                    ));
                }
                continue;
            }
            _ => continue,
        };
        let offered = match bounds.get(&scope) {
            Some(known) => *known,
            None => match crate::services::billing::settings(app, &scope).await {
                Ok(settings) => {
                    bounds.insert(scope.clone(), settings.auto_recharge);
                    settings.auto_recharge
                }
                Err(err) => return Some((index, format!("{}: {}", err.code(), err.cause()))),
            },
        };
        // Boxed: the recharge's future is deep, and the stream consumer's whole future would
        // otherwise pass the compiler's layout depth.
        let done = match (offered, UserId::parse(&account), balance) {
            (Some(offered), Some(user), Some(balance)) => {
                Box::pin(on_balance(app, &scope, &user, balance, &offered, wake)).await
            }
            (Some(offered), Some(user), None) => {
                Box::pin(on_account(app, &scope, &user, &offered, wake)).await
            }
            _ => Ok(()),
        };
        if let Err(err) = done {
            return Some((
                index,
                format!("auto-recharge: {}: {}", err.code(), err.cause()),
            ));
        }
    }
    None
}

/// Does the auto-recharge work of a stream event (a Lambda DynamoDB Streams batch), then
/// publishes what it means, record by record in order. The batch goes on from the first record
/// whose work could not be done or whose events could not be made or sent: the records before it
/// are done.
/// Without a bus configured it publishes nothing.
pub async fn publish_stream_event(app: &App, event: &Value) -> StreamBatch {
    let records = crate::adapters::store::records_from_event(event);
    // Boxed: the recharge work's future is deep (each step waits on Stripe and the table),
    // and inline it would pass the compiler's layout depth in the function's own future.
    let stopped = Box::pin(recharge_work(app, &records)).await;
    if app.events.is_none() && app.deliveries.is_none() {
        return StreamBatch {
            figures: json!({ "records": records.len(), "published": 0 }),
            failed: stopped.map(|(index, cause)| FailedRecord {
                sequence: records[index].sequence.clone(),
                first: index == 0,
                cause,
            }),
        };
    };
    let mut state = BatchState::default();
    // Each event, and the index of the record it comes from.
    let (mut events, mut origins) = (Vec::new(), Vec::new());
    let mut failed: Option<(usize, String)> = None;
    for (index, record) in records.iter().enumerate() {
        match events_of_record(app, record, index, &mut state).await {
            Ok(made) => {
                origins.extend(std::iter::repeat_n(index, made.len()));
                events.extend(made);
            }
            Err(err) => {
                failed = Some((index, format!("{}: {}", err.code(), err.cause())));
                break;
            }
        }
    }
    // The events go out whatever the auto-recharge work did (a record whose work failed is
    // handed over again, and its events then go out again with the same ids): a charge Stripe
    // refuses to answer never holds back another account's events.
    if let Some((index, cause)) = stopped {
        if failed.as_ref().is_none_or(|(first, _)| index < *first) {
            failed = Some((index, cause));
        }
    }
    let mut published = 0;
    for (chunk, from) in events
        .chunks(ENTRIES_PER_CALL)
        .zip(origins.chunks(ENTRIES_PER_CALL))
    {
        // To the bus, and to the projects' own webhook endpoints (through their queue). Every
        // event of the records before this chunk's first record went out; that record's are
        // sent again (same ids) when the batch goes on from it.
        if let Some(bus) = app.events.as_ref() {
            if let Err(err) = bus.publish(chunk).await {
                failed = Some((from[0], err.to_string()));
                break;
            }
        }
        if let Err(err) = crate::services::webhooks::fan_out(app, chunk).await {
            failed = Some((
                from[0],
                format!("webhooks: {}: {}", err.code(), err.cause()),
            ));
            break;
        }
        published += chunk.len();
    }
    // The alerts the published records armed or disarmed, saved after their events went out (a
    // record handed over again computes the same events, with the same ids, from the same
    // state). A save that fails makes the batch go on from that account's first record.
    let done = failed.as_ref().map_or(records.len(), |(index, _)| *index);
    if let Some(restart) = save_alerts(app, &state, done).await {
        if restart.0 < done {
            failed = Some(restart);
        }
    }
    if published > 0 {
        let kinds: Vec<&str> = events[..published]
            .iter()
            .map(|e| e.detail_type.as_str())
            .collect();
        tracing::info!(records = records.len(), published, kinds = ?kinds, "billing events published");
    }
    StreamBatch {
        figures: json!({ "records": records.len(), "published": published }),
        failed: failed.map(|(index, cause)| FailedRecord {
            sequence: records[index].sequence.clone(),
            first: index == 0,
            cause,
        }),
    }
}
