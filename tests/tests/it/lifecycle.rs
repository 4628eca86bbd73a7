//! The credit lifecycle over the wire: spends, grants, refunds, disputes, reconciliation and the
//! invariant checker, each scenario ending with the checker passing.

use std::process::Command;

use integration_tests::{spawn_app, spawn_app_with, SecretSetup, TestApp, JWT_SECRET};
use serde_json::{json, Value};

#[tokio::test]
async fn spending_takes_credits_when_there_are_enough_and_refuses_when_not() {
    let app = spawn_app().await;
    app.bought("olga", "starter").await; // 5.00 credits

    let spent = app.spend("olga", json!(2), "order-1").await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    assert_eq!(spent.body["data"]["balance"], json!(3.0));
    assert!(spent.body["data"]["entryId"]
        .as_str()
        .is_some_and(|id| id.starts_with("spend:")));

    let too_much = app.spend("olga", json!(3.01), "order-2").await;
    assert_eq!(too_much.status, 402, "{}", too_much.body);
    assert_eq!(too_much.body["code"], "insufficient_credits");
    assert_eq!(app.balance("olga").await, 3.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_same_spend_key_with_another_amount_is_a_conflict_and_takes_nothing() {
    let app = spawn_app().await;
    app.bought("oona", "starter").await;
    assert_eq!(app.spend("oona", json!(2), "order-1").await.status, 200);
    let conflict = app.spend("oona", json!(1), "order-1").await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(app.balance("oona").await, 3.0);
}

#[tokio::test]
async fn a_user_who_never_bought_anything_cannot_spend() {
    let app = spawn_app().await;
    let reply = app.spend("nobody", json!(1), "k").await;
    assert_eq!(reply.status, 402, "{}", reply.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn spend_amounts_and_fields_are_validated() {
    let app = spawn_app().await;
    app.bought("pat", "starter").await;
    for amount in [
        json!(0),
        json!(-1),
        json!("1"),
        json!(0.001),
        json!(1e300),
        json!(null),
        json!(true),
    ] {
        let reply = app.spend("pat", amount.clone(), "k1").await;
        assert_eq!(reply.status, 400, "{amount}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request");
    }
    for body in [
        json!({"amount": 1, "reason": "r"}),
        json!({"amount": 1, "idempotencyKey": "k"}),
        json!({"amount": 1, "reason": "", "idempotencyKey": "k"}),
        json!({"amount": 1, "reason": "r", "idempotencyKey": ""}),
    ] {
        let reply = app
            .post("/api/credits/consume", Some("pat"), &body.to_string(), &[])
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
    }
    // A userId in the public route's body is not identity: pat's own credits are spent.
    let body = json!({"amount": 1, "reason": "r", "idempotencyKey": "k2", "userId": "victim"});
    let reply = app
        .post("/api/credits/consume", Some("pat"), &body.to_string(), &[])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(app.balance("pat").await, 4.0);
    assert_eq!(
        app.post("/api/credits/consume", None, &body.to_string(), &[])
            .await
            .status,
        401
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn fifty_concurrent_spends_of_one_against_twenty_succeed_exactly_twenty_times() {
    let app = spawn_app().await;
    grant(&app, "quinn", "20", "k-quinn").await;
    assert_eq!(app.balance("quinn").await, 20.0);

    let token = app.token("quinn");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let request = app
            .http
            .post(format!("{}/api/credits/consume", app.base_url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(
                json!({"amount": 1, "reason": "burst", "idempotencyKey": format!("burst-{i}")})
                    .to_string(),
            );
        tasks.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap().unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, refused), (20, 30), "statuses: {statuses:?}");
    assert_eq!(app.balance("quinn").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_internal_route_spends_for_a_named_user_only_with_iam() {
    let app = spawn_app().await;
    app.bought("rita", "starter").await;
    let body =
        json!({"userId": "rita", "amount": 1.5, "reason": "api call", "idempotencyKey": "i-1"})
            .to_string();
    let url = format!("{}/internal/credits/consume", app.base_url);
    let service = coffer_dev::token::issue_service(JWT_SECRET, "app-backend", 60).unwrap();
    let reply = app
        .http
        .post(&url)
        .bearer_auth(&service)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(app.balance("rita").await, 3.5);

    // A user's token is not IAM: 403, nothing taken.
    let user = app.token("rita");
    let reply = app
        .http
        .post(&url)
        .bearer_auth(&user)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    let reply = app.http.post(&url).body(body).send().await.unwrap();
    assert_eq!(reply.status(), 403);
    assert_eq!(app.balance("rita").await, 3.5);
    app.assert_invariants().await;
}

/// `coffer-dev grant`, the operator command, against this test's table.
async fn grant(app: &TestApp, user: &str, amount: &str, key: &str) {
    let status = coffer_dev_command(app, &["grant", user, amount, "welcome bonus", key]).await;
    assert!(status.success(), "grant failed");
}

pub(crate) async fn coffer_dev_command(app: &TestApp, args: &[&str]) -> std::process::ExitStatus {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/coffer-dev");
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("TABLE_NAME", &app.table)
        .env("STRIPE_SECRET_ID", &app.secret_id)
        // The double answers what localstripe lacks (a `created` filter on PaymentIntents).
        .env("STRIPE_API_BASE", &app.double_base);
    // Waited for off the test's thread: the double is served by this very runtime.
    tokio::task::spawn_blocking(move || command.status())
        .await
        .expect("the command's thread")
        .expect("run coffer-dev (scripts/test.sh builds it)")
}

#[tokio::test]
async fn grants_are_their_own_entries_shown_in_history_and_granted_once() {
    let app = spawn_app().await;
    grant(&app, "sam", "7.5", "promo-2026").await;
    grant(&app, "sam", "7.5", "promo-2026").await;
    assert_eq!(app.balance("sam").await, 7.5);
    let history = app.get("/api/stripe/payment-history", Some("sam")).await;
    let items = history.body["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", history.body);
    assert_eq!(items[0]["kind"], "grant");
    assert_eq!(items[0]["creditAmount"], json!(7.5));
    assert_eq!(items[0]["description"], "Grant: welcome bonus");
    app.assert_invariants().await;
}

/// localstripe's charge for a paid intent, with Stripe's cumulative `amount_refunded`.
pub(crate) async fn charge(app: &TestApp, intent_id: &str, amount_refunded: i64) -> Value {
    let intent = app.stripe_intent(intent_id).await;
    let mut charge = intent["latest_charge"].clone();
    assert!(
        charge.is_object(),
        "localstripe should expose the charge: {intent}"
    );
    charge["amount_refunded"] = json!(amount_refunded);
    charge["refunded"] = json!(amount_refunded >= charge["amount"].as_i64().unwrap());
    charge["payment_intent"] = json!(intent_id);
    charge
}

pub(crate) async fn paid_by_card(app: &TestApp, user: &str, package: &str, credits: f64) -> String {
    let intent_id = app.create_intent(user, package).await;
    assert_eq!(
        app.pay_with_card(&intent_id, "4242424242424242")
            .await
            .status,
        200
    );
    let credited = integration_tests::settle(
        || async { (app.balance(user).await >= credits).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent_id),
    )
    .await;
    assert!(credited.is_some(), "the webhook should credit {user}");
    intent_id
}

#[tokio::test]
async fn partial_and_full_refunds_net_correctly_with_duplicates_and_late_older_events() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "tess", "standard", 16.5).await; // 15.00 paid, 16.50 credits
    let t = integration_tests::now();

    // A third refunded → 5.50 credits back, once however often it is delivered.
    let partial = app.event_at("charge.refunded", &charge(&app, &pi, 500).await, t - 60);
    for _ in 0..2 {
        assert_eq!(app.deliver_signed(&partial).await.status, 200);
    }
    assert_eq!(app.balance("tess").await, 11.0);
    assert_eq!(
        app.history_status("tess", &pi).await.as_deref(),
        Some("partially_refunded")
    );

    let full = app.event_at("charge.refunded", &charge(&app, &pi, 1500).await, t - 30);
    assert_eq!(app.deliver_signed(&full).await.status, 200);
    // The older partial event arriving late, and the full one again, change nothing.
    assert_eq!(app.deliver_signed(&partial).await.status, 200);
    assert_eq!(app.deliver_signed(&full).await.status, 200);
    assert_eq!(app.balance("tess").await, 0.0);
    assert_eq!(
        app.history_status("tess", &pi).await.as_deref(),
        Some("refunded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_full_refund_then_a_late_older_partial_one_claws_back_exactly_the_full_share() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "tilda", "starter", 5.0).await;
    let t = integration_tests::now();
    let full = app.event_at("charge.refunded", &charge(&app, &pi, 500).await, t - 10);
    let older_partial = app.event_at("charge.refunded", &charge(&app, &pi, 200).await, t - 20);
    assert_eq!(app.deliver_signed(&full).await.status, 200);
    assert_eq!(app.deliver_signed(&older_partial).await.status, 200);
    assert_eq!(app.balance("tilda").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_refund_after_spending_leaves_a_visible_negative_balance() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "uma", "starter", 5.0).await;
    assert_eq!(app.spend("uma", json!(4), "u-1").await.status, 200);
    assert_eq!(
        app.deliver_event("charge.refunded", &charge(&app, &pi, 500).await)
            .await
            .status,
        200
    );
    let balance = app.get("/api/stripe/balance", Some("uma")).await;
    assert_eq!(
        balance.body["data"],
        json!({"balance": -4.0, "currency": "usd", "held": 0.0, "buckets": []})
    );
    // Spending is refused while negative.
    assert_eq!(app.spend("uma", json!(0.01), "u-2").await.status, 402);
    app.assert_invariants().await;
}

fn dispute(intent_id: &str, charge_id: &str) -> Value {
    json!({"id": format!("dp_{intent_id}"), "object": "dispute", "amount": 500, "currency": "usd",
           "charge": charge_id, "payment_intent": intent_id, "status": "needs_response", "reason": "fraudulent"})
}

/// A dispute of `amount` (minor units) of the intent's charge.
pub(crate) fn dispute_of(intent_id: &str, amount: i64) -> Value {
    json!({"id": format!("dp_{intent_id}"), "object": "dispute", "amount": amount, "currency": "usd",
           "payment_intent": intent_id, "status": "needs_response", "reason": "fraudulent"})
}

#[tokio::test]
async fn a_dispute_withdraws_then_reinstates_each_once() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "vic", "starter", 5.0).await;
    let charge_id = charge(&app, &pi, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dispute = dispute(&pi, &charge_id);

    assert_eq!(
        app.deliver_event("charge.dispute.created", &dispute)
            .await
            .status,
        200
    );
    assert_eq!(
        app.history_status("vic", &pi).await.as_deref(),
        Some("disputed")
    );
    assert_eq!(app.balance("vic").await, 5.0);

    for _ in 0..2 {
        assert_eq!(
            app.deliver_event("charge.dispute.funds_withdrawn", &dispute)
                .await
                .status,
            200
        );
    }
    assert_eq!(app.balance("vic").await, 0.0);
    app.assert_invariants().await;

    for _ in 0..2 {
        assert_eq!(
            app.deliver_event("charge.dispute.funds_reinstated", &dispute)
                .await
                .status,
            200
        );
    }
    assert_eq!(app.balance("vic").await, 5.0);
    assert_eq!(
        app.history_status("vic", &pi).await.as_deref(),
        Some("succeeded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_reinstatement_before_its_withdrawal_leaves_the_credits_in_either_order() {
    let app = spawn_app().await;
    let pi = paid_by_card(&app, "vince", "starter", 5.0).await;
    let early = dispute(&pi, "ch_x");
    for kind in [
        "charge.dispute.funds_reinstated",
        "charge.dispute.funds_withdrawn",
    ] {
        assert_eq!(app.deliver_event(kind, &early).await.status, 200);
        assert_eq!(app.balance("vince").await, 5.0);
    }
    assert_eq!(
        app.history_status("vince", &pi).await.as_deref(),
        Some("succeeded")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn reconciliation_credits_a_payment_the_webhook_missed_exactly_once() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..Default::default()
    })
    .await;
    let pi = app.create_intent("walt", "pro").await;
    assert_eq!(app.pay_with_card(&pi, "4242424242424242").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        app.balance("walt").await,
        0.0,
        "the webhook never reached this app"
    );

    let first = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(
            &app.app.app,
            3600,
            coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
        ),
    )
    .await
    .expect("reconcile");
    assert_eq!(first.credited, vec![pi.clone()]);
    assert_eq!(app.balance("walt").await, 60.0);
    let second = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(
            &app.app.app,
            3600,
            coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
        ),
    )
    .await
    .expect("reconcile");
    assert!(second.credited.is_empty(), "{second:?}");
    assert!(second.already_credited >= 1);
    assert_eq!(app.balance("walt").await, 60.0);
    // The command an operator runs does the same, and changes nothing now.
    assert!(coffer_dev_command(&app, &["reconcile", "1"])
        .await
        .success());
    assert_eq!(app.balance("walt").await, 60.0);
    app.assert_invariants().await;
}

/// `count` intents at Stripe that are none of Coffer's.
async fn other_intents(app: &TestApp, count: usize) {
    for _ in 0..count {
        let made = app
            .stripe_post(
                "/v1/payment_intents",
                &[("amount", "700"), ("currency", "usd")],
            )
            .await;
        assert_eq!(made.status, 200, "{}", made.body);
    }
}

#[tokio::test]
async fn reconciliation_reads_every_page_of_the_window() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..Default::default()
    })
    .await;
    // More than a page (100) of other intents, made before this one.
    other_intents(&app, 101).await;
    let pi = app.create_intent("wade", "starter").await;
    assert_eq!(app.pay_with_card(&pi, "4242424242424242").await.status, 200);

    let report = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(
            &app.app.app,
            3600,
            coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
        ),
    )
    .await
    .expect("reconcile");
    assert!(report.pages >= 2, "{report:?}");
    assert!(report.complete, "{report:?}");
    assert_eq!(report.credited, vec![pi]);
    assert_eq!(app.balance("wade").await, 5.0);
    app.assert_invariants().await;
}

/// Credits that appear without an entry: the user's balance overwritten in the raw table.
async fn corrupt_balance(app: &TestApp, user: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let item = [
        ("pk", AttributeValue::S(format!("USER#{user}"))),
        ("sk", AttributeValue::S("BALANCE".into())),
        ("balance", AttributeValue::N("100500".into())),
        ("currency", AttributeValue::S("usd".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    app.app.app.store.put_raw(item).await.expect("corrupt");
}

#[tokio::test]
async fn the_invariant_checker_fails_on_a_deliberately_corrupted_table() {
    let app = spawn_app().await;
    app.bought("xena", "starter").await;
    assert!(coffer_dev_command(&app, &["check"]).await.success());

    corrupt_balance(&app, "xena").await;

    let report = coffer::domain::invariants::check(&app.app.app.store.scan_ledger().await.unwrap());
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert!(report.violations[0].contains("USER#xena"));
    assert!(
        !coffer_dev_command(&app, &["check"]).await.success(),
        "check must exit non-zero"
    );
}

fn budget() -> coffer::services::budget::Budget {
    coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120))
}

#[tokio::test]
async fn reconciliation_cut_short_goes_on_from_its_cursor_and_credits_each_missed_payment_once() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..Default::default()
    })
    .await;
    // Three payments the webhook missed, with pages of other intents between them.
    let mut missed = Vec::new();
    for (i, user) in ["xena", "yuri", "zack"].iter().enumerate() {
        let pi = app.create_intent(user, "starter").await;
        assert_eq!(app.pay_with_card(&pi, "4242424242424242").await.status, 200);
        missed.push(pi);
        if i < 2 {
            other_intents(&app, 120).await;
        }
        // Intents of one second are listed in no set order: the next one a second later.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }

    // Each run's budget is out after one page: the pass goes on run after run.
    let mut credited = Vec::new();
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 60, "the runs make progress");
        let report = coffer::calls::as_function(
            "reconcile",
            coffer::services::reconcile::reconcile(&app.app.app, 3600, budget().with_max_sends(1)),
        )
        .await
        .expect("reconcile");
        assert!(report.pages <= 1, "{report:?}");
        credited.extend(report.credited.clone());
        if report.complete {
            break;
        }
        assert_eq!(report.scopes_left, 1, "{report:?}");
    }
    assert!(runs >= 3, "the pass took several runs: {runs}");
    credited.sort();
    missed.sort();
    assert_eq!(credited, missed, "each missed payment credited once");
    for user in ["xena", "yuri", "zack"] {
        assert_eq!(app.balance(user).await, 5.0, "{user}");
    }

    // A pass that began more than a window ago and cannot go on: the run fails, so it alarms.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let now = coffer::domain::records::now_ms() / 1000;
    let stuck = coffer::domain::reconcile::Coverage {
        pass: Some(coffer::domain::reconcile::Pass {
            from: now - 7200,
            to: now - 3600,
            after: None,
            started: now - 3600,
        }),
        covered_to: None,
    };
    store.save_reconcile_coverage(&stuck).await.expect("save");
    let behind = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(&app.app.app, 1800, budget().with_max_sends(0)),
    )
    .await;
    assert!(behind.is_err(), "a scope behind its window fails the run");
    // Given the time, the pass finishes and the scope is covered again.
    let caught_up = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(&app.app.app, 1800, budget()),
    )
    .await
    .expect("reconcile");
    assert!(
        caught_up.complete && caught_up.behind.is_empty(),
        "{caught_up:?}"
    );
    app.assert_invariants().await;
}

