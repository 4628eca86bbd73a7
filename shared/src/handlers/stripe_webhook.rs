//! `POST /api/stripe/webhook` (the default project) and
//! `POST /api/v1/payments/stripe/webhooks/{project_id}/{mode}` (a project's, verified with that
//! project's secret for that mode). The raw body and the `Stripe-Signature` header go to the
//! inbound events wing (`services::inbound`), which verifies and applies the event. Storage and
//! secret failures answer 5xx so that Stripe retries; other types are acknowledged.

use lambda_http::{Body, Request, RequestExt, Response};

use crate::http::{ack, body_bytes, respond, ApiError, MAX_WEBHOOK_BODY};
use crate::services::inbound::{self, Route};
use crate::{scoping, App};

#[tracing::instrument(name = "stripe_webhook", skip_all)]
pub async fn stripe_webhook(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let payload = body_bytes(req, MAX_WEBHOOK_BODY)?;
    let on_project_route = req
        .path_parameters_ref()
        .is_some_and(|p| p.first("project_id").is_some());
    let route = match on_project_route {
        true => Route::Project(scoping::webhook_scope(req)?),
        false => Route::Deployment,
    };
    let signature = req
        .headers()
        .get("stripe-signature")
        .map(|h| h.to_str().unwrap_or(""));
    inbound::receive(app, route, signature, payload).await?;
    Ok(ack())
}
