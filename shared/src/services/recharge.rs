//! Auto-recharge: the settings per account (changed by the account's user or its project's
//! developer, checked against the project's bounds), and the charges.
//!
//! A charge starts only from the table's stream (the `billing-events` function), never on the
//! spend path: a committed balance below the account's threshold decides a recharge
//! (`domain::recharge::decide`), written on the state's version, so one is in flight per
//! account whatever the number of spends or redeliveries. Its PaymentIntent's idempotency key is
//! the account's recharge id, and its confirmation's key the intent's: a record handed over
//! again after Stripe answered (and before Coffer wrote the answer) asks for the same charge and
//! gets the same answer. The credits come through the webhook and the same exactly-once
//! crediting as any purchase; the payment's committed change settles the recharge, and only
//! that settles it as succeeded.

use std::collections::HashMap;

use crate::adapters::stripe::{
    Intent, NewIntent, OffSession, StripeApi, StripeFailure, META_CREDITS, META_PACKAGE,
    META_RECHARGE, META_SCOPE, META_USER,
};
use crate::domain::idempotency;
use crate::domain::ledger::PaymentRecord;
use crate::domain::packages::CreditPackage;
use crate::domain::recharge::{
    apply, change_settings, decide, is_off, payment_outcome, settle, AccountRecharge, ChangedBy,
    Decision, InFlight, Outcome, RechargeBounds, RechargeSettings, PACKAGE_PREFIX,
};
use crate::domain::records::{now_ms, PaymentStatus, UserId};
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::services::{billing, projects};
use crate::App;

/// Attempts of a settings change that lost its race.
const ATTEMPTS: u32 = 5;

/// The account's auto-recharge (off, with nothing saved, when never set).
pub async fn settings(
    app: &App,
    scope: &Scope,
    user: &UserId,
) -> Result<Option<AccountRecharge>, Failure> {
    Ok(app
        .store_for(scope)
        .recharge(user)
        .await?
        .map(|(recharge, _)| recharge))
}

/// Settings as asked for: a threshold or an amount left out is the project's default (or,
/// turning it off, what the account had).
pub struct Asked {
    pub enabled: bool,
    pub threshold: Option<i64>,
    pub amount: Option<i64>,
    pub package: Option<String>,
}

/// Changes the account's auto-recharge settings.
pub async fn change(
    app: &App,
    scope: &Scope,
    user: &UserId,
    asked: Asked,
    setup_intent: Option<String>,
    by: ChangedBy,
) -> Result<AccountRecharge, Failure> {
    let store = app.store_for(scope);
    let bounds = super::billing::settings(app, scope).await?.auto_recharge;
    let had = store.recharge(user).await?.map(|(r, _)| r.settings);
    let threshold = asked
        .threshold
        .or(bounds.and_then(|b| b.default_threshold))
        .or(had.as_ref().filter(|_| !asked.enabled).map(|h| h.threshold));
    let amount = asked
        .amount
        .or(bounds.and_then(|b| b.default_amount))
        .or(had.as_ref().filter(|_| !asked.enabled).map(|h| h.amount));
    let missing = |name: &str| {
        Failure::invalid(format!(
            "{name} is required (this project sets no default)."
        ))
    };
    let mut settings = RechargeSettings {
        enabled: asked.enabled,
        threshold: threshold.ok_or_else(|| missing("threshold"))?,
        amount: match &asked.package {
            Some(_) => 0,
            None => amount.ok_or_else(|| missing("amount"))?,
        },
        package: asked.package,
    };
    if settings.enabled && bounds.is_some() {
        // What one recharge buys must be on sale here: a package, or an amount the project's
        // custom-amount rules allow (at their rate).
        match settings.package.as_deref() {
            Some(package_id) => {
                let (package, _) = store.package_and_idempotency(package_id, None).await?;
                let package = package
                    .filter(|p| p.active && p.currency == app.config.default_currency)
                    .ok_or_else(|| {
                        Failure::invalid("creditPackageId names no credit package on sale.")
                    })?;
                settings.amount = package.amount;
            }
            None => {
                let rules = super::billing::settings(app, scope)
                    .await?
                    .custom_amounts
                    .ok_or_else(|| {
                        Failure::invalid(
                            "This project sells credits in packages only: give creditPackageId instead of amount.",
                        )
                    })?;
                crate::domain::packages::custom_package(
                    &rules,
                    settings.amount,
                    &app.config.default_currency,
                )
                .map_err(Failure::invalid)?;
            }
        }
    }
    let mut card_checked = false;
    for _ in 0..ATTEMPTS {
        let current = store.recharge(user).await?;
        let next = change_settings(
            current.as_ref().map(|(r, _)| r),
            settings.clone(),
            setup_intent.clone(),
            bounds.as_ref(),
            by,
        )
        .map_err(Failure::invalid)?;
        if let (Some(setup_intent), false) = (setup_intent.as_deref(), card_checked) {
            // The card must be the account's own, saved: read back from Stripe, never trusted.
            let stripe = app.stripe_for(scope).await?;
            billing::saved_card(app, scope, &stripe, user, setup_intent).await?;
            card_checked = true;
        }
        if store
            .put_recharge(user, &next, current.map(|(_, v)| v))
            .await?
        {
            tracing::info!(
                enabled = next.settings.enabled,
                "auto-recharge settings changed"
            );
            return Ok(next);
        }
    }
    Err(Failure::Unavailable(
        "the auto-recharge settings kept changing".into(),
    ))
}

