//! Coffer's Stripe client: sends the requests async-stripe's typed builders describe over the
//! function's one HTTP client (`adapters::net`), so Stripe calls share its TLS configuration and
//! keep their connections alive between calls and invocations.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::Method;
use http_body_util::BodyExt;
use stripe_client_core::{
    CustomizedStripeRequest, Outcome, RequestStrategy, StripeClient, StripeClientErr, StripeMethod,
};

use crate::adapters::net;
use crate::telemetry::error_chain;

/// The fields of Stripe's error object that Coffer reads. (Not `stripe_shared::Error`: that one
/// carries the whole PaymentIntent, SetupIntent, PaymentMethod and source models, whose
/// deserializers would add about 4 MB to every function that calls Stripe.)
#[derive(Debug, miniserde::Deserialize)]
pub struct StripeErrorDetails {
    pub message: Option<String>,
    /// Stripe's error code (`card_declined`, `duplicate_meter_event`, …), when it gives one.
    pub code: Option<String>,
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
    /// `Bearer <key>`, built once and marked sensitive so that no debug output shows it.
    authorization: HeaderValue,
    timeout: Duration,
    /// Stripe answered 401 to this key (rolled or revoked): whoever holds the client reads the
    /// key again before using it more.
    refused: Arc<AtomicBool>,
}

/// The least time an attempt is given; a retry that would get less is not started.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

impl Client {
    /// `base` without a trailing slash, e.g. `https://api.stripe.com`. A key that cannot be
    /// sent as a header is refused here, not on the first call.
    pub fn new(
        http: net::Http,
        secret_key: &str,
        base: &str,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {secret_key}"))
            .map_err(|_| CallError::Request("the Stripe key is not a valid header".into()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            authorization,
            timeout,
            refused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether Stripe refused this client's key (401) on any call.
    pub fn key_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn authorization(&self) -> HeaderValue {
        self.authorization.clone()
    }

    /// Sends the request `make` builds and reads the answer; when `resendable` (the request
    /// carries an idempotency key, or changes nothing) and its connection broke before an
    /// answer, builds and sends it once more at once: a kept-alive connection the server closed
    /// while the function was frozen fails that way, before Stripe saw anything.
    pub(super) async fn send(
        &self,
        make: impl Fn() -> Result<http::Request<SdkBody>, CallError>,
        timeout: Duration,
        resendable: bool,
    ) -> Result<(u16, Option<bool>, Bytes), CallError> {
        let sent = match self.send_once(make()?, timeout).await {
            Err(CallError::Unreachable(_)) if resendable => self.send_once(make()?, timeout).await,
            other => other,
        };
        if matches!(sent, Ok((401, _, _))) {
            self.refused.store(true, Ordering::Relaxed);
        }
        sent
    }

    /// One request, its answer read whole: (status, `Stripe-Should-Retry`, body).
    async fn send_once(
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
        let resendable = key.is_some() || matches!(method, Method::GET);
        let make = || {
            let mut builder = http::Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(AUTHORIZATION, self.authorization())
                .header(USER_AGENT, "coffer")
                .header("stripe-version", stripe_client_core::VERSION.as_str());
            if let Some(key) = &key {
                builder = builder.header("idempotency-key", key.as_str());
            }
            if body.is_some() {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            }
            builder
                .body(body.clone().map_or_else(SdkBody::empty, SdkBody::from))
                .map_err(|e| CallError::Request(e.to_string()))
        };
        let (mut tries, mut status, mut should_retry) = (0u32, None, None);
        let mut last = CallError::Request("no attempt was allowed".into());
        let started = std::time::Instant::now();
        loop {
            match strategy.test(status, should_retry, tries) {
                Outcome::Stop => return Err(last),
                Outcome::Continue(Some(delay)) => tokio::time::sleep(delay).await,
                Outcome::Continue(None) => {}
            }
            // No attempt starts once the call's budget is spent; the last one gets what is left.
            let left = super::STRIPE_CALL_BUDGET.saturating_sub(started.elapsed());
            if tries > 0 && left < MIN_ATTEMPT {
                return Err(last);
            }
            tries += 1;
            match self
                .send(&make, timeout.min(left.max(MIN_ATTEMPT)), resendable)
                .await
            {
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
                Err(err) => last = err,
            }
        }
    }
}
