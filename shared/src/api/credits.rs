//! Credits on the wire: packages, balances, payment history, spends and purchases.

use serde::Serialize;

use super::*;

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
#[serde(rename_all = "camelCase")]
pub struct BalanceView {
    /// What can be spent now: live credits less any debt, held credits not counted.
    pub balance: Major,
    #[cfg_attr(feature = "openapi", schema(example = "usd"))]
    pub currency: String,
    /// The live buckets, in the order a spend takes them.
    pub buckets: Vec<BucketView>,
    /// When the soonest live bucket expires (RFC 3339, UTC); absent when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "2026-12-31T00:00:00Z"))]
    pub next_expiry: Option<String>,
    /// Credits set aside by open reservations.
    pub held: Major,
}

/// Credits of one origin, as a user sees them.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BucketView {
    pub amount: Major,
    /// `paid` (bought) or `promotional` (given).
    #[cfg_attr(feature = "openapi", schema(example = "promotional"))]
    pub kind: &'static str,
    /// RFC 3339, UTC; absent when it never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Higher is spent first.
    pub priority: i32,
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

/// A grant of promotional credits, and what is left of it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    /// The grant's id: adjust or void it with this.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "grant:5f1c0e2a9b7d4c3e8a6f1b2c3d4e5f60")
    )]
    pub grant_id: String,
    /// The ledger entry this answer is about (the grant's, an adjustment's or the voiding's).
    pub entry_id: String,
    /// What the grant gave first.
    pub amount: Major,
    /// What is left of it now (0 once spent, expired or voided).
    pub remaining: Major,
    #[cfg_attr(feature = "openapi", schema(example = "promotional"))]
    pub kind: &'static str,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub reason: String,
    /// The account's balance after it.
    pub balance: Major,
    pub currency: String,
}

/// An account's auto-recharge: its settings and where it stands.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RechargeView {
    /// On, and not turned off since (by the user, the developer, the bounds or failures).
    pub enabled: bool,
    pub threshold: Option<Major>,
    pub amount: Option<Major>,
    pub setup_intent_id: Option<String>,
    /// A recharge started and not settled yet.
    pub in_flight: bool,
    /// Stripe asks the user to authenticate the recharge in flight.
    pub awaiting_authentication: bool,
    pub failures_in_a_row: u32,
    /// Who or what turned it off: `user`, `developer`, `bounds`, `failures`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "failures"))]
    pub disabled_by: Option<&'static str>,
    /// The credit package one recharge buys (`null`: `amount` at the project's rate).
    pub credit_package_id: Option<String>,
    /// What the signed-in user needs to authenticate the recharge in flight with Stripe.js
    /// (`stripe.confirmCardPayment(clientSecret, {payment_method: paymentMethodId})`). Only on
    /// the user's own route, and only while `awaitingAuthentication`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<RechargeAuthentication>,
    /// The last recharge that ended.
    pub last_recharge: Option<LastRecharge>,
}

/// A recharge waiting for its user to authenticate.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RechargeAuthentication {
    pub recharge_id: String,
    pub payment_intent_id: String,
    pub client_secret: String,
    pub payment_method_id: Option<String>,
    pub amount: Major,
}

/// How the last recharge ended.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LastRecharge {
    pub recharge_id: String,
    pub amount: Major,
    pub payment_intent_id: Option<String>,
    /// `succeeded`, `failed` or `canceled` (turned off before it was charged).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "failed"))]
    pub status: &'static str,
    /// Stripe's reason, when it failed.
    pub reason: Option<String>,
}

/// An account's own low-balance alert.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// Below this balance `credits.low` is said (over the project's threshold); `null`: the
    /// project's.
    pub low_threshold: Option<Major>,
    /// Whether `credits.low` can be said now (it is again after `credits.recovered`).
    pub armed: bool,
}

/// A reservation: credits set aside for work whose cost is known afterwards.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReservationView {
    #[cfg_attr(
        feature = "openapi",
        schema(example = "h_5f1c0e2a9b7d4c3e8a6f1b2c3d4e5f60")
    )]
    pub reservation_id: String,
    /// What was held.
    pub amount: Major,
    /// What the capture spent (the rest went back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<Major>,
    /// `held`, `captured`, `released` or `expired`.
    #[cfg_attr(feature = "openapi", schema(example = "held"))]
    pub status: &'static str,
    /// When it returns by itself unless captured or released (RFC 3339, UTC).
    pub expires_at: String,
    /// The account's balance after this step.
    pub balance: Major,
    pub currency: String,
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
        let currency = &balance.currency;
        Self {
            balance: Major::of(currency, balance.balance),
            currency: currency.as_str().to_owned(),
            buckets: balance
                .buckets
                .iter()
                .map(|b| BucketView {
                    amount: Major::of(currency, b.left),
                    kind: match b.kind {
                        BucketKind::Paid => "paid",
                        BucketKind::Promotional => "promotional",
                    },
                    expires_at: b.expires_at.map(|at| rfc3339(at.saturating_mul(1000))),
                    priority: b.priority,
                })
                .collect(),
            next_expiry: balance
                .next_expiry
                .map(|at| rfc3339(at.saturating_mul(1000))),
            held: Major::of(currency, balance.held),
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
                description: grant.words(|minor| grant.currency.format_major(minor)),
                kind: Some(grant.kind.as_str()),
            },
        }
    }
}
