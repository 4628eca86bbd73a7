//! Plans: what each gives (limits, included credits, rank), how a developer or operator changes
//! one, which plan an account is entitled to now, and whether a change is an upgrade. Pure
//! rules, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::money::Currency;
use super::packages::CreditPackage;
use super::subscriptions::{entitled_plan_id, SubscriptionState};

/// A plan of a project in one mode: the free plan everyone has, a tier bought once (`amount`),
/// or a recurring Stripe price (`price_id`, this mode's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// The recurring Stripe price (or plan) id in this mode.
    #[serde(default)]
    pub price_id: Option<String>,
    /// The one-off price of a tier, in minor units of the deployment's currency.
    #[serde(default)]
    pub amount: Option<i64>,
    /// Credits (minor units) one unit of a metric costs beyond the allowance; a metric not
    /// listed allows no overage.
    #[serde(default)]
    pub overage_prices: BTreeMap<String, i64>,
    /// Metrics reported to Stripe as billing meter events, each with its meter's event name
    /// (the plan's price is metered on that meter).
    #[serde(default)]
    pub meter_events: BTreeMap<String, String>,
    /// The included credits of a period expire at its end; otherwise they roll over.
    #[serde(default)]
    pub included_credits_expire: bool,
    /// When they roll over: at most this much (minor units) of earlier periods' included credits
    /// is kept when a new period's come in; the rest expires then. `None`: all of it.
    #[serde(default)]
    pub rollover_cap: Option<i64>,
    /// A recurring plan's free days before its first payment (collected later, with the card
    /// saved by a SetupIntent); `None`: paid from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_days: Option<u32>,
}

impl Plan {
    /// What kind of purchase the plan is.
    pub fn kind(&self) -> PlanKind {
        if self.free {
            PlanKind::Free
        } else if self.price_id.is_some() {
            PlanKind::Recurring
        } else if self.amount.is_some() {
            PlanKind::Tier
        } else {
            PlanKind::Unpriced
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    Free,
    /// Bought once with a PaymentIntent.
    Tier,
    /// Subscribed to with a Stripe price.
    Recurring,
    /// Not yet linked to a price: cannot be bought.
    Unpriced,
}

impl PlanKind {
    pub const ALL: [Self; 4] = [Self::Free, Self::Tier, Self::Recurring, Self::Unpriced];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Tier => "tier",
            Self::Recurring => "recurring",
            Self::Unpriced => "unpriced",
        }
    }
}

/// A plan id: 1–64 lowercase letters, digits, `-` or `_`.
pub fn valid_plan_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A Stripe price or plan id as Coffer accepts it: `price_…` or `plan_…`, or a legacy plan id of
/// letters, digits, `-` and `_`.
pub fn valid_price_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A Stripe meter's event name as Coffer accepts it.
pub fn valid_meter_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The free plan among `plans`, or a built-in one without limits when the project has none.
pub fn free_plan(plans: &[Plan]) -> Plan {
    plans
        .iter()
        .find(|p| p.free && p.active)
        .cloned()
        .unwrap_or_else(|| Plan {
            id: "free".into(),
            name: "Free".into(),
            description: String::new(),
            rank: 0,
            limits: BTreeMap::new(),
            included_credits: 0,
            free: true,
            active: true,
            price_id: None,
            amount: None,
            overage_prices: BTreeMap::new(),
            meter_events: BTreeMap::new(),
            included_credits_expire: false,
            rollover_cap: None,
            trial_days: None,
        })
}

/// The plan linked to a Stripe price (or legacy plan) id.
pub fn plan_for_price<'a>(plans: &'a [Plan], price_id: &str) -> Option<&'a Plan> {
    plans
        .iter()
        .find(|p| p.price_id.as_deref() == Some(price_id))
}

