//! An account's subscription as the account itself acts on it: its customer and a saved card,
//! subscribing (one live subscription per account, a waiting first payment resumed or
//! replaced), changing plan (an upgrade is paid before it applies; a downgrade keeps the paid
//! plan's limits to the period's end), canceling or resuming, and what it has and has paid.
//! State is always Stripe's, read again and stored only when newer (`billing::store_read`).

use std::collections::HashMap;

use crate::adapters::store::Store;
use crate::adapters::stripe::{
    PriceChange, StripeFailure, Subscription, META_ACCOUNT, META_PLAN, META_SCOPE, META_TRIAL,
    META_USER,
};
use crate::domain::idempotency;
use crate::domain::plans::{
    change_billing, free_plan, plan_change, valid_plan_id, valid_price_id, ChangeBilling, Plan,
    PlanChange, PlanKind,
};
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::domain::subscriptions::{SubscriptionState, SubscriptionStatus};
use crate::services::billing::{self, ensure_customer, sheet_fields, store_read, SheetFields};
use crate::services::Failure;
use crate::App;

pub use crate::adapters::store::AccountPayment;

/// How long a create holds the account: longer than any attempt of the function can take (its
/// timeout, Stripe's retries), so that a slow first attempt is never overtaken by a second. A
/// create that ends (made, or failed at Stripe) releases it at once.
const SUBSCRIBE_LOCK_MS: i64 = 5 * 60_000;

/// The scope's active plans, cheapest rank first.
pub async fn active_plans(app: &App, scope: &Scope) -> Result<Vec<Plan>, Failure> {
    let mut plans: Vec<Plan> = billing::plans(app, scope)
        .await?
        .into_iter()
        .filter(|p| p.active)
        .collect();
    crate::domain::plans::sort_by_rank(&mut plans);
    Ok(plans)
}

/// The account's one Stripe customer in the scope (made on first use).
pub async fn customer(
    app: &App,
    scope: &Scope,
    account: &UserId,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<String, Failure> {
    let stripe = app.stripe_for(scope).await?;
    ensure_customer(app, scope, &stripe, account, email, name).await
}

/// A SetupIntent the page confirms with a card (saved, not charged).
pub struct CardSetup {
    pub setup_intent_id: String,
    pub client_secret: String,
    pub customer_id: String,
}

/// A SetupIntent for the account's customer: the page confirms it with Stripe.js and a card,
/// which saves the card without charging it; its id then pays a package or a subscription.
pub async fn start_card_setup(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<CardSetup, Failure> {
    let stripe = app.stripe_for(scope).await?;
    let customer = ensure_customer(app, scope, &stripe, account, None, None).await?;
    let metadata = HashMap::from([
        (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        (META_USER.to_owned(), account.as_str().to_owned()),
        (META_SCOPE.to_owned(), app.scope_mark(scope)),
    ]);
    let key = idempotency::card_setup(&uuid::Uuid::new_v4().to_string());
    let setup = stripe
        .create_setup_intent(&customer, metadata, &key)
        .await?;
    let client_secret = setup
        .client_secret
        .ok_or_else(|| Failure::Stripe("stripe returned no client secret".into()))?;
    Ok(CardSetup {
        setup_intent_id: setup.id,
        client_secret,
        customer_id: customer,
    })
}

/// The recurring plan a request names by plan id or Stripe price id: unknown or not a recurring
/// active plan is not found.
pub fn recurring_plan<'a>(
    plans: &'a [Plan],
    plan_id: Option<&str>,
    price_id: Option<&str>,
) -> Result<&'a Plan, Failure> {
    let found = match (plan_id, price_id) {
        (Some(id), None) => {
            if !valid_plan_id(id) {
                return Err(Failure::invalid("planId is malformed."));
            }
            plans.iter().find(|p| p.id == id)
        }
        (None, Some(price)) => {
            if !valid_price_id(price) {
                return Err(Failure::invalid("priceId is malformed."));
            }
            plans.iter().find(|p| p.price_id.as_deref() == Some(price))
        }
        _ => return Err(Failure::invalid("Give either planId or priceId.")),
    };
    found
        .filter(|p| p.active && p.kind() == PlanKind::Recurring)
        .ok_or_else(|| Failure::NotFound("Unknown plan or price.".into()))
}

/// What subscribing asks for.
pub struct SubscribeRequest<'a> {
    pub account: &'a UserId,
    pub plan_id: Option<&'a str>,
    pub price_id: Option<&'a str>,
    /// A SetupIntent of this account that saved a card: it becomes the customer's default.
    pub setup_intent: Option<&'a str>,
    /// The mobile SDK's API version, when the answer also carries PaymentSheet's fields.
    pub sheet_version: Option<&'a str>,
}

