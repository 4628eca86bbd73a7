//! Why a use case did not happen, in the use case's words. The HTTP edge gives each reason its
//! status and code (`http::ApiError`); jobs log it. Adapter errors become a reason here, once.

use crate::adapters::secrets::SecretsError;
use crate::adapters::store::StoreError;
use crate::adapters::stripe::StripeFailure;
use crate::app::ClientError;
use crate::telemetry::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// What the caller asked for is malformed or not allowed as asked: the sentence says why.
    #[error("{0}")]
    Invalid(String),
    /// The delivery is not signed by Stripe with its scope's secret, or names a scope that does
    /// not exist (answered alike, so that nobody learns which projects exist).
    #[error("invalid Stripe signature")]
    Unsigned,
    /// The caller may not act on this.
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it now (a live subscription, a key used for another request).
    #[error("{0}")]
    Conflict(String),
    #[error("not enough credits")]
    InsufficientCredits,
    /// A usage beyond the plan's allowance that no overage pays for.
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    CardDeclined(String),
    /// A Stripe key that Stripe refused.
    #[error("{0}")]
    InvalidCredentials(String),
    /// Stripe failed or answered what Coffer cannot use (the cause is for the log).
    #[error("payment provider error")]
    Stripe(String),
    /// A dependency is unreachable or busy: worth retrying (the cause is for the log).
    #[error("a dependency is unavailable")]
    Unavailable(String),
    /// Something that can only happen after something else (Stripe retries the event later).
    #[error("{0}")]
    RetryLater(String),
    /// A state Coffer should never be in (the cause is for the log).
    #[error("internal error")]
    Internal(String),
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// A short name of the reason, for logs and job answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Unsigned => "unsigned",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::InsufficientCredits => "insufficient_credits",
            Self::LimitReached(_) => "limit_reached",
            Self::CardDeclined(_) => "card_declined",
            Self::InvalidCredentials(_) => "invalid_credentials",
            Self::Stripe(_) => "stripe",
            Self::Unavailable(_) => "unavailable",
            Self::RetryLater(_) => "retry_later",
            Self::Internal(_) => "internal",
        }
    }

    /// The whole cause, for the log: the detail behind a server-side reason, or the sentence.
    pub fn cause(&self) -> String {
        match self {
            Self::Stripe(cause) | Self::Unavailable(cause) | Self::Internal(cause) => cause.clone(),
            other => other.to_string(),
        }
    }

    /// The failure is Coffer's or a dependency's, not the request's: asked again later, it may
    /// succeed (Stripe retries such an event).
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            Self::Stripe(_) | Self::Unavailable(_) | Self::RetryLater(_) | Self::Internal(_)
        )
    }
}

/// Storage: unreachable or throttled is worth retrying; a cursor Coffer did not issue is the
/// caller's mistake; anything else is Coffer's. The cause chain goes to the log only.
impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::InvalidCursor => Self::invalid("cursor is not valid."),
            StoreError::Unavailable(_) | StoreError::Contention(_) => {
                Self::Unavailable(error_chain(&err))
            }
            StoreError::Refused(_) | StoreError::Malformed(_) => Self::Internal(error_chain(&err)),
        }
    }
}

/// A card decline keeps Stripe's sentence for the user; Stripe's own failures do not.
impl From<StripeFailure> for Failure {
    fn from(err: StripeFailure) -> Self {
        match err {
            StripeFailure::CardDeclined(message) => Self::CardDeclined(message),
            StripeFailure::Upstream(_) | StripeFailure::Missing(_) | StripeFailure::Refused(_) => {
                Self::Stripe(error_chain(&err))
            }
            StripeFailure::Config(_) => Self::Internal(error_chain(&err)),
        }
    }
}

/// The delivery queue refused or could not be reached: worth trying again.
impl From<crate::adapters::queue::QueueError> for Failure {
    fn from(err: crate::adapters::queue::QueueError) -> Self {
        Self::Unavailable(error_chain(&err))
    }
}

/// A secret that cannot be read or is incomplete is a configuration or dependency problem.
impl From<SecretsError> for Failure {
    fn from(err: SecretsError) -> Self {
        Self::Unavailable(error_chain(&err))
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Secrets(err) => err.into(),
            ClientError::Stripe(err) => err.into(),
        }
    }
}