async fn check_run(app: &TestApp, pages: usize) -> coffer::services::ledger_check::CheckReport {
    coffer::calls::as_function(
        "check-invariants",
        coffer::services::ledger_check::check_ledger(
            &app.app.app,
            coffer::services::ledger_check::Pass::Resume,
            budget().with_max_sends(pages),
            std::time::Duration::from_millis(50),
        ),
    )
    .await
    .expect("the check runs")
}

#[tokio::test]
async fn the_ledger_check_goes_on_in_segments_is_not_fooled_by_live_writes_and_finds_a_corruption()
{
    let app = spawn_app().await;
    let scope = app.app.app.default_scope();
    let users: Vec<String> = (0..40).map(|i| format!("acct{i:02}")).collect();
    for user in &users {
        let id = coffer::domain::records::UserId::parse(user).expect("id");
        coffer::services::credits::grant(&app.app.app, &scope, &id, 10_000, "seed", user)
            .await
            .expect("grant");
    }
    // Spends go on in every account while the check reads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spending = {
        let (app_ref, stop) = (&app, stop.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = &users[usize::try_from(n).unwrap_or(0) % users.len()];
                let reply = app_ref.spend(user, json!(0.01), &format!("live-{n}")).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                n += 1;
            }
            n
        }
    };
    let checking = async {
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs < 200, "the check makes progress");
            let report = check_run(&app, 1).await;
            assert!(
                report.is_clean(),
                "no violation from live writes: {report:?}"
            );
            assert!(report.pages <= 1);
            if report.complete {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return (runs, report);
            }
        }
    };
    let (spends, (runs, last)) = tokio::join!(spending, checking);
    assert!(spends > 0);
    assert!(
        runs >= coffer::services::ledger_check::SEGMENTS as usize,
        "{runs} runs"
    );
    assert!(last.pass_accounts >= 40, "{last:?}");
    assert_eq!(last.pass_violations, 0);

    // The next pass finds the corruption, and the run fails.
    corrupt_balance(&app, "acct07").await;
    let mut found = Vec::new();
    loop {
        let report = check_run(&app, 3).await;
        found.extend(report.violations.clone());
        if report.complete {
            assert_eq!(report.pass_violations, 1, "{report:?}");
            break;
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("USER#acct07"), "{found:?}");
}
