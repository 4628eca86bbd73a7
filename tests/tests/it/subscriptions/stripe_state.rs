//! Subscription events end in Stripe's current state: a stale copy, events in any order, and a
//! change made in Stripe's own portal.

use integration_tests::{spawn_app, STRIPE_KEY};
use serde_json::json;

use super::{my_subscription, stripe_get, subscribe_active};

#[tokio::test]
async fn a_stale_updated_payload_does_not_change_what_is_stored() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "tara", "starter").await;
    // A stale copy claiming the subscription was canceled: Coffer re-reads it, and Stripe says
    // it is active, so nothing changes.
    let mut stale = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    stale["status"] = json!("canceled");
    stale["cancel_at_period_end"] = json!(true);
    let reply = app
        .deliver_event("customer.subscription.updated", &stale)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = my_subscription(&app, "tara").await;
    assert_eq!(now["status"], "active");
    assert_eq!(now["cancelAtPeriodEnd"], false);
    assert_eq!(now["planId"], "starter");
}

#[tokio::test]
async fn events_in_any_order_end_in_stripes_current_state() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "iris", "starter").await;
    let created_copy = stripe_get(&app, &format!("/v1/subscriptions/{subscription}")).await;
    let cancel = app
        .http
        .delete(format!(
            "{}/v1/subscriptions/{subscription}",
            app.stripe_base
        ))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("cancel at localstripe");
    assert!(cancel.status().is_success());
    let deleted_copy = json!({"id": subscription, "object": "subscription", "status": "canceled"});
    // The deletion first, then the older creation, then the deletion again.
    for (kind, object) in [
        ("customer.subscription.deleted", &deleted_copy),
        ("customer.subscription.created", &created_copy),
        ("customer.subscription.deleted", &deleted_copy),
    ] {
        let reply = app.deliver_event(kind, object).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
        let now = my_subscription(&app, "iris").await;
        assert_eq!(now["planId"], "free", "after {kind}: {now}");
    }
}

#[tokio::test]
async fn a_change_made_in_stripes_portal_shows_after_its_event() {
    let app = spawn_app().await;
    let subscription = subscribe_active(&app, "lena", "starter").await;
    // What the customer portal does: Stripe changes the subscription and sends `updated`.
    let changed = app
        .stripe_post(
            &format!("/v1/subscriptions/{subscription}"),
            &[("cancel_at_period_end", "true")],
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        my_subscription(&app, "lena").await["cancelAtPeriodEnd"],
        false,
        "not before the event"
    );
    let reply = app
        .deliver_event("customer.subscription.updated", &changed.body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = my_subscription(&app, "lena").await;
    assert_eq!(now["cancelAtPeriodEnd"], true, "{now}");
    assert_eq!(now["planId"], "starter");
}