/// The plan whose limits an account has now: the best (highest rank) of its subscription's
/// entitlement (a downgraded subscription keeps the higher plan to the end of the paid
/// period), the tier it bought, and the free plan.
pub fn entitled_plan(
    plans: &[Plan],
    subscription: Option<&SubscriptionState>,
    tier: Option<&str>,
    now_secs: i64,
    past_due_grace_secs: i64,
) -> Plan {
    let free = free_plan(plans);
    let find = |id: &str| plans.iter().find(|p| p.id == id).cloned();
    let mut candidates = vec![free.clone()];
    if let Some(id) = tier.and_then(find) {
        candidates.push(id);
    }
    let subscribed = entitled_plan_id(subscription, &free.id, now_secs, past_due_grace_secs);
    if let Some(plan) = find(subscribed) {
        candidates.push(plan);
    }
    if let Some(subscription) = subscription {
        let held = subscription
            .held_plan_id
            .as_deref()
            .filter(|_| subscription.holds_plan_at(now_secs))
            .filter(|_| subscribed != free.id);
        if let Some(plan) = held.and_then(find) {
            candidates.push(plan);
        }
    }
    candidates
        .into_iter()
        .max_by_key(|p| p.rank)
        .unwrap_or(free)
}

/// A developer's or operator's change to a plan: every field optional; a new plan needs a name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub rank: Option<i32>,
    pub limits: Option<BTreeMap<String, i64>>,
    pub included_credits: Option<i64>,
    pub free: Option<bool>,
    pub active: Option<bool>,
    /// `null` unlinks.
    #[serde(default, with = "double_option")]
    pub price_id: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub amount: Option<Option<i64>>,
    /// Credits (minor units) per unit beyond the allowance, by metric.
    pub overage_prices: Option<BTreeMap<String, i64>>,
    /// Stripe meter event names, by metric.
    pub meter_events: Option<BTreeMap<String, String>>,
    pub included_credits_expire: Option<bool>,
    /// `null` removes the cap.
    #[serde(default, with = "double_option")]
    pub rollover_cap: Option<Option<i64>>,
    /// `null`: no trial.
    #[serde(default, with = "double_option")]
    pub trial_days: Option<Option<u32>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// The largest amount, limit or credit figure a plan may hold.
const MAX_PLAN_FIGURE: i64 = 100_000_000_000;

