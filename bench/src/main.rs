//! `coffer-bench`: every function, beside a floor (a bare `lambda_http` function) and a Node.js
//! peer, started as Lambda starts them (a local Runtime API) against the local stack. Per
//! function: binary and zipped size, init time (process start → first `/next`, over repeated
//! cold starts), first-invoke and warm latency, the process's CPU time per warm invocation (from
//! `/proc/<pid>/task/*/schedstat`, read while it waits on `/next` before and after), peak RSS,
//! the calls it makes per request and the Lambda cost per million requests at 128 MB arm64. Then
//! warm throughput on one core, the TLS warm-up (cold starts through a TLS-terminating proxy,
//! with and without `COFFER_WARMUP`), what each function costs above the floor, and which
//! targets were met. Run through `scripts/bench.sh`.
//!
//! `COFFER_BENCH_ONLY=balance,stripe-webhook` measures only those functions (the floor and the
//! Node peers always); `COFFER_BENCH_BIN_DIR` is where the binaries are (default
//! `target/release`).

mod counting_proxy;
mod cpu;
mod measure;
mod report;
mod runtime;
mod stats;
mod targets;
mod throughput;
mod tls_proxy;
mod tls_warmup;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use coffer_dev::setup;
use counting_proxy::CountingProxy;
use measure::measure;
use report::{print_floor, print_ratios, print_rows, print_targets, print_throughput, print_tls};
use runtime::Proxies;
use targets::{functions, load_event, root, Env, EventSource, Kind, Target};
use throughput::throughput;
use tls_proxy::{BenchCa, Handshakes, TlsProxy};
use tls_warmup::tls_run;

const COLD_STARTS: usize = 12;
const WARM_INVOKES: usize = 200;
const TLS_COLD_STARTS: usize = 8;
const THROUGHPUT_WARMUP: usize = 50;
const THROUGHPUT_RUN: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "whsec_bench_local";
const STRIPE_KEY: &str = "sk_test_coffer_bench";
/// The sample events' user and developer (events/*.json).
const SAMPLE_USER: &str = "user-123";
const SAMPLE_DEVELOPER: &str = "dev-123";
const SAMPLE_PROJECT: &str = "acme";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run scripts/bench.sh");
        std::process::exit(2)
    })
}

