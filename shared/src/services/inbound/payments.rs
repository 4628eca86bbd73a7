//! A PaymentIntent's outcome: `payment_intent.succeeded` credits the purchase exactly once;
//! a failed or canceled payment is marked and never moves credits.

use crate::adapters::store::CreditOutcome;
use crate::adapters::stripe::webhook::Event;
use crate::adapters::stripe::{META_CREDITS, META_PACKAGE, META_SCOPE, META_USER};
use crate::domain::ledger::PaidIntent;
use crate::domain::records::PaymentStatus;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::{telemetry, App};

pub(super) async fn credit(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let store = app.store_for(scope);
    let intent = event
        .intent()
        .ok_or_else(|| Failure::invalid("The event holds no PaymentIntent."))?;
    if !app.owns(
        scope,
        intent.metadata.get(META_SCOPE).map(String::as_str),
        false,
    ) {
        tracing::warn!(intent_id = %intent.id, "payment of another scope; nothing credited here");
        return Ok(());
    }
    let paid = PaidIntent {
        intent_id: intent.id.clone(),
        amount: intent.amount,
        currency: intent.currency.to_ascii_lowercase(),
        user_id: intent.metadata.get(META_USER).cloned(),
        package_id: intent.metadata.get(META_PACKAGE).cloned(),
        credits: intent
            .metadata
            .get(META_CREDITS)
            .and_then(|c| c.parse().ok()),
    };
    let outcome = store.credit_purchase(&paid, &event.id).await?;
    if matches!(
        outcome,
        CreditOutcome::Credited | CreditOutcome::AlreadyCredited
    ) {
        // A paid tier purchase: the account's tier is the highest it still holds.
        crate::services::billing::sync_tier(app, scope, &paid.intent_id).await?;
    }
    match outcome {
        CreditOutcome::Credited => {
            tracing::info!(intent_id = %paid.intent_id, credits = paid.credits, "payment credited")
        }
        CreditOutcome::AlreadyCredited => {
            tracing::info!(intent_id = %paid.intent_id, "payment already credited; duplicate ignored")
        }
        CreditOutcome::UnknownPayment => {
            tracing::warn!(intent_id = %paid.intent_id, "succeeded intent has no Coffer payment record; nothing credited")
        }
        CreditOutcome::Mismatch {
            reason,
            newly_flagged,
        } => telemetry::payment_needs_attention(&paid.intent_id, reason, newly_flagged),
    }
    Ok(())
}

pub(super) async fn mark(
    app: &App,
    scope: &Scope,
    event: &Event,
    status: PaymentStatus,
) -> Result<(), Failure> {
    let store = app.store_for(scope);
    let intent = event
        .intent()
        .ok_or_else(|| Failure::invalid("The event holds no PaymentIntent."))?;
    let changed = store.mark_unpaid(&intent.id, status).await?;
    tracing::info!(intent_id = %intent.id, status = status.as_str(), changed, "payment marked");
    Ok(())
}
