//! The ledger's invariants, over a snapshot of every balance, entry and payment: each balance
//! equals the sum of its user's entries, each payment's entries add up to what it says it moved
//! (`applied`), and that is what the ledger's rules say its facts should move. The last check
//! catches a payment whose clawback does not match its refunded amount or its dispute.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::domain::buckets::{Wallet, LEGACY_BUCKET};
use crate::domain::ledger::{net_credits, PaymentRecord};
use crate::domain::records::UserId;

/// One immutable ledger entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The scope's key prefix (empty for the default project in the deployment's mode).
    pub scope: String,
    pub user: UserId,
    pub entry_id: String,
    pub amount: i64,
    /// The payment it belongs to, for purchases, refunds and disputes.
    pub intent_id: Option<String>,
    /// Its kind's stored name.
    pub kind: String,
    /// When it was written (milliseconds).
    pub created_at_ms: i64,
    /// The buckets it moved (id, gained or lost, the bucket's expiry); `None` for an entry
    /// written before buckets existed.
    pub moves: Option<Vec<(String, i64, Option<i64>)>>,
    /// What it added to the account's debt (negative: paid).
    pub debt: i64,
}

impl LedgerEntry {
    /// An entry of the scope, account, id and amount, with nothing else known.
    pub fn plain(scope: &str, user: UserId, entry_id: &str, amount: i64) -> Self {
        Self {
            scope: scope.to_owned(),
            user,
            entry_id: entry_id.to_owned(),
            amount,
            intent_id: None,
            kind: String::new(),
            created_at_ms: 0,
            moves: None,
            debt: 0,
        }
    }
}

/// Everything the checker looks at, decoded.
#[derive(Clone, Debug, Default)]
pub struct LedgerSnapshot {
    /// Scope prefix, user, balance.
    pub balances: Vec<(String, UserId, i64)>,
    pub entries: Vec<LedgerEntry>,
    /// Scope prefix, payment.
    pub payments: Vec<(String, PaymentRecord)>,
    /// Scope prefix, user, the wallet its balance item holds (accounts written since buckets).
    pub wallets: Vec<(String, UserId, Wallet)>,
    /// Items that could not be decoded, each with the attribute at fault.
    pub unreadable: Vec<String>,
    /// The balance changed while the read was made (read again after its entries): a write
    /// landed meanwhile, so the read may hold half of it.
    pub moving: bool,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InvariantReport {
    pub users: usize,
    pub payments: usize,
    pub entries: usize,
    /// One sentence per difference found; empty when the ledger adds up.
    pub violations: Vec<String>,
}

impl InvariantReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Where a ledger check in segments stands: the pass under way (its segment and the key its
/// last page ended at), and the accounts that were changing too fast to judge, checked again
/// first by the next run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckCursor {
    /// When the pass began (Unix milliseconds).
    pub started_ms: i64,
    pub segment: u32,
    /// The key (pk, sk) the segment's last page ended at; `None` at the segment's start.
    #[serde(default)]
    pub after: Option<(String, String)>,
    /// Accounts judged in this pass so far.
    #[serde(default)]
    pub accounts: u64,
    /// Accounts found broken in this pass so far.
    #[serde(default)]
    pub violations: u64,
    /// Accounts (scope prefix, account id) left to judge again: they moved between reads.
    #[serde(default)]
    pub busy: Vec<(String, String)>,
    /// The last account judged (an account whose items span pages is judged once).
    #[serde(default)]
    pub last_judged: Option<(String, String)>,
}

/// What one account's reads came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    /// The same items read twice, and they do not add up: the differences.
    Broken(Vec<String>),
    /// The items changed between every pair of reads: judged again later.
    Busy,
}

