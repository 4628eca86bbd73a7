//! The deployment's secret filled and rotated while the functions are warm: what a function
//! read once is read again when it holds no key, or a key Stripe refused, and the next request
//! uses the new value with no restart.

use std::time::Duration;

use integration_tests::{spawn_app_with, SecretSetup, TestApp, SECRET_REFRESH_SECS, STRIPE_KEY};
use serde_json::json;

/// What an operator does: `aws secretsmanager put-secret-value` with the real values.
async fn fill_secret(app: &TestApp, stripe_key: &str) {
    let sdk = coffer::app::load_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    secrets
        .put_secret_value()
        .secret_id(&app.secret_id)
        .secret_string(
            json!({"stripeSecretKey": stripe_key, "webhookSecret": app.webhook_secret}).to_string(),
        )
        .send()
        .await
        .expect("fill the secret");
}

async fn purchase(app: &TestApp) -> u16 {
    app.post(
        "/api/stripe/create-payment-intent",
        Some("rhea"),
        &json!({ "creditPackageId": "standard" }).to_string(),
        &[],
    )
    .await
    .status
}

const PING: &str = r#"{"id":"evt_ping_secret","type":"ping","data":{"object":{}}}"#;

#[tokio::test]
async fn a_placeholder_secret_filled_after_it_was_read_is_used_without_a_restart() {
    let app = spawn_app_with(SecretSetup {
        placeholder: true,
        ..Default::default()
    })
    .await;
    // The placeholder a deploy creates is read and cached: no key, no signing secret yet.
    assert_eq!(purchase(&app).await, 503);
    assert_eq!(app.deliver(PING, Some(&app.sign(PING))).await.status, 503);

    fill_secret(&app, STRIPE_KEY).await;
    // Read again at most once per refresh interval, whatever the number of requests.
    tokio::time::sleep(Duration::from_secs(SECRET_REFRESH_SECS + 1)).await;
    assert_eq!(purchase(&app).await, 200, "the filled key is used");
    assert_eq!(
        app.deliver(PING, Some(&app.sign(PING))).await.status,
        200,
        "the filled signing secret is used"
    );
}

#[tokio::test]
async fn a_stripe_key_rotated_while_warm_is_read_again_once_stripe_refuses_the_old_one() {
    let app = spawn_app_with(SecretSetup {
        rolled_stripe_key: true,
        ..Default::default()
    })
    .await;
    // The cached key was rolled at Stripe: refused (a 5xx, so the client retries).
    let refused = purchase(&app).await;
    assert!(refused >= 500, "a refused key answers 5xx, got {refused}");

    fill_secret(&app, STRIPE_KEY).await;
    tokio::time::sleep(Duration::from_secs(SECRET_REFRESH_SECS + 1)).await;
    assert_eq!(purchase(&app).await, 200, "the rotated key is used");
}
