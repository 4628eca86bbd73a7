//! The scale harness (`scripts/bench-scale.sh`; ignored by the normal test run). Each job runs
//! over a hundred times the data its over-the-wire test uses, written into DynamoDB Local,
//! localstripe or the Stripe test double, with a short deadline per run, so that every job is
//! cut short and resumed many times. Each checks that nothing was lost or done twice, and
//! prints its throughput (the figures in docs/operations.md, Capacity).
//!
//! Sizes: `SCALE_RECORDS` (metered records per metering case, default 20,000),
//! `SCALE_CUSTOMERS` (default 10,000), `SCALE_INTENTS` (other PaymentIntents, default 2,000),
//! `SCALE_MISSED` (purchases the webhook missed, default 50), `SCALE_ACCOUNTS` (default 10,000),
//! `SCALE_OVERAGE` (usage events in overage on one account, default 2,000, sent
//! `SCALE_OVERAGE_INFLIGHT` at a time, default 16), `SCALE_RUN_MS`
//! (each run's budget, default 2,000).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use coffer::domain::records::UserId;
use coffer::services::budget::Budget;
use coffer::services::metering::{report_usage, StopAt};
use coffer_dev::token::issue_service;
use integration_tests::seed::Metered;
use integration_tests::{join_all, spawn_app, spawn_app_with, SecretSetup, TestApp, JWT_SECRET};
use serde_json::{json, Value};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_budget() -> Budget {
    Budget::lasting(Duration::from_millis(env_num("SCALE_RUN_MS", 2_000) as u64))
}

/// One line of figures, as the report prints it.
fn figures(job: &str, fields: Value) {
    println!("SCALE {job} {fields}");
}

async fn double_list(app: &TestApp, path: &str) -> Vec<Value> {
    app.http
        .get(format!("{}{path}", app.double_base))
        .send()
        .await
        .expect("the double")
        .json()
        .await
        .expect("json")
}

