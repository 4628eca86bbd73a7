//! The wire types: the data every route answers with, as the handlers build it. With the
//! `openapi` feature they also describe themselves (utoipa), and `openapi::document` builds the
//! OpenAPI document from them, so the document cannot drift from what the handlers send.
//!
//! Field names are the contract's (camelCase). Money is shown in major units of its currency
//! (`Major`); inside Coffer it is always integer minor units.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::money::Currency;
#[cfg(feature = "openapi")]
use crate::domain::{
    plans::PlanKind, records::PaymentStatus, scope::Mode, subscriptions::SubscriptionStatus,
};

/// The domain's closed sets of names (statuses, modes, kinds) as string enums, from their own
/// lists.
#[cfg(feature = "openapi")]
macro_rules! names_schema {
    ($($ty:ty => $doc:literal),* $(,)?) => {$(
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($doc))
                    .enum_values(Some(<$ty>::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    )*};
}

#[cfg(feature = "openapi")]
names_schema! {
    PaymentStatus => "A payment's status.",
    SubscriptionStatus => "A subscription's status at Stripe.",
    Mode => "Stripe's test or live mode.",
    PlanKind => "How a plan is sold.",
}

/// An amount in major units of its currency, as a JSON number (`1500` cents → `15.0`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Major(serde_json::Value);

impl Major {
    pub fn of(currency: &Currency, minor: i64) -> Self {
        Self(currency.to_major(minor))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Major {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "An amount in major units of its currency (minor units inside Coffer).",
            ))
            .examples([serde_json::json!(15.0)])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Major {}

/// A credit package as clients see it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreditPackageView {
    #[cfg_attr(feature = "openapi", schema(example = "standard"))]
    pub id: String,
    pub name: String,
    pub description: String,
    /// The price.
    pub amount: Major,
    /// The credits it adds.
    pub credit_amount: Major,
    #[cfg_attr(feature = "openapi", schema(example = "usd"))]
    pub currency: String,
    pub is_active: bool,
}

/// A balance: credits in major units of the currency.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BalanceView {
    pub balance: Major,
    #[cfg_attr(feature = "openapi", schema(example = "usd"))]
    pub currency: String,
}

/// One line of a user's history: a payment, or a grant (`kind: grant`).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryLine {
    /// The PaymentIntent id of a payment, the entry id of a grant.
    pub id: String,
    pub amount: Major,
    pub credit_amount: Major,
    pub currency: String,
    #[cfg_attr(feature = "openapi", schema(value_type = PaymentStatus))]
    pub status: &'static str,
    /// RFC 3339, UTC.
    #[cfg_attr(feature = "openapi", schema(example = "2026-12-02T07:00:00Z"))]
    pub created_at: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "grant"))]
    pub kind: Option<&'static str>,
}

/// A payment as its developer sees it: the history line and where it belongs.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeveloperPayment {
    #[serde(flatten)]
    pub line: HistoryLine,
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub user_id: String,
    /// Whether its credits were added.
    pub credited: bool,
}

/// What a spend leaves.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SpendResult {
    pub balance: Major,
    /// The ledger entry of the spend (the same for a replay of the same key).
    pub entry_id: String,
}

/// A PaymentIntent to confirm (or, with `setupIntentId`, confirmed by Coffer: see `status`).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentIntentCreated {
    #[cfg_attr(feature = "openapi", schema(example = "pi_3Q_secret_abc"))]
    pub client_secret: String,
    #[cfg_attr(feature = "openapi", schema(example = "pi_3Q"))]
    pub payment_intent_id: String,
    /// Stripe's status of the intent: `requires_payment_method` or `requires_confirmation`
    /// when the client confirms it; `succeeded`, `processing` or `requires_action` after
    /// Coffer confirmed a saved card.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "succeeded"))]
    pub status: Option<String>,
    /// With `paymentSheet`: the customer for Stripe's PaymentSheet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// With `paymentSheet`: the customer's ephemeral key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_key: Option<String>,
}

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

/// The answer to a usage: allowed (recorded, or checked with `dryRun`) and where the account
/// stands.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageAnswer {
    pub allowed: bool,
    pub used: i64,
    pub limit: i64,
    pub remaining: i64,
    pub resets_at: String,
    /// Credits taken for units beyond the allowance (overage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_with_credits: Option<Major>,
}

/// One metric of the account's usage in the current period.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MetricUsage {
    pub metric: String,
    pub used: i64,
    pub limit: i64,
    pub remaining: i64,
    pub resets_at: String,
}

/// The account's usage per metric in the current period.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageOverview {
    pub plan_id: String,
    pub metrics: Vec<MetricUsage>,
}

