//! Subscription, invoice, Checkout and SetupIntent events. Stripe does not order events,
//! repeats them and may deliver a stale copy, so none of them is stored as it came: each
//! re-reads the subscription (or the Checkout session) from Stripe, and the store keeps a
//! state only when it is newer than the stored one. Included credits are one ledger entry per
//! invoice, keyed by the invoice: a repeated or second event for it moves nothing.

use serde_json::Value;

use crate::adapters::store::{CreditOutcome, IncludedOutcome, InvoiceRecord, MoveOutcome};
use crate::adapters::stripe::webhook::Event;
use crate::adapters::stripe::{
    META_ACCOUNT, META_CREDITS, META_PACKAGE, META_SCOPE, META_TRIAL, META_USER,
};
use crate::domain::buckets::{included_terms, Terms};
use crate::domain::ledger::EntryKind;
use crate::domain::ledger::{CreditMove, IncludedGrant, PaidIntent, PaymentRecord};
use crate::domain::money::Currency;
use crate::domain::plans::billed_plan;
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::services::billing::{self, sync_subscription};
use crate::services::Failure;
use crate::App;

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn object_id(event: &Event) -> Result<&str, Failure> {
    text(&event.data.object, "/id").ok_or_else(|| Failure::invalid("The event's object has no id."))
}

/// `customer.subscription.*`: re-read and store when newer.
pub async fn subscription_changed(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let id = object_id(event)?;
    sync_subscription(app, scope, id).await?;
    Ok(())
}

/// Applies an invoice again as its event would, for the scheduled job (the event failed and
/// Stripe may have stopped retrying it): everything is read again from Stripe.
pub(crate) async fn apply_invoice_again(
    app: &App,
    scope: &Scope,
    invoice_id: &str,
    subscription_id: &str,
    payment_failed: bool,
) -> Result<(), Failure> {
    let kind = if payment_failed {
        "invoice.payment_failed"
    } else {
        "invoice.paid"
    };
    let body = serde_json::json!({
        "id": format!("evt_reread_{invoice_id}"),
        "type": kind,
        "data": {"object": {"id": invoice_id, "object": "invoice", "subscription": subscription_id}},
    });
    let event = Event::parse(body.to_string().as_bytes())
        .ok_or_else(|| Failure::Internal("an invoice event could not be built".into()))?;
    invoice_event(app, scope, &event, payment_failed).await
}

/// The subscription an event is about: the subscription itself, an invoice's or a Checkout
/// session's.
pub(crate) fn subscription_of(event: &Event) -> Option<&str> {
    let object = &event.data.object;
    let kind = event.kind.as_str();
    if kind.starts_with("customer.subscription.") {
        text(object, "/id")
    } else if kind.starts_with("invoice.") {
        invoice_subscription(object)
    } else if kind.starts_with("checkout.session.") {
        text(object, "/subscription")
    } else {
        None
    }
    .filter(|id| id.starts_with("sub_"))
}

/// The subscription an invoice belongs to, wherever the API version puts it.
fn invoice_subscription(invoice: &Value) -> Option<&str> {
    text(invoice, "/subscription")
        .or_else(|| text(invoice, "/subscription/id"))
        .or_else(|| text(invoice, "/parent/subscription_details/subscription"))
}

