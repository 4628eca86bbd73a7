//! Structured JSON logging. Every line carries the span fields of the invocation, which include
//! the request id (set by the Lambda runtime, or by the local router).

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the JSON subscriber once; later calls are no-ops. Level from `RUST_LOG`, default info.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
