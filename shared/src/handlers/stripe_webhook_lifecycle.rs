//! The webhook's refund and dispute events: `charge.refunded` claws back the refunded share of
//! the credits, `charge.dispute.*` marks, withdraws and reinstates. Each at most once.

use crate::http::ApiError;
use crate::ledger::{DisputeStep, LifecycleOutcome, RefundedCharge};
use crate::webhook::{intent_id, Event};
use crate::App;

pub(super) async fn refunded(app: &App, event: &Event) -> Result<(), ApiError> {
    let charge = event
        .charge()
        .ok_or_else(|| ApiError::bad_request("The event holds no charge."))?;
    let Some(intent) = intent_id(charge.payment_intent.as_ref()) else {
        tracing::warn!(charge_id = %charge.id, "refunded charge names no PaymentIntent; ignored");
        return Ok(());
    };
    let outcome = app
        .store
        .apply_refund(&RefundedCharge {
            intent_id: intent.clone(),
            amount: charge.amount,
            amount_refunded: charge.amount_refunded,
            currency: charge.currency.to_ascii_lowercase(),
            event_id: event.id.clone(),
        })
        .await?;
    report(&intent, "refund", outcome)
}

pub(super) async fn dispute(app: &App, event: &Event, step: DisputeStep) -> Result<(), ApiError> {
    let dispute = event
        .dispute()
        .ok_or_else(|| ApiError::bad_request("The event holds no dispute."))?;
    let Some(intent) = intent_id(dispute.payment_intent.as_ref()) else {
        tracing::warn!(dispute_id = %dispute.id, "dispute names no PaymentIntent; ignored");
        return Ok(());
    };
    let outcome = app.store.apply_dispute(&intent, &dispute.id, step).await?;
    report(&intent, "dispute", outcome)
}

fn report(intent: &str, what: &str, outcome: LifecycleOutcome) -> Result<(), ApiError> {
    match outcome {
        LifecycleOutcome::Applied(delta) => {
            tracing::info!(intent_id = %intent, what, credits = delta, "applied")
        }
        LifecycleOutcome::Unchanged => {
            tracing::info!(intent_id = %intent, what, "already applied or older; nothing changed")
        }
        LifecycleOutcome::UnknownPayment => {
            tracing::warn!(intent_id = %intent, what, "no Coffer payment for this intent; ignored")
        }
        LifecycleOutcome::NotReady => {
            return Err(ApiError::RetryLater(
                "This event depends on one not applied yet; retry later.".into(),
            ))
        }
    }
    Ok(())
}
