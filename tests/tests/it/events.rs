//! Billing events out, over the wire: the table's stream (DynamoDB Local's), the publisher, the
//! test's own EventBridge bus in moto and a rule that fills an SQS queue the test reads, as an
//! app's backend would subscribe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use coffer_dev::streams::{Consumer, Delivery};
use coffer_dev::token::issue_service;
use integration_tests::{settle, spawn_app_with, SecretSetup, TestApp, JWT_SECRET};
use serde_json::{json, Value};

use crate::subscriptions::{
    made_past_the_doors, my_subscription, post, stripe_get, subscribe_active,
};

async fn app_with_events() -> TestApp {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    app.follow_stream().await;
    app
}

fn of_kind<'a>(events: &'a [Value], kind: &str, account: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["account"] == account)
        .collect()
}

fn has_all(events: &[Value], wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(kind, account)| !of_kind(events, kind, account).is_empty())
}

async fn use_requests(app: &TestApp, user: &str, key: &str) -> u16 {
    let token = issue_service(JWT_SECRET, "app-backend", 60).expect("service token");
    let body = json!({"userId": user, "metric": "requests", "quantity": 1, "idempotencyKey": key});
    app.call("POST", "/internal/usage", Some(&token), Some(&body))
        .await
        .status
}

#[tokio::test]
async fn payments_credits_and_limits_publish_one_event_each_through_the_bus() {
    let app = app_with_events().await;

    // A purchase: payment.succeeded. 16.50 of credits, the local threshold is 5.00.
    let intent = app.bought("ann", "standard").await;
    assert_eq!(app.spend("ann", json!(12), "s1").await.status, 200);
    // 4.50 left: below 5.00, credits.low once; a second spend below it says nothing more.
    assert_eq!(app.spend("ann", json!(1), "s2").await.status, 200);
    // A spend the balance cannot cover changes nothing and publishes nothing.
    assert_eq!(app.spend("ann", json!(100), "s3").await.status, 402);
    assert_eq!(app.spend("ann", json!(3.5), "s4").await.status, 200);

    // A declined card: payment.failed.
    let declined = app.create_intent("ben", "starter").await;
    assert_eq!(
        app.pay_with_card(&declined, "4000000000000341")
            .await
            .status,
        402
    );
    settle(
        || async {
            (app.history_status("ben", &declined).await.as_deref() == Some("failed")).then_some(())
        },
        app.redeliver_intent_event("payment_intent.payment_failed", &declined),
    )
    .await
    .expect("the payment is failed");

    // A free plan of 2 requests: the third is refused, and so is the fourth; limit.reached once.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let free = store.plan("free").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        limits: Some(BTreeMap::from([("requests".to_owned(), 2)])),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("free", Some(free), update).expect("plan"))
        .await
        .expect("save");
    for (key, status) in [("u1", 200), ("u2", 200), ("u3", 429), ("u4", 429)] {
        assert_eq!(use_requests(&app, "cat", key).await, status, "{key}");
    }

    let wanted = [
        ("payment.succeeded", "ann"),
        ("credits.low", "ann"),
        ("credits.depleted", "ann"),
        ("payment.failed", "ben"),
        ("limit.reached", "cat"),
    ];
    app.billing_events(Duration::from_secs(30), |events| has_all(events, &wanted))
        .await;
    // Anything late or repeated would arrive in this second.
    // localstripe sends every test's events to every registered webhook, so other tests'
    // subscriptions can reach this table too: only this test's accounts are counted.
    let events: Vec<Value> = app
        .billing_events(Duration::from_secs(1), |_| false)
        .await
        .into_iter()
        .filter(|e| ["ann", "ben", "cat"].iter().any(|a| e["account"] == *a))
        .collect();
    for (kind, account) in wanted {
        assert_eq!(
            of_kind(&events, kind, account).len(),
            1,
            "one {kind} for {account}: {events:#?}"
        );
    }
    assert_eq!(events.len(), wanted.len(), "nothing else: {events:#?}");
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");

    let paid = of_kind(&events, "payment.succeeded", "ann")[0];
    assert_eq!(paid["data"]["paymentIntentId"], intent.as_str());
    assert_eq!(paid["data"]["credits"], 1650);
    assert_eq!(paid["project"], "default");
    assert_eq!(paid["mode"], "test");
    let low = of_kind(&events, "credits.low", "ann")[0];
    assert_eq!(low["data"]["balance"], 450);
    assert_eq!(low["data"]["threshold"], 500);
    let depleted = of_kind(&events, "credits.depleted", "ann")[0];
    assert_eq!(depleted["data"]["balance"], 0);
    let limit = of_kind(&events, "limit.reached", "cat")[0];
    assert_eq!(limit["data"]["metric"], "requests");
    assert_eq!(limit["data"]["limit"], 2);
}

