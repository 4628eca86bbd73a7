//! Metered billing over the wire: usage of a metered plan is recorded, then the meter reporter
//! sends it to the Stripe test double's `POST /v1/billing/meter_events` (localstripe has no
//! meters), which counts an identifier once as Stripe does.

use std::collections::BTreeMap;

use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use coffer::services::metering::{report_usage, StopAt};
use coffer_dev::token::issue_service;
use integration_tests::{join_all, spawn_app, TestApp, JWT_SECRET};
use serde_json::{json, Value};

use crate::subscriptions::subscribe_active;

async fn use_requests(app: &TestApp, user: &str, quantity: i64, key: &str) {
    let token = issue_service(JWT_SECRET, "app-backend", 60).expect("service token");
    let body =
        json!({"userId": user, "metric": "requests", "quantity": quantity, "idempotencyKey": key});
    let reply = app
        .call("POST", "/internal/usage", Some(&token), Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

async fn double_get(app: &TestApp, path: &str) -> Vec<Value> {
    app.http
        .get(format!("{}{path}", app.double_base))
        .send()
        .await
        .expect("the double answers")
        .json::<Vec<Value>>()
        .await
        .expect("a JSON list")
}

/// The units the double accepted (each identifier once), and how many sends it was asked.
async fn at_stripe(app: &TestApp) -> (i64, usize, usize) {
    let accepted = double_get(app, "/_double/meter_events").await;
    let units = accepted
        .iter()
        .map(|e| {
            assert_eq!(e["event_name"], "api_requests", "{e}");
            e["payload"]["value"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .expect("a whole value")
        })
        .sum();
    let sends = double_get(app, "/_double/requests")
        .await
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .count();
    (units, accepted.len(), sends)
}

#[tokio::test]
async fn metered_usage_reaches_stripe_once_across_a_crash_between_sending_and_saving() {
    let app = spawn_app().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let starter = store.plan("starter").await.expect("read").expect("seeded");
    let metered = PlanUpdate {
        meter_events: Some(BTreeMap::from([(
            "requests".to_owned(),
            "api_requests".to_owned(),
        )])),
        // A metered metric is billed by Stripe, never also in credits.
        overage_prices: Some(BTreeMap::new()),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("starter", Some(starter), metered).expect("plan"))
        .await
        .expect("save");
    subscribe_active(&app, "mia", "starter").await;
    // The free plan is not metered: this usage is never reported.
    use_requests(&app, "nat", 3, "n1").await;

    // 1 + 2 + … + 12 = 78 units, at once, spread over the meter shards by their keys.
    let app_ref = &app;
    join_all(
        (1..=12)
            .map(|q| async move { use_requests(app_ref, "mia", q, &format!("m{q}")).await })
            .collect(),
    )
    .await;
    // A replayed key records nothing more.
    use_requests(&app, "mia", 5, "m5").await;

    // The run sends its first batch, then dies before the watermark moves.
    let crashed = coffer::calls::as_function(
        "meter-usage",
        report_usage(&app.app.app, StopAt::AfterFirstSend),
    )
    .await;
    assert!(crashed.is_err(), "the run stopped after sending");
    let (units_after_crash, events_after_crash, sends_after_crash) = at_stripe(&app).await;
    assert!(
        (1..78).contains(&units_after_crash),
        "the first batch only: {units_after_crash}"
    );

    // More usage while the batch is pending.
    for q in [2, 2, 2, 2] {
        use_requests(&app, "mia", q, &format!("late-{}", uuid::Uuid::new_v4())).await;
    }

    // The next run sends the pending batch again (same identifiers: Stripe keeps the first),
    // then everything else.
    let report =
        coffer::calls::as_function("meter-usage", report_usage(&app.app.app, StopAt::Never))
            .await
            .expect("the run");
    assert_eq!(report.resent, 1, "{report:?}");
    let (units, events, sends) = at_stripe(&app).await;
    assert_eq!(units, 78 + 8, "every unit once");
    assert_eq!(
        sends,
        events + 1,
        "one event was sent twice, and counted once"
    );
    assert!(events > events_after_crash && sends > sends_after_crash);
    // Every event bills mia's customer.
    let customers: std::collections::HashSet<String> = double_get(&app, "/_double/meter_events")
        .await
        .iter()
        .filter_map(|e| {
            e["payload"]["stripe_customer_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert!(customers.iter().all(|c| c.starts_with("cus_")));

    // Nothing new: a run sends nothing.
    let idle = coffer::calls::as_function("meter-usage", report_usage(&app.app.app, StopAt::Never))
        .await
        .expect("the run");
    assert_eq!((idle.events_sent, idle.resent), (0, 0), "{idle:?}");
    assert_eq!(at_stripe(&app).await.0, 86);
}