/// A committed balance of the account (read from the stream): starts, goes on with, drops,
/// gives up on or checks its recharge as the rules decide. The record only wakes it: what it
/// decides about a charge is decided on the balance read now, so a record handed over again
/// (or late) after the credits landed starts none and drops none.
pub async fn on_balance(
    app: &App,
    scope: &Scope,
    account: &UserId,
    balance: i64,
    bounds: &RechargeBounds,
    wake: Wake,
) -> Result<(), Failure> {
    let store = app.store_for(scope);
    // A project that no longer takes payments in this mode charges no card: as if turned off
    // (nothing new starts; one never charged is dropped).
    let taking = projects::takes_payments(app, scope).await?;
    for _ in 0..ATTEMPTS {
        let Some((recharge, version)) = store.recharge(account).await? else {
            return Ok(());
        };
        let now = now_ms() / 1000;
        let rules = RechargeSettings {
            enabled: recharge.settings.enabled && taking,
            ..recharge.settings.clone()
        };
        let mut decision = decide(&rules, bounds, &recharge.state, balance, now);
        if matches!(
            decision,
            Decision::Start(_) | Decision::Resume(_) | Decision::Abandon(_)
        ) {
            let now_balance = match store.balance(account).await? {
                Some(read) if read.currency == app.config.default_currency => read.balance,
                _ => return Ok(()),
            };
            decision = decide(&rules, bounds, &recharge.state, now_balance, now);
        }
        match &decision {
            Decision::Nothing(_) => return Ok(()),
            // Only a committed balance, a paid recharge or a change of the settings starts one:
            // a failed recharge is never followed by another without one of them.
            Decision::Start(_) if wake == Wake::GoOn => return Ok(()),
            Decision::Resume(flight) => {
                tracing::info!(recharge_id = %flight.id, "auto-recharge goes on");
                return launch(app, scope, account, &recharge, flight).await;
            }
            Decision::Abandon(flight) => {
                return drop_unless_taken(app, scope, account, flight).await
            }
            Decision::GiveUp(flight) => return give_up(app, scope, account, flight).await,
            Decision::Check(flight) => return check(app, scope, account, flight).await,
            Decision::Start(_) | Decision::Disable(_) => {}
        }
        let next = AccountRecharge {
            state: apply(&recharge.state, &decision, now),
            ..recharge.clone()
        };
        if !store.put_recharge(account, &next, Some(version)).await? {
            continue;
        }
        if let Decision::Start(flight) = &decision {
            tracing::info!(recharge_id = %flight.id, amount = flight.amount, "auto-recharge started");
            return launch(app, scope, account, &next, flight).await;
        }
        tracing::info!("auto-recharge turned off: the settings are past the project's bounds");
        return Ok(());
    }
    Err(Failure::Unavailable(
        "the auto-recharge state kept changing".into(),
    ))
}

