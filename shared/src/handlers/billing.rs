//! The end-user plan and subscription routes (the `billing` function):
//!
//! - `GET /api/stripe/plans`: the active plans
//! - `POST /api/stripe/create-customer`: the account's one Stripe customer
//! - `POST /api/stripe/setup-intent`: a SetupIntent the page confirms with a card (Stripe.js)
//! - `POST /api/stripe/create-subscription`: an incomplete subscription the client confirms
//! - `GET …/my-subscription`, `GET …/my-payments`
//! - `POST …/cancel-subscription`, `POST …/update-subscription`
//! - Checkout and the customer portal: see `checkout`
//!
//! The project and mode come from `project_id`/`test_mode`; the account is the caller, or an
//! organisation of theirs named by `identifier`.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::checkout;
use crate::api::{
    AccountPaymentLine, CustomerCreated, Major, MySubscription, PlanView, SetupIntentCreated,
    SubscriptionCanceled, SubscriptionCreated, SubscriptionUpdated,
};
use crate::domain::money::Currency;
use crate::domain::records::{rfc3339, UserId};
use crate::domain::scope::Scope;
use crate::domain::subscriptions::SubscriptionState;
use crate::http::{json_body, ok, ok_page, respond, ApiError};
use crate::services::billing::{self, entitlement};
use crate::services::subscriptions::{self, AccountPayment, Cancel, Effective, SubscribeRequest};
use crate::{scoping, App};

const MAX_PAGE: usize = 100;

#[tracing::instrument(name = "billing", skip_all)]
pub async fn billing(app: &App, req: Request) -> Response<Body> {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let name = path.rsplit('/').next().unwrap_or_default();
    match (req.method().as_str(), name) {
        ("GET", "plans") => list_plans(app, req).await,
        ("POST", "create-customer") => create_customer(app, req).await,
        ("POST", "setup-intent") => setup_intent(app, req).await,
        ("POST", "create-subscription") => create_subscription(app, req).await,
        ("GET", "my-subscription") => my_subscription(app, req).await,
        ("GET", "my-payments") => my_payments(app, req).await,
        ("POST", "cancel-subscription") => cancel_subscription(app, req).await,
        ("POST", "update-subscription") => update_subscription(app, req).await,
        ("POST", "checkout-session") => checkout::checkout_session(app, req, false).await,
        ("POST", "checkout") => checkout::checkout_session(app, req, true).await,
        ("POST", "customer-portal") => checkout::customer_portal(app, req).await,
        _ => Err(ApiError::NotFound("No such route.".into())),
    }
}

async fn list_plans(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    auth_user(req)?;
    let scope = scoping::end_user_scope(app, req).await?;
    let plans = subscriptions::active_plans(app, &scope).await?;
    let currency = &app.config.default_currency;
    Ok(ok(plans
        .iter()
        .map(|p| PlanView::of(p, currency))
        .collect::<Vec<_>>()))
}

fn auth_user(req: &Request) -> Result<UserId, ApiError> {
    crate::auth::user_id(req)
}

/// An optional string field of a body: absent or null is `None`; anything but a string of at
/// most `max` characters is 400.
pub fn opt_text(value: &Option<Value>, name: &str, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() && text.chars().count() <= max => {
            Ok(Some(text.clone()))
        }
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a string of 1 to {max} characters."
        ))),
    }
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct CustomerBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Email, example = "ada@example.com"))]
    email: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    name: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

async fn create_customer(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: CustomerBody = json_body(req)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let email = opt_text(&body.email, "email", 512)?;
    if email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(ApiError::bad_request("email is not an e-mail address."));
    }
    let name = opt_text(&body.name, "name", 256)?;
    let scope = active_scope(app, req).await?;
    let customer_id =
        subscriptions::customer(app, &scope, &account, email.as_deref(), name.as_deref()).await?;
    Ok(ok(CustomerCreated { customer_id }))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct SetupBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

