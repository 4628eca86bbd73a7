//! Credit buckets: every credit belongs to the bucket the entry that brought it in made (a
//! purchase, a tier, an invoice's included credits, a grant, a spend's refund). A bucket has what
//! is left of it, an optional expiry, a priority and a kind (paid or promotional). The balance
//! is what the live buckets hold, less any debt (what a refund or dispute took back after the
//! credits were spent). Pure rules: which buckets a spend takes from, what a hold sets aside and
//! gives back, what expires, and what a refund claws back. The store writes each decision in one
//! conditional transaction with its ledger entries; the invariant checker asks these rules what
//! every account should hold.
//!
//! Units are minor credit units; times are Unix seconds. A bucket is live at `now` while
//! `now < expires_at`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ledger::EntryKind;

/// Paid credits were bought; promotional ones were given.
/// Stored in a wallet by short names (the wallet is read and written by every spend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BucketKind {
    #[serde(rename = "pd")]
    Paid,
    #[serde(rename = "pr")]
    Promotional,
}

/// Credits of one origin. Stored by one-letter names: an account's wallet holds up to a
/// thousand of them, and every spend reads and writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The entry that brought the credits in (`purchase:<intent>`, `grant:<key>`, …), or for
    /// merged grants, the first of them.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "k")]
    pub kind: BucketKind,
    /// Higher is taken first.
    #[serde(rename = "p", default, skip_serializing_if = "is_zero32")]
    pub priority: i32,
    /// When it expires (Unix seconds); `None`: never.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When it was made (Unix seconds): the oldest goes first among equals.
    #[serde(rename = "c")]
    pub created_at: i64,
    /// What is left of it (never below zero).
    #[serde(rename = "l")]
    pub left: i64,
    /// What left it by expiring and was not taken back by a refund since (a refund of its
    /// purchase does not take these again).
    #[serde(rename = "e", default, skip_serializing_if = "is_zero")]
    pub expired: i64,
    /// Of what expired, what a refund or dispute took back since: given back (a failed refund,
    /// a won dispute), it expires again rather than come back to life.
    #[serde(rename = "r", default, skip_serializing_if = "is_zero")]
    pub reclaimed: i64,
    /// What reservations hold of it that a rollover cap expired: it expires when they give it
    /// back (what they spend of it stays spent).
    #[serde(rename = "d", default, skip_serializing_if = "is_zero")]
    pub doomed: i64,
    /// Credits of other origins joined it (at the account's bound): no single grant owns it.
    #[serde(rename = "m", default, skip_serializing_if = "std::ops::Not::not")]
    pub merged: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_zero32(n: &i32) -> bool {
    *n == 0
}

impl Bucket {
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// Whether credits of these terms may join this bucket when the account is at its bound
    /// ([`MAX_BUCKETS`]): the same kind, priority and expiry.
    pub fn same_terms(&self, kind: BucketKind, priority: i32, expires_at: Option<i64>) -> bool {
        self.kind == kind && self.priority == priority && self.expires_at == expires_at
    }
}

/// One criterion of the spend order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderKey {
    /// Higher priority first.
    Priority,
    /// The soonest expiry first (never-expiring last).
    Expiry,
    /// Promotional before paid.
    PromotionalFirst,
    /// Paid before promotional.
    PaidFirst,
    /// The oldest first.
    Oldest,
}

/// The order a spend takes from buckets in: each criterion breaks the ties of the ones before.
/// A project may set its own; the bucket id breaks any tie left, so the order is total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendOrder(pub Vec<OrderKey>);

impl Default for SpendOrder {
    /// Priority, then soonest expiry, then promotional before paid, then oldest.
    fn default() -> Self {
        Self(vec![
            OrderKey::Priority,
            OrderKey::Expiry,
            OrderKey::PromotionalFirst,
            OrderKey::Oldest,
        ])
    }
}

impl SpendOrder {
    /// A project's order from its names (`priority`, `expiry`, `promotionalFirst`,
    /// `paidFirst`, `oldest`): each at most once, and not both kinds first.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for name in names {
            let key = match name.as_str() {
                "priority" => OrderKey::Priority,
                "expiry" => OrderKey::Expiry,
                "promotionalFirst" => OrderKey::PromotionalFirst,
                "paidFirst" => OrderKey::PaidFirst,
                "oldest" => OrderKey::Oldest,
                _ => {
                    return Err(format!(
                        "spendOrder may name priority, expiry, promotionalFirst, paidFirst and oldest, not {name:?}."
                    ))
                }
            };
            if keys.contains(&key) {
                return Err(format!("spendOrder names {name} twice."));
            }
            keys.push(key);
        }
        if keys.contains(&OrderKey::PromotionalFirst) && keys.contains(&OrderKey::PaidFirst) {
            return Err("spendOrder may name promotionalFirst or paidFirst, not both.".into());
        }
        if keys.is_empty() {
            return Err("spendOrder must name at least one criterion.".into());
        }
        Ok(Self(keys))
    }

    /// The names of its criteria, as a project sets them.
    pub fn names(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .map(|key| match key {
                OrderKey::Priority => "priority",
                OrderKey::Expiry => "expiry",
                OrderKey::PromotionalFirst => "promotionalFirst",
                OrderKey::PaidFirst => "paidFirst",
                OrderKey::Oldest => "oldest",
            })
            .collect()
    }

    fn compare(&self, a: &Bucket, b: &Bucket) -> Ordering {
        for key in &self.0 {
            let by = match key {
                OrderKey::Priority => b.priority.cmp(&a.priority),
                OrderKey::Expiry => expiry_rank(a).cmp(&expiry_rank(b)),
                OrderKey::PromotionalFirst => b.kind.cmp(&a.kind),
                OrderKey::PaidFirst => a.kind.cmp(&b.kind),
                OrderKey::Oldest => a.created_at.cmp(&b.created_at),
            };
            if by != Ordering::Equal {
                return by;
            }
        }
        a.id.cmp(&b.id)
    }
}

fn expiry_rank(bucket: &Bucket) -> i64 {
    bucket.expires_at.unwrap_or(i64::MAX)
}

/// An account's credits: its buckets, its debt, and the holds set aside from them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    #[serde(rename = "b", default)]
    pub buckets: Vec<Bucket>,
    /// Taken back (a refund or dispute) beyond what the buckets held: paid first by the next
    /// credits that come in.
    #[serde(rename = "o", default, skip_serializing_if = "is_zero")]
    pub debt: i64,
    #[serde(rename = "h", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holds: BTreeMap<String, Hold>,
}

