//! The ledger's invariants, recomputed from every item of the table: each balance equals the sum
//! of its user's entries, and each payment's entries add up to what the payment says it moved
//! (its credits once credited, less refund clawbacks and withheld dispute funds).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::store::{get_n, get_s, Item};

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

/// Checks the invariants over a full scan of the table.
pub fn check(items: &[Item]) -> InvariantReport {
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    let mut entry_sums: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_intent: BTreeMap<String, i64> = BTreeMap::new();
    let mut payments: BTreeMap<String, i64> = BTreeMap::new();
    let mut report = InvariantReport::default();

    for item in items {
        let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
            report.violations.push("an item without pk/sk".into());
            continue;
        };
        if pk.starts_with("USER#") && sk == "BALANCE" {
            balances.insert(pk.to_owned(), get_n(item, "balance").unwrap_or(0));
        } else if pk.starts_with("USER#") && sk.starts_with("ENTRY#") {
            report.entries += 1;
            let Some(amount) = get_n(item, "amount") else {
                report
                    .violations
                    .push(format!("{pk} {sk}: entry without an amount"));
                continue;
            };
            *entry_sums.entry(pk.to_owned()).or_default() += amount;
            if let Some(intent) = get_s(item, "intentId") {
                *by_intent.entry(intent.to_owned()).or_default() += amount;
            }
        } else if pk.starts_with("PAY#") && sk == "PAY" {
            let intent = pk.trim_start_matches("PAY#").to_owned();
            let expected = if item.contains_key("creditedAt") {
                get_n(item, "credits").unwrap_or(0)
                    - get_n(item, "refundClawed").unwrap_or(0)
                    - get_n(item, "disputeHeld").unwrap_or(0)
            } else {
                0
            };
            payments.insert(intent, expected);
        }
    }

    let users: BTreeSet<&String> = balances.keys().chain(entry_sums.keys()).collect();
    report.users = users.len();
    for user in users {
        let balance = balances.get(user).copied().unwrap_or(0);
        let sum = entry_sums.get(user).copied().unwrap_or(0);
        if balance != sum {
            report.violations.push(format!(
                "{user}: balance {balance} but its entries add up to {sum}"
            ));
        }
    }
    report.payments = payments.len();
    for (intent, expected) in &payments {
        let moved = by_intent.get(intent).copied().unwrap_or(0);
        if moved != *expected {
            report.violations.push(format!(
                "payment {intent}: should have moved {expected} credits, its entries moved {moved}"
            ));
        }
    }
    for (intent, moved) in &by_intent {
        if !payments.contains_key(intent) {
            report.violations.push(format!(
                "entries of {moved} credits name payment {intent}, which does not exist"
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn item(fields: &[(&str, &str)]) -> Item {
        fields
            .iter()
            .map(|(k, v)| {
                let value = if v.parse::<i64>().is_ok() && !["pk", "sk", "intentId"].contains(k) {
                    AttributeValue::N((*v).to_owned())
                } else {
                    AttributeValue::S((*v).to_owned())
                };
                ((*k).to_owned(), value)
            })
            .collect()
    }

    fn healthy() -> Vec<Item> {
        vec![
            item(&[
                ("pk", "PAY#pi_1"),
                ("sk", "PAY"),
                ("credits", "500"),
                ("creditedAt", "1"),
                ("refundClawed", "100"),
            ]),
            item(&[
                ("pk", "USER#a"),
                ("sk", "ENTRY#purchase:pi_1"),
                ("amount", "500"),
                ("intentId", "pi_1"),
            ]),
            item(&[
                ("pk", "USER#a"),
                ("sk", "ENTRY#refund:pi_1:100"),
                ("amount", "-100"),
                ("intentId", "pi_1"),
            ]),
            item(&[("pk", "USER#a"), ("sk", "ENTRY#spend:x"), ("amount", "-50")]),
            item(&[("pk", "USER#a"), ("sk", "BALANCE"), ("balance", "350")]),
            item(&[("pk", "PAY#pi_2"), ("sk", "PAY"), ("credits", "900")]),
        ]
    }

    #[test]
    fn a_ledger_that_adds_up_is_clean() {
        let report = check(&healthy());
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!((report.users, report.payments, report.entries), (1, 2, 3));
    }

    #[test]
    fn a_balance_off_by_one_is_reported() {
        let mut items = healthy();
        items[4] = item(&[("pk", "USER#a"), ("sk", "BALANCE"), ("balance", "351")]);
        let report = check(&items);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("USER#a"));
    }

    #[test]
    fn a_payment_credited_twice_or_not_at_all_is_reported() {
        let mut items = healthy();
        items.push(item(&[
            ("pk", "USER#a"),
            ("sk", "ENTRY#purchase:pi_2"),
            ("amount", "900"),
            ("intentId", "pi_2"),
        ]));
        items[4] = item(&[("pk", "USER#a"), ("sk", "BALANCE"), ("balance", "1250")]);
        let report = check(&items);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("pi_2"));
    }
}
