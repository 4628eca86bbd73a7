//! **A test double, not Stripe.** localstripe has no Checkout Sessions, no customer portal and
//! no ephemeral keys. This small server stands in front of it: it answers only those routes
//! (plus `/_double/*` for tests), records the parameters of each, and forwards every other
//! request to localstripe unchanged. Its objects have the fields Coffer reads, nothing more.
//!
//! - `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`
//! - `POST /v1/billing_portal/sessions`, `POST /v1/billing_portal/configurations`
//! - `POST /v1/ephemeral_keys` (requires `Stripe-Version`, as Stripe does)
//! - `POST /_double/checkout/{id}/complete` `card=<number>`: pays the session through
//!   localstripe as Checkout would (a PaymentIntent, or a subscription for the customer), and
//!   returns the completed session for a test to wrap in a signed event
//! - `POST /v1/billing/meter_events`: billing meter events (localstripe has no meters). As
//!   Stripe does, an `identifier` seen before is not counted again (the first answer is
//!   returned), and a missing event name, customer or value is a 400
//! - `POST /v1/subscriptions/{id}` with `proration_behavior` or `payment_behavior` (localstripe
//!   refuses both, and always leaves an "unused time" credit item when a price changes):
//!   - `proration_behavior=always_invoice` on a dearer price: the difference is invoiced and paid
//!     at once with the customer's default card. **The double charges the whole difference of
//!     the two prices**, not Stripe's share for the time left in the period.
//!   - paid: the price changes. Not paid, with `payment_behavior=pending_if_incomplete`: the
//!     price stays, and the answer carries `pending_update` and the open invoice as
//!     `latest_invoice`. The change is made once that invoice is paid: the double looks when
//!     the subscription is read or the invoice is paid through it.
//!   - `proration_behavior=none`: the price changes, and no proration item is left behind;
//!     `create_prorations` (Stripe's default) keeps localstripe's credit for the unused time.
//! - Any request whose secret key contains `_rolled_` is refused with 401 `api_key_expired`, as
//!   Stripe refuses a key that was rolled (localstripe accepts every key): a test gives a
//!   deployment such a key to show that a refused key is read again once rotated
//! - `GET /v1/payment_intents` with `created[gte]`/`created[lt]` (localstripe refuses a
//!   `created` filter on PaymentIntents, and lists oldest first): the intents localstripe holds,
//!   filtered by creation time and listed newest first as Stripe lists them, `limit` a page after
//!   `starting_after`. The later pages of a listing come from the list read for its first page
//!   (a minute at most), so paging through thousands of intents stays linear
//! - Any other `POST` with an `Idempotency-Key` (localstripe ignores the header): the first
//!   answer is kept and a repeat with the same key and body gets it again, as Stripe does; the
//!   same key with another body is a 400 `idempotency_error`, and while the first is in flight a
//!   409. So a create retried after its answer was lost makes one object
//! - `POST /v1/payment_intents/{id}/confirm` with `off_session` (localstripe refuses the
//!   parameter): confirmed through localstripe without it; when localstripe then waits for the
//!   user to authenticate (3-D Secure cards), the double answers as Stripe does for a payment
//!   made while the user is away: a 402 `card_error` with code `authentication_required` (the
//!   intent stays waiting, so the user can still complete it with Stripe.js). Recorded, so a
//!   test counts the charges started
//! - `POST /_double/lose-answers` `path_suffix=<end of a path>&count=<n>`: the next `n` `POST`s
//!   whose path ends so are done (through localstripe, their answers kept by idempotency key as
//!   always) and then answered with a 500 `api_error`, as when Stripe did the work and the
//!   answer never reached Coffer (a count of 0 stops it). A test injects the fault between
//!   Stripe's answer and Coffer's write with it
//! - `POST /v1/subscriptions`, `GET /v1/subscriptions/{id}`: a subscription made with
//!   `trial_period_days` that localstripe leaves `incomplete` with no invoice is answered as
//!   Stripe shows it, `trialing` with `trial_start` and `trial_end` (its card is saved later)
//! - `GET /_double/requests`: what was asked of the double so far
//! - `GET /_double/meter_events`: the meter events it accepted, each once

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A request made with an idempotency key: its path, its body, and once answered, the answer's
/// status and body.
type KeptRequest = (String, Bytes, Option<(u16, Bytes)>);

