//! Projects' own webhooks, over the wire: a developer's endpoint on a local receiver gets each
//! event once, signed, as the Standard Webhooks library verifies it; failures are tried again
//! with backoff; a 410 disables; a rotated secret still verifies for its overlap; another
//! developer sees nothing; metadata addresses are refused, saved or redirected to; a receiver
//! that hangs never delays another project's deliveries.

use std::time::{Duration, Instant};

use integration_tests::receiver::{verify_with_library, Answer, Receiver};
use integration_tests::{eventually, spawn_app_with, SecretSetup, TestApp};
use serde_json::{json, Value};

pub(crate) async fn with_webhooks() -> TestApp {
    let app = spawn_app_with(SecretSetup {
        webhooks: true,
        ..SecretSetup::default()
    })
    .await;
    app.follow_stream().await;
    app
}

/// `project` configured in test mode by `developer`, with `credits.low` below 5.00.
async fn configured(app: &TestApp, project: &str, developer: &str) {
    let token = app.developer_token(developer);
    let keys = json!({
        "secretKey": format!("sk_test_{project}_0123456789abcdefwxyz"),
        "publishableKey": format!("pk_test_{project}_0123456789abcdef"),
        "webhookSecret": format!("whsec_{project}testSigningSecret0123456789abcdef"),
    });
    let path = format!("/api/v1/payments/stripe/projects/{project}");
    let made = app
        .call(
            "PUT",
            &format!("{path}/config?test_mode=true"),
            Some(&token),
            Some(&keys),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let settings = app
        .call(
            "PUT",
            &format!("{path}/settings?test_mode=true"),
            Some(&token),
            Some(&json!({"creditsLowThreshold": 5})),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
}

/// A new endpoint of `project` at `url`; its id and signing secret.
async fn endpoint(app: &TestApp, project: &str, developer: &str, url: &str) -> (String, String) {
    let made = app
        .call(
            "POST",
            &format!("/api/v1/payments/stripe/projects/{project}/webhooks?test_mode=true"),
            Some(&app.developer_token(developer)),
            Some(&json!({"url": url, "events": ["credits.low"]})),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let secret = made.body["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = made.body["data"]["endpoint"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    (id, secret)
}

/// `credits.low` for `account` of `project`: 10.00 granted by the developer, 6.00 spent.
async fn credits_low(app: &TestApp, project: &str, developer: &str, account: &str) {
    let granted = app
        .call(
            "POST",
            &format!(
                "/api/v1/payments/stripe/projects/{project}/accounts/{account}/grants?test_mode=true"
            ),
            Some(&app.developer_token(developer)),
            Some(&json!({"amount": 10, "reason": "welcome", "idempotencyKey": format!("g-{account}")})),
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let spent = app
        .call(
            "POST",
            &format!("/api/credits/consume?project_id={project}&test_mode=true"),
            Some(&app.token(account)),
            Some(&json!({"amount": 6, "reason": "work", "idempotencyKey": format!("s-{account}")})),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
}

async fn received(
    receiver: &Receiver,
    count: usize,
    secs: u64,
) -> Vec<integration_tests::receiver::Received> {
    eventually(secs, || async {
        let got = receiver.received();
        (got.len() >= count).then_some(got)
    })
    .await
    .unwrap_or_else(|| receiver.received())
}

async fn attempts(app: &TestApp, project: &str, developer: &str, id: &str) -> Vec<Value> {
    let log = app
        .call(
            "GET",
            &format!(
                "/api/v1/payments/stripe/projects/{project}/webhooks/{id}/attempts?test_mode=true"
            ),
            Some(&app.developer_token(developer)),
            None,
        )
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    log.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn each_event_reaches_its_endpoint_once_signed_as_the_standard_webhooks_library_verifies() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-wes").await;
    let receiver = Receiver::start(Answer::Status(204)).await;
    let (id, secret) = endpoint(&app, "alpha", "dev-wes", &receiver.url).await;
    credits_low(&app, "alpha", "dev-wes", "ana").await;
    let got = received(&receiver, 1, 60).await;
    assert_eq!(got.len(), 1, "one delivery");
    let event = verify_with_library(&secret, &got[0])
        .await
        .expect("the library verifies it");
    assert_eq!(event["type"], "credits.low");
    assert_eq!(event["account"], "ana");
    assert_eq!(event["project"], "alpha");
    assert_eq!(
        got[0].headers["webhook-id"],
        event["id"].as_str().expect("id")
    );
    // Signed with another secret, the library refuses it (the check can fail).
    let other = coffer::domain::webhooks::new_secret(&[1; 32]);
    assert!(verify_with_library(&other, &got[0]).await.is_err());
    // Once: nothing more comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
    let log = attempts(&app, "alpha", "dev-wes", &id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["outcome"], "delivered");
    assert_eq!(log[0]["status"], 204);
    // Sent again on the developer's word: the same event, the same webhook-id.
    let resent = app
        .call(
            "POST",
            &format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}/resend?test_mode=true"),
            Some(&app.developer_token("dev-wes")),
            Some(&json!({"eventId": event["id"]})),
        )
        .await;
    assert_eq!(resent.status, 200, "{}", resent.body);
    let again = received(&receiver, 2, 30).await;
    assert_eq!(again.len(), 2);
    assert_eq!(
        again[1].headers["webhook-id"],
        again[0].headers["webhook-id"]
    );
    verify_with_library(&secret, &again[1])
        .await
        .expect("verifies");
}

#[tokio::test]
async fn a_receiver_failing_five_times_gets_the_event_on_the_sixth_try_with_backoff() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-fay").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    receiver.script(vec![Answer::Status(500); 5]);
    let (id, secret) = endpoint(&app, "alpha", "dev-fay", &receiver.url).await;
    credits_low(&app, "alpha", "dev-fay", "bo").await;
    let got = received(&receiver, 6, 90).await;
    assert_eq!(got.len(), 6, "five failures, then the delivery");
    for delivery in &got {
        verify_with_library(&secret, delivery)
            .await
            .expect("each try is signed");
        assert_eq!(delivery.headers["webhook-id"], got[0].headers["webhook-id"]);
    }
    // The waits follow the schedule (5 s, 5 min, 30 min, 2 h, 5 h at the tests' 1/3600 scale),
    // each at least four fifths of it (the jitter), and they grow.
    let scheduled_ms = [5.0, 300.0, 1800.0, 7200.0, 18_000.0].map(|s| s * 1000.0 / 3600.0);
    let gaps: Vec<Duration> = got
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    for (gap, wait) in gaps.iter().zip(scheduled_ms) {
        assert!(
            gap.as_secs_f64() * 1000.0 >= wait * 0.8,
            "a wait of {gap:?} is shorter than the schedule's {wait} ms: {gaps:?}"
        );
    }
    assert!(gaps[4] > gaps[1], "{gaps:?}");
    let log = attempts(&app, "alpha", "dev-fay", &id).await;
    let outcomes: Vec<&str> = log.iter().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes.len(), 6, "{log:?}");
    assert_eq!(outcomes[0], "delivered", "newest first: {outcomes:?}");
    assert!(
        outcomes[1..].iter().all(|o| *o == "retrying"),
        "{outcomes:?}"
    );
    assert_eq!(log[1]["status"], 500);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_nothing_more_is_sent() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-gil").await;
    let receiver = Receiver::start(Answer::Status(410)).await;
    let (id, _) = endpoint(&app, "alpha", "dev-gil", &receiver.url).await;
    // Another endpoint of the project, taking every event: it is told.
    let watcher = Receiver::start(Answer::Status(200)).await;
    let told = app
        .call(
            "POST",
            "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true",
            Some(&app.developer_token("dev-gil")),
            Some(&json!({"url": watcher.url, "events": ["webhook.endpoint_disabled"]})),
        )
        .await;
    assert_eq!(told.status, 200, "{}", told.body);
    let watcher_secret = told.body["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    credits_low(&app, "alpha", "dev-gil", "cy").await;
    assert_eq!(received(&receiver, 1, 60).await.len(), 1);
    let seen = eventually(20, || async {
        let now = app
            .call(
                "GET",
                &format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}?test_mode=true"),
                Some(&app.developer_token("dev-gil")),
                None,
            )
            .await;
        (now.body["data"]["enabled"] == false).then_some(now.body)
    })
    .await
    .expect("disabled");
    assert_eq!(seen["data"]["disabledReason"], "gone");
    credits_low(&app, "alpha", "dev-gil", "cy2").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.received().len(), 1, "nothing after the 410");
    let log = attempts(&app, "alpha", "dev-gil", &id).await;
    assert_eq!(log[0]["outcome"], "gone");
    let notice = received(&watcher, 1, 30).await;
    assert_eq!(notice.len(), 1, "the developer is told");
    let event = verify_with_library(&watcher_secret, &notice[0])
        .await
        .expect("signed");
    assert_eq!(event["type"], "webhook.endpoint_disabled");
    assert_eq!(event["data"]["endpointId"], id.as_str());
    assert_eq!(event["data"]["reason"], "gone");
    // A disabled endpoint takes no re-send.
    let resend = app
        .call(
            "POST",
            &format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}/resend?test_mode=true"),
            Some(&app.developer_token("dev-gil")),
            Some(&json!({"eventId": event["id"]})),
        )
        .await;
    assert_eq!(resend.status, 409, "{}", resend.body);
}

#[tokio::test]
async fn a_rotated_secret_keeps_the_old_one_valid_beside_the_new_for_the_overlap() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-hal").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let (id, old) = endpoint(&app, "alpha", "dev-hal", &receiver.url).await;
    let rotated = app
        .call(
            "POST",
            &format!(
                "/api/v1/payments/stripe/projects/alpha/webhooks/{id}/rotate-secret?test_mode=true"
            ),
            Some(&app.developer_token("dev-hal")),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new, old);
    assert!(rotated.body["data"]["endpoint"]["previousSecretUntil"].is_string());
    credits_low(&app, "alpha", "dev-hal", "di").await;
    let got = received(&receiver, 1, 60).await;
    assert_eq!(got.len(), 1);
    verify_with_library(&new, &got[0])
        .await
        .expect("the new secret verifies");
    verify_with_library(&old, &got[0])
        .await
        .expect("the old one too, for a day");
    // The listing never shows a secret.
    let listed = app
        .call(
            "GET",
            "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true",
            Some(&app.developer_token("dev-hal")),
            None,
        )
        .await;
    assert!(
        !listed.body.to_string().contains("whsec_"),
        "{}",
        listed.body
    );
}

