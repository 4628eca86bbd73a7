//! A subscription as Coffer stores it: Stripe's state, read from Stripe (never an event's copy),
//! which of two reads is newer, and which plan it entitles to now (the `past_due` grace).
//! Pure rules, no I/O.

use serde::{Deserialize, Serialize};

use super::plans::{plan_for_price, Plan};

/// A subscription's status as Stripe names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => return None,
        })
    }

    pub const ALL: [Self; 8] = [
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Trialing,
        Self::Active,
        Self::PastDue,
        Self::Canceled,
        Self::Unpaid,
        Self::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
        }
    }

    /// A subscription counted among a project's active subscriptions in its stats: paying, in
    /// its trial, or past due within Stripe's retries (not yet canceled or unpaid).
    pub fn counts_as_active(self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }

    /// A subscription that still counts as the user's one live subscription.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Incomplete | Self::Trialing | Self::Active | Self::PastDue | Self::Paused
        )
    }
}

/// A subscription as Coffer stored it after reading it from Stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionState {
    pub subscription_id: String,
    pub plan_id: String,
    pub status: SubscriptionStatus,
    pub current_period_end: i64,
    pub cancel_at_period_end: bool,
    /// When it was first seen past due (Unix seconds), for the grace period.
    pub past_due_since: Option<i64>,
    /// When Coffer read this state from Stripe (milliseconds): the newer read wins.
    pub observed_at_ms: i64,
    /// The Stripe customer it bills.
    #[serde(default)]
    pub customer_id: String,
    /// The Stripe price (or plan) id of its item.
    #[serde(default)]
    pub price_id: String,
    /// After a downgrade: the higher plan kept until `held_until` (Unix seconds, the end of the
    /// period it was paid for).
    #[serde(default)]
    pub held_plan_id: Option<String>,
    #[serde(default)]
    pub held_until: Option<i64>,
}

impl SubscriptionState {
    /// A plan held after a downgrade still gives its limits at `now_secs` (Unix seconds).
    pub fn holds_plan_at(&self, now_secs: i64) -> bool {
        self.held_plan_id.is_some() && self.held_until.is_some_and(|until| now_secs < until)
    }
}

/// Whether `incoming` may replace `stored`: only a later read of the same subscription, or any
/// read of another subscription that is live while the stored one is not.
pub fn is_newer(stored: &SubscriptionState, incoming: &SubscriptionState) -> bool {
    if stored.subscription_id == incoming.subscription_id {
        incoming.observed_at_ms > stored.observed_at_ms
    } else {
        incoming.status.is_live() || !stored.status.is_live()
    }
}

/// The plan whose limits apply now: the subscription's while it is active or trialing, and while
/// it is past due within the grace period; the free plan otherwise. A live state whose period
/// ended more than `STALE_AFTER_SECS` ago is not trusted: its renewal was never read (a missed
/// event), so nothing says it was paid; the free plan applies until the subscription is read
/// again (the scheduled re-read does that).
pub fn entitled_plan_id<'a>(
    subscription: Option<&'a SubscriptionState>,
    free_plan_id: &'a str,
    now_secs: i64,
    past_due_grace_secs: i64,
) -> &'a str {
    let Some(subscription) = subscription else {
        return free_plan_id;
    };
    if is_stale(subscription, now_secs, STALE_AFTER_SECS) {
        return free_plan_id;
    }
    match subscription.status {
        SubscriptionStatus::Active | SubscriptionStatus::Trialing => &subscription.plan_id,
        SubscriptionStatus::PastDue => {
            let since = subscription.past_due_since.unwrap_or(now_secs);
            if now_secs.saturating_sub(since) <= past_due_grace_secs {
                &subscription.plan_id
            } else {
                free_plan_id
            }
        }
        _ => free_plan_id,
    }
}

/// One of two live subscriptions, as the keep rule reads it: its status, when Stripe made it,
/// its id.
pub type Candidate<'a> = (SubscriptionStatus, Option<i64>, &'a str);