/// Credits set aside for work whose cost is known later: what each bucket gave, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Per bucket id, what it gave.
    #[serde(rename = "t")]
    pub takes: Vec<(String, i64)>,
    /// When the hold returns by itself (Unix seconds).
    #[serde(rename = "u")]
    pub until: i64,
}

impl Hold {
    pub fn amount(&self) -> i64 {
        self.takes.iter().map(|(_, n)| n).sum()
    }
}

/// Why a move cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The live credits (less any debt and holds) are short: nothing is taken.
    Short {
        available: i64,
    },
    /// Not a positive amount.
    NotPositive,
    UnknownHold,
    /// The hold's time is over: it returns by itself, it cannot be captured.
    HoldEnded,
    /// A capture of more than was held.
    MoreThanHeld,
    /// An id already in use (a hold, or a bucket of another kind).
    Taken,
    /// The account has [`MAX_BUCKETS`] buckets and none of these terms.
    TooManyBuckets,
    /// The account has [`MAX_HOLDS`] open holds.
    TooManyHolds,
    /// Less is left of the bucket than would be taken (what was spent is never taken back).
    NotEnoughLeft {
        left: i64,
    },
}

/// What a credit did: what paid the debt, and what went to which bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credited {
    pub to_debt: i64,
    pub bucket: String,
    pub left: i64,
}

/// The buckets an account keeps at most (its wallet lives in one item of at most 400 KB; a
/// bucket takes about 120 bytes). Past it, credits join a bucket of the same terms.
pub const MAX_BUCKETS: usize = 1000;

/// The open holds an account may have at once.
pub const MAX_HOLDS: usize = 100;

/// What a move took from or gave to each bucket (negative: taken), for the ledger entries.
pub type Moves = Vec<(String, i64)>;

impl Wallet {
    /// What can be spent at `now`: the live buckets less the debt.
    pub fn available(&self, now: i64) -> i64 {
        self.live_total(now).saturating_sub(self.debt)
    }

    /// The balance an account shows: its live credits, less its debt (negative after a refund
    /// of spent credits), held credits not counted.
    pub fn balance(&self, now: i64) -> i64 {
        self.available(now)
    }

    fn live_total(&self, now: i64) -> i64 {
        self.buckets
            .iter()
            .filter(|b| b.live_at(now))
            .map(|b| b.left)
            .sum()
    }

    /// Credits come in: the debt is paid first, the rest goes to the bucket of their origin (made
    /// now, or the same id's again). An account at [`MAX_BUCKETS`] puts new credits in a bucket
    /// of the same terms; promotional credits of new terms are then refused, paid credits never.
    pub fn credit(&mut self, new: Bucket) -> Result<Credited, Refusal> {
        if new.left <= 0 {
            return Err(Refusal::NotPositive);
        }
        let to_debt = new.left.min(self.debt);
        let left = new.left - to_debt;
        let target = if let Some(same) = self.buckets.iter().position(|b| b.id == new.id) {
            if self.buckets[same].kind != new.kind {
                return Err(Refusal::Taken);
            }
            Some(same)
        } else if self.buckets.len() >= MAX_BUCKETS {
            let joined = self
                .buckets
                .iter()
                .position(|b| b.same_terms(new.kind, new.priority, new.expires_at));
            if joined.is_none() && new.kind == BucketKind::Promotional {
                return Err(Refusal::TooManyBuckets);
            }
            joined
        } else {
            None
        };
        self.debt -= to_debt;
        let bucket = match target {
            Some(i) => {
                self.buckets[i].left += left;
                if self.buckets[i].id != new.id {
                    self.buckets[i].merged = true;
                }
                self.buckets[i].id.clone()
            }
            None => {
                let id = new.id.clone();
                self.buckets.push(Bucket { left, ..new });
                id
            }
        };
        Ok(Credited {
            to_debt,
            bucket,
            left,
        })
    }

