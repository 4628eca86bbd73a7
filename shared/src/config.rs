//! Configuration read once per cold start from the environment. Holds names and URLs only, never
//! secret values: those come from Secrets Manager (see `adapters::secrets`).

use std::env;
use std::time::Duration;

use crate::domain::money::Currency;
use crate::domain::scope::{Mode, ProjectId};

/// Where a function finds its table, its secret and Stripe.
#[derive(Clone, Debug)]
pub struct Config {
    /// The DynamoDB table that holds packages, payments, ledger entries and balances.
    pub table_name: String,
    /// Id or ARN of the Secrets Manager secret with the Stripe keys (JSON).
    pub secret_id: Option<String>,
    /// Base URL of the Stripe API; `None` means Stripe itself.
    pub stripe_api_base: Option<String>,
    /// The API's public URL (`PUBLIC_BASE_URL`), with the path of a custom domain's API mapping
    /// (`https://api.example.com/billing`); the URLs Coffer hands out (webhook URLs) start with
    /// it, and a request path that still carries the mapping's path is served without it.
    /// `None`: the request's own host, no path.
    pub public_base_url: Option<String>,
    /// Currency shown for a user who has no balance yet.
    pub default_currency: Currency,
    /// IAM principals allowed on the internal routes: role ARNs
    /// (`arn:aws:iam::<account>:role/<name>`), matching that role's sessions, or exact ARNs.
    /// Empty: nobody.
    pub allowed_callers: Vec<String>,
    /// The shortest time between two reads of the secret after a webhook signature mismatch.
    pub secret_refresh_interval: Duration,
    /// The mode of the deployment's own key: the default project's mode, and the one whose data
    /// keeps the unprefixed keys.
    pub default_mode: Mode,
    /// The name prefix of the projects' secrets (`<prefix>/<project>/<mode>`); `None`: this
    /// deployment serves only the default project.
    pub project_secret_prefix: Option<String>,
    /// The verified claim that makes a caller a developer, and the value it must hold (a claim
    /// that lists values, such as `cognito:groups`, may hold it among others).
    pub developer_claim: String,
    pub developer_claim_value: String,
    /// Local stacks only: another Stripe base URL for some projects (each project's own
    /// localstripe). Never set by the SAM template.
    pub stripe_api_base_per_project: Vec<(ProjectId, String)>,
    /// The verified claim that lists the caller's organisations (`ORGANISATION_CLAIM`).
    pub organisation_claim: String,
    /// The EventBridge bus billing events go to (`EVENT_BUS_NAME`); `None`: this function
    /// publishes none.
    pub event_bus_name: Option<String>,
    /// The SQS queue of webhook deliveries (`WEBHOOK_QUEUE_URL`); `None`: this function sends
    /// to none.
    pub webhook_queue_url: Option<String>,
    /// Local stacks only (`COFFER_WEBHOOKS_LOCAL=1`): webhooks may go to this machine over
    /// plain http. Never set by the SAM template.
    pub webhooks_local: bool,
    /// Tests only (`COFFER_WEBHOOK_RETRY_SCALE`, default 1): the webhook retry schedule and its
    /// three days, scaled (0.001: seconds become milliseconds). Never set by the SAM template.
    pub webhook_retry_scale: f64,
    /// How old a metered usage record must be before it is reported (`METER_SETTLE_SECONDS`,
    /// default 60): longer than any write of a record takes to commit and reach the index, so
    /// that a record is never written behind the watermark.
    pub meter_settle: Duration,
    /// How long the usage path keeps an account's plan and period, and an allowance's shards,
    /// per instance (`USAGE_CACHE_MS`, default 1000; 0 caches nothing). A request that would be
    /// refused or pay overage always reads both afresh.
    pub usage_cache: Duration,
    /// How long an instance may take usage from a block it leased (`USAGE_LEASE_MS`, default
    /// 5000), and how long after that others wait before settling the block from its records
    /// (`USAGE_LEASE_MARGIN_MS`, default 15000: longer than a record's write may take and the
    /// index needs to show it).
    pub usage_lease: Duration,
    pub usage_lease_margin: Duration,
    /// The deployment's name (`COFFER_DEPLOYMENT`, the stack's name deployed): part of the mark
    /// on every Stripe object Coffer makes, so that two deployments sharing a Stripe account
    /// never apply each other's objects. `None`: the mark names the scope only.
    pub deployment: Option<String>,
}

pub const DEFAULT_ORGANISATION_CLAIM: &str = "organisations";

const DEFAULT_DEVELOPER_CLAIM: &str = "cognito:groups";
const DEFAULT_DEVELOPER_CLAIM_VALUE: &str = "developers";