#[derive(Default)]
struct State {
    sessions: HashMap<String, Value>,
    /// Price changes waiting for their invoice to be paid: invoice id → (subscription, form).
    pending_updates: HashMap<String, (String, Vec<(String, String)>)>,
    recorded: Vec<Value>,
    /// Accepted meter events, in the order they came.
    meter_events: Vec<Value>,
    /// Their identifiers (a resent identifier is found at once, however many there are).
    meter_identifiers: std::collections::HashSet<String>,
    /// Answers kept by idempotency key: the request (path and body) and, once answered, the
    /// status and body (`None` while in flight).
    idempotent: HashMap<String, KeptRequest>,
    /// Answers to lose: a path's ending and how many more.
    lose_answers: Vec<(String, u32)>,
    /// PaymentIntent listings by their `created` bounds: when read, and the intents newest first.
    intent_lists: HashMap<(i64, i64), (std::time::Instant, Vec<Value>)>,
}

struct Double {
    upstream: String,
    own_url: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// Starts the double on a free local port in front of `upstream`; returns its base URL.
pub async fn start(upstream: &str) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, upstream.to_owned()));
    Ok(url)
}

/// Serves the double on `listener` until the process ends.
pub async fn serve(listener: TcpListener, upstream: String) {
    let own_url = listener
        .local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let double = Arc::new(Double {
        upstream: upstream.trim_end_matches('/').to_owned(),
        own_url,
        http: reqwest::Client::new(),
        state: Mutex::new(State::default()),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let double = double.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(double.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: u16, body: &Value) -> Reply {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

fn stripe_error(status: u16, message: &str) -> Reply {
    reply(
        status,
        &json!({"error": {"type": "invalid_request_error", "message": message}}),
    )
}

/// Form pairs as a flat map (`metadata[a]` stays as it is).
fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The `prefix[key]` pairs of a form as a map.
fn nested(params: &HashMap<String, String>, prefix: &str) -> serde_json::Map<String, Value> {
    params
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('['))
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|key| !key.contains('['))
                .map(|key| (key.to_owned(), Value::String(v.clone())))
        })
        .collect()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn handle(double: Arc<Double>, req: hyper::Request<Incoming>) -> Result<Reply, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let rolled = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("_rolled_"));
    if rolled {
        return Ok(reply(
            401,
            &json!({"error": {"type": "invalid_request_error", "code": "api_key_expired",
                              "message": "Expired API Key provided."}}),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(stripe_error(400, "unreadable body")),
    };
    let version = headers
        .get("stripe-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let update_params = form(&body);
    let behaviour_update = method == "POST"
        && path.starts_with("/v1/subscriptions/")
        && (update_params.contains_key("proration_behavior")
            || update_params.contains_key("payment_behavior"));
    let off_session_confirm = method == "POST"
        && path.starts_with("/v1/payment_intents/")
        && path.ends_with("/confirm")
        && update_params.contains_key("off_session");
    let ours = behaviour_update
        || off_session_confirm
        || path.starts_with("/v1/checkout/sessions")
        || path == "/v1/billing_portal/sessions"
        || path == "/v1/billing_portal/configurations"
        || path == "/v1/ephemeral_keys"
        || path == "/v1/billing/meter_events";
    if ours {
        let params = form(&body);
        if let Ok(mut state) = double.state.lock() {
            state.recorded.push(json!({
                "method": method, "path": path, "params": params, "stripeVersion": version,
            }));
        }
    }
    let answer = match (method.as_str(), path.as_str()) {
        ("POST", "/v1/checkout/sessions") => create_session(&double, &form(&body)),
        ("GET", p) if p.starts_with("/v1/checkout/sessions/") => {
            let id = p.trim_start_matches("/v1/checkout/sessions/");
            let found = double
                .state
                .lock()
                .ok()
                .and_then(|s| s.sessions.get(id).cloned());
            match found {
                Some(session) => reply(200, &session),
                None => stripe_error(404, "No such checkout.session"),
            }
        }
        ("POST", "/v1/billing_portal/sessions") => {
            let params = form(&body);
            let id = new_id("bps_");
            reply(
                200,
                &json!({
                    "id": id, "object": "billing_portal.session",
                    "customer": params.get("customer"), "return_url": params.get("return_url"),
                    "url": format!("{}/portal/{id}", double.own_url),
                }),
            )
        }
        ("POST", "/v1/billing_portal/configurations") => {
            let params = form(&body);
            if !params.keys().any(|k| k.starts_with("features[")) {
                stripe_error(400, "features is required")
            } else {
                reply(
                    200,
                    &json!({"id": new_id("bpc_"), "object": "billing_portal.configuration"}),
                )
            }
        }
        ("POST", "/v1/ephemeral_keys") => {
            let params = form(&body);
            match (version, params.get("customer")) {
                (Some(version), Some(customer)) => reply(
                    200,
                    &json!({
                        "id": new_id("ephkey_"), "object": "ephemeral_key",
                        "secret": new_id("ek_test_"), "livemode": false,
                        "associated_objects": [{"type": "customer", "id": customer}],
                        "stripeVersion": version,
                    }),
                ),
                (None, _) => stripe_error(400, "Stripe-Version header is required"),
                (_, None) => stripe_error(400, "customer is required"),
            }
        }
        ("POST", "/v1/billing/meter_events") => {
            match idempotency_begin(&double, &method, &path, &headers, &body) {
                Err(reply) => *reply,
                Ok(hold) => {
                    let answer = meter_event(&double, &form(&body));
                    let status = answer.status().as_u16();
                    let bytes = answer
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    hold.finish(Some((status, bytes.clone())));
                    json_reply(status, bytes)
                }
            }
        }
        ("GET", "/v1/payment_intents")
            if query.as_deref().is_some_and(|q| q.contains("created")) =>
        {
            let params = form(query.as_deref().unwrap_or_default().as_bytes());
            match list_intents(&double, &params).await {
                Ok(page) => reply(200, &page),
                Err((status, message)) => stripe_error(status, &message),
            }
        }
        ("GET", "/_double/meter_events") => {
            let accepted = double
                .state
                .lock()
                .map(|s| s.meter_events.clone())
                .unwrap_or_default();
            reply(200, &Value::Array(accepted))
        }
        ("POST", "/_double/lose-answers") => {
            let params = form(&body);
            let count = params
                .get("count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            match (params.get("path_suffix"), double.state.lock()) {
                (Some(suffix), Ok(mut state)) => {
                    // A count of 0 stops losing them.
                    state.lose_answers.retain(|(other, _)| other != suffix);
                    state.lose_answers.push((suffix.clone(), count));
                    reply(200, &json!({"path_suffix": suffix, "count": count}))
                }
                _ => stripe_error(400, "path_suffix is required"),
            }
        }
        ("GET", "/_double/requests") => {
            let recorded = double
                .state
                .lock()
                .map(|s| s.recorded.clone())
                .unwrap_or_default();
            reply(200, &Value::Array(recorded))
        }
        ("POST", p) if p.starts_with("/_double/checkout/") && p.ends_with("/complete") => {
            let id = p
                .trim_start_matches("/_double/checkout/")
                .trim_end_matches("/complete");
            complete(&double, id, &form(&body)).await
        }
        ("POST", p) if off_session_confirm => {
            confirm_off_session(&double, p, query.as_deref(), &headers, &body).await
        }
        ("POST", p) if behaviour_update => {
            let id = p.trim_start_matches("/v1/subscriptions/");
            match update_subscription(&double, id, update_params).await {
                Ok(subscription) => reply(200, &subscription),
                Err(message) => stripe_error(400, &message),
            }
        }
        ("GET", p) if p.starts_with("/v1/subscriptions/") => {
            let id = p.trim_start_matches("/v1/subscriptions/");
            if let Err(message) = settle_pending_updates(&double, Some(id)).await {
                return Ok(stripe_error(502, &message));
            }
            trialing(forward(&double, &method, &path, query.as_deref(), &headers, body).await).await
        }
        ("POST", "/v1/subscriptions") => {
            trialing(forward(&double, &method, &path, query.as_deref(), &headers, body).await).await
        }
        ("POST", p) if p.starts_with("/v1/invoices/") && p.ends_with("/pay") => {
            let answer = forward(&double, &method, &path, query.as_deref(), &headers, body).await;
            if let Err(message) = settle_pending_updates(&double, None).await {
                return Ok(stripe_error(502, &message));
            }
            answer
        }
        _ => forward(&double, &method, &path, query.as_deref(), &headers, body).await,
    };
    if method == "POST" && !path.starts_with("/_double/") && lose_answer(&double, &path) {
        return Ok(reply(
            500,
            &json!({"error": {"type": "api_error",
                              "message": "The test double lost this answer: the request was done."}}),
        ));
    }
    Ok(answer)
}

/// A subscription in its trial as Stripe shows it: localstripe leaves one made with
/// `trial_period_days` `incomplete` with no invoice; Stripe says `trialing`, with `trial_end`.
async fn trialing(answer: Reply) -> Reply {
    let (parts, body) = answer.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let Ok(mut subscription) = serde_json::from_slice::<Value>(&bytes) else {
        return hyper::Response::from_parts(parts, Full::new(bytes));
    };
    let days = subscription["trial_period_days"].as_i64();
    let start = subscription["start_date"].as_i64();
    if let (Some(days), Some(start)) = (days, start) {
        if subscription["status"] == "incomplete" && subscription["latest_invoice"].is_null() {
            subscription["status"] = json!("trialing");
            subscription["trial_start"] = json!(start);
            subscription["trial_end"] = json!(start + days * 86_400);
        }
    }
    hyper::Response::from_parts(parts, Full::new(Bytes::from(subscription.to_string())))
}

/// Whether the answer to a `POST` to `path` is to be lost (one fewer to lose then).
fn lose_answer(double: &Double, path: &str) -> bool {
    let Ok(mut state) = double.state.lock() else {
        return false;
    };
    let Some(rule) = state
        .lose_answers
        .iter_mut()
        .find(|(suffix, left)| *left > 0 && path.ends_with(suffix.as_str()))
    else {
        return false;
    };
    rule.1 -= 1;
    true
}

/// A page of the intents created in `[created[gte], created[lt])`, newest first.
async fn list_intents(
    double: &Double,
    params: &HashMap<String, String>,
) -> Result<Value, (u16, String)> {
    let known = ["created[gte]", "created[lt]", "limit", "starting_after"];
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err((400, format!("Received unknown parameter: {unknown}")));
    }
    let bound = |name: &str, default: i64| -> Result<i64, (u16, String)> {
        params.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| (400, format!("Invalid integer: {name}")))
        })
    };
    let (from, to) = (bound("created[gte]", 0)?, bound("created[lt]", i64::MAX)?);
    let limit = usize::try_from(bound("limit", 10)?.clamp(1, 100)).unwrap_or(10);
    let after = params.get("starting_after");
    let cached = after.and_then(|_| {
        let state = double.state.lock().ok()?;
        let (read, list) = state.intent_lists.get(&(from, to))?;
        (read.elapsed() < std::time::Duration::from_secs(60)).then(|| list.clone())
    });
    let list = match cached {
        Some(list) => list,
        None => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/payment_intents?limit=100&starting_after={c}"),
                    None => "/v1/payment_intents?limit=100".to_owned(),
                };
                let page = upstream_get(double, &path).await.map_err(|e| (502, e))?;
                let data = page["data"].as_array().cloned().unwrap_or_default();
                cursor = data
                    .last()
                    .and_then(|i| i["id"].as_str())
                    .map(str::to_owned);
                all.extend(data);
                if page["has_more"] != true || cursor.is_none() {
                    break;
                }
            }
            // localstripe lists oldest first: newest first, as Stripe does.
            all.reverse();
            all.retain(|i| i["created"].as_i64().is_some_and(|c| c >= from && c < to));
            all.sort_by_key(|i| std::cmp::Reverse(i["created"].as_i64().unwrap_or(0)));
            if let Ok(mut state) = double.state.lock() {
                state
                    .intent_lists
                    .insert((from, to), (std::time::Instant::now(), all.clone()));
            }
            all
        }
    };
    let start = match after {
        None => 0,
        Some(id) => match list.iter().position(|i| i["id"] == id.as_str()) {
            Some(at) => at + 1,
            None => return Err((400, format!("No such payment_intent: '{id}'"))),
        },
    };
    let page: Vec<Value> = list.iter().skip(start).take(limit).cloned().collect();
    Ok(json!({
        "object": "list",
        "url": "/v1/payment_intents",
        "has_more": start + page.len() < list.len(),
        "data": page,
    }))
}

