//! A project's response format, applied in one place to every answer of its end-user routes,
//! after the handler: `envelope` (the contract's, the default) or `plain`, for apps written
//! against another backend. With `plain` a success is the answer's own fields at the top level
//! (a list is the array; the next page's cursor is the `Next-Cursor` header), the answers those
//! apps read carry the names they expect beside Coffer's (`client_secret` beside
//! `clientSecret`), and an error is `{"error": <the same sentence>}` with the same status.
//! Developer routes, internal routes and webhooks always answer in the envelope.

use lambda_http::http::header::{HeaderName, HeaderValue};
use lambda_http::{Body, Request, Response};
use serde_json::{Map, Value};

use crate::domain::projects::ResponseFormat;
use crate::domain::scope::Scope;
use crate::{scoping, App};

/// The header that carries a plain list's next-page cursor.
pub const NEXT_CURSOR: &str = "next-cursor";

/// The names other backends' apps read, beside Coffer's own (plain format only).
const ALIASES: &[(&str, &str)] = &[("clientSecret", "client_secret")];

/// Whether a path is one of the end-user routes (a user's JWT; the project and mode from the
/// query), whose answers follow the project's format.
pub fn end_user_route(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    if path == "/api/stripe/webhook" {
        return false;
    }
    path.starts_with("/api/stripe/")
        || path.starts_with("/api/credits/")
        || path == "/api/usage"
        || path == "/api/portal/checkout"
        || matches!(
            path.strip_prefix("/api/v1/payments/stripe/"),
            Some(
                "checkout-session"
                    | "my-subscription"
                    | "my-payments"
                    | "cancel-subscription"
                    | "update-subscription"
                    | "customer-portal"
            )
        )
}

/// The scope whose format a request's answer follows: an end-user route's, as its query names
/// it; `None` for every other route (and for a query too malformed to name one: its 400 is
/// in the envelope).
pub fn scope_of(app: &App, req: &Request) -> Option<Scope> {
    end_user_route(req.uri().path())
        .then(|| scoping::named_scope(app, req))
        .flatten()
}

/// The answer in the format of `scope` (the project's setting, as this instance kept it for a
/// minute). Settings that cannot be read leave the envelope.
pub async fn shaped(app: &App, scope: Option<Scope>, response: Response<Body>) -> Response<Body> {
    let Some(scope) = scope else {
        return response;
    };
    // Only a project that exists has a format (and a setting kept in memory): a query naming
    // any other answers in the envelope, and fills no cache.
    if !app.is_deployment_scope(&scope) {
        match app.project(&scope.project).await {
            Ok(Some(project)) if project.modes.contains_key(&scope.mode) => {}
            _ => return response,
        }
    }
    match app.cached_settings(&scope).await {
        Ok(settings) if settings.response_format == Some(ResponseFormat::Plain) => plain(response),
        Ok(_) => response,
        Err(err) => {
            tracing::warn!(cause = %err, "the project's response format could not be read; answering in the envelope");
            response
        }
    }
}

/// An envelope answer in the plain format.
pub fn plain(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let Body::Text(text) = &body else {
        return Response::from_parts(parts, body);
    };
    let Ok(Value::Object(mut envelope)) = serde_json::from_str::<Value>(text) else {
        return Response::from_parts(parts, body);
    };
    let shaped = match envelope.get("success") {
        Some(Value::Bool(true)) => {
            if let Some(Value::String(cursor)) = envelope.remove("nextCursor") {
                if let Ok(value) = HeaderValue::from_str(&cursor) {
                    parts
                        .headers
                        .insert(HeaderName::from_static(NEXT_CURSOR), value);
                }
            }
            match envelope.remove("data") {
                Some(Value::Object(fields)) => Value::Object(with_aliases(fields)),
                Some(other) => other,
                None => Value::Object(Map::new()),
            }
        }
        Some(Value::Bool(false)) => {
            let mut error = Map::new();
            error.insert(
                "error".into(),
                envelope.remove("error").unwrap_or(Value::Null),
            );
            Value::Object(error)
        }
        _ => return Response::from_parts(parts, body),
    };
    let text = serde_json::to_string(&shaped).unwrap_or_else(|_| text.clone());
    Response::from_parts(parts, Body::Text(text))
}

fn with_aliases(mut fields: Map<String, Value>) -> Map<String, Value> {
    for (ours, theirs) in ALIASES {
        if let Some(value) = fields.get(*ours).cloned() {
            fields.entry(*theirs).or_insert(value);
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::StatusCode;
    use serde_json::json;

    fn body(response: &Response<Body>) -> Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).expect("json"),
            _ => panic!("a text body"),
        }
    }

    #[test]
    fn a_plain_success_is_its_fields_with_the_names_other_apps_read() {
        let answer =
            crate::http::ok(json!({"clientSecret": "pi_1_secret_x", "paymentIntentId": "pi_1"}));
        let shaped = plain(answer);
        assert_eq!(shaped.status(), StatusCode::OK);
        assert_eq!(
            body(&shaped),
            json!({"clientSecret": "pi_1_secret_x", "client_secret": "pi_1_secret_x", "paymentIntentId": "pi_1"})
        );
    }

    #[test]
    fn a_plain_list_is_the_array_and_its_cursor_a_header() {
        let shaped = plain(crate::http::ok_page(json!([{"id": 1}]), Some("abc".into())));
        assert_eq!(body(&shaped), json!([{"id": 1}]));
        assert_eq!(
            shaped
                .headers()
                .get(NEXT_CURSOR)
                .and_then(|v| v.to_str().ok()),
            Some("abc")
        );
    }

    #[test]
    fn a_plain_error_is_its_sentence_with_the_same_status() {
        let shaped = plain(
            crate::http::ApiError::NotFound("Unknown credit package.".into()).into_response(),
        );
        assert_eq!(shaped.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(&shaped), json!({"error": "Unknown credit package."}));
        let hidden = plain(crate::http::ApiError::Internal("sk_live_x".into()).into_response());
        assert!(!body(&hidden).to_string().contains("sk_live"));
    }

    #[test]
    fn only_end_user_routes_follow_the_format() {
        for path in [
            "/api/stripe/create-payment-intent",
            "/api/stripe/balance",
            "/api/credits/consume",
            "/api/portal/checkout",
            "/api/v1/payments/stripe/my-subscription",
            "/api/usage",
        ] {
            assert!(end_user_route(path), "{path}");
        }
        for path in [
            "/api/stripe/webhook",
            "/api/v1/payments/stripe/webhooks/p/test",
            "/api/v1/payments/stripe/projects/p/settings",
            "/api/v1/payments/projects",
            "/internal/credits/consume",
        ] {
            assert!(!end_user_route(path), "{path}");
        }
    }
}
