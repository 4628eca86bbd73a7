//! A local stand-in for API Gateway: listens on loopback, checks the local HS256 token where the
//! JWT authorizer would, builds the same API Gateway v2 (payload 2.0) event that Lambda receives
//! and hands it to the function's handler. Handlers therefore have one code path, locally and
//! deployed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use coffer::handlers;
use coffer::App;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::contract::Contract;

/// Requests larger than this are refused before any handler sees them (API Gateway's limit is
/// 10 MB; handlers enforce their own, smaller limits).
const MAX_BODY: usize = 1024 * 1024;

pub struct LocalApi {
    pub app: App,
    /// Secret of the local HS256 tokens.
    pub jwt_secret: String,
    /// What the storefront's `config.json` tells the page.
    pub page: PageConfig,
    /// Origins CORS allows, as the template's `AllowedOrigins` does for API Gateway.
    pub allowed_origins: Vec<String>,
    /// When set, every routed answer is checked against the OpenAPI document.
    pub contract: Option<Arc<Contract>>,
    /// The answers the document does not describe, one line each (tests fail on any).
    pub violations: Arc<Mutex<Vec<String>>>,
}

impl LocalApi {
    /// A router for `app` with the page pointed at real Stripe.js and no CORS origins.
    pub fn new(app: App, jwt_secret: impl Into<String>) -> Self {
        Self {
            app,
            jwt_secret: jwt_secret.into(),
            page: PageConfig::stripe(String::new()),
            allowed_origins: Vec::new(),
            contract: None,
            violations: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// The publishable key the page uses with localstripe (which accepts any `pk_` key).
pub const LOCAL_PUBLISHABLE_KEY: &str = "pk_test_coffer_local";

/// The storefront's settings (`/config.json`): where Stripe.js comes from and its key.
pub struct PageConfig {
    pub publishable_key: String,
    pub stripe_js_url: String,
}

impl PageConfig {
    /// localstripe's Stripe.js stand-in, served by localstripe at `base`.
    pub fn localstripe(base: &str) -> Self {
        Self {
            publishable_key: LOCAL_PUBLISHABLE_KEY.to_owned(),
            stripe_js_url: format!("{}/js.stripe.com/v3/", base.trim_end_matches('/')),
        }
    }

    /// Stripe's own Stripe.js with a real publishable key.
    pub fn stripe(publishable_key: String) -> Self {
        Self {
            publishable_key,
            stripe_js_url: "https://js.stripe.com/v3/".to_owned(),
        }
    }

    fn to_json(&self) -> String {
        json!({
            "apiBase": "",
            "publishableKey": self.publishable_key,
            "stripeJsUrl": self.stripe_js_url,
        })
        .to_string()
    }
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, api: Arc<LocalApi>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(api.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = hyper::Response<Full<Bytes>>;

async fn handle(api: Arc<LocalApi>, req: hyper::Request<Incoming>) -> Result<Reply, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", requestId = %request_id);
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| api.allowed_origins.iter().any(|allowed| allowed == o))
        .map(str::to_owned);
    if req.method() == hyper::Method::OPTIONS {
        // A CORS preflight, answered as API Gateway's CORS configuration does.
        let mut reply = hyper::Response::builder().status(204);
        if let Some(origin) = &origin {
            reply = reply
                .header("access-control-allow-origin", origin)
                .header(
                    "access-control-allow-headers",
                    "authorization,content-type,idempotency-key",
                )
                .header(
                    "access-control-allow-methods",
                    "GET,POST,PUT,DELETE,OPTIONS",
                )
                .header("access-control-max-age", "600");
        }
        return Ok(reply
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()))));
    }
    let mut reply = route(api, req, request_id).instrument(span).await;
    if let Some(origin) = origin {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&origin) {
            reply
                .headers_mut()
                .insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
    }
    Ok(reply)
}

/// The storefront page's files (`web/`), served by the local stack at `/` (deployed, they are
/// static files on any host).
const PAGE_FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
    // The API reference: Redoc over the document.
    (
        "/reference",
        "text/html; charset=utf-8",
        include_str!("../../web/reference.html"),
    ),
    (
        "/openapi.json",
        "application/json",
        crate::contract::DOCUMENT,
    ),
    // The developer console (`web/console/`).
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("../../web/console/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/console/console.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_str!("../../web/console/console.css"),
    ),
];

/// Redoc's standalone bundle, installed by `scripts/stack.sh` (npm, into `.local-tools`) and
/// named by `REDOC_JS`; it is not in the repository.
fn redoc_bundle() -> Reply {
    let file = match std::env::var("REDOC_JS") {
        Ok(path) => std::fs::read(path).ok(),
        Err(_) => None,
    };
    match file {
        Some(bytes) => hyper::Response::builder()
            .status(200)
            .header("content-type", "text/javascript; charset=utf-8")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()))),
        None => reply(
            404,
            json!({"success": false, "error": "Redoc is not installed: start the stack with scripts/stack.sh, which installs it.", "code": "not_found"}).to_string(),
        ),
    }
}

