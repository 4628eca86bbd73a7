//! A project's own webhooks: its developer's endpoints (each with its own signing secret), the
//! fan-out of every billing event to the endpoints that take it (kept, then queued: never sent
//! on a request's path), and the delivery of one queued event to one endpoint, signed by the
//! Standard Webhooks specification, tried again with backoff, its attempts kept 30 days.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::events::OutgoingEvent;
use crate::domain::events::EventKind;
use crate::domain::records::now_ms;
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::domain::webhooks::{
    after_attempt, check_url, new_secret, next_attempt, signature, valid_event_types, verdict,
    Attempt, Endpoint, Verdict, MAX_ENDPOINTS,
};
use crate::services::Failure;
use crate::App;

const ATTEMPTS: usize = 5;

/// Said when Coffer disabled one of the project's endpoints.
pub const ENDPOINT_DISABLED: &str = "webhook.endpoint_disabled";

/// The event types an endpoint may ask for.
pub fn event_types() -> Vec<&'static str> {
    EventKind::ALL
        .iter()
        .map(|kind| kind.name())
        .chain([ENDPOINT_DISABLED])
        .collect()
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    new_secret(&bytes)
}

/// A number in 0..1 for the retry jitter.
fn jitter() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    f64::from(u16::from_le_bytes([bytes[0], bytes[1]])) / f64::from(u16::MAX)
}

fn checked_types(events: Option<Vec<String>>) -> Result<Option<Vec<String>>, Failure> {
    if let Some(types) = &events {
        valid_event_types(types, &event_types()).map_err(Failure::invalid)?;
    }
    Ok(events)
}

/// A new endpoint, and its signing secret (shown this once).
pub async fn create(
    app: &App,
    scope: &Scope,
    url: &str,
    events: Option<Vec<String>>,
) -> Result<(Endpoint, String), Failure> {
    check_url(url, app.config.webhooks_local).map_err(Failure::invalid)?;
    let events = checked_types(events)?;
    let store = app.store_for(scope);
    let secret = random_secret();
    let endpoint = Endpoint {
        id: format!("ep_{}", uuid::Uuid::new_v4().simple()),
        url: url.to_owned(),
        events,
        enabled: true,
        disabled_reason: None,
        secrets: vec![crate::domain::webhooks::SigningSecret {
            secret: secret.clone(),
            expires_at: None,
        }],
        created_at: now_ms() / 1000,
        failing_since: None,
        last_failed_at: None,
    };
    // The count and the endpoint in one transaction: concurrent adds never pass the cap.
    if !store.add_webhook_endpoint(&endpoint, MAX_ENDPOINTS).await? {
        return Err(Failure::Conflict(format!(
            "A project has at most {MAX_ENDPOINTS} webhook endpoints in a mode."
        )));
    }
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    Ok((endpoint, secret))
}

pub async fn list(app: &App, scope: &Scope) -> Result<Vec<Endpoint>, Failure> {
    let mut endpoints: Vec<Endpoint> = app
        .store_for(scope)
        .webhook_endpoints()
        .await?
        .into_iter()
        .map(|(endpoint, _)| endpoint)
        .collect();
    endpoints.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(endpoints)
}

pub async fn get(app: &App, scope: &Scope, id: &str) -> Result<Endpoint, Failure> {
    app.store_for(scope)
        .webhook_endpoint(id)
        .await?
        .map(|(endpoint, _)| endpoint)
        .ok_or_else(|| Failure::NotFound("Unknown webhook endpoint.".into()))
}

/// What a developer changes of an endpoint; `None` leaves it.
#[derive(Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    /// `Some(None)`: every event type.
    pub events: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// Changes an endpoint (a new secret: `rotate`). Turning it on again starts it afresh.
