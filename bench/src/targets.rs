//! What is measured: each target's program, the event it is invoked with, and the environment
//! template.yaml gives it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::WEBHOOK_SECRET;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The bare `lambda_http` function.
    Floor,
    /// A Coffer function answering requests (API Gateway or a stream).
    Function,
    /// A scheduled job: cold starts with its event, no warm series.
    Scheduled,
    /// A baseline in `bench/node-peer/`.
    Node,
}

/// What a target is invoked with; made again for every invocation.
pub(crate) enum EventSource {
    None,
    Fixed(Value),
    /// A Stripe webhook event, re-signed (a signature is good for five minutes; the run is
    /// longer), kept for a minute at a time.
    Signed {
        text: String,
        signed: Mutex<Option<(Instant, Value)>>,
    },
    /// An event whose JSON body carries `idempotencyKey`: a new key each time, so that every
    /// invocation is a new spend or usage record, not a replay.
    FreshKey(Value),
    /// Events used once each, in order (a reservation's capture each); past the last, the last
    /// again (a replay).
    Pool {
        events: Vec<Value>,
        next: Mutex<usize>,
    },
}

impl EventSource {
    pub(crate) fn signed(name: &str) -> Self {
        let text = std::fs::read_to_string(root().join("events").join(name)).expect("event file");
        Self::Signed {
            text,
            signed: Mutex::new(None),
        }
    }

    pub(crate) fn make(&self) -> Option<Value> {
        match self {
            Self::None => None,
            Self::Fixed(event) => Some(event.clone()),
            Self::Signed { text, signed } => {
                let mut signed = signed.lock().ok()?;
                match &*signed {
                    Some((at, event)) if at.elapsed() < Duration::from_secs(60) => {
                        Some(event.clone())
                    }
                    _ => {
                        let text = coffer_dev::resign(text, WEBHOOK_SECRET).expect("re-sign");
                        let event: Value = serde_json::from_str(&text).expect("event JSON");
                        *signed = Some((Instant::now(), event.clone()));
                        Some(event)
                    }
                }
            }
            Self::Pool { events, next } => {
                let mut next = next.lock().ok()?;
                let event = events.get(*next).or_else(|| events.last()).cloned();
                *next += 1;
                event
            }
            Self::FreshKey(event) => {
                let mut event = event.clone();
                let body = event.get("body").and_then(Value::as_str).unwrap_or("{}");
                let mut body: Value = serde_json::from_str(body).expect("body JSON");
                body["idempotencyKey"] =
                    Value::String(format!("bench-{}", uuid::Uuid::new_v4().simple()));
                event["body"] = Value::String(body.to_string());
                Some(event)
            }
        }
    }
}

pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) event: EventSource,
    /// What is shipped: the binary, or the Node peer's folder.
    pub(crate) package: PathBuf,
    /// The process's environment (besides `PATH` and the `AWS_LAMBDA_*` variables).
    pub(crate) vars: Vec<(String, String)>,
    /// Calls Stripe (has `STRIPE_SECRET_ID`, as in template.yaml).
    pub(crate) stripe: bool,
}

/// The process environment of each function, as template.yaml gives it (the Globals and the
/// function's own variables), pointed at the counting proxies.
pub(crate) struct Env {
    pub(crate) table: String,
    pub(crate) secret_id: String,
    pub(crate) project_secret_prefix: String,
    pub(crate) dynamodb: String,
    pub(crate) secrets: String,
    pub(crate) stripe: String,
    pub(crate) eventbridge: String,
}

