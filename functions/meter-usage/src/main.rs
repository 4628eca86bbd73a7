//! The `meter-usage` Lambda function, on an EventBridge schedule: reports metered usage to
//! Stripe as billing meter events. Wiring only; the job lives in `coffer::jobs`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve_event(coffer::jobs::meter_usage_job).await
}
