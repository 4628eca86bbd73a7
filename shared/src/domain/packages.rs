//! Credit packages: what a user can buy, for how much, and how many credits it gives.

use crate::domain::money::{AmountError, Currency};

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
    /// The unit a request's `amount` is in: major (`7.00`, the default) or minor (`700`,
    /// Stripe's own convention, as apps built on its PaymentSheet samples send it).
    #[serde(default)]
    pub unit: AmountUnit,
}

/// The unit a custom amount is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmountUnit {
    #[default]
    Major,
    Minor,
}

impl AmountUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Major => "major",
            Self::Minor => "minor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Major, Self::Minor]
            .into_iter()
            .find(|u| u.as_str() == text)
    }
}

/// The largest custom amount read, in minor units (a project's own maximum is far lower).
const MAX_CUSTOM_MINOR: i64 = 100_000_000_000;

/// A custom amount as written in a request (the digits of a JSON number or of a decimal
/// string), in minor units of `currency`, read in the project's unit: never through a float.
/// `7.005` in major USD, `7.5` in minor units, zero and negatives are refused in words.
pub fn custom_amount_minor(
    unit: AmountUnit,
    literal: &str,
    currency: &Currency,
) -> Result<i64, String> {
    let exponent = match unit {
        AmountUnit::Major => currency.exponent(),
        AmountUnit::Minor => 0,
    };
    let minor =
        crate::domain::money::parse_scaled(literal, exponent, MAX_CUSTOM_MINOR).map_err(|err| {
            match (err, unit) {
                (AmountError::NotANumber, _) => {
                    "amount must be a number or a decimal string.".to_owned()
                }
                (AmountError::TooPrecise, AmountUnit::Major) => {
                    format!("amount is finer than the smallest unit of {currency}.")
                }
                (AmountError::TooPrecise, AmountUnit::Minor) => format!(
                "amount is in minor units of {currency} (700 is 7.00) and must be a whole number."
            ),
                (AmountError::TooLarge, _) => "amount is too large.".to_owned(),
            }
        })?;
    if minor <= 0 {
        return Err("amount must be greater than zero.".into());
    }
    Ok(minor)
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
            unit: AmountUnit::Major,
        }
    }

    #[test]
    fn a_custom_amount_is_read_exactly_in_the_projects_unit() {
        let usd = Currency::usd();
        assert_eq!(
            custom_amount_minor(AmountUnit::Major, "7.00", &usd),
            Ok(700)
        );
        assert_eq!(custom_amount_minor(AmountUnit::Major, "7", &usd), Ok(700));
        assert_eq!(custom_amount_minor(AmountUnit::Minor, "700", &usd), Ok(700));
        assert_eq!(custom_amount_minor(AmountUnit::Minor, "7E2", &usd), Ok(700));
        assert!(custom_amount_minor(AmountUnit::Major, "7.005", &usd)
            .unwrap_err()
            .contains("finer"));
        assert!(custom_amount_minor(AmountUnit::Minor, "700.5", &usd)
            .unwrap_err()
            .contains("whole number"));
        for bad in ["0", "-700", "0.00"] {
            assert!(
                custom_amount_minor(AmountUnit::Minor, bad, &usd).is_err(),
                "{bad}"
            );
            assert!(
                custom_amount_minor(AmountUnit::Major, bad, &usd).is_err(),
                "{bad}"
            );
        }
        assert!(custom_amount_minor(AmountUnit::Major, "1e40", &usd).is_err());
        assert!(custom_amount_minor(AmountUnit::Major, "seven", &usd).is_err());
        let jpy = Currency::parse("jpy").expect("jpy");
        assert_eq!(custom_amount_minor(AmountUnit::Major, "700", &jpy), Ok(700));
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