#[tokio::test]
async fn a_subscription_publishes_its_plan_changes_and_its_cancellation() {
    let app = app_with_events().await;
    subscribe_active(&app, "dora", "starter").await;
    let now = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "dora",
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(now.status, 200, "{}", now.body);
    assert_eq!(my_subscription(&app, "dora").await["planId"], "free");

    let wanted = [
        ("plan.changed", "dora"),
        ("payment.succeeded", "dora"),
        ("subscription.canceled", "dora"),
    ];
    app.billing_events(Duration::from_secs(30), |events| {
        has_all(events, &wanted) && of_kind(events, "plan.changed", "dora").len() >= 2
    })
    .await;
    let events = app.billing_events(Duration::from_secs(1), |_| false).await;
    let changes = of_kind(&events, "plan.changed", "dora");
    assert_eq!(changes.len(), 2, "{events:#?}");
    let change = |from: Value, to: Value| {
        changes
            .iter()
            .filter(|c| c["data"]["previousPlanId"] == from && c["data"]["planId"] == to)
            .count()
    };
    assert_eq!(change(Value::Null, json!("starter")), 1, "{changes:#?}");
    assert_eq!(change(json!("starter"), Value::Null), 1, "{changes:#?}");
    assert_eq!(of_kind(&events, "subscription.canceled", "dora").len(), 1);
    assert_eq!(of_kind(&events, "payment.succeeded", "dora").len(), 1);
}

#[tokio::test]
async fn a_late_failed_invoice_event_never_undoes_a_paid_one_nor_says_it_twice() {
    let app = app_with_events().await;
    let subscription = subscribe_active(&app, "gwen", "starter").await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let invoice_id = sub["latest_invoice"].as_str().expect("invoice").to_owned();
    let invoice = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    // Paid, then a stale payment_failed of an earlier attempt, then paid again (a retry).
    for kind in [
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.payment_failed",
    ] {
        let reply = app.deliver_event(kind, &invoice).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
    }
    let payments = app
        .get("/api/v1/payments/stripe/my-payments", Some("gwen"))
        .await;
    assert_eq!(payments.status, 200, "{}", payments.body);
    let lines = payments.body["data"].as_array().expect("list");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], "paid", "{lines:?}");
    app.billing_events(Duration::from_secs(30), |events| {
        !of_kind(events, "payment.succeeded", "gwen").is_empty()
    })
    .await;
    let events = app.billing_events(Duration::from_secs(2), |_| false).await;
    assert_eq!(
        of_kind(&events, "payment.succeeded", "gwen").len(),
        1,
        "{events:#?}"
    );
    assert!(
        of_kind(&events, "payment.failed", "gwen").is_empty(),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_second_live_subscription_is_canceled_refunded_and_said_once() {
    let app = app_with_events().await;
    let kept = subscribe_active(&app, "hana", "starter").await;
    let customer = stripe_get(&app, &format!("/v1/subscriptions/{kept}")).await["customer"]
        .as_str()
        .expect("customer")
        .to_owned();
    app.default_card(&customer, "4242424242424242").await;
    // A second subscription made past Coffer's doors, as a second completed Checkout would be.
    let made = made_past_the_doors(&app, &customer, "hana", "active").await;
    let second = made["id"].as_str().expect("id").to_owned();
    for _ in 0..2 {
        let reply = app
            .deliver_event("customer.subscription.created", &made)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // The first one is kept; the second is canceled at Stripe and its payment given back.
    let now = my_subscription(&app, "hana").await;
    assert_eq!(now["subscriptionId"], kept.as_str(), "{now}");
    assert_eq!(now["planId"], "starter");
    let at_stripe = stripe_get(&app, &format!("/v1/subscriptions/{second}")).await;
    assert_eq!(at_stripe["status"], "canceled", "{at_stripe}");
    let invoice_id = at_stripe["latest_invoice"].as_str().expect("invoice");
    let invoice = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    let intent = app
        .stripe_intent(invoice["payment_intent"].as_str().expect("intent"))
        .await;
    assert_eq!(
        intent["latest_charge"]["amount_refunded"], intent["amount"],
        "{intent}"
    );
    // Its own event again (it is canceled now) changes nothing.
    let again = app
        .deliver_event("customer.subscription.deleted", &at_stripe)
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        my_subscription(&app, "hana").await["subscriptionId"],
        kept.as_str()
    );
    app.billing_events(Duration::from_secs(30), |events| {
        !of_kind(events, "subscription.duplicate_canceled", "hana").is_empty()
    })
    .await;
    let events = app.billing_events(Duration::from_secs(2), |_| false).await;
    let said = of_kind(&events, "subscription.duplicate_canceled", "hana");
    assert_eq!(said.len(), 1, "{events:#?}");
    assert_eq!(said[0]["data"]["subscriptionId"], second.as_str());
    assert_eq!(said[0]["data"]["keptSubscriptionId"], kept.as_str());
    assert_eq!(said[0]["data"]["refunded"], intent["amount"]);
}

#[tokio::test]
async fn a_retried_stream_batch_publishes_the_same_ids_again() {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    // A batch as Lambda hands it over: the first refusal of a period, one stream record.
    let batch = |event_id: &str| {
        json!({"Records": [{
            "eventID": event_id,
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_800_000_000,
                "NewImage": {
                    "pk": {"S": "LIMIT#fay#requests#m2027-01"}, "sk": {"S": "LIMIT"},
                    "account": {"S": "fay"}, "metric": {"S": "requests"},
                    "period": {"S": "m2027-01"}, "limit": {"N": "1000"}
                }
            }
        }]})
    };
    let publish = |event: Value| {
        let app = &app;
        async move {
            let batch = coffer::calls::as_function(
                "billing-events",
                coffer::services::events::publish_stream_event(&app.app.app, &event),
            )
            .await;
            assert!(batch.failed.is_none(), "{batch:?}");
            batch.figures
        }
    };
    // Lambda retries a batch whose function failed after sending: the same record again.
    assert_eq!(publish(batch("rec-1")).await["published"], 1);
    assert_eq!(publish(batch("rec-1")).await["published"], 1);
    assert_eq!(publish(batch("rec-2")).await["published"], 1);
    let events = app
        .billing_events(Duration::from_secs(20), |events| events.len() >= 3)
        .await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(events.iter().all(|e| e["type"] == "limit.reached"));
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 2, "the retry repeats its id: {ids:?}");
    assert_eq!(events[0]["occurredAt"], "2027-01-15T08:00:00Z");
}

