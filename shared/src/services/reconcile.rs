//! Reconciliation: lists PaymentIntents at Stripe and credits every succeeded one of the window
//! that the webhook missed, through the very same exactly-once path the webhook uses. Running it
//! again changes nothing.
//!
//! It pages through the whole window. Stripe lists newest first, so paging stops at the first
//! page that ends before the window; a list in another order (localstripe lists oldest first) is
//! read to its end. Only `limit` and `starting_after` are sent, which both accept.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::adapters::store::{CreditOutcome, Store};
use crate::adapters::stripe::{
    Intent, META_CREDITS, META_PACKAGE, META_SCOPE, META_TIER, META_USER,
};
use crate::domain::ledger::PaidIntent;
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// A bound on one run (10 million intents), so that a run always ends.
const MAX_PAGES: usize = 100_000;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Pages read from Stripe.
    pub pages: usize,
    /// Intents read from Stripe inside the window.
    pub listed: usize,
    /// Succeeded intents that carry Coffer's metadata.
    pub succeeded: usize,
    /// Intents this run credited (the webhook had missed them).
    pub credited: Vec<String>,
    pub already_credited: usize,
    pub unknown: usize,
    /// Succeeded intents that do not match their payment (flagged for an operator).
    pub mismatched: usize,
    /// False only when the page bound was reached before the window's end (in any scope).
    pub complete: bool,
    /// Scopes reconciled (the deployment's own and each project's modes).
    pub scopes: usize,
    /// Live subscriptions read again from Stripe because their period ends within the hour or
    /// has ended (a missed renewal or cancellation is caught here).
    pub subscriptions_reread: usize,
}

