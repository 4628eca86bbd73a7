//! Usage against plan allowances (the `usage` function):
//!
//! - `POST /internal/usage` (IAM, the caller allowlist): `{userId, metric, quantity,
//!   idempotencyKey, dryRun?}` → `{allowed, used, limit, remaining, resetsAt, paidWithCredits?}`;
//!   beyond the allowance without overage: 429 `limit_reached`, nothing recorded
//! - `GET /api/usage` (JWT): the caller's metrics with used, limit and reset time

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::billing::opt_text;
use crate::api::{Major, MetricUsage, UsageAnswer, UsageOverview};
use crate::domain::plans::valid_plan_id;
use crate::domain::records::UserId;
use crate::http::{json_body, ok, respond, ApiError};
use crate::services::usage::{record_usage, usage_key_hash, usage_overview, UsageRequest};
use crate::{scoping, App};

/// The most units one usage request may carry.
const MAX_QUANTITY: i64 = 1_000_000;

#[tracing::instrument(name = "usage", skip_all)]
pub async fn usage(app: &App, req: Request) -> Response<Body> {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    if req.uri().path().starts_with("/internal/") {
        record(app, req).await
    } else {
        let account = scoping::account(app, req, scoping::identifier_param(req)?)?;
        let scope = scoping::end_user_scope(app, req).await?;
        let standing = usage_overview(app, &scope, &account).await?;
        Ok(ok(usage_view(standing)))
    }
}

/// An account's usage on the wire: each metric's use, limit and what remains.
pub(crate) fn usage_view(standing: crate::services::usage::UsageStanding) -> UsageOverview {
    UsageOverview {
        plan_id: standing.plan_id,
        metrics: standing
            .metrics
            .into_iter()
            .map(|m| MetricUsage {
                remaining: (m.limit - m.used).max(0),
                metric: m.metric,
                used: m.used,
                limit: m.limit,
                resets_at: m.resets_at,
            })
            .collect(),
    }
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageBody {
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    user_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "requests", required = true))]
    metric: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, example = 1, required = true))]
    quantity: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    idempotency_key: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    dry_run: Option<Value>,
}

async fn record(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let (scope, caller) = scoping::internal_scope(app, req).await?;
    let body: UsageBody = json_body(req)?;
    let account = opt_text(&body.user_id, "userId", 255)?
        .and_then(|id| UserId::parse(&id))
        .ok_or_else(|| ApiError::bad_request("userId is required."))?;
    let metric = opt_text(&body.metric, "metric", 64)?
        .filter(|m| valid_plan_id(m))
        .ok_or_else(|| {
            ApiError::bad_request("metric is required: lowercase letters, digits, '-' or '_'.")
        })?;
    let quantity = match &body.quantity {
        Some(Value::Number(number)) => number
            .as_i64()
            .filter(|q| (1..=MAX_QUANTITY).contains(q))
            .ok_or_else(|| {
            ApiError::bad_request(format!(
                "quantity must be a whole number from 1 to {MAX_QUANTITY}."
            ))
        })?,
        _ => {
            return Err(ApiError::bad_request(format!(
                "quantity must be a whole number from 1 to {MAX_QUANTITY}."
            )))
        }
    };
    let key = opt_text(&body.idempotency_key, "idempotencyKey", 255)?
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("idempotencyKey is required: 1 to 255 visible ASCII characters.")
        })?;
    let dry_run = match &body.dry_run {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(ApiError::bad_request("dryRun must be true or false.")),
    };
    let key_hash = usage_key_hash(&caller, &account, &key);
    let answer = record_usage(
        app,
        &scope,
        &UsageRequest {
            account: &account,
            metric: &metric,
            quantity,
            key_hash: &key_hash,
            dry_run,
        },
    )
    .await?;
    let currency = &app.config.default_currency;
    Ok(ok(UsageAnswer {
        allowed: answer.allowed,
        used: answer.used,
        limit: answer.limit,
        remaining: answer.remaining(),
        resets_at: answer.resets_at,
        paid_with_credits: answer
            .paid_with_credits
            .map(|minor| Major::of(currency, minor)),
    }))
}