impl Env {
    pub(crate) fn common(&self) -> Vec<(String, String)> {
        [
            ("TABLE_NAME", self.table.as_str()),
            ("DEFAULT_CURRENCY", "usd"),
            ("DEFAULT_MODE", "test"),
            ("PROJECT_SECRET_PREFIX", &self.project_secret_prefix),
            ("DEVELOPER_CLAIM", "cognito:groups"),
            ("DEVELOPER_CLAIM_VALUE", "developers"),
            ("ORGANISATION_CLAIM", "organisations"),
            ("RUST_LOG", "info"),
            ("STRIPE_API_BASE", &self.stripe),
            ("AWS_ENDPOINT_URL_DYNAMODB", &self.dynamodb),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &self.secrets),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", &self.eventbridge),
            ("AWS_REGION", "us-east-1"),
            // The emulators accept any credentials; these are placeholders, not keys.
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `name`'s variables, and whether it calls Stripe.
    pub(crate) fn of(&self, name: &str) -> (Vec<(String, String)>, bool) {
        let mut vars = self.common();
        let mut add = |k: &str, v: &str| vars.push((k.to_owned(), v.to_owned()));
        let stripe = matches!(
            name,
            "create-payment-intent" | "stripe-webhook" | "reconcile" | "billing" | "meter-usage"
        );
        if stripe {
            add("STRIPE_SECRET_ID", &self.secret_id);
        }
        if matches!(name, "internal-consume-credits" | "usage") {
            // The caller of events/internal-*.json.
            add(
                "ALLOWED_CALLER_ARNS",
                "arn:aws:iam::123456789012:role/app-backend",
            );
        }
        if name == "billing-events" {
            add("EVENT_BUS_NAME", "default");
        }
        if name == "meter-usage" {
            add("METER_SETTLE_SECONDS", "60");
        }
        (vars, stripe)
    }
}

/// Every function in functions/, with the event it is measured with.
pub(crate) fn functions() -> Vec<(String, Kind, EventSource)> {
    let mut create = load_event("create-payment-intent.json");
    // Without the key every invocation creates a new intent: the full path, not a replay.
    if let Some(headers) = create.get_mut("headers").and_then(Value::as_object_mut) {
        headers.remove("idempotency-key");
    }
    use EventSource::{Fixed, FreshKey};
    let f = Kind::Function;
    let mut list: Vec<(String, Kind, EventSource)> = vec![
        (
            "credit-packages",
            f,
            Fixed(load_event("credit-packages.json")),
        ),
        ("create-payment-intent", f, Fixed(create)),
        ("balance", f, Fixed(load_event("balance.json"))),
        (
            "payment-history",
            f,
            Fixed(load_event("payment-history.json")),
        ),
        (
            "stripe-webhook",
            f,
            EventSource::signed("webhook-payment-intent-succeeded.json"),
        ),
        // The sample user has credits (granted below): each invocation a new spend.
        (
            "consume-credits",
            f,
            FreshKey(load_event("consume-credits.json")),
        ),
        (
            "internal-consume-credits",
            f,
            FreshKey(load_event("internal-consume-credits.json")),
        ),
        // The sample project is the sample developer's (claimed below): its configuration.
        (
            "project-config",
            f,
            Fixed(load_event("project-config-unknown-project.json")),
        ),
        (
            "developer-api",
            f,
            Fixed(load_event("developer-projects.json")),
        ),
        ("stats", f, Fixed(load_event("stream-ledger-entry.json"))),
        ("billing", f, Fixed(load_event("plans.json"))),
        ("usage", f, FreshKey(load_event("internal-usage.json"))),
        (
            "billing-events",
            f,
            Fixed(load_event("stream-balance-depleted.json")),
        ),
        (
            "reconcile",
            Kind::Scheduled,
            Fixed(load_event("scheduled-reconcile.json")),
        ),
        (
            "check-invariants",
            Kind::Scheduled,
            Fixed(load_event("scheduled-check-invariants.json")),
        ),
        (
            "meter-usage",
            Kind::Scheduled,
            Fixed(load_event("scheduled-meter-usage.json")),
        ),
    ]
    .into_iter()
    .map(|(name, kind, event)| (name.to_owned(), kind, event))
    .collect();
    // A function added later without a line here is still measured (init, size, RSS).
    let known: BTreeSet<String> = list.iter().map(|(n, _, _)| n.clone()).collect();
    let mut dirs: Vec<String> = std::fs::read_dir(root().join("functions"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for name in dirs {
        if !known.contains(&name) {
            eprintln!(
                "{name}: no event in bench/src/targets.rs; measuring init, size and RSS only"
            );
            list.push((name, Kind::Function, EventSource::None));
        }
    }
    list
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn load_event(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("events").join(name)).expect("event file");
    serde_json::from_str(&text).expect("event JSON")
}
