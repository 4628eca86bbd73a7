//! The functions that are not HTTP: reconciliation and the invariant check (EventBridge
//! schedules; a run that finds a broken invariant fails, so that the error metric alarms), the
//! stats counters and the billing events (both from the table's change stream).

use std::time::Duration;

use lambda_http::{Error, LambdaEvent};
use serde_json::{json, Value};

use crate::services::budget::Budget;
use crate::services::metering::StopAt;
pub use crate::services::streams::{count_stream_event, FailedRecord, StreamBatch};
use crate::services::Failure;
use crate::services::{ledger_check, reconcile};
use crate::App;

/// A scheduled job's failure: logged with its code and cause, and the run's error (so that the
/// function's error metric alarms), in words without the cause.
fn failed(what: &'static str) -> impl FnOnce(Failure) -> Error {
    move |err| {
        tracing::error!(code = err.code(), cause = %err.cause(), "{what}");
        Error::from(format!("{what}: {}", err.code()))
    }
}

/// How far back reconciliation looks when the event does not say (`{"windowHours": n}`).
const DEFAULT_WINDOW_HOURS: i64 = 72;

/// Time reconciliation keeps back from its deadline: a page in flight (each Stripe request
/// bounded by the client's timeouts), the credits of its intents and the cursor's save.
const RECONCILE_RESERVE: Duration = Duration::from_secs(20);

pub async fn reconcile_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let hours = event
        .payload
        .get("windowHours")
        .and_then(Value::as_i64)
        .filter(|h| (1..=24 * 30).contains(h))
        .unwrap_or(DEFAULT_WINDOW_HOURS);
    let budget = Budget::before_deadline_ms(event.context.deadline, RECONCILE_RESERVE);
    // Boxed: the future is deep enough to overflow the type layout limit of the binary crate.
    let report = Box::pin(reconcile::reconcile(app, hours * 3600, budget))
        .await
        .map_err(failed("reconciliation failed"))?;
    Ok(json!(report))
}

/// Time the ledger check keeps back from its deadline: a page's accounts in flight and the
/// cursor's save.
const CHECK_RESERVE: Duration = Duration::from_secs(30);

/// The ledger check (an EventBridge schedule): goes on with the pass in segments until the
/// deadline less a reserve; fails when it found an account or payment that does not add up
/// (so that its error alarm fires).
pub async fn invariants_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let budget = Budget::before_deadline_ms(event.context.deadline, CHECK_RESERVE);
    let report = ledger_check::check_ledger(
        app,
        ledger_check::Pass::Resume,
        budget,
        Duration::from_secs(1),
    )
    .await
    .map_err(failed("reading the ledger failed"))?;
    tracing::info!(
        pages = report.pages,
        accounts = report.accounts,
        reread = report.reread,
        busy = report.busy,
        broken = report.broken,
        complete = report.complete,
        "ledger check went on"
    );
    if report.is_clean() {
        Ok(json!(report))
    } else {
        Err(Error::from(format!(
            "{} ledger invariant violation(s)",
            report.broken
        )))
    }
}

impl StreamBatch {
    /// What the function answers Lambda (`ReportBatchItemFailures`): no failure, or the record
    /// to go on from, and Lambda retries from it. When the batch's first record fails, the
    /// answer is an error instead, so that Lambda halves the batch (`BisectBatchOnFunctionError`)
    /// until the failing record is alone: what still fails after the retries, and goes to the
    /// failure queue as a pointer, is that one record, and the records behind it keep flowing.
    /// A failed record without a sequence number fails the whole batch too.
    pub fn answer(self, function: &str) -> Result<Value, Error> {
        let Some(failed) = self.failed else {
            tracing::info!(function, figures = %self.figures, "stream batch done");
            return Ok(json!({ "batchItemFailures": [] }));
        };
        tracing::error!(
            function,
            figures = %self.figures,
            sequence = failed.sequence.as_deref().unwrap_or("none"),
            cause = %failed.cause,
            "a stream record failed; Lambda goes on from it"
        );
        match failed.sequence {
            Some(sequence) if !failed.first => {
                Ok(json!({ "batchItemFailures": [{ "itemIdentifier": sequence }] }))
            }
            Some(_) => Err(Error::from("the batch's first record failed")),
            None => Err(Error::from(
                "a stream record without a sequence number failed",
            )),
        }
    }

    /// The sequence number to go on from, as Lambda reads it from an answer.
    pub fn failed_sequence(answer: &Value) -> Option<&str> {
        answer["batchItemFailures"]
            .as_array()?
            .iter()
            .find_map(|item| item["itemIdentifier"].as_str())
    }
}

/// The stats function: a batch of the table's stream records (a DynamoDB Streams event source
/// mapping deployed; the local follower locally). Each record counts at most once, so the
/// records Lambda hands over again add nothing.
pub async fn stats_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    count_stream_event(app, &event.payload)
        .await
        .answer("stats")
}

