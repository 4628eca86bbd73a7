//! Stripe webhook verification and event parsing. The `Stripe-Signature` header is checked with
//! HMAC-SHA256 over `"{t}.{raw body}"`, a constant-time compare, a 300 s tolerance and any of
//! several `v1` signatures. Events are read into Coffer's own tolerant types, so an account pinned
//! to any API version (or localstripe) works.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// How far the signed timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. Never carries the header or the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

struct SignatureHeader {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            // A v1 that is not hex can never match; skip it rather than refuse the others.
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Verifies `header` for `payload` with `secret` at time `now` (Unix seconds).
/// The caller must refuse an empty secret before calling (a configuration error, not a 400).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let parsed = parse_header(header)?;
    // `abs_diff` cannot overflow, whatever timestamp the header claims.
    if now.abs_diff(parsed.timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(parsed.timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let matches = parsed
        .v1
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Builds a `Stripe-Signature` header value the way Stripe does (for tests, fixtures and tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        signature_hex(payload, secret, timestamp)
    )
}

/// The hex HMAC-SHA256 of `"{timestamp}.{payload}"`.
pub fn signature_hex(payload: &[u8], secret: &str, timestamp: i64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// A Stripe event, reduced to what Coffer reads.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub created: Option<i64>,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventData {
    /// The object the event is about (a PaymentIntent, Charge, Subscription, …).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub object: serde_json::Value,
}

/// The PaymentIntent inside a `payment_intent.*` event.
#[derive(Debug, Deserialize)]
pub struct IntentObject {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// The charge inside a `charge.*` event.
#[derive(Debug, Deserialize)]
pub struct ChargeObject {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<serde_json::Value>,
}

/// The dispute inside a `charge.dispute.*` event.
#[derive(Debug, Deserialize)]
pub struct DisputeObject {
    pub id: String,
    /// The disputed amount (part of the charge or all of it).
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub payment_intent: Option<serde_json::Value>,
}

/// The refund inside a `charge.refund.updated` event.
#[derive(Debug, Deserialize)]
pub struct RefundObject {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<serde_json::Value>,
}

/// A PaymentIntent reference: an id, or an expanded object with one.
pub fn intent_id(reference: Option<&serde_json::Value>) -> Option<String> {
    match reference? {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Object(object) => object.get("id")?.as_str().map(str::to_owned),
        _ => None,
    }
}

impl Event {
    /// Parses an event body; `None` when it is not a Stripe event at all.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    pub fn charge(&self) -> Option<ChargeObject> {
        ChargeObject::deserialize(&self.data.object).ok()
    }

    pub fn dispute(&self) -> Option<DisputeObject> {
        DisputeObject::deserialize(&self.data.object).ok()
    }

    pub fn refund(&self) -> Option<RefundObject> {
        RefundObject::deserialize(&self.data.object).ok()
    }

    /// The PaymentIntent object, when this is a `payment_intent.*` event that has one.
    pub fn intent(&self) -> Option<IntentObject> {
        IntentObject::deserialize(&self.data.object).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_correct_signature_is_accepted() {
        let header = sign(BODY, SECRET, NOW);
        assert_eq!(verify(BODY, Some(&header), SECRET, NOW), Ok(()));
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = signature_hex(BODY, SECRET, NOW);
        let old = signature_hex(BODY, "whsec_old_secret", NOW);
        let header = format!("t={NOW},v1={old},v1={good},v0=abc");
        assert_eq!(verify(BODY, Some(&header), SECRET, NOW), Ok(()));
    }

    #[test]
    fn webhook_with_stale_or_future_timestamp_is_rejected() {
        let header = sign(BODY, SECRET, NOW - 301);
        assert_eq!(
            verify(BODY, Some(&header), SECRET, NOW),
            Err(SignatureError::Stale)
        );
        let header = sign(BODY, SECRET, NOW + 301);
        assert_eq!(
            verify(BODY, Some(&header), SECRET, NOW),
            Err(SignatureError::Stale)
        );
        let header = sign(BODY, SECRET, NOW - 300);
        assert_eq!(verify(BODY, Some(&header), SECRET, NOW), Ok(()));
    }

    #[test]
    fn tampered_body_wrong_secret_and_empty_secret_are_rejected() {
        let header = sign(BODY, SECRET, NOW);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.succeeded "}"#;
        assert_eq!(
            verify(tampered, Some(&header), SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&header), "whsec_other", NOW),
            Err(SignatureError::Mismatch)
        );
        let empty_signed = sign(BODY, "", NOW);
        assert_eq!(
            verify(BODY, Some(&empty_signed), "", NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hostile_timestamps_are_stale_not_an_overflow() {
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
            let header = format!("t={t},v1={}", signature_hex(BODY, SECRET, NOW));
            assert_eq!(
                verify(BODY, Some(&header), SECRET, NOW),
                Err(SignatureError::Stale),
                "{t}"
            );
            // At any clock, however far from the claimed time: refused, never a panic.
            for now in [i64::MIN, i64::MAX] {
                assert!(
                    verify(BODY, Some(&header), SECRET, now).is_err(),
                    "{t} at {now}"
                );
            }
        }
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        assert_eq!(
            verify(BODY, None, SECRET, NOW),
            Err(SignatureError::Missing)
        );
        for header in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=00",
            "t=1,t=2,v1=00",
            &format!("t={NOW}"),
        ] {
            assert_eq!(
                verify(BODY, Some(header), SECRET, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn events_parse_tolerantly() {
        let event = Event::parse(
            br#"{"id":"evt_1","type":"payment_intent.succeeded","api_version":"2017-08-15",
                "data":{"object":{"id":"pi_1","amount":500,"currency":"usd","metadata":{"a":"b"}}}}"#,
        )
        .unwrap();
        let intent = event.intent().unwrap();
        assert_eq!(
            (
                intent.id.as_str(),
                intent.amount,
                intent.metadata["a"].as_str()
            ),
            ("pi_1", 500, "b")
        );
        assert!(Event::parse(b"not json").is_none());
    }
}
