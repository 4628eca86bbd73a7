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

/// Paid credits were bought; promotional ones were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketKind {
    Paid,
    Promotional,
}

/// Credits of one origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// The entry that brought the credits in (`purchase:<intent>`, `grant:<key>`, …), or for
    /// merged grants, the first of them.
    pub id: String,
    pub kind: BucketKind,
    /// Higher is taken first.
    pub priority: i32,
    /// When it expires (Unix seconds); `None`: never.
    pub expires_at: Option<i64>,
    /// When it was made (Unix seconds): the oldest goes first among equals.
    pub created_at: i64,
    /// What is left of it (never below zero).
    pub left: i64,
}

impl Bucket {
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// Whether a new grant of these terms joins this bucket rather than making one (the bound
    /// on the buckets an account has: grants of one kind, priority and expiry share a bucket).
    pub fn merges_with(&self, kind: BucketKind, priority: i32, expires_at: Option<i64>) -> bool {
        self.kind == kind
            && self.priority == priority
            && self.expires_at == expires_at
            && kind == BucketKind::Promotional
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
#[serde(rename_all = "camelCase")]
pub struct Wallet {
    pub buckets: Vec<Bucket>,
    /// Taken back (a refund or dispute) beyond what the buckets held: paid first by the next
    /// credits that come in.
    #[serde(default)]
    pub debt: i64,
    #[serde(default)]
    pub holds: BTreeMap<String, Hold>,
}

/// Credits set aside for work whose cost is known later: what each bucket gave, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// Per bucket id, what it gave.
    pub takes: Vec<(String, i64)>,
    /// When the hold returns by itself (Unix seconds).
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
}

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

    /// Credits come in: the debt is paid first, the rest makes a bucket (or joins one of the
    /// same promotional terms). What the debt took, and what the bucket got.
    pub fn credit(&mut self, new: Bucket) -> Result<(i64, i64), Refusal> {
        if new.left <= 0 {
            return Err(Refusal::NotPositive);
        }
        let to_debt = new.left.min(self.debt);
        self.debt -= to_debt;
        let left = new.left - to_debt;
        if let Some(same) = self.buckets.iter_mut().find(|b| b.id == new.id) {
            if same.kind != new.kind {
                return Err(Refusal::Taken);
            }
            same.left += left;
        } else if let Some(joined) = self
            .buckets
            .iter_mut()
            .find(|b| b.merges_with(new.kind, new.priority, new.expires_at))
        {
            joined.left += left;
        } else {
            self.buckets.push(Bucket { left, ..new });
        }
        Ok((to_debt, left))
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
            wallet.credit(bucket("grant:h", BucketKind::Promotional, 0, None, 40)),
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
    fn grants_of_the_same_terms_share_a_bucket() {
        let mut wallet = Wallet::default();
        for i in 0..1000 {
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
        assert_eq!(wallet.buckets.len(), 1);
        assert_eq!(wallet.buckets[0].left, 1000);
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
                        let id = format!("in:{n}");
                        let kind = if promo { BucketKind::Promotional } else { BucketKind::Paid };
                        wallet.credit(Bucket { id: id.clone(), kind, priority, expires_at: expires_in.map(|s| now + s), created_at: now, left }).expect("credited");
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
                            if let Ok((spent, _)) = wallet.capture(&id, amount, now) {
                                prop_assert_eq!(spent.iter().map(|(_, t)| -t).sum::<i64>(), amount);
                                entries -= amount;
                            }
                        }
                    }
                    Op::Release(which) => {
                        if let Some(id) = holds.get(which % holds.len().max(1)).cloned() {
                            let _ = wallet.release(&id);
                        }
                    }
                    Op::Expire => {
                        for id in wallet.ended_holds(now) {
                            wallet.release(&id).expect("an ended hold");
                        }
                        let gone = wallet.expire(now);
                        entries += gone.iter().map(|(_, t)| t).sum::<i64>();
                        prop_assert!(wallet.expire(now).is_empty(), "expired once");
                    }
                    Op::Refund { which, amount } => {
                        if let Some(id) = sources.get(which % sources.len().max(1)).cloned() {
                            let (takes, debt) = wallet.claw_back(&id, amount, now, &order).expect("clawed");
                            prop_assert_eq!(takes.iter().map(|(_, t)| -t).sum::<i64>() + debt, amount);
                            entries -= amount;
                        }
                    }
                    Op::Tick(by) => now += by,
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
