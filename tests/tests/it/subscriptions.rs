//! Plans, customers and subscriptions over the wire: localstripe for customers, plans,
//! subscriptions, invoices and PaymentIntents; the Stripe test double in front of it for
//! Checkout, the portal and ephemeral keys. Events localstripe never sends are built from its
//! real objects and signed.

use integration_tests::{
    join_all, settle, spawn_app, spawn_app_with, Reply, SecretSetup, TestApp, STRIPE_KEY,
};
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
    let intent = secret
        .split("_secret_")
        .next()
        .expect("intent id")
        .to_owned();
    let subscription = data["subscriptionId"].as_str().expect("id").to_owned();
    let auth = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("success", "true"), ("client_secret", secret)],
        )
        .await;
    assert_eq!(auth.status, 200, "authenticate: {}", auth.body);
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
async fn a_subscription_gives_its_limits_and_its_included_credits_once_per_invoice() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "rhea", "starter").await;
    let now = my_subscription(&app, "rhea").await;
    assert_eq!(now["planId"], "starter");
    assert_eq!(now["limits"]["requests"], 25000);
    assert_eq!(now["cancelAtPeriodEnd"], false);
    assert!(now["currentPeriodEnd"].is_string(), "{now}");

    // Included credits (5.00) once, whatever the duplicates: both paid events, twice each.
    let credited = integration_tests::eventually(30, || async {
        let balance = app.balance("rhea").await;
        (balance >= 5.0).then_some(balance)
    })
    .await;
    assert_eq!(credited, Some(5.0));
    redeliver_invoice(&app, &subscription).await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let invoice = stripe_get(
        &app,
        &format!(
            "/v1/invoices/{}",
            sub["latest_invoice"].as_str().expect("invoice")
        ),
    )
    .await;
    assert_eq!(
        app.deliver_event("invoice.paid", &invoice).await.status,
        200
    );
    assert_eq!(app.balance("rhea").await, 5.0);

    let payments = app
        .get("/api/v1/payments/stripe/my-payments", Some("rhea"))
        .await;
    assert_eq!(payments.status, 200, "{}", payments.body);
    let lines = payments.body["data"].as_array().expect("list");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "subscription_invoice");
    assert_eq!(lines[0]["amount"], 29.0);
    app.assert_invariants().await;
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
    let intent = secret.split("_secret_").next().expect("intent").to_owned();
    let auth = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("success", "true"), ("client_secret", secret.as_str())],
        )
        .await;
    assert_eq!(auth.status, 200, "{}", auth.body);
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
async fn a_stale_updated_payload_does_not_change_what_is_stored() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "tara", "starter").await;
    // A stale copy claiming the subscription was canceled: Coffer re-reads it, and Stripe says
    // it is active, so nothing changes.
    let mut stale = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    stale["status"] = json!("canceled");
    stale["cancel_at_period_end"] = json!(true);
    let reply = app
        .deliver_event("customer.subscription.updated", &stale)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = my_subscription(&app, "tara").await;
    assert_eq!(now["status"], "active");
    assert_eq!(now["cancelAtPeriodEnd"], false);
    assert_eq!(now["planId"], "starter");
}

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
    let intent = secret.split("_secret_").next().expect("intent").to_owned();
    let auth = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("success", "true"), ("client_secret", secret.as_str())],
        )
        .await;
    assert_eq!(auth.status, 200, "{}", auth.body);
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