/// A SetupIntent for the account's customer: the page confirms it with Stripe.js and a card,
/// which saves the card without charging it; its id then pays a package or a subscription.
async fn setup_intent(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: SetupBody = json_body(req)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let scope = active_scope(app, req).await?;
    let setup = subscriptions::start_card_setup(app, &scope, &account).await?;
    Ok(ok(SetupIntentCreated {
        setup_intent_id: setup.setup_intent_id,
        client_secret: setup.client_secret,
        customer_id: setup.customer_id,
    }))
}

pub async fn active_scope(app: &App, req: &Request) -> Result<Scope, ApiError> {
    let scope = scoping::end_user_scope(app, req).await?;
    scoping::require_active(app, &scope).await?;
    Ok(scope)
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscribeBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "pro"))]
    plan_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    price_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
    /// Answer also with the customer and an ephemeral key for Stripe's PaymentSheet.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    payment_sheet: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    stripe_version: Option<Value>,
    /// A SetupIntent of this account that saved a card: the card becomes the customer's
    /// default before the subscription is created, so its first invoice is paid at once.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "seti_1Q"))]
    setup_intent_id: Option<Value>,
    /// The account's own Stripe customer (as create-customer answered), for apps that send it;
    /// any other customer is 403. The customer is always the account's, given or not.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "cus_Q1"))]
    customer_id: Option<Value>,
}

async fn create_subscription(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: SubscribeBody = json_body(req)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let plan_id = opt_text(&body.plan_id, "planId", 64)?;
    let price_id = opt_text(&body.price_id, "priceId", 200)?;
    let setup_intent = setup_intent_field(&body.setup_intent_id)?;
    let sheet_version = match opt_bool(&body.payment_sheet, "paymentSheet")? {
        false => None,
        true => Some(
            opt_text(&body.stripe_version, "stripeVersion", 64)?.ok_or_else(|| {
                ApiError::bad_request(
                    "stripeVersion (the mobile SDK's API version) is required with paymentSheet.",
                )
            })?,
        ),
    };
    let customer_id = opt_text(&body.customer_id, "customerId", 255)?;
    let scope = active_scope(app, req).await?;
    if let Some(customer_id) = customer_id.as_deref() {
        subscriptions::own_customer(app, &scope, &account, customer_id).await?;
    }
    let made = subscriptions::subscribe(
        app,
        &scope,
        SubscribeRequest {
            account: &account,
            plan_id: plan_id.as_deref(),
            price_id: price_id.as_deref(),
            setup_intent: setup_intent.as_deref(),
            sheet_version: sheet_version.as_deref(),
        },
    )
    .await?;
    let (customer, ephemeral_key) = made.sheet.map(|s| (s.customer, s.ephemeral_key)).unzip();
    Ok(ok(SubscriptionCreated {
        subscription_id: made.subscription_id,
        client_secret: made.client_secret,
        status: made.status.as_str(),
        plan_id: made.plan_id,
        customer,
        ephemeral_key,
    }))
}

async fn my_subscription(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let account = scoping::account(app, req, scoping::identifier_param(req)?)?;
    let scope = scoping::end_user_scope(app, req).await?;
    let now = entitlement(app, &scope, &account).await?;
    let sub = now.subscription.as_ref();
    Ok(ok(MySubscription {
        plan: PlanView::of(&now.plan, &app.config.default_currency),
        plan_id: now.plan.id.clone(),
        status: sub.map_or("none", |s| s.status.as_str()),
        subscription_id: sub.map(|s| s.subscription_id.clone()),
        subscribed_plan_id: sub.map(|s| s.plan_id.clone()),
        current_period_end: sub
            .filter(|s| s.current_period_end > 0)
            .map(|s| rfc3339(s.current_period_end * 1000)),
        cancel_at_period_end: sub.is_some_and(|s| s.cancel_at_period_end),
        limits: now.plan.limits.clone(),
    }))
}

async fn my_payments(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let account = scoping::account(app, req, scoping::identifier_param(req)?)?;
    let scope = scoping::end_user_scope(app, req).await?;
    let limit = match scoping::query_value(req, "limit")? {
        None => 20,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a number from 1 to 100."))?,
    };
    let before = scoping::query_value(req, "cursor")?;
    let (lines, next) =
        subscriptions::payments(app, &scope, &account, limit, before.as_deref()).await?;
    let data: Vec<AccountPaymentLine> = lines.iter().map(payment_line).collect();
    Ok(ok_page(data, next))
}