/// A recharge's payment changed (read from the stream): paid and credited settles it as
/// succeeded; failed, as failed (unless the recharge still waits for Stripe's answer, or for
/// the user to authenticate).
pub async fn on_payment(app: &App, scope: &Scope, payment: &PaymentRecord) -> Result<(), Failure> {
    let succeeded = payment.status == PaymentStatus::Succeeded && payment.credited;
    let failed = matches!(
        payment.status,
        PaymentStatus::Failed | PaymentStatus::Canceled
    );
    let Some((id, outcome)) = payment_outcome(&payment.package_id, succeeded, failed) else {
        return Ok(());
    };
    let account = &payment.user_id;
    let outcome = match outcome {
        // Stripe's own reason, read back from the intent (the record says only "failed").
        Outcome::PaymentFailed(None) => {
            let stripe = app.stripe_for(scope).await?;
            match stripe.retrieve_intent(&payment.intent_id).await {
                Ok(intent) => match classify(&intent, None) {
                    Some(Outcome::Failed(reason)) => Outcome::PaymentFailed(Some(reason)),
                    _ => Outcome::PaymentFailed(None),
                },
                Err(_) => Outcome::PaymentFailed(None),
            }
        }
        other => other,
    };
    record_outcome(app, scope, account, id, &outcome).await?;
    if outcome != Outcome::Succeeded {
        // A failed charge is not tried again blindly: the next committed balance decides.
        return Ok(());
    }
    // Paid and credited, and the balance may still be below the threshold: the next recharge
    // may start now (within the day's cap), as a spend would start it.
    let Some(bounds) = billing::settings(app, scope).await?.auto_recharge else {
        return Ok(());
    };
    on_account(app, scope, account, &bounds, Wake::MayStart).await
}

/// What woke an account's recharge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A committed balance, a paid recharge, or its settings changed: a recharge may start.
    MayStart,
    /// Its own state changed: only one decided earlier goes on (or is dropped, given up on or
    /// checked); none starts.
    GoOn,
}

/// The account's recharge woken on its balance as it is now.
pub async fn on_account(
    app: &App,
    scope: &Scope,
    account: &UserId,
    bounds: &RechargeBounds,
    wake: Wake,
) -> Result<(), Failure> {
    match app.store_for(scope).balance(account).await? {
        Some(now) if now.currency == app.config.default_currency => {
            on_balance(app, scope, account, now.balance, bounds, wake).await
        }
        _ => Ok(()),
    }
}

/// Writes what became of the recharge `id` (nothing when it changes nothing). The state after.
async fn record_outcome(
    app: &App,
    scope: &Scope,
    account: &UserId,
    id: &str,
    outcome: &Outcome,
) -> Result<Option<AccountRecharge>, Failure> {
    let store = app.store_for(scope);
    for _ in 0..ATTEMPTS {
        let Some((recharge, version)) = store.recharge(account).await? else {
            return Ok(None);
        };
        let state = settle(&recharge.state, id, outcome);
        if state == recharge.state {
            return Ok(Some(recharge));
        }
        let next = AccountRecharge { state, ..recharge };
        if store.put_recharge(account, &next, Some(version)).await? {
            return Ok(Some(next));
        }
    }
    Err(Failure::Unavailable(
        "the auto-recharge state kept changing".into(),
    ))
}

/// What a PaymentIntent's state says of its recharge; `None` while it waits to be confirmed.
fn classify(intent: &Intent, card: Option<&str>) -> Option<Outcome> {
    let waits_for_user = || {
        Some(Outcome::ActionRequired {
            intent: intent.id.clone(),
            client_secret: intent.client_secret.clone()?,
            payment_method: intent
                .payment_method
                .clone()
                .or_else(|| card.map(str::to_owned)),
        })
    };
    match intent.status.as_deref() {
        Some("succeeded" | "processing" | "requires_capture") => Some(Outcome::Launched {
            intent: intent.id.clone(),
        }),
        Some("requires_action") => waits_for_user(),
        Some("requires_payment_method") => match &intent.last_payment_error {
            Some(error) if error.code.as_deref() == Some("authentication_required") => {
                waits_for_user()
            }
            Some(error) => Some(Outcome::Failed(
                error
                    .message
                    .clone()
                    .unwrap_or_else(|| "The card was declined.".into()),
            )),
            None => Some(Outcome::Failed("The payment has no card to charge.".into())),
        },
        Some("canceled") => Some(Outcome::Failed("The payment was canceled.".into())),
        _ => None,
    }
}

/// A refusal Stripe will give again (a decline, a parameter, the object's state) ends the
/// recharge as failed, in Stripe's words; anything else is retried by the stream.
fn refused(err: StripeFailure) -> Result<String, Failure> {
    match err {
        StripeFailure::CardDeclined(reason)
        | StripeFailure::Refused(reason)
        | StripeFailure::Missing(reason) => Ok(reason),
        other => Err(other.into()),
    }
}

