//! The inbound events wing: every Stripe event Coffer handles, from a verified delivery to its
//! effect. One table (`INBOUND`) maps each event type to what it means; `receive` checks the
//! signature and applies the event through the file of its family: `payments` (a
//! PaymentIntent's outcome), `charges` (refunds and disputes) and `billing` (subscriptions,
//! invoices, Checkout, saved cards). A subscription whose event failed is marked so that the
//! scheduled job reads it again even if Stripe stops retrying.

pub mod billing;
mod charges;
mod payments;

use time::OffsetDateTime;

use crate::adapters::stripe::webhook::{self, Event, SignatureError};
use crate::domain::ledger::DisputeStep;
use crate::domain::records::PaymentStatus;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// Where a delivery came in: the deployment's own route, or a project's route for a mode.
pub enum Route {
    Deployment,
    Project(Scope),
}

/// Receives one delivery: the route's scope must exist (an unknown project or mode is refused
/// exactly as a bad signature, so that nobody learns which projects exist), the signature must
/// be the scope's, and then the event is applied. A failure worth retrying (5xx) of an event
/// about a subscription marks it to be read again by the scheduled job.
pub async fn receive(
    app: &App,
    route: Route,
    signature: Option<&str>,
    payload: &[u8],
) -> Result<(), Failure> {
    let scope = route_scope(app, route).await?;
    verify_signature(app, &scope, signature, payload).await?;
    let event =
        Event::parse(payload).ok_or_else(|| Failure::invalid("The body is not a Stripe event."))?;
    tracing::info!(event_id = %event.id, event_type = %event.kind, "webhook received");
    let applied = apply(app, &scope, &event).await;
    if let Err(err) = &applied {
        if err.is_server_side() {
            mark_for_reread(app, &scope, &event).await;
        }
    }
    applied
}

async fn route_scope(app: &App, route: Route) -> Result<Scope, Failure> {
    let scope = match route {
        Route::Deployment => return Ok(app.default_scope()),
        Route::Project(scope) => scope,
    };
    if app.is_deployment_scope(&scope) {
        return Ok(scope);
    }
    match app.project(&scope.project).await? {
        Some(project) if project.modes.contains_key(&scope.mode) => Ok(scope),
        _ => {
            tracing::warn!(
                reason = "unknown project or mode",
                "webhook signature refused"
            );
            Err(Failure::Unsigned)
        }
    }
}

/// Checks the signature with the scope's cached secret and, when it does not match, with a
/// fresh read of the secret (at most one read per `secret_refresh_interval`), so that a rotated
/// secret is picked up by warm functions.
async fn verify_signature(
    app: &App,
    scope: &Scope,
    header: Option<&str>,
    payload: &[u8],
) -> Result<(), Failure> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut secrets = app.secrets_for(scope).await?;
    // A copy with no webhook secret yet (the placeholder a deploy creates, filled since): read
    // again before refusing, at most once per `secret_refresh_interval`.
    if secrets.webhook_secret().is_err() {
        if let Some(fresh) = app
            .refresh_secrets(scope, app.config.secret_refresh_interval)
            .await?
        {
            secrets = fresh;
        }
    }
    // An empty or missing secret is a configuration error, never "accept everything".
    let secret = match secrets.webhook_secret() {
        Ok(secret) => secret,
        // A project's mode saved without a webhook secret: as a bad signature, so that the
        // route tells nobody which projects exist.
        Err(_) if !app.is_deployment_scope(scope) => return Err(Failure::Unsigned),
        Err(err) => return Err(err.into()),
    };
    let mut outcome = webhook::verify(payload, header, secret, now);
    if outcome == Err(SignatureError::Mismatch) {
        if let Some(fresh) = app
            .refresh_secrets(scope, app.config.secret_refresh_interval)
            .await?
        {
            tracing::info!("signature mismatch; checked again with a fresh read of the secret");
            outcome = webhook::verify(payload, header, fresh.webhook_secret()?, now);
        }
    }
    outcome.map_err(|reason| {
        tracing::warn!(reason = %reason, "webhook signature refused");
        Failure::Unsigned
    })
}

