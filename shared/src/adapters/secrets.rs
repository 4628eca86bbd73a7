//! Stripe keys in Secrets Manager: the deployment's own secret (the default project) and one
//! secret per project and mode, each JSON
//! `{"stripeSecretKey": "sk_…", "publishableKey": "pk_…", "webhookSecret": "whsec_…"}`.
//! Read on first use and cached: the deployment's secret until a webhook signature does not
//! match it, a project's for at most a minute, so that an update takes effect within one. A
//! failed read is not cached. After a rotation, the webhook asks for a fresh copy
//! ([`SecretsCache::refresh`]), at most once per interval. Values are `SecretString`s: they cannot
//! be printed by accident. Only the configuration function writes project secrets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Why the secrets are not usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the Stripe secret is not configured")]
    NotConfigured,
    #[error("reading the Stripe secret failed: {0}")]
    Unreadable(String),
    #[error("writing the Stripe secret failed: {0}")]
    Unwritable(String),
    #[error("the Stripe secret is not the expected JSON object")]
    Malformed,
    #[error("{0} is missing or empty in the Stripe secret")]
    Missing(&'static str),
}

/// The Stripe secrets of one project and mode. Any may be absent; the function that needs one
/// refuses to work without it (503), never falls back to something weaker.
pub struct StripeSecrets {
    secret_key: Option<SecretString>,
    webhook_secret: Option<SecretString>,
    publishable_key: Option<String>,
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
            publishable_key: None,
        }
    }

    pub fn with_publishable_key(mut self, key: Option<String>) -> Self {
        self.publishable_key = key.filter(|k| !k.trim().is_empty());
        self
    }

    /// Parses the secret's JSON text.
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            stripe_secret_key: Option<String>,
            webhook_secret: Option<String>,
            publishable_key: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|_| SecretsError::Malformed)?;
        Ok(Self::new(raw.stripe_secret_key, raw.webhook_secret)
            .with_publishable_key(raw.publishable_key))
    }

    /// The JSON text stored in Secrets Manager.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "stripeSecretKey": self.secret_key.as_ref().map(|s| s.expose_secret()),
            "webhookSecret": self.webhook_secret.as_ref().map(|s| s.expose_secret()),
            "publishableKey": self.publishable_key,
        })
        .to_string()
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

    pub fn has_webhook_secret(&self) -> bool {
        self.webhook_secret.is_some()
    }

    pub fn publishable_key(&self) -> Option<&str> {
        self.publishable_key.as_deref()
    }
}

/// Secrets by id, read once and then served from memory for `ttl` (`None`: until refreshed).
pub struct SecretsCache {
    client: Client,
    ttl: Option<Duration>,
    cached: Mutex<HashMap<String, (Instant, Arc<StripeSecrets>)>>,
}

impl SecretsCache {
    pub fn new(client: Client, ttl: Option<Duration>) -> Self {
        Self {
            client,
            ttl,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// The cached secrets of `id`, reading them now if there is no fresh copy.
    pub async fn get(&self, id: &str) -> Result<Arc<StripeSecrets>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some((read_at, secrets)) = cached.get(id) {
            if self.ttl.is_none_or(|ttl| read_at.elapsed() < ttl) {
                return Ok(secrets.clone());
            }
        }
        let secrets = self.read(id).await?;
        cached.insert(id.to_owned(), (Instant::now(), secrets.clone()));
        Ok(secrets)
    }

    /// A fresh copy when the cached one is older than `min_age` (`None`: it is younger, so the
    /// secret was read moments ago and reading again would only cost a call). Bounds the reads
    /// that a flood of forged signatures can cause to one per `min_age`.
    pub async fn refresh(
        &self,
        id: &str,
        min_age: Duration,
    ) -> Result<Option<Arc<StripeSecrets>>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if cached
            .get(id)
            .is_some_and(|(read_at, _)| read_at.elapsed() < min_age)
        {
            return Ok(None);
        }
        let secrets = self.read(id).await?;
        cached.insert(id.to_owned(), (Instant::now(), secrets.clone()));
        Ok(Some(secrets))
    }

    /// Writes the secret `id` (creating it when it does not exist) and caches what was written.
    pub async fn write(&self, id: &str, secrets: StripeSecrets) -> Result<(), SecretsError> {
        let text = secrets.to_json();
        let put = self
            .client
            .put_secret_value()
            .secret_id(id)
            .secret_string(&text)
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                self.client
                    .create_secret()
                    .name(id)
                    .secret_string(&text)
                    .send()
                    .await
                    .map_err(|err| {
                        SecretsError::Unwritable(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
                        )
                    })?;
            }
            Err(err) => {
                return Err(SecretsError::Unwritable(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
                ))
            }
        }
        self.cached
            .lock()
            .await
            .insert(id.to_owned(), (Instant::now(), Arc::new(secrets)));
        Ok(())
    }

    async fn read(&self, id: &str) -> Result<Arc<StripeSecrets>, SecretsError> {
        let output = match self.client.get_secret_value().secret_id(id).send().await {
            Ok(output) => output,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Err(SecretsError::NotConfigured)
            }
            Err(err) => {
                return Err(SecretsError::Unreadable(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
                ))
            }
        };
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
    fn secrets_round_trip_through_their_json() {
        let secrets = StripeSecrets::new(Some("sk_test_x".into()), None)
            .with_publishable_key(Some("pk_test_y".into()));
        let back = StripeSecrets::from_json(&secrets.to_json()).unwrap();
        assert_eq!(back.stripe_secret_key().unwrap(), "sk_test_x");
        assert_eq!(back.publishable_key(), Some("pk_test_y"));
        assert!(!back.has_webhook_secret());
    }

    #[test]
    fn malformed_secret_text_is_503_and_does_not_echo_the_value() {
        let err = StripeSecrets::from_json("sk_test_notjson").err().unwrap();
        assert!(matches!(err, SecretsError::Malformed));
        assert!(!format!("{err:?}").contains("sk_test_notjson"));
    }
}
