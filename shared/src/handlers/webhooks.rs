//! A developer's webhook endpoints of one project and mode: add, list, change, disable, delete,
//! rotate the signing secret, read the delivery log and send an event again.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{WebhookAttemptView, WebhookEndpointSecret, WebhookEndpointView};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ok_page, ApiError};
use crate::services::webhooks::{self, EndpointChange};
use crate::{scoping, App};

/// A new endpoint: its URL and the event types it takes (left out: all).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EndpointBody {
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://app.example.com/hooks/coffer")
    )]
    url: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>, example = json!(["payment.succeeded", "plan.changed"])))]
    events: Option<Value>,
    /// Off stops deliveries; on again starts afresh.
    enabled: Option<bool>,
}

/// The event to send again.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ResendBody {
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    event_id: Option<String>,
}

/// `events`: `null` (or left out) for all, else a list of type names.
fn event_list(value: &Option<Value>) -> Result<Option<Option<Vec<String>>>, ApiError> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("events must be a list of event types."))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|types| Some(Some(types))),
        Some(_) => Err(ApiError::bad_request(
            "events must be a list of event types, or null for all.",
        )),
    }
}

pub(crate) async fn webhooks_route(
    app: &App,
    req: &Request,
    route: &str,
    scope: Scope,
) -> Result<Response<Body>, ApiError> {
    let endpoint_id = req
        .path_parameters_ref()
        .and_then(|p| p.first("endpoint_id"))
        .map(str::to_owned);
    let path = route;
    match (req.method().as_str(), endpoint_id) {
        ("GET", None) => {
            let endpoints = webhooks::list(app, &scope).await?;
            Ok(ok(endpoints
                .iter()
                .map(WebhookEndpointView::of)
                .collect::<Vec<_>>()))
        }
        ("POST", None) => {
            let body: EndpointBody = json_body(req)?;
            let url = body
                .url
                .ok_or_else(|| ApiError::bad_request("url is required."))?;
            if body.enabled.is_some() {
                return Err(ApiError::bad_request(
                    "A new endpoint is on: leave enabled out.",
                ));
            }
            let events = event_list(&body.events)?.flatten();
            let (endpoint, secret) = webhooks::create(app, &scope, &url, events).await?;
            Ok(ok(WebhookEndpointSecret {
                endpoint: WebhookEndpointView::of(&endpoint),
                secret,
            }))
        }
        ("GET", Some(id)) if path.ends_with("/attempts") => {
            let limit = match scoping::query_value(req, "limit")? {
                None => 20,
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ApiError::bad_request("limit must be from 1 to 100."))?,
            };
            let cursor = scoping::query_value(req, "cursor")?;
            let (page, next) =
                webhooks::attempts(app, &scope, &id, limit, cursor.as_deref()).await?;
            Ok(ok_page(
                page.iter().map(WebhookAttemptView::of).collect::<Vec<_>>(),
                next,
            ))
        }
        ("POST", Some(id)) if path.ends_with("/rotate-secret") => {
            let (endpoint, secret) = webhooks::rotate(app, &scope, &id).await?;
            Ok(ok(WebhookEndpointSecret {
                endpoint: WebhookEndpointView::of(&endpoint),
                secret,
            }))
        }
        ("POST", Some(id)) if path.ends_with("/resend") => {
            let body: ResendBody = json_body(req)?;
            let event_id = body
                .event_id
                .filter(|e| {
                    !e.is_empty() && e.len() <= 200 && e.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| ApiError::bad_request("eventId is required."))?;
            webhooks::resend(app, &scope, &id, &event_id).await?;
            Ok(ok(WebhookEndpointView::of(
                &webhooks::get(app, &scope, &id).await?,
            )))
        }
        ("GET", Some(id)) => Ok(ok(WebhookEndpointView::of(
            &webhooks::get(app, &scope, &id).await?,
        ))),
        ("PUT", Some(id)) => {
            let body: EndpointBody = json_body(req)?;
            let change = EndpointChange {
                url: body.url,
                events: event_list(&body.events)?,
                enabled: body.enabled,
            };
            let endpoint = webhooks::update(app, &scope, &id, change).await?;
            Ok(ok(WebhookEndpointView::of(&endpoint)))
        }
        ("DELETE", Some(id)) => {
            let endpoint = webhooks::get(app, &scope, &id).await?;
            webhooks::delete(app, &scope, &id).await?;
            Ok(ok(WebhookEndpointView::of(&endpoint)))
        }
        _ => Err(ApiError::NotFound("No such route.".into())),
    }
}