#[tokio::test]
async fn past_due_keeps_the_plan_for_the_grace_period_only() {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    app.follow_stream().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let grace = |seconds| coffer::domain::projects::ProjectSettings {
        allowed_origins: vec!["https://app.example.com".into()],
        past_due_grace_seconds: seconds,
        ..Default::default()
    };
    store.put_settings(&grace(3600)).await.expect("settings");
    let subscription = subscribe_active(&app, "xena", "starter").await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let customer = sub["customer"].as_str().expect("customer").to_owned();

    // The next period's invoice fails on a card that declines.
    app.default_card(&customer, PAST_DUE_CARD).await;
    let item = app
        .stripe_post(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("amount", "2900"),
                ("currency", "usd"),
            ],
        )
        .await;
    assert_eq!(item.status, 200, "invoice item: {}", item.body);
    let invoice = app
        .stripe_post(
            "/v1/invoices",
            &[("customer", &customer), ("subscription", &subscription)],
        )
        .await;
    assert_eq!(invoice.status, 200, "invoice: {}", invoice.body);
    let invoice_id = invoice.body["id"].as_str().expect("invoice").to_owned();
    app.stripe_post(&format!("/v1/invoices/{invoice_id}/pay"), &[])
        .await;
    // The card asks for authentication, then its charge fails.
    let unpaid = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    let intent_id = unpaid["payment_intent"]
        .as_str()
        .expect("invoice intent")
        .to_owned();
    let intent = app.stripe_intent(&intent_id).await;
    let secret = intent["client_secret"].as_str().expect("secret").to_owned();
    app.stripe_post(
        &format!("/v1/payment_intents/{intent_id}/_authenticate"),
        &[("success", "true"), ("client_secret", &secret)],
    )
    .await;
    let at_stripe = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    assert_eq!(at_stripe["status"], "past_due", "localstripe: {at_stripe}");
    let failed = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    let reply = app.deliver_event("invoice.payment_failed", &failed).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let now = my_subscription(&app, "xena").await;
    assert_eq!(now["status"], "past_due", "{now}");
    assert_eq!(now["planId"], "starter", "within the grace: {now}");
    store.put_settings(&grace(0)).await.expect("settings");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = my_subscription(&app, "xena").await;
    assert_eq!(later["planId"], "free", "after the grace: {later}");
    assert_eq!(later["status"], "past_due");
    let payments = app
        .get("/api/v1/payments/stripe/my-payments", Some("xena"))
        .await;
    let statuses: Vec<&str> = payments.body["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["status"].as_str())
        .collect();
    assert!(statuses.contains(&"failed"), "{}", payments.body);
    assert_eq!(
        statuses.len(),
        2,
        "the first paid invoice and the failed one"
    );
    // One line a page: the cursor leads to the older invoice, then ends.
    let first = app
        .get("/api/v1/payments/stripe/my-payments?limit=1", Some("xena"))
        .await;
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("nextCursor")
        .to_owned();
    let second = app
        .get(
            &format!(
                "/api/v1/payments/stripe/my-payments?limit=1&cursor={}",
                cursor.replace('#', "%23")
            ),
            Some("xena"),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_ne!(first.body["data"][0]["id"], second.body["data"][0]["id"]);
    assert!(second.body.get("nextCursor").is_none(), "{}", second.body);
    let forged = app
        .get(
            "/api/v1/payments/stripe/my-payments?cursor=USER%23x",
            Some("xena"),
        )
        .await;
    assert_eq!(forged.status, 400);

    // The app's backend heard of it: the plan, the paid and the failed invoice, past due.
    let wanted = [
        "plan.changed",
        "payment.succeeded",
        "payment.failed",
        "subscription.past_due",
    ];
    let events = app
        .billing_events(std::time::Duration::from_secs(30), |events| {
            wanted.iter().all(|kind| {
                events
                    .iter()
                    .any(|e| e["type"] == *kind && e["account"] == "xena")
            })
        })
        .await;
    // localstripe sends other tests' events here too: only xena's are counted.
    let events: Vec<Value> = events
        .into_iter()
        .filter(|e| e["account"] == "xena")
        .collect();
    for kind in wanted {
        let of_kind: Vec<&Value> = events.iter().filter(|e| e["type"] == kind).collect();
        assert_eq!(of_kind.len(), 1, "one {kind}: {events:?}");
    }
    let past_due = events
        .iter()
        .find(|e| e["type"] == "subscription.past_due")
        .expect("past_due");
    assert_eq!(past_due["data"]["subscriptionId"], subscription.as_str());
    assert_eq!(past_due["data"]["planId"], "starter");
}

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
async fn an_invoice_grants_the_credits_of_the_plan_it_billed_even_after_an_upgrade() {
    // No webhook from localstripe: this test delivers each event itself, in the order it chose.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let (_, invoice) = paid_starter_invoice(&app, "ivan").await;
    let subscription = invoice["subscription"]
        .as_str()
        .expect("subscription")
        .to_owned();
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    // The subscription becomes active in Coffer, then moves up to pro-monthly (20.00 included)
    // before the starter invoice's (5.00 included) paid event arrives.
    let updated = app
        .deliver_event("customer.subscription.updated", &sub)
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(my_subscription(&app, "ivan").await["planId"], "starter");
    let up = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "ivan",
        json!({"planId": "pro-monthly"}),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);
    for kind in ["invoice.paid", "invoice.payment_succeeded"] {
        let reply = app.deliver_event(kind, &invoice).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
    }
    assert_eq!(
        app.balance("ivan").await,
        5.0,
        "the starter invoice grants starter's credits, once"
    );
    let payments = app
        .get("/api/v1/payments/stripe/my-payments", Some("ivan"))
        .await;
    assert_eq!(
        payments.body["data"][0]["planId"], "starter",
        "{}",
        payments.body
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_scheduled_job_reads_again_a_subscription_whose_end_was_missed() {
    // No webhook from localstripe: Stripe's cancellation never reaches Coffer by an event.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let subscription = subscribe_active(&app, "ruth", "starter").await;
    cancel_at_stripe(&app, &subscription).await;
    // The stored period has just ended (its renewal or end was never read).
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let account = coffer::domain::records::UserId::parse("ruth").expect("account");
    let record = store.subscription_record(&account).await.expect("read");
    let mut state = record.state.clone().expect("stored");
    state.current_period_end = integration_tests::now() - 60;
    assert!(store
        .write_subscription(&account, record.version, Some(&state), None)
        .await
        .expect("write"));
    assert_eq!(
        my_subscription(&app, "ruth").await["planId"],
        "starter",
        "within the grace"
    );

    let report = coffer::calls::as_function(
        "reconcile",
        coffer::reconcile::reconcile(&app.app.app, 3600),
    )
    .await
    .expect("reconcile");
    assert_eq!(report.subscriptions_reread, 1, "{report:?}");
    let now = my_subscription(&app, "ruth").await;
    assert_eq!(now["planId"], "free", "{now}");
    assert_eq!(now["status"], "canceled", "{now}");
    // Nothing live is left to read again.
    let again = coffer::calls::as_function(
        "reconcile",
        coffer::reconcile::reconcile(&app.app.app, 3600),
    )
    .await
    .expect("reconcile");
    assert_eq!(again.subscriptions_reread, 0, "{again:?}");
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
async fn a_package_checkout_of_one_project_is_never_credited_in_another() {
    let app = spawn_app().await;
    // Project `pkgproj` shares the default project's Stripe account (one localstripe), has a
    // package of the same id, and its webhook is signed with its own secret.
    let dev = app.developer_token("dev-pkg");
    let base = "/api/v1/payments/stripe/projects/pkgproj";
    let secret = "whsec_pkgprojSigningSecret0123456789abcdef";
    let config = json!({"secretKey": "sk_test_pkgproj_key", "publishableKey": "pk_test_pkgproj", "webhookSecret": secret});
    let saved = app
        .call("PUT", &format!("{base}/config"), Some(&dev), Some(&config))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let package = json!({"name": "Starter", "description": "same id", "amount": 5,
                         "currency": "usd", "creditAmount": 5, "isActive": true});
    let put = app
        .call(
            "PUT",
            &format!("{base}/credit-packages/starter"),
            Some(&dev),
            Some(&package),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);

    let reply = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "nora",
        json!({"creditPackageId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["data"]["id"].as_str().expect("id").to_owned();
    let session = complete_checkout(&app, &session_id).await;
    let event = app.event("checkout.session.completed", &session);
    // The project's webhook gets the same event (both endpoints are on one Stripe account).
    let signature = coffer::webhook::sign(event.as_bytes(), secret, integration_tests::now());
    app.count_delivery();
    let delivered = app
        .http
        .post(format!(
            "{}/api/v1/payments/stripe/webhooks/pkgproj/test",
            app.base_url
        ))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(event.clone())
        .send()
        .await
        .expect("project webhook");
    assert_eq!(delivered.status().as_u16(), 200);
    let in_project = app
        .get(
            "/api/stripe/balance?project_id=pkgproj&test_mode=true",
            Some("nora"),
        )
        .await;
    assert_eq!(in_project.status, 200, "{}", in_project.body);
    assert_eq!(
        in_project.body["data"]["balance"],
        json!(0.0),
        "{}",
        in_project.body
    );
    // Its own project credits it, once.
    let own = app.deliver_signed(&event).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(app.balance("nora").await > 0.0);
    app.assert_invariants().await;
}

async fn complete_checkout(app: &TestApp, session_id: &str) -> Value {
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

#[tokio::test]
async fn a_member_of_an_organisation_named_with_a_space_acts_for_no_other() {
    let app = spawn_app().await;
    // The claim is the JSON array ["acme corp", "beta,gamma"]: two organisations, not four.
    let member = app.member_token("gil", &["acme corp", "beta,gamma"]);
    for identifier in ["acme", "corp", "beta", "gamma"] {
        let body = json!({"tier": "pro", "identifier": identifier});
        let reply = app
            .call(
                "POST",
                "/api/stripe/create-payment-intent",
                Some(&member),
                Some(&body),
            )
            .await;
        assert_eq!(reply.status, 403, "{identifier}: {}", reply.body);
        let read = app
            .call(
                "GET",
                &format!("/api/v1/payments/stripe/my-subscription?identifier={identifier}"),
                Some(&member),
                None,
            )
            .await;
        assert_eq!(read.status, 403, "{identifier}: {}", read.body);
    }
}

#[tokio::test]
async fn an_organisation_holds_what_its_members_buy_and_others_get_403() {
    let app = spawn_app().await;
    let member = app.member_token("eve", &["acme"]);
    let outsider = app.member_token("fay", &["other"]);
    let body = json!({"tier": "pro", "identifier": "acme"});
    let refused = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent",
            Some(&outsider),
            Some(&body),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let reply = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent",
            Some(&member),
            Some(&body),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = reply.body["data"]["paymentIntentId"]
        .as_str()
        .expect("pi")
        .to_owned();
    app.pay_with_card(&intent, "4242424242424242").await;
    let org_plan = settle(
        || async {
            let now = app
                .call(
                    "GET",
                    "/api/v1/payments/stripe/my-subscription?identifier=acme",
                    Some(&member),
                    None,
                )
                .await;
            (now.body["data"]["planId"] == "pro").then_some(now)
        },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(org_plan.is_some(), "the organisation never got the tier");
    assert_eq!(
        my_subscription(&app, "eve").await["planId"],
        "free",
        "the member's own plan is unchanged"
    );
    let peek = app
        .call(
            "GET",
            "/api/v1/payments/stripe/my-subscription?identifier=acme",
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(peek.status, 403);
    let forged = app
        .call(
            "GET",
            "/api/stripe/balance",
            Some(&app.token("org:acme")),
            None,
        )
        .await;
    assert_eq!(
        forged.status, 401,
        "a subject may not name an organisation account"
    );
}

#[tokio::test]
async fn developers_link_plans_and_set_origins_per_project() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-plans");
    let project = "plansproj";
    let config = json!({"secretKey": "sk_test_plansproj_key", "publishableKey": "pk_test_plansproj", "webhookSecret": "whsec_plansprojSigningSecret0123456789ab"});
    let saved = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/config"),
            Some(&dev),
            Some(&config),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let plan = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&dev),
            Some(&json!({"name": "Team", "rank": 5, "limits": {"requests": 5000}, "priceId": "price_team", "includedCredits": 2.5})),
        )
        .await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    assert_eq!(plan.body["data"]["priceId"], "price_team");
    assert_eq!(plan.body["data"]["includedCredits"], 2.5);
    let bad = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&dev),
            Some(&json!({"amount": 100})),
        )
        .await;
    assert_eq!(
        bad.status, 400,
        "recurring and one-off at once: {}",
        bad.body
    );
    let settings = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/settings"),
            Some(&dev),
            Some(&json!({"allowedOrigins": ["https://team.example.com"], "pastDueGraceSeconds": 86400})),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    let listed = app
        .get(
            &format!("/api/stripe/plans?project_id={project}"),
            Some("gus"),
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["data"][0]["id"], "team");
    let default_plans = app.get("/api/stripe/plans", Some("gus")).await;
    assert!(!default_plans.body["data"]
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p["id"] == "team"));
    let stranger = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&app.developer_token("dev-other")),
            Some(&json!({"rank": 9})),
        )
        .await;
    assert_eq!(stranger.status, 404);
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
async fn events_in_any_order_end_in_stripes_current_state() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "iris", "starter").await;
    let created_copy = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let cancel = app
        .http
        .delete(format!(
            "{}/v1/subscriptions/{subscription}",
            app.stripe_base
        ))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("cancel at localstripe");
    assert!(cancel.status().is_success());
    let deleted_copy = json!({"id": subscription, "object": "subscription", "status": "canceled"});
    // The deletion first, then the older creation, then the deletion again.
    for (kind, object) in [
        ("customer.subscription.deleted", &deleted_copy),
        ("customer.subscription.created", &created_copy),
        ("customer.subscription.deleted", &deleted_copy),
    ] {
        let reply = app.deliver_event(kind, object).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
        let now = my_subscription(&app, "iris").await;
        assert_eq!(now["planId"], "free", "after {kind}: {now}");
    }
}

