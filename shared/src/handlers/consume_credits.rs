//! Spending credits: `POST /api/credits/consume` for the signed-in user (JWT), and
//! `POST /internal/credits/consume` for the app's own backend (IAM-authorized, names the user).
//! One conditional transaction: never below zero, the same key never spends twice.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::UserId;
use crate::http::{json_body, ok, respond, ApiError};
use crate::ledger::MoveOutcome;
use crate::money::AmountError;
use crate::store::idempotency_hash;
use crate::{auth, App};

/// The largest single spend accepted, in minor units (10 million in major units).
const MAX_SPEND_MINOR: i64 = 1_000_000_000;
const MAX_REASON_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumeBody {
    amount: Option<Value>,
    reason: Option<Value>,
    idempotency_key: Option<Value>,
    user_id: Option<Value>,
}

#[tracing::instrument(name = "consume_credits", skip_all)]
pub async fn consume_credits(app: &App, req: Request) -> Response<Body> {
    respond(consume_for_jwt_user(app, &req).await)
}

#[tracing::instrument(name = "internal_consume_credits", skip_all)]
pub async fn internal_consume_credits(app: &App, req: Request) -> Response<Body> {
    respond(consume_for_named_user(app, &req).await)
}

async fn consume_for_jwt_user(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let user = auth::user_id(req)?;
    // A `userId` in the body is not identity here: it is ignored.
    let body: ConsumeBody = json_body(req)?;
    spend(app, &user, &body).await
}

async fn consume_for_named_user(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    if !iam_authorized(req) {
        return Err(ApiError::Forbidden);
    }
    let body: ConsumeBody = json_body(req)?;
    let user = match &body.user_id {
        Some(Value::String(id)) => {
            UserId::parse(id).ok_or_else(|| ApiError::bad_request("userId is malformed."))?
        }
        Some(_) => return Err(ApiError::bad_request("userId must be a string.")),
        None => return Err(ApiError::bad_request("userId is required.")),
    };
    spend(app, &user, &body).await
}

/// API Gateway fills `authorizer.iam` only for routes with IAM authorization; a request without
/// it did not come through one, whatever its body says.
fn iam_authorized(req: &Request) -> bool {
    matches!(
        req.request_context_ref(),
        Some(RequestContext::ApiGatewayV2(context))
            if context.authorizer.as_ref().is_some_and(|a| a.iam.is_some())
    )
}

async fn spend(app: &App, user: &UserId, body: &ConsumeBody) -> Result<Response<Body>, ApiError> {
    let currency = &app.config.default_currency;
    let amount = match &body.amount {
        None => return Err(ApiError::bad_request("amount is required.")),
        Some(value) => currency
            .parse_major(value, MAX_SPEND_MINOR)
            .map_err(|err| match err {
                AmountError::NotANumber => ApiError::bad_request("amount must be a number."),
                AmountError::TooPrecise => ApiError::bad_request(format!(
                    "amount is finer than the smallest unit of {currency}."
                )),
                AmountError::TooLarge => ApiError::bad_request("amount is too large."),
            })?,
    };
    if amount <= 0 {
        return Err(ApiError::bad_request("amount must be greater than zero."));
    }
    let reason = match &body.reason {
        Some(Value::String(r)) if !r.trim().is_empty() && r.chars().count() <= MAX_REASON_CHARS => {
            r
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "reason must be a non-empty string of at most 200 characters.",
            ))
        }
        None => return Err(ApiError::bad_request("reason is required.")),
    };
    let key = match &body.idempotency_key {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => k,
        Some(_) => {
            return Err(ApiError::bad_request(
                "idempotencyKey must be a string of 1 to 255 characters.",
            ))
        }
        None => return Err(ApiError::bad_request("idempotencyKey is required.")),
    };
    let entry_id = format!("spend:{}", &idempotency_hash(user, key)[..32]);
    let outcome = app
        .store
        .move_credits(user, &entry_id, "spend", -amount, currency, reason)
        .await?;
    let entry_id = match outcome {
        MoveOutcome::Done(id) => {
            tracing::info!(entry_id = %id, amount, "credits spent");
            id
        }
        MoveOutcome::Replayed(id) => {
            tracing::info!(entry_id = %id, "spend replayed; nothing more taken");
            id
        }
        MoveOutcome::KeyConflict => {
            return Err(ApiError::Conflict(
                "This idempotencyKey was already used with another amount.".into(),
            ))
        }
        MoveOutcome::Insufficient => return Err(ApiError::InsufficientCredits),
    };
    let balance = app.store.balance(user).await?.map_or(0, |b| b.balance);
    Ok(ok(
        json!({ "balance": currency.to_major(balance), "entryId": entry_id }),
    ))
}
