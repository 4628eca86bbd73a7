//! Everything a function builds once per cold start: configuration, the DynamoDB store, the
//! secrets cache and (after the secret is read) the Stripe client, plus the short package cache.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use tokio::sync::OnceCell;

use crate::config::{Config, ConfigError};
use crate::http::ApiError;
use crate::packages::CreditPackage;
use crate::payments::StripeApi;
use crate::secrets::SecretsCache;
use crate::store::Store;

/// How long the package list is served from memory before it is read again.
const PACKAGE_CACHE_TTL: Duration = Duration::from_secs(60);

pub struct App {
    pub config: Config,
    pub store: Store,
    pub secrets: SecretsCache,
    stripe: OnceCell<StripeApi>,
    packages: Mutex<Option<(Instant, Vec<CreditPackage>)>>,
}

/// SDK settings chosen for Lambda's budget: fail a dead dependency within a few seconds (the
/// caller then answers 503 and Stripe or the client retries) instead of the SDK's defaults.
pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(1_000))
        .read_timeout(Duration::from_millis(2_000))
        .operation_attempt_timeout(Duration::from_millis(2_500))
        .operation_timeout(Duration::from_millis(6_000))
        .build()
}

/// Loads the AWS configuration (region, credentials, `AWS_ENDPOINT_URL_*` overrides).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::from_env()
        .timeout_config(sdk_timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

impl App {
    /// Reads the environment and builds the SDK clients; fails fast on a missing variable.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let sdk = load_sdk_config().await;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        Self::from_clients(
            config,
            aws_sdk_dynamodb::Client::new(sdk),
            aws_sdk_secretsmanager::Client::new(sdk),
        )
    }

    /// The same from ready clients (tests point them at fault-injecting proxies).
    pub fn from_clients(
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        secrets_manager: aws_sdk_secretsmanager::Client,
    ) -> Self {
        let store = Store::new(dynamodb, config.table_name.clone());
        let secrets = SecretsCache::new(secrets_manager, config.secret_id.clone());
        Self {
            config,
            store,
            secrets,
            stripe: OnceCell::new(),
            packages: Mutex::new(None),
        }
    }

    /// The Stripe client, built from the secret key on first use.
    pub async fn stripe(&self) -> Result<&StripeApi, ApiError> {
        self.stripe
            .get_or_try_init(|| async {
                let secrets = self.secrets.get().await?;
                StripeApi::new(
                    secrets.stripe_secret_key()?,
                    self.config.stripe_api_base.as_deref(),
                )
            })
            .await
    }

    /// Every stored package, from memory when read less than a minute ago.
    pub async fn packages(&self) -> Result<Vec<CreditPackage>, ApiError> {
        if let Ok(cache) = self.packages.lock() {
            if let Some((at, packages)) = cache.as_ref() {
                if at.elapsed() < PACKAGE_CACHE_TTL {
                    return Ok(packages.clone());
                }
            }
        }
        let packages = self.store.list_packages().await?;
        if let Ok(mut cache) = self.packages.lock() {
            *cache = Some((Instant::now(), packages.clone()));
        }
        Ok(packages)
    }
}