/// The plan after `update`, or why it is refused.
pub fn apply_plan_update(
    id: &str,
    existing: Option<Plan>,
    update: PlanUpdate,
) -> Result<Plan, String> {
    if !valid_plan_id(id) {
        return Err("plan id must be 1 to 64 lowercase letters, digits, '-' or '_'.".into());
    }
    let mut plan = match existing {
        Some(plan) => plan,
        None => Plan {
            id: id.to_owned(),
            name: update.name.clone().ok_or("a new plan needs a name.")?,
            description: String::new(),
            rank: 0,
            limits: BTreeMap::new(),
            included_credits: 0,
            free: false,
            active: true,
            price_id: None,
            amount: None,
            overage_prices: BTreeMap::new(),
            meter_events: BTreeMap::new(),
            included_credits_expire: false,
            rollover_cap: None,
            trial_days: None,
        },
    };
    if let Some(name) = update.name {
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err("name must be 1 to 100 characters.".into());
        }
        plan.name = name;
    }
    if let Some(description) = update.description {
        if description.chars().count() > 500 {
            return Err("description must be at most 500 characters.".into());
        }
        plan.description = description;
    }
    if let Some(rank) = update.rank {
        if !(0..=1000).contains(&rank) {
            return Err("rank must be from 0 to 1000.".into());
        }
        plan.rank = rank;
    }
    if let Some(limits) = update.limits {
        let valid = limits.len() <= 20
            && limits.iter().all(|(metric, limit)| {
                valid_plan_id(metric) && (0..=MAX_PLAN_FIGURE).contains(limit)
            });
        if !valid {
            return Err("limits must map up to 20 metric names to whole numbers from 0.".into());
        }
        plan.limits = limits;
    }
    if let Some(prices) = update.overage_prices {
        let valid = prices.len() <= 20
            && prices.iter().all(|(metric, price)| {
                valid_plan_id(metric) && (1..=MAX_PLAN_FIGURE).contains(price)
            });
        if !valid {
            return Err("overagePrices must map up to 20 metric names to prices from 1.".into());
        }
        plan.overage_prices = prices;
    }
    if let Some(meters) = update.meter_events {
        let valid = meters.len() <= 20
            && meters
                .iter()
                .all(|(metric, event)| valid_plan_id(metric) && valid_meter_event_name(event));
        if !valid {
            return Err(
                "meterEvents must map up to 20 metric names to meter event names (1-100 letters, digits, _ - . :)."
                    .into(),
            );
        }
        plan.meter_events = meters;
    }
    if let Some(credits) = update.included_credits {
        if !(0..=MAX_PLAN_FIGURE).contains(&credits) {
            return Err("includedCredits must be a whole number from 0.".into());
        }
        plan.included_credits = credits;
    }
    if let Some(expire) = update.included_credits_expire {
        plan.included_credits_expire = expire;
    }
    if let Some(cap) = update.rollover_cap {
        if cap.is_some_and(|c| !(0..=MAX_PLAN_FIGURE).contains(&c)) {
            return Err("rolloverCap must be a whole number from 0, or null.".into());
        }
        plan.rollover_cap = cap;
    }
    if let Some(days) = update.trial_days {
        if days.is_some_and(|d| !(1..=730).contains(&d)) {
            return Err("trialDays must be from 1 to 730, or null.".into());
        }
        plan.trial_days = days;
    }
    if let Some(free) = update.free {
        plan.free = free;
    }
    if let Some(active) = update.active {
        plan.active = active;
    }
    if let Some(price) = update.price_id {
        if price.as_deref().is_some_and(|p| !valid_price_id(p)) {
            return Err("priceId is not a Stripe price or plan id.".into());
        }
        plan.price_id = price;
    }
    if let Some(amount) = update.amount {
        if amount.is_some_and(|a| !(1..=MAX_PLAN_FIGURE).contains(&a)) {
            return Err("amount must be a whole number of minor units from 1.".into());
        }
        plan.amount = amount;
    }
    if plan.free && (plan.price_id.is_some() || plan.amount.is_some()) {
        return Err("the free plan has no price.".into());
    }
    if plan.price_id.is_some() && plan.amount.is_some() {
        return Err("a plan is either recurring (priceId) or a tier (amount), not both.".into());
    }
    if let Some(metric) = doubly_billed_metric(&plan) {
        return Err(format!(
            "{metric} is both paid in credits (overagePrices) and sent to a Stripe meter (meterEvents): it would be billed twice; keep one."
        ));
    }
    Ok(plan)
}

/// Plans in the order they are shown: by rank, then id.
pub fn sort_by_rank(plans: &mut [Plan]) {
    plans.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.id.cmp(&b.id)));
}

/// The price in credits (minor units) of one unit of `metric` beyond the plan's allowance.
/// A metric a Stripe meter bills is never also paid in credits (a plan stored with both, from
/// before such plans were refused, bills the meter only).
pub fn overage_price(plan: &Plan, metric: &str) -> Option<i64> {
    plan.overage_prices
        .get(metric)
        .copied()
        .filter(|_| !plan.meter_events.contains_key(metric))
}

/// The purchase id of a tier (`tier:<plan>`), as its package and payment name it.
pub fn tier_purchase_id(plan_id: &str) -> String {
    format!("tier:{plan_id}")
}

/// A tier sold as a one-off package: its price (in the deployment's currency) and its included
/// credits, as the plan stores them.
pub fn tier_package(plan: &Plan, currency: &Currency) -> CreditPackage {
    CreditPackage {
        id: tier_purchase_id(&plan.id),
        name: plan.name.clone(),
        description: plan.description.clone(),
        amount: plan.amount.unwrap_or(0),
        currency: currency.clone(),
        credits: plan.included_credits,
        active: plan.active,
    }
}