/// Defaults of `USAGE_LEASE_MS` and `USAGE_LEASE_MARGIN_MS`.
const DEFAULT_USAGE_LEASE: Duration = Duration::from_secs(5);
const DEFAULT_USAGE_LEASE_MARGIN: Duration = Duration::from_secs(15);

/// A duration in milliseconds from 0 to 10 minutes, or `default` when unset.
fn millis(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    match non_empty(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= 600_000)
            .map(Duration::from_millis)
            .ok_or(ConfigError {
                name,
                problem: "is not a number of milliseconds from 0 to 600000",
            }),
    }
}

/// Default of `USAGE_CACHE_MS`.
const DEFAULT_USAGE_CACHE: Duration = Duration::from_secs(1);

/// Default of `METER_SETTLE_SECONDS`.
const DEFAULT_METER_SETTLE: Duration = Duration::from_secs(60);

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
            public_base_url: None,
            default_currency: Currency::usd(),
            allowed_callers: Vec::new(),
            secret_refresh_interval: DEFAULT_SECRET_REFRESH,
            default_mode: Mode::Test,
            project_secret_prefix: None,
            developer_claim: DEFAULT_DEVELOPER_CLAIM.to_owned(),
            developer_claim_value: DEFAULT_DEVELOPER_CLAIM_VALUE.to_owned(),
            stripe_api_base_per_project: Vec::new(),
            organisation_claim: DEFAULT_ORGANISATION_CLAIM.to_owned(),
            event_bus_name: None,
            webhook_queue_url: None,
            webhooks_local: false,
            webhook_retry_scale: 1.0,
            meter_settle: DEFAULT_METER_SETTLE,
            usage_cache: DEFAULT_USAGE_CACHE,
            usage_lease: DEFAULT_USAGE_LEASE,
            usage_lease_margin: DEFAULT_USAGE_LEASE_MARGIN,
            deployment: None,
        }
    }

    /// The path of the API mapping the API is served under (`/billing`), or "".
    pub fn base_path(&self) -> &str {
        self.public_base_url
            .as_deref()
            .and_then(|url| url.split_once("://"))
            .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
            .unwrap_or("")
    }

    /// The Stripe base URL for a project: its own when the local stack gives one, else the
    /// deployment's (`None`: Stripe itself).
    pub fn stripe_api_base_for(&self, project: &ProjectId) -> Option<&str> {
        self.stripe_api_base_per_project
            .iter()
            .find(|(id, _)| id == project)
            .map(|(_, base)| base.as_str())
            .or(self.stripe_api_base.as_deref())
    }

    /// Reads `TABLE_NAME` (required), `STRIPE_SECRET_ID`, `STRIPE_API_BASE`,
    /// `DEFAULT_CURRENCY` (default `usd`), `ALLOWED_CALLER_ARNS` (comma-separated) and
    /// `SECRET_REFRESH_SECONDS` (default 30), `DEFAULT_MODE` (`test`/`live`, default `test`),
    /// `PROJECT_SECRET_PREFIX`, `DEVELOPER_CLAIM` and `DEVELOPER_CLAIM_VALUE` (default
    /// `cognito:groups` holding `developers`) and, for local stacks, `STRIPE_API_BASE_PER_PROJECT`
    /// (`project=url,…`).
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
            public_base_url: match non_empty("PUBLIC_BASE_URL") {
                None => None,
                Some(url) => Some(valid_public_base(&url).ok_or(ConfigError {
                    name: "PUBLIC_BASE_URL",
                    problem: "must be an https URL (http only for localhost), with no query, whose path does not begin with api or internal",
                })?),
            },
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
            default_mode: match non_empty("DEFAULT_MODE") {
                None => Mode::Test,
                Some(text) => Mode::parse(text.trim()).ok_or(ConfigError {
                    name: "DEFAULT_MODE",
                    problem: "must be test or live",
                })?,
            },
            project_secret_prefix: non_empty("PROJECT_SECRET_PREFIX")
                .map(|p| p.trim().trim_end_matches('/').to_owned()),
            developer_claim: non_empty("DEVELOPER_CLAIM")
                .unwrap_or_else(|| DEFAULT_DEVELOPER_CLAIM.to_owned()),
            developer_claim_value: non_empty("DEVELOPER_CLAIM_VALUE")
                .unwrap_or_else(|| DEFAULT_DEVELOPER_CLAIM_VALUE.to_owned()),
            stripe_api_base_per_project: match non_empty("STRIPE_API_BASE_PER_PROJECT") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .filter(|pair| !pair.trim().is_empty())
                    .map(|pair| {
                        let (id, url) = pair.split_once('=')?;
                        Some((ProjectId::parse(id.trim())?, url.trim().to_owned()))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or(ConfigError {
                        name: "STRIPE_API_BASE_PER_PROJECT",
                        problem: "must be project=url pairs separated by commas",
                    })?,
            },
            organisation_claim: non_empty("ORGANISATION_CLAIM")
                .unwrap_or_else(|| DEFAULT_ORGANISATION_CLAIM.to_owned()),
            deployment: match non_empty("COFFER_DEPLOYMENT") {
                None => None,
                Some(name) => Some(
                    Some(name.trim().to_owned())
                        .filter(|n| crate::domain::scope::valid_deployment(n))
                        .ok_or(ConfigError {
                            name: "COFFER_DEPLOYMENT",
                            problem: "must be 1 to 128 letters, digits or dashes",
                        })?,
                ),
            },
            event_bus_name: non_empty("EVENT_BUS_NAME").map(|name| name.trim().to_owned()),
            webhook_queue_url: non_empty("WEBHOOK_QUEUE_URL").map(|url| url.trim().to_owned()),
            webhooks_local: non_empty("COFFER_WEBHOOKS_LOCAL").as_deref() == Some("1"),
            webhook_retry_scale: match non_empty("COFFER_WEBHOOK_RETRY_SCALE") {
                None => 1.0,
                Some(text) => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|scale| scale.is_finite() && *scale > 0.0 && *scale <= 1.0)
                    .ok_or(ConfigError {
                        name: "COFFER_WEBHOOK_RETRY_SCALE",
                        problem: "must be a number above 0 and at most 1",
                    })?,
            },
            meter_settle: match non_empty("METER_SETTLE_SECONDS") {
                None => DEFAULT_METER_SETTLE,
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .filter(|secs| *secs <= 3600)
                    .map(Duration::from_secs)
                    .ok_or(ConfigError {
                        name: "METER_SETTLE_SECONDS",
                        problem: "is not a number of seconds from 0 to 3600",
                    })?,
            },
            usage_cache: match non_empty("USAGE_CACHE_MS") {
                None => DEFAULT_USAGE_CACHE,
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms <= 60_000)
                    .map(Duration::from_millis)
                    .ok_or(ConfigError {
                        name: "USAGE_CACHE_MS",
                        problem: "is not a number of milliseconds from 0 to 60000",
                    })?,
            },
            usage_lease: millis("USAGE_LEASE_MS", DEFAULT_USAGE_LEASE)?,
            usage_lease_margin: millis("USAGE_LEASE_MARGIN_MS", DEFAULT_USAGE_LEASE_MARGIN)?,
        })
    }
}