/// `invoice.paid`, `invoice.payment_succeeded` and `invoice.payment_failed`. The invoice is read
/// again from Stripe, never stored from the event's copy: it is paid when Stripe says so
/// (whichever event arrived), failed when a payment failed and it is not paid, and its status
/// only moves forward in the store. Included credits are those of the plan the invoice billed
/// (its lines' price), once per invoice, whatever plan the subscription holds by now.
pub async fn invoice_event(
    app: &App,
    scope: &Scope,
    event: &Event,
    payment_failed: bool,
) -> Result<(), Failure> {
    let invoice_id = object_id(event)?;
    let Some(subscription_id) = invoice_subscription(&event.data.object) else {
        tracing::info!(invoice_id, "invoice of no subscription; acknowledged");
        return Ok(());
    };
    let Some((account, state)) = sync_subscription(app, scope, subscription_id).await? else {
        return Ok(());
    };
    let stripe = app.stripe_for(scope).await?;
    let invoice = match stripe.retrieve_invoice_with_payments(invoice_id).await {
        Ok(invoice) => invoice,
        Err(crate::adapters::stripe::StripeFailure::Missing(_)) => {
            tracing::warn!(invoice_id, "stripe has no such invoice; acknowledged");
            return Ok(());
        }
        Err(other) => return Err(other.into()),
    };
    let paid = invoice.status.as_deref() == Some("paid");
    if !paid && !payment_failed {
        tracing::info!(invoice_id, status = ?invoice.status, "invoice not paid at Stripe; nothing recorded");
        return Ok(());
    }
    let plans = billing::plans(app, scope).await?;
    let billed = billed_plan(&invoice.billed_lines(), &plans);
    let amount_paid = invoice.amount_paid.unwrap_or(0);
    let store = app.store_for(scope);
    let moved = store
        .record_invoice(&InvoiceRecord {
            invoice_id: invoice_id.to_owned(),
            account: account.clone(),
            subscription_id: subscription_id.to_owned(),
            plan_id: billed.map_or_else(|| state.plan_id.clone(), |p| p.id.clone()),
            amount: if paid {
                amount_paid
            } else {
                invoice.amount_due.unwrap_or(0)
            },
            currency: invoice
                .currency
                .as_deref()
                .unwrap_or("usd")
                .to_ascii_lowercase(),
            status: if paid { "paid" } else { "failed" }.to_owned(),
            created_at_ms: invoice
                .created
                .map_or_else(now_ms, |secs| secs.saturating_mul(1000)),
        })
        .await?;
    if !moved {
        tracing::info!(
            invoice_id,
            paid,
            "invoice status already at or past this one; stale or repeated event kept out"
        );
    }
    let proration = invoice.billing_reason.as_deref() == Some("subscription_update");
    if !paid || amount_paid <= 0 || proration {
        return Ok(());
    }
    if store.is_duplicate_subscription(subscription_id).await? {
        // A second live subscription, canceled and refunded: its invoice grants nothing.
        tracing::info!(
            invoice_id,
            subscription_id,
            "invoice of a canceled duplicate subscription; no included credits"
        );
        return Ok(());
    }
    let Some(plan) = billed else {
        tracing::warn!(
            invoice_id,
            "paid invoice of a price no plan links; no included credits"
        );
        return Ok(());
    };
    if plan.included_credits <= 0 {
        return Ok(());
    }
    let currency = invoice
        .currency
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let intent = invoice.paid_intents().into_iter().next();
    let terms = included_terms(
        plan.included_credits_expire,
        invoice.period_end(),
        plan.rollover_cap,
        now_ms() / 1000,
    );
    if plan.included_credits_expire && terms.expires_at.is_none() {
        tracing::warn!(
            invoice_id,
            "the invoice names no service period; its included credits roll over"
        );
    }
    match intent {
        Some(intent) if currency == app.config.default_currency.as_str() => {
            let grant = PaymentRecord::included_grant(&IncludedGrant {
                invoice_id,
                intent_id: &intent,
                account: &account,
                plan_id: &plan.id,
                amount: amount_paid,
                currency: &app.config.default_currency,
                credits: plan.included_credits,
                now_ms: now_ms(),
            });
            let entry_id = crate::domain::idempotency::included_entry(invoice_id);
            match store.grant_included(&grant, &entry_id, &terms).await? {
                IncludedOutcome::Granted => tracing::info!(
                    invoice_id,
                    credits = plan.included_credits,
                    "included credits granted"
                ),
                IncludedOutcome::AlreadyGranted => tracing::info!(
                    invoice_id,
                    "included credits already granted; duplicate ignored"
                ),
                IncludedOutcome::CurrencyMismatch => {
                    // Acknowledged (Stripe's retries would change nothing), and alarmed: the
                    // error log line feeds the error metric.
                    tracing::error!(
                        invoice_id,
                        "included credits not granted: the account's balance is in another currency; an operator must look at it"
                    );
                    return Ok(());
                }
            }
            // A refund or dispute of the invoice's charge that came first is applied now (each
            // one at most once, whatever the number of deliveries).
            for change in store.orphan_charge_events(&intent).await? {
                let outcome = store.apply_charge_event(&intent, &change).await?;
                tracing::info!(invoice_id, what = change.entry_kind().as_str(), outcome = ?outcome, "earlier charge event applied to the included credits");
            }
            Ok(())
        }
        _ => {
            // No charge to follow (or another currency): granted as before, without a record
            // that a refund could reach.
            tracing::warn!(
                invoice_id,
                "paid invoice without a PaymentIntent in the deployment's currency; included credits cannot follow its refunds"
            );
            grant_included_untracked(
                app,
                &store,
                &account,
                invoice_id,
                &plan.id,
                plan.included_credits,
                &terms,
            )
            .await
        }
    }
}

