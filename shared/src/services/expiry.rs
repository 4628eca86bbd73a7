//! The scheduled settling of credits (with the meter reporter): every hold whose time is over
//! goes back and every expired bucket leaves through its `expire` entry, each once (the wallet's
//! version makes a second or concurrent run find nothing to do), and a bucket about to expire is
//! warned of once (`credits.expiring`, made by the stream from the note's mark). Reads and
//! spends never wait for this job: they leave expired credits out at the time they are made.

use serde::Serialize;

use crate::adapters::store::{DueNote, DueWhat, Store, DUE_SHARDS};
use crate::domain::records::now_ms;
use crate::domain::scope::Scope;
use crate::services::budget::Budget;
use crate::services::Failure;
use crate::App;

/// Notes read per query.
const NOTES_PER_PAGE: i32 = 100;

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryReport {
    /// Accounts settled (holds ended, buckets expired).
    pub settled: usize,
    /// Entries written by the settling.
    pub entries: usize,
    /// Buckets warned of.
    pub warned: usize,
    /// The run stopped at its deadline with notes left.
    pub cut_short: bool,
    /// Notes whose account could not be settled (logged; tried again next run).
    pub failed: usize,
}

/// Settles every note due now, shard by shard, until none is left or the budget is out.
pub async fn settle_due(app: &App, budget: &Budget) -> Result<ExpiryReport, Failure> {
    let mut report = ExpiryReport::default();
    for shard in 0..DUE_SHARDS {
        // Page by page: a note handled leaves the range or moves past the page; one that
        // failed stays for the next run, and the pages go on past it.
        let now = now_ms() / 1000;
        let mut start = None;
        loop {
            if budget.past_deadline() {
                report.cut_short = true;
                return Ok(report);
            }
            let (notes, next) = app
                .store
                .due_notes(shard, now, NOTES_PER_PAGE, start)
                .await?;
            for note in notes {
                let Some(scope) =
                    Scope::from_key_prefix(&note.scope_prefix, app.config.default_mode)
                else {
                    continue;
                };
                let store = app.store_for(&scope);
                let expired = note.at <= now;
                // One account's failure is logged and left for the next run; the others go on.
                if let Err(err) = settle_note(&store, &note, now, expired, &mut report).await {
                    report.failed += 1;
                    tracing::warn!(
                        account = note.account.as_str(),
                        cause = %err,
                        "a credit note could not be settled; the next run tries again"
                    );
                }
            }
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
        }
    }
    if report.failed > 0 {
        tracing::error!(failed = report.failed, "credit notes left unsettled");
    }
    Ok(report)
}

/// Warns of a bucket's expiry, or settles the account past a note that is due.
async fn settle_note(
    store: &Store,
    note: &DueNote,
    now: i64,
    expired: bool,
    report: &mut ExpiryReport,
) -> Result<(), Failure> {
    match note.what {
        DueWhat::Bucket if !expired && !note.warned => {
            let wallet = store.wallet(&note.account).await?;
            let left = wallet
                .wallet
                .bucket(&note.id)
                .filter(|b| b.live_at(now) && b.left > 0)
                .map(|b| b.left);
            if store.warn_due(note, left).await? && left.is_some() {
                report.warned += 1;
            }
        }
        _ if !expired => {}
        _ => {
            report.entries += store.settle_wallet(&note.account).await?;
            report.settled += 1;
            store.forget_due(note).await?;
        }
    }
    Ok(())
}