pub async fn update(
    app: &App,
    scope: &Scope,
    id: &str,
    change: EndpointChange,
) -> Result<Endpoint, Failure> {
    if let Some(url) = &change.url {
        check_url(url, app.config.webhooks_local).map_err(Failure::invalid)?;
    }
    let events = change.events.map(checked_types).transpose()?;
    modify(app, scope, id, |mut endpoint| {
        if let Some(url) = &change.url {
            endpoint.url = url.clone();
        }
        if let Some(events) = &events {
            endpoint.events = events.clone();
        }
        if let Some(enabled) = change.enabled {
            if enabled && !endpoint.enabled {
                endpoint.disabled_reason = None;
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
        }
        endpoint
    })
    .await
}

/// A new signing secret (shown this once); the current one signs beside it for a day.
pub async fn rotate(app: &App, scope: &Scope, id: &str) -> Result<(Endpoint, String), Failure> {
    let fresh = random_secret();
    let now = now_ms() / 1000;
    let endpoint = modify(app, scope, id, |endpoint| {
        endpoint.rotated(fresh.clone(), now)
    })
    .await?;
    tracing::info!(endpoint_id = %id, "webhook signing secret rotated");
    Ok((endpoint, fresh))
}

pub async fn delete(app: &App, scope: &Scope, id: &str) -> Result<(), Failure> {
    get(app, scope, id).await?;
    app.store_for(scope).delete_webhook_endpoint(id).await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(())
}

async fn modify(
    app: &App,
    scope: &Scope,
    id: &str,
    change: impl Fn(Endpoint) -> Endpoint,
) -> Result<Endpoint, Failure> {
    let store = app.store_for(scope);
    for _ in 0..ATTEMPTS {
        let (endpoint, version) = store
            .webhook_endpoint(id)
            .await?
            .ok_or_else(|| Failure::NotFound("Unknown webhook endpoint.".into()))?;
        let next = change(endpoint);
        if store.put_webhook_endpoint(&next, Some(version)).await? {
            return Ok(next);
        }
    }
    Err(Failure::Unavailable(
        "the webhook endpoint kept changing".into(),
    ))
}

/// One delivery on the queue: an event to an endpoint, its attempt, when its first attempt was
/// made and when this one is due.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Delivery {
    project: String,
    mode: String,
    endpoint: String,
    event: String,
    #[serde(rename = "type")]
    event_type: String,
    attempt: u32,
    /// Unix seconds of the first attempt (0: not made yet).
    first: i64,
    /// Unix milliseconds when it is due.
    due: i64,
}

impl Delivery {
    fn scope(&self) -> Option<Scope> {
        Some(Scope::new(
            ProjectId::parse(&self.project)?,
            Mode::parse(&self.mode)?,
        ))
    }

    /// The message, its delay in whole seconds, rounded up (SQS never hands it over early), and
    /// its tenant: the project's mode, so that one project's backlog never delays another's.
    fn message(&self, now_ms: i64) -> Option<crate::adapters::queue::Message> {
        let delay = ((self.due - now_ms).max(0) + 999).div_euclid(1000);
        serde_json::to_string(self)
            .ok()
            .map(|body| crate::adapters::queue::Message {
                body,
                delay_secs: delay,
                tenant: format!("{}#{}", self.project, self.mode),
            })
    }
}

/// The scope an event names (`project`, `mode`).
fn scope_of(detail: &Value) -> Option<Scope> {
    Some(Scope::new(
        ProjectId::parse(detail.get("project")?.as_str()?)?,
        Mode::parse(detail.get("mode")?.as_str()?)?,
    ))
}

/// Queues every event for each enabled endpoint of its project's mode that takes its type, the
/// event kept first for the delivery to read (and for re-sending). A failure is returned so
/// that the stream batch goes on from these events again (delivered twice at worst, with the
/// same `webhook-id`).
pub async fn fan_out(app: &App, events: &[OutgoingEvent]) -> Result<usize, Failure> {
    let Some(queue) = app.deliveries.as_ref() else {
        return Ok(0);
    };
    let mut endpoints: HashMap<Scope, Vec<Endpoint>> = HashMap::new();
    let mut messages = Vec::new();
    let now = now_ms();
    for event in events {
        let Some(scope) = scope_of(&event.detail) else {
            continue;
        };
        if !endpoints.contains_key(&scope) {
            let found = app.store_for(&scope).webhook_endpoints().await?;
            endpoints.insert(scope.clone(), found.into_iter().map(|(e, _)| e).collect());
        }
        let of_scope = endpoints.get(&scope).map(Vec::as_slice).unwrap_or_default();
        // A project with endpoints keeps every event (30 days), so that any can be re-sent.
        if of_scope.is_empty() {
            continue;
        }
        let wanting: Vec<&Endpoint> = of_scope
            .iter()
            .filter(|endpoint| endpoint.wants(&event.detail_type))
            .collect();
        let id = event
            .detail
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::to_string(&event.detail)
            .map_err(|e| Failure::Internal(format!("event could not be written: {e}")))?;
        app.store_for(&scope).keep_webhook_event(&id, &body).await?;
        for endpoint in wanting {
            let delivery = Delivery {
                project: scope.project.as_str().to_owned(),
                mode: scope.mode.as_str().to_owned(),
                endpoint: endpoint.id.clone(),
                event: id.clone(),
                event_type: event.detail_type.clone(),
                attempt: 1,
                first: 0,
                due: now,
            };
            messages.extend(delivery.message(now));
        }
    }
    queue.send(&messages).await?;
    Ok(messages.len())
}