    /// The takes that make `amount` from the live buckets in `order` (the whole amount or
    /// nothing).
    pub fn plan_take(&self, amount: i64, now: i64, order: &SpendOrder) -> Result<Moves, Refusal> {
        if amount <= 0 {
            return Err(Refusal::NotPositive);
        }
        let available = self.available(now);
        if available < amount {
            return Err(Refusal::Short { available });
        }
        let mut live: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.live_at(now) && b.left > 0)
            .collect();
        live.sort_by(|a, b| order.compare(a, b));
        let mut wanted = amount;
        let mut takes = Vec::new();
        for bucket in live {
            if wanted == 0 {
                break;
            }
            let take = bucket.left.min(wanted);
            takes.push((bucket.id.clone(), -take));
            wanted -= take;
        }
        Ok(takes)
    }

    fn apply(&mut self, moves: &[(String, i64)]) {
        for (id, by) in moves {
            if let Some(bucket) = self.buckets.iter_mut().find(|b| &b.id == id) {
                bucket.left += by;
            }
        }
    }

    /// A spend: taken from the live buckets in order, or refused whole.
    pub fn spend(&mut self, amount: i64, now: i64, order: &SpendOrder) -> Result<Moves, Refusal> {
        let takes = self.plan_take(amount, now, order)?;
        self.apply(&takes);
        Ok(takes)
    }

    /// Sets `amount` aside under `id` until `until`: not spendable by anything else meanwhile.
    pub fn hold(
        &mut self,
        id: &str,
        amount: i64,
        now: i64,
        until: i64,
        order: &SpendOrder,
    ) -> Result<Moves, Refusal> {
        if self.holds.contains_key(id) {
            return Err(Refusal::Taken);
        }
        if self.holds.len() >= MAX_HOLDS {
            return Err(Refusal::TooManyHolds);
        }
        let takes = self.plan_take(amount, now, order)?;
        self.apply(&takes);
        self.holds.insert(
            id.to_owned(),
            Hold {
                takes: takes.iter().map(|(b, n)| (b.clone(), -n)).collect(),
                until,
            },
        );
        Ok(takes)
    }

    /// Captures `amount` of a hold (at most what it holds) before it ends: that much is spent,
    /// taken from the hold's buckets in the order they gave, and the rest goes back to them. What
    /// goes back to a bucket that expired meanwhile is expired with it (see [`Wallet::expire`]).
    /// The spent takes (negative) and the returns (positive).
    pub fn capture(&mut self, id: &str, amount: i64, now: i64) -> Result<(Moves, Moves), Refusal> {
        if amount < 0 {
            return Err(Refusal::NotPositive);
        }
        let hold = self.holds.get(id).ok_or(Refusal::UnknownHold)?;
        if now >= hold.until {
            return Err(Refusal::HoldEnded);
        }
        if amount > hold.amount() {
            return Err(Refusal::MoreThanHeld);
        }
        let hold = self.holds.remove(id).ok_or(Refusal::UnknownHold)?;
        let mut wanted = amount;
        let (mut spent, mut back) = (Vec::new(), Vec::new());
        for (bucket, gave) in hold.takes {
            let used = gave.min(wanted);
            wanted -= used;
            if used > 0 {
                spent.push((bucket.clone(), -used));
            }
            if gave > used {
                back.push((bucket, gave - used));
            }
        }
        self.apply(&back);
        Ok((spent, back))
    }

    /// Gives a hold back whole (released, or its time over): what each bucket gets back.
    pub fn release(&mut self, id: &str) -> Result<Moves, Refusal> {
        let hold = self.holds.remove(id).ok_or(Refusal::UnknownHold)?;
        self.apply(&hold.takes);
        Ok(hold.takes)
    }

    /// The holds whose time is over at `now`.
    pub fn ended_holds(&self, now: i64) -> Vec<String> {
        self.holds
            .iter()
            .filter(|(_, h)| now >= h.until)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every bucket expired at `now` that still holds credits gives them up: what leaves each
    /// (an `expire` entry each). Once done, none is left to expire again.
    pub fn expire(&mut self, now: i64) -> Moves {
        let mut gone = Vec::new();
        for bucket in self
            .buckets
            .iter_mut()
            .filter(|b| !b.live_at(now) && b.left > 0)
        {
            gone.push((bucket.id.clone(), -bucket.left));
            bucket.expired = bucket.expired.saturating_add(bucket.left);
            bucket.left = 0;
        }
        gone
    }

    /// A refund or dispute of a purchase takes `amount` back: from the purchase's own bucket
    /// first (while live), then from the live buckets in order, then as debt. What each bucket
    /// gave, and the debt added.
    pub fn claw_back(
        &mut self,
        bucket_id: &str,
        amount: i64,
        now: i64,
        order: &SpendOrder,
    ) -> Result<(Moves, i64), Refusal> {
        if amount <= 0 {
            return Err(Refusal::NotPositive);
        }
        let mut wanted = amount;
        let mut takes = Vec::new();
        if let Some(own) = self
            .buckets
            .iter()
            .find(|b| b.id == bucket_id && b.live_at(now) && b.left > 0)
        {
            let take = own.left.min(wanted);
            takes.push((own.id.clone(), -take));
            wanted -= take;
        }
        self.apply(&takes);
        if wanted > 0 {
            let rest = self.available(now).min(wanted).max(0);
            if rest > 0 {
                let more = self.plan_take(rest, now, order)?;
                self.apply(&more);
                takes.extend(more);
                wanted -= rest;
            }
        }
        self.debt += wanted;
        Ok((takes, wanted))
    }

    /// What the live buckets show a user: each bucket's amount, kind and expiry, soonest first,
    /// and the next expiry.
    pub fn live_buckets(&self, now: i64) -> (Vec<&Bucket>, Option<i64>) {
        let mut live: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.live_at(now) && b.left > 0)
            .collect();
        live.sort_by(|a, b| SpendOrder::default().compare(a, b));
        let next = live.iter().filter_map(|b| b.expires_at).min();
        (live, next)
    }
}

/// One ledger entry a wallet change writes: its amount is what the buckets gained (negative:
/// lost) less what the debt grew, so the balance item and the entries always agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub entry_id: String,
    pub kind: EntryKind,
    /// Signed credits the balance moved by.
    pub amount: i64,
    /// Per bucket, what it gained or lost.
    pub moves: Moves,
    /// What the debt grew by (negative: paid).
    pub debt: i64,
    /// The hold this entry made, captured, released or ended.
    pub hold: Option<String>,
    /// For a capture: what was spent of the hold.
    pub captured: Option<i64>,
    /// For a rollover cap: what reservations hold that will expire when they give it back.
    pub doomed: i64,
}

impl Step {
    fn new(entry_id: String, kind: EntryKind, moves: Moves, debt: i64) -> Self {
        let amount = moves.iter().map(|(_, n)| n).sum::<i64>() - debt;
        Self {
            entry_id,
            kind,
            amount,
            moves,
            debt,
            hold: None,
            captured: None,
            doomed: 0,
        }
    }
}

impl Wallet {
    /// The wallet of an account stored before buckets existed: its balance as one paid bucket
    /// that never expires (or as debt, if negative).
    pub fn from_stored_balance(balance: i64, created_at: i64) -> Self {
        let mut wallet = Self::default();
        if balance > 0 {
            wallet.buckets.push(Bucket {
                id: LEGACY_BUCKET.to_owned(),
                kind: BucketKind::Paid,
                priority: 0,
                expires_at: None,
                created_at,
                left: balance,
                expired: 0,
                reclaimed: 0,
                doomed: 0,
                merged: false,
            });
        } else {
            wallet.debt = -balance;
        }
        wallet
    }

    /// A balance item whose `balance` moved without its wallet (a write of the version before
    /// buckets, still running during an upgrade, adding an entry of its own): the difference
    /// goes to the `balance` bucket, or out of it and then to debt, as the checker counts
    /// entries without bucket moves.
    pub fn fold_outside_change(&mut self, stored: i64, now: i64) -> i64 {
        let diff = stored.saturating_sub(self.total());
        if diff > 0 {
            match self.buckets.iter_mut().find(|b| b.id == LEGACY_BUCKET) {
                Some(bucket) => bucket.left += diff,
                None => self.buckets.push(Bucket {
                    id: LEGACY_BUCKET.to_owned(),
                    kind: BucketKind::Paid,
                    priority: 0,
                    expires_at: None,
                    created_at: now,
                    left: diff,
                    expired: 0,
                    reclaimed: 0,
                    doomed: 0,
                    merged: false,
                }),
            }
        } else if diff < 0 {
            let mut owed = -diff;
            if let Some(bucket) = self.buckets.iter_mut().find(|b| b.id == LEGACY_BUCKET) {
                let take = bucket.left.min(owed);
                bucket.left -= take;
                owed -= take;
            }
            self.debt += owed;
        }
        diff
    }

    /// What the entries add up to: every bucket (live or not) less the debt; held credits left
    /// the balance through their hold's entry.
    pub fn total(&self) -> i64 {
        self.buckets.iter().map(|b| b.left).sum::<i64>() - self.debt
    }

    /// What the holds set aside.
    pub fn held(&self) -> i64 {
        self.holds.values().map(Hold::amount).sum()
    }