async fn grant_included_untracked(
    app: &App,
    store: &crate::adapters::store::Store,
    account: &UserId,
    invoice_id: &str,
    plan_id: &str,
    credits: i64,
    terms: &Terms,
) -> Result<(), Failure> {
    let request = CreditMove {
        delta: credits,
        reason: format!("Included credits of {plan_id} ({invoice_id})"),
    };
    let entry_id = crate::domain::idempotency::included_entry(invoice_id);
    let currency: &Currency = &app.config.default_currency;
    match store
        .move_credits(
            account,
            &entry_id,
            EntryKind::Grant,
            &request,
            currency,
            Some(terms),
        )
        .await?
    {
        MoveOutcome::Done { .. } => {
            tracing::info!(invoice_id, credits, "included credits granted")
        }
        MoveOutcome::Replayed { .. } => {
            tracing::info!(
                invoice_id,
                "included credits already granted; duplicate ignored"
            )
        }
        other => tracing::warn!(invoice_id, outcome = ?other, "included credits not granted"),
    }
    Ok(())
}

/// `checkout.session.completed`: re-reads the session. A subscription session stores the
/// subscription; a paid package session records the payment (if the create route never saw
/// it) and credits it exactly once, like a PaymentIntent purchase.
pub async fn checkout_completed(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let id = object_id(event)?;
    let stripe = app.stripe_for(scope).await?;
    let session = match stripe.retrieve_checkout_session(id).await {
        Ok(session) => session,
        Err(crate::adapters::stripe::StripeFailure::Missing(_)) => {
            tracing::warn!(
                session_id = id,
                "stripe has no such checkout session; acknowledged"
            );
            return Ok(());
        }
        Err(other) => return Err(other.into()),
    };
    if let Some(subscription_id) = &session.subscription {
        if let Some((account, _)) = sync_subscription(app, scope, subscription_id).await? {
            // The Checkout is done: its hold on the account goes.
            app.store_for(scope)
                .release_subscription_hold(&account)
                .await?;
        }
        return Ok(());
    }
    if session.payment_status.as_deref() != Some("paid") {
        tracing::info!(
            session_id = id,
            "checkout session not paid yet; acknowledged"
        );
        return Ok(());
    }
    let metadata = session.metadata.clone().unwrap_or_default();
    if !app.owns(scope, metadata.get(META_SCOPE).map(String::as_str), true) {
        // Another project or mode on the same Stripe account: its own webhook credits it.
        tracing::warn!(
            session_id = id,
            "paid checkout session of another scope; nothing credited here"
        );
        return Ok(());
    }
    let (Some(intent_id), Some(account), Some(package_id)) = (
        session.payment_intent.clone(),
        metadata
            .get(META_ACCOUNT)
            .or(metadata.get(META_USER))
            .and_then(|a| UserId::parse(a)),
        metadata.get(META_PACKAGE).cloned(),
    ) else {
        tracing::warn!(
            session_id = id,
            "paid checkout session without Coffer metadata; nothing credited"
        );
        return Ok(());
    };
    let store = app.store_for(scope);
    let packages = app.packages_for(scope).await?;
    let Some(package) = packages.iter().find(|p| p.id == package_id) else {
        tracing::warn!(
            session_id = id,
            package_id,
            "paid checkout session of an unknown package; nothing credited"
        );
        return Ok(());
    };
    let payment = PaymentRecord::pending(&intent_id, account, package, now_ms());
    store.record_payment_if_new(&payment).await?;
    let paid = PaidIntent {
        intent_id: intent_id.clone(),
        amount: session.amount_total.unwrap_or(-1),
        currency: session
            .currency
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        user_id: Some(payment.user_id.as_str().to_owned()),
        package_id: Some(package_id),
        credits: metadata.get(META_CREDITS).and_then(|c| c.parse().ok()),
    };
    match store.credit_purchase(&paid, &event.id).await? {
        CreditOutcome::Credited => {
            tracing::info!(intent_id = %intent_id, "checkout payment credited")
        }
        CreditOutcome::AlreadyCredited => {
            tracing::info!(intent_id = %intent_id, "checkout payment already credited; duplicate ignored")
        }
        other => {
            tracing::warn!(intent_id = %intent_id, outcome = ?other, "checkout payment not credited")
        }
    }
    Ok(())
}

