//! Plans, customers and subscriptions over the wire: localstripe for customers, plans,
//! subscriptions, invoices and PaymentIntents; the Stripe test double in front of it for
//! Checkout, the portal and ephemeral keys. Events localstripe never sends are built from its
//! real objects and signed.

mod changes;
mod checkout;
mod create;
mod duplicates;
mod invoices;
mod scheduled;
mod scopes;
mod stripe_state;
mod tiers;

use integration_tests::{settle, Reply, TestApp, STRIPE_KEY};
use serde_json::{json, Value};

const SUBSCRIPTION_CARD: &str = "4000002500003155";
const PAST_DUE_CARD: &str = "4000008260003178";

pub(crate) async fn post(app: &TestApp, path: &str, user: &str, body: Value) -> Reply {
    app.post(path, Some(user), &body.to_string(), &[]).await
}

pub(crate) async fn my_subscription(app: &TestApp, user: &str) -> Value {
    let reply = app
        .get("/api/v1/payments/stripe/my-subscription", Some(user))
        .await;
    assert_eq!(reply.status, 200, "my-subscription: {}", reply.body);
    reply.body["data"].clone()
}

pub(crate) async fn stripe_get(app: &TestApp, path: &str) -> Value {
    app.http
        .get(format!("{}{path}", app.stripe_base))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("localstripe GET")
        .json()
        .await
        .expect("localstripe JSON")
}

/// The account's customer (through Coffer) with `card` as its default payment method.
async fn customer_with_card(app: &TestApp, user: &str, card: &str) -> String {
    let reply = post(app, "/api/stripe/create-customer", user, json!({})).await;
    assert_eq!(reply.status, 200, "create-customer: {}", reply.body);
    let customer = reply.body["data"]["customerId"]
        .as_str()
        .expect("customerId")
        .to_owned();
    app.default_card(&customer, card).await;
    customer
}

/// Subscribes `user` to `plan` and confirms the first payment as the client would; returns the
/// subscription id once Coffer stored it active.
pub(crate) async fn subscribe_active(app: &TestApp, user: &str, plan: &str) -> String {
    customer_with_card(app, user, SUBSCRIPTION_CARD).await;
    let reply = post(
        app,
        "/api/stripe/create-subscription",
        user,
        json!({ "planId": plan }),
    )
    .await;
    assert_eq!(reply.status, 200, "create-subscription: {}", reply.body);
    let data = &reply.body["data"];
    assert_eq!(data["status"], "incomplete", "{data}");
    let secret = data["clientSecret"].as_str().expect("clientSecret");
    let subscription = data["subscriptionId"].as_str().expect("id").to_owned();
    authenticate(app, secret).await;
    let sub = subscription.clone();
    let active = settle(
        || async {
            let now = my_subscription(app, user).await;
            (now["status"] == "active").then_some(now)
        },
        redeliver_invoice(app, &subscription),
    )
    .await;
    assert!(active.is_some(), "{sub} never became active in Coffer");
    subscription
}

/// Stripe's retry of `invoice.payment_succeeded`: the subscription's latest invoice as
/// localstripe holds it, in a signed event.
pub(crate) async fn redeliver_invoice(app: &TestApp, subscription: &str) {
    let sub = stripe_get(app, &format!("/v1/subscriptions/{subscription}")).await;
    let invoice_id = sub["latest_invoice"]
        .as_str()
        .expect("latest_invoice")
        .to_owned();
    let invoice = stripe_get(app, &format!("/v1/invoices/{invoice_id}")).await;
    let reply = app
        .deliver_event("invoice.payment_succeeded", &invoice)
        .await;
    assert_eq!(reply.status, 200, "invoice event: {}", reply.body);
}

pub(crate) async fn complete_checkout(app: &TestApp, session_id: &str) -> Value {
    let done = app
        .stripe_post_at(
            &app.double_base,
            STRIPE_KEY,
            &format!("/_double/checkout/{session_id}/complete"),
            &[("card", "4242424242424242")],
        )
        .await;
    assert_eq!(done.status, 200, "complete: {}", done.body);
    done.body
}

/// A starter subscription created and paid at localstripe, no event delivered: the intent that
/// paid its first invoice, and that invoice.
async fn paid_starter_invoice(app: &TestApp, user: &str) -> (String, Value) {
    customer_with_card(app, user, SUBSCRIPTION_CARD).await;
    let reply = post(
        app,
        "/api/stripe/create-subscription",
        user,
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let secret = reply.body["data"]["clientSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let subscription = reply.body["data"]["subscriptionId"]
        .as_str()
        .expect("id")
        .to_owned();
    let intent = authenticate(app, &secret).await;
    let sub = stripe_get(app, &format!("/v1/subscriptions/{subscription}")).await;
    let invoice_id = sub["latest_invoice"].as_str().expect("invoice");
    let invoice = stripe_get(app, &format!("/v1/invoices/{invoice_id}")).await;
    (intent, invoice)
}

/// A starter subscription made at localstripe for `account`'s customer, past Coffer's doors (as
/// a second completed Checkout would make it), marked for the default scope; it must have
/// `status`. Stripe's subscription object.
pub(crate) async fn made_past_the_doors(
    app: &TestApp,
    customer: &str,
    account: &str,
    status: &str,
) -> Value {
    let scope = app.app.app.default_scope().to_string();
    let reply = app
        .stripe_post(
            "/v1/subscriptions",
            &[
                ("customer", customer),
                ("items[0][plan]", "price_starter"),
                ("metadata[coffer_account]", account),
                ("metadata[coffer_scope]", scope.as_str()),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], status, "{}", reply.body);
    reply.body
}

/// What the user does in Stripe.js when their card asks for authentication: approves the
/// PaymentIntent a client secret belongs to (localstripe's 3-D Secure stand-in). Returns the
/// intent's id.
pub(crate) async fn authenticate(app: &TestApp, secret: &str) -> String {
    let intent = secret
        .split("_secret_")
        .next()
        .expect("intent id")
        .to_owned();
    let auth = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("success", "true"), ("client_secret", secret)],
        )
        .await;
    assert_eq!(auth.status, 200, "authenticate: {}", auth.body);
    intent
}
