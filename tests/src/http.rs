//! Requests to a test app's router as its users, developers and backend make them, and their
//! replies.

use coffer_dev::token;
use serde_json::{json, Value};

use crate::settings::JWT_SECRET;
use crate::test_app::TestApp;

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    /// Fails the test at once on an answer the OpenAPI document does not describe.
    pub fn assert_described(&self) {
        let undescribed = self
            .app
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        assert!(
            undescribed.is_empty(),
            "answers the OpenAPI document does not describe:\n{}",
            undescribed.join("\n")
        );
    }

    pub fn token(&self, user: &str) -> String {
        token::issue(JWT_SECRET, user, 3600).expect("token")
    }

    /// A token of a user who belongs to `organisations`.
    pub fn member_token(&self, user: &str, organisations: &[&str]) -> String {
        token::issue_member(JWT_SECRET, user, organisations, 3600).expect("token")
    }

    /// A developer's token (the developer claim the local stack expects).
    pub fn developer_token(&self, developer: &str) -> String {
        token::issue_developer(JWT_SECRET, developer, 3600).expect("token")
    }

    /// Any request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let reply = read(req.send().await.expect("request")).await;
        self.assert_described();
        reply
    }

    pub async fn get(&self, path: &str, user: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base_url));
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        let reply = read(req.send().await.expect("GET")).await;
        self.assert_described();
        reply
    }

    pub async fn post(
        &self,
        path: &str,
        user: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let reply = read(req.send().await.expect("POST")).await;
        self.assert_described();
        reply
    }

    /// create-payment-intent for `package`; returns the PaymentIntent id.
    pub async fn create_intent(&self, user: &str, package: &str) -> String {
        let reply = self
            .post(
                "/api/stripe/create-payment-intent",
                Some(user),
                &json!({ "creditPackageId": package }).to_string(),
                &[],
            )
            .await;
        assert_eq!(reply.status, 200, "create-payment-intent: {}", reply.body);
        reply.body["data"]["paymentIntentId"]
            .as_str()
            .expect("paymentIntentId")
            .to_owned()
    }

    pub async fn balance(&self, user: &str) -> f64 {
        let reply = self.get("/api/stripe/balance", Some(user)).await;
        assert_eq!(reply.status, 200, "balance: {}", reply.body);
        reply.body["data"]["balance"]
            .as_f64()
            .expect("balance number")
    }

    /// Status of a payment in the user's history.
    pub async fn history_status(&self, user: &str, intent_id: &str) -> Option<String> {
        let reply = self
            .get("/api/stripe/payment-history?limit=100", Some(user))
            .await;
        reply.body["data"].as_array()?.iter().find_map(|p| {
            (p["id"] == intent_id).then(|| p["status"].as_str().unwrap_or_default().to_owned())
        })
    }

    /// The test project `alpha` configured in test mode by `developer` (its own localstripe).
    pub async fn configure_alpha(&self, developer: &str) {
        let keys = json!({
            "secretKey": "sk_test_alpha_0123456789abcdefwxyz",
            "publishableKey": "pk_test_alpha_0123456789abcdef",
            "webhookSecret": "whsec_alphatestSigningSecret0123456789abcdef",
        });
        let token = self.developer_token(developer);
        let configured = self
            .call(
                "PUT",
                "/api/v1/payments/stripe/projects/alpha/config?test_mode=true",
                Some(&token),
                Some(&keys),
            )
            .await;
        assert_eq!(configured.status, 200, "{}", configured.body);
    }

    /// POST /internal/credits/grants as the allowlisted backend.
    pub async fn backend_grant(&self, body: &Value) -> Reply {
        let backend = token::issue_service(JWT_SECRET, "app-backend", 300).expect("service token");
        self.call(
            "POST",
            "/internal/credits/grants",
            Some(&backend),
            Some(body),
        )
        .await
    }

    /// POST /api/credits/consume as `user`.
    pub async fn spend(&self, user: &str, amount: Value, key: &str) -> Reply {
        let body = json!({"amount": amount, "reason": "test spend", "idempotencyKey": key});
        self.post("/api/credits/consume", Some(user), &body.to_string(), &[])
            .await
    }
}

impl Reply {
    /// Fails the test unless this is a 400 whose sentence says `words` (`what`: the request, for
    /// the failure's message).
    pub fn assert_refused_saying(&self, words: &str, what: &dyn std::fmt::Display) {
        assert_eq!(self.status, 400, "{what}: {}", self.body);
        assert!(
            self.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{what}: {}",
            self.body
        );
    }
}

pub(crate) async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}
