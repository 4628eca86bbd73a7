//! Property tests: whatever bytes arrive, parsing never panics and refusals are 4xx in the
//! envelope. Covers request bodies, the `Stripe-Signature` header, events, amounts, ids and
//! cursors.

use coffer::auth::UserId;
use coffer::domain::money::Currency;
use coffer::domain::packages::valid_package_id;
use coffer::http::{json_body, ApiError};
use coffer::webhook::{self, Event};
use lambda_http::{Body, Request};
use proptest::prelude::*;
use serde_json::Value;

fn request(content_type: Option<String>, body: Vec<u8>) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/x");
    if let Some(kind) = content_type {
        if let Ok(value) = lambda_http::http::HeaderValue::from_str(&kind) {
            builder = builder.header("content-type", value);
        }
    }
    builder.body(Body::Binary(body)).expect("request")
}

fn assert_envelope_4xx(err: ApiError) -> Result<(), TestCaseError> {
    let status = err.status().as_u16();
    prop_assert!(status == 400 || status == 413, "status {status}");
    let response = err.into_response();
    let Body::Text(text) = response.body() else {
        return Err(TestCaseError::fail("not a text body"));
    };
    let body: Value = serde_json::from_str(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&body["success"], &Value::Bool(false));
    prop_assert!(body["code"].is_string() && body["error"].is_string());
    Ok(())
}

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
struct AnyObject {
    #[serde(rename = "creditPackageId")]
    credit_package_id: Option<Value>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bodies_never_panic_and_refusals_are_4xx(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        content_type in proptest::option::of("[a-z/;= -]{0,40}"),
    ) {
        if let Err(err) = json_body::<AnyObject>(&request(content_type, body)) {
            assert_envelope_4xx(err)?;
        }
    }

    #[test]
    fn json_shaped_bodies_with_odd_values_are_handled(
        key in "[a-zA-Z\\u{0}-\\u{7f}\\u{e9}\\u{1f600}]{0,12}",
        number in any::<f64>(),
        big in "-?[0-9]{15,40}(\\.[0-9]{0,30})?",
    ) {
        for text in [
            format!(r#"{{"{key}": {big}, "{key}": 1}}"#),
            format!(r#"{{"creditPackageId": {big}}}"#),
            format!(r#"{{"creditPackageId": "{key}", "amount": {number}}}"#),
        ] {
            match json_body::<AnyObject>(&request(Some("application/json".into()), text.into_bytes())) {
                Ok(_) => {}
                Err(err) => assert_envelope_4xx(err)?,
            }
        }
    }

    #[test]
    fn any_signature_header_is_refused_unless_it_is_a_real_signature(
        header in "\\PC{0,200}",
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        now in 0i64..4_000_000_000,
    ) {
        let result = webhook::verify(&payload, Some(&header), "whsec_property", now);
        let genuine = webhook::sign(&payload, "whsec_property", now);
        prop_assert!(result.is_err() || header.contains(&genuine[genuine.find("v1=").unwrap_or(0)..]));
        prop_assert!(webhook::verify(&payload, Some(&genuine), "whsec_property", now).is_ok());
        prop_assert!(webhook::verify(&payload, Some(&genuine), "whsec_other", now).is_err());
    }

    #[test]
    fn signature_headers_with_many_parts_never_panic(
        parts in proptest::collection::vec(("[tv0-9]{1,3}", "[0-9a-fA-Fx=,]{0,70}"), 0..20),
    ) {
        let header: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = webhook::verify(b"{}", Some(&header.join(",")), "whsec_property", 1);
    }

    #[test]
    fn arbitrary_event_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Some(event) = Event::parse(&body) {
            let _ = (event.intent(), event.charge(), event.dispute());
        }
    }

    #[test]
    fn amounts_parse_exactly_or_are_refused(
        text in "-?[0-9]{0,25}(\\.[0-9]{0,25})?([eE]-?[0-9]{1,4})?",
    ) {
        let usd = Currency::usd();
        if let Ok(minor) = usd.parse_major(&text, 1_000_000_000) {
            prop_assert!(minor.abs() <= 1_000_000_000);
            // Only JSON numbers are accepted.
            prop_assert!(serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_number()), "{text}");
            // Exact: the minor units written back as a decimal parse to the same minor units,
            // and are the same number as the text.
            let sign = if minor < 0 { "-" } else { "" };
            let back = format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100);
            prop_assert_eq!(usd.parse_major(&back, 1_000_000_000), Ok(minor));
            let given: f64 = text.parse().unwrap_or(f64::NAN);
            prop_assert!((minor as f64 / 100.0 - given).abs() < 1e-6, "{text}: {minor}");
        }
    }

    #[test]
    fn ids_with_path_unicode_and_control_characters_are_refused_or_kept_whole(id in "\\PC{0,80}|[./\\\\%#\\u{0}]{1,10}") {
        if valid_package_id(&id) {
            prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        if let Some(user) = UserId::parse(&id) {
            prop_assert_eq!(user.as_str(), id.as_str());
            prop_assert!(!id.chars().any(char::is_control));
        }
    }
}
