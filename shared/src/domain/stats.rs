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

impl StatsDelta {
    /// `self` less `other`, counter by counter.
    pub fn minus(&self, other: &StatsDelta) -> StatsDelta {
        let mut delta = self.clone();
        for (name, by) in &other.0 {
            delta.add(name.clone(), by.saturating_neg());
        }
        delta
    }
}

/// What one payment, as it stands, counts for: its status, and its revenue and refunds once
/// credited. Never negative.
pub fn contribution(payment: &PaymentRecord) -> StatsDelta {
    payment_change(None, Some(payment))
}

/// A payment as the counters last counted it: what it counted for, and the stream position of
/// the change that was counted (`None`: counted by a backfill, from the table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub counts: StatsDelta,
    pub position: Option<String>,
}

/// Whether a stream position comes after another (positions are decimal sequence numbers,
/// increasing along the stream; a longer one is a later one).
pub fn later(position: &str, than: &str) -> bool {
    (position.len(), position) > (than.len(), than)
}

/// What counting a payment's change adds: the payment now counts for `now` instead of what it
/// was last counted for. `None` when the change is not newer than the one counted (a resent or
/// replayed record): nothing changes. Whatever the duplicates, the order or the replays, the
/// counters then hold each payment's contribution once, never less than zero.
pub fn recount(
    counted: Option<&Counted>,
    now: &StatsDelta,
    position: Option<&str>,
) -> Option<StatsDelta> {
    if let (
        Some(Counted {
            position: Some(seen),
            ..
        }),
        Some(position),
    ) = (counted, position)
    {
        if !later(position, seen) {
            return None;
        }
    }
    let before = counted.map(|c| c.counts.clone()).unwrap_or_default();
    Some(now.minus(&before))
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
/// credits sold, spends (and reservations, net of what they give back) credits spent.
pub fn entry_added(kind: &str, amount: i64) -> StatsDelta {
    let mut delta = StatsDelta::default();
    delta.add("credits_outstanding".into(), amount);
    match super::ledger::EntryKind::parse(kind) {
        Some(kind) if kind.is_sale() => delta.add("credits_sold".into(), amount),
        // A reservation counts as spent when held; what its capture, release or end gives
        // back is taken off again, so what stays counted is what was captured.
        Some(
            super::ledger::EntryKind::Spend
            | super::ledger::EntryKind::Hold
            | super::ledger::EntryKind::Capture
            | super::ledger::EntryKind::Release,
        ) => delta.add("credits_spent".into(), amount.saturating_neg()),
        _ => {}
    }
    delta
}

/// What an account's subscription, as it stands, counts for: one active subscription or none.
pub fn subscription_contribution(
    state: Option<&crate::domain::subscriptions::SubscriptionState>,
) -> StatsDelta {
    let mut delta = StatsDelta::default();
    if state.is_some_and(|s| s.status.counts_as_active()) {
        delta.add("subscriptions_active".into(), 1);
    }
    delta
}

/// The counters kept per day as well as in total: money received and refunded, credits sold
/// and spent, and the change in active subscriptions.
pub fn daily_part(delta: &StatsDelta) -> StatsDelta {
    StatsDelta(
        delta
            .0
            .iter()
            .filter(|(name, _)| {
                name.starts_with("revenue_")
                    || name.starts_with("refunds_")
                    || matches!(
                        name.as_str(),
                        "credits_sold" | "credits_spent" | "subscriptions_active"
                    )
            })
            .map(|(name, by)| (name.clone(), *by))
            .collect(),
    )
}

/// The UTC day (`YYYY-MM-DD`) of a time in Unix seconds ("" out of the calendar's range).
pub fn day_of(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.date())
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

/// One day of a scope's series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Day {
    pub date: String,
    /// What changed on that day (`daily_part` counters).
    pub change: StatsDelta,
    /// Active subscriptions at the end of that day.
    pub active_subscriptions: i64,
}

