//! The one Stripe call async-stripe cannot make: an ephemeral key must be created in the API
//! version the mobile SDK sends, and async-stripe pins its own. This posts the form itself over
//! the same HTTP client, with the version header the client asked for.

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::{StripeApi, StripeFailure};

/// The same time limit as every other Stripe call.
const TIMEOUT: std::time::Duration = super::STRIPE_TIMEOUT;

/// An ephemeral key: the whole object is handed to the mobile SDK as it is.
#[derive(Debug)]
pub struct EphemeralKey {
    pub id: String,
    pub secret: String,
    /// Stripe's JSON, for the SDK.
    pub object: serde_json::Value,
}

/// A Stripe API version as the SDKs send it: `2020-08-27` or `2024-06-20.acacia`.
pub fn valid_api_version(version: &str) -> bool {
    let (date, name) = version.split_once('.').unwrap_or((version, ""));
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    date_ok && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase())
}

impl StripeApi {
    /// An ephemeral key for the customer, made with `stripe_version` (the mobile SDK's).
    pub async fn create_ephemeral_key(
        &self,
        customer_id: &str,
        stripe_version: &str,
    ) -> Result<EphemeralKey, StripeFailure> {
        if !valid_api_version(stripe_version) {
            return Err(StripeFailure::Config("invalid Stripe API version".into()));
        }
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("customer", customer_id)
            .finish();
        let url = format!("{}/v1/ephemeral_keys", self.client.base());
        let make = || {
            http::Request::post(&url)
                .header(http::header::AUTHORIZATION, self.client.authorization())
                .header("stripe-version", stripe_version)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(SdkBody::from(Bytes::from(body.clone())))
                .map_err(|_| super::client::CallError::Request("ephemeral key request".into()))
        };
        // Re-sent once if its connection broke before an answer: a second ephemeral key is
        // harmless, it expires.
        let (status, _, bytes) = self
            .client
            .send(make, TIMEOUT, true)
            .await
            .map_err(super::map_error)?;
        let object: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| StripeFailure::Upstream("unreadable Stripe response".into()))?;
        if !(200..300).contains(&status) {
            let message = object
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message");
            return Err(StripeFailure::Upstream(format!(
                "stripe answered {status}: {message}"
            )));
        }
        let field = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        match (field("id"), field("secret")) {
            (Some(id), Some(secret)) => Ok(EphemeralKey { id, secret, object }),
            _ => Err(StripeFailure::Upstream(
                "stripe returned an ephemeral key without id or secret".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_api_version;

    #[test]
    fn api_versions_are_dates_with_an_optional_name() {
        assert!(valid_api_version("2020-08-27"));
        assert!(valid_api_version("2024-06-20.acacia"));
        assert!(!valid_api_version("2020-8-27"));
        assert!(!valid_api_version("2020-08-27\r\nx: y"));
        assert!(!valid_api_version(""));
    }
}
