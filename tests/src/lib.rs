//! Test harness for over-the-wire tests. `spawn_app` gives each test its own DynamoDB table, its
//! own secret in the Secrets Manager emulator and its own local router on a free port, with a
//! webhook registered at localstripe, like a fresh database per test. The servers themselves are
//! started by `scripts/test.sh`, which exports their URLs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coffer::config::Config;
use coffer::{app, App};
use coffer_dev::{router, setup, token};
use proxy::FaultProxy;
use serde_json::{json, Value};

/// The Stripe key used with localstripe (it accepts any `sk_` key).
pub const STRIPE_KEY: &str = "sk_test_coffer_local";
pub const JWT_SECRET: &str = "integration-test-jwt-secret";
/// The IAM role allowed on `/internal/*` in tests (`service_token("app-backend")` is a session
/// of it).
pub const BACKEND_ROLE: &str = "arn:aws:iam::000000000000:role/app-backend";
/// An origin the test routers allow by CORS (a storefront served from another host).
pub const TEST_PAGE_ORIGIN: &str = "https://shop.example.test";
/// Test apps re-read a rotated webhook secret at most this often.
pub const SECRET_REFRESH_SECS: u64 = 2;

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
    delivered: AtomicUsize,
    invariant_checks: AtomicUsize,
    /// Webhooks registered with a localstripe (base URL, id), muted when the test ends.
    webhooks: std::sync::Mutex<Vec<(String, String)>>,
    /// The queue a rule on the test's event bus fills (with `SecretSetup::events`).
    events_queue: Option<String>,
    /// Billing events taken from the queue so far.
    received_events: std::sync::Mutex<Vec<Value>>,
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
            "faults": self.proxies.as_ref().map_or(0, Proxies::faults),
            "invariantChecks": self.invariant_checks.load(Ordering::SeqCst),
            "result": if std::thread::panicking() || !described { "FAILED" } else { "passed" },
        });
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test.sh")
    })
}

/// Options for a test app whose secret is deliberately broken.
#[derive(Default, Clone)]
pub struct SecretSetup {
    /// Store no secret at all (the id points at nothing).
    pub missing: bool,
    /// Do not register the webhook with localstripe (a webhook that is unreachable).
    pub no_webhook: bool,
    /// Put a fault proxy in front of DynamoDB, Secrets Manager and Stripe.
    pub proxied: bool,
    /// Store an empty webhook secret.
    pub empty_webhook_secret: bool,
    /// Talk to Stripe's real test mode with this `sk_test_` key (the opt-in suite): no
    /// localstripe, no test double, no webhook registration (Stripe cannot reach a local machine;
    /// tests deliver events built from Stripe's real objects, signed locally).
    pub real_stripe_key: Option<String>,
    /// Publish billing events to a bus of the test's own in moto, with a rule that fills a
    /// queue the test reads (`TestApp::billing_events`).
    pub events: bool,
    /// Usage leases that end after 300 ms and are settled 500 ms later (to see them settle).
    pub short_usage_leases: bool,
    /// The deployment's name (`COFFER_DEPLOYMENT`), which marks the Stripe objects it makes.
    pub deployment: Option<&'static str>,
}

/// How long a usage block lasts with `short_usage_leases`, and the margin before it is settled:
/// short enough that a test sees several blocks taken in turn, long enough that a block taken
/// just before a check is still live on a slow machine.
pub const SHORT_USAGE_LEASE_MS: u64 = 1_500;
pub const SHORT_USAGE_LEASE_MARGIN_MS: u64 = 500;

/// The test projects and the Stripe each talks to: `alpha` and `beta` their own localstripe
/// processes, `down` a port where nothing answers (Stripe unreachable).
pub fn project_stripe_bases() -> Vec<(&'static str, String)> {
    let mut bases = vec![("down", "http://127.0.0.1:9".to_owned())];
    for (id, variable) in [
        ("alpha", "TEST_STRIPE_ALPHA_BASE"),
        ("beta", "TEST_STRIPE_BETA_BASE"),
    ] {
        bases.push((id, required_env(variable)));
    }
    bases
}

