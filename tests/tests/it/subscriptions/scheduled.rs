//! The scheduled job: subscriptions and invoices whose events were missed or failed, read and
//! applied again.

use integration_tests::{spawn_app_with, SecretSetup, TestApp, STRIPE_KEY};

use super::{my_subscription, paid_starter_invoice, stripe_get, subscribe_active};

#[tokio::test]
async fn the_scheduled_job_reads_again_a_subscription_whose_end_was_missed() {
    // No webhook from localstripe: Stripe's cancellation never reaches Coffer by an event.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        ..SecretSetup::default()
    })
    .await;
    let subscription = subscribe_active(&app, "ruth", "starter").await;
    cancel_at_stripe(&app, &subscription).await;
    // The stored period has just ended (its renewal or end was never read).
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let account = coffer::domain::records::UserId::parse("ruth").expect("account");
    let record = store.subscription_record(&account).await.expect("read");
    let mut state = record.state.clone().expect("stored");
    state.current_period_end = integration_tests::now() - 60;
    assert!(store
        .write_subscription(&account, record.version, Some(&state), None)
        .await
        .expect("write"));
    assert_eq!(
        my_subscription(&app, "ruth").await["planId"],
        "starter",
        "within the grace"
    );

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
    assert_eq!(report.subscriptions_reread, 1, "{report:?}");
    let now = my_subscription(&app, "ruth").await;
    assert_eq!(now["planId"], "free", "{now}");
    assert_eq!(now["status"], "canceled", "{now}");
    // Nothing live is left to read again.
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
    assert_eq!(again.subscriptions_reread, 0, "{again:?}");
}

#[tokio::test]
async fn the_scheduled_job_reads_again_a_subscription_whose_event_failed_and_rests_one_stripe_lost()
{
    // No webhook from localstripe: the test delivers the one event itself, while Stripe is cut.
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        proxied: true,
        ..SecretSetup::default()
    })
    .await;
    let subscription = subscribe_active(&app, "rita", "starter").await;
    cancel_at_stripe(&app, &subscription).await;
    let sub = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let proxies = app.proxies.as_ref().expect("proxied");
    proxies.stripe.set(integration_tests::proxy::Mode::Refuse);
    let failed = app
        .deliver_event("customer.subscription.deleted", &sub)
        .await;
    proxies.stripe.set(integration_tests::proxy::Mode::Pass);
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(my_subscription(&app, "rita").await["planId"], "starter");

    // Its period is far from ending, yet the job reads it again: its last event failed.
    let reconcile = || async {
        coffer::calls::as_function(
            "reconcile",
            coffer::services::reconcile::reconcile(
                &app.app.app,
                3600,
                coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
            ),
        )
        .await
        .expect("reconcile")
    };
    assert_eq!(reconcile().await.subscriptions_reread, 1);
    let now = my_subscription(&app, "rita").await;
    assert_eq!(now["status"], "canceled", "{now}");
    assert_eq!(now["planId"], "free", "{now}");
    assert_eq!(reconcile().await.subscriptions_reread, 0, "read once");

    // A live state whose subscription Stripe does not have: left as it is (a key of another
    // account must not end every subscription), and not read again every hour.
    let store = app.app.app.store_for(&app.app.app.default_scope());
    let rita = coffer::domain::records::UserId::parse("rita").expect("account");
    let mut lost = store
        .subscription_record(&rita)
        .await
        .expect("read")
        .state
        .expect("stored");
    lost.subscription_id = format!("sub_gone{}", app.table.replace('-', ""));
    lost.status = coffer::domain::subscriptions::SubscriptionStatus::Active;
    lost.current_period_end = integration_tests::now() - 60;
    let sid = coffer::domain::records::UserId::parse("sid").expect("account");
    let record = store.subscription_record(&sid).await.expect("read");
    assert!(store
        .write_subscription(&sid, record.version, Some(&lost), None)
        .await
        .expect("write"));
    assert_eq!(reconcile().await.subscriptions_reread, 1);
    let now = my_subscription(&app, "sid").await;
    assert_eq!(now["status"], "active", "left as it is: {now}");
    assert_eq!(
        reconcile().await.subscriptions_reread,
        0,
        "not read every hour"
    );
}

#[tokio::test]
async fn the_scheduled_job_applies_again_an_invoice_whose_event_failed() {
    let app = spawn_app_with(SecretSetup {
        no_webhook: true,
        proxied: true,
        ..SecretSetup::default()
    })
    .await;
    let (_, invoice) = paid_starter_invoice(&app, "ivy").await;
    let proxies = app.proxies.as_ref().expect("proxied");
    proxies.stripe.set(integration_tests::proxy::Mode::Refuse);
    let failed = app.deliver_event("invoice.paid", &invoice).await;
    proxies.stripe.set(integration_tests::proxy::Mode::Pass);
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(app.balance("ivy").await, 0.0);
    // Stripe gave up on the event: the scheduled job applies it, once.
    for _ in 0..2 {
        coffer::calls::as_function(
            "reconcile",
            coffer::services::reconcile::reconcile(
                &app.app.app,
                3600,
                coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(120)),
            ),
        )
        .await
        .expect("reconcile");
        assert_eq!(app.balance("ivy").await, 5.0, "the included credits, once");
    }
    app.assert_invariants().await;
}

/// Cancels a subscription at localstripe directly, as the Dashboard would (no event sent).
async fn cancel_at_stripe(app: &TestApp, subscription: &str) {
    let canceled = app
        .http
        .delete(format!(
            "{}/v1/subscriptions/{subscription}",
            app.stripe_base
        ))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("cancel at localstripe");
    assert!(canceled.status().is_success());
}
