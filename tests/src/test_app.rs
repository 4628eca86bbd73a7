//! A test app: its own table, secret, router and webhook, made for one test, and the figures it
//! reports when the test ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coffer::config::Config;
use coffer::{app, App};
use coffer_dev::{router, setup};
use serde_json::{json, Value};

use crate::proxy::{self, FaultProxy};
use crate::settings::{
    project_stripe_bases, required_env, SecretSetup, BACKEND_ROLE, JWT_SECRET, METERED_PROJECT,
    SECRET_REFRESH_SECS, SHORT_USAGE_LEASE_MARGIN_MS, SHORT_USAGE_LEASE_MS, STRIPE_KEY,
    TEST_PAGE_ORIGIN,
};

pub struct TestApp {
    /// The Stripe test double in front of localstripe, which the app talks to.
    pub double_base: String,
    pub base_url: String,
    pub stripe_base: String,
    /// The key the app's secret holds (localstripe's placeholder, or the real test key).
    pub stripe_key: String,
    pub webhook_secret: String,
    pub table: String,
    pub secret_id: String,
    pub app: Arc<router::LocalApi>,
    pub http: reqwest::Client,
    /// The fault proxies in front of DynamoDB, Secrets Manager and Stripe, when asked for.
    pub proxies: Option<Proxies>,
    pub(crate) delivered: AtomicUsize,
    pub(crate) invariant_checks: AtomicUsize,
    /// Faults injected other than through the proxies (answers the test double lost).
    pub injected: AtomicUsize,
    /// Webhooks registered with a localstripe (base URL, id), muted when the test ends.
    pub(crate) webhooks: std::sync::Mutex<Vec<(String, String)>>,
    /// The queue a rule on the test's event bus fills (with `SecretSetup::events`).
    pub(crate) events_queue: Option<String>,
    /// Billing events taken from the queue so far.
    pub(crate) received_events: std::sync::Mutex<Vec<Value>>,
}

pub struct Proxies {
    pub dynamodb: FaultProxy,
    pub secrets: FaultProxy,
    pub stripe: FaultProxy,
}

impl Proxies {
    pub fn faults(&self) -> usize {
        [&self.dynamodb, &self.secrets, &self.stripe]
            .iter()
            .map(|p| p.faulted.load(Ordering::SeqCst))
            .sum()
    }
}

/// Each test's figures go to `COFFER_REPORT_FILE` (one JSON line per test) when it ends, so
/// that `scripts/test.sh` can print the closing table.
impl Drop for TestApp {
    fn drop(&mut self) {
        let undescribed = self
            .app
            .violations
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let webhooks = self
            .webhooks
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        if !webhooks.is_empty() {
            // Drop is not async, and the test's runtime is ending: a small runtime of its own.
            let muted = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    for (base, id) in webhooks {
                        let _ = setup::mute_webhook(&base, &id).await;
                    }
                });
            });
            let _ = muted.join();
        }
        if let Ok(path) = std::env::var("COFFER_REPORT_FILE") {
            self.report(&path, undescribed.is_empty());
        }
        if !undescribed.is_empty() && !std::thread::panicking() {
            panic!(
                "answers the OpenAPI document does not describe:\n{}",
                undescribed.join("\n")
            );
        }
    }
}

impl TestApp {
    /// Appends this test's figures to the report file.
    fn report(&self, path: &str, described: bool) {
        let scenario = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        let line = json!({
            "scenario": scenario,
            "events": self.delivered.load(Ordering::SeqCst),
            "faults": self.proxies.as_ref().map_or(0, Proxies::faults)
                + self.injected.load(Ordering::SeqCst),
            "invariantChecks": self.invariant_checks.load(Ordering::SeqCst),
            "result": if std::thread::panicking() || !described { "FAILED" } else { "passed" },
        });
        // One write call per line: tests run concurrently, and `writeln!` would write the
        // line in pieces that another test's line can land between.
        use std::io::Write;
        let text = format!("{line}\n");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

/// The OpenAPI document's contract, loaded once per test binary.
pub fn contract() -> Arc<coffer_dev::contract::Contract> {
    static CONTRACT: std::sync::OnceLock<Arc<coffer_dev::contract::Contract>> =
        std::sync::OnceLock::new();
    CONTRACT
        .get_or_init(|| {
            Arc::new(coffer_dev::contract::Contract::load().expect("openapi.json loads"))
        })
        .clone()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SecretSetup::default()).await
}

/// Sends the in-process functions' logs (the same JSON lines as in Lambda, at the production
/// level) to `COFFER_TEST_LOG`, so that `scripts/test.sh` can scan the whole run for secrets.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(path) = std::env::var("COFFER_TEST_LOG") else {
            return;
        };
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    });
}

