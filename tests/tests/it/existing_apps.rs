//! The apps written against other backends, unchanged: each acts exactly as its own document
//! says (its requests, the fields it reads), with only the base URL and a bearer token changed,
//! against a project set to the plain response format. What the app cannot see (credits, the
//! plan held, the card saved) is checked in Coffer's store or at localstripe.

use integration_tests::{settle, spawn_app, TestApp};
use serde_json::{json, Value};

use crate::cards::browser_confirm;
use crate::subscriptions::complete_checkout;

/// The default project set to answer in the plain format, with `change` made to its settings.
async fn plain_project(
    app: &TestApp,
    change: impl FnOnce(&mut coffer::domain::projects::ProjectSettings),
) {
    let scope = app.app.app.default_scope();
    let store = app.app.app.store_for(&scope);
    let mut settings = store
        .settings()
        .await
        .expect("settings")
        .unwrap_or_default();
    settings.response_format = Some(coffer::domain::projects::ResponseFormat::Plain);
    change(&mut settings);
    store.put_settings(&settings).await.expect("settings");
    app.app.app.forget_settings(&scope);
}

/// An app's request: its own body, a bearer token, nothing else.
async fn send(app: &TestApp, path: &str, token: &str, body: Value) -> integration_tests::Reply {
    app.call("POST", path, Some(token), Some(&body)).await
}

/// The field an app reads, as a string (the test fails when it is not there).
fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("the app reads `{name}`, which is not in {body}"))
}

/// The account's balance in minor units, as Coffer's table holds it.
async fn credits(app: &TestApp, account: &str) -> i64 {
    let account = coffer::domain::records::UserId::parse(account).expect("account");
    app.app
        .app
        .store_for(&app.app.app.default_scope())
        .balance(&account)
        .await
        .expect("balance")
        .map_or(0, |b| b.balance)
}

/// The mobile app's create-subscription, as its document has it.
async fn subscribe(
    app: &TestApp,
    token: &str,
    customer: &str,
    price: &str,
) -> integration_tests::Reply {
    send(
        app,
        "/api/stripe/create-subscription",
        token,
        json!({"customerId": customer, "priceId": price}),
    )
    .await
}

/// The caller's subscription, read in the project's plain format.
async fn my_subscription(app: &TestApp, token: &str) -> integration_tests::Reply {
    app.call(
        "GET",
        "/api/v1/payments/stripe/my-subscription",
        Some(token),
        None,
    )
    .await
}

/// An object as localstripe holds it.
async fn at_stripe(app: &TestApp, path: &str) -> Value {
    app.http
        .get(format!("{}{path}", app.stripe_base))
        .bearer_auth(&app.stripe_key)
        .send()
        .await
        .expect("localstripe")
        .json::<Value>()
        .await
        .expect("json")
}

/// An error as those apps read it: `{"error": <a sentence>}` and nothing else.
fn plain_error(reply: &integration_tests::Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let keys: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["error"], "{}", reply.body);
    assert!(!field(&reply.body, "error").is_empty());
}

