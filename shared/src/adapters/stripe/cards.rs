//! Saved cards: a SetupIntent the page confirms with Stripe.js, read back before its card is
//! used, and the PaymentIntent or subscription that then uses it.

use std::collections::HashMap;

use stripe_client_core::StripeRequest;
use stripe_core::customer::{UpdateCustomer, UpdateCustomerInvoiceSettings};
use stripe_core::payment_intent::ConfirmPaymentIntent;
use stripe_core::setup_intent::{CreateSetupIntent, RetrieveSetupIntent};

use super::{Call, Intent, Resend, StripeApi, StripeFailure};

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
