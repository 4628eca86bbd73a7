//! `POST /api/stripe/webhook` (the default project) and
//! `POST /api/v1/payments/stripe/webhooks/{project_id}/{mode}` (a project's, verified with that
//! project's secret for that mode): verifies the Stripe signature over the raw body, then applies
//! `payment_intent.succeeded` (credit exactly once), `payment_intent.payment_failed` and
//! `payment_intent.canceled` (mark, never move credits), and refunds and disputes (see
//! `stripe_webhook_lifecycle`). Other types are acknowledged. Storage and secret failures answer
//! 5xx so that Stripe retries. After a rotation of the signing secret, a signature that does not
//! match the cached secret is checked once more against a fresh read (rate-limited).

use lambda_http::{Body, Request, RequestExt, Response};
use time::OffsetDateTime;

use super::stripe_webhook_billing as billing;
use super::stripe_webhook_lifecycle as lifecycle;
use crate::adapters::store::{CreditOutcome, Store};
use crate::adapters::stripe::{META_CREDITS, META_PACKAGE, META_SCOPE, META_USER};
use crate::domain::ledger::{DisputeStep, PaidIntent};
use crate::domain::records::PaymentStatus;
use crate::domain::scope::Scope;
use crate::http::{ack, body_bytes, respond, ApiError, MAX_WEBHOOK_BODY};
use crate::webhook::{self, Event, Inbound, SignatureError};
use crate::{scoping, telemetry, App};

#[tracing::instrument(name = "stripe_webhook", skip_all)]
pub async fn stripe_webhook(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let payload = body_bytes(req, MAX_WEBHOOK_BODY)?;
    let scope = webhook_scope(app, req).await?;
    verify_signature(app, &scope, req, payload).await?;
    let store = app.store_for(&scope);
    let event = Event::parse(payload)
        .ok_or_else(|| ApiError::bad_request("The body is not a Stripe event."))?;
    tracing::info!(event_id = %event.id, event_type = %event.kind, "webhook received");
    let applied = apply(app, &scope, &store, &event).await;
    if let Err(err) = &applied {
        // A subscription whose event failed here is read again by the scheduled job, even if
        // Stripe stops retrying the event.
        if err.status().is_server_error() {
            if let Some(subscription_id) = billing::subscription_of(&event) {
                let marked = match event.kind.as_str() {
                    // An invoice's event is applied again whole (status, included credits).
                    kind @ ("invoice.paid"
                    | "invoice.payment_succeeded"
                    | "invoice.payment_failed") => {
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
                    tracing::warn!(cause = %crate::http::error_chain(&mark), "the subscription could not be marked to be read again");
                }
            }
        }
    }
    applied?;
    Ok(ack())
}

/// Applies one verified event.
async fn apply(app: &App, scope: &Scope, store: &Store, event: &Event) -> Result<(), ApiError> {
    let Some(meaning) = webhook::inbound(&event.kind) else {
        tracing::info!(event_type = %event.kind, "event type not handled; acknowledged");
        return Ok(());
    };
    match meaning {
        Inbound::PaymentSucceeded => credit(app, scope, event).await?,
        Inbound::SubscriptionChanged => billing::subscription_changed(app, scope, event).await?,
        Inbound::InvoicePaid => billing::invoice_event(app, scope, event, false).await?,
        Inbound::InvoicePaymentFailed => billing::invoice_event(app, scope, event, true).await?,
        Inbound::CheckoutCompleted => billing::checkout_completed(app, scope, event).await?,
        Inbound::CheckoutExpired => billing::checkout_expired(app, scope, event).await?,
        Inbound::SetupSucceeded => billing::setup_succeeded(app, scope, event).await?,
        Inbound::PaymentFailed => mark(store, event, PaymentStatus::Failed).await?,
        Inbound::PaymentCanceled => mark(store, event, PaymentStatus::Canceled).await?,
        Inbound::Refunded => lifecycle::refunded(app, scope, event).await?,
        Inbound::RefundUpdated => lifecycle::refund_updated(app, scope, event).await?,
        Inbound::DisputeCreated => {
            lifecycle::dispute(app, scope, event, DisputeStep::Created).await?
        }
        Inbound::DisputeFundsWithdrawn => {
            lifecycle::dispute(app, scope, event, DisputeStep::FundsWithdrawn).await?
        }
        Inbound::DisputeFundsReinstated => {
            lifecycle::dispute(app, scope, event, DisputeStep::FundsReinstated).await?
        }
    }
    Ok(())
}

/// The default project's route, or a project's: the project must exist in that mode (a
/// deactivated one still gets its events, so that no money is lost). An unknown project, or one
/// not configured in the mode, is answered exactly as a bad signature: the route never tells a
/// stranger which projects exist.
async fn webhook_scope(app: &App, req: &Request) -> Result<Scope, ApiError> {
    let on_project_route = req
        .path_parameters_ref()
        .is_some_and(|p| p.first("project_id").is_some());
    if !on_project_route {
        return Ok(app.default_scope());
    }
    let scope = scoping::webhook_scope(req)?;
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
            Err(ApiError::BadSignature)
        }
    }
}

