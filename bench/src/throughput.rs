//! Warm throughput: invocations back to back for a few seconds, the function pinned to one core.

use std::time::{Duration, Instant};

use coffer_dev::runtime_api::RuntimeApi;

use crate::cpu;
use crate::measure::{answered, Row};
use crate::runtime::{ready, start};
use crate::stats::percentile;
use crate::targets::Target;
use crate::{THROUGHPUT_RUN, THROUGHPUT_WARMUP, TIMEOUT};

pub(crate) struct Throughput {
    pub(crate) name: String,
    pub(crate) invocations: usize,
    pub(crate) elapsed: Duration,
    pub(crate) failures: usize,
    pub(crate) cpu: Option<Duration>,
    /// The kernel's share of that CPU time (system / (user + system) over the run).
    pub(crate) kernel_share: Option<f64>,
    /// 1 s / CPU time per invocation p50 (from the warm series).
    pub(crate) cpu_bound: Option<f64>,
}

/// Warm invocations back to back for `THROUGHPUT_RUN`, with the function on one CPU.
pub(crate) async fn throughput(target: &Target, row: Option<&Row>, cpu_index: usize) -> Throughput {
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