/// Sends an event again to an endpoint (a developer's re-send): a new delivery, first attempt
/// now.
pub async fn resend(
    app: &App,
    scope: &Scope,
    endpoint_id: &str,
    event_id: &str,
) -> Result<(), Failure> {
    let endpoint = get(app, scope, endpoint_id).await?;
    if !endpoint.enabled {
        return Err(Failure::Conflict(
            "The endpoint is disabled: turn it on (PUT enabled: true) to send to it.".into(),
        ));
    }
    let queue = app
        .deliveries
        .as_ref()
        .ok_or_else(|| Failure::Unavailable("no webhook queue is configured".into()))?;
    let body = app
        .store_for(scope)
        .webhook_event(event_id)
        .await?
        .ok_or_else(|| Failure::NotFound("Unknown event (events are kept 30 days).".into()))?;
    let event_type = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let now = now_ms();
    let delivery = Delivery {
        project: scope.project.as_str().to_owned(),
        mode: scope.mode.as_str().to_owned(),
        endpoint: endpoint.id,
        event: event_id.to_owned(),
        event_type,
        attempt: 1,
        first: 0,
        due: now,
    };
    queue
        .send(&delivery.message(now).into_iter().collect::<Vec<_>>())
        .await?;
    tracing::info!(endpoint_id = %endpoint_id, event_id = %event_id, "webhook re-send queued");
    Ok(())
}

/// An endpoint's attempts, newest first, and the cursor of the next page.
pub async fn attempts(
    app: &App,
    scope: &Scope,
    endpoint_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Attempt>, Option<String>), Failure> {
    get(app, scope, endpoint_id).await?;
    if cursor.is_some_and(|c| c.len() > 200 || !c.bytes().all(|b| b.is_ascii_graphic())) {
        return Err(Failure::invalid("cursor is not valid."));
    }
    let (page, more) = app
        .store_for(scope)
        .webhook_attempts(endpoint_id, limit, cursor)
        .await?;
    let next = more
        .then(|| page.last().map(|(sk, _)| sk.clone()))
        .flatten();
    Ok((page.into_iter().map(|(_, a)| a).collect(), next))
}

