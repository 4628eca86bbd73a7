//! Projects over the wire: a developer configures a project per mode, its users buy credits
//! through its own Stripe (each test project has its own localstripe process), and no data of
//! one project or mode is reachable from another.

use integration_tests::{
    eventually, project_stripe_base, settle, spawn_app, TestApp, WEBHOOK_WAIT_SECS,
};
use serde_json::{json, Value};

const API: &str = "/api/v1/payments/stripe/projects";

/// The test keys of a project in a mode. localstripe accepts any `sk_` key.
fn keys(project: &str, mode: &str) -> Value {
    json!({
        "secretKey": format!("sk_{mode}_{project}_0123456789abcdefwxyz"),
        "publishableKey": format!("pk_{mode}_{project}_0123456789abcdef"),
        "webhookSecret": format!("whsec_{project}{mode}SigningSecret0123456789abcdef"),
    })
}

fn test_mode(mode: &str) -> &'static str {
    if mode == "live" {
        "false"
    } else {
        "true"
    }
}

/// PUT the project's config for `mode` as `developer`.
async fn configure(app: &TestApp, developer: &str, project: &str, mode: &str) -> (u16, Value) {
    let path = format!("{API}/{project}/config?test_mode={}", test_mode(mode));
    let token = app.developer_token(developer);
    let reply = app
        .call("PUT", &path, Some(&token), Some(&keys(project, mode)))
        .await;
    (reply.status, reply.body)
}

/// Configures the project, registers its webhook with its localstripe and adds one package.
pub(crate) async fn open_project(app: &TestApp, developer: &str, project: &str, mode: &str) {
    let (status, body) = configure(app, developer, project, mode).await;
    assert_eq!(status, 200, "configure {project}/{mode}: {body}");
    let secret = keys(project, mode)["webhookSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.register_webhook_at(
        &project_stripe_base(project),
        &format!("{}-{project}-{mode}", app.table),
        &format!(
            "{}/api/v1/payments/stripe/webhooks/{project}/{mode}",
            app.base_url
        ),
        &secret,
    )
    .await;
    add_package(app, developer, project, mode).await;
}

/// Adds the `ten` package (10.00 for 12.50 credits) to the project's mode.
async fn add_package(app: &TestApp, developer: &str, project: &str, mode: &str) {
    let package = json!({"name": "Ten", "description": "10 credits", "amount": 10,
                         "currency": "usd", "creditAmount": 12.5, "isActive": true});
    let path = format!(
        "{API}/{project}/credit-packages/ten?test_mode={}",
        test_mode(mode)
    );
    let token = app.developer_token(developer);
    let reply = app.call("PUT", &path, Some(&token), Some(&package)).await;
    assert_eq!(reply.status, 200, "package: {}", reply.body);
}

/// A user of `project` in `mode` buys the `ten` package with a card at the project's Stripe.
async fn buy(app: &TestApp, user: &str, project: &str, mode: &str) -> String {
    buy_package(app, user, project, mode, "ten").await
}