#[tokio::main]
async fn main() {
    let ddb = env("AWS_ENDPOINT_URL_DYNAMODB");
    let sm = env("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let stripe = env("STRIPE_API_BASE");
    // moto serves EventBridge beside Secrets Manager (scripts/lib.sh).
    let eventbridge = std::env::var("AWS_ENDPOINT_URL_EVENTBRIDGE").unwrap_or_else(|_| sm.clone());
    let bin_dir = PathBuf::from(
        std::env::var("COFFER_BENCH_BIN_DIR")
            .unwrap_or_else(|_| root().join("target/release").to_string_lossy().into_owned()),
    );
    let only: Option<BTreeSet<String>> = std::env::var("COFFER_BENCH_ONLY")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());

    // A fresh table and secret for this run.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("coffer-bench-{}", &id[..8]);
    let secret_id = format!("coffer-bench-{}", &id[..8]);
    let sdk = coffer::app::load_sdk_config().await;
    let config =
        coffer::config::Config::new(table.clone(), Some(secret_id.clone()), Some(stripe.clone()));
    let app = coffer::App::new(config, &sdk);
    setup::table_and_packages(&app.store).await.expect("table");
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    setup::store_secret(&secrets, &secret_id, STRIPE_KEY, WEBHOOK_SECRET)
        .await
        .expect("secret");
    // The sample user can spend (consume-credits, internal-consume-credits answer 200), and the
    // sample project is the sample developer's (project-config answers 200).
    let user = coffer::auth::UserId::parse(SAMPLE_USER).expect("user id");
    app.store
        .move_credits(
            &user,
            "grant:coffer-bench",
            coffer::domain::ledger::EntryKind::Grant,
            &coffer::domain::ledger::CreditMove {
                delta: 100_000_000,
                reason: "benchmark".into(),
            },
            &app.config.default_currency,
            None,
        )
        .await
        .expect("grant");
    let (many_buckets, captures) = seed_buckets_and_holds(&app).await;
    let project = coffer::domain::scope::ProjectId::parse(SAMPLE_PROJECT).expect("project id");
    let developer = coffer::auth::UserId::parse(SAMPLE_DEVELOPER).expect("developer id");
    app.store
        .claim_project(&project, &developer)
        .await
        .expect("project");

    let proxies = Proxies {
        dynamodb: CountingProxy::start("dynamodb", ddb.trim_end_matches('/').to_owned()).await,
        secrets: CountingProxy::start("secretsmanager", sm.trim_end_matches('/').to_owned()).await,
        stripe: CountingProxy::start("stripe", stripe.trim_end_matches('/').to_owned()).await,
        eventbridge: CountingProxy::start(
            "eventbridge",
            eventbridge.trim_end_matches('/').to_owned(),
        )
        .await,
    };
    let environment = Env {
        table: table.clone(),
        secret_id: secret_id.clone(),
        project_secret_prefix: format!("{table}/projects"),
        dynamodb: proxies.dynamodb.url.clone(),
        secrets: proxies.secrets.url.clone(),
        stripe: proxies.stripe.url.clone(),
        eventbridge: proxies.eventbridge.url.clone(),
    };

    let mut targets = Vec::new();
    let floor = bin_dir.join("floor");
    targets.push(Target {
        name: "floor (bare lambda_http)".into(),
        kind: Kind::Floor,
        package: floor.clone(),
        program: floor,
        args: Vec::new(),
        event: EventSource::Fixed(load_event("balance.json")),
        vars: vec![("RUST_LOG".into(), "info".into())],
        stripe: false,
    });
    for (name, kind, event) in functions() {
        if only.as_ref().is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let (vars, stripe) = environment.of(&name);
        let program = bin_dir.join(&name);
        targets.push(Target {
            name,
            kind,
            package: program.clone(),
            program,
            args: Vec::new(),
            event,
            vars,
            stripe,
        });
    }
    for target in &targets {
        if !target.program.exists() {
            eprintln!(
                "{} is missing: scripts/bench.sh builds it",
                target.program.display()
            );
            std::process::exit(2);
        }
    }
    // The spend path with fifty buckets, and a reservation's capture (each a new hold).
    if only
        .as_ref()
        .is_none_or(|only| only.contains("internal-consume-credits"))
    {
        let program = bin_dir.join("internal-consume-credits");
        let (vars, _) = environment.of("internal-consume-credits");
        for (name, event) in [
            (
                "internal-consume-credits (50 buckets)",
                EventSource::FreshKey(many_buckets),
            ),
            (
                "internal-consume-credits (capture)",
                EventSource::Pool {
                    events: captures,
                    next: std::sync::Mutex::new(0),
                },
            ),
        ] {
            targets.push(Target {
                name: name.into(),
                kind: Kind::Function,
                package: program.clone(),
                program: program.clone(),
                args: Vec::new(),
                event,
                vars: vars.clone(),
                stripe: false,
            });
        }
    }
    let peer_dir = root().join("bench/node-peer");
    if !peer_dir.join("node_modules").exists() {
        eprintln!("bench/node-peer has no node_modules: scripts/bench.sh runs npm install");
        std::process::exit(2);
    }
    for (name, handler, event) in [
        (
            "node-peer balance",
            "balance",
            EventSource::Fixed(load_event("balance.json")),
        ),
        (
            "node-peer webhook",
            "webhook",
            EventSource::signed("webhook-payment-intent-succeeded.json"),
        ),
    ] {
        let mut vars = environment.common();
        vars.push(("STRIPE_SECRET_ID".into(), secret_id.clone()));
        targets.push(Target {
            name: name.into(),
            kind: Kind::Node,
            program: PathBuf::from("node"),
            args: vec![
                peer_dir
                    .join("bootstrap.mjs")
                    .to_string_lossy()
                    .into_owned(),
                handler.into(),
            ],
            event,
            package: peer_dir.clone(),
            vars,
            stripe: true,
        });
    }

    let mut rows = Vec::new();
    for target in &targets {
        eprintln!("measuring {} …", target.name);
        rows.push(measure(target, &proxies).await);
    }

    let cpu_index = if cpu::cpus() > 1 { 1 } else { 0 };
    let mut rates = Vec::new();
    for name in [
        "floor (bare lambda_http)",
        "balance",
        "node-peer balance",
        "stripe-webhook",
        "node-peer webhook",
    ] {
        if let Some(target) = targets.iter().find(|t| t.name == name) {
            eprintln!("throughput of {name} …");
            let row = rows.iter().find(|r| r.name == name);
            rates.push(throughput(target, row, cpu_index).await);
        }
    }

    let handshakes: [Handshakes; 3] = Default::default();
    let mut tls_rows = Vec::new();
    let tls_setup = match BenchCa::generate() {
        Ok(ca) => {
            let https = |upstream: &str, handshakes: &Handshakes| {
                TlsProxy::start(&ca, upstream.to_owned(), handshakes.clone())
            };
            let tls_ddb = https(&proxies.dynamodb.url, &handshakes[0]).await;
            let tls_sm = https(&proxies.secrets.url, &handshakes[1]).await;
            let tls_stripe = https(&proxies.stripe.url, &handshakes[2]).await;
            let tls_vars: Vec<(String, String)> = vec![
                (
                    "COFFER_EXTRA_ROOT_PEM".into(),
                    ca.pem_path.to_string_lossy().into_owned(),
                ),
                (
                    "AWS_ENDPOINT_URL_DYNAMODB".into(),
                    tls_ddb.localhost_url.clone(),
                ),
                (
                    "AWS_ENDPOINT_URL_SECRETS_MANAGER".into(),
                    tls_sm.ip_url.clone(),
                ),
                ("STRIPE_API_BASE".into(), tls_stripe.localhost_url.clone()),
            ];
            for target in targets
                .iter()
                .filter(|t| t.kind != Kind::Node && !matches!(t.event, EventSource::None))
            {
                eprintln!("TLS warm-up of {} …", target.name);
                let on = tls_run(target, &tls_vars, true, &handshakes).await;
                let off = tls_run(target, &tls_vars, false, &handshakes).await;
                tls_rows.push((target.name.clone(), on, off));
            }
            proxies.take();
            None
        }
        Err(why) => Some(format!("the run-time CA could not be made: {why}")),
    };

    print_rows(&rows);
    print_floor(&rows);
    println!();
    print_ratios(&rows);
    print_throughput(&rates, cpu_index);
    print_tls(&tls_rows, tls_setup.as_deref());
    print_targets(&rows);
}