/// Judges an account from its successive reads (each a snapshot of its balance, entries and
/// payments): it holds as soon as one read adds up; it is broken only when two reads in a row
/// found the very same items and they do not add up (a write in flight between a balance and
/// its entry, which a non-transactional read can see half of, never is).
///
/// An account that keeps moving is broken too when `STEADY_READS` reads in a row, each of other
/// items, are off by the very same amounts: a write in flight shows its own amount, once.
pub fn judge(reads: &[LedgerSnapshot]) -> Verdict {
    let mut last: Option<(String, Vec<String>)> = None;
    let mut offs: Vec<BTreeMap<String, i128>> = Vec::new();
    for read in reads {
        let report = check(read);
        if report.is_clean() {
            return Verdict::Holds;
        }
        let print = fingerprint(read);
        if let Some((previous, _)) = &last {
            if *previous == print {
                return Verdict::Broken(report.violations);
            }
        }
        // Only reads during which the balance stood still count towards a steady difference.
        if read.moving {
            offs.clear();
        } else {
            offs.push(discrepancies(read));
        }
        let steady = offs.len() >= STEADY_READS
            && offs[offs.len() - STEADY_READS..]
                .windows(2)
                .all(|pair| pair[0] == pair[1]);
        if steady {
            return Verdict::Broken(report.violations);
        }
        last = Some((print, report.violations));
    }
    Verdict::Busy
}

/// Reads in a row off by the same amounts that make a moving account broken.
pub const STEADY_READS: usize = 3;

/// By how much each balance and payment of a read is off (only the ones that are).
fn discrepancies(read: &LedgerSnapshot) -> BTreeMap<String, i128> {
    let mut sums: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    let mut moved: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    for entry in &read.entries {
        *sums.entry((&entry.scope, entry.user.as_str())).or_default() += i128::from(entry.amount);
        if let Some(intent) = &entry.intent_id {
            *moved.entry((&entry.scope, intent)).or_default() += i128::from(entry.amount);
        }
    }
    let mut off = BTreeMap::new();
    for (scope, user, balance) in &read.balances {
        let sum = sums
            .get(&(scope.as_str(), user.as_str()))
            .copied()
            .unwrap_or(0);
        if i128::from(*balance) != sum {
            off.insert(
                format!("balance {scope}{}", user.as_str()),
                i128::from(*balance) - sum,
            );
        }
    }
    off.extend(bucket_discrepancies(read));
    for (scope, payment) in &read.payments {
        let by_entries = moved
            .get(&(scope.as_str(), payment.intent_id.as_str()))
            .copied()
            .unwrap_or(0);
        if by_entries != i128::from(payment.applied) {
            off.insert(
                format!("payment {scope}{}", payment.intent_id),
                by_entries - i128::from(payment.applied),
            );
        }
    }
    off
}

/// Where each account's buckets disagree with its entries, by how much: the balance against its
/// buckets less debt, each bucket (and the debt) against the moves its entries recorded, each
/// entry's amount against its own moves, and any spend or hold that took from a bucket at or
/// after its expiry (off by what it took).
pub fn bucket_discrepancies(read: &LedgerSnapshot) -> BTreeMap<String, i128> {
    let mut off = BTreeMap::new();
    let stored: BTreeMap<(&str, &str), i64> = read
        .balances
        .iter()
        .map(|(s, u, b)| ((s.as_str(), u.as_str()), *b))
        .collect();
    for (scope, user, wallet) in &read.wallets {
        let account = format!("{scope}USER#{}", user.as_str());
        let mut buckets: BTreeMap<&str, i128> = BTreeMap::new();
        let mut debt: i128 = 0;
        let mut legacy: i128 = 0;
        for entry in read
            .entries
            .iter()
            .filter(|e| e.scope == *scope && e.user == *user)
        {
            let Some(moves) = &entry.moves else {
                legacy += i128::from(entry.amount);
                continue;
            };
            let moved: i128 = moves.iter().map(|(_, d, _)| i128::from(*d)).sum();
            if moved - i128::from(entry.debt) != i128::from(entry.amount) {
                off.insert(
                    format!("entry {account}/{} against its moves", entry.entry_id),
                    i128::from(entry.amount) - moved + i128::from(entry.debt),
                );
            }
            debt += i128::from(entry.debt);
            let takes = matches!(entry.kind.as_str(), "spend" | "hold");
            for (bucket, d, expires) in moves {
                *buckets.entry(bucket.as_str()).or_default() += i128::from(*d);
                if takes && *d < 0 && expires.is_some_and(|at| entry.created_at_ms / 1000 >= at) {
                    off.insert(
                        format!(
                            "entry {account}/{} took from {bucket} after it expired",
                            entry.entry_id
                        ),
                        i128::from(*d),
                    );
                }
            }
        }
        if legacy >= 0 {
            *buckets.entry(LEGACY_BUCKET).or_default() += legacy;
        } else {
            debt -= legacy;
        }
        for bucket in &wallet.buckets {
            buckets.entry(bucket.id.as_str()).or_default();
        }
        for (id, by_entries) in buckets {
            let left = wallet.bucket(id).map_or(0, |b| i128::from(b.left));
            if left != by_entries {
                off.insert(format!("bucket {id} of {account}"), left - by_entries);
            }
        }
        if i128::from(wallet.debt) != debt {
            off.insert(format!("debt of {account}"), i128::from(wallet.debt) - debt);
        }
        let balance = stored
            .get(&(scope.as_str(), user.as_str()))
            .copied()
            .unwrap_or(0);
        if wallet.total() != balance {
            off.insert(
                format!("balance of {account} against its buckets"),
                i128::from(balance) - i128::from(wallet.total()),
            );
        }
    }
    off
}