/// A subscription made (or a waiting one resumed), and what the client confirms it with.
pub struct Subscribed {
    pub subscription_id: String,
    pub client_secret: Option<String>,
    pub status: SubscriptionStatus,
    pub plan_id: String,
    pub sheet: Option<SheetFields>,
}

/// Subscribes the account to a recurring plan. The account is held while Stripe is asked, so a
/// second create (even a concurrent one) is refused; one live subscription per account.
pub async fn subscribe(
    app: &App,
    scope: &Scope,
    request: SubscribeRequest<'_>,
) -> Result<Subscribed, Failure> {
    let account = request.account;
    let plans = billing::plans(app, scope).await?;
    let plan = recurring_plan(&plans, request.plan_id, request.price_id)?.clone();
    let store = app.store_for(scope);

    let mut record = store.subscription_record(account).await?;
    // A first payment left waiting (the user closed the page): the same plan again resumes that
    // subscription with its current secret; another plan replaces it (nothing was paid).
    if let Some(waiting) = record
        .state
        .as_ref()
        .filter(|s| s.status == SubscriptionStatus::Incomplete)
    {
        if let Some(resumed) =
            resume_or_replace(app, scope, &store, &request, &plans, &plan, waiting).await?
        {
            return Ok(resumed);
        }
        record = store.subscription_record(account).await?;
    }
    let live = record.state.as_ref().is_some_and(|s| s.status.is_live());
    // A plan's trial is the account's first subscription's only: an account that ever had one
    // (canceled, ended or replaced) pays from the start.
    let trial = plan.trial_days.filter(|_| record.state.is_none());
    // PaymentSheet's customer and key first: a failure here leaves nothing to undo.
    let sheet = match (request.sheet_version, live) {
        (Some(version), false) => Some(sheet_fields(app, scope, account, version).await?),
        _ => None,
    };
    if live {
        return Err(Failure::Conflict(
            "This account already has a live subscription.".into(),
        ));
    }
    let held =
        || Failure::Conflict("A subscription is already being created for this account.".into());
    if record.lock_until_ms.is_some_and(|until| until >= now_ms()) {
        return Err(held());
    }
    if !store
        .write_subscription(
            account,
            record.version,
            None,
            Some(now_ms() + SUBSCRIBE_LOCK_MS),
        )
        .await?
    {
        return Err(held());
    }
    let locked_version = record.version + 1;
    let generation = record
        .state
        .as_ref()
        .map_or("first", |s| s.subscription_id.as_str());
    let read_started = now_ms();
    let created = create_at_stripe(
        app,
        scope,
        account,
        &plan,
        generation,
        request.setup_intent,
        trial,
    )
    .await;
    let (subscription, secret) = match created {
        Ok(done) => done,
        Err(err) => {
            // Nothing half-written: the lock goes, no subscription is recorded.
            let _ = store
                .write_subscription(account, locked_version, None, None)
                .await;
            return Err(err);
        }
    };
    let state = store_read(
        &store,
        account,
        &subscription,
        &plans,
        Some(locked_version),
        read_started,
    )
    .await?;
    tracing::info!(subscription_id = %subscription.id, plan_id = %plan.id, "subscription created");
    Ok(Subscribed {
        subscription_id: subscription.id,
        client_secret: secret,
        status: state.status,
        plan_id: plan.id,
        sheet,
    })
}

/// A subscription left waiting for its first payment: the same plan resumes it (`Some`), another
/// replaces it (its invoice voided first, so that the secret the client holds can never pay
/// it; if it was paid meanwhile, it is live and the create is refused).
async fn resume_or_replace(
    app: &App,
    scope: &Scope,
    store: &Store,
    request: &SubscribeRequest<'_>,
    plans: &[Plan],
    plan: &Plan,
    waiting: &SubscriptionState,
) -> Result<Option<Subscribed>, Failure> {
    let account = request.account;
    let price = plan.price_id.as_deref().unwrap_or_default();
    let stripe = app.stripe_for(scope).await?;
    let read_started = now_ms();
    match stripe.retrieve_subscription(&waiting.subscription_id).await {
        Ok(current) if current.status == "incomplete" => {
            if current.price_id() == Some(price) {
                let secret = stripe.confirmation_secret(&current).await?;
                let state = store_read(store, account, &current, plans, None, read_started).await?;
                let sheet = match request.sheet_version {
                    Some(version) => Some(sheet_fields(app, scope, account, version).await?),
                    None => None,
                };
                tracing::info!(subscription_id = %current.id, "waiting subscription resumed");
                return Ok(Some(Subscribed {
                    subscription_id: current.id,
                    client_secret: secret,
                    status: state.status,
                    plan_id: plan.id.clone(),
                    sheet,
                }));
            }
            if let Some(invoice) = &current.latest_invoice {
                if stripe.void_invoice(invoice).await.is_err() {
                    let now = stripe.retrieve_subscription(&current.id).await?;
                    store_read(store, account, &now, plans, None, now_ms()).await?;
                    return Err(Failure::Conflict(
                        "This account already has a live subscription.".into(),
                    ));
                }
            }
            let canceled = stripe.cancel_subscription_now(&current.id).await?;
            tracing::info!(subscription_id = %canceled.id, "waiting subscription replaced by another plan");
            store_read(store, account, &canceled, plans, None, read_started).await?;
        }
        Ok(current) => {
            store_read(store, account, &current, plans, None, read_started).await?;
        }
        Err(StripeFailure::Missing(_)) => {
            billing::end_missing_subscription(app, scope, account, &waiting.subscription_id)
                .await?;
        }
        Err(other) => return Err(other.into()),
    }
    Ok(None)
}

