//! `POST /api/stripe/create-payment-intent`: a PaymentIntent for a stored package or a tier
//! (`services::purchases`). Amount and currency come from the package, never from the client.
//! Round trips: one BatchGetItem (package + idempotency record), one Stripe call, one
//! TransactWriteItems.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::billing::{opt_text, setup_intent_field};
use crate::api::PaymentIntentCreated;
use crate::domain::money::Currency;
use crate::domain::packages::valid_package_id;
use crate::domain::plans::{tier_purchase_id, valid_plan_id};
use crate::http::{json_body, ok, respond, ApiError};
use crate::services::purchases::{self, Item, Payer, PurchaseRequest};
use crate::{auth, scoping, App};

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateIntentBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "standard"))]
    credit_package_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    payment_method_id: Option<Value>,
    /// A SetupIntent of the caller's that saved a card (the storefront's flow): Coffer charges
    /// that card and confirms the intent itself.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    setup_intent_id: Option<Value>,
    /// A one-off purchase of a plan (`pro`, `enterprise`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    tier: Option<Value>,
    /// The purchase is for this organisation of the caller's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
    /// Answer also with a customer and an ephemeral key for Stripe's PaymentSheet.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    payment_sheet: Option<Value>,
    /// The mobile SDK's API version, for the ephemeral key.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    stripe_version: Option<Value>,
    /// A top-up of an amount the buyer chooses, in the project's unit (major by default, `7.00`;
    /// or minor, `700`), a number or a decimal string parsed exactly, where the project allows
    /// custom amounts; with `currency`, instead of `creditPackageId` or `tier`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 7.0))]
    amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "usd"))]
    currency: Option<Value>,
}

#[tracing::instrument(name = "create_payment_intent", skip_all)]
pub async fn create_payment_intent(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::user_id(req)?;
    let body: CreateIntentBody = json_body(req)?;
    let custom = custom_amount(&body)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let user = scoping::account(app, req, identifier.as_deref())?;
    let payment_sheet = match &body.payment_sheet {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ApiError::bad_request("paymentSheet must be true or false.")),
    };
    let stripe_version = opt_text(&body.stripe_version, "stripeVersion", 64)?;
    if payment_sheet && stripe_version.is_none() {
        return Err(ApiError::bad_request(
            "stripeVersion (the mobile SDK's API version) is required with paymentSheet.",
        ));
    }
    let tier = opt_text(&body.tier, "tier", 64)?;
    let package_id = match (&body.credit_package_id, &tier) {
        _ if custom.is_some() => {
            if !matches!(body.credit_package_id, None | Some(Value::Null)) || tier.is_some() {
                return Err(ApiError::bad_request(
                    "Give amount and currency, or creditPackageId, or tier: one of them.",
                ));
            }
            String::new()
        }
        (None | Some(Value::Null), Some(tier)) if valid_plan_id(tier) => tier_purchase_id(tier),
        (None | Some(Value::Null), Some(_)) => {
            return Err(ApiError::bad_request("tier is malformed."))
        }
        (Some(Value::String(id)), None) if valid_package_id(id) => id.clone(),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give creditPackageId or tier, not both.",
            ))
        }
        (None | Some(Value::Null), None) => {
            return Err(ApiError::bad_request(
                "creditPackageId or tier is required.",
            ))
        }
        (Some(_), None) => return Err(ApiError::bad_request("creditPackageId is malformed.")),
    };
    let payment_method = match body.payment_method_id {
        None | Some(Value::Null) => None,
        Some(Value::String(pm)) if valid_payment_method(&pm) => Some(pm),
        Some(_) => return Err(ApiError::bad_request("paymentMethodId is malformed.")),
    };
    let setup_intent = setup_intent_field(&body.setup_intent_id)?;
    if setup_intent.is_some() && (payment_method.is_some() || payment_sheet) {
        return Err(ApiError::bad_request(
            "Give setupIntentId alone: not with paymentMethodId or paymentSheet.",
        ));
    }
    let scope = scoping::end_user_scope(app, req).await?;
    scoping::require_active(app, &scope).await?;
    let client_key = idempotency_header(req)?;
    let started = purchases::start_purchase(
        app,
        &scope,
        PurchaseRequest {
            account: &user,
            item: match (&custom, &tier) {
                (Some((amount, currency)), _) => Item::Custom { amount, currency },
                (None, Some(tier)) => Item::Tier(tier),
                (None, None) => Item::Package(&package_id),
            },
            payer: match &setup_intent {
                Some(setup_intent) => Payer::SavedCard(setup_intent),
                None => Payer::Client {
                    payment_method: payment_method.as_deref(),
                },
            },
            client_key: client_key.as_deref(),
            sheet_version: stripe_version.as_deref().filter(|_| payment_sheet),
            sheet_by_default: body.payment_sheet.is_none(),
        },
    )
    .await?;
    let (customer, ephemeral_key) = started.sheet.map(|s| (s.customer, s.ephemeral_key)).unzip();
    Ok(ok(PaymentIntentCreated {
        client_secret: started.client_secret,
        payment_intent_id: started.intent_id,
        status: started.status,
        customer,
        ephemeral_key,
    }))
}

/// The custom amount of a body (its own digits, read later in the project's unit) and its
/// currency, when it gives one.
fn custom_amount(body: &CreateIntentBody) -> Result<Option<(String, String)>, ApiError> {
    let (raw, currency) = match (&body.amount, &body.currency) {
        (None, None | Some(Value::Null)) => return Ok(None),
        (Some(raw), Some(Value::String(code))) => (raw, code.to_ascii_lowercase()),
        (Some(_), _) => return Err(ApiError::bad_request("currency is required with amount.")),
        (None, Some(_)) => return Err(ApiError::bad_request("amount is required with currency.")),
    };
    if Currency::parse(&currency).is_none() {
        return Err(ApiError::bad_request("currency is not a currency code."));
    }
    let literal = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(text)) if text.len() <= 64 => text,
        Ok(Value::Number(_)) if raw.get().len() <= 64 => raw.get().to_owned(),
        _ => {
            return Err(ApiError::bad_request(
                "amount must be a number or a decimal string.",
            ))
        }
    };
    Ok(Some((literal, currency)))
}

fn valid_payment_method(id: &str) -> bool {
    id.starts_with("pm_")
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_header(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters.")
        })?;
    Ok(Some(text.to_owned()))
}
