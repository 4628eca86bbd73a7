//! The `developer-api` Lambda function (developers' views of their projects and catalogs):
//! wiring only; the handler lives in `coffer::handlers`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    coffer::runtime::serve(coffer::handlers::developer_api).await
}
