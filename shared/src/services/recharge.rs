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
    Intent, NewIntent, OffSession, StripeApi, META_CREDITS, META_PACKAGE, META_RECHARGE,
    META_SCOPE, META_USER,
};
use crate::domain::idempotency;
use crate::domain::ledger::PaymentRecord;
use crate::domain::packages::CreditPackage;
use crate::domain::recharge::{
    apply, change_settings, decide, payment_outcome, settle, AccountRecharge, ChangedBy, Decision,
    InFlight, Outcome, RechargeBounds, RechargeSettings, PACKAGE_PREFIX,
};
use crate::domain::records::{now_ms, PaymentStatus, UserId};
use crate::domain::scope::Scope;
use crate::services::billing;
use crate::services::Failure;
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

/// Changes the account's auto-recharge settings.
pub async fn change(
    app: &App,
    scope: &Scope,
    user: &UserId,
    settings: RechargeSettings,
    setup_intent: Option<String>,
    by: ChangedBy,
) -> Result<AccountRecharge, Failure> {
    let store = app.store_for(scope);
    let bounds = super::billing::settings(app, scope).await?.auto_recharge;
    let mut settings = settings;
    if let Some(package_id) = settings.package.as_deref() {
        let (package, _) = store.package_and_idempotency(package_id, None).await?;
        let package = package
            .filter(|p| p.active && p.currency == app.config.default_currency)
            .ok_or_else(|| Failure::invalid("creditPackageId names no credit package on sale."))?;
        settings.amount = package.amount;
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

/// A committed balance of the account (read from the stream): starts, goes on with, drops or
/// gives up on its recharge as the rules decide. The record only wakes it: a charge is decided
/// on the balance read now, so a record handed over again after the credits landed starts none.
pub async fn on_balance(
    app: &App,
    scope: &Scope,
    account: &UserId,
    balance: i64,
    bounds: &RechargeBounds,
) -> Result<(), Failure> {
    let store = app.store_for(scope);
    for _ in 0..ATTEMPTS {
        let Some((recharge, version)) = store.recharge(account).await? else {
            return Ok(());
        };
        let now = now_ms() / 1000;
        let mut decision = decide(&recharge.settings, bounds, &recharge.state, balance, now);
        if matches!(decision, Decision::Start(_) | Decision::Resume(_)) {
            // The record may be old (the stream hands records over again, and late): a charge
            // is decided on the balance committed now, never on a stale one.
            let now_balance = match store.balance(account).await? {
                Some(read) if read.currency == app.config.default_currency => read.balance,
                _ => return Ok(()),
            };
            decision = decide(
                &recharge.settings,
                bounds,
                &recharge.state,
                now_balance,
                now,
            );
        }
        match &decision {
            Decision::Nothing(_) => return Ok(()),
            Decision::Resume(flight) => {
                tracing::info!(recharge_id = %flight.id, "auto-recharge goes on");
                return launch(app, scope, account, &recharge, flight).await;
            }
            Decision::Abandon(flight) if flight.intent.is_some() => {
                return drop_unless_taken(app, scope, account, flight).await;
            }
            _ => {}
        }
        let next = AccountRecharge {
            state: apply(&recharge.state, &decision, now),
            ..recharge.clone()
        };
        if !store.put_recharge(account, &next, Some(version)).await? {
            continue;
        }
        match decision {
            Decision::Start(flight) => {
                tracing::info!(recharge_id = %flight.id, amount = flight.amount, "auto-recharge started");
                return launch(app, scope, account, &next, &flight).await;
            }
            Decision::Abandon(flight) | Decision::GiveUp(flight) => {
                tracing::info!(recharge_id = %flight.id, "auto-recharge dropped before it was paid");
                if let Some(intent) = &flight.intent {
                    cancel(app, scope, intent).await;
                }
            }
            Decision::Disable(why) => {
                tracing::info!(
                    why = why.name(),
                    "auto-recharge turned off: past the project's bounds"
                )
            }
            Decision::Resume(_) | Decision::Nothing(_) => {}
        }
        return Ok(());
    }
    Err(Failure::Unavailable(
        "the auto-recharge state kept changing".into(),
    ))
}

/// A recharge's payment changed (read from the stream): paid and credited settles it as
/// succeeded; failed, as failed.
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
    match app.store_for(scope).balance(account).await? {
        Some(now) if now.currency == app.config.default_currency => {
            on_balance(app, scope, account, now.balance, &bounds).await
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

/// Asks Stripe for the recharge `flight` decided: the saved card (read back, the account's
/// own), a PaymentIntent keyed by the recharge, the payment recorded as pending, then the
/// off-session confirmation keyed by the intent. Every step can be asked again and gives the
/// same answer, so a failure anywhere is retried by the stream from the start.
async fn launch(
    app: &App,
    scope: &Scope,
    account: &UserId,
    recharge: &AccountRecharge,
    flight: &InFlight,
) -> Result<(), Failure> {
    let stripe = app.stripe_for(scope).await?;
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
    let intent = create_intent(
        app, scope, &stripe, account, flight, &package, &customer, &card,
    )
    .await?;
    let payment = PaymentRecord::pending(&intent.id, account.clone(), &package, now_ms());
    app.store_for(scope).record_payment_once(&payment).await?;
    let created = Outcome::Created {
        intent: intent.id.clone(),
    };
    let Some(now) = record_outcome(app, scope, account, &flight.id, &created).await? else {
        return Ok(());
    };
    // Off means off: turned off (or settled) since it was decided, it is never charged.
    let still_ours = now
        .state
        .in_flight
        .as_ref()
        .is_some_and(|f| f.id == flight.id && !f.launched);
    if !still_ours {
        return Ok(());
    }
    if !now.settings.enabled || now.state.disabled.is_some() {
        let flight = InFlight {
            intent: Some(intent.id.clone()),
            ..flight.clone()
        };
        return drop_unless_taken(app, scope, account, &flight).await;
    }
    let answer = stripe
        .confirm_off_session(&intent.id, &idempotency::recharge_confirm(&intent.id))
        .await?;
    let outcome = match answer {
        OffSession::Taken(_) => Outcome::Launched {
            intent: intent.id.clone(),
        },
        OffSession::NeedsAuthentication => Outcome::ActionRequired {
            intent: intent.id.clone(),
            client_secret: intent
                .client_secret
                .clone()
                .ok_or_else(|| Failure::Stripe("stripe returned no client secret".into()))?,
            payment_method: Some(card),
        },
        OffSession::Declined(reason) => Outcome::Failed(reason),
    };
    let kind = match &outcome {
        Outcome::Launched { .. } => "taken",
        Outcome::ActionRequired { .. } => "authentication required",
        _ => "declined",
    };
    tracing::info!(recharge_id = %flight.id, intent_id = %intent.id, outcome = kind, "auto-recharge charge answered");
    record_outcome(app, scope, account, &flight.id, &outcome).await?;
    Ok(())
}

/// Drops a recharge that Coffer never saw Stripe take, unless Stripe did take it (its
/// confirmation's answer was lost): a charge Stripe took is never dropped, it settles through its
/// payment like any other. A dropped one's intent is canceled.
async fn drop_unless_taken(
    app: &App,
    scope: &Scope,
    account: &UserId,
    flight: &InFlight,
) -> Result<(), Failure> {
    let Some(intent_id) = flight.intent.as_deref() else {
        record_outcome(app, scope, account, &flight.id, &Outcome::Canceled).await?;
        return Ok(());
    };
    let intent = app
        .stripe_for(scope)
        .await?
        .retrieve_intent(intent_id)
        .await?;
    let taken = matches!(
        intent.status.as_deref(),
        Some("succeeded" | "processing" | "requires_capture")
    );
    if taken {
        let launched = Outcome::Launched {
            intent: intent_id.to_owned(),
        };
        record_outcome(app, scope, account, &flight.id, &launched).await?;
        tracing::info!(recharge_id = %flight.id, intent_id = %intent_id, "auto-recharge was taken by Stripe before it was turned off; it settles through its payment");
        return Ok(());
    }
    cancel(app, scope, intent_id).await;
    record_outcome(app, scope, account, &flight.id, &Outcome::Canceled).await?;
    tracing::info!(recharge_id = %flight.id, "auto-recharge dropped before it was charged");
    Ok(())
}

/// What one recharge buys: the named package at its price, or the amount at the project's
/// custom-amount rate (one credit unit per currency unit without one). In words when it can no
/// longer be bought.
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
    let rate = billing::settings(app, scope)
        .await?
        .custom_amounts
        .map_or(10_000, |rules| rules.credits_per_unit_e4);
    let credits = i128::from(flight.amount) * i128::from(rate) / 10_000;
    Ok(match i64::try_from(credits) {
        Ok(credits) if credits > 0 => Ok(CreditPackage {
            id,
            name: format!(
                "Auto-recharge: {} {currency}",
                currency.format_major(flight.amount)
            ),
            description: String::new(),
            amount: flight.amount,
            credits,
            currency,
            active: true,
        }),
        _ => Err("The recharge amount buys no credits at this project's rate.".into()),
    })
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
) -> Result<Intent, Failure> {
    let metadata = HashMap::from([
        (META_SCOPE.to_string(), app.scope_mark(scope)),
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
            &idempotency::recharge(scope, account, &flight.id),
        )
        .await?;
    if intent.amount != package.amount
        || !intent
            .currency
            .eq_ignore_ascii_case(package.currency.as_str())
    {
        return Err(Failure::Stripe(format!(
            "stripe returned intent {} with another amount or currency",
            intent.id
        )));
    }
    Ok(intent)
}

/// Cancels a recharge's intent no one will confirm; a failure is logged and left (the intent
/// is never confirmed by Coffer, and one the user completes anyway is credited as paid).
async fn cancel(app: &App, scope: &Scope, intent: &str) {
    let result = match app.stripe_for(scope).await {
        Ok(stripe) => stripe
            .cancel_intent(intent)
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = result {
        tracing::warn!(intent_id = %intent, error = %err, "a dropped auto-recharge's intent was not canceled");
    }
}
