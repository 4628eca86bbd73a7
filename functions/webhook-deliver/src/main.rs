//! The `webhook-deliver` Lambda function, fed by the SQS queue of webhook deliveries: sends each
//! event to its project's endpoint, signed. Wiring only; the job lives in `coffer::jobs`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve_event(coffer::jobs::webhook_deliver_job).await
}
