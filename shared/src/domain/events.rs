//! Billing events for the app's backend (plan changed, payment failed, credits low, …): which
//! events one committed change of Coffer's data means. The change comes from the table's stream,
//! so an event is only ever derived from data that was written. Pure rules, no I/O.
//!
//! `plan.changed` follows the subscription's plan as Stripe has it (and tiers bought); a
//! scheduled downgrade says which plan is kept until when. Time passing (a held plan or a
//! past-due grace running out) writes nothing, so it publishes nothing.

use serde_json::{json, Value};

use super::ledger::PaymentRecord;
use super::records::PaymentStatus;
use super::subscriptions::{SubscriptionState, SubscriptionStatus};

/// The kinds of event Coffer publishes; `name` is the EventBridge `detail-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    PlanChanged,
    SubscriptionPastDue,
    SubscriptionCanceled,
    PaymentSucceeded,
    PaymentFailed,
    CreditsLow,
    CreditsDepleted,
    LimitReached,
    SubscriptionDuplicateCanceled,
    CreditsExpiring,
    CreditsExpired,
    CreditsRecovered,
    RechargeSucceeded,
    RechargeFailed,
    RechargeActionRequired,
    RechargeDisabled,
}

impl EventKind {
    pub const ALL: [Self; 16] = [
        Self::PlanChanged,
        Self::SubscriptionPastDue,
        Self::SubscriptionCanceled,
        Self::PaymentSucceeded,
        Self::PaymentFailed,
        Self::CreditsLow,
        Self::CreditsDepleted,
        Self::LimitReached,
        Self::SubscriptionDuplicateCanceled,
        Self::CreditsExpiring,
        Self::CreditsExpired,
        Self::CreditsRecovered,
        Self::RechargeSucceeded,
        Self::RechargeFailed,
        Self::RechargeActionRequired,
        Self::RechargeDisabled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PlanChanged => "plan.changed",
            Self::SubscriptionPastDue => "subscription.past_due",
            Self::SubscriptionCanceled => "subscription.canceled",
            Self::PaymentSucceeded => "payment.succeeded",
            Self::PaymentFailed => "payment.failed",
            Self::CreditsLow => "credits.low",
            Self::CreditsDepleted => "credits.depleted",
            Self::LimitReached => "limit.reached",
            Self::SubscriptionDuplicateCanceled => "subscription.duplicate_canceled",
            Self::CreditsExpiring => "credits.expiring",
            Self::CreditsExpired => "credits.expired",
            Self::CreditsRecovered => "credits.recovered",
            Self::RechargeSucceeded => "recharge.succeeded",
            Self::RechargeFailed => "recharge.failed",
            Self::RechargeActionRequired => "recharge.action_required",
            Self::RechargeDisabled => "recharge.disabled",
        }
    }
}

/// One event, before it is given its id and scope: whose it is and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainEvent {
    pub kind: EventKind,
    /// The user or organisation account it concerns.
    pub account: String,
    /// The event's own fields (camelCase JSON).
    pub data: Value,
}

fn event(kind: EventKind, account: &str, data: Value) -> DomainEvent {
    DomainEvent {
        kind,
        account: account.to_owned(),
        data,
    }
}

/// What a change of an account's subscription means. `old` is the state before (`None`: the
/// first subscription the account has).
pub fn subscription_events(
    account: &str,
    old: Option<&SubscriptionState>,
    new: &SubscriptionState,
) -> Vec<DomainEvent> {
    let mut events = Vec::new();
    let old_status = old.map(|o| o.status);
    let became = |status: SubscriptionStatus| new.status == status && old_status != Some(status);
    let fields = || {
        json!({
            "subscriptionId": new.subscription_id,
            "planId": new.plan_id,
            "status": new.status.as_str(),
            "currentPeriodEnd": new.current_period_end,
        })
    };
    if became(SubscriptionStatus::PastDue) {
        events.push(event(EventKind::SubscriptionPastDue, account, fields()));
    }
    if became(SubscriptionStatus::Canceled) {
        events.push(event(EventKind::SubscriptionCanceled, account, fields()));
    }
    // The plan the subscription gives: while it is paid for (or in its grace), its plan; none
    // before the first payment or once it ended.
    let plan_of = |state: &SubscriptionState| {
        state
            .status
            .counts_as_active()
            .then(|| state.plan_id.clone())
    };
    let (before, after) = (old.and_then(plan_of), plan_of(new));
    if before != after {
        // A downgrade is scheduled: the subscription's plan changed now, and the higher plan
        // is kept until the paid period ends (`keptPlanId`, `keptUntil`).
        let mut data = json!({
            "subscriptionId": new.subscription_id,
            "previousPlanId": before,
            "planId": after,
            "status": new.status.as_str(),
        });
        if let (Some(kept), Some(until), Some(map)) =
            (&new.held_plan_id, new.held_until, data.as_object_mut())
        {
            map.insert("keptPlanId".into(), json!(kept));
            map.insert("keptUntil".into(), json!(until));
        }
        events.push(event(EventKind::PlanChanged, account, data));
    }
    events
}