async fn upstream_get(double: &Double, path: &str) -> Result<Value, String> {
    upstream(double.http.get(format!("{}{path}", double.upstream)), path).await
}

/// A subscription update with proration and payment behaviours, as Stripe makes it.
async fn update_subscription(
    double: &Double,
    id: &str,
    mut params: HashMap<String, String>,
) -> Result<Value, String> {
    let proration = params.remove("proration_behavior");
    let payment = params.remove("payment_behavior");
    if let Some(value) = &proration {
        if !["always_invoice", "create_prorations", "none"].contains(&value.as_str()) {
            return Err(format!("Invalid proration_behavior: {value}"));
        }
    }
    if payment.as_deref() == Some("pending_if_incomplete")
        && params.keys().any(|k| k.starts_with("metadata["))
    {
        // As Stripe's API versions before 2026-05-27 answer.
        return Err("metadata is not supported with payment_behavior=pending_if_incomplete".into());
    }
    let forwarded: Vec<(String, String)> = params.into_iter().collect();
    let current = upstream_get(double, &format!("/v1/subscriptions/{id}")).await?;
    let customer = current["customer"].as_str().unwrap_or_default().to_owned();
    let old_amount = current["plan"]["amount"].as_i64().unwrap_or(0);
    let new_price = forwarded
        .iter()
        .find(|(k, _)| k == "items[0][plan]" || k == "items[0][price]")
        .map(|(_, v)| v.clone());
    let new_amount = match &new_price {
        Some(price) => upstream_get(double, &format!("/v1/plans/{price}")).await?["amount"]
            .as_i64()
            .unwrap_or(0),
        None => old_amount,
    };
    let difference = new_amount.saturating_sub(old_amount);
    if proration.as_deref() == Some("always_invoice") && difference > 0 {
        let currency = current["plan"]["currency"]
            .as_str()
            .unwrap_or("usd")
            .to_owned();
        upstream_post(
            double,
            "/v1/invoiceitems",
            &pairs(&[
                ("customer", &customer),
                ("amount", &difference.to_string()),
                ("currency", &currency),
                ("subscription", id),
                ("proration", "true"),
                (
                    "description",
                    "Proration (test double: the whole difference)",
                ),
            ]),
        )
        .await?;
        let invoice = upstream_post(
            double,
            "/v1/invoices",
            &pairs(&[("customer", &customer), ("subscription", id)]),
        )
        .await?;
        let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
        let paid = upstream_post(double, &format!("/v1/invoices/{invoice_id}/pay"), &[])
            .await
            .is_ok_and(|invoice| invoice["status"] == "paid");
        if !paid && payment.as_deref() == Some("pending_if_incomplete") {
            if let Ok(mut state) = double.state.lock() {
                state
                    .pending_updates
                    .insert(invoice_id.clone(), (id.to_owned(), forwarded));
            }
            let mut subscription = upstream_get(double, &format!("/v1/subscriptions/{id}")).await?;
            subscription["latest_invoice"] = json!(invoice_id);
            subscription["pending_update"] = json!({
                "expires_at": coffer::domain::records::now_ms() / 1000 + 23 * 3600,
                "subscription_items": [{"price": new_price}],
            });
            return Ok(subscription);
        }
    }
    // Stripe's default (`create_prorations`) leaves a credit for the unused time, as
    // localstripe does; `none` and `always_invoice` leave none behind.
    let keep_credit = proration
        .as_deref()
        .is_none_or(|p| p == "create_prorations");
    change_price(double, id, &customer, &forwarded, keep_credit).await?;
    upstream_get(double, &format!("/v1/subscriptions/{id}")).await
}