#[tokio::test]
async fn developers_see_their_projects_subscriptions_and_other_scopes_ignore_them() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-subs");
    let project = "subsproj";
    let config = json!({"secretKey": "sk_test_subsproj_key", "publishableKey": "pk_test_subsproj", "webhookSecret": "whsec_subsprojSigningSecret0123456789abc"});
    let base = format!("/api/v1/payments/stripe/projects/{project}");
    let saved = app
        .call("PUT", &format!("{base}/config"), Some(&dev), Some(&config))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let plan = json!({"name": "Starter", "rank": 10, "limits": {"requests": 25000}, "priceId": "price_starter"});
    let linked = app
        .call(
            "PUT",
            &format!("{base}/plans/starter"),
            Some(&dev),
            Some(&plan),
        )
        .await;
    assert_eq!(linked.status, 200, "{}", linked.body);
    // The project's customer and subscription (this local project shares localstripe with the
    // default project; its objects carry their scope).
    let token = app.token("kai");
    let query = format!("?project_id={project}&test_mode=true");
    let customer = app
        .call(
            "POST",
            &format!("/api/stripe/create-customer{query}"),
            Some(&token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(customer.status, 200, "{}", customer.body);
    let created = app
        .call(
            "POST",
            &format!("/api/stripe/create-subscription{query}"),
            Some(&token),
            Some(&json!({"priceId": "price_starter"})),
        )
        .await;
    // localstripe refuses a subscription for a customer without a card (402 or 404 from
    // Stripe are 502 here); give the customer one and try again.
    let created = if created.status == 200 {
        created
    } else {
        let customer_id = customer.body["data"]["customerId"].as_str().expect("id");
        app.default_card(customer_id, SUBSCRIPTION_CARD).await;
        app.call(
            "POST",
            &format!("/api/stripe/create-subscription{query}"),
            Some(&token),
            Some(&json!({"priceId": "price_starter"})),
        )
        .await
    };
    assert_eq!(created.status, 200, "{}", created.body);
    let subscription = created.body["data"]["subscriptionId"]
        .as_str()
        .expect("id")
        .to_owned();

    let listed = app
        .call("GET", &format!("{base}/subscriptions"), Some(&dev), None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.body["data"][0]["subscriptionId"],
        subscription.as_str()
    );
    assert_eq!(listed.body["data"][0]["account"], "kai");
    let all = app
        .call("GET", "/api/v1/payments/subscriptions", Some(&dev), None)
        .await;
    assert_eq!(
        all.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        all.body
    );
    let other = app
        .call(
            "GET",
            "/api/v1/payments/subscriptions",
            Some(&app.developer_token("dev-else")),
            None,
        )
        .await;
    assert_eq!(other.body["data"], json!([]));

    // The default project's webhook gets the same localstripe's events: it re-reads the
    // subscription, sees another scope's, and stores nothing for the default project.
    let object = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let reply = app
        .deliver_event("customer.subscription.updated", &object)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(my_subscription(&app, "kai").await["status"], "none");
}

#[tokio::test]
async fn a_change_made_in_stripes_portal_shows_after_its_event() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "lena", "starter").await;
    // What the customer portal does: Stripe changes the subscription and sends `updated`.
    let changed = app
        .stripe_post(
            &format!("/v1/subscriptions/{subscription}"),
            &[("cancel_at_period_end", "true")],
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        my_subscription(&app, "lena").await["cancelAtPeriodEnd"],
        false,
        "not before the event"
    );
    let reply = app
        .deliver_event("customer.subscription.updated", &changed.body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = my_subscription(&app, "lena").await;
    assert_eq!(now["cancelAtPeriodEnd"], true, "{now}");
    assert_eq!(now["planId"], "starter");
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
    let intent = secret.split("_secret_").next().expect("intent").to_owned();
    let auth = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("success", "true"), ("client_secret", secret.as_str())],
        )
        .await;
    assert_eq!(auth.status, 200, "{}", auth.body);
    let sub = stripe_get(app, &format!("/v1/subscriptions/{subscription}")).await;
    let invoice_id = sub["latest_invoice"].as_str().expect("invoice");
    let invoice = stripe_get(app, &format!("/v1/invoices/{invoice_id}")).await;
    (intent, invoice)
}

