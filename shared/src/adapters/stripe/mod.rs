//! The Stripe adapter: the only module that talks to Stripe. Requests are built with
//! async-stripe's typed builders and their responses read into small structs of the fields Coffer
//! uses, so that older API versions (and localstripe) that omit fields still work.

mod billing;
mod cards;
mod client;
mod raw;
pub mod webhook;

pub use billing::{
    CheckoutItem, CheckoutSession, Customer, Invoice, MeterEventOut, MeterSent, PriceChange,
    Session, Subscription, META_ACCOUNT, META_PLAN, META_SCOPE, META_TRIAL,
};
pub use cards::{OffSession, SetupIntent};
pub use raw::{valid_api_version, EphemeralKey};

use std::collections::HashMap;
use std::time::Duration;

use client::{CallError, Client};
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::balance::RetrieveForMyAccountBalance;
use stripe_core::payment_intent::{CreatePaymentIntent, ListPaymentIntent, RetrievePaymentIntent};
use stripe_types::Currency as StripeCurrency;

use crate::domain::money::Currency;

/// Metadata keys Coffer writes on every PaymentIntent it creates.
pub const META_USER: &str = "coffer_user_id";
pub const META_PACKAGE: &str = "coffer_package_id";
pub const META_CREDITS: &str = "coffer_credits";
/// On a tier purchase: the plan it buys.
pub const META_TIER: &str = "coffer_tier";
/// On an auto-recharge's payment: the account's recharge id.
pub const META_RECHARGE: &str = "coffer_recharge";

/// Time allowed for one Stripe attempt.
pub const STRIPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one Stripe call, its retries included: no attempt starts after it. With
/// the SDK's operation timeout (`app::sdk_timeouts`) it fits the functions' timeout, which
/// fits API Gateway's 30 s (docs/operations.md, Timeouts; checked by
/// scripts/check-deploy-settings.py).
pub const STRIPE_CALL_BUDGET: Duration = Duration::from_secs(12);

/// The fields of a PaymentIntent that Coffer reads.
#[derive(Debug, miniserde::Deserialize)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: Option<String>,
    pub client_secret: Option<String>,
    pub metadata: Option<HashMap<String, String>>,
    pub created: Option<i64>,
    /// The card it charges (its id).
    pub payment_method: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_payment_error: Option<PaymentError>,
}

/// Stripe's account of a failed payment attempt.
#[derive(Debug, Clone, miniserde::Deserialize)]
pub struct PaymentError {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One page of PaymentIntents.
#[derive(Debug, miniserde::Deserialize)]
pub struct IntentPage {
    pub data: Vec<Intent>,
    pub has_more: bool,
}

/// What Coffer asks Stripe to charge.
pub struct NewIntent<'a> {
    pub amount: i64,
    pub currency: &'a Currency,
    pub metadata: HashMap<String, String>,
    pub payment_method: Option<&'a str>,
    /// The customer it is for (PaymentSheet purchases).
    pub customer: Option<&'a str>,
}

/// The Stripe API when no base URL is configured.
pub const STRIPE_API: &str = "https://api.stripe.com";

/// A Stripe client pointed at Stripe or at a configured base URL (localstripe). Building one
/// costs nothing: every client sends over the `App`'s one HTTP client.
#[derive(Clone)]
pub struct StripeApi {
    client: Client,
}

impl StripeApi {
    /// A client sending over `http` (the `App`'s).
    pub fn new(
        http: &crate::adapters::net::Http,
        secret_key: &str,
        api_base: Option<&str>,
    ) -> Result<Self, StripeFailure> {
        let client = Client::new(
            http.clone(),
            secret_key,
            api_base.unwrap_or(STRIPE_API),
            STRIPE_TIMEOUT,
        )
        .map_err(map_error)?;
        Ok(Self { client })
    }

    /// Whether Stripe refused this client's key (401): a rolled or revoked key.
    pub fn key_refused(&self) -> bool {
        self.client.key_refused()
    }

    /// The base URL calls go to (`https://api.stripe.com` unless configured).
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// Creates a PaymentIntent. The idempotency key makes a retried call return the same intent.
    pub async fn create_intent(
        &self,
        intent: NewIntent<'_>,
        idempotency_key: &str,
    ) -> Result<Intent, StripeFailure> {
        let currency: StripeCurrency = intent.currency.as_str().parse().map_err(|_| {
            StripeFailure::Config(format!("unsupported currency {}", intent.currency))
        })?;
        let mut request =
            CreatePaymentIntent::new(intent.amount, currency).metadata(intent.metadata);
        if let Some(method) = intent.payment_method {
            request = request.payment_method(method);
        }
        if let Some(customer) = intent.customer {
            request = request.customer(customer);
        }
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|_| StripeFailure::Config("invalid idempotency key".into()))?;
        request
            .build()
            .customize::<Intent>()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(map_error)
    }

    /// Reads a PaymentIntent back (used to answer a replayed create with the same intent).
    pub async fn retrieve_intent(&self, id: &str) -> Result<Intent, StripeFailure> {
        RetrievePaymentIntent::new(id)
            .build()
            .call::<Intent>(self, Resend::Retries(2))
            .await
    }
}

