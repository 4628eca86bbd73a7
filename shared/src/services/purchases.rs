//! Buying credits or a tier: a PaymentIntent for a stored package or a tier plan, priced as the
//! server stores it (never by the client), paid by the client (Stripe.js, PaymentSheet) or by a
//! card the account saved (confirmed here). The purchase is recorded as pending before anyone
//! can pay it, and credited once, when Stripe says it was paid (`inbound::payments`). A
//! client's `Idempotency-Key` makes the same purchase asked again answer with the same intent.

use std::collections::HashMap;

use crate::adapters::stripe::{
    Intent, NewIntent, META_CREDITS, META_PACKAGE, META_SCOPE, META_TIER, META_USER,
};
use crate::domain::idempotency;
use crate::domain::ledger::PaymentRecord;
use crate::domain::packages::CreditPackage;
use crate::domain::plans::{tier_of_purchase, tier_package, tier_purchase_allowed};
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::services::billing::{self, sheet_fields, SheetFields};
use crate::services::Failure;
use crate::App;

/// What is bought.
pub enum Item<'a> {
    Package(&'a str),
    Tier(&'a str),
    /// A top-up of an amount the buyer chose, within the project's custom-amount rules:
    /// `amount` is the request's own digits, read in the project's unit (major or minor).
    Custom {
        amount: &'a str,
        currency: &'a str,
    },
}

/// How it is paid.
pub enum Payer<'a> {
    /// The client confirms the intent (with this PaymentMethod, when it names one).
    Client { payment_method: Option<&'a str> },
    /// A card the account saved with this SetupIntent: Coffer confirms the intent itself.
    SavedCard(&'a str),
}

pub struct PurchaseRequest<'a> {
    pub account: &'a UserId,
    pub item: Item<'a>,
    pub payer: Payer<'a>,
    /// The client's `Idempotency-Key`.
    pub client_key: Option<&'a str>,
    /// The mobile SDK's API version, when the answer also carries PaymentSheet's fields.
    pub sheet_version: Option<&'a str>,
    /// Without `sheet_version`, a client's purchase carries PaymentSheet's fields when the
    /// project names a version for them (`paymentSheetVersion`): the request did not say.
    pub sheet_by_default: bool,
}

/// The intent the client pays (or that was paid with the saved card).
pub struct PurchaseStarted {
    pub intent_id: String,
    pub client_secret: String,
    pub status: Option<String>,
    pub sheet: Option<SheetFields>,
}

pub async fn start_purchase(
    app: &App,
    scope: &Scope,
    request: PurchaseRequest<'_>,
) -> Result<PurchaseStarted, Failure> {
    let user = request.account;
    let store = app.store_for(scope);
    let key_hash = request.client_key.map(|k| idempotency::client_key(user, k));
    let (package, remembered) = match request.item {
        Item::Package(package_id) => {
            let (package, remembered) = store
                .package_and_idempotency(package_id, key_hash.as_deref())
                .await?;
            let package = package
                .filter(|p| p.active && p.currency == app.config.default_currency)
                .ok_or_else(|| Failure::NotFound("Unknown or inactive credit package.".into()))?;
            (package, remembered)
        }
        Item::Custom { amount, currency } => {
            let settings = billing::settings(app, scope).await?;
            let rules = settings.custom_amounts.ok_or_else(|| {
                Failure::invalid(
                    "This project does not take custom amounts: prices are set by the server from the credit package or tier; send creditPackageId or tier.",
                )
            })?;
            let currency = crate::domain::money::Currency::parse(currency)
                .filter(|c| c == &app.config.default_currency)
                .ok_or_else(|| {
                    Failure::invalid(format!(
                        "currency must be {}, the currency credits are kept in.",
                        app.config.default_currency
                    ))
                })?;
            let amount =
                crate::domain::packages::custom_amount_minor(rules.unit, amount, &currency)
                    .map_err(Failure::invalid)?;
            let package = crate::domain::packages::custom_package(&rules, amount, &currency)
                .map_err(Failure::invalid)?;
            let (_, remembered) = store
                .package_and_idempotency(&package.id, key_hash.as_deref())
                .await?;
            (package, remembered)
        }
        Item::Tier(tier) => {
            let (plan, remembered) = store
                .plan_and_idempotency(tier, key_hash.as_deref())
                .await?;
            let plan = plan
                .filter(|p| p.active && p.kind() == crate::domain::plans::PlanKind::Tier)
                .ok_or_else(|| Failure::NotFound("Unknown tier.".into()))?;
            if remembered.is_none() {
                let now = billing::entitlement(app, scope, user).await?;
                if !tier_purchase_allowed(&now.plan, &plan) {
                    return Err(Failure::Conflict(format!(
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
    let saved_card = match request.payer {
        Payer::SavedCard(setup_intent) => Some(setup_intent),
        Payer::Client { .. } => None,
    };
    let project_version = match (&request.payer, request.sheet_version) {
        (Payer::Client { .. }, None) if request.sheet_by_default => {
            app.cached_settings(scope).await?.payment_sheet_version
        }
        _ => None,
    };
    let sheet = match request.sheet_version.or(project_version.as_deref()) {
        Some(version) => Some(sheet_fields(app, scope, user, version).await?),
        None => None,
    };
    if let Some(record) = remembered {
        return replay(
            app,
            scope,
            &package,
            &record.package_id,
            &record.intent_id,
            sheet,
            saved_card.is_some(),
        )
        .await;
    }

    let stripe = app.stripe_for(scope).await?;
    let saved = match saved_card {
        Some(id) => Some(billing::saved_card(app, scope, &stripe, user, id).await?),
        None => None,
    };
    let customer = match (&sheet, &saved) {
        (Some(sheet), _) => Some(sheet.customer.as_str()),
        (None, Some((customer, _))) => Some(customer.as_str()),
        (None, None) => None,
    };
    let payment_method = match (&saved, &request.payer) {
        (Some((_, card)), _) => Some(card.as_str()),
        (None, Payer::Client { payment_method }) => *payment_method,
        (None, Payer::SavedCard(_)) => None,
    };
    let stripe_key = idempotency::payment_intent(
        scope,
        key_hash.as_deref(),
        &uuid::Uuid::new_v4().to_string(),
    );
    let intent = stripe
        .create_intent(
            NewIntent {
                amount: package.amount,
                currency: &package.currency,
                metadata: metadata(&app.scope_mark(scope), user, &package),
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
        return Err(Failure::Stripe(format!(
            "stripe returned intent {} with another amount or currency",
            intent.id
        )));
    }

    let payment = PaymentRecord::pending(&intent.id, user.clone(), &package, now_ms());
    if let Some(winner) = store.record_payment(&payment, key_hash.as_deref()).await? {
        // A concurrent request with the same key recorded its intent first: answer with that one.
        return replay(
            app,
            scope,
            &package,
            &winner.package_id,
            &winner.intent_id,
            sheet,
            saved_card.is_some(),
        )
        .await;
    }
    tracing::info!(intent_id = %intent.id, package_id = %package.id, "payment intent created");
    if saved.is_some() && intent.status.as_deref() == Some("requires_confirmation") {
        // Recorded as pending first: the webhook that follows the charge finds the payment.
        let confirmed = stripe
            .confirm_intent(&intent.id, &idempotency::payment_intent_confirm(&intent.id))
            .await?;
        return started(&confirmed, None);
    }
    started(&intent, sheet)
}

/// The same key again: the same intent if it was for the same package, else a conflict.
async fn replay(
    app: &App,
    scope: &Scope,
    package: &CreditPackage,
    remembered_package: &str,
    intent_id: &str,
    sheet: Option<SheetFields>,
    confirm: bool,
) -> Result<PurchaseStarted, Failure> {
    if remembered_package != package.id {
        return Err(Failure::Conflict(
            "This Idempotency-Key was already used for another purchase.".into(),
        ));
    }
    let stripe = app.stripe_for(scope).await?;
    let intent = stripe.retrieve_intent(intent_id).await?;
    tracing::info!(intent_id = %intent.id, "idempotent replay of create-payment-intent");
    if confirm && intent.status.as_deref() == Some("requires_confirmation") {
        // The first request stopped between recording and confirming: finish its work.
        let confirmed = stripe
            .confirm_intent(&intent.id, &idempotency::payment_intent_confirm(&intent.id))
            .await?;
        return started(&confirmed, sheet);
    }
    started(&intent, sheet)
}

fn started(intent: &Intent, sheet: Option<SheetFields>) -> Result<PurchaseStarted, Failure> {
    let client_secret = intent
        .client_secret
        .clone()
        .ok_or_else(|| Failure::Stripe("stripe returned no client secret".into()))?;
    Ok(PurchaseStarted {
        intent_id: intent.id.clone(),
        client_secret,
        status: intent.status.clone(),
        sheet,
    })
}

fn metadata(mark: &str, user: &UserId, package: &CreditPackage) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        (META_SCOPE.to_string(), mark.to_owned()),
        (META_USER.to_string(), user.as_str().to_string()),
        (META_PACKAGE.to_string(), package.id.clone()),
        (META_CREDITS.to_string(), package.credits.to_string()),
    ]);
    if let Some(tier) = tier_of_purchase(&package.id) {
        metadata.insert(META_TIER.to_string(), tier.to_string());
    }
    metadata
}