/// Applies one verified event through the table.
async fn apply(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let Some(meaning) = inbound(&event.kind) else {
        tracing::info!(event_type = %event.kind, "event type not handled; acknowledged");
        return Ok(());
    };
    match meaning {
        Inbound::PaymentSucceeded => payments::credit(app, scope, event).await,
        Inbound::PaymentFailed => payments::mark(app, scope, event, PaymentStatus::Failed).await,
        Inbound::PaymentCanceled => {
            payments::mark(app, scope, event, PaymentStatus::Canceled).await
        }
        Inbound::SubscriptionChanged => billing::subscription_changed(app, scope, event).await,
        Inbound::InvoicePaid => billing::invoice_event(app, scope, event, false).await,
        Inbound::InvoicePaymentFailed => billing::invoice_event(app, scope, event, true).await,
        Inbound::CheckoutCompleted => billing::checkout_completed(app, scope, event).await,
        Inbound::CheckoutExpired => billing::checkout_expired(app, scope, event).await,
        Inbound::SetupSucceeded => billing::setup_succeeded(app, scope, event).await,
        Inbound::Refunded => charges::refunded(app, scope, event).await,
        Inbound::RefundUpdated => charges::refund_updated(app, scope, event).await,
        Inbound::DisputeCreated => charges::dispute(app, scope, event, DisputeStep::Created).await,
        Inbound::DisputeFundsWithdrawn => {
            charges::dispute(app, scope, event, DisputeStep::FundsWithdrawn).await
        }
        Inbound::DisputeFundsReinstated => {
            charges::dispute(app, scope, event, DisputeStep::FundsReinstated).await
        }
    }
}

/// Marks the subscription an event was about to be read again by the scheduled job; an
/// invoice's event is applied again whole (status, included credits).
async fn mark_for_reread(app: &App, scope: &Scope, event: &Event) {
    let Some(subscription_id) = billing::subscription_of(event) else {
        return;
    };
    let store = app.store_for(scope);
    let marked = match event.kind.as_str() {
        kind @ ("invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed") => {
            match event.data.object.get("id").and_then(|v| v.as_str()) {
                Some(invoice_id) => {
                    store
                        .mark_invoice_for_reread(
                            invoice_id,
                            subscription_id,
                            kind == "invoice.payment_failed",
                        )
                        .await
                }
                None => store.mark_for_reread(subscription_id).await,
            }
        }
        _ => store.mark_for_reread(subscription_id).await,
    };
    if let Err(mark) = marked {
        tracing::warn!(cause = %crate::telemetry::error_chain(&mark), "the subscription could not be marked to be read again");
    }
}

/// What Coffer does with one Stripe event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `payment_intent.succeeded`: credit the purchase exactly once.
    PaymentSucceeded,
    /// A payment failed or was canceled: mark it, never move credits.
    PaymentFailed,
    PaymentCanceled,
    /// `customer.subscription.*`: read the subscription again and store it when newer.
    SubscriptionChanged,
    /// An invoice paid, or its payment failed: read it again; included credits once.
    InvoicePaid,
    InvoicePaymentFailed,
    /// A Checkout session completed (paid now or later), or expired.
    CheckoutCompleted,
    CheckoutExpired,
    /// A card saved for later payments.
    SetupSucceeded,
    /// Refunds and disputes of a charge: the ledger's refunded and disputed shares.
    Refunded,
    RefundUpdated,
    DisputeCreated,
    DisputeFundsWithdrawn,
    DisputeFundsReinstated,
}

