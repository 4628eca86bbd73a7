//! Credit buckets over the wire: grants that expire exactly once whatever the job does, spends
//! across many buckets at once, reservations racing their own end, grants replayed, developers
//! kept to their own projects, and bad input refused in words.

use std::time::Duration;

use coffer::services::budget::Budget;
use coffer::services::expiry::settle_due;
use coffer_dev::token::issue_service;
use integration_tests::{
    join_all, spawn_app, spawn_app_with, Reply, SecretSetup, TestApp, JWT_SECRET,
};
use serde_json::{json, Value};

const PROJECTS: &str = "/api/v1/payments/stripe/projects";

fn backend() -> String {
    issue_service(JWT_SECRET, "app-backend", 300).expect("service token")
}

/// RFC 3339 text `secs` seconds from now.
fn in_secs(secs: i64) -> String {
    coffer::domain::records::rfc3339(coffer::domain::records::now_ms() + secs * 1000)
}

async fn internal(app: &TestApp, path: &str, body: Value) -> Reply {
    app.call("POST", path, Some(&backend()), Some(&body)).await
}

async fn grant(
    app: &TestApp,
    user: &str,
    amount: Value,
    expires_at: Option<String>,
    key: &str,
) -> Reply {
    let mut body =
        json!({"userId": user, "amount": amount, "reason": "trial", "idempotencyKey": key});
    if let Some(at) = expires_at {
        body["expiresAt"] = json!(at);
    }
    internal(app, "/internal/credits/grants", body).await
}

async fn balance(app: &TestApp, user: &str) -> Value {
    let reply = app.get("/api/stripe/balance", Some(user)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"].clone()
}

/// The ledger entries of `kind` the table holds for `user`.
async fn entries_of(app: &TestApp, user: &str, kind: &str) -> Vec<(String, i64)> {
    let snapshot = app.app.app.store.scan_ledger().await.expect("scan");
    snapshot
        .entries
        .iter()
        .filter(|e| e.user.as_str() == user && e.kind == kind)
        .map(|e| (e.entry_id.clone(), e.amount))
        .collect()
}

async fn run_job(app: &TestApp) -> usize {
    settle_due(&app.app.app, &Budget::lasting(Duration::from_secs(30)))
        .await
        .expect("settle")
        .entries
}

#[tokio::test]
async fn a_grant_expires_once_with_the_job_run_twice_at_once_and_is_never_shown_or_spent_after() {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    app.follow_stream().await;
    let expiring = grant(&app, "eve", json!(3), Some(in_secs(4)), "trial-1").await;
    assert_eq!(expiring.status, 200, "{}", expiring.body);
    assert_eq!(expiring.body["data"]["remaining"], json!(3.0));
    assert_eq!(
        grant(&app, "eve", json!(5), None, "gift-1").await.status,
        200
    );
    let before = balance(&app, "eve").await;
    assert_eq!(before["balance"], json!(8.0));
    assert_eq!(
        before["buckets"][0]["amount"],
        json!(3.0),
        "soonest expiry first"
    );
    assert_eq!(before["buckets"][0]["kind"], "promotional");
    assert!(before["nextExpiry"].is_string(), "{before}");
    // A spend takes from the bucket that expires first.
    assert_eq!(app.spend("eve", json!(1), "s-1").await.status, 200);
    assert_eq!(
        balance(&app, "eve").await["buckets"][0]["amount"],
        json!(2.0)
    );
    // The job warns of the expiry a week ahead, once.
    run_job(&app).await;
    run_job(&app).await;

    tokio::time::sleep(Duration::from_secs(5)).await;
    // Expired: not shown and not spendable, though no job ran yet.
    let after = balance(&app, "eve").await;
    assert_eq!(after["balance"], json!(5.0), "{after}");
    assert!(after.get("nextExpiry").is_none(), "{after}");
    assert_eq!(app.spend("eve", json!(5.01), "s-2").await.status, 402);
    assert!(entries_of(&app, "eve", "expire").await.is_empty());
    // The job twice at once, then again: one expire entry of what was left.
    let runs = join_all(vec![run_job(&app), run_job(&app)]).await;
    let again = run_job(&app).await;
    assert_eq!(runs.iter().sum::<usize>() + again, 1, "{runs:?} {again}");
    let expired = entries_of(&app, "eve", "expire").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].1, -200);
    assert_eq!(balance(&app, "eve").await["balance"], json!(5.0));
    app.assert_invariants().await;
    let history = app
        .get("/api/stripe/payment-history?limit=100", Some("eve"))
        .await;
    assert!(
        history.body["data"]
            .as_array()
            .expect("lines")
            .iter()
            .any(|l| l["description"] == "2.00 credits expired" && l["kind"] == "expire"),
        "{}",
        history.body
    );

    let of = |events: &[Value], kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["account"] == "eve")
            .cloned()
            .collect()
    };
    app.billing_events(Duration::from_secs(30), |events| {
        !of(events, "credits.expired").is_empty() && !of(events, "credits.expiring").is_empty()
    })
    .await;
    let events = app.billing_events(Duration::from_secs(2), |_| false).await;
    let expiring = of(&events, "credits.expiring");
    assert_eq!(expiring.len(), 1, "{events:#?}");
    assert_eq!(expiring[0]["data"]["amount"], json!(200));
    let expired = of(&events, "credits.expired");
    assert_eq!(expired.len(), 1, "{events:#?}");
    assert_eq!(expired[0]["data"]["amount"], json!(200));
}

