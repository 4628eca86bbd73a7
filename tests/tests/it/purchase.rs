//! The purchase path over the wire: create-payment-intent → localstripe confirms → its own signed
//! webhook reaches the function → balance and history.

use integration_tests::{settle, spawn_app};
use serde_json::json;

#[tokio::test]
async fn full_purchase_credits_the_package_once_and_shows_in_history() {
    let app = spawn_app().await;
    // A client-chosen amount is refused with a clear 400: the price comes from the server.
    let priced = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("alice"),
            &json!({"creditPackageId": "standard", "amount": 1}).to_string(),
            &[],
        )
        .await;
    assert_eq!(priced.status, 400, "{}", priced.body);
    assert_eq!(priced.body["code"], "invalid_request");
    let reply = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("alice"),
            &json!({"creditPackageId": "standard"}).to_string(),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    let intent_id = reply.body["data"]["paymentIntentId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reply.body["data"]["clientSecret"]
        .as_str()
        .unwrap()
        .starts_with(&intent_id));
    let at_stripe = app.stripe_intent(&intent_id).await;
    assert_eq!(at_stripe["amount"], 1500);
    assert_eq!(at_stripe["currency"], "usd");
    assert_eq!(at_stripe["metadata"]["coffer_user_id"], "alice");
    assert_eq!(at_stripe["metadata"]["coffer_package_id"], "standard");
    assert_eq!(at_stripe["metadata"]["coffer_credits"], "1650");
    assert_eq!(
        app.history_status("alice", &intent_id).await.as_deref(),
        Some("pending")
    );

    let confirm = app.pay_with_card(&intent_id, "4242424242424242").await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);

    let credited = settle(
        || async {
            let balance = app.balance("alice").await;
            (balance > 0.0).then_some(balance)
        },
        app.redeliver_intent_event("payment_intent.succeeded", &intent_id),
    )
    .await;
    assert_eq!(
        credited,
        Some(16.5),
        "localstripe's webhook should credit 16.50"
    );
    let history = app.get("/api/stripe/payment-history", Some("alice")).await;
    assert_eq!(history.status, 200);
    let entry = &history.body["data"][0];
    assert_eq!(entry["id"], intent_id.as_str());
    assert_eq!(entry["status"], "succeeded");
    assert_eq!(entry["amount"], json!(15.0));
    assert_eq!(entry["creditAmount"], json!(16.5));
    assert_eq!(entry["description"], "Standard");
    assert!(entry["createdAt"].as_str().unwrap().ends_with('Z'));
    let balance = app.get("/api/stripe/balance", Some("alice")).await;
    assert_eq!(
        balance.body["data"],
        json!({"balance": 16.5, "currency": "usd", "held": 0.0,
               "buckets": [{"amount": 16.5, "kind": "paid", "priority": 0}]})
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn declined_card_marks_the_payment_failed_and_credits_nothing() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("bob", "starter").await;
    // localstripe declines 4000000000000341 at charge time (Stripe's 0002 needs a customer there).
    let confirm = app.pay_with_card(&intent_id, "4000000000000341").await;
    assert_eq!(confirm.status, 402, "{}", confirm.body);

    let status = settle(
        || async {
            let status = app.history_status("bob", &intent_id).await;
            (status.as_deref() == Some("failed")).then_some(())
        },
        app.redeliver_intent_event("payment_intent.payment_failed", &intent_id),
    )
    .await;
    assert!(
        status.is_some(),
        "payment_intent.payment_failed should mark the payment failed"
    );
    assert_eq!(app.balance("bob").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn users_never_see_each_others_balance_or_history() {
    let app = spawn_app().await;
    let intent_id = app.create_intent("carol", "starter").await;
    app.pay_with_card(&intent_id, "4242424242424242").await;
    let paid = settle(
        || async { (app.balance("carol").await == 5.0).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent_id),
    )
    .await;
    assert!(paid.is_some());

    assert_eq!(app.balance("dave").await, 0.0);
    let history = app.get("/api/stripe/payment-history", Some("dave")).await;
    assert_eq!(history.status, 200);
    assert_eq!(history.body["data"], json!([]));
    assert!(history.body.get("nextCursor").is_none());
    // Carol's cursor is refused for Dave (it is bound to its user).
    for _ in 0..2 {
        app.create_intent("carol", "starter").await;
    }
    let page = app
        .get("/api/stripe/payment-history?limit=1", Some("carol"))
        .await;
    let cursor = page.body["nextCursor"].as_str().unwrap().to_owned();
    let stolen = app
        .get(
            &format!("/api/stripe/payment-history?limit=1&cursor={cursor}"),
            Some("dave"),
        )
        .await;
    assert_eq!(stolen.status, 400);
    app.assert_invariants().await;
}

#[tokio::test]
async fn history_pages_newest_first_with_next_cursor() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for package in ["starter", "standard", "pro", "starter", "standard"] {
        created.push(app.create_intent("erin", package).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/stripe/payment-history?limit=2&cursor={c}"),
            None => "/api/stripe/payment-history?limit=2".to_owned(),
        };
        let page = app.get(&path, Some("erin")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        let items = page.body["data"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page.body.get("nextCursor").and_then(|c| c.as_str()) {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every payment once, newest first");

    for bad in ["limit=0", "limit=101", "limit=abc", "cursor=not-a-cursor"] {
        let reply = app
            .get(&format!("/api/stripe/payment-history?{bad}"), Some("erin"))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.body["success"], false);
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn packages_list_active_ones_cheapest_first() {
    let app = spawn_app().await;
    let reply = app.get("/api/stripe/credit-packages", Some("frank")).await;
    assert_eq!(reply.status, 200);
    let ids: Vec<_> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["starter", "standard", "pro"]);
    assert_eq!(
        reply.body["data"][1],
        json!({"id": "standard", "name": "Standard", "description": "15 USD, 10% bonus credits",
               "amount": 15.0, "creditAmount": 16.5, "currency": "usd", "isActive": true})
    );
    let anonymous = app.get("/api/stripe/credit-packages", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body["code"], "unauthorized");
    app.assert_invariants().await;
}