fn payment_line(line: &AccountPayment) -> AccountPaymentLine {
    match line {
        AccountPayment::Purchase(p) => {
            let tier = crate::domain::plans::tier_of_purchase(&p.package_id);
            AccountPaymentLine {
                id: p.intent_id.clone(),
                kind: if tier.is_some() {
                    "tier_purchase"
                } else {
                    "credit_purchase"
                },
                plan_id: tier.map(str::to_owned),
                credit_package_id: tier.is_none().then(|| p.package_id.clone()),
                subscription_id: None,
                amount: Some(Major::of(&p.currency, p.amount)),
                currency: p.currency.as_str().to_owned(),
                status: p.status.as_str().to_owned(),
                description: Some(p.description.clone()),
                created_at: rfc3339(p.created_at_ms),
            }
        }
        AccountPayment::Invoice(i) => AccountPaymentLine {
            id: i.invoice_id.clone(),
            kind: "subscription_invoice",
            plan_id: Some(i.plan_id.clone()),
            credit_package_id: None,
            subscription_id: Some(i.subscription_id.clone()),
            amount: Currency::parse(&i.currency).map(|c| Major::of(&c, i.amount)),
            currency: i.currency.clone(),
            status: i.status.clone(),
            description: None,
            created_at: rfc3339(i.created_at_ms),
        },
    }
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct CancelBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    immediately: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    resume: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

/// The optional `setupIntentId` of a body: 400 unless a SetupIntent id.
pub fn setup_intent_field(value: &Option<Value>) -> Result<Option<String>, ApiError> {
    match opt_text(value, "setupIntentId", 255)? {
        Some(id) if !billing::valid_setup_intent_id(&id) => {
            Err(ApiError::bad_request("setupIntentId is malformed."))
        }
        other => Ok(other),
    }
}

fn opt_bool(value: &Option<Value>, name: &str) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be true or false."
        ))),
    }
}

async fn cancel_subscription(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: CancelBody = json_body(req)?;
    let immediately = opt_bool(&body.immediately, "immediately")?;
    let resume = opt_bool(&body.resume, "resume")?;
    if immediately && resume {
        return Err(ApiError::bad_request(
            "Give immediately or resume, not both.",
        ));
    }
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let scope = scoping::end_user_scope(app, req).await?;
    let how = match (immediately, resume) {
        (true, _) => Cancel::Immediately,
        (_, true) => Cancel::Resume,
        _ => Cancel::AtPeriodEnd,
    };
    let state = subscriptions::cancel(app, &scope, &account, how).await?;
    Ok(ok(SubscriptionCanceled {
        status: state.status.as_str(),
        cancel_at_period_end: state.cancel_at_period_end,
        current_period_end: period_end(&state),
        subscription_id: state.subscription_id,
    }))
}

fn period_end(state: &SubscriptionState) -> Option<String> {
    (state.current_period_end > 0).then(|| rfc3339(state.current_period_end * 1000))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateBody {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "pro", required = true))]
    plan_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    identifier: Option<Value>,
}

async fn update_subscription(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = json_body(req)?;
    let identifier = opt_text(&body.identifier, "identifier", 255)?;
    let account = scoping::account(app, req, identifier.as_deref())?;
    let plan_id = opt_text(&body.plan_id, "planId", 64)?
        .ok_or_else(|| ApiError::bad_request("planId is required."))?;
    let scope = scoping::end_user_scope(app, req).await?;
    let changed = subscriptions::change_plan(app, &scope, &account, &plan_id).await?;
    Ok(ok(SubscriptionUpdated {
        plan_id: changed.plan_id,
        change: if changed.upgrade {
            "upgrade"
        } else {
            "downgrade"
        },
        effective: match changed.effective {
            Effective::PeriodEnd => "period_end",
            Effective::WhenPaid => "when_paid",
            Effective::Now => "now",
        },
        status: changed.state.status.as_str(),
        current_period_end: period_end(&changed.state),
        subscription_id: changed.state.subscription_id,
        client_secret: changed.client_secret,
    }))
}
