//! Stripe Checkout and the customer portal:
//!
//! - `POST /api/v1/payments/stripe/checkout-session` `{planId | creditPackageId, successUrl,
//!   cancelUrl}` → `{id, url}`: subscription mode for a plan, payment mode for a package
//! - `POST /api/portal/checkout` `{plan_id, success_url, cancel_url}` → `{checkout_url}` (the
//!   API-gateway frontend's names)
//! - `POST /api/v1/payments/stripe/customer-portal` `{returnUrl}` → `{url}`
//!
//! Redirect URLs must belong to the project's allowed origins. A paid package session is
//! credited once, from `checkout.session.completed`, through the same rules as a PaymentIntent.

use std::collections::HashMap;

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::billing::{active_scope, opt_text, recurring_plan};
use crate::adapters::store::CustomerLink;
use crate::adapters::stripe::{
    CheckoutItem, META_ACCOUNT, META_CREDITS, META_PACKAGE, META_PLAN, META_SCOPE, META_USER,
};
use crate::api::{CheckoutCreated, GatewayCheckoutCreated, PortalCreated};
use crate::domain::packages::valid_package_id;
use crate::domain::projects::redirect_allowed;
use crate::domain::records::now_ms;
use crate::http::{json_body, ok, ApiError};
use crate::services::billing::{self, ensure_customer};
use crate::{scoping, App};

/// How long a plan's Checkout session stays payable, and holds the account: 31 minutes (Stripe
/// takes 30 minutes at least).
const CHECKOUT_HOLD_SECS: i64 = 31 * 60;

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckoutBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    plan_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    credit_package_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "https://app.example.com/paid", required = true))]
    success_url: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "https://app.example.com/cart", required = true))]
    cancel_url: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

/// The API gateway frontend's spelling of the same body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct GatewayBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    plan_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    success_url: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    cancel_url: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

fn required_url(value: &Option<Value>, name: &str, origins: &[String]) -> Result<String, ApiError> {
    let url = opt_text(value, name, 2048)?
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required.")))?;
    if !redirect_allowed(&url, origins) {
        return Err(ApiError::bad_request(format!(
            "{name} must be an http(s) URL on one of the project's allowed origins."
        )));
    }
    Ok(url)
}