#[tokio::test]
async fn the_tier_web_app_pays_a_tier_for_its_organisation_as_its_document_says() {
    let app = spawn_app().await;
    plain_project(&app, |_| {}).await;
    let token = app.member_token("tara", &["acme"]);
    // Its request as it sends it: a `username` (ignored: identity is the token's), the
    // organisation as `identifier`, and the tier.
    let reply = send(
        &app,
        "/api/stripe/create-payment-intent",
        &token,
        json!({"username": "someone-else", "identifier": "acme", "tier": "pro"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.get("success").is_none(), "{}", reply.body);
    let secret = field(&reply.body, "clientSecret");
    // Stripe.js confirms the intent its client secret names.
    let intent = secret.split("_secret_").next().expect("an intent's secret");
    let paid = app.pay_with_card(intent, "4242424242424242").await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    let tier = settle(
        || async {
            let now = app
                .call(
                    "GET",
                    "/api/v1/payments/stripe/my-subscription?identifier=acme",
                    Some(&token),
                    None,
                )
                .await;
            (now.body["planId"] == "pro").then_some(now.body)
        },
        app.redeliver_intent_event("payment_intent.succeeded", intent),
    )
    .await;
    assert!(tier.is_some(), "the organisation never got the tier");
    assert_eq!(
        credits(&app, "org:acme").await,
        1000,
        "the tier's credits, once"
    );
    assert_eq!(credits(&app, "tara").await, 0, "nothing for the member");
    assert_eq!(
        credits(&app, "someone-else").await,
        0,
        "nothing for the body's username"
    );
    // An organisation the token does not name: 403, said as these apps read errors.
    let outsider = send(
        &app,
        "/api/stripe/create-payment-intent",
        &app.member_token("otto", &["other"]),
        json!({"username": "otto", "identifier": "acme", "tier": "pro"}),
    )
    .await;
    plain_error(&outsider, 403);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_mobile_app_pays_a_custom_amount_and_subscribes_with_paymentsheets_fields() {
    let app = spawn_app().await;
    plain_project(&app, |settings| {
        // Its amounts are in cents, as Stripe's PaymentSheet samples send them; it never asks
        // for PaymentSheet's fields, so the project names the SDK's API version for them.
        settings.custom_amounts = Some(coffer::domain::packages::CustomAmounts {
            min: 100,
            max: 100_000,
            currencies: vec!["usd".into()],
            credits_per_unit_e4: 10_000,
            unit: coffer::domain::packages::AmountUnit::Minor,
        });
        settings.payment_sheet_version = Some("2020-08-27".into());
    })
    .await;
    // Its plan starts with a trial: the first payment is collected later.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let mut plan = store.plan("starter").await.expect("plan").expect("starter");
    plan.trial_days = Some(14);
    store.put_plan(&plan).await.expect("plan");
    let price = plan.price_id.clone().expect("price");
    let token = app.token("milo");

    let customer = send(
        &app,
        "/api/stripe/create-customer",
        &token,
        json!({"email": "milo@example.com", "name": "Milo"}),
    )
    .await;
    assert_eq!(customer.status, 200, "{}", customer.body);
    let customer_id = field(&customer.body, "customerId").to_owned();

    let sheet = send(
        &app,
        "/api/stripe/create-payment-intent",
        &token,
        json!({"amount": 700, "currency": "usd"}),
    )
    .await;
    assert_eq!(sheet.status, 200, "{}", sheet.body);
    let secret = field(&sheet.body, "client_secret");
    assert_eq!(field(&sheet.body, "customer"), customer_id);
    assert!(field(&sheet.body, "ephemeralKey").starts_with("ek_test_"));
    let intent = secret.split("_secret_").next().expect("an intent's secret");
    assert_eq!(
        app.stripe_intent(intent).await["amount"],
        700,
        "cents, as sent"
    );
    assert_eq!(
        app.pay_with_card(intent, "4242424242424242").await.status,
        200
    );
    let credited = settle(
        || async { (credits(&app, "milo").await == 700).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", intent),
    )
    .await;
    assert!(credited.is_some(), "7.00 of credits, once");
    // Amounts it may not send, refused in words.
    let fraction = send(
        &app,
        "/api/stripe/create-payment-intent",
        &token,
        json!({"amount": 700.5, "currency": "usd"}),
    )
    .await;
    plain_error(&fraction, 400);

    // Someone else's customer (a real one, of another user): 403.
    let other = send(
        &app,
        "/api/stripe/create-customer",
        &app.token("nina"),
        json!({"email": "nina@example.com", "name": "Nina"}),
    )
    .await;
    let theirs = subscribe(&app, &token, field(&other.body, "customerId"), &price).await;
    plain_error(&theirs, 403);
    let subscribed = subscribe(&app, &token, &customer_id, &price).await;
    assert_eq!(subscribed.status, 200, "{}", subscribed.body);
    let subscription = field(&subscribed.body, "subscriptionId").to_owned();
    let secret = field(&subscribed.body, "clientSecret").to_owned();
    assert!(secret.starts_with("seti_"), "a SetupIntent's: {secret}");
    // PaymentSheet saves the card with the SetupIntent…
    let setup = secret
        .split("_secret_")
        .next()
        .expect("a SetupIntent's secret");
    let confirmed =
        browser_confirm(&app, &app.stripe_base, setup, &secret, "4242424242424242").await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    // …and Stripe says so: the card becomes what pays when the trial ends.
    let setup_object = at_stripe(&app, &format!("/v1/setup_intents/{setup}")).await;
    let event = app
        .deliver_event("setup_intent.succeeded", &setup_object)
        .await;
    assert_eq!(event.status, 200, "{}", event.body);
    let stripe_customer = at_stripe(&app, &format!("/v1/customers/{customer_id}")).await;
    assert_eq!(
        stripe_customer["invoice_settings"]["default_payment_method"],
        setup_object["payment_method"],
        "{stripe_customer}"
    );
    let now = my_subscription(&app, &token).await;
    assert_eq!(now.body["status"], "trialing", "{}", now.body);
    assert_eq!(now.body["subscriptionId"], subscription.as_str());
    assert_eq!(
        credits(&app, "milo").await,
        700,
        "a trial grants no credits"
    );
    // Nothing was paid: the plan cannot be raised during the trial.
    let upgrade = send(
        &app,
        "/api/v1/payments/stripe/update-subscription",
        &token,
        json!({"planId": "pro-monthly"}),
    )
    .await;
    plain_error(&upgrade, 409);
    // A trial is the first subscription's only: canceled and made again, it is paid at once
    // (with the card PaymentSheet saved).
    let canceled = send(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        &token,
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    let again = subscribe(&app, &token, &customer_id, &price).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let second = field(&again.body, "subscriptionId").to_owned();
    let stripe_subscription = at_stripe(&app, &format!("/v1/subscriptions/{second}")).await;
    assert!(
        stripe_subscription["trial_period_days"].is_null(),
        "no second trial: {stripe_subscription}"
    );
    assert_ne!(stripe_subscription["status"], "trialing");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_gateway_portal_gets_its_checkout_url_and_the_plan_once_checkout_completes() {
    let app = spawn_app().await;
    plain_project(&app, |_| {}).await;
    let token = app.token("gus");
    let reply = send(
        &app,
        "/api/portal/checkout",
        &token,
        json!({"plan_id": "pro-monthly", "success_url": "https://app.example.com/ok",
               "cancel_url": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let url = field(&reply.body, "checkout_url");
    // The user completes Checkout at that URL.
    let session_id = url.rsplit('/').next().expect("the session in the URL");
    let session = complete_checkout(&app, session_id).await;
    let event = app
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(event.status, 200, "{}", event.body);
    let now = my_subscription(&app, &token).await;
    assert_eq!(now.body["planId"], "pro-monthly", "{}", now.body);
    // A redirect outside the project's origins: 400, said as the portal reads errors.
    let outside = send(
        &app,
        "/api/portal/checkout",
        &token,
        json!({"plan_id": "pro-monthly", "success_url": "https://evil.example.net/ok",
               "cancel_url": "https://app.example.com/no"}),
    )
    .await;
    plain_error(&outside, 400);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_project_left_in_the_envelope_answers_as_the_contract_says() {
    let app = spawn_app().await;
    let reply = send(
        &app,
        "/api/stripe/create-payment-intent",
        &app.token("enzo"),
        json!({"creditPackageId": "starter"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    assert!(reply.body["data"]["clientSecret"].is_string());
    assert!(reply.body["data"].get("client_secret").is_none());
    // Set to plain: a list is the array, its next page the Next-Cursor header; the developer's
    // routes stay in the envelope.
    plain_project(&app, |_| {}).await;
    let packages = app
        .call(
            "GET",
            "/api/stripe/credit-packages",
            Some(&app.token("enzo")),
            None,
        )
        .await;
    assert_eq!(packages.status, 200);
    assert!(packages.body.is_array(), "{}", packages.body);
    send(
        &app,
        "/api/stripe/create-payment-intent",
        &app.token("enzo"),
        json!({"creditPackageId": "standard"}),
    )
    .await;
    let page = app
        .http
        .get(format!(
            "{}/api/stripe/payment-history?limit=1",
            app.base_url
        ))
        .bearer_auth(app.token("enzo"))
        .send()
        .await
        .expect("history");
    let cursor = page
        .headers()
        .get("next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a Next-Cursor header: there is a second payment");
    let first: Value = page.json().await.expect("json");
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{first}");
    let rest = app
        .call(
            "GET",
            &format!("/api/stripe/payment-history?limit=1&cursor={cursor}"),
            Some(&app.token("enzo")),
            None,
        )
        .await;
    assert_eq!(rest.body.as_array().map(Vec::len), Some(1), "{}", rest.body);
    assert_ne!(rest.body[0]["id"], first[0]["id"]);
    let dev = app.developer_token("dev-enzo");
    let projects = app
        .call("GET", "/api/v1/payments/projects", Some(&dev), None)
        .await;
    assert_eq!(projects.body["success"], true, "{}", projects.body);
}

#[tokio::test]
async fn a_developer_sets_their_projects_format_and_paymentsheet_version() {
    let app = spawn_app().await;
    app.configure_alpha("dev-fay").await;
    let dev = app.developer_token("dev-fay");
    let settings = "/api/v1/payments/stripe/projects/alpha/settings?test_mode=true";
    for (body, words) in [
        (json!({"responseFormat": "xml"}), "envelope or plain"),
        (json!({"paymentSheetVersion": "yesterday"}), "API version"),
    ] {
        app.call("PUT", settings, Some(&dev), Some(&body))
            .await
            .assert_refused_saying(words, &body);
    }
    let saved = app
        .call(
            "PUT",
            settings,
            Some(&dev),
            Some(&json!({"responseFormat": "plain", "paymentSheetVersion": "2024-06-20"})),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["data"]["responseFormat"], "plain");
    assert_eq!(saved.body["data"]["paymentSheetVersion"], "2024-06-20");
    // The project's users get the plain format; the default project's still the envelope.
    let user = app.token("fred");
    let plain = app
        .call(
            "GET",
            "/api/stripe/balance?project_id=alpha&test_mode=true",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(
        plain.body.get("success").is_none() && plain.body["currency"] == "usd",
        "{}",
        plain.body
    );
    let unknown = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent?project_id=alpha&test_mode=true",
            Some(&user),
            Some(&json!({"creditPackageId": "nope"})),
        )
        .await;
    plain_error(&unknown, 404);
    let envelope = app
        .call("GET", "/api/stripe/balance", Some(&user), None)
        .await;
    assert_eq!(envelope.body["success"], true, "{}", envelope.body);
    let back = app
        .call(
            "PUT",
            settings,
            Some(&dev),
            Some(&json!({"responseFormat": "envelope", "paymentSheetVersion": null})),
        )
        .await;
    assert_eq!(
        back.body["data"]["responseFormat"], "envelope",
        "{}",
        back.body
    );
    assert_eq!(back.body["data"]["paymentSheetVersion"], Value::Null);
}
