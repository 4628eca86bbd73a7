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

use std::collections::HashMap;

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::checkout;
use crate::adapters::store::{hash_parts, AccountPayment};
use crate::adapters::stripe::{
    PriceChange, StripeFailure, META_ACCOUNT, META_PLAN, META_SCOPE, META_USER,
};
use crate::api::{
    AccountPaymentLine, CustomerCreated, Major, MySubscription, PlanView, SetupIntentCreated,
    SubscriptionCanceled, SubscriptionCreated, SubscriptionUpdated,
};
use crate::domain::money::Currency;
use crate::domain::plans::{
    change_billing, plan_change, valid_plan_id, valid_price_id, ChangeBilling, Plan, PlanChange,
    PlanKind,
};
use crate::domain::records::{now_ms, rfc3339, UserId};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ok_page, respond, ApiError};
use crate::services::billing::{self, ensure_customer, entitlement, sheet_fields, store_read};
use crate::{scoping, App};

/// How long a create-subscription holds the account against a second one.
/// How long a create holds the account: longer than any attempt of the function can take (its
/// timeout, Stripe's retries), so that a slow first attempt is never overtaken by a second. A
/// create that ends (made, or failed at Stripe) releases it at once.
const SUBSCRIBE_LOCK_MS: i64 = 5 * 60_000;
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
    let mut plans: Vec<Plan> = billing::plans(app, &scope)
        .await?
        .into_iter()
        .filter(|p| p.active)
        .collect();
    plans.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.id.cmp(&b.id)));
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
    let stripe = app.stripe_for(&scope).await?;
    let customer_id = ensure_customer(
        app,
        &scope,
        &stripe,
        &account,
        email.as_deref(),
        name.as_deref(),
    )
    .await?;
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
    let stripe = app.stripe_for(&scope).await?;
    let customer = ensure_customer(app, &scope, &stripe, &account, None, None).await?;
    let metadata = HashMap::from([
        (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        (META_USER.to_owned(), account.as_str().to_owned()),
        (META_SCOPE.to_owned(), app.scope_mark(&scope)),
    ]);
    // Each call is a new card form: a fresh key (a retried call makes a second, unused intent).
    let key = format!("coffer-seti-{}", uuid::Uuid::new_v4());
    let setup = stripe
        .create_setup_intent(&customer, metadata, &key)
        .await?;
    let secret = setup
        .client_secret
        .ok_or_else(|| ApiError::Stripe("stripe returned no client secret".into()))?;
    Ok(ok(SetupIntentCreated {
        setup_intent_id: setup.id,
        client_secret: secret,
        customer_id: customer,
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
}

/// The recurring plan a body names by `planId` or `priceId`: 404 when unknown.
pub fn recurring_plan<'a>(
    plans: &'a [Plan],
    plan_id: Option<&str>,
    price_id: Option<&str>,
) -> Result<&'a Plan, ApiError> {
    let found = match (plan_id, price_id) {
        (Some(id), None) => {
            if !valid_plan_id(id) {
                return Err(ApiError::bad_request("planId is malformed."));
            }
            plans.iter().find(|p| p.id == id)
        }
        (None, Some(price)) => {
            if !valid_price_id(price) {
                return Err(ApiError::bad_request("priceId is malformed."));
            }
            plans.iter().find(|p| p.price_id.as_deref() == Some(price))
        }
        _ => return Err(ApiError::bad_request("Give either planId or priceId.")),
    };
    found
        .filter(|p| p.active && p.kind() == PlanKind::Recurring)
        .ok_or_else(|| ApiError::NotFound("Unknown plan or price.".into()))
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
    let scope = active_scope(app, req).await?;
    let plans = billing::plans(app, &scope).await?;
    let plan = recurring_plan(&plans, plan_id.as_deref(), price_id.as_deref())?.clone();
    let price = plan.price_id.clone().unwrap_or_default();
    let store = app.store_for(&scope);

    // Hold the account: a second create (even a concurrent one) sees the lock or the live
    // subscription and gets 409.
    let mut record = store.subscription_record(&account).await?;
    // A first payment left waiting (the user closed the page): the same plan again resumes that
    // subscription with its current secret; another plan replaces it (nothing was paid).
    if let Some(waiting) = record
        .state
        .as_ref()
        .filter(|s| s.status == crate::domain::subscriptions::SubscriptionStatus::Incomplete)
    {
        let stripe = app.stripe_for(&scope).await?;
        let read_started = now_ms();
        match stripe.retrieve_subscription(&waiting.subscription_id).await {
            Ok(current) if current.status == "incomplete" => {
                if current.price_id() == Some(price.as_str()) {
                    let secret = stripe.confirmation_secret(&current).await?;
                    let state =
                        store_read(&store, &account, &current, &plans, None, read_started).await?;
                    let sheet = match &sheet_version {
                        Some(version) => Some(sheet_fields(app, &scope, &account, version).await?),
                        None => None,
                    };
                    let (customer, ephemeral_key) =
                        sheet.map(|s| (s.customer, s.ephemeral_key)).unzip();
                    tracing::info!(subscription_id = %current.id, "waiting subscription resumed");
                    return Ok(ok(SubscriptionCreated {
                        subscription_id: current.id,
                        client_secret: secret,
                        status: state.status.as_str(),
                        plan_id: plan.id,
                        customer,
                        ephemeral_key,
                    }));
                }
                // Its invoice is voided first, so that the secret the client still holds can
                // never pay for it; if it was paid meanwhile, it is live: 409 below.
                if let Some(invoice) = &current.latest_invoice {
                    if stripe.void_invoice(invoice).await.is_err() {
                        let now = stripe.retrieve_subscription(&current.id).await?;
                        store_read(&store, &account, &now, &plans, None, now_ms()).await?;
                        return Err(ApiError::Conflict(
                            "This account already has a live subscription.".into(),
                        ));
                    }
                }
                let canceled = stripe.cancel_subscription_now(&current.id).await?;
                tracing::info!(subscription_id = %canceled.id, "waiting subscription replaced by another plan");
                store_read(&store, &account, &canceled, &plans, None, read_started).await?;
            }
            Ok(current) => {
                store_read(&store, &account, &current, &plans, None, read_started).await?;
            }
            Err(StripeFailure::Missing(_)) => {
                billing::end_missing_subscription(app, &scope, &account, &waiting.subscription_id)
                    .await?;
            }
            Err(other) => return Err(other.into()),
        }
        record = store.subscription_record(&account).await?;
    }
    // PaymentSheet's customer and key first: a failure here leaves nothing to undo.
    let sheet = match (
        &sheet_version,
        record.state.as_ref().is_some_and(|s| s.status.is_live()),
    ) {
        (Some(version), false) => Some(sheet_fields(app, &scope, &account, version).await?),
        _ => None,
    };
    if record.state.as_ref().is_some_and(|s| s.status.is_live()) {
        return Err(ApiError::Conflict(
            "This account already has a live subscription.".into(),
        ));
    }
    if record.lock_until_ms.is_some_and(|until| until >= now_ms()) {
        return Err(ApiError::Conflict(
            "A subscription is already being created for this account.".into(),
        ));
    }
    if !store
        .write_subscription(
            &account,
            record.version,
            None,
            Some(now_ms() + SUBSCRIBE_LOCK_MS),
        )
        .await?
    {
        return Err(ApiError::Conflict(
            "A subscription is already being created for this account.".into(),
        ));
    }
    let locked_version = record.version + 1;
    let generation = record
        .state
        .as_ref()
        .map_or("first", |s| s.subscription_id.as_str());
    let read_started = now_ms();
    let created = subscribe(
        app,
        &scope,
        &account,
        &plan,
        &price,
        generation,
        setup_intent.as_deref(),
    )
    .await;
    let (subscription, secret) = match created {
        Ok(done) => done,
        Err(err) => {
            // Nothing half-written: the lock goes, no subscription is recorded.
            let _ = store
                .write_subscription(&account, locked_version, None, None)
                .await;
            return Err(err);
        }
    };
    let state = store_read(
        &store,
        &account,
        &subscription,
        &plans,
        Some(locked_version),
        read_started,
    )
    .await?;
    tracing::info!(subscription_id = %subscription.id, plan_id = %plan.id, "subscription created");
    let (customer, ephemeral_key) = sheet.map(|s| (s.customer, s.ephemeral_key)).unzip();
    Ok(ok(SubscriptionCreated {
        subscription_id: subscription.id,
        client_secret: secret,
        status: state.status.as_str(),
        plan_id: plan.id,
        customer,
        ephemeral_key,
    }))
}

async fn subscribe(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plan: &Plan,
    price: &str,
    generation: &str,
    setup_intent: Option<&str>,
) -> Result<(crate::adapters::stripe::Subscription, Option<String>), ApiError> {
    let stripe = app.stripe_for(scope).await?;
    let customer = ensure_customer(app, scope, &stripe, account, None, None).await?;
    if let Some(setup_intent) = setup_intent {
        let (_, card) = billing::saved_card(app, scope, &stripe, account, setup_intent).await?;
        stripe.set_default_card(&customer, &card).await?;
    }
    let metadata = HashMap::from([
        (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        (META_USER.to_owned(), account.as_str().to_owned()),
        (META_PLAN.to_owned(), plan.id.clone()),
        (META_SCOPE.to_owned(), app.scope_mark(scope)),
    ]);
    // The same create asked again (a client's retry after a timeout) sends the same key, so
    // Stripe answers with the subscription the first attempt made instead of making a second:
    // the key names the account's subscription generation (the one it had before, if any), the
    // price and the card, never the attempt.
    let key = format!(
        "coffer-sub-{}",
        hash_parts(&[
            &scope.to_string(),
            account.as_str(),
            generation,
            price,
            setup_intent.unwrap_or("default-card"),
        ])
    );
    let subscription = match stripe
        .create_subscription(&customer, price, metadata, &key)
        .await
    {
        // Stripe (or localstripe) will not start it without a card on the customer.
        Err(StripeFailure::Missing(why)) if why.contains("payment method") => {
            return Err(ApiError::Conflict(
                "This account has no card to pay with: save one first (POST /api/stripe/setup-intent) and give its setupIntentId.".into(),
            ))
        }
        other => other?,
    };
    let secret = stripe.confirmation_secret(&subscription).await?;
    Ok((subscription, secret))
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
    if before
        .as_deref()
        .is_some_and(|c| !crate::adapters::store::valid_account_boundary(c))
    {
        return Err(ApiError::bad_request("cursor is not valid."));
    }
    let (lines, more) = app
        .store_for(&scope)
        .account_payments(&account, limit, before.as_deref())
        .await?;
    let next = more
        .then(|| lines.last().map(AccountPayment::boundary))
        .flatten();
    let data: Vec<AccountPaymentLine> = lines.iter().map(payment_line).collect();
    Ok(ok_page(data, next))
}

fn payment_line(line: &AccountPayment) -> AccountPaymentLine {
    match line {
        AccountPayment::Purchase(p) => {
            let tier = p.package_id.strip_prefix("tier:");
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

/// The account's live subscription as stored: 404 when it has none.
async fn live_subscription(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<crate::domain::subscriptions::SubscriptionState, ApiError> {
    app.store_for(scope)
        .subscription_record(account)
        .await?
        .state
        .filter(|s| s.status.is_live())
        .ok_or_else(|| ApiError::NotFound("This account has no subscription.".into()))
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
    let current = live_subscription(app, &scope, &account).await?;
    let stripe = app.stripe_for(&scope).await?;
    let read_started = now_ms();
    let updated = if immediately {
        stripe
            .cancel_subscription_now(&current.subscription_id)
            .await?
    } else {
        stripe
            .set_cancel_at_period_end(&current.subscription_id, !resume)
            .await?
    };
    let plans = billing::plans(app, &scope).await?;
    let state = store_read(
        &app.store_for(&scope),
        &account,
        &updated,
        &plans,
        None,
        read_started,
    )
    .await?;
    Ok(ok(SubscriptionCanceled {
        status: state.status.as_str(),
        cancel_at_period_end: state.cancel_at_period_end,
        current_period_end: (state.current_period_end > 0)
            .then(|| rfc3339(state.current_period_end * 1000)),
        subscription_id: state.subscription_id,
    }))
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
    let plans = billing::plans(app, &scope).await?;
    let target = recurring_plan(&plans, Some(&plan_id), None)?.clone();
    let current = live_subscription(app, &scope, &account).await?;
    let current_plan = plans
        .iter()
        .find(|p| p.id == current.plan_id)
        .cloned()
        .unwrap_or_else(|| crate::domain::plans::free_plan(&plans));
    let change = plan_change(&current_plan, &target);
    if change == PlanChange::Same {
        return Err(ApiError::Conflict(
            "The subscription is already on this plan.".into(),
        ));
    }
    let stripe = app.stripe_for(&scope).await?;
    let fresh = stripe
        .retrieve_subscription(&current.subscription_id)
        .await?;
    let item = fresh
        .item_id()
        .ok_or_else(|| ApiError::Stripe("the subscription has no item".into()))?
        .to_owned();
    let metadata = HashMap::from([(META_PLAN.to_owned(), target.id.clone())]);
    let key = format!(
        "coffer-subupd-{}",
        hash_parts(&[
            &scope.to_string(),
            &current.subscription_id,
            &target.id,
            &current.observed_at_ms.to_string()
        ])
    );
    let price = target.price_id.clone().unwrap_or_default();
    let upgrade = change == PlanChange::Upgrade;
    let now_secs = now_ms() / 1000;
    let held = current
        .held_plan_id
        .as_deref()
        .filter(|_| current.held_until.is_some_and(|until| now_secs < until))
        .and_then(|id| plans.iter().find(|p| p.id == id));
    let billing = change_billing(&current_plan, &target, held);
    let billed = match billing {
        ChangeBilling::InvoiceDifference => PriceChange::Upgrade,
        ChangeBilling::WithinPaid { .. } | ChangeBilling::Down { .. } => PriceChange::Downgrade,
    };
    let read_started = now_ms();
    let updated = stripe
        .change_price(
            &current.subscription_id,
            &item,
            &price,
            billed,
            metadata,
            &key,
        )
        .await?;
    let store = app.store_for(&scope);
    // The state stored is Stripe's: an upgrade whose difference is not paid yet still has the
    // old price, so the old plan's limits stay.
    let mut state = store_read(&store, &account, &updated, &plans, None, read_started).await?;
    match &billing {
        // The higher plan was paid to the end of the period, and no credit comes back for it:
        // its limits stay until then.
        ChangeBilling::Down { hold } => {
            state = hold_plan(&store, &account, Some((hold, fresh.period_end()))).await?;
        }
        // Back to the plan held: it is the subscription's own plan again.
        ChangeBilling::WithinPaid { keep_hold: false } => {
            state = hold_plan(&store, &account, None).await?;
        }
        ChangeBilling::WithinPaid { keep_hold: true } | ChangeBilling::InvoiceDifference => {}
    }
    let pending = billing == ChangeBilling::InvoiceDifference && updated.pending_update.is_some();
    let client_secret = if pending {
        stripe.confirmation_secret(&updated).await?
    } else {
        None
    };
    Ok(ok(SubscriptionUpdated {
        plan_id: target.id,
        change: if upgrade { "upgrade" } else { "downgrade" },
        effective: match (&billing, pending) {
            (ChangeBilling::Down { .. }, _) => "period_end",
            (_, true) => "when_paid",
            (_, false) => "now",
        },
        status: state.status.as_str(),
        current_period_end: (state.current_period_end > 0)
            .then(|| rfc3339(state.current_period_end * 1000)),
        subscription_id: state.subscription_id,
        client_secret,
    }))
}

/// Marks the stored state as keeping a plan's limits until a time (Unix seconds), or as
/// keeping none.
async fn hold_plan(
    store: &crate::adapters::store::Store,
    account: &UserId,
    hold: Option<(&str, i64)>,
) -> Result<crate::domain::subscriptions::SubscriptionState, ApiError> {
    for _ in 0..8 {
        let record = store.subscription_record(account).await?;
        let Some(mut state) = record.state else {
            break;
        };
        state.held_plan_id = hold.map(|(plan, _)| plan.to_owned());
        state.held_until = hold.map(|(_, until)| until);
        if store
            .write_subscription(account, record.version, Some(&state), record.lock_until_ms)
            .await?
        {
            return Ok(state);
        }
    }
    Err(ApiError::Unavailable(
        "the subscription record kept changing".into(),
    ))
}
