//! Spending credits: `POST /api/credits/consume` for the signed-in user (JWT), and
//! `POST /internal/credits/consume` for the app's own backend (IAM-authorized, names the user).
//! One conditional transaction: never below zero, the same key never spends twice.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::UserId;
use crate::domain::idempotency::Spender;
use crate::domain::money::AmountError;
use crate::domain::scope::Scope;
use crate::handlers::grants;
use crate::http::{json_body, ok, respond, ApiError};
use crate::services::credits;
use crate::{auth, scoping, App};

/// The largest single spend accepted, in minor units (10 million in major units).
const MAX_SPEND_MINOR: i64 = 1_000_000_000;
const MAX_REASON_CHARS: usize = 200;

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConsumeBody {
    /// Credits to spend, in major units (> 0, no finer than the currency's minor unit). Kept as the
    /// literal's own text, so that no digit is lost through a float.
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 2.5, required = true))]
    amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "export", required = true))]
    reason: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "export-42", required = true))]
    idempotency_key: Option<Value>,
    /// `/internal/credits/consume` only: the user whose credits are spent (on the user's own
    /// route the token says who, and this is ignored).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    user_id: Option<Value>,
}

/// Whose idempotency keys these are: the user's own frontend, or a backend IAM principal.
/// Keys of different callers never collide.
enum Caller {
    User,
    Service(String),
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
    if req.uri().path().ends_with("/auto-recharge") {
        let scope = scoping::end_user_scope(app, req).await?;
        return super::recharge::recharge_route(
            app,
            req,
            &scope,
            &user,
            crate::domain::recharge::ChangedBy::User,
        )
        .await;
    }
    if req.uri().path().contains("/reservations") {
        let scope = scoping::end_user_scope(app, req).await?;
        // A `userId` in the body is not identity here: it is ignored.
        return grants::reservation_route(app, req, async |_| {
            Ok(grants::Actor {
                scope,
                account: user,
                by: "user".into(),
            })
        })
        .await;
    }
    // A `userId` in the body is not identity here: it is ignored.
    let body: ConsumeBody = json_body(req)?;
    let scope = scoping::end_user_scope(app, req).await?;
    spend(app, &scope, &user, &Caller::User, &body).await
}

async fn consume_for_named_user(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let (scope, principal) = scoping::internal_scope(app, req).await?;
    let path = req.uri().path();
    if path.contains("/reservations") || path.contains("/grants") {
        let actor = async |user: Option<&Value>| {
            Ok(grants::Actor {
                scope,
                account: grants::named_user(user)?,
                by: format!("iam:{principal}"),
            })
        };
        return if path.contains("/reservations") {
            grants::reservation_route(app, req, actor).await
        } else {
            grants::grant_route(app, req, actor).await
        };
    }
    let body: ConsumeBody = json_body(req)?;
    let user = match &body.user_id {
        Some(Value::String(id)) => {
            UserId::parse(id).ok_or_else(|| ApiError::bad_request("userId is malformed."))?
        }
        Some(_) => return Err(ApiError::bad_request("userId must be a string.")),
        None => return Err(ApiError::bad_request("userId is required.")),
    };
    spend(app, &scope, &user, &Caller::Service(principal), &body).await
}

async fn spend(
    app: &App,
    scope: &Scope,
    user: &UserId,
    caller: &Caller,
    body: &ConsumeBody,
) -> Result<Response<Body>, ApiError> {
    let currency = &app.config.default_currency;
    let amount = match &body.amount {
        None => return Err(ApiError::bad_request("amount is required.")),
        Some(raw) => currency
            .parse_major(raw.get(), MAX_SPEND_MINOR)
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
    let spender = match caller {
        Caller::User => Spender::User,
        Caller::Service(principal) => Spender::Service(principal),
    };
    let spent = credits::spend(app, scope, user, &spender, amount, reason, key).await?;
    Ok(ok(crate::api::SpendResult {
        balance: crate::api::Major::of(currency, spent.balance),
        entry_id: spent.entry_id,
    }))
}