/// What one queued message came to: done (delivered, given up, or queued again), or to be
/// handed over again by the queue (this function could not do its part).
pub async fn deliver_message(app: &App, body: &str) -> Result<(), Failure> {
    let Ok(delivery) = serde_json::from_str::<Delivery>(body) else {
        tracing::warn!("a webhook delivery message could not be read; dropped");
        return Ok(());
    };
    let Some(scope) = delivery.scope() else {
        tracing::warn!("a webhook delivery names no scope; dropped");
        return Ok(());
    };
    // The queue is needed only to send a delivery again (not due yet, or failed).
    let queue = || {
        app.deliveries
            .as_ref()
            .ok_or_else(|| Failure::Unavailable("no webhook queue is configured".into()))
    };
    let now = now_ms();
    // Not due yet (SQS delays at most 15 minutes): back on the queue for the rest of the wait.
    if delivery.due > now + 50 {
        let again: Vec<_> = delivery.message(now).into_iter().collect();
        return queue()?.send(&again).await.map_err(Failure::from);
    }
    let store = app.store_for(&scope);
    let Some((endpoint, _)) = store.webhook_endpoint(&delivery.endpoint).await? else {
        return Ok(()); // deleted
    };
    if !endpoint.enabled {
        return Ok(());
    }
    let Some(body) = store.webhook_event(&delivery.event).await? else {
        tracing::warn!(event_id = %delivery.event, "webhook event no longer kept; dropped");
        return Ok(());
    };
    let at_secs = now / 1000;
    let first = if delivery.first == 0 {
        at_secs
    } else {
        delivery.first
    };
    let answer = match check_url(&endpoint.url, app.config.webhooks_local) {
        // Checked again at send time (the rules may be stricter than when it was saved).
        Err(why) => crate::adapters::outbound::Answer::refused(why),
        Ok(_) => {
            let headers = [
                ("webhook-id", delivery.event.clone()),
                ("webhook-timestamp", at_secs.to_string()),
                (
                    "webhook-signature",
                    signature(
                        &endpoint.signing_secrets(at_secs),
                        &delivery.event,
                        at_secs,
                        body.as_bytes(),
                    ),
                ),
            ];
            app.outbound()
                .post(&endpoint.url, &headers, Bytes::from(body))
                .await
        }
    };
    // An address a delivery never goes to is not tried again (the endpoint's URL must change).
    let judged = if answer.refused {
        Verdict::Refused
    } else {
        verdict(answer.status)
    };
    let scale = app.config.webhook_retry_scale;
    // The endpoint's failing time, or its end (a 410; three days failing).
    let mut disabled = false;
    for _ in 0..ATTEMPTS {
        let Some((current, version)) = store.webhook_endpoint(&endpoint.id).await? else {
            break;
        };
        let (next, off) = after_attempt(current.clone(), &judged, at_secs, scale);
        if next == current || store.put_webhook_endpoint(&next, Some(version)).await? {
            disabled = off;
            break;
        }
    }
    let retry_at = match judged {
        Verdict::Retry if !disabled => {
            // A busy receiver's Retry-After (429, 503) is a floor under the schedule's wait.
            let asked = matches!(answer.status, Some(429 | 503))
                .then_some(answer.retry_after_secs)
                .flatten();
            next_attempt(first, delivery.attempt, now_ms(), scale, jitter(), asked)
        }
        _ => None,
    };
    let outcome = match (&judged, retry_at) {
        (Verdict::Delivered, _) => "delivered",
        (Verdict::Gone, _) => "gone",
        (Verdict::Retry, Some(_)) => "retrying",
        _ => "failed",
    };
    let attempt = Attempt {
        event_id: delivery.event.clone(),
        event_type: delivery.event_type.clone(),
        attempt: delivery.attempt,
        at_ms: now,
        status: answer.status,
        latency_ms: answer.latency_ms,
        outcome: outcome.to_owned(),
        answer: answer.text,
    };
    store.record_webhook_attempt(&endpoint.id, &attempt).await?;
    tracing::info!(
        endpoint_id = %endpoint.id,
        event_id = %delivery.event,
        attempt = delivery.attempt,
        status = ?attempt.status,
        latency_ms = attempt.latency_ms,
        outcome,
        "webhook delivery attempted"
    );
    if disabled {
        tracing::warn!(endpoint_id = %endpoint.id, "webhook endpoint disabled");
        tell_disabled(app, &scope, &endpoint, outcome).await;
    }
    if let Some(due) = retry_at {
        let next = Delivery {
            attempt: delivery.attempt.saturating_add(1),
            first,
            due,
            ..delivery
        };
        let again: Vec<_> = next.message(now_ms()).into_iter().collect();
        queue()?.send(&again).await?;
    }
    Ok(())
}

/// Tells the developer an endpoint was disabled: `webhook.endpoint_disabled` on the bus, and to
/// the project's other endpoints that take every event.
async fn tell_disabled(app: &App, scope: &Scope, endpoint: &Endpoint, outcome: &str) {
    let at = now_ms();
    let detail = serde_json::json!({
        "id": format!("whd_{}_{}", endpoint.id, at),
        "type": ENDPOINT_DISABLED,
        "project": scope.project.as_str(),
        "mode": scope.mode.as_str(),
        "account": Value::Null,
        "occurredAt": crate::domain::records::rfc3339(at),
        "data": {
            "endpointId": endpoint.id,
            "reason": if outcome == "gone" { "gone" } else { "failing" },
        },
    });
    let event = OutgoingEvent {
        detail_type: ENDPOINT_DISABLED.into(),
        time_secs: at / 1000,
        detail,
    };
    if let Some(bus) = app.events.as_ref() {
        if let Err(err) = bus.publish(std::slice::from_ref(&event)).await {
            tracing::warn!(cause = %err, "webhook.endpoint_disabled could not be published");
        }
    }
    if let Err(err) = fan_out(app, std::slice::from_ref(&event)).await {
        tracing::warn!(cause = %err.cause(), "webhook.endpoint_disabled could not be queued");
    }
}