/// The allowlisted backend of `events/internal-*.json`, as a grant or hold records it.
const BENCH_BACKEND: &str = "iam:arn:aws:iam::123456789012:role/app-backend";

/// Fifty credit buckets for one account (other expiries and priorities, so none merge), and
/// holds to capture on thirty more (eight open holds each, a busy account's): the spend event
/// of the first, and one capture event per hold.
async fn seed_buckets_and_holds(app: &coffer::App) -> (serde_json::Value, Vec<serde_json::Value>) {
    use coffer::adapters::store::GrantRequest;
    let usd = app.config.default_currency.clone();
    let now = coffer::domain::records::now_ms() / 1000;
    let grant = |amount: i64, at: Option<i64>, priority: i32| GrantRequest {
        amount,
        reason: "benchmark",
        expires_at: at,
        priority,
        by: BENCH_BACKEND,
    };
    let many = coffer::auth::UserId::parse("bench-buckets").expect("user id");
    for i in 0..50_i64 {
        let request = grant(2_000_000, Some(now + 30 * 86_400 + i * 60), (i % 3) as i32);
        app.store
            .grant_credits(&many, &format!("grant:bench-{i}"), &request, &usd)
            .await
            .expect("grant");
    }
    let mut spend = load_event("internal-consume-credits.json");
    let mut body: serde_json::Value =
        serde_json::from_str(spend["body"].as_str().unwrap_or("{}")).expect("body JSON");
    body["userId"] = serde_json::json!("bench-buckets");
    spend["body"] = serde_json::Value::String(body.to_string());

    let template = load_event("internal-consume-credits.json");
    let route = "POST /internal/credits/reservations/{reservation_id}/capture";
    let mut captures = Vec::new();
    for a in 0..30 {
        let account = coffer::auth::UserId::parse(&format!("bench-holds-{a}")).expect("user id");
        app.store
            .grant_credits(&account, "grant:bench", &grant(1_000_000, None, 0), &usd)
            .await
            .expect("grant");
        for h in 0..8 {
            let id = format!("h_bench_{a}_{h}");
            app.store
                .hold_credits(&account, &id, 100, 86_400, BENCH_BACKEND, &usd)
                .await
                .expect("hold");
            let path = format!("/internal/credits/reservations/{id}/capture");
            let mut event = template.clone();
            event["routeKey"] = serde_json::json!(route);
            event["rawPath"] = serde_json::json!(path);
            event["requestContext"]["routeKey"] = serde_json::json!(route);
            event["requestContext"]["http"]["path"] = serde_json::json!(path);
            event["pathParameters"] = serde_json::json!({ "reservation_id": id });
            event["body"] = serde_json::Value::String(
                serde_json::json!({"userId": account.as_str(), "amount": 0.5}).to_string(),
            );
            captures.push(event);
        }
    }
    (spend, captures)
}