/// Asks Stripe for the recharge `flight` decided. Before its PaymentIntent exists: the saved
/// card (read back, the account's own), the intent keyed by the recharge, the payment recorded
/// as pending, the intent written on the recharge, then the off-session confirmation keyed by
/// the intent. Once it exists, the intent is read back and never made again from today's
/// settings: confirmed if it still waits for that, else settled by what Stripe says of it.
/// Every step gives the same answer when asked again, so the stream retries from the start.
async fn launch(
    app: &App,
    scope: &Scope,
    account: &UserId,
    recharge: &AccountRecharge,
    flight: &InFlight,
) -> Result<(), Failure> {
    let stripe = app.stripe_for(scope).await?;
    if let Some(intent_id) = flight.intent.as_deref() {
        let intent = match stripe.retrieve_intent(intent_id).await {
            Ok(intent) => intent,
            Err(err) => {
                let reason = refused(err)?;
                record_outcome(app, scope, account, &flight.id, &Outcome::Failed(reason)).await?;
                return Ok(());
            }
        };
        if let Some(outcome) = classify(&intent, None) {
            record_outcome(app, scope, account, &flight.id, &outcome).await?;
            return Ok(());
        }
        return confirm(app, scope, account, flight, &stripe, &intent).await;
    }
    let card = match recharge.setup_intent.as_deref() {
        None => {
            Err("No saved card to charge: save a card and turn auto-recharge on again.".to_owned())
        }
        Some(setup_intent) => {
            match billing::saved_card(app, scope, &stripe, account, setup_intent).await {
                Ok(card) => Ok(card),
                Err(Failure::NotFound(_) | Failure::Conflict(_)) => {
                    Err("The saved card can no longer be charged: save a card again.".to_owned())
                }
                Err(other) => return Err(other),
            }
        }
    };
    let package = match &card {
        Ok(_) => package_of(app, scope, &recharge.settings, flight).await?,
        Err(reason) => Err(reason.clone()),
    };
    let ((customer, card), package) = match (card, package) {
        (Ok(card), Ok(package)) => (card, package),
        (Err(reason), _) | (_, Err(reason)) => {
            tracing::warn!(recharge_id = %flight.id, "auto-recharge cannot be charged");
            record_outcome(app, scope, account, &flight.id, &Outcome::Failed(reason)).await?;
            return Ok(());
        }
    };
    let intent = match create_intent(
        app, scope, &stripe, account, flight, &package, &customer, &card,
    )
    .await
    {
        Ok(intent) => intent,
        Err(CreateFailed::Stripe(err)) => {
            let reason = refused(err)?;
            record_outcome(app, scope, account, &flight.id, &Outcome::Failed(reason)).await?;
            return Ok(());
        }
        Err(CreateFailed::Other(failure)) => return Err(failure),
    };
    let payment = PaymentRecord::pending(&intent.id, account.clone(), &package, now_ms());
    app.store_for(scope).record_payment_once(&payment).await?;
    let created = Outcome::Created {
        intent: intent.id.clone(),
    };
    let Some(now) = record_outcome(app, scope, account, &flight.id, &created).await? else {
        return Ok(());
    };
    if now.state.in_flight.as_ref().map(|f| &f.id) != Some(&flight.id) {
        return Ok(());
    }
    confirm(app, scope, account, flight, &stripe, &intent).await
}

/// Whether the recharge `flight` may be confirmed now, read just before each confirmation (the
/// first, and any retry of it): still the one in flight and never charged, auto-recharge on
/// for the account, and the project taking payments in this mode.
enum Gate {
    Go,
    /// Settled or replaced meanwhile: nothing to do.
    Gone,
    /// Turned off since it was decided: it is never charged.
    Off,
}

async fn gate(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
) -> Result<Gate, Failure> {
    let Some((now, _)) = app.store_for(scope).recharge(account).await? else {
        return Ok(Gate::Gone);
    };
    let ours = now
        .state
        .in_flight
        .as_ref()
        .is_some_and(|f| f.id == flight.id && !f.launched);
    if !ours {
        return Ok(Gate::Gone);
    }
    if is_off(&now.settings, &now.state) || !projects::takes_payments(app, scope).await? {
        return Ok(Gate::Off);
    }
    Ok(Gate::Go)
}