pub async fn spawn_app_with(secret_setup: SecretSetup) -> TestApp {
    capture_logs();
    let dynamodb_url = required_env("AWS_ENDPOINT_URL_DYNAMODB");
    let secrets_url = required_env("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let real = secret_setup.real_stripe_key.clone();
    let stripe_base = match &real {
        Some(_) => "https://api.stripe.com".to_owned(),
        None => required_env("STRIPE_API_BASE"),
    };
    let stripe_key = real.clone().unwrap_or_else(|| STRIPE_KEY.to_owned());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("coffer-test-{id}");
    let secret_id = format!("coffer-test-{id}");
    let webhook_secret = format!("whsec_test_{}", &id[..12]);

    let sdk = app::load_sdk_config().await;
    if !secret_setup.missing {
        let webhook = if secret_setup.empty_webhook_secret || secret_setup.placeholder {
            ""
        } else {
            &webhook_secret
        };
        let stored_key = match (secret_setup.placeholder, secret_setup.rolled_stripe_key) {
            (true, _) => String::new(),
            (false, true) => format!("sk_test_rolled_{}", &id[..12]),
            (false, false) => stripe_key.clone(),
        };
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        setup::store_secret(&client, &secret_id, &stored_key, webhook)
            .await
            .expect("store the test secret in moto");
    }
    // Bound first: the public base URL names its port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = Config::new(
        table.clone(),
        Some(secret_id.clone()),
        Some(stripe_base.clone()),
    );
    config.allowed_callers = vec![BACKEND_ROLE.to_owned()];
    config.public_base_url = secret_setup
        .base_path
        .map(|path| format!("http://127.0.0.1:{port}{path}"));
    config.deployment = secret_setup.deployment.map(str::to_owned);
    // Tests write their records before they report them: no settling time is needed.
    config.meter_settle = Duration::ZERO;
    if secret_setup.short_usage_leases {
        config.usage_lease = Duration::from_millis(SHORT_USAGE_LEASE_MS);
        config.usage_lease_margin = Duration::from_millis(SHORT_USAGE_LEASE_MARGIN_MS);
    }
    config.secret_refresh_interval = Duration::from_secs(SECRET_REFRESH_SECS);
    config.project_secret_prefix = Some(format!("coffer-test-{id}/projects"));
    // Each test project has its own localstripe (started by scripts/test.sh), behind a test
    // double of its own for what localstripe lacks; `down` has none.
    config.stripe_api_base_per_project = Vec::new();
    for (id, url) in project_stripe_bases() {
        let Some(project) = coffer::domain::scope::ProjectId::parse(id) else {
            continue;
        };
        let base = if id == "down" {
            url
        } else {
            coffer_dev::stripe_double::start(&url)
                .await
                .expect("start a project's Stripe test double")
        };
        config.stripe_api_base_per_project.push((project, base));
    }
    let events_queue = if secret_setup.events {
        let bus = format!("coffer-test-{id}");
        let queue = setup::event_bus_and_queue(&sdk, &bus, &format!("coffer-test-{id}-events"))
            .await
            .expect("the test's event bus and queue in moto");
        config.event_bus_name = Some(bus);
        Some(queue)
    } else {
        None
    };
    let webhooks_queue = if secret_setup.webhooks {
        let url = setup::queue(
            &setup::sqs_client(&sdk),
            &format!("coffer-test-{id}-webhooks"),
        )
        .await
        .expect("the test's webhook queue in moto");
        config.webhook_queue_url = Some(url.clone());
        config.webhooks_local = true;
        config.webhook_retry_scale = 1.0 / 3600.0;
        Some(url)
    } else {
        None
    };
    setup::table_and_packages(&App::new(config.clone(), &sdk).store)
        .await
        .expect("create the test table");
    let double_base = if real.is_some() {
        config.stripe_api_base = None;
        config.stripe_api_base_per_project = Vec::new();
        String::new()
    } else {
        setup::stripe_plans(&stripe_base, STRIPE_KEY)
            .await
            .expect("the sample plans in localstripe");
        // The test double answers what localstripe lacks (Checkout, portal, ephemeral keys).
        let double_base = coffer_dev::stripe_double::start(&stripe_base)
            .await
            .expect("start the Stripe test double");
        config.stripe_api_base = Some(double_base.clone());
        // The `metered` project talks to the double too (its billing meters).
        if let Some(metered) = coffer::domain::scope::ProjectId::parse(METERED_PROJECT) {
            config
                .stripe_api_base_per_project
                .push((metered, double_base.clone()));
        }
        double_base
    };
    let proxies = if secret_setup.proxied {
        Some(Proxies {
            dynamodb: FaultProxy::start(&proxy::authority(&dynamodb_url)).await,
            secrets: FaultProxy::start(&proxy::authority(&secrets_url)).await,
            // In front of the double (which passes on to localstripe what it does not answer).
            stripe: FaultProxy::start(&proxy::authority(if double_base.is_empty() {
                &stripe_base
            } else {
                &double_base
            }))
            .await,
        })
    } else {
        None
    };
    let app = match &proxies {
        None => App::new(config, &sdk),
        Some(p) => {
            config.stripe_api_base = Some(p.stripe.url.clone());
            let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
                .endpoint_url(&p.dynamodb.url)
                .build();
            let secrets = aws_sdk_secretsmanager::config::Builder::from(&sdk)
                .endpoint_url(&p.secrets.url)
                .build();
            App::from_clients(
                config,
                aws_sdk_dynamodb::Client::from_conf(dynamodb),
                aws_sdk_secretsmanager::Client::from_conf(secrets),
            )
        }
    };

    let mut api = router::LocalApi::new(app, JWT_SECRET);
    if real.is_none() {
        api.page = router::PageConfig::localstripe(&stripe_base);
    }
    api.allowed_origins = vec![TEST_PAGE_ORIGIN.to_owned()];
    api.contract = Some(contract());
    let api = Arc::new(api);
    tokio::spawn(router::serve(listener, api.clone()));
    if let Some(queue) = webhooks_queue {
        coffer_dev::webhooks::start(api.clone(), &sdk, queue);
    }
    let base_url = format!("http://127.0.0.1:{port}");
    let mut registered = Vec::new();
    if !secret_setup.no_webhook && real.is_none() {
        setup::register_webhook(
            &stripe_base,
            &table,
            &format!("{base_url}/api/stripe/webhook"),
            &webhook_secret,
        )
        .await
        .expect("register the webhook with localstripe");
        registered.push((stripe_base.clone(), table.clone()));
    }

    TestApp {
        base_url,
        stripe_base,
        stripe_key,
        double_base,
        webhook_secret,
        table,
        secret_id,
        app: api,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        proxies,
        delivered: AtomicUsize::new(0),
        invariant_checks: AtomicUsize::new(0),
        injected: AtomicUsize::new(0),
        webhooks: std::sync::Mutex::new(registered),
        events_queue,
        received_events: std::sync::Mutex::new(Vec::new()),
    }
}

/// Another router on the same table and secrets, with its own App: a function instance after a
/// cold start (nothing cached). Returns its base URL.
pub async fn fresh_router(test: &TestApp) -> String {
    let sdk = app::load_sdk_config().await;
    let fresh = App::new(test.app.app.config.clone(), &sdk);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut api = router::LocalApi::new(fresh, JWT_SECRET);
    api.contract = Some(contract());
    // Its answers count as the test's: a violation there fails the test too.
    api.violations = test.app.violations.clone();
    tokio::spawn(router::serve(listener, Arc::new(api)));
    format!("http://127.0.0.1:{port}")
}