/// The URL of the local failure queue of a stream function for the test's table.
async fn failure_queue(app: &TestApp, consumer: Consumer) -> String {
    let sdk = coffer::app::load_sdk_config().await;
    coffer_dev::setup::queue(
        &coffer_dev::setup::sqs_client(&sdk),
        &consumer.failure_queue_name(&app.table),
    )
    .await
    .expect("the failure queue")
}

/// How many pointers wait in a queue (visible or taken by a reader).
async fn waiting(queue: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as Attr;
    let sdk = coffer::app::load_sdk_config().await;
    let attributes = coffer_dev::setup::sqs_client(&sdk)
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let count = |name: &Attr| {
        attributes
            .attributes()
            .and_then(|a| a.get(name))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    count(&Attr::ApproximateNumberOfMessages) + count(&Attr::ApproximateNumberOfMessagesNotVisible)
}

#[tokio::test]
async fn a_record_that_keeps_failing_is_parked_while_the_records_behind_it_flow_and_replays_once_fixed(
) {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    app.follow_stream_with(Delivery {
        retries: 2,
        first_backoff: Duration::from_millis(100),
    })
    .await;
    let store = &app.app.app.store;
    let put = |item: HashMap<String, AttributeValue>| async move {
        store
            .client()
            .put_item()
            .table_name(store.table())
            .set_item(Some(item))
            .send()
            .await
            .expect("put an item");
    };
    // An empty map, which DynamoDB Local's stream writes as `{}` (the SDK cannot parse it):
    // it must not stop the follower.
    put(HashMap::from([
        ("pk".to_owned(), AttributeValue::S("JUNK".into())),
        ("sk".to_owned(), AttributeValue::S("JUNK".into())),
        ("empty".to_owned(), AttributeValue::M(HashMap::new())),
    ]))
    .await;
    // Settings no code can read: every balance change of the scope fails to publish.
    let readable = store
        .client()
        .get_item()
        .table_name(store.table())
        .set_key(Some(store.keys().settings()))
        .send()
        .await
        .expect("read the settings")
        .item;
    let mut settings = store.keys().settings();
    settings.insert("doc".into(), AttributeValue::S("{not json".into()));
    put(settings).await;

    // Ann buys and spends it all: her balance records keep failing (credits.depleted waits).
    app.bought("ann", "starter").await;
    let all = app.balance("ann").await;
    assert_eq!(app.spend("ann", json!(all), "all").await.status, 200);
    // Bob buys after her: his payment is published while hers are parked.
    app.bought("bob", "starter").await;
    let wanted = [("payment.succeeded", "ann"), ("payment.succeeded", "bob")];
    let events = app
        .billing_events(Duration::from_secs(30), |events| has_all(events, &wanted))
        .await;
    assert!(has_all(&events, &wanted), "{events:#?}");
    let parked = failure_queue(&app, Consumer::BillingEvents).await;
    assert!(
        settle(
            || async { (waiting(&parked).await >= 1).then_some(()) },
            async {}
        )
        .await
        .is_some(),
        "the failing records are parked"
    );
    assert!(of_kind(&events, "credits.depleted", "ann").is_empty());
    // The stats function counts every record: its own queue stays empty.
    assert_eq!(
        waiting(&failure_queue(&app, Consumer::Stats).await).await,
        0
    );

    // The fix is deployed (the settings are readable again), then the operator replays.
    match readable {
        Some(item) => put(item).await,
        None => {
            store
                .client()
                .delete_item()
                .table_name(store.table())
                .set_key(Some(store.keys().settings()))
                .send()
                .await
                .expect("delete the settings");
        }
    }
    let sdk = coffer::app::load_sdk_config().await;
    let replay =
        coffer_dev::streams::replay_parked(&app.app.app, &sdk, Consumer::BillingEvents, &parked)
            .await
            .expect("replay");
    assert!(replay.replayed >= 1, "{replay:?}");
    assert_eq!((replay.still_failing, replay.gone), (0, 0), "{replay:?}");
    assert_eq!(waiting(&parked).await, 0);
    let events = app
        .billing_events(Duration::from_secs(20), |events| {
            !of_kind(events, "credits.depleted", "ann").is_empty()
        })
        .await;
    assert_eq!(
        of_kind(&events, "credits.depleted", "ann").len(),
        1,
        "{events:#?}"
    );
    // A second replay finds nothing.
    let again =
        coffer_dev::streams::replay_parked(&app.app.app, &sdk, Consumer::BillingEvents, &parked)
            .await
            .expect("replay");
    assert_eq!(again.replayed, 0);
}

#[tokio::test]
async fn a_balance_wandering_around_its_threshold_says_low_once_and_recovered_above_the_margin() {
    let app = app_with_events().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let settings = coffer::domain::projects::ProjectSettings {
        credits_low_threshold: Some(500),
        credits_low_margin: Some(100),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");
    // Ida's own threshold, 8.00, is over the project's.
    let ida = coffer::domain::records::UserId::parse("ida").expect("user");
    store
        .set_account_threshold(&ida, Some(800))
        .await
        .expect("threshold");
    let grant = |user: &'static str, amount: f64, key: &'static str| {
        let app = &app;
        async move {
            let body =
                json!({"userId": user, "amount": amount, "reason": "top", "idempotencyKey": key});
            let reply = app.backend_grant(&body).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    grant("hal", 10.0, "g1").await;
    grant("ida", 10.0, "g1").await;
    // 10.00 → 4.50 (low) → 5.20 → 4.80 → 5.90 (under 5.00 + 1.00) → 6.00 (recovered) → 4.00 (low).
    assert_eq!(app.spend("hal", json!(5.5), "s1").await.status, 200);
    grant("hal", 0.7, "g2").await;
    assert_eq!(app.spend("hal", json!(0.4), "s2").await.status, 200);
    grant("hal", 1.1, "g3").await;
    grant("hal", 0.1, "g4").await;
    assert_eq!(app.spend("hal", json!(2), "s3").await.status, 200);
    // Ida: 10.00 → 7.00, under her own 8.00 (not the project's 5.00).
    assert_eq!(app.spend("ida", json!(3), "s1").await.status, 200);

    let said = |events: &[Value], account: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["account"] == account)
            .filter_map(|e| e["type"].as_str())
            .filter(|t| t.starts_with("credits."))
            .map(str::to_owned)
            .collect()
    };
    app.billing_events(Duration::from_secs(30), |events| {
        said(events, "hal").len() >= 3 && !said(events, "ida").is_empty()
    })
    .await;
    let events = app.billing_events(Duration::from_secs(2), |_| false).await;
    assert_eq!(
        said(&events, "hal"),
        ["credits.low", "credits.recovered", "credits.low"],
        "{events:#?}"
    );
    assert_eq!(said(&events, "ida"), ["credits.low"], "{events:#?}");
}
