//! The opt-in suite: the same plan and subscription flows against Stripe's real test mode, for
//! what localstripe and the test double cannot show (Prices, Checkout, the portal, ephemeral
//! keys, current API versions). Ignored unless asked for: `STRIPE_TEST_SECRET_KEY=sk_test_…
//! scripts/test-stripe.sh`. Stripe cannot reach a local machine, so the tests deliver events built
//! from Stripe's real objects, signed with the local secret, as with localstripe.

use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use integration_tests::{spawn_app_with, Reply, SecretSetup, TestApp};
use serde_json::{json, Value};

async fn real_app() -> TestApp {
    let key = std::env::var("STRIPE_TEST_SECRET_KEY")
        .expect("STRIPE_TEST_SECRET_KEY: run this suite through scripts/test-stripe.sh");
    assert!(
        key.starts_with("sk_test_"),
        "only a test-mode key may be used"
    );
    spawn_app_with(SecretSetup {
        real_stripe_key: Some(key),
        ..Default::default()
    })
    .await
}

async fn stripe_get(app: &TestApp, path: &str) -> Value {
    app.http
        .get(format!("{}{path}", app.stripe_base))
        .bearer_auth(&app.stripe_key)
        .send()
        .await
        .expect("Stripe GET")
        .json()
        .await
        .expect("Stripe JSON")
}

