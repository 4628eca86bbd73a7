//! The developer console (`web/console/`, served at `/console/`) in headless Chromium, used only
//! as a developer would: signing in, creating a package, looking an account up after a purchase,
//! reading the charts, adding a webhook endpoint, seeing its delivery and re-sending it. Each
//! step's result is checked against the API or the receiver, not only against the page.
//! Screenshots go to `.stack/screenshots/` (the README's are copies of them).

use fantoccini::key::Key;
use integration_tests::eventually;
use integration_tests::receiver::{verify_with_library, Answer, Receiver};
use serde_json::json;

use crate::browser::{Browser, UI_SECS};
use crate::outbound_webhooks::with_webhooks;
use crate::projects::{buy_package, open_project, settled};

/// How long the stream, the stats and a delivery may take to show (the stream is polled).
const PIPELINE_SECS: u64 = 60;

/// Today's value in the chart `series`, as the page drew it (`None`: no such bar).
async fn todays_bar(page: &Browser, series: &str) -> Option<f64> {
    let value = page
        .client
        .execute(
            "const figure = [...document.querySelectorAll('figure.chart')]
                 .find((f) => f.dataset.series === arguments[0]);
             const bars = figure ? figure.querySelectorAll('rect') : [];
             return bars.length ? bars[bars.length - 1].getAttribute('data-value') : null;",
            vec![json!(series)],
        )
        .await
        .ok()?;
    value.as_str()?.parse().ok()
}

/// Signs in as deployed: a token pasted (the identity provider's JWT).
async fn sign_in_with(page: &Browser, token: &str) {
    page.type_into(
        "Your developer token (a JWT from your identity provider)",
        token,
    )
    .await;
    page.button("Use this token")
        .await
        .click()
        .await
        .expect("sign in");
}