#[tokio::test]
async fn another_developers_endpoints_are_404_and_metadata_addresses_are_refused() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-ida").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let (id, _) = endpoint(&app, "alpha", "dev-ida", &receiver.url).await;
    let outsider = app.developer_token("dev-jon");
    for (method, path) in [
        (
            "GET",
            format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}?test_mode=true"),
        ),
        (
            "DELETE",
            format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}?test_mode=true"),
        ),
        (
            "GET",
            "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true".to_owned(),
        ),
        (
            "GET",
            format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}/attempts?test_mode=true"),
        ),
    ] {
        let reply = app.call(method, &path, Some(&outsider), None).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
    }
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://10.1.2.3/hook",
    ] {
        let refused = app
            .call(
                "POST",
                "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true",
                Some(&app.developer_token("dev-ida")),
                Some(&json!({"url": url})),
            )
            .await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
    }
    // An event of another project cannot be re-sent here (events are kept per project).
    configured(&app, "beta", "dev-jon").await;
    let other = Receiver::start(Answer::Status(200)).await;
    endpoint(&app, "beta", "dev-jon", &other.url).await;
    credits_low(&app, "beta", "dev-jon", "zed").await;
    let theirs = received(&other, 1, 60).await;
    let their_id = theirs[0].headers["webhook-id"].clone();
    let stolen = app
        .call(
            "POST",
            &format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}/resend?test_mode=true"),
            Some(&app.developer_token("dev-ida")),
            Some(&json!({"eventId": their_id})),
        )
        .await;
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    // A receiver that redirects to the metadata address: the redirect is never followed.
    let redirecting = Receiver::start(Answer::Redirect(
        "http://169.254.169.254/latest/meta-data/".into(),
    ))
    .await;
    let (bad, _) = endpoint(&app, "alpha", "dev-ida", &redirecting.url).await;
    credits_low(&app, "alpha", "dev-ida", "ed").await;
    assert_eq!(received(&redirecting, 1, 60).await.len(), 1);
    let log = eventually(20, || async {
        let log = attempts(&app, "alpha", "dev-ida", &bad).await;
        (!log.is_empty()).then_some(log)
    })
    .await
    .expect("an attempt");
    assert_eq!(log[0]["status"], 302);
    assert_eq!(log[0]["outcome"], "failed", "not followed, not tried again");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(redirecting.received().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_hangs_never_delays_another_projects_deliveries() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-kim").await;
    configured(&app, "beta", "dev-lou").await;
    let hanging = Receiver::start(Answer::Hang).await;
    let quick = Receiver::start(Answer::Status(200)).await;
    endpoint(&app, "alpha", "dev-kim", &hanging.url).await;
    endpoint(&app, "beta", "dev-lou", &quick.url).await;
    // The hanging project's event first, then the other's.
    credits_low(&app, "alpha", "dev-kim", "fi").await;
    assert_eq!(received(&hanging, 1, 60).await.len(), 1);
    let started = Instant::now();
    credits_low(&app, "beta", "dev-lou", "gus").await;
    assert_eq!(received(&quick, 1, 60).await.len(), 1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the other project's delivery took {took:?} beside a receiver hanging for 10 s"
    );
}

