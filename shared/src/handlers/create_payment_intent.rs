//! `POST /api/stripe/create-payment-intent`: a PaymentIntent for a stored package. Amount and
//! currency come from the package, never from the client. Round trips: one BatchGetItem (package
//! + idempotency record), one Stripe call, one TransactWriteItems.

use std::collections::HashMap;

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::adapters::store::{hash_parts, idempotency_hash};
use crate::adapters::stripe::{Intent, NewIntent, META_CREDITS, META_PACKAGE, META_USER};
use crate::auth::UserId;
use crate::domain::ledger::{ChargeFacts, PaymentRecord};
use crate::domain::packages::{valid_package_id, CreditPackage};
use crate::domain::records::{now_ms, PaymentStatus};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, respond, ApiError};
use crate::{auth, scoping, App};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateIntentBody {
    credit_package_id: Option<Value>,
    payment_method_id: Option<Value>,
}

#[tracing::instrument(name = "create_payment_intent", skip_all)]
pub async fn create_payment_intent(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let user = auth::user_id(req)?;
    let body: CreateIntentBody = json_body(req)?;
    let package_id = match body.credit_package_id {
        Some(Value::String(id)) if valid_package_id(&id) => id,
        Some(_) => return Err(ApiError::bad_request("creditPackageId is malformed.")),
        None => return Err(ApiError::bad_request("creditPackageId is required.")),
    };
    let payment_method = match body.payment_method_id {
        None | Some(Value::Null) => None,
        Some(Value::String(pm)) if valid_payment_method(&pm) => Some(pm),
        Some(_) => return Err(ApiError::bad_request("paymentMethodId is malformed.")),
    };
    let scope = scoping::end_user_scope(app, req).await?;
    scoping::require_active(app, &scope).await?;
    let store = app.store_for(&scope);
    let client_key = idempotency_header(req)?;
    let idem_hash = client_key.as_deref().map(|k| idempotency_hash(&user, k));

    let (package, remembered) = store
        .package_and_idempotency(&package_id, idem_hash.as_deref())
        .await?;
    let package = package
        .filter(|p| p.active && p.currency == app.config.default_currency)
        .ok_or_else(|| ApiError::NotFound("Unknown or inactive credit package.".into()))?;

    if let Some(record) = remembered {
        return replay(app, &scope, &package, &record.package_id, &record.intent_id).await;
    }

    let stripe = app.stripe_for(&scope).await?;
    let stripe_key = match &idem_hash {
        Some(hash) => format!("coffer-pi-{}", hash_parts(&[&scope.to_string(), hash])),
        None => format!("coffer-pi-{}", uuid::Uuid::new_v4()),
    };
    let intent = stripe
        .create_intent(
            NewIntent {
                amount: package.amount,
                currency: &package.currency,
                metadata: metadata(&user, &package),
                payment_method: payment_method.as_deref(),
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

    let payment = PaymentRecord {
        intent_id: intent.id.clone(),
        user_id: user.clone(),
        package_id: package.id.clone(),
        amount: package.amount,
        currency: package.currency.clone(),
        credits: package.credits,
        status: PaymentStatus::Pending,
        created_at_ms: now_ms(),
        description: package.name.clone(),
        credited: false,
        attention: None,
        facts: ChargeFacts::default(),
        applied: 0,
        rev: 0,
    };
    if let Some(winner) = store.record_payment(&payment, idem_hash.as_deref()).await? {
        // A concurrent request with the same key recorded its intent first: answer with that one.
        return replay(app, &scope, &package, &winner.package_id, &winner.intent_id).await;
    }
    tracing::info!(intent_id = %intent.id, package_id = %package.id, "payment intent created");
    answer(&intent)
}

/// The same key again: the same intent if it was for the same package, else 409.
async fn replay(
    app: &App,
    scope: &Scope,
    package: &CreditPackage,
    remembered_package: &str,
    intent_id: &str,
) -> Result<Response<Body>, ApiError> {
    if remembered_package != package.id {
        return Err(ApiError::Conflict(
            "This Idempotency-Key was already used for another credit package.".into(),
        ));
    }
    let intent = app
        .stripe_for(scope)
        .await?
        .retrieve_intent(intent_id)
        .await?;
    tracing::info!(intent_id = %intent.id, "idempotent replay of create-payment-intent");
    answer(&intent)
}

fn answer(intent: &Intent) -> Result<Response<Body>, ApiError> {
    let secret = intent
        .client_secret
        .as_deref()
        .ok_or_else(|| ApiError::Stripe("stripe returned no client secret".into()))?;
    Ok(ok(
        json!({ "clientSecret": secret, "paymentIntentId": intent.id }),
    ))
}

fn metadata(user: &UserId, package: &CreditPackage) -> HashMap<String, String> {
    HashMap::from([
        (META_USER.to_string(), user.as_str().to_string()),
        (META_PACKAGE.to_string(), package.id.clone()),
        (META_CREDITS.to_string(), package.credits.to_string()),
    ])
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
