//! Reporting metered usage to Stripe (the scheduled meter reporter). Per meter shard:
//!
//! 1. read the watermark; a batch left pending by an earlier run is sent again as it was saved
//!    (same identifiers, same values: Stripe counts it once);
//! 2. otherwise read the records after the watermark that are old enough to be settled, decide
//!    the batch (`domain::metering::batch_of`) and save it as pending before sending anything;
//! 3. send its meter events, then move the watermark to its end and drop it.
//!
//! A crash or a failed send between 2 and 3 leaves the batch pending, so nothing is skipped and
//! nothing is counted twice. Two runs at once cannot both save a batch: each write is
//! conditioned on the watermark's version.

use serde::Serialize;

use crate::adapters::stripe::{MeterEventOut, MeterSent};
use crate::domain::metering::{batch_of, PendingBatch, METER_SHARDS};
use crate::domain::records::now_ms;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// Records read per batch.
const BATCH_RECORDS: i32 = 500;
/// Batches per shard in one run, so that a run always ends.
const MAX_BATCHES_PER_SHARD: usize = 200;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MeterReport {
    /// Batches sent and confirmed.
    pub batches: usize,
    /// Meter events sent (a pending batch resent counts again).
    pub events_sent: usize,
    /// Batches found pending from an earlier run and resent.
    pub resent: usize,
    /// Units reported in the batches this run confirmed.
    pub units: i64,
    /// Events Stripe refused for good (logged with their identifiers).
    pub parked: usize,
}

/// Where a run stops on purpose (tests of a crash between sending and saving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    Never,
    /// After the first batch is sent, before the watermark moves: as if the process died.
    AfterFirstSend,
}

/// Reports every settled metered record to Stripe. Each shard goes on when another fails; the
/// run fails at the end if any did (so that the function's error metric alarms).
pub async fn report_usage(app: &App, stop: StopAt) -> Result<MeterReport, Failure> {
    let mut report = MeterReport::default();
    let mut failed = None;
    for shard in 0..METER_SHARDS {
        if let Err(err) = report_shard(app, shard, stop, &mut report).await {
            if stop == StopAt::AfterFirstSend {
                return Err(err);
            }
            tracing::error!(shard, code = err.code(), cause = %err.cause(), "a meter shard could not be reported");
            failed = Some(err);
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

async fn report_shard(
    app: &App,
    shard: usize,
    stop: StopAt,
    report: &mut MeterReport,
) -> Result<(), Failure> {
    let store = &app.store;
    for _ in 0..MAX_BATCHES_PER_SHARD {
        let watermark = store.meter_watermark(shard).await?;
        let (mut batch, version) = match watermark.pending {
            Some(pending) => {
                report.resent += 1;
                (pending, watermark.version)
            }
            None => {
                let settle_ms = i64::try_from(app.config.meter_settle.as_millis()).unwrap_or(0);
                let before = format!("{:015}", now_ms().saturating_sub(settle_ms));
                let records = store
                    .metered_records(shard, &watermark.after, &before, BATCH_RECORDS)
                    .await?;
                let Some(batch) = batch_of(shard, &watermark.after, &records) else {
                    return Ok(());
                };
                (batch, watermark.version)
            }
        };
        // Saved before anything is sent (with the attempt counted): a crash from here on
        // resends this very batch.
        batch.attempts = batch.attempts.saturating_add(1);
        if !store.save_meter_batch(shard, version, &batch).await? {
            // Another run moved first: read again.
            continue;
        }
        let version = version + 1;
        let sent = send(app, &mut batch, report).await;
        if let Err(err) = sent {
            // What Stripe has is remembered, so that only the rest is sent again.
            store.save_meter_batch(shard, version, &batch).await.ok();
            return Err(err);
        }
        if stop == StopAt::AfterFirstSend {
            return Err(Failure::Unavailable(
                "stopped after sending, before the watermark moved".into(),
            ));
        }
        if store.confirm_meter_batch(shard, version, &batch.to).await? {
            report.batches += 1;
            report.units += batch
                .events
                .iter()
                .filter(|e| e.parked.is_none())
                .map(|e| e.value)
                .sum::<i64>();
        }
    }
    Ok(())
}

async fn send(
    app: &App,
    batch: &mut PendingBatch,
    report: &mut MeterReport,
) -> Result<(), Failure> {
    let attempt = batch.attempts;
    for event in batch
        .events
        .iter_mut()
        .filter(|e| !e.acknowledged && e.parked.is_none())
    {
        let scope = Scope::from_key_prefix(&event.scope_prefix, app.config.default_mode)
            .ok_or_else(|| Failure::Internal("a metered record has an unknown scope".into()))?;
        let stripe = app.stripe_for(&scope).await?;
        let sent = stripe
            .send_meter_event(&MeterEventOut {
                event_name: &event.event_name,
                customer: &event.customer,
                value: event.value,
                identifier: &event.identifier,
                timestamp: event.timestamp,
                attempt,
            })
            .await?;
        report.events_sent += 1;
        match sent {
            MeterSent::Accepted | MeterSent::AlreadyRecorded => event.acknowledged = true,
            MeterSent::Refused(reason) => {
                tracing::error!(
                    identifier = %event.identifier,
                    event_name = %event.event_name,
                    customer = %event.customer,
                    value = event.value,
                    reason = %reason,
                    "Stripe refused a meter event; it is set aside"
                );
                report.parked += 1;
                event.parked = Some(reason);
            }
        }
    }
    Ok(())
}
