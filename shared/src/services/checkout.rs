//! Stripe Checkout and the customer portal for an account: a Checkout session for a plan (the
//! account held against a second subscription while it is open) or a credit package (credited
//! once, from `checkout.session.completed`, by the same rules as a PaymentIntent), and a portal
//! session in a configuration Coffer makes once per scope. Redirect URLs must belong to the
//! project's allowed origins.

use std::collections::HashMap;

use crate::adapters::store::CustomerLink;
use crate::adapters::stripe::{
    CheckoutItem, META_ACCOUNT, META_CREDITS, META_PACKAGE, META_PLAN, META_SCOPE, META_USER,
};
use crate::domain::idempotency;
use crate::domain::packages::valid_package_id;
use crate::domain::projects::redirect_allowed;
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::services::billing::{self, ensure_customer};
use crate::services::subscriptions::recurring_plan;
use crate::services::Failure;
use crate::App;

/// How long a plan's Checkout session stays payable, and holds the account: 31 minutes (Stripe
/// takes 30 minutes at least).
const CHECKOUT_HOLD_SECS: i64 = 31 * 60;

/// A redirect URL as the request named it (its field name is in the refusal).
pub struct Redirect<'a> {
    pub field: &'a str,
    pub url: Option<&'a str>,
}

/// The URL, when given and on one of the allowed origins.
fn allowed<'a>(redirect: &Redirect<'a>, origins: &[String]) -> Result<&'a str, Failure> {
    let url = redirect
        .url
        .ok_or_else(|| Failure::invalid(format!("{} is required.", redirect.field)))?;
    if redirect_allowed(url, origins) {
        Ok(url)
    } else {
        Err(Failure::invalid(format!(
            "{} must be an http(s) URL on one of the project's allowed origins.",
            redirect.field
        )))
    }
}

/// What a Checkout session sells.
pub enum Sale<'a> {
    Plan(&'a str),
    Package(&'a str),
}

pub struct CheckoutOpened {
    pub id: String,
    pub url: String,
}

/// Opens a Checkout session for the account.
pub async fn open_checkout(
    app: &App,
    scope: &Scope,
    account: &UserId,
    sale: Option<Sale<'_>>,
    success: Redirect<'_>,
    cancel: Redirect<'_>,
) -> Result<CheckoutOpened, Failure> {
    let settings = billing::settings(app, scope).await?;
    let success_url = allowed(&success, &settings.allowed_origins)?;
    let cancel_url = allowed(&cancel, &settings.allowed_origins)?;
    let sale = sale.ok_or_else(|| Failure::invalid("Give either planId or creditPackageId."))?;
    let mut metadata = HashMap::from([
        (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        (META_USER.to_owned(), account.as_str().to_owned()),
        (META_SCOPE.to_owned(), app.scope_mark(scope)),
    ]);
    let plans;
    let packages;
    // The account's hold taken for a plan's Checkout (the record's version), released if the
    // session cannot be made.
    let mut held: Option<i64> = None;
    let item = match sale {
        Sale::Plan(plan_id) => {
            plans = billing::plans(app, scope).await?;
            let plan = recurring_plan(&plans, Some(plan_id), None)?;
            // The same hold as create-subscription: while a Checkout for a plan is open, no
            // second one and no create; it ends with the session (or at once, on failure).
            let store = app.store_for(scope);
            let record = store.subscription_record(account).await?;
            if record.state.as_ref().is_some_and(|s| s.status.is_live()) {
                return Err(Failure::Conflict(
                    "This account already has a live subscription.".into(),
                ));
            }
            let now = now_ms();
            let expires_at = now / 1000 + CHECKOUT_HOLD_SECS;
            if record.lock_until_ms.is_some_and(|until| until >= now)
                || !store
                    .write_subscription(account, record.version, None, Some(expires_at * 1000))
                    .await?
            {
                return Err(Failure::Conflict(
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
        Sale::Package(package_id) => {
            if !valid_package_id(package_id) {
                return Err(Failure::invalid("creditPackageId is malformed."));
            }
            packages = app.packages_for(scope).await?;
            let package = packages
                .iter()
                .find(|p| p.id == package_id && p.active)
                .filter(|p| p.currency == app.config.default_currency)
                .ok_or_else(|| Failure::NotFound("Unknown or inactive credit package.".into()))?;
            metadata.insert(META_PACKAGE.to_owned(), package.id.clone());
            metadata.insert(META_CREDITS.to_owned(), package.credits.to_string());
            CheckoutItem::Payment {
                name: &package.name,
                amount: package.amount,
                currency: &package.currency,
            }
        }
    };
    let made = async {
        let stripe = app.stripe_for(scope).await?;
        let customer = ensure_customer(app, scope, &stripe, account, None, None).await?;
        let key = idempotency::checkout_session(&uuid::Uuid::new_v4().to_string());
        Ok::<_, Failure>(
            stripe
                .create_checkout_session(
                    item,
                    &customer,
                    account.as_str(),
                    metadata,
                    success_url,
                    cancel_url,
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
                    .store_for(scope)
                    .write_subscription(account, version, None, None)
                    .await;
            }
            return Err(err);
        }
    };
    let url = session
        .url
        .ok_or_else(|| Failure::Stripe("stripe returned a session without a url".into()))?;
    tracing::info!(session_id = %session.id, "checkout session created");
    Ok(CheckoutOpened {
        id: session.id,
        url,
    })
}

/// A customer-portal session for the account's customer, in the scope's configuration (plan
/// switching and cancelling off: those go through Coffer's own routes).
pub async fn open_portal(
    app: &App,
    scope: &Scope,
    account: &UserId,
    return_to: Redirect<'_>,
) -> Result<String, Failure> {
    let settings = billing::settings(app, scope).await?;
    let return_url = allowed(&return_to, &settings.allowed_origins)?;
    let store = app.store_for(scope);
    let CustomerLink::Ready(customer) = store.customer_link(account).await? else {
        return Err(Failure::NotFound(
            "This account has no Stripe customer yet.".into(),
        ));
    };
    let stripe = app.stripe_for(scope).await?;
    let configuration = match store.portal_configuration().await? {
        Some(id) => id,
        None => {
            let id = stripe
                .create_portal_configuration(&idempotency::portal_configuration(scope))
                .await?;
            store.put_portal_configuration(&id).await?;
            id
        }
    };
    let session = stripe
        .create_portal_session(&customer, return_url, &configuration)
        .await?;
    session
        .url
        .ok_or_else(|| Failure::Stripe("stripe returned a portal session without a url".into()))
}
