//! Plans and the entitlements a subscription gives (groundwork for plans and subscriptions):
//! which plan's limits a user has now, whether a stored subscription state is newer than another,
//! and whether a plan change is an upgrade. Pure rules, no I/O.

use std::collections::BTreeMap;

/// A plan of a project: the free plan everyone has, a tier bought once, or a recurring price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Higher is more: upgrades go up, downgrades down.
    pub rank: i32,
    /// Usage limits per period, such as `requests → 25000`.
    pub limits: BTreeMap<String, i64>,
    /// Credits granted once per paid period (minor units).
    pub included_credits: i64,
    pub free: bool,
    pub active: bool,
}

/// A subscription's status as Stripe names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// A subscription that still counts as the user's one live subscription.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Incomplete | Self::Trialing | Self::Active | Self::PastDue | Self::Paused
        )
    }
}

/// A subscription as Coffer stored it after reading it from Stripe.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// it is past due within the grace period; the free plan otherwise.
pub fn entitled_plan_id<'a>(
    subscription: Option<&'a SubscriptionState>,
    free_plan_id: &'a str,
    now_secs: i64,
    past_due_grace_secs: i64,
) -> &'a str {
    let Some(subscription) = subscription else {
        return free_plan_id;
    };
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

/// What moving from one plan to another is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanChange {
    /// Takes effect now, with proration.
    Upgrade,
    /// Takes effect at the end of the period.
    Downgrade,
    /// The same plan: nothing to change (409).
    Same,
}

pub fn plan_change(current: &Plan, target: &Plan) -> PlanChange {
    if current.id == target.id {
        PlanChange::Same
    } else if target.rank > current.rank {
        PlanChange::Upgrade
    } else {
        PlanChange::Downgrade
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, status: SubscriptionStatus, observed: i64) -> SubscriptionState {
        SubscriptionState {
            subscription_id: id.into(),
            plan_id: "pro".into(),
            status,
            current_period_end: 0,
            cancel_at_period_end: false,
            past_due_since: Some(1_000),
            observed_at_ms: observed,
        }
    }

    fn plan(id: &str, rank: i32) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            rank,
            limits: BTreeMap::from([("requests".into(), 1000)]),
            included_credits: 0,
            free: rank == 0,
            active: true,
        }
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
    fn rank_says_upgrade_or_downgrade() {
        assert_eq!(
            plan_change(&plan("starter", 1), &plan("pro", 2)),
            PlanChange::Upgrade
        );
        assert_eq!(
            plan_change(&plan("pro", 2), &plan("starter", 1)),
            PlanChange::Downgrade
        );
        assert_eq!(
            plan_change(&plan("pro", 2), &plan("pro", 2)),
            PlanChange::Same
        );
    }
}
