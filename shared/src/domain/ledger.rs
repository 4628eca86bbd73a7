//! The ledger's rules, as pure functions over typed records: crediting a purchase, spending,
//! granting, and what refunds, failed refunds and disputes do to a payment. No rule does I/O; the
//! store turns each decision into one conditional DynamoDB transaction, and the invariant checker
//! asks the same rules what every payment should have moved.
//!
//! A credited payment keeps the *facts* Stripe told about its charge (the newest cumulative
//! refund, failed refunds, the dispute) and `applied`, the credits its entries moved so far. The
//! credits it should have moved are a function of the facts alone ([`net_credits`]), and every
//! event writes one entry of `net_credits(after) - applied`. Facts merge the same way whatever the
//! order they arrive in, and a duplicate merges into the same facts, so any order of events with
//! any duplicates ends in the same balance.

use std::collections::BTreeMap;

use crate::domain::money::{Credits, Currency, Money};
use crate::domain::packages::CreditPackage;
use crate::domain::records::{PaymentStatus, UserId};

/// Everything Stripe told Coffer about a payment's charge after it was paid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChargeFacts {
    /// The cumulative `amount_refunded` of the newest `charge.refunded` seen.
    pub refunded: i64,
    /// When that event was created at Stripe (Unix seconds; 0 when unknown).
    pub refunded_at: i64,
    /// Refunds that failed after they were made, by refund id.
    pub failed_refunds: BTreeMap<String, FailedRefund>,
    pub dispute: Option<DisputeFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRefund {
    pub amount: i64,
    /// When Stripe reported the failure (Unix seconds).
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeFacts {
    pub id: String,
    /// The disputed amount in minor units of the charge (a dispute may cover part of it).
    pub amount: i64,
    pub withdrawn: bool,
    pub reinstated: bool,
}

impl DisputeFacts {
    /// The dispute still holds funds, or may yet: opened or withdrawn, and not reinstated.
    pub fn is_open(&self) -> bool {
        !self.reinstated
    }

    /// The funds are withdrawn and not given back.
    pub fn holds_funds(&self) -> bool {
        self.withdrawn && !self.reinstated
    }
}

/// One PaymentIntent as Coffer recorded it, with what happened to it since.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentRecord {
    pub intent_id: String,
    pub user_id: UserId,
    pub package_id: String,
    /// What was charged, in minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
    /// Credits the package gives, in minor units of `currency`.
    pub credits: i64,
    pub status: PaymentStatus,
    pub created_at_ms: i64,
    pub description: String,
    /// The purchase entry was written.
    pub credited: bool,
    /// Why a succeeded payment could not be credited; an operator must look at it.
    pub attention: Option<String>,
    pub facts: ChargeFacts,
    /// Credits this payment's entries moved so far (purchase, refunds, disputes).
    pub applied: i64,
    /// Bumped by every change; writes are conditioned on it.
    pub rev: i64,
}

impl PaymentRecord {
    /// A payment just created for `package` (nothing credited, no facts yet).
    pub fn pending(intent_id: &str, user: UserId, package: &CreditPackage, now_ms: i64) -> Self {
        Self {
            intent_id: intent_id.to_owned(),
            user_id: user,
            package_id: package.id.clone(),
            amount: package.amount,
            currency: package.currency.clone(),
            credits: package.credits,
            status: PaymentStatus::Pending,
            created_at_ms: now_ms,
            description: package.name.clone(),
            credited: false,
            attention: None,
            facts: ChargeFacts::default(),
            applied: 0,
            rev: 0,
        }
    }
}

/// The package id of an invoice's included credits, recorded as a payment of their own.
pub const INCLUDED_PREFIX: &str = "included:";

