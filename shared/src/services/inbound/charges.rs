//! The webhook's refund and dispute events: `charge.refunded` claws back the refunded share of
//! the credits, `charge.refund.updated` with a failed refund gives it back, `charge.dispute.*`
//! marks, withdraws (the disputed share) and reinstates. The rules are in `domain::ledger`.

use crate::adapters::store::LifecycleOutcome;
use crate::adapters::stripe::webhook::{intent_id, Event};
use crate::domain::ledger::{ChargeEvent, DisputeStep};
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

pub(super) async fn refunded(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let charge = event
        .charge()
        .ok_or_else(|| Failure::invalid("The event holds no charge."))?;
    let Some(intent) = intent_id(charge.payment_intent.as_ref()) else {
        tracing::warn!(charge_id = %charge.id, "refunded charge names no PaymentIntent; ignored");
        return Ok(());
    };
    let change = ChargeEvent::Refunded {
        amount: charge.amount,
        amount_refunded: charge.amount_refunded,
        currency: charge.currency.to_ascii_lowercase(),
        at: event.created.unwrap_or(0),
    };
    apply(app, scope, &intent, &change).await
}

pub(super) async fn refund_updated(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let refund = event
        .refund()
        .ok_or_else(|| Failure::invalid("The event holds no refund."))?;
    if refund.status.as_deref() != Some("failed") {
        tracing::info!(refund_id = %refund.id, "refund update is not a failure; acknowledged");
        return Ok(());
    }
    let Some(intent) = intent_id(refund.payment_intent.as_ref()) else {
        tracing::warn!(refund_id = %refund.id, "failed refund names no PaymentIntent; ignored");
        return Ok(());
    };
    let change = ChargeEvent::RefundFailed {
        refund_id: refund.id,
        amount: refund.amount,
        at: event.created.unwrap_or(0),
    };
    apply(app, scope, &intent, &change).await
}

pub(super) async fn dispute(
    app: &App,
    scope: &Scope,
    event: &Event,
    step: DisputeStep,
) -> Result<(), Failure> {
    let dispute = event
        .dispute()
        .ok_or_else(|| Failure::invalid("The event holds no dispute."))?;
    let Some(intent) = intent_id(dispute.payment_intent.as_ref()) else {
        tracing::warn!(dispute_id = %dispute.id, "dispute names no PaymentIntent; ignored");
        return Ok(());
    };
    let change = ChargeEvent::Dispute {
        dispute_id: dispute.id,
        step,
        amount: dispute.amount,
    };
    apply(app, scope, &intent, &change).await
}

/// Applies the change to the payment, then brings the account's tier up to date with it (a
/// tier purchase refunded in full or lost to a dispute no longer holds its tier; a repeated
/// event repairs a tier left behind by a crash between the two).
async fn apply(
    app: &App,
    scope: &Scope,
    intent: &str,
    change: &ChargeEvent,
) -> Result<(), Failure> {
    let store = app.store_for(scope);
    let what = change.entry_kind().as_str();
    match store.apply_charge_event(intent, change).await? {
        LifecycleOutcome::Applied(delta) => {
            tracing::info!(intent_id = %intent, what, credits = delta, "applied")
        }
        LifecycleOutcome::Unchanged => {
            tracing::info!(intent_id = %intent, what, "already applied or older; nothing changed")
        }
        LifecycleOutcome::UnknownPayment => {
            // Perhaps the intent of an invoice whose included credits are not granted yet:
            // kept, so that the grant takes it into account whenever it comes. A grant that
            // committed meanwhile may have read the kept events before this one was written:
            // the payment is looked up again after writing, and the event applied if it is
            // there now (applying twice changes nothing).
            store.remember_orphan_charge_event(intent, change).await?;
            match store.apply_charge_event(intent, change).await? {
                LifecycleOutcome::UnknownPayment => {
                    tracing::info!(intent_id = %intent, what, "no Coffer payment for this intent yet; kept for a later grant");
                    return Ok(());
                }
                LifecycleOutcome::NotReady => {
                    return Err(Failure::RetryLater(
                        "This event depends on one not applied yet; retry later.".into(),
                    ))
                }
                outcome => {
                    tracing::info!(intent_id = %intent, what, outcome = ?outcome, "applied after it was kept")
                }
            }
        }
        LifecycleOutcome::Ignored(why) => {
            tracing::warn!(intent_id = %intent, what, why, "event ignored")
        }
        LifecycleOutcome::NotReady => {
            return Err(Failure::RetryLater(
                "This event depends on one not applied yet; retry later.".into(),
            ))
        }
    }
    crate::services::billing::sync_tier(app, scope, intent).await
}
