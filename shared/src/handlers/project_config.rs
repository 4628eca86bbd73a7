//! A project's Stripe configuration, for the developer who owns it (the configuration function,
//! the only one that writes projects' secrets):
//!
//! - `GET|PUT|DELETE /api/v1/payments/stripe/projects/{project_id}/config?test_mode=`
//! - `POST …/projects/{project_id}/validate-credentials`
//! - `GET …/projects/{project_id}/webhook-urls`
//!
//! Keys are checked against Stripe before they are stored, stored only in Secrets Manager, and
//! shown only masked. The first PUT of an unknown project creates it, owned by the caller.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{KeyValidation, ModeView, WebhookUrls};
use crate::domain::projects::{is_principal_arn, MAX_ALLOWED_PRINCIPALS};
use crate::domain::scope::{Mode, Scope};
use crate::http::{body_bytes, json_body, ok, respond, ApiError, MAX_JSON_BODY};
use crate::services::projects::{self, ModeInput};
use crate::{scoping, App};

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    secret_key: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    publishable_key: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    webhook_secret: Option<Value>,
    /// The IAM roles or users (exact ARNs) allowed to spend credits and record usage in this
    /// project's mode through `/internal/*`. Absent: kept as saved; `[]`: nobody.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    allowed_principals: Option<Value>,
}

#[tracing::instrument(name = "project_config", skip_all)]
pub async fn project_config(app: &App, req: Request) -> Response<Body> {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let developer = scoping::developer(app, req)?;
    let id = scoping::path_project(req)?;
    let mode = scoping::developer_mode(req)?;
    let path = req.uri().path();
    let method = req.method().as_str();
    if path.ends_with("/webhook-urls") {
        let project = projects::owned(app, &developer, &id).await?;
        return Ok(ok(webhook_urls(app, req, &project.id)));
    }
    let plan_route = req
        .path_parameters_ref()
        .is_some_and(|p| p.first("plan_id").is_some());
    if plan_route || path.ends_with("/plans") || path.ends_with("/settings") {
        let project = projects::owned(app, &developer, &id).await?;
        return super::project_plans::plans_or_settings(app, req, &Scope::new(project.id, mode))
            .await;
    }
    if path.ends_with("/validate-credentials") {
        projects::owned(app, &developer, &id).await?;
        return validate_credentials(app, req, &Scope::new(id, mode)).await;
    }
    match method {
        "GET" => {
            let project = projects::owned(app, &developer, &id).await?;
            Ok(ok(ModeView::of(&project, mode)))
        }
        "PUT" => save_config(app, req, &developer, Scope::new(id, mode)).await,
        "DELETE" => {
            let project = projects::deactivate(app, &developer, &Scope::new(id, mode)).await?;
            Ok(ok(ModeView::of(&project, mode)))
        }
        _ => Err(ApiError::NotFound("No such route.".into())),
    }
}

/// A string field: required or optional, at most 255 visible characters.
fn text_field(
    value: Option<&Value>,
    name: &str,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::bad_request(format!("{name} is required."))),
        Some(Value::String(text))
            if !text.is_empty()
                && text.len() <= 255
                && text.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(text.clone()))
        }
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a string of 1 to 255 visible characters."
        ))),
    }
}

