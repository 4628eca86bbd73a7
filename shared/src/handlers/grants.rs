//! Grants and reservations on the wire. Grants: a developer for an account of their project
//! (`/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants…`), or an
//! allowlisted backend over IAM (`/internal/credits/grants…`, naming the user). Reservations:
//! the signed-in user (`/api/credits/reservations…`) or the backend
//! (`/internal/credits/reservations…`). Who acts is always the token's or IAM's, never the
//! body's.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{GrantView, Major, ReservationView};
use crate::domain::grants::{GrantRequest, GrantState, HoldState};
use crate::domain::money::{AmountError, Currency};
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ApiError};
use crate::services::grants;
use crate::App;

/// The largest grant, adjustment or reservation, in minor units (10 million in major units).
const MAX_MINOR: i64 = 1_000_000_000;
const MAX_REASON_CHARS: usize = 200;
/// The latest a grant may expire: ten years ahead.
const MAX_EXPIRY_SECS: i64 = 10 * 366 * 24 * 3600;
/// A reservation lasts at most a day, and 15 minutes unless asked.
const MAX_TTL_SECS: i64 = 24 * 3600;
const DEFAULT_TTL_SECS: i64 = 15 * 60;
const MAX_PRIORITY: i64 = 1000;

/// A grant of promotional credits.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrantBody {
    /// Credits in major units (> 0, no finer than the currency's minor unit).
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 3.0, required = true))]
    amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "welcome offer", required = true))]
    reason: Option<Value>,
    /// When the credits expire (RFC 3339, in the future, at most ten years ahead); never when
    /// absent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2026-12-31T00:00:00Z"))]
    expires_at: Option<Value>,
    /// Higher is spent first (−1000 to 1000; 0 when absent).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i32>, example = 0))]
    priority: Option<Value>,
    /// The same key with the same body gives the first answer; with another body, 409.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "welcome-ann", required = true))]
    idempotency_key: Option<Value>,
    /// `/internal/…` only: the account (elsewhere the path or the token says which).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    user_id: Option<Value>,
}

/// A change of a grant: `amount` (signed, not zero) for an adjustment; nothing but a reason for
/// a voiding.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrantChangeBody {
    /// Adjustments only: credits in major units, negative to take back (never more than is
    /// left of the grant).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = -1.0))]
    amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "correction", required = true))]
    reason: Option<Value>,
    /// Adjustments only: the same key with the same body gives the first answer.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "fix-1"))]
    idempotency_key: Option<Value>,
    /// `/internal/…` only: the account.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    user_id: Option<Value>,
}

/// A reservation: credits set aside until captured, released or its time is over.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReserveBody {
    /// Credits in major units (> 0).
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 5.0, required = true))]
    amount: Option<Box<RawValue>>,
    /// Seconds until it returns by itself (1 to 86400; 900 when absent).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, example = 600))]
    ttl_seconds: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "job-42", required = true))]
    idempotency_key: Option<Value>,
    /// `/internal/…` only: the account.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    user_id: Option<Value>,
}

/// A capture: what the work cost (at most what was held; the rest goes back).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct CaptureBody {
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 3.5, required = true))]
    amount: Option<Box<RawValue>>,
    /// `/internal/…` only: the account.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    user_id: Option<Value>,
}

/// Who acts, and on which account.
pub(crate) struct Actor {
    pub scope: Scope,
    pub account: UserId,
    /// `user`, `developer:<id>` or `iam:<principal>`.
    pub by: String,
}

/// Which amounts a field takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sign {
    Positive,
    NotZero,
    NotNegative,
}

