//! Auto-recharge over the wire: the settings (a user turns it on within the project's bounds
//! with a card they saved, off again; a developer turns an account's off; bad input is 400 in
//! words) and the charges, started from the table's stream (followed as Lambda's event source
//! mapping does) through the Stripe test double, which answers off-session confirmations as
//! Stripe does where localstripe cannot. The charges counted are the off-session confirmations
//! the double was asked for, by intent.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer::domain::records::UserId;
use integration_tests::{
    eventually, join_all, settle, spawn_app, spawn_app_with, SecretSetup, TestApp,
};
use serde_json::{json, Value};

use crate::cards::saved_card;

const GOOD_CARD: &str = "4242424242424242";
const DECLINED_AT_CHARGE: &str = "4000000000000341";
const THREE_D_SECURE: &str = "4000002500003155";

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
    let card = saved_card(&app, "rex", GOOD_CARD).await;
    let on = json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": card});
    put(&app, "rex", on.clone())
        .await
        .assert_refused_saying("does not offer", &"no bounds yet");
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let packages_only = coffer::domain::projects::ProjectSettings {
        auto_recharge: Some(coffer::domain::recharge::RechargeBounds {
            max_per_recharge: 5_000,
            max_per_day: 3,
            default_threshold: None,
            default_amount: None,
        }),
        ..Default::default()
    };
    store.put_settings(&packages_only).await.expect("settings");
    // A project that sells packages only: an amount would buy credits at a rate it never set.
    put(&app, "rex", on.clone())
        .await
        .assert_refused_saying("packages only", &"no custom amounts");
    let settings = coffer::domain::projects::ProjectSettings {
        custom_amounts: Some(custom_amounts()),
        ..packages_only
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
            json!({"enabled": true, "amount": 20, "setupIntentId": card}),
            "threshold is required",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 20.001}),
            "amount",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": "not-a-seti"}),
            "setupIntentId",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 20, "creditPackageId": "standard"}),
            "not both",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 0.5, "setupIntentId": card}),
            "amount must be from",
        ),
        (
            json!({"enabled": true, "threshold": 5, "creditPackageId": "no such"}),
            "creditPackageId",
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
        json!({"enabled": true, "threshold": 5.0, "amount": 20.0, "setupIntentId": card,
               "inFlight": false, "awaitingAuthentication": false, "failuresInARow": 0,
               "disabledBy": null, "creditPackageId": null, "lastRecharge": null})
    );
    // A card someone else saved, or one never saved, is not this account's to charge.
    let sues = saved_card(&app, "sue", GOOD_CARD).await;
    let theirs = put(
        &app,
        "rex",
        json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": sues}),
    )
    .await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    let unknown = put(
        &app,
        "rex",
        json!({"enabled": true, "threshold": 5, "amount": 20, "setupIntentId": "seti_123abc"}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let read = app
        .call(
            "GET",
            "/api/credits/auto-recharge",
            Some(&app.token("rex")),
            None,
        )
        .await;
    assert_eq!(read.body["data"], saved.body["data"]);
    // A package instead of an amount: its price is what one recharge charges.
    let package = put(
        &app,
        "rex",
        json!({"enabled": true, "threshold": 5, "creditPackageId": "standard"}),
    )
    .await;
    assert_eq!(package.status, 200, "{}", package.body);
    assert_eq!(package.body["data"]["amount"], 15.0);
    assert_eq!(package.body["data"]["creditPackageId"], "standard");
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
    assert_eq!(off.body["data"]["setupIntentId"], card);
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
    let bounds = json!({"autoRecharge": {"maxPerRecharge": 50, "maxPerDay": 3,
                                         "defaultThreshold": 2, "defaultAmount": 10},
                        "customAmounts": {"min": 1, "max": 100, "currencies": ["usd"], "creditsPerUnit": 1}});
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
        json!({"maxPerRecharge": 50.0, "maxPerDay": 3, "defaultThreshold": 2.0, "defaultAmount": 10.0})
    );
    let card = crate::cards::saved_card_in(
        &app,
        "tia",
        "?project_id=alpha&test_mode=true",
        &integration_tests::project_stripe_base("alpha"),
        GOOD_CARD,
    )
    .await;
    let user_on = app
        .call(
            "PUT",
            "/api/credits/auto-recharge?project_id=alpha&test_mode=true",
            Some(&app.token("tia")),
            Some(&json!({"enabled": true, "setupIntentId": card})),
        )
        .await;
    assert_eq!(user_on.status, 200, "{}", user_on.body);
    // Left out, the threshold and the amount are the project's defaults.
    assert_eq!(user_on.body["data"]["threshold"], 2.0);
    assert_eq!(user_on.body["data"]["amount"], 10.0);
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

/// A test app whose default project offers auto-recharge (at most 50.00 a recharge and
/// `max_per_day` a day) and custom top-ups at one credit a dollar, with billing events on,
/// following the table's stream.
/// Custom top-ups of 1.00 to 100.00 USD at one credit a dollar.
fn custom_amounts() -> coffer::domain::packages::CustomAmounts {
    coffer::domain::packages::CustomAmounts {
        min: 100,
        max: 10_000,
        currencies: vec!["usd".into()],
        credits_per_unit_e4: 10_000,
        unit: coffer::domain::packages::AmountUnit::Major,
    }
}

pub(crate) async fn offering(max_per_day: u32) -> TestApp {
    let app = spawn_app_with(SecretSetup {
        events: true,
        ..SecretSetup::default()
    })
    .await;
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let settings = coffer::domain::projects::ProjectSettings {
        auto_recharge: Some(coffer::domain::recharge::RechargeBounds {
            max_per_recharge: 5_000,
            max_per_day,
            default_threshold: None,
            default_amount: None,
        }),
        custom_amounts: Some(custom_amounts()),
        ..Default::default()
    };
    store.put_settings(&settings).await.expect("settings");
    app.follow_stream().await;
    app
}

/// `user` gets `opening` credits (a grant), saves `card` and turns auto-recharge on: below 5.00,
/// buy `amount`.
async fn turned_on(app: &TestApp, user: &str, card: &str, opening: f64, amount: f64) {
    let granted = app
        .backend_grant(
            &json!({"userId": user, "amount": opening, "reason": "opening credits",
                               "idempotencyKey": format!("opening-{user}")}),
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let card = saved_card(app, user, card).await;
    let on = put(
        app,
        user,
        json!({"enabled": true, "threshold": 5, "amount": amount, "setupIntentId": card}),
    )
    .await;
    assert_eq!(on.status, 200, "{}", on.body);
}

async fn spend(app: &TestApp, user: &str, amount: f64, key: &str) {
    let reply = app.spend(user, json!(amount), key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// The intents the double was asked to confirm off-session (each charge started, once however
/// often it was asked).
async fn charges(app: &TestApp) -> HashSet<String> {
    let requests: Vec<Value> = app
        .http
        .get(format!("{}/_double/requests", app.double_base))
        .send()
        .await
        .expect("the double answers")
        .json()
        .await
        .expect("a JSON list");
    requests
        .iter()
        .filter(|r| r["params"].get("off_session").is_some())
        .filter_map(|r| r["path"].as_str())
        .filter_map(|p| {
            p.strip_prefix("/v1/payment_intents/")?
                .strip_suffix("/confirm")
        })
        .map(str::to_owned)
        .collect()
}

/// The account's auto-recharge as the store holds it.
async fn stored(app: &TestApp, user: &str) -> coffer::domain::recharge::AccountRecharge {
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let user = UserId::parse(user).expect("a user id");
    store
        .recharge(&user)
        .await
        .expect("read")
        .expect("auto-recharge set")
        .0
}

/// The user's view (`GET /api/credits/auto-recharge`).
async fn view(app: &TestApp, user: &str) -> Value {
    let reply = app
        .call(
            "GET",
            "/api/credits/auto-recharge",
            Some(&app.token(user)),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"].clone()
}

/// Stripe's retry of the succeeded webhook of the account's recharges (localstripe may drop
/// its own delivery).
async fn redeliver_paid(app: &TestApp, user: &str) {
    for intent in charges(app).await {
        let at_stripe = app.stripe_intent(&intent).await;
        if at_stripe["status"] == "succeeded" && at_stripe["metadata"]["coffer_user_id"] == user {
            app.redeliver_intent_event("payment_intent.succeeded", &intent)
                .await;
        }
    }
}

/// A balance record of `user` handed to the billing-events function as the stream hands one
/// over (again): done when this returns.
async fn hand_over_balance(app: &TestApp, user: &str, balance: i64, record: &str) {
    let batch = json!({"Records": [{
        "eventID": record,
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": integration_tests::now(),
            "Keys": {"pk": {"S": format!("USER#{user}")}, "sk": {"S": "BALANCE"}},
            "NewImage": {
                "pk": {"S": format!("USER#{user}")}, "sk": {"S": "BALANCE"},
                "balance": {"N": balance.to_string()}, "currency": {"S": "usd"}
            }
        }
    }]});
    let done = coffer::calls::as_function(
        "billing-events",
        coffer::services::events::publish_stream_event(&app.app.app, &batch),
    )
    .await;
    assert!(done.failed.is_none(), "{done:?}");
}

fn of_kind<'a>(events: &'a [Value], kind: &str, account: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["account"] == account)
        .collect()
}

#[tokio::test]
async fn fifty_spends_crossing_the_threshold_start_one_recharge_credited_once_and_a_redelivered_stream_charges_nothing_more(
) {
    let app = offering(3).await;
    turned_on(&app, "ria", GOOD_CARD, 10.0, 20.0).await;
    // Fifty spends at once, each a committed balance below 5.00 once it passes 7.50 spent…
    let spends: Vec<_> = (0..50)
        .map(|i| {
            let app = &app;
            async move { app.spend("ria", json!(0.15), &format!("ria-{i}")).await }
        })
        .collect();
    for reply in join_all(spends).await {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // …and one recharge of 20.00 lands: 10 - 7.50 + 20.
    let landed = settle(
        || async { (app.balance("ria").await == 22.5).then_some(()) },
        redeliver_paid(&app, "ria"),
    )
    .await;
    assert!(landed.is_some(), "balance {}", app.balance("ria").await);
    assert_eq!(charges(&app).await.len(), 1, "exactly one charge");
    let events = app
        .billing_events(Duration::from_secs(60), |events| {
            !of_kind(events, "recharge.succeeded", "ria").is_empty()
        })
        .await;
    let succeeded = of_kind(&events, "recharge.succeeded", "ria");
    assert_eq!(succeeded.len(), 1, "{events:#?}");
    assert_eq!(succeeded[0]["data"]["amount"], 2000);
    assert_eq!(succeeded[0]["data"]["rechargeId"], "rc1");
    let state = stored(&app, "ria").await.state;
    assert!(state.in_flight.is_none() && state.started == 1, "{state:?}");
    // The stream hands an old record over again (a balance of 2.50, from before the credits
    // landed): no second charge, since a charge is decided on the balance committed now.
    hand_over_balance(&app, "ria", 250, "old-record").await;
    hand_over_balance(&app, "ria", 250, "old-record").await;
    assert_eq!(charges(&app).await.len(), 1, "no second charge");
    assert_eq!(stored(&app, "ria").await.state.started, 1);
    // Stripe's retry of the paid webhook credits nothing twice.
    redeliver_paid(&app, "ria").await;
    assert_eq!(app.balance("ria").await, 22.5);
    assert_eq!(
        view(&app, "ria").await["lastRecharge"]["status"],
        "succeeded"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_card_declined_three_times_turns_auto_recharge_off_and_no_fourth_charge_starts() {
    let app = offering(10).await;
    turned_on(&app, "dee", DECLINED_AT_CHARGE, 6.0, 20.0).await;
    for attempt in 1..=3u32 {
        spend(&app, "dee", 1.5, &format!("dee-{attempt}")).await;
        let failed = eventually(60, || async {
            (stored(&app, "dee").await.state.failures_in_a_row == attempt).then_some(())
        })
        .await;
        assert!(
            failed.is_some(),
            "attempt {attempt}: {:?}",
            stored(&app, "dee").await.state
        );
    }
    let state = stored(&app, "dee").await.state;
    assert_eq!(
        state.disabled,
        Some(coffer::domain::recharge::Disabled::ByFailures)
    );
    assert_eq!(charges(&app).await.len(), 3);
    // More spends and the stream handing balances over: nothing starts.
    spend(&app, "dee", 0.1, "dee-4").await;
    hand_over_balance(&app, "dee", 1, "after-disabled").await;
    assert_eq!(charges(&app).await.len(), 3, "no fourth charge");
    assert_eq!(app.balance("dee").await, 1.4, "nothing credited");
    let events = app
        .billing_events(Duration::from_secs(60), |events| {
            of_kind(events, "recharge.failed", "dee").len() >= 3
                && !of_kind(events, "recharge.disabled", "dee").is_empty()
        })
        .await;
    let failed = of_kind(&events, "recharge.failed", "dee");
    assert_eq!(failed.len(), 3, "{events:#?}");
    assert!(failed.iter().all(|e| e["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.to_lowercase().contains("declined"))));
    let disabled = of_kind(&events, "recharge.disabled", "dee");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["data"]["by"], "failures");
    assert!(of_kind(&events, "recharge.succeeded", "dee").is_empty());
    let seen = view(&app, "dee").await;
    assert_eq!(seen["disabledBy"], "failures");
    assert_eq!(seen["lastRecharge"]["status"], "failed");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_card_asking_for_authentication_says_so_with_the_secret_for_the_user_only_and_is_credited_once_confirmed_even_after_turning_off(
) {
    let app = offering(3).await;
    turned_on(&app, "tom", THREE_D_SECURE, 6.0, 20.0).await;
    spend(&app, "tom", 1.5, "tom-1").await;
    let waiting = eventually(60, || async {
        let seen = view(&app, "tom").await;
        (seen["awaitingAuthentication"] == true).then_some(seen)
    })
    .await
    .expect("action required");
    let asked = &waiting["authentication"];
    let intent = asked["paymentIntentId"]
        .as_str()
        .expect("intent")
        .to_owned();
    let secret = asked["clientSecret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with(&intent), "{asked}");
    assert!(asked["paymentMethodId"]
        .as_str()
        .is_some_and(|p| p.starts_with("pm_")));
    let events = app
        .billing_events(Duration::from_secs(60), |events| {
            !of_kind(events, "recharge.action_required", "tom").is_empty()
        })
        .await;
    let action = of_kind(&events, "recharge.action_required", "tom");
    assert_eq!(action.len(), 1, "{events:#?}");
    assert_eq!(action[0]["data"]["clientSecret"], secret.as_str());
    // Nothing new starts while it waits, whatever is spent.
    spend(&app, "tom", 0.5, "tom-2").await;
    hand_over_balance(&app, "tom", 400, "while-waiting").await;
    assert_eq!(charges(&app).await.len(), 1);
    // The user turns auto-recharge off meanwhile: no new charge ever, and the one waiting is
    // still theirs to complete.
    let off = put(
        &app,
        "tom",
        json!({"enabled": false, "threshold": 5, "amount": 20}),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.body);
    hand_over_balance(&app, "tom", 400, "after-off").await;
    // The user authenticates as Stripe.js does on the storefront (localstripe's 3-D Secure).
    let done = app
        .http
        .post(format!(
            "{}/v1/payment_intents/{intent}/_authenticate?success=true",
            app.stripe_base
        ))
        .json(&json!({"key": "pk_test_coffer_local", "client_secret": secret}))
        .send()
        .await
        .expect("authenticate at localstripe");
    assert_eq!(done.status(), 200);
    let landed = settle(
        || async { (app.balance("tom").await == 24.0).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(landed.is_some(), "balance {}", app.balance("tom").await);
    app.redeliver_intent_event("payment_intent.succeeded", &intent)
        .await;
    assert_eq!(app.balance("tom").await, 24.0, "credited once");
    assert_eq!(charges(&app).await.len(), 1, "never started again");
    let seen = eventually(30, || async {
        let seen = view(&app, "tom").await;
        (seen["lastRecharge"]["status"] == "succeeded").then_some(seen)
    })
    .await
    .expect("settled");
    assert_eq!(seen["disabledBy"], "user");
    assert!(seen.get("authentication").is_none());
    hand_over_balance(&app, "tom", 100, "after-paid").await;
    assert_eq!(charges(&app).await.len(), 1, "off means off");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_projects_daily_cap_holds() {
    let app = offering(2).await;
    // A recharge of 1.00 leaves the balance below 5.00: each one paid starts the next, until
    // the day's two.
    turned_on(&app, "cap", GOOD_CARD, 2.0, 1.0).await;
    spend(&app, "cap", 0.1, "cap-1").await;
    let landed = settle(
        || async { (app.balance("cap").await == 3.9).then_some(()) },
        redeliver_paid(&app, "cap"),
    )
    .await;
    assert!(landed.is_some(), "{}", app.balance("cap").await);
    let settled = eventually(30, || async {
        let state = stored(&app, "cap").await.state;
        (state.in_flight.is_none() && state.started == 2).then_some(())
    })
    .await;
    assert!(settled.is_some(), "{:?}", stored(&app, "cap").await.state);
    spend(&app, "cap", 0.1, "cap-3").await;
    hand_over_balance(&app, "cap", 380, "third").await;
    assert_eq!(charges(&app).await.len(), 2, "two a day");
    let state = stored(&app, "cap").await.state;
    assert_eq!((state.started, state.started_today), (2, 2));
    assert!(
        state.disabled.is_none(),
        "the cap pauses, it does not turn off"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn stripe_charging_and_the_answer_never_reaching_coffer_is_the_same_charge_when_retried() {
    let app = offering(3).await;
    turned_on(&app, "lou", GOOD_CARD, 6.0, 20.0).await;
    // Stripe takes the off-session confirmation, and its answer is lost (every try of it).
    let lose = app
        .http
        .post(format!("{}/_double/lose-answers", app.double_base))
        .form(&[("path_suffix", "/confirm"), ("count", "100")])
        .send()
        .await
        .expect("the double answers");
    assert_eq!(lose.status(), 200);
    spend(&app, "lou", 1.5, "lou-1").await;
    // Stripe is asked, charges, and Coffer never hears: the stream's deliveries of that balance
    // fail (and are retried), and the recharge stays as created, not known to be taken.
    let intent = eventually(60, || async { charges(&app).await.into_iter().next() })
        .await
        .expect("the charge was asked for");
    let charged = eventually(30, || async {
        (app.stripe_intent(&intent).await["status"] == "succeeded").then_some(())
    })
    .await;
    assert!(charged.is_some(), "Stripe charged");
    app.injected.fetch_add(1, Ordering::SeqCst);
    let flight = stored(&app, "lou")
        .await
        .state
        .in_flight
        .expect("in flight");
    assert_eq!(flight.intent.as_deref(), Some(intent.as_str()));
    assert!(!flight.launched, "Coffer never heard the answer");
    // The answers come through again, and the stream hands the record over again: the same
    // intent, confirmed with the same key, is the same charge.
    let heal = app
        .http
        .post(format!("{}/_double/lose-answers", app.double_base))
        .form(&[("path_suffix", "/confirm"), ("count", "0")])
        .send()
        .await
        .expect("the double answers");
    assert_eq!(heal.status(), 200);
    hand_over_balance(&app, "lou", 450, "retried").await;
    let landed = settle(
        || async { (app.balance("lou").await == 24.5).then_some(()) },
        app.redeliver_intent_event("payment_intent.succeeded", &intent),
    )
    .await;
    assert!(landed.is_some(), "balance {}", app.balance("lou").await);
    assert_eq!(charges(&app).await, HashSet::from([intent.clone()]));
    app.redeliver_intent_event("payment_intent.succeeded", &intent)
        .await;
    assert_eq!(app.balance("lou").await, 24.5, "credited once");
    app.assert_invariants().await;
}