#[tokio::test]
async fn a_refunded_or_disputed_invoice_takes_its_included_credits_back_in_any_order() {
    // No webhook from localstripe: this test delivers each event itself, in the order it chose.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let paid = |invoice: Value| {
        let app = &app;
        async move {
            let reply = app.deliver_event("invoice.paid", &invoice).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    let deliver = |kind: &'static str, object: Value| {
        let app = &app;
        async move {
            let reply = app.deliver_event(kind, &object).await;
            assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
        }
    };

    // Granted, then half the invoice refunded: half the included credits go, once.
    let (intent, invoice) = paid_starter_invoice(&app, "jen").await;
    let amount = invoice["amount_paid"].as_i64().expect("amount paid");
    assert!(amount > 0, "{invoice}");
    paid(invoice.clone()).await;
    assert_eq!(app.balance("jen").await, 5.0);
    let half = crate::lifecycle::charge(&app, &intent, amount / 2).await;
    for _ in 0..2 {
        deliver("charge.refunded", half.clone()).await;
    }
    assert_eq!(
        app.balance("jen").await,
        2.5,
        "half of 5.00 taken back, once"
    );
    paid(invoice).await;
    assert_eq!(
        app.balance("jen").await,
        2.5,
        "a repeated invoice grants nothing"
    );

    // The refund arrives before the invoice's paid event: the grant nets it at once.
    let (intent, invoice) = paid_starter_invoice(&app, "kim").await;
    let amount = invoice["amount_paid"].as_i64().expect("amount paid");
    deliver(
        "charge.refunded",
        crate::lifecycle::charge(&app, &intent, amount).await,
    )
    .await;
    assert_eq!(app.balance("kim").await, 0.0);
    paid(invoice.clone()).await;
    paid(invoice).await;
    assert_eq!(
        app.balance("kim").await,
        0.0,
        "a fully refunded invoice grants nothing to keep"
    );

    // A dispute of the whole invoice withdraws its credits; winning it gives them back.
    let (intent, invoice) = paid_starter_invoice(&app, "lou").await;
    let amount = invoice["amount_paid"].as_i64().expect("amount paid");
    paid(invoice).await;
    let dispute = crate::lifecycle::dispute_of(&intent, amount);
    deliver("charge.dispute.funds_withdrawn", dispute.clone()).await;
    assert_eq!(app.balance("lou").await, 0.0);
    deliver("charge.dispute.funds_reinstated", dispute).await;
    assert_eq!(app.balance("lou").await, 5.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_scheduled_job_reads_again_a_subscription_whose_event_failed_and_rests_one_stripe_lost()
{
    // No webhook from localstripe: the test delivers the one event itself, while Stripe is cut.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        proxied: true,
        ..SecretSetup::default()
    })
    .await;
    let subscription = subscribe_active(&app, "rita", "starter").await;
    cancel_at_stripe(&app, &subscription).await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let proxies = app.proxies.as_ref().expect("proxied");
    proxies.stripe.set(integration_tests::proxy::Mode::Refuse);
    let failed = app
        .deliver_event("customer.subscription.deleted", &sub)
        .await;
    proxies.stripe.set(integration_tests::proxy::Mode::Pass);
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(my_subscription(&app, "rita").await["planId"], "starter");

    // Its period is far from ending, yet the job reads it again: its last event failed.
    let reconcile = || async {
        coffer::calls::as_function(
            "reconcile",
            coffer::reconcile::reconcile(&app.app.app, 3600),
        )
        .await
        .expect("reconcile")
    };
    assert_eq!(reconcile().await.subscriptions_reread, 1);
    let now = my_subscription(&app, "rita").await;
    assert_eq!(now["status"], "canceled", "{now}");
    assert_eq!(now["planId"], "free", "{now}");
    assert_eq!(reconcile().await.subscriptions_reread, 0, "read once");

    // A live state whose subscription Stripe does not have: left as it is (a key of another
    // account must not end every subscription), and not read again every hour.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let rita = coffer::domain::records::UserId::parse("rita").expect("account");
    let mut lost = store
        .subscription_record(&rita)
        .await
        .expect("read")
        .state
        .expect("stored");
    lost.subscription_id = format!("sub_gone{}", app.table.replace('-', ""));
    lost.status = coffer::domain::subscriptions::SubscriptionStatus::Active;
    lost.current_period_end = integration_tests::now() - 60;
    let sid = coffer::domain::records::UserId::parse("sid").expect("account");
    let record = store.subscription_record(&sid).await.expect("read");
    assert!(store
        .write_subscription(&sid, record.version, Some(&lost), None)
        .await
        .expect("write"));
    assert_eq!(reconcile().await.subscriptions_reread, 1);
    let now = my_subscription(&app, "sid").await;
    assert_eq!(now["status"], "active", "left as it is: {now}");
    assert_eq!(
        reconcile().await.subscriptions_reread,
        0,
        "not read every hour"
    );
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

#[tokio::test]
async fn the_scheduled_job_applies_again_an_invoice_whose_event_failed() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        proxied: true,
        ..SecretSetup::default()
    })
    .await;
    let (_, invoice) = paid_starter_invoice(&app, "ivy").await;
    let proxies = app.proxies.as_ref().expect("proxied");
    proxies.stripe.set(integration_tests::proxy::Mode::Refuse);
    let failed = app.deliver_event("invoice.paid", &invoice).await;
    proxies.stripe.set(integration_tests::proxy::Mode::Pass);
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(app.balance("ivy").await, 0.0);
    // Stripe gave up on the event: the scheduled job applies it, once.
    for _ in 0..2 {
        coffer::calls::as_function(
            "reconcile",
            coffer::reconcile::reconcile(&app.app.app, 3600),
        )
        .await
        .expect("reconcile");
        assert_eq!(app.balance("ivy").await, 5.0, "the included credits, once");
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_package_checkout_of_one_deployment_is_never_credited_in_another_on_the_same_stripe() {
    // Two stacks on one Stripe account (one localstripe), both webhooks registered there.
    let a = spawn_app_with(SecretSetup {
        no_webhook: true,
        deployment: Some("coffer-stack-a"),
        ..SecretSetup::default()
    })
    .await;
    let b = spawn_app_with(SecretSetup {
        no_webhook: true,
        deployment: Some("coffer-stack-b"),
        ..SecretSetup::default()
    })
    .await;
    let reply = post(
        &a,
        "/api/v1/payments/stripe/checkout-session",
        "noel",
        json!({"creditPackageId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["data"]["id"].as_str().expect("id").to_owned();
    let session = complete_checkout(&a, &session_id).await;
    assert_eq!(
        session["metadata"]["coffer_scope"], "default/test@coffer-stack-a",
        "{session}"
    );
    // The other stack gets the same event first, then the stack that made it.
    let elsewhere = b
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    assert_eq!(
        b.balance("noel").await,
        0.0,
        "not the other stack's payment"
    );
    let here = a
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(here.status, 200, "{}", here.body);
    assert_eq!(a.balance("noel").await, 5.0);
    a.assert_invariants().await;
    b.assert_invariants().await;
}

/// Cancels a subscription at localstripe directly, as the Dashboard would (no event sent).
async fn cancel_at_stripe(app: &TestApp, subscription: &str) {
    let canceled = app
        .http
        .delete(format!(
            "{}/v1/subscriptions/{subscription}",
            app.stripe_base
        ))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("cancel at localstripe");
    assert!(canceled.status().is_success());
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
