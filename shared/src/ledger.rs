//! The ledger's domain: payments, their statuses, balances and ledger entries, free of AWS and
//! Stripe types. Rules: credits move only through an immutable entry, and a balance is always
//! the sum of its entries.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::UserId;
use crate::money::Currency;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    Refunded,
    PartiallyRefunded,
    Disputed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Disputed => "disputed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            "refunded" => Self::Refunded,
            "partially_refunded" => Self::PartiallyRefunded,
            "disputed" => Self::Disputed,
            _ => return None,
        })
    }
}

/// One PaymentIntent as Coffer recorded it when it was created.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub intent_id: String,
    pub user_id: UserId,
    pub package_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub credits: i64,
    pub status: PaymentStatus,
    pub created_at_ms: i64,
    pub description: String,
}

impl Payment {
    /// The contract's payment-history JSON shape.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.intent_id,
            "amount": self.currency.to_major(self.amount),
            "creditAmount": self.currency.to_major(self.credits),
            "currency": self.currency.as_str(),
            "status": self.status.as_str(),
            "createdAt": rfc3339(self.created_at_ms),
            "description": self.description,
        })
    }
}

/// Promotional credits granted by an operator, shown in history beside payments.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub entry_id: String,
    pub credits: i64,
    pub currency: Currency,
    pub reason: String,
    pub created_at_ms: i64,
}

/// One line of a user's history: a payment or a grant.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryItem {
    Payment(Payment),
    Grant(Grant),
}

impl HistoryItem {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Payment(payment) => payment.to_json(),
            Self::Grant(grant) => json!({
                "id": grant.entry_id,
                "amount": grant.currency.to_major(0),
                "creditAmount": grant.currency.to_major(grant.credits),
                "currency": grant.currency.as_str(),
                "status": PaymentStatus::Succeeded.as_str(),
                "createdAt": rfc3339(grant.created_at_ms),
                "description": format!("Grant: {}", grant.reason),
                "kind": "grant",
            }),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Payment(payment) => &payment.intent_id,
            Self::Grant(grant) => &grant.entry_id,
        }
    }
}

/// The result of a spend, a grant or another keyed credit movement.
#[derive(Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// Written now; the entry id.
    Done(String),
    /// The same key was used before with the same amount: nothing more was taken.
    Replayed(String),
    /// The same key was used before with another amount.
    KeyConflict,
    /// Not enough credits; nothing taken.
    Insufficient,
}

/// What Stripe says about a charge of a Coffer payment (`charge.refunded`).
#[derive(Clone, Debug)]
pub struct RefundedCharge {
    pub intent_id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub event_id: String,
}

/// Dispute steps that change a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisputeStep {
    Created,
    FundsWithdrawn,
    FundsReinstated,
}

/// The result of applying a refund or dispute event.
#[derive(Debug, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// Applied; credits moved by this signed amount (0 for a status change only).
    Applied(i64),
    /// Already applied, or older than what was applied: nothing changed.
    Unchanged,
    /// No Coffer payment for this intent.
    UnknownPayment,
    /// The payment is not credited yet (or the dispute not withdrawn yet): Stripe should retry.
    NotReady,
}

/// Credits to claw back for a cumulative refund: the refunded share of the credits, rounded
/// down, never more than `credits`.
pub fn refund_share(credits: i64, amount: i64, amount_refunded: i64) -> i64 {
    if amount <= 0 || amount_refunded <= 0 {
        return 0;
    }
    let refunded = i128::from(amount_refunded.min(amount));
    let share = i128::from(credits) * refunded / i128::from(amount);
    i64::try_from(share).unwrap_or(credits).min(credits)
}

/// What a `payment_intent.succeeded` event claims was paid.
#[derive(Clone, Debug)]
pub struct PaidIntent {
    pub intent_id: String,
    pub amount: i64,
    pub currency: String,
    pub user_id: Option<String>,
    pub package_id: Option<String>,
    pub credits: Option<i64>,
    pub event_id: String,
}

/// The result of trying to credit a payment.
#[derive(Debug, PartialEq, Eq)]
pub enum CreditOutcome {
    Credited,
    AlreadyCredited,
    UnknownPayment,
    /// The event does not match the recorded payment; nothing was credited.
    Mismatch,
}

/// A user's balance in minor units.
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    pub balance: i64,
    pub currency: Currency,
}

impl Balance {
    pub fn to_json(&self) -> Value {
        json!({
            "balance": self.currency.to_major(self.balance),
            "currency": self.currency.as_str(),
        })
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 UTC text for a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
            PaymentStatus::Canceled,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
            PaymentStatus::Disputed,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("bogus"), None);
    }

    #[test]
    fn refunds_claw_back_their_share_rounded_down() {
        assert_eq!(refund_share(1650, 1500, 1500), 1650);
        assert_eq!(refund_share(1650, 1500, 500), 550);
        assert_eq!(refund_share(1000, 3, 1), 333);
        assert_eq!(refund_share(1000, 1500, 9999), 1000);
        assert_eq!(refund_share(1000, 1500, 0), 0);
        assert_eq!(refund_share(i64::MAX, i64::MAX, i64::MAX - 1), i64::MAX - 1);
    }

    #[test]
    fn created_at_is_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
