//! The `project-config` Lambda function (projects' Stripe configuration, the only writer of
//! their secrets): wiring only; the handler lives in `coffer::handlers`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve(coffer::handlers::project_config).await
}
