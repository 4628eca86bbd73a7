//! What a developer reads and manages across their projects (the `developer-api` function):
//!
//! - `GET /api/v1/payments/projects`: the caller's projects with their status per mode
//! - `GET …/stripe/projects/{project_id}/credit-packages[/{package_id}]`, `PUT …/{package_id}`:
//!   the project's catalog in the mode (`test_mode`, default true); never deleted, only
//!   deactivated
//! - `GET …/stripe/projects/{project_id}/subscriptions`, `GET /api/v1/payments/subscriptions`:
//!   the subscriptions as last read from Stripe, most recently changed first (up to 100)
//! - `GET /api/v1/payments/stats`: counters per project and mode, kept from the change stream
//! - `GET …/stripe/projects/{project_id}/payments`, `GET /api/v1/payments/transactions`: see
//!   `developer_payments`
//!
//! Another developer's project answers 404, as if it did not exist.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::developer_payments::{developer_scopes, merged_page, payment_query};
use crate::api::{
    AccountOverview, CreditPackageView, DailyStats, HistoryLine, LedgerLine, ProjectSummary,
    ScopeStats, SubscriptionLine,
};
use crate::domain::money::{AmountError, Currency};
use crate::domain::packages::{valid_package_id, CreditPackage};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ok_page, respond, ApiError};
use crate::services::{developers, projects};
use crate::{scoping, App};

/// The largest price or credit amount of a package, in minor units.
const MAX_PACKAGE_MINOR: i64 = 100_000_000_000;

/// The scope's subscriptions as a developer sees them.
async fn subscription_lines(app: &App, scope: &Scope) -> Result<Vec<SubscriptionLine>, ApiError> {
    Ok(developers::subscriptions(app, scope)
        .await?
        .iter()
        .map(|(account, state)| SubscriptionLine::of(scope, account.as_str(), state))
        .collect())
}

#[tracing::instrument(name = "developer_api", skip_all)]
pub async fn developer_api(app: &App, req: Request) -> Response<Body> {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let developer = scoping::developer(app, req)?;
    let path = scoping::route_template(req);
    if path == "/api/v1/payments/projects" {
        let projects = projects::of_developer(app, &developer).await?;
        let data: Vec<_> = projects.iter().map(ProjectSummary::of).collect();
        return Ok(ok(data));
    }
    if path == "/api/v1/payments/stats" {
        return stats(app, req, &developer).await;
    }
    if path == "/api/v1/payments/transactions" {
        let query = payment_query(req, &developer)?;
        let scopes = developer_scopes(app, req, &developer).await?;
        let (lines, next) = merged_page(app, &developer, &scopes, &query).await?;
        return Ok(ok_page(lines, next));
    }
    if path == "/api/v1/payments/subscriptions" {
        let scopes = developer_scopes(app, req, &developer).await?;
        let mut lines = Vec::new();
        for scope in &scopes {
            lines.extend(subscription_lines(app, scope).await?);
        }
        lines.sort_by_key(|line| std::cmp::Reverse(line.observed_at));
        lines.truncate(developers::SUBSCRIPTIONS_SHOWN);
        return Ok(ok_page(lines, None));
    }
    let id = scoping::path_project(req)?;
    let project = projects::owned(app, &developer, &id).await?;
    let scope = Scope::new(project.id, scoping::developer_mode(req)?);
    if path.ends_with("/subscriptions") {
        return Ok(ok_page(subscription_lines(app, &scope).await?, None));
    }
    if path.ends_with("/stats/daily") {
        let days = match scoping::query_value(req, "days")? {
            None => 30,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=developers::MAX_SERIES_DAYS).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "days must be from 1 to {}.",
                        developers::MAX_SERIES_DAYS
                    ))
                })?,
        };
        let series = developers::daily(app, &scope, days).await?;
        return Ok(ok(DailyStats::of(
            &scope,
            &series,
            &app.config.default_currency,
        )));
    }
    if path.contains("/accounts/") {
        return account_route(app, req, &path, &developer, scope).await;
    }
    if path.contains("/webhooks") {
        return super::webhooks::webhooks_route(app, req, &path, scope).await;
    }
    if path.ends_with("/payments") {
        let query = payment_query(req, &developer)?;
        let (lines, next) = merged_page(app, &developer, &[scope], &query).await?;
        return Ok(ok_page(lines, next));
    }
    let package_id = req
        .path_parameters_ref()
        .and_then(|p| p.first("package_id"))
        .map(str::to_owned);
    match (req.method().as_str(), package_id) {
        ("GET", None) => Ok(ok(developers::packages(app, &scope)
            .await?
            .iter()
            .map(CreditPackageView::of)
            .collect::<Vec<_>>())),
        ("GET", Some(package_id)) => {
            let package = developers::package(app, &scope, &package_id).await?;
            Ok(ok(CreditPackageView::of(&package)))
        }
        ("PUT", Some(package_id)) => {
            let package = package_from_body(app, req, &package_id)?;
            let package = developers::save_package(app, &scope, package).await?;
            Ok(ok(CreditPackageView::of(&package)))
        }
        _ => Err(ApiError::NotFound("No such route.".into())),
    }
}

/// An account's own low-balance threshold (over its project's); `null` removes it.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AlertBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 2.5))]
    low_threshold: Option<Box<RawValue>>,
}

