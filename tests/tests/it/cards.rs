//! Cards saved with a SetupIntent (the storefront's flow): the browser confirms the SetupIntent
//! with the publishable key, as Stripe.js does (here: localstripe's stand-in's own request);
//! Coffer re-reads it, checks it is the caller's, and charges its card.

use integration_tests::{eventually, settle, spawn_app, TestApp};
use serde_json::{json, Value};

const GOOD_CARD: &str = "4242424242424242";
const DECLINED_AT_CHARGE: &str = "4000000000000341";

/// `POST /api/stripe/setup-intent` as `user`, then the card confirmed as Stripe.js does in the
/// browser. Returns the SetupIntent id.
pub(crate) async fn saved_card(app: &TestApp, user: &str, card: &str) -> String {
    saved_card_in(app, user, "", &app.stripe_base.clone(), card).await
}

/// [`saved_card`] in the project and mode `query` names (`?project_id=…&test_mode=…`, or empty
/// for the default), whose Stripe is at `stripe_base`.
pub(crate) async fn saved_card_in(
    app: &TestApp,
    user: &str,
    query: &str,
    stripe_base: &str,
    card: &str,
) -> String {
    let setup = app
        .post(
            &format!("/api/stripe/setup-intent{query}"),
            Some(user),
            "{}",
            &[],
        )
        .await;
    assert_eq!(setup.status, 200, "setup-intent: {}", setup.body);
    let id = setup.body["data"]["setupIntentId"]
        .as_str()
        .expect("setupIntentId")
        .to_owned();
    let secret = setup.body["data"]["clientSecret"]
        .as_str()
        .expect("clientSecret")
        .to_owned();
    assert!(secret.starts_with(&id), "{secret}");
    assert!(setup.body["data"]["customerId"]
        .as_str()
        .is_some_and(|c| c.starts_with("cus_")));
    let confirmed = browser_confirm(app, stripe_base, &id, &secret, card).await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    id
}