    /// Brings the wallet to `now`: every hold whose time is over goes back (a `release` entry
    /// each), then every expired bucket gives up what is left (an `expire` entry each).
    /// `version` is the wallet's version, which makes each expiry's entry id unique (a bucket may
    /// get credits back from a hold after it expired, and expire them later).
    pub fn settle(&mut self, now: i64, version: i64, limit: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        for id in self.ended_holds(now).into_iter().take(limit) {
            if let Ok(released) = self.release_step(&id) {
                steps.extend(released);
            }
        }
        let mut expired = 0;
        for bucket in self.buckets.iter_mut() {
            if expired == limit {
                break;
            }
            if bucket.live_at(now) || bucket.left <= 0 {
                continue;
            }
            let gone = std::mem::take(&mut bucket.left);
            bucket.expired = bucket.expired.saturating_add(gone);
            expired += 1;
            steps.push(Step::new(
                format!("expire:{}:{version}", bucket.id),
                EntryKind::Expire,
                vec![(bucket.id.clone(), -gone)],
                0,
            ));
        }
        steps
    }

    /// Whether [`Wallet::settle`] has anything to do at `now`.
    pub fn needs_settling(&self, now: i64) -> bool {
        !self.ended_holds(now).is_empty()
            || self.buckets.iter().any(|b| !b.live_at(now) && b.left > 0)
    }

    /// Forgets the empty buckets no hold refers to (their entries keep their story).
    /// A payment's bucket with an expiry, or with credits that expired, is kept empty until
    /// [`PAYMENT_BUCKET_KEPT_SECS`] after its expiry (or its making), so that a refund or
    /// dispute of its payment finds its terms and what expired of it.
    pub fn prune(&mut self, now: i64) {
        let held: std::collections::BTreeSet<&str> = self
            .holds
            .values()
            .flat_map(|h| h.takes.iter().map(|(b, _)| b.as_str()))
            .collect();
        let keep: Vec<bool> = self
            .buckets
            .iter()
            .map(|b| {
                let remembers = b.expires_at.is_some() || b.expired > 0 || b.reclaimed > 0;
                let since = b.expires_at.unwrap_or(0).max(b.created_at);
                b.left > 0
                    || b.doomed > 0
                    || held.contains(b.id.as_str())
                    || (is_payment_bucket(&b.id)
                        && remembers
                        && now < since.saturating_add(PAYMENT_BUCKET_KEPT_SECS))
            })
            .collect();
        let mut flags = keep.into_iter();
        self.buckets.retain(|_| flags.next().unwrap_or(true));
    }

    /// Credits in, as one entry.
    pub fn credit_step(
        &mut self,
        entry_id: &str,
        kind: EntryKind,
        new: Bucket,
    ) -> Result<Step, Refusal> {
        let credited = self.credit(new)?;
        let moves = if credited.left > 0 {
            vec![(credited.bucket, credited.left)]
        } else {
            Vec::new()
        };
        Ok(Step::new(
            entry_id.to_owned(),
            kind,
            moves,
            -credited.to_debt,
        ))
    }

    /// A refund or dispute of `bucket`'s purchase takes `amount` back, as one entry.
    pub fn claw_back_step(
        &mut self,
        entry_id: &str,
        kind: EntryKind,
        bucket: &str,
        amount: i64,
        now: i64,
        order: &SpendOrder,
    ) -> Result<Vec<Step>, Refusal> {
        if amount <= 0 {
            return Err(Refusal::NotPositive);
        }
        // What expired of the payment's bucket is not taken again from the account's other
        // credits: it comes back (an `expiry_reversed` entry) and this entry takes it first.
        let mut steps = Vec::new();
        let mut takes = Vec::new();
        let mut wanted = amount;
        if let Some(own) = self.buckets.iter_mut().find(|b| b.id == bucket) {
            let back = own.expired.min(wanted);
            if back > 0 {
                own.expired -= back;
                own.reclaimed = own.reclaimed.saturating_add(back);
                steps.push(Step::new(
                    format!("unexpire:{entry_id}"),
                    EntryKind::ExpiryReversed,
                    vec![(bucket.to_owned(), back)],
                    0,
                ));
                takes.push((bucket.to_owned(), -back));
                wanted -= back;
            }
        }
        let mut debt = 0;
        if wanted > 0 {
            let (more, owed) = self.claw_back(bucket, wanted, now, order)?;
            takes.extend(more);
            debt = owed;
        }
        steps.push(Step::new(entry_id.to_owned(), kind, takes, debt));
        Ok(steps)
    }

    /// A failed refund or a won dispute gives `amount` back to its payment's bucket: the debt
    /// first; what the clawback had taken of expired credits expires again (a second entry);
    /// the rest goes to the bucket while it is live, otherwise to a bucket of its own that does
    /// not expire (`<bucket>:back`): credits taken from the account's live ones come back live.
    pub fn give_back_step(
        &mut self,
        entry_id: &str,
        kind: EntryKind,
        bucket: &str,
        amount: i64,
        now: i64,
    ) -> Result<Vec<Step>, Refusal> {
        if amount <= 0 {
            return Err(Refusal::NotPositive);
        }
        let Some(own) = self.buckets.iter().position(|b| b.id == bucket) else {
            let step =
                self.credit_step(entry_id, kind, Terms::paid().bucket(bucket, now, amount))?;
            return Ok(vec![step]);
        };
        let to_debt = amount.min(self.debt);
        self.debt -= to_debt;
        let rest = amount - to_debt;
        let again = rest.min(self.buckets[own].reclaimed);
        let live = rest - again;
        let mut moves = Vec::new();
        let mut steps = Vec::new();
        if again > 0 {
            let own = &mut self.buckets[own];
            own.reclaimed -= again;
            own.expired = own.expired.saturating_add(again);
            // In and out again: the entry gives them back, the next takes them as expired.
            moves.push((bucket.to_owned(), again));
            steps.push(Step::new(
                format!("reexpire:{entry_id}"),
                EntryKind::Expire,
                vec![(bucket.to_owned(), -again)],
                0,
            ));
        }
        if live > 0 {
            if self.buckets[own].live_at(now) {
                self.buckets[own].left += live;
                moves.push((bucket.to_owned(), live));
            } else {
                let back = format!("{bucket}:back");
                let credited = self.credit(Terms::paid().bucket(&back, now, live))?;
                moves.push((credited.bucket, credited.left));
            }
        }
        steps.insert(0, Step::new(entry_id.to_owned(), kind, moves, -to_debt));
        Ok(steps)
    }

    /// A spend, as one entry (refused whole when short).
    pub fn spend_step(
        &mut self,
        entry_id: &str,
        amount: i64,
        now: i64,
        order: &SpendOrder,
    ) -> Result<Step, Refusal> {
        let takes = self.spend(amount, now, order)?;
        Ok(Step::new(entry_id.to_owned(), EntryKind::Spend, takes, 0))
    }

