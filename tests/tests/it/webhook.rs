//! The webhook over the wire: signatures, duplicates, concurrency and mismatches.

use integration_tests::{now, spawn_app, spawn_app_with, SecretSetup};

#[tokio::test]
async fn twenty_concurrent_deliveries_and_a_second_event_id_credit_exactly_once() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("kim", "pro").await;
    let intent = app.stripe_intent(&intent_id).await;
    let event = app.event("payment_intent.succeeded", &intent);
    let signature = app.sign(&event);

    let statuses = app.deliver_concurrently(&event, &signature, 20).await;
    assert_eq!(statuses, vec![200; 20]);
    let second = app.event("payment_intent.succeeded", &intent);
    assert_eq!(
        app.deliver(&second, Some(&app.sign(&second))).await.status,
        200
    );

    assert_eq!(app.balance("kim").await, 60.0);
    assert_eq!(
        app.history_status("kim", &intent_id).await.as_deref(),
        Some("succeeded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_late_payment_failed_never_undoes_a_credited_payment() {
    let app = spawn_app().await;
    let intent_id = app.bought("kim", "pro").await;
    let intent = app.stripe_intent(&intent_id).await;
    let late = app.event("payment_intent.payment_failed", &intent);
    assert_eq!(app.deliver(&late, Some(&app.sign(&late))).await.status, 200);
    assert_eq!(
        app.history_status("kim", &intent_id).await.as_deref(),
        Some("succeeded")
    );
    assert_eq!(app.balance("kim").await, 60.0);
}

#[tokio::test]
async fn bad_signatures_are_400_and_write_nothing() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("lee", "starter").await;
    let intent = app.stripe_intent(&intent_id).await;
    let event = app.event("payment_intent.succeeded", &intent);
    let t = now();
    let sig = |secret: &str, ts: i64| coffer::webhook::signature_hex(event.as_bytes(), secret, ts);
    let tampered = event.replace("\"amount\":500", "\"amount\":50000");
    assert_ne!(tampered, event);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, &event),
        (
            "forged",
            Some(format!("t={t},v1={}", sig("whsec_forged", t))),
            &event,
        ),
        (
            "stale",
            Some(format!(
                "t={},v1={}",
                t - 301,
                sig(&app.webhook_secret, t - 301)
            )),
            &event,
        ),
        (
            "future",
            Some(format!(
                "t={},v1={}",
                t + 301,
                sig(&app.webhook_secret, t + 301)
            )),
            &event,
        ),
        ("tampered", Some(app.sign(&event)), &tampered),
        (
            "empty secret",
            Some(format!("t={t},v1={}", sig("", t))),
            &event,
        ),
        ("malformed", Some("v1=zz,t=yesterday".to_owned()), &event),
    ];
    for (name, header, body) in cases {
        let reply = app.deliver(body, header.as_deref()).await;
        assert_eq!(reply.status, 400, "{name}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_signature", "{name}");
    }
    assert_eq!(app.balance("lee").await, 0.0);
    assert_eq!(
        app.history_status("lee", &intent_id).await.as_deref(),
        Some("pending")
    );

    // An old and a current v1 (secret rotation): accepted.
    let both = format!(
        "t={t},v1={},v1={}",
        sig("whsec_old_rotated", t),
        sig(&app.webhook_secret, t)
    );
    assert_eq!(app.deliver(&event, Some(&both)).await.status, 200);
    assert_eq!(app.balance("lee").await, 5.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_empty_webhook_secret_is_a_configuration_error_not_accept_all() {
    let app = spawn_app_with(SecretSetup {
        empty_webhook_secret: true,
        ..Default::default()
    })
    .await;
    let body = r#"{"id":"evt_x","type":"payment_intent.succeeded","data":{"object":{}}}"#;
    let signed_with_empty = coffer::webhook::sign(body.as_bytes(), "", now());
    let reply = app.deliver(body, Some(&signed_with_empty)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["code"], "service_unavailable");
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_event_that_does_not_match_the_recorded_payment_credits_nothing() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("max", "starter").await;
    let mut intent = app.stripe_intent(&intent_id).await;
    intent["metadata"]["coffer_credits"] = "999999".into();
    let event = app.event("payment_intent.succeeded", &intent);
    assert_eq!(
        app.deliver(&event, Some(&app.sign(&event))).await.status,
        200
    );

    let mut cheaper = app.stripe_intent(&intent_id).await;
    cheaper["amount"] = 1.into();
    let event = app.event("payment_intent.succeeded", &cheaper);
    assert_eq!(
        app.deliver(&event, Some(&app.sign(&event))).await.status,
        200
    );

    let mut other_user = app.stripe_intent(&intent_id).await;
    other_user["metadata"]["coffer_user_id"] = "mallory".into();
    let event = app.event("payment_intent.succeeded", &other_user);
    assert_eq!(
        app.deliver(&event, Some(&app.sign(&event))).await.status,
        200
    );

    assert_eq!(app.balance("max").await, 0.0);
    assert_eq!(app.balance("mallory").await, 0.0);
    assert_eq!(
        app.history_status("max", &intent_id).await.as_deref(),
        Some("pending")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn unhandled_types_and_events_for_unknown_intents_are_acknowledged_and_change_nothing() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("max", "starter").await;
    let unhandled = r#"{"id":"evt_u","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    assert_eq!(
        app.deliver(unhandled, Some(&app.sign(unhandled)))
            .await
            .status,
        200
    );
    let mut unknown = app.stripe_intent(&intent_id).await;
    unknown["id"] = "pi_unknown".into();
    let event = app.event("payment_intent.succeeded", &unknown);
    assert_eq!(
        app.deliver(&event, Some(&app.sign(&event))).await.status,
        200
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn canceled_intents_are_marked_and_move_no_credits() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("nia", "starter").await;
    let intent = app.stripe_intent(&intent_id).await;
    let event = app.event("payment_intent.canceled", &intent);
    assert_eq!(
        app.deliver(&event, Some(&app.sign(&event))).await.status,
        200
    );
    assert_eq!(
        app.history_status("nia", &intent_id).await.as_deref(),
        Some("canceled")
    );
    assert_eq!(app.balance("nia").await, 0.0);
    app.assert_invariants().await;
}
