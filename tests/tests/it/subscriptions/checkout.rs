//! Checkout, the customer portal and PaymentSheet: sessions and their holds, and what each
//! subscribes or credits.

use integration_tests::{join_all, spawn_app, STRIPE_KEY};
use serde_json::{json, Value};

use super::{complete_checkout, customer_with_card, my_subscription, post, SUBSCRIPTION_CARD};

#[tokio::test]
async fn payment_sheet_gets_a_customer_and_an_ephemeral_key_in_the_sdk_version() {
    let app = spawn_app().await;
    let missing = post(
        &app,
        "/api/stripe/create-payment-intent",
        "zane",
        json!({"creditPackageId": "starter", "paymentSheet": true}),
    )
    .await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    let reply = post(
        &app,
        "/api/stripe/create-payment-intent",
        "zane",
        json!({"creditPackageId": "starter", "paymentSheet": true, "stripeVersion": "2020-08-27"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = &reply.body["data"];
    let customer = data["customer"].as_str().expect("customer");
    assert!(customer.starts_with("cus_"), "{data}");
    assert!(data["ephemeralKey"]
        .as_str()
        .expect("key")
        .starts_with("ek_test_"));
    assert!(data["clientSecret"].is_string());
    let intent = app
        .stripe_intent(data["paymentIntentId"].as_str().expect("pi"))
        .await;
    assert_eq!(intent["customer"], customer);
    let recorded = reqwest::get(format!("{}/_double/requests", app.double_base))
        .await
        .expect("double")
        .json::<Value>()
        .await
        .expect("json");
    let key_call = recorded
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["path"] == "/v1/ephemeral_keys")
        .expect("an ephemeral key was asked for")
        .clone();
    assert_eq!(key_call["stripeVersion"], "2020-08-27");
    assert_eq!(key_call["params"]["customer"], customer);

    // The mobile app also starts subscriptions with PaymentSheet.
    assert_eq!(
        customer_with_card(&app, "zane", SUBSCRIPTION_CARD).await,
        customer
    );
    let subscribed = post(
        &app,
        "/api/stripe/create-subscription",
        "zane",
        json!({"planId": "starter", "paymentSheet": true, "stripeVersion": "2023-10-16"}),
    )
    .await;
    assert_eq!(subscribed.status, 200, "{}", subscribed.body);
    assert_eq!(subscribed.body["data"]["customer"], customer);
    assert!(subscribed.body["data"]["ephemeralKey"]
        .as_str()
        .expect("key")
        .starts_with("ek_test_"));
    assert!(subscribed.body["data"]["clientSecret"].is_string());
}

#[tokio::test]
async fn checkout_for_a_plan_subscribes_and_for_a_package_credits_once() {
    let app = spawn_app().await;
    let outside = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "abel",
        json!({"planId": "starter", "successUrl": "https://evil.example.net/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(outside.status, 400, "{}", outside.body);
    let reply = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "abel",
        json!({"planId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["data"]["id"].as_str().expect("id").to_owned();
    assert!(reply.body["data"]["url"]
        .as_str()
        .expect("url")
        .contains(&session_id));
    let session = complete_checkout(&app, &session_id).await;
    let event = app
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(event.status, 200, "{}", event.body);
    let now = my_subscription(&app, "abel").await;
    assert_eq!(now["planId"], "starter", "{now}");
    assert_eq!(now["limits"]["requests"], 25000);

    // The API gateway's spelling.
    let gateway = post(
        &app,
        "/api/portal/checkout",
        "bela",
        json!({"plan_id": "pro-monthly", "success_url": "https://app.example.com/ok", "cancel_url": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(gateway.status, 200, "{}", gateway.body);
    assert!(gateway.body["data"]["checkout_url"].is_string());

    let package = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "cleo",
        json!({"creditPackageId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(package.status, 200, "{}", package.body);
    let session_id = package.body["data"]["id"].as_str().expect("id").to_owned();
    let session = complete_checkout(&app, &session_id).await;
    for _ in 0..2 {
        let event = app
            .deliver_event("checkout.session.completed", &session)
            .await;
        assert_eq!(event.status, 200, "{}", event.body);
    }
    let starter_credits = app.balance("cleo").await;
    assert!(starter_credits > 0.0);
    // localstripe's own payment_intent.succeeded for the same intent moves nothing more.
    let intent = session["payment_intent"].as_str().expect("pi");
    app.redeliver_intent_event("payment_intent.succeeded", intent)
        .await;
    assert_eq!(app.balance("cleo").await, starter_credits);
    app.assert_invariants().await;
}

#[tokio::test]
async fn two_tabs_open_one_checkout_for_a_plan_and_no_create_goes_beside_it() {
    let app = spawn_app().await;
    customer_with_card(&app, "tess", SUBSCRIPTION_CARD).await;
    let body = json!({"planId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"});
    let tabs = join_all(vec![
        post(
            &app,
            "/api/v1/payments/stripe/checkout-session",
            "tess",
            body.clone(),
        ),
        post(
            &app,
            "/api/v1/payments/stripe/checkout-session",
            "tess",
            body.clone(),
        ),
    ])
    .await;
    let mut statuses: Vec<u16> = tabs.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 409],
        "{:?}",
        tabs.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    // Neither another door: the gateway's Checkout, nor a create.
    let gateway = post(
        &app,
        "/api/portal/checkout",
        "tess",
        json!({"plan_id": "pro-monthly", "success_url": "https://app.example.com/ok", "cancel_url": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(gateway.status, 409, "{}", gateway.body);
    let create = post(
        &app,
        "/api/stripe/create-subscription",
        "tess",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(create.status, 409, "{}", create.body);
    // Another account is not held.
    let other = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "tina",
        body,
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);
}

#[tokio::test]
async fn a_checkouts_hold_goes_when_it_completes_or_expires() {
    let app = spawn_app().await;
    let body = json!({"planId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"});
    // Completed: subscribed; canceled at once; a new Checkout is not held back.
    let opened = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "uli",
        body.clone(),
    )
    .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = complete_checkout(&app, opened.body["data"]["id"].as_str().expect("id")).await;
    let done = app
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(my_subscription(&app, "uli").await["planId"], "starter");
    let canceled = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "uli",
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    let again = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "uli",
        body.clone(),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    // Expired unpaid: its hold goes too.
    let opened = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "una",
        body.clone(),
    )
    .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let held = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "una",
        body.clone(),
    )
    .await;
    assert_eq!(held.status, 409, "{}", held.body);
    let id = opened.body["data"]["id"].as_str().expect("id");
    let session = app
        .http
        .get(format!("{}/v1/checkout/sessions/{id}", app.double_base))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("session")
        .json::<Value>()
        .await
        .expect("json");
    let expired = app
        .deliver_event("checkout.session.expired", &session)
        .await;
    assert_eq!(expired.status, 200, "{}", expired.body);
    let after = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "una",
        body,
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.body);
}

#[tokio::test]
async fn the_portal_needs_a_customer_and_an_allowed_return_url() {
    let app = spawn_app().await;
    let none = post(
        &app,
        "/api/v1/payments/stripe/customer-portal",
        "dora",
        json!({"returnUrl": "https://app.example.com/account"}),
    )
    .await;
    assert_eq!(none.status, 404, "{}", none.body);
    post(&app, "/api/stripe/create-customer", "dora", json!({})).await;
    let bad = post(
        &app,
        "/api/v1/payments/stripe/customer-portal",
        "dora",
        json!({"returnUrl": "javascript:alert(1)"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let ok = post(
        &app,
        "/api/v1/payments/stripe/customer-portal",
        "dora",
        json!({"returnUrl": "https://app.example.com/account"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body["data"]["url"]
        .as_str()
        .expect("url")
        .contains("/portal/"));
    let again = post(
        &app,
        "/api/v1/payments/stripe/customer-portal",
        "dora",
        json!({"returnUrl": "https://app.example.com/account"}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    // Both sessions use Coffer's portal configuration, made once, in which plans cannot be
    // switched (a switch there would raise a plan before it is paid).
    let recorded = reqwest::get(format!("{}/_double/requests", app.double_base))
        .await
        .expect("double")
        .json::<Value>()
        .await
        .expect("json");
    let recorded = recorded.as_array().expect("list");
    let configurations: Vec<&Value> = recorded
        .iter()
        .filter(|r| r["path"] == "/v1/billing_portal/configurations")
        .collect();
    assert!(configurations.iter().all(|c| {
        c["params"]["features[subscription_update][enabled]"] == "false"
            && c["params"]["features[subscription_cancel][enabled]"] == "false"
    }));
    let sessions: Vec<&Value> = recorded
        .iter()
        .filter(|r| {
            r["path"] == "/v1/billing_portal/sessions"
                && r["params"]["return_url"] == "https://app.example.com/account"
        })
        .collect();
    let used: std::collections::HashSet<&str> = sessions
        .iter()
        .filter_map(|r| r["params"]["configuration"].as_str())
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(configurations.len(), 1, "made once: {configurations:?}");
    assert_eq!(used.len(), 1, "{used:?}");
    assert!(used.iter().all(|id| id.starts_with("bpc_")), "{used:?}");
}
