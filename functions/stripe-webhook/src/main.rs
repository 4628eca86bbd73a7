//! The `stripe-webhook` Lambda function: wiring only; the handler lives in `coffer::handlers`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve(coffer::handlers::stripe_webhook).await
}
