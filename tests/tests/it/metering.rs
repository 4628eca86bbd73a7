//! Metered billing over the wire: usage of a metered plan is recorded, then the meter reporter
//! sends it to the Stripe test double's `POST /v1/billing/meter_events` (localstripe has no
//! meters), which counts an identifier once as Stripe does.

use std::collections::BTreeMap;

use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use std::collections::HashMap;
use std::time::Duration;

use coffer::domain::scope::{Mode, ProjectId, Scope};
use coffer::services::budget::Budget;
use coffer::services::metering::{report_usage, MeterReport, StopAt};
use coffer_dev::token::issue_service;
use integration_tests::seed::Metered;
use integration_tests::{
    join_all, spawn_app, TestApp, JWT_SECRET, METERED_PROJECT, SECRET_REFRESH_SECS, STRIPE_KEY,
};
use serde_json::{json, Value};

use crate::subscriptions::subscribe_active;

/// A run's budget in these tests: far more than they need.
fn minute() -> Budget {
    Budget::lasting(Duration::from_secs(60))
}

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
        report_usage(&app.app.app, minute(), StopAt::AfterFirstSend),
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
    let report = coffer::calls::as_function(
        "meter-usage",
        report_usage(&app.app.app, minute(), StopAt::Never),
    )
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
    let idle = coffer::calls::as_function(
        "meter-usage",
        report_usage(&app.app.app, minute(), StopAt::Never),
    )
    .await
    .expect("the run");
    assert_eq!((idle.events_sent, idle.resent), (0, 0), "{idle:?}");
    assert_eq!(at_stripe(&app).await.0, 86);
}

/// The units the double accepted per customer, and how many times it was sent each identifier
/// (accepted or refused as a duplicate).
async fn billed(app: &TestApp) -> (BTreeMap<String, i64>, HashMap<String, usize>) {
    let mut units = BTreeMap::new();
    for event in double_get(app, "/_double/meter_events").await {
        let customer = event["payload"]["stripe_customer_id"]
            .as_str()
            .expect("a customer")
            .to_owned();
        let value: i64 = event["payload"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a whole value");
        *units.entry(customer).or_insert(0) += value;
    }
    let mut sends = HashMap::new();
    for request in double_get(app, "/_double/requests").await {
        if request["path"] == "/v1/billing/meter_events" {
            let identifier = request["params"]["identifier"]
                .as_str()
                .expect("an identifier")
                .to_owned();
            *sends.entry(identifier).or_insert(0) += 1;
        }
    }
    (units, sends)
}

/// Usage of `customers` customers (named `<prefix><n>`), each `records` records of n+1 units;
/// what each customer must be billed.
fn usage_of(
    prefix: &str,
    customers: usize,
    records: usize,
) -> (Vec<Metered>, BTreeMap<String, i64>) {
    let mut usage = Vec::new();
    let mut expected = BTreeMap::new();
    for c in 0..customers {
        let customer = format!("{prefix}{c:05}");
        for _ in 0..records {
            let quantity = i64::try_from(c % 7 + 1).expect("small");
            usage.push(Metered {
                customer: customer.clone(),
                quantity,
            });
            *expected.entry(customer.clone()).or_insert(0) += quantity;
        }
    }
    (usage, expected)
}

/// The metered records of every shard: how many, and how many carry an expiry.
async fn records_with_expiry(app: &TestApp) -> (usize, usize) {
    let client = app.app.app.store.client();
    let (mut all, mut expiring) = (0, 0);
    for shard in 0..coffer::domain::metering::METER_SHARDS {
        let mut pages = client
            .query()
            .table_name(&app.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(coffer::adapters::store::meter_pk(
                    shard,
                )),
            )
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.expect("a record");
            all += 1;
            expiring += usize::from(item.contains_key("expiresAt"));
        }
    }
    (all, expiring)
}

async fn run(app: &TestApp, budget: Budget) -> MeterReport {
    coffer::calls::as_function(
        "meter-usage",
        report_usage(&app.app.app, budget, StopAt::Never),
    )
    .await
    .expect("the run")
}

