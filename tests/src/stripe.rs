//! Calls to localstripe, as Stripe.js or the Dashboard would make them: form posts, intents,
//! and test cards attached and paid with.

use serde_json::Value;

use crate::http::{read, Reply};
use crate::test_app::TestApp;

impl TestApp {
    pub async fn stripe_post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.stripe_post_at(&self.stripe_base, &self.stripe_key, path, form)
            .await
    }

    /// A form POST to the localstripe at `base` with `key`.
    pub async fn stripe_post_at(
        &self,
        base: &str,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        read(req.send().await.expect("localstripe POST")).await
    }

    /// The PaymentIntent as localstripe holds it.
    pub async fn stripe_intent(&self, id: &str) -> Value {
        let req = self
            .http
            .get(format!("{}/v1/payment_intents/{id}", self.stripe_base))
            .bearer_auth(&self.stripe_key);
        read(req.send().await.expect("localstripe GET")).await.body
    }

    /// Pays an intent with a test card, as the frontend would with Stripe.js: creates the
    /// payment method, attaches it, confirms. Returns the confirm reply.
    pub async fn pay_with_card(&self, intent_id: &str, card: &str) -> Reply {
        self.pay_with_card_at(&self.stripe_base, &self.stripe_key, intent_id, card)
            .await
    }

    /// A card payment method at the localstripe at `base`; its id.
    pub async fn card_method_at(&self, base: &str, key: &str, card: &str) -> String {
        let pm = self
            .stripe_post_at(
                base,
                key,
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", card),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        assert_eq!(pm.status, 200, "payment method: {}", pm.body);
        pm.body["id"].as_str().expect("pm id").to_owned()
    }

    /// `card` as the default payment method of `customer` (what a card form does before a
    /// subscription is created).
    pub async fn default_card(&self, customer: &str, card: &str) {
        let pm = self
            .card_method_at(&self.stripe_base, &self.stripe_key, card)
            .await;
        let attach = self
            .stripe_post(
                &format!("/v1/payment_methods/{pm}/attach"),
                &[("customer", customer)],
            )
            .await;
        assert_eq!(attach.status, 200, "attach: {}", attach.body);
        let default = self
            .stripe_post(
                &format!("/v1/customers/{customer}"),
                &[("invoice_settings[default_payment_method]", &pm)],
            )
            .await;
        assert_eq!(default.status, 200, "default card: {}", default.body);
    }

    /// The same at the localstripe at `base`, with `key`.
    pub async fn pay_with_card_at(
        &self,
        base: &str,
        key: &str,
        intent_id: &str,
        card: &str,
    ) -> Reply {
        let pm_id = self.card_method_at(base, key, card).await;
        let attach = self
            .stripe_post_at(
                base,
                key,
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", &pm_id)],
            )
            .await;
        assert_eq!(attach.status, 200, "attach: {}", attach.body);
        self.stripe_post_at(
            base,
            key,
            &format!("/v1/payment_intents/{intent_id}/confirm"),
            &[],
        )
        .await
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
