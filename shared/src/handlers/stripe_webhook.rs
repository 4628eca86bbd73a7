//! `POST /api/stripe/webhook`: verifies the Stripe signature over the raw body, then applies
//! `payment_intent.succeeded` (credit exactly once), `payment_intent.payment_failed` and
//! `payment_intent.canceled` (mark, never move credits), and refunds and disputes (see
//! `stripe_webhook_lifecycle`). Other types are acknowledged. Storage
//! and secret failures answer 5xx so that Stripe retries.

use lambda_http::{Body, Request, Response};
use time::OffsetDateTime;

use super::stripe_webhook_lifecycle as lifecycle;
use crate::http::{ack, body_bytes, respond, ApiError, MAX_WEBHOOK_BODY};
use crate::ledger::{CreditOutcome, DisputeStep, PaidIntent, PaymentStatus};
use crate::payments::{META_CREDITS, META_PACKAGE, META_USER};
use crate::webhook::{self, Event, SignatureError};
use crate::App;

#[tracing::instrument(name = "stripe_webhook", skip_all)]
pub async fn stripe_webhook(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let payload = body_bytes(req, MAX_WEBHOOK_BODY)?;
    let secrets = app.secrets.get().await?;
    // An empty or missing secret is a configuration error, never "accept everything".
    let secret = secrets.webhook_secret()?;
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|h| h.to_str().unwrap_or(""));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Err(reason) = webhook::verify(payload, header, secret, now) {
        tracing::warn!(reason = %reason, "webhook signature refused");
        return Err(match reason {
            SignatureError::Missing
            | SignatureError::Malformed
            | SignatureError::Stale
            | SignatureError::Mismatch => ApiError::BadSignature,
        });
    }
    let event = Event::parse(payload)
        .ok_or_else(|| ApiError::bad_request("The body is not a Stripe event."))?;
    tracing::info!(event_id = %event.id, event_type = %event.kind, "webhook received");

    match event.kind.as_str() {
        "payment_intent.succeeded" => credit(app, &event).await?,
        "payment_intent.payment_failed" => mark(app, &event, PaymentStatus::Failed).await?,
        "payment_intent.canceled" => mark(app, &event, PaymentStatus::Canceled).await?,
        "charge.refunded" => lifecycle::refunded(app, &event).await?,
        "charge.dispute.created" => lifecycle::dispute(app, &event, DisputeStep::Created).await?,
        "charge.dispute.funds_withdrawn" => {
            lifecycle::dispute(app, &event, DisputeStep::FundsWithdrawn).await?
        }
        "charge.dispute.funds_reinstated" => {
            lifecycle::dispute(app, &event, DisputeStep::FundsReinstated).await?
        }
        _ => tracing::info!(event_type = %event.kind, "event type not handled; acknowledged"),
    }
    Ok(ack())
}

async fn credit(app: &App, event: &Event) -> Result<(), ApiError> {
    let intent = event
        .intent()
        .ok_or_else(|| ApiError::bad_request("The event holds no PaymentIntent."))?;
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
        event_id: event.id.clone(),
    };
    let outcome = app.store.credit_purchase(&paid).await?;
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
        CreditOutcome::Mismatch => tracing::warn!(
            intent_id = %paid.intent_id,
            "succeeded intent does not match the recorded payment (amount, currency or metadata); nothing credited"
        ),
    }
    Ok(())
}

async fn mark(app: &App, event: &Event, status: PaymentStatus) -> Result<(), ApiError> {
    let intent = event
        .intent()
        .ok_or_else(|| ApiError::bad_request("The event holds no PaymentIntent."))?;
    let changed = app.store.mark_unpaid(&intent.id, status).await?;
    tracing::info!(intent_id = %intent.id, status = status.as_str(), changed, "payment marked");
    Ok(())
}
