//! Reconciliation: lists recent PaymentIntents at Stripe and credits every succeeded one the
//! webhook missed, through the very same exactly-once transaction the webhook uses. Running it
//! again changes nothing.

use serde::Serialize;

use crate::http::ApiError;
use crate::ledger::{now_ms, CreditOutcome, PaidIntent};
use crate::payments::{META_CREDITS, META_PACKAGE, META_USER};
use crate::App;

/// At most this many pages of 100 intents are read per run.
const MAX_PAGES: usize = 20;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Intents read from Stripe inside the window.
    pub listed: usize,
    /// Succeeded intents that carry Coffer's metadata.
    pub succeeded: usize,
    /// Intents this run credited (the webhook had missed them).
    pub credited: Vec<String>,
    pub already_credited: usize,
    pub unknown: usize,
    pub mismatched: usize,
}

/// Reconciles the intents created in the last `window_secs` seconds.
pub async fn reconcile(app: &App, window_secs: i64) -> Result<ReconcileReport, ApiError> {
    let stripe = app.stripe().await?;
    let since = now_ms() / 1000 - window_secs;
    let run = format!("reconcile:{}", now_ms());
    let mut report = ReconcileReport::default();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = stripe.list_intents(after.as_deref()).await?;
        after = page.data.last().map(|i| i.id.clone());
        for intent in &page.data {
            if intent.created.is_some_and(|created| created < since) {
                continue;
            }
            report.listed += 1;
            let Some(metadata) = &intent.metadata else {
                continue;
            };
            if intent.status.as_deref() != Some("succeeded") || !metadata.contains_key(META_USER) {
                continue;
            }
            report.succeeded += 1;
            let paid = PaidIntent {
                intent_id: intent.id.clone(),
                amount: intent.amount,
                currency: intent.currency.to_ascii_lowercase(),
                user_id: metadata.get(META_USER).cloned(),
                package_id: metadata.get(META_PACKAGE).cloned(),
                credits: metadata.get(META_CREDITS).and_then(|c| c.parse().ok()),
                event_id: run.clone(),
            };
            match app.store.credit_purchase(&paid).await? {
                CreditOutcome::Credited => {
                    tracing::warn!(intent_id = %intent.id, "reconciliation credited a payment the webhook missed");
                    report.credited.push(intent.id.clone());
                }
                CreditOutcome::AlreadyCredited => report.already_credited += 1,
                CreditOutcome::UnknownPayment => report.unknown += 1,
                CreditOutcome::Mismatch => {
                    tracing::warn!(intent_id = %intent.id, "succeeded intent does not match its payment record");
                    report.mismatched += 1;
                }
            }
        }
        if !page.has_more || after.is_none() {
            break;
        }
    }
    tracing::info!(
        listed = report.listed,
        succeeded = report.succeeded,
        credited = report.credited.len(),
        "reconciliation finished"
    );
    Ok(report)
}
