//! Top-ups of an amount the buyer chooses: refused unless the project allows them, then
//! within its bounds and currencies, at its rate, parsed exactly; paid and credited once.

use integration_tests::{settle, spawn_app, TestApp};
use serde_json::{json, Value};

async fn top_up(app: &TestApp, user: &str, body: Value) -> integration_tests::Reply {
    app.post(
        "/api/stripe/create-payment-intent",
        Some(user),
        &body.to_string(),
        &[],
    )
    .await
}

#[tokio::test]
async fn a_custom_amount_is_paid_at_the_projects_rate_within_its_bounds_and_parsed_exactly() {
    let app = spawn_app().await;
    let refused = top_up(&app, "cora", json!({"amount": 7.00, "currency": "usd"})).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not take custom amounts"),
        "{}",
        refused.body
    );
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let settings = coffer::domain::projects::ProjectSettings {
        custom_amounts: Some(coffer::domain::packages::CustomAmounts {
            min: 500,
            max: 50_000,
            currencies: vec!["usd".into()],
            credits_per_unit_e4: 12_500,
            unit: coffer::domain::packages::AmountUnit::Major,
        }),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");

    for (body, words) in [
        (json!({"amount": 7.005, "currency": "usd"}), "finer"),
        (json!({"amount": "7.005", "currency": "usd"}), "finer"),
        (
            json!({"amount": 4.99, "currency": "usd"}),
            "from 5.00 to 500.00",
        ),
        (
            json!({"amount": 500.01, "currency": "usd"}),
            "from 5.00 to 500.00",
        ),
        (
            json!({"amount": 7, "currency": "eur"}),
            "currency must be usd",
        ),
        (json!({"amount": 7}), "currency is required"),
        (
            json!({"amount": "seven", "currency": "usd"}),
            "number or a decimal string",
        ),
        (
            json!({"amount": 7, "currency": "usd", "creditPackageId": "starter"}),
            "one of them",
        ),
    ] {
        let reply = top_up(&app, "cora", body.clone()).await;
        reply.assert_refused_saying(words, &body);
    }

    // 7.00 as a decimal string, as a mobile app may send it: 8.75 credits at 1.25 a dollar.
    let made = top_up(&app, "cora", json!({"amount": "7.00", "currency": "usd"})).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let intent_id = made.body["data"]["paymentIntentId"]
        .as_str()
        .expect("intent")
        .to_owned();
    assert_eq!(app.stripe_intent(&intent_id).await["amount"], 700);
    assert_eq!(
        app.pay_with_card(&intent_id, "4242424242424242")
            .await
            .status,
        200
    );
    let credited = settle(
        || async { (app.balance("cora").await >= 8.75).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent_id),
    )
    .await;
    assert!(credited.is_some(), "the custom top-up is credited");
    app.redeliver_intent_event("payment_intent.succeeded", &intent_id)
        .await;
    assert_eq!(app.balance("cora").await, 8.75, "once");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_developer_sets_custom_amounts_in_major_units_and_only_in_the_deployments_currency() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-cal");
    let path = "/api/v1/payments/stripe/projects/alpha";
    app.configure_alpha("dev-cal").await;
    let settings = format!("{path}/settings?test_mode=true");
    for (rules, words) in [
        (
            json!({"min": 5, "max": 500, "currencies": ["eur"], "creditsPerUnit": 1}),
            "currency",
        ),
        (
            json!({"min": 50, "max": 5, "currencies": ["usd"], "creditsPerUnit": 1}),
            "min",
        ),
        (
            json!({"min": 5, "max": 500, "currencies": ["usd"], "creditsPerUnit": 1.00001}),
            "four decimals",
        ),
    ] {
        let reply = app
            .call(
                "PUT",
                &settings,
                Some(&dev),
                Some(&json!({"customAmounts": rules})),
            )
            .await;
        reply.assert_refused_saying(words, &rules);
    }
    let good = json!({"customAmounts": {"min": 5, "max": 500, "currencies": ["usd"], "creditsPerUnit": 1.25}});
    let saved = app.call("PUT", &settings, Some(&dev), Some(&good)).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        saved.body["data"]["customAmounts"],
        json!({"min": 5.0, "max": 500.0, "currencies": ["usd"], "creditsPerUnit": 1.25, "unit": "major"})
    );
    let user = app.token("cid");
    let made = app
        .call(
            "POST",
            "/api/stripe/create-payment-intent?project_id=alpha&test_mode=true",
            Some(&user),
            Some(&json!({"amount": 12.5, "currency": "usd"})),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    // In minor units (as PaymentSheet's samples send them): 1250 is 12.50, 12.5 is refused.
    let minor = json!({"customAmounts": {"min": 5, "max": 500, "currencies": ["usd"], "creditsPerUnit": 1.25, "unit": "minor"}});
    let saved = app.call("PUT", &settings, Some(&dev), Some(&minor)).await;
    assert_eq!(
        saved.body["data"]["customAmounts"]["unit"], "minor",
        "{}",
        saved.body
    );
    let bad_unit = json!({"customAmounts": {"min": 5, "max": 500, "currencies": ["usd"], "creditsPerUnit": 1.25, "unit": "cents"}});
    app.call("PUT", &settings, Some(&dev), Some(&bad_unit))
        .await
        .assert_refused_saying("major or minor", &bad_unit);
    let pay = |amount: Value| {
        let user = user.clone();
        let app = &app;
        async move {
            app.call(
                "POST",
                "/api/stripe/create-payment-intent?project_id=alpha&test_mode=true",
                Some(&user),
                Some(&json!({"amount": amount, "currency": "usd"})),
            )
            .await
        }
    };
    // Raising the bounds without naming the unit keeps it: cents stay cents.
    let wider = json!({"customAmounts": {"min": 5, "max": 900, "currencies": ["usd"], "creditsPerUnit": 1.25}});
    let saved = app.call("PUT", &settings, Some(&dev), Some(&wider)).await;
    assert_eq!(
        saved.body["data"]["customAmounts"]["unit"], "minor",
        "{}",
        saved.body
    );
    let cents = pay(json!(1250)).await;
    assert_eq!(cents.status, 200, "{}", cents.body);
    pay(json!(12.5))
        .await
        .assert_refused_saying("whole number", &"12.5 in minor units");
    let off = app
        .call(
            "PUT",
            &settings,
            Some(&dev),
            Some(&json!({"customAmounts": null})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["data"]["customAmounts"], Value::Null);
}
