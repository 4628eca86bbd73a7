//! One customer and one live subscription per account: double clicks, a second create, and
//! second subscriptions made past Coffer's doors.

use integration_tests::{join_all, settle, spawn_app, spawn_app_with, SecretSetup};
use serde_json::{json, Value};

use super::{
    customer_with_card, made_past_the_doors, my_subscription, post, redeliver_invoice, stripe_get,
    subscribe_active, SUBSCRIPTION_CARD,
};

#[tokio::test]
async fn double_clicked_create_customer_makes_one_customer() {
    let app = spawn_app().await;
    let calls = (0..6)
        .map(|_| {
            post(
                &app,
                "/api/stripe/create-customer",
                "quin",
                json!({"email": "q@example.com"}),
            )
        })
        .collect();
    let replies = join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["data"]["customerId"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one customer for every click: {ids:?}");
    let customer = ids.into_iter().next().expect("one");
    let at_stripe = stripe_get(&app, &format!("/v1/customers/{customer}")).await;
    assert_eq!(at_stripe["metadata"]["coffer_user_id"], "quin");
    let bad = post(
        &app,
        "/api/stripe/create-customer",
        "quin",
        json!({"email": 5}),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_second_create_while_one_is_live_or_being_made_makes_no_second_subscription() {
    let app = spawn_app().await;
    customer_with_card(&app, "saul", SUBSCRIPTION_CARD).await;
    let body = json!({ "planId": "starter" });
    let replies = join_all(vec![
        post(
            &app,
            "/api/stripe/create-subscription",
            "saul",
            body.clone(),
        ),
        post(
            &app,
            "/api/stripe/create-subscription",
            "saul",
            body.clone(),
        ),
        post(
            &app,
            "/api/stripe/create-subscription",
            "saul",
            body.clone(),
        ),
    ])
    .await;
    // One is made; the others are refused while it is being made (409), or, once it waits for
    // its first payment, answered with that same subscription.
    let made: std::collections::HashSet<&str> = replies
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.body["data"]["subscriptionId"].as_str())
        .collect();
    assert_eq!(
        made.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 409));
    assert!(
        replies.iter().any(|r| r.status == 409),
        "a create while another is being made is refused"
    );
    let id = made.into_iter().next().expect("made").to_owned();
    let again = post(
        &app,
        "/api/stripe/create-subscription",
        "saul",
        body.clone(),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["data"]["subscriptionId"],
        id.as_str(),
        "resumed, not a second one"
    );

    // Once it is paid, another create is 409.
    let secret = again.body["data"]["clientSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    super::authenticate(&app, &secret).await;
    let active = settle(
        || async {
            let now = my_subscription(&app, "saul").await;
            (now["status"] == "active").then_some(())
        },
        redeliver_invoice(&app, &id),
    )
    .await;
    assert!(active.is_some());
    let paid = post(&app, "/api/stripe/create-subscription", "saul", body).await;
    assert_eq!(paid.status, 409, "{}", paid.body);
    assert_eq!(paid.body["code"], "conflict");
}

#[tokio::test]
async fn two_first_events_of_two_live_subscriptions_at_once_keep_one_and_cancel_the_other() {
    // No webhook from localstripe: the test delivers both first events itself, at once.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let customer = customer_with_card(&app, "ola", "4242424242424242").await;
    let mut made = Vec::new();
    // Two subscriptions made past Coffer's doors, as two completed Checkout sessions would be.
    for _ in 0..2 {
        made.push(made_past_the_doors(&app, &customer, "ola", "active").await);
    }
    // Nothing is stored for the account yet, and both first events are handled at once.
    let replies = join_all(
        made.iter()
            .map(|sub| app.deliver_event("customer.subscription.created", sub))
            .collect::<Vec<_>>(),
    )
    .await;
    // One decides; the other may be asked to come again while it does (503), as Stripe would.
    for (reply, sub) in replies.iter().zip(&made) {
        assert!([200, 503].contains(&reply.status), "{}", reply.body);
        if reply.status == 503 {
            let again = app
                .deliver_event("customer.subscription.created", sub)
                .await;
            assert_eq!(again.status, 200, "{}", again.body);
        }
    }
    let mut statuses = Vec::new();
    for sub in &made {
        let id = sub["id"].as_str().expect("id");
        statuses.push(stripe_get(&app, &format!("/v1/subscriptions/{id}")).await["status"].clone());
    }
    let live: Vec<&Value> = made
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| **status == "active")
        .map(|(sub, _)| sub)
        .collect();
    assert_eq!(
        live.len(),
        1,
        "exactly one stays live at Stripe: {statuses:?}"
    );
    let now = my_subscription(&app, "ola").await;
    assert_eq!(now["subscriptionId"], live[0]["id"], "{now}");
    // Their events again change nothing.
    for sub in &made {
        let reply = app
            .deliver_event("customer.subscription.created", sub)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(
        my_subscription(&app, "ola").await["subscriptionId"],
        live[0]["id"]
    );
}

#[tokio::test]
async fn an_unpaid_second_subscription_is_canceled_and_its_open_invoice_voided() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let kept = subscribe_active(&app, "una", "starter").await;
    let customer = stripe_get(&app, &format!("/v1/subscriptions/{kept}")).await["customer"]
        .as_str()
        .expect("customer")
        .to_owned();
    // Made past Coffer's doors, its first payment waiting for authentication.
    let made = made_past_the_doors(&app, &customer, "una", "incomplete").await;
    let reply = app
        .deliver_event("customer.subscription.created", &made)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let second = made["id"].as_str().expect("id");
    let at_stripe = stripe_get(&app, &format!("/v1/subscriptions/{second}")).await;
    assert_eq!(at_stripe["status"], "canceled", "{at_stripe}");
    let invoice_id = at_stripe["latest_invoice"].as_str().expect("invoice");
    let invoice = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(invoice["status"], "void", "never collected: {invoice}");
    assert_eq!(
        my_subscription(&app, "una").await["subscriptionId"],
        kept.as_str()
    );
}