/// Whether an account on `current` may buy the tier `tier`: only an active tier, and only one
/// ranked above what it has (a tier is never bought twice nor bought below a plan it holds).
pub fn tier_purchase_allowed(current: &Plan, tier: &Plan) -> bool {
    tier.active && tier.kind() == PlanKind::Tier && current.rank < tier.rank
}

/// The tier a tier purchase (`tier:<plan>`) is for.
pub fn tier_of_purchase(package_id: &str) -> Option<&str> {
    package_id
        .strip_prefix("tier:")
        .filter(|plan| !plan.is_empty())
}

/// Whether a tier purchase still entitles its account to its tier: it was paid (credited), it
/// was not refunded in full, and no dispute holds its funds. A partial refund keeps the tier; a
/// dispute whose funds were reinstated gives it back.
pub fn purchase_holds_tier(payment: &crate::domain::ledger::PaymentRecord) -> bool {
    let crate::domain::money::Money(refunded) = crate::domain::ledger::effective_refunded(
        &payment.facts,
        crate::domain::money::Money(payment.amount),
    );
    payment.credited
        && tier_of_purchase(&payment.package_id).is_some()
        && (payment.amount <= 0 || refunded < payment.amount)
        && !payment
            .facts
            .dispute
            .as_ref()
            .is_some_and(crate::domain::ledger::DisputeFacts::holds_funds)
}

/// The tier an account has: the highest-ranked tier plan among the purchases it still holds
/// (`held`: intent id → plan id). Whatever order the purchases' events came in, the answer is
/// the same; a plan no longer known counts for nothing.
pub fn held_tier<'a>(held: &BTreeMap<String, String>, plans: &'a [Plan]) -> Option<&'a Plan> {
    held.values()
        .filter_map(|id| plans.iter().find(|p| p.id == *id))
        .max_by_key(|p| (p.rank, p.id.clone()))
}

/// One line of an invoice as Stripe billed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BilledLine {
    /// The price (or legacy plan) id the line bills.
    pub price_id: Option<String>,
    /// A proration (the difference of a plan change), not a period of a plan.
    pub proration: bool,
    pub amount: i64,
}

/// The plan an invoice billed: the plan linked to the price of its first line that bills a
/// period (not a proration). Included credits are this plan's, whatever the subscription has
/// become since: an upgrade made after the invoice never raises what the invoice grants.
pub fn billed_plan<'a>(lines: &[BilledLine], plans: &'a [Plan]) -> Option<&'a Plan> {
    lines
        .iter()
        .filter(|line| !line.proration && line.amount >= 0)
        .find_map(|line| {
            let price = line.price_id.as_deref()?;
            plans.iter().find(|p| p.price_id.as_deref() == Some(price))
        })
}

/// A metric the plan would bill twice: its usage beyond the allowance paid in credits and also
/// sent to a Stripe meter that bills it on the invoice. Such a plan is refused.
pub fn doubly_billed_metric(plan: &Plan) -> Option<&str> {
    plan.overage_prices
        .keys()
        .find(|metric| plan.meter_events.contains_key(*metric))
        .map(String::as_str)
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

/// How a plan change is billed at Stripe, given the plan an earlier downgrade still holds (paid
/// to the end of the period; `None` when no hold runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeBilling {
    /// Up beyond what was paid: the difference is invoiced at once, and the change applies
    /// once it is paid.
    InvoiceDifference,
    /// Up again within a plan already paid for this period: the price changes with no
    /// proration (nothing is charged twice). The hold ends when its plan is the target, and
    /// stays for a higher held plan.
    WithinPaid { keep_hold: bool },
    /// Down: the price changes with no proration credit, and `hold` (the higher of the plan
    /// left and any plan already held) keeps its limits to the period's end.
    Down { hold: String },
}

pub fn change_billing(current: &Plan, target: &Plan, held: Option<&Plan>) -> ChangeBilling {
    if target.rank > current.rank {
        return match held.filter(|held| held.rank >= target.rank) {
            Some(held) => ChangeBilling::WithinPaid {
                keep_hold: held.id != target.id,
            },
            None => ChangeBilling::InvoiceDifference,
        };
    }
    let hold = match held {
        Some(held) if held.rank > current.rank => held,
        _ => current,
    };
    ChangeBilling::Down {
        hold: hold.id.clone(),
    }
}

