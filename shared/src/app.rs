//! Everything a function builds once per cold start: configuration, the DynamoDB store, the
//! secrets cache and (after the secret is read) the Stripe client, plus the short package cache.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::SharedCredentialsProvider;
use tokio::sync::OnceCell;

use crate::adapters::secrets::SecretsCache;
use crate::adapters::store::{Store, StoreError};
use crate::adapters::stripe::StripeApi;
use crate::config::{Config, ConfigError};
use crate::domain::packages::CreditPackage;
use crate::http::ApiError;

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

/// The AWS configuration a Lambda function needs, built without the full provider chain (profile
/// files, SSO, IMDS), which costs several milliseconds of every cold start: region and
/// credentials come from the environment Lambda sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); endpoint overrides are applied per client.
pub fn lambda_sdk_config() -> SdkConfig {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .map(Region::new);
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .timeout_config(sdk_timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .build()
}

/// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL` (local emulators).
fn endpoint_override(service_variable: &str) -> Option<String> {
    [service_variable, "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Loads the AWS configuration through the full provider chain (profiles, SSO, …): for the
/// operator commands and local tools, where a person's credentials may come from anywhere.
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
        Ok(Self::new(config, &lambda_sdk_config()))
    }

    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(url) = endpoint_override("AWS_ENDPOINT_URL_DYNAMODB") {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let mut secrets = aws_sdk_secretsmanager::config::Builder::from(sdk);
        if let Some(url) = endpoint_override("AWS_ENDPOINT_URL_SECRETS_MANAGER") {
            secrets = secrets.endpoint_url(url);
        }
        Self::from_clients(
            config,
            aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            aws_sdk_secretsmanager::Client::from_conf(secrets.build()),
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
                Ok::<_, ApiError>(StripeApi::new(
                    secrets.stripe_secret_key()?,
                    self.config.stripe_api_base.as_deref(),
                )?)
            })
            .await
    }

    /// Every stored package, from memory when read less than a minute ago.
    pub async fn packages(&self) -> Result<Vec<CreditPackage>, StoreError> {
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
