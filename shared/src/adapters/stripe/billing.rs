//! Customers, subscriptions, invoices, Checkout and the customer portal. Every response is read
//! into a small tolerant struct: localstripe (API 2017-08-15) and Stripe's current API put the
//! same facts in different places (`plan` or `price`; the period end on the subscription or on
//! its item; the invoice's PaymentIntent or its confirmation secret).

use std::collections::HashMap;

use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_configuration::{
    CreateBillingPortalConfiguration, CreateBillingPortalConfigurationFeatures,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancel,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdate, InvoiceListParam,
    PaymentMethodUpdateParam,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{RetrieveInvoice, VoidInvoiceInvoice};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, ListSubscription,
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionPaymentBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionSubscriptionData, ProductData,
    RetrieveCheckoutSession,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::RetrievePaymentIntent;
use stripe_core::refund::CreateRefund;
use stripe_core::setup_intent::RetrieveSetupIntent;
use stripe_types::Currency as StripeCurrency;

use super::{map_error, Call, Resend, StripeApi, StripeFailure};
use crate::domain::money::Currency;

/// Metadata keys on customers, subscriptions and Checkout sessions.
pub const META_ACCOUNT: &str = "coffer_account";
pub const META_PLAN: &str = "coffer_plan_id";
/// On a SetupIntent made for a trial subscription: its card becomes the customer's default.
pub const META_TRIAL: &str = "coffer_trial_subscription";
/// The project and mode (`project/mode`) a subscription was made in.
pub const META_SCOPE: &str = "coffer_scope";

/// Stripe's error code for a meter event whose identifier it has already recorded.
pub const DUPLICATE_METER_EVENT: &str = "duplicate_meter_event";

#[derive(Debug, miniserde::Deserialize)]
pub struct Customer {
    pub id: String,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    pub plan: Option<IdOnly>,
    pub price: Option<IdOnly>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct SubscriptionItems {
    pub data: Vec<SubscriptionItem>,
}

/// A subscription as Stripe has it now.
#[derive(Debug, miniserde::Deserialize)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub customer: String,
    pub cancel_at_period_end: Option<bool>,
    pub current_period_end: Option<i64>,
    pub metadata: Option<HashMap<String, String>>,
    pub items: Option<SubscriptionItems>,
    pub latest_invoice: Option<String>,
    pub pending_setup_intent: Option<String>,
    /// When Stripe made it (Unix seconds).
    pub created: Option<i64>,
    /// A price change waiting for its invoice to be paid (`payment_behavior=pending_if_incomplete`).
    pub pending_update: Option<PendingUpdate>,
}

#[derive(Debug, miniserde::Deserialize)]
struct SubscriptionPage {
    data: Vec<Subscription>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct PendingUpdate {
    pub expires_at: Option<i64>,
}

/// How a plan change is billed at Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceChange {
    /// To a dearer plan: the difference is invoiced and paid now, and the price changes only
    /// once that invoice is paid (`always_invoice`, `pending_if_incomplete`).
    Upgrade,
    /// To a cheaper plan: the price changes with no proration credit (`none`); the higher plan
    /// was paid to the period's end and is kept until then.
    Downgrade,
}

impl Subscription {
    fn first_item(&self) -> Option<&SubscriptionItem> {
        self.items.as_ref().and_then(|items| items.data.first())
    }

    /// The price (or legacy plan) id of its one item.
    pub fn price_id(&self) -> Option<&str> {
        let item = self.first_item()?;
        item.price
            .as_ref()
            .or(item.plan.as_ref())
            .map(|p| p.id.as_str())
    }

    pub fn item_id(&self) -> Option<&str> {
        self.first_item().map(|item| item.id.as_str())
    }

    /// The end of the current period: on the subscription (older API versions) or its item.
    pub fn period_end(&self) -> i64 {
        self.current_period_end
            .or_else(|| self.first_item().and_then(|i| i.current_period_end))
            .unwrap_or(0)
    }

    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .map(String::as_str)
    }
}

#[derive(Debug, miniserde::Deserialize)]
struct ClientSecretOnly {
    client_secret: Option<String>,
}

#[derive(Debug, miniserde::Deserialize)]
struct InvoiceSecrets {
    payment_intent: Option<String>,
    confirmation_secret: Option<ClientSecretOnly>,
}

