//! Faults injected with TCP proxies between the functions and DynamoDB Local, moto and
//! localstripe: what answers, what is (not) written, and recovery.

use integration_tests::proxy::Mode;
use integration_tests::{spawn_app_with, Reply, SecretSetup, TestApp};
use serde_json::json;

async fn proxied() -> TestApp {
    spawn_app_with(SecretSetup {
        proxied: true,
        ..Default::default()
    })
    .await
}

/// A 5xx envelope that says nothing about internals.
fn assert_opaque_5xx(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["success"], false);
    let text = reply.body.to_string().to_lowercase();
    for internal in [
        "dynamodb",
        "dispatch",
        "timeout",
        "connect",
        "127.0.0.1",
        "sdk",
        "secret",
    ] {
        assert!(
            !text.contains(internal),
            "internal detail {internal:?} in {text}"
        );
    }
}

#[tokio::test]
async fn while_dynamodb_is_cut_the_webhook_answers_5xx_and_after_recovery_credits_once() {
    let app = proxied().await;
    let proxies = app.proxies.as_ref().unwrap();
    let intent_id = app.create_intent("yara", "standard").await;
    let intent = app.stripe_intent(&intent_id).await;
    let event = app.event("payment_intent.succeeded", &intent);
    let signature = app.sign(&event);
    // Warm the secret cache first, so that only DynamoDB is at fault below.
    assert_eq!(
        app.deliver(
            r#"{"id":"evt_warm","type":"ping","data":{"object":{}}}"#,
            Some(&app.sign(r#"{"id":"evt_warm","type":"ping","data":{"object":{}}}"#))
        )
        .await
        .status,
        200
    );

    proxies.dynamodb.set(Mode::Refuse);
    assert_opaque_5xx(&app.deliver(&event, Some(&signature)).await, 503);
    proxies.dynamodb.set(Mode::Stall);
    assert_opaque_5xx(&app.deliver(&event, Some(&signature)).await, 503);
    let balance_while_cut = app.get("/api/stripe/balance", Some("yara")).await;
    assert_opaque_5xx(&balance_while_cut, 503);

    proxies.dynamodb.set(Mode::Pass);
    // Nothing half-written: still pending, no credits, invariants hold.
    assert_eq!(
        app.history_status("yara", &intent_id).await.as_deref(),
        Some("pending")
    );
    assert_eq!(app.balance("yara").await, 0.0);
    app.assert_invariants().await;

    // Stripe redelivers: credited exactly once, however often it arrives.
    for _ in 0..3 {
        assert_eq!(app.deliver(&event, Some(&signature)).await.status, 200);
    }
    assert_eq!(app.balance("yara").await, 16.5);
    app.assert_invariants().await;
}

#[tokio::test]
async fn while_stripe_is_down_create_payment_intent_is_502_and_records_nothing() {
    let app = proxied().await;
    let proxies = app.proxies.as_ref().unwrap();
    let body = json!({"creditPackageId": "starter"}).to_string();
    for mode in [Mode::Refuse, Mode::Stall] {
        proxies.stripe.set(mode);
        let reply = app
            .post("/api/stripe/create-payment-intent", Some("zed"), &body, &[])
            .await;
        assert_opaque_5xx(&reply, 502);
        assert_eq!(reply.body["code"], "stripe_error");
    }
    let history = app.get("/api/stripe/payment-history", Some("zed")).await;
    assert_eq!(
        history.body["data"],
        json!([]),
        "no payment may claim to be pending"
    );

    proxies.stripe.set(Mode::Pass);
    let reply = app
        .post("/api/stripe/create-payment-intent", Some("zed"), &body, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn secrets_manager_down_at_cold_start_is_503_and_the_next_request_recovers() {
    let app = proxied().await;
    let proxies = app.proxies.as_ref().unwrap();
    proxies.secrets.set(Mode::Refuse);
    let body = json!({"creditPackageId": "starter"}).to_string();
    let reply = app
        .post("/api/stripe/create-payment-intent", Some("ann"), &body, &[])
        .await;
    assert_opaque_5xx(&reply, 503);
    let ping = r#"{"id":"evt_p","type":"ping","data":{"object":{}}}"#;
    assert_opaque_5xx(&app.deliver(ping, Some(&app.sign(ping))).await, 503);

    proxies.secrets.set(Mode::Pass);
    let reply = app
        .post("/api/stripe/create-payment-intent", Some("ann"), &body, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.deliver(ping, Some(&app.sign(ping))).await.status, 200);

    // Read once per cold start: with the secret cached, Secrets Manager going away is harmless.
    proxies.secrets.set(Mode::Refuse);
    let reply = app
        .post("/api/stripe/create-payment-intent", Some("ann"), &body, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_purchase_whose_stripe_answer_was_lost_is_retried_with_its_key_and_makes_one_intent() {
    // Unique: localstripe keeps the intents of earlier runs.
    let user = format!("lou-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let user = user.as_str();
    let app = proxied().await;
    let proxies = app.proxies.as_ref().expect("proxied");
    let body = json!({"creditPackageId": "starter"}).to_string();
    let key = [("Idempotency-Key", "lost-answer-1")];
    // Stripe makes the intent; its answer never comes back. The function gives up within its
    // Stripe budget (every retry carries the same idempotency key) and says so.
    proxies.stripe.set(Mode::LoseAnswers);
    let started = std::time::Instant::now();
    let lost = app
        .post("/api/stripe/create-payment-intent", Some(user), &body, &key)
        .await;
    let took = started.elapsed();
    assert_opaque_5xx(&lost, 502);
    assert!(
        took < coffer::adapters::stripe::STRIPE_CALL_BUDGET + std::time::Duration::from_secs(3),
        "the call stopped within its budget: {took:?}"
    );

    // The client tries again with the same key: Stripe answers with the intent it made.
    proxies.stripe.set(Mode::Pass);
    let retried = app
        .post("/api/stripe/create-payment-intent", Some(user), &body, &key)
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let intent = retried.body["data"]["paymentIntentId"]
        .as_str()
        .expect("an intent")
        .to_owned();
    let again = app
        .post("/api/stripe/create-payment-intent", Some(user), &body, &key)
        .await;
    assert_eq!(again.body["data"]["paymentIntentId"], intent.as_str());
    // Stripe was asked to create it several times, all with one key: one intent exists.
    let mut made_for_lou = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/payment_intents?limit=100", app.stripe_base);
        if let Some(id) = &after {
            url.push_str(&format!("&starting_after={id}"));
        }
        let page: serde_json::Value = app
            .http
            .get(url)
            .bearer_auth(&app.stripe_key)
            .send()
            .await
            .expect("localstripe")
            .json()
            .await
            .expect("json");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        made_for_lou += data
            .iter()
            .filter(|i| i["metadata"][coffer::adapters::stripe::META_USER] == user)
            .count();
        after = data
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        if page["has_more"] != true || after.is_none() {
            break;
        }
    }
    assert_eq!(made_for_lou, 1, "one intent for the purchase");
    assert_eq!(
        app.pay_with_card(&intent, "4242424242424242").await.status,
        200
    );
    app.assert_invariants().await;
}
