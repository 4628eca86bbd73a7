//! The cold-start wiring every function shares: logging, configuration and clients built once,
//! then each invocation handed to the function's handler.

use std::future::Future;

use lambda_http::{service_fn, Body, Error, LambdaEvent, Request, Response};
use serde_json::Value;

use crate::{telemetry, App};

/// Logging and the `App`, once per cold start. The `App` lives as long as the process, so it is
/// leaked to `'static` on purpose.
async fn boot() -> Result<&'static App, Error> {
    telemetry::init();
    Ok(Box::leak(Box::new(App::from_env().await?)))
}

/// Builds the `App` once (failing fast on bad configuration) and serves `handler` on the Lambda
/// runtime.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static App, Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    let app = boot().await?;
    lambda_http::run(service_fn(move |req: Request| {
        let req = crate::http::strip_base_path(req, app.config.base_path());
        let response = handler(app, req);
        async move { Ok::<_, Error>(response.await) }
    }))
    .await
}

/// The same for a scheduled (EventBridge) function: the handler gets the raw event.
pub async fn serve_event<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static App, LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<Value, Error>> + Send,
{
    let app = boot().await?;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handler(app, event)
    }))
    .await
}
