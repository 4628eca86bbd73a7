//! Local-stack setup, safe to run again: the table, the sample packages, the Stripe secret in
//! the Secrets Manager emulator, and the webhook registered with localstripe.

use coffer::adapters::store::Store;
use coffer::domain::money::Currency;
use coffer::domain::packages::CreditPackage;
use coffer::domain::plans::{apply_plan_update, Plan, PlanUpdate};
use coffer::domain::projects::ProjectSettings;
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

/// A sample plan (`dev/plans.json`) and, for recurring ones, the monthly amount of the plan
/// seeded in localstripe under the same id as its price.
pub struct SamplePlan {
    pub plan: Plan,
    pub stripe_amount: Option<i64>,
}

pub fn sample_plans() -> Result<Vec<SamplePlan>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        id: String,
        #[serde(flatten)]
        update: serde_json::Map<String, serde_json::Value>,
        stripe_amount: Option<i64>,
    }
    let raw: Vec<Raw> = serde_json::from_str(include_str!("../plans.json"))
        .map_err(|e| format!("plans.json: {e}"))?;
    raw.into_iter()
        .map(|r| {
            let update: PlanUpdate = serde_json::from_value(serde_json::Value::Object(r.update))
                .map_err(|e| format!("plans.json {}: {e}", r.id))?;
            let plan = apply_plan_update(&r.id, None, update)
                .map_err(|e| format!("plans.json {}: {e}", r.id))?;
            Ok(SamplePlan {
                plan,
                stripe_amount: r.stripe_amount,
            })
        })
        .collect()
}

/// The redirect origins the local stack allows (the storefront and the README's examples).
pub const LOCAL_ORIGINS: &[&str] = &[
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "https://app.example.com",
];

/// Creates the table if it is missing and writes the sample packages, plans and settings.
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
    for sample in sample_plans()? {
        store
            .put_plan(&sample.plan)
            .await
            .map_err(|e| format!("seed plan {}: {e:?}", sample.plan.id))?;
    }
    let settings = ProjectSettings {
        allowed_origins: LOCAL_ORIGINS.iter().map(|o| (*o).to_owned()).collect(),
        // credits.low below 5.00 on the local stack.
        credits_low_threshold: Some(500),
        ..ProjectSettings::default()
    };
    store
        .put_settings(&settings)
        .await
        .map_err(|e| format!("seed settings: {e:?}"))
}

/// Creates the recurring sample plans in localstripe (a product and a monthly plan whose id is
/// the price id Coffer links). Plans that exist already are left as they are.
pub async fn stripe_plans(stripe_api_base: &str, secret_key: &str) -> Result<(), String> {
    let base = stripe_api_base.trim_end_matches('/');
    let http = reqwest::Client::new();
    for sample in sample_plans()? {
        let (Some(price), Some(amount)) = (&sample.plan.price_id, sample.stripe_amount) else {
            continue;
        };
        if plan_exists(&http, base, secret_key, price).await? {
            continue;
        }
        let product: serde_json::Value = http
            .post(format!("{base}/v1/products"))
            .bearer_auth(secret_key)
            .form(&[("name", sample.plan.name.as_str())])
            .send()
            .await
            .map_err(|e| format!("localstripe product: {e}"))?
            .json()
            .await
            .map_err(|e| format!("localstripe product: {e}"))?;
        let product_id = product["id"].as_str().unwrap_or_default().to_owned();
        let amount = amount.to_string();
        let response = http
            .post(format!("{base}/v1/plans"))
            .bearer_auth(secret_key)
            .form(&[
                ("id", price.as_str()),
                ("amount", amount.as_str()),
                ("currency", "usd"),
                ("interval", "month"),
                ("product", product_id.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("localstripe plan: {e}"))?;
        if !response.status().is_success() && response.status().as_u16() != 409 {
            // Another process may have created it meanwhile.
            if !plan_exists(&http, base, secret_key, price).await? {
                return Err(format!(
                    "localstripe refused plan {price}: {}",
                    response.status()
                ));
            }
        }
    }
    Ok(())
}

async fn plan_exists(
    http: &reqwest::Client,
    base: &str,
    secret_key: &str,
    id: &str,
) -> Result<bool, String> {
    Ok(http
        .get(format!("{base}/v1/plans/{id}"))
        .bearer_auth(secret_key)
        .send()
        .await
        .map_err(|e| format!("localstripe: {e}"))?
        .status()
        .is_success())
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

/// The billing-events bus and, for the local stack and tests, an SQS queue that a rule on the
/// bus fills with every Coffer event (as an app's subscription would). Safe to run again.
/// Returns the queue's URL.
pub async fn event_bus_and_queue(
    sdk: &aws_config::SdkConfig,
    bus: &str,
    queue: &str,
) -> Result<String, String> {
    use aws_sdk_eventbridge::error::ProvideErrorMetadata;
    let events = events_client(sdk);
    match events.create_event_bus().name(bus).send().await {
        Ok(_) => {}
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => {}
        Err(err) => {
            return Err(format!(
                "create the event bus: {}",
                aws_sdk_eventbridge::error::DisplayErrorContext(&err)
            ))
        }
    }
    let sqs = sqs_client(sdk);
    let queue_url = self::queue(&sqs, queue).await?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "read the queue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .ok_or("the queue has no ARN")?;
    let rule = format!("{bus}-to-queue");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(r#"{"source":["coffer"]}"#)
        .send()
        .await
        .map_err(|e| {
            format!(
                "put the rule: {}",
                aws_sdk_eventbridge::error::DisplayErrorContext(&e)
            )
        })?;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .map_err(|e| format!("the rule's target: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "put the target: {}",
                aws_sdk_eventbridge::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(queue_url)
}

/// The URL of the SQS queue named `name`, made when missing (safe to run again).
pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, String> {
    Ok(sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "create the queue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .queue_url()
        .ok_or("the queue has no URL")?
        .to_owned())
}

/// EventBridge on the local endpoint (moto) when one is set.
pub fn events_client(sdk: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
    let mut config = aws_sdk_eventbridge::config::Builder::from(sdk);
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_EVENTBRIDGE") {
        config = config.endpoint_url(url);
    }
    aws_sdk_eventbridge::Client::from_conf(config.build())
}

/// SQS on the local endpoint (moto) when one is set.
pub fn sqs_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let mut config = aws_sdk_sqs::config::Builder::from(sdk);
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_SQS") {
        config = config.endpoint_url(url);
    }
    aws_sdk_sqs::Client::from_conf(config.build())
}

/// Takes the billing events waiting in the queue (each message's `detail`), removing them.
pub async fn take_events(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait_secs: i32,
) -> Result<Vec<serde_json::Value>, String> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_secs)
        .send()
        .await
        .map_err(|e| format!("receive: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    let mut events = Vec::new();
    for message in output.messages() {
        if let Some(body) = message.body() {
            let event: serde_json::Value =
                serde_json::from_str(body).map_err(|e| format!("an event is not JSON: {e}"))?;
            events.push(event.get("detail").cloned().unwrap_or(event));
        }
        take_off(sqs, queue_url, message).await?;
    }
    Ok(events)
}

/// Deletes a received message from its queue (done with it).
pub async fn take_off(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &aws_sdk_sqs::types::Message,
) -> Result<(), String> {
    if let Some(handle) = message.receipt_handle() {
        sqs.delete_message()
            .queue_url(queue_url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| format!("delete: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    }
    Ok(())
}
