//! Auto-recharge settings on the wire: the signed-in user's own (`/api/credits/auto-recharge`)
//! and, for an account of their project, its developer's
//! (`/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/auto-recharge`).

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::billing::setup_intent_field;
use crate::api::{LastRecharge, Major, RechargeAuthentication, RechargeView};
use crate::domain::money::Currency;
use crate::domain::packages::valid_package_id;
use crate::domain::recharge::{AccountRecharge, ChangedBy, Ended};
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ApiError};
use crate::scoping;
use crate::services::recharge;
use crate::App;

/// The largest threshold or amount read, in minor units (the project's bound is lower).
const MAX_MINOR: i64 = 100_000_000_000;

/// Auto-recharge settings: on or off, the balance below which a recharge starts, what one
/// recharge buys, and the saved card.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RechargeBody {
    #[cfg_attr(feature = "openapi", schema(value_type = bool, required = true))]
    enabled: Option<Value>,
    /// Major units (the project's `defaultThreshold` when left out).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 5.0))]
    threshold: Option<Box<RawValue>>,
    /// What one recharge charges, in major units (at most the project's `maxPerRecharge`), a
    /// custom top-up the project allows; or name a package instead. Left out: the project's
    /// `defaultAmount`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 20.0))]
    amount: Option<Box<RawValue>>,
    /// The credit package one recharge buys, at its price (instead of `amount`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    credit_package_id: Option<Value>,
    /// The SetupIntent that saved the card to charge (kept when absent).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    setup_intent_id: Option<Value>,
}

fn money(currency: &Currency, raw: Option<&RawValue>, name: &str) -> Result<i64, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::bad_request(format!("{name} is required.")))?;
    currency
        .parse_major(raw.get(), MAX_MINOR)
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an amount of {currency} from zero, no finer than its smallest unit."
            ))
        })
}

fn view(currency: &Currency, recharge: Option<&AccountRecharge>, by: ChangedBy) -> RechargeView {
    let Some(recharge) = recharge else {
        return RechargeView {
            enabled: false,
            threshold: None,
            amount: None,
            setup_intent_id: None,
            in_flight: false,
            awaiting_authentication: false,
            failures_in_a_row: 0,
            disabled_by: None,
            credit_package_id: None,
            authentication: None,
            last_recharge: None,
        };
    };
    let state = &recharge.state;
    RechargeView {
        enabled: !crate::domain::recharge::is_off(&recharge.settings, state),
        threshold: Some(Major::of(currency, recharge.settings.threshold)),
        amount: Some(Major::of(currency, recharge.settings.amount)),
        setup_intent_id: recharge.setup_intent.clone(),
        in_flight: state.in_flight.is_some(),
        awaiting_authentication: state.in_flight.as_ref().is_some_and(|f| f.action_required),
        failures_in_a_row: state.failures_in_a_row,
        disabled_by: state.disabled.map(|d| d.name()),
        credit_package_id: recharge.settings.package.clone(),
        // The client secret is the account's user's alone: never on the developer's route.
        authentication: state
            .in_flight
            .as_ref()
            .filter(|f| f.action_required && by == ChangedBy::User)
            .and_then(|f| {
                Some(RechargeAuthentication {
                    recharge_id: f.id.clone(),
                    payment_intent_id: f.intent.clone()?,
                    client_secret: f.client_secret.clone()?,
                    payment_method_id: f.payment_method.clone(),
                    amount: Major::of(currency, f.amount),
                })
            }),
        last_recharge: state.last.as_ref().map(|last| LastRecharge {
            recharge_id: last.id.clone(),
            amount: Major::of(currency, last.amount),
            payment_intent_id: last.intent.clone(),
            status: match last.ended {
                Ended::Succeeded => "succeeded",
                Ended::Failed { .. } => "failed",
                Ended::Canceled => "canceled",
            },
            reason: match &last.ended {
                Ended::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
        }),
    }
}

/// `GET` the account's auto-recharge, or `PUT` new settings.
pub(crate) async fn recharge_route(
    app: &App,
    req: &Request,
    scope: &Scope,
    account: &UserId,
    by: ChangedBy,
) -> Result<Response<Body>, ApiError> {
    let currency = &app.config.default_currency;
    if req.method().as_str() == "GET" {
        let current = recharge::settings(app, scope, account).await?;
        return Ok(ok(view(currency, current.as_ref(), by)));
    }
    let body: RechargeBody = json_body(req)?;
    let enabled = match body.enabled {
        Some(Value::Bool(on)) => on,
        None => return Err(ApiError::bad_request("enabled is required.")),
        Some(_) => return Err(ApiError::bad_request("enabled must be true or false.")),
    };
    let package = match &body.credit_package_id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if valid_package_id(id) => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "creditPackageId must be a credit package id.",
            ))
        }
    };
    // Left out: the project's default (the package's price when a package is named).
    let amount = match (&package, body.amount.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give amount or creditPackageId, not both.",
            ))
        }
        (_, None) => None,
        (None, raw) => Some(money(currency, raw, "amount")?),
    };
    let threshold = body
        .threshold
        .as_deref()
        .map(|raw| money(currency, Some(raw), "threshold"))
        .transpose()?;
    if enabled {
        // A project that does not take payments in this mode charges no card.
        scoping::require_active(app, scope).await?;
    }
    let settings = recharge::Asked {
        enabled,
        threshold,
        amount,
        package,
    };
    let setup_intent = setup_intent_field(&body.setup_intent_id)?;
    if setup_intent.is_some() && by == ChangedBy::Developer {
        return Err(ApiError::bad_request(
            "setupIntentId is the account's user's to give: the card to charge is theirs.",
        ));
    }
    let changed = recharge::change(app, scope, account, settings, setup_intent, by).await?;
    Ok(ok(view(currency, Some(&changed), by)))
}
