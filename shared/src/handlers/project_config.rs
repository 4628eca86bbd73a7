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

use crate::adapters::secrets::{SecretsError, StripeSecrets};
use crate::adapters::store::SaveOutcome;
use crate::adapters::stripe::{KeyCheck, StripeApi};
use crate::api::{KeyValidation, ModeView, WebhookUrls};
use crate::domain::projects::{is_principal_arn, mask_key, ModeConfig, MAX_ALLOWED_PRINCIPALS};
use crate::domain::records::now_ms;
use crate::domain::scope::{Mode, Scope};
use crate::http::{body_bytes, json_body, ok, respond, ApiError, MAX_JSON_BODY};
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
        let project = scoping::owned_project(app, &developer, &id).await?;
        return Ok(ok(webhook_urls(req, &project.id)));
    }
    let plan_route = req
        .path_parameters_ref()
        .is_some_and(|p| p.first("plan_id").is_some());
    if plan_route || path.ends_with("/plans") || path.ends_with("/settings") {
        let project = scoping::owned_project(app, &developer, &id).await?;
        return super::project_plans::plans_or_settings(app, req, &Scope::new(project.id, mode))
            .await;
    }
    if path.ends_with("/validate-credentials") {
        scoping::owned_project(app, &developer, &id).await?;
        return validate_credentials(app, req, &Scope::new(id, mode)).await;
    }
    match method {
        "GET" => {
            let project = scoping::owned_project(app, &developer, &id).await?;
            Ok(ok(ModeView::of(&project, mode)))
        }
        "PUT" => save_config(app, req, &developer, Scope::new(id, mode)).await,
        "DELETE" => {
            let deactivated = app
                .store
                .set_mode_active(&id, &developer, mode, false)
                .await?;
            app.forget_project(&id);
            if !deactivated {
                return Err(ApiError::NotFound(
                    "Unknown project, or not configured for this mode.".into(),
                ));
            }
            tracing::info!(project = %id, mode = %mode, "project deactivated");
            let project = scoping::owned_project(app, &developer, &id).await?;
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
    // The key's prefix says its mode (Stripe mints keys per mode); Stripe says whether it works.
    match check_key(app, &scope, &secret_key).await? {
        KeyCheck::Valid => {}
        KeyCheck::Invalid => {
            return Err(ApiError::InvalidCredentials(
                "Stripe refused this secret key.".into(),
            ))
        }
    }
    // Claim the project before its secret is written, so nobody writes another's secret.
    if !app.store.claim_project(&scope.project, developer).await? {
        return Err(ApiError::NotFound("Unknown project.".into()));
    }
    let secret_id = app.secret_id_for(&scope)?;
    let kept_webhook_secret = match webhook_secret {
        Some(secret) => Some(secret),
        None => match app.project_secrets.get(&secret_id).await {
            Ok(existing) => existing.webhook_secret().ok().map(str::to_owned),
            Err(SecretsError::NotConfigured) => None,
            Err(err) => return Err(err.into()),
        },
    };
    let allowed_principals = match principals {
        Some(list) => list,
        None => app
            .store
            .project(&scope.project)
            .await?
            .and_then(|p| {
                p.modes
                    .get(&scope.mode)
                    .map(|m| m.allowed_principals.clone())
            })
            .unwrap_or_default(),
    };
    let config = ModeConfig {
        masked_key: mask_key(&secret_key),
        publishable_key: publishable_key.clone(),
        webhook_secret_set: kept_webhook_secret.is_some(),
        active: true,
        updated_at_ms: now_ms(),
        allowed_principals,
    };
    let secrets = StripeSecrets::new(Some(secret_key), kept_webhook_secret)
        .with_publishable_key(Some(publishable_key));
    app.project_secrets.write(&secret_id, secrets).await?;
    match app
        .store
        .save_mode_config(&scope.project, developer, scope.mode, &config)
        .await?
    {
        SaveOutcome::Saved => {}
        SaveOutcome::NotOwner => return Err(ApiError::NotFound("Unknown project.".into())),
    }
    app.forget_project(&scope.project);
    tracing::info!(project = %scope.project, mode = %scope.mode, "project configured");
    let project = scoping::owned_project(app, developer, &scope.project).await?;
    Ok(ok(ModeView::of(&project, scope.mode)))
}

/// Asks Stripe (the project's Stripe: its own base URL on a local stack) about a key.
async fn check_key(app: &App, scope: &Scope, key: &str) -> Result<KeyCheck, ApiError> {
    let client = StripeApi::new(
        &app.http,
        key,
        app.config.stripe_api_base_for(&scope.project),
    )?;
    Ok(client.check_key().await?)
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
    let key = match given {
        Some(key) => key,
        None => match app.secrets_for(scope).await {
            Ok(secrets) => secrets.stripe_secret_key()?.to_owned(),
            Err(SecretsError::NotConfigured) => {
                return Err(ApiError::NotFound(
                    "No key is stored for this mode; give one as secretKey.".into(),
                ))
            }
            Err(err) => return Err(err.into()),
        },
    };
    let Some(key_mode) = Mode::of_secret_key(&key) else {
        return Ok(ok(KeyValidation {
            valid: false,
            livemode: None,
            reason: Some("This is not a Stripe secret or restricted key."),
        }));
    };
    let livemode = key_mode == Mode::Live;
    Ok(ok(match check_key(app, scope, &key).await? {
        KeyCheck::Valid => KeyValidation {
            valid: true,
            livemode: Some(livemode),
            reason: None,
        },
        KeyCheck::Invalid => KeyValidation {
            valid: false,
            livemode: Some(livemode),
            reason: Some("Stripe refused this key: it is wrong, revoked or expired."),
        },
    }))
}

/// The URLs to paste into the Stripe Dashboard, per mode, and the events to select.
fn webhook_urls(req: &Request, project: &crate::domain::scope::ProjectId) -> WebhookUrls {
    let base = public_base_url(req);
    let url = |mode: Mode| format!("{base}/api/v1/payments/stripe/webhooks/{project}/{mode}");
    WebhookUrls {
        test: url(Mode::Test),
        live: url(Mode::Live),
        events: crate::services::inbound::handled_event_types(),
    }
}

/// The API's own origin, as API Gateway saw it: https on its domain (http for a local stack).
fn public_base_url(req: &Request) -> String {
    let domain = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "localhost".into());
    let local = domain.starts_with("127.0.0.1") || domain.starts_with("localhost");
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{domain}")
}
