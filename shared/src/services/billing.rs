//! Use cases of plans and subscriptions shared by the routes and the webhook: an account's
//! customer (exactly one per scope), its entitlement, and the subscription state re-read from
//! Stripe and stored only when newer.

use std::collections::HashMap;
use std::time::Duration;

use crate::adapters::store::{CustomerLink, Store};
use crate::adapters::stripe::{
    StripeApi, StripeFailure, Subscription, META_ACCOUNT, META_SCOPE, META_USER,
};
use crate::domain::idempotency;
use crate::domain::plans::{entitled_plan, Plan};
use crate::domain::projects::ProjectSettings;
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::domain::subscriptions::{
    is_newer, state_from_read, StripeRead, SubscriptionState, SubscriptionStatus,
};
use crate::services::Failure;
use crate::App;

/// How long a request may hold the right to create an account's customer.
const CUSTOMER_CLAIM_MS: i64 = 15_000;
/// How long a concurrent request waits for another's customer to be linked.
const CUSTOMER_WAIT: Duration = Duration::from_secs(6);

/// The scope's plans, active or not.
/// Brings the account's tier up to date with a tier purchase as the store has it now (paid,
/// refunded in full, disputed): the account has the highest tier it still holds a paid
/// purchase for. Anything that is not a tier purchase is left alone.
pub async fn sync_tier(app: &App, scope: &Scope, intent_id: &str) -> Result<(), Failure> {
    let store = app.store_for(scope);
    let Some(payment) = store.payment(intent_id).await? else {
        return Ok(());
    };
    if crate::domain::plans::tier_of_purchase(&payment.package_id).is_none() {
        return Ok(());
    }
    let plans = plans(app, scope).await?;
    let (before, after) = store.sync_tier(intent_id, &plans).await?;
    if before != after {
        tracing::info!(intent_id, from = ?before, to = ?after, "tier changed");
    }
    Ok(())
}

pub async fn plans(app: &App, scope: &Scope) -> Result<Vec<Plan>, Failure> {
    Ok(app.store_for(scope).list_plans().await?)
}

/// The scope's settings, or the defaults (no redirect origin; three days of grace).
pub async fn settings(app: &App, scope: &Scope) -> Result<ProjectSettings, Failure> {
    Ok(app.store_for(scope).settings().await?.unwrap_or_default())
}

/// An account's plan now, with the subscription state it follows.
pub struct Entitlement {
    pub plan: Plan,
    pub subscription: Option<SubscriptionState>,
}