impl PaymentRecord {
    /// The included credits an invoice granted, as a payment of their own on the intent that
    /// paid the invoice: a refund or a lost dispute of that charge takes back its share of them
    /// by the same rules as a purchase's (refunded share, netted, in any order).
    pub fn included_grant(grant: &IncludedGrant<'_>) -> Self {
        Self {
            intent_id: grant.intent_id.to_owned(),
            user_id: grant.account.clone(),
            package_id: format!("{INCLUDED_PREFIX}{}", grant.plan_id),
            amount: grant.amount,
            currency: grant.currency.clone(),
            credits: grant.credits,
            status: PaymentStatus::Succeeded,
            created_at_ms: grant.now_ms,
            description: format!(
                "Included credits of {} ({})",
                grant.plan_id, grant.invoice_id
            ),
            credited: true,
            attention: None,
            facts: ChargeFacts::default(),
            applied: grant.credits,
            rev: 0,
        }
    }

    /// Included credits of an invoice rather than a purchase.
    pub fn is_included_grant(&self) -> bool {
        self.package_id.starts_with(INCLUDED_PREFIX)
    }
}

/// What an invoice's included credits are: its account, plan, charge and credits.
pub struct IncludedGrant<'a> {
    pub invoice_id: &'a str,
    /// The PaymentIntent that paid the invoice.
    pub intent_id: &'a str,
    pub account: &'a UserId,
    pub plan_id: &'a str,
    /// What the invoice's charge was, in minor units of `currency`.
    pub amount: i64,
    pub currency: &'a Currency,
    pub credits: i64,
    pub now_ms: i64,
}

/// The share of `credits` that `refunded` of the `charged` money bought, rounded down, never
/// more than `credits` and never negative. The one rule that turns money into credits after a
/// purchase: its types keep the two apart.
pub fn refund_share(credits: Credits, charged: Money, refunded: Money) -> Credits {
    let (Credits(credits), Money(amount), Money(refunded)) = (credits, charged, refunded);
    if amount <= 0 || refunded <= 0 || credits <= 0 {
        return Credits(0);
    }
    let refunded = i128::from(refunded.min(amount));
    let share = i128::from(credits) * refunded / i128::from(amount);
    Credits(i64::try_from(share).unwrap_or(credits).clamp(0, credits))
}

/// The refunded amount that still stands: the newest cumulative refund, less the refunds that
/// failed after that figure was reported (a failure Stripe reported before it is already in it).
pub fn effective_refunded(facts: &ChargeFacts, charged: Money) -> Money {
    let Money(amount) = charged;
    let failed_since: i64 = facts
        .failed_refunds
        .values()
        .filter(|failed| failed.at >= facts.refunded_at)
        .fold(0_i64, |sum, failed| {
            sum.saturating_add(failed.amount.max(0))
        });
    Money(
        facts
            .refunded
            .saturating_sub(failed_since)
            .clamp(0, amount.max(0)),
    )
}

/// The credits a payment should have moved given its facts: its credits once credited, less
/// the refunded share, less the disputed share while a dispute holds the funds; never negative.
pub fn net_credits(payment: &PaymentRecord) -> i64 {
    if !payment.credited {
        return 0;
    }
    let (credits, charged) = (Credits(payment.credits), Money(payment.amount));
    let refunded = effective_refunded(&payment.facts, charged);
    let Credits(refund_take) = refund_share(credits, charged, refunded);
    let Credits(dispute_take) = match &payment.facts.dispute {
        Some(dispute) if dispute.holds_funds() => {
            refund_share(credits, charged, Money(dispute.amount))
        }
        _ => Credits(0),
    };
    payment
        .credits
        .saturating_sub(refund_take)
        .saturating_sub(dispute_take)
        .max(0)
}

/// The status a payment shows, from its facts. Statuses of unpaid payments are kept.
pub fn status_of(payment: &PaymentRecord) -> PaymentStatus {
    if !payment.credited {
        return payment.status;
    }
    let Money(refunded) = effective_refunded(&payment.facts, Money(payment.amount));
    if payment
        .facts
        .dispute
        .as_ref()
        .is_some_and(DisputeFacts::is_open)
    {
        PaymentStatus::Disputed
    } else if refunded >= payment.amount && payment.amount > 0 {
        PaymentStatus::Refunded
    } else if refunded > 0 {
        PaymentStatus::PartiallyRefunded
    } else {
        PaymentStatus::Succeeded
    }
}