/// Retries run at 1/3600 of real time in tests: three days are 72 s.
#[tokio::test]
async fn an_endpoint_failing_for_three_days_is_disabled_and_its_developer_told() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-ivy").await;
    let receiver = Receiver::start(Answer::Status(500)).await;
    let (id, _) = endpoint(&app, "alpha", "dev-ivy", &receiver.url).await;
    let watcher = Receiver::start(Answer::Status(200)).await;
    let told = app
        .call(
            "POST",
            "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true",
            Some(&app.developer_token("dev-ivy")),
            Some(&json!({"url": watcher.url, "events": ["webhook.endpoint_disabled"]})),
        )
        .await;
    assert_eq!(told.status, 200, "{}", told.body);
    let started = Instant::now();
    credits_low(&app, "alpha", "dev-ivy", "fay").await;
    // One event's retries end with its retry window, as the failing streak reaches three days:
    // a second event half-way keeps the endpoint failing past them, as a live project would.
    tokio::time::sleep(Duration::from_secs(40)).await;
    credits_low(&app, "alpha", "dev-ivy", "fay2").await;
    let disabled = eventually(100, || async {
        let now = app
            .call(
                "GET",
                &format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}?test_mode=true"),
                Some(&app.developer_token("dev-ivy")),
                None,
            )
            .await;
        (now.body["data"]["enabled"] == false).then_some(now.body)
    })
    .await
    .expect("disabled after three (scaled) days of failures");
    let after = started.elapsed();
    assert_eq!(disabled["data"]["disabledReason"], "failing");
    assert!(
        after >= Duration::from_secs(70),
        "not before three scaled days: {after:?}"
    );
    // Tried again and again, with growing gaps, before that.
    let tries = receiver.received();
    assert!(tries.len() >= 6, "{} tries", tries.len());
    let gaps: Vec<Duration> = tries
        .iter()
        .filter(|r| r.body.contains("\"fay\""))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(gaps.last() > gaps.first(), "backoff grows: {gaps:?}");
    let notice = received(&watcher, 1, 30).await;
    assert_eq!(notice.len(), 1, "the developer is told once");
    assert!(notice[0].body.contains("\"failing\""), "{}", notice[0].body);
    // Nothing more is sent to it, and the developer was told once.
    let count = receiver.received().len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        receiver.received().len(),
        count,
        "nothing after it was disabled"
    );
    assert_eq!(watcher.received().len(), 1, "told once");
}

