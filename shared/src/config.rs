//! Configuration read once per cold start from the environment. Holds names and URLs only, never
//! secret values: those come from Secrets Manager (see `adapters::secrets`).

use std::env;
use std::time::Duration;

use crate::domain::money::Currency;

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
    /// IAM principals allowed on the internal routes: role ARNs
    /// (`arn:aws:iam::<account>:role/<name>`), matching that role's sessions, or exact ARNs.
    /// Empty: nobody.
    pub allowed_callers: Vec<String>,
    /// The shortest time between two reads of the secret after a webhook signature mismatch.
    pub secret_refresh_interval: Duration,
}

/// Default of `SECRET_REFRESH_SECONDS`.
const DEFAULT_SECRET_REFRESH: Duration = Duration::from_secs(30);

/// A required variable is missing or unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: &'static str,
}

impl Config {
    /// A configuration for tools and tests: USD, nobody on the internal routes' allowlist, the
    /// default secret refresh interval.
    pub fn new(
        table_name: String,
        secret_id: Option<String>,
        stripe_api_base: Option<String>,
    ) -> Self {
        Self {
            table_name,
            secret_id,
            stripe_api_base,
            default_currency: Currency::usd(),
            allowed_callers: Vec::new(),
            secret_refresh_interval: DEFAULT_SECRET_REFRESH,
        }
    }

    /// Reads `TABLE_NAME` (required), `STRIPE_SECRET_ID`, `STRIPE_API_BASE`,
    /// `DEFAULT_CURRENCY` (default `usd`), `ALLOWED_CALLER_ARNS` (comma-separated) and
    /// `SECRET_REFRESH_SECONDS` (default 30).
    pub fn from_env() -> Result<Self, ConfigError> {
        let table_name = non_empty("TABLE_NAME").ok_or(ConfigError {
            name: "TABLE_NAME",
            problem: "is required",
        })?;
        let default_currency = match non_empty("DEFAULT_CURRENCY") {
            None => Currency::usd(),
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
            allowed_callers: non_empty("ALLOWED_CALLER_ARNS")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|arn| !arn.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            secret_refresh_interval: match non_empty("SECRET_REFRESH_SECONDS") {
                None => DEFAULT_SECRET_REFRESH,
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .filter(|secs| (1..=3600).contains(secs))
                    .map(Duration::from_secs)
                    .ok_or(ConfigError {
                        name: "SECRET_REFRESH_SECONDS",
                        problem: "is not a number of seconds from 1 to 3600",
                    })?,
            },
        })
    }
}

fn non_empty(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.trim().is_empty())
}