/// A project's configuration in one mode, keys masked.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ModeView {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub test_mode: bool,
    pub configured: bool,
    pub is_active: bool,
    /// The secret key masked: prefix and last four characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "sk_test_…wxyz"))]
    pub secret_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishable_key: Option<String>,
    pub webhook_secret_set: bool,
    /// The IAM principals allowed on `/internal/*` in this mode.
    pub allowed_principals: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A project and its status per mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    pub project_id: String,
    pub created_at: String,
    pub test: ModeView,
    pub live: ModeView,
}

/// What Stripe said of a key. A refused key is `valid: false` with the reason in words.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyValidation {
    pub valid: bool,
    /// `null` when the text is not a Stripe key at all.
    pub livemode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The webhook URLs to paste into the Stripe Dashboard, and the events to select.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookUrls {
    pub test: String,
    pub live: String,
    pub events: Vec<&'static str>,
}

/// A project's settings in one mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub allowed_origins: Vec<String>,
    pub past_due_grace_seconds: i64,
    /// Below this balance `credits.low` is published; `null`: never.
    pub credits_low_threshold: Option<Major>,
}

/// Credits sold, spent and outstanding.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreditTotals {
    pub sold: Major,
    pub spent: Major,
    pub outstanding: Major,
    pub currency: String,
}

/// A project's counters in one mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScopeStats {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    /// By currency code.
    pub revenue: BTreeMap<String, Major>,
    /// By currency code.
    pub refunds: BTreeMap<String, Major>,
    /// Count by payment status.
    pub payments: BTreeMap<String, i64>,
    pub credits: CreditTotals,
    pub active_subscriptions: i64,
}

/// A subscription as its developer sees it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionLine {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub subscription_id: String,
    pub account: String,
    pub plan_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = SubscriptionStatus))]
    pub status: &'static str,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    /// When Coffer last read it from Stripe (Unix milliseconds).
    pub observed_at: i64,
}

// The views of the domain's records.

use crate::domain::ledger::PaymentRecord as Payment;
use crate::domain::packages::CreditPackage;
use crate::domain::plans::Plan;
use crate::domain::projects::{Project, ProjectSettings};
use crate::domain::records::{rfc3339, Balance, HistoryItem};
use crate::domain::scope::Scope;
use crate::domain::stats::StatsDelta;
use crate::domain::subscriptions::SubscriptionState;

impl CreditPackageView {
    pub fn of(package: &CreditPackage) -> Self {
        let currency = &package.currency;
        Self {
            id: package.id.clone(),
            name: package.name.clone(),
            description: package.description.clone(),
            amount: Major::of(currency, package.amount),
            credit_amount: Major::of(currency, package.credits),
            currency: currency.as_str().to_owned(),
            is_active: package.active,
        }
    }
}

impl BalanceView {
    pub fn of(balance: &Balance) -> Self {
        Self {
            balance: Major::of(&balance.currency, balance.balance),
            currency: balance.currency.as_str().to_owned(),
        }
    }
}

impl HistoryLine {
    pub fn of_payment(payment: &Payment) -> Self {
        let currency = &payment.currency;
        Self {
            id: payment.intent_id.clone(),
            amount: Major::of(currency, payment.amount),
            credit_amount: Major::of(currency, payment.credits),
            currency: currency.as_str().to_owned(),
            status: payment.status.as_str(),
            created_at: rfc3339(payment.created_at_ms),
            description: payment.description.clone(),
            kind: None,
        }
    }

    pub fn of(item: &HistoryItem) -> Self {
        match item {
            HistoryItem::Payment(payment) => Self::of_payment(payment),
            HistoryItem::Grant(grant) => Self {
                id: grant.entry_id.clone(),
                amount: Major::of(&grant.currency, 0),
                credit_amount: Major::of(&grant.currency, grant.credits),
                currency: grant.currency.as_str().to_owned(),
                status: crate::domain::records::PaymentStatus::Succeeded.as_str(),
                created_at: rfc3339(grant.created_at_ms),
                description: format!("Grant: {}", grant.reason),
                kind: Some(crate::domain::ledger::EntryKind::Grant.as_str()),
            },
        }
    }
}

impl DeveloperPayment {
    pub fn of(scope: &Scope, payment: &Payment) -> Self {
        Self {
            line: HistoryLine::of_payment(payment),
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            user_id: payment.user_id.as_str().to_owned(),
            credited: payment.credited,
        }
    }
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
            active: None,
        }
    }

    /// The developer's view: with whether it is offered.
    pub fn with_active(mut self, active: bool) -> Self {
        self.active = Some(active);
        self
    }
}

