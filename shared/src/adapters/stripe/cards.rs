//! Saved cards: a SetupIntent the page confirms with Stripe.js, read back before its card is
//! used, and the PaymentIntent or subscription that then uses it.

use std::collections::HashMap;

use stripe_client_core::StripeRequest;
use stripe_core::customer::{UpdateCustomer, UpdateCustomerInvoiceSettings};
use stripe_core::payment_intent::{
    CancelPaymentIntent, ConfirmPaymentIntent, ConfirmPaymentIntentOffSession,
};
use stripe_core::setup_intent::{CreateSetupIntent, RetrieveSetupIntent};

use super::client::CallError;
use super::{map_error, Call, Intent, Resend, StripeApi, StripeFailure};

/// What Stripe answered a charge made while the user is away.
#[derive(Debug)]
pub enum OffSession {
    /// Stripe took it: succeeded or processing (the webhook tells the end).
    Taken,
    /// The bank asks the user to authenticate (`authentication_required`, or the intent waits
    /// for an action): only the user can finish it, on a page, with the intent's client secret.
    NeedsAuthentication,
    /// Declined or failed, with Stripe's sentence.
    Declined(String),
}

/// The fields of a SetupIntent that Coffer reads.
#[derive(Debug, miniserde::Deserialize)]
pub struct SetupIntent {
    pub id: String,
    pub client_secret: Option<String>,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub payment_method: Option<String>,
}

#[derive(Debug, miniserde::Deserialize)]
struct IdOnly {
    #[allow(dead_code)]
    id: String,
}

impl StripeApi {
    /// A SetupIntent for the customer: the browser confirms it with the card (Stripe.js), which
    /// saves the card on the customer without charging it.
    pub async fn create_setup_intent(
        &self,
        customer_id: &str,
        metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<SetupIntent, StripeFailure> {
        CreateSetupIntent::new()
            .customer(customer_id)
            .metadata(metadata)
            .build()
            .call::<SetupIntent>(self, Resend::Keyed(idempotency_key))
            .await
    }

    pub async fn retrieve_setup_intent(&self, id: &str) -> Result<SetupIntent, StripeFailure> {
        RetrieveSetupIntent::new(id)
            .build()
            .call::<SetupIntent>(self, Resend::Retries(2))
            .await
    }

    /// Confirms a PaymentIntent that already carries its card. A declined card is
    /// `CardDeclined` with Stripe's sentence.
    pub async fn confirm_intent(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<Intent, StripeFailure> {
        ConfirmPaymentIntent::new(id)
            .build()
            .call::<Intent>(self, Resend::Keyed(idempotency_key))
            .await
    }

    /// Confirms a PaymentIntent that carries the saved card of a user who is not there
    /// (`off_session`), once per `idempotency_key`.
    pub async fn confirm_off_session(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<OffSession, StripeFailure> {
        let answer = ConfirmPaymentIntent::new(id)
            .off_session(ConfirmPaymentIntentOffSession::Bool(true))
            .build()
            .call_raw::<Intent>(self, Resend::Keyed(idempotency_key))
            .await?;
        match answer {
            Ok(intent) if intent.status.as_deref() == Some("requires_action") => {
                Ok(OffSession::NeedsAuthentication)
            }
            Ok(intent)
                if matches!(
                    intent.status.as_deref(),
                    Some("succeeded" | "processing" | "requires_capture")
                ) =>
            {
                Ok(OffSession::Taken)
            }
            Ok(intent) => Ok(OffSession::Declined(format!(
                "The payment was not taken (status {}).",
                intent.status.as_deref().unwrap_or("unknown")
            ))),
            Err(CallError::Stripe(details, 402))
                if details.code.as_deref() == Some("authentication_required") =>
            {
                Ok(OffSession::NeedsAuthentication)
            }
            Err(CallError::Stripe(details, 402)) => Ok(OffSession::Declined(
                details
                    .message
                    .clone()
                    .unwrap_or_else(|| "The card was declined.".into()),
            )),
            Err(other) => Err(map_error(other)),
        }
    }

    /// Cancels a PaymentIntent no one will confirm (a recharge dropped before it was charged,
    /// or one the user never authenticated).
    pub async fn cancel_intent(&self, id: &str) -> Result<(), StripeFailure> {
        CancelPaymentIntent::new(id)
            .build()
            .call::<Intent>(self, Resend::Retries(2))
            .await
            .map(|_| ())
    }

    /// Makes the card the customer's default for subscriptions and invoices.
    pub async fn set_default_card(
        &self,
        customer_id: &str,
        payment_method: &str,
    ) -> Result<(), StripeFailure> {
        let mut settings = UpdateCustomerInvoiceSettings::new();
        settings.default_payment_method = Some(payment_method.to_owned());
        UpdateCustomer::new(customer_id)
            .invoice_settings(settings)
            .build()
            .call::<IdOnly>(self, Resend::Retries(2))
            .await
            .map(|_| ())
    }
}
