//! The money and input defects a payments review found, each proven over the wire: refunds
//! under a dispute, partial disputes, failed refunds, exact spend replays, caller-scoped keys,
//! amounts parsed from their digits, forged cursors, hostile signature timestamps, the IAM
//! allowlist, payments needing attention and a rotated webhook secret.

use std::time::Duration;

use coffer_dev::token::issue_service;
use integration_tests::{now, spawn_app, TestApp, JWT_SECRET, SECRET_REFRESH_SECS};
use serde_json::{json, Value};

use crate::lifecycle::{charge, coffer_dev_command, dispute_of, paid_by_card};

#[tokio::test]
async fn a_refund_that_lands_while_a_dispute_holds_the_funds_is_clawed_back() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "ada", "standard", 16.5).await; // 15.00 paid, 16.50 credits
    let dispute = dispute_of(&pi, 1500);
    let withdrawn = app
        .deliver_event("charge.dispute.funds_withdrawn", &dispute)
        .await;
    assert_eq!(withdrawn.status, 200);
    assert_eq!(app.balance("ada").await, 0.0);

    // A third refunded while the dispute holds everything, then the dispute is won.
    let refunded = charge(&app, &pi, 500).await;
    assert_eq!(
        app.deliver_event("charge.refunded", &refunded).await.status,
        200
    );
    let reinstated = app
        .deliver_event("charge.dispute.funds_reinstated", &dispute)
        .await;
    assert_eq!(reinstated.status, 200);

    assert_eq!(
        app.balance("ada").await,
        11.0,
        "16.50 less the refunded third"
    );
    assert_eq!(
        app.history_status("ada", &pi).await.as_deref(),
        Some("partially_refunded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_dispute_for_part_of_a_charge_takes_only_that_share() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "bea", "pro", 60.0).await; // 50.00 paid, 60.00 credits
    let dispute = dispute_of(&pi, 1250); // a quarter of the charge
    for _ in 0..2 {
        let reply = app
            .deliver_event("charge.dispute.funds_withdrawn", &dispute)
            .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(app.balance("bea").await, 45.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_failed_refund_gives_the_clawed_credits_back_once() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "cy", "starter", 5.0).await;
    let t = now();
    let refunded = app.event_at("charge.refunded", &charge(&app, &pi, 200).await, t - 10);
    assert_eq!(app.deliver_signed(&refunded).await.status, 200);
    assert_eq!(app.balance("cy").await, 3.0);

    let refund = json!({"id": "re_failed_1", "object": "refund", "amount": 200, "currency": "usd",
                        "payment_intent": pi, "status": "failed", "failure_reason": "expired_or_canceled_card"});
    let failed = app.event_at("charge.refund.updated", &refund, t);
    for _ in 0..2 {
        assert_eq!(app.deliver_signed(&failed).await.status, 200);
    }
    // The charge.refunded from before the failure, delivered again, takes nothing more.
    assert_eq!(app.deliver_signed(&refunded).await.status, 200);
    assert_eq!(app.balance("cy").await, 5.0);
    assert_eq!(
        app.history_status("cy", &pi).await.as_deref(),
        Some("succeeded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_replayed_spend_returns_exactly_its_first_balance_and_entry() {
    let app = spawn_app().await;
    app.bought("dee", "starter").await; // 5.00
    let first = app.spend("dee", json!(2), "job-1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(app.spend("dee", json!(1), "job-2").await.status, 200);

    let replay = app.spend("dee", json!(2), "job-1").await;
    assert_eq!(replay.status, 200);
    assert_eq!(
        replay.body["data"], first.body["data"],
        "the first result, exactly"
    );
    assert_eq!(replay.body["data"]["balance"], json!(3.0));
    assert_eq!(app.balance("dee").await, 2.0);
}

#[tokio::test]
async fn the_same_spend_key_with_another_reason_is_a_conflict() {
    let app = spawn_app().await;
    app.bought("eve", "starter").await;
    assert_eq!(app.spend("eve", json!(1), "job-1").await.status, 200);
    let body = json!({"amount": 1, "reason": "something else", "idempotencyKey": "job-1"});
    let reply = app
        .post("/api/credits/consume", Some("eve"), &body.to_string(), &[])
        .await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["code"], "conflict");
    assert_eq!(app.balance("eve").await, 4.0);
}

async fn internal_spend(app: &TestApp, service: &str, body: &Value) -> (u16, Value) {
    let token = issue_service(JWT_SECRET, service, 60).expect("service token");
    let reply = app
        .http
        .post(format!("{}/internal/credits/consume", app.base_url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("internal spend");
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_backend_and_the_users_frontend_keys_never_collide() {
    let app = spawn_app().await;
    app.bought("fay", "starter").await;
    assert_eq!(app.spend("fay", json!(1), "order-1").await.status, 200);
    let body =
        json!({"userId": "fay", "amount": 1, "reason": "test spend", "idempotencyKey": "order-1"});
    let (status, reply) = internal_spend(&app, "app-backend", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(app.balance("fay").await, 3.0, "two spends, not one replay");
}

#[tokio::test]
async fn an_iam_principal_that_is_not_on_the_allowlist_gets_403_and_spends_nothing() {
    let app = spawn_app().await;
    app.bought("gus", "starter").await;
    let body = json!({"userId": "gus", "amount": 1, "reason": "r", "idempotencyKey": "k"});
    let (status, reply) = internal_spend(&app, "intruder", &body).await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["code"], "forbidden");
    assert_eq!(app.balance("gus").await, 5.0);
}

#[tokio::test]
async fn amounts_finer_than_a_cent_are_refused_even_when_a_float_would_round_them() {
    let app = spawn_app().await;
    app.bought("hal", "starter").await;
    for literal in [
        "1.0000000000000000001",
        "9.999999999999999999",
        "0.005",
        "1e-3",
    ] {
        let body =
            format!(r#"{{"amount": {literal}, "reason": "r", "idempotencyKey": "k-{literal}"}}"#);
        let reply = app
            .post("/api/credits/consume", Some("hal"), &body, &[])
            .await;
        assert_eq!(reply.status, 400, "{literal}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request");
    }
    let body = r#"{"amount": 1.50000000000000000000, "reason": "r", "idempotencyKey": "k-ok"}"#;
    let reply = app
        .post("/api/credits/consume", Some("hal"), body, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.balance("hal").await, 3.5);
}

#[tokio::test]
async fn a_well_formed_cursor_with_forged_keys_is_400_not_500() {
    use base64::Engine;
    let app = spawn_app().await;
    let encode =
        |fields: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fields.to_string());
    for fields in [
        json!(["", "", "", ""]),
        json!(["PAY#pi_1", "PAY", "USER#ivy#PAY", ""]),
        json!(["x", "000000000000001", "x".repeat(1500), "g"]),
        json!(["x", "000000000000001", "pi_1", "p"]),
    ] {
        let path = format!(
            "/api/stripe/payment-history?cursor={}",
            encode(fields.clone())
        );
        let reply = app.get(&path, Some("ivy")).await;
        assert_eq!(reply.status, 400, "{fields}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request");
    }
}

#[tokio::test]
async fn a_signature_timestamp_at_the_edges_of_i64_is_400() {
    let app = spawn_app().await;
    let event = r#"{"id":"evt_t","type":"customer.created","data":{"object":{}}}"#;
    for t in [i64::MIN, i64::MAX, -1] {
        let header = format!(
            "t={t},v1={}",
            coffer::webhook::signature_hex(event.as_bytes(), &app.webhook_secret, t)
        );
        let reply = app.deliver(event, Some(&header)).await;
        assert_eq!(reply.status, 400, "t={t}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_signature");
    }
}

#[tokio::test]
async fn a_payment_that_cannot_be_credited_is_flagged_and_its_later_events_are_not_retried() {
    let app = spawn_app().await;
    let pi = app.create_intent("ivo", "starter").await;
    let mut intent = app.stripe_intent(&pi).await;
    intent["currency"] = json!("eur");
    assert_eq!(
        app.deliver_event("payment_intent.succeeded", &intent)
            .await
            .status,
        200
    );
    assert_eq!(app.balance("ivo").await, 0.0);

    let flagged = app
        .app
        .app
        .store
        .payments_needing_attention()
        .await
        .unwrap();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0].intent_id, pi);
    assert_eq!(flagged[0].reason, "currency_mismatch");
    assert!(coffer_dev_command(&app, &["attention"]).await.success());

    // Its refund and dispute events are acknowledged (200), not answered 503 for days.
    let mut refunded = app.stripe_intent(&pi).await;
    refunded["payment_intent"] = json!(pi);
    refunded["amount_refunded"] = json!(500);
    refunded["id"] = json!(format!("ch_{pi}"));
    assert_eq!(
        app.deliver_event("charge.refunded", &refunded).await.status,
        200
    );
    let dispute = dispute_of(&pi, 500);
    assert_eq!(
        app.deliver_event("charge.dispute.funds_withdrawn", &dispute)
            .await
            .status,
        200
    );
    assert_eq!(app.balance("ivo").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_rotated_webhook_secret_is_picked_up_by_a_warm_function() {
    let app = spawn_app().await;
    let pi = app.create_intent("jan", "starter").await;
    let intent = app.stripe_intent(&pi).await;
    // Warm: the current secret is cached.
    assert_eq!(
        app.deliver_event("payment_intent.canceled", &intent)
            .await
            .status,
        200
    );

    let rotated = "whsec_rotated_for_this_test";
    let sdk = coffer::app::load_sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    coffer_dev::setup::store_secret(
        &client,
        &app.secret_id,
        integration_tests::STRIPE_KEY,
        rotated,
    )
    .await
    .expect("rotate the secret");
    tokio::time::sleep(Duration::from_secs(SECRET_REFRESH_SECS + 1)).await;

    let event = app.event("payment_intent.succeeded", &intent);
    let signed = coffer::webhook::sign(event.as_bytes(), rotated, now());
    let reply = app.deliver(&event, Some(&signed)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.balance("jan").await, 5.0);
    // The old secret no longer verifies anything.
    let stale = app.event("payment_intent.succeeded", &intent);
    assert_eq!(app.deliver_signed(&stale).await.status, 400);
}
