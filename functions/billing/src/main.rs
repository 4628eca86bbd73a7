//! The `billing` Lambda function (plans, customers, subscriptions, Checkout, the portal):
//! wiring only; the handler lives in `coffer::handlers`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve(coffer::handlers::billing).await
}
