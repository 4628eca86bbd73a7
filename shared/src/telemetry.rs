//! Structured JSON logging. Every line carries the span fields of the invocation, which include
//! the request id (set by the Lambda runtime, or by the local router).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON subscriber once; later calls are no-ops. Level from `RUST_LOG` (a level, or
/// `target=level` pairs separated by commas), default info. `Targets` rather than `EnvFilter`:
/// the same directives without span and field matching, and without a regex engine in every
/// function's binary and cold start.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_ansi(false);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}

/// A succeeded payment that could not be credited: an error log line every time, and the first
/// time it is flagged, one CloudWatch Embedded Metric Format line for the
/// `Coffer/PaymentsNeedingAttention` metric (the template's alarm watches it). EMF must be a
/// top-level JSON object on its own line, so it is printed, not traced.
pub fn payment_needs_attention(intent_id: &str, reason: &str, newly_flagged: bool) {
    tracing::error!(
        intent_id,
        reason,
        newly_flagged,
        "a succeeded payment could not be credited; an operator must look (coffer-dev attention)"
    );
    if newly_flagged {
        println!(
            "{}",
            attention_metric_line(crate::domain::records::now_ms())
        );
    }
}

fn attention_metric_line(now_ms: i64) -> String {
    metric_line("PaymentsNeedingAttention", 1, now_ms)
}

/// Meter events held after a run (their projects' keys refused, not configured, or the events
/// refused): a `MeterEventsHeld` metric on every run, so that its alarm also clears, and an
/// error log line when any are held.
pub fn meter_events_held(count: usize) {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    println!(
        "{}",
        metric_line("MeterEventsHeld", count, crate::domain::records::now_ms())
    );
}

/// One CloudWatch embedded-metric line of the `Coffer` namespace (no dimensions).
fn metric_line(name: &str, value: i64, now_ms: i64) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "Coffer",
                "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
        name: value,
    })
    .to_string()
}

/// An error and every cause under it, as one line for the log.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_attention_metric_is_an_emf_line_with_one_count() {
        let line: serde_json::Value =
            serde_json::from_str(&super::attention_metric_line(1_700_000_000_000)).unwrap();
        assert_eq!(line["PaymentsNeedingAttention"], 1);
        let metric = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metric["Namespace"], "Coffer");
        assert_eq!(metric["Metrics"][0]["Name"], "PaymentsNeedingAttention");
    }
}