#[tokio::test]
async fn a_hundred_concurrent_spends_across_fifty_buckets_take_exactly_what_there_was() {
    let app = spawn_app().await;
    for i in 0..50 {
        // Fifty buckets of other expiries and priorities: none of them merge.
        let body = json!({"userId": "fay", "amount": 1, "reason": "drip",
                          "expiresAt": in_secs(3600 + i * 60), "priority": i % 3,
                          "idempotencyKey": format!("drip-{i}")});
        let reply = internal(&app, "/internal/credits/grants", body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(
        balance(&app, "fay").await["buckets"]
            .as_array()
            .map(Vec::len),
        Some(50)
    );
    let replies = join_all(
        (0..100)
            .map(|i| {
                let app = &app;
                async move {
                    app.spend("fay", json!(0.75), &format!("s-{i}"))
                        .await
                        .status
                }
            })
            .collect(),
    )
    .await;
    let done = replies.iter().filter(|s| **s == 200).count();
    let refused = replies.iter().filter(|s| **s == 402).count();
    assert_eq!((done, refused), (66, 34), "{replies:?}");
    assert_eq!(balance(&app, "fay").await["balance"], json!(0.5));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_reservation_is_captured_once_released_once_and_races_its_own_end_without_loss() {
    let app = spawn_app().await;
    assert_eq!(grant(&app, "gus", json!(10), None, "g").await.status, 200);
    let reserve = |key: &str, amount: f64, ttl: i64| {
        let body = json!({"amount": amount, "ttlSeconds": ttl, "idempotencyKey": key});
        let app = &app;
        async move {
            app.call(
                "POST",
                "/api/credits/reservations",
                Some(&app.token("gus")),
                Some(&body),
            )
            .await
        }
    };
    let finish = |id: &str, what: &str, body: Value| {
        let path = format!("/api/credits/reservations/{id}/{what}");
        let app = &app;
        async move {
            app.call("POST", &path, Some(&app.token("gus")), Some(&body))
                .await
        }
    };
    let held = reserve("job-1", 4.0, 600).await;
    assert_eq!(held.status, 200, "{}", held.body);
    let id = held.body["data"]["reservationId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(held.body["data"]["status"], "held");
    assert_eq!(balance(&app, "gus").await["balance"], json!(6.0));
    assert_eq!(balance(&app, "gus").await["held"], json!(4.0));
    // Replayed: the same hold. Another amount with the key: 409.
    assert_eq!(
        reserve("job-1", 4.0, 600).await.body["data"]["reservationId"],
        json!(id)
    );
    assert_eq!(reserve("job-1", 5.0, 600).await.status, 409);
    // Held credits are nobody else's.
    assert_eq!(app.spend("gus", json!(6.01), "s-1").await.status, 402);
    // More than held: 409. Then 2.50 of it; the rest comes back.
    assert_eq!(
        finish(&id, "capture", json!({"amount": 4.01})).await.status,
        409
    );
    let captured = finish(&id, "capture", json!({"amount": 2.5})).await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["data"]["captured"], json!(2.5));
    assert_eq!(balance(&app, "gus").await["balance"], json!(7.5));
    // The same capture again is the same answer; another amount or a release is 409.
    assert_eq!(
        finish(&id, "capture", json!({"amount": 2.5})).await.status,
        200
    );
    assert_eq!(
        finish(&id, "capture", json!({"amount": 1})).await.status,
        409
    );
    assert_eq!(finish(&id, "release", json!({})).await.status, 409);
    // Another caller's reservation, or none: 404.
    assert_eq!(
        app.call(
            "POST",
            &format!("/api/credits/reservations/{id}/release"),
            Some(&app.token("hal")),
            Some(&json!({}))
        )
        .await
        .status,
        404
    );
    // Released whole, once.
    let second = reserve("job-2", 1.0, 600).await.body["data"]["reservationId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(finish(&second, "release", json!({})).await.status, 200);
    assert_eq!(finish(&second, "release", json!({})).await.status, 200);
    assert_eq!(
        finish(&second, "capture", json!({"amount": 1}))
            .await
            .status,
        409
    );
    assert_eq!(balance(&app, "gus").await["balance"], json!(7.5));

    // Captures racing the job at the hold's end: the hold is captured once or returns once.
    let racing = reserve("job-3", 3.0, 2).await.body["data"]["reservationId"]
        .as_str()
        .expect("id")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let captures = join_all(
        (0..4)
            .map(|_| finish(&racing, "capture", json!({"amount": 3})))
            .collect(),
    );
    let (captures, _) = tokio::join!(captures, run_job(&app));
    let won = captures.iter().filter(|r| r.status == 200).count();
    assert!(
        captures.iter().all(|r| r.status == 200 || r.status == 409),
        "{:?}",
        captures.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    run_job(&app).await;
    let expected = if won > 0 { 4.5 } else { 7.5 };
    assert_eq!(
        balance(&app, "gus").await["balance"],
        json!(expected),
        "captures won: {won}"
    );
    // After its end a capture is 409.
    assert_eq!(
        finish(&racing, "capture", json!({"amount": 1}))
            .await
            .status,
        409
    );
    app.assert_invariants().await;
    // The history tells it in words.
    let history = app
        .get("/api/stripe/payment-history?limit=100", Some("gus"))
        .await;
    let said: Vec<&str> = history.body["data"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["description"].as_str())
        .collect();
    for words in [
        "4.00 credits reserved",
        "Reservation captured: 2.50 credits spent, 1.50 returned",
        "Reservation released: 1.00 credits returned",
        "Grant: trial",
    ] {
        assert!(said.contains(&words), "{words:?} not in {said:?}");
    }
}

#[tokio::test]
async fn grants_replay_refuse_a_changed_body_and_stay_within_the_developers_project() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-ann");
    app.configure_alpha("dev-ann").await;
    let grants = format!("{PROJECTS}/alpha/accounts/ivy/grants?test_mode=true");
    let body = json!({"amount": 3, "reason": "welcome", "priority": 5, "idempotencyKey": "w-1"});
    let first = app.call("POST", &grants, Some(&dev), Some(&body)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let grant_id = first.body["data"]["grantId"]
        .as_str()
        .expect("grant id")
        .to_owned();
    let replay = app.call("POST", &grants, Some(&dev), Some(&body)).await;
    assert_eq!(
        replay.body["data"], first.body["data"],
        "a replay gives the first answer"
    );
    let changed = json!({"amount": 4, "reason": "welcome", "priority": 5, "idempotencyKey": "w-1"});
    assert_eq!(
        app.call("POST", &grants, Some(&dev), Some(&changed))
            .await
            .status,
        409
    );
    // The user sees it in the project's balance, not in the deployment's own.
    let mine = app
        .call(
            "GET",
            "/api/stripe/balance?project_id=alpha&test_mode=true",
            Some(&app.token("ivy")),
            None,
        )
        .await;
    assert_eq!(mine.body["data"]["balance"], json!(3.0), "{}", mine.body);
    assert_eq!(balance(&app, "ivy").await["balance"], json!(0.0));
    // Another developer: 404. A user's token on the developer route: 403.
    let bob = app.developer_token("dev-bob");
    assert_eq!(
        app.call("POST", &grants, Some(&bob), Some(&body))
            .await
            .status,
        404
    );
    assert_eq!(
        app.call("POST", &grants, Some(&app.token("ivy")), Some(&body))
            .await
            .status,
        403
    );
    // Spend 1 of it; adjusting down by more than is left is 409, by what is left works.
    let spent = app
        .call(
            "POST",
            "/api/credits/consume?project_id=alpha&test_mode=true",
            Some(&app.token("ivy")),
            Some(&json!({"amount": 1, "reason": "use", "idempotencyKey": "u-1"})),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    let adjust = format!("{PROJECTS}/alpha/accounts/ivy/grants/{grant_id}/adjust?test_mode=true");
    let too_much = json!({"amount": -2.01, "reason": "correction", "idempotencyKey": "a-1"});
    assert_eq!(
        app.call("POST", &adjust, Some(&dev), Some(&too_much))
            .await
            .status,
        409
    );
    let up = json!({"amount": 1.5, "reason": "bonus", "idempotencyKey": "a-2"});
    let adjusted = app.call("POST", &adjust, Some(&dev), Some(&up)).await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.body);
    assert_eq!(adjusted.body["data"]["remaining"], json!(3.5));
    // The same key and body on another grant is that grant's own adjustment, not a replay.
    let other = json!({"amount": 2, "reason": "second", "idempotencyKey": "w-2"});
    let second = app.call("POST", &grants, Some(&dev), Some(&other)).await;
    let second_id = second.body["data"]["grantId"]
        .as_str()
        .expect("id")
        .to_owned();
    let adjust_second =
        format!("{PROJECTS}/alpha/accounts/ivy/grants/{second_id}/adjust?test_mode=true");
    let again = app
        .call("POST", &adjust_second, Some(&dev), Some(&up))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["data"]["grantId"], json!(second_id));
    assert_eq!(again.body["data"]["remaining"], json!(3.5));
    assert_eq!(again.body["data"]["balance"], json!(7.0), "{}", again.body);
    let void = format!("{PROJECTS}/alpha/accounts/ivy/grants/{grant_id}/void?test_mode=true");
    let voided = app
        .call("POST", &void, Some(&dev), Some(&json!({"reason": "abuse"})))
        .await;
    assert_eq!(voided.status, 200, "{}", voided.body);
    assert_eq!(voided.body["data"]["remaining"], json!(0.0));
    assert_eq!(voided.body["data"]["balance"], json!(3.5));
    assert_eq!(
        app.call("POST", &void, Some(&dev), Some(&json!({"reason": "again"})))
            .await
            .body["data"],
        voided.body["data"]
    );
    let unknown = format!("{PROJECTS}/alpha/accounts/ivy/grants/grant:nope/void?test_mode=true");
    assert_eq!(
        app.call("POST", &unknown, Some(&dev), Some(&json!({"reason": "x"})))
            .await
            .status,
        404
    );
    let shown = app
        .call(
            "GET",
            &format!("{PROJECTS}/alpha/accounts/ivy/balance?test_mode=true"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["data"]["balance"], json!(3.5));
    // The account's own low-balance threshold.
    let alerts = format!("{PROJECTS}/alpha/accounts/ivy/alerts?test_mode=true");
    let bad = app
        .call(
            "PUT",
            &alerts,
            Some(&dev),
            Some(&json!({"lowThreshold": -1})),
        )
        .await;
    bad.assert_refused_saying("lowThreshold", &"a negative threshold");
    let set = app
        .call(
            "PUT",
            &alerts,
            Some(&dev),
            Some(&json!({"lowThreshold": 2.5})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        set.body["data"],
        json!({"lowThreshold": 2.5, "armed": true})
    );
    let bob_alerts = app
        .call(
            "PUT",
            &alerts,
            Some(&bob),
            Some(&json!({"lowThreshold": 1})),
        )
        .await;
    assert_eq!(bob_alerts.status, 404, "{}", bob_alerts.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn bad_grants_and_reservations_are_400_in_words() {
    let app = spawn_app().await;
    for (body, words) in [
        (
            json!({"userId": "jo", "amount": 0.001, "reason": "r", "idempotencyKey": "k"}),
            "finer",
        ),
        (
            json!({"userId": "jo", "amount": 1e12, "reason": "r", "idempotencyKey": "k"}),
            "too large",
        ),
        (
            json!({"userId": "jo", "amount": -1, "reason": "r", "idempotencyKey": "k"}),
            "greater than zero",
        ),
        (
            json!({"userId": "jo", "amount": 1, "reason": "r", "idempotencyKey": "k", "expiresAt": in_secs(-60)}),
            "in the future",
        ),
        (
            json!({"userId": "jo", "amount": 1, "reason": "r", "idempotencyKey": "k", "expiresAt": "tomorrow"}),
            "RFC 3339",
        ),
        (
            json!({"userId": "jo", "amount": 1, "reason": "r", "idempotencyKey": "k", "priority": 5000}),
            "priority",
        ),
        (
            json!({"userId": "jo", "amount": 1, "idempotencyKey": "k"}),
            "reason",
        ),
        (
            json!({"amount": 1, "reason": "r", "idempotencyKey": "k"}),
            "userId",
        ),
    ] {
        let reply = internal(&app, "/internal/credits/grants", body.clone()).await;
        reply.assert_refused_saying(words, &body);
    }
    for (body, words) in [
        (
            json!({"amount": 1, "ttlSeconds": -5, "idempotencyKey": "k"}),
            "ttlSeconds",
        ),
        (
            json!({"amount": 1, "ttlSeconds": 90000, "idempotencyKey": "k"}),
            "ttlSeconds",
        ),
        (json!({"amount": 1.001, "idempotencyKey": "k"}), "finer"),
        (json!({"amount": 1}), "idempotencyKey"),
    ] {
        let reply = app
            .call(
                "POST",
                "/api/credits/reservations",
                Some(&app.token("jo")),
                Some(&body),
            )
            .await;
        reply.assert_refused_saying(words, &body);
    }
    // Nothing to hold: 402.
    let short = app
        .call(
            "POST",
            "/api/credits/reservations",
            Some(&app.token("jo")),
            Some(&json!({"amount": 1, "idempotencyKey": "k"})),
        )
        .await;
    assert_eq!(short.status, 402, "{}", short.body);
}

#[tokio::test]
async fn a_new_periods_included_credits_keep_only_the_cap_of_earlier_ones() {
    use coffer::domain::buckets::Terms;
    use coffer::domain::ledger::{IncludedGrant, PaymentRecord};
    let app = spawn_app().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let account = coffer::domain::records::UserId::parse("kim").expect("user");
    let usd = coffer::domain::money::Currency::usd();
    let capped = Terms {
        rollover_cap: Some(200),
        ..Terms::paid()
    };
    for (invoice, intent) in [("in_1", "pi_in_1"), ("in_2", "pi_in_2")] {
        if invoice == "in_2" {
            // Reserving the first period's credits before the second's come in does not keep
            // them past the cap.
            let held = store
                .hold_credits(&account, "h_dodge", 400, 600, "user", &usd)
                .await
                .expect("held");
            assert!(
                matches!(held, coffer::adapters::store::HoldOutcome::Done(_)),
                "{held:?}"
            );
        }
        let grant = PaymentRecord::included_grant(&IncludedGrant {
            invoice_id: invoice,
            intent_id: intent,
            account: &account,
            plan_id: "starter",
            amount: 2900,
            currency: &usd,
            credits: 500,
            now_ms: coffer::domain::records::now_ms(),
        });
        let entry = coffer::domain::idempotency::included_entry(invoice);
        store
            .grant_included(&grant, &entry, &capped)
            .await
            .expect("granted");
    }
    // The first period's 500, 400 of it held: the 100 not held expired when the second's came
    // in, and 200 of the held 400 expire when the reservation gives them back. 200 are kept.
    let now = balance(&app, "kim").await;
    assert_eq!(
        (now["balance"].clone(), now["held"].clone()),
        (json!(5.0), json!(4.0)),
        "{now}"
    );
    let released = store
        .settle_hold(&account, "h_dodge", None, "user", &usd)
        .await
        .expect("released");
    assert!(
        matches!(released, coffer::adapters::store::HoldOutcome::Done(_)),
        "{released:?}"
    );
    assert_eq!(balance(&app, "kim").await["balance"], json!(7.0));
    assert_eq!(entries_of(&app, "kim", "expire").await.len(), 2);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_project_that_spends_paid_credits_first_keeps_its_promotional_ones() {
    let app = spawn_app().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let names = ["paidFirst".to_owned(), "oldest".to_owned()];
    let settings = coffer::domain::projects::ProjectSettings {
        spend_order: Some(coffer::domain::buckets::SpendOrder::parse(&names).expect("order")),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");
    app.bought("lea", "starter").await;
    assert_eq!(balance(&app, "lea").await["balance"], json!(5.0));
    assert_eq!(
        grant(&app, "lea", json!(3), Some(in_secs(3600)), "promo")
            .await
            .status,
        200
    );
    assert_eq!(app.spend("lea", json!(4), "s-1").await.status, 200);
    let buckets = balance(&app, "lea").await["buckets"].clone();
    let left = |kind: &str| -> Vec<Value> {
        buckets
            .as_array()
            .expect("buckets")
            .iter()
            .filter(|b| b["kind"] == kind)
            .map(|b| b["amount"].clone())
            .collect()
    };
    assert_eq!(left("paid"), vec![json!(1.0)], "{buckets}");
    assert_eq!(left("promotional"), vec![json!(3.0)], "{buckets}");
    app.assert_invariants().await;
}