fn amount(currency: &Currency, raw: Option<&RawValue>, sign: Sign) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Err(ApiError::bad_request("amount is required."));
    };
    let minor = currency
        .parse_major(raw.get(), MAX_MINOR)
        .map_err(|err| match err {
            AmountError::NotANumber => ApiError::bad_request("amount must be a number."),
            AmountError::TooPrecise => ApiError::bad_request(format!(
                "amount is finer than the smallest unit of {currency}."
            )),
            AmountError::TooLarge => ApiError::bad_request("amount is too large."),
        })?;
    match sign {
        Sign::NotZero if minor == 0 => Err(ApiError::bad_request("amount must not be zero.")),
        Sign::Positive if minor <= 0 => {
            Err(ApiError::bad_request("amount must be greater than zero."))
        }
        Sign::NotNegative if minor < 0 => {
            Err(ApiError::bad_request("amount must not be negative."))
        }
        _ => Ok(minor),
    }
}

fn reason(value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(r)) if !r.trim().is_empty() && r.chars().count() <= MAX_REASON_CHARS => {
            Ok(r.clone())
        }
        None => Err(ApiError::bad_request("reason is required.")),
        Some(_) => Err(ApiError::bad_request(
            "reason must be a non-empty string of at most 200 characters.",
        )),
    }
}

fn key(value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => Ok(k.clone()),
        None => Err(ApiError::bad_request("idempotencyKey is required.")),
        Some(_) => Err(ApiError::bad_request(
            "idempotencyKey must be a string of 1 to 255 characters.",
        )),
    }
}

fn expiry(value: Option<&Value>) -> Result<Option<i64>, ApiError> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(_) => {
            return Err(ApiError::bad_request(
                "expiresAt must be an RFC 3339 date-time such as 2026-12-31T00:00:00Z.",
            ))
        }
    };
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| {
            ApiError::bad_request(
                "expiresAt must be an RFC 3339 date-time such as 2026-12-31T00:00:00Z.",
            )
        })?
        .unix_timestamp();
    let now = now_ms() / 1000;
    if at <= now {
        return Err(ApiError::bad_request("expiresAt must be in the future."));
    }
    if at - now > MAX_EXPIRY_SECS {
        return Err(ApiError::bad_request(
            "expiresAt must be at most ten years ahead.",
        ));
    }
    Ok(Some(at))
}

fn integer(value: Option<&Value>, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be a whole number from {min} to {max}."
            ))),
        },
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a whole number from {min} to {max}."
        ))),
    }
}

/// The account an `/internal/…` body names.
pub(crate) fn named_user(value: Option<&Value>) -> Result<UserId, ApiError> {
    match value {
        Some(Value::String(id)) => {
            UserId::parse(id).ok_or_else(|| ApiError::bad_request("userId is malformed."))
        }
        Some(_) => Err(ApiError::bad_request("userId must be a string.")),
        None => Err(ApiError::bad_request("userId is required.")),
    }
}

fn path_param(req: &Request, name: &str) -> Result<String, ApiError> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required.")))
}

fn grant_view(currency: &Currency, state: &GrantState) -> GrantView {
    GrantView {
        grant_id: state.grant_id.clone(),
        entry_id: state.entry_id.clone(),
        amount: Major::of(currency, state.amount),
        remaining: Major::of(currency, state.left),
        kind: "promotional",
        priority: state.priority,
        expires_at: state
            .expires_at
            .map(|at| crate::domain::records::rfc3339(at.saturating_mul(1000))),
        reason: state.reason.clone(),
        balance: Major::of(currency, state.balance),
        currency: currency.as_str().to_owned(),
    }
}

fn reservation_view(currency: &Currency, state: &HoldState) -> ReservationView {
    ReservationView {
        reservation_id: state.hold_id.clone(),
        amount: Major::of(currency, state.amount),
        captured: state.captured.map(|c| Major::of(currency, c)),
        status: state.status.as_str(),
        expires_at: crate::domain::records::rfc3339(state.until.saturating_mul(1000)),
        balance: Major::of(currency, state.balance),
        currency: currency.as_str().to_owned(),
    }
}

