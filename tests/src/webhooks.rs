//! Stripe events for a test app: built around an object, signed with its secret and delivered
//! as Stripe would, once, again or many times at once.

use std::sync::atomic::Ordering;

use coffer_dev::setup;
use serde_json::{json, Value};

use crate::http::{read, Reply};
use crate::test_app::TestApp;
use crate::wait::now;

impl TestApp {
    /// Registers a webhook with the localstripe at `base` (muted when the test ends).
    pub async fn register_webhook_at(&self, base: &str, id: &str, url: &str, secret: &str) {
        setup::register_webhook(base, id, url, secret)
            .await
            .expect("register a webhook with localstripe");
        if let Ok(mut webhooks) = self.webhooks.lock() {
            webhooks.push((base.to_owned(), id.to_owned()));
        }
    }

    /// Sends a webhook body with the given `Stripe-Signature` (or none).
    pub async fn deliver(&self, body: &str, signature: Option<&str>) -> Reply {
        self.delivered.fetch_add(1, Ordering::SeqCst);
        let mut req = self
            .http
            .post(format!("{}/api/stripe/webhook", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            req = req.header("stripe-signature", signature);
        }
        read(req.send().await.expect("webhook POST")).await
    }

    /// Delivers the same signed body `count` times at once; the statuses, in any order.
    pub async fn deliver_concurrently(
        &self,
        body: &str,
        signature: &str,
        count: usize,
    ) -> Vec<u16> {
        self.delivered.fetch_add(count, Ordering::SeqCst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let request = self
                .http
                .post(format!("{}/api/stripe/webhook", self.base_url))
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(body.to_owned());
            tasks.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        }
        let mut statuses = Vec::new();
        while let Some(result) = tasks.join_next().await {
            statuses.push(result.expect("task").expect("delivery"));
        }
        statuses
    }

    /// Counts a delivery made by a test's own request builder (for the closing report).
    pub fn count_delivery(&self) {
        self.delivered.fetch_add(1, Ordering::SeqCst);
    }

    /// Signs `body` now with this app's webhook secret, as Stripe would.
    pub fn sign(&self, body: &str) -> String {
        coffer::webhook::sign(body.as_bytes(), &self.webhook_secret, now())
    }

    /// A `type` event wrapping the PaymentIntent `intent` (as localstripe or Stripe sends it).
    pub fn event(&self, kind: &str, intent: &Value) -> String {
        self.event_at(kind, intent, now())
    }

    /// The same, created at Stripe at `created` (Unix seconds): an older event arriving late.
    pub fn event_at(&self, kind: &str, intent: &Value, created: i64) -> String {
        json!({
            "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
            "object": "event",
            "type": kind,
            "created": created,
            "api_version": "2017-08-15",
            "livemode": false,
            "data": { "object": intent },
        })
        .to_string()
    }

    /// Buys `package` for `user` by delivering a signed `payment_intent.succeeded` built from
    /// localstripe's own intent (no card needed). Returns the intent id.
    pub async fn bought(&self, user: &str, package: &str) -> String {
        let intent_id = self.create_intent(user, package).await;
        let intent = self.stripe_intent(&intent_id).await;
        let reply = self
            .deliver_event("payment_intent.succeeded", &intent)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        intent_id
    }

    /// Delivers a signed event of `kind` around `object`; the reply.
    pub async fn deliver_event(&self, kind: &str, object: &Value) -> Reply {
        let event = self.event(kind, object);
        self.deliver_signed(&event).await
    }

    /// Stripe's retry of localstripe's event about a default-project intent: the intent as
    /// localstripe holds it now, in a signed event of `kind`.
    pub async fn redeliver_intent_event(&self, kind: &str, intent_id: &str) {
        let intent = self.stripe_intent(intent_id).await;
        let reply = self.deliver_event(kind, &intent).await;
        assert_eq!(reply.status, 200, "redelivered {kind}: {}", reply.body);
    }

    /// Delivers an event body signed now (a first delivery or Stripe's retry of it).
    pub async fn deliver_signed(&self, event: &str) -> Reply {
        self.deliver(event, Some(&self.sign(event))).await
    }
}
