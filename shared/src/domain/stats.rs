//! Payment statistics per scope, as counters that change with each committed change of a
//! payment or each new ledger entry (read from the table's change stream, never on the payment
//! write path). Every rule here is a pure function of the record before and after.

use std::collections::BTreeMap;

use crate::domain::ledger::{effective_refunded, PaymentRecord};

/// Counter name → change. Names are `payments_<status>`, `revenue_<currency>`,
/// `refunds_<currency>`, `credits_sold`, `credits_spent`, `credits_outstanding`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsDelta(pub BTreeMap<String, i64>);

impl StatsDelta {
    fn add(&mut self, name: String, by: i64) {
        if by != 0 {
            let slot = self.0.entry(name).or_default();
            *slot = slot.saturating_add(by);
            if *slot == 0 {
                self.0.retain(|_, v| *v != 0);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another delta (summing shards, or several records).
    pub fn merge(&mut self, other: &StatsDelta) {
        for (name, by) in &other.0 {
            self.add(name.clone(), *by);
        }
    }
}

/// What a payment's change adds to its scope's counters: its status moves from one count to
/// another; money received counts as revenue once credited; refunds count what still stands.
pub fn payment_change(old: Option<&PaymentRecord>, new: Option<&PaymentRecord>) -> StatsDelta {
    let mut delta = StatsDelta::default();
    for (payment, sign) in [(old, -1), (new, 1)] {
        let Some(payment) = payment else { continue };
        delta.add(format!("payments_{}", payment.status.as_str()), sign);
        if payment.credited {
            let currency = payment.currency.as_str();
            delta.add(format!("revenue_{currency}"), sign * payment.amount);
            let crate::domain::money::Money(refunded) =
                effective_refunded(&payment.facts, crate::domain::money::Money(payment.amount));
            delta.add(format!("refunds_{currency}"), sign * refunded);
        }
    }
    delta
}

/// What a new ledger entry adds: every entry moves the credits outstanding; purchases are
/// credits sold, spends credits spent.
pub fn entry_added(kind: &str, amount: i64) -> StatsDelta {
    let mut delta = StatsDelta::default();
    delta.add("credits_outstanding".into(), amount);
    match super::ledger::EntryKind::parse(kind) {
        Some(kind) if kind.is_sale() => delta.add("credits_sold".into(), amount),
        Some(super::ledger::EntryKind::Spend) => {
            delta.add("credits_spent".into(), amount.saturating_neg())
        }
        _ => {}
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::ChargeFacts;
    use crate::domain::money::Currency;
    use crate::domain::records::PaymentStatus;
    use crate::domain::records::UserId;

    fn payment(status: PaymentStatus, credited: bool, refunded: i64) -> PaymentRecord {
        PaymentRecord {
            intent_id: "pi_1".into(),
            user_id: UserId::parse("u").unwrap(),
            package_id: "p".into(),
            amount: 1000,
            currency: Currency::usd(),
            credits: 1200,
            status,
            created_at_ms: 0,
            description: String::new(),
            credited,
            attention: None,
            facts: ChargeFacts {
                refunded,
                ..ChargeFacts::default()
            },
            applied: 0,
            rev: 0,
        }
    }

    #[test]
    fn a_payment_moves_from_pending_to_succeeded_and_counts_revenue_once() {
        let pending = payment(PaymentStatus::Pending, false, 0);
        let created = payment_change(None, Some(&pending));
        assert_eq!(created.0, BTreeMap::from([("payments_pending".into(), 1)]));
        let paid = payment(PaymentStatus::Succeeded, true, 0);
        let credited = payment_change(Some(&pending), Some(&paid));
        assert_eq!(
            credited.0,
            BTreeMap::from([
                ("payments_pending".into(), -1),
                ("payments_succeeded".into(), 1),
                ("revenue_usd".into(), 1000),
            ])
        );
        // A change that changes nothing counted (a new revision, same facts) adds nothing.
        assert!(payment_change(Some(&paid), Some(&paid)).is_empty());
        let refunded = payment(PaymentStatus::PartiallyRefunded, true, 300);
        let refund = payment_change(Some(&paid), Some(&refunded));
        assert_eq!(refund.0["refunds_usd"], 300);
        assert_eq!(refund.0["payments_succeeded"], -1);
    }

    #[test]
    fn entries_move_credits_sold_spent_and_outstanding() {
        let mut total = StatsDelta::default();
        total.merge(&entry_added("purchase", 1200));
        total.merge(&entry_added("spend", -200));
        total.merge(&entry_added("refund", -100));
        assert_eq!(total.0["credits_sold"], 1200);
        assert_eq!(total.0["credits_spent"], 200);
        assert_eq!(total.0["credits_outstanding"], 900);
    }
}
