//! The HTTP edge: the contract's envelope, the one API error type with its status and code, and
//! request-body parsing that never panics. Every response of every function is built here.

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::services::Failure;

/// Largest JSON body accepted on the API routes.
pub const MAX_JSON_BODY: usize = 16 * 1024;
/// Largest body accepted on the webhook (Stripe events are far smaller).
pub const MAX_WEBHOOK_BODY: usize = 512 * 1024;

/// Every way a request can fail, each with one status and one machine code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid Stripe signature")]
    BadSignature,
    #[error("authentication required")]
    Unauthorized,
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not enough credits")]
    InsufficientCredits,
    /// A usage beyond the plan's allowance that no overage pays for (429).
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    CardDeclined(String),
    /// A Stripe key that Stripe refused.
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("payment provider error")]
    Stripe(String),
    #[error("a dependency is unavailable")]
    Unavailable(String),
    /// An event that can only be applied after another one (Stripe retries it later).
    #[error("{0}")]
    RetryLater(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadSignature | Self::InvalidCredentials(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::InsufficientCredits | Self::CardDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Stripe(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) | Self::RetryLater(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code `code` answers (the OpenAPI document lists them).
    pub const CODES: &'static [&'static str] = &[
        "invalid_request",
        "invalid_signature",
        "invalid_credentials",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "insufficient_credits",
        "card_declined",
        "payload_too_large",
        "limit_reached",
        "stripe_error",
        "service_unavailable",
        "retry_later",
        "internal_error",
    ];

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::BadSignature => "invalid_signature",
            Self::InvalidCredentials(_) => "invalid_credentials",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::InsufficientCredits => "insufficient_credits",
            Self::CardDeclined(_) => "card_declined",
            Self::PayloadTooLarge => "payload_too_large",
            Self::LimitReached(_) => "limit_reached",
            Self::Stripe(_) => "stripe_error",
            Self::Unavailable(_) => "service_unavailable",
            Self::RetryLater(_) => "retry_later",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The sentence a client sees. Internal causes (`Stripe`, `Unavailable`, `Internal`) are
    /// replaced by a fixed text; the cause goes to the log only.
    fn public_message(&self) -> String {
        match self {
            Self::Stripe(_) => "The payment provider could not complete the request.".into(),
            Self::Unavailable(_) => "A service Coffer depends on is unavailable; try again.".into(),
            Self::Internal(_) => "Something went wrong on our side.".into(),
            other => other.to_string(),
        }
    }

    /// The whole cause, for the log: the internal detail behind `Stripe`, `Unavailable` and
    /// `Internal`, or the sentence of any other error.
    pub fn cause(&self) -> String {
        match self {
            Self::Stripe(cause) | Self::Unavailable(cause) | Self::Internal(cause) => cause.clone(),
            other => other.to_string(),
        }
    }

    /// The one conversion from an error to the contract's envelope.
    pub fn into_response(self) -> Response<Body> {
        match &self {
            Self::Stripe(cause) | Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(code = self.code(), cause = %cause, "request failed");
            }
            _ => tracing::info!(
                code = self.code(),
                status = self.status().as_u16(),
                "request refused"
            ),
        }
        let body = json!({
            "success": false,
            "error": self.public_message(),
            "code": self.code(),
        });
        json_response(self.status(), &body)
    }
}

/// A use case's reason, with its status and code. The 5xx reasons keep their cause for the log.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Invalid(message) => Self::BadRequest(message),
            Failure::Unsigned => Self::BadSignature,
            Failure::Forbidden => Self::Forbidden,
            Failure::NotFound(message) => Self::NotFound(message),
            Failure::Conflict(message) => Self::Conflict(message),
            Failure::InsufficientCredits => Self::InsufficientCredits,
            Failure::LimitReached(message) => Self::LimitReached(message),
            Failure::CardDeclined(message) => Self::CardDeclined(message),
            Failure::InvalidCredentials(message) => Self::InvalidCredentials(message),
            Failure::Stripe(cause) => Self::Stripe(cause),
            Failure::Unavailable(cause) => Self::Unavailable(cause),
            Failure::RetryLater(message) => Self::RetryLater(message),
            Failure::Internal(cause) => Self::Internal(cause),
        }
    }
}

/// `{"success": true, "data": …}` with status 200.
pub fn ok<T: Serialize>(data: T) -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "success": true, "data": data }))
}

/// `{"success": true, "data": …, "nextCursor": …}` for lists.
pub fn ok_page<T: Serialize>(data: T, next_cursor: Option<String>) -> Response<Body> {
    let mut body = json!({ "success": true, "data": data });
    if let (Some(cursor), Some(map)) = (next_cursor, body.as_object_mut()) {
        map.insert("nextCursor".into(), Value::String(cursor));
    }
    json_response(StatusCode::OK, &body)
}

/// `{"success": true}`, the webhook's acknowledgement.
pub fn ack() -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "success": true }))
}