impl StripeApi {
    /// Asks Stripe whether this client's key works: one balance read, sent once. A restricted
    /// key without the balance permission (403) did authenticate, so it counts as valid.
    pub async fn check_key(&self) -> Result<KeyCheck, StripeFailure> {
        let result = RetrieveForMyAccountBalance::new()
            .build()
            .customize::<BalanceCheck>()
            .request_strategy(RequestStrategy::Once)
            .send(&self.client)
            .await;
        match result {
            Ok(BalanceCheck {}) => Ok(KeyCheck::Valid),
            Err(CallError::Stripe(_, 401)) => Ok(KeyCheck::Invalid),
            Err(CallError::Stripe(_, 403)) => Ok(KeyCheck::Valid),
            Err(other) => Err(map_error(other)),
        }
    }

    /// One page of the PaymentIntents created in `[from, to)` (Unix seconds), newest first,
    /// after `starting_after` if given.
    pub async fn list_intents(
        &self,
        from: i64,
        to: i64,
        starting_after: Option<&str>,
    ) -> Result<IntentPage, StripeFailure> {
        let created = stripe_types::RangeBoundsTs {
            gte: Some(from),
            lt: Some(to),
            ..Default::default()
        };
        let mut request = ListPaymentIntent::new()
            .created(stripe_types::RangeQueryTs::Bounds(created))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        request
            .build()
            .call::<IntentPage>(self, Resend::Retries(2))
            .await
    }
}

/// How a Stripe request may be sent again.
#[derive(Clone, Copy)]
pub(super) enum Resend<'a> {
    /// A read, or a write that changes nothing if made twice: up to this many retries.
    Retries(u32),
    /// A write that must happen once: retried with this idempotency key, which Stripe answers
    /// with the first result.
    Keyed(&'a str),
}

/// The one way a request built with async-stripe's builders is sent: over Coffer's client, with
/// its resend rule, its answer read into Coffer's own tolerant type, its failure mapped.
pub(super) trait Call {
    async fn call<T: miniserde::Deserialize>(
        self,
        api: &StripeApi,
        resend: Resend<'_>,
    ) -> Result<T, StripeFailure>;

    /// The same, with the failure as the client saw it (for a caller that reads its status).
    async fn call_raw<T: miniserde::Deserialize>(
        self,
        api: &StripeApi,
        resend: Resend<'_>,
    ) -> Result<Result<T, CallError>, StripeFailure>;
}

impl Call for stripe_client_core::RequestBuilder {
    async fn call<T: miniserde::Deserialize>(
        self,
        api: &StripeApi,
        resend: Resend<'_>,
    ) -> Result<T, StripeFailure> {
        self.call_raw(api, resend).await?.map_err(map_error)
    }

    async fn call_raw<T: miniserde::Deserialize>(
        self,
        api: &StripeApi,
        resend: Resend<'_>,
    ) -> Result<Result<T, CallError>, StripeFailure> {
        let strategy = match resend {
            Resend::Retries(n) => RequestStrategy::Retry(n),
            Resend::Keyed(text) => RequestStrategy::Idempotent(billing::key(text)?),
        };
        Ok(self
            .customize::<T>()
            .request_strategy(strategy)
            .send(&api.client)
            .await)
    }
}

/// A balance read only tells whether the key works: none of its fields is needed.
#[derive(Debug, miniserde::Deserialize)]
struct BalanceCheck {}

/// What Stripe said of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// Stripe accepted it.
    Valid,
    /// Stripe refused it (401). Stripe's own sentence is not kept: it may quote part of the key.
    Invalid,
}

/// Why a Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeFailure {
    /// The card was declined (Stripe's 402): the message is for the user.
    #[error("card declined: {0}")]
    CardDeclined(String),
    /// Stripe answered with an error, could not be reached, timed out or answered nonsense.
    #[error("stripe failed: {0}")]
    Upstream(String),
    /// Stripe has no such object (404) in this account and mode.
    #[error("stripe has no such object: {0}")]
    Missing(String),
    /// Stripe refused the request as made (a 400: the object's state, a parameter, an
    /// idempotency key used with other parameters); asking again changes nothing.
    #[error("stripe refused the request: {0}")]
    Refused(String),
    /// Coffer built a request it should not have.
    #[error("stripe request could not be made: {0}")]
    Config(String),
}

/// Card errors (402) are the user's to read; everything else is Stripe's failure.
pub(crate) fn map_error(err: CallError) -> StripeFailure {
    match err {
        CallError::Stripe(details, 402) => StripeFailure::CardDeclined(
            details
                .message
                .clone()
                .unwrap_or_else(|| "The card was declined.".into()),
        ),
        CallError::Stripe(details, 404) => StripeFailure::Missing(
            details
                .message
                .clone()
                .unwrap_or_else(|| "not found".into()),
        ),
        CallError::Stripe(details, 400) => StripeFailure::Refused(
            details
                .message
                .clone()
                .unwrap_or_else(|| "the request was refused".into()),
        ),
        CallError::Stripe(details, status) => StripeFailure::Upstream(format!(
            "stripe answered {status}: {}",
            details.message.as_deref().unwrap_or("no message")
        )),
        CallError::Unreadable(msg) => {
            StripeFailure::Upstream(format!("unreadable Stripe response: {msg}"))
        }
        CallError::Unreachable(msg) => {
            StripeFailure::Upstream(format!("stripe unreachable: {msg}"))
        }
        CallError::Timeout => StripeFailure::Upstream("stripe timed out".into()),
        CallError::Request(msg) => StripeFailure::Config(msg),
    }
}
