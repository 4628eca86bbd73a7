//! `coffer-bench`: per function, binary and zipped size, init time (process start → first
//! `/next` on a local Lambda Runtime API, over repeated cold starts), first-invoke and warm
//! latency against the local stack, the handler's own overhead (latency minus time waiting on
//! DynamoDB, Secrets Manager and Stripe), peak RSS, and the calls it makes per request; then the
//! same for a Node.js peer of the balance function. Run through `scripts/bench.sh`.

mod counting_proxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_dev::runtime_api::RuntimeApi;
use coffer_dev::setup;
use counting_proxy::{CountingProxy, Tally};
use serde_json::Value;

const COLD_STARTS: usize = 12;
const WARM_INVOKES: usize = 200;
const WEBHOOK_SECRET: &str = "whsec_bench_local";
const STRIPE_KEY: &str = "sk_test_coffer_bench";

struct Target {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    event: Option<Value>,
    package: PathBuf,
}

#[derive(Default)]
struct Row {
    name: String,
    size: u64,
    zipped: u64,
    /// The arm64 `bootstrap` that is deployed (target/lambda), when it was built.
    arm64: Option<(u64, u64)>,
    init: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
    overhead: Vec<Duration>,
    rss_kb: u64,
    calls: String,
    secrets_per_cold_start: f64,
}

struct Proxies {
    dynamodb: CountingProxy,
    secrets: CountingProxy,
    stripe: CountingProxy,
}

impl Proxies {
    fn take(&self) -> Tally {
        let mut all = Tally::default();
        for proxy in [&self.dynamodb, &self.secrets, &self.stripe] {
            let tally = proxy.take();
            all.waited += tally.waited;
            for (name, count) in tally.calls {
                *all.calls.entry(name).or_default() += count;
            }
        }
        all
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run scripts/bench.sh");
        std::process::exit(2)
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load_event(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("events").join(name)).expect("event file");
    let text = if name.starts_with("webhook-") {
        coffer_dev::resign(&text, WEBHOOK_SECRET).expect("re-sign")
    } else {
        text
    };
    serde_json::from_str(&text).expect("event JSON")
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// Size of a deflated zip of `path` (a file, or a folder with everything in it).
fn zipped_size(path: &Path) -> u64 {
    let out = std::env::temp_dir().join(format!("coffer-bench-{}.zip", uuid::Uuid::new_v4()));
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&out)
        .arg(path)
        .stdout(Stdio::null())
        .status();
    let size = status
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&out).ok())
        .map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&out);
    size
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

async fn start(
    target: &Target,
    runtime: &RuntimeApi,
    vars: &[(String, String)],
) -> (tokio::process::Child, Instant) {
    let mut command = tokio::process::Command::new(&target.program);
    command
        .args(&target.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", &target.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in vars {
        command.env(k, v);
    }
    let started = Instant::now();
    let child = command.spawn().expect("start function");
    (child, started)
}