/// A plan for tests: `id` at `rank`, 1,000 requests, with a price or an amount if given.
#[cfg(test)]
pub(crate) fn sample_plan(id: &str, rank: i32, price: Option<&str>, amount: Option<i64>) -> Plan {
    Plan {
        id: id.into(),
        name: id.into(),
        description: String::new(),
        rank,
        limits: BTreeMap::from([("requests".into(), 1000)]),
        included_credits: 0,
        free: rank == 0,
        active: true,
        price_id: price.map(str::to_owned),
        amount,
        overage_prices: BTreeMap::new(),
        meter_events: BTreeMap::new(),
        included_credits_expire: false,
        rollover_cap: None,
        trial_days: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::subscriptions::{sample_state as state, SubscriptionStatus};

    fn plan(id: &str, rank: i32) -> Plan {
        sample_plan(id, rank, None, None)
    }

    #[test]
    fn a_plan_change_is_invoiced_only_beyond_what_the_period_already_paid() {
        let (free, basic, pro, max) = (
            plan("free", 0),
            plan("basic", 10),
            plan("pro", 20),
            plan("max", 30),
        );
        // Up with nothing held: the difference is invoiced.
        assert_eq!(
            change_billing(&basic, &pro, None),
            ChangeBilling::InvoiceDifference
        );
        // Down: held to the period's end, the higher of the plan left and the one held.
        assert_eq!(
            change_billing(&pro, &basic, None),
            ChangeBilling::Down { hold: "pro".into() }
        );
        assert_eq!(
            change_billing(&basic, &free, Some(&pro)),
            ChangeBilling::Down { hold: "pro".into() }
        );
        // Back up to the plan held, or below it: already paid, nothing invoiced.
        assert_eq!(
            change_billing(&basic, &pro, Some(&pro)),
            ChangeBilling::WithinPaid { keep_hold: false }
        );
        assert_eq!(
            change_billing(&free, &basic, Some(&pro)),
            ChangeBilling::WithinPaid { keep_hold: true }
        );
        // Above the plan held: the difference is invoiced.
        assert_eq!(
            change_billing(&basic, &max, Some(&pro)),
            ChangeBilling::InvoiceDifference
        );
    }

    #[test]
    fn a_tier_package_is_the_plan_as_stored() {
        let tier = sample_plan("pro", 20, None, Some(1500));
        let package = tier_package(&tier, &Currency::parse("usd").expect("usd"));
        assert_eq!(tier_of_purchase(&package.id), Some("pro"));
        assert_eq!(
            (package.amount, package.credits),
            (1500, tier.included_credits)
        );
    }

    proptest::proptest! {
        /// Overage is priced per unit for a metric with a price, never for one a meter bills.
        #[test]
        fn overage_is_priced_only_where_no_meter_bills_it(price in 0i64..1_000_000, metered: bool) {
            let mut plan = sample_plan("p", 10, None, None);
            plan.overage_prices.insert("calls".into(), price);
            if metered {
                plan.meter_events.insert("calls".into(), "api_calls".into());
            }
            proptest::prop_assert_eq!(overage_price(&plan, "calls"), (!metered).then_some(price));
            proptest::prop_assert_eq!(overage_price(&plan, "other"), None);
        }

        /// A tier is sold only when active and ranked above the plan the account has: never
        /// twice, never below, whatever the ranks.
        #[test]
        fn a_tier_is_sold_only_above_what_the_account_has(
            current in 0i32..100, wanted in 0i32..100, active: bool,
        ) {
            let have = sample_plan("have", current, None, None);
            let mut tier = sample_plan("tier", wanted, None, Some(100));
            tier.active = active;
            proptest::prop_assert_eq!(
                tier_purchase_allowed(&have, &tier),
                active && current < wanted
            );
            let recurring = sample_plan("sub", wanted, Some("price_1"), None);
            proptest::prop_assert!(!tier_purchase_allowed(&have, &recurring));
        }
    }

    #[test]
    fn the_highest_tier_still_paid_for_holds_whatever_the_order() {
        let plans = vec![
            plan("free", 0),
            sample_plan("pro", 20, None, Some(1000)),
            sample_plan("enterprise", 40, None, Some(5000)),
        ];
        let held = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(i, p)| ((*i).to_owned(), (*p).to_owned()))
                .collect()
        };
        let tier = |pairs: &[(&str, &str)]| held_tier(&held(pairs), &plans).map(|p| p.id.clone());
        assert_eq!(
            tier(&[("pi_1", "pro"), ("pi_2", "enterprise")]),
            Some("enterprise".into())
        );
        assert_eq!(
            tier(&[("pi_2", "enterprise"), ("pi_1", "pro")]),
            Some("enterprise".into())
        );
        assert_eq!(tier(&[("pi_1", "pro")]), Some("pro".into()));
        assert_eq!(tier(&[("pi_1", "gone")]), None);
        assert_eq!(tier(&[]), None);
    }

    #[test]
    fn a_refund_in_full_or_a_lost_dispute_takes_the_tier_away() {
        use crate::domain::ledger::{DisputeFacts, PaymentRecord};
        use crate::domain::packages::CreditPackage;
        let package = CreditPackage {
            id: "tier:pro".into(),
            name: "Pro".into(),
            description: String::new(),
            amount: 1000,
            credits: 1000,
            currency: crate::domain::money::Currency::parse("usd").expect("usd"),
            active: true,
        };
        let user = crate::domain::records::UserId::parse("u").expect("user");
        let mut payment = PaymentRecord::pending("pi_1", user, &package, 0);
        assert!(!purchase_holds_tier(&payment), "not paid yet");
        payment.credited = true;
        assert!(purchase_holds_tier(&payment));
        payment.facts.refunded = 400;
        assert!(purchase_holds_tier(&payment), "a partial refund keeps it");
        payment.facts.refunded = 1000;
        assert!(!purchase_holds_tier(&payment), "a full refund takes it");
        payment.facts.refunded = 0;
        payment.facts.dispute = Some(DisputeFacts {
            id: "dp_1".into(),
            amount: 1000,
            withdrawn: true,
            reinstated: false,
        });
        assert!(
            !purchase_holds_tier(&payment),
            "funds withdrawn by a dispute"
        );
        if let Some(dispute) = payment.facts.dispute.as_mut() {
            dispute.reinstated = true;
        }
        assert!(purchase_holds_tier(&payment), "the dispute was won");
        payment.package_id = "starter".into();
        assert!(!purchase_holds_tier(&payment), "not a tier purchase");
    }

    #[test]
    fn an_invoice_grants_the_plan_it_billed_not_the_one_held_now() {
        let plans = vec![
            plan("free", 0),
            sample_plan("starter", 10, Some("price_starter"), None),
            sample_plan("max", 30, Some("price_max"), None),
        ];
        let line = |price: Option<&str>, proration: bool, amount: i64| BilledLine {
            price_id: price.map(str::to_owned),
            proration,
            amount,
        };
        let billed = |lines: &[BilledLine]| billed_plan(lines, &plans).map(|p| p.id.as_str());
        assert_eq!(
            billed(&[line(Some("price_starter"), false, 2900)]),
            Some("starter")
        );
        // A proration of max before the period of starter: still starter.
        assert_eq!(
            billed(&[
                line(Some("price_max"), true, 7000),
                line(Some("price_starter"), false, 2900)
            ]),
            Some("starter")
        );
        // Only prorations, or a price no plan links: no plan, no included credits.
        assert_eq!(billed(&[line(Some("price_max"), true, 7000)]), None);
        assert_eq!(billed(&[line(Some("price_other"), false, 100)]), None);
        assert_eq!(billed(&[line(None, false, 100)]), None);
        assert_eq!(billed(&[]), None);
    }

    #[test]
    fn a_metric_is_paid_in_credits_or_metered_never_both() {
        let with = |overage: &[&str], meters: &[&str]| PlanUpdate {
            overage_prices: Some(overage.iter().map(|m| ((*m).to_owned(), 5)).collect()),
            meter_events: Some(
                meters
                    .iter()
                    .map(|m| ((*m).to_owned(), format!("{m}_event")))
                    .collect(),
            ),
            name: Some("P".into()),
            rank: Some(10),
            ..PlanUpdate::default()
        };
        let ok = apply_plan_update("p", None, with(&["requests"], &["tokens"])).expect("apart");
        assert_eq!(doubly_billed_metric(&ok), None);
        let refused = apply_plan_update("p", None, with(&["requests"], &["requests"]));
        assert!(refused.is_err_and(|e| e.contains("requests")));
        // A partial update is checked on the plan it makes, not on its own fields.
        let meters_only = PlanUpdate {
            meter_events: Some(BTreeMap::from([(
                "requests".to_owned(),
                "req_event".to_owned(),
            )])),
            ..PlanUpdate::default()
        };
        assert!(apply_plan_update("p", Some(ok), meters_only).is_err());
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

    #[test]
    fn the_best_of_subscription_tier_and_free_applies_and_a_downgrade_holds_until_period_end() {
        let plans = vec![
            plan("free", 0),
            sample_plan("starter", 10, Some("price_starter"), None),
            sample_plan("pro", 20, None, Some(1000)),
            sample_plan("max", 30, Some("price_max"), None),
        ];
        let mut sub = state("sub_1", SubscriptionStatus::Active, 1);
        sub.plan_id = "starter".into();
        assert_eq!(entitled_plan(&plans, Some(&sub), None, 10, 0).id, "starter");
        assert_eq!(
            entitled_plan(&plans, Some(&sub), Some("pro"), 10, 0).id,
            "pro"
        );
        assert_eq!(entitled_plan(&plans, None, None, 10, 0).id, "free");
        sub.held_plan_id = Some("max".into());
        sub.held_until = Some(100);
        assert_eq!(entitled_plan(&plans, Some(&sub), None, 99, 0).id, "max");
        assert_eq!(
            entitled_plan(&plans, Some(&sub), None, 100, 0).id,
            "starter"
        );
        sub.status = SubscriptionStatus::Canceled;
        assert_eq!(
            entitled_plan(&plans, Some(&sub), None, 50, 0).id,
            "free",
            "a canceled subscription holds nothing"
        );
        assert_eq!(entitled_plan(&[], None, None, 0, 0).id, "free");
    }

    #[test]
    fn plan_updates_are_checked() {
        let new = apply_plan_update(
            "team",
            None,
            PlanUpdate {
                name: Some("Team".into()),
                price_id: Some(Some("price_team".into())),
                ..PlanUpdate::default()
            },
        )
        .unwrap();
        assert_eq!(new.kind(), PlanKind::Recurring);
        let both = PlanUpdate {
            amount: Some(Some(100)),
            ..PlanUpdate::default()
        };
        assert!(apply_plan_update("team", Some(new.clone()), both).is_err());
        let unlinked = PlanUpdate {
            price_id: Some(None),
            amount: Some(Some(100)),
            ..PlanUpdate::default()
        };
        assert_eq!(
            apply_plan_update("team", Some(new), unlinked)
                .unwrap()
                .kind(),
            PlanKind::Tier
        );
        assert!(apply_plan_update("team", None, PlanUpdate::default()).is_err());
        assert!(apply_plan_update("Bad Id", None, PlanUpdate::default()).is_err());
        let negative = PlanUpdate {
            name: Some("x".into()),
            limits: Some(BTreeMap::from([("requests".into(), -1)])),
            ..PlanUpdate::default()
        };
        assert!(apply_plan_update("x", None, negative).is_err());
    }
}
