//! The records users see: payment statuses, history lines and balances, with their JSON shapes,
//! and the verified user id. Free of AWS and Stripe types.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::ledger::PaymentRecord;
use crate::domain::money::Currency;

/// A verified user id (the JWT `sub`, or the user an IAM-authorized caller names).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Accepts 1–255 characters with no control characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= 255 && !raw.chars().any(char::is_control);
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account of an organisation: `org:<id>`. Verified users can never be called so
    /// (`auth::user_id` refuses such a subject), so an organisation's ledger, plan and
    /// subscription never mix with a user's.
    pub fn organisation(org: &str) -> Option<Self> {
        let valid = !org.is_empty()
            && org.len() <= 128
            && org
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        valid.then(|| Self(format!("{ORGANISATION_PREFIX}{org}")))
    }

    pub fn is_organisation(&self) -> bool {
        self.0.starts_with(ORGANISATION_PREFIX)
    }
}

/// What starts an organisation's account id.
pub const ORGANISATION_PREFIX: &str = "org:";

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
    /// Every status, in the contract's order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::Refunded,
        Self::PartiallyRefunded,
        Self::Disputed,
    ];

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

/// Promotional credits granted by an operator, shown in history beside payments.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub entry_id: String,
    /// A grant, or another entry that shows in history: an adjustment or voiding of a grant,
    /// an expiry, a reservation held, captured or released.
    pub kind: crate::domain::ledger::EntryKind,
    pub credits: i64,
    pub currency: Currency,
    pub reason: String,
    /// For a capture: what it spent.
    pub captured: Option<i64>,
    pub created_at_ms: i64,
}

impl Grant {
    /// What the line says, in words (`credits` shown by `major`).
    pub fn words(&self, major: impl Fn(i64) -> String) -> String {
        use crate::domain::ledger::EntryKind;
        match self.kind {
            EntryKind::GrantAdjusted => format!("Grant adjusted: {}", self.reason),
            EntryKind::GrantVoided => format!("Grant voided: {}", self.reason),
            EntryKind::Expire => format!("{} credits expired", major(-self.credits)),
            EntryKind::ExpiryReversed => format!(
                "{} expired credits counted back for a refund or dispute",
                major(self.credits)
            ),
            EntryKind::Hold => format!("{} credits reserved", major(-self.credits)),
            EntryKind::Capture => format!(
                "Reservation captured: {} credits spent, {} returned",
                major(self.captured.unwrap_or(0)),
                major(self.credits)
            ),
            EntryKind::Release if self.reason == "released" => {
                format!(
                    "Reservation released: {} credits returned",
                    major(self.credits)
                )
            }
            EntryKind::Release => format!(
                "Reservation ended unused: {} credits returned",
                major(self.credits)
            ),
            _ => format!("Grant: {}", self.reason),
        }
    }
}

/// One line of a user's history: a payment or a grant.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryItem {
    Payment(PaymentRecord),
    Grant(Grant),
}

impl HistoryItem {
    pub fn id(&self) -> &str {
        match self {
            Self::Payment(payment) => &payment.intent_id,
            Self::Grant(grant) => &grant.entry_id,
        }
    }
}

/// A user's balance in minor units.
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    /// What can be spent now: the live buckets less any debt (held credits not counted).
    pub balance: i64,
    pub currency: Currency,
    /// The live buckets, in the order a spend takes them.
    pub buckets: Vec<crate::domain::buckets::Bucket>,
    /// The soonest expiry of a live bucket (Unix seconds).
    pub next_expiry: Option<i64>,
    /// Credits set aside by open reservations.
    pub held: i64,
}

impl Balance {
    /// An account with nothing yet.
    pub fn empty(currency: Currency) -> Self {
        Self {
            balance: 0,
            currency,
            buckets: Vec::new(),
            next_expiry: None,
            held: 0,
        }
    }
}

/// One ledger entry of an account, as its developer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLine {
    pub entry_id: String,
    pub kind: String,
    /// Signed credits, minor units.
    pub amount: i64,
    pub currency: Currency,
    pub created_at_ms: i64,
    pub reason: Option<String>,
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
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("bogus"), None);
    }

    #[test]
    fn created_at_is_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
