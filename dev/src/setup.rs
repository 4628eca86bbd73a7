//! Local-stack setup, safe to run again: the table, the sample packages, the Stripe secret in
//! the Secrets Manager emulator, and the webhook registered with localstripe.

use coffer::adapters::store::Store;
use coffer::domain::money::Currency;
use coffer::domain::packages::CreditPackage;
use serde::Deserialize;

/// The sample packages (`dev/packages.json`).
pub fn sample_packages() -> Result<Vec<CreditPackage>, String> {
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        name: String,
        description: String,
        amount: i64,
        credits: i64,
        currency: String,
        active: bool,
    }
    let raw: Vec<Raw> = serde_json::from_str(include_str!("../packages.json"))
        .map_err(|e| format!("packages.json: {e}"))?;
    raw.into_iter()
        .map(|p| {
            Ok(CreditPackage {
                currency: Currency::parse(&p.currency)
                    .ok_or_else(|| format!("packages.json: bad currency {}", p.currency))?,
                id: p.id,
                name: p.name,
                description: p.description,
                amount: p.amount,
                credits: p.credits,
                active: p.active,
            })
        })
        .collect()
}

/// Creates the table if it is missing and writes the sample packages.
pub async fn table_and_packages(store: &Store) -> Result<(), String> {
    store
        .create_table()
        .await
        .map_err(|e| format!("create table: {e:?}"))?;
    for package in sample_packages()? {
        store
            .put_package(&package)
            .await
            .map_err(|e| format!("seed package {}: {e:?}", package.id))?;
    }
    Ok(())
}

/// Stores `{"stripeSecretKey", "webhookSecret"}` as the secret `name` (created or updated).
pub async fn store_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    stripe_secret_key: &str,
    webhook_secret: &str,
) -> Result<(), String> {
    let value = serde_json::json!({
        "stripeSecretKey": stripe_secret_key,
        "webhookSecret": webhook_secret,
    })
    .to_string();
    let created = client
        .create_secret()
        .name(name)
        .secret_string(&value)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            client
                .put_secret_value()
                .secret_id(name)
                .secret_string(&value)
                .send()
                .await
                .map(|_| ())
                .map_err(|_| format!("updating secret {name} failed"))
        }
        Err(_) => Err(format!("creating secret {name} failed")),
    }
}

/// Tells localstripe to deliver signed events for `id` to `url` (replacing an earlier one).
pub async fn register_webhook(
    stripe_api_base: &str,
    id: &str,
    url: &str,
    secret: &str,
) -> Result<(), String> {
    configure_webhook(stripe_api_base, id, url, secret, None).await
}

/// Stops localstripe from delivering to the webhook `id` (it has no way to remove one): it is
/// re-registered for an event type that never happens. Test apps do this when they end, so
/// that localstripe, which delivers every event to every endpoint in turn, is not slowed by the
/// endpoints of finished tests.
pub async fn mute_webhook(stripe_api_base: &str, id: &str) -> Result<(), String> {
    configure_webhook(
        stripe_api_base,
        id,
        "http://127.0.0.1:9/",
        "whsec_muted",
        Some("coffer.test.finished"),
    )
    .await
}

async fn configure_webhook(
    stripe_api_base: &str,
    id: &str,
    url: &str,
    secret: &str,
    only_event: Option<&str>,
) -> Result<(), String> {
    let endpoint = format!(
        "{}/_config/webhooks/{id}",
        stripe_api_base.trim_end_matches('/')
    );
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("url", url).append_pair("secret", secret);
    if let Some(event) = only_event {
        form.append_pair("events[0]", event);
    }
    let body = form.finish();
    let response = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("registering the webhook with localstripe: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "localstripe refused the webhook: {}",
            response.status()
        ))
    }
}