/// The Stripe base URL of a test project.
pub fn project_stripe_base(project: &str) -> String {
    project_stripe_bases()
        .into_iter()
        .find(|(id, _)| *id == project)
        .map(|(_, url)| url)
        .unwrap_or_else(|| panic!("no localstripe for project {project}"))
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
        let webhook = if secret_setup.empty_webhook_secret {
            ""
        } else {
            &webhook_secret
        };
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        setup::store_secret(&client, &secret_id, &stripe_key, webhook)
            .await
            .expect("store the test secret in moto");
    }
    let mut config = Config::new(
        table.clone(),
        Some(secret_id.clone()),
        Some(stripe_base.clone()),
    );
    config.allowed_callers = vec![BACKEND_ROLE.to_owned()];
    config.deployment = secret_setup.deployment.map(str::to_owned);
    // Tests write their records before they report them: no settling time is needed.
    config.meter_settle = Duration::ZERO;
    if secret_setup.short_usage_leases {
        config.usage_lease = Duration::from_millis(SHORT_USAGE_LEASE_MS);
        config.usage_lease_margin = Duration::from_millis(SHORT_USAGE_LEASE_MARGIN_MS);
    }
    config.secret_refresh_interval = Duration::from_secs(SECRET_REFRESH_SECS);
    config.project_secret_prefix = Some(format!("coffer-test-{id}/projects"));
    // Each test project has its own localstripe (started by scripts/test.sh); `down` has none.
    config.stripe_api_base_per_project = project_stripe_bases()
        .into_iter()
        .filter_map(|(id, url)| Some((coffer::domain::scope::ProjectId::parse(id)?, url)))
        .collect();
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
        double_base
    };
    let proxies = if secret_setup.proxied {
        Some(Proxies {
            dynamodb: FaultProxy::start(&proxy::authority(&dynamodb_url)).await,
            secrets: FaultProxy::start(&proxy::authority(&secrets_url)).await,
            stripe: FaultProxy::start(&proxy::authority(&stripe_base)).await,
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

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut api = router::LocalApi::new(app, JWT_SECRET);
    if real.is_none() {
        api.page = router::PageConfig::localstripe(&stripe_base);
    }
    api.allowed_origins = vec![TEST_PAGE_ORIGIN.to_owned()];
    api.contract = Some(contract());
    let api = Arc::new(api);
    tokio::spawn(router::serve(listener, api.clone()));
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

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    /// Fails the test at once on an answer the OpenAPI document does not describe.
    pub fn assert_described(&self) {
        let undescribed = self
            .app
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        assert!(
            undescribed.is_empty(),
            "answers the OpenAPI document does not describe:\n{}",
            undescribed.join("\n")
        );
    }

    pub fn token(&self, user: &str) -> String {
        token::issue(JWT_SECRET, user, 3600).expect("token")
    }

    /// Registers a webhook with the localstripe at `base` (muted when the test ends).
    pub async fn register_webhook_at(&self, base: &str, id: &str, url: &str, secret: &str) {
        setup::register_webhook(base, id, url, secret)
            .await
            .expect("register a webhook with localstripe");
        if let Ok(mut webhooks) = self.webhooks.lock() {
            webhooks.push((base.to_owned(), id.to_owned()));
        }
    }

    /// Counts the table's changes into the stats counters from now on, as the stats function
    /// does deployed (only the tests of stats pay for the polling).
    pub async fn follow_stream(&self) {
        self.follow_stream_with(coffer_dev::streams::Delivery::default())
            .await
    }

    /// [`TestApp::follow_stream`], retrying a failing record as `delivery` says before parking it.
    pub async fn follow_stream_with(&self, delivery: coffer_dev::streams::Delivery) {
        let sdk = app::load_sdk_config().await;
        coffer_dev::streams::start_with(self.app.clone(), &sdk, delivery)
            .await
            .expect("follow the table's stream");
    }

    /// The billing events that reached the test's queue through the bus and its rule, once
    /// `done` holds for them (or `timeout` passed): every event received so far.
    pub async fn billing_events(
        &self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let queue = self
            .events_queue
            .as_deref()
            .expect("the test app was spawned with events: true");
        let sdk = app::load_sdk_config().await;
        let sqs = setup::sqs_client(&sdk);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let taken = setup::take_events(&sqs, queue, 1)
                .await
                .expect("read the events queue");
            let all = {
                let mut received = self.received_events.lock().expect("events lock");
                received.extend(taken);
                received.clone()
            };
            if done(&all) || std::time::Instant::now() >= deadline {
                return all;
            }
        }
    }

    /// A token of a user who belongs to `organisations`.
    pub fn member_token(&self, user: &str, organisations: &[&str]) -> String {
        token::issue_member(JWT_SECRET, user, organisations, 3600).expect("token")
    }

    /// A developer's token (the developer claim the local stack expects).
    pub fn developer_token(&self, developer: &str) -> String {
        token::issue_developer(JWT_SECRET, developer, 3600).expect("token")
    }

    /// Any request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let reply = read(req.send().await.expect("request")).await;
        self.assert_described();
        reply
    }

    pub async fn get(&self, path: &str, user: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base_url));
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        let reply = read(req.send().await.expect("GET")).await;
        self.assert_described();
        reply
    }

    pub async fn post(
        &self,
        path: &str,
        user: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let reply = read(req.send().await.expect("POST")).await;
        self.assert_described();
        reply
    }

    /// create-payment-intent for `package`; returns the PaymentIntent id.
    pub async fn create_intent(&self, user: &str, package: &str) -> String {
        let reply = self
            .post(
                "/api/stripe/create-payment-intent",
                Some(user),
                &json!({ "creditPackageId": package }).to_string(),
                &[],
            )
            .await;
        assert_eq!(reply.status, 200, "create-payment-intent: {}", reply.body);
        reply.body["data"]["paymentIntentId"]
            .as_str()
            .expect("paymentIntentId")
            .to_owned()
    }

    pub async fn balance(&self, user: &str) -> f64 {
        let reply = self.get("/api/stripe/balance", Some(user)).await;
        assert_eq!(reply.status, 200, "balance: {}", reply.body);
        reply.body["data"]["balance"]
            .as_f64()
            .expect("balance number")
    }

    /// Sends a webhook body with the given `Stripe-Signature` (or none).
    pub async fn deliver(&self, body: &str, signature: Option<&str>) -> Reply {
        self.delivered.fetch_add(1, Ordering::SeqCst);
        let mut req = self
            .http
            .post(format!("{}/api/stripe/webhook", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            req = req.header("stripe-signature", signature);
        }
        read(req.send().await.expect("webhook POST")).await
    }

    /// Delivers the same signed body `count` times at once; the statuses, in any order.
    pub async fn deliver_concurrently(
        &self,
        body: &str,
        signature: &str,
        count: usize,
    ) -> Vec<u16> {
        self.delivered.fetch_add(count, Ordering::SeqCst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let request = self
                .http
                .post(format!("{}/api/stripe/webhook", self.base_url))
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(body.to_owned());
            tasks.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        }
        let mut statuses = Vec::new();
        while let Some(result) = tasks.join_next().await {
            statuses.push(result.expect("task").expect("delivery"));
        }
        statuses
    }

    /// Counts a delivery made by a test's own request builder (for the closing report).
    pub fn count_delivery(&self) {
        self.delivered.fetch_add(1, Ordering::SeqCst);
    }

    /// Signs `body` now with this app's webhook secret, as Stripe would.
    pub fn sign(&self, body: &str) -> String {
        coffer::webhook::sign(body.as_bytes(), &self.webhook_secret, now())
    }

    // ---- localstripe ---------------------------------------------------------------------

    pub async fn stripe_post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.stripe_post_at(&self.stripe_base, &self.stripe_key, path, form)
            .await
    }

    /// A form POST to the localstripe at `base` with `key`.
    pub async fn stripe_post_at(
        &self,
        base: &str,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        read(req.send().await.expect("localstripe POST")).await
    }

    /// The PaymentIntent as localstripe holds it.
    pub async fn stripe_intent(&self, id: &str) -> Value {
        let req = self
            .http
            .get(format!("{}/v1/payment_intents/{id}", self.stripe_base))
            .bearer_auth(&self.stripe_key);
        read(req.send().await.expect("localstripe GET")).await.body
    }

    /// Pays an intent with a test card, as the frontend would with Stripe.js: creates the
    /// payment method, attaches it, confirms. Returns the confirm reply.
    pub async fn pay_with_card(&self, intent_id: &str, card: &str) -> Reply {
        self.pay_with_card_at(&self.stripe_base, &self.stripe_key, intent_id, card)
            .await
    }

    /// A card payment method at the localstripe at `base`; its id.
    pub async fn card_method_at(&self, base: &str, key: &str, card: &str) -> String {
        let pm = self
            .stripe_post_at(
                base,
                key,
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", card),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        assert_eq!(pm.status, 200, "payment method: {}", pm.body);
        pm.body["id"].as_str().expect("pm id").to_owned()
    }

    /// `card` as the default payment method of `customer` (what a card form does before a
    /// subscription is created).
    pub async fn default_card(&self, customer: &str, card: &str) {
        let pm = self
            .card_method_at(&self.stripe_base, &self.stripe_key, card)
            .await;
        let attach = self
            .stripe_post(
                &format!("/v1/payment_methods/{pm}/attach"),
                &[("customer", customer)],
            )
            .await;
        assert_eq!(attach.status, 200, "attach: {}", attach.body);
        let default = self
            .stripe_post(
                &format!("/v1/customers/{customer}"),
                &[("invoice_settings[default_payment_method]", &pm)],
            )
            .await;
        assert_eq!(default.status, 200, "default card: {}", default.body);
    }

    /// The same at the localstripe at `base`, with `key`.
    pub async fn pay_with_card_at(
        &self,
        base: &str,
        key: &str,
        intent_id: &str,
        card: &str,
    ) -> Reply {
        let pm_id = self.card_method_at(base, key, card).await;
        let attach = self
            .stripe_post_at(
                base,
                key,
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", &pm_id)],
            )
            .await;
        assert_eq!(attach.status, 200, "attach: {}", attach.body);
        self.stripe_post_at(
            base,
            key,
            &format!("/v1/payment_intents/{intent_id}/confirm"),
            &[],
        )
        .await
    }

    /// A `type` event wrapping the PaymentIntent `intent` (as localstripe or Stripe sends it).
    pub fn event(&self, kind: &str, intent: &Value) -> String {
        self.event_at(kind, intent, now())
    }

    /// The same, created at Stripe at `created` (Unix seconds): an older event arriving late.
    pub fn event_at(&self, kind: &str, intent: &Value, created: i64) -> String {
        json!({
            "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
            "object": "event",
            "type": kind,
            "created": created,
            "api_version": "2017-08-15",
            "livemode": false,
            "data": { "object": intent },
        })
        .to_string()
    }

    /// Status of a payment in the user's history.
    pub async fn history_status(&self, user: &str, intent_id: &str) -> Option<String> {
        let reply = self
            .get("/api/stripe/payment-history?limit=100", Some(user))
            .await;
        reply.body["data"].as_array()?.iter().find_map(|p| {
            (p["id"] == intent_id).then(|| p["status"].as_str().unwrap_or_default().to_owned())
        })
    }

    /// The invariant checker over this test's whole table: every balance equals the sum of its
    /// entries and every payment's entries add up to what it says it moved.
    pub async fn assert_invariants(&self) {
        self.invariant_checks.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.app.app.store.scan_ledger().await.expect("scan");
        let report = coffer::domain::invariants::check(&snapshot);
        assert!(
            report.is_clean(),
            "ledger invariants broken: {:?}",
            report.violations
        );
    }

    /// Buys `package` for `user` by delivering a signed `payment_intent.succeeded` built from
    /// localstripe's own intent (no card needed). Returns the intent id.
    pub async fn bought(&self, user: &str, package: &str) -> String {
        let intent_id = self.create_intent(user, package).await;
        let intent = self.stripe_intent(&intent_id).await;
        let reply = self
            .deliver_event("payment_intent.succeeded", &intent)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        intent_id
    }

    /// Delivers a signed event of `kind` around `object`; the reply.
    pub async fn deliver_event(&self, kind: &str, object: &Value) -> Reply {
        let event = self.event(kind, object);
        self.deliver_signed(&event).await
    }

    /// Stripe's retry of localstripe's event about a default-project intent: the intent as
    /// localstripe holds it now, in a signed event of `kind`.
    pub async fn redeliver_intent_event(&self, kind: &str, intent_id: &str) {
        let intent = self.stripe_intent(intent_id).await;
        let reply = self.deliver_event(kind, &intent).await;
        assert_eq!(reply.status, 200, "redelivered {kind}: {}", reply.body);
    }

    /// Delivers an event body signed now (a first delivery or Stripe's retry of it).
    pub async fn deliver_signed(&self, event: &str) -> Reply {
        self.deliver(event, Some(&self.sign(event))).await
    }

    /// POST /api/credits/consume as `user`.
    pub async fn spend(&self, user: &str, amount: Value, key: &str) -> Reply {
        let body = json!({"amount": amount, "reason": "test spend", "idempotencyKey": key});
        self.post("/api/credits/consume", Some(user), &body.to_string(), &[])
            .await
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// How long a test waits for localstripe's webhook. It arrives about a second after the call,
/// but localstripe delivers every event to every test's endpoint in turn, so under the whole
/// suite running in parallel a delivery can wait many seconds. A bound, not a pace.
pub const WEBHOOK_WAIT_SECS: u64 = 60;

/// How long a test waits for localstripe's own delivery before acting as Stripe's retry.
pub const RETRY_AFTER_SECS: u64 = 8;

/// Waits for what a webhook does. localstripe sends each event once, and can drop one (it walks
/// its webhook registry while other tests add theirs, and the delivery task dies), where Stripe
/// retries until it gets a 2xx. So after `RETRY_AFTER_SECS` without the effect, `redeliver` does
/// what Stripe's retry does (the same event again), and the wait goes on to its full bound.
pub async fn settle<T, F, Fut, R>(mut check: F, redeliver: R) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    R: Future<Output = ()>,
{
    if let Some(value) = eventually(RETRY_AFTER_SECS, &mut check).await {
        return Some(value);
    }
    redeliver.await;
    eventually(WEBHOOK_WAIT_SECS, check).await
}

/// Polls `check` until it returns `Some`, for up to `secs` seconds (webhooks arrive ~1 s late).
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
pub mod proxy;

/// Runs the futures together on this task (each an independent request) and returns their
/// outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = Vec::new();
    results.resize_with(pinned.len(), || None);
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, fut) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
