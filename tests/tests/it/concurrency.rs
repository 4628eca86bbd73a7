//! Concurrency: 200 webhook deliveries mixing duplicates of 20 payments, with spends and refunds
//! for the same users at the same time. Like Stripe (and a well-behaved client), a request that
//! got a 5xx is sent again, unchanged, until it is acknowledged: retries must be harmless.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

#[derive(Clone)]
enum Job {
    Webhook { event: String, signature: String },
    Spend { user: &'static str, key: String },
}

/// Sends every job at once, then re-sends those answered 5xx, until none is left (or 15
/// rounds). Returns each job's final status, in job order.
async fn send_all(app: &TestApp, jobs: &[Job]) -> Vec<u16> {
    let mut statuses = vec![0u16; jobs.len()];
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    for round in 0..15 {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(300 * round)).await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for &i in &pending {
            let request = match &jobs[i] {
                Job::Webhook { event, signature } => {
                    app.count_delivery();
                    app.http
                        .post(format!("{}/api/stripe/webhook", app.base_url))
                        .header("stripe-signature", signature)
                        .body(event.clone())
                }
                Job::Spend { user, key } => app
                    .http
                    .post(format!("{}/api/credits/consume", app.base_url))
                    .bearer_auth(app.token(user))
                    .header("content-type", "application/json")
                    .body(
                        json!({"amount": 3, "reason": "load", "idempotencyKey": key}).to_string(),
                    ),
            };
            tasks.spawn(async move { (i, request.send().await.map(|r| r.status().as_u16())) });
        }
        let mut again = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (i, status) = done.expect("task");
            let status = status.unwrap_or(599);
            statuses[i] = status;
            if status >= 500 {
                again.push(i);
            }
        }
        pending = again;
    }
    statuses
}

#[tokio::test]
async fn two_hundred_mixed_deliveries_with_spends_and_refunds_keep_the_ledger_exact() {
    let app = spawn_app().await;
    let users = ["u0", "u1", "u2", "u3"];
    // 20 payments of 5.00 (500 credits each), five per user.
    let mut payments: Vec<Job> = Vec::new();
    let mut intents: HashMap<String, Value> = HashMap::new();
    for i in 0..20 {
        let id = app.create_intent(users[i % users.len()], "starter").await;
        let intent = app.stripe_intent(&id).await;
        let event = app.event("payment_intent.succeeded", &intent);
        let signature = app.sign(&event);
        payments.push(Job::Webhook { event, signature });
        intents.insert(id, intent);
    }
    // 200 deliveries (each payment 10 times, interleaved) and 40 spends of 3.00, all at once.
    let mut jobs = Vec::new();
    for round in 0..10 {
        jobs.extend(payments.iter().cloned());
        for user in users {
            jobs.push(Job::Spend {
                user,
                key: format!("{user}-{round}"),
            });
        }
    }
    let statuses = send_all(&app, &jobs).await;
    for (job, status) in jobs.iter().zip(&statuses) {
        match job {
            Job::Webhook { .. } => assert_eq!(*status, 200, "every delivery acknowledged"),
            Job::Spend { .. } => assert!(*status == 200 || *status == 402, "spend: {status}"),
        }
    }

    // Refund a fifth of every payment, each event delivered twice, concurrently.
    let mut refunds = Vec::new();
    for (id, intent) in &intents {
        let charge = json!({"id": format!("ch_{id}"), "object": "charge", "amount": intent["amount"],
                            "amount_refunded": 100, "currency": "usd", "payment_intent": id});
        let event = app.event("charge.refunded", &charge);
        let signature = app.sign(&event);
        refunds.push(Job::Webhook {
            event: event.clone(),
            signature: signature.clone(),
        });
        refunds.push(Job::Webhook { event, signature });
    }
    assert!(send_all(&app, &refunds).await.iter().all(|s| *s == 200));

    // Exact balances: 5 payments × 5.00, less 5 × 1.00 refunded, less 3.00 per accepted spend;
    // a spend was only accepted while the balance covered it.
    for user in users {
        let spends = jobs
            .iter()
            .zip(&statuses)
            .filter(|(j, s)| matches!(j, Job::Spend { user: u, .. } if *u == user) && **s == 200)
            .count();
        assert!(
            spends <= 8,
            "{user}: {spends} spends of 3.00 cannot fit in 25.00"
        );
        assert_eq!(
            app.balance(user).await,
            25.0 - 5.0 - 3.0 * spends as f64,
            "{user}"
        );
    }
    for id in intents.keys() {
        let payment = app.app.app.store.payment(id).await.unwrap().unwrap();
        assert_eq!(payment.status.as_str(), "partially_refunded", "{id}");
    }
    app.assert_invariants().await;
    let items = app.app.app.store.scan_all().await.unwrap();
    let count = |kind: &str| {
        items
            .iter()
            .filter(|i| coffer::adapters::store::codec::get_s(i, "kind") == Some(kind))
            .count()
    };
    assert_eq!(
        count("purchase"),
        20,
        "exactly one purchase entry per payment"
    );
    assert_eq!(count("refund"), 20, "exactly one refund entry per payment");
}