/// What a read saw, in a stable order: equal for two reads of the same items.
fn fingerprint(read: &LedgerSnapshot) -> String {
    let mut balances: Vec<String> = read
        .balances
        .iter()
        .map(|(s, u, b)| format!("{s}|{}|{b}", u.as_str()))
        .collect();
    balances.sort();
    let mut entries: Vec<String> = read
        .entries
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}|{}",
                e.scope,
                e.user.as_str(),
                e.entry_id,
                e.amount
            )
        })
        .collect();
    entries.sort();
    let mut payments: Vec<String> = read
        .payments
        .iter()
        .map(|(s, p)| format!("{s}|{}|{}|{}", p.intent_id, p.applied, p.rev))
        .collect();
    payments.sort();
    let mut wallets: Vec<String> = read
        .wallets
        .iter()
        .map(|(s, u, w)| format!("{s}|{}|{w:?}", u.as_str()))
        .collect();
    wallets.sort();
    let mut unreadable = read.unreadable.clone();
    unreadable.sort();
    format!("{balances:?}{entries:?}{payments:?}{wallets:?}{unreadable:?}")
}

pub fn check(snapshot: &LedgerSnapshot) -> InvariantReport {
    let mut report = InvariantReport {
        entries: snapshot.entries.len(),
        payments: snapshot.payments.len(),
        violations: snapshot.unreadable.clone(),
        ..InvariantReport::default()
    };
    type Account<'a> = (&'a str, &'a UserId);
    let mut sums: BTreeMap<Account<'_>, i128> = BTreeMap::new();
    let mut by_intent: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    for entry in &snapshot.entries {
        *sums.entry((&entry.scope, &entry.user)).or_default() += i128::from(entry.amount);
        if let Some(intent) = &entry.intent_id {
            *by_intent
                .entry((entry.scope.as_str(), intent.as_str()))
                .or_default() += i128::from(entry.amount);
        }
    }
    let balances: BTreeMap<Account<'_>, i64> = snapshot
        .balances
        .iter()
        .map(|(scope, user, balance)| ((scope.as_str(), user), *balance))
        .collect();
    let users: BTreeSet<Account<'_>> = balances.keys().chain(sums.keys()).copied().collect();
    report.users = users.len();
    for account in users {
        let balance = balances.get(&account).copied().unwrap_or(0);
        let sum = sums.get(&account).copied().unwrap_or(0);
        if i128::from(balance) != sum {
            report.violations.push(format!(
                "{}USER#{}: balance {balance} but its entries add up to {sum}",
                account.0,
                account.1.as_str()
            ));
        }
    }
    for (what, by) in bucket_discrepancies(snapshot) {
        report.violations.push(format!("{what}: off by {by}"));
    }
    let mut known = BTreeSet::new();
    for (scope, payment) in &snapshot.payments {
        let key = (scope.as_str(), payment.intent_id.as_str());
        known.insert(key);
        let moved = by_intent.get(&key).copied().unwrap_or(0);
        if moved != i128::from(payment.applied) {
            report.violations.push(format!(
                "payment {scope}{}: records {} credits moved, its entries moved {moved}",
                payment.intent_id, payment.applied
            ));
        }
        let should = net_credits(payment);
        if should != payment.applied {
            report.violations.push(format!(
                "payment {scope}{}: its refunds and dispute call for {should} credits, it moved {}",
                payment.intent_id, payment.applied
            ));
        }
    }
    for (key @ (scope, intent), moved) in &by_intent {
        if !known.contains(key) {
            report.violations.push(format!(
                "entries of {moved} credits name payment {scope}{intent}, which does not exist"
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::{ChargeFacts, DisputeFacts};
    use crate::domain::money::Currency;
    use crate::domain::records::PaymentStatus;

    fn user() -> UserId {
        UserId::parse("a").unwrap()
    }

    fn payment(intent: &str, credits: i64, credited: bool, applied: i64) -> PaymentRecord {
        PaymentRecord {
            intent_id: intent.into(),
            user_id: user(),
            package_id: "p".into(),
            amount: 500,
            currency: Currency::parse("usd").unwrap(),
            credits,
            status: PaymentStatus::Succeeded,
            created_at_ms: 0,
            description: String::new(),
            credited,
            attention: None,
            facts: ChargeFacts {
                refunded: if credited { 100 } else { 0 },
                ..ChargeFacts::default()
            },
            applied,
            rev: 1,
        }
    }

    fn entry(id: &str, amount: i64, intent: Option<&str>) -> LedgerEntry {
        LedgerEntry {
            intent_id: intent.map(str::to_owned),
            ..LedgerEntry::plain("", user(), id, amount)
        }
    }

    fn healthy() -> LedgerSnapshot {
        LedgerSnapshot {
            balances: vec![(String::new(), user(), 350)],
            entries: vec![
                entry("purchase:pi_1", 500, Some("pi_1")),
                entry("refund:pi_1:r2", -100, Some("pi_1")),
                entry("spend:x", -50, None),
            ],
            payments: vec![
                (String::new(), payment("pi_1", 500, true, 400)),
                (String::new(), payment("pi_2", 900, false, 0)),
            ],
            wallets: Vec::new(),
            unreadable: Vec::new(),
            moving: false,
        }
    }

    #[test]
    fn buckets_must_match_their_entries_and_nothing_is_spent_after_its_expiry() {
        use crate::domain::buckets::{Bucket, BucketKind};
        let bucket = |id: &str, left, expires_at| Bucket {
            id: id.into(),
            kind: BucketKind::Promotional,
            priority: 0,
            expires_at,
            created_at: 0,
            left,
            expired: 0,
            reclaimed: 0,
            doomed: 0,
            merged: false,
        };
        let moved =
            |id: &str, amount, kind: &str, at_ms, moves: &[(&str, i64, Option<i64>)]| LedgerEntry {
                kind: kind.into(),
                created_at_ms: at_ms,
                moves: Some(
                    moves
                        .iter()
                        .map(|(b, d, x)| ((*b).to_owned(), *d, *x))
                        .collect(),
                ),
                ..LedgerEntry::plain("", user(), id, amount)
            };
        let wallet = Wallet {
            buckets: vec![
                bucket("grant:a", 70, Some(100)),
                bucket("grant:b", 50, None),
            ],
            ..Wallet::default()
        };
        let snapshot = LedgerSnapshot {
            balances: vec![(String::new(), user(), 120)],
            wallets: vec![(String::new(), user(), wallet)],
            entries: vec![
                moved(
                    "grant:a",
                    100,
                    "grant",
                    1_000,
                    &[("grant:a", 100, Some(100))],
                ),
                moved("grant:b", 50, "grant", 1_000, &[("grant:b", 50, None)]),
                moved(
                    "spend:1",
                    -30,
                    "spend",
                    50_000,
                    &[("grant:a", -30, Some(100))],
                ),
            ],
            ..LedgerSnapshot::default()
        };
        assert!(
            check(&snapshot).is_clean(),
            "{:?}",
            check(&snapshot).violations
        );
        // The same spend made at 100 s: when the bucket had expired.
        let mut late = snapshot.clone();
        late.entries[2].created_at_ms = 100_000;
        assert_eq!(
            check(&late).violations.len(),
            1,
            "{:?}",
            check(&late).violations
        );
        // A bucket holding one more than its entries brought: the bucket and the balance.
        let mut off = snapshot.clone();
        off.wallets[0].2.buckets[1].left = 51;
        assert_eq!(
            check(&off).violations.len(),
            2,
            "{:?}",
            check(&off).violations
        );
        // An entry whose amount is not what its moves say.
        let mut wrong = snapshot;
        wrong.entries[1].amount = 49;
        wrong.balances[0].2 = 119;
        assert!(!check(&wrong).is_clean());
    }

    #[test]
    fn a_ledger_that_adds_up_is_clean() {
        let report = check(&healthy());
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!((report.users, report.payments, report.entries), (1, 2, 3));
    }

    #[test]
    fn a_balance_off_by_one_is_reported() {
        let mut snapshot = healthy();
        snapshot.balances[0].2 = 351;
        let report = check(&snapshot);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("USER#a"));
    }

    #[test]
    fn a_payment_credited_twice_or_not_at_all_is_reported() {
        let mut snapshot = healthy();
        snapshot
            .entries
            .push(entry("purchase:pi_2", 900, Some("pi_2")));
        snapshot.balances[0].2 = 1250;
        let report = check(&snapshot);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("pi_2"));
    }

    #[test]
    fn a_clawback_that_does_not_match_the_refund_is_reported() {
        // The defect's end state: refunded a fifth, dispute reinstated, nothing clawed back.
        let mut snapshot = healthy();
        snapshot.payments[0].1.facts.dispute = Some(DisputeFacts {
            id: "dp_1".into(),
            amount: 500,
            withdrawn: true,
            reinstated: true,
        });
        snapshot.payments[0].1.applied = 500;
        snapshot.entries[1].amount = 0;
        snapshot.balances[0].2 = 450;
        let report = check(&snapshot);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("call for 400"));
    }

    #[test]
    fn the_same_user_in_two_scopes_has_two_accounts() {
        let mut snapshot = healthy();
        // The same sub in another project: its own balance, its own entries.
        snapshot.balances.push(("P#acme#test#".into(), user(), 10));
        snapshot.entries.push(LedgerEntry {
            scope: "P#acme#test#".into(),
            ..entry("grant:x", 10, None)
        });
        let report = check(&snapshot);
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!(report.users, 2);
        snapshot.balances[0].2 = 360;
        assert_eq!(check(&snapshot).violations.len(), 1);
    }

    #[test]
    fn unreadable_items_are_violations() {
        let mut snapshot = healthy();
        snapshot
            .unreadable
            .push("item PAY#pi_9/PAY: attribute `amount` is missing".into());
        assert_eq!(check(&snapshot).violations.len(), 1);
    }

    #[test]
    fn an_account_is_broken_only_when_the_same_items_twice_do_not_add_up() {
        let good = healthy();
        let mut torn = healthy();
        // A write seen half: the entry, not yet the balance.
        torn.balances[0].2 = 400;
        let mut moved_on = healthy();
        moved_on.balances[0].2 = 340;
        moved_on.entries.push(entry("spend:y", -10, None));
        assert_eq!(judge(&[torn.clone(), good.clone()]), Verdict::Holds);
        assert_eq!(judge(&[good]), Verdict::Holds);
        assert!(matches!(judge(&[torn.clone(), torn.clone()]), Verdict::Broken(v) if v.len() == 1));
        let mut torn_again = moved_on.clone();
        torn_again.balances[0].2 = 999;
        assert_eq!(judge(&[torn.clone(), torn_again.clone()]), Verdict::Busy);
        assert_eq!(judge(&[]), Verdict::Busy);
        assert!(matches!(
            judge(&[torn, torn_again.clone(), torn_again]),
            Verdict::Broken(_)
        ));
        // A corrupted account that keeps moving: other items each read, always 7 too many.
        let moving_and_off = |spent: i64| {
            let mut read = healthy();
            read.entries
                .push(entry(&format!("spend:{spent}"), -spent, None));
            read.balances[0].2 = 350 - spent + 7;
            read
        };
        assert_eq!(
            judge(&[moving_and_off(1), moving_and_off(2)]),
            Verdict::Busy,
            "two reads are not enough"
        );
        assert!(matches!(
            judge(&[moving_and_off(1), moving_and_off(2), moving_and_off(3)]),
            Verdict::Broken(_)
        ));
        // The same, but a write landed during the middle read: not steady.
        let mut caught_moving = moving_and_off(2);
        caught_moving.moving = true;
        assert_eq!(
            judge(&[moving_and_off(1), caught_moving, moving_and_off(3)]),
            Verdict::Busy
        );
    }
}
