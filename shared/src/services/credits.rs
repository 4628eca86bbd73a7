//! Spending credits: one conditional transaction that never takes a balance below zero, and
//! never spends the same key twice (the same key with another amount or reason is refused).

use crate::adapters::store::MoveOutcome;
use crate::domain::idempotency::{self, Spender};
use crate::domain::ledger::CreditMove;
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
    let store = app.store_for(scope);
    let currency = &app.config.default_currency;
    let request = CreditMove {
        delta: -amount,
        reason: reason.to_owned(),
    };
    let entry_id = idempotency::spend_entry(user, spender, key);
    let outcome = store
        .move_credits(user, &entry_id, "spend", &request, currency)
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
    }
}
