//! Invoices: the included credits each paid one grants, and takes back when refunded or
//! disputed; a failed one and the past-due grace period.

use integration_tests::{spawn_app, spawn_app_with, SecretSetup};
use serde_json::{json, Value};

use super::{
    my_subscription, paid_starter_invoice, post, redeliver_invoice, stripe_get, subscribe_active,
    PAST_DUE_CARD,
};

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
async fn included_credits_of_a_plan_that_says_so_expire_at_the_end_of_the_period_they_pay_for() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let starter = store.plan("starter").await.expect("read").expect("seeded");
    let update = coffer::domain::plans::PlanUpdate {
        included_credits_expire: Some(true),
        ..Default::default()
    };
    store
        .put_plan(
            &coffer::domain::plans::apply_plan_update("starter", Some(starter), update)
                .expect("plan"),
        )
        .await
        .expect("save");
    let (_, invoice) = paid_starter_invoice(&app, "iona").await;
    let period_end = invoice["lines"]["data"][0]["period"]["end"]
        .as_i64()
        .expect("localstripe gives the line's period");
    let reply = app.deliver_event("invoice.paid", &invoice).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let balance = app.get("/api/stripe/balance", Some("iona")).await.body["data"].clone();
    assert_eq!(balance["balance"], json!(5.0), "{balance}");
    assert_eq!(balance["buckets"][0]["kind"], "paid");
    assert_eq!(
        balance["buckets"][0]["expiresAt"],
        json!(coffer::domain::records::rfc3339(period_end * 1000)),
        "{balance}"
    );
    assert_eq!(balance["nextExpiry"], balance["buckets"][0]["expiresAt"]);
    app.assert_invariants().await;
}
