//! Tiers bought once with a PaymentIntent: the highest still paid for holds, and a refund or a
//! dispute takes it away.

use integration_tests::{settle, spawn_app, TestApp};
use serde_json::json;

use super::{my_subscription, post};

#[tokio::test]
async fn a_tier_is_bought_once_with_a_payment_intent_and_client_prices_are_refused() {
    let app = spawn_app().await;
    let priced = post(
        &app,
        "/api/stripe/create-payment-intent",
        "yuri",
        json!({"amount": 1, "currency": "usd"}),
    )
    .await;
    assert_eq!(priced.status, 400, "{}", priced.body);
    assert!(priced.body["error"]
        .as_str()
        .unwrap_or("")
        .contains("server"));
    let unknown = post(
        &app,
        "/api/stripe/create-payment-intent",
        "yuri",
        json!({"tier": "gold"}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let reply = post(
        &app,
        "/api/stripe/create-payment-intent",
        "yuri",
        json!({"tier": "pro"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = reply.body["data"]["paymentIntentId"]
        .as_str()
        .expect("pi")
        .to_owned();
    let stripe_intent = app.stripe_intent(&intent).await;
    assert_eq!(stripe_intent["amount"], 1000);
    let paid = app.pay_with_card(&intent, "4242424242424242").await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    let tier = settle(
        || async {
            let now = my_subscription(&app, "yuri").await;
            (now["planId"] == "pro").then_some(now)
        },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(tier.is_some(), "the tier was never granted");
    assert_eq!(
        app.balance("yuri").await,
        10.0,
        "the tier's included credits"
    );
    let again = post(
        &app,
        "/api/stripe/create-payment-intent",
        "yuri",
        json!({"tier": "pro"}),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let payments = app
        .get("/api/v1/payments/stripe/my-payments", Some("yuri"))
        .await;
    assert_eq!(
        payments.body["data"][0]["type"], "tier_purchase",
        "{}",
        payments.body
    );
}

/// Buys `tier` for `user` with a card and waits until Coffer shows it; the intent id.
async fn buy_tier(app: &TestApp, user: &str, tier: &str) -> String {
    let reply = post(
        app,
        "/api/stripe/create-payment-intent",
        user,
        json!({"tier": tier}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = reply.body["data"]["paymentIntentId"]
        .as_str()
        .expect("pi")
        .to_owned();
    assert_eq!(
        app.pay_with_card(&intent, "4242424242424242").await.status,
        200
    );
    let shown = settle(
        || async { (my_subscription(app, user).await["planId"] == tier).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(shown.is_some(), "{tier} was never granted");
    intent
}

#[tokio::test]
async fn the_highest_tier_still_paid_for_holds_in_any_order_and_a_refund_takes_it_away() {
    let app = spawn_app().await;
    let pro = buy_tier(&app, "tova", "pro").await;
    let enterprise = buy_tier(&app, "tova", "enterprise").await;
    let plan = || async { my_subscription(&app, "tova").await["planId"].clone() };
    // A late, repeated success of the older, lower tier changes nothing.
    app.redeliver_intent_event("payment_intent.succeeded", &pro)
        .await;
    assert_eq!(plan().await, "enterprise");
    // Enterprise refunded in full: back to pro, which is still paid for.
    let refunded = crate::lifecycle::charge(&app, &enterprise, 5000).await;
    let reply = app.deliver_event("charge.refunded", &refunded).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(plan().await, "pro");
    // Its success again, late: a refunded purchase holds no tier.
    app.redeliver_intent_event("payment_intent.succeeded", &enterprise)
        .await;
    assert_eq!(plan().await, "pro");
    // Pro's funds withdrawn by a dispute: free; the dispute won: pro again.
    let dispute = crate::lifecycle::dispute_of(&pro, 1000);
    for (kind, expected) in [
        ("charge.dispute.created", "pro"),
        ("charge.dispute.funds_withdrawn", "free"),
        ("charge.dispute.funds_reinstated", "pro"),
    ] {
        let reply = app.deliver_event(kind, &dispute).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
        assert_eq!(plan().await, expected, "after {kind}");
    }
    app.assert_invariants().await;
}