    /// A hold, as one entry: its credits leave the balance until captured or given back.
    pub fn hold_step(
        &mut self,
        id: &str,
        amount: i64,
        now: i64,
        until: i64,
        order: &SpendOrder,
    ) -> Result<Step, Refusal> {
        let takes = self.hold(id, amount, now, until, order)?;
        let mut step = Step::new(format!("hold:{id}"), EntryKind::Hold, takes, 0);
        step.hold = Some(id.to_owned());
        Ok(step)
    }

    /// A capture, as one entry: what was not spent comes back to its buckets.
    /// Then what a rollover cap doomed of the credits given back expires (a second entry).
    pub fn capture_step(&mut self, id: &str, amount: i64, now: i64) -> Result<Vec<Step>, Refusal> {
        let (spent, back) = self.capture(id, amount, now)?;
        let doomed = self.expire_doomed(id, &back);
        let mut step = Step::new(format!("capture:{id}"), EntryKind::Capture, back, 0);
        step.hold = Some(id.to_owned());
        step.captured = Some(-spent.iter().map(|(_, n)| n).sum::<i64>());
        Ok(std::iter::once(step).chain(doomed).collect())
    }

    /// A release, as one entry: the hold comes back whole (then what a rollover cap doomed of
    /// it expires, a second entry).
    pub fn release_step(&mut self, id: &str) -> Result<Vec<Step>, Refusal> {
        let back = self.release(id)?;
        let doomed = self.expire_doomed(id, &back);
        let mut step = Step::new(format!("release:{id}"), EntryKind::Release, back, 0);
        step.hold = Some(id.to_owned());
        Ok(std::iter::once(step).chain(doomed).collect())
    }

    /// What a hold gave back (`back`) that a rollover cap doomed expires at once, as one entry.
    /// A doom no open hold can give back any more is dropped: what was spent stays spent.
    fn expire_doomed(&mut self, hold: &str, back: &Moves) -> Option<Step> {
        let mut moves = Vec::new();
        for (id, given) in back {
            if let Some(bucket) = self.buckets.iter_mut().find(|b| &b.id == id) {
                let gone = bucket.doomed.min(*given).min(bucket.left);
                if gone > 0 {
                    bucket.doomed -= gone;
                    bucket.left -= gone;
                    bucket.expired = bucket.expired.saturating_add(gone);
                    moves.push((id.clone(), -gone));
                }
            }
        }
        let held: std::collections::BTreeSet<String> = self
            .holds
            .values()
            .flat_map(|h| h.takes.iter().map(|(b, _)| b.clone()))
            .collect();
        for bucket in self.buckets.iter_mut().filter(|b| !held.contains(&b.id)) {
            bucket.doomed = 0;
        }
        (!moves.is_empty())
            .then(|| Step::new(format!("expire:held:{hold}"), EntryKind::Expire, moves, 0))
    }

    /// Takes `amount` (or, with `None`, all that is left) out of one bucket: a grant adjusted
    /// down, or voided. Never more than is left: what was spent stays spent.
    pub fn take_from_step(
        &mut self,
        entry_id: &str,
        kind: EntryKind,
        bucket: &str,
        amount: Option<i64>,
    ) -> Result<Step, Refusal> {
        let found = self
            .buckets
            .iter_mut()
            .find(|b| b.id == bucket)
            .ok_or(Refusal::NotEnoughLeft { left: 0 })?;
        let take = amount.unwrap_or(found.left);
        if take < 0 || take > found.left {
            return Err(Refusal::NotEnoughLeft { left: found.left });
        }
        found.left -= take;
        let moves = if take > 0 {
            vec![(bucket.to_owned(), -take)]
        } else {
            Vec::new()
        };
        Ok(Step::new(entry_id.to_owned(), kind, moves, 0))
    }

    /// The bucket of this id, if the wallet has it.
    pub fn bucket(&self, id: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.id == id)
    }
}

/// The terms of the bucket new credits make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub kind: BucketKind,
    pub priority: i32,
    pub expires_at: Option<i64>,
    /// Included credits only: what earlier periods' included credits keep at most when these
    /// come in (see [`Wallet::cap_rollover`]).
    pub rollover_cap: Option<i64>,
}

impl Terms {
    /// Bought credits: paid, priority 0, never expiring.
    pub fn paid() -> Self {
        Self {
            kind: BucketKind::Paid,
            priority: 0,
            expires_at: None,
            rollover_cap: None,
        }
    }

    /// Given credits that never expire.
    pub fn promotional() -> Self {
        Self {
            kind: BucketKind::Promotional,
            priority: 0,
            expires_at: None,
            rollover_cap: None,
        }
    }

    pub fn bucket(&self, id: &str, created_at: i64, left: i64) -> Bucket {
        Bucket {
            id: id.to_owned(),
            kind: self.kind,
            priority: self.priority,
            expires_at: self.expires_at,
            created_at,
            left,
            expired: 0,
            reclaimed: 0,
            doomed: 0,
            merged: false,
        }
    }
}

/// The bucket of an invoice's included credits: paid, expiring at the end of the period they
/// pay for when the plan says so (and that end is known; an invoice paid late keeps its credits
/// a day at least), otherwise rolling over.
pub fn included_terms(
    expire: bool,
    period_end: Option<i64>,
    rollover_cap: Option<i64>,
    now: i64,
) -> Terms {
    Terms {
        expires_at: period_end
            .filter(|_| expire)
            .map(|end| end.max(now.saturating_add(LATE_INVOICE_SECS))),
        rollover_cap: rollover_cap.filter(|_| !expire),
        ..Terms::paid()
    }
}

/// How long at least the included credits of an invoice paid after its period keep.
pub const LATE_INVOICE_SECS: i64 = 24 * 3600;

/// The prefix of included credits' buckets.
pub const INCLUDED_BUCKET_PREFIX: &str = "included:";

/// How long an empty payment bucket with an expiry is kept after it (longer than a card
/// dispute can come).
pub const PAYMENT_BUCKET_KEPT_SECS: i64 = 180 * 24 * 3600;

/// A purchase's or an invoice's bucket: a refund or dispute of its payment reaches it.
pub fn is_payment_bucket(id: &str) -> bool {
    id.starts_with("purchase:") || id.starts_with(INCLUDED_BUCKET_PREFIX)
}