async fn create_at_stripe(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plan: &Plan,
    generation: &str,
    setup_intent: Option<&str>,
    trial_days: Option<u32>,
) -> Result<(Subscription, Option<String>), Failure> {
    let price = plan.price_id.as_deref().unwrap_or_default();
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
    let key = idempotency::subscription_create(scope, account, generation, price, setup_intent);
    let subscription = match stripe
        .create_subscription(&customer, price, metadata, trial_days, &key)
        .await
    {
        // Stripe (or localstripe) will not start it without a card on the customer.
        Err(StripeFailure::Missing(why)) if why.contains("payment method") => {
            return Err(Failure::Conflict(
                "This account has no card to pay with: save one first (POST /api/stripe/setup-intent) and give its setupIntentId.".into(),
            ))
        }
        other => other?,
    };
    let mut secret = stripe.confirmation_secret(&subscription).await?;
    if secret.is_none() && setup_intent.is_none() && trial_days.is_some() {
        // A trial with no card yet: the first payment is collected later, with the card a
        // SetupIntent saves now (Stripe's own pending SetupIntent when it made one, else
        // Coffer's, keyed by the subscription so a retry gets the same one back).
        let metadata = HashMap::from([
            (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
            (META_USER.to_owned(), account.as_str().to_owned()),
            (META_SCOPE.to_owned(), app.scope_mark(scope)),
            (META_TRIAL.to_owned(), subscription.id.clone()),
        ]);
        let key = idempotency::card_setup(&format!("trial-{}", subscription.id));
        let setup = stripe
            .create_setup_intent(&customer, metadata, &key)
            .await?;
        secret = Some(
            setup
                .client_secret
                .ok_or_else(|| Failure::Stripe("stripe returned no client secret".into()))?,
        );
    }
    Ok((subscription, secret))
}

/// Whether `customer_id` (from a request) is the account's own Stripe customer in the scope:
/// forbidden otherwise, as for any customer of someone else's.
pub async fn own_customer(
    app: &App,
    scope: &Scope,
    account: &UserId,
    customer_id: &str,
) -> Result<(), Failure> {
    match app.store_for(scope).customer_link(account).await? {
        crate::adapters::store::CustomerLink::Ready(id) if id == customer_id => Ok(()),
        _ => Err(Failure::Forbidden),
    }
}

/// A page of the account's payments (purchases and invoices), newest first, and the boundary
/// the next page starts after.
pub async fn payments(
    app: &App,
    scope: &Scope,
    account: &UserId,
    limit: usize,
    before: Option<&str>,
) -> Result<(Vec<AccountPayment>, Option<String>), Failure> {
    if before.is_some_and(|c| !crate::adapters::store::valid_account_boundary(c)) {
        return Err(Failure::invalid("cursor is not valid."));
    }
    let (lines, more) = app
        .store_for(scope)
        .account_payments(account, limit, before)
        .await?;
    let next = more
        .then(|| lines.last().map(AccountPayment::boundary))
        .flatten();
    Ok((lines, next))
}

/// The account's live subscription as stored: not found when it has none.
async fn live_subscription(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<SubscriptionState, Failure> {
    app.store_for(scope)
        .subscription_record(account)
        .await?
        .state
        .filter(|s| s.status.is_live())
        .ok_or_else(|| Failure::NotFound("This account has no subscription.".into()))
}

/// How a subscription is to end, or not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// At the end of the period already paid.
    AtPeriodEnd,
    /// Now.
    Immediately,
    /// A cancellation at the period's end is withdrawn.
    Resume,
}

/// Cancels (or resumes) the account's live subscription; the state stored afterwards.
pub async fn cancel(
    app: &App,
    scope: &Scope,
    account: &UserId,
    how: Cancel,
) -> Result<SubscriptionState, Failure> {
    let current = live_subscription(app, scope, account).await?;
    let stripe = app.stripe_for(scope).await?;
    let read_started = now_ms();
    let updated = match how {
        Cancel::Immediately => {
            stripe
                .cancel_subscription_now(&current.subscription_id)
                .await?
        }
        Cancel::AtPeriodEnd | Cancel::Resume => {
            stripe
                .set_cancel_at_period_end(&current.subscription_id, how == Cancel::AtPeriodEnd)
                .await?
        }
    };
    let plans = billing::plans(app, scope).await?;
    store_read(
        &app.store_for(scope),
        account,
        &updated,
        &plans,
        None,
        read_started,
    )
    .await
}

/// When a plan change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effective {
    Now,
    /// An upgrade whose difference is being paid: it applies once the invoice is paid.
    WhenPaid,
    /// A downgrade: the paid plan's limits stay to the period's end.
    PeriodEnd,
}