/// What `payment_intent.succeeded` (or reconciliation) says was paid.
#[derive(Clone, Debug)]
pub struct PaidIntent {
    pub intent_id: String,
    pub amount: i64,
    pub currency: String,
    pub user_id: Option<String>,
    pub package_id: Option<String>,
    pub credits: Option<i64>,
}

/// What to do with a succeeded intent.
#[derive(Debug, PartialEq, Eq)]
pub enum CreditDecision {
    /// Write the purchase entry of `credits` and, when facts arrived first, an adjustment.
    Credit {
        credits: i64,
        adjustment: i64,
    },
    AlreadyCredited,
    /// It does not match what was recorded: nothing is credited and an operator must look.
    Mismatch(&'static str),
}

/// One ledger entry a decision writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntryPlan {
    pub kind: EntryKind,
    pub entry_id: String,
    /// Signed credits, minor units.
    pub amount: i64,
}

/// The entries crediting a payment writes (the purchase, and an adjustment when facts arrived
/// first) and what they add to the balance together.
pub fn crediting_entries(
    payment: &PaymentRecord,
    credits: i64,
    adjustment: i64,
) -> (Vec<NewEntryPlan>, i64) {
    let mut entries = vec![NewEntryPlan {
        kind: EntryKind::Purchase,
        entry_id: super::idempotency::purchase_entry(&payment.intent_id),
        amount: credits,
    }];
    if adjustment != 0 {
        entries.push(NewEntryPlan {
            kind: EntryKind::Adjustment,
            entry_id: super::idempotency::adjustment_entry(&payment.intent_id, payment.rev + 1),
            amount: adjustment,
        });
    }
    (entries, credits.saturating_add(adjustment))
}

/// Decides whether a succeeded intent credits its recorded payment.
pub fn decide_credit(payment: &PaymentRecord, paid: &PaidIntent) -> CreditDecision {
    if payment.credited {
        return CreditDecision::AlreadyCredited;
    }
    let reason = if paid.amount != payment.amount {
        Some("amount_mismatch")
    } else if !paid
        .currency
        .eq_ignore_ascii_case(payment.currency.as_str())
    {
        Some("currency_mismatch")
    } else if paid.user_id.as_deref() != Some(payment.user_id.as_str())
        || paid.package_id.as_deref() != Some(payment.package_id.as_str())
        || paid.credits != Some(payment.credits)
    {
        Some("metadata_mismatch")
    } else {
        None
    };
    if let Some(reason) = reason {
        return CreditDecision::Mismatch(reason);
    }
    let mut credited = payment.clone();
    credited.credited = true;
    CreditDecision::Credit {
        credits: payment.credits,
        adjustment: net_credits(&credited).saturating_sub(payment.credits),
    }
}