/// What Stripe.js's `confirmCardSetup` sends: the publishable key and the client secret, no
/// secret key. A card that asks for 3-D Secure is authenticated as the user would in Stripe.js's
/// dialog (localstripe's stand-in confirms once more).
pub(crate) async fn browser_confirm(
    app: &TestApp,
    stripe_base: &str,
    id: &str,
    secret: &str,
    card: &str,
) -> Value {
    let confirm = |body: Value| {
        let request = app
            .http
            .post(format!("{stripe_base}/v1/setup_intents/{id}/confirm"))
            .json(&body);
        async move {
            request
                .send()
                .await
                .expect("confirm at localstripe")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let first = confirm(json!({
        "key": "pk_test_coffer_local",
        "use_stripe_sdk": true,
        "client_secret": secret,
        "payment_method_data": {
            "type": "card",
            "card": {"number": card, "exp_month": "12", "exp_year": "34", "cvc": "123"},
        },
    }))
    .await;
    if first["status"] != "requires_action" {
        return first;
    }
    confirm(json!({"key": "pk_test_coffer_local", "use_stripe_sdk": true, "client_secret": secret}))
        .await
}

async fn buy(app: &TestApp, user: &str, body: Value, key: &str) -> integration_tests::Reply {
    app.post(
        "/api/stripe/create-payment-intent",
        Some(user),
        &body.to_string(),
        &[("idempotency-key", key)],
    )
    .await
}

#[tokio::test]
async fn a_saved_card_pays_for_a_package_and_credits_it_once() {
    let app = spawn_app().await;
    let setup = saved_card(&app, "sara", GOOD_CARD).await;
    let body = json!({"creditPackageId": "standard", "setupIntentId": setup});
    let reply = buy(&app, "sara", body.clone(), "sara-1").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["data"]["status"], "succeeded", "{}", reply.body);
    let intent = reply.body["data"]["paymentIntentId"]
        .as_str()
        .expect("id")
        .to_owned();
    let at_stripe = app.stripe_intent(&intent).await;
    assert_eq!(at_stripe["amount"], 1500);
    assert!(at_stripe["customer"]
        .as_str()
        .is_some_and(|c| c.starts_with("cus_")));

    let credited = settle(
        || async { (app.balance("sara").await > 0.0).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(credited.is_some(), "never credited");
    // The same request again: the same intent, already paid; nothing charged or credited twice.
    let again = buy(&app, "sara", body, "sara-1").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["data"]["paymentIntentId"], intent.as_str());
    assert_eq!(again.body["data"]["status"], "succeeded");
    app.redeliver_intent_event("payment_intent.succeeded", &intent)
        .await;
    // 1,650 credits, shown in major units.
    assert_eq!(app.balance("sara").await, 16.5);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_declined_saved_card_is_a_402_in_words_and_credits_nothing() {
    let app = spawn_app().await;
    let setup = saved_card(&app, "dora", DECLINED_AT_CHARGE).await;
    let reply = buy(
        &app,
        "dora",
        json!({"creditPackageId": "standard", "setupIntentId": setup}),
        "dora-1",
    )
    .await;
    assert_eq!(reply.status, 402, "{}", reply.body);
    assert_eq!(reply.body["code"], "card_declined");
    assert_eq!(reply.body["error"], "Your card was declined.");
    // The payment is recorded (pending) before the charge; Stripe's payment_failed event marks it.
    let history = app.get("/api/stripe/payment-history", Some("dora")).await;
    let intent = history.body["data"][0]["id"]
        .as_str()
        .expect("the payment is in the history")
        .to_owned();
    let failed = settle(
        || async {
            (app.history_status("dora", &intent).await.as_deref() == Some("failed")).then_some(())
        },
        app.redeliver_intent_event("payment_intent.payment_failed", &intent),
    )
    .await;
    assert!(failed.is_some(), "the payment never showed as failed");
    assert_eq!(app.balance("dora").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_setup_intent_is_only_good_for_its_own_account_once_confirmed() {
    let app = spawn_app().await;
    let bobs = saved_card(&app, "bob", GOOD_CARD).await;
    // Eve has a customer too, but Bob's card is not hers.
    saved_card(&app, "eve", GOOD_CARD).await;
    let stolen = buy(
        &app,
        "eve",
        json!({"creditPackageId": "standard", "setupIntentId": bobs}),
        "eve-1",
    )
    .await;
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    assert_eq!(stolen.body["code"], "not_found");

    // A SetupIntent not confirmed yet.
    let open = app
        .post("/api/stripe/setup-intent", Some("bob"), "{}", &[])
        .await;
    let open_id = open.body["data"]["setupIntentId"].as_str().expect("id");
    let early = buy(
        &app,
        "bob",
        json!({"creditPackageId": "standard", "setupIntentId": open_id}),
        "bob-1",
    )
    .await;
    assert_eq!(early.status, 409, "{}", early.body);

    for (body, why) in [
        (
            json!({"creditPackageId": "standard", "setupIntentId": "pm_123"}),
            "not a SetupIntent id",
        ),
        (
            json!({"creditPackageId": "standard", "setupIntentId": 7}),
            "not a string",
        ),
        (
            json!({"creditPackageId": "standard", "setupIntentId": bobs, "paymentMethodId": "pm_1"}),
            "with paymentMethodId",
        ),
    ] {
        let reply = buy(&app, "bob", body, "bob-2").await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request", "{why}");
    }
    assert_eq!(app.balance("eve").await, 0.0);
    assert_eq!(app.balance("bob").await, 0.0);
}

#[tokio::test]
async fn a_saved_card_becomes_the_default_and_pays_a_new_subscription() {
    let app = spawn_app().await;
    let setup = saved_card(&app, "sam", GOOD_CARD).await;
    let reply = app
        .post(
            "/api/stripe/create-subscription",
            Some("sam"),
            &json!({"planId": "starter", "setupIntentId": setup}).to_string(),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let active = eventually(20, || async {
        let now = app
            .get("/api/v1/payments/stripe/my-subscription", Some("sam"))
            .await;
        (now.body["data"]["status"] == "active" && now.body["data"]["planId"] == "starter")
            .then_some(())
    })
    .await;
    assert!(active.is_some(), "the subscription never became active");
}

#[tokio::test]
async fn the_page_config_and_cors_follow_the_local_stack() {
    let app = spawn_app().await;
    let config: Value = app
        .http
        .get(format!("{}/config.json", app.base_url))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("JSON");
    assert_eq!(config["apiBase"], "");
    assert_eq!(
        config["stripeJsUrl"],
        format!("{}/js.stripe.com/v3/", app.stripe_base)
    );
    assert!(config["publishableKey"]
        .as_str()
        .is_some_and(|k| k.starts_with("pk_test_")));

    // A page on an allowed origin: preflight and answer carry the origin; another origin gets
    // no CORS headers.
    for (origin, allowed) in [
        (integration_tests::TEST_PAGE_ORIGIN, true),
        ("https://evil.example", false),
    ] {
        let preflight = app
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/stripe/balance", app.base_url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .expect("preflight");
        assert_eq!(preflight.status(), 204);
        let header = preflight
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(header.as_deref(), allowed.then_some(origin), "{origin}");
        let answer = app
            .http
            .get(format!("{}/api/stripe/balance", app.base_url))
            .bearer_auth(app.token("cora"))
            .header("origin", origin)
            .send()
            .await
            .expect("GET");
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.headers().contains_key("access-control-allow-origin"),
            allowed,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn a_subscription_without_any_card_is_refused_in_words() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/api/stripe/create-subscription",
            Some("nina"),
            &json!({"planId": "starter"}).to_string(),
            &[],
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["code"], "conflict");
    assert!(reply.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("no card")));
    // Nothing was left half-made: with a card it goes through.
    let setup = saved_card(&app, "nina", GOOD_CARD).await;
    let again = app
        .post(
            "/api/stripe/create-subscription",
            Some("nina"),
            &json!({"planId": "starter", "setupIntentId": setup}).to_string(),
            &[],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
}