#[tokio::test]
async fn a_busy_receivers_retry_after_is_waited_for() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-jo").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    receiver.script(vec![Answer::RetryAfter(429, 8)]);
    let (id, _) = endpoint(&app, "alpha", "dev-jo", &receiver.url).await;
    credits_low(&app, "alpha", "dev-jo", "gus").await;
    let got = received(&receiver, 2, 60).await;
    assert_eq!(got.len(), 2, "tried again after the 429");
    let gap = got[1].at - got[0].at;
    // The scaled schedule alone would try again within about a second.
    assert!(gap >= Duration::from_secs(8), "waited as asked: {gap:?}");
    let log = attempts(&app, "alpha", "dev-jo", &id).await;
    assert_eq!(log[1]["status"], 429);
    assert_eq!(log[1]["outcome"], "retrying");
    assert_eq!(log[0]["outcome"], "delivered");
}

#[tokio::test]
async fn concurrent_adds_never_pass_twenty_endpoints_and_a_delete_makes_room() {
    let app = with_webhooks().await;
    configured(&app, "alpha", "dev-kit").await;
    let token = app.developer_token("dev-kit");
    let path = "/api/v1/payments/stripe/projects/alpha/webhooks?test_mode=true";
    let adds = (0..25).map(|i| {
        let body = json!({"url": format!("http://127.0.0.1:9/hook-{i}")});
        let (app, token) = (&app, &token);
        async move { app.call("POST", path, Some(token), Some(&body)).await }
    });
    let answers = integration_tests::join_all(adds.collect::<Vec<_>>()).await;
    let made: Vec<&Value> = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| &a.body)
        .collect();
    let refused = answers.iter().filter(|a| a.status == 409).count();
    assert_eq!(
        (made.len(), refused),
        (20, 5),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let listed = app.call("GET", path, Some(&token), None).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(20));
    let full = app
        .call(
            "POST",
            path,
            Some(&token),
            Some(&json!({"url": "http://127.0.0.1:9/late"})),
        )
        .await;
    assert_eq!(full.status, 409, "{}", full.body);
    assert!(
        full.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 20"),
        "{}",
        full.body
    );
    // A delete (twice: the second changes nothing) makes room for exactly one.
    let id = made[0]["data"]["endpoint"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let one = format!("/api/v1/payments/stripe/projects/alpha/webhooks/{id}?test_mode=true");
    let deleted = app.call("DELETE", &one, Some(&token), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = app.call("DELETE", &one, Some(&token), None).await;
    assert_eq!(again.status, 404, "{}", again.body);
    let room = app
        .call(
            "POST",
            path,
            Some(&token),
            Some(&json!({"url": "http://127.0.0.1:9/room"})),
        )
        .await;
    assert_eq!(room.status, 200, "{}", room.body);
    let over = app
        .call(
            "POST",
            path,
            Some(&token),
            Some(&json!({"url": "http://127.0.0.1:9/over"})),
        )
        .await;
    assert_eq!(over.status, 409, "{}", over.body);
}