/// Metered usage of `customers` customers, `records` in all, through the reporter in runs of
/// `SCALE_RUN_MS`; every unit billed once to its customer, no identifier sent twice.
async fn metering_case(case: &str, customers: usize, records: usize) {
    let app = spawn_app().await;
    let scope = app.app.app.default_scope();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let usage: Vec<Metered> = (0..records)
        .map(|i| {
            let customer = format!("cus_{case}{:05}", i % customers);
            *expected.entry(customer.clone()).or_insert(0) += 1;
            Metered {
                customer,
                quantity: 1,
            }
        })
        .collect();
    let seeded_in = app.seed_metered_usage(&scope, &usage).await;
    let started = Instant::now();
    let (mut runs, mut events, mut stamped) = (0, 0, 0);
    loop {
        runs += 1;
        let report = coffer::calls::as_function(
            "meter-usage",
            report_usage(&app.app.app, run_budget(), StopAt::Never),
        )
        .await
        .expect("a run");
        events += report.events_sent;
        stamped += report.records_stamped;
        if report.complete {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    let mut billed: BTreeMap<String, i64> = BTreeMap::new();
    for event in double_list(&app, "/_double/meter_events").await {
        let customer = event["payload"]["stripe_customer_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let value: i64 = event["payload"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *billed.entry(customer).or_insert(0) += value;
    }
    assert_eq!(billed, expected, "every unit billed once, to its customer");
    let mut sends: HashMap<String, usize> = HashMap::new();
    for request in double_list(&app, "/_double/requests").await {
        if request["path"] == "/v1/billing/meter_events" {
            *sends
                .entry(
                    request["params"]["identifier"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
                .or_insert(0) += 1;
        }
    }
    assert!(sends.values().all(|&n| n == 1), "no identifier sent twice");
    assert_eq!(stamped, records, "every billed record given its expiry");
    figures(
        &format!("metering/{case}"),
        json!({
            "records": records, "customers": customers, "seedSeconds": seeded_in,
            "runs": runs, "seconds": took, "meterEvents": events,
            "recordsPerSecond": records as f64 / took, "eventsPerSecond": events as f64 / took,
        }),
    );
}

#[tokio::test]
#[ignore = "scale harness: scripts/bench-scale.sh"]
async fn scale_metering_one_hot_customer() {
    metering_case("hot", 1, env_num("SCALE_RECORDS", 20_000)).await;
}

#[tokio::test]
#[ignore = "scale harness: scripts/bench-scale.sh"]
async fn scale_metering_many_customers() {
    let customers = env_num("SCALE_CUSTOMERS", 10_000);
    metering_case(
        "many",
        customers,
        env_num("SCALE_RECORDS", 20_000).max(customers),
    )
    .await;
}

#[tokio::test]
#[ignore = "scale harness: scripts/bench-scale.sh"]
async fn scale_reconcile() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..Default::default()
    })
    .await;
    let others = env_num("SCALE_INTENTS", 2_000);
    let missed = env_num("SCALE_MISSED", 50);
    let seeded = Instant::now();
    for chunk in (0..others).collect::<Vec<_>>().chunks(16) {
        let made = join_all(
            chunk
                .iter()
                .map(|_| {
                    app.stripe_post(
                        "/v1/payment_intents",
                        &[("amount", "700"), ("currency", "usd")],
                    )
                })
                .collect(),
        )
        .await;
        assert!(made.iter().all(|r| r.status == 200));
    }
    let mut paid = Vec::new();
    for i in 0..missed {
        let user = format!("rec{i:04}");
        let intent = app.create_intent(&user, "starter").await;
        assert_eq!(
            app.pay_with_card(&intent, "4242424242424242").await.status,
            200
        );
        paid.push(intent);
    }
    let seed_seconds = seeded.elapsed().as_secs_f64();
    let started = Instant::now();
    let (mut runs, mut pages, mut listed) = (0, 0, 0);
    let mut credited = Vec::new();
    loop {
        runs += 1;
        let report = coffer::calls::as_function(
            "reconcile",
            coffer::services::reconcile::reconcile(&app.app.app, 3600, run_budget()),
        )
        .await
        .expect("a run");
        pages += report.pages;
        listed += report.listed;
        credited.extend(report.credited);
        if report.complete {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    credited.sort();
    paid.sort();
    assert_eq!(credited, paid, "each missed payment credited once");
    for i in 0..missed {
        assert_eq!(app.balance(&format!("rec{i:04}")).await, 5.0);
    }
    figures(
        "reconcile",
        json!({
            "intents": listed, "missed": missed, "seedSeconds": seed_seconds, "runs": runs,
            "pages": pages, "seconds": took, "intentsPerSecond": listed as f64 / took,
        }),
    );
}

/// `SCALE_ACCOUNTS` accounts with a grant and a spend each.
async fn accounts(app: &TestApp) -> usize {
    let count = env_num("SCALE_ACCOUNTS", 10_000);
    let scope = app.app.app.default_scope();
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        join_all(
            chunk
                .iter()
                .map(|i| {
                    let scope = &scope;
                    async move {
                        let user = UserId::parse(&format!("acct{i:06}")).expect("id");
                        coffer::services::credits::grant(
                            &app.app.app,
                            scope,
                            &user,
                            1_000,
                            "seed",
                            &format!("g{i}"),
                        )
                        .await
                        .expect("grant");
                        coffer::services::credits::spend(
                            &app.app.app,
                            scope,
                            &user,
                            &coffer::domain::idempotency::Spender::User,
                            100,
                            "seed",
                            &format!("s{i}"),
                        )
                        .await
                        .expect("spend");
                    }
                })
                .collect(),
        )
        .await;
    }
    count
}

#[tokio::test]
#[ignore = "scale harness: scripts/bench-scale.sh"]
async fn scale_ledger_check_and_stats_backfill() {
    let app = spawn_app().await;
    let seeded = Instant::now();
    let count = accounts(&app).await;
    let seed_seconds = seeded.elapsed().as_secs_f64();

    let started = Instant::now();
    let (mut runs, mut items, mut judged) = (0, 0, 0);
    loop {
        runs += 1;
        let report = coffer::services::ledger_check::check_ledger(
            &app.app.app,
            coffer::services::ledger_check::Pass::Resume,
            run_budget(),
            Duration::from_millis(200),
        )
        .await
        .expect("a run");
        assert!(report.is_clean(), "{report:?}");
        items += report.items;
        judged += report.accounts;
        if report.complete {
            assert!(report.pass_accounts as usize >= count);
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    figures(
        "ledger-check",
        json!({
            "accounts": count, "items": items, "judged": judged, "seedSeconds": seed_seconds,
            "runs": runs, "seconds": took, "itemsPerSecond": items as f64 / took,
            "accountsPerSecond": judged as f64 / took,
        }),
    );

    let started = Instant::now();
    let report = coffer::services::stats_backfill::backfill_stats(
        &app.app.app,
        Duration::from_millis(500),
        Duration::from_millis(500),
    )
    .await
    .expect("the backfill");
    let took = started.elapsed().as_secs_f64();
    let stats = app
        .app
        .app
        .store_for(&app.app.app.default_scope())
        .stats()
        .await
        .expect("stats");
    let count_i64 = i64::try_from(count).expect("count");
    assert_eq!(stats.0.get("credits_spent"), Some(&(100 * count_i64)));
    assert_eq!(stats.0.get("credits_outstanding"), Some(&(900 * count_i64)));
    figures(
        "stats-backfill",
        json!({
            "entries": report.entries, "pages": report.pages, "seconds": took,
            "entriesPerSecond": report.entries as f64 / (took - 1.0).max(0.001),
        }),
    );
}

#[tokio::test]
#[ignore = "scale harness: scripts/bench-scale.sh"]
async fn scale_overage_on_one_balance() {
    let app = spawn_app().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let free = store.plan("free").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        limits: Some(BTreeMap::from([("requests".to_owned(), 1)])),
        overage_prices: Some(BTreeMap::from([("requests".to_owned(), 1)])),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("free", Some(free), update).expect("plan"))
        .await
        .expect("save");
    let events = env_num("SCALE_OVERAGE", 2_000);
    let user = UserId::parse("overage-hot").expect("id");
    coffer::services::credits::grant(
        &app.app.app,
        &app.app.app.default_scope(),
        &user,
        i64::try_from(events * 2).expect("small"),
        "seed",
        "overage-seed",
    )
    .await
    .expect("grant");
    let token = issue_service(JWT_SECRET, "app-backend", 3600).expect("token");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let in_flight = env_num("SCALE_OVERAGE_INFLIGHT", 16);
    for chunk in (0..events).collect::<Vec<_>>().chunks(in_flight) {
        let replies = join_all(
            chunk
                .iter()
                .map(|i| {
                    let token = &token;
                    let app = &app;
                    async move {
                        let at = Instant::now();
                        let body = json!({"userId": "overage-hot", "metric": "requests", "quantity": 1, "idempotencyKey": format!("ov-{i}")});
                        let reply = app.call("POST", "/internal/usage", Some(token), Some(&body)).await;
                        (reply.status, at.elapsed())
                    }
                })
                .collect(),
        )
        .await;
        for (status, latency) in replies {
            *statuses.entry(status).or_insert(0) += 1;
            latencies.push(latency);
        }
    }
    let took = started.elapsed().as_secs_f64();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize].as_millis();
    let allowed = statuses.get(&200).copied().unwrap_or(0);
    // Every allowed event beyond the one included paid one credit unit, exactly.
    let balance = app.balance("overage-hot").await;
    let paid = i64::try_from(events * 2).expect("small") - (balance * 100.0).round() as i64;
    assert_eq!(
        paid,
        i64::try_from(allowed).expect("small") - 1,
        "{statuses:?}"
    );
    app.assert_invariants().await;
    figures(
        "overage-one-balance",
        json!({
            "events": events, "inFlight": in_flight, "statuses": statuses, "seconds": took,
            "allowedPerSecond": allowed as f64 / took, "p50ms": p(0.5), "p99ms": p(0.99),
        }),
    );
}