/// Of two live subscriptions of one account, the one to keep: a paid one (active or trialing)
/// before one still waiting for its payment, then the one Stripe made first, then the smaller
/// id, whichever order their events come in. `true`: keep `a`. Every door ends at the same
/// answer, so two concurrent deliveries never cancel both.
pub fn keeps_first(a: Candidate<'_>, b: Candidate<'_>) -> bool {
    let order = |(status, created, id): Candidate<'_>| {
        let unpaid = !matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        );
        (unpaid, created.unwrap_or(i64::MAX), id.to_owned())
    };
    order(a) <= order(b)
}

/// How long after its period's end a live state is still trusted without its renewal read (the
/// scheduled re-read runs hourly; a renewal's payment may take days of retries to settle).
pub const STALE_AFTER_SECS: i64 = 3 * 24 * 3600;

/// A live state whose period ended more than `grace_secs` ago: not trusted until read again.
pub fn is_stale(subscription: &SubscriptionState, now_secs: i64, grace_secs: i64) -> bool {
    subscription.status.is_live()
        && subscription.current_period_end > 0
        && now_secs > subscription.current_period_end.saturating_add(grace_secs)
}

/// Whether the scheduled re-read should read this stored state from Stripe again: a live
/// subscription whose period ends within `ahead_secs` or has ended (its renewal may have been
/// missed).
pub fn due_for_reread(subscription: &SubscriptionState, now_secs: i64, ahead_secs: i64) -> bool {
    subscription.status.is_live()
        && subscription.current_period_end > 0
        && subscription.current_period_end <= now_secs.saturating_add(ahead_secs)
}

/// A subscription as just read from Stripe, as Coffer stores it: the plan its price links to,
/// when it first went past due (kept from the stored state of the same subscription), and a
/// downgrade's held plan while its period lasts.
pub struct StripeRead<'a> {
    pub subscription_id: &'a str,
    pub customer_id: &'a str,
    pub status: SubscriptionStatus,
    pub price_id: &'a str,
    pub current_period_end: i64,
    pub cancel_at_period_end: bool,
}

pub fn state_from_read(
    read: &StripeRead<'_>,
    plans: &[Plan],
    stored: Option<&SubscriptionState>,
    now_ms: i64,
) -> SubscriptionState {
    let same = stored.filter(|s| s.subscription_id == read.subscription_id);
    let past_due_since = match read.status {
        SubscriptionStatus::PastDue => {
            Some(same.and_then(|s| s.past_due_since).unwrap_or(now_ms / 1000))
        }
        _ => None,
    };
    SubscriptionState {
        subscription_id: read.subscription_id.to_owned(),
        plan_id: plan_for_price(plans, read.price_id)
            .map(|p| p.id.clone())
            .unwrap_or_default(),
        status: read.status,
        current_period_end: read.current_period_end,
        cancel_at_period_end: read.cancel_at_period_end,
        past_due_since,
        observed_at_ms: now_ms,
        customer_id: read.customer_id.to_owned(),
        price_id: read.price_id.to_owned(),
        held_plan_id: same.and_then(|s| s.held_plan_id.clone()),
        held_until: same.and_then(|s| s.held_until),
    }
}