/// `127.0.0.1`, `localhost` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

/// Local stack only: a local user's token for a name (the storefront's sign-in; no password).
async fn local_token(api: &LocalApi, body: Incoming) -> Reply {
    let refused = |message: &str| {
        reply(
            400,
            json!({"success": false, "error": message, "code": "bad_request"}).to_string(),
        )
    };
    let Ok(collected) = Limited::new(body, 4096).collect().await else {
        return refused("The body is too large.");
    };
    let asked = serde_json::from_slice::<Value>(&collected.to_bytes()).unwrap_or(Value::Null);
    // The console signs a developer in (the developer claim), the storefront a user.
    let developer = asked.get("developer").and_then(Value::as_bool) == Some(true);
    let name = asked
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|n| n.len() <= 64 && !n.trim().is_empty())
        .and_then(|n| coffer::domain::records::UserId::parse(n.trim()));
    let Some(name) = name else {
        return refused("Give a name of 1 to 64 characters.");
    };
    let token = if developer {
        crate::token::issue_developer(&api.jwt_secret, name.as_str(), 3600)
    } else {
        crate::token::issue(&api.jwt_secret, name.as_str(), 3600)
    };
    match token {
        Ok(token) => reply(
            200,
            json!({"success": true, "data": {"token": token, "expiresIn": 3600}}).to_string(),
        ),
        Err(_) => reply(
            500,
            json!({"success": false, "error": "Something went wrong on our side.", "code": "internal_error"}).to_string(),
        ),
    }
}

async fn route(api: Arc<LocalApi>, req: hyper::Request<Incoming>, request_id: String) -> Reply {
    // Under a custom domain's API mapping (`PUBLIC_BASE_URL` with a path), API Gateway removes
    // the mapping's path before it routes: so does the local router.
    let req = coffer::runtime::strip_base_path(req, api.app.config.base_path());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    if method == "GET" {
        if let Some((_, content_type, text)) = PAGE_FILES.iter().find(|(p, _, _)| *p == path) {
            return hyper::Response::builder()
                .status(200)
                .header("content-type", *content_type)
                .header("cache-control", "no-store")
                // No other site may frame the pages (a meta tag cannot say this).
                .header("content-security-policy", "frame-ancestors 'none'")
                .header("x-frame-options", "DENY")
                .body(Full::new(Bytes::from_static(text.as_bytes())))
                .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())));
        }
    }
    if method == "GET" && path == "/redoc.standalone.js" {
        return redoc_bundle();
    }
    if method == "GET" && path == "/console" {
        return hyper::Response::builder()
            .status(308)
            .header("location", "/console/")
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())));
    }
    if method == "GET" && path == "/console/config.json" {
        // The local stack's console: the API on the same origin, developers signed in by name.
        return hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(
                json!({"apiBase": "", "local": true}).to_string(),
            )))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())));
    }
    if method == "GET" && path == "/config.json" {
        return hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(api.page.to_json())))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())));
    }
    if method == "POST" && path == "/_local/token" {
        // Only a page of the loopback origin mints tokens: a page elsewhere that points a name
        // at 127.0.0.1 (DNS rebinding) carries its own name as the Host.
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !loopback_host(host) {
            return reply(
                403,
                json!({"success": false, "error": "Tokens are given to the local stack's own pages only.", "code": "forbidden"}).to_string(),
            );
        }
        return local_token(&api, req.into_body()).await;
    }
    let matched = handlers::ROUTES.iter().find_map(|(m, pattern, function)| {
        (*m == method)
            .then(|| match_path(pattern, &path))
            .flatten()
            .map(|params| (*pattern, *function, params))
    });
    let Some((route_path, function, path_params)) = matched else {
        let status = if handlers::ROUTES
            .iter()
            .any(|(_, p, _)| match_path(p, &path).is_some())
        {
            405
        } else {
            404
        };
        tracing::info!(method = %method, path = %path, status, "no route");
        let (error, code) = if status == 405 {
            ("Method not allowed.", "method_not_allowed")
        } else {
            ("No such route.", "not_found")
        };
        return reply(
            status,
            json!({"success": false, "error": error, "code": code}).to_string(),
        );
    };

    let reply = routed(&api, req, route_path, function, path_params, &request_id).await;
    match &api.contract {
        Some(contract) => checked(contract, &api.violations, &method, route_path, reply).await,
        None => reply,
    }
}