pub async fn entitlement(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<Entitlement, Failure> {
    entitlement_among(app, scope, account, &plans(app, scope).await?).await
}

/// The same, from the scope's plans already read.
pub async fn entitlement_among(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plans: &[Plan],
) -> Result<Entitlement, Failure> {
    let store = app.store_for(scope);
    let settings = settings(app, scope).await?;
    let record = store.subscription_record(account).await?;
    let tier = store.tier(account).await?;
    let plan = entitled_plan(
        plans,
        record.state.as_ref(),
        tier.as_deref(),
        now_ms() / 1000,
        settings.past_due_grace_seconds,
    );
    Ok(Entitlement {
        plan,
        subscription: record.state,
    })
}

/// The account's Stripe customer, created once per scope. The link is claimed in the table
/// before Stripe is called, so concurrent requests wait for the one that creates it; the
/// Stripe call carries a key derived from the scope and account, so a retry after a crash
/// gets the same customer back from Stripe.
pub async fn ensure_customer(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<String, Failure> {
    let store = app.store_for(scope);
    let started = std::time::Instant::now();
    loop {
        match store.customer_link(account).await? {
            CustomerLink::Ready(id) => return Ok(id),
            CustomerLink::Claimed { until_ms } if until_ms >= now_ms() => {
                if started.elapsed() > CUSTOMER_WAIT {
                    return Err(Failure::Conflict(
                        "The customer is being created by another request; try again.".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
            _ => {}
        }
        let token = uuid::Uuid::new_v4().to_string();
        if !store
            .claim_customer(account, &token, now_ms() + CUSTOMER_CLAIM_MS)
            .await?
        {
            continue;
        }
        let key = idempotency::customer(scope, account);
        let metadata = HashMap::from([
            (META_USER.to_owned(), account.as_str().to_owned()),
            (META_ACCOUNT.to_owned(), account.as_str().to_owned()),
        ]);
        let customer = match stripe.create_customer(metadata, email, name, &key).await {
            Ok(customer) => customer,
            Err(err) => {
                store.release_customer_claim(account, &token).await?;
                return Err(err.into());
            }
        };
        if store.link_customer(account, &token, &customer.id).await? {
            tracing::info!(customer_id = %customer.id, "customer created");
            return Ok(customer.id);
        }
        // The claim expired and another request linked its customer: use that one.
    }
}

/// What Stripe's PaymentSheet needs besides the client secret.
pub struct SheetFields {
    pub customer: String,
    pub ephemeral_key: String,
}

/// The account's customer and an ephemeral key for it, made in the mobile SDK's API version.
pub async fn sheet_fields(
    app: &App,
    scope: &Scope,
    account: &UserId,
    stripe_version: &str,
) -> Result<SheetFields, Failure> {
    if !crate::adapters::stripe::valid_api_version(stripe_version) {
        return Err(Failure::invalid(
            "stripeVersion must be a Stripe API version such as 2024-06-20.",
        ));
    }
    let stripe = app.stripe_for(scope).await?;
    let customer = ensure_customer(app, scope, &stripe, account, None, None).await?;
    let key = stripe
        .create_ephemeral_key(&customer, stripe_version)
        .await?;
    Ok(SheetFields {
        customer,
        ephemeral_key: key.secret,
    })
}

/// The account a subscription belongs to: its metadata, else the customer's link.
pub async fn subscription_account(
    store: &Store,
    subscription: &Subscription,
) -> Result<Option<UserId>, Failure> {
    if let Some(account) = subscription
        .metadata_value(META_ACCOUNT)
        .and_then(UserId::parse)
    {
        return Ok(Some(account));
    }
    Ok(store.customer_account(&subscription.customer).await?)
}

/// Re-reads the subscription from Stripe and stores that state for its account unless the
/// stored one is newer. Never stores an event's copy. `None`: the subscription has no Coffer
/// account (not ours).
pub async fn sync_subscription(
    app: &App,
    scope: &Scope,
    subscription_id: &str,
) -> Result<Option<(UserId, SubscriptionState)>, Failure> {
    let stripe = app.stripe_for(scope).await?;
    let read_started = now_ms();
    let subscription = match stripe.retrieve_subscription(subscription_id).await {
        Ok(subscription) => subscription,
        Err(StripeFailure::Missing(_)) => {
            // Not in this account and mode: nothing of ours to change.
            tracing::warn!(
                subscription_id,
                "stripe has no such subscription; acknowledged"
            );
            return Ok(None);
        }
        Err(other) => return Err(other.into()),
    };
    if !app.owns(scope, subscription.metadata_value(META_SCOPE), false) {
        // Made for another project or mode that shares this Stripe account: not this scope's.
        tracing::warn!(
            subscription_id,
            "subscription of another scope; ignored here"
        );
        return Ok(None);
    }
    let store = app.store_for(scope);
    let Some(account) = subscription_account(&store, &subscription).await? else {
        tracing::warn!(
            subscription_id,
            "subscription of no Coffer account; ignored"
        );
        return Ok(None);
    };
    let plans = plans(app, scope).await?;
    let (subscription, read_started) =
        match one_live_subscription(app, scope, &stripe, &account, subscription, read_started)
            .await?
        {
            // This one was a second live subscription, now canceled: the kept one stays.
            Guarded::Duplicate(kept) => return Ok(Some((account, kept))),
            Guarded::Store(subscription, read_started) => (subscription, read_started),
        };
    let state = store_read(&store, &account, &subscription, &plans, None, read_started).await?;
    Ok(Some((account, state)))
}

/// Ends the stored live state of `account` when Stripe no longer has its subscription (deleted
/// with its customer, or test data cleared): it is entitled to nothing, and the scheduled job
/// stops reading it again every hour. `true` when it was ended here.
pub async fn end_missing_subscription(
    app: &App,
    scope: &Scope,
    account: &UserId,
    subscription_id: &str,
) -> Result<bool, Failure> {
    let stripe = app.stripe_for(scope).await?;
    match stripe.retrieve_subscription(subscription_id).await {
        Err(StripeFailure::Missing(_)) => {}
        Ok(_) => return Ok(false),
        Err(other) => return Err(other.into()),
    }
    let store = app.store_for(scope);
    for _ in 0..8 {
        let record = store.subscription_record(account).await?;
        let Some(mut state) = record.state else {
            return Ok(false);
        };
        if state.subscription_id != subscription_id || !state.status.is_live() {
            return Ok(false);
        }
        state.status = crate::domain::subscriptions::SubscriptionStatus::Canceled;
        state.observed_at_ms = now_ms();
        if store
            .write_subscription(account, record.version, Some(&state), record.lock_until_ms)
            .await?
        {
            tracing::warn!(
                account = %account.as_str(),
                subscription_id,
                "stripe has no such subscription any more; its stored state is ended"
            );
            return Ok(true);
        }
    }
    Err(Failure::Unavailable(
        "the subscription record kept changing".into(),
    ))
}

/// What the one-live-subscription guard decided.
enum Guarded {
    /// The read was a second live subscription, canceled now: the kept one's stored state.
    Duplicate(SubscriptionState),
    /// Store this read (taken at that time) as usual.
    Store(Subscription, i64),
}

/// The guard every door shares after the fact: an account has at most one live subscription.
/// When `incoming` is live and the account already holds another live one (two Checkout
/// sessions completed, a create beside a Checkout), the one Stripe made first is kept, whatever
/// order their events come in; the other is canceled at once, its paid invoice refunded, and
/// `subscription.duplicate_canceled` is published (once). When the account holds another live
/// subscription, `incoming` is read again first and that fresh read is the one stored: a read
/// taken before `incoming` was canceled must never replace the live one (the billing
/// simulation found this).
async fn one_live_subscription(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    incoming: Subscription,
    read_started: i64,
) -> Result<Guarded, Failure> {
    let live = |status: &str| SubscriptionStatus::parse(status).is_some_and(|s| s.is_live());
    if !live(&incoming.status) {
        return Ok(Guarded::Store(incoming, read_started));
    }
    let store = app.store_for(scope);
    // Only a switch to another subscription is guarded; the same one is ordered by read time.
    let stored = match store.subscription_record(account).await?.state {
        Some(stored) if stored.subscription_id == incoming.id => {
            return Ok(Guarded::Store(incoming, read_started))
        }
        Some(stored) if stored.status.is_live() => stored,
        // The first live subscription the store sees for the account: another one may be
        // on its way through a concurrent delivery, so Stripe's own list decides.
        _ => return guard_by_stripe_list(app, scope, stripe, account, incoming).await,
    };
    // A live read of another subscription replaces what is stored only as Stripe has it now.
    let fresh_started = now_ms();
    let incoming = match stripe.retrieve_subscription(&incoming.id).await {
        Ok(now) => now,
        Err(err) => return Err(err.into()),
    };
    if !live(&incoming.status) || !stored.status.is_live() {
        return Ok(Guarded::Store(incoming, fresh_started));
    }
    let other = match stripe.retrieve_subscription(&stored.subscription_id).await {
        Ok(other) if live(&other.status) => other,
        // The stored one has ended at Stripe: no duplicate, the incoming one is stored.
        Ok(_) | Err(StripeFailure::Missing(_)) => {
            return Ok(Guarded::Store(incoming, fresh_started))
        }
        Err(err) => return Err(err.into()),
    };
    let status = |s: &Subscription| {
        SubscriptionStatus::parse(&s.status).unwrap_or(SubscriptionStatus::Incomplete)
    };
    let keep_other = crate::domain::subscriptions::keeps_first(
        (status(&other), other.created, &other.id),
        (status(&incoming), incoming.created, &incoming.id),
    );
    let duplicate = if keep_other { &incoming } else { &other };
    // Only a subscription Coffer made in this scope is ever canceled (not one made in the
    // Dashboard for the same customer): the two are left as they are, for an operator.
    if !app.owns(scope, duplicate.metadata_value(META_SCOPE), true) {
        tracing::error!(subscription_id = %duplicate.id, "two live subscriptions, one not made by Coffer in this scope; left for an operator");
        return Ok(Guarded::Store(incoming, fresh_started));
    }
    if keep_other {
        cancel_duplicate(app, scope, stripe, account, &incoming, &other.id).await?;
        Ok(Guarded::Duplicate(stored))
    } else {
        cancel_duplicate(app, scope, stripe, account, &other, &incoming.id).await?;
        Ok(Guarded::Store(incoming, fresh_started))
    }
}

/// The guard when nothing live is stored for the account: every live subscription Coffer made in
/// this scope for the customer, as Stripe lists it now, and the one the keep rule picks among
/// them. Two first events handled at once both read the same list and pick the same one, so the
/// other is canceled whichever delivery gets there first (the refund and the cancellation are
/// idempotent, and the record is written once).
async fn guard_by_stripe_list(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    incoming: Subscription,
) -> Result<Guarded, Failure> {
    let listed_started = now_ms();
    let live = |s: &Subscription| SubscriptionStatus::parse(&s.status).is_some_and(|s| s.is_live());
    let mut candidates: Vec<Subscription> = stripe
        .customer_subscriptions(&incoming.customer)
        .await?
        .into_iter()
        .filter(|s| live(s) && app.owns(scope, s.metadata_value(META_SCOPE), true))
        .collect();
    if !candidates.iter().any(|s| s.id == incoming.id) {
        // Not listed as live (it ended meanwhile, or a Dashboard one): stored as read.
        return Ok(Guarded::Store(incoming, listed_started));
    }
    if candidates.len() < 2 {
        return Ok(Guarded::Store(incoming, listed_started));
    }
    let status = |s: &Subscription| {
        SubscriptionStatus::parse(&s.status).unwrap_or(SubscriptionStatus::Incomplete)
    };
    candidates.sort_by(|a, b| {
        let a_first = crate::domain::subscriptions::keeps_first(
            (status(a), a.created, &a.id),
            (status(b), b.created, &b.id),
        );
        if a_first {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    // One delivery at a time decides for the account (the keep rule looks at statuses, which
    // the very events that run this guard change): the others retry after it.
    let store = app.store_for(scope);
    let record = store.subscription_record(account).await?;
    let busy = record.lock_until_ms.is_some_and(|until| until >= now_ms());
    if busy
        || !store
            .write_subscription(
                account,
                record.version,
                record.state.as_ref(),
                Some(now_ms() + GUARD_LOCK_MS),
            )
            .await?
    {
        return Err(Failure::RetryLater(
            "Another delivery is deciding which subscription stays; retry later.".into(),
        ));
    }
    let locked_version = record.version + 1;
    let decided = async {
        let mut candidates = candidates.into_iter();
        let Some(kept) = candidates.next() else {
            return Ok(Guarded::Store(incoming, listed_started));
        };
        // The one kept must still be live now, or nothing is canceled.
        let kept_started = now_ms();
        let kept = stripe.retrieve_subscription(&kept.id).await?;
        if !live(&kept) {
            return Ok(Guarded::Store(incoming, listed_started));
        }
        for duplicate in candidates {
            cancel_duplicate(app, scope, stripe, account, &duplicate, &kept.id).await?;
        }
        Ok::<Guarded, Failure>(Guarded::Store(kept, kept_started))
    }
    .await;
    // The hold goes (a failure leaves it to expire).
    let record = store.subscription_record(account).await?;
    if record.version == locked_version {
        let _ = store
            .write_subscription(account, locked_version, record.state.as_ref(), None)
            .await;
    }
    decided
}

/// How long one delivery holds an account while it decides between two live subscriptions.
const GUARD_LOCK_MS: i64 = 60_000;

/// Cancels `duplicate` now, refunds its paid invoice and records it (the event).
async fn cancel_duplicate(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    duplicate: &Subscription,
    kept_id: &str,
) -> Result<(), Failure> {
    tracing::warn!(subscription_id = %duplicate.id, kept = kept_id, "second live subscription of an account; canceling it");
    // The refund first (one idempotency key): a failure after it leaves the subscription live,
    // so the event's retry finds it again and finishes; the cancellation last.
    let mut refunded = 0;
    let mut currency = app.config.default_currency.as_str().to_owned();
    if let Some(invoice_id) = &duplicate.latest_invoice {
        let invoice = stripe.retrieve_invoice_with_payments(invoice_id).await?;
        currency = invoice.currency.clone().unwrap_or(currency);
        let paid = invoice.amount_paid.unwrap_or(0);
        if invoice.status.as_deref() == Some("paid") && paid > 0 {
            let intents = invoice.paid_intents();
            if intents.is_empty() {
                // Not canceled unrefunded: the event fails and comes again; the error alarms.
                return Err(Failure::Internal(format!(
                    "the duplicate subscription {}'s paid invoice names no PaymentIntent to refund",
                    duplicate.id
                )));
            }
            for (n, intent) in intents.iter().enumerate() {
                let key = idempotency::duplicate_refund(&duplicate.id, n);
                stripe
                    .refund_payment(intent, "duplicate_subscription", &key)
                    .await?;
            }
            refunded = paid;
        }
        if invoice.status.as_deref() == Some("open") {
            // Not paid yet: voided, so that Stripe never collects it after the cancellation.
            stripe.void_invoice(invoice_id).await?;
        }
    }
    stripe.cancel_subscription_now(&duplicate.id).await?;
    app.store_for(scope)
        .record_duplicate_subscription(account, &duplicate.id, kept_id, refunded, &currency)
        .await?;
    Ok(())
}

/// Stores `subscription` (just read from Stripe) for the account when it is newer than the
/// stored state, keeping the create lock as it is unless `release_lock` says which version's
/// lock to clear. Returns the state that is stored afterwards. Reads are ordered by when they
/// were taken: `read_started_ms` is the time the Stripe call began (a read that began later
/// cannot show an older subscription), never the time its answer reached the store.
pub async fn store_read(
    store: &Store,
    account: &UserId,
    subscription: &Subscription,
    plans: &[Plan],
    release_lock: Option<i64>,
    read_started_ms: i64,
) -> Result<SubscriptionState, Failure> {
    let status = SubscriptionStatus::parse(&subscription.status).ok_or_else(|| {
        Failure::Stripe(format!(
            "subscription {} has an unknown status",
            subscription.id
        ))
    })?;
    let read = StripeRead {
        subscription_id: &subscription.id,
        customer_id: &subscription.customer,
        status,
        price_id: subscription.price_id().unwrap_or_default(),
        current_period_end: subscription.period_end(),
        cancel_at_period_end: subscription.cancel_at_period_end.unwrap_or(false),
    };
    let observed = read_started_ms;
    for _ in 0..8 {
        let record = store.subscription_record(account).await?;
        let state = state_from_read(&read, plans, record.state.as_ref(), observed);
        let lock = match release_lock {
            Some(version) if version == record.version => None,
            _ => record.lock_until_ms,
        };
        let newer = record
            .state
            .as_ref()
            .is_none_or(|stored| is_newer(stored, &state));
        if !newer {
            if lock == record.lock_until_ms {
                tracing::info!(subscription_id = %subscription.id, "stored state is newer; read not stored");
                return Ok(record.state.unwrap_or(state));
            }
            if store
                .write_subscription(account, record.version, None, lock)
                .await?
            {
                return Ok(record.state.unwrap_or(state));
            }
            continue;
        }
        if store
            .write_subscription(account, record.version, Some(&state), lock)
            .await?
        {
            tracing::info!(subscription_id = %state.subscription_id, status = state.status.as_str(), plan_id = %state.plan_id, "subscription state stored");
            return Ok(state);
        }
    }
    Err(Failure::Unavailable(
        "the subscription record kept changing".into(),
    ))
}

/// The card a SetupIntent saved, for this account only: the SetupIntent is re-read from Stripe
/// and must belong to the account's customer and have succeeded (an id from a body is never
/// trusted on its own, so no one can charge a card someone else saved). Returns the customer
/// and the card's PaymentMethod id.
pub async fn saved_card(
    app: &App,
    scope: &Scope,
    stripe: &StripeApi,
    account: &UserId,
    setup_intent_id: &str,
) -> Result<(String, String), Failure> {
    let not_saved = || Failure::NotFound("No card saved with this setupIntentId.".into());
    let CustomerLink::Ready(customer) = app.store_for(scope).customer_link(account).await? else {
        return Err(not_saved());
    };
    let setup = match stripe.retrieve_setup_intent(setup_intent_id).await {
        Err(StripeFailure::Missing(_)) => return Err(not_saved()),
        other => other?,
    };
    if setup.customer.as_deref() != Some(customer.as_str()) {
        return Err(not_saved());
    }
    match (setup.status.as_deref(), setup.payment_method) {
        (Some("succeeded"), Some(card)) => Ok((customer, card)),
        _ => Err(Failure::Conflict(
            "The card is not saved yet: confirm the SetupIntent first.".into(),
        )),
    }
}

/// `seti_` followed by letters, digits and underscores.
pub fn valid_setup_intent_id(id: &str) -> bool {
    id.len() <= 255
        && id.strip_prefix("seti_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}
