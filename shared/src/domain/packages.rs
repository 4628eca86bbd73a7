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

/// What a project allows for top-ups of an amount the buyer chooses (a mobile app's
/// PaymentSheet sends `{"amount": 7.00, "currency": "usd"}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAmounts {
    /// The smallest and largest amount, in minor units.
    pub min: i64,
    pub max: i64,
    /// The currencies accepted (lowercase ISO codes).
    pub currencies: Vec<String>,
    /// Credits for one major unit of the currency, in ten-thousandths (`12_500`: 1.25 credits
    /// per dollar).
    pub credits_per_unit_e4: i64,
}

/// The prefix of a custom top-up's package id (never a stored package's: `:` is not allowed in
/// those).
pub const CUSTOM_PREFIX: &str = "custom:";

/// The package a custom top-up of `amount` (minor units of `currency`) makes, or why it is
/// refused, in words. Credits are the amount at the project's rate, rounded down to the minor
/// unit.
pub fn custom_package(
    rules: &CustomAmounts,
    amount: i64,
    currency: &Currency,
) -> Result<CreditPackage, String> {
    if !rules.currencies.iter().any(|c| c == currency.as_str()) {
        return Err(format!(
            "{currency} is not accepted for a custom amount; accepted: {}.",
            rules.currencies.join(", ")
        ));
    }
    if amount < rules.min || amount > rules.max {
        return Err(format!(
            "amount must be from {} to {} {currency}.",
            currency.format_major(rules.min),
            currency.format_major(rules.max)
        ));
    }
    let credits = i128::from(amount) * i128::from(rules.credits_per_unit_e4) / 10_000;
    let credits = i64::try_from(credits).map_err(|_| "amount is too large.".to_owned())?;
    if credits <= 0 {
        return Err("amount buys no credits at this project's rate.".into());
    }
    Ok(CreditPackage {
        id: format!("{CUSTOM_PREFIX}{amount}:{currency}"),
        name: format!("{} {currency} of credits", currency.format_major(amount)),
        description: String::new(),
        amount,
        credits,
        currency: currency.clone(),
        active: true,
    })
}

/// Checks a project's custom-amount rules: bounds from one minor unit up, a rate, currencies.
pub fn valid_custom_amounts(rules: &CustomAmounts, deployment: &Currency) -> Result<(), String> {
    // Stripe charges at most 99,999,999 minor units at once.
    if rules.min < 1 || rules.max < rules.min || rules.max > 99_999_999 {
        return Err("customAmounts needs 0 < min ≤ max, and max at most 999,999.99 (Stripe's largest charge).".into());
    }
    if !(1..=100_000_000).contains(&rules.credits_per_unit_e4) {
        return Err("customAmounts.creditsPerUnit must be from 0.0001 to 10000.".into());
    }
    if rules.currencies.is_empty() || rules.currencies.iter().any(|c| c != deployment.as_str()) {
        return Err(format!(
            "customAmounts.currencies may name only this deployment's currency ({deployment}): credits are kept in it."
        ));
    }
    Ok(())
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

    fn rules() -> CustomAmounts {
        CustomAmounts {
            min: 500,
            max: 50_000,
            currencies: vec!["usd".into()],
            credits_per_unit_e4: 12_500,
        }
    }

    #[test]
    fn a_custom_amount_buys_the_projects_rate_within_its_bounds() {
        let usd = Currency::usd();
        let seven = custom_package(&rules(), 700, &usd).expect("within bounds");
        assert_eq!(
            (seven.id.as_str(), seven.amount, seven.credits),
            ("custom:700:usd", 700, 875)
        );
        // Rounded down to the minor unit.
        assert_eq!(
            custom_package(&rules(), 501, &usd).map(|p| p.credits),
            Ok(626)
        );
        assert!(custom_package(&rules(), 499, &usd)
            .unwrap_err()
            .contains("from 5.00 to 500.00"));
        assert!(custom_package(&rules(), 50_001, &usd).is_err());
        let eur = Currency::parse("eur").expect("eur");
        assert!(custom_package(&rules(), 700, &eur)
            .unwrap_err()
            .contains("not accepted"));
        assert!(
            !valid_package_id("custom:700:usd"),
            "never a stored package's id"
        );
        assert!(valid_custom_amounts(&rules(), &usd).is_ok());
        let other = CustomAmounts {
            currencies: vec!["eur".into()],
            ..rules()
        };
        assert!(valid_custom_amounts(&other, &usd).is_err());
    }

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