impl ModeView {
    pub fn of(project: &Project, mode: crate::domain::scope::Mode) -> Self {
        let config = project.modes.get(&mode);
        Self {
            project_id: project.id.as_str().to_owned(),
            mode: mode.as_str(),
            test_mode: mode == crate::domain::scope::Mode::Test,
            configured: config.is_some(),
            is_active: config.is_some_and(|c| c.active),
            secret_key: config.map(|c| c.masked_key.clone()),
            publishable_key: config.map(|c| c.publishable_key.clone()),
            webhook_secret_set: config.is_some_and(|c| c.webhook_secret_set),
            allowed_principals: config
                .map(|c| c.allowed_principals.clone())
                .unwrap_or_default(),
            updated_at: config.map(|c| rfc3339(c.updated_at_ms)),
        }
    }
}

impl ProjectSummary {
    pub fn of(project: &Project) -> Self {
        Self {
            project_id: project.id.as_str().to_owned(),
            created_at: rfc3339(project.created_at_ms),
            test: ModeView::of(project, crate::domain::scope::Mode::Test),
            live: ModeView::of(project, crate::domain::scope::Mode::Live),
        }
    }
}

impl SettingsView {
    pub fn of(settings: &ProjectSettings, currency: &Currency) -> Self {
        Self {
            allowed_origins: settings.allowed_origins.clone(),
            past_due_grace_seconds: settings.past_due_grace_seconds,
            credits_low_threshold: settings
                .credits_low_threshold
                .map(|t| Major::of(currency, t)),
        }
    }
}

impl ScopeStats {
    /// A scope's counters; `currency` shows the credits.
    pub fn of(scope: &Scope, counters: &StatsDelta, currency: &Currency) -> Self {
        let count = |name: &str| counters.0.get(name).copied().unwrap_or(0);
        let payments = crate::domain::records::PaymentStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_owned(),
                    count(&format!("payments_{}", s.as_str())),
                )
            })
            .collect();
        let by_currency = |prefix: &str| {
            counters
                .0
                .iter()
                .filter_map(|(name, value)| {
                    let code = name.strip_prefix(prefix)?;
                    let currency = Currency::parse(code)?;
                    Some((code.to_owned(), Major::of(&currency, *value)))
                })
                .collect()
        };
        Self {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            revenue: by_currency("revenue_"),
            refunds: by_currency("refunds_"),
            payments,
            credits: CreditTotals {
                sold: Major::of(currency, count("credits_sold")),
                spent: Major::of(currency, count("credits_spent")),
                outstanding: Major::of(currency, count("credits_outstanding")),
                currency: currency.as_str().to_owned(),
            },
            // Not counted per scope yet: the subscriptions listing shows them.
            active_subscriptions: 0,
        }
    }
}

impl SubscriptionLine {
    pub fn of(scope: &Scope, account: &str, state: &SubscriptionState) -> Self {
        Self {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            subscription_id: state.subscription_id.clone(),
            account: account.to_owned(),
            plan_id: state.plan_id.clone(),
            status: state.status.as_str(),
            current_period_end: (state.current_period_end > 0)
                .then(|| rfc3339(state.current_period_end * 1000)),
            cancel_at_period_end: state.cancel_at_period_end,
            observed_at: state.observed_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn package_view_uses_major_units() {
        let package = CreditPackage {
            id: "small".into(),
            name: "Small".into(),
            description: String::new(),
            amount: 500,
            currency: Currency::usd(),
            credits: 500,
            active: true,
        };
        let json = serde_json::to_value(CreditPackageView::of(&package)).unwrap();
        assert_eq!(json["amount"], json!(5.0));
        assert_eq!(json["creditAmount"], json!(5.0));
        assert_eq!(json["isActive"], json!(true));
    }

    #[test]
    fn stats_show_credits_in_major_units_and_every_payment_status() {
        let mut counters = StatsDelta::default();
        counters.0.insert("credits_outstanding".into(), 900);
        counters.0.insert("revenue_usd".into(), 1500);
        counters.0.insert("revenue_nope1".into(), 7);
        let scope = Scope::new(
            crate::domain::scope::ProjectId::default_project(),
            crate::domain::scope::Mode::Test,
        );
        let shown =
            serde_json::to_value(ScopeStats::of(&scope, &counters, &Currency::usd())).unwrap();
        assert_eq!(shown["credits"]["outstanding"], json!(9.0));
        assert_eq!(shown["payments"]["succeeded"], json!(0));
        assert_eq!(shown["revenue"], json!({"usd": 15.0}));
        assert_eq!(shown["mode"], "test");
    }
}