/// A Stripe event about a payment's charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeEvent {
    /// `charge.refunded`: the charge with its cumulative `amount_refunded`.
    Refunded {
        amount: i64,
        amount_refunded: i64,
        currency: String,
        at: i64,
    },
    /// `charge.refund.updated` with status `failed`.
    RefundFailed {
        refund_id: String,
        amount: i64,
        at: i64,
    },
    Dispute {
        dispute_id: String,
        step: DisputeStep,
        /// The disputed amount, when the event says.
        amount: Option<i64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisputeStep {
    Created,
    FundsWithdrawn,
    FundsReinstated,
}

impl ChargeEvent {
    /// The kind of the entry this event causes.
    pub fn entry_kind(&self) -> EntryKind {
        match self {
            Self::Refunded { .. } => EntryKind::Refund,
            Self::RefundFailed { .. } => EntryKind::RefundFailed,
            Self::Dispute {
                step: DisputeStep::FundsReinstated,
                ..
            } => EntryKind::DisputeReinstated,
            Self::Dispute { .. } => EntryKind::DisputeWithdrawn,
        }
    }
}

/// Why a ledger entry moved credits. Every entry has one; the stored name never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A paid purchase's credits.
    Purchase,
    /// A correction of a purchase's credits (what was paid differs from what was recorded).
    Adjustment,
    /// Credits spent (a spend, or usage beyond the allowance paid with credits).
    Spend,
    /// Credits given: an operator's grant, or the included credits of a paid invoice.
    Grant,
    /// The refunded share of a purchase taken back.
    Refund,
    /// A refund that failed: its share given back.
    RefundFailed,
    /// The disputed share taken back while the dispute holds the funds.
    DisputeWithdrawn,
    /// A dispute won: its share given back.
    DisputeReinstated,
    /// What was left of an expired bucket, gone.
    Expire,
    /// Credits set aside by a reservation.
    Hold,
    /// A reservation captured: what was not spent given back.
    Capture,
    /// A reservation released, or its time over: all given back.
    Release,
    /// A grant's credits adjusted (either way).
    GrantAdjusted,
    /// What was left of a grant, taken back.
    GrantVoided,
    /// What expired of a payment's bucket, back for the refund or dispute that takes it.
    ExpiryReversed,
}

