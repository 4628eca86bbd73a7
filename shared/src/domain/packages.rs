//! Credit packages: what a user can buy, for how much, and how many credits it gives.

use crate::domain::money::Currency;

#[derive(Clone, Debug, PartialEq)]
pub struct CreditPackage {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Price in minor units of `currency`.
    pub amount: i64,
    /// Credits granted, in minor units of `currency`.
    pub credits: i64,
    pub currency: Currency,
    pub active: bool,
}

/// A package id as a client may send it: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_package_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Active packages, cheapest first (ties by id, so the order is stable).
pub fn active_cheapest_first(mut packages: Vec<CreditPackage>) -> Vec<CreditPackage> {
    packages.retain(|p| p.active);
    packages.sort_by(|a, b| a.amount.cmp(&b.amount).then_with(|| a.id.cmp(&b.id)));
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(id: &str, amount: i64, active: bool) -> CreditPackage {
        CreditPackage {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            amount,
            credits: amount,
            currency: Currency::parse("usd").unwrap(),
            active,
        }
    }

    #[test]
    fn listing_keeps_active_packages_cheapest_first() {
        let listed = active_cheapest_first(vec![
            package("big", 5000, true),
            package("off", 100, false),
            package("small", 500, true),
        ]);
        let ids: Vec<_> = listed.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["small", "big"]);
    }

    #[test]
    fn package_ids_from_clients_are_restricted() {
        assert!(valid_package_id("starter_5-usd"));
        assert!(!valid_package_id(""));
        assert!(!valid_package_id("../etc"));
        assert!(!valid_package_id("PKG#x"));
        assert!(!valid_package_id(&"a".repeat(65)));
    }
}
