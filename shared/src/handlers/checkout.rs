//! Stripe Checkout and the customer portal:
//!
//! - `POST /api/v1/payments/stripe/checkout-session` `{planId | creditPackageId, successUrl,
//!   cancelUrl}` → `{id, url}`: subscription mode for a plan, payment mode for a package
//! - `POST /api/portal/checkout` `{plan_id, success_url, cancel_url}` → `{checkout_url}` (the
//!   API-gateway frontend's names)
//! - `POST /api/v1/payments/stripe/customer-portal` `{returnUrl}` → `{url}`
//!
//! The use cases are `services::checkout`.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::billing::{active_scope, opt_text};
use crate::api::{CheckoutCreated, GatewayCheckoutCreated, PortalCreated};
use crate::http::{json_body, ok, ApiError};
use crate::services::checkout::{self, Redirect, Sale};
use crate::{scoping, App};

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
    let success_url = opt_text(&success, success_name, 2048)?;
    let cancel_url = opt_text(&cancel, cancel_name, 2048)?;
    let sale = match (plan_id.as_deref(), package_id.as_deref()) {
        (Some(plan), None) => Some(Sale::Plan(plan)),
        (None, Some(package)) => Some(Sale::Package(package)),
        _ => None,
    };
    let opened = checkout::open_checkout(
        app,
        &scope,
        &account,
        sale,
        Redirect {
            field: success_name,
            url: success_url.as_deref(),
        },
        Redirect {
            field: cancel_name,
            url: cancel_url.as_deref(),
        },
    )
    .await?;
    if gateway {
        Ok(ok(GatewayCheckoutCreated {
            checkout_url: opened.url,
            id: opened.id,
        }))
    } else {
        Ok(ok(CheckoutCreated {
            id: opened.id,
            url: opened.url,
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
    let return_url = opt_text(&body.return_url, "returnUrl", 2048)?;
    let url = checkout::open_portal(
        app,
        &scope,
        &account,
        Redirect {
            field: "returnUrl",
            url: return_url.as_deref(),
        },
    )
    .await?;
    Ok(ok(PortalCreated { url }))
}
