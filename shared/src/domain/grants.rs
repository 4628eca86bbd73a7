//! Grants through the API and reservations as the rules and the routes see them: what was
//! asked, what it came to, and why it was refused. The store decides and records them.

/// A grant as asked for.
#[derive(Clone, Debug)]
pub struct GrantRequest<'a> {
    pub amount: i64,
    pub reason: &'a str,
    pub expires_at: Option<i64>,
    pub priority: i32,
    /// Who grants: `developer:<id>` or `iam:<principal>`.
    pub by: &'a str,
}

impl GrantRequest<'_> {
    /// What a replay must repeat to be the same request.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.amount,
            self.expires_at.map_or(String::new(), |at| at.to_string()),
            self.priority,
            self.reason
        )
    }
}

/// A grant, and what is left of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantState {
    pub grant_id: String,
    /// The entry this answer is about (the grant's, or an adjustment's or voiding's).
    pub entry_id: String,
    /// What the grant gave first.
    pub amount: i64,
    pub reason: String,
    pub expires_at: Option<i64>,
    pub priority: i32,
    /// What is left of it after this entry (0 once expired or voided).
    pub left: i64,
    /// The account's balance after this entry.
    pub balance: i64,
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    Done(GrantState),
    /// The key was used with another request.
    KeyConflict,
    /// No such grant on this account.
    NotFound,
    /// The grant has expired: it cannot be adjusted.
    Expired,
    /// Less is left of the grant than would be taken back.
    NotEnoughLeft {
        left: i64,
    },
    TooManyBuckets,
    CurrencyMismatch,
    /// The grant shares its bucket with other credits (joined at the account's bound).
    Shared,
}

/// A reservation's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Captured => "captured",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

/// A reservation as its caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldState {
    pub hold_id: String,
    /// What was held.
    pub amount: i64,
    /// What a capture spent.
    pub captured: Option<i64>,
    pub status: HoldStatus,
    /// When it returns by itself (Unix seconds).
    pub until: i64,
    /// The account's balance after this step.
    pub balance: i64,
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Done(HoldState),
    /// The key was used with another amount or time, or the hold was captured with another
    /// amount.
    KeyConflict,
    Short {
        available: i64,
    },
    NotFound,
    /// The reservation's time is over (it returned by itself), or it was released.
    Over(HoldStatus),
    /// Captured already (with another amount), or capturing more than was held.
    MoreThanHeld {
        held: i64,
    },
    TooManyHolds,
    CurrencyMismatch,
}