impl Wallet {
    /// Before a new period's included credits come in: what earlier included credits hold
    /// beyond `cap`, counting what reservations hold of them, expires as one `expire` entry:
    /// the oldest buckets' first; what reservations hold of the rest expires when they give it
    /// back (recorded as `doomed`). `None`: within the cap.
    pub fn cap_rollover(&mut self, cap: i64, now: i64, entry_id: &str) -> Option<Step> {
        let included = |b: &Bucket| b.id.starts_with(INCLUDED_BUCKET_PREFIX) && b.live_at(now);
        let rolling: std::collections::BTreeSet<String> = self
            .buckets
            .iter()
            .filter(|b| included(b))
            .map(|b| b.id.clone())
            .collect();
        let left: i64 = self
            .buckets
            .iter()
            .filter(|b| included(b))
            .map(|b| b.left)
            .sum();
        let held: i64 = self
            .holds
            .values()
            .flat_map(|h| h.takes.iter())
            .filter(|(b, _)| rolling.contains(b))
            .map(|(_, n)| n)
            .sum();
        let mut excess = left.saturating_add(held).saturating_sub(cap.max(0));
        if excess <= 0 {
            return None;
        }
        let mut oldest: Vec<&mut Bucket> = self
            .buckets
            .iter_mut()
            .filter(|b| included(b) && b.left > 0)
            .collect();
        oldest.sort_by_key(|b| (b.created_at, b.id.clone()));
        let mut moves = Vec::new();
        for bucket in oldest {
            if excess == 0 {
                break;
            }
            let take = bucket.left.min(excess);
            bucket.left -= take;
            bucket.expired = bucket.expired.saturating_add(take);
            excess -= take;
            moves.push((bucket.id.clone(), -take));
        }
        // The rest is held: it expires when its reservations give it back.
        let mut doomed = 0;
        let mut held_by_bucket: BTreeMap<String, i64> = BTreeMap::new();
        for (bucket, gave) in self.holds.values().flat_map(|h| h.takes.iter()) {
            if rolling.contains(bucket) {
                *held_by_bucket.entry(bucket.clone()).or_default() += gave;
            }
        }
        let mut oldest: Vec<&mut Bucket> = self
            .buckets
            .iter_mut()
            .filter(|b| held_by_bucket.contains_key(&b.id))
            .collect();
        oldest.sort_by_key(|b| (b.created_at, b.id.clone()));
        for bucket in oldest {
            let room = held_by_bucket
                .get(&bucket.id)
                .copied()
                .unwrap_or(0)
                .saturating_sub(bucket.doomed);
            let doom = room.min(excess).max(0);
            bucket.doomed += doom;
            excess -= doom;
            doomed += doom;
        }
        let mut step = Step::new(entry_id.to_owned(), EntryKind::Expire, moves, 0);
        step.doomed = doomed;
        Some(step)
    }
}