impl EntryKind {
    pub const ALL: [Self; 15] = [
        Self::Purchase,
        Self::Adjustment,
        Self::Spend,
        Self::Grant,
        Self::Refund,
        Self::RefundFailed,
        Self::DisputeWithdrawn,
        Self::DisputeReinstated,
        Self::Expire,
        Self::Hold,
        Self::Capture,
        Self::Release,
        Self::GrantAdjusted,
        Self::GrantVoided,
        Self::ExpiryReversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Adjustment => "adjustment",
            Self::Spend => "spend",
            Self::Grant => "grant",
            Self::Refund => "refund",
            Self::RefundFailed => "refund_failed",
            Self::DisputeWithdrawn => "dispute_withdrawn",
            Self::DisputeReinstated => "dispute_reinstated",
            Self::Expire => "expire",
            Self::Hold => "hold",
            Self::Capture => "capture",
            Self::Release => "release",
            Self::GrantAdjusted => "grant_adjusted",
            Self::GrantVoided => "grant_voided",
            Self::ExpiryReversed => "expiry_reversed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// An entry a user's history shows beside payments: grants and their changes, expiries,
    /// and reservations.
    pub fn shows_in_history(self) -> bool {
        matches!(
            self,
            Self::Grant
                | Self::GrantAdjusted
                | Self::GrantVoided
                | Self::Expire
                | Self::Hold
                | Self::Capture
                | Self::Release
                | Self::ExpiryReversed
        )
    }

    /// Credits sold (a purchase and its corrections).
    pub fn is_sale(self) -> bool {
        matches!(self, Self::Purchase | Self::Adjustment)
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a charge event does to a payment.
#[derive(Debug, PartialEq, Eq)]
pub enum LifecycleDecision {
    /// Already known, or older than what is known: nothing changes.
    Unchanged,
    /// The payment is not credited yet (and not waiting for an operator): Stripe retries.
    NotReady,
    /// The event does not describe this payment's charge; logged and acknowledged.
    Ignored(&'static str),
    /// Store these facts and status, and move `delta` credits (0: no entry).
    Apply {
        facts: ChargeFacts,
        status: PaymentStatus,
        delta: i64,
        applied: i64,
    },
}

/// Merges the event into the payment's facts and says what moves.
pub fn decide_lifecycle(payment: &PaymentRecord, event: &ChargeEvent) -> LifecycleDecision {
    if let ChargeEvent::Refunded {
        amount, currency, ..
    } = event
    {
        if *amount != payment.amount || !currency.eq_ignore_ascii_case(payment.currency.as_str()) {
            return LifecycleDecision::Ignored("the refunded charge does not match the payment");
        }
    }
    let facts = merge(&payment.facts, event, payment.amount);
    if facts == payment.facts {
        return LifecycleDecision::Unchanged;
    }
    // A payment that could not be credited keeps its facts (no credits move), so that its
    // events are acknowledged instead of being retried for days.
    if !payment.credited && payment.attention.is_none() {
        return LifecycleDecision::NotReady;
    }
    let mut next = payment.clone();
    next.facts = facts;
    let target = net_credits(&next);
    LifecycleDecision::Apply {
        status: status_of(&next),
        delta: target.saturating_sub(payment.applied),
        applied: target,
        facts: next.facts,
    }
}

/// The facts after one more event. Merging is order-free: the newest cumulative refund wins (by
/// the event's time, then the larger figure), failed refunds and dispute steps are sets.
fn merge(facts: &ChargeFacts, event: &ChargeEvent, charge_amount: i64) -> ChargeFacts {
    let mut next = facts.clone();
    match event {
        ChargeEvent::Refunded {
            amount_refunded,
            at,
            ..
        } => {
            let refunded = (*amount_refunded).clamp(0, charge_amount.max(0));
            if (*at, refunded) > (next.refunded_at, next.refunded) {
                next.refunded = refunded;
                next.refunded_at = *at;
            }
        }
        ChargeEvent::RefundFailed {
            refund_id,
            amount,
            at,
        } => {
            next.failed_refunds
                .entry(refund_id.clone())
                .or_insert(FailedRefund {
                    amount: (*amount).clamp(0, charge_amount.max(0)),
                    at: *at,
                });
        }
        ChargeEvent::Dispute {
            dispute_id,
            step,
            amount,
        } => {
            let amount = amount
                .unwrap_or(charge_amount)
                .clamp(0, charge_amount.max(0));
            let dispute = next.dispute.get_or_insert_with(|| DisputeFacts {
                id: dispute_id.clone(),
                amount,
                withdrawn: false,
                reinstated: false,
            });
            match step {
                DisputeStep::Created => {}
                DisputeStep::FundsWithdrawn => dispute.withdrawn = true,
                // A reinstatement implies the withdrawal before it, whatever arrives first.
                DisputeStep::FundsReinstated => {
                    dispute.withdrawn = true;
                    dispute.reinstated = true;
                }
            }
        }
    }
    next
}

/// A keyed movement of credits that the caller asked for (a spend or a grant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditMove {
    /// Signed credits: negative for a spend.
    pub delta: i64,
    pub reason: String,
}

/// A movement already written under the same key, with the balance it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMove {
    pub entry_id: String,
    pub delta: i64,
    pub reason: String,
    /// The balance right after it; `None` for entries written before it was recorded.
    pub balance_after: Option<i64>,
}

/// What a keyed movement does.
#[derive(Debug, PartialEq, Eq)]
pub enum MoveDecision {
    /// Write it: the balance becomes `balance_after`.
    Write { balance_after: i64 },
    /// The same request again: answer as the first time.
    Replay(RecordedMove),
    /// The key was used for another amount or reason.
    KeyConflict,
    /// A spend larger than the balance.
    Insufficient,
}

/// Decides a spend or a grant from the key's earlier entry (if any) and the current balance.
/// Spends never take a balance below zero; grants have no ceiling but cannot overflow.
pub fn decide_move(
    earlier: Option<&RecordedMove>,
    balance: i64,
    request: &CreditMove,
) -> MoveDecision {
    if let Some(earlier) = earlier {
        return if earlier.delta == request.delta && earlier.reason == request.reason {
            MoveDecision::Replay(earlier.clone())
        } else {
            MoveDecision::KeyConflict
        };
    }
    match balance.checked_add(request.delta) {
        Some(after) if request.delta >= 0 || after >= 0 => MoveDecision::Write {
            balance_after: after,
        },
        _ => MoveDecision::Insufficient,
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
