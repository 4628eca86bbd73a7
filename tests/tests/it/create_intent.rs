//! create-payment-intent's refusals and idempotency, over the wire.

use integration_tests::{spawn_app, spawn_app_with, SecretSetup};
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_the_envelope_and_the_right_status() {
    let app = spawn_app().await;
    let cases: [(&str, u16, &str); 7] = [
        (r#"{"creditPackageId":"nope"}"#, 404, "not_found"),
        (r#"{"creditPackageId":"legacy"}"#, 404, "not_found"),
        (r#"{"creditPackageId":42}"#, 400, "invalid_request"),
        (r#"{"creditPackageId":"../x"}"#, 400, "invalid_request"),
        (r#"{}"#, 400, "invalid_request"),
        (r#"{"creditPackageId":"#, 400, "invalid_request"),
        (
            r#"{"creditPackageId":"starter","paymentMethodId":"card; drop"}"#,
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let reply = app
            .post("/api/stripe/create-payment-intent", Some("gina"), body, &[])
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.body["success"], false, "{body}");
        assert_eq!(reply.body["code"], code, "{body}");
        assert!(reply.body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let anonymous = app
        .post(
            "/api/stripe/create-payment-intent",
            None,
            r#"{"creditPackageId":"starter"}"#,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let forged = app
        .http
        .post(format!("{}/api/stripe/create-payment-intent", app.base_url))
        .bearer_auth(coffer_dev::token::issue("not-the-secret", "gina", 60).unwrap())
        .body(r#"{"creditPackageId":"starter"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_intent_and_conflicts_on_another_package() {
    let app = spawn_app().await;
    let body = json!({"creditPackageId": "starter"}).to_string();
    let key = [("Idempotency-Key", "order-17")];
    let first = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("hank"),
            &body,
            &key,
        )
        .await;
    let again = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("hank"),
            &body,
            &key,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(first.body["data"], again.body["data"]);

    // Another user with the same key gets their own intent.
    let other = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("ivy"),
            &body,
            &key,
        )
        .await;
    assert_eq!(other.status, 200);
    assert_ne!(
        other.body["data"]["paymentIntentId"],
        first.body["data"]["paymentIntentId"]
    );

    let other_package = json!({"creditPackageId": "pro"}).to_string();
    let conflict = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("hank"),
            &other_package,
            &key,
        )
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["code"], "conflict");

    let history = app.get("/api/stripe/payment-history", Some("hank")).await;
    assert_eq!(history.body["data"].as_array().unwrap().len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_missing_secret_is_a_503_envelope_not_a_crash() {
    let app = spawn_app_with(SecretSetup {
        missing: true,
        ..Default::default()
    })
    .await;
    let reply = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("jack"),
            r#"{"creditPackageId":"starter"}"#,
            &[],
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["code"], "service_unavailable");
    let webhook = app.deliver(r#"{"id":"evt_1"}"#, Some("t=1,v1=00")).await;
    assert_eq!(webhook.status, 503);
    assert_eq!(webhook.body["success"], false);
    // Routes that need no secret keep working.
    assert_eq!(
        app.get("/api/stripe/balance", Some("jack")).await.status,
        200
    );
    app.assert_invariants().await;
}
