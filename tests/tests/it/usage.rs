//! Usage against plan allowances over the wire: recording, replays, dry runs, refusals, overage
//! paid in credits, upgrades within a period, and concurrent requests that never pass the limit
//! or spend credits that are not there.

use coffer::adapters::store::Store;
use coffer::domain::ledger::CreditMove;
use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use coffer_dev::token::issue_service;
use integration_tests::{join_all, spawn_app, Reply, TestApp, JWT_SECRET};
use serde_json::{json, Value};
use std::collections::BTreeMap;

async fn record(app: &TestApp, service: &str, body: Value) -> Reply {
    let token = issue_service(JWT_SECRET, service, 60).expect("service token");
    app.call("POST", "/internal/usage", Some(&token), Some(&body))
        .await
}

async fn use_requests(app: &TestApp, user: &str, quantity: i64, key: &str) -> Reply {
    record(
        app,
        "app-backend",
        json!({"userId": user, "metric": "requests", "quantity": quantity, "idempotencyKey": key}),
    )
    .await
}

async fn used(app: &TestApp, user: &str) -> Value {
    let reply = app.get("/api/usage", Some(user)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"]["metrics"][0].clone()
}

fn store(app: &TestApp) -> Store {
    app.app.app.store_for(&app.app.app.default_scope())
}

/// The free plan of this test's table with `limit` requests and, if given, an overage price
/// (credits in minor units per request).
async fn free_plan(app: &TestApp, limit: i64, overage: Option<i64>) {
    let store = store(app);
    let free = store.plan("free").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        limits: Some(BTreeMap::from([("requests".to_owned(), limit)])),
        overage_prices: Some(
            overage
                .map(|price| BTreeMap::from([("requests".to_owned(), price)]))
                .unwrap_or_default(),
        ),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("free", Some(free), update).expect("plan"))
        .await
        .expect("save");
}

async fn grant(app: &TestApp, user: &str, minor: i64) {
    let user = coffer::domain::records::UserId::parse(user).expect("user");
    store(app)
        .move_credits(
            &user,
            &format!("grant:{}", uuid::Uuid::new_v4().simple()),
            coffer::domain::ledger::EntryKind::Grant,
            &CreditMove {
                delta: minor,
                reason: "test credits".into(),
            },
            &coffer::domain::money::Currency::usd(),
            None,
        )
        .await
        .expect("grant");
}

#[tokio::test]
async fn usage_is_recorded_once_per_key_and_refused_beyond_the_allowance() {
    let app = spawn_app().await;
    let first = use_requests(&app, "uma", 10, "call-1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let data = &first.body["data"];
    assert_eq!(data["allowed"], true);
    assert_eq!(
        (
            data["used"].clone(),
            data["limit"].clone(),
            data["remaining"].clone()
        ),
        (json!(10), json!(1000), json!(990))
    );
    assert!(
        data["resetsAt"]
            .as_str()
            .expect("resetsAt")
            .ends_with("-01T00:00:00Z"),
        "{data}"
    );
    let again = use_requests(&app, "uma", 10, "call-1").await;
    assert_eq!(
        again.body["data"], first.body["data"],
        "the first answer again"
    );
    assert_eq!(used(&app, "uma").await["used"], 10);
    let other = use_requests(&app, "uma", 11, "call-1").await;
    assert_eq!(other.status, 409, "{}", other.body);

    let dry = record(
        &app,
        "app-backend",
        json!({"userId": "uma", "metric": "requests", "quantity": 5, "idempotencyKey": "dry-1", "dryRun": true}),
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["data"]["used"], 15);
    assert_eq!(
        used(&app, "uma").await["used"],
        10,
        "a dry run records nothing"
    );

    let over = use_requests(&app, "uma", 991, "call-2").await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.body["code"], "limit_reached");
    assert_eq!(
        used(&app, "uma").await["used"],
        10,
        "a refusal records nothing"
    );
    let rest = use_requests(&app, "uma", 990, "call-3").await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(rest.body["data"]["remaining"], 0);
    assert_eq!(use_requests(&app, "uma", 1, "call-4").await.status, 429);
}

#[tokio::test]
async fn concurrent_usage_never_passes_the_limit() {
    let app = spawn_app().await;
    free_plan(&app, 1000, None).await;
    let keys: Vec<String> = (0..60).map(|i| format!("burst-{i}")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|k| use_requests(&app, "vic", 20, k))
        .collect();
    let replies = join_all(calls).await;
    let allowed = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        (allowed, refused),
        (50, 10),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(used(&app, "vic").await["used"], 1000);
}

