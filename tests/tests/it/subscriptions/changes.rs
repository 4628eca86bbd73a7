//! Changing a live subscription: cancel and resume, upgrades that apply once paid, downgrades at
//! the period's end.

use integration_tests::{settle, spawn_app};
use serde_json::{json, Value};

use super::{my_subscription, post, stripe_get, subscribe_active, PAST_DUE_CARD};

#[tokio::test]
async fn cancel_resume_and_cancel_now_follow_stripe() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "ugo", "starter").await;
    let cancel = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "ugo",
        json!({}),
    )
    .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    assert_eq!(cancel.body["data"]["cancelAtPeriodEnd"], true);
    assert_eq!(
        my_subscription(&app, "ugo").await["cancelAtPeriodEnd"],
        true
    );
    // Until the period ends, the plan's limits stay.
    assert_eq!(my_subscription(&app, "ugo").await["planId"], "starter");

    let resume = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "ugo",
        json!({"resume": true}),
    )
    .await;
    assert_eq!(resume.status, 200, "{}", resume.body);
    assert_eq!(
        my_subscription(&app, "ugo").await["cancelAtPeriodEnd"],
        false
    );

    let now = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "ugo",
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(now.status, 200, "{}", now.body);
    let after = my_subscription(&app, "ugo").await;
    assert_eq!(after["planId"], "free", "{after}");
    assert_eq!(after["limits"]["requests"], 1000);
    // The deleted event (localstripe's own, or this copy) changes nothing more.
    let deleted = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    if deleted.get("id").is_some() {
        let reply = app
            .deliver_event("customer.subscription.deleted", &deleted)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(my_subscription(&app, "ugo").await["planId"], "free");
    let again = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "ugo",
        json!({}),
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.body);
}

#[tokio::test]
async fn an_upgrade_applies_once_its_difference_is_paid_a_downgrade_at_period_end_without_credit() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "vera", "starter").await;
    let customer = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await["customer"]
        .as_str()
        .expect("customer")
        .to_owned();
    let same = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "vera",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(same.status, 409, "{}", same.body);

    // The card asks for authentication: the difference is invoiced, not paid yet, and the
    // starter limits stay until it is.
    let up = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "vera",
        json!({"planId": "pro-monthly"}),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.body["data"]["effective"], "when_paid", "{}", up.body);
    let secret = up.body["data"]["clientSecret"]
        .as_str()
        .expect("the difference's client secret")
        .to_owned();
    let now = my_subscription(&app, "vera").await;
    assert_eq!(now["planId"], "starter");
    assert_eq!(now["limits"]["requests"], 25000);
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let proration = stripe_get(
        &app,
        &format!(
            "/v1/invoices/{}",
            sub["latest_invoice"].as_str().expect("invoice")
        ),
    )
    .await;
    assert_eq!(proration["status"], "open", "{proration}");
    assert!(
        proration["amount_due"].as_i64().unwrap_or(0) > 0,
        "{proration}"
    );

    // Paid (the user authenticates): the price changes at Stripe, and Coffer follows it.
    super::authenticate(&app, &secret).await;
    let upgraded = settle(
        || async {
            let now = my_subscription(&app, "vera").await;
            (now["planId"] == "pro-monthly").then_some(now)
        },
        async {
            let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
            let reply = app
                .deliver_event("customer.subscription.updated", &sub)
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        },
    )
    .await
    .expect("the paid upgrade applies");
    assert_eq!(upgraded["limits"]["requests"], 100000);

    // A downgrade: the price changes with no proration credit, and the higher plan's limits
    // stay to the end of the period they were paid for.
    let down = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "vera",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(down.status, 200, "{}", down.body);
    assert_eq!(down.body["data"]["effective"], "period_end");
    let now = my_subscription(&app, "vera").await;
    assert_eq!(now["subscribedPlanId"], "starter");
    assert_eq!(
        now["planId"], "pro-monthly",
        "the paid period keeps the higher limits"
    );
    let items = stripe_get(&app, &format!("/v1/invoiceitems?customer={customer}")).await;
    let credits: Vec<&Value> = items["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["invoice"].is_null() && item["amount"].as_i64().unwrap_or(0) < 0)
        .collect();
    assert!(
        credits.is_empty(),
        "no proration credit beside the kept limits: {credits:?}"
    );

    // Back up to the plan still paid for this period: nothing is invoiced again.
    let count = stripe_get(&app, &format!("/v1/invoices?customer={customer}")).await["data"]
        .as_array()
        .map_or(0, Vec::len);
    let back = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "vera",
        json!({"planId": "pro-monthly"}),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["data"]["effective"], "now", "{}", back.body);
    let after = stripe_get(&app, &format!("/v1/invoices?customer={customer}")).await["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(after, count, "the period was paid at pro already");
    let now = my_subscription(&app, "vera").await;
    assert_eq!(now["subscribedPlanId"], "pro-monthly", "{now}");
    assert_eq!(now["planId"], "pro-monthly", "{now}");

    // Canceled now: the raised limits end at once.
    let canceled = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "vera",
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    let now = my_subscription(&app, "vera").await;
    assert_eq!(now["planId"], "free", "{now}");

    let unknown = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "vera",
        json!({"planId": "platinum"}),
    )
    .await;
    assert_eq!(unknown.status, 404);
    let none = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "wynn",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(none.status, 404);
}

#[tokio::test]
async fn an_upgrade_whose_difference_is_declined_keeps_the_old_limits() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "walt", "starter").await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let customer = sub["customer"].as_str().expect("customer").to_owned();
    app.default_card(&customer, PAST_DUE_CARD).await;
    let up = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "walt",
        json!({"planId": "pro-monthly"}),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.body["data"]["effective"], "when_paid", "{}", up.body);
    // Whatever Coffer reads from Stripe now, the price did not change.
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let reply = app
        .deliver_event("customer.subscription.updated", &sub)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = my_subscription(&app, "walt").await;
    assert_eq!(now["planId"], "starter", "{now}");
    assert_eq!(now["limits"]["requests"], 25000);
}
