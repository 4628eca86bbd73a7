//! A target's process started as Lambda starts it, against a local Runtime API, and the
//! counting proxies between it and the local stack.

use std::process::Stdio;
use std::time::Instant;

use coffer_dev::runtime_api::RuntimeApi;

use crate::counting_proxy::{CountingProxy, Tally};
use crate::cpu;
use crate::targets::Target;
use crate::TIMEOUT;

pub(crate) struct Proxies {
    pub(crate) dynamodb: CountingProxy,
    pub(crate) secrets: CountingProxy,
    pub(crate) stripe: CountingProxy,
    pub(crate) eventbridge: CountingProxy,
}

impl Proxies {
    pub(crate) fn take(&self) -> Tally {
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

/// Starts the target's process for `runtime`, with `extra` variables over its own, pinned to
/// `cpu` when given.
pub(crate) fn start(
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
pub(crate) async fn ready(
    runtime: &RuntimeApi,
    child: &mut tokio::process::Child,
) -> Result<Instant, String> {
    tokio::select! {
        at = runtime.wait_ready(TIMEOUT) => at,
        status = child.wait() => Err(match status {
            Ok(status) => format!("exited during init ({status})"),
            Err(e) => format!("exited during init ({e})"),
        }),
    }
}
