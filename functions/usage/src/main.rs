//! The `usage` Lambda function (usage against plan allowances): wiring only; the handler lives
//! in `coffer::handlers`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve(coffer::handlers::usage).await
}