/// The answer of a matched route: the router's own refusals, or the handler's answer.
async fn routed(
    api: &LocalApi,
    req: hyper::Request<Incoming>,
    route_path: &str,
    function: &'static str,
    path_params: HashMap<String, String>,
    request_id: &str,
) -> Reply {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return reply(
                413,
                json!({"success": false, "error": "request body too large", "code": "payload_too_large"})
                    .to_string(),
            )
        }
    };

    let claims = if function == "stripe-webhook" {
        None
    } else {
        bearer(&parts.headers).and_then(|token| crate::token::verify(&api.jwt_secret, token))
    };
    // `/internal/*` is IAM-authorized when deployed. Locally a service token (`coffer-dev token
    // --service NAME`) stands in for SigV4, and the caller shows up as an IAM principal.
    let authorizer = if route_path.starts_with("/internal/") {
        claims
            .filter(|c| c.get("role").map(String::as_str) == Some("service"))
            .map(|c| Authorizer::Iam(c.get("sub").cloned().unwrap_or_default()))
    } else {
        claims.map(Authorizer::Jwt)
    };
    let mut event = gateway_event(&parts, route_path, &body, authorizer, request_id);
    if !path_params.is_empty() {
        event["pathParameters"] = json!(path_params);
    }
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => request,
        Err(_) => {
            return reply(
                400,
                json!({"success": false, "error": "The request could not be read.", "code": "invalid_request"})
                    .to_string(),
            )
        }
    };
    // The project's response format, applied as the function's runtime applies it.
    let format = coffer::formats::scope_of(&api.app, &request);
    let response = coffer::calls::as_function(function, async {
        let answer = handlers::call(function, &api.app, request).await;
        coffer::formats::shaped(&api.app, format, answer).await
    })
    .await;
    let status = response.status().as_u16();
    tracing::info!(method = %method, path = %path, status, "handled");
    let mut builder = hyper::Response::builder().status(status);
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let bytes = match response.into_body() {
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    builder
        .body(Full::new(bytes))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

/// The answer, after checking it against the document: one that the document does not describe
/// is recorded (and logged); the answer itself goes out unchanged.
async fn checked(
    contract: &Contract,
    violations: &Mutex<Vec<String>>,
    method: &str,
    route_path: &str,
    reply: Reply,
) -> Reply {
    let (parts, body) = reply.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if let Err(why) = contract.check(method, route_path, parts.status.as_u16(), &bytes) {
        tracing::error!(method, route = route_path, why = %why, "answer not in the OpenAPI document");
        if let Ok(mut list) = violations.lock() {
            list.push(format!("{method} {route_path}: {why}"));
        }
    }
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Matches a route pattern such as `/webhooks/{project_id}/{mode}` against a path, as API
/// Gateway does: each `{name}` takes one whole segment. The segments it took, by name.
pub fn match_path(pattern: &str, path: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut wanted = pattern.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                let value = form_urlencoded::parse(format!("v={g}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())?;
                params.insert(w[1..w.len() - 1].to_owned(), value);
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What API Gateway's authorizer would have put in the request context.
enum Authorizer {
    Jwt(HashMap<String, String>),
    Iam(String),
}

/// The API Gateway HTTP API (payload 2.0) event for this request.
fn gateway_event(
    parts: &hyper::http::request::Parts,
    route_path: &str,
    body: &Bytes,
    authorizer: Option<Authorizer>,
    request_id: &str,
) -> Value {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let raw_query = parts.uri.query().unwrap_or("");
    let mut query: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.into_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let method = parts.method.as_str();
    let route_key = format!("{method} {route_path}");
    let now = time::OffsetDateTime::now_utc();
    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": headers.get("host").cloned().unwrap_or_else(|| "127.0.0.1".into()),
        "domainPrefix": "local",
        "http": {
            "method": method,
            "path": parts.uri.path(),
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": now.unix_timestamp().to_string(),
        "timeEpoch": now.unix_timestamp() * 1000,
    });
    match authorizer {
        Some(Authorizer::Jwt(claims)) => {
            context["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
        }
        Some(Authorizer::Iam(name)) => {
            context["authorizer"] = json!({ "iam": {
                "accessKey": "LOCAL", "accountId": "000000000000", "callerId": name,
                "principalOrgId": null,
                // As a session of the role `name` appears (the allowlist names the role).
                "userArn": format!("arn:aws:sts::000000000000:assumed-role/{name}/local"),
                "userId": name,
            }});
        }
        None => {}
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": !body.is_empty(),
    });
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !body.is_empty() {
        event["body"] = Value::String(STANDARD.encode(body));
    }
    event
}

fn reply(status: u16, body: String) -> Reply {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod loopback_tests {
    #[test]
    fn only_loopback_names_mint_tokens() {
        for host in [
            "127.0.0.1:3000",
            "localhost:3000",
            "[::1]:3000",
            "127.0.0.1",
        ] {
            assert!(super::loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:3000",
            "127.0.0.1.evil.example",
            "",
            "[::2]:1",
            "localhost.evil",
        ] {
            assert!(!super::loopback_host(host), "{host}");
        }
    }
}
