//! Auto-recharge settings (the charges themselves come next): a user turns it on within the
//! project's bounds with a saved card, off again; a developer turns an account's off; bad input
//! is 400 in words.

use integration_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

async fn put(app: &TestApp, user: &str, body: Value) -> integration_tests::Reply {
    app.call(
        "PUT",
        "/api/credits/auto-recharge",
        Some(&app.token(user)),
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn a_user_turns_auto_recharge_on_within_the_projects_bounds_and_off_again() {
    let app = spawn_app().await;
    let on = json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": "seti_123abc"});
    put(&app, "rex", on.clone())
        .await
        .assert_refused_saying("does not offer", &"no bounds yet");
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let settings = coffer::domain::projects::ProjectSettings {
        auto_recharge: Some(coffer::domain::recharge::RechargeBounds {
            max_per_recharge: 5_000,
            max_per_day: 3,
        }),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");
    for (body, words) in [
        (
            json!({"enabled": true, "threshold": 5, "amount": 20}),
            "setupIntentId",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 60, "setupIntentId": "seti_123abc"}),
            "at most",
        ),
        (
            json!({"enabled": true, "threshold": "five", "amount": 20}),
            "threshold",
        ),
        (json!({"threshold": 5, "amount": 20}), "enabled"),
        (
            json!({"enabled": true, "threshold": 5, "amount": 20.001}),
            "amount",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": "not-a-seti"}),
            "setupIntentId",
        ),
    ] {
        put(&app, "rex", body.clone())
            .await
            .assert_refused_saying(words, &body);
    }
    let saved = put(&app, "rex", on).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        saved.body["data"],
        json!({"enabled": true, "threshold": 5.0, "amount": 20.0, "setupIntentId": "seti_123abc",
               "inFlight": false, "awaitingAuthentication": false, "failuresInARow": 0,
               "disabledBy": null})
    );
    let read = app
        .call(
            "GET",
            "/api/credits/auto-recharge",
            Some(&app.token("rex")),
            None,
        )
        .await;
    assert_eq!(read.body["data"], saved.body["data"]);
    // Off: the card is kept, and who turned it off is said.
    let off = put(
        &app,
        "rex",
        json!({"enabled": false, "threshold": 5, "amount": 20}),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["data"]["enabled"], false);
    assert_eq!(off.body["data"]["disabledBy"], "user");
    assert_eq!(off.body["data"]["setupIntentId"], "seti_123abc");
    // Another user's settings are their own.
    let other = app
        .call(
            "GET",
            "/api/credits/auto-recharge",
            Some(&app.token("sue")),
            None,
        )
        .await;
    assert_eq!(other.body["data"]["enabled"], false);
    assert_eq!(other.body["data"]["setupIntentId"], Value::Null);
}

#[tokio::test]
async fn a_developer_turns_an_accounts_auto_recharge_off_and_only_in_their_project() {
    let app = spawn_app().await;
    let dev = app.developer_token("dev-rae");
    let project = "/api/v1/payments/stripe/projects/alpha";
    app.configure_alpha("dev-rae").await;
    let bounds = json!({"autoRecharge": {"maxPerRecharge": 50, "maxPerDay": 3}});
    let set = app
        .call(
            "PUT",
            &format!("{project}/settings?test_mode=true"),
            Some(&dev),
            Some(&bounds),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        set.body["data"]["autoRecharge"],
        json!({"maxPerRecharge": 50.0, "maxPerDay": 3})
    );
    let user_on = app
        .call(
            "PUT",
            "/api/credits/auto-recharge?project_id=alpha&test_mode=true",
            Some(&app.token("tia")),
            Some(&json!({"enabled": true, "threshold": 2, "amount": 10, "setupIntentId": "seti_tia"})),
        )
        .await;
    assert_eq!(user_on.status, 200, "{}", user_on.body);
    let path = format!("{project}/accounts/tia/auto-recharge?test_mode=true");
    let off = app
        .call(
            "PUT",
            &path,
            Some(&dev),
            Some(&json!({"enabled": false, "threshold": 2, "amount": 10})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["data"]["disabledBy"], "developer");
    let seen = app.call("GET", &path, Some(&dev), None).await;
    assert_eq!(seen.body["data"]["enabled"], false);
    let bob = app.developer_token("dev-bob");
    assert_eq!(app.call("GET", &path, Some(&bob), None).await.status, 404);
}
