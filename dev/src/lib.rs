//! The local stack's own tooling, never deployed: creating the table and seeding packages,
//! storing the Stripe secret in the Secrets Manager emulator, registering the webhook with
//! localstripe, local HS256 tokens, re-signing webhook events, and a local router that turns HTTP
//! requests into API Gateway v2 events for the very handlers the Lambda functions run.

pub mod contract;
pub mod filters;
pub mod ops;
pub mod router;
pub mod runtime_api;
pub mod setup;
pub mod streams;
pub mod stripe_double;
pub mod token;
pub mod webhooks;

/// Re-signs a sample API Gateway event holding a Stripe webhook body: the body is kept byte for
/// byte and the `stripe-signature` header is replaced with one made now with `secret`.
pub fn resign(event_json: &str, secret: &str) -> Result<String, String> {
    let mut event: serde_json::Value =
        serde_json::from_str(event_json).map_err(|e| format!("not JSON: {e}"))?;
    let body = event
        .get("body")
        .and_then(|b| b.as_str())
        .ok_or("the event has no body")?
        .to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = coffer::webhook::sign(body.as_bytes(), secret, now);
    let headers = event
        .get_mut("headers")
        .and_then(|h| h.as_object_mut())
        .ok_or("the event has no headers")?;
    headers.insert("stripe-signature".into(), serde_json::Value::String(header));
    serde_json::to_string_pretty(&event).map_err(|e| e.to_string())
}