/// Confirms the recharge's intent off-session (keyed by the intent: asked again, the same
/// answer) and writes what Stripe answered.
async fn confirm(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
    stripe: &StripeApi,
    intent: &Intent,
) -> Result<(), Failure> {
    // Off means off: checked on the state as it is now, just before Stripe is asked.
    match gate(app, scope, account, flight).await? {
        Gate::Go => {}
        Gate::Gone => return Ok(()),
        Gate::Off => {
            let flight = InFlight {
                intent: Some(intent.id.clone()),
                ..flight.clone()
            };
            return drop_unless_taken(app, scope, account, &flight).await;
        }
    }
    let answer = stripe
        .confirm_off_session(&intent.id, &idempotency::recharge_confirm(&intent.id))
        .await;
    let outcome = match answer {
        Ok(OffSession::Taken) => Outcome::Launched {
            intent: intent.id.clone(),
        },
        Ok(OffSession::NeedsAuthentication) => {
            let waiting = Intent {
                status: Some("requires_action".into()),
                ..stripe.retrieve_intent(&intent.id).await?
            };
            classify(&waiting, intent.payment_method.as_deref())
                .ok_or_else(|| Failure::Stripe("stripe returned no client secret".into()))?
        }
        Ok(OffSession::Declined(reason)) => Outcome::Failed(reason),
        Err(err) => {
            // Refused (the intent is no longer waiting for a confirmation): what Stripe says
            // of it now settles the recharge.
            let reason = refused(err)?;
            let now = stripe.retrieve_intent(&intent.id).await?;
            classify(&now, None).unwrap_or(Outcome::Failed(reason))
        }
    };
    let kind = match &outcome {
        Outcome::Launched { .. } => "taken",
        Outcome::ActionRequired { .. } => "authentication required",
        _ => "not taken",
    };
    tracing::info!(recharge_id = %flight.id, intent_id = %intent.id, outcome = kind, "auto-recharge charge answered");
    record_outcome(app, scope, account, &flight.id, &outcome).await?;
    Ok(())
}

/// Drops a recharge that Coffer never saw Stripe take, unless Stripe did take it (its
/// confirmation's answer was lost): a charge Stripe took is never dropped, it settles through its
/// payment like any other. A dropped one's intent is canceled first; the recharge ends as
/// canceled only once Stripe canceled it.
async fn drop_unless_taken(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
) -> Result<(), Failure> {
    let Some(intent_id) = flight.intent.as_deref() else {
        record_outcome(app, scope, account, &flight.id, &Outcome::Canceled).await?;
        tracing::info!(recharge_id = %flight.id, "auto-recharge dropped before it was charged");
        return Ok(());
    };
    let stripe = app.stripe_for(scope).await?;
    match stripe.cancel_intent(intent_id).await {
        Ok(()) => {
            record_outcome(app, scope, account, &flight.id, &Outcome::Canceled).await?;
            tracing::info!(recharge_id = %flight.id, "auto-recharge dropped before it was charged");
            Ok(())
        }
        Err(err) => {
            // Not cancelable: Stripe took it (or failed it). What it says now settles it.
            let reason = refused(err)?;
            let now = stripe.retrieve_intent(intent_id).await?;
            let outcome = classify(&now, None).unwrap_or(Outcome::Failed(reason));
            tracing::info!(recharge_id = %flight.id, intent_id = %intent_id, "auto-recharge could not be dropped; settled by what Stripe says of it");
            record_outcome(app, scope, account, &flight.id, &outcome).await?;
            Ok(())
        }
    }
}

/// The user did not authenticate within the window: the intent is canceled and the recharge
/// failed, unless Stripe took it meanwhile (then its payment settles it).
async fn give_up(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
) -> Result<(), Failure> {
    let late = Outcome::Failed("The payment was not authenticated within a day.".into());
    let Some(intent_id) = flight.intent.as_deref() else {
        record_outcome(app, scope, account, &flight.id, &late).await?;
        return Ok(());
    };
    let stripe = app.stripe_for(scope).await?;
    match stripe.cancel_intent(intent_id).await {
        Ok(()) => {
            record_outcome(app, scope, account, &flight.id, &late).await?;
        }
        Err(err) => {
            refused(err)?;
            let now = stripe.retrieve_intent(intent_id).await?;
            let outcome = match classify(&now, None) {
                Some(Outcome::ActionRequired { .. }) | None => late,
                Some(other) => other,
            };
            record_outcome(app, scope, account, &flight.id, &outcome).await?;
        }
    }
    Ok(())
}