async fn measure(target: &Target, vars: &[(String, String)], proxies: &Proxies) -> Row {
    let mut row = Row {
        name: target.name.clone(),
        size: dir_size(&target.package),
        zipped: zipped_size(&target.package),
        arm64: {
            let bootstrap = root()
                .join("target/lambda")
                .join(&target.name)
                .join("bootstrap");
            bootstrap
                .exists()
                .then(|| (dir_size(&bootstrap), zipped_size(&bootstrap)))
        },
        ..Row::default()
    };
    let timeout = Duration::from_secs(30);
    let mut secrets_calls = 0usize;
    for _ in 0..COLD_STARTS {
        let runtime = RuntimeApi::start().await.expect("runtime api");
        proxies.take();
        let (mut child, started) = start(target, &runtime, vars).await;
        let ready = runtime.wait_ready(timeout).await.expect("function init");
        row.init.push(ready - started);
        if let Some(event) = &target.event {
            let t = Instant::now();
            let _ = runtime.invoke(event.clone(), timeout).await;
            row.first.push(t.elapsed());
        }
        let tally = proxies.take();
        secrets_calls += tally
            .calls
            .iter()
            .filter(|(k, _)| k.starts_with("secretsmanager"))
            .map(|(_, v)| v)
            .sum::<usize>();
        let _ = child.kill().await;
    }
    row.secrets_per_cold_start = secrets_calls as f64 / COLD_STARTS as f64;

    if let Some(event) = &target.event {
        let runtime = RuntimeApi::start().await.expect("runtime api");
        let (mut child, _) = start(target, &runtime, vars).await;
        runtime.wait_ready(timeout).await.expect("function init");
        let _ = runtime.invoke(event.clone(), timeout).await;
        let mut last = Tally::default();
        for _ in 0..WARM_INVOKES {
            proxies.take();
            let t = Instant::now();
            let reply = runtime.invoke(event.clone(), timeout).await;
            let latency = t.elapsed();
            let tally = proxies.take();
            if reply.is_err() {
                eprintln!("{}: an invocation failed", target.name);
            }
            row.warm.push(latency);
            row.overhead.push(latency.saturating_sub(tally.waited));
            last = tally;
        }
        row.calls = if last.calls.is_empty() {
            "none".into()
        } else {
            last.calls
                .iter()
                .map(|(k, v)| format!("{v}×{k}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        row.rss_kb = child.id().map_or(0, peak_rss_kb);
        let _ = child.kill().await;
    } else {
        row.calls = "n/a (scheduled)".into();
        let runtime = RuntimeApi::start().await.expect("runtime api");
        let (mut child, _) = start(target, &runtime, vars).await;
        runtime.wait_ready(timeout).await.expect("function init");
        row.rss_kb = child.id().map_or(0, peak_rss_kb);
        let _ = child.kill().await;
    }
    row
}

fn print(rows: &[Row]) {
    println!(
        "\n{:<26} {:>8} {:>8} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}  calls per warm request (Secrets Manager per cold start)",
        "function", "size MB", "zip MB", "arm64 MB/zip", "init p50", "init max", "1st inv", "warm p50", "warm p99", "own p50", "own p99", "RSS MB"
    );
    for r in rows {
        println!(
            "{:<26} {:>8.2} {:>8.2} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7.1}  {} (SM {:.1})",
            r.name,
            r.size as f64 / 1e6,
            r.zipped as f64 / 1e6,
            r.arm64.map_or("-".into(), |(s, z)| format!("{:.2}/{:.2}", s as f64 / 1e6, z as f64 / 1e6)),
            ms(percentile(&r.init, 0.5)),
            ms(percentile(&r.init, 1.0)),
            if r.first.is_empty() {
                "-".into()
            } else {
                ms(percentile(&r.first, 0.5))
            },
            if r.warm.is_empty() {
                "-".into()
            } else {
                ms(percentile(&r.warm, 0.5))
            },
            if r.warm.is_empty() {
                "-".into()
            } else {
                ms(percentile(&r.warm, 0.99))
            },
            if r.overhead.is_empty() {
                "-".into()
            } else {
                ms(percentile(&r.overhead, 0.5))
            },
            if r.overhead.is_empty() {
                "-".into()
            } else {
                ms(percentile(&r.overhead, 0.99))
            },
            r.rss_kb as f64 / 1024.0,
            r.calls,
            r.secrets_per_cold_start,
        );
    }
    println!("(times in ms; init over {COLD_STARTS} cold starts; warm over {WARM_INVOKES} invocations; own = latency minus time waiting on DynamoDB/Secrets Manager/Stripe)");
}

#[tokio::main]
async fn main() {
    let ddb = env("AWS_ENDPOINT_URL_DYNAMODB");
    let sm = env("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let stripe = env("STRIPE_API_BASE");
    let bin_dir = PathBuf::from(
        std::env::var("COFFER_BENCH_BIN_DIR")
            .unwrap_or_else(|_| root().join("target/release").to_string_lossy().into_owned()),
    );

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

    let proxies = Proxies {
        dynamodb: CountingProxy::start("dynamodb", ddb.trim_end_matches('/').to_owned()).await,
        secrets: CountingProxy::start("secretsmanager", sm.trim_end_matches('/').to_owned()).await,
        stripe: CountingProxy::start("stripe", stripe.trim_end_matches('/').to_owned()).await,
    };
    let vars: Vec<(String, String)> = vec![
        ("TABLE_NAME".into(), table),
        ("STRIPE_SECRET_ID".into(), secret_id),
        ("STRIPE_API_BASE".into(), proxies.stripe.url.clone()),
        // The caller of events/internal-consume-credits.json.
        (
            "ALLOWED_CALLER_ARNS".into(),
            "arn:aws:iam::123456789012:role/app-backend".into(),
        ),
        (
            "AWS_ENDPOINT_URL_DYNAMODB".into(),
            proxies.dynamodb.url.clone(),
        ),
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER".into(),
            proxies.secrets.url.clone(),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "local".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "local".into()),
    ];

    let mut create = load_event("create-payment-intent.json");
    // Without the key every invocation creates a new intent: the full path, not a replay.
    if let Some(headers) = create.get_mut("headers").and_then(Value::as_object_mut) {
        headers.remove("idempotency-key");
    }
    let functions: Vec<(&str, Option<Value>)> = vec![
        ("credit-packages", Some(load_event("credit-packages.json"))),
        ("create-payment-intent", Some(create)),
        ("balance", Some(load_event("balance.json"))),
        ("payment-history", Some(load_event("payment-history.json"))),
        (
            "stripe-webhook",
            Some(load_event("webhook-payment-intent-succeeded.json")),
        ),
        ("consume-credits", Some(load_event("consume-credits.json"))),
        (
            "internal-consume-credits",
            Some(load_event("internal-consume-credits.json")),
        ),
        ("reconcile", None),
        ("check-invariants", None),
    ];
    let mut rows = Vec::new();
    for (name, event) in functions {
        let program = bin_dir.join(name);
        if !program.exists() {
            eprintln!(
                "{} is missing: scripts/bench.sh builds it",
                program.display()
            );
            std::process::exit(2);
        }
        let target = Target {
            name: name.to_owned(),
            package: program.clone(),
            program,
            args: Vec::new(),
            event,
        };
        eprintln!("measuring {name} …");
        rows.push(measure(&target, &vars, &proxies).await);
    }

    let peer_dir = root().join("bench/node-peer");
    let node = Target {
        name: "node-peer balance".into(),
        program: PathBuf::from("node"),
        args: vec![peer_dir
            .join("bootstrap.mjs")
            .to_string_lossy()
            .into_owned()],
        event: Some(load_event("balance.json")),
        package: peer_dir,
    };
    eprintln!("measuring the Node.js peer …");
    let node_row = measure(&node, &vars, &proxies).await;

    print(&rows);
    print(std::slice::from_ref(&node_row));

    let balance = rows
        .iter()
        .find(|r| r.name == "balance")
        .expect("balance row");
    let ratio = |node: Duration, rust: Duration| node.as_secs_f64() / rust.as_secs_f64().max(1e-9);
    println!("\nRust/Node (balance): init p50 {:.1}× faster, warm p50 {:.1}× faster, peak RSS {:.1}× smaller",
        ratio(percentile(&node_row.init, 0.5), percentile(&balance.init, 0.5)),
        ratio(percentile(&node_row.warm, 0.5), percentile(&balance.warm, 0.5)),
        node_row.rss_kb as f64 / balance.rss_kb.max(1) as f64,
    );

    println!("\nTargets:");
    let mut missed = 0;
    let mut check = |ok: bool, what: String| {
        if !ok {
            missed += 1;
        }
        println!("  {} {what}", if ok { "met   " } else { "MISSED" });
    };
    for r in &rows {
        let init = percentile(&r.init, 0.5);
        check(
            init <= Duration::from_millis(8),
            format!("{}: init p50 {} ms ≤ 8 ms", r.name, ms(init)),
        );
        // Size targets are for what is deployed: the arm64 bootstrap when built, else this one.
        let (size, zipped, arch) = r
            .arm64
            .map_or((r.size, r.zipped, "x86_64"), |(s, z)| (s, z, "arm64"));
        check(
            size <= 8_000_000,
            format!(
                "{}: {arch} binary {:.2} MB ≤ 8 MB",
                r.name,
                size as f64 / 1e6
            ),
        );
        check(
            zipped <= 3_000_000,
            format!(
                "{}: {arch} zip {:.2} MB ≤ 3 MB",
                r.name,
                zipped as f64 / 1e6
            ),
        );
        check(
            r.rss_kb <= 16 * 1024,
            format!(
                "{}: peak RSS {:.1} MB ≤ 16 MB",
                r.name,
                r.rss_kb as f64 / 1024.0
            ),
        );
        if !r.overhead.is_empty() {
            let p99 = percentile(&r.overhead, 0.99);
            check(
                p99 <= Duration::from_millis(1),
                format!("{}: own overhead p99 {} ms ≤ 1 ms", r.name, ms(p99)),
            );
        }
    }
    let init_ratio = ratio(
        percentile(&node_row.init, 0.5),
        percentile(&balance.init, 0.5),
    );
    check(
        init_ratio >= 30.0,
        format!("balance init ≥ 30× faster than Node: {init_ratio:.1}×"),
    );
    println!("{missed} target(s) missed");
}