/// The one table of the Stripe events Coffer handles: each type and what it means (its family is
/// `Inbound::family`). The webhook dispatches on it (`apply`), and the list of events a developer
/// is told to send to a project's endpoint is its first column, so the two never differ.
pub const INBOUND: &[(&str, Inbound)] = &[
    ("payment_intent.succeeded", Inbound::PaymentSucceeded),
    ("payment_intent.payment_failed", Inbound::PaymentFailed),
    ("payment_intent.canceled", Inbound::PaymentCanceled),
    ("charge.refunded", Inbound::Refunded),
    ("charge.refund.updated", Inbound::RefundUpdated),
    ("charge.dispute.created", Inbound::DisputeCreated),
    (
        "charge.dispute.funds_withdrawn",
        Inbound::DisputeFundsWithdrawn,
    ),
    (
        "charge.dispute.funds_reinstated",
        Inbound::DisputeFundsReinstated,
    ),
    ("checkout.session.completed", Inbound::CheckoutCompleted),
    (
        "checkout.session.async_payment_succeeded",
        Inbound::CheckoutCompleted,
    ),
    ("checkout.session.expired", Inbound::CheckoutExpired),
    (
        "customer.subscription.created",
        Inbound::SubscriptionChanged,
    ),
    (
        "customer.subscription.updated",
        Inbound::SubscriptionChanged,
    ),
    (
        "customer.subscription.deleted",
        Inbound::SubscriptionChanged,
    ),
    ("customer.subscription.paused", Inbound::SubscriptionChanged),
    (
        "customer.subscription.resumed",
        Inbound::SubscriptionChanged,
    ),
    ("invoice.paid", Inbound::InvoicePaid),
    ("invoice.payment_succeeded", Inbound::InvoicePaid),
    ("invoice.payment_failed", Inbound::InvoicePaymentFailed),
    ("setup_intent.succeeded", Inbound::SetupSucceeded),
];

/// The families of inbound events, each handled by one file of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A PaymentIntent's outcome (`payments`).
    Payments,
    /// Refunds and disputes of a charge (`charges`).
    Charges,
    /// Subscriptions, their invoices, Checkout sessions and saved cards (`billing`).
    Billing,
}

impl Inbound {
    pub fn family(self) -> Family {
        match self {
            Self::PaymentSucceeded | Self::PaymentFailed | Self::PaymentCanceled => {
                Family::Payments
            }
            Self::Refunded
            | Self::RefundUpdated
            | Self::DisputeCreated
            | Self::DisputeFundsWithdrawn
            | Self::DisputeFundsReinstated => Family::Charges,
            Self::SubscriptionChanged
            | Self::InvoicePaid
            | Self::InvoicePaymentFailed
            | Self::CheckoutCompleted
            | Self::CheckoutExpired
            | Self::SetupSucceeded => Family::Billing,
        }
    }
}

/// What an event type means to Coffer; `None`: not handled (acknowledged).
pub fn inbound(kind: &str) -> Option<Inbound> {
    INBOUND
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, meaning)| *meaning)
}

/// The event types a project's webhook endpoint should receive: every one Coffer handles.
pub fn handled_event_types() -> Vec<&'static str> {
    INBOUND.iter().map(|(name, _)| *name).collect()
}

#[cfg(test)]
mod inbound_tests {
    use super::*;

    #[test]
    fn every_handled_type_is_listed_once_and_unknown_ones_are_not_handled() {
        let types = handled_event_types();
        let distinct: std::collections::HashSet<_> = types.iter().collect();
        assert_eq!(distinct.len(), types.len());
        assert_eq!(
            inbound("invoice.payment_succeeded"),
            Some(Inbound::InvoicePaid)
        );
        assert_eq!(
            inbound("checkout.session.expired"),
            Some(Inbound::CheckoutExpired)
        );
        assert_eq!(inbound("customer.created"), None);
        assert_eq!(
            inbound("charge.dispute.created").map(Inbound::family),
            Some(Family::Charges)
        );
    }
}
