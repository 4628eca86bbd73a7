//! Plans and subscriptions on the wire: customers, saved cards, subscriptions, Checkout and the
//! customer portal, and an account's payments.

use serde::Serialize;

use super::*;

/// The account's Stripe customer.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    #[cfg_attr(feature = "openapi", schema(example = "cus_Q1"))]
    pub customer_id: String,
}

/// A SetupIntent for the page to confirm with a card (Stripe.js `confirmCardSetup`).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SetupIntentCreated {
    #[cfg_attr(feature = "openapi", schema(example = "seti_1Q"))]
    pub setup_intent_id: String,
    #[cfg_attr(feature = "openapi", schema(example = "seti_1Q_secret_abc"))]
    pub client_secret: String,
    pub customer_id: String,
}

/// A plan as clients see it (`active` only in the developer's view).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    #[cfg_attr(feature = "openapi", schema(example = "pro"))]
    pub id: String,
    pub name: String,
    pub description: String,
    /// Higher ranks are higher plans (upgrades go up).
    pub rank: i32,
    #[cfg_attr(feature = "openapi", schema(value_type = PlanKind))]
    pub kind: &'static str,
    /// Allowance per period, by metric.
    pub limits: BTreeMap<String, i64>,
    pub included_credits: Major,
    /// The price of a tier or recurring plan; `null` when unpriced or free.
    pub amount: Option<Major>,
    /// Credits per unit beyond the allowance, by metric.
    pub overage_prices: BTreeMap<String, Major>,
    pub currency: String,
    /// The Stripe price of a recurring plan.
    pub price_id: Option<String>,
    /// Stripe meter event names, by metric.
    pub meter_events: BTreeMap<String, String>,
    /// A period's included credits expire at its end (otherwise they roll over).
    pub included_credits_expire: bool,
    /// Rolling over: at most this much of earlier periods' included credits is kept.
    pub rollover_cap: Option<Major>,
    /// Free days before the first payment of a recurring plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A new subscription: incomplete until its first payment is confirmed (with a saved card
/// Stripe charges it at once).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionCreated {
    pub subscription_id: String,
    /// The first invoice's PaymentIntent (or a pending SetupIntent) to confirm; `null` when
    /// nothing is left to confirm.
    pub client_secret: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = SubscriptionStatus))]
    pub status: &'static str,
    pub plan_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_key: Option<String>,
}

/// The account's plan now and the subscription it follows.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MySubscription {
    /// The plan the account is entitled to now.
    pub plan: PlanView,
    pub plan_id: String,
    /// The subscription's status, or `none`.
    #[cfg_attr(feature = "openapi", schema(example = "active"))]
    pub status: &'static str,
    pub subscription_id: Option<String>,
    /// The plan subscribed to (a held downgrade shows the next plan here).
    pub subscribed_plan_id: Option<String>,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    pub limits: BTreeMap<String, i64>,
}

/// A payment of the account: a credit or tier purchase, or a subscription invoice.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AccountPaymentLine {
    pub id: String,
    /// `credit_purchase`, `tier_purchase` or `subscription_invoice`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(example = "credit_purchase"))]
    pub kind: &'static str,
    pub plan_id: Option<String>,
    pub credit_package_id: Option<String>,
    pub subscription_id: Option<String>,
    /// `null` for an invoice in a currency Coffer does not know.
    pub amount: Option<Major>,
    pub currency: String,
    pub status: String,
    pub description: Option<String>,
    pub created_at: String,
}

/// A subscription after a cancel or resume.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionCanceled {
    pub subscription_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = SubscriptionStatus))]
    pub status: &'static str,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<String>,
}

/// A plan change.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionUpdated {
    pub subscription_id: String,
    pub plan_id: String,
    /// `upgrade` or `downgrade`.
    pub change: &'static str,
    /// `now` (an upgrade whose difference is paid), `when_paid` (an upgrade whose difference
    /// is invoiced but not paid yet: the current plan's limits stay until it is; confirm it
    /// with `clientSecret`) or `period_end` (a downgrade keeps the paid plan's limits, with no
    /// proration credit).
    pub effective: &'static str,
    #[cfg_attr(feature = "openapi", schema(value_type = SubscriptionStatus))]
    pub status: &'static str,
    pub current_period_end: Option<String>,
    /// With `when_paid`: the client secret of the difference's payment, for Stripe.js to
    /// confirm (an authentication, or another card).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// A Checkout session to send the user to.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutCreated {
    pub id: String,
    pub url: String,
}

/// The gateway's Checkout answer (its own field name).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayCheckoutCreated {
    pub checkout_url: String,
    pub id: String,
}

/// A Stripe-hosted page (the customer portal).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortalCreated {
    pub url: String,
}

impl PlanView {
    pub fn of(plan: &Plan, currency: &Currency) -> Self {
        Self {
            id: plan.id.clone(),
            name: plan.name.clone(),
            description: plan.description.clone(),
            rank: plan.rank,
            kind: plan.kind().as_str(),
            limits: plan.limits.clone(),
            included_credits: Major::of(currency, plan.included_credits),
            amount: plan.amount.map(|amount| Major::of(currency, amount)),
            overage_prices: plan
                .overage_prices
                .iter()
                .map(|(metric, price)| (metric.clone(), Major::of(currency, *price)))
                .collect(),
            currency: currency.as_str().to_owned(),
            price_id: plan.price_id.clone(),
            meter_events: plan.meter_events.clone(),
            included_credits_expire: plan.included_credits_expire,
            rollover_cap: plan.rollover_cap.map(|cap| Major::of(currency, cap)),
            trial_days: plan.trial_days,
            active: None,
        }
    }

    /// The developer's view: with whether it is offered.
    pub fn with_active(mut self, active: bool) -> Self {
        self.active = Some(active);
        self
    }
}
