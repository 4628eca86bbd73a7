//! Saved cards: a SetupIntent the page confirms with Stripe.js, read back before its card is
//! used, and the PaymentIntent or subscription that then uses it.

use std::collections::HashMap;

use stripe_client_core::{RequestStrategy, StripeRequest};
use stripe_core::customer::{UpdateCustomer, UpdateCustomerInvoiceSettings};
use stripe_core::payment_intent::ConfirmPaymentIntent;
use stripe_core::setup_intent::{CreateSetupIntent, RetrieveSetupIntent};

use super::billing::key;
use super::{map_error, Intent, StripeApi, StripeFailure};

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
            .customize::<SetupIntent>()
            .request_strategy(RequestStrategy::Idempotent(key(idempotency_key)?))
            .send(&self.client)
            .await
            .map_err(map_error)
    }

    pub async fn retrieve_setup_intent(&self, id: &str) -> Result<SetupIntent, StripeFailure> {
        RetrieveSetupIntent::new(id)
            .build()
            .customize::<SetupIntent>()
            .request_strategy(RequestStrategy::Retry(2))
            .send(&self.client)
            .await
            .map_err(map_error)
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
            .customize::<Intent>()
            .request_strategy(RequestStrategy::Idempotent(key(idempotency_key)?))
            .send(&self.client)
            .await
            .map_err(map_error)
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
            .customize::<IdOnly>()
            .request_strategy(RequestStrategy::Retry(2))
            .send(&self.client)
            .await
            .map(|_| ())
            .map_err(map_error)
    }
}