/// An invoice as Stripe has it now: its status, amounts and billed lines. The line's price is
/// wherever the account's API version puts it (`price`, legacy `plan`, or
/// `pricing.price_details.price`), and so is its proration flag.
#[derive(Debug, miniserde::Deserialize)]
pub struct Invoice {
    pub id: String,
    pub status: Option<String>,
    pub amount_paid: Option<i64>,
    pub amount_due: Option<i64>,
    pub currency: Option<String>,
    pub created: Option<i64>,
    pub billing_reason: Option<String>,
    pub lines: Option<InvoiceLines>,
    /// The intent that paid it (API versions before 2025-03-31; later ones list payments).
    pub payment_intent: Option<String>,
    /// Its payments, when asked for (`expand[]=payments`, API versions from 2025-03-31).
    pub payments: Option<InvoicePayments>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct InvoicePayments {
    pub data: Vec<InvoicePayment>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct InvoicePayment {
    pub status: Option<String>,
    pub payment: Option<InvoicePaymentRef>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct InvoicePaymentRef {
    pub payment_intent: Option<String>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct InvoiceLines {
    pub data: Vec<InvoiceLine>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct InvoiceLine {
    pub amount: Option<i64>,
    /// The service period the line bills (Unix seconds).
    pub period: Option<LinePeriod>,
    pub proration: Option<bool>,
    pub price: Option<IdOnly>,
    pub plan: Option<IdOnly>,
    pub pricing: Option<LinePricing>,
    pub parent: Option<LineParent>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct LinePeriod {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct LinePricing {
    pub price_details: Option<PriceDetails>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct PriceDetails {
    pub price: Option<String>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct LineParent {
    pub subscription_item_details: Option<ItemDetails>,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct ItemDetails {
    pub proration: Option<bool>,
}

impl Invoice {
    /// The end of the service period its lines bill (the latest; Unix seconds).
    pub fn period_end(&self) -> Option<i64> {
        self.lines
            .iter()
            .flat_map(|l| l.data.iter())
            .filter_map(|line| line.period.as_ref()?.end)
            .max()
    }

    /// The PaymentIntents that paid it: its paid payments' (newer API versions), or its own.
    pub fn paid_intents(&self) -> Vec<String> {
        let listed: Vec<String> = self
            .payments
            .iter()
            .flat_map(|p| p.data.iter())
            .filter(|p| p.status.as_deref().is_none_or(|s| s == "paid"))
            .filter_map(|p| p.payment.as_ref()?.payment_intent.clone())
            .collect();
        if listed.is_empty() {
            self.payment_intent.iter().cloned().collect()
        } else {
            listed
        }
    }

    /// Its lines as the billing rules read them.
    pub fn billed_lines(&self) -> Vec<crate::domain::plans::BilledLine> {
        let Some(lines) = &self.lines else {
            return Vec::new();
        };
        lines
            .data
            .iter()
            .map(|line| crate::domain::plans::BilledLine {
                price_id: line
                    .price
                    .as_ref()
                    .or(line.plan.as_ref())
                    .map(|p| p.id.clone())
                    .or_else(|| {
                        line.pricing
                            .as_ref()
                            .and_then(|p| p.price_details.as_ref())
                            .and_then(|d| d.price.clone())
                    }),
                proration: line.proration.unwrap_or(false)
                    || line
                        .parent
                        .as_ref()
                        .and_then(|p| p.subscription_item_details.as_ref())
                        .and_then(|d| d.proration)
                        .unwrap_or(false),
                amount: line.amount.unwrap_or(0),
            })
            .collect()
    }
}

/// A Checkout or portal session: where to send the user.
#[derive(Debug, miniserde::Deserialize)]
pub struct Session {
    pub id: String,
    pub url: Option<String>,
}

/// A completed Checkout session, re-read from Stripe.
#[derive(Debug, miniserde::Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub mode: Option<String>,
    pub status: Option<String>,
    pub payment_status: Option<String>,
    pub payment_intent: Option<String>,
    pub subscription: Option<String>,
    pub customer: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub metadata: Option<HashMap<String, String>>,
}

/// What a Checkout session sells.
pub enum CheckoutItem<'a> {
    /// A recurring price: subscription mode.
    /// `expires_at`: when the session can no longer be paid (Unix seconds; Stripe takes 30 min
    /// to 24 h from now), so that the account's hold ends with it.
    Subscription { price_id: &'a str, expires_at: i64 },
    /// A credit package: payment mode, the PaymentIntent carrying Coffer's metadata.
    Payment {
        name: &'a str,
        amount: i64,
        currency: &'a Currency,
    },
}

pub(super) fn key(text: &str) -> Result<IdempotencyKey, StripeFailure> {
    IdempotencyKey::new(text).map_err(|_| StripeFailure::Config("invalid idempotency key".into()))
}

impl StripeApi {
    /// Creates the account's customer. The key is derived from the scope and account, so a
    /// retried call returns the same customer at Stripe.
    pub async fn create_customer(
        &self,
        metadata: HashMap<String, String>,
        email: Option<&str>,
        name: Option<&str>,
        idempotency_key: &str,
    ) -> Result<Customer, StripeFailure> {
        let mut request = CreateCustomer::new().metadata(metadata);
        if let Some(email) = email {
            request = request.email(email);
        }
        if let Some(name) = name {
            request = request.name(name);
        }
        request
            .build()
            .call::<Customer>(self, Resend::Keyed(idempotency_key))
            .await
    }

    /// Creates an incomplete subscription to one price for the customer.
    pub async fn create_subscription(
        &self,
        customer_id: &str,
        price_id: &str,
        metadata: HashMap<String, String>,
        trial_days: Option<u32>,
        idempotency_key: &str,
    ) -> Result<Subscription, StripeFailure> {
        let mut item = CreateSubscriptionItems::new();
        item.plan = Some(price_id.to_owned());
        let mut request = CreateSubscription::new()
            .customer(customer_id)
            .items(vec![item])
            .metadata(metadata);
        if let Some(days) = trial_days {
            request = request.trial_period_days(days);
        }
        request
            .build()
            .call::<Subscription>(self, Resend::Keyed(idempotency_key))
            .await
    }

    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription, StripeFailure> {
        RetrieveSubscription::new(id)
            .build()
            .call::<Subscription>(self, Resend::Retries(2))
            .await
    }

    /// The customer's subscriptions that have not ended (Stripe's default list leaves out the
    /// canceled and expired ones), up to 20.
    pub async fn customer_subscriptions(
        &self,
        customer: &str,
    ) -> Result<Vec<Subscription>, StripeFailure> {
        ListSubscription::new()
            .customer(customer)
            .limit(20)
            .build()
            .call::<SubscriptionPage>(self, Resend::Retries(2))
            .await
            .map(|page| page.data)
    }

    /// Voids an open invoice, so that it is never collected.
    pub async fn void_invoice(&self, id: &str) -> Result<(), StripeFailure> {
        VoidInvoiceInvoice::new(id)
            .build()
            .call::<IdOnly>(self, Resend::Retries(2))
            .await
            .map(|_| ())
    }

    /// Cancels at once (Stripe sends `customer.subscription.deleted`).
    pub async fn cancel_subscription_now(&self, id: &str) -> Result<Subscription, StripeFailure> {
        CancelSubscription::new(id)
            .build()
            .call::<Subscription>(self, Resend::Retries(2))
            .await
    }

    /// Sets or clears the cancel at the end of the period.
    pub async fn set_cancel_at_period_end(
        &self,
        id: &str,
        cancel: bool,
    ) -> Result<Subscription, StripeFailure> {
        UpdateSubscription::new(id)
            .cancel_at_period_end(cancel)
            .build()
            .call::<Subscription>(self, Resend::Retries(2))
            .await
    }

    /// Moves the subscription's item to another price; Stripe prorates by default.
    pub async fn change_price(
        &self,
        id: &str,
        item_id: &str,
        price_id: &str,
        change: PriceChange,
        plan_metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<Subscription, StripeFailure> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.plan = Some(price_id.to_owned());
        let request = UpdateSubscription::new(id).items(vec![item]);
        let request = match change {
            // Pending updates take no metadata (before API version 2026-05-27): the plan is
            // read from the price.
            PriceChange::Upgrade => request
                .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
                .payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete),
            PriceChange::Downgrade => request
                .proration_behavior(UpdateSubscriptionProrationBehavior::None)
                .metadata(plan_metadata),
        };
        request
            .build()
            .call::<Subscription>(self, Resend::Keyed(idempotency_key))
            .await
    }

    /// The secret the client confirms a new subscription with: the first invoice's
    /// PaymentIntent, else the pending SetupIntent (nothing due now). `None`: nothing to confirm.
    pub async fn confirmation_secret(
        &self,
        subscription: &Subscription,
    ) -> Result<Option<String>, StripeFailure> {
        if let Some(invoice_id) = &subscription.latest_invoice {
            let invoice = match self.invoice_secrets(invoice_id, true).await {
                // Older API versions (and localstripe) have no confirmation secret to expand.
                Err(super::CallError::Stripe(_, 400)) => {
                    self.invoice_secrets(invoice_id, false).await
                }
                other => other,
            }
            .map_err(map_error)?;
            if let Some(secret) = invoice.confirmation_secret.and_then(|c| c.client_secret) {
                return Ok(Some(secret));
            }
            if let Some(intent_id) = invoice.payment_intent {
                let intent = RetrievePaymentIntent::new(intent_id.as_str())
                    .build()
                    .call::<ClientSecretOnly>(self, Resend::Retries(2))
                    .await?;
                if intent.client_secret.is_some() {
                    return Ok(intent.client_secret);
                }
            }
        }
        if let Some(setup_id) = &subscription.pending_setup_intent {
            let setup = RetrieveSetupIntent::new(setup_id.as_str())
                .build()
                .call::<ClientSecretOnly>(self, Resend::Retries(2))
                .await?;
            return Ok(setup.client_secret);
        }
        Ok(None)
    }

    async fn invoice_secrets(
        &self,
        invoice_id: &str,
        expand_confirmation: bool,
    ) -> Result<InvoiceSecrets, super::CallError> {
        let mut request = RetrieveInvoice::new(invoice_id);
        if expand_confirmation {
            request = request.expand(vec!["confirmation_secret".to_owned()]);
        }
        request
            .build()
            .customize::<InvoiceSecrets>()
            .request_strategy(RequestStrategy::Retry(2))
            .send(&self.client)
            .await
    }

    /// A Checkout session for a plan (subscription mode) or a credit package (payment mode).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_checkout_session(
        &self,
        item: CheckoutItem<'_>,
        customer_id: &str,
        account: &str,
        metadata: HashMap<String, String>,
        success_url: &str,
        cancel_url: &str,
        idempotency_key: &str,
    ) -> Result<Session, StripeFailure> {
        let mut line = CreateCheckoutSessionLineItems::new();
        line.quantity = Some(1);
        let mut request = CreateCheckoutSession::new()
            .customer(customer_id)
            .client_reference_id(account)
            .success_url(success_url)
            .cancel_url(cancel_url)
            .metadata(metadata.clone());
        match item {
            CheckoutItem::Subscription {
                price_id,
                expires_at,
            } => {
                line.price = Some(price_id.to_owned());
                let mut data = CreateCheckoutSessionSubscriptionData::new();
                data.metadata = Some(metadata);
                request = request
                    .mode(CheckoutSessionMode::Subscription)
                    .subscription_data(data)
                    .expires_at(expires_at);
            }
            CheckoutItem::Payment {
                name,
                amount,
                currency,
            } => {
                let currency: StripeCurrency = currency.as_str().parse().map_err(|_| {
                    StripeFailure::Config(format!("unsupported currency {currency}"))
                })?;
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
                price.unit_amount = Some(amount);
                price.product_data = Some(ProductData::new(name));
                line.price_data = Some(price);
                let mut data = CreateCheckoutSessionPaymentIntentData::new();
                data.metadata = Some(metadata);
                request = request
                    .mode(CheckoutSessionMode::Payment)
                    .payment_intent_data(data);
            }
        }
        request
            .line_items(vec![line])
            .build()
            .call::<Session>(self, Resend::Keyed(idempotency_key))
            .await
    }

    /// Refunds the payment of `payment_intent` in full, once (`idempotency_key`).
    pub async fn refund_payment(
        &self,
        payment_intent: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<(), StripeFailure> {
        CreateRefund::new()
            .payment_intent(payment_intent)
            .metadata(HashMap::from([(
                "coffer_reason".to_owned(),
                reason.to_owned(),
            )]))
            .build()
            .call::<IdOnly>(self, Resend::Keyed(idempotency_key))
            .await?;
        Ok(())
    }

    /// The invoice with its payments expanded (older API versions and localstripe, which know
    /// no `payments`, are asked again without).
    pub async fn retrieve_invoice_with_payments(&self, id: &str) -> Result<Invoice, StripeFailure> {
        let expanded = RetrieveInvoice::new(id)
            .expand(vec!["payments".to_owned()])
            .build()
            .call_raw::<Invoice>(self, Resend::Retries(2))
            .await?;
        match expanded {
            Err(super::CallError::Stripe(_, 400)) => self.retrieve_invoice(id).await,
            other => other.map_err(map_error),
        }
    }

    /// The invoice as Stripe has it now.
    pub async fn retrieve_invoice(&self, id: &str) -> Result<Invoice, StripeFailure> {
        RetrieveInvoice::new(id)
            .build()
            .call::<Invoice>(self, Resend::Retries(2))
            .await
    }

    pub async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSession, StripeFailure> {
        RetrieveCheckoutSession::new(id)
            .build()
            .call::<CheckoutSession>(self, Resend::Retries(2))
            .await
    }

    /// A customer portal session that returns to `return_url`.
    /// The customer portal's settings for Coffer's sessions: payment methods and invoices only.
    /// Plan changes (and cancellations) go through Coffer's own routes, where they are billed
    /// before they apply; the portal's own switching would raise a plan at once, unpaid.
    pub async fn create_portal_configuration(
        &self,
        idempotency_key: &str,
    ) -> Result<String, StripeFailure> {
        let mut features = CreateBillingPortalConfigurationFeatures::new();
        features.subscription_update =
            Some(CreateBillingPortalConfigurationFeaturesSubscriptionUpdate::new(false));
        features.subscription_cancel =
            Some(CreateBillingPortalConfigurationFeaturesSubscriptionCancel::new(false));
        features.payment_method_update = Some(PaymentMethodUpdateParam::new(true));
        features.invoice_history = Some(InvoiceListParam::new(true));
        CreateBillingPortalConfiguration::new(features)
            .build()
            .call::<IdOnly>(self, Resend::Keyed(idempotency_key))
            .await
            .map(|made| made.id)
    }

    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        configuration: &str,
    ) -> Result<Session, StripeFailure> {
        CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .configuration(configuration)
            .build()
            .call::<Session>(self, Resend::Retries(1))
            .await
    }

    /// One billing meter event: `value` units of `event_name` for `customer` at `timestamp`.
    /// Stripe counts an `identifier` once (for at least 24 hours), so a resent event counts
    /// once. The idempotency key is the identifier and the attempt: a retry within one attempt
    /// gets the first answer, and a later attempt is not answered with a stored failure.
    pub async fn send_meter_event(
        &self,
        event: &MeterEventOut<'_>,
    ) -> Result<MeterSent, StripeFailure> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), event.customer.to_owned()),
            ("value".to_owned(), event.value.to_string()),
        ]);
        let idempotency = crate::domain::idempotency::meter_event(event.identifier, event.attempt);
        let sent = CreateBillingMeterEvent::new(event.event_name, payload)
            .identifier(event.identifier)
            .timestamp(event.timestamp)
            .build()
            .call_raw::<MeterEventAck>(self, Resend::Keyed(&idempotency))
            .await?;
        match sent {
            Ok(ack)
                if ack
                    .identifier
                    .as_deref()
                    .is_some_and(|id| id != event.identifier) =>
            {
                Err(StripeFailure::Upstream(
                    "Stripe acknowledged another identifier".into(),
                ))
            }
            Ok(_) => Ok(MeterSent::Accepted),
            // The key was refused: nothing of this project's goes through until it is
            // rotated (the next client reads the secret again).
            Err(super::CallError::Stripe(details, status @ (401 | 403))) => {
                Ok(MeterSent::KeyRefused(format!(
                    "{status}: {}",
                    details.message.clone().unwrap_or_default()
                )))
            }
            // A client error other than rate limiting, or another request with the same key in
            // flight (409: its outcome is unknown), will not go away by sending again.
            Err(super::CallError::Stripe(details, status))
                if (400..500).contains(&status) && status != 429 && status != 409 =>
            {
                let message = details.message.clone().unwrap_or_default();
                // Stripe's code says it holds this identifier already; its words are not read.
                if details.code.as_deref() == Some(DUPLICATE_METER_EVENT) {
                    Ok(MeterSent::AlreadyRecorded)
                } else {
                    Ok(MeterSent::Refused(format!("{status}: {message}")))
                }
            }
            Err(err) => Err(map_error(err)),
        }
    }
}

/// What Stripe did with a meter event.
#[derive(Debug, PartialEq, Eq)]
pub enum MeterSent {
    Accepted,
    /// Its identifier was counted before (a resend).
    AlreadyRecorded,
    /// Refused (an unknown meter or customer, a timestamp too old): the message. Stripe did
    /// not count it; it is sent again once the project is fixed.
    Refused(String),
    /// The key was refused (rolled or revoked): Stripe did not count it.
    KeyRefused(String),
}

/// A billing meter event to send.
pub struct MeterEventOut<'a> {
    pub event_name: &'a str,
    pub customer: &'a str,
    pub value: i64,
    pub identifier: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
    /// Which sending of its batch this is (1 the first).
    pub attempt: u32,
}

#[derive(Debug, miniserde::Deserialize)]
pub struct MeterEventAck {
    pub identifier: Option<String>,
}
