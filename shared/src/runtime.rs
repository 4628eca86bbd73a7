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
        let req = strip_base_path(req, app.config.base_path());
        let format = crate::formats::scope_of(app, &req);
        let response = handler(app, req);
        async move { Ok::<_, Error>(crate::formats::shaped(app, format, response.await).await) }
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

/// The path a route sees when the API is served under `base` (a custom domain's API mapping,
/// `/billing`): `path` without it, when it carries it. API Gateway's HTTP API already removes
/// the mapping's path; this serves a request that still carries it (a CloudFront origin path, a
/// REST API) the same way. `None`: nothing to remove.
pub fn without_base_path(path: &str, base: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some("/".to_owned())
    } else if rest.starts_with('/') {
        Some(rest.to_owned())
    } else {
        None
    }
}

/// Rewrites the request's URI without the base path (see `without_base_path`).
pub fn strip_base_path<B>(mut req: http::Request<B>, base: &str) -> http::Request<B> {
    let Some(path) = without_base_path(req.uri().path(), base) else {
        return req;
    };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(rewritten) = path_and_query.parse() {
        parts.path_and_query = Some(rewritten);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod base_path_tests {
    use super::*;

    #[test]
    fn a_path_under_the_mapping_loses_it_and_no_other_path_changes() {
        assert_eq!(
            without_base_path("/billing/api/x", "/billing").as_deref(),
            Some("/api/x")
        );
        assert_eq!(
            without_base_path("/billing", "/billing/").as_deref(),
            Some("/")
        );
        assert_eq!(without_base_path("/billingx/api", "/billing"), None);
        assert_eq!(without_base_path("/api/x", "/billing"), None);
        assert_eq!(without_base_path("/api/x", ""), None);
        let req = http::Request::builder()
            .uri("https://api.example.com/billing/api/stripe/balance?project_id=a")
            .body(())
            .expect("request");
        let req = strip_base_path(req, "/billing");
        assert_eq!(req.uri().path(), "/api/stripe/balance");
        assert_eq!(req.uri().query(), Some("project_id=a"));
        assert_eq!(req.uri().host(), Some("api.example.com"));
    }
}