pub async fn checkout_session(
    app: &App,
    req: &Request,
    gateway: bool,
) -> Result<Response<Body>, ApiError> {
    let (plan_id, package_id, success, cancel, identifier) = if gateway {
        let body: GatewayBody = json_body(req)?;
        let plan = opt_text(&body.plan_id, "plan_id", 64)?
            .ok_or_else(|| ApiError::bad_request("plan_id is required."))?;
        (
            Some(plan),
            None,
            body.success_url,
            body.cancel_url,
            body.identifier,
        )
    } else {
        let body: CheckoutBody = json_body(req)?;
        (
            opt_text(&body.plan_id, "planId", 64)?,
            opt_text(&body.credit_package_id, "creditPackageId", 64)?,
            body.success_url,
            body.cancel_url,
            body.identifier,
        )
    };
    let identifier = opt_text(&identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let (success_name, cancel_name) = if gateway {
        ("success_url", "cancel_url")
    } else {
        ("successUrl", "cancelUrl")
    };
    let scope = active_scope(app, req).await?;
    let settings = billing::settings(app, &scope).await?;
    let success_url = required_url(&success, success_name, &settings.allowed_origins)?;
    let cancel_url = required_url(&cancel, cancel_name, &settings.allowed_origins)?;

    let mut metadata = HashMap::from([
        (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        (META_USER.to_owned(), account.as_str().to_owned()),
        (META_SCOPE.to_owned(), app.scope_mark(&scope)),
    ]);
    let plans;
    let packages;
    // The account's hold taken for a plan's Checkout (the record's version), released if the
    // session cannot be made.
    let mut held: Option<i64> = None;
    let item = match (plan_id.as_deref(), package_id.as_deref()) {
        (Some(plan_id), None) => {
            plans = billing::plans(app, &scope).await?;
            let plan = recurring_plan(&plans, Some(plan_id), None)?;
            // The same hold as create-subscription: while a Checkout for a plan is open, no
            // second one and no create; it ends with the session (or at once, on failure).
            let store = app.store_for(&scope);
            let record = store.subscription_record(&account).await?;
            if record.state.as_ref().is_some_and(|s| s.status.is_live()) {
                return Err(ApiError::Conflict(
                    "This account already has a live subscription.".into(),
                ));
            }
            let now = now_ms();
            let expires_at = now / 1000 + CHECKOUT_HOLD_SECS;
            if record.lock_until_ms.is_some_and(|until| until >= now)
                || !store
                    .write_subscription(&account, record.version, None, Some(expires_at * 1000))
                    .await?
            {
                return Err(ApiError::Conflict(
                    "A subscription is already being created or checked out for this account; finish or wait for that one.".into(),
                ));
            }
            held = Some(record.version + 1);
            metadata.insert(META_PLAN.to_owned(), plan.id.clone());
            CheckoutItem::Subscription {
                price_id: plan.price_id.as_deref().unwrap_or_default(),
                expires_at,
            }
        }
        (None, Some(package_id)) => {
            if !valid_package_id(package_id) {
                return Err(ApiError::bad_request("creditPackageId is malformed."));
            }
            packages = app.packages_for(&scope).await?;
            let package = packages
                .iter()
                .find(|p| p.id == package_id && p.active)
                .filter(|p| p.currency == app.config.default_currency)
                .ok_or_else(|| ApiError::NotFound("Unknown or inactive credit package.".into()))?;
            metadata.insert(META_PACKAGE.to_owned(), package.id.clone());
            metadata.insert(META_CREDITS.to_owned(), package.credits.to_string());
            CheckoutItem::Payment {
                name: &package.name,
                amount: package.amount,
                currency: &package.currency,
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "Give either planId or creditPackageId.",
            ))
        }
    };
    let made = async {
        let stripe = app.stripe_for(&scope).await?;
        let customer = ensure_customer(app, &scope, &stripe, &account, None, None).await?;
        let key = format!("coffer-cs-{}", uuid::Uuid::new_v4());
        Ok::<_, ApiError>(
            stripe
                .create_checkout_session(
                    item,
                    &customer,
                    account.as_str(),
                    metadata,
                    &success_url,
                    &cancel_url,
                    &key,
                )
                .await?,
        )
    }
    .await;
    let session = match made {
        Ok(session) => session,
        Err(err) => {
            if let Some(version) = held {
                let _ = app
                    .store_for(&scope)
                    .write_subscription(&account, version, None, None)
                    .await;
            }
            return Err(err);
        }
    };
    let url = session
        .url
        .ok_or_else(|| ApiError::Stripe("stripe returned a session without a url".into()))?;
    tracing::info!(session_id = %session.id, "checkout session created");
    if gateway {
        Ok(ok(GatewayCheckoutCreated {
            checkout_url: url,
            id: session.id,
        }))
    } else {
        Ok(ok(CheckoutCreated {
            id: session.id,
            url,
        }))
    }
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct PortalBody {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "https://app.example.com/account", required = true))]
    return_url: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

pub async fn customer_portal(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: PortalBody = json_body(req)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let scope = scoping::end_user_scope(app, req).await?;
    let settings = billing::settings(app, &scope).await?;
    let return_url = required_url(&body.return_url, "returnUrl", &settings.allowed_origins)?;
    let CustomerLink::Ready(customer) = app.store_for(&scope).customer_link(&account).await? else {
        return Err(ApiError::NotFound(
            "This account has no Stripe customer yet.".into(),
        ));
    };
    let stripe = app.stripe_for(&scope).await?;
    let store = app.store_for(&scope);
    let configuration = match store.portal_configuration().await? {
        Some(id) => id,
        None => {
            let id = stripe
                .create_portal_configuration(&format!("coffer-portal-config-v1-{scope}"))
                .await?;
            store.put_portal_configuration(&id).await?;
            id
        }
    };
    let session = stripe
        .create_portal_session(&customer, &return_url, &configuration)
        .await?;
    let url = session
        .url
        .ok_or_else(|| ApiError::Stripe("stripe returned a portal session without a url".into()))?;
    Ok(ok(PortalCreated { url }))
}
