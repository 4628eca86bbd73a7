//! Plans listed, and a subscription created: what Stripe being down leaves, and a create left
//! unpaid resumed for the same plan or replaced for another.

use integration_tests::{spawn_app, spawn_app_with, SecretSetup};
use serde_json::json;

use super::{customer_with_card, my_subscription, post, stripe_get, SUBSCRIPTION_CARD};

#[tokio::test]
async fn plans_are_listed_by_rank_with_their_limits() {
    let app = spawn_app().await;
    let reply = app.get("/api/stripe/plans", Some("pia")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ids: Vec<&str> = reply.body["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["free", "starter", "pro", "pro-monthly", "enterprise"]);
    let starter = &reply.body["data"][1];
    assert_eq!(starter["limits"]["requests"], 25000);
    assert_eq!(starter["kind"], "recurring");
    assert_eq!(
        starter["includedCredits"], 5.0,
        "major units, as every amount"
    );
    assert_eq!(reply.body["data"][2]["amount"], 10.0);
    assert_eq!(reply.body["data"][2]["kind"], "tier");
    assert_eq!(app.get("/api/stripe/plans", None).await.status, 401);
}

#[tokio::test]
async fn stripe_down_during_create_is_502_and_leaves_nothing_half_written() {
    let app = integration_tests::spawn_app_with(integration_tests::SecretSetup {
        proxied: true,
        ..Default::default()
    })
    .await;
    let proxies = app.proxies.as_ref().expect("proxies");
    customer_with_card(&app, "hugo", SUBSCRIPTION_CARD).await;
    proxies.stripe.set(integration_tests::proxy::Mode::Refuse);
    let down = post(
        &app,
        "/api/stripe/create-subscription",
        "hugo",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(down.status, 502, "{}", down.body);
    assert_eq!(down.body["code"], "stripe_error");
    let now = my_subscription(&app, "hugo").await;
    assert_eq!(now["status"], "none", "no subscription recorded: {now}");
    assert_eq!(now["planId"], "free");
    proxies.stripe.set(integration_tests::proxy::Mode::Pass);
    // No lock was left behind: the retry goes through at once.
    let retry = post(
        &app,
        "/api/stripe/create-subscription",
        "hugo",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(retry.status, 200, "{}", retry.body);
}

#[tokio::test]
async fn a_subscribe_left_unpaid_resumes_for_the_same_plan_and_is_replaced_for_another() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    customer_with_card(&app, "vic", SUBSCRIPTION_CARD).await;
    let create = |plan: &'static str| {
        let app = &app;
        async move {
            post(
                app,
                "/api/stripe/create-subscription",
                "vic",
                json!({ "planId": plan }),
            )
            .await
        }
    };
    let first = create("starter").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["data"]["status"], "incomplete");
    let waiting = first.body["data"]["subscriptionId"]
        .as_str()
        .expect("id")
        .to_owned();
    // The user left before paying, and comes back after the create's hold is gone.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let account = coffer::domain::records::UserId::parse("vic").expect("account");
    let record = store.subscription_record(&account).await.expect("read");
    assert!(store
        .write_subscription(&account, record.version, record.state.as_ref(), None)
        .await
        .expect("the hold ends"));
    let again = create("starter").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["data"]["subscriptionId"], waiting.as_str());
    assert!(
        again.body["data"]["clientSecret"].is_string(),
        "{}",
        again.body
    );

    let other = create("pro-monthly").await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_ne!(other.body["data"]["subscriptionId"], waiting.as_str());
    let old = stripe_get(&app, &format!("/v1/subscriptions/{waiting}")).await;
    assert_eq!(old["status"], "canceled", "{old}");
    let invoice = stripe_get(
        &app,
        &format!(
            "/v1/invoices/{}",
            old["latest_invoice"].as_str().expect("invoice")
        ),
    )
    .await;
    assert_eq!(
        invoice["status"], "void",
        "its secret can pay nothing: {invoice}"
    );
    assert_eq!(
        my_subscription(&app, "vic").await["subscriptionId"],
        other.body["data"]["subscriptionId"]
    );
}