/// Reconciles the intents created in the last `window_secs` seconds in every scope: the
/// deployment's own, and each mode of each project (an inactive mode too: its webhook still
/// credits). One scope that fails (its key revoked, Stripe down for it) does not stop the
/// others; the run then fails at its end (each failed scope is logged), so that it alarms.
pub async fn reconcile(app: &App, window_secs: i64) -> Result<ReconcileReport, Failure> {
    let mut scopes = vec![app.default_scope()];
    // The first failure is the run's; each is logged as it happens, and none keeps the other
    // scopes (the deployment's own first) from running.
    let mut first_failure: Option<Failure> = None;
    let ids = match app.store.all_project_ids().await {
        Ok(ids) => ids,
        Err(err) => {
            tracing::error!(error = %err, "projects could not be listed; reconciling the deployment's own scope only");
            first_failure = Some(err.into());
            Vec::new()
        }
    };
    for id in ids {
        let project = match app.store.project(&id).await {
            Ok(Some(project)) => project,
            Ok(None) => continue,
            Err(err) => {
                tracing::error!(project = %id, error = %err, "a project could not be read; not reconciled");
                first_failure.get_or_insert(err.into());
                continue;
            }
        };
        for mode in project.modes.keys() {
            let scope = Scope::new(id.clone(), *mode);
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    let mut report = ReconcileReport {
        complete: true,
        ..ReconcileReport::default()
    };
    for scope in &scopes {
        match reconcile_scope(app, scope, window_secs, &mut report).await {
            Ok(()) => report.scopes += 1,
            Err(err) => {
                tracing::error!(scope = %scope, code = err.code(), "reconciliation of a scope failed");
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

/// Reconciles one scope's intents into `report`.
async fn reconcile_scope(
    app: &App,
    scope: &Scope,
    window_secs: i64,
    total: &mut ReconcileReport,
) -> Result<(), Failure> {
    let stripe = app.stripe_for(scope).await?;
    let store = app.store_for(scope);
    let since = (now_ms() / 1000).saturating_sub(window_secs);
    let source = format!("reconcile:{}", now_ms());
    let mut report = ReconcileReport::default();
    let mut after: Option<String> = None;
    while report.pages < MAX_PAGES {
        let page = stripe.list_intents(after.as_deref()).await?;
        report.pages += 1;
        after = page.data.last().map(|i| i.id.clone());
        for intent in page
            .data
            .iter()
            .filter(|i| i.created.unwrap_or(i64::MAX) >= since)
        {
            report.listed += 1;
            if !app.owns(
                scope,
                intent
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get(META_SCOPE))
                    .map(String::as_str),
                false,
            ) {
                continue;
            }
            reconcile_intent(app, scope, &store, intent, &source, &mut report).await?;
        }
        if !page.has_more || after.is_none() || ends_before(&page.data, since) {
            report.complete = true;
            break;
        }
    }
    if !report.complete {
        tracing::error!(
            pages = report.pages,
            "reconciliation stopped at its page bound"
        );
    }
    report.subscriptions_reread = reread_subscriptions(app, scope).await?;
    tracing::info!(
        scope = %scope,
        reread = report.subscriptions_reread,
        pages = report.pages,
        listed = report.listed,
        succeeded = report.succeeded,
        credited = report.credited.len(),
        "reconciliation of a scope finished"
    );
    total.add(report);
    Ok(())
}

impl ReconcileReport {
    /// Adds one scope's figures; the whole run is complete when every scope was.
    fn add(&mut self, scope: ReconcileReport) {
        self.pages += scope.pages;
        self.listed += scope.listed;
        self.succeeded += scope.succeeded;
        self.credited.extend(scope.credited);
        self.already_credited += scope.already_credited;
        self.unknown += scope.unknown;
        self.mismatched += scope.mismatched;
        self.subscriptions_reread += scope.subscriptions_reread;
        self.complete &= scope.complete;
    }
}

/// How far ahead of its period's end a live subscription is read again.
const REREAD_AHEAD_SECS: i64 = 3600;

/// Reads again from Stripe, through the same path as the webhook (`sync_subscription`: stored
/// only when newer), every live subscription of the scope whose period ends within the hour or
/// has ended, and every subscription whose last event failed (marked by the webhook). A stored
/// live state whose subscription Stripe says it does not have is left as it is (the stale rule
/// bounds it), logged as an error and not read again for a day. The number read; one that fails does not stop the others, the first failure is
/// returned after them.
async fn reread_subscriptions(app: &App, scope: &Scope) -> Result<usize, Failure> {
    let now_secs = now_ms() / 1000;
    let store = app.store_for(scope);
    // Each subscription once: its account when stored, and when it was marked.
    let mut due: BTreeMap<String, (Option<UserId>, Option<i64>)> = BTreeMap::new();
    let (marked, missing) = store.reread_marks().await?;
    for (account, state) in store.all_subscriptions().await? {
        let due_now =
            crate::domain::subscriptions::due_for_reread(&state, now_secs, REREAD_AHEAD_SECS);
        if due_now && !missing.contains(&state.subscription_id) {
            due.insert(state.subscription_id.clone(), (Some(account), None));
        }
    }
    for (subscription_id, marked_at) in marked {
        due.entry(subscription_id).or_default().1 = Some(marked_at);
    }
    let mut reread = 0;
    let mut first_failure = None;
    for (subscription_id, (account, marked_at)) in due {
        let result = async {
            let synced =
                crate::services::billing::sync_subscription(app, scope, &subscription_id).await?;
            if let (None, Some(_)) = (synced, &account) {
                // Stored live, yet not read: Stripe may not have it (or it is another scope's).
                let stripe = app.stripe_for(scope).await?;
                if let Err(crate::adapters::stripe::StripeFailure::Missing(_)) =
                    stripe.retrieve_subscription(&subscription_id).await
                {
                    tracing::error!(subscription_id = %subscription_id, "a stored live subscription is missing at Stripe (deleted data, or a key of another account); not read again for a day");
                    store.mark_missing(&subscription_id).await?;
                }
            }
            if let Some(marked_at) = marked_at {
                store.clear_reread_mark(&subscription_id, marked_at).await?;
            }
            Ok::<(), Failure>(())
        }
        .await;
        match result {
            Ok(()) => reread += 1,
            Err(err) => {
                tracing::error!(subscription_id = %subscription_id, code = err.code(), "subscription could not be read again");
                first_failure.get_or_insert(err);
            }
        }
    }
    for (invoice_id, subscription_id, payment_failed, marked_at) in
        store.invoice_reread_marks().await?
    {
        let result = async {
            crate::services::inbound::billing::apply_invoice_again(
                app,
                scope,
                &invoice_id,
                &subscription_id,
                payment_failed,
            )
            .await?;
            store
                .clear_invoice_reread_mark(&invoice_id, marked_at)
                .await?;
            Ok::<(), Failure>(())
        }
        .await;
        match result {
            Ok(()) => reread += 1,
            Err(err) => {
                tracing::error!(invoice_id = %invoice_id, code = err.code(), "invoice could not be applied again");
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        Some(err) => Err(err),
        None => Ok(reread),
    }
}

/// A newest-first page whose last intent is older than the window: every later page is too.
fn ends_before(page: &[Intent], since: i64) -> bool {
    let times: Vec<i64> = page.iter().filter_map(|i| i.created).collect();
    let newest_first = times.windows(2).all(|pair| pair[0] >= pair[1]);
    newest_first && times.len() >= 2 && times.last().is_some_and(|last| *last < since)
}

async fn reconcile_intent(
    app: &App,
    scope: &Scope,
    store: &Store,
    intent: &Intent,
    source: &str,
    report: &mut ReconcileReport,
) -> Result<(), Failure> {
    let Some(metadata) = &intent.metadata else {
        return Ok(());
    };
    if intent.status.as_deref() != Some("succeeded") || !metadata.contains_key(META_USER) {
        return Ok(());
    }
    report.succeeded += 1;
    let paid = PaidIntent {
        intent_id: intent.id.clone(),
        amount: intent.amount,
        currency: intent.currency.to_ascii_lowercase(),
        user_id: metadata.get(META_USER).cloned(),
        package_id: metadata.get(META_PACKAGE).cloned(),
        credits: metadata.get(META_CREDITS).and_then(|c| c.parse().ok()),
    };
    let outcome = store.credit_purchase(&paid, source).await?;
    if matches!(
        outcome,
        CreditOutcome::Credited | CreditOutcome::AlreadyCredited
    ) && metadata.contains_key(META_TIER)
    {
        // A tier purchase: the account's tier is the highest it still holds.
        crate::services::billing::sync_tier(app, scope, &intent.id).await?;
    }
    match outcome {
        CreditOutcome::Credited => {
            tracing::warn!(intent_id = %intent.id, "reconciliation credited a payment the webhook missed");
            report.credited.push(intent.id.clone());
        }
        CreditOutcome::AlreadyCredited => report.already_credited += 1,
        CreditOutcome::UnknownPayment => report.unknown += 1,
        CreditOutcome::Mismatch {
            reason,
            newly_flagged,
        } => {
            crate::telemetry::payment_needs_attention(&intent.id, reason, newly_flagged);
            report.mismatched += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(created: i64) -> Intent {
        Intent {
            id: format!("pi_{created}"),
            amount: 1,
            currency: "usd".into(),
            status: None,
            client_secret: None,
            metadata: None,
            created: Some(created),
        }
    }

    #[test]
    fn only_a_newest_first_page_that_ends_before_the_window_stops_paging() {
        let newest_first = [intent(30), intent(20), intent(5)];
        assert!(ends_before(&newest_first, 10));
        assert!(!ends_before(&newest_first, 5));
        let oldest_first = [intent(5), intent(20), intent(30)];
        assert!(!ends_before(&oldest_first, 100));
    }
}
