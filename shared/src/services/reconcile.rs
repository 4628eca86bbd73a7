//! Reconciliation: lists PaymentIntents at Stripe and credits every succeeded one of the window
//! that the webhook missed, through the very same exactly-once path the webhook uses. Running it
//! again changes nothing.
//!
//! Each scope is covered by passes (`domain::reconcile`): a pass lists the intents created in a
//! fixed window with Stripe's `created` filter, newest first, 100 a page, and saves its cursor
//! after every page. A run stops starting pages when its budget is out, and the next run goes on
//! from the cursor; the scopes least recently covered go first. A new pass reaches back to
//! where the last one ended, so a slow pass leaves no gap. A scope whose pass began more than a
//! window ago is reported, and the run fails (so that its error alarm fires).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::adapters::store::{CreditOutcome, Store};
use crate::adapters::stripe::{
    Intent, META_CREDITS, META_PACKAGE, META_SCOPE, META_TIER, META_USER,
};
use crate::domain::ledger::PaidIntent;
use crate::domain::reconcile::Coverage;
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::Scope;
use crate::services::budget::Budget;
use crate::services::Failure;
use crate::App;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Pages read from Stripe.
    pub pages: usize,
    /// Intents read from Stripe inside the passes' windows.
    pub listed: usize,
    /// Succeeded intents that carry Coffer's metadata.
    pub succeeded: usize,
    /// Intents this run credited (the webhook had missed them).
    pub credited: Vec<String>,
    pub already_credited: usize,
    pub unknown: usize,
    /// Succeeded intents that do not match their payment (flagged for an operator).
    pub mismatched: usize,
    /// Every scope's pass finished in this run (false: the budget ran out first; the next run
    /// goes on from the saved cursors).
    pub complete: bool,
    /// Scopes whose pass finished in this run.
    pub scopes: usize,
    /// Scopes whose pass goes on in the next run.
    pub scopes_left: usize,
    /// Scopes with an intent unchecked for longer than the window (the run fails).
    pub behind: Vec<String>,
    /// Live subscriptions read again from Stripe because their period ends within the hour or
    /// has ended (a missed renewal or cancellation is caught here).
    pub subscriptions_reread: usize,
}

/// Reconciles the intents created in the last `window_secs` seconds in every scope (and back to
/// where each scope's last pass ended): the deployment's own, and each mode of each project (an
/// inactive mode too: its webhook still credits), until `budget` is out. One scope that fails
/// (its key revoked, Stripe down for it) does not stop the others; the run then fails at its
/// end (each failed scope is logged), so that it alarms. It fails too when a scope is behind.
pub async fn reconcile(
    app: &App,
    window_secs: i64,
    budget: Budget,
) -> Result<ReconcileReport, Failure> {
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
    // The scopes least recently covered first (a pass under way, then the oldest coverage).
    let mut queue = Vec::with_capacity(scopes.len());
    for scope in scopes {
        match app.store_for(&scope).reconcile_coverage().await {
            Ok(coverage) => queue.push((scope, coverage)),
            Err(err) => {
                tracing::error!(scope = %scope, error = %err, "a scope's coverage could not be read; not reconciled");
                first_failure.get_or_insert(err.into());
            }
        }
    }
    queue.sort_by_key(|(_, c)| (c.pass.is_none(), c.covered_to.unwrap_or(i64::MIN)));
    let mut report = ReconcileReport {
        complete: true,
        ..ReconcileReport::default()
    };
    let now = now_ms() / 1000;
    for (scope, mut coverage) in queue {
        match reconcile_scope(
            app,
            &scope,
            window_secs,
            &budget,
            &mut coverage,
            &mut report,
        )
        .await
        {
            Ok(true) => report.scopes += 1,
            Ok(false) => {
                report.scopes_left += 1;
                report.complete = false;
            }
            Err(err) => {
                tracing::error!(scope = %scope, code = err.code(), "reconciliation of a scope failed");
                report.complete = false;
                first_failure.get_or_insert(err);
            }
        }
        if coverage.behind(now, window_secs) {
            tracing::error!(scope = %scope, coverage = ?coverage, "reconciliation is behind: a pass began more than a window ago");
            report.behind.push(scope.to_string());
        }
    }
    if let Some(err) = first_failure {
        return Err(err);
    }
    if !report.behind.is_empty() {
        return Err(Failure::Unavailable(format!(
            "reconciliation is behind in {} scope(s)",
            report.behind.len()
        )));
    }
    Ok(report)
}

/// Goes on with one scope's pass, page by page, saving its cursor after each page, then reads
/// again the scope's subscriptions that are due (when the budget allows; a failure there is the
/// run's, after the coverage is saved). `true` when the pass finished, `false` when the budget
/// ran out first.
async fn reconcile_scope(
    app: &App,
    scope: &Scope,
    window_secs: i64,
    budget: &Budget,
    coverage: &mut Coverage,
    total: &mut ReconcileReport,
) -> Result<bool, Failure> {
    if budget.out(total.pages) {
        return Ok(false);
    }
    let stripe = app.stripe_for(scope).await?;
    let store = app.store_for(scope);
    let mut pass = coverage.pass_at(now_ms() / 1000, window_secs);
    let source = format!("reconcile:{}", now_ms());
    let mut report = ReconcileReport::default();
    let finished = loop {
        if budget.out(total.pages + report.pages) {
            break false;
        }
        let page = stripe
            .list_intents(pass.from, pass.to, pass.after.as_deref())
            .await?;
        report.pages += 1;
        for intent in page
            .data
            .iter()
            .filter(|i| i.created.is_some_and(|c| c >= pass.from && c < pass.to))
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
        match page.data.last() {
            Some(last) if page.has_more => {
                pass.after = Some(last.id.clone());
                coverage.pass = Some(pass.clone());
                store.save_reconcile_coverage(coverage).await?;
            }
            _ => break true,
        }
    };
    if finished {
        coverage.finish(&pass);
    } else {
        coverage.pass = Some(pass.clone());
    }
    // Saved first: a subscription that keeps failing to be read never holds the pass back.
    store.save_reconcile_coverage(coverage).await?;
    let reread = if budget.out(total.pages + report.pages) {
        Ok(0)
    } else {
        reread_subscriptions(app, scope).await
    };
    tracing::info!(
        scope = %scope,
        finished,
        from = pass.from,
        to = pass.to,
        pages = report.pages,
        listed = report.listed,
        succeeded = report.succeeded,
        credited = report.credited.len(),
        "reconciliation of a scope went on"
    );
    let reread = reread.map(|count| {
        total.subscriptions_reread += count;
    });
    total.add(report);
    reread?;
    Ok(finished)
}

impl ReconcileReport {
    /// Adds one scope's figures.
    fn add(&mut self, scope: ReconcileReport) {
        self.pages += scope.pages;
        self.listed += scope.listed;
        self.succeeded += scope.succeeded;
        self.credited.extend(scope.credited);
        self.already_credited += scope.already_credited;
        self.unknown += scope.unknown;
        self.mismatched += scope.mismatched;
        self.subscriptions_reread += scope.subscriptions_reread;
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
