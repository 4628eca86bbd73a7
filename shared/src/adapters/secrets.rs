//! The Stripe keys, from one Secrets Manager secret holding JSON
//! `{"stripeSecretKey": "sk_…", "webhookSecret": "whsec_…"}`. Read on first use in a cold start and
//! cached; a failed read is not cached, so the next request retries. After a rotation, the
//! webhook asks for a fresh copy when a signature does not match ([`SecretsCache::refresh`]),
//! at most once per interval. Values are `SecretString`s: they cannot be printed by accident.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Why the secrets are not usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("STRIPE_SECRET_ID is not configured")]
    NotConfigured,
    #[error("reading the Stripe secret failed: {0}")]
    Unreadable(String),
    #[error("the Stripe secret is not the expected JSON object")]
    Malformed,
    #[error("{0} is missing or empty in the Stripe secret")]
    Missing(&'static str),
}

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
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            stripe_secret_key: Option<String>,
            webhook_secret: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|_| SecretsError::Malformed)?;
        Ok(Self::new(raw.stripe_secret_key, raw.webhook_secret))
    }

    pub fn stripe_secret_key(&self) -> Result<&str, SecretsError> {
        self.secret_key
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or(SecretsError::Missing("stripeSecretKey"))
    }

    pub fn webhook_secret(&self) -> Result<&str, SecretsError> {
        self.webhook_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or(SecretsError::Missing("webhookSecret"))
    }
}

/// The secret, read once and then served from memory; re-read on request, rate-limited.
pub struct SecretsCache {
    client: Client,
    secret_id: Option<String>,
    cached: Mutex<Option<(Instant, Arc<StripeSecrets>)>>,
}

impl SecretsCache {
    pub fn new(client: Client, secret_id: Option<String>) -> Self {
        Self {
            client,
            secret_id,
            cached: Mutex::new(None),
        }
    }

    /// The cached secrets, reading them now if no read has succeeded yet.
    pub async fn get(&self) -> Result<Arc<StripeSecrets>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some((_, secrets)) = cached.as_ref() {
            return Ok(secrets.clone());
        }
        let secrets = self.read().await?;
        *cached = Some((Instant::now(), secrets.clone()));
        Ok(secrets)
    }

    /// A fresh copy when the cached one is older than `min_age` (`None`: it is younger, so the
    /// secret was read moments ago and reading again would only cost a call). Bounds the reads
    /// that a flood of forged signatures can cause to one per `min_age`.
    pub async fn refresh(
        &self,
        min_age: Duration,
    ) -> Result<Option<Arc<StripeSecrets>>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|(read_at, _)| read_at.elapsed() < min_age)
        {
            return Ok(None);
        }
        let secrets = self.read().await?;
        *cached = Some((Instant::now(), secrets.clone()));
        Ok(Some(secrets))
    }

    async fn read(&self) -> Result<Arc<StripeSecrets>, SecretsError> {
        let id = self
            .secret_id
            .as_deref()
            .ok_or(SecretsError::NotConfigured)?;
        let output = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|err| {
                SecretsError::Unreadable(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
                )
            })?;
        let text = output
            .secret_string()
            .ok_or(SecretsError::Missing("the secret string"))?;
        StripeSecrets::from_json(text).map(Arc::new)
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
        assert!(matches!(
            secrets.webhook_secret(),
            Err(SecretsError::Missing("webhookSecret"))
        ));
    }

    #[test]
    fn malformed_secret_text_is_503_and_does_not_echo_the_value() {
        let err = StripeSecrets::from_json("sk_test_notjson").err().unwrap();
        assert!(matches!(err, SecretsError::Malformed));
        assert!(!format!("{err:?}").contains("sk_test_notjson"));
    }
}
