//! Figures from the measurements: percentiles, milliseconds and megabytes, and what Lambda bills
//! for a duration.

use std::time::Duration;

// AWS Lambda pricing, https://aws.amazon.com/lambda/pricing/ (US East (N. Virginia), Arm, first
// duration tier): $0.0000133334 per GB-second, $0.20 per million requests. Billed duration is
// each invocation's, rounded up to the next whole millisecond.
const ARM64_PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
pub(crate) const PRICE_PER_MILLION_REQUESTS: f64 = 0.20;
const MEMORY_MB: f64 = 128.0;

pub(crate) fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `ms` of a percentile, or "-" when nothing was measured.
pub(crate) fn pct(values: &[Duration], p: f64) -> String {
    if values.is_empty() {
        "-".into()
    } else {
        ms(percentile(values, p))
    }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub(crate) fn price_per_ms() -> f64 {
    ARM64_PRICE_PER_GB_SECOND * (MEMORY_MB / 1024.0) / 1000.0
}

/// The mean billed duration (each rounded up to a whole ms) and dollars per million requests.
pub(crate) fn cost(durations: &[Duration]) -> Option<(f64, f64)> {
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