#[tokio::test]
async fn overage_is_paid_in_credits_atomically_and_never_beyond_the_balance() {
    let app = spawn_app().await;
    free_plan(&app, 100, Some(2)).await;
    grant(&app, "wes", 100).await;
    assert_eq!(use_requests(&app, "wes", 90, "o-1").await.status, 200);
    let spill = use_requests(&app, "wes", 20, "o-2").await;
    assert_eq!(spill.status, 200, "{}", spill.body);
    assert_eq!(
        spill.body["data"]["paidWithCredits"], 0.2,
        "10 beyond the allowance at 0.02"
    );
    assert_eq!(app.balance("wes").await, 0.8);
    assert_eq!(used(&app, "wes").await["used"], 100);
    let replay = use_requests(&app, "wes", 20, "o-2").await;
    assert_eq!(replay.body["data"], spill.body["data"]);
    assert_eq!(app.balance("wes").await, 0.8, "a replay pays nothing");
    let too_dear = use_requests(&app, "wes", 50, "o-3").await;
    assert_eq!(too_dear.status, 429, "{}", too_dear.body);
    assert_eq!(app.balance("wes").await, 0.8);

    // 0.80 left pays for 40 requests: of 10 concurrent requests of 10, exactly 4 go through.
    let keys: Vec<String> = (0..10).map(|i| format!("o-burst-{i}")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|k| use_requests(&app, "wes", 10, k))
        .collect();
    let replies = join_all(calls).await;
    let allowed = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        allowed,
        4,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(app.balance("wes").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_upgrade_raises_the_limit_in_the_same_period() {
    let app = spawn_app().await;
    assert_eq!(use_requests(&app, "xia", 1000, "u-1").await.status, 200);
    assert_eq!(use_requests(&app, "xia", 1, "u-2").await.status, 429);
    let user = coffer::domain::records::UserId::parse("xia").expect("user");
    // A paid purchase of the pro tier, as the webhook records it.
    let pro = store(&app)
        .plan("pro")
        .await
        .expect("read")
        .expect("seeded");
    let package = coffer::domain::packages::CreditPackage {
        id: "tier:pro".into(),
        name: "Pro".into(),
        description: String::new(),
        amount: 1000,
        credits: 1000,
        currency: coffer::domain::money::Currency::usd(),
        active: true,
    };
    let payment = coffer::domain::ledger::PaymentRecord::pending("pi_test_tier", user, &package, 0);
    store(&app)
        .record_payment_if_new(&payment)
        .await
        .expect("payment");
    let paid = coffer::domain::ledger::PaidIntent {
        intent_id: "pi_test_tier".into(),
        amount: 1000,
        currency: "usd".into(),
        user_id: Some("xia".into()),
        package_id: Some("tier:pro".into()),
        credits: Some(1000),
    };
    store(&app)
        .credit_purchase(&paid, "evt_test_tier")
        .await
        .expect("credited");
    store(&app)
        .sync_tier("pi_test_tier", &[pro])
        .await
        .expect("tier");
    // An instance that just refused an account refuses it from memory for 250 ms (a hot
    // account past its limit reads nothing); the upgrade counts from the next request on.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = use_requests(&app, "xia", 1, "u-3").await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.body["data"]["limit"], 50000);
    assert_eq!(after.body["data"]["used"], 1001);
}

#[tokio::test]
async fn bad_usage_requests_get_clear_4xx() {
    let app = spawn_app().await;
    let base = json!({"userId": "yan", "metric": "requests", "quantity": 1, "idempotencyKey": "k"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    for (body, status) in [
        (with("metric", json!("parsecs")), 400),
        (with("metric", json!("Bad Metric")), 400),
        (with("quantity", json!(0)), 400),
        (with("quantity", json!(-5)), 400),
        (with("quantity", json!(1e12)), 400),
        (with("quantity", json!("1")), 400),
        (with("quantity", json!(1.5)), 400),
        (with("idempotencyKey", Value::Null), 400),
        (with("userId", Value::Null), 400),
    ] {
        let reply = record(&app, "app-backend", body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.body["success"], false);
    }
    let stranger = record(&app, "someone-else", base.clone()).await;
    assert_eq!(stranger.status, 403, "{}", stranger.body);
    let user = app
        .call(
            "POST",
            "/internal/usage",
            Some(&app.token("yan")),
            Some(&base),
        )
        .await;
    assert_eq!(user.status, 403, "an end user's token is not the backend's");
}

#[tokio::test]
async fn dynamodb_down_is_503_and_records_nothing() {
    let app = integration_tests::spawn_app_with(integration_tests::SecretSetup {
        proxied: true,
        ..Default::default()
    })
    .await;
    let proxies = app.proxies.as_ref().expect("proxies");
    assert_eq!(use_requests(&app, "zed", 5, "d-1").await.status, 200);
    proxies.dynamodb.set(integration_tests::proxy::Mode::Refuse);
    let down = use_requests(&app, "zed", 7, "d-2").await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["code"], "service_unavailable");
    proxies.dynamodb.set(integration_tests::proxy::Mode::Pass);
    assert_eq!(
        used(&app, "zed").await["used"],
        5,
        "nothing recorded while it was down"
    );
    let retried = use_requests(&app, "zed", 7, "d-2").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["data"]["used"], 12);
}

#[tokio::test]
async fn a_downgrade_keeps_the_period_limit_and_applies_from_the_next_period() {
    use crate::subscriptions::{my_subscription, post, subscribe_active};
    let app = spawn_app().await;
    subscribe_active(&app, "zoe", "pro-monthly").await;
    let big = use_requests(&app, "zoe", 30_000, "z-1").await;
    assert_eq!(big.status, 200, "{}", big.body);
    assert_eq!(big.body["data"]["limit"], 100000);

    let down = post(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        "zoe",
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(down.status, 200, "{}", down.body);
    assert_eq!(down.body["data"]["effective"], "period_end");
    // This period keeps pro-monthly's 100,000: 30,000 used is over starter's 25,000, and more
    // is still allowed.
    let more = use_requests(&app, "zoe", 5_000, "z-2").await;
    assert_eq!(more.status, 200, "{}", more.body);
    assert_eq!(more.body["data"]["limit"], 100000);
    assert_eq!(more.body["data"]["used"], 35000);
    assert_eq!(used(&app, "zoe").await["limit"], 100000);

    // The period ends: Stripe renews the subscription on starter (the state Coffer stores
    // from its next read).
    let account = coffer::domain::records::UserId::parse("zoe").expect("user");
    let record = store(&app)
        .subscription_record(&account)
        .await
        .expect("read");
    let mut renewed = record.state.clone().expect("a state");
    assert_eq!(renewed.held_plan_id.as_deref(), Some("pro-monthly"));
    renewed.plan_id = "starter".into();
    renewed.price_id = "price_starter".into();
    renewed.held_plan_id = None;
    renewed.held_until = None;
    renewed.current_period_end += 30 * 24 * 3600;
    renewed.observed_at_ms += 1;
    assert!(store(&app)
        .write_subscription(&account, record.version, Some(&renewed), None)
        .await
        .expect("write"));
    assert_eq!(my_subscription(&app, "zoe").await["planId"], "starter");
    // An instance keeps an account's plan and period for USAGE_CACHE_MS (1 s): the renewal
    // counts from then on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let next = use_requests(&app, "zoe", 1, "z-3").await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        next.body["data"]["limit"], 25000,
        "starter from the new period"
    );
    assert_eq!(next.body["data"]["used"], 1, "a new period starts empty");
    // Past starter's 25,000, the new period pays starter's overage (0.01 each) in credits.
    let past = use_requests(&app, "zoe", 25_000, "z-4").await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!(past.body["data"]["limit"], 25000);
    assert_eq!(past.body["data"]["used"], 25000);
    assert_eq!(past.body["data"]["paidWithCredits"], 0.01, "{}", past.body);
}

#[tokio::test]
async fn leased_blocks_serve_two_instances_and_settle_so_the_limit_stays_exact() {
    let app = integration_tests::spawn_app_with(integration_tests::SecretSetup {
        short_usage_leases: true,
        ..Default::default()
    })
    .await;
    // 5,000 a month: 250 a shard, so blocks of 100 are leased.
    free_plan(&app, 5_000, None).await;
    let other = integration_tests::fresh_router(&app).await;
    let token = issue_service(JWT_SECRET, "app-backend", 60).expect("service token");
    let send = |base: String, key: String, quantity: i64| {
        let (http, token) = (app.http.clone(), token.clone());
        async move {
            let body = json!({"userId": "hot", "metric": "requests", "quantity": quantity, "idempotencyKey": key});
            let reply = http
                .post(format!("{base}/internal/usage"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent");
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.unwrap_or_default())
        }
    };
    // 200 small usages at once, half through each instance. A 503 means "try again" in the
    // contract, and a client does: DynamoDB Local (one JVM) may answer part of such a burst
    // after the SDK's 2 s read timeout on a busy machine. Every usage must end answered 200.
    let send_until_answered = |base: String, key: String| {
        let send = &send;
        async move {
            let mut reply = send(base.clone(), key.clone(), 1).await;
            for attempt in 1..=8u64 {
                if reply.0 != 503 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                reply = send(base.clone(), key.clone(), 1).await;
            }
            reply
        }
    };
    let replies = join_all(
        (0..200)
            .map(|i| {
                let base = if i % 2 == 0 {
                    app.base_url.clone()
                } else {
                    other.clone()
                };
                send_until_answered(base, format!("k{i}"))
            })
            .collect(),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|(status, _)| *status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let at_key = |items: &[coffer::adapters::store::Item], prefix: &str| {
        items
            .iter()
            .filter(|i| {
                coffer::adapters::store::get_s(i, "pk").is_some_and(|pk| pk.starts_with(prefix))
            })
            .count()
    };
    let items = app.app.app.store.scan_all().await.expect("scan");
    let leases = at_key(&items, "LEASE#hot#requests#");
    assert!(leases >= 2, "both instances leased blocks: {leases}");
    // Blocks are short here, so a few may be taken in turn; still far fewer shared writes than
    // usages.
    assert!(leases < 100, "a block serves many usages: {leases} leases");
    // A replay through the other instance answers the first answer.
    let again = send(other.clone(), "k1".into(), 1).await;
    assert_eq!(again.0, 200);
    assert_eq!(again.1["data"], replies[1].1["data"]);

    // While the other instance holds a live block, the rest of the month is neither refused
    // nor charged: 503, try again.
    assert_eq!(send(other.clone(), "k-last".into(), 1).await.0, 200);
    let early = send(app.base_url.clone(), "rest".into(), 4_799).await;
    assert_eq!(early.0, 503, "{:?}", early.1);
    assert_eq!(early.1["code"], "retry_later");

    // Both instances stop taking from their blocks; after the margin the scheduled settle
    // gives every block's unused units back from its records, and removes the leases.
    tokio::time::sleep(std::time::Duration::from_millis(
        integration_tests::SHORT_USAGE_LEASE_MS
            + integration_tests::SHORT_USAGE_LEASE_MARGIN_MS
            + 100,
    ))
    .await;
    let settled = coffer::services::usage::settle_ended_leases(&app.app.app)
        .await
        .expect("settle");
    assert!(settled >= 2, "{settled} leases settled");
    let items = app.app.app.store.scan_all().await.expect("scan");
    assert_eq!(at_key(&items, "LEASE#hot#requests#"), 0, "no lease left");
    let rest = send(app.base_url.clone(), "rest".into(), 4_799).await;
    assert_eq!(rest.0, 200, "{:?}", rest.1);
    assert_eq!(rest.1["data"]["used"], 5000);
    assert!(rest.1["data"].get("paidWithCredits").is_none());
    let over = send(other.clone(), "over".into(), 1).await;
    assert_eq!(over.0, 429, "{:?}", over.1);

    // Recorded: exactly the limit, no more.
    let items = app.app.app.store.scan_all().await.expect("scan");
    let recorded: i64 = items
        .iter()
        .filter(|i| coffer::adapters::store::get_s(i, "sk") == Some("USE"))
        .filter_map(|i| coffer::adapters::store::Fields::of(i).int("quantity").ok())
        .sum();
    assert_eq!(recorded, 5000);
    assert_eq!(used(&app, "hot").await["used"], 5000);
}

#[tokio::test]
async fn a_deleted_subscription_is_back_on_the_free_plans_limits() {
    use crate::subscriptions::{my_subscription, post, subscribe_active};
    let app = spawn_app().await;
    subscribe_active(&app, "yul", "starter").await;
    let paid = use_requests(&app, "yul", 2_000, "y-1").await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(paid.body["data"]["limit"], 25000);
    let canceled = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        "yul",
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(my_subscription(&app, "yul").await["planId"], "free");
    // Past the instance's one-second cache of the account's plan.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let free = use_requests(&app, "yul", 1, "y-2").await;
    assert_eq!(free.status, 200, "{}", free.body);
    assert_eq!(free.body["data"]["limit"], 1000, "the free plan's limit");
    assert_eq!(
        free.body["data"]["used"], 1,
        "counted in the calendar month"
    );
    assert_eq!(
        use_requests(&app, "yul", 1_000, "y-3").await.status,
        429,
        "the free plan has no overage"
    );
}
