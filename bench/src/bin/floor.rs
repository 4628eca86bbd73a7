//! The floor of the benchmark (bench only, never deployed): a bare `lambda_http` function that
//! answers every request with 200 and does nothing else: no logging setup, no AWS configuration,
//! no clients. What any function here costs above it, in size, init and memory, is what its own
//! dependencies cost. Same tokio runtime as the functions (one thread).

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"success":true}"#))
            .map_err(Error::from)
    }))
    .await
}
