//! The Stripe keys, from one Secrets Manager secret holding JSON
//! `{"stripeSecretKey": "sk_…", "webhookSecret": "whsec_…"}`. Read on first use in a cold start and
//! cached for the life of the process; a failed read is not cached, so the next request retries.
//! Values are `SecretString`s: they cannot be printed by accident.

use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::http::ApiError;

/// The two Stripe secrets. Either may be absent; the function that needs one refuses to work
/// without it (503), never falls back to something weaker.
pub struct StripeSecrets {
    secret_key: Option<SecretString>,
    webhook_secret: Option<SecretString>,
}

impl StripeSecrets {
    pub fn new(secret_key: Option<String>, webhook_secret: Option<String>) -> Self {
        let keep = |value: Option<String>| {
            value
                .filter(|v| !v.trim().is_empty())
                .map(SecretString::from)
        };
        Self {
            secret_key: keep(secret_key),
            webhook_secret: keep(webhook_secret),
        }
    }

    /// Parses the secret's JSON text.
    pub fn from_json(text: &str) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            stripe_secret_key: Option<String>,
            webhook_secret: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|_| {
            ApiError::Unavailable("the Stripe secret is not the expected JSON object".into())
        })?;
        Ok(Self::new(raw.stripe_secret_key, raw.webhook_secret))
    }

    pub fn stripe_secret_key(&self) -> Result<&str, ApiError> {
        self.secret_key
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| ApiError::Unavailable("stripeSecretKey is missing or empty".into()))
    }

    pub fn webhook_secret(&self) -> Result<&str, ApiError> {
        self.webhook_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| ApiError::Unavailable("webhookSecret is missing or empty".into()))
    }
}

/// Fetches the secret at most once per process (successfully).
pub struct SecretsCache {
    client: Client,
    secret_id: Option<String>,
    cell: OnceCell<Arc<StripeSecrets>>,
}

impl SecretsCache {
    pub fn new(client: Client, secret_id: Option<String>) -> Self {
        Self {
            client,
            secret_id,
            cell: OnceCell::new(),
        }
    }

    /// The cached secrets, reading them now if this is the first successful call.
    pub async fn get(&self) -> Result<Arc<StripeSecrets>, ApiError> {
        self.cell
            .get_or_try_init(|| async {
                let id = self.secret_id.as_deref().ok_or_else(|| {
                    ApiError::Unavailable("STRIPE_SECRET_ID is not configured".into())
                })?;
                let output = self
                    .client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|err| {
                        ApiError::Unavailable(format!(
                            "reading the Stripe secret failed: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&err)
                        ))
                    })?;
                let text = output.secret_string().ok_or_else(|| {
                    ApiError::Unavailable("the Stripe secret has no string value".into())
                })?;
                StripeSecrets::from_json(text).map(Arc::new)
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_missing() {
        let secrets =
            StripeSecrets::from_json(r#"{"stripeSecretKey":"k","webhookSecret":"  "}"#).unwrap();
        assert_eq!(secrets.stripe_secret_key().unwrap(), "k");
        assert_eq!(secrets.webhook_secret().unwrap_err().status(), 503);
    }

    #[test]
    fn malformed_secret_text_is_503_and_does_not_echo_the_value() {
        let err = StripeSecrets::from_json("sk_test_notjson").err().unwrap();
        assert_eq!(err.status(), 503);
        assert!(!format!("{err:?}").contains("sk_test_notjson"));
    }
}
