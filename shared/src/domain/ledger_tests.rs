use proptest::prelude::*;

use super::*;
use crate::domain::money::{Credits, Money};

fn payment(credits: i64, amount: i64) -> PaymentRecord {
    PaymentRecord {
        intent_id: "pi_1".into(),
        user_id: UserId::parse("u").unwrap(),
        package_id: "standard".into(),
        amount,
        currency: Currency::parse("usd").unwrap(),
        credits,
        status: PaymentStatus::Succeeded,
        created_at_ms: 0,
        description: String::new(),
        credited: true,
        attention: None,
        facts: ChargeFacts::default(),
        applied: credits,
        rev: 1,
    }
}

/// Applies one event the way the store does; returns the credits it moved.
fn apply(payment: &mut PaymentRecord, event: &ChargeEvent) -> i64 {
    match decide_lifecycle(payment, event) {
        LifecycleDecision::Apply {
            facts,
            status,
            delta,
            applied,
        } => {
            payment.facts = facts;
            payment.status = status;
            payment.applied = applied;
            payment.rev += 1;
            delta
        }
        LifecycleDecision::Unchanged | LifecycleDecision::Ignored(_) => 0,
        LifecycleDecision::NotReady => panic!("a credited payment is always ready"),
    }
}

fn refunded(amount: i64, amount_refunded: i64, at: i64) -> ChargeEvent {
    ChargeEvent::Refunded {
        amount,
        amount_refunded,
        currency: "usd".into(),
        at,
    }
}

fn dispute(step: DisputeStep, amount: i64) -> ChargeEvent {
    ChargeEvent::Dispute {
        dispute_id: "dp_1".into(),
        step,
        amount: Some(amount),
    }
}

#[test]
fn refunds_claw_back_their_share_rounded_down() {
    assert_eq!(
        refund_share(Credits(1650), Money(1500), Money(1500)),
        Credits(1650)
    );
    assert_eq!(
        refund_share(Credits(1650), Money(1500), Money(500)),
        Credits(550)
    );
    assert_eq!(
        refund_share(Credits(1000), Money(3), Money(1)),
        Credits(333)
    );
    assert_eq!(
        refund_share(Credits(1000), Money(1500), Money(9999)),
        Credits(1000)
    );
    assert_eq!(
        refund_share(Credits(1000), Money(1500), Money(0)),
        Credits(0)
    );
    assert_eq!(
        refund_share(Credits(i64::MAX), Money(i64::MAX), Money(i64::MAX - 1)),
        Credits(i64::MAX - 1)
    );
}

