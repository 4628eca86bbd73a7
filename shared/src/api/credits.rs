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
