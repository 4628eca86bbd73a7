//! Spending and granting credits. A spend is one conditional transaction that never takes a balance below zero, and
//! never spends the same key twice (the same key with another amount or reason is refused).

use crate::adapters::store::MoveOutcome;
use crate::domain::idempotency::{self, Spender};
use crate::domain::ledger::{CreditMove, EntryKind};
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// A spend done (now, or by an earlier request with the same key).
pub struct Spent {
    pub entry_id: String,
    /// The balance right after the spend, in minor units.
    pub balance: i64,
}

/// Spends `amount` (minor units, > 0) of the user's credits for `reason`, once per key.
pub async fn spend(
    app: &App,
    scope: &Scope,
    user: &UserId,
    spender: &Spender<'_>,
    amount: i64,
    reason: &str,
    key: &str,
) -> Result<Spent, Failure> {
    if amount <= 0 {
        return Err(Failure::invalid("amount must be greater than zero."));
    }
    let store = app.spending_store(scope).await?;
    let currency = &app.config.default_currency;
    let request = CreditMove {
        delta: -amount,
        reason: reason.to_owned(),
    };
    let entry_id = idempotency::spend_entry(user, spender, key);
    let outcome = store
        .move_credits(user, &entry_id, EntryKind::Spend, &request, currency, None)
        .await?;
    match outcome {
        MoveOutcome::Done {
            entry_id,
            balance_after,
        } => {
            tracing::info!(entry_id = %entry_id, amount, "credits spent");
            Ok(Spent {
                entry_id,
                balance: balance_after,
            })
        }
        MoveOutcome::Replayed {
            entry_id,
            balance_after,
        } => {
            tracing::info!(entry_id = %entry_id, "spend replayed; nothing more taken");
            let balance = match balance_after {
                Some(balance) => balance,
                // Written by an earlier version, which did not record it.
                None => store.balance(user).await?.map_or(0, |b| b.balance),
            };
            Ok(Spent { entry_id, balance })
        }
        MoveOutcome::KeyConflict => Err(Failure::Conflict(
            "This idempotencyKey was already used with another amount or reason.".into(),
        )),
        MoveOutcome::Insufficient => Err(Failure::InsufficientCredits),
        MoveOutcome::CurrencyMismatch => Err(Failure::Internal(format!(
            "the balance of this user is not in {currency}"
        ))),
        MoveOutcome::TooManyBuckets => {
            Err(Failure::Internal("a spend was refused as a credit".into()))
        }
    }
}

/// A grant done now, or found done by an earlier request with the same key.
pub struct Granted {
    pub entry_id: String,
    pub replayed: bool,
}

/// An operator's grant of `amount` (minor units, > 0) for `reason`, once per key.
pub async fn grant(
    app: &App,
    scope: &Scope,
    user: &UserId,
    amount: i64,
    reason: &str,
    key: &str,
) -> Result<Granted, Failure> {
    if amount <= 0 || reason.trim().is_empty() || key.is_empty() {
        return Err(Failure::invalid(
            "amount must be > 0, reason and key non-empty",
        ));
    }
    let currency = &app.config.default_currency;
    let request = CreditMove {
        delta: amount,
        reason: reason.to_owned(),
    };
    let entry_id = idempotency::grant_entry(user, key);
    match app
        .store_for(scope)
        .move_credits(user, &entry_id, EntryKind::Grant, &request, currency, None)
        .await?
    {
        MoveOutcome::Done { entry_id, .. } => Ok(Granted {
            entry_id,
            replayed: false,
        }),
        MoveOutcome::Replayed { entry_id, .. } => Ok(Granted {
            entry_id,
            replayed: true,
        }),
        MoveOutcome::KeyConflict => Err(Failure::Conflict(
            "this key was used for another amount or reason".into(),
        )),
        MoveOutcome::Insufficient => Err(Failure::invalid("the balance would overflow")),
        MoveOutcome::CurrencyMismatch => Err(Failure::Conflict(format!(
            "this user's balance is not in {currency}"
        ))),
        MoveOutcome::TooManyBuckets => Err(Failure::Conflict(
            "this account holds as many credit buckets as it may; grant with the terms of an existing one".into(),
        )),
    }
}
