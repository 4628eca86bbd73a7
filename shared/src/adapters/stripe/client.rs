//! Coffer's Stripe client: sends the requests async-stripe's typed builders describe over the
//! function's one HTTP client (`adapters::net`), so Stripe calls share its TLS configuration and
//! keep their connections alive between calls and invocations.

use std::fmt::Display;
use std::time::Duration;

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::Method;
use http_body_util::BodyExt;
use secrecy::{ExposeSecret, SecretString};
use stripe_client_core::{
    CustomizedStripeRequest, Outcome, RequestStrategy, StripeClient, StripeClientErr, StripeMethod,
};

use crate::adapters::net;
use crate::http::error_chain;

/// The fields of Stripe's error object that Coffer reads. (Not `stripe_shared::Error`: that one
/// carries the whole PaymentIntent, SetupIntent, PaymentMethod and source models, whose
/// deserializers would add about 2 MB to every function that calls Stripe.)
#[derive(Debug, miniserde::Deserialize)]
pub struct StripeErrorDetails {
    pub message: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct ErrorBody {
    error: StripeErrorDetails,
}

/// Why a call failed, before it is turned into a `StripeFailure`.
#[derive(Debug)]
pub enum CallError {
    /// Stripe answered with this status and error object.
    Stripe(Box<StripeErrorDetails>, u16),
    /// The answer could not be read.
    Unreadable(String),
    /// Stripe could not be reached, or the connection broke.
    Unreachable(String),
    /// No answer within the time allowed.
    Timeout,
    /// The request could not be built.
    Request(String),
}

impl StripeClientErr for CallError {
    fn deserialize_err(msg: impl Display) -> Self {
        Self::Unreadable(msg.to_string())
    }
}

/// A key and a base URL (Stripe, or localstripe); cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: net::Http,
    base: String,
    secret: SecretString,
    timeout: Duration,
}

impl Client {
    /// `base` without a trailing slash, e.g. `https://api.stripe.com`.
    pub fn new(http: net::Http, secret_key: &str, base: &str, timeout: Duration) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret: SecretString::from(secret_key.to_owned()),
            timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The `Authorization` header, marked sensitive so that no debug output shows it.
    pub(super) fn authorization(&self) -> Result<HeaderValue, CallError> {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.secret.expose_secret()))
            .map_err(|_| CallError::Request("the Stripe key is not a valid header".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// One request, its answer read whole: (status, `Stripe-Should-Retry`, body).
    pub(super) async fn send_once(
        &self,
        request: http::Request<SdkBody>,
        timeout: Duration,
    ) -> Result<(u16, Option<bool>, Bytes), CallError> {
        let attempt = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("stripe-should-retry")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Unreachable(format!("answer cut: {}", error_chain(&e))))?
                .to_bytes();
            Ok((status, retry, body))
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| CallError::Timeout)?
    }
}

impl StripeClient for Client {
    type Err = CallError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, CallError> {
        let (request, config) = request.into_pieces();
        if config.account_id.is_some() {
            // Coffer sends no `Stripe-Account` header: refuse rather than act on the platform.
            return Err(CallError::Request(
                "connected accounts are not supported".into(),
            ));
        }
        let strategy = config.request_strategy.unwrap_or(RequestStrategy::Once);
        let timeout = config.timeout.unwrap_or(self.timeout);
        let mut uri = format!("{}/v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match request.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let body = request.body.map(Bytes::from);
        // The same key on every attempt, so that a retried create is applied once.
        let key = strategy.get_key();
        let authorization = self.authorization()?;
        // A request Stripe applies at most once (a key) or that changes nothing (GET) may be
        // sent again at once when its connection broke: a kept-alive connection the server
        // closed while the function was frozen fails that way, before Stripe saw anything.
        let resendable = key.is_some() || matches!(method, Method::GET);
        let mut resent = false;
        let (mut tries, mut status, mut should_retry) = (0u32, None, None);
        let mut last = CallError::Request("no attempt was allowed".into());
        loop {
            match strategy.test(status, should_retry, tries) {
                Outcome::Stop => return Err(last),
                Outcome::Continue(Some(delay)) => tokio::time::sleep(delay).await,
                Outcome::Continue(None) => {}
            }
            tries += 1;
            let mut builder = http::Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(AUTHORIZATION, authorization.clone())
                .header(USER_AGENT, "coffer")
                .header("stripe-version", stripe_client_core::VERSION.as_str());
            if let Some(key) = &key {
                builder = builder.header("idempotency-key", key.as_str());
            }
            if body.is_some() {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            }
            let request = builder
                .body(body.clone().map_or_else(SdkBody::empty, SdkBody::from))
                .map_err(|e| CallError::Request(e.to_string()))?;
            match self.send_once(request, timeout).await {
                Ok((code, _, bytes)) if (200..300).contains(&code) => return Ok(bytes),
                Ok((code, retry, bytes)) => {
                    status = Some(code);
                    should_retry = retry;
                    last = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|text| miniserde::json::from_str::<ErrorBody>(text).ok())
                        .map_or_else(
                            || {
                                CallError::Unreadable(format!(
                                    "status {code} without an error object"
                                ))
                            },
                            |body| CallError::Stripe(Box::new(body.error), code),
                        );
                }
                Err(CallError::Unreachable(cause)) if resendable && !resent => {
                    resent = true;
                    // Not counted as an attempt of the request strategy.
                    tries -= 1;
                    last = CallError::Unreachable(cause);
                }
                Err(err) => last = err,
            }
        }
    }
}