/// The bucket an account's balance from before buckets became.
pub const LEGACY_BUCKET: &str = "balance";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bucket(
        id: &str,
        kind: BucketKind,
        priority: i32,
        expires_at: Option<i64>,
        left: i64,
    ) -> Bucket {
        Bucket {
            id: id.into(),
            kind,
            priority,
            expires_at,
            created_at: 0,
            left,
            expired: 0,
            reclaimed: 0,
            doomed: 0,
            merged: false,
        }
    }

    #[test]
    fn a_spend_takes_by_priority_then_expiry_then_promotional_then_oldest() {
        let mut wallet = Wallet::default();
        for b in [
            bucket("paid", BucketKind::Paid, 0, None, 100),
            bucket("promo-late", BucketKind::Promotional, 0, Some(500), 100),
            bucket("promo-soon", BucketKind::Promotional, 0, Some(200), 100),
            bucket("vip", BucketKind::Paid, 5, None, 10),
        ] {
            wallet.credit(b).expect("credited");
        }
        let takes = wallet
            .spend(250, 100, &SpendOrder::default())
            .expect("spent");
        assert_eq!(
            takes,
            vec![
                ("vip".to_owned(), -10),
                ("promo-soon".to_owned(), -100),
                ("promo-late".to_owned(), -100),
                ("paid".to_owned(), -40),
            ]
        );
        // Refused whole when short; expired credits never count.
        assert_eq!(
            wallet.spend(61, 100, &SpendOrder::default()),
            Err(Refusal::Short { available: 60 })
        );
        let mut expired = Wallet::default();
        expired
            .credit(bucket("g", BucketKind::Promotional, 0, Some(50), 30))
            .expect("credited");
        assert_eq!(expired.available(50), 0);
        assert_eq!(expired.expire(50), vec![("g".to_owned(), -30)]);
        assert!(expired.expire(60).is_empty(), "expired once");
    }

    #[test]
    fn a_refund_claws_back_from_its_purchase_first_then_the_rest_then_as_debt() {
        let order = SpendOrder::default();
        let mut wallet = Wallet::default();
        wallet
            .credit(bucket("purchase:pi", BucketKind::Paid, 0, None, 100))
            .expect("in");
        wallet
            .credit(bucket("grant:g", BucketKind::Promotional, 0, None, 50))
            .expect("in");
        wallet.spend(80, 1, &order).expect("spent");
        // 50 promotional went first, then 30 paid: the purchase has 70 left.
        let (takes, debt) = wallet
            .claw_back("purchase:pi", 100, 1, &order)
            .expect("clawed");
        assert_eq!(takes, vec![("purchase:pi".to_owned(), -70)]);
        assert_eq!(debt, 30);
        assert_eq!(wallet.balance(1), -30);
        // New credits pay the debt first.
        assert_eq!(
            wallet
                .credit(bucket("grant:h", BucketKind::Promotional, 0, None, 40))
                .map(|c| (c.to_debt, c.left)),
            Ok((30, 10))
        );
        assert_eq!(wallet.balance(1), 10);
    }

    #[test]
    fn a_capture_spends_at_most_what_was_held_and_gives_the_rest_back() {
        let order = SpendOrder::default();
        let mut wallet = Wallet::default();
        wallet
            .credit(bucket("a", BucketKind::Promotional, 0, Some(100), 30))
            .expect("in");
        wallet
            .credit(bucket("b", BucketKind::Paid, 0, None, 100))
            .expect("in");
        wallet.hold("h", 50, 10, 200, &order).expect("held");
        assert_eq!(wallet.available(10), 80, "held credits are not spendable");
        assert_eq!(wallet.capture("h", 60, 20), Err(Refusal::MoreThanHeld));
        // "a" expires at 100 while held: still capturable until the hold ends.
        let (spent, back) = wallet.capture("h", 40, 150).expect("captured");
        assert_eq!(spent, vec![("a".to_owned(), -30), ("b".to_owned(), -10)]);
        assert_eq!(back, vec![("b".to_owned(), 10)]);
        assert_eq!(
            wallet.capture("h", 1, 150),
            Err(Refusal::UnknownHold),
            "captured once"
        );
        wallet.hold("late", 10, 150, 160, &order).expect("held");
        assert_eq!(wallet.capture("late", 5, 160), Err(Refusal::HoldEnded));
        assert_eq!(wallet.ended_holds(160), vec!["late".to_owned()]);
        assert_eq!(wallet.release("late"), Ok(vec![("b".to_owned(), 10)]));
    }

    #[test]
    fn rolled_over_included_credits_beyond_the_cap_expire_oldest_first() {
        let mut wallet = Wallet::default();
        for (id, at, left) in [
            ("included:a", 1, 300),
            ("included:b", 2, 400),
            ("grant:g", 0, 50),
        ] {
            wallet
                .credit(Bucket {
                    created_at: at,
                    ..bucket(id, BucketKind::Paid, 0, None, left)
                })
                .expect("in");
        }
        assert_eq!(wallet.cap_rollover(1000, 5, "cap:1"), None);
        let step = wallet.cap_rollover(250, 5, "cap:2").expect("over the cap");
        assert_eq!(
            step.moves,
            vec![
                ("included:a".to_owned(), -300),
                ("included:b".to_owned(), -150)
            ]
        );
        assert_eq!((step.kind, step.amount), (EntryKind::Expire, -450));
        assert_eq!(
            wallet.balance(5),
            300,
            "250 included kept, the grant untouched"
        );
    }

    #[test]
    fn a_balance_moved_by_the_version_before_buckets_is_folded_in() {
        let mut wallet = Wallet::from_stored_balance(100, 0);
        assert_eq!(wallet.fold_outside_change(100, 1), 0);
        // An old purchase added 50; an old spend took 120.
        assert_eq!(wallet.fold_outside_change(150, 1), 50);
        assert_eq!(wallet.total(), 150);
        assert_eq!(wallet.fold_outside_change(30, 1), -120);
        assert_eq!((wallet.total(), wallet.debt), (30, 0));
        assert_eq!(wallet.fold_outside_change(-10, 1), -40);
        assert_eq!((wallet.total(), wallet.debt), (-10, 10));
    }

    #[test]
    fn a_refund_after_its_credits_expired_takes_only_what_did_not() {
        let order = SpendOrder::default();
        let mut wallet = Wallet::default();
        wallet
            .credit(bucket("included:pi", BucketKind::Paid, 0, Some(10), 500))
            .expect("in");
        wallet
            .credit(bucket("purchase:p2", BucketKind::Paid, 0, None, 300))
            .expect("in");
        wallet
            .spend(200, 5, &order)
            .expect("spent from the included first");
        let expired = wallet.settle(10, 1, 20);
        assert_eq!(expired[0].amount, -300);
        wallet.prune(10);
        assert!(
            wallet.bucket("included:pi").is_some(),
            "kept for its payment"
        );
        // The whole invoice refunded: its 300 expired come back to be taken; the 200 spent
        // come from the balance, as any refund of spent credits.
        let steps = wallet
            .claw_back_step(
                "refund:pi",
                EntryKind::Refund,
                "included:pi",
                500,
                11,
                &order,
            )
            .expect("clawed");
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (steps[0].kind, steps[0].amount),
            (EntryKind::ExpiryReversed, 300)
        );
        assert_eq!((steps[1].amount, steps[1].debt), (-500, 0));
        assert_eq!(
            wallet.total(),
            100,
            "not 300 less 500: what expired is not taken twice"
        );
        assert_eq!(wallet.bucket("purchase:p2").map(|b| b.left), Some(100));
    }

    #[test]
    fn a_won_dispute_gives_back_live_what_was_live_and_expired_what_had_expired() {
        let order = SpendOrder::default();
        // Spent before the expiry: the dispute takes from the purchase; won, it comes back live
        // though the invoice's bucket has expired.
        let mut wallet = Wallet::default();
        wallet
            .credit(bucket("included:pi", BucketKind::Paid, 0, Some(10), 500))
            .expect("in");
        wallet
            .credit(bucket("purchase:p", BucketKind::Paid, 0, None, 500))
            .expect("in");
        wallet.spend(500, 5, &order).expect("the included first");
        wallet.settle(20, 1, 20);
        wallet
            .claw_back_step(
                "lost",
                EntryKind::DisputeWithdrawn,
                "included:pi",
                500,
                20,
                &order,
            )
            .expect("withdrawn");
        assert_eq!(wallet.balance(20), 0);
        let back = wallet
            .give_back_step("won", EntryKind::DisputeReinstated, "included:pi", 500, 30)
            .expect("reinstated");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].moves, vec![("included:pi:back".to_owned(), 500)]);
        assert_eq!(wallet.balance(40), 500, "live, and it stays live");
        assert!(wallet.settle(40, 2, 20).is_empty());

        // Nothing spent, all expired: the dispute takes the expired credits; won, they expire
        // again.
        let mut idle = Wallet::default();
        idle.credit(bucket("included:pi", BucketKind::Paid, 0, Some(10), 500))
            .expect("in");
        idle.settle(20, 1, 20);
        idle.claw_back_step(
            "lost",
            EntryKind::DisputeWithdrawn,
            "included:pi",
            500,
            20,
            &order,
        )
        .expect("withdrawn");
        assert_eq!((idle.balance(20), idle.debt), (0, 0), "nothing taken twice");
        let back = idle
            .give_back_step("won", EntryKind::DisputeReinstated, "included:pi", 500, 30)
            .expect("reinstated");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].amount + back[1].amount, 0, "in and out again");
        assert_eq!(idle.balance(40), 0);
        assert_eq!(idle.total(), 0);
    }

    #[test]
    fn an_account_at_its_bound_puts_credits_of_the_same_terms_together() {
        let mut wallet = Wallet::default();
        for i in 0..MAX_BUCKETS + 500 {
            wallet
                .credit(bucket(
                    &format!("grant:{i}"),
                    BucketKind::Promotional,
                    1,
                    Some(99),
                    1,
                ))
                .expect("in");
        }
        assert_eq!(wallet.buckets.len(), MAX_BUCKETS);
        assert_eq!(wallet.total(), (MAX_BUCKETS + 500) as i64);
        assert_eq!(
            wallet.credit(bucket("grant:new", BucketKind::Promotional, 2, Some(99), 1)),
            Err(Refusal::TooManyBuckets),
            "new promotional terms are refused at the bound"
        );
        let paid = wallet
            .credit(bucket("purchase:pi", BucketKind::Paid, 0, None, 5))
            .expect("paid credits are never refused");
        assert_eq!(paid.bucket, "purchase:pi");
        assert_eq!(wallet.buckets.len(), MAX_BUCKETS + 1);
    }

    /// One step of an account's life.
    #[derive(Clone, Debug)]
    enum Op {
        Grant {
            left: i64,
            priority: i32,
            expires_in: Option<i64>,
            promo: bool,
        },
        Spend(i64),
        Hold {
            amount: i64,
            ttl: i64,
        },
        Capture {
            which: usize,
            amount: i64,
        },
        Release(usize),
        Expire,
        Refund {
            which: usize,
            amount: i64,
        },
        Tick(i64),
        /// A new period's included credits cap what earlier ones keep.
        Cap(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                1i64..500,
                0i32..3,
                proptest::option::of(1i64..50),
                any::<bool>()
            )
                .prop_map(|(left, priority, expires_in, promo)| Op::Grant {
                    left,
                    priority,
                    expires_in,
                    promo
                }),
            (1i64..400).prop_map(Op::Spend),
            (1i64..300, 1i64..40).prop_map(|(amount, ttl)| Op::Hold { amount, ttl }),
            (0usize..8, 0i64..300).prop_map(|(which, amount)| Op::Capture { which, amount }),
            (0usize..8).prop_map(Op::Release),
            Just(Op::Expire),
            (0usize..8, 1i64..300).prop_map(|(which, amount)| Op::Refund { which, amount }),
            (0i64..30).prop_map(Op::Tick),
            (0i64..400).prop_map(Op::Cap),
        ]
    }

    proptest! {
        /// Any sequence of grants, spends, holds, captures, releases, expiries, refunds and
        /// clock moves: every unit the entries moved is in a bucket, a hold or spent; no bucket
        /// goes below zero; nothing is taken from an expired bucket; a refused spend takes
        /// nothing.
        #[test]
        fn the_ledger_explains_every_unit_whatever_happens(ops in proptest::collection::vec(op(), 1..60)) {
            let order = SpendOrder::default();
            let mut wallet = Wallet::default();
            let mut now = 1_000i64;
            // The ledger: what came in, less what left (spends, captures, expiries, clawbacks).
            let mut entries: i64 = 0;
            let mut holds: Vec<String> = Vec::new();
            let mut sources: Vec<String> = Vec::new();
            for (n, step) in ops.into_iter().enumerate() {
                match step {
                    Op::Grant { left, priority, expires_in, promo } => {
                        // Every other source is an invoice's included credits.
                        let id = if n % 2 == 0 { format!("{INCLUDED_BUCKET_PREFIX}{n}") } else { format!("in:{n}") };
                        let kind = if promo { BucketKind::Promotional } else { BucketKind::Paid };
                        wallet.credit(Bucket { id: id.clone(), kind, priority, expires_at: expires_in.map(|s| now + s), created_at: now, left, expired: 0, reclaimed: 0, doomed: 0, merged: false }).expect("credited");
                        entries += left;
                        sources.push(id);
                    }
                    Op::Spend(amount) => {
                        let before = wallet.clone();
                        match wallet.spend(amount, now, &order) {
                            Ok(takes) => {
                                prop_assert_eq!(takes.iter().map(|(_, t)| -t).sum::<i64>(), amount);
                                for (id, _) in &takes {
                                    let bucket = before.buckets.iter().find(|b| &b.id == id).expect("a bucket");
                                    prop_assert!(bucket.live_at(now), "never from an expired bucket");
                                }
                                entries -= amount;
                            }
                            Err(Refusal::Short { available }) => {
                                prop_assert!(available < amount);
                                prop_assert_eq!(&wallet, &before, "a refused spend takes nothing");
                            }
                            Err(other) => prop_assert!(false, "{other:?}"),
                        }
                    }
                    Op::Hold { amount, ttl } => {
                        let id = format!("hold:{n}");
                        if wallet.hold(&id, amount, now, now + ttl, &order).is_ok() {
                            holds.push(id);
                        }
                    }
                    Op::Capture { which, amount } => {
                        if let Some(id) = holds.get(which % holds.len().max(1)).cloned() {
                            if let Ok(steps) = wallet.capture_step(&id, amount, now) {
                                prop_assert_eq!(steps[0].captured, Some(amount));
                                entries -= amount;
                                // What a rollover cap doomed of the rest expires.
                                entries += steps[1..].iter().map(|s| s.amount).sum::<i64>();
                            }
                        }
                    }
                    Op::Release(which) => {
                        if let Some(id) = holds.get(which % holds.len().max(1)).cloned() {
                            if let Ok(steps) = wallet.release_step(&id) {
                                entries += steps[1..].iter().map(|s| s.amount).sum::<i64>();
                            }
                        }
                    }
                    Op::Expire => {
                        for id in wallet.ended_holds(now) {
                            let steps = wallet.release_step(&id).expect("an ended hold");
                            entries += steps[1..].iter().map(|s| s.amount).sum::<i64>();
                        }
                        let gone = wallet.expire(now);
                        entries += gone.iter().map(|(_, t)| t).sum::<i64>();
                        prop_assert!(wallet.expire(now).is_empty(), "expired once");
                    }
                    Op::Refund { which, amount } => {
                        if let Some(id) = sources.get(which % sources.len().max(1)).cloned() {
                            let steps = wallet.claw_back_step("r", EntryKind::Refund, &id, amount, now, &order).expect("clawed");
                            let last = steps.last().expect("the refund's own entry");
                            prop_assert_eq!(last.amount, -amount, "the payment's entry moves its whole share");
                            for step in &steps {
                                prop_assert_eq!(step.moves.iter().map(|(_, d)| d).sum::<i64>() - step.debt, step.amount);
                                entries += step.amount;
                            }
                        }
                    }
                    Op::Tick(by) => {
                        now += by;
                        wallet.prune(now);
                    }
                    Op::Cap(cap) => {
                        if let Some(step) = wallet.cap_rollover(cap, now, "cap") {
                            entries += step.amount;
                        }
                        let kept: i64 = wallet.buckets.iter().filter(|b| b.id.starts_with(INCLUDED_BUCKET_PREFIX) && b.live_at(now)).map(|b| b.left - b.doomed).sum::<i64>()
                            + wallet.holds.values().flat_map(|h| h.takes.iter()).filter(|(b, _)| wallet.bucket(b).is_some_and(|k| k.id.starts_with(INCLUDED_BUCKET_PREFIX) && k.live_at(now))).map(|(_, n)| n).sum::<i64>();
                        prop_assert!(kept <= cap, "kept {kept} over the cap {cap}");
                    }
                }
                prop_assert!(wallet.buckets.iter().all(|b| b.left >= 0), "{wallet:?}");
                prop_assert!(wallet.debt >= 0);
                let in_buckets: i64 = wallet.buckets.iter().map(|b| b.left).sum();
                let held: i64 = wallet.holds.values().map(Hold::amount).sum();
                prop_assert_eq!(in_buckets + held - wallet.debt, entries, "every unit explained");
            }
        }
    }
}
