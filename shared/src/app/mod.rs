//! Everything a function builds once per cold start: configuration, the DynamoDB store, the
//! secrets caches, and per scope (after its secret is read) the Stripe client, plus the short
//! package and project caches. Every accessor takes the scope the edge resolved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod cache;
pub use cache::{Exhausted, HeldTake, ShortCache, UsageCache};

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::SharedCredentialsProvider;

use crate::adapters::events::EventBus;
use crate::adapters::net;
use crate::adapters::secrets::{SecretsCache, SecretsError, StripeSecrets};
use crate::adapters::store::{Keys, Store, StoreError};
use crate::adapters::stripe::{StripeApi, StripeFailure};
use crate::config::{Config, ConfigError};
use crate::domain::packages::CreditPackage;
use crate::domain::projects::{Project, ProjectSettings};
use crate::domain::scope::{ProjectId, Scope};

/// Why a scope's Stripe client could not be had: its secret, or the client built from it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Stripe(#[from] StripeFailure),
}

/// How long the package list and a project's registry entry are served from memory.
const CACHE_TTL: Duration = Duration::from_secs(60);

pub struct App {
    /// The one HTTP client every SDK client and Stripe client sends over (its connections live
    /// as long as the `App`).
    pub http: net::Http,
    pub config: Config,
    /// The table through the unprefixed keys (the default project in the deployment's mode).
    pub store: Store,
    /// The deployment's own secret (the default project), kept until a signature mismatch.
    pub secrets: SecretsCache,
    /// The projects' secrets, each kept for at most a minute.
    pub project_secrets: SecretsCache,
    /// A Stripe client per scope, with the key it was built from.
    stripe: Mutex<HashMap<Scope, (Arc<StripeSecrets>, StripeApi)>>,
    packages: ShortCache<Vec<CreditPackage>, Scope>,
    /// Each scope's settings, for a minute (its spend order, response format and PaymentSheet
    /// version; rules of money read them afresh).
    settings: ShortCache<ProjectSettings, Scope>,
    projects: ShortCache<Project, ProjectId>,
    /// Where billing events go (only the functions that publish them have a bus configured).
    pub events: Option<EventBus>,
    /// The queue of webhook deliveries (only the functions that send to it have one).
    pub deliveries: Option<crate::adapters::queue::DeliveryQueue>,
    /// The client that calls developers' webhook endpoints, made on first use.
    outbound: std::sync::OnceLock<crate::adapters::outbound::Outbound>,
    /// What the usage path keeps in memory here (`USAGE_CACHE_MS`).
    pub usage: UsageCache,
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
    let region = region_from_env().map(Region::new);
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

/// The region Lambda sets (`AWS_REGION`), else `AWS_DEFAULT_REGION`.
fn region_from_env() -> Option<String> {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
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
        .http_client(net::sdk_http_client(&net::client()))
        .timeout_config(sdk_timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

impl App {
    /// Reads the environment and builds the SDK clients; fails fast on a missing variable. Then
    /// opens the TLS connections the function will use (see [`App::warm_up`]).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let app = Self::new(config, &lambda_sdk_config());
        app.warm_up().await;
        Ok(app)
    }

    /// Opens, during init, a pooled TLS connection to DynamoDB, and to Secrets Manager and
    /// Stripe when the deployment has a Stripe secret, all at once and briefly bounded: the
    /// first invocation then pays no handshake. `COFFER_WARMUP=off` turns it off.
    pub async fn warm_up(&self) -> usize {
        let region = region_from_env();
        let aws = |variable: &str, service: &str| {
            endpoint_override(variable).or_else(|| {
                let region = region.as_deref()?;
                Some(format!("https://{service}.{region}.amazonaws.com"))
            })
        };
        // With AWS_ACCOUNT_ID set (Lambda does not set it), the SDK calls the account's own
        // DynamoDB endpoint; rather than guess it, that connection is left to the first call.
        let account_endpoint = std::env::var_os("AWS_ACCOUNT_ID").is_some()
            && endpoint_override("AWS_ENDPOINT_URL_DYNAMODB").is_none();
        let mut bases: Vec<String> = if account_endpoint {
            Vec::new()
        } else {
            aws("AWS_ENDPOINT_URL_DYNAMODB", "dynamodb")
                .into_iter()
                .collect()
        };
        if self.config.secret_id.is_some() {
            bases.extend(aws("AWS_ENDPOINT_URL_SECRETS_MANAGER", "secretsmanager"));
            bases.push(
                self.config
                    .stripe_api_base
                    .clone()
                    .unwrap_or_else(|| crate::adapters::stripe::STRIPE_API.to_owned()),
            );
        }
        net::warm_up(&self.http, &bases).await
    }

    /// The SDK clients from `sdk`, all sending over one new HTTP client (the `App`'s).
    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        let http = net::client();
        let sdk_http = net::sdk_http_client(&http);
        let mut dynamodb =
            aws_sdk_dynamodb::config::Builder::from(sdk).http_client(sdk_http.clone());
        if let Some(url) = endpoint_override("AWS_ENDPOINT_URL_DYNAMODB") {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let mut secrets =
            aws_sdk_secretsmanager::config::Builder::from(sdk).http_client(sdk_http.clone());
        if let Some(url) = endpoint_override("AWS_ENDPOINT_URL_SECRETS_MANAGER") {
            secrets = secrets.endpoint_url(url);
        }
        let events = config.event_bus_name.clone().map(|bus| {
            let mut eventbridge =
                aws_sdk_eventbridge::config::Builder::from(sdk).http_client(sdk_http.clone());
            if let Some(url) = endpoint_override("AWS_ENDPOINT_URL_EVENTBRIDGE") {
                eventbridge = eventbridge.endpoint_url(url);
            }
            #[cfg(feature = "call-log")]
            if let Some(recorder) = crate::calls::Recorder::from_env(&config) {
                eventbridge = eventbridge.interceptor(recorder);
            }
            EventBus::new(
                aws_sdk_eventbridge::Client::from_conf(eventbridge.build()),
                bus,
            )
        });
        let deliveries = config.webhook_queue_url.clone().map(|url| {
            let mut sqs = aws_sdk_sqs::config::Builder::from(sdk).http_client(sdk_http.clone());
            if let Some(endpoint) = endpoint_override("AWS_ENDPOINT_URL_SQS") {
                sqs = sqs.endpoint_url(endpoint);
            }
            #[cfg(feature = "call-log")]
            if let Some(recorder) = crate::calls::Recorder::from_env(&config) {
                sqs = sqs.interceptor(recorder);
            }
            crate::adapters::queue::DeliveryQueue::new(
                aws_sdk_sqs::Client::from_conf(sqs.build()),
                url,
            )
        });
        let mut app = Self::assemble(
            http,
            config,
            aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            aws_sdk_secretsmanager::Client::from_conf(secrets.build()),
        );
        app.events = events;
        app.deliveries = deliveries;
        app
    }

    /// The client that calls developers' webhook endpoints (made on first use: most functions
    /// never call one).
    pub fn outbound(&self) -> &crate::adapters::outbound::Outbound {
        self.outbound.get_or_init(|| {
            crate::adapters::outbound::Outbound::new(
                self.config.webhooks_local,
                std::time::Duration::from_secs(crate::domain::webhooks::TIMEOUT_SECS),
            )
        })
    }

    /// The same from ready clients (tests point them at fault-injecting proxies).
    pub fn from_clients(
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        secrets_manager: aws_sdk_secretsmanager::Client,
    ) -> Self {
        Self::assemble(net::client(), config, dynamodb, secrets_manager)
    }

    fn assemble(
        http: net::Http,
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        secrets_manager: aws_sdk_secretsmanager::Client,
    ) -> Self {
        #[cfg(feature = "call-log")]
        let (dynamodb, secrets_manager) = match crate::calls::Recorder::from_env(&config) {
            Some(recorder) => (
                aws_sdk_dynamodb::Client::from_conf(
                    dynamodb
                        .config()
                        .to_builder()
                        .interceptor(recorder.clone())
                        .build(),
                ),
                aws_sdk_secretsmanager::Client::from_conf(
                    secrets_manager
                        .config()
                        .to_builder()
                        .interceptor(recorder)
                        .build(),
                ),
            ),
            None => (dynamodb, secrets_manager),
        };
        let store = Store::new(dynamodb, config.table_name.clone());
        let usage_cache = config.usage_cache;
        Self {
            http,
            config,
            store,
            secrets: SecretsCache::new(secrets_manager.clone(), None),
            project_secrets: SecretsCache::new(secrets_manager, Some(CACHE_TTL)),
            stripe: Mutex::new(HashMap::new()),
            packages: ShortCache::new(CACHE_TTL),
            settings: ShortCache::new(CACHE_TTL),
            projects: ShortCache::new(CACHE_TTL),
            events: None,
            deliveries: None,
            outbound: std::sync::OnceLock::new(),
            usage: UsageCache::new(usage_cache),
        }
    }

    /// The default project in the deployment's mode: the contract routes' scope.
    pub fn default_scope(&self) -> Scope {
        Scope::new(ProjectId::default_project(), self.config.default_mode)
    }

    /// Whether the scope is the one the deployment's own secret configures.
    pub fn is_deployment_scope(&self, scope: &Scope) -> bool {
        scope.project.is_default() && scope.mode == self.config.default_mode
    }

    /// The scope's settings as this instance kept them (for a minute): for what may lag a
    /// change by that long (the spend order, the response format, the PaymentSheet version).
    /// Settings no code can read are the defaults, with the error in the log for an operator:
    /// they never stop a spend or an answer.
    pub async fn cached_settings(&self, scope: &Scope) -> Result<ProjectSettings, StoreError> {
        if let Some(settings) = self.settings.get(scope) {
            return Ok(settings);
        }
        let settings = match self.store_for(scope).settings().await {
            Ok(settings) => settings.unwrap_or_default(),
            Err(StoreError::Malformed(err)) => {
                tracing::error!(cause = %err, "the scope's settings cannot be read; using the defaults");
                ProjectSettings::default()
            }
            Err(other) => return Err(other),
        };
        self.settings.put(scope.clone(), settings.clone());
        Ok(settings)
    }

    /// The table through the scope's keys, spending in the scope's order (its settings', kept
    /// for a minute).
    pub async fn spending_store(&self, scope: &Scope) -> Result<Store, StoreError> {
        let order = self
            .cached_settings(scope)
            .await?
            .spend_order
            .unwrap_or_default();
        Ok(self.store_for(scope).with_spend_order(order))
    }

    /// Forgets a scope's settings (they changed here).
    pub fn forget_settings(&self, scope: &Scope) {
        self.settings.remove(scope);
    }

    /// The table through the scope's keys.
    pub fn store_for(&self, scope: &Scope) -> Store {
        self.store
            .scoped(Keys::new(scope.key_prefix(self.config.default_mode)))
    }

    /// The Secrets Manager id of the scope's secret.
    pub fn secret_id_for(&self, scope: &Scope) -> Result<String, SecretsError> {
        if self.is_deployment_scope(scope) {
            return self
                .config
                .secret_id
                .clone()
                .ok_or(SecretsError::NotConfigured);
        }
        let prefix = self
            .config
            .project_secret_prefix
            .as_deref()
            .ok_or(SecretsError::NotConfigured)?;
        Ok(format!("{prefix}/{}/{}", scope.project, scope.mode))
    }

    fn secrets_cache_for(&self, scope: &Scope) -> &SecretsCache {
        if self.is_deployment_scope(scope) {
            &self.secrets
        } else {
            &self.project_secrets
        }
    }

    /// The scope's Stripe secrets (cached).
    /// The mark on the Stripe objects this deployment makes for `scope` (`coffer_scope`).
    pub fn scope_mark(&self, scope: &Scope) -> String {
        scope.mark(self.config.deployment.as_deref())
    }

    /// Whether a Stripe object marked `made_in` is this deployment's, in `scope`.
    pub fn owns(&self, scope: &Scope, made_in: Option<&str>, required: bool) -> bool {
        scope.owns_in(self.config.deployment.as_deref(), made_in, required)
    }

    pub async fn secrets_for(&self, scope: &Scope) -> Result<Arc<StripeSecrets>, SecretsError> {
        let id = self.secret_id_for(scope)?;
        crate::calls::note_secret_use(&self.config, &id);
        self.secrets_cache_for(scope).get(&id).await
    }

    /// A fresh read of the scope's secrets, unless one was made within `min_age`.
    pub async fn refresh_secrets(
        &self,
        scope: &Scope,
        min_age: Duration,
    ) -> Result<Option<Arc<StripeSecrets>>, SecretsError> {
        let id = self.secret_id_for(scope)?;
        self.secrets_cache_for(scope).refresh(&id, min_age).await
    }

    /// The scope's project as the registry has it (cached for a minute); `None`: unknown (not
    /// cached, so a project is usable as soon as it is created).
    pub async fn project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError> {
        if let Some(project) = self.projects.get(id) {
            return Ok(Some(project));
        }
        let project = self.store.project(id).await?;
        if let Some(project) = &project {
            self.projects.put(id.clone(), project.clone());
        }
        Ok(project)
    }

    /// Drops this instance's cached copy of a project (after this instance changed it).
    pub fn forget_project(&self, id: &ProjectId) {
        self.projects.remove(id);
    }

    /// The scope's Stripe client, built from its secret key, again when the key changes. A
    /// copy of the secret with no key yet (the placeholder a deploy creates), or whose key
    /// Stripe refused (rolled), is read again first, at most once per `secret_refresh_interval`:
    /// filling or rotating the secret needs no restart.
    pub async fn stripe_for(&self, scope: &Scope) -> Result<StripeApi, ClientError> {
        let mut secrets = self.secrets_for(scope).await?;
        let built = self
            .stripe
            .lock()
            .ok()
            .and_then(|clients| clients.get(scope).cloned());
        let refused = built
            .as_ref()
            .is_some_and(|(from, client)| Arc::ptr_eq(from, &secrets) && client.key_refused());
        if refused || secrets.stripe_secret_key().is_err() {
            if let Some(fresh) = self
                .refresh_secrets(scope, self.config.secret_refresh_interval)
                .await?
            {
                tracing::info!(refused, "the Stripe key was read again");
                secrets = fresh;
            }
        }
        if let Some((from, client)) = built {
            if Arc::ptr_eq(&from, &secrets) && !client.key_refused() {
                return Ok(client);
            }
        }
        let client = StripeApi::new(
            &self.http,
            secrets.stripe_secret_key()?,
            self.config.stripe_api_base_for(&scope.project),
        )?;
        if let Ok(mut clients) = self.stripe.lock() {
            clients.insert(scope.clone(), (secrets, client.clone()));
        }
        Ok(client)
    }

    /// The scope's stored packages (active or not), from memory when read within a minute.
    pub async fn packages_for(&self, scope: &Scope) -> Result<Vec<CreditPackage>, StoreError> {
        if let Some(packages) = self.packages.get(scope) {
            return Ok(packages);
        }
        let packages = self.store_for(scope).list_packages().await?;
        self.packages.put(scope.clone(), packages.clone());
        Ok(packages)
    }
}
