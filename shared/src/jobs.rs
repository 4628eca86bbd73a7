//! The functions that are not HTTP: reconciliation and the invariant check (EventBridge
//! schedules; a run that finds a broken invariant fails, so that the error metric alarms), the
//! stats counters and the billing events (both from the table's change stream).

use lambda_http::{Error, LambdaEvent};
use serde_json::{json, Value};

use crate::domain::invariants;
use crate::http::error_chain;
use crate::{reconcile, App};

/// How far back reconciliation looks when the event does not say (`{"windowHours": n}`).
const DEFAULT_WINDOW_HOURS: i64 = 72;

pub async fn reconcile_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let hours = event
        .payload
        .get("windowHours")
        .and_then(Value::as_i64)
        .filter(|h| (1..=24 * 30).contains(h))
        .unwrap_or(DEFAULT_WINDOW_HOURS);
    // Boxed: the future is deep enough to overflow the type layout limit of the binary crate.
    let report = Box::pin(reconcile::reconcile(app, hours * 3600))
        .await
        .map_err(|err| {
            tracing::error!(code = err.code(), cause = %err.cause(), "reconciliation failed");
            Error::from(format!("reconciliation failed: {}", err.code()))
        })?;
    Ok(json!(report))
}

pub async fn invariants_job(app: &'static App, _event: LambdaEvent<Value>) -> Result<Value, Error> {
    let snapshot = app.store.scan_ledger().await.map_err(|err| {
        let cause = error_chain(&err);
        tracing::error!(cause = %cause, "reading the ledger failed");
        Error::from("reading the ledger failed")
    })?;
    let report = invariants::check(&snapshot);
    if report.is_clean() {
        tracing::info!(
            users = report.users,
            payments = report.payments,
            entries = report.entries,
            "ledger invariants hold"
        );
        Ok(json!(report))
    } else {
        for violation in &report.violations {
            tracing::error!(violation = %violation, "ledger invariant broken");
        }
        Err(Error::from(format!(
            "{} ledger invariant violation(s)",
            report.violations.len()
        )))
    }
}

/// The stats function: a batch of the table's stream records (a DynamoDB Streams event source
/// mapping deployed; the local poller locally). Each record counts at most once; a failure fails
/// the batch, which Lambda retries, and the records already counted add nothing then.
pub async fn stats_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    count_stream_event(app, &event.payload)
        .await
        .map_err(|err| {
            tracing::error!(cause = %error_chain(&err), "counting stream records failed");
            Error::from("counting stream records failed")
        })
}

/// Counts every record of a stream event; the figures of the batch.
pub async fn count_stream_event(
    app: &App,
    event: &Value,
) -> Result<Value, crate::adapters::store::StoreError> {
    use crate::adapters::store::{records_from_event, StatsOutcome};
    let records = records_from_event(event);
    let (mut counted, mut repeated) = (0, 0);
    for record in &records {
        match app.store.count_stream_record(record).await? {
            StatsOutcome::Counted => counted += 1,
            StatsOutcome::AlreadyCounted => repeated += 1,
            StatsOutcome::Nothing => {}
        }
    }
    tracing::info!(
        records = records.len(),
        counted,
        repeated,
        "stream batch counted"
    );
    Ok(json!({ "records": records.len(), "counted": counted, "alreadyCounted": repeated }))
}

/// The billing-events function: a batch of the table's stream records, published as billing
/// events to the bus. A failure fails the batch, which Lambda retries; the events already sent
/// go again with the same ids.
pub async fn billing_events_job(
    app: &'static App,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    crate::services::events::publish_stream_event(app, &event.payload)
        .await
        .map_err(|err| {
            tracing::error!(code = err.code(), cause = %err.cause(), "publishing billing events failed");
            Error::from("publishing billing events failed")
        })
}

/// The meter reporter (an EventBridge schedule): metered usage to Stripe's billing meters, then
/// every usage lease that ended goes back to its shard. A failed run leaves its batch pending;
/// the next run sends what Stripe does not have yet with the same identifiers.
pub async fn meter_usage_job(
    app: &'static App,
    _event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let reported =
        crate::services::metering::report_usage(app, crate::services::metering::StopAt::Never)
            .await;
    let settled = crate::services::usage::settle_ended_leases(app).await;
    let report = reported.map_err(|err| {
        tracing::error!(code = err.code(), cause = %err.cause(), "reporting metered usage failed");
        Error::from("reporting metered usage failed")
    })?;
    let settled = settled.map_err(|err| {
        tracing::error!(code = err.code(), cause = %err.cause(), "settling usage leases failed");
        Error::from("settling usage leases failed")
    })?;
    tracing::info!(
        batches = report.batches,
        events_sent = report.events_sent,
        resent = report.resent,
        parked = report.parked,
        units = report.units,
        leases_settled = settled,
        "metered usage reported"
    );
    let mut answer = json!(report);
    if let Some(map) = answer.as_object_mut() {
        map.insert("leasesSettled".into(), json!(settled));
    }
    Ok(answer)
}
