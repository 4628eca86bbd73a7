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
mod tls_proxy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coffer_dev::runtime_api::RuntimeApi;
use coffer_dev::setup;
use counting_proxy::{CountingProxy, Tally};
use serde_json::Value;
use tls_proxy::{BenchCa, Handshakes, TlsProxy};

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

// AWS Lambda pricing, https://aws.amazon.com/lambda/pricing/ (US East (N. Virginia), Arm, first
// duration tier): $0.0000133334 per GB-second, $0.20 per million requests. Billed duration is
// each invocation's, rounded up to the next whole millisecond.
const ARM64_PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
const PRICE_PER_MILLION_REQUESTS: f64 = 0.20;
const MEMORY_MB: f64 = 128.0;

// Targets.
const TARGET_INIT: Duration = Duration::from_millis(6);
const TARGET_INIT_VS_NODE: f64 = 75.0;
const TARGET_BINARY: u64 = 6_000_000;
const TARGET_ZIP: u64 = 2_500_000;
const TARGET_RSS_KB: u64 = 12 * 1024;
const TARGET_CPU_P99: Duration = Duration::from_micros(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
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
enum EventSource {
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
}

impl EventSource {
    fn signed(name: &str) -> Self {
        let text = std::fs::read_to_string(root().join("events").join(name)).expect("event file");
        Self::Signed {
            text,
            signed: Mutex::new(None),
        }
    }

    fn make(&self) -> Option<Value> {
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

struct Target {
    name: String,
    kind: Kind,
    program: PathBuf,
    args: Vec<String>,
    event: EventSource,
    /// What is shipped: the binary, or the Node peer's folder.
    package: PathBuf,
    /// The process's environment (besides `PATH` and the `AWS_LAMBDA_*` variables).
    vars: Vec<(String, String)>,
    /// Calls Stripe (has `STRIPE_SECRET_ID`, as in template.yaml).
    stripe: bool,
}

#[derive(Default)]
struct Row {
    name: String,
    kind: Option<Kind>,
    stripe: bool,
    size: u64,
    zipped: u64,
    /// The arm64 `bootstrap` that is deployed (target/lambda), when it was built.
    arm64: Option<(u64, u64)>,
    init: Vec<Duration>,
    first: Vec<Duration>,
    /// Wall time, invoke → response.
    warm: Vec<Duration>,
    /// The process's CPU time, from handing the event over to its next `/next`.
    cpu: Vec<Duration>,
    rss_kb: u64,
    calls: String,
    secrets_per_cold_start: f64,
    attempts: usize,
    failures: usize,
    failure: Option<String>,
}

impl Row {
    /// Counts an invocation; `true` when it answered 2xx (or a job's report).
    fn check(&mut self, reply: &Result<Value, String>) -> bool {
        self.attempts += 1;
        match answered(reply) {
            Ok(()) => true,
            Err(why) => {
                self.fail(why);
                false
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.failures += 1;
        self.failure.get_or_insert(why);
    }

    fn is_function(&self) -> bool {
        matches!(self.kind, Some(Kind::Function | Kind::Scheduled))
    }
}

struct Proxies {
    dynamodb: CountingProxy,
    secrets: CountingProxy,
    stripe: CountingProxy,
    eventbridge: CountingProxy,
}

impl Proxies {
    fn take(&self) -> Tally {
        let mut all = Tally::default();
        for proxy in [
            &self.dynamodb,
            &self.secrets,
            &self.stripe,
            &self.eventbridge,
        ] {
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
    serde_json::from_str(&text).expect("event JSON")
}

/// Ok for a 2xx answer, or a job's report (no status code); else why not, in a few words.
fn answered(reply: &Result<Value, String>) -> Result<(), String> {
    let short = |text: &str| text.chars().take(100).collect::<String>();
    // The message of a JSON error body ({"error": …} or the runtime's {"errorMessage": …}).
    let message = |text: &str| {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| text.to_owned())
    };
    match reply {
        Err(why) => Err(match why.split_once("function error: ") {
            Some((_, json)) => format!("function error: {}", short(&message(json))),
            None => short(why),
        }),
        Ok(value) => match value.get("statusCode").and_then(Value::as_u64) {
            None | Some(200..=299) => Ok(()),
            Some(code) => Err(format!(
                "HTTP {code}: {}",
                short(&message(value["body"].as_str().unwrap_or_default()))
            )),
        },
    }
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

/// `ms` of a percentile, or "-" when nothing was measured.
fn pct(values: &[Duration], p: f64) -> String {
    if values.is_empty() {
        "-".into()
    } else {
        ms(percentile(values, p))
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn price_per_ms() -> f64 {
    ARM64_PRICE_PER_GB_SECOND * (MEMORY_MB / 1024.0) / 1000.0
}

/// The mean billed duration (each rounded up to a whole ms) and dollars per million requests.
fn cost(durations: &[Duration]) -> Option<(f64, f64)> {
    if durations.is_empty() {
        return None;
    }
    let billed: f64 = durations
        .iter()
        .map(|d| (d.as_secs_f64() * 1000.0).ceil().max(1.0))
        .sum::<f64>()
        / durations.len() as f64;
    Some((
        billed,
        billed * price_per_ms() * 1e6 + PRICE_PER_MILLION_REQUESTS,
    ))
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

/// Starts the target's process for `runtime`, with `extra` variables over its own, pinned to
/// `cpu` when given.
fn start(
    target: &Target,
    runtime: &RuntimeApi,
    extra: &[(String, String)],
    cpu: Option<usize>,
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in target.vars.iter().chain(extra) {
        command.env(k, v);
    }
    if let Some(cpu) = cpu {
        cpu::pin_to_cpu(&mut command, cpu);
    }
    let started = Instant::now();
    let child = command.spawn().expect("start function");
    (child, started)
}

/// Waits for the process's first `/next`; an error if it reported an init error or exited.
async fn ready(runtime: &RuntimeApi, child: &mut tokio::process::Child) -> Result<Instant, String> {
    tokio::select! {
        at = runtime.wait_ready(TIMEOUT) => at,
        status = child.wait() => Err(match status {
            Ok(status) => format!("exited during init ({status})"),
            Err(e) => format!("exited during init ({e})"),
        }),
    }
}

async fn measure(target: &Target, proxies: &Proxies) -> Row {
    let mut row = Row {
        name: target.name.clone(),
        kind: Some(target.kind),
        stripe: target.stripe,
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

    // Cold starts: init, then the first invocation.
    let mut secrets_calls = 0usize;
    for _ in 0..COLD_STARTS {
        let runtime = RuntimeApi::start().await.expect("runtime api");
        proxies.take();
        let (mut child, started) = start(target, &runtime, &[], None);
        match ready(&runtime, &mut child).await {
            Ok(at) => row.init.push(at - started),
            Err(why) => {
                row.fail(why);
                let _ = child.kill().await;
                continue;
            }
        }
        if let Some(event) = target.event.make() {
            let t = Instant::now();
            let reply = runtime.invoke(event, TIMEOUT).await;
            let latency = t.elapsed();
            if row.check(&reply) {
                row.first.push(latency);
            }
        }
        secrets_calls += proxies
            .take()
            .calls
            .iter()
            .filter(|(k, _)| k.starts_with("secretsmanager"))
            .map(|(_, v)| v)
            .sum::<usize>();
        let _ = child.kill().await;
    }
    row.secrets_per_cold_start = secrets_calls as f64 / COLD_STARTS as f64;

    // One process: warm invocations, CPU time, peak RSS.
    let runtime = RuntimeApi::start().await.expect("runtime api");
    let (mut child, _) = start(target, &runtime, &[], None);
    if let Err(why) = ready(&runtime, &mut child).await {
        row.fail(why);
        return row;
    }
    let pid = child.id().unwrap_or(0);
    let warm = if target.kind == Kind::Scheduled {
        0
    } else {
        WARM_INVOKES
    };
    let mut last = Tally::default();
    if let Some(event) = target.event.make() {
        proxies.take();
        let reply = runtime.invoke(event, TIMEOUT).await;
        let _ = runtime.wait_nexts(2, TIMEOUT).await;
        last = proxies.take();
        row.check(&reply);
        for n in 0..warm as u64 {
            let Some(event) = target.event.make() else {
                break;
            };
            // The process waits on its `/next` (the first and one per invocation so far).
            let idle = runtime.wait_nexts(n + 2, TIMEOUT).await;
            proxies.take();
            let before = cpu::cpu_time(pid);
            let t = Instant::now();
            let reply = runtime.invoke(event, TIMEOUT).await;
            let latency = t.elapsed();
            // Done once it asks for the next one: the runtime's own work after the response
            // counts too.
            let done = runtime.wait_nexts(n + 3, TIMEOUT).await;
            let after = cpu::cpu_time(pid);
            let tally = proxies.take();
            if !row.check(&reply) {
                continue;
            }
            if let Err(why) = idle.and(done) {
                row.fail(why);
                continue;
            }
            row.warm.push(latency);
            if let (Some(before), Some(after)) = (before, after) {
                row.cpu.push(after.saturating_sub(before));
            }
            last = tally;
        }
    }
    row.calls = match (&target.event, target.kind) {
        (EventSource::None, _) => "no event: init only".into(),
        _ if last.calls.is_empty() => "none".into(),
        _ => last
            .calls
            .iter()
            .map(|(k, v)| format!("{v}×{k}"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    row.rss_kb = peak_rss_kb(pid);
    let _ = child.kill().await;
    row
}

struct Throughput {
    name: String,
    invocations: usize,
    elapsed: Duration,
    failures: usize,
    cpu: Option<Duration>,
    /// The kernel's share of that CPU time (system / (user + system) over the run).
    kernel_share: Option<f64>,
    /// 1 s / CPU time per invocation p50 (from the warm series).
    cpu_bound: Option<f64>,
}

/// Warm invocations back to back for `THROUGHPUT_RUN`, with the function on one CPU.
async fn throughput(target: &Target, row: Option<&Row>, cpu_index: usize) -> Throughput {
    let mut result = Throughput {
        name: target.name.clone(),
        invocations: 0,
        elapsed: Duration::ZERO,
        failures: 0,
        cpu: None,
        kernel_share: None,
        cpu_bound: row
            .filter(|r| !r.cpu.is_empty())
            .map(|r| 1.0 / percentile(&r.cpu, 0.5).as_secs_f64().max(1e-9)),
    };
    let runtime = RuntimeApi::start().await.expect("runtime api");
    let (mut child, _) = start(target, &runtime, &[], Some(cpu_index));
    if ready(&runtime, &mut child).await.is_err() {
        result.failures += 1;
        return result;
    }
    let pid = child.id().unwrap_or(0);
    for _ in 0..THROUGHPUT_WARMUP {
        if let Some(event) = target.event.make() {
            let _ = runtime.invoke(event, TIMEOUT).await;
        }
    }
    let ticks_before = cpu::user_and_system_ticks(pid);
    let before = cpu::cpu_time(pid);
    let started = Instant::now();
    while started.elapsed() < THROUGHPUT_RUN {
        let Some(event) = target.event.make() else {
            break;
        };
        let reply = runtime.invoke(event, TIMEOUT).await;
        result.invocations += 1;
        if answered(&reply).is_err() {
            result.failures += 1;
        }
    }
    result.elapsed = started.elapsed();
    let _ = runtime
        .wait_nexts(
            THROUGHPUT_WARMUP as u64 + result.invocations as u64 + 1,
            TIMEOUT,
        )
        .await;
    if let (Some(before), Some(after)) = (before, cpu::cpu_time(pid)) {
        result.cpu = Some(after.saturating_sub(before));
    }
    if let (Some((u0, s0)), Some((u1, s1))) = (ticks_before, cpu::user_and_system_ticks(pid)) {
        let (user, system) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
        if user + system > 0 {
            result.kernel_share = Some(system as f64 / (user + system) as f64);
        }
    }
    let _ = child.kill().await;
    result
}

#[derive(Default)]
struct TlsRun {
    init: Vec<Duration>,
    first: Vec<Duration>,
    /// Handshakes completed with DynamoDB, Secrets Manager and Stripe's proxies.
    handshakes_init: [usize; 3],
    handshakes_first: [usize; 3],
    handshakes_failed: usize,
    cold_starts: usize,
    failures: usize,
    failure: Option<String>,
}

/// Cold starts with the endpoints behind the TLS proxies, `warmup` on or off.
async fn tls_run(
    target: &Target,
    tls_vars: &[(String, String)],
    warmup: bool,
    handshakes: &[Handshakes; 3],
) -> TlsRun {
    let done = || handshakes.each_ref().map(|h| h.get().0);
    let failed = || handshakes.iter().map(|h| h.get().1).sum::<usize>();
    let mut run = TlsRun::default();
    let mut vars = tls_vars.to_vec();
    if !warmup {
        vars.push(("COFFER_WARMUP".into(), "off".into()));
    }
    for _ in 0..TLS_COLD_STARTS {
        let runtime = RuntimeApi::start().await.expect("runtime api");
        let (done0, failed0) = (done(), failed());
        let (mut child, started) = start(target, &runtime, &vars, None);
        run.cold_starts += 1;
        match ready(&runtime, &mut child).await {
            Ok(at) => run.init.push(at - started),
            Err(why) => {
                run.failures += 1;
                run.failure.get_or_insert(why);
                let _ = child.kill().await;
                continue;
            }
        }
        let done1 = done();
        if let Some(event) = target.event.make() {
            let t = Instant::now();
            let reply = runtime.invoke(event, TIMEOUT).await;
            let latency = t.elapsed();
            match answered(&reply) {
                Ok(()) => run.first.push(latency),
                Err(why) => {
                    run.failures += 1;
                    run.failure.get_or_insert(why);
                }
            }
        }
        let (done2, failed2) = (done(), failed());
        for i in 0..3 {
            run.handshakes_init[i] += done1[i] - done0[i];
            run.handshakes_first[i] += done2[i] - done1[i];
        }
        run.handshakes_failed += failed2 - failed0;
        let _ = child.kill().await;
    }
    run
}

/// The process environment of each function, as template.yaml gives it (the Globals and the
/// function's own variables), pointed at the counting proxies.
struct Env {
    table: String,
    secret_id: String,
    project_secret_prefix: String,
    dynamodb: String,
    secrets: String,
    stripe: String,
    eventbridge: String,
}

impl Env {
    fn common(&self) -> Vec<(String, String)> {
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
    fn of(&self, name: &str) -> (Vec<(String, String)>, bool) {
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
fn functions() -> Vec<(String, Kind, EventSource)> {
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
            eprintln!("{name}: no event in bench/src/main.rs; measuring init, size and RSS only");
            list.push((name, Kind::Function, EventSource::None));
        }
    }
    list
}

fn print_rows(rows: &[Row]) {
    println!(
        "\nStart and footprint ({COLD_STARTS} cold starts; sizes in MB; times in ms):\n{:<26} {:>13} {:>13} {:>9} {:>9} {:>9} {:>7} {:>5}  status",
        "function", "arm64 bin/zip", "this bin/zip", "init p50", "init max", "1st p50", "RSS MB", "SM/cs"
    );
    for r in rows {
        println!(
            "{:<26} {:>13} {:>13} {:>9} {:>9} {:>9} {:>7.1} {:>5.1}  {}",
            r.name,
            r.arm64
                .map_or("-".into(), |(s, z)| format!("{:.2}/{:.2}", mb(s), mb(z))),
            format!("{:.2}/{:.2}", mb(r.size), mb(r.zipped)),
            pct(&r.init, 0.5),
            pct(&r.init, 1.0),
            pct(&r.first, 0.5),
            r.rss_kb as f64 / 1024.0,
            r.secrets_per_cold_start,
            status(r),
        );
    }
    println!("(SM/cs: Secrets Manager calls per cold start; 1st: the first invocation after init)");

    println!(
        "\nWarm invocations ({WARM_INVOKES} each; ms; CPU = the process's CPU time, all threads, from handing the event over to its next /next):\n{:<26} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}  calls per warm request",
        "function", "wall p50", "wall p99", "CPU p50", "CPU p99", "billed ms", "$/M req"
    );
    for r in rows {
        let cost = cost(&r.warm);
        println!(
            "{:<26} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}  {}",
            r.name,
            pct(&r.warm, 0.5),
            pct(&r.warm, 0.99),
            pct(&r.cpu, 0.5),
            pct(&r.cpu, 0.99),
            cost.map_or("-".into(), |(billed, _)| format!("{billed:.2}")),
            cost.map_or("-".into(), |(_, dollars)| format!("{dollars:.4}")),
            if r.kind == Some(Kind::Scheduled) {
                format!("scheduled, per run: {}", r.calls)
            } else {
                r.calls.clone()
            },
        );
    }
    println!(
        "(billed ms: mean of each warm invocation's wall time rounded up to a whole ms; $/M req: \
         that at 128 MB arm64, ${:.4e} per ms, plus ${PRICE_PER_MILLION_REQUESTS:.2} per million \
         requests (https://aws.amazon.com/lambda/pricing/); init is billed too, see below)",
        price_per_ms()
    );
}

fn status(r: &Row) -> String {
    if r.failures == 0 {
        if r.attempts == 0 {
            "ok (not invoked)".into()
        } else {
            "ok".into()
        }
    } else {
        format!(
            "FAILING {}/{}: {}",
            r.failures,
            r.attempts.max(r.failures),
            r.failure.as_deref().unwrap_or("")
        )
    }
}

fn print_floor(rows: &[Row]) {
    let Some(floor) = rows.iter().find(|r| r.kind == Some(Kind::Floor)) else {
        return;
    };
    let floor_init = percentile(&floor.init, 0.5);
    let floor_cpu = percentile(&floor.cpu, 0.5);
    println!(
        "\nAbove the floor (what each function's dependencies cost: the local build, init p50 and RSS over the bare lambda_http function; ms, MB):\n{:<26} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10}",
        "function", "bin +MB", "zip +MB", "init +ms", "RSS +MB", "CPU +ms", "init $/M cs"
    );
    for r in rows.iter().filter(|r| r.kind != Some(Kind::Floor)) {
        let init = percentile(&r.init, 0.5);
        println!(
            "{:<26} {:>9.2} {:>9.2} {:>10} {:>9.1} {:>9} {:>10.4}",
            r.name,
            mb(r.size) - mb(floor.size),
            mb(r.zipped) - mb(floor.zipped),
            format!(
                "{:+.2}",
                (init.as_secs_f64() - floor_init.as_secs_f64()) * 1000.0
            ),
            (r.rss_kb as f64 - floor.rss_kb as f64) / 1024.0,
            if r.cpu.is_empty() {
                "-".into()
            } else {
                format!(
                    "{:+.3}",
                    (percentile(&r.cpu, 0.5).as_secs_f64() - floor_cpu.as_secs_f64()) * 1000.0
                )
            },
            (init.as_secs_f64() * 1000.0).ceil() * price_per_ms() * 1e6,
        );
    }
    println!(
        "(floor: {:.2} MB / {:.2} MB zipped, init p50 {} ms, RSS {:.1} MB, CPU p50 {} ms; the Node \
         rows' size is their folder with node_modules; init $/M cs: the init p50, billed as \
         Lambda bills INIT, per million cold starts)",
        mb(floor.size),
        mb(floor.zipped),
        ms(floor_init),
        floor.rss_kb as f64 / 1024.0,
        ms(floor_cpu),
    );
    // The Stripe stack: functions that call Stripe against those that do not.
    let median = |values: Vec<f64>| -> Option<f64> {
        let mut values = values;
        values.sort_by(|a, b| a.total_cmp(b));
        (!values.is_empty()).then(|| values[values.len() / 2])
    };
    let group = |stripe: bool, f: &dyn Fn(&Row) -> f64| {
        median(
            rows.iter()
                .filter(|r| r.is_function() && r.stripe == stripe)
                .map(f)
                .collect(),
        )
    };
    let size = |r: &Row| mb(r.arm64.map_or(r.size, |(s, _)| s));
    let init = |r: &Row| percentile(&r.init, 0.5).as_secs_f64() * 1000.0;
    if let (Some(s1), Some(s0), Some(i1), Some(i0)) = (
        group(true, &size),
        group(false, &size),
        group(true, &init),
        group(false, &init),
    ) {
        println!(
            "Stripe client (median of the functions with STRIPE_SECRET_ID against those without): \
             binary {s1:.2} vs {s0:.2} MB ({:+.2}), init {i1:.2} vs {i0:.2} ms ({:+.2})",
            s1 - s0,
            i1 - i0
        );
    }
}

fn print_throughput(results: &[Throughput], cpu_index: usize) {
    println!(
        "\nThroughput on one core (the function pinned to CPU {cpu_index}; {THROUGHPUT_WARMUP} warm-up invocations, then back to back for {} s):\n{:<26} {:>10} {:>12} {:>8} {:>16} {:>9}",
        THROUGHPUT_RUN.as_secs(),
        "function",
        "invoc./s",
        "CPU/inv ms",
        "kernel",
        "CPU-bound inv/s",
        "failures"
    );
    for t in results {
        let rate = t.invocations as f64 / t.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<26} {:>10.0} {:>12} {:>8} {:>16} {:>9}",
            t.name,
            rate,
            t.cpu
                .filter(|_| t.invocations > 0)
                .map_or("-".into(), |c| format!(
                    "{:.3}",
                    c.as_secs_f64() * 1000.0 / t.invocations as f64
                )),
            t.kernel_share
                .map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
            t.cpu_bound.map_or("-".into(), |r| format!("{r:.0}")),
            t.failures,
        );
    }
    println!("(invoc./s: measured through the local Runtime API and DynamoDB Local, which share the machine; kernel: the share of the CPU time spent in the kernel (system time; on loopback much of the TCP stack's work for both ends of each call is charged to the sender); CPU-bound inv/s: 1 s / the warm series' CPU time p50, what one core would do if nothing else waited)");
}

fn print_tls(rows: &[(String, TlsRun, TlsRun)], failed_setup: Option<&str>) {
    println!("\nTLS warm-up ({TLS_COLD_STARTS} cold starts each; DynamoDB, Secrets Manager and Stripe behind a TLS-terminating proxy whose CA only these processes trust, COFFER_EXTRA_ROOT_PEM; ms; TLS: handshakes per cold start with DynamoDB+Secrets Manager+Stripe, during init and during the first invocation):");
    if let Some(why) = failed_setup {
        println!("  not measured: {why}");
        return;
    }
    println!(
        "{:<26} | {:>8} {:>8} {:>11} {:>11} | {:>8} {:>8} {:>11} {:>11} | status",
        "function",
        "init p50",
        "1st p50",
        "TLS init",
        "TLS 1st",
        "init p50",
        "1st p50",
        "TLS init",
        "TLS 1st"
    );
    println!(
        "{:<26} | {:^41} | {:^41} |",
        "", "warm-up on (default)", "COFFER_WARMUP=off"
    );
    // Per cold start, DynamoDB+Secrets Manager+Stripe.
    let per = |counts: &[usize; 3], run: &TlsRun| {
        counts
            .map(|c| format!("{:.1}", c as f64 / run.cold_starts.max(1) as f64))
            .join("+")
    };
    for (name, on, off) in rows {
        let state = |run: &TlsRun| -> Option<String> {
            (run.failures > 0 || run.handshakes_failed > 0).then(|| {
                format!(
                    "{}/{} failed, {} handshakes refused",
                    run.failures, run.cold_starts, run.handshakes_failed
                )
            })
        };
        let status = match (state(on), state(off)) {
            (None, None) => "ok".to_owned(),
            (a, b) => format!(
                "FAILING on: {}; off: {}; {}",
                a.unwrap_or_else(|| "ok".into()),
                b.unwrap_or_else(|| "ok".into()),
                on.failure
                    .as_deref()
                    .or(off.failure.as_deref())
                    .unwrap_or_default()
            ),
        };
        println!(
            "{:<26} | {:>8} {:>8} {:>11} {:>11} | {:>8} {:>8} {:>11} {:>11} | {}",
            name,
            pct(&on.init, 0.5),
            pct(&on.first, 0.5),
            per(&on.handshakes_init, on),
            per(&on.handshakes_first, on),
            pct(&off.init, 0.5),
            pct(&off.first, 0.5),
            per(&off.handshakes_init, off),
            per(&off.handshakes_first, off),
            status,
        );
    }
    println!("(the main tables above use plain http:// endpoints, which the warm-up skips)");
}

fn print_targets(rows: &[Row]) -> usize {
    println!("\nTargets:");
    let mut missed = 0;
    let mut check = |ok: bool, what: String| {
        if !ok {
            missed += 1;
        }
        println!("  {} {what}", if ok { "met   " } else { "MISSED" });
    };
    for r in rows.iter().filter(|r| r.is_function()) {
        check(
            r.failures == 0,
            format!(
                "{}: every invocation answers 2xx ({} of {})",
                r.name,
                r.attempts.saturating_sub(r.failures),
                r.attempts.max(r.failures)
            ),
        );
        let init = percentile(&r.init, 0.5);
        check(
            !r.init.is_empty() && init <= TARGET_INIT,
            format!(
                "{}: init p50 {} ms ≤ {} ms",
                r.name,
                ms(init),
                TARGET_INIT.as_millis()
            ),
        );
        // Size targets are for what is deployed: the arm64 bootstrap when built, else this one.
        let (size, zipped, arch) = r
            .arm64
            .map_or((r.size, r.zipped, "the local build's"), |(s, z)| {
                (s, z, "arm64")
            });
        check(
            size <= TARGET_BINARY,
            format!(
                "{}: {arch} binary {:.2} MB ≤ {} MB",
                r.name,
                mb(size),
                mb(TARGET_BINARY)
            ),
        );
        check(
            zipped <= TARGET_ZIP,
            format!(
                "{}: {arch} zip {:.2} MB ≤ {} MB",
                r.name,
                mb(zipped),
                mb(TARGET_ZIP)
            ),
        );
        check(
            r.rss_kb <= TARGET_RSS_KB,
            format!(
                "{}: peak RSS {:.1} MB ≤ {} MB",
                r.name,
                r.rss_kb as f64 / 1024.0,
                TARGET_RSS_KB / 1024
            ),
        );
        if !r.cpu.is_empty() {
            let p99 = percentile(&r.cpu, 0.99);
            check(
                p99 <= TARGET_CPU_P99,
                format!(
                    "{}: handler CPU time p99 {} ms ≤ {} ms",
                    r.name,
                    ms(p99),
                    ms(TARGET_CPU_P99)
                ),
            );
        }
    }
    let balance = rows.iter().find(|r| r.name == "balance");
    let node = rows.iter().find(|r| r.name == "node-peer balance");
    if let (Some(balance), Some(node)) = (balance, node) {
        let ratio = percentile(&node.init, 0.5).as_secs_f64()
            / percentile(&balance.init, 0.5).as_secs_f64().max(1e-9);
        check(
            ratio >= TARGET_INIT_VS_NODE && !balance.init.is_empty() && !node.init.is_empty(),
            format!(
                "balance init ≥ {TARGET_INIT_VS_NODE:.0}× faster than the Node peer: {ratio:.1}×"
            ),
        );
    }
    println!("{missed} target(s) missed");
    missed
}

fn print_ratios(rows: &[Row]) {
    let ratio = |node: Duration, rust: Duration| node.as_secs_f64() / rust.as_secs_f64().max(1e-9);
    for (rust, node) in [
        ("balance", "node-peer balance"),
        ("stripe-webhook", "node-peer webhook"),
    ] {
        let (Some(r), Some(n)) = (
            rows.iter().find(|r| r.name == rust),
            rows.iter().find(|r| r.name == node),
        ) else {
            continue;
        };
        println!(
            "Rust/Node ({rust}): init p50 {:.1}× faster, warm p50 {:.1}× faster, CPU p50 {:.1}× less, peak RSS {:.1}× smaller, cost per million {:.2}× less",
            ratio(percentile(&n.init, 0.5), percentile(&r.init, 0.5)),
            ratio(percentile(&n.warm, 0.5), percentile(&r.warm, 0.5)),
            ratio(percentile(&n.cpu, 0.5), percentile(&r.cpu, 0.5)),
            n.rss_kb as f64 / r.rss_kb.max(1) as f64,
            cost(&n.warm).map_or(0.0, |c| c.1) / cost(&r.warm).map_or(f64::INFINITY, |c| c.1),
        );
    }
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
            "grant",
            &coffer::domain::ledger::CreditMove {
                delta: 100_000_000,
                reason: "benchmark".into(),
            },
            &app.config.default_currency,
        )
        .await
        .expect("grant");
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