/// The grant routes: `…/grants`, `…/grants/{grant_id}/adjust`, `…/grants/{grant_id}/void`.
/// `actor` sees the parsed body's `userId` (for `/internal/…`).
pub(crate) async fn grant_route<F>(
    app: &App,
    req: &Request,
    actor: F,
) -> Result<Response<Body>, ApiError>
where
    F: AsyncFnOnce(Option<&Value>) -> Result<Actor, ApiError>,
{
    let currency = app.config.default_currency.clone();
    let path = req.uri().path();
    if path.ends_with("/grants") {
        let body: GrantBody = json_body(req)?;
        let actor = actor(body.user_id.as_ref()).await?;
        let amount = amount(&currency, body.amount.as_deref(), Sign::Positive)?;
        let reason = reason(body.reason.as_ref())?;
        let key = key(body.idempotency_key.as_ref())?;
        let expires_at = expiry(body.expires_at.as_ref())?;
        let priority = integer(
            body.priority.as_ref(),
            "priority",
            -MAX_PRIORITY,
            MAX_PRIORITY,
        )?
        .unwrap_or(0) as i32;
        let request = GrantRequest {
            amount,
            reason: &reason,
            expires_at,
            priority,
            by: &actor.by,
        };
        let state = grants::grant(app, &actor.scope, &actor.account, &key, &request).await?;
        return Ok(ok(grant_view(&currency, &state)));
    }
    let grant_id = path_param(req, "grant_id")?;
    let body: GrantChangeBody = json_body(req)?;
    let actor = actor(body.user_id.as_ref()).await?;
    let reason = reason(body.reason.as_ref())?;
    let state = if path.ends_with("/adjust") {
        let delta = amount(&currency, body.amount.as_deref(), Sign::NotZero)?;
        let key = key(body.idempotency_key.as_ref())?;
        grants::adjust(
            app,
            &actor.scope,
            &actor.account,
            &grant_id,
            &actor.by,
            &key,
            delta,
            &reason,
        )
        .await?
    } else if path.ends_with("/void") {
        grants::void(
            app,
            &actor.scope,
            &actor.account,
            &grant_id,
            &actor.by,
            &reason,
        )
        .await?
    } else {
        return Err(ApiError::NotFound("No such route.".into()));
    };
    Ok(ok(grant_view(&currency, &state)))
}

/// The reservation routes: `…/reservations`, `…/reservations/{reservation_id}/capture`,
/// `…/reservations/{reservation_id}/release`.
pub(crate) async fn reservation_route<F>(
    app: &App,
    req: &Request,
    actor: F,
) -> Result<Response<Body>, ApiError>
where
    F: AsyncFnOnce(Option<&Value>) -> Result<Actor, ApiError>,
{
    let currency = app.config.default_currency.clone();
    let path = req.uri().path();
    if path.ends_with("/reservations") {
        let body: ReserveBody = json_body(req)?;
        let actor = actor(body.user_id.as_ref()).await?;
        let amount = amount(&currency, body.amount.as_deref(), Sign::Positive)?;
        let ttl = integer(body.ttl_seconds.as_ref(), "ttlSeconds", 1, MAX_TTL_SECS)?
            .unwrap_or(DEFAULT_TTL_SECS);
        let key = key(body.idempotency_key.as_ref())?;
        let state = grants::reserve(
            app,
            &actor.scope,
            &actor.account,
            &actor.by,
            &key,
            amount,
            ttl,
        )
        .await?;
        return Ok(ok(reservation_view(&currency, &state)));
    }
    let hold_id = path_param(req, "reservation_id")?;
    let (user_id, capture) = if path.ends_with("/capture") {
        let body: CaptureBody = json_body(req)?;
        let take = amount(&currency, body.amount.as_deref(), Sign::NotNegative)?;
        (body.user_id, Some(take))
    } else if path.ends_with("/release") {
        let body: Option<CaptureBody> = match req.body() {
            Body::Empty => None,
            Body::Text(t) if t.trim().is_empty() => None,
            _ => Some(json_body(req)?),
        };
        (body.and_then(|b| b.user_id), None)
    } else {
        return Err(ApiError::NotFound("No such route.".into()));
    };
    let actor = actor(user_id.as_ref()).await?;
    let state = grants::finish(
        app,
        &actor.scope,
        &actor.account,
        &actor.by,
        &hold_id,
        capture,
    )
    .await?;
    Ok(ok(reservation_view(&currency, &state)))
}