/// A tier (a plan bought once) the account now holds instead of `old`.
pub fn tier_events(account: &str, old: Option<&str>, new: Option<&str>) -> Vec<DomainEvent> {
    if old == new {
        return Vec::new();
    }
    vec![event(
        EventKind::PlanChanged,
        account,
        json!({ "previousPlanId": old, "planId": new, "source": "tier" }),
    )]
}

/// A second live subscription of an account was canceled at once and its payment refunded
/// (two Checkout sessions completed, say): the account keeps `kept`.
pub fn duplicate_subscription_events(
    account: &str,
    subscription_id: &str,
    kept: &str,
    refunded: i64,
    currency: &str,
) -> Vec<DomainEvent> {
    vec![event(
        EventKind::SubscriptionDuplicateCanceled,
        account,
        json!({
            "subscriptionId": subscription_id,
            "keptSubscriptionId": kept,
            "refunded": refunded,
            "currency": currency,
        }),
    )]
}

/// What a change of a credit purchase's payment means: it succeeded, or it failed. Each is
/// said once per payment: a payment comes to `succeeded` from not yet being paid (new, pending,
/// failed or canceled), never again from `refunded`, `partially_refunded` or `disputed` (a
/// failed refund or a won dispute returns the money, not a second payment); it comes to
/// `failed` only before it was paid.
pub fn payment_events(old: Option<PaymentStatus>, new: &PaymentRecord) -> Vec<DomainEvent> {
    use PaymentStatus as S;
    let kind = match (old, new.status) {
        (None | Some(S::Pending | S::Failed | S::Canceled), S::Succeeded) => {
            EventKind::PaymentSucceeded
        }
        (None | Some(S::Pending | S::Canceled), S::Failed) => EventKind::PaymentFailed,
        _ => return Vec::new(),
    };
    vec![event(
        kind,
        new.user_id.as_str(),
        json!({
            "paymentIntentId": new.intent_id,
            "packageId": new.package_id,
            "amount": new.amount,
            "currency": new.currency.as_str(),
            "credits": new.credits,
        }),
    )]
}

/// Whether an invoice's stored status may become `new`: it only moves forward. `failed` may be
/// followed by `paid` (a retried payment), never `paid` by `failed` (a late
/// `invoice.payment_failed` of an attempt that came before the payment), and neither repeats.
pub fn invoice_status_advances(old: Option<&str>, new: &str) -> bool {
    let rank = |status: &str| match status {
        "failed" => Some(1),
        "paid" => Some(2),
        _ => None,
    };
    match (old.map(rank), rank(new)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(old), Some(new)) => old.is_none_or(|old| new > old),
    }
}

/// What a change of a subscription invoice's status means (`paid` or `failed`), said once.
pub fn invoice_events(
    account: &str,
    old_status: Option<&str>,
    new_status: &str,
    data: Value,
) -> Vec<DomainEvent> {
    if !invoice_status_advances(old_status, new_status) {
        return Vec::new();
    }
    let kind = match new_status {
        "paid" => EventKind::PaymentSucceeded,
        "failed" => EventKind::PaymentFailed,
        _ => return Vec::new(),
    };
    vec![event(kind, account, data)]
}

/// An account's low-balance alert: its threshold (the account's own, or its project's), the
/// margin a balance must rise above it by to re-arm the alert, and whether it is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowAlert {
    pub threshold: Option<i64>,
    pub margin: i64,
    pub armed: bool,
}

