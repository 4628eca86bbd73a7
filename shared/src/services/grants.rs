//! Grants through the API (grant, adjust, void) and reservations (hold, capture, release): each
//! one conditional transaction on the account's wallet, keyed so that a replay gives the first
//! answer and the same key with another request is refused.

use crate::adapters::store::{GrantOutcome, GrantRequest, GrantState, HoldOutcome, HoldState};
use crate::domain::idempotency;
use crate::domain::money::Currency;
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

fn grant_answer(outcome: GrantOutcome, currency: &Currency) -> Result<GrantState, Failure> {
    match outcome {
        GrantOutcome::Done(state) => Ok(state),
        GrantOutcome::KeyConflict => Err(Failure::Conflict(
            "This idempotencyKey was already used with another request.".into(),
        )),
        GrantOutcome::NotFound => Err(Failure::NotFound("No such grant on this account.".into())),
        GrantOutcome::Expired => Err(Failure::Conflict(
            "This grant has expired; it can no longer be adjusted.".into(),
        )),
        GrantOutcome::NotEnoughLeft { left } => Err(Failure::Conflict(format!(
            "Only {} of this grant is left; credits already spent cannot be taken back.",
            currency.to_major(left)
        ))),
        GrantOutcome::TooManyBuckets => Err(Failure::Conflict(
            "This account holds as many credit buckets as it may; grant with the expiry and priority of an existing grant.".into(),
        )),
        GrantOutcome::CurrencyMismatch => Err(Failure::Conflict(format!(
            "This account's credits are not in {currency}."
        ))),
        GrantOutcome::Shared => Err(Failure::Conflict(
            "This grant shares its credits with others (the account holds as many buckets as it may); it cannot be changed alone.".into(),
        )),
    }
}

/// Grants `request.amount` promotional credits, once per (caller, key).
pub async fn grant(
    app: &App,
    scope: &Scope,
    user: &UserId,
    key: &str,
    request: &GrantRequest<'_>,
) -> Result<GrantState, Failure> {
    let currency = &app.config.default_currency;
    let grant_id = idempotency::api_grant_entry(user, request.by, key);
    let outcome = app
        .store_for(scope)
        .grant_credits(user, &grant_id, request, currency)
        .await?;
    let state = grant_answer(outcome, currency)?;
    tracing::info!(grant_id = %state.grant_id, replayed = state.replayed, "credits granted");
    Ok(state)
}

/// Adjusts a grant by `delta` (never taking back what was spent), once per (caller, key).
#[allow(clippy::too_many_arguments)]
pub async fn adjust(
    app: &App,
    scope: &Scope,
    user: &UserId,
    grant_id: &str,
    by: &str,
    key: &str,
    delta: i64,
    reason: &str,
) -> Result<GrantState, Failure> {
    let currency = &app.config.default_currency;
    let entry_id = idempotency::grant_adjust_entry(user, by, grant_id, key);
    let outcome = app
        .store_for(scope)
        .change_grant(user, grant_id, &entry_id, Some(delta), reason, by, currency)
        .await?;
    grant_answer(outcome, currency)
}

/// Takes back what is left of a grant, once.
pub async fn void(
    app: &App,
    scope: &Scope,
    user: &UserId,
    grant_id: &str,
    by: &str,
    reason: &str,
) -> Result<GrantState, Failure> {
    let currency = &app.config.default_currency;
    let entry_id = idempotency::grant_void_entry(grant_id);
    let outcome = app
        .store_for(scope)
        .change_grant(user, grant_id, &entry_id, None, reason, by, currency)
        .await?;
    grant_answer(outcome, currency)
}

fn hold_answer(outcome: HoldOutcome, currency: &Currency) -> Result<HoldState, Failure> {
    match outcome {
        HoldOutcome::Done(state) => Ok(state),
        HoldOutcome::KeyConflict => Err(Failure::Conflict(
            "This reservation was already made or captured with another amount or time.".into(),
        )),
        HoldOutcome::Short { .. } => Err(Failure::InsufficientCredits),
        HoldOutcome::NotFound => Err(Failure::NotFound("No such reservation.".into())),
        HoldOutcome::Over(status) => Err(Failure::Conflict(format!(
            "This reservation is already {}.",
            status.as_str()
        ))),
        HoldOutcome::MoreThanHeld { held } => Err(Failure::Conflict(format!(
            "A capture may take at most the {} held.",
            currency.to_major(held)
        ))),
        HoldOutcome::TooManyHolds => Err(Failure::Conflict(
            "This account has as many open reservations as it may; capture or release one first."
                .into(),
        )),
        HoldOutcome::CurrencyMismatch => Err(Failure::Conflict(format!(
            "This account's credits are not in {currency}."
        ))),
    }
}

/// Sets `amount` aside for `ttl_seconds`, once per (caller, key).
pub async fn reserve(
    app: &App,
    scope: &Scope,
    user: &UserId,
    by: &str,
    key: &str,
    amount: i64,
    ttl_seconds: i64,
) -> Result<HoldState, Failure> {
    let currency = &app.config.default_currency;
    let hold_id = idempotency::hold_id(user, by, key);
    let outcome = app
        .spending_store(scope)
        .await?
        .hold_credits(user, &hold_id, amount, ttl_seconds, by, currency)
        .await?;
    hold_answer(outcome, currency)
}

/// Captures `amount` of a reservation (the rest goes back), or with `None` releases it.
pub async fn finish(
    app: &App,
    scope: &Scope,
    user: &UserId,
    by: &str,
    hold_id: &str,
    capture: Option<i64>,
) -> Result<HoldState, Failure> {
    let currency = &app.config.default_currency;
    let outcome = app
        .store_for(scope)
        .settle_hold(user, hold_id, capture, by, currency)
        .await?;
    hold_answer(outcome, currency)
}