/// A monthly price in the test account, linked to the default project's `starter` plan.
async fn link_starter_to_a_real_price(app: &TestApp) -> String {
    let product = app
        .stripe_post("/v1/products", &[("name", "Coffer test-mode suite")])
        .await;
    assert_eq!(product.status, 200, "{}", product.body);
    let product = product.body["id"].as_str().expect("product").to_owned();
    let price = app
        .stripe_post(
            "/v1/prices",
            &[
                ("product", &product),
                ("unit_amount", "2900"),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    assert_eq!(price.status, 200, "{}", price.body);
    let price = price.body["id"].as_str().expect("price").to_owned();
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let starter = store.plan("starter").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        price_id: Some(Some(price.clone())),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("starter", Some(starter), update).expect("link"))
        .await
        .expect("save");
    price
}

async fn post(app: &TestApp, path: &str, user: &str, body: Value) -> Reply {
    app.post(path, Some(user), &body.to_string(), &[]).await
}

#[tokio::test]
#[ignore = "needs a Stripe test-mode key: scripts/test-stripe.sh"]
async fn stripe_test_mode_subscription_from_create_to_cancel() {
    let app = real_app().await;
    link_starter_to_a_real_price(&app).await;
    let user = format!("suite-{}", uuid::Uuid::new_v4().simple());
    let created = post(
        &app,
        "/api/stripe/create-subscription",
        &user,
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let data = created.body["data"].clone();
    assert_eq!(data["status"], "incomplete", "{data}");
    let secret = data["clientSecret"].as_str().expect("clientSecret");
    let intent = secret.split("_secret_").next().expect("intent");
    // What PaymentSheet or Stripe.js does with the secret.
    let confirmed = app
        .stripe_post(
            &format!("/v1/payment_intents/{intent}/confirm"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let subscription_id = data["subscriptionId"].as_str().expect("id").to_owned();
    let subscription = stripe_get(&app, &format!("/v1/subscriptions/{subscription_id}")).await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    let invoice_id = subscription["latest_invoice"]
        .as_str()
        .expect("invoice")
        .to_owned();
    let invoice = stripe_get(&app, &format!("/v1/invoices/{invoice_id}")).await;
    for (kind, object) in [
        ("customer.subscription.updated", &subscription),
        ("invoice.paid", &invoice),
        ("invoice.payment_succeeded", &invoice),
    ] {
        let reply = app.deliver_event(kind, object).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
    }
    let now = app
        .get("/api/v1/payments/stripe/my-subscription", Some(&user))
        .await;
    assert_eq!(now.body["data"]["planId"], "starter", "{}", now.body);
    assert_eq!(app.balance(&user).await, 5.0, "included credits once");

    let cancel = post(
        &app,
        "/api/v1/payments/stripe/cancel-subscription",
        &user,
        json!({"immediately": true}),
    )
    .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    let after = app
        .get("/api/v1/payments/stripe/my-subscription", Some(&user))
        .await;
    assert_eq!(after.body["data"]["planId"], "free", "{}", after.body);
}

#[tokio::test]
#[ignore = "needs a Stripe test-mode key: scripts/test-stripe.sh"]
async fn stripe_test_mode_checkout_portal_and_payment_sheet() {
    let app = real_app().await;
    link_starter_to_a_real_price(&app).await;
    let user = format!("suite-{}", uuid::Uuid::new_v4().simple());
    let urls = json!({"successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no"});
    for item in [
        json!({"planId": "starter"}),
        json!({"creditPackageId": "starter"}),
    ] {
        let mut body = urls.clone();
        if let (Some(body), Some(item)) = (body.as_object_mut(), item.as_object()) {
            body.extend(item.clone());
        }
        let session = post(
            &app,
            "/api/v1/payments/stripe/checkout-session",
            &user,
            body,
        )
        .await;
        assert_eq!(session.status, 200, "{}", session.body);
        let url = session.body["data"]["url"].as_str().expect("url");
        assert!(url.starts_with("https://checkout.stripe.com/"), "{url}");
    }
    let sheet = post(
        &app,
        "/api/stripe/create-payment-intent",
        &user,
        json!({"creditPackageId": "starter", "paymentSheet": true, "stripeVersion": "2020-08-27"}),
    )
    .await;
    assert_eq!(sheet.status, 200, "{}", sheet.body);
    assert!(sheet.body["data"]["ephemeralKey"]
        .as_str()
        .expect("key")
        .starts_with("ek_test_"));
    // Needs the test account's customer portal settings saved once in the Dashboard.
    let portal = post(
        &app,
        "/api/v1/payments/stripe/customer-portal",
        &user,
        json!({"returnUrl": "https://app.example.com/account"}),
    )
    .await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    assert!(portal.body["data"]["url"]
        .as_str()
        .expect("url")
        .starts_with("https://billing.stripe.com/"));
}

#[tokio::test]
#[ignore = "needs a Stripe test-mode key: scripts/test-stripe.sh"]
async fn stripe_test_mode_metered_usage_is_counted_once_by_a_real_meter() {
    use coffer::services::budget::Budget;
    use coffer::services::metering::{report_usage, StopAt};
    let app = real_app().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let event_name = format!("coffer_suite_{}", &suffix[..12]);
    let meter = app
        .stripe_post(
            "/v1/billing/meters",
            &[
                ("display_name", "Coffer suite requests"),
                ("event_name", &event_name),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await;
    assert_eq!(meter.status, 200, "{}", meter.body);
    let meter_id = meter.body["id"].as_str().expect("meter").to_owned();
    let product = app
        .stripe_post("/v1/products", &[("name", "Coffer metered suite")])
        .await;
    let product = product.body["id"].as_str().expect("product").to_owned();
    let price = app
        .stripe_post(
            "/v1/prices",
            &[
                ("product", &product),
                ("unit_amount", "1"),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", &meter_id),
            ],
        )
        .await;
    assert_eq!(price.status, 200, "{}", price.body);
    let price = price.body["id"].as_str().expect("price").to_owned();
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let starter = store.plan("starter").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        price_id: Some(Some(price)),
        meter_events: Some(std::collections::BTreeMap::from([(
            "requests".to_owned(),
            event_name.clone(),
        )])),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("starter", Some(starter), update).expect("link"))
        .await
        .expect("save");

    let user = format!("suite-{suffix}");
    let created = post(
        &app,
        "/api/stripe/create-subscription",
        &user,
        json!({"planId": "starter"}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let subscription_id = created.body["data"]["subscriptionId"]
        .as_str()
        .expect("id")
        .to_owned();
    // A metered price bills nothing up front: the subscription is active at once.
    let subscription = stripe_get(&app, &format!("/v1/subscriptions/{subscription_id}")).await;
    let reply = app
        .deliver_event("customer.subscription.updated", &subscription)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let customer = subscription["customer"]
        .as_str()
        .expect("customer")
        .to_owned();

    let token = coffer_dev::token::issue_service(integration_tests::JWT_SECRET, "app-backend", 60)
        .expect("token");
    for (key, quantity) in [("a", 3), ("b", 4), ("c", 5)] {
        let body = json!({"userId": user, "metric": "requests", "quantity": quantity, "idempotencyKey": key});
        let reply = app
            .call("POST", "/internal/usage", Some(&token), Some(&body))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // A crash after the first send, then the run that resends it: Stripe counts it once.
    assert!(coffer::calls::as_function(
        "meter-usage",
        report_usage(
            &app.app.app,
            Budget::lasting(std::time::Duration::from_secs(120)),
            StopAt::AfterFirstSend
        )
    )
    .await
    .is_err());
    let report = coffer::calls::as_function(
        "meter-usage",
        report_usage(
            &app.app.app,
            Budget::lasting(std::time::Duration::from_secs(120)),
            StopAt::Never,
        ),
    )
    .await
    .expect("the run");
    assert_eq!(report.resent, 1, "{report:?}");

    // Stripe aggregates meter events asynchronously: wait for the summary.
    let start = integration_tests::now() - 3600;
    let end = integration_tests::now() + 3600;
    let start = start - start % 60;
    let end = end - end % 60;
    let mut total = 0.0;
    for _ in 0..40 {
        let summaries = stripe_get(
            &app,
            &format!(
                "/v1/billing/meters/{meter_id}/event_summaries?customer={customer}&start_time={start}&end_time={end}"
            ),
        )
        .await;
        total = summaries["data"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s["aggregated_value"].as_f64())
                    .sum()
            })
            .unwrap_or(0.0);
        if total >= 12.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    assert_eq!(total, 12.0, "3 + 4 + 5 units, each once");
}

/// The storefront's saved-card flow in Stripe's test mode: the SetupIntent is confirmed with
/// Stripe's test card `pm_card_visa` (what `confirmCardSetup` does in the browser), then Coffer
/// charges it; `pm_card_chargeDeclined` is refused with Stripe's sentence.
#[tokio::test]
#[ignore = "needs a Stripe test-mode key: scripts/test-stripe.sh"]
async fn stripe_test_mode_a_saved_card_pays_and_a_declined_one_is_refused() {
    let app = real_app().await;
    for (card, paid) in [("pm_card_visa", true), ("pm_card_chargeDeclined", false)] {
        let user = format!("suite-{}", uuid::Uuid::new_v4().simple());
        let setup = post(&app, "/api/stripe/setup-intent", &user, json!({})).await;
        assert_eq!(setup.status, 200, "{}", setup.body);
        let id = setup.body["data"]["setupIntentId"].as_str().expect("id");
        let confirmed = app
            .stripe_post(
                &format!("/v1/setup_intents/{id}/confirm"),
                &[("payment_method", card)],
            )
            .await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        let bought = post(
            &app,
            "/api/stripe/create-payment-intent",
            &user,
            json!({"creditPackageId": "standard", "setupIntentId": id}),
        )
        .await;
        if paid {
            assert_eq!(bought.status, 200, "{}", bought.body);
            assert_eq!(
                bought.body["data"]["status"], "succeeded",
                "{}",
                bought.body
            );
        } else {
            assert_eq!(bought.status, 402, "{}", bought.body);
            assert_eq!(bought.body["code"], "card_declined");
        }
    }
}

/// Auto-recharge against Stripe's test mode: the stream starts an off-session charge of the
/// saved card; `pm_card_visa` is taken (and credited once its event, built from Stripe's real
/// intent, is delivered), `pm_card_chargeDeclined` fails with Stripe's reason. (Stripe's 3-D
/// Secure test cards also ask for authentication when the card is saved, which only a browser
/// can give, so the action-required case runs against the test double only.)
#[tokio::test]
#[ignore = "needs a Stripe test-mode key: scripts/test-stripe.sh"]
async fn stripe_test_mode_auto_recharge_charges_the_saved_card_off_session() {
    let app = real_app().await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let settings = coffer::domain::projects::ProjectSettings {
        auto_recharge: Some(coffer::domain::recharge::RechargeBounds {
            max_per_recharge: 5_000,
            max_per_day: 3,
            default_threshold: None,
            default_amount: None,
        }),
        custom_amounts: Some(coffer::domain::packages::CustomAmounts {
            min: 100,
            max: 10_000,
            currencies: vec!["usd".into()],
            credits_per_unit_e4: 10_000,
            unit: coffer::domain::packages::AmountUnit::Major,
        }),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");
    app.follow_stream().await;
    for (card, paid) in [("pm_card_visa", true), ("pm_card_chargeDeclined", false)] {
        let user = format!("suite-{}", uuid::Uuid::new_v4().simple());
        let granted = app
            .backend_grant(&json!({"userId": user, "amount": 6, "reason": "opening",
                                   "idempotencyKey": format!("open-{user}")}))
            .await;
        assert_eq!(granted.status, 200, "{}", granted.body);
        let setup = post(&app, "/api/stripe/setup-intent", &user, json!({})).await;
        assert_eq!(setup.status, 200, "{}", setup.body);
        let id = setup.body["data"]["setupIntentId"].as_str().expect("id");
        let confirmed = app
            .stripe_post(
                &format!("/v1/setup_intents/{id}/confirm"),
                &[("payment_method", card)],
            )
            .await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        let on = app
            .call(
                "PUT",
                "/api/credits/auto-recharge",
                Some(&app.token(&user)),
                Some(&json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": id})),
            )
            .await;
        assert_eq!(on.status, 200, "{}", on.body);
        let spent = app.spend(&user, json!(1.5), "suite-spend").await;
        assert_eq!(spent.status, 200, "{}", spent.body);
        let account = coffer::domain::records::UserId::parse(&user).expect("id");
        let ended = integration_tests::eventually(90, || async {
            let (recharge, _) = store.recharge(&account).await.ok()??;
            let state = recharge.state;
            match (&state.in_flight, &state.last) {
                (Some(f), _) if f.launched => f.intent.clone().map(|i| (i, None)),
                (None, Some(last)) => Some((
                    last.intent.clone().unwrap_or_default(),
                    Some(last.ended.clone()),
                )),
                _ => None,
            }
        })
        .await
        .expect("the recharge was answered");
        let (intent, ended) = ended;
        if paid {
            let at_stripe = stripe_get(&app, &format!("/v1/payment_intents/{intent}")).await;
            assert_eq!(at_stripe["status"], "succeeded", "{at_stripe}");
            assert_eq!(at_stripe["amount"], 2000);
            let delivered = app
                .deliver_event("payment_intent.succeeded", &at_stripe)
                .await;
            assert_eq!(delivered.status, 200, "{}", delivered.body);
            let landed = integration_tests::eventually(60, || async {
                (app.balance(&user).await == 24.5).then_some(())
            })
            .await;
            assert!(landed.is_some(), "balance {}", app.balance(&user).await);
        } else {
            assert!(
                matches!(ended, Some(coffer::domain::recharge::Ended::Failed { ref reason }) if reason.to_lowercase().contains("declined")),
                "{ended:?}"
            );
            assert_eq!(app.balance(&user).await, 4.5);
        }
    }
}
