//! The `stats` Lambda function, fed by the table's DynamoDB stream: wiring only; the job lives in
//! `coffer::jobs`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve_event(coffer::jobs::stats_job).await
}
