//! Organisations, developers' projects and deployments: each scope keeps its own plans,
//! subscriptions and payments.

use integration_tests::{settle, spawn_app, spawn_app_with, SecretSetup};
use serde_json::json;

use super::{complete_checkout, my_subscription, post, stripe_get, SUBSCRIPTION_CARD};

#[tokio::test]
async fn a_package_checkout_of_one_project_is_never_credited_in_another() {
    let app = spawn_app().await;
    // Project `pkgproj` shares the default project's Stripe account (one localstripe), has a
    // package of the same id, and its webhook is signed with its own secret.
    let dev = app.developer_token("dev-pkg");
    let base = "/api/v1/payments/stripe/projects/pkgproj";
    let secret = "whsec_pkgprojSigningSecret0123456789abcdef";
    let config = json!({"secretKey": "sk_test_pkgproj_key", "publishableKey": "pk_test_pkgproj", "webhookSecret": secret});
    let saved = app
        .call("PUT", &format!("{base}/config"), Some(&dev), Some(&config))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let package = json!({"name": "Starter", "description": "same id", "amount": 5,
                         "currency": "usd", "creditAmount": 5, "isActive": true});
    let put = app
        .call(
            "PUT",
            &format!("{base}/credit-packages/starter"),
            Some(&dev),
            Some(&package),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);

    let reply = post(
        &app,
        "/api/v1/payments/stripe/checkout-session",
        "nora",
        json!({"creditPackageId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["data"]["id"].as_str().expect("id").to_owned();
    let session = complete_checkout(&app, &session_id).await;
    let event = app.event("checkout.session.completed", &session);
    // The project's webhook gets the same event (both endpoints are on one Stripe account).
    let signature = coffer::webhook::sign(event.as_bytes(), secret, integration_tests::now());
    app.count_delivery();
    let delivered = app
        .http
        .post(format!(
            "{}/api/v1/payments/stripe/webhooks/pkgproj/test",
            app.base_url
        ))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(event.clone())
        .send()
        .await
        .expect("project webhook");
    assert_eq!(delivered.status().as_u16(), 200);
    let in_project = app
        .get(
            "/api/stripe/balance?project_id=pkgproj&test_mode=true",
            Some("nora"),
        )
        .await;
    assert_eq!(in_project.status, 200, "{}", in_project.body);
    assert_eq!(
        in_project.body["data"]["balance"],
        json!(0.0),
        "{}",
        in_project.body
    );
    // Its own project credits it, once.
    let own = app.deliver_signed(&event).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(app.balance("nora").await > 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_member_of_an_organisation_named_with_a_space_acts_for_no_other() {
    let app = spawn_app().await;
    // The claim is the JSON array ["acme corp", "beta,gamma"]: two organisations, not four.
    let member = app.member_token("gil", &["acme corp", "beta,gamma"]);
    for identifier in ["acme", "corp", "beta", "gamma"] {
        let body = json!({"tier": "pro", "identifier": identifier});
        let reply = app
            .call(
                "POST",
                "/api/stripe/create-payment-intent",
                Some(&member),
                Some(&body),
            )
            .await;
        assert_eq!(reply.status, 403, "{identifier}: {}", reply.body);
        let read = app
            .call(
                "GET",
                &format!("/api/v1/payments/stripe/my-subscription?identifier={identifier}"),
                Some(&member),
                None,
            )
            .await;
        assert_eq!(read.status, 403, "{identifier}: {}", read.body);
    }
}

#[tokio::test]
async fn an_organisation_holds_what_its_members_buy_and_others_get_403() {
    let app = spawn_app().await;
    let member = app.member_token("eve", &["acme"]);
    let outsider = app.member_token("fay", &["other"]);
    let body = json!({"tier": "pro", "identifier": "acme"});
    let refused = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent",
            Some(&outsider),
            Some(&body),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let reply = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent",
            Some(&member),
            Some(&body),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = reply.body["data"]["paymentIntentId"]
        .as_str()
        .expect("pi")
        .to_owned();
    app.pay_with_card(&intent, "4242424242424242").await;
    let org_plan = settle(
        || async {
            let now = app
                .call(
                    "GET",
                    "/api/v1/payments/stripe/my-subscription?identifier=acme",
                    Some(&member),
                    None,
                )
                .await;
            (now.body["data"]["planId"] == "pro").then_some(now)
        },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(org_plan.is_some(), "the organisation never got the tier");
    assert_eq!(
        my_subscription(&app, "eve").await["planId"],
        "free",
        "the member's own plan is unchanged"
    );
    let peek = app
        .call(
            "GET",
            "/api/v1/payments/stripe/my-subscription?identifier=acme",
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(peek.status, 403);
    let forged = app
        .call(
            "GET",
            "/api/stripe/balance",
            Some(&app.token("org:acme")),
            None,
        )
        .await;
    assert_eq!(
        forged.status, 401,
        "a subject may not name an organisation account"
    );
}

#[tokio::test]
async fn developers_link_plans_and_set_origins_per_project() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-plans");
    let project = "plansproj";
    let config = json!({"secretKey": "sk_test_plansproj_key", "publishableKey": "pk_test_plansproj", "webhookSecret": "whsec_plansprojSigningSecret0123456789ab"});
    let saved = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/config"),
            Some(&dev),
            Some(&config),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let plan = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&dev),
            Some(&json!({"name": "Team", "rank": 5, "limits": {"requests": 5000}, "priceId": "price_team", "includedCredits": 2.5})),
        )
        .await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    assert_eq!(plan.body["data"]["priceId"], "price_team");
    assert_eq!(plan.body["data"]["includedCredits"], 2.5);
    let bad = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&dev),
            Some(&json!({"amount": 100})),
        )
        .await;
    assert_eq!(
        bad.status, 400,
        "recurring and one-off at once: {}",
        bad.body
    );
    let settings = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/settings"),
            Some(&dev),
            Some(&json!({"allowedOrigins": ["https://team.example.com"], "pastDueGraceSeconds": 86400})),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    let listed = app
        .get(
            &format!("/api/stripe/plans?project_id={project}"),
            Some("gus"),
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["data"][0]["id"], "team");
    let default_plans = app.get("/api/stripe/plans", Some("gus")).await;
    assert!(!default_plans.body["data"]
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p["id"] == "team"));
    let stranger = app
        .call(
            "PUT",
            &format!("/api/v1/payments/stripe/projects/{project}/plans/team"),
            Some(&app.developer_token("dev-other")),
            Some(&json!({"rank": 9})),
        )
        .await;
    assert_eq!(stranger.status, 404);
}

#[tokio::test]
async fn developers_see_their_projects_subscriptions_and_other_scopes_ignore_them() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-subs");
    let project = "subsproj";
    let config = json!({"secretKey": "sk_test_subsproj_key", "publishableKey": "pk_test_subsproj", "webhookSecret": "whsec_subsprojSigningSecret0123456789abc"});
    let base = format!("/api/v1/payments/stripe/projects/{project}");
    let saved = app
        .call("PUT", &format!("{base}/config"), Some(&dev), Some(&config))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let plan = json!({"name": "Starter", "rank": 10, "limits": {"requests": 25000}, "priceId": "price_starter"});
    let linked = app
        .call(
            "PUT",
            &format!("{base}/plans/starter"),
            Some(&dev),
            Some(&plan),
        )
        .await;
    assert_eq!(linked.status, 200, "{}", linked.body);
    // The project's customer and subscription (this local project shares localstripe with the
    // default project; its objects carry their scope).
    let token = app.token("kai");
    let query = format!("?project_id={project}&test_mode=true");
    let customer = app
        .call(
            "POST",
            &format!("/api/stripe/create-customer{query}"),
            Some(&token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(customer.status, 200, "{}", customer.body);
    // The customer gets a card first: a create refused for want of one would be answered the
    // same again for its idempotency key, as Stripe keeps a key's first answer.
    let customer_id = customer.body["data"]["customerId"].as_str().expect("id");
    app.default_card(customer_id, SUBSCRIPTION_CARD).await;
    let created = app
        .call(
            "POST",
            &format!("/api/stripe/create-subscription{query}"),
            Some(&token),
            Some(&json!({"priceId": "price_starter"})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let subscription = created.body["data"]["subscriptionId"]
        .as_str()
        .expect("id")
        .to_owned();

    let listed = app
        .call("GET", &format!("{base}/subscriptions"), Some(&dev), None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.body["data"][0]["subscriptionId"],
        subscription.as_str()
    );
    assert_eq!(listed.body["data"][0]["account"], "kai");
    let all = app
        .call("GET", "/api/v1/payments/subscriptions", Some(&dev), None)
        .await;
    assert_eq!(
        all.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        all.body
    );
    let other = app
        .call(
            "GET",
            "/api/v1/payments/subscriptions",
            Some(&app.developer_token("dev-else")),
            None,
        )
        .await;
    assert_eq!(other.body["data"], json!([]));

    // The default project's webhook gets the same localstripe's events: it re-reads the
    // subscription, sees another scope's, and stores nothing for the default project.
    let object = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let reply = app
        .deliver_event("customer.subscription.updated", &object)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(my_subscription(&app, "kai").await["status"], "none");
}

#[tokio::test]
async fn a_package_checkout_of_one_deployment_is_never_credited_in_another_on_the_same_stripe() {
    // Two stacks on one Stripe account (one localstripe), both webhooks registered there.
    let a = spawn_app_with(SecretSetup {
        no_webhook: true,
        deployment: Some("coffer-stack-a"),
        ..SecretSetup::default()
    })
    .await;
    let b = spawn_app_with(SecretSetup {
        no_webhook: true,
        deployment: Some("coffer-stack-b"),
        ..SecretSetup::default()
    })
    .await;
    let reply = post(
        &a,
        "/api/v1/payments/stripe/checkout-session",
        "noel",
        json!({"creditPackageId": "starter", "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["data"]["id"].as_str().expect("id").to_owned();
    let session = complete_checkout(&a, &session_id).await;
    assert_eq!(
        session["metadata"]["coffer_scope"], "default/test@coffer-stack-a",
        "{session}"
    );
    // The other stack gets the same event first, then the stack that made it.
    let elsewhere = b
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    assert_eq!(
        b.balance("noel").await,
        0.0,
        "not the other stack's payment"
    );
    let here = a
        .deliver_event("checkout.session.completed", &session)
        .await;
    assert_eq!(here.status, 200, "{}", here.body);
    assert_eq!(a.balance("noel").await, 5.0);
    a.assert_invariants().await;
    b.assert_invariants().await;
}
