//! `POST /api/stripe/create-payment-intent`: a PaymentIntent for a stored package. Amount and
//! currency come from the package, never from the client. Round trips: one BatchGetItem (package
//! + idempotency record), one Stripe call, one TransactWriteItems.

use std::collections::HashMap;

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::billing::{opt_text, setup_intent_field};
use crate::adapters::store::{hash_parts, idempotency_hash};
use crate::adapters::stripe::{
    Intent, NewIntent, META_CREDITS, META_PACKAGE, META_SCOPE, META_TIER, META_USER,
};
use crate::api::PaymentIntentCreated;
use crate::domain::ledger::PaymentRecord;
use crate::domain::packages::{valid_package_id, CreditPackage};
use crate::domain::plans::{valid_plan_id, Plan, PlanKind};
use crate::domain::records::now_ms;
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, respond, ApiError};
use crate::services::billing::{self, sheet_fields, SheetFields};
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
    /// Refused: prices come from the server.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    amount: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    currency: Option<Value>,
}

/// What is being bought: a credit package or a tier, priced as the server stores it.
fn tier_package(plan: &Plan, currency: &crate::domain::money::Currency) -> CreditPackage {
    CreditPackage {
        id: format!("tier:{}", plan.id),
        name: plan.name.clone(),
        description: plan.description.clone(),
        amount: plan.amount.unwrap_or(0),
        currency: currency.clone(),
        credits: plan.included_credits,
        active: plan.active,
    }
}

#[tracing::instrument(name = "create_payment_intent", skip_all)]
pub async fn create_payment_intent(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::user_id(req)?;
    let body: CreateIntentBody = json_body(req)?;
    if body.amount.is_some() || body.currency.is_some() {
        return Err(ApiError::bad_request(
            "amount and currency are set by the server from the credit package or tier; send creditPackageId or tier.",
        ));
    }
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
        (None | Some(Value::Null), Some(tier)) if valid_plan_id(tier) => format!("tier:{tier}"),
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
    let store = app.store_for(&scope);
    let client_key = idempotency_header(req)?;
    let idem_hash = client_key.as_deref().map(|k| idempotency_hash(&user, k));

    let (package, remembered) = match &tier {
        None => {
            let (package, remembered) = store
                .package_and_idempotency(&package_id, idem_hash.as_deref())
                .await?;
            let package = package
                .filter(|p| p.active && p.currency == app.config.default_currency)
                .ok_or_else(|| ApiError::NotFound("Unknown or inactive credit package.".into()))?;
            (package, remembered)
        }
        Some(tier) => {
            let (plan, remembered) = store
                .plan_and_idempotency(tier, idem_hash.as_deref())
                .await?;
            let plan = plan
                .filter(|p| p.active && p.kind() == PlanKind::Tier)
                .ok_or_else(|| ApiError::NotFound("Unknown tier.".into()))?;
            if remembered.is_none() {
                let now = billing::entitlement(app, &scope, &user).await?;
                if now.plan.rank >= plan.rank {
                    return Err(ApiError::Conflict(format!(
                        "This account already has {} or a higher plan.",
                        plan.id
                    )));
                }
            }
            (
                tier_package(&plan, &app.config.default_currency),
                remembered,
            )
        }
    };

    let sheet = match (payment_sheet, stripe_version.as_deref()) {
        (true, Some(version)) => Some(sheet_fields(app, &scope, &user, version).await?),
        _ => None,
    };
    if let Some(record) = remembered {
        return replay(
            app,
            &scope,
            &package,
            &record.package_id,
            &record.intent_id,
            sheet,
            setup_intent.is_some(),
        )
        .await;
    }

    let stripe = app.stripe_for(&scope).await?;
    let saved = match &setup_intent {
        Some(id) => Some(billing::saved_card(app, &scope, &stripe, &user, id).await?),
        None => None,
    };
    let customer = match (&sheet, &saved) {
        (Some(sheet), _) => Some(sheet.customer.as_str()),
        (None, Some((customer, _))) => Some(customer.as_str()),
        (None, None) => None,
    };
    let payment_method = saved
        .as_ref()
        .map(|(_, card)| card.as_str())
        .or(payment_method.as_deref());
    let stripe_key = match &idem_hash {
        Some(hash) => format!("coffer-pi-{}", hash_parts(&[&scope.to_string(), hash])),
        None => format!("coffer-pi-{}", uuid::Uuid::new_v4()),
    };
    let intent = stripe
        .create_intent(
            NewIntent {
                amount: package.amount,
                currency: &package.currency,
                metadata: metadata(&app.scope_mark(&scope), &user, &package),
                payment_method,
                customer,
            },
            &stripe_key,
        )
        .await?;
    if intent.amount != package.amount
        || !intent
            .currency
            .eq_ignore_ascii_case(package.currency.as_str())
    {
        return Err(ApiError::Stripe(format!(
            "stripe returned intent {} with another amount or currency",
            intent.id
        )));
    }

    let payment = PaymentRecord::pending(&intent.id, user.clone(), &package, now_ms());
    if let Some(winner) = store.record_payment(&payment, idem_hash.as_deref()).await? {
        // A concurrent request with the same key recorded its intent first: answer with that one.
        return replay(
            app,
            &scope,
            &package,
            &winner.package_id,
            &winner.intent_id,
            sheet,
            setup_intent.is_some(),
        )
        .await;
    }
    tracing::info!(intent_id = %intent.id, package_id = %package.id, "payment intent created");
    if saved.is_some() && intent.status.as_deref() == Some("requires_confirmation") {
        // Recorded as pending first: the webhook that follows the charge finds the payment.
        let confirmed = stripe
            .confirm_intent(&intent.id, &confirm_key(&intent.id))
            .await?;
        return answer(&confirmed, None);
    }
    answer(&intent, sheet)
}