#[tokio::test]
async fn a_run_cut_short_by_its_deadline_resumes_where_it_stopped_losing_nothing_and_sending_nothing_twice(
) {
    let app = spawn_app().await;
    let scope = app.app.app.default_scope();
    // 150 customers, 3 records each, spread over the 8 shards: about 400 meter events.
    let (usage, expected) = usage_of("cus_many", 150, 3);
    app.seed_metered_usage(&scope, &usage).await;
    let (records, expiring) = records_with_expiry(&app).await;
    assert_eq!(records, usage.len());
    assert_eq!(expiring, 0, "no metered record expires before it is billed");

    // Each run's time runs out after 50 sends.
    let mut runs = 0;
    let mut sent = 0;
    let mut starts = std::collections::BTreeSet::new();
    loop {
        runs += 1;
        assert!(runs < 40, "the runs make progress");
        starts.insert(app.app.app.store.meter_cursor().await.expect("cursor"));
        let report = run(&app, minute().with_max_sends(50)).await;
        assert!(report.events_sent <= 50, "{report:?}");
        sent += report.events_sent;
        if report.complete {
            break;
        }
        assert!(
            report.events_sent > 0,
            "a run cut short sent something: {report:?}"
        );
    }
    // Each run started where the last one stopped: the starts went round the shards.
    assert!(starts.len() > 3, "{starts:?}");
    assert!(runs > 3, "the work took several runs: {runs}");
    let (units, sends) = billed(&app).await;
    assert_eq!(units, expected, "every unit billed once, to its customer");
    assert!(
        sends.values().all(|&n| n == 1),
        "no event was sent twice: {:?}",
        sends.iter().filter(|(_, &n)| n > 1).collect::<Vec<_>>()
    );
    assert_eq!(sends.len(), sent, "every send was a new identifier");
    // Billed: every record now carries its expiry.
    assert_eq!(records_with_expiry(&app).await, (usage.len(), usage.len()));
    let idle = run(&app, minute()).await;
    assert_eq!((idle.events_sent, idle.complete), (0, true), "{idle:?}");
}

/// Gives a project's mode a secret holding `stripe_key`, as the developer API stores it.
async fn put_project_secret(app: &TestApp, scope: &Scope, stripe_key: &str) {
    let id = app
        .app
        .app
        .secret_id_for(scope)
        .expect("a project secret id");
    let sdk = coffer::app::load_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let value = json!({"stripeSecretKey": stripe_key, "webhookSecret": "whsec_meteredProjectSigning0123456789"})
        .to_string();
    let put = secrets
        .put_secret_value()
        .secret_id(&id)
        .secret_string(&value)
        .send()
        .await;
    if put.is_err() {
        secrets
            .create_secret()
            .name(&id)
            .secret_string(&value)
            .send()
            .await
            .expect("create the project secret");
    }
}

#[tokio::test]
async fn one_projects_refused_key_or_missing_configuration_holds_only_its_usage_until_it_is_fixed()
{
    let app = spawn_app().await;
    let own = app.app.app.default_scope();
    let metered = Scope::new(ProjectId::parse(METERED_PROJECT).expect("id"), Mode::Test);
    let unconfigured = Scope::new(ProjectId::parse("nokeys").expect("id"), Mode::Test);
    // The project's key was rolled at Stripe; the other project has no secret at all.
    put_project_secret(&app, &metered, "sk_test_metered_rolled_0123456789").await;
    let (own_usage, own_expected) = usage_of("cus_own", 40, 2);
    let (project_usage, project_expected) = usage_of("cus_prj", 30, 2);
    let (lost_usage, _) = usage_of("cus_nokeys", 5, 1);
    app.seed_metered_usage(&own, &own_usage).await;
    app.seed_metered_usage(&metered, &project_usage).await;
    app.seed_metered_usage(&unconfigured, &lost_usage).await;

    let first = run(&app, minute()).await;
    assert!(
        first.complete,
        "the other projects' shards went on: {first:?}"
    );
    assert!(
        first.held > 0 && first.holds_left == first.held,
        "{first:?}"
    );
    let (units, _) = billed(&app).await;
    assert_eq!(
        units, own_expected,
        "the deployment's usage is billed, the others' held"
    );

    // Still broken: a second run tries one held event per broken project and holds the rest.
    let second = run(&app, minute()).await;
    assert_eq!(second.holds_released, 0, "{second:?}");
    assert_eq!(second.holds_left, first.held, "{second:?}");
    assert!(
        second.events_sent <= 2,
        "one probe per broken project: {second:?}"
    );

    // The operator rotates the project's key: the next run bills its held usage, once.
    put_project_secret(&app, &metered, STRIPE_KEY).await;
    tokio::time::sleep(Duration::from_secs(SECRET_REFRESH_SECS + 1)).await;
    let fixed = run(&app, minute()).await;
    assert!(fixed.holds_released > 0, "{fixed:?}");
    let (units, sends) = billed(&app).await;
    let mut expected = own_expected.clone();
    expected.extend(project_expected);
    assert_eq!(
        units, expected,
        "the project's usage is billed, each unit once"
    );
    assert!(sends.values().all(|&n| n == 1), "{sends:?}");
    // The project with no key still waits, alarmed: its held events are counted.
    let held: usize = app
        .app
        .app
        .store
        .meter_holds(&unconfigured.key_prefix(Mode::Test), 100)
        .await
        .expect("holds")
        .len();
    let metered_left = app
        .app
        .app
        .store
        .meter_holds(&metered.key_prefix(Mode::Test), 100)
        .await
        .expect("holds");
    assert!(metered_left.is_empty(), "{metered_left:?}");
    assert_eq!(fixed.holds_left, held);
    assert!(held > 0);
}
