//! One target's row: sizes, cold starts, warm invocations with their CPU time, peak RSS and the
//! calls each request makes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_dev::runtime_api::RuntimeApi;
use serde_json::Value;

use crate::counting_proxy::Tally;
use crate::cpu;
use crate::runtime::{ready, start, Proxies};
use crate::targets::{root, EventSource, Kind, Target};
use crate::{COLD_STARTS, TIMEOUT, WARM_INVOKES};

#[derive(Default)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) kind: Option<Kind>,
    pub(crate) stripe: bool,
    pub(crate) size: u64,
    pub(crate) zipped: u64,
    /// The arm64 `bootstrap` that is deployed (target/lambda), when it was built.
    pub(crate) arm64: Option<(u64, u64)>,
    pub(crate) init: Vec<Duration>,
    pub(crate) first: Vec<Duration>,
    /// Wall time, invoke → response.
    pub(crate) warm: Vec<Duration>,
    /// The process's CPU time, from handing the event over to its next `/next`.
    pub(crate) cpu: Vec<Duration>,
    pub(crate) rss_kb: u64,
    pub(crate) calls: String,
    pub(crate) secrets_per_cold_start: f64,
    pub(crate) attempts: usize,
    pub(crate) failures: usize,
    pub(crate) failure: Option<String>,
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

    pub(crate) fn is_function(&self) -> bool {
        matches!(self.kind, Some(Kind::Function | Kind::Scheduled))
    }
}

/// Ok for a 2xx answer, or a job's report (no status code); else why not, in a few words.
pub(crate) fn answered(reply: &Result<Value, String>) -> Result<(), String> {
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

pub(crate) async fn measure(target: &Target, proxies: &Proxies) -> Row {
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