/// `checkout.session.expired`: a plan's Checkout that was never paid; its hold on the account
/// goes, so that the account can subscribe again at once.
pub async fn checkout_expired(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let metadata = event.data.object.get("metadata");
    let made_here = app.owns(
        scope,
        metadata
            .and_then(|m| m.get(META_SCOPE))
            .and_then(Value::as_str),
        true,
    );
    let account = metadata
        .and_then(|m| m.get(META_ACCOUNT))
        .and_then(Value::as_str)
        .and_then(UserId::parse);
    if let (true, Some(account)) = (made_here, account) {
        app.store_for(scope)
            .release_subscription_hold(&account)
            .await?;
        tracing::info!("expired checkout session's hold released");
    }
    Ok(())
}

/// `setup_intent.succeeded`: a subscription with nothing due now was confirmed; re-read the
/// customer's stored subscription.
pub async fn setup_succeeded(app: &App, scope: &Scope, event: &Event) -> Result<(), Failure> {
    let Some(customer) = text(&event.data.object, "/customer") else {
        return Ok(());
    };
    let store = app.store_for(scope);
    let Some(account) = store.customer_account(customer).await? else {
        return Ok(());
    };
    // A SetupIntent Coffer made for a trial: its card pays the subscription when the trial
    // ends. Read back from Stripe (the account's own customer, succeeded) before it is used.
    if text(&event.data.object, &format!("/metadata/{META_TRIAL}")).is_some() {
        if let Some(setup_id) = text(&event.data.object, "/id") {
            let stripe = app.stripe_for(scope).await?;
            match billing::saved_card(app, scope, &stripe, &account, setup_id).await {
                Ok((customer, card)) => {
                    stripe.set_default_card(&customer, &card).await?;
                    tracing::info!("trial subscription's card saved as the customer's default");
                }
                Err(Failure::NotFound(_) | Failure::Conflict(_)) => {
                    tracing::warn!("setup intent is not this account's saved card; ignored");
                }
                Err(other) => return Err(other),
            }
        }
    }
    let record = store.subscription_record(&account).await?;
    if let Some(state) = record.state {
        sync_subscription(app, scope, &state.subscription_id).await?;
    }
    Ok(())
}