/// The last `days` days up to `today_secs` (oldest first), each with its changes and the active
/// subscriptions at its end: today's are `active_now`, each earlier day's are the next day's
/// less that next day's change. `changes` holds the days that changed (any order; others are
/// zero). A day's figure is never shown below zero (changes counted before a backfill).
pub fn series(
    changes: &[(String, StatsDelta)],
    active_now: i64,
    today_secs: i64,
    days: u32,
) -> Vec<Day> {
    let mut out: Vec<Day> = (0..i64::from(days))
        .rev()
        .map(|back| {
            let date = day_of(today_secs.saturating_sub(back.saturating_mul(86_400)));
            let mut change = StatsDelta::default();
            for (day, delta) in changes {
                if *day == date {
                    change.merge(delta);
                }
            }
            Day {
                date,
                change,
                active_subscriptions: 0,
            }
        })
        .collect();
    let mut active = active_now;
    for day in out.iter_mut().rev() {
        day.active_subscriptions = active.max(0);
        let changed = day
            .change
            .0
            .get("subscriptions_active")
            .copied()
            .unwrap_or(0);
        active = active.saturating_sub(changed);
    }
    out
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

    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_700_000_000), "2023-11-14");
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(-1), "1969-12-31");
        assert_eq!(day_of(4_102_444_799), "2099-12-31");
    }

    #[test]
    fn only_money_credits_and_subscriptions_are_kept_per_day() {
        let mut delta = StatsDelta::default();
        for (name, by) in [
            ("payments_succeeded", 1),
            ("revenue_usd", 700),
            ("refunds_eur", 5),
            ("credits_sold", 10),
            ("credits_spent", 3),
            ("credits_outstanding", 7),
            ("subscriptions_active", -1),
        ] {
            delta.add(name.into(), by);
        }
        let kept = daily_part(&delta);
        assert_eq!(
            kept.0.keys().cloned().collect::<Vec<_>>(),
            [
                "credits_sold",
                "credits_spent",
                "refunds_eur",
                "revenue_usd",
                "subscriptions_active"
            ]
        );
    }

    #[test]
    fn active_subscriptions_are_walked_back_from_today() {
        let today = 1_700_000_000; // 2023-11-14
        let mut up = StatsDelta::default();
        up.add("subscriptions_active".into(), 2);
        let mut down = StatsDelta::default();
        down.add("subscriptions_active".into(), -1);
        down.add("revenue_usd".into(), 500);
        let days = series(
            &[
                ("2023-11-14".into(), down.clone()),
                ("2023-11-12".into(), up),
                ("2023-10-01".into(), down),
            ],
            4,
            today,
            4,
        );
        let dates: Vec<_> = days.iter().map(|d| d.date.as_str()).collect();
        assert_eq!(
            dates,
            ["2023-11-11", "2023-11-12", "2023-11-13", "2023-11-14"]
        );
        let active: Vec<_> = days.iter().map(|d| d.active_subscriptions).collect();
        assert_eq!(active, [3, 5, 5, 4]);
        assert_eq!(days[3].change.0["revenue_usd"], 500);
        assert!(days[2].change.is_empty());
    }

    mod recounting {
        use super::*;
        use proptest::prelude::*;

        fn counts(status: u8, credited: bool, refunded: i64) -> StatsDelta {
            let status = match status % 3 {
                0 => PaymentStatus::Pending,
                1 => PaymentStatus::Succeeded,
                _ => PaymentStatus::Failed,
            };
            contribution(&payment(status, credited, refunded))
        }

        proptest! {
            /// Changes of one payment delivered with duplicates, in any order, some replayed
            /// late: the counters end at the last change's contribution, and no counter is ever
            /// below zero on the way.
            #[test]
            fn a_payment_counts_once_as_it_last_stands_whatever_the_delivery(
                changes in proptest::collection::vec((0u8..3, any::<bool>(), 0i64..500), 1..6),
                order in proptest::collection::vec(0usize..100, 1..20),
            ) {
                let images: Vec<StatsDelta> = changes
                    .iter()
                    .map(|(s, c, r)| counts(*s, *c, (*r).min(500)))
                    .collect();
                // Stream order first (every change once, in order), then deliveries again.
                let mut deliveries: Vec<usize> = (0..images.len()).collect();
                deliveries.extend(order.iter().map(|i| i % images.len()));
                let mut total = StatsDelta::default();
                let mut counted: Option<Counted> = None;
                for at in deliveries {
                    let position = format!("{}", 1000 + at);
                    if let Some(delta) = recount(counted.as_ref(), &images[at], Some(&position)) {
                        total.merge(&delta);
                        counted = Some(Counted { counts: images[at].clone(), position: Some(position) });
                    }
                    prop_assert!(total.0.values().all(|v| *v >= 0), "{total:?}");
                }
                let last = images.last().cloned().unwrap_or_default();
                prop_assert_eq!(total, last);
            }
        }

        #[test]
        fn a_backfill_and_the_stream_count_a_payment_once_in_either_order() {
            let pending = counts(0, false, 0);
            let paid = counts(1, true, 0);
            // Backfill reads it paid; the stream then brings the pending and the paid changes.
            let mut total = recount(None, &paid, None).expect("counted");
            let mut counted = Counted {
                counts: paid.clone(),
                position: None,
            };
            for (image, position) in [(&pending, "10"), (&paid, "11")] {
                if let Some(delta) = recount(Some(&counted), image, Some(position)) {
                    total.merge(&delta);
                    counted = Counted {
                        counts: image.clone(),
                        position: Some(position.into()),
                    };
                }
            }
            assert_eq!(total, paid);
            assert!(later("100", "99") && !later("99", "100") && !later("7", "7"));
        }
    }
}
