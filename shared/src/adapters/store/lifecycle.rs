//! Refunds, failed refunds and disputes: the payment's facts merged with the event, and the
//! entry of the difference the rules decided, in one transaction conditioned on the payment's
//! revision. A lost race reads the payment again and decides again.

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::codec::{facts_to_attributes, n, s};
use super::{backoff, Store, StoreError, CONFLICT_ATTEMPTS};
use crate::domain::buckets::Terms;
use crate::domain::ledger::{decide_lifecycle, ChargeEvent, LifecycleDecision};
use crate::domain::records::now_ms;

/// The result of applying a refund or dispute event.
#[derive(Debug, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// Applied; credits moved by this signed amount (0 for facts or a status only).
    Applied(i64),
    /// Already applied, or older than what was applied: nothing changed.
    Unchanged,
    /// No Coffer payment for this intent.
    UnknownPayment,
    /// The payment is not credited yet: Stripe should retry.
    NotReady,
    /// The event does not describe this payment's charge.
    Ignored(&'static str),
}

impl Store {
    pub async fn apply_charge_event(
        &self,
        intent_id: &str,
        event: &ChargeEvent,
    ) -> Result<LifecycleOutcome, StoreError> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let Some(payment) = self.payment_or_included(intent_id).await? else {
                return Ok(LifecycleOutcome::UnknownPayment);
            };
            let (facts, status, delta, applied) = match decide_lifecycle(&payment, event) {
                LifecycleDecision::Unchanged => return Ok(LifecycleOutcome::Unchanged),
                LifecycleDecision::NotReady => return Ok(LifecycleOutcome::NotReady),
                LifecycleDecision::Ignored(why) => return Ok(LifecycleOutcome::Ignored(why)),
                LifecycleDecision::Apply {
                    facts,
                    status,
                    delta,
                    applied,
                } => (facts, status, delta, applied),
            };
            let now = now_ms();
            let mut update = self
                .revision_update(&payment)
                .condition_expression("rev = :rev OR attribute_not_exists(rev)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()))
                .expression_attribute_values(":applied", n(applied))
                .expression_attribute_values(":now", n(now));
            let mut sets = vec![
                "rev = :next".to_string(),
                "updatedAt = :now".to_string(),
                "#status = :status".to_string(),
                "applied = :applied".to_string(),
            ];
            for (i, (name, value)) in facts_to_attributes(&facts).into_iter().enumerate() {
                sets.push(format!("{name} = :f{i}"));
                update = update.expression_attribute_values(format!(":f{i}"), value);
            }
            // The counters of earlier versions are folded into `applied` from now on.
            let mut removed = vec!["refundClawed", "disputeHeld"];
            if facts.failed_refunds.is_empty() {
                removed.push("failedRefunds");
            }
            let expression = format!("SET {} REMOVE {}", sets.join(", "), removed.join(", "));
            let update = update
                .update_expression(expression)
                .build()
                .map_err(StoreError::build)?;
            let mut items = vec![TransactWriteItem::builder().update(update).build()];
            if delta != 0 {
                let kind = event.entry_kind();
                let entry_id =
                    crate::domain::idempotency::charge_entry(kind, intent_id, payment.rev + 1);
                let entries = [(kind, entry_id, delta)];
                // Given back to the payment's bucket, taken back from it first.
                let moves = self
                    .payment_wallet_items(&payment, &entries, &Terms::paid(), false, now)
                    .await?
                    .ok_or_else(|| StoreError::Refused("a payment's balance".into()))?;
                items.extend(moves);
            }
            match self.transact(items).await? {
                Ok(()) => return Ok(LifecycleOutcome::Applied(delta)),
                // Someone changed the payment first: read it again.
                Err(_) => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!(
            "payment {intent_id} kept changing"
        )))
    }
}
