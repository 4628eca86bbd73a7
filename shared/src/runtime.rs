//! The cold-start wiring every function shares: logging, configuration and clients built once,
//! then each invocation handed to the function's handler.

use std::future::Future;

use lambda_http::{service_fn, Body, Error, Request, Response};

use crate::{telemetry, App};

/// Builds the `App` once (failing fast on bad configuration) and serves `handler` on the Lambda
/// runtime. The `App` lives as long as the process, so it is leaked to `'static` on purpose.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static App, Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    telemetry::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_http::run(service_fn(move |req: Request| {
        let response = handler(app, req);
        async move { Ok::<_, Error>(response.await) }
    }))
    .await
}