/// The same key again: the same intent if it was for the same package, else 409.
async fn replay(
    app: &App,
    scope: &Scope,
    package: &CreditPackage,
    remembered_package: &str,
    intent_id: &str,
    sheet: Option<SheetFields>,
    confirm: bool,
) -> Result<Response<Body>, ApiError> {
    if remembered_package != package.id {
        return Err(ApiError::Conflict(
            "This Idempotency-Key was already used for another purchase.".into(),
        ));
    }
    let stripe = app.stripe_for(scope).await?;
    let intent = stripe.retrieve_intent(intent_id).await?;
    tracing::info!(intent_id = %intent.id, "idempotent replay of create-payment-intent");
    if confirm && intent.status.as_deref() == Some("requires_confirmation") {
        // The first request stopped between recording and confirming: finish its work.
        let confirmed = stripe
            .confirm_intent(&intent.id, &confirm_key(&intent.id))
            .await?;
        return answer(&confirmed, sheet);
    }
    answer(&intent, sheet)
}

fn answer(intent: &Intent, sheet: Option<SheetFields>) -> Result<Response<Body>, ApiError> {
    let secret = intent
        .client_secret
        .as_deref()
        .ok_or_else(|| ApiError::Stripe("stripe returned no client secret".into()))?;
    let (customer, ephemeral_key) = sheet.map(|s| (s.customer, s.ephemeral_key)).unzip();
    Ok(ok(PaymentIntentCreated {
        client_secret: secret.to_owned(),
        payment_intent_id: intent.id.clone(),
        status: intent.status.clone(),
        customer,
        ephemeral_key,
    }))
}

/// One confirmation per intent, whichever request sends it.
fn confirm_key(intent_id: &str) -> String {
    format!("coffer-pi-confirm-{intent_id}")
}

fn metadata(mark: &str, user: &UserId, package: &CreditPackage) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        (META_SCOPE.to_string(), mark.to_owned()),
        (META_USER.to_string(), user.as_str().to_string()),
        (META_PACKAGE.to_string(), package.id.clone()),
        (META_CREDITS.to_string(), package.credits.to_string()),
    ]);
    if let Some(tier) = package.id.strip_prefix("tier:") {
        metadata.insert(META_TIER.to_string(), tier.to_string());
    }
    metadata
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
