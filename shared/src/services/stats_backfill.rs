//! Backfilling the stats counters from the table: what was written before the change stream
//! existed (or while the stats function was off) is counted, and nothing is counted twice.
//!
//! 1. Each scope begins a new epoch whose cutoff is `lead` from now: from the cutoff on, the
//!    stream counts new entries into the epoch's shards, and payments into it as they stand.
//! 2. Once the cutoff and `settle` have passed (every entry made before the cutoff is then
//!    committed, so the table holds it), one pass over the table counts the entries made before
//!    the cutoff into the epoch's baseline and recounts every payment as it stands (the same
//!    recount as the stream's: whichever comes second adds nothing).
//! 3. The baselines are written; the scopes' figures are whole from then on.
//!
//! Run again, it makes a new epoch and the same figures. Stopped half-way, it is taken up
//! again by the next run (an epoch with no baseline yet is resumed, not restarted).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::adapters::store::{Recount, StatsEpoch};
use crate::domain::records::now_ms;
use crate::domain::scope::Scope;
use crate::domain::stats::StatsDelta;
use crate::services::Failure;
use crate::App;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackfillReport {
    pub scopes: usize,
    pub pages: usize,
    /// Payments recounted as they stand (those the stream had counted already add nothing).
    pub payments: usize,
    /// Entries made before their scope's cutoff, counted into its baseline.
    pub entries: usize,
}

/// Every scope the deployment knows: its own, and each mode of each registered project.
async fn scopes(app: &App) -> Result<Vec<Scope>, Failure> {
    let mut scopes = vec![app.default_scope()];
    for id in app.store.all_project_ids().await? {
        if let Some(project) = app.store.project(&id).await? {
            for mode in project.modes.keys() {
                let scope = Scope::new(id.clone(), *mode);
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
    }
    Ok(scopes)
}

pub async fn backfill_stats(
    app: &App,
    lead: Duration,
    settle: Duration,
) -> Result<BackfillReport, Failure> {
    let lead_ms = i64::try_from(lead.as_millis()).unwrap_or(i64::MAX);
    let mut epochs: BTreeMap<String, StatsEpoch> = BTreeMap::new();
    for scope in scopes(app).await? {
        let prefix = scope.key_prefix(app.config.default_mode);
        let epoch = app.store.begin_stats_epoch(&prefix, lead_ms).await?;
        tracing::info!(scope = %scope, epoch = epoch.epoch, cutoff_ms = epoch.cutoff_ms, "a stats epoch began");
        epochs.insert(prefix, epoch);
    }
    let latest = epochs.values().map(|e| e.cutoff_ms).max().unwrap_or(0);
    let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
    let wait = latest.saturating_add(settle_ms).saturating_sub(now_ms());
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
    }
    let mut report = BackfillReport {
        scopes: epochs.len(),
        ..BackfillReport::default()
    };
    let mut baselines: BTreeMap<String, StatsDelta> = BTreeMap::new();
    let mut start = None;
    loop {
        let page = app.store.stats_backfill_page(start).await?;
        report.pages += 1;
        for (prefix, intent, counts) in &page.payments {
            let Some(epoch) = epochs.get(prefix) else {
                continue;
            };
            app.store
                .recount_payment(prefix, intent, epoch.epoch, counts, Recount::Backfill)
                .await?;
            report.payments += 1;
        }
        for (prefix, created_at_ms, counts) in &page.entries {
            let Some(epoch) = epochs.get(prefix) else {
                continue;
            };
            if *created_at_ms < epoch.cutoff_ms {
                baselines.entry(prefix.clone()).or_default().merge(counts);
                report.entries += 1;
            }
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    for (prefix, epoch) in &epochs {
        let baseline = baselines.remove(prefix).unwrap_or_default();
        app.store
            .save_stats_baseline(prefix, epoch.epoch, &baseline)
            .await?;
    }
    Ok(report)
}