#[test]
fn a_refund_while_a_dispute_holds_the_funds_is_clawed_back_at_reinstatement() {
    // The defect: withdrawn took everything, the partial refund then took nothing, and the
    // reinstatement gave everything back, so the refunded third stayed as credits.
    let mut p = payment(1650, 1500);
    let mut balance = 1650;
    balance += apply(&mut p, &dispute(DisputeStep::FundsWithdrawn, 1500));
    assert_eq!(balance, 0);
    balance += apply(&mut p, &refunded(1500, 500, 10));
    assert_eq!(balance, 0);
    balance += apply(&mut p, &dispute(DisputeStep::FundsReinstated, 1500));
    assert_eq!(balance, 1650 - 550);
    assert_eq!(p.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(balance, net_credits(&p));
}

#[test]
fn a_partial_dispute_takes_only_its_share() {
    let mut p = payment(1000, 2000);
    assert_eq!(
        apply(&mut p, &dispute(DisputeStep::FundsWithdrawn, 500)),
        -250
    );
    assert_eq!(p.status, PaymentStatus::Disputed);
    assert_eq!(
        apply(&mut p, &dispute(DisputeStep::FundsReinstated, 500)),
        250
    );
    assert_eq!(p.status, PaymentStatus::Succeeded);
}

#[test]
fn a_failed_refund_gives_its_credits_back_once() {
    let mut p = payment(1000, 1000);
    assert_eq!(apply(&mut p, &refunded(1000, 400, 10)), -400);
    let failed = ChargeEvent::RefundFailed {
        refund_id: "re_1".into(),
        amount: 400,
        at: 20,
    };
    assert_eq!(apply(&mut p, &failed), 400);
    assert_eq!(apply(&mut p, &failed), 0);
    assert_eq!(p.status, PaymentStatus::Succeeded);
    // The older charge.refunded arriving again does not take them a second time.
    assert_eq!(apply(&mut p, &refunded(1000, 400, 10)), 0);
    // A new refund after the failure: Stripe's figure no longer counts the failed one.
    assert_eq!(apply(&mut p, &refunded(1000, 300, 30)), -300);
}

#[test]
fn reinstated_before_withdrawn_changes_nothing_in_either_order() {
    let mut p = payment(500, 500);
    assert_eq!(
        apply(&mut p, &dispute(DisputeStep::FundsReinstated, 500)),
        0
    );
    assert_eq!(apply(&mut p, &dispute(DisputeStep::FundsWithdrawn, 500)), 0);
    assert_eq!(p.applied, 500);
}

#[test]
fn events_for_a_payment_not_credited_yet_wait_unless_it_needs_attention() {
    let mut p = payment(500, 500);
    p.credited = false;
    p.applied = 0;
    assert_eq!(
        decide_lifecycle(&p, &refunded(500, 500, 1)),
        LifecycleDecision::NotReady
    );
    p.attention = Some("currency_mismatch".into());
    match decide_lifecycle(&p, &refunded(500, 500, 1)) {
        LifecycleDecision::Apply { delta, .. } => assert_eq!(delta, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refund_for_another_amount_or_currency_is_ignored() {
    let p = payment(500, 500);
    assert!(matches!(
        decide_lifecycle(&p, &refunded(600, 100, 1)),
        LifecycleDecision::Ignored(_)
    ));
}

#[test]
fn crediting_checks_amount_currency_and_metadata() {
    let p = payment(1650, 1500);
    let mut unpaid = p.clone();
    unpaid.credited = false;
    let paid = PaidIntent {
        intent_id: "pi_1".into(),
        amount: 1500,
        currency: "USD".into(),
        user_id: Some("u".into()),
        package_id: Some("standard".into()),
        credits: Some(1650),
    };
    assert_eq!(
        decide_credit(&unpaid, &paid),
        CreditDecision::Credit {
            credits: 1650,
            adjustment: 0
        }
    );
    assert_eq!(decide_credit(&p, &paid), CreditDecision::AlreadyCredited);
    let cheaper = PaidIntent {
        amount: 1,
        ..paid.clone()
    };
    assert_eq!(
        decide_credit(&unpaid, &cheaper),
        CreditDecision::Mismatch("amount_mismatch")
    );
    let euros = PaidIntent {
        currency: "eur".into(),
        ..paid.clone()
    };
    assert_eq!(
        decide_credit(&unpaid, &euros),
        CreditDecision::Mismatch("currency_mismatch")
    );
    let other_user = PaidIntent {
        user_id: Some("v".into()),
        ..paid
    };
    assert_eq!(
        decide_credit(&unpaid, &other_user),
        CreditDecision::Mismatch("metadata_mismatch")
    );
}

#[test]
fn spends_replay_the_first_result_and_conflict_on_another_amount_or_reason() {
    let spend = CreditMove {
        delta: -200,
        reason: "job".into(),
    };
    assert_eq!(
        decide_move(None, 500, &spend),
        MoveDecision::Write { balance_after: 300 }
    );
    assert_eq!(decide_move(None, 100, &spend), MoveDecision::Insufficient);
    let first = RecordedMove {
        entry_id: "spend:x".into(),
        delta: -200,
        reason: "job".into(),
        balance_after: Some(300),
    };
    assert_eq!(
        decide_move(Some(&first), 0, &spend),
        MoveDecision::Replay(first.clone())
    );
    let other_reason = CreditMove {
        reason: "other".into(),
        ..spend.clone()
    };
    assert_eq!(
        decide_move(Some(&first), 500, &other_reason),
        MoveDecision::KeyConflict
    );
    let other_amount = CreditMove {
        delta: -201,
        ..spend
    };
    assert_eq!(
        decide_move(Some(&first), 500, &other_amount),
        MoveDecision::KeyConflict
    );
    let grant = CreditMove {
        delta: 1,
        reason: "promo".into(),
    };
    assert_eq!(
        decide_move(None, i64::MAX, &grant),
        MoveDecision::Insufficient
    );
}

/// One charge's history as it happened at Stripe: refunds (cumulative), perhaps one refund
/// failing later, perhaps a dispute withdrawn and perhaps reinstated.
#[derive(Clone, Debug)]
struct Timeline {
    credits: i64,
    amount: i64,
    events: Vec<ChargeEvent>,
    /// What Stripe's charge says in the end.
    final_refunded: i64,
    dispute_hold: Option<i64>,
}

fn timeline() -> impl Strategy<Value = Timeline> {
    (
        1_i64..5_000_000,
        1_i64..1_000_000,
        proptest::collection::vec(1_u32..=100, 0..4),
        proptest::option::of(0_usize..4),
        proptest::option::of((1_u32..=100, any::<bool>())),
    )
        .prop_map(|(credits, amount, refund_parts, fail, dispute_spec)| {
            let mut events = Vec::new();
            let mut at = 0;
            let mut refunds: Vec<(String, i64, bool)> = Vec::new();
            let mut standing = 0_i64;
            for (i, part) in refund_parts.iter().enumerate() {
                let room = amount - standing;
                let refund = (room * i64::from(*part) / 100).max(0);
                if refund == 0 {
                    continue;
                }
                at += 1;
                standing += refund;
                refunds.push((format!("re_{i}"), refund, false));
                events.push(refunded(amount, standing, at));
            }
            if let Some(index) = fail {
                if let Some(failed) = refunds.get_mut(index) {
                    at += 1;
                    failed.2 = true;
                    standing -= failed.1;
                    events.push(ChargeEvent::RefundFailed {
                        refund_id: failed.0.clone(),
                        amount: failed.1,
                        at,
                    });
                }
            }
            let mut dispute_hold = None;
            if let Some((part, reinstated)) = dispute_spec {
                let disputed = (amount * i64::from(part) / 100).max(1);
                events.push(dispute(DisputeStep::Created, disputed));
                events.push(dispute(DisputeStep::FundsWithdrawn, disputed));
                if reinstated {
                    events.push(dispute(DisputeStep::FundsReinstated, disputed));
                } else {
                    dispute_hold = Some(disputed);
                }
            }
            Timeline {
                credits,
                amount,
                events,
                final_refunded: standing,
                dispute_hold,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// In every order of refunds, failed refunds, withdrawals and reinstatements, with
    /// duplicates, the balance ends at credits - the refunded share - what a lost dispute holds.
    #[test]
    fn any_order_of_charge_events_with_duplicates_ends_in_the_same_balance(
        line in timeline(),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let mut deliveries = line.events.clone();
        for pick in &order {
            if !line.events.is_empty() {
                deliveries.push(pick.get(&line.events).clone());
            }
        }
        // A shuffle driven by the generated indexes.
        let n = deliveries.len();
        if n > 0 {
            for (i, pick) in order.iter().enumerate() {
                deliveries.swap(i % n, pick.index(n));
            }
        }
        let mut p = payment(line.credits, line.amount);
        let mut balance = line.credits;
        for event in &deliveries {
            balance += apply(&mut p, event);
        }
        let hold = line
            .dispute_hold
            .map_or(0, |disputed| {
                refund_share(Credits(line.credits), Money(line.amount), Money(disputed)).0
            });
        let expected = (line.credits
            - refund_share(
                Credits(line.credits),
                Money(line.amount),
                Money(line.final_refunded),
            )
            .0
            - hold)
            .max(0);
        prop_assert_eq!(balance, expected);
        prop_assert_eq!(p.applied, balance);
        prop_assert_eq!(net_credits(&p), balance);
    }

    /// However spends interleave, a balance never goes below zero through a spend.
    #[test]
    fn spends_never_take_a_balance_below_zero(
        start in 0_i64..10_000,
        spends in proptest::collection::vec(1_i64..5_000, 0..20),
    ) {
        let mut balance = start;
        for (i, amount) in spends.iter().enumerate() {
            let request = CreditMove { delta: -amount, reason: format!("r{i}") };
            if let MoveDecision::Write { balance_after } = decide_move(None, balance, &request) {
                balance = balance_after;
            }
            prop_assert!(balance >= 0);
        }
    }
}

#[test]
fn entry_kinds_keep_their_stored_names() {
    let names: Vec<&str> = EntryKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "purchase",
            "adjustment",
            "spend",
            "grant",
            "refund",
            "refund_failed",
            "dispute_withdrawn",
            "dispute_reinstated",
            "expire",
            "hold",
            "capture",
            "release",
            "grant_adjusted",
            "grant_voided",
            "expiry_reversed"
        ]
    );
    for kind in EntryKind::ALL {
        assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(EntryKind::parse("included"), None);
    assert!(EntryKind::Adjustment.is_sale() && !EntryKind::Grant.is_sale());
}

#[test]
fn crediting_writes_the_purchase_and_an_adjustment_only_when_facts_came_first() {
    let p = payment(1650, 1500);
    let (entries, applied) = crediting_entries(&p, 1650, 0);
    assert_eq!(applied, 1650);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, EntryKind::Purchase);
    assert_eq!(entries[0].entry_id, format!("purchase:{}", p.intent_id));
    let (entries, applied) = crediting_entries(&p, 1650, -550);
    assert_eq!(applied, 1100);
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind, e.amount))
            .collect::<Vec<_>>(),
        [(EntryKind::Purchase, 1650), (EntryKind::Adjustment, -550)]
    );
    assert_eq!(
        entries[1].entry_id,
        format!("adjust:{}:r{}", p.intent_id, p.rev + 1)
    );
}