/// An account of the developer's project in a mode: its balance with its buckets, and grants.
async fn account_route(
    app: &App,
    req: &Request,
    route: &str,
    developer: &crate::auth::UserId,
    scope: Scope,
) -> Result<Response<Body>, ApiError> {
    let account = req
        .path_parameters_ref()
        .and_then(|p| p.first("account_id"))
        .and_then(crate::auth::UserId::parse)
        .ok_or_else(|| ApiError::bad_request("account_id is malformed."))?;
    if req.method().as_str() == "GET" && route.ends_with("/accounts/{account_id}") {
        let facts = developers::account(app, &scope, &account).await?;
        return Ok(ok(AccountOverview {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            account_id: account.as_str().to_owned(),
            balance: crate::api::BalanceView::of(&facts.balance),
            subscription: facts
                .subscription
                .as_ref()
                .map(|state| SubscriptionLine::of(&scope, account.as_str(), state)),
            usage: super::usage::usage_view(facts.usage),
            ledger: facts.ledger.0.iter().map(LedgerLine::of).collect(),
            ledger_complete: facts.ledger.1,
            payments: facts.history.iter().map(HistoryLine::of).collect(),
            more_payments: facts.more_history,
        }));
    }
    if req.method().as_str() == "GET" && route.ends_with("/balance") {
        let balance = crate::services::accounts::balance(app, &scope, &account).await?;
        return Ok(ok(crate::api::BalanceView::of(&balance)));
    }
    if route.ends_with("/auto-recharge") {
        return super::recharge::recharge_route(
            app,
            req,
            &scope,
            &account,
            crate::domain::recharge::ChangedBy::Developer,
        )
        .await;
    }
    if route.ends_with("/alerts") {
        let body: AlertBody = json_body(req)?;
        let currency = &app.config.default_currency;
        let threshold = match &body.low_threshold {
            Some(raw) if raw.get() != "null" => Some(
                currency
                    .parse_major(raw.get(), MAX_PACKAGE_MINOR)
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "lowThreshold must be an amount of {currency} above zero, or null."
                        ))
                    })?,
            ),
            _ => None,
        };
        let alert =
            crate::services::accounts::set_low_threshold(app, &scope, &account, threshold).await?;
        return Ok(ok(crate::api::AlertView {
            low_threshold: alert.threshold.map(|t| crate::api::Major::of(currency, t)),
            armed: alert.armed,
        }));
    }
    let by = format!("developer:{}", developer.as_str());
    super::grants::grant_route(app, req, async |_| {
        Ok(super::grants::Actor { scope, account, by })
    })
    .await
}

/// Per project and mode of the caller (`project_id` and `test_mode` narrow it): revenue and
/// refunds by currency, payments by status, credits sold, spent and outstanding, active
/// subscriptions. One read of a few counter items per scope, whatever the number of payments.
async fn stats(
    app: &App,
    req: &Request,
    developer: &crate::auth::UserId,
) -> Result<Response<Body>, ApiError> {
    let mut data = Vec::new();
    for scope in developer_scopes(app, req, developer).await? {
        let counters = developers::stats(app, &scope).await?;
        data.push(ScopeStats::of(
            &scope,
            &counters,
            &app.config.default_currency,
        ));
    }
    Ok(ok(data))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct PackageBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    name: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    description: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 15.0))]
    amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "usd"))]
    currency: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 16.5))]
    credit_amount: Option<Box<RawValue>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    is_active: Option<Value>,
}

fn package_from_body(
    app: &App,
    req: &Request,
    package_id: &str,
) -> Result<CreditPackage, ApiError> {
    if !valid_package_id(package_id) {
        return Err(ApiError::bad_request(
            "package_id must be 1 to 64 letters, digits, '-' or '_'.",
        ));
    }
    let body: PackageBody = json_body(req)?;
    let text = |value: &Option<Value>, name: &str, max: usize| match value {
        Some(Value::String(text)) if !text.trim().is_empty() && text.chars().count() <= max => {
            Ok(text.clone())
        }
        None | Some(Value::Null) if name == "description" => Ok(String::new()),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a non-empty string of at most {max} characters."
        ))),
    };
    let currency = match &body.currency {
        Some(Value::String(code)) => Currency::parse(code)
            .ok_or_else(|| ApiError::bad_request("currency must be a three-letter code."))?,
        _ => return Err(ApiError::bad_request("currency is required.")),
    };
    if currency != app.config.default_currency {
        return Err(ApiError::bad_request(format!(
            "This deployment sells credits in {}.",
            app.config.default_currency
        )));
    }
    let minor = |raw: &Option<Box<RawValue>>, name: &str| -> Result<i64, ApiError> {
        let raw = raw
            .as_ref()
            .ok_or_else(|| ApiError::bad_request(format!("{name} is required.")))?;
        let value =
            currency
                .parse_major(raw.get(), MAX_PACKAGE_MINOR)
                .map_err(|err| match err {
                    AmountError::NotANumber => {
                        ApiError::bad_request(format!("{name} must be a number."))
                    }
                    AmountError::TooPrecise => ApiError::bad_request(format!(
                        "{name} is finer than the smallest unit of {currency}."
                    )),
                    AmountError::TooLarge => ApiError::bad_request(format!("{name} is too large.")),
                })?;
        if value <= 0 {
            return Err(ApiError::bad_request(format!(
                "{name} must be greater than zero."
            )));
        }
        Ok(value)
    };
    let active = match &body.is_active {
        None => true,
        Some(Value::Bool(active)) => *active,
        Some(_) => return Err(ApiError::bad_request("isActive must be true or false.")),
    };
    Ok(CreditPackage {
        id: package_id.to_owned(),
        name: text(&body.name, "name", 100)?,
        description: text(&body.description, "description", 500)?,
        amount: minor(&body.amount, "amount")?,
        credits: minor(&body.credit_amount, "creditAmount")?,
        currency,
        active,
    })
}