/// What a change of a balance means, and whether the low-balance alert is armed after it. It
/// fell to zero or below (`credits.depleted`); it fell below the threshold while the alert was
/// armed (`credits.low`, once: the alert is disarmed); it rose to the threshold plus the margin
/// while disarmed (`credits.recovered`: armed again). A balance moving up and down around the
/// threshold says nothing more.
pub fn balance_events(
    account: &str,
    old: i64,
    new: i64,
    alert: LowAlert,
    currency: &str,
) -> (Vec<DomainEvent>, bool) {
    let data = |threshold: Option<i64>| {
        let mut data = json!({ "balance": new, "previousBalance": old, "currency": currency });
        if let (Some(threshold), Some(map)) = (threshold, data.as_object_mut()) {
            map.insert("threshold".into(), json!(threshold));
        }
        data
    };
    let mut events = Vec::new();
    if new <= 0 && old > 0 {
        events.push(event(EventKind::CreditsDepleted, account, data(None)));
    }
    let Some(threshold) = alert.threshold else {
        return (events, alert.armed);
    };
    let mut armed = alert.armed;
    if armed && new < threshold {
        armed = false;
        if new > 0 {
            events.push(event(EventKind::CreditsLow, account, data(Some(threshold))));
        }
    } else if !armed && new >= threshold.saturating_add(alert.margin.max(0)) {
        armed = true;
        events.push(event(
            EventKind::CreditsRecovered,
            account,
            data(Some(threshold)),
        ));
    }
    (events, armed)
}

/// The first refusal of a metric's allowance in a period.
pub fn limit_events(account: &str, metric: &str, period: &str, limit: i64) -> Vec<DomainEvent> {
    vec![event(
        EventKind::LimitReached,
        account,
        json!({ "metric": metric, "period": period, "limit": limit }),
    )]
}

/// A bucket about to expire (`expiring`, told once, `amount` what was left then), or gone
/// (`expired`, `amount` what left through its entry). `expires_at` in Unix seconds.
pub fn expiry_events(
    account: &str,
    expired: bool,
    bucket: &str,
    amount: i64,
    expires_at: Option<i64>,
    currency: &str,
) -> Vec<DomainEvent> {
    if amount <= 0 {
        return Vec::new();
    }
    let kind = if expired {
        EventKind::CreditsExpired
    } else {
        EventKind::CreditsExpiring
    };
    let mut data = json!({ "bucket": bucket, "amount": amount, "currency": currency });
    if let Some(at) = expires_at {
        data["expiresAt"] = json!(super::records::rfc3339(at.saturating_mul(1000)));
    }
    vec![event(kind, account, data)]
}