/// The billing-events function: a batch of the table's stream records, published as billing
/// events to the bus in order. A record that fails stops the batch there; the events already
/// sent go again with the same ids when Lambda hands it over again.
pub async fn billing_events_job(
    app: &'static App,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    crate::services::events::publish_stream_event(app, &event.payload)
        .await
        .answer("billing-events")
}

/// Time the meter reporter keeps back from its deadline: a chunk of sends in flight (64 events,
/// 16 at once, each bounded by the Stripe call budget of 12 s: 48 s at worst) and the saves.
const METER_RESERVE: Duration = Duration::from_secs(60);

/// The share of a meter-usage run the settling of credits may take.
const EXPIRY_SHARE: Duration = Duration::from_secs(60);

/// The meter reporter (an EventBridge schedule): every usage lease that ended goes back to its
/// shard, then metered usage goes to Stripe's billing meters until the deadline less a reserve.
/// A run cut short saves its progress; the next run goes on from it.
pub async fn meter_usage_job(app: &'static App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let settled = crate::services::usage::settle_ended_leases(app).await;
    // Credits first, within a bounded share of the run: ended holds back, expired buckets out,
    // buckets about to expire warned of.
    let credits = crate::services::expiry::settle_due(app, &Budget::lasting(EXPIRY_SHARE)).await;
    let budget = Budget::before_deadline_ms(event.context.deadline, METER_RESERVE);
    let reported = crate::services::metering::report_usage(app, budget, StopAt::Never).await;
    let report = reported.map_err(failed("reporting metered usage failed"))?;
    let settled = settled.map_err(failed("settling usage leases failed"))?;
    let credits = credits.map_err(failed("settling credits failed"))?;
    tracing::info!(
        accounts = credits.settled,
        entries = credits.entries,
        warned = credits.warned,
        cut_short = credits.cut_short,
        "credits settled"
    );
    tracing::info!(
        batches = report.batches,
        events_sent = report.events_sent,
        resent = report.resent,
        held = report.held,
        holds_released = report.holds_released,
        holds_left = report.holds_left,
        units = report.units,
        records_stamped = report.records_stamped,
        complete = report.complete,
        leases_settled = settled,
        "metered usage reported"
    );
    let mut answer = json!(report);
    if let Some(map) = answer.as_object_mut() {
        map.insert("leasesSettled".into(), json!(settled));
        map.insert("credits".into(), json!(credits));
    }
    Ok(answer)
}

/// The webhook deliverer (an SQS queue of deliveries, each one event to one endpoint): every
/// message of the batch at once, each bounded by the endpoint timeout, so that a slow endpoint
/// never holds up another's delivery. A message whose part could not be done (the table, the
/// queue) is handed back to SQS (`batchItemFailures`); the rest are done.
pub async fn webhook_deliver_job(
    app: &'static App,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    Ok(deliver_webhook_batch(app, &event.payload).await)
}

/// The same for an SQS batch as Lambda hands it over (the local stack's queue reader too):
/// `{"batchItemFailures": [...]}`.
pub async fn deliver_webhook_batch(app: &App, payload: &Value) -> Value {
    let records: Vec<(String, String)> = payload
        .get("Records")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|record| {
            let text = |key: &str| {
                record
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (text("messageId"), text("body"))
        })
        .collect();
    let outcomes = futures_util::future::join_all(
        records
            .iter()
            .map(|(_, body)| crate::services::webhooks::deliver_message(app, body)),
    )
    .await;
    let failures: Vec<Value> = records
        .iter()
        .zip(outcomes)
        .filter_map(|((id, _), outcome)| match outcome {
            Ok(()) => None,
            Err(err) => {
                tracing::error!(code = err.code(), cause = %err.cause(), "webhook delivery handed back");
                Some(json!({ "itemIdentifier": id }))
            }
        })
        .collect();
    json!({ "batchItemFailures": failures })
}

#[cfg(test)]
mod stream_answer_tests {
    use super::*;

    fn batch(failed: Option<(Option<&str>, bool)>) -> StreamBatch {
        StreamBatch {
            figures: json!({}),
            failed: failed.map(|(sequence, first)| FailedRecord {
                sequence: sequence.map(str::to_owned),
                first,
                cause: "a cause".into(),
            }),
        }
    }

    #[test]
    fn lambda_goes_on_from_a_later_record_and_halves_a_batch_whose_first_record_fails() {
        assert_eq!(
            batch(None).answer("stats").expect("done"),
            json!({"batchItemFailures": []})
        );
        assert_eq!(
            batch(Some((Some("300"), false)))
                .answer("stats")
                .expect("partial"),
            json!({"batchItemFailures": [{"itemIdentifier": "300"}]})
        );
        // The first record: an error, so that Lambda bisects the batch down to that record.
        assert!(batch(Some((Some("100"), true))).answer("stats").is_err());
        assert!(batch(Some((None, false))).answer("stats").is_err());
    }
}