/// A stored state for tests: the `pro` plan, past due since t=1,000 s.
#[cfg(test)]
pub(crate) fn sample_state(
    id: &str,
    status: SubscriptionStatus,
    observed: i64,
) -> SubscriptionState {
    SubscriptionState {
        subscription_id: id.into(),
        plan_id: "pro".into(),
        status,
        current_period_end: 0,
        cancel_at_period_end: false,
        past_due_since: Some(1_000),
        observed_at_ms: observed,
        customer_id: "cus_1".into(),
        price_id: "price_pro".into(),
        held_plan_id: None,
        held_until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_state_long_past_its_period_is_not_trusted_and_is_read_again() {
        let mut active = sample_state("s", SubscriptionStatus::Active, 1);
        active.current_period_end = 10_000;
        let end = 10_000 + STALE_AFTER_SECS;
        // Within the period, and within the slack after it (whatever the past-due grace): its
        // plan.
        assert_eq!(entitled_plan_id(Some(&active), "free", 9_000, 0), "pro");
        assert_eq!(entitled_plan_id(Some(&active), "free", end, 0), "pro");
        // Past the slack with no renewal read: free until read again.
        assert_eq!(
            entitled_plan_id(Some(&active), "free", end + 1, 100),
            "free"
        );
        assert!(is_stale(&active, 10_101, 100));
        assert!(!due_for_reread(&active, 5_000, 3_600));
        assert!(due_for_reread(&active, 7_000, 3_600));
        assert!(due_for_reread(&active, 20_000, 3_600));
        let canceled = sample_state("s", SubscriptionStatus::Canceled, 1);
        assert!(!due_for_reread(&canceled, 20_000, 3_600));
    }

    #[test]
    fn a_paid_subscription_is_kept_before_an_unpaid_one_then_the_first_made() {
        use SubscriptionStatus as S;
        assert!(keeps_first(
            (S::Active, Some(5), "sub_b"),
            (S::Incomplete, Some(1), "sub_a")
        ));
        assert!(!keeps_first(
            (S::PastDue, Some(1), "sub_a"),
            (S::Active, Some(5), "sub_b")
        ));
        assert!(keeps_first(
            (S::Active, Some(1), "sub_b"),
            (S::Active, Some(5), "sub_a")
        ));
        assert!(keeps_first(
            (S::Active, Some(1), "sub_a"),
            (S::Active, Some(1), "sub_b")
        ));
        // Whichever side it is asked from, the same one is kept.
        let (x, y) = (
            (S::Trialing, Some(3), "sub_x"),
            (S::Active, Some(2), "sub_y"),
        );
        assert_ne!(keeps_first(x, y), keeps_first(y, x));
    }

    fn state(id: &str, status: SubscriptionStatus, observed: i64) -> SubscriptionState {
        sample_state(id, status, observed)
    }

    #[test]
    fn active_and_trialing_give_the_plan_past_due_only_within_the_grace_and_the_rest_free() {
        let active = state("sub_1", SubscriptionStatus::Active, 1);
        assert_eq!(entitled_plan_id(Some(&active), "free", 5_000, 100), "pro");
        let past_due = state("sub_1", SubscriptionStatus::PastDue, 1);
        assert_eq!(entitled_plan_id(Some(&past_due), "free", 1_050, 100), "pro");
        assert_eq!(
            entitled_plan_id(Some(&past_due), "free", 1_101, 100),
            "free"
        );
        for status in [
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Incomplete,
        ] {
            assert_eq!(
                entitled_plan_id(Some(&state("s", status, 1)), "free", 0, 100),
                "free"
            );
        }
        assert_eq!(entitled_plan_id(None, "free", 0, 100), "free");
    }

    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let newer = state("sub_1", SubscriptionStatus::Canceled, 20);
        let older = state("sub_1", SubscriptionStatus::Active, 10);
        assert!(!is_newer(&newer, &older));
        assert!(is_newer(&older, &newer));
        let fresh = state("sub_2", SubscriptionStatus::Active, 5);
        assert!(
            is_newer(&newer, &fresh),
            "a new live subscription replaces a canceled one"
        );
        assert!(
            !is_newer(&fresh, &newer),
            "a canceled other one does not replace a live one"
        );
    }

    #[test]
    fn a_read_keeps_when_it_first_went_past_due_and_finds_its_plan_by_price() {
        let plans = vec![crate::domain::plans::sample_plan(
            "starter",
            10,
            Some("price_starter"),
            None,
        )];
        let read = StripeRead {
            subscription_id: "sub_1",
            customer_id: "cus_1",
            status: SubscriptionStatus::PastDue,
            price_id: "price_starter",
            current_period_end: 500,
            cancel_at_period_end: false,
        };
        let first = state_from_read(&read, &plans, None, 2_000_000);
        assert_eq!(first.past_due_since, Some(2_000));
        assert_eq!(first.plan_id, "starter");
        let later = state_from_read(&read, &plans, Some(&first), 9_000_000);
        assert_eq!(later.past_due_since, Some(2_000));
        let unknown = StripeRead {
            price_id: "price_other",
            ..read
        };
        assert_eq!(state_from_read(&unknown, &plans, None, 1).plan_id, "");
    }
}