/// Makes a price change at localstripe, then takes away the "unused time" credit it leaves
/// unless `keep_credit`.
async fn change_price(
    double: &Double,
    id: &str,
    customer: &str,
    form: &[(String, String)],
    keep_credit: bool,
) -> Result<(), String> {
    upstream_post(double, &format!("/v1/subscriptions/{id}"), form).await?;
    if keep_credit {
        return Ok(());
    }
    let items = upstream_get(double, &format!("/v1/invoiceitems?customer={customer}")).await?;
    for item in items["data"].as_array().into_iter().flatten() {
        let leftover = item["invoice"].is_null()
            && item["proration"] == true
            && item["subscription"] == id
            && item["amount"].as_i64().unwrap_or(0) < 0;
        if let (true, Some(item_id)) = (leftover, item["id"].as_str()) {
            let response = double
                .http
                .delete(format!("{}/v1/invoiceitems/{item_id}", double.upstream))
                .bearer_auth("sk_test_coffer_double")
                .send()
                .await
                .map_err(|e| format!("localstripe: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("localstripe kept the proration item {item_id}"));
            }
        }
    }
    Ok(())
}

/// A form as sent upstream.
type Form = Vec<(String, String)>;

/// Makes the price changes whose invoice is paid by now (of one subscription, or all).
async fn settle_pending_updates(double: &Double, subscription: Option<&str>) -> Result<(), String> {
    let waiting: Vec<(String, String, Form)> = double
        .state
        .lock()
        .map(|s| {
            s.pending_updates
                .iter()
                .filter(|(_, (sub, _))| subscription.is_none_or(|id| id == sub))
                .map(|(invoice, (sub, form))| (invoice.clone(), sub.clone(), form.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (invoice_id, sub, form) in waiting {
        let invoice = upstream_get(double, &format!("/v1/invoices/{invoice_id}")).await?;
        if invoice["status"] != "paid" {
            continue;
        }
        let taken = double
            .state
            .lock()
            .map(|mut s| s.pending_updates.remove(&invoice_id).is_some())
            .unwrap_or(false);
        if taken {
            let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
            change_price(double, &sub, &customer, &form, false).await?;
        }
    }
    Ok(())
}

/// A billing meter event: counted once per identifier, as Stripe enforces (a repeated
/// identifier is refused with the code `duplicate_meter_event`).
fn meter_event(double: &Double, params: &HashMap<String, String>) -> Reply {
    let payload = nested(params, "payload");
    let (Some(name), Some(_), Some(value)) = (
        params.get("event_name"),
        payload.get("stripe_customer_id"),
        payload.get("value"),
    ) else {
        return stripe_error(
            400,
            "event_name, payload[stripe_customer_id] and payload[value] are required",
        );
    };
    if value.as_str().and_then(|v| v.parse::<f64>().ok()).is_none() {
        return stripe_error(400, "payload[value] must be a number");
    }
    let identifier = params
        .get("identifier")
        .cloned()
        .unwrap_or_else(|| new_id("mev_"));
    let Ok(mut state) = double.state.lock() else {
        return stripe_error(500, "double state poisoned");
    };
    if !state.meter_identifiers.insert(identifier.clone()) {
        // As Stripe answers an identifier it has already recorded: refused, with its code.
        return reply(
            400,
            &json!({"error": {
                "type": "invalid_request_error",
                "code": "duplicate_meter_event",
                "message": format!("An event already exists with identifier {identifier}."),
            }}),
        );
    }
    let event = json!({
        "object": "billing.meter_event",
        "event_name": name,
        "identifier": identifier,
        "payload": payload,
        "timestamp": params.get("timestamp").and_then(|t| t.parse::<i64>().ok()),
        "livemode": false,
    });
    state.meter_events.push(event.clone());
    reply(200, &event)
}

fn create_session(double: &Double, params: &HashMap<String, String>) -> Reply {
    let id = new_id("cs_test_");
    let mode = params.get("mode").cloned().unwrap_or_default();
    let amount: Option<i64> = params
        .get("line_items[0][price_data][unit_amount]")
        .and_then(|a| a.parse().ok());
    let session = json!({
        "id": id, "object": "checkout.session", "mode": mode,
        "url": format!("{}/checkout/{id}", double.own_url),
        "status": "open", "payment_status": "unpaid",
        "customer": params.get("customer"),
        "client_reference_id": params.get("client_reference_id"),
        "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
        "metadata": nested(params, "metadata"),
        "amount_total": amount,
        "currency": params.get("line_items[0][price_data][currency]"),
        "payment_intent": null, "subscription": null,
        "_price": params.get("line_items[0][price]"),
        "_subscription_metadata": nested(params, "subscription_data[metadata]"),
        "_payment_metadata": nested(params, "payment_intent_data[metadata]"),
    });
    if let Ok(mut state) = double.state.lock() {
        state.sessions.insert(id, session.clone());
    }
    reply(200, &session)
}

/// Pays a session through localstripe, as Stripe's hosted page would.
async fn complete(double: &Double, id: &str, params: &HashMap<String, String>) -> Reply {
    let Some(mut session) = double
        .state
        .lock()
        .ok()
        .and_then(|s| s.sessions.get(id).cloned())
    else {
        return stripe_error(404, "No such checkout.session");
    };
    let card = params
        .get("card")
        .cloned()
        .unwrap_or_else(|| "4242424242424242".into());
    let result = match session["mode"].as_str() {
        Some("subscription") => subscribe(double, &session, &card).await,
        _ => pay(double, &session, &card).await,
    };
    let (field, value) = match result {
        Ok(done) => done,
        Err(message) => return stripe_error(402, &message),
    };
    session[field] = Value::String(value);
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    if let Ok(mut state) = double.state.lock() {
        state.sessions.insert(id.to_owned(), session.clone());
    }
    reply(200, &session)
}

async fn upstream_post(
    double: &Double,
    path: &str,
    pairs: &[(String, String)],
) -> Result<Value, String> {
    let request = double
        .http
        .post(format!("{}{path}", double.upstream))
        .form(pairs);
    upstream(request, path).await
}

/// Sends a request to localstripe with the double's key; its JSON when it succeeded.
async fn upstream(request: reqwest::RequestBuilder, path: &str) -> Result<Value, String> {
    let response = request
        .bearer_auth("sk_test_coffer_double")
        .send()
        .await
        .map_err(|e| format!("localstripe: {e}"))?;
    let ok = response.status().is_success();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("localstripe: {e}"))?;
    if ok {
        Ok(body)
    } else {
        Err(format!("localstripe refused {path}: {body}"))
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn card_method(double: &Double, card: &str) -> Result<String, String> {
    let method = upstream_post(
        double,
        "/v1/payment_methods",
        &pairs(&[
            ("type", "card"),
            ("card[number]", card),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
            ("card[cvc]", "123"),
        ]),
    )
    .await?;
    method["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no payment method id".into())
}

async fn pay(
    double: &Double,
    session: &Value,
    card: &str,
) -> Result<(&'static str, String), String> {
    let amount = session["amount_total"].as_i64().unwrap_or(0).to_string();
    let currency = session["currency"].as_str().unwrap_or("usd").to_owned();
    let mut form = pairs(&[("amount", &amount), ("currency", &currency)]);
    if let Some(metadata) = session["_payment_metadata"].as_object() {
        for (k, v) in metadata {
            form.push((
                format!("metadata[{k}]"),
                v.as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let intent = upstream_post(double, "/v1/payment_intents", &form).await?;
    let intent_id = intent["id"].as_str().unwrap_or_default().to_owned();
    let method = card_method(double, card).await?;
    upstream_post(
        double,
        &format!("/v1/payment_intents/{intent_id}"),
        &pairs(&[("payment_method", &method)]),
    )
    .await?;
    upstream_post(
        double,
        &format!("/v1/payment_intents/{intent_id}/confirm"),
        &[],
    )
    .await?;
    Ok(("payment_intent", intent_id))
}

async fn subscribe(
    double: &Double,
    session: &Value,
    card: &str,
) -> Result<(&'static str, String), String> {
    let customer = session["customer"].as_str().unwrap_or_default().to_owned();
    let price = session["_price"].as_str().unwrap_or_default().to_owned();
    let method = card_method(double, card).await?;
    upstream_post(
        double,
        &format!("/v1/payment_methods/{method}/attach"),
        &pairs(&[("customer", &customer)]),
    )
    .await?;
    upstream_post(
        double,
        &format!("/v1/customers/{customer}"),
        &pairs(&[("invoice_settings[default_payment_method]", &method)]),
    )
    .await?;
    let mut form = pairs(&[("customer", &customer), ("items[0][plan]", &price)]);
    if let Some(metadata) = session["_subscription_metadata"].as_object() {
        for (k, v) in metadata {
            form.push((
                format!("metadata[{k}]"),
                v.as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let subscription = upstream_post(double, "/v1/subscriptions", &form).await?;
    Ok((
        "subscription",
        subscription["id"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// An off-session confirmation: localstripe's, without the parameter it refuses, with the
/// answer Stripe gives when the bank asks for the absent user's authentication.
async fn confirm_off_session(
    double: &Double,
    path: &str,
    query: Option<&str>,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Reply {
    let without: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(body).filter(|(name, _)| name != "off_session"))
        .finish();
    let answer = forward(double, "POST", path, query, headers, Bytes::from(without)).await;
    if answer.status() != 200 {
        return answer;
    }
    let Ok(collected) = answer.into_body().collect().await;
    let bytes = collected.to_bytes();
    let intent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if intent["status"] == "requires_action" {
        return reply(
            402,
            &json!({"error": {
                "type": "card_error",
                "code": "authentication_required",
                "message": "This payment required an authentication action to complete, but `off_session` was set to true.",
                "payment_intent": intent,
            }}),
        );
    }
    json_reply(200, bytes)
}

/// Passes a request to localstripe as it came and its answer back as it is.
async fn forward(
    double: &Double,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Reply {
    let hold = match idempotency_begin(double, method, path, headers, &body) {
        Ok(hold) => hold,
        Err(reply) => return *reply,
    };
    let answer = forward_upstream(double, method, path, query, headers, body).await;
    hold.finish(answer.as_ref().ok().cloned());
    match answer {
        Ok((status, bytes)) => json_reply(status, bytes),
        Err(()) => stripe_error(502, "the test double could not reach localstripe"),
    }
}

/// Begins a request that may carry an `Idempotency-Key`: `Err` is the answer already (the first
/// answer again, another body with the key, the first still in flight), `Ok` the request's hold
/// on its key, to finish with its answer. A request that never finishes (its connection
/// dropped, a panic) frees its key when the hold is dropped.
fn idempotency_begin<'a>(
    double: &'a Double,
    method: &str,
    path: &str,
    headers: &hyper::HeaderMap,
    body: &Bytes,
) -> Result<KeyHold<'a>, Box<Reply>> {
    let hold = |key| KeyHold {
        double,
        key,
        finished: false,
    };
    let Some(key) = (method == "POST")
        .then(|| headers.get("idempotency-key").and_then(|v| v.to_str().ok()))
        .flatten()
        .map(str::to_owned)
    else {
        return Ok(hold(None));
    };
    let seen = double
        .state
        .lock()
        .ok()
        .map(|mut state| match state.idempotent.get(&key) {
            // The same parameters, in whatever order they were encoded.
            Some((first_path, first_body, answer)) => Some((
                first_path == path && form(first_body) == form(body),
                answer.clone(),
            )),
            None => {
                state
                    .idempotent
                    .insert(key.clone(), (path.to_owned(), body.clone(), None));
                None
            }
        });
    match seen.flatten() {
        None => Ok(hold(Some(key))),
        Some((false, _)) => Err(Box::new(stripe_error(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
        ))),
        Some((true, None)) => Err(Box::new(stripe_error(
            409,
            "There is currently another in-progress request using this Idempotency Key.",
        ))),
        Some((true, Some((status, bytes)))) => Err(Box::new(json_reply(status, bytes))),
    }
}

/// A request's hold on its idempotency key.
struct KeyHold<'a> {
    double: &'a Double,
    key: Option<String>,
    finished: bool,
}

impl KeyHold<'_> {
    /// Keeps the answer for the key, whatever its status, as Stripe does ("Subsequent requests
    /// with the same key return the same result, including 500 errors"); no answer at all
    /// (localstripe unreachable) frees the key.
    fn finish(mut self, answer: Option<(u16, Bytes)>) {
        self.finished = true;
        let (Some(key), Ok(mut state)) = (self.key.as_deref(), self.double.state.lock()) else {
            return;
        };
        match answer {
            Some(answer) => {
                if let Some(slot) = state.idempotent.get_mut(key) {
                    slot.2 = Some(answer);
                }
            }
            None => {
                state.idempotent.remove(key);
            }
        }
    }
}

impl Drop for KeyHold<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let (Some(key), Ok(mut state)) = (self.key.as_deref(), self.double.state.lock()) {
            state.idempotent.remove(key);
        }
    }
}

fn json_reply(status: u16, bytes: Bytes) -> Reply {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

/// Sends the request to localstripe; its status and body.
async fn forward_upstream(
    double: &Double,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Result<(u16, Bytes), ()> {
    let url = match query {
        Some(q) => format!("{}{path}?{q}", double.upstream),
        None => format!("{}{path}", double.upstream),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = double.http.request(method, url).body(body);
    for name in [
        "authorization",
        "content-type",
        "stripe-version",
        "idempotency-key",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            Ok((status, response.bytes().await.unwrap_or_default()))
        }
        Err(_) => Err(()),
    }
}