#[tokio::test]
async fn a_developer_runs_their_project_from_the_console() {
    let app = with_webhooks().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let page = Browser::open_at(&app, "console", "/console/").await;

    // Sign in by name (the local stack), from the keyboard.
    page.type_into("Developer name (local stack: no password)", "dev-ann")
        .await;
    page.type_into_focused(&Key::Enter).await;
    page.wait_text("#projects", UI_SECS, |t| {
        t.contains("alpha active not configured")
    })
    .await;
    page.button("Open alpha").await.click().await.expect("open");
    page.wait_text("#keys", UI_SECS, |t| {
        t.contains("Webhook URL to paste into Stripe")
    })
    .await;
    let keys = page.text("#keys").await;
    assert!(
        !keys.contains("sk_test_alpha_0123456789abcdef"),
        "the secret key is masked: {keys}"
    );

    // A new package, saved from the form: the API sells it from now on.
    page.type_into("Package id", "starter").await;
    page.type_into("Package name", "Starter pack").await;
    page.type_into("Price (for example 9.99)", "4.5").await;
    page.type_into("Credits", "6").await;
    page.button("Save the package")
        .await
        .click()
        .await
        .expect("save");
    page.wait_text("#message", UI_SECS, |t| t == "Package starter is saved.")
        .await;
    page.wait_text("#packages", UI_SECS, |t| t.contains("Starter pack"))
        .await;
    let on_sale = app
        .call(
            "GET",
            "/api/stripe/credit-packages?project_id=alpha&test_mode=true",
            Some(&app.token("ula")),
            None,
        )
        .await;
    assert!(
        on_sale.body["data"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["id"] == "starter" && p["creditAmount"] == json!(6.0))),
        "{}",
        on_sale.body
    );

    // A plan with limits, from its form; a limit that is not a number is refused in words.
    page.type_into("Plan id", "team").await;
    page.type_into("Plan name", "Team").await;
    page.type_into("Limits (metric=number, comma-separated)", "requests=many")
        .await;
    page.button("Save the plan")
        .await
        .click()
        .await
        .expect("save");
    page.wait_text("#message", UI_SECS, |t| {
        t.contains("should read metric=number")
    })
    .await;
    page.type_into(
        "Limits (metric=number, comma-separated)",
        "requests=1000, exports=10",
    )
    .await;
    page.button("Save the plan")
        .await
        .click()
        .await
        .expect("save");
    page.wait_text("#message", UI_SECS, |t| t == "Plan team is saved.")
        .await;
    page.wait_text("#plans", UI_SECS, |t| t.contains("requests=1000"))
        .await;
    let plans = app
        .call(
            "GET",
            "/api/v1/payments/stripe/projects/alpha/plans?test_mode=true",
            Some(&app.developer_token("dev-ann")),
            None,
        )
        .await;
    let team = plans.body["data"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"] == "team").cloned())
        .unwrap_or_default();
    assert_eq!(
        team["limits"],
        json!({"requests": 1000, "exports": 10}),
        "{}",
        plans.body
    );

    // An endpoint for payments; its secret is shown once.
    page.type_into("URL (https)", &receiver.url).await;
    page.type_into(
        "Event types (comma-separated; empty for all)",
        "payment.succeeded",
    )
    .await;
    page.button("Add the endpoint")
        .await
        .click()
        .await
        .expect("add");
    let shown = page
        .wait_text("#secret", UI_SECS, |t| t.contains("whsec_"))
        .await;
    let secret = shown
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .expect("the secret")
        .to_owned();
    page.wait_text("#endpoints", UI_SECS, |t| t.contains(&receiver.url))
        .await;

    // A user buys the new package.
    let intent = buy_package(&app, "ula", "alpha", "test", "starter").await;
    assert!(
        settled(
            &app,
            "ula",
            "alpha",
            "test",
            std::slice::from_ref(&intent),
            json!(6.0)
        )
        .await
    );
    let spend = json!({"amount": 1.5, "reason": "export", "idempotencyKey": "console-1"});
    let spent = app
        .call(
            "POST",
            "/api/credits/consume?project_id=alpha&test_mode=true",
            Some(&app.token("ula")),
            Some(&spend),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);

    // The account lookup shows the purchase, its ledger entry and the balance.
    page.type_into("Account id", "ula").await;
    page.button("Look up").await.click().await.expect("look up");
    let account = page
        .wait_text("#account", UI_SECS, |t| t.contains(&intent))
        .await;
    assert!(account.contains("Account ula"), "{account}");
    assert!(account.contains("Balance\n4.5 credits"), "{account}");
    assert!(account.contains("purchase 6"), "{account}");
    assert!(account.contains("spend -1.5"), "{account}");
    assert!(account.contains("$4.50"), "{account}");

    // The charts: today's revenue and credits sold and spent, once the stream counted them.
    let counted = eventually(PIPELINE_SECS, || async {
        page.button("Refresh the stats").await.click().await.ok()?;
        let revenue = todays_bar(&page, "Revenue (USD)").await?;
        let sold = todays_bar(&page, "Credits sold").await?;
        let spent = todays_bar(&page, "Credits spent").await?;
        (revenue == 4.5 && sold == 6.0 && spent == 1.5).then_some(())
    })
    .await;
    if counted.is_none() {
        page.fail("today's bars never showed the purchase").await;
    }
    let totals = page.text("#totals").await;
    assert!(totals.contains("Revenue\n$4.50"), "{totals}");
    page.screenshot("console-overview").await;
    page.screenshot_of("section[aria-labelledby='stats-title']", "console-stats")
        .await;
    page.screenshot_of("section[aria-labelledby='lookup-title']", "console-account")
        .await;

    // The delivery of payment.succeeded, in the log; the receiver verified it.
    let first = eventually(PIPELINE_SECS, || async {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("the receiver gets payment.succeeded");
    assert!(first[0].body.contains(&intent), "{}", first[0].body);
    verify_with_library(&secret, &first[0])
        .await
        .expect("the library verifies it");
    let event_id = first[0].headers["webhook-id"].clone();
    page.button(&format!("Deliveries to {}", receiver.url))
        .await
        .click()
        .await
        .expect("deliveries");
    let log = eventually(PIPELINE_SECS, || async {
        let text = page.text("#deliveries").await;
        if text.contains(&event_id) {
            return Some(text);
        }
        page.button("Refresh the deliveries")
            .await
            .click()
            .await
            .ok()?;
        None
    })
    .await
    .unwrap_or_default();
    assert!(
        log.contains("payment.succeeded") && log.contains("200"),
        "{log}"
    );

    // Re-sent from the log: the receiver gets the same event (same webhook-id) again.
    page.button(&format!("Re-send {event_id}"))
        .await
        .click()
        .await
        .expect("re-send");
    page.wait_text("#message", UI_SECS, |t| t.contains("is queued"))
        .await;
    let again = eventually(PIPELINE_SECS, || async {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    })
    .await
    .expect("the re-sent event arrives");
    assert_eq!(again[1].headers["webhook-id"], event_id);
    verify_with_library(&secret, &again[1])
        .await
        .expect("the library verifies the re-sent one");
    page.button("I have kept the secret")
        .await
        .click()
        .await
        .expect("hide");
    page.wait_text("#message", UI_SECS, |t| {
        t.starts_with("The secret is hidden")
    })
    .await;
    assert!(!page.text("#webhooks-title").await.is_empty());
    let panel = page.text("section[aria-labelledby='webhooks-title']").await;
    assert!(!panel.contains("whsec_"), "{panel}");
    page.screenshot_of(
        "section[aria-labelledby='webhooks-title']",
        "console-webhooks",
    )
    .await;
}

#[tokio::test]
async fn a_developer_signs_in_with_their_token_and_sees_only_their_projects() {
    let app = with_webhooks().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    open_project(&app, "dev-bob", "beta", "test").await;
    let page = Browser::open_at(&app, "console-token", "/console/").await;
    // As deployed: the identity provider's JWT, pasted.
    sign_in_with(&page, &app.developer_token("dev-bob")).await;
    let projects = page
        .wait_text("#projects", UI_SECS, |t| t.contains("beta active"))
        .await;
    assert!(!projects.contains("alpha"), "{projects}");
    // A user's token is not a developer's: the page says so in words.
    let page = Browser::open_at(&app, "console-user-token", "/console/").await;
    sign_in_with(&page, &app.token("ula")).await;
    let said = page.wait_text("#message", UI_SECS, |t| !t.is_empty()).await;
    assert_eq!(
        said,
        "This token may not do that (not allowed): sign in as the project's developer."
    );
}