/// Turns a handler's result into the response, errors through the single conversion.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| {
        r#"{"success":false,"error":"Something went wrong on our side.","code":"internal_error"}"#
            .to_string()
    });
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The raw body bytes, refusing anything over `limit`.
pub fn body_bytes(req: &Request, limit: usize) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(bytes)
}

/// Parses a JSON object body into `T`. Wrong content type, invalid UTF-8, malformed JSON,
/// duplicated keys and unknown shapes are all a 400 with a sentence that says which.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if let Some(kind) = req.headers().get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or("").to_ascii_lowercase();
        if !kind.starts_with("application/json") {
            return Err(ApiError::bad_request(
                "Content-Type must be application/json.",
            ));
        }
    }
    let bytes = body_bytes(req, MAX_JSON_BODY)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("A JSON body is required."));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("The body is not valid UTF-8."))?;
    let value: Value = parse_strict(text)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("The body must be a JSON object."));
    }
    // From the text, not the parsed value, so that a field may keep a number's own digits
    // (`Box<RawValue>`) instead of a float.
    serde_json::from_str(text)
        .map_err(|err| ApiError::bad_request(format!("Invalid request body: {}", describe(&err))))
}

/// Parses JSON refusing duplicated object keys (serde_json keeps the last one silently).
fn parse_strict(text: &str) -> Result<Value, ApiError> {
    struct Strict(Value);
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }
    struct StrictVisitor;
    impl<'de> serde::de::Visitor<'de> for StrictVisitor {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(Strict(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let Strict(value) = map.next_value()?;
                if object.insert(key.clone(), value).is_some() {
                    return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                }
            }
            Ok(Value::Object(object))
        }
    }
    serde_json::from_str::<Strict>(text)
        .map(|Strict(value)| value)
        .map_err(|err| ApiError::bad_request(format!("Malformed JSON: {}", describe(&err))))
}

/// A serde_json error as a short sentence without the input echoed back.
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = text.split(" at line").next().unwrap_or("invalid input");
    text.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::Request as HttpRequest;

    #[derive(serde::Deserialize, Debug)]
    struct Sample {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn every_error_code_is_listed_once() {
        let all = [
            ApiError::BadRequest(String::new()),
            ApiError::BadSignature,
            ApiError::Unauthorized,
            ApiError::Forbidden,
            ApiError::NotFound(String::new()),
            ApiError::Conflict(String::new()),
            ApiError::InsufficientCredits,
            ApiError::LimitReached(String::new()),
            ApiError::CardDeclined(String::new()),
            ApiError::InvalidCredentials(String::new()),
            ApiError::PayloadTooLarge,
            ApiError::Stripe(String::new()),
            ApiError::Unavailable(String::new()),
            ApiError::RetryLater(String::new()),
            ApiError::Internal(String::new()),
        ];
        let mut codes: Vec<_> = all.iter().map(ApiError::code).collect();
        codes.sort_unstable();
        let mut listed = ApiError::CODES.to_vec();
        listed.sort_unstable();
        assert_eq!(codes, listed);
    }

    fn request(content_type: Option<&str>, body: Body) -> Request {
        let mut builder = HttpRequest::builder().method("POST").uri("/x");
        if let Some(kind) = content_type {
            builder = builder.header("content-type", kind);
        }
        builder.body(body).unwrap()
    }

    fn body_of(response: &Response<Body>) -> Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap(),
            _ => panic!("expected a text body"),
        }
    }

    #[test]
    fn errors_render_the_envelope_with_status_and_code() {
        let response = ApiError::NotFound("Unknown credit package.".into()).into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(
            body_of(&response),
            json!({"success": false, "error": "Unknown credit package.", "code": "not_found"})
        );
    }

    #[test]
    fn internal_causes_never_reach_the_body() {
        let response =
            ApiError::Internal("dynamodb said: secret sk_test_123".into()).into_response();
        let text = serde_json::to_string(&body_of(&response)).unwrap();
        assert_eq!(response.status(), 500);
        assert!(!text.contains("sk_test"), "{text}");
        assert!(!text.contains("dynamodb"), "{text}");
    }

    #[test]
    fn duplicated_json_keys_are_refused() {
        let req = request(
            Some("application/json"),
            Body::from(r#"{"name":"a","name":"b"}"#),
        );
        let err = json_body::<Sample>(&req).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("duplicate key"));
    }

    #[test]
    fn wrong_content_type_invalid_utf8_and_malformed_json_are_400() {
        let wrong_type = request(Some("text/plain"), Body::from(r#"{"name":"a"}"#));
        let bad_utf8 = request(None, Body::Binary(vec![b'{', 0xff, b'}']));
        let malformed = request(None, Body::from("{\"name\":"));
        let not_object = request(None, Body::from("[1]"));
        for req in [wrong_type, bad_utf8, malformed, not_object] {
            assert_eq!(json_body::<Sample>(&req).unwrap_err().status(), 400);
        }
    }

    #[test]
    fn oversized_bodies_are_413() {
        let req = request(None, Body::from("x".repeat(MAX_JSON_BODY + 1)));
        assert_eq!(json_body::<Sample>(&req).unwrap_err().status(), 413);
    }
}
