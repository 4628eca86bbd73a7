//! Configuration read once per cold start from the environment. Holds names and URLs only, never
//! secret values: those come from Secrets Manager (see `secrets`).

use std::env;

use crate::money::Currency;

/// Where a function finds its table, its secret and Stripe.
#[derive(Clone, Debug)]
pub struct Config {
    /// The DynamoDB table that holds packages, payments, ledger entries and balances.
    pub table_name: String,
    /// Id or ARN of the Secrets Manager secret with the Stripe keys (JSON).
    pub secret_id: Option<String>,
    /// Base URL of the Stripe API; `None` means Stripe itself.
    pub stripe_api_base: Option<String>,
    /// Currency shown for a user who has no balance yet.
    pub default_currency: Currency,
}

/// A required variable is missing or unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: &'static str,
}

impl Config {
    /// Reads `TABLE_NAME` (required), `STRIPE_SECRET_ID`, `STRIPE_API_BASE` and
    /// `DEFAULT_CURRENCY` (default `usd`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let table_name = non_empty("TABLE_NAME").ok_or(ConfigError {
            name: "TABLE_NAME",
            problem: "is required",
        })?;
        let default_currency = match non_empty("DEFAULT_CURRENCY") {
            None => Currency::parse("usd").ok_or(ConfigError {
                name: "DEFAULT_CURRENCY",
                problem: "is not a currency",
            })?,
            Some(code) => Currency::parse(&code).ok_or(ConfigError {
                name: "DEFAULT_CURRENCY",
                problem: "is not a three-letter currency code",
            })?,
        };
        Ok(Self {
            table_name,
            secret_id: non_empty("STRIPE_SECRET_ID"),
            stripe_api_base: non_empty("STRIPE_API_BASE"),
            default_currency,
        })
    }
}

fn non_empty(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.trim().is_empty())
}