/// `user` pays for `package` of the project's mode with a good card; the intent.
pub(crate) async fn buy_package(
    app: &TestApp,
    user: &str,
    project: &str,
    mode: &str,
    package: &str,
) -> String {
    let query = format!("project_id={project}&test_mode={}", test_mode(mode));
    let token = app.token(user);
    let created = app
        .call(
            "POST",
            &format!("/api/stripe/create-payment-intent?{query}"),
            Some(&token),
            Some(&json!({"creditPackageId": package})),
        )
        .await;
    assert_eq!(created.status, 200, "create: {}", created.body);
    let intent = created.body["data"]["paymentIntentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = keys(project, mode)["secretKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = app
        .pay_with_card_at(
            &project_stripe_base(project),
            &key,
            &intent,
            "4242424242424242",
        )
        .await;
    assert_eq!(paid.status, 200, "pay: {}", paid.body);
    intent
}

/// Stripe's retry of localstripe's `payment_intent.succeeded` for a project's intent (see
/// `integration_tests::settle`): the intent as the project's localstripe holds it, signed with
/// the project's webhook secret, to the project's webhook.
async fn redeliver_succeeded(app: &TestApp, project: &str, mode: &str, intent: &str) {
    let key = keys(project, mode)["secretKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let object: Value = app
        .http
        .get(format!(
            "{}/v1/payment_intents/{intent}",
            project_stripe_base(project)
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = app.event("payment_intent.succeeded", &object);
    let secret = keys(project, mode)["webhookSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let signature = coffer::webhook::sign(event.as_bytes(), &secret, integration_tests::now());
    let reply = app
        .http
        .post(format!(
            "{}/api/v1/payments/stripe/webhooks/{project}/{mode}",
            app.base_url
        ))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "redelivery to {project}/{mode}");
}

/// Waits until `user` has `expected` credits in the project's mode, redelivering the intents'
/// events once if localstripe's did not arrive.
pub(crate) async fn settled(
    app: &TestApp,
    user: &str,
    project: &str,
    mode: &str,
    intents: &[String],
    expected: Value,
) -> bool {
    settle(
        || async { (balance_in(app, user, project, mode).await == expected).then_some(()) },
        async {
            for intent in intents {
                redeliver_succeeded(app, project, mode, intent).await;
            }
        },
    )
    .await
    .is_some()
}

async fn balance_in(app: &TestApp, user: &str, project: &str, mode: &str) -> Value {
    let path = format!(
        "/api/stripe/balance?project_id={project}&test_mode={}",
        test_mode(mode)
    );
    let token = app.token(user);
    app.call("GET", &path, Some(&token), None).await.body["data"]["balance"].clone()
}

#[tokio::test]
async fn a_developer_configures_a_project_and_its_user_buys_credits_through_its_stripe() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;

    let token = app.developer_token("dev-ann");
    let config = app
        .call("GET", &format!("{API}/alpha/config"), Some(&token), None)
        .await;
    assert_eq!(config.status, 200, "{}", config.body);
    assert_eq!(config.body["data"]["secretKey"], "sk_test_…wxyz");
    assert_eq!(config.body["data"]["webhookSecretSet"], true);
    assert_eq!(config.body["data"]["isActive"], true);
    let text = config.body.to_string();
    assert!(
        !text.contains("0123456789abcdefwxyz") && !text.contains("whsec_"),
        "{text}"
    );

    let intent = buy(&app, "uma", "alpha", "test").await;
    let credited = settled(&app, "uma", "alpha", "test", &[intent], json!(12.5)).await;
    assert!(credited, "alpha's webhook should credit uma");
    // The default project knows nothing of it.
    assert_eq!(app.balance("uma").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_same_user_in_two_projects_and_two_modes_has_separate_balances() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    open_project(&app, "dev-ann", "alpha", "live").await;
    open_project(&app, "dev-bob", "beta", "test").await;
    let live = buy(&app, "vic", "alpha", "live").await;
    let beta = buy(&app, "vic", "beta", "test").await;
    assert!(settled(&app, "vic", "alpha", "live", &[live], json!(12.5)).await);
    assert!(settled(&app, "vic", "beta", "test", &[beta], json!(12.5)).await);
    assert_eq!(balance_in(&app, "vic", "alpha", "test").await, json!(0.0));
    assert_eq!(app.balance("vic").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn one_projects_events_cannot_credit_another() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    open_project(&app, "dev-bob", "beta", "test").await;
    let intent = buy(&app, "wes", "alpha", "test").await;
    let key = keys("alpha", "test")["secretKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let object = app
        .http
        .get(format!(
            "{}/v1/payment_intents/{intent}",
            project_stripe_base("alpha")
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let event = app.event("payment_intent.succeeded", &object);
    let beta_hook = format!("{}/api/v1/payments/stripe/webhooks/beta/test", app.base_url);
    let post = |signature: String| {
        app.http
            .post(&beta_hook)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(event.clone())
            .send()
    };
    // Signed with alpha's secret at beta's endpoint: refused, nothing written.
    let alpha_signed = coffer::webhook::sign(
        event.as_bytes(),
        keys("alpha", "test")["webhookSecret"].as_str().unwrap(),
        integration_tests::now(),
    );
    assert_eq!(post(alpha_signed).await.unwrap().status(), 400);
    // Signed with beta's own secret: verified, but alpha's payment is not beta's.
    let beta_signed = coffer::webhook::sign(
        event.as_bytes(),
        keys("beta", "test")["webhookSecret"].as_str().unwrap(),
        integration_tests::now(),
    );
    assert_eq!(post(beta_signed).await.unwrap().status(), 200);
    assert_eq!(balance_in(&app, "wes", "beta", "test").await, json!(0.0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn reconciliation_credits_a_projects_payment_its_webhook_missed() {
    let app = spawn_app().await;
    // The project is configured, but its webhook was never registered at its Stripe.
    let (status, body) = configure(&app, "dev-ann", "alpha", "test").await;
    assert_eq!(status, 200, "{body}");
    add_package(&app, "dev-ann", "alpha", "test").await;
    let intent = buy(&app, "rita", "alpha", "test").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(balance_in(&app, "rita", "alpha", "test").await, json!(0.0));

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
    assert_eq!(report.credited, vec![intent.clone()], "{report:?}");
    assert_eq!(
        report.scopes, 2,
        "the deployment's own and alpha/test: {report:?}"
    );
    assert_eq!(balance_in(&app, "rita", "alpha", "test").await, json!(12.5));
    // Nothing of it in the default project; a second run changes nothing.
    assert_eq!(app.balance("rita").await, 0.0);
    let again = coffer::calls::as_function(
        "reconcile",
        coffer::services::reconcile::reconcile(
            &app.app.app,
            3600,
            coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
        ),
    )
    .await
    .expect("reconcile");
    assert!(again.credited.is_empty(), "{again:?}");
    assert_eq!(balance_in(&app, "rita", "alpha", "test").await, json!(12.5));
    app.assert_invariants().await;
}

#[tokio::test]
async fn internal_routes_serve_only_the_principals_a_project_names() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let intent = buy(&app, "olga", "alpha", "test").await;
    assert!(settled(&app, "olga", "alpha", "test", &[intent], json!(12.5)).await);
    let service = |role: &str| {
        coffer_dev::token::issue_service(integration_tests::JWT_SECRET, role, 600).expect("token")
    };
    let spend = |role: &str, query: &str, key: &str| {
        let token = service(role);
        let path = format!("/internal/credits/consume{query}");
        let body = json!({"userId": "olga", "amount": 1, "reason": "probe", "idempotencyKey": key});
        let app = &app;
        async move { app.call("POST", &path, Some(&token), Some(&body)).await }
    };
    let usage = |role: &str, query: &str, key: &str| {
        let token = service(role);
        let path = format!("/internal/usage{query}");
        let body =
            json!({"userId": "olga", "metric": "requests", "quantity": 1, "idempotencyKey": key});
        let app = &app;
        async move { app.call("POST", &path, Some(&token), Some(&body)).await }
    };
    let alpha = "?project_id=alpha&test_mode=true";
    // The operator's principal (allowed on the deployment's own project) is nobody in alpha,
    // nor in a project that does not exist, nor in alpha's live mode.
    for query in [
        alpha,
        "?project_id=alpha&test_mode=false",
        "?project_id=ghost&test_mode=true",
    ] {
        let reply = spend("app-backend", query, "k1").await;
        assert_eq!(reply.status, 403, "{query}: {}", reply.body);
        assert_eq!(
            usage("app-backend", query, "u1").await.status,
            403,
            "{query}"
        );
    }
    // The developer names alpha's own backend for its test mode.
    let mut body = keys("alpha", "test");
    body["allowedPrincipals"] = json!(["arn:aws:iam::000000000000:role/alpha-backend"]);
    let path = format!("{API}/alpha/config?test_mode=true");
    let saved = app
        .call(
            "PUT",
            &path,
            Some(&app.developer_token("dev-ann")),
            Some(&body),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        saved.body["data"]["allowedPrincipals"],
        json!(["arn:aws:iam::000000000000:role/alpha-backend"])
    );
    let reply = spend("alpha-backend", alpha, "k2").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // (alpha has no plans: the metric is unknown there, but the caller got past the door.)
    let recorded = usage("alpha-backend", alpha, "u2").await;
    assert!(![401, 403].contains(&recorded.status), "{}", recorded.body);
    // Still nobody else; and alpha's backend is nobody in the deployment's own project.
    assert_eq!(spend("app-backend", alpha, "k3").await.status, 403);
    assert_eq!(spend("alpha-backend", "", "k4").await.status, 403);
    assert_eq!(balance_in(&app, "olga", "alpha", "test").await, json!(11.5));
    // Saving the keys again without the field keeps the list; a wildcard is refused.
    let resaved = app
        .call(
            "PUT",
            &path,
            Some(&app.developer_token("dev-ann")),
            Some(&keys("alpha", "test")),
        )
        .await;
    assert_eq!(
        resaved.body["data"]["allowedPrincipals"],
        saved.body["data"]["allowedPrincipals"]
    );
    body["allowedPrincipals"] = json!(["arn:aws:iam::000000000000:role/*"]);
    let wild = app
        .call(
            "PUT",
            &path,
            Some(&app.developer_token("dev-ann")),
            Some(&body),
        )
        .await;
    assert_eq!(wild.status, 400, "{}", wild.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_project_webhook_does_not_tell_which_projects_exist() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let event = app.event(
        "payment_intent.succeeded",
        &json!({"id": "pi_probe", "object": "payment_intent"}),
    );
    let post = |path: String, signature: String| {
        let request = app
            .http
            .post(format!("{}{path}", app.base_url))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(event.clone());
        async move {
            let reply = request.send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        }
    };
    let forged = coffer::webhook::sign(
        event.as_bytes(),
        "whsec_forgedSigningSecret0123456789abcdefgh",
        integration_tests::now(),
    );
    let hook = "/api/v1/payments/stripe/webhooks";
    // A bad signature at a project that exists, a project that does not, and a mode the project
    // was never configured in: the same status and the same body.
    let known = post(format!("{hook}/alpha/test"), forged.clone()).await;
    let unknown = post(format!("{hook}/no-such-project/test"), forged.clone()).await;
    let other_mode = post(format!("{hook}/alpha/live"), forged.clone()).await;
    assert_eq!(known.0, 400, "{}", known.1);
    assert_eq!(unknown, known);
    assert_eq!(other_mode, known);
    // Signed with alpha's own secret, the unknown project still reads as a bad signature.
    let alpha_signed = coffer::webhook::sign(
        event.as_bytes(),
        keys("alpha", "test")["webhookSecret"].as_str().unwrap(),
        integration_tests::now(),
    );
    assert_eq!(
        post(format!("{hook}/no-such-project/test"), alpha_signed).await,
        known
    );
}

#[tokio::test]
async fn a_developer_cannot_see_or_change_another_developers_project() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let bob = app.developer_token("dev-bob");
    for (method, path) in [
        ("GET", format!("{API}/alpha/config")),
        ("DELETE", format!("{API}/alpha/config")),
        ("GET", format!("{API}/alpha/webhook-urls")),
        ("GET", format!("{API}/alpha/credit-packages")),
    ] {
        let reply = app.call(method, &path, Some(&bob), None).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
    }
    let (status, _) = configure(&app, "dev-bob", "alpha", "test").await;
    assert_eq!(status, 404, "bob cannot take alpha over");
    let projects = app
        .call("GET", "/api/v1/payments/projects", Some(&bob), None)
        .await;
    assert_eq!(projects.body["data"], json!([]));
    // An end user's token is not a developer's.
    let user = app.token("dev-ann");
    let reply = app
        .call("GET", &format!("{API}/alpha/config"), Some(&user), None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[tokio::test]
async fn bad_project_ids_modes_and_keys_get_clear_4xx_and_stripe_down_is_502() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-ann");
    let user = app.token("ursula");
    type Case = (String, Option<String>, Option<Value>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            "/api/stripe/balance?project_id=nope".into(),
            Some(user.clone()),
            None,
            404,
            "not_found",
        ),
        (
            "/api/stripe/balance?project_id=Bad%20Id".into(),
            Some(user.clone()),
            None,
            400,
            "invalid_request",
        ),
        (
            "/api/stripe/balance?test_mode=maybe".into(),
            Some(user.clone()),
            None,
            400,
            "invalid_request",
        ),
        (
            format!("{API}/nope/config"),
            Some(dev.clone()),
            None,
            404,
            "not_found",
        ),
        (
            format!("{API}/NOPE!/config"),
            Some(dev.clone()),
            None,
            400,
            "invalid_request",
        ),
        (
            format!("{API}/alpha/config?test_mode=yes"),
            Some(dev.clone()),
            None,
            400,
            "invalid_request",
        ),
    ];
    for (path, token, body, status, code) in cases {
        let reply = app
            .call("GET", &path, token.as_deref(), body.as_ref())
            .await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(reply.body["code"], code, "{path}");
    }
    let put = |project: &str, test_mode: &str, body: Value| {
        let path = format!("{API}/{project}/config?test_mode={test_mode}");
        let dev = dev.clone();
        let app = &app;
        async move { app.call("PUT", &path, Some(&dev), Some(&body)).await }
    };
    // A live key for the test mode, a test key for live: 400.
    let reply = put("alpha", "true", keys("alpha", "live")).await;
    assert_eq!(
        (reply.status, reply.body["code"].clone()),
        (400, json!("invalid_request"))
    );
    let reply = put("alpha", "false", keys("alpha", "test")).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // A key Stripe refuses (localstripe refuses rk_ keys): 400 invalid_credentials.
    let mut refused = keys("alpha", "test");
    refused["secretKey"] = json!("rk_test_alpha_refused_by_stripe");
    let reply = put("alpha", "true", refused).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["code"], "invalid_credentials");
    // A webhook secret that is not Stripe's strength: 400, whatever else is right.
    for weak in [
        "whsec_",
        "whsec_short",
        "whsec_0123456789abcdefABCDEF012345678",
        "0123456789abcdefABCDEF0123456789abcdef",
    ] {
        let mut body = keys("alpha", "test");
        body["webhookSecret"] = json!(weak);
        let reply = put("alpha", "true", body).await;
        assert_eq!(reply.status, 400, "{weak}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request", "{weak}");
        assert!(
            reply.body["error"]
                .as_str()
                .unwrap_or("")
                .contains("whsec_"),
            "{}",
            reply.body
        );
    }
    // Stripe unreachable while validating: 502, and nothing stored.
    let reply = put("down", "true", keys("down", "test")).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let reply = app
        .call("GET", &format!("{API}/down/config"), Some(&dev), None)
        .await;
    assert_eq!(reply.status, 404, "nothing was created: {}", reply.body);
}

#[tokio::test]
async fn validate_credentials_says_valid_or_not_and_webhook_urls_name_both_modes() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let dev = app.developer_token("dev-ann");
    let path = format!("{API}/alpha/validate-credentials");
    let stored = app.call("POST", &path, Some(&dev), None).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["data"]["valid"], true);
    assert_eq!(stored.body["data"]["livemode"], false);
    let bad = app
        .call(
            "POST",
            &path,
            Some(&dev),
            Some(&json!({"secretKey": "rk_test_nope_nope"})),
        )
        .await;
    assert_eq!(bad.status, 200, "{}", bad.body);
    assert_eq!(bad.body["data"]["valid"], false);
    assert!(bad.body["data"]["reason"].is_string());

    let urls = app
        .call(
            "GET",
            &format!("{API}/alpha/webhook-urls"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(urls.status, 200, "{}", urls.body);
    let test_url = urls.body["data"]["test"].as_str().unwrap();
    assert!(
        test_url.ends_with("/api/v1/payments/stripe/webhooks/alpha/test"),
        "{test_url}"
    );
    assert!(urls.body["data"]["live"]
        .as_str()
        .unwrap()
        .ends_with("/webhooks/alpha/live"));
    assert!(urls.body["data"]["events"]
        .as_array()
        .unwrap()
        .contains(&json!("payment_intent.succeeded")));
}

#[tokio::test]
async fn a_deactivated_project_takes_no_new_payments_but_its_webhooks_still_credit() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let intent = buy(&app, "xia", "alpha", "test").await;
    let dev = app.developer_token("dev-ann");
    let off = app
        .call("DELETE", &format!("{API}/alpha/config"), Some(&dev), None)
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["data"]["isActive"], false);

    let credited = eventually(WEBHOOK_WAIT_SECS, || async {
        (balance_in(&app, "xia", "alpha", "test").await == json!(12.5)).then_some(())
    })
    .await;
    assert!(
        credited.is_some(),
        "{intent} is credited after deactivation"
    );
    // A fresh app instance reads the registry anew (a warm one within a minute).
    let token = app.token("xia");
    let fresh = integration_tests::fresh_router(&app).await;
    let reply = app
        .http
        .post(format!(
            "{fresh}/api/stripe/create-payment-intent?project_id=alpha&test_mode=true"
        ))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({"creditPackageId": "ten"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
}

#[tokio::test]
async fn a_developer_lists_their_projects_with_the_status_of_each_mode() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    open_project(&app, "dev-ann", "beta", "live").await;
    let dev = app.developer_token("dev-ann");
    let reply = app
        .call("GET", "/api/v1/payments/projects", Some(&dev), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let projects = reply.body["data"].as_array().unwrap();
    let ids: Vec<&str> = projects
        .iter()
        .map(|p| p["projectId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(projects[0]["test"]["configured"], true);
    assert_eq!(projects[0]["live"]["configured"], false);
    assert_eq!(projects[1]["live"]["isActive"], true);
    let subscriptions = app
        .call("GET", "/api/v1/payments/subscriptions", Some(&dev), None)
        .await;
    assert_eq!(subscriptions.body["data"], json!([]));
}

async fn stats_of(app: &TestApp, developer: &str, project: &str) -> Value {
    let token = app.developer_token(developer);
    let path = format!("/api/v1/payments/stats?project_id={project}&test_mode=true");
    let reply = app.call("GET", &path, Some(&token), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"][0].clone()
}

#[tokio::test]
async fn stats_count_each_payment_and_entry_once_from_the_change_stream() {
    let app = spawn_app().await;
    app.follow_stream().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    for user in ["yan", "zoe"] {
        let intent = buy(&app, user, "alpha", "test").await;
        assert!(settled(&app, user, "alpha", "test", &[intent], json!(12.5)).await);
    }
    let spend = json!({"amount": 2.5, "reason": "job", "idempotencyKey": "s-1"});
    let token = app.token("zoe");
    let settled = eventually(WEBHOOK_WAIT_SECS, || async {
        let spent = app
            .call(
                "POST",
                "/api/credits/consume?project_id=alpha&test_mode=true",
                Some(&token),
                Some(&spend),
            )
            .await;
        let stats = stats_of(&app, "dev-ann", "alpha").await;
        (spent.status == 200 && stats["credits"]["spent"] == json!(2.5)).then_some(stats)
    })
    .await;
    let stats = settled.expect("the stream should count both purchases and the spend");
    assert_eq!(stats["projectId"], "alpha");
    assert_eq!(stats["mode"], "test");
    assert_eq!(stats["payments"]["succeeded"], json!(2));
    assert_eq!(stats["payments"]["pending"], json!(0));
    assert_eq!(stats["revenue"]["usd"], json!(20.0));
    assert_eq!(stats["credits"]["sold"], json!(25.0));
    assert_eq!(stats["credits"]["outstanding"], json!(22.5));
    // The same figures, on today's line of the daily series; the 29 days before have none.
    let dev = app.developer_token("dev-ann");
    let daily = app
        .call(
            "GET",
            &format!("{API}/alpha/stats/daily?test_mode=true"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(daily.status, 200, "{}", daily.body);
    let days = daily.body["data"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let today = days.last().unwrap();
    assert_eq!(
        today["date"],
        json!(time::OffsetDateTime::now_utc().date().to_string())
    );
    assert_eq!(today["revenue"]["usd"], json!(20.0));
    assert_eq!(today["creditsSold"], json!(25.0));
    assert_eq!(today["creditsSpent"], json!(2.5));
    for day in &days[..29] {
        assert_eq!(day["revenue"], json!({}), "{day}");
        assert_eq!(day["creditsSold"], json!(0.0), "{day}");
    }
    let week = app
        .call(
            "GET",
            &format!("{API}/alpha/stats/daily?test_mode=true&days=7"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(week.body["data"]["days"].as_array().map(Vec::len), Some(7));
    for days in ["0", "91", "x"] {
        let bad = app
            .call(
                "GET",
                &format!("{API}/alpha/stats/daily?days={days}"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(bad.status, 400, "{}", bad.body);
    }
    // Another developer's stats do not include alpha, and its series is not theirs to read.
    let bob = app.developer_token("dev-bob");
    let theirs = app
        .call("GET", "/api/v1/payments/stats", Some(&bob), None)
        .await;
    assert_eq!(theirs.body["data"], json!([]));
    let series = app
        .call("GET", &format!("{API}/alpha/stats/daily"), Some(&bob), None)
        .await;
    assert_eq!(series.status, 404, "{}", series.body);
}

#[tokio::test]
async fn a_developer_looks_an_account_up_at_a_glance() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let intent = buy(&app, "ula", "alpha", "test").await;
    assert!(
        settled(
            &app,
            "ula",
            "alpha",
            "test",
            std::slice::from_ref(&intent),
            json!(12.5)
        )
        .await
    );
    let token = app.token("ula");
    let spend = json!({"amount": 2.5, "reason": "job", "idempotencyKey": "look-1"});
    let spent = app
        .call(
            "POST",
            "/api/credits/consume?project_id=alpha&test_mode=true",
            Some(&token),
            Some(&spend),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    let dev = app.developer_token("dev-ann");
    let reply = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/ula?test_mode=true"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let account = &reply.body["data"];
    assert_eq!(account["accountId"], "ula");
    assert_eq!(account["balance"]["balance"], json!(10.0));
    assert!(account.get("subscription").is_none(), "{account}");
    assert_eq!(account["usage"]["planId"], "free");
    let kinds: Vec<(&str, f64)> = account["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["amount"].as_f64().unwrap()))
        .collect();
    assert_eq!(kinds, [("spend", -2.5), ("purchase", 12.5)]);
    assert_eq!(account["ledgerComplete"], true);
    assert_eq!(account["payments"][0]["id"], json!(intent));
    assert_eq!(account["morePayments"], false);
    // A busy account: the newest 50 entries by time, and word that there are more.
    let grant = json!({"amount": 100, "reason": "welcome", "idempotencyKey": "busy-grant"});
    let granted = app
        .call(
            "POST",
            &format!("{API}/alpha/accounts/vic/grants"),
            Some(&dev),
            Some(&grant),
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let vic = app.token("vic");
    for i in 0..55 {
        let spend = json!({"amount": 0.5, "reason": format!("job {i}"), "idempotencyKey": format!("busy-{i}")});
        let spent = app
            .call(
                "POST",
                "/api/credits/consume?project_id=alpha&test_mode=true",
                Some(&vic),
                Some(&spend),
            )
            .await;
        assert_eq!(spent.status, 200, "{}", spent.body);
    }
    let busy = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/vic"),
            Some(&dev),
            None,
        )
        .await;
    let ledger = busy.body["data"]["ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 50);
    assert_eq!(busy.body["data"]["ledgerComplete"], false);
    assert_eq!(ledger[0]["reason"], "job 54", "newest first");
    assert!(
        ledger.iter().all(|e| e["kind"] == "spend"),
        "the grant is older than all shown"
    );
    let times: Vec<time::OffsetDateTime> = ledger
        .iter()
        .map(|e| {
            let text = e["createdAt"].as_str().unwrap();
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // Ids that read like a route's last segment are accounts like any other.
    for (path, id) in [
        ("accounts/subscriptions", "subscriptions"),
        ("accounts/payments", "payments"),
    ] {
        let odd = app
            .call("GET", &format!("{API}/alpha/{path}"), Some(&dev), None)
            .await;
        assert_eq!(odd.status, 200, "{}", odd.body);
        assert_eq!(odd.body["data"]["accountId"], id, "{}", odd.body);
    }
    let balance = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/accounts/balance"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(balance.status, 200, "{}", balance.body);
    assert!(
        balance.body["data"].get("accountId").is_none(),
        "{}",
        balance.body
    );
    assert_eq!(balance.body["data"]["balance"], json!(0.0));
    // An account with nothing yet reads as empty, not as an error.
    let nobody = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/nobody"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(nobody.status, 200, "{}", nobody.body);
    assert_eq!(nobody.body["data"]["ledger"], json!([]));
    // Another developer, or the user themself, cannot look it up.
    let bob = app.developer_token("dev-bob");
    let theirs = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/ula"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    let own = app
        .call(
            "GET",
            &format!("{API}/alpha/accounts/ula"),
            Some(&token),
            None,
        )
        .await;
    assert!(matches!(own.status, 401 | 403), "{}", own.body);
}

#[tokio::test]
async fn a_stream_batch_delivered_twice_is_counted_once() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let image = json!({
        "pk": {"S": "P#alpha#test#USER#amy"}, "sk": {"S": "ENTRY#grant:once"},
        "kind": {"S": "grant"}, "amount": {"N": "700"}
    });
    let event = json!({"Records": [{
        "eventID": format!("evt-{}", app.table), "eventName": "INSERT",
        "dynamodb": {"NewImage": image}
    }]});
    for _ in 0..2 {
        let batch = coffer::calls::as_function(
            "stats",
            coffer::jobs::count_stream_event(&app.app.app, &event),
        )
        .await;
        assert!(batch.failed.is_none(), "{batch:?}");
    }
    let stats = stats_of(&app, "dev-ann", "alpha").await;
    assert_eq!(stats["credits"]["outstanding"], json!(7.0));
}

#[tokio::test]
async fn active_subscriptions_are_counted_once_in_total_and_per_day() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let doc = |status: &str| {
        json!({"S": json!({
            "subscriptionId": "sub_1", "planId": "pro", "status": status,
            "currentPeriodEnd": 0, "cancelAtPeriodEnd": false, "observedAtMs": 1
        }).to_string()})
    };
    let image = |status: &str| json!({"pk": {"S": "P#alpha#test#ACCT#amy"}, "sk": {"S": "SUB"}, "doc": doc(status)});
    let record = |id: &str, seq: &str, old: Option<Value>, new: Value| {
        let mut change = json!({"NewImage": new, "SequenceNumber": seq});
        if let Some(old) = old {
            change["OldImage"] = old;
        }
        json!({"eventID": format!("{id}-{}", app.table), "eventName": "MODIFY", "dynamodb": change})
    };
    let count = |records: Vec<Value>| {
        let event = json!({"Records": records});
        let app = &app;
        async move {
            let batch = coffer::calls::as_function(
                "stats",
                coffer::jobs::count_stream_event(&app.app.app, &event),
            )
            .await;
            assert!(batch.failed.is_none(), "{batch:?}");
        }
    };
    let dev = app.developer_token("dev-ann");
    let today = || async {
        let reply = app
            .call(
                "GET",
                &format!("{API}/alpha/stats/daily?days=2"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["data"]["days"][1].clone()
    };
    // Incomplete, then active: one active subscription, the active record delivered twice.
    let started = vec![
        record("a", "100", None, image("incomplete")),
        record("b", "101", Some(image("incomplete")), image("active")),
    ];
    count(started.clone()).await;
    count(started).await;
    assert_eq!(
        stats_of(&app, "dev-ann", "alpha").await["activeSubscriptions"],
        json!(1)
    );
    let day = today().await;
    assert_eq!(
        (
            day["activeSubscriptions"].clone(),
            day["subscriptionsChange"].clone()
        ),
        (json!(1), json!(1))
    );
    // Canceled: none, and the day's change nets to zero.
    count(vec![record(
        "c",
        "102",
        Some(image("active")),
        image("canceled"),
    )])
    .await;
    assert_eq!(
        stats_of(&app, "dev-ann", "alpha").await["activeSubscriptions"],
        json!(0)
    );
    let day = today().await;
    assert_eq!(
        (
            day["activeSubscriptions"].clone(),
            day["subscriptionsChange"].clone()
        ),
        (json!(0), json!(0))
    );

    // End to end: a subscription written to the table reaches the counters through the
    // stream and the stats function's filter, as deployed.
    use coffer::domain::scope::{Mode, ProjectId, Scope};
    use coffer::domain::subscriptions::{SubscriptionState, SubscriptionStatus};
    app.follow_stream().await;
    let scope = Scope::new(ProjectId::parse("alpha").expect("id"), Mode::Test);
    let store = app.app.app.store_for(&scope);
    let state = SubscriptionState {
        subscription_id: "sub_2".into(),
        plan_id: "pro".into(),
        status: SubscriptionStatus::Trialing,
        current_period_end: 0,
        cancel_at_period_end: false,
        past_due_since: None,
        observed_at_ms: 1,
        customer_id: String::new(),
        price_id: String::new(),
        held_plan_id: None,
        held_until: None,
    };
    let bob = coffer::domain::records::UserId::parse("bob").expect("id");
    assert!(store
        .write_subscription(&bob, 0, Some(&state), None)
        .await
        .expect("written"));
    let counted = eventually(30, || async {
        let stats = stats_of(&app, "dev-ann", "alpha").await;
        (stats["activeSubscriptions"] == json!(1)).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the stream brings the subscription to the stats"
    );
    let day = today().await;
    assert_eq!(day["subscriptionsChange"], json!(1), "{day}");
}

#[tokio::test]
async fn a_developer_lists_payments_per_project_and_across_projects_newest_first() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    open_project(&app, "dev-ann", "alpha", "live").await;
    open_project(&app, "dev-ann", "beta", "test").await;
    let mut intents = Vec::new();
    for (project, mode) in [("alpha", "test"), ("beta", "test"), ("alpha", "live")] {
        let intent = buy(&app, "abe", project, mode).await;
        assert!(
            settled(
                &app,
                "abe",
                project,
                mode,
                std::slice::from_ref(&intent),
                json!(12.5)
            )
            .await
        );
        intents.push(intent);
    }
    let dev = app.developer_token("dev-ann");
    let credited = eventually(WEBHOOK_WAIT_SECS, || async {
        let reply = app
            .call(
                "GET",
                "/api/v1/payments/transactions?status=succeeded",
                Some(&dev),
                None,
            )
            .await;
        (reply.body["data"].as_array().map(Vec::len) == Some(3)).then_some(reply)
    })
    .await
    .expect("three succeeded payments");
    let ids: Vec<&str> = credited.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = intents.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);

    // One page at a time, with the cursor, gives the same lines once each.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/payments/transactions?limit=1".to_owned(),
            Some(c) => format!("/api/v1/payments/transactions?limit=1&cursor={c}"),
        };
        let page = app.call("GET", &path, Some(&dev), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for line in page.body["data"].as_array().unwrap() {
            paged.push(line["id"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, newest_first);

    let filtered = app
        .call(
            "GET",
            "/api/v1/payments/transactions?project_id=alpha&test_mode=true",
            Some(&dev),
            None,
        )
        .await;
    let lines = filtered.body["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{}", filtered.body);
    assert_eq!(lines[0]["projectId"], "alpha");
    assert_eq!(lines[0]["mode"], "test");
    let project = app
        .call(
            "GET",
            &format!("{API}/beta/payments?test_mode=true"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(project.body["data"][0]["id"], json!(intents[1]));
    let bad = app
        .call(
            "GET",
            "/api/v1/payments/transactions?status=paid",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    // Another developer sees none of them.
    let bob = app.developer_token("dev-bob");
    let none = app
        .call("GET", "/api/v1/payments/transactions", Some(&bob), None)
        .await;
    assert_eq!(none.body["data"], json!([]));
}

#[tokio::test]
async fn a_configuration_that_fails_half_way_leaves_no_claimed_project_behind() {
    use integration_tests::proxy::Mode;
    use integration_tests::{spawn_app_with, SecretSetup};
    let app = spawn_app_with(SecretSetup {
        proxied: true,
        ..Default::default()
    })
    .await;
    let proxies = app.proxies.as_ref().unwrap();
    // Secrets Manager refuses while Ann configures a new project: the key checks out and the
    // project is claimed, then the secret cannot be written.
    proxies.secrets.set(Mode::Refuse);
    let (status, body) = configure(&app, "dev-ann", "halfway", "test").await;
    proxies.secrets.set(Mode::Pass);
    assert_eq!(status, 503, "{body}");
    // The claim was undone: Ann has no such project, and nobody holds its name.
    let ann = app.developer_token("dev-ann");
    let reply = app
        .call("GET", &format!("{API}/halfway/config"), Some(&ann), None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let projects = app
        .call("GET", "/api/v1/payments/projects", Some(&ann), None)
        .await;
    assert_eq!(projects.body["data"], json!([]));
    // Another developer can take the name, and then it is theirs.
    let (status, body) = configure(&app, "dev-bob", "halfway", "test").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = configure(&app, "dev-ann", "halfway", "test").await;
    assert_eq!(status, 404, "the project is Bob's now");
}

/// A payment of `user` created (pending) through the API, not paid.
async fn pending_payment(app: &TestApp, user: &str) -> String {
    let created = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent?project_id=alpha&test_mode=true",
            Some(&app.token(user)),
            Some(&json!({"creditPackageId": "ten"})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    created.body["data"]["paymentIntentId"]
        .as_str()
        .expect("an intent")
        .to_owned()
}

async fn pay(app: &TestApp, user: &str, intent: &str) {
    let key = keys("alpha", "test")["secretKey"]
        .as_str()
        .expect("key")
        .to_owned();
    let paid = app
        .pay_with_card_at(
            &project_stripe_base("alpha"),
            &key,
            intent,
            "4242424242424242",
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert!(
        settled(
            app,
            user,
            "alpha",
            "test",
            &[intent.to_owned()],
            json!(12.5)
        )
        .await
    );
}

#[tokio::test]
async fn a_backfill_counts_what_the_stream_never_brought_once_and_no_counter_goes_negative() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    // Before the stream is followed (as data written before the stream existed): yan buys, and
    // the payments of zoe and pat are created, still pending.
    let yans = buy(&app, "yan", "alpha", "test").await;
    assert!(settled(&app, "yan", "alpha", "test", &[yans], json!(12.5)).await);
    let zoes = pending_payment(&app, "zoe").await;
    let pats = pending_payment(&app, "pat").await;

    app.follow_stream().await;
    // zoe pays now, and yan spends: the stream brings those.
    pay(&app, "zoe", &zoes).await;
    let spend = json!({"amount": 2.5, "reason": "job", "idempotencyKey": "s-1"});
    let spent = app
        .call(
            "POST",
            "/api/credits/consume?project_id=alpha&test_mode=true",
            Some(&app.token("yan")),
            Some(&spend),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    eventually(WEBHOOK_WAIT_SECS, || async {
        let stats = stats_of(&app, "dev-ann", "alpha").await;
        (stats["credits"]["spent"] == json!(2.5) && stats["payments"]["succeeded"] == json!(1))
            .then_some(stats)
    })
    .await
    .expect("the stream counts what it brought");

    let figures = |stats: &Value| {
        json!({
            "succeeded": stats["payments"]["succeeded"], "pending": stats["payments"]["pending"],
            "sold": stats["credits"]["sold"], "spent": stats["credits"]["spent"],
            "outstanding": stats["credits"]["outstanding"], "revenue": stats["revenue"]["usd"],
        })
    };
    let whole = json!({
        "succeeded": 2, "pending": 1, "sold": 25.0, "spent": 2.5, "outstanding": 22.5,
        "revenue": 20.0,
    });
    let backfill = || async {
        coffer::services::stats_backfill::backfill_stats(
            &app.app.app,
            std::time::Duration::from_millis(500),
            std::time::Duration::from_millis(500),
        )
        .await
        .expect("the backfill")
    };
    let report = backfill().await;
    assert!(report.payments >= 3 && report.entries >= 1, "{report:?}");
    assert_eq!(figures(&stats_of(&app, "dev-ann", "alpha").await), whole);
    // Run again: the same figures.
    backfill().await;
    assert_eq!(figures(&stats_of(&app, "dev-ann", "alpha").await), whole);

    // pat pays now: a payment the stream never saw made leaves `pending` without taking it
    // below zero, and the stream goes on counting on top of the backfill, once.
    pay(&app, "pat", &pats).await;
    let amys = buy(&app, "amy", "alpha", "test").await;
    assert!(settled(&app, "amy", "alpha", "test", &[amys], json!(12.5)).await);
    let after = eventually(WEBHOOK_WAIT_SECS, || async {
        let stats = stats_of(&app, "dev-ann", "alpha").await;
        (stats["payments"]["succeeded"] == json!(4)).then_some(stats)
    })
    .await
    .expect("the stream counts the new payments");
    assert_eq!(
        figures(&after),
        json!({
            "succeeded": 4, "pending": 0, "sold": 50.0, "spent": 2.5, "outstanding": 47.5,
            "revenue": 40.0,
        })
    );
}

#[tokio::test]
async fn under_a_custom_domains_base_path_every_route_answers_and_webhook_urls_carry_it() {
    let app = integration_tests::spawn_app_with(integration_tests::SecretSetup {
        base_path: Some("/billing"),
        ..Default::default()
    })
    .await;
    let dev = app.developer_token("dev-cy");
    let configured = app
        .call(
            "PUT",
            &format!("/billing{API}/alpha/config?test_mode=true"),
            Some(&dev),
            Some(&keys("alpha", "test")),
        )
        .await;
    assert_eq!(configured.status, 200, "{}", configured.body);
    let urls = app
        .call(
            "GET",
            &format!("/billing{API}/alpha/webhook-urls"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(urls.status, 200, "{}", urls.body);
    let test_url = urls.body["data"]["test"]
        .as_str()
        .expect("a URL")
        .to_owned();
    assert_eq!(
        test_url,
        format!(
            "{}/billing/api/v1/payments/stripe/webhooks/alpha/test",
            app.base_url
        )
    );

    // Stripe delivers to the URL as pasted: it is the project's webhook.
    let event = r#"{"id":"evt_base_path","type":"ping","data":{"object":{}}}"#;
    let secret = keys("alpha", "test")["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let signature = coffer::webhook::sign(event.as_bytes(), &secret, integration_tests::now());
    let delivered = app
        .http
        .post(&test_url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .expect("delivered");
    assert_eq!(delivered.status(), 200);

    // Every route answers under the base path, and still without it (the API's own endpoint).
    for path in [
        "/billing/api/stripe/balance?project_id=alpha&test_mode=true",
        "/api/stripe/balance?project_id=alpha&test_mode=true",
        "/billing/api/stripe/credit-packages",
    ] {
        let reply = app.call("GET", path, Some(&app.token("cy")), None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    let elsewhere = app
        .call(
            "GET",
            "/billingx/api/stripe/balance",
            Some(&app.token("cy")),
            None,
        )
        .await;
    assert_eq!(elsewhere.status, 404);
}

/// An entry as a version before the ledger index wrote it (no gsi2 keys), worth nothing.
async fn legacy_entry(app: &TestApp, account: &str, id: &str, created_at_ms: i64) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let item = [
        ("pk", S(format!("P#alpha#test#USER#{account}"))),
        ("sk", S(format!("ENTRY#{id}"))),
        ("kind", S("grant".into())),
        ("entryId", S(id.into())),
        ("amount", N("0".into())),
        ("currency", S("usd".into())),
        ("createdAt", N(created_at_ms.to_string())),
        ("reason", S(id.into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    app.app
        .app
        .store
        .put_raw(item)
        .await
        .expect("an entry of the earlier layout");
}

#[tokio::test]
async fn the_account_lookup_merges_entries_from_before_the_ledger_index_and_prefers_the_index() {
    let app = spawn_app().await;
    open_project(&app, "dev-ann", "alpha", "test").await;
    let dev = app.developer_token("dev-ann");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    for i in 0..3 {
        legacy_entry(&app, "lee", &format!("legacy-{i}"), now - 60_000 + i * 1000).await;
    }
    let grant = json!({"amount": 100, "reason": "welcome", "idempotencyKey": "lee-grant"});
    let granted = app
        .call(
            "POST",
            &format!("{API}/alpha/accounts/lee/grants"),
            Some(&dev),
            Some(&grant),
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let lee = app.token("lee");
    let spend = |i: usize| {
        let body = json!({"amount": 1, "reason": format!("job {i}"), "idempotencyKey": format!("lee-{i}")});
        let (app, lee) = (&app, &lee);
        async move {
            let spent = app
                .call(
                    "POST",
                    "/api/credits/consume?project_id=alpha&test_mode=true",
                    Some(lee),
                    Some(&body),
                )
                .await;
            assert_eq!(spent.status, 200, "{}", spent.body);
        }
    };
    spend(0).await;
    let look = || async {
        let reply = app
            .call(
                "GET",
                &format!("{API}/alpha/accounts/lee"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["data"].clone()
    };
    // Few indexed entries: the earlier ones are read too, merged by time, each once.
    let account = look().await;
    let reasons: Vec<&str> = account["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        reasons,
        ["job 0", "welcome", "legacy-2", "legacy-1", "legacy-0"]
    );
    assert_eq!(account["ledgerComplete"], true);
    // Many indexed entries: the index alone gives the newest; an unindexed entry is not read.
    for i in 1..=50 {
        spend(i).await;
    }
    legacy_entry(&app, "lee", "legacy-late", now + 3_600_000).await;
    let account = look().await;
    let ledger = account["ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 50);
    assert_eq!(account["ledgerComplete"], false);
    assert_eq!(ledger[0]["reason"], "job 50");
    assert!(
        ledger.iter().all(|e| e["entryId"] != "legacy-late"),
        "read from the index"
    );
}