/// What an account's auto-recharge changing from `old` to `new` says (`domain::recharge::told`):
/// a recharge that succeeded (its credits committed) or failed (with Stripe's reason), one that
/// waits for the user to authenticate (with the intent's client secret, for the account's
/// user only), auto-recharge turned off (and by whom).
pub fn recharge_events(
    account: &str,
    old: Option<&super::recharge::RechargeState>,
    new: &super::recharge::RechargeState,
    currency: &str,
) -> Vec<DomainEvent> {
    use super::recharge::Told;
    super::recharge::told(old, new)
        .into_iter()
        .map(|told| match told {
            Told::Succeeded(done) => event(
                EventKind::RechargeSucceeded,
                account,
                json!({"rechargeId": done.id, "paymentIntentId": done.intent,
                       "amount": done.amount, "currency": currency}),
            ),
            Told::Failed(done, reason) => event(
                EventKind::RechargeFailed,
                account,
                json!({"rechargeId": done.id, "paymentIntentId": done.intent,
                       "amount": done.amount, "currency": currency, "reason": reason,
                       "failuresInARow": new.failures_in_a_row}),
            ),
            Told::ActionRequired(waiting) => event(
                EventKind::RechargeActionRequired,
                account,
                json!({"rechargeId": waiting.id, "paymentIntentId": waiting.intent,
                       "clientSecret": waiting.client_secret,
                       "paymentMethodId": waiting.payment_method,
                       "amount": waiting.amount, "currency": currency}),
            ),
            Told::Disabled(why) => event(
                EventKind::RechargeDisabled,
                account,
                json!({"by": why.name()}),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::subscriptions::sample_state;

    fn kinds(events: &[DomainEvent]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn subscriptions_say_past_due_canceled_and_plan_changes_once() {
        let active = sample_state("sub_1", SubscriptionStatus::Active, 1);
        assert_eq!(
            kinds(&subscription_events("u", None, &active)),
            [EventKind::PlanChanged]
        );
        // The same state read again says nothing.
        assert!(subscription_events("u", Some(&active), &active).is_empty());
        let mut past_due = active.clone();
        past_due.status = SubscriptionStatus::PastDue;
        assert_eq!(
            kinds(&subscription_events("u", Some(&active), &past_due)),
            [EventKind::SubscriptionPastDue]
        );
        let mut canceled = past_due.clone();
        canceled.status = SubscriptionStatus::Canceled;
        let events = subscription_events("u", Some(&past_due), &canceled);
        assert_eq!(
            kinds(&events),
            [EventKind::SubscriptionCanceled, EventKind::PlanChanged]
        );
        assert_eq!(events[1].data["planId"], Value::Null);
        let mut upgraded = active.clone();
        upgraded.plan_id = "enterprise".into();
        let events = subscription_events("u", Some(&active), &upgraded);
        assert_eq!(kinds(&events), [EventKind::PlanChanged]);
        assert_eq!(events[0].data["previousPlanId"], active.plan_id.as_str());
        assert_eq!(events[0].data["planId"], "enterprise");
    }

    #[test]
    fn balances_say_low_once_when_crossing_and_depleted_at_zero() {
        let armed = |threshold| LowAlert {
            threshold,
            margin: 100,
            armed: true,
        };
        let kinds_of =
            |old, new, threshold| kinds(&balance_events("u", old, new, armed(threshold), "usd").0);
        assert_eq!(kinds_of(1_000, 400, Some(500)), [EventKind::CreditsLow]);
        assert!(kinds_of(1_000, 400, None).is_empty());
        assert_eq!(kinds_of(300, 0, None), [EventKind::CreditsDepleted]);
        assert_eq!(kinds_of(1_000, 0, None), [EventKind::CreditsDepleted]);
        assert_eq!(kinds_of(50, -20, None), [EventKind::CreditsDepleted]);
        assert!(kinds_of(0, 0, None).is_empty());
        assert!(kinds_of(600, 500, Some(500)).is_empty());
        // Straight to zero: depleted, and the alert is spent too (no low on the way back up).
        let (events, armed_after) = balance_events("u", 1_000, 0, armed(Some(500)), "usd");
        assert_eq!(kinds(&events), [EventKind::CreditsDepleted]);
        assert!(!armed_after);
    }

    #[test]
    fn a_balance_wandering_around_its_threshold_says_low_once_and_recovered_once_above_the_margin()
    {
        let mut alert = LowAlert {
            threshold: Some(500),
            margin: 100,
            armed: true,
        };
        let mut said = Vec::new();
        let mut old = 1_000;
        for new in [450, 520, 480, 590, 499, 600, 650, 400, 700] {
            let (events, armed) = balance_events("u", old, new, alert, "usd");
            said.extend(kinds(&events));
            alert.armed = armed;
            old = new;
        }
        assert_eq!(
            said,
            [
                EventKind::CreditsLow,
                EventKind::CreditsRecovered,
                EventKind::CreditsLow,
                EventKind::CreditsRecovered
            ]
        );
    }

    #[test]
    fn an_invoice_status_only_moves_forward_and_says_each_once() {
        let kinds_of = |old, new| kinds(&invoice_events("u", old, new, json!({})));
        // A late payment_failed after paid: nothing stored, nothing said.
        assert!(!invoice_status_advances(Some("paid"), "failed"));
        assert!(kinds_of(Some("paid"), "failed").is_empty());
        // A retried payment after a failure: paid, said once.
        assert!(invoice_status_advances(Some("failed"), "paid"));
        assert_eq!(
            kinds_of(Some("failed"), "paid"),
            [EventKind::PaymentSucceeded]
        );
        assert!(kinds_of(Some("failed"), "failed").is_empty());
        assert!(!invoice_status_advances(Some("paid"), "paid"));
        assert!(!invoice_status_advances(None, "draft"));
    }

    #[test]
    fn a_payment_succeeds_once_whatever_refunds_and_disputes_do() {
        use crate::domain::ledger::PaymentRecord;
        use crate::domain::packages::CreditPackage;
        use PaymentStatus as S;
        let package = CreditPackage {
            id: "p".into(),
            name: "P".into(),
            description: String::new(),
            amount: 500,
            credits: 500,
            currency: crate::domain::money::Currency::parse("usd").expect("usd"),
            active: true,
        };
        let user = crate::domain::records::UserId::parse("u").expect("user");
        let mut payment = PaymentRecord::pending("pi_1", user, &package, 0);
        let said = |old: Option<S>, new: S, payment: &mut PaymentRecord| {
            payment.status = new;
            kinds(&payment_events(old, payment))
        };
        assert_eq!(
            said(None, S::Succeeded, &mut payment),
            [EventKind::PaymentSucceeded]
        );
        assert_eq!(
            said(Some(S::Pending), S::Succeeded, &mut payment),
            [EventKind::PaymentSucceeded]
        );
        assert_eq!(
            said(Some(S::Failed), S::Succeeded, &mut payment),
            [EventKind::PaymentSucceeded]
        );
        // A won dispute, a failed refund: the payment is back to succeeded, said no more.
        for back in [S::Disputed, S::Refunded, S::PartiallyRefunded, S::Succeeded] {
            assert!(
                said(Some(back), S::Succeeded, &mut payment).is_empty(),
                "{back:?}"
            );
        }
        assert_eq!(
            said(Some(S::Pending), S::Failed, &mut payment),
            [EventKind::PaymentFailed]
        );
        assert!(said(Some(S::Succeeded), S::Failed, &mut payment).is_empty());
        assert!(said(Some(S::Failed), S::Failed, &mut payment).is_empty());
    }

    #[test]
    fn invoices_and_tiers() {
        assert_eq!(
            kinds(&invoice_events("u", Some("open"), "failed", json!({}))),
            [EventKind::PaymentFailed]
        );
        assert!(invoice_events("u", Some("paid"), "paid", json!({})).is_empty());
        assert!(invoice_events("u", None, "open", json!({})).is_empty());
        assert_eq!(
            kinds(&tier_events("u", None, Some("pro"))),
            [EventKind::PlanChanged]
        );
        assert!(tier_events("u", Some("pro"), Some("pro")).is_empty());
        let names: std::collections::HashSet<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), EventKind::ALL.len(), "each kind its own name");
    }

    #[test]
    fn a_recharge_says_how_it_ended_once_and_the_secret_only_when_authentication_is_asked() {
        use crate::domain::recharge::{settle, InFlight, Outcome, RechargeState};
        let flying = RechargeState {
            started: 1,
            in_flight: Some(InFlight {
                id: "rc1".into(),
                amount: 2_000,
                launched: true,
                intent: Some("pi_1".into()),
                ..InFlight::default()
            }),
            ..RechargeState::default()
        };
        let asked = settle(
            &flying,
            "rc1",
            &Outcome::ActionRequired {
                intent: "pi_1".into(),
                client_secret: "pi_1_secret_s".into(),
                payment_method: Some("pm_1".into()),
            },
        );
        let said = recharge_events("u", Some(&flying), &asked, "usd");
        assert_eq!(kinds(&said), [EventKind::RechargeActionRequired]);
        assert_eq!(said[0].data["clientSecret"], "pi_1_secret_s");
        let paid = settle(&asked, "rc1", &Outcome::Succeeded);
        let said = recharge_events("u", Some(&asked), &paid, "usd");
        assert_eq!(kinds(&said), [EventKind::RechargeSucceeded]);
        assert_eq!(
            said[0].data,
            json!({"rechargeId": "rc1", "paymentIntentId": "pi_1", "amount": 2000, "currency": "usd"})
        );
        assert!(said[0].data.get("clientSecret").is_none());
        assert!(recharge_events("u", Some(&paid), &paid, "usd").is_empty());
    }

    #[test]
    fn an_expiry_is_told_once_ahead_and_once_when_it_happens_and_never_for_nothing() {
        let expiring = expiry_events("u", false, "grant:g", 300, Some(86_400), "usd");
        assert_eq!(kinds(&expiring), [EventKind::CreditsExpiring]);
        assert_eq!(
            expiring[0].data,
            json!({"bucket": "grant:g", "amount": 300, "currency": "usd",
                   "expiresAt": "1970-01-02T00:00:00Z"})
        );
        assert_eq!(
            kinds(&expiry_events("u", true, "grant:g", 300, None, "usd")),
            [EventKind::CreditsExpired]
        );
        assert!(expiry_events("u", true, "grant:g", 0, None, "usd").is_empty());
    }
}