async fn save_config(
    app: &App,
    req: &Request,
    developer: &crate::auth::UserId,
    scope: Scope,
) -> Result<Response<Body>, ApiError> {
    if scope.project.is_default() {
        // The deployment's own project is configured by its secret, not by a developer.
        return Err(ApiError::NotFound("Unknown project.".into()));
    }
    let body: ConfigBody = json_body(req)?;
    let secret_key = text_field(body.secret_key.as_ref(), "secretKey", true)?.unwrap_or_default();
    let publishable_key =
        text_field(body.publishable_key.as_ref(), "publishableKey", true)?.unwrap_or_default();
    let webhook_secret = text_field(body.webhook_secret.as_ref(), "webhookSecret", false)?;
    if Mode::of_secret_key(&secret_key) != Some(scope.mode) {
        return Err(ApiError::bad_request(format!(
            "secretKey must be a {mode} key (sk_{mode}_… or rk_{mode}_…).",
            mode = scope.mode
        )));
    }
    if Mode::of_publishable_key(&publishable_key) != Some(scope.mode) {
        return Err(ApiError::bad_request(format!(
            "publishableKey must be a {mode} key (pk_{mode}_…).",
            mode = scope.mode
        )));
    }
    if webhook_secret
        .as_deref()
        .is_some_and(|w| !crate::domain::projects::is_webhook_secret(w))
    {
        return Err(ApiError::bad_request(format!(
            "webhookSecret must be the endpoint's signing secret from Stripe: whsec_ and at least {} letters or digits.",
            crate::domain::projects::MIN_WEBHOOK_SECRET_CHARS
        )));
    }
    let principals = match &body.allowed_principals {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            let arns: Option<Vec<String>> = list
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|a| is_principal_arn(a))
                        .map(str::to_owned)
                })
                .collect();
            match arns {
                Some(arns) if arns.len() <= MAX_ALLOWED_PRINCIPALS => Some(arns),
                _ => return Err(ApiError::bad_request(format!(
                    "allowedPrincipals must list up to {MAX_ALLOWED_PRINCIPALS} IAM role or user ARNs (arn:aws:iam::<account>:role/<name>), no wildcards."
                ))),
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "allowedPrincipals must be a list of IAM role or user ARNs.",
            ))
        }
    };
    let project = projects::configure(
        app,
        developer,
        &scope,
        ModeInput {
            secret_key,
            publishable_key,
            webhook_secret,
            allowed_principals: principals,
        },
    )
    .await?;
    Ok(ok(ModeView::of(&project, scope.mode)))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ValidateBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    secret_key: Option<Value>,
}

/// `{valid, livemode, reason?}` for a given key or the stored one. A bad key is `valid: false`;
/// only Stripe being unreachable is an error (502).
async fn validate_credentials(
    app: &App,
    req: &Request,
    scope: &Scope,
) -> Result<Response<Body>, ApiError> {
    let given = if body_bytes(req, MAX_JSON_BODY)?.is_empty() {
        None
    } else {
        let body: ValidateBody = json_body(req)?;
        text_field(body.secret_key.as_ref(), "secretKey", false)?
    };
    let verdict = projects::check_credentials(app, scope, given).await?;
    Ok(ok(KeyValidation {
        valid: verdict.valid,
        livemode: verdict.livemode,
        reason: match (verdict.valid, verdict.livemode) {
            (true, _) => None,
            (false, None) => Some("This is not a Stripe secret or restricted key."),
            (false, Some(_)) => Some("Stripe refused this key: it is wrong, revoked or expired."),
        },
    }))
}

/// The URLs to paste into the Stripe Dashboard, per mode, and the events to select.
fn webhook_urls(
    app: &App,
    req: &Request,
    project: &crate::domain::scope::ProjectId,
) -> WebhookUrls {
    let base = public_base_url(app, req);
    let url = |mode: Mode| format!("{base}/api/v1/payments/stripe/webhooks/{project}/{mode}");
    WebhookUrls {
        test: url(Mode::Test),
        live: url(Mode::Live),
        events: crate::services::inbound::handled_event_types(),
    }
}

/// The API's public URL: the configured one (a custom domain with its mapping's path), else
/// the origin API Gateway saw: https on its domain (http for a local stack).
fn public_base_url(app: &App, req: &Request) -> String {
    if let Some(url) = &app.config.public_base_url {
        return url.clone();
    }
    let domain = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "localhost".into());
    let local = domain.starts_with("127.0.0.1") || domain.starts_with("localhost");
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{domain}")
}
