//! The `billing-events` Lambda function, fed by the table's DynamoDB stream: publishes billing
//! events to the EventBridge bus. Wiring only; the job lives in `coffer::jobs`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve_event(coffer::jobs::billing_events_job).await
}