/// A charge Stripe took an hour ago that its payment has not settled: a payment that failed
/// later settles it as failed; one paid and credited (its stream record lost), as succeeded.
/// One paid and not credited yet waits for its webhook or the reconcile job.
async fn check(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
) -> Result<(), Failure> {
    let Some(intent_id) = flight.intent.as_deref() else {
        return Ok(());
    };
    let now = app
        .stripe_for(scope)
        .await?
        .retrieve_intent(intent_id)
        .await?;
    let outcome = match classify(&now, None) {
        Some(Outcome::Launched { .. }) => {
            let credited = app
                .store_for(scope)
                .payment(intent_id)
                .await?
                .is_some_and(|p| p.credited);
            if !credited {
                tracing::warn!(recharge_id = %flight.id, intent_id = %intent_id, "auto-recharge paid an hour ago and not credited yet");
                return Ok(());
            }
            Outcome::Succeeded
        }
        Some(other) => other,
        None => return Ok(()),
    };
    record_outcome(app, scope, account, &flight.id, &outcome).await?;
    Ok(())
}

/// What one recharge buys: the named package at its price, or the amount as a custom top-up
/// (within the project's custom-amount bounds, at its rate; a project without custom amounts
/// sells packages only). In words when it can no longer be bought.
async fn package_of(
    app: &App,
    scope: &Scope,
    settings: &RechargeSettings,
    flight: &InFlight,
) -> Result<Result<CreditPackage, String>, Failure> {
    let currency = app.config.default_currency.clone();
    let id = format!("{PACKAGE_PREFIX}{}", flight.id);
    if let Some(package_id) = settings.package.as_deref() {
        let (package, _) = app
            .store_for(scope)
            .package_and_idempotency(package_id, None)
            .await?;
        return Ok(match package.filter(|p| p.active && p.currency == currency) {
            Some(package) if package.amount == flight.amount => Ok(CreditPackage {
                id,
                name: format!("Auto-recharge: {}", package.name),
                ..package
            }),
            Some(_) => Err(format!(
                "The price of the credit package {package_id} changed: turn auto-recharge on again to accept it."
            )),
            None => Err(format!(
                "The credit package {package_id} is no longer sold: choose another."
            )),
        });
    }
    let Some(rules) = billing::settings(app, scope).await?.custom_amounts else {
        return Ok(Err(
            "This project sells credits in packages only: choose a credit package for auto-recharge."
                .into(),
        ));
    };
    Ok(
        crate::domain::packages::custom_package(&rules, flight.amount, &currency).map(|package| {
            CreditPackage {
                id,
                name: format!(
                    "Auto-recharge: {} {currency}",
                    currency.format_major(flight.amount)
                ),
                ..package
            }
        }),
    )
}

/// Why the intent was not made: Stripe's answer, or Coffer's own failure.
enum CreateFailed {
    Stripe(StripeFailure),
    Other(Failure),
}

#[allow(clippy::too_many_arguments)]
async fn create_intent(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    flight: &InFlight,
    package: &CreditPackage,
    customer: &str,
    card: &str,
) -> Result<Intent, CreateFailed> {
    let mark = app.scope_mark(scope);
    let metadata = HashMap::from([
        (META_SCOPE.to_string(), mark.clone()),
        (META_USER.to_string(), account.as_str().to_owned()),
        (META_PACKAGE.to_string(), package.id.clone()),
        (META_CREDITS.to_string(), package.credits.to_string()),
        (META_RECHARGE.to_string(), flight.id.clone()),
    ]);
    let intent = stripe
        .create_intent(
            NewIntent {
                amount: package.amount,
                currency: &package.currency,
                metadata,
                payment_method: Some(card),
                customer: Some(customer),
            },
            &idempotency::recharge(&mark, account, &flight.id),
        )
        .await
        .map_err(CreateFailed::Stripe)?;
    if intent.amount != package.amount
        || !intent
            .currency
            .eq_ignore_ascii_case(package.currency.as_str())
    {
        return Err(CreateFailed::Other(Failure::Stripe(format!(
            "stripe returned intent {} with another amount or currency",
            intent.id
        ))));
    }
    Ok(intent)
}