pub struct PlanChanged {
    pub plan_id: String,
    pub upgrade: bool,
    pub effective: Effective,
    pub state: SubscriptionState,
    /// The upgrade invoice's secret, when the client must confirm its payment.
    pub client_secret: Option<String>,
}

/// Moves the account's live subscription to another recurring plan. An upgrade invoices the
/// difference at once and changes the price only when it is paid; a downgrade carries no
/// proration and keeps the higher plan's limits until the period ends; back to a plan still
/// held changes the price with nothing charged twice (`domain::plans::change_billing`).
pub async fn change_plan(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plan_id: &str,
) -> Result<PlanChanged, Failure> {
    let plans = billing::plans(app, scope).await?;
    let target = recurring_plan(&plans, Some(plan_id), None)?.clone();
    let current = live_subscription(app, scope, account).await?;
    let current_plan = plans
        .iter()
        .find(|p| p.id == current.plan_id)
        .cloned()
        .unwrap_or_else(|| free_plan(&plans));
    let change = plan_change(&current_plan, &target);
    if change == PlanChange::Same {
        return Err(Failure::Conflict(
            "The subscription is already on this plan.".into(),
        ));
    }
    let stripe = app.stripe_for(scope).await?;
    let fresh = stripe
        .retrieve_subscription(&current.subscription_id)
        .await?;
    // In a trial nothing was paid: a change now would give the higher plan for a prorated $0
    // (or hold one never paid for). The plan changes once the trial ends and its first
    // invoice is paid.
    if fresh.status == "trialing" {
        return Err(Failure::Conflict(
            "The subscription is in its trial: its plan can change once the trial ends and the first payment is made.".into(),
        ));
    }
    let item = fresh
        .item_id()
        .ok_or_else(|| Failure::Stripe("the subscription has no item".into()))?
        .to_owned();
    let metadata = HashMap::from([(META_PLAN.to_owned(), target.id.clone())]);
    let key = idempotency::subscription_change(
        scope,
        &current.subscription_id,
        &target.id,
        current.observed_at_ms,
    );
    let price = target.price_id.clone().unwrap_or_default();
    let held = current
        .held_plan_id
        .as_deref()
        .filter(|_| current.holds_plan_at(now_ms() / 1000))
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
    let store = app.store_for(scope);
    // The state stored is Stripe's: an upgrade whose difference is not paid yet still has the
    // old price, so the old plan's limits stay.
    let mut state = store_read(&store, account, &updated, &plans, None, read_started).await?;
    match &billing {
        // The higher plan was paid to the end of the period, and no credit comes back for it:
        // its limits stay until then.
        ChangeBilling::Down { hold } => {
            state = hold_plan(&store, account, Some((hold, fresh.period_end()))).await?;
        }
        // Back to the plan held: it is the subscription's own plan again.
        ChangeBilling::WithinPaid { keep_hold: false } => {
            state = hold_plan(&store, account, None).await?;
        }
        ChangeBilling::WithinPaid { keep_hold: true } | ChangeBilling::InvoiceDifference => {}
    }
    let pending = billing == ChangeBilling::InvoiceDifference && updated.pending_update.is_some();
    let client_secret = if pending {
        stripe.confirmation_secret(&updated).await?
    } else {
        None
    };
    Ok(PlanChanged {
        plan_id: target.id,
        upgrade: change == PlanChange::Upgrade,
        effective: match (&billing, pending) {
            (ChangeBilling::Down { .. }, _) => Effective::PeriodEnd,
            (_, true) => Effective::WhenPaid,
            (_, false) => Effective::Now,
        },
        state,
        client_secret,
    })
}

/// Marks the stored state as keeping a plan's limits until a time (Unix seconds), or as
/// keeping none.
async fn hold_plan(
    store: &Store,
    account: &UserId,
    hold: Option<(&str, i64)>,
) -> Result<SubscriptionState, Failure> {
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
    Err(Failure::Unavailable(
        "the subscription record kept changing".into(),
    ))
}