/// The first segments of the API's routes: no base path may begin with one.
const ROUTE_ROOTS: [&str; 2] = ["api", "internal"];

/// A public base URL without its trailing slash, if it is one.
fn valid_public_base(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| {
        url.strip_prefix("http://")
            .filter(|r| r.starts_with("localhost") || r.starts_with("127.0.0.1"))
    })?;
    let host = rest.split('/').next().unwrap_or("");
    // A base path that begins like a route would make that route's paths ambiguous.
    let first = rest.split('/').nth(1).unwrap_or("");
    let fine = !host.is_empty()
        && !ROUTE_ROOTS.contains(&first)
        && !rest.contains(['?', '#', ' '])
        && !rest.contains("//")
        && rest.is_ascii();
    fine.then(|| url.to_owned())
}

fn non_empty(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.trim().is_empty())
}

#[cfg(test)]
mod public_base_tests {
    use super::*;

    #[test]
    fn a_public_base_url_is_https_with_a_path_that_no_route_begins_with() {
        assert_eq!(
            valid_public_base("https://api.example.com/billing/").as_deref(),
            Some("https://api.example.com/billing")
        );
        assert!(valid_public_base("https://api.example.com").is_some());
        assert!(valid_public_base("http://localhost:3000/b").is_some());
        for bad in [
            "http://api.example.com/billing",
            "https://api.example.com/api",
            "https://api.example.com/internal/x",
            "https://api.example.com/b?x=1",
            "https:///billing",
            "https://a.example.com//billing",
            "ftp://a.example.com",
        ] {
            assert!(valid_public_base(bad).is_none(), "{bad}");
        }
        let mut config = Config::new("t".into(), None, None);
        config.public_base_url = Some("https://api.example.com/v1/billing".into());
        assert_eq!(config.base_path(), "/v1/billing");
        config.public_base_url = Some("https://api.example.com".into());
        assert_eq!(config.base_path(), "");
    }
}
