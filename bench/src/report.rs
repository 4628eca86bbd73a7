//! The printed report: start and footprint, warm invocations, the floor, throughput, the TLS
//! warm-up, the Rust/Node ratios and which targets were met.

use std::time::Duration;

use crate::measure::Row;
use crate::stats::{cost, mb, ms, pct, percentile, price_per_ms, PRICE_PER_MILLION_REQUESTS};
use crate::targets::Kind;
use crate::throughput::Throughput;
use crate::tls_warmup::TlsRun;
use crate::{COLD_STARTS, THROUGHPUT_RUN, THROUGHPUT_WARMUP, TLS_COLD_STARTS, WARM_INVOKES};

// Targets.
const TARGET_INIT: Duration = Duration::from_millis(6);
const TARGET_INIT_VS_NODE: f64 = 75.0;
const TARGET_BINARY: u64 = 6_000_000;
const TARGET_ZIP: u64 = 2_500_000;
const TARGET_RSS_KB: u64 = 12 * 1024;
const TARGET_CPU_P99: Duration = Duration::from_micros(500);

pub(crate) fn print_rows(rows: &[Row]) {
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

pub(crate) fn print_floor(rows: &[Row]) {
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

pub(crate) fn print_throughput(results: &[Throughput], cpu_index: usize) {
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

pub(crate) fn print_tls(rows: &[(String, TlsRun, TlsRun)], failed_setup: Option<&str>) {
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

pub(crate) fn print_targets(rows: &[Row]) -> usize {
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

pub(crate) fn print_ratios(rows: &[Row]) {
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