/// Checks the signature with the scope's cached secret and, when it does not match, with a
/// fresh read of the secret (at most one read per `secret_refresh_interval`), so that a rotated
/// secret is picked up by warm functions.
async fn verify_signature(
    app: &App,
    scope: &Scope,
    req: &Request,
    payload: &[u8],
) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|h| h.to_str().unwrap_or(""));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let secrets = app.secrets_for(scope).await?;
    // An empty or missing secret is a configuration error, never "accept everything".
    let secret = match secrets.webhook_secret() {
        Ok(secret) => secret,
        // A project's mode saved without a webhook secret: as a bad signature, so that the
        // route tells nobody which projects exist.
        Err(_) if !app.is_deployment_scope(scope) => return Err(ApiError::BadSignature),
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
        ApiError::BadSignature
    })
}

async fn credit(app: &App, scope: &Scope, event: &Event) -> Result<(), ApiError> {
    let store = app.store_for(scope);
    let intent = event
        .intent()
        .ok_or_else(|| ApiError::bad_request("The event holds no PaymentIntent."))?;
    if !app.owns(
        scope,
        intent.metadata.get(META_SCOPE).map(String::as_str),
        false,
    ) {
        tracing::warn!(intent_id = %intent.id, "payment of another scope; nothing credited here");
        return Ok(());
    }
    let paid = PaidIntent {
        intent_id: intent.id.clone(),
        amount: intent.amount,
        currency: intent.currency.to_ascii_lowercase(),
        user_id: intent.metadata.get(META_USER).cloned(),
        package_id: intent.metadata.get(META_PACKAGE).cloned(),
        credits: intent
            .metadata
            .get(META_CREDITS)
            .and_then(|c| c.parse().ok()),
    };
    let outcome = store.credit_purchase(&paid, &event.id).await?;
    if matches!(
        outcome,
        CreditOutcome::Credited | CreditOutcome::AlreadyCredited
    ) {
        // A paid tier purchase: the account's tier is the highest it still holds.
        crate::services::billing::sync_tier(app, scope, &paid.intent_id).await?;
    }
    match outcome {
        CreditOutcome::Credited => {
            tracing::info!(intent_id = %paid.intent_id, credits = paid.credits, "payment credited")
        }
        CreditOutcome::AlreadyCredited => {
            tracing::info!(intent_id = %paid.intent_id, "payment already credited; duplicate ignored")
        }
        CreditOutcome::UnknownPayment => {
            tracing::warn!(intent_id = %paid.intent_id, "succeeded intent has no Coffer payment record; nothing credited")
        }
        CreditOutcome::Mismatch {
            reason,
            newly_flagged,
        } => telemetry::payment_needs_attention(&paid.intent_id, reason, newly_flagged),
    }
    Ok(())
}

async fn mark(store: &Store, event: &Event, status: PaymentStatus) -> Result<(), ApiError> {
    let intent = event
        .intent()
        .ok_or_else(|| ApiError::bad_request("The event holds no PaymentIntent."))?;
    let changed = store.mark_unpaid(&intent.id, status).await?;
    tracing::info!(intent_id = %intent.id, status = status.as_str(), changed, "payment marked");
    Ok(())
}
