//! Reporting metered usage to Stripe (the scheduled meter reporter). Per meter shard:
//!
//! 1. read the watermark; a batch left pending by an earlier run is sent again as it was saved
//!    (same identifiers, same values: Stripe counts it once; what Stripe already acknowledged is
//!    not sent again);
//! 2. otherwise read the records after the watermark that are old enough to be settled, decide
//!    the batch (`domain::metering::batch_of`) and save it as pending before sending anything;
//! 3. send its meter events, a bounded number at once, saving what Stripe acknowledged after
//!    every chunk; events Stripe certainly did not take (a refused key, a project with no key,
//!    an event refused) go to their project's holds;
//! 4. move the watermark to the batch's end and drop it; stamp the billed records' expiry.
//!
//! A crash or a failed send between 2 and 4 leaves the batch pending, so nothing is skipped and
//! nothing is counted twice. Two runs at once cannot both save a batch: each write is
//! conditioned on the watermark's version.
//!
//! A run watches its deadline: it starts no chunk it cannot finish, saves its progress and
//! ends; the next run goes on from there. It visits the shards round the ring, one batch each
//! per round, starting where the last run stopped, so no shard waits behind another. Held
//! events are tried again first on every run: one project's broken key or configuration holds
//! only that project's events (alarmed through the `MeterEventsHeld` metric), and they are
//! billed, once, on the first run after it is fixed.

use std::collections::{BTreeMap, HashMap};

use futures_util::{stream, StreamExt};
use serde::Serialize;

use crate::adapters::stripe::{MeterEventOut, MeterSent, StripeApi, StripeFailure};
use crate::domain::metering::{batch_of, rotation, PendingBatch, PendingEvent, METER_SHARDS};
use crate::domain::records::now_ms;
use crate::domain::scope::Scope;
use crate::services::budget::Budget;
use crate::services::Failure;
use crate::App;

/// Records read per batch.
const BATCH_RECORDS: i32 = 500;
/// Meter events in flight at once (Stripe's live-mode limit is documented per account; see
/// docs/operations.md, Capacity).
pub const SEND_CONCURRENCY: usize = 16;
/// Events sent between two saves of a batch's progress.
const CHUNK: usize = 4 * SEND_CONCURRENCY;
/// Held events of one scope read per run.
const HOLDS_PER_SCOPE: usize = 5_000;
/// Attempts of a batch after which an event whose earlier send had no answer, refused now, is
/// held rather than keeping the batch pending.
const UNCERTAIN_ATTEMPTS: u32 = 3;
/// Refusals in a row after which a scope's held events wait for the next run.
const PROBE_REFUSALS: usize = 3;

/// The attempt a held event is sent with: a new one each time it is tried again, so that its
/// idempotency key is new (Stripe certainly did not take it) while its identifier stays.
fn hold_attempt(tries: i64) -> u32 {
    u32::try_from(tries.saturating_add(1_000)).unwrap_or(u32::MAX)
}
/// Billed records stamped with their expiry per step of a shard.
const STAMP_RECORDS: i32 = 1_000;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MeterReport {
    /// Batches sent and confirmed.
    pub batches: usize,
    /// Meter events sent (a pending batch resent counts again).
    pub events_sent: usize,
    /// Batches found pending from an earlier run and resent.
    pub resent: usize,
    /// Units Stripe took in the batches this run confirmed (held events not counted).
    pub units: i64,
    /// Events of this run's batches moved to their project's holds.
    pub held: usize,
    /// Held events Stripe took this run (each once: they leave the holds).
    pub holds_released: usize,
    /// Events still held after the run (the `MeterEventsHeld` metric).
    pub holds_left: usize,
    /// Billed records given their expiry.
    pub records_stamped: usize,
    /// Every shard was caught up and every held event tried (false: the deadline came first,
    /// or a shard failed; the next run goes on).
    pub complete: bool,
}

/// Where a run stops on purpose (tests of a crash between sending and saving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    Never,
    /// After the first chunk is sent, before anything is saved: as if the process died.
    AfterFirstSend,
}

/// What one step of a shard came to.
enum Step {
    /// The shard may have more: visit it again next round.
    More,
    /// Caught up.
    Done,
    /// The deadline came: progress saved.
    OutOfTime,
}

/// How sending a batch's events ended.
enum Sent {
    /// Every event acknowledged or held.
    Finished,
    OutOfTime,
    /// A send whose outcome is unknown (a timeout, a 5xx): the batch stays pending.
    Unknown(Failure),
    /// `StopAt::AfterFirstSend`.
    Crashed,
    /// Another run took the shard over (its version moved): this run leaves it.
    Lost,
}

/// A project's Stripe client for this run, or why its events cannot go.
type Client = Result<StripeApi, String>;

/// What sending one event came to: Stripe's answer, or why it was not sent.
type Answer = Result<Result<MeterSent, StripeFailure>, String>;

type BoxedSend<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Answer)> + Send + 'a>>;

struct Run<'a> {
    app: &'a App,
    budget: Budget,
    stop: StopAt,
    report: MeterReport,
    /// Per scope key prefix: its client, or the reason it is broken this run (its first
    /// refused key or missing configuration: its other events are held without being sent).
    clients: HashMap<String, Client>,
}

/// Reports every settled metered record to Stripe, within `budget`. Each shard goes on when
/// another fails; the run fails at the end if any did (so that the function's error metric
/// alarms).
pub async fn report_usage(app: &App, budget: Budget, stop: StopAt) -> Result<MeterReport, Failure> {
    let mut run = Run {
        app,
        budget,
        stop,
        report: MeterReport::default(),
        clients: HashMap::new(),
    };
    let mut failed: Option<Failure> = None;
    let holds_done = match run.retry_holds().await {
        Ok(done) => done,
        Err(err) => {
            tracing::error!(code = err.code(), cause = %err.cause(), "held meter events could not be tried again");
            failed = Some(err);
            false
        }
    };
    let start = app.store.meter_cursor().await?;
    let mut active = rotation(start, METER_SHARDS);
    let mut resume_at = None;
    'rounds: while !active.is_empty() {
        let mut again = Vec::new();
        for shard in active {
            if resume_at.is_some() {
                break 'rounds;
            }
            if run.budget.out(run.report.events_sent) {
                resume_at = Some(shard);
                break 'rounds;
            }
            match run.step(shard).await {
                Ok(Step::More) => again.push(shard),
                Ok(Step::Done) => {}
                Ok(Step::OutOfTime) => resume_at = Some(shard),
                Err(err) => {
                    if stop == StopAt::AfterFirstSend {
                        return Err(err);
                    }
                    tracing::error!(shard, code = err.code(), cause = %err.cause(), "a meter shard could not be reported");
                    failed.get_or_insert(err);
                }
            }
        }
        active = again;
    }
    // The next run starts at the shard this one could not finish, or one further round.
    let next = resume_at.unwrap_or(start.wrapping_add(1)) % METER_SHARDS;
    app.store.save_meter_cursor(next).await?;
    run.report.complete = resume_at.is_none() && holds_done && failed.is_none();
    // Counted and published on every run, a failed one too, so that the alarm sees them.
    match app.store.count_meter_holds().await {
        Ok(count) => {
            run.report.holds_left = count;
            crate::telemetry::meter_events_held(count);
        }
        Err(err) => {
            tracing::error!(error = %err, "held meter events could not be counted");
            failed.get_or_insert(err.into());
        }
    }
    if run.report.holds_left > 0 {
        let broken: BTreeMap<&str, &str> = run
            .clients
            .iter()
            .filter_map(|(scope, c)| c.as_ref().err().map(|r| (scope.as_str(), r.as_str())))
            .collect();
        tracing::error!(
            held = run.report.holds_left,
            broken_scopes = ?broken,
            "meter events are held: their projects' usage is not billed until they are fixed"
        );
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(run.report),
    }
}

impl Run<'_> {
    /// The client of a scope for this run, read once (a broken scope stays broken this run).
    async fn client(&mut self, scope_prefix: &str) -> Client {
        if let Some(client) = self.clients.get(scope_prefix) {
            return client.clone();
        }
        let client = match Scope::from_key_prefix(scope_prefix, self.app.config.default_mode) {
            None => Err("a metered record names an unknown scope".to_owned()),
            Some(scope) => self
                .app
                .stripe_for(&scope)
                .await
                .map_err(|err| format!("no Stripe client: {err}")),
        };
        self.clients.insert(scope_prefix.to_owned(), client.clone());
        client
    }

    /// Marks a scope broken for the rest of the run.
    fn broken(&mut self, scope_prefix: &str, reason: &str) {
        self.clients
            .insert(scope_prefix.to_owned(), Err(reason.to_owned()));
    }

    /// Sends each event (with the attempt its idempotency key names) with its scope's client,
    /// `SEND_CONCURRENCY` at once: per event, what Stripe answered, or why it was not sent (its
    /// scope is broken this run).
    async fn send_all(&mut self, events: &[(&PendingEvent, u32)]) -> Vec<Answer> {
        let mut clients = Vec::with_capacity(events.len());
        for (event, _) in events {
            clients.push(self.client(&event.scope_prefix).await);
        }
        // Boxed: a stream of borrowing futures is otherwise not `Send` for every lifetime.
        let sends: Vec<BoxedSend<'_>> = events
            .iter()
            .zip(clients)
            .enumerate()
            .map(|(i, ((event, attempt), client))| -> BoxedSend<'_> {
                let attempt = *attempt;
                Box::pin(async move {
                    let answer = match client {
                        Err(reason) => Err(reason),
                        Ok(client) => Ok(client
                            .send_meter_event(&MeterEventOut {
                                event_name: &event.event_name,
                                customer: &event.customer,
                                value: event.value,
                                identifier: &event.identifier,
                                timestamp: event.timestamp,
                                attempt,
                            })
                            .await),
                    };
                    (i, answer)
                })
            })
            .collect();
        let mut answers = stream::iter(sends)
            .buffer_unordered(SEND_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        answers.sort_by_key(|(i, _)| *i);
        let answers: Vec<Answer> = answers.into_iter().map(|(_, a)| a).collect();
        self.report.events_sent += answers.iter().filter(|a| a.is_ok()).count();
        for ((event, _), answer) in events.iter().zip(&answers) {
            if let Ok(Ok(MeterSent::KeyRefused(reason))) = answer {
                self.broken(
                    &event.scope_prefix,
                    &format!("Stripe refused the key: {reason}"),
                );
            }
        }
        answers
    }

    /// Tries the held events again, scope by scope: the first held event of a scope alone, and
    /// when Stripe takes it, the scope's others (each with a fresh idempotency key: Stripe
    /// keeps a key's first answer, and Stripe certainly did not take a held event). A scope
    /// still broken costs one call a run. `false` when the deadline came first.
    async fn retry_holds(&mut self) -> Result<bool, Failure> {
        let store = &self.app.store;
        for (scope_prefix, seen) in store.meter_hold_scopes().await? {
            if self.budget.out(self.report.events_sent) {
                return Ok(false);
            }
            let mut holds = store.meter_holds(&scope_prefix, HOLDS_PER_SCOPE).await?;
            // The least recently tried first: a few that Stripe keeps refusing go to the back.
            holds.sort_by_key(|h| (h.tried_at_ms, h.held_at_ms));
            if holds.is_empty() {
                store.forget_hold_scope(&scope_prefix, seen).await?;
                continue;
            }
            let mut position = 0;
            let mut refused_in_a_row = 0;
            while position < holds.len() {
                if self.budget.out(self.report.events_sent) {
                    return Ok(false);
                }
                if self.clients.get(&scope_prefix).is_some_and(Result::is_err) {
                    break;
                }
                // The first alone (a probe), then chunks; after a refusal, one by one.
                let size = if position == 0 || refused_in_a_row > 0 {
                    1
                } else {
                    CHUNK
                };
                let room = size
                    .min(self.budget.sends_left(self.report.events_sent))
                    .max(1);
                let end = holds.len().min(position + room);
                let chunk: Vec<(&PendingEvent, u32)> = holds[position..end]
                    .iter()
                    .map(|h| (&h.event, hold_attempt(h.tries)))
                    .collect();
                let answers = self.send_all(&chunk).await;
                let mut unknown = false;
                for ((event, _), answer) in chunk.iter().zip(answers) {
                    match answer {
                        Ok(Ok(MeterSent::Accepted | MeterSent::AlreadyRecorded)) => {
                            store
                                .release_meter_hold(&scope_prefix, &event.identifier)
                                .await?;
                            self.report.holds_released += 1;
                            refused_in_a_row = 0;
                        }
                        Ok(Ok(MeterSent::Refused(reason) | MeterSent::KeyRefused(reason))) => {
                            store
                                .note_meter_hold_refused(&scope_prefix, &event.identifier, &reason)
                                .await?;
                            refused_in_a_row += 1;
                        }
                        // Not sent: its scope is broken this run.
                        Err(_) => {}
                        Ok(Err(err)) => {
                            tracing::warn!(identifier = %event.identifier, error = %err, "a held meter event could not be sent; tried again next run");
                            // A new key next time: Stripe may keep even a failure for a key.
                            store
                                .note_meter_hold_refused(
                                    &scope_prefix,
                                    &event.identifier,
                                    &format!("no answer: {err}"),
                                )
                                .await?;
                            unknown = true;
                        }
                    }
                }
                // A scope whose events Stripe keeps refusing (an unknown meter), or did not
                // answer, waits for the next run.
                if unknown || refused_in_a_row >= PROBE_REFUSALS {
                    break;
                }
                position = end;
            }
        }
        Ok(true)
    }

    /// One batch of a shard (or, when it has none, stamping its billed records).
    async fn step(&mut self, shard: usize) -> Result<Step, Failure> {
        let store = &self.app.store;
        let watermark = store.meter_watermark(shard).await?;
        let (mut batch, mut version) = match watermark.pending {
            Some(pending) => {
                self.report.resent += 1;
                (pending, watermark.version)
            }
            None => {
                let settle_ms =
                    i64::try_from(self.app.config.meter_settle.as_millis()).unwrap_or(0);
                let before = format!("{:015}", now_ms().saturating_sub(settle_ms));
                let records = store
                    .metered_records(shard, &watermark.after, &before, BATCH_RECORDS)
                    .await?;
                let Some(batch) = batch_of(shard, &watermark.after, &records) else {
                    // Caught up: what was billed before and not yet stamped is stamped now.
                    let stamped = store
                        .stamp_billed_records(
                            shard,
                            &watermark.stamped,
                            &watermark.after,
                            STAMP_RECORDS,
                        )
                        .await?;
                    self.report.records_stamped += stamped;
                    return Ok(if stamped == usize::try_from(STAMP_RECORDS).unwrap_or(0) {
                        Step::More
                    } else {
                        Step::Done
                    });
                };
                (batch, watermark.version)
            }
        };
        // Saved before anything is sent (with the attempt counted): a crash from here on
        // resends this very batch.
        batch.attempts = batch.attempts.saturating_add(1);
        if !store.save_meter_batch(shard, version, &batch).await? {
            // Another run moved first: read again next round.
            return Ok(Step::More);
        }
        version += 1;
        match self.send_batch(&mut batch, shard, &mut version).await? {
            Sent::Finished => {}
            Sent::OutOfTime => return Ok(Step::OutOfTime),
            Sent::Crashed => {
                return Err(Failure::Unavailable(
                    "stopped after sending, before the watermark moved".into(),
                ))
            }
            Sent::Unknown(err) => return Err(err),
            Sent::Lost => return Ok(Step::Done),
        }
        // Held events are kept before the watermark moves past their records.
        let held: Vec<&PendingEvent> = batch.events.iter().filter(|e| e.held.is_some()).collect();
        store.hold_meter_events(&held).await?;
        if store.confirm_meter_batch(shard, version, &batch.to).await? {
            self.report.batches += 1;
            self.report.held += held.len();
            self.report.units += batch
                .events
                .iter()
                .filter(|e| e.acknowledged)
                .map(|e| e.value)
                .sum::<i64>();
            self.report.records_stamped += store
                .stamp_billed_records(shard, &watermark.stamped, &batch.to, STAMP_RECORDS)
                .await?;
        }
        Ok(Step::More)
    }

    /// Sends the batch's events not yet acknowledged or held, chunk by chunk, saving its
    /// progress after each chunk.
    async fn send_batch(
        &mut self,
        batch: &mut PendingBatch,
        shard: usize,
        version: &mut i64,
    ) -> Result<Sent, Failure> {
        let attempt = batch.attempts;
        loop {
            let todo: Vec<usize> = (0..batch.events.len())
                .filter(|&i| !batch.events[i].acknowledged && batch.events[i].held.is_none())
                .collect();
            if todo.is_empty() {
                return Ok(Sent::Finished);
            }
            if self.budget.out(self.report.events_sent) {
                return Ok(if self.save_progress(batch, shard, version).await? {
                    Sent::OutOfTime
                } else {
                    Sent::Lost
                });
            }
            let size = CHUNK.min(self.budget.sends_left(self.report.events_sent));
            let chunk = &todo[..size.min(todo.len())];
            let events: Vec<PendingEvent> =
                chunk.iter().map(|&i| batch.events[i].clone()).collect();
            let refs: Vec<(&PendingEvent, u32)> = events.iter().map(|e| (e, attempt)).collect();
            let answers = self.send_all(&refs).await;
            if self.stop == StopAt::AfterFirstSend {
                return Ok(Sent::Crashed);
            }
            let mut unknown = None;
            for (&i, answer) in chunk.iter().zip(answers) {
                let event = &mut batch.events[i];
                match answer {
                    Ok(Ok(MeterSent::Accepted | MeterSent::AlreadyRecorded)) => {
                        event.acknowledged = true;
                    }
                    Ok(Ok(MeterSent::Refused(reason) | MeterSent::KeyRefused(reason)))
                        if !event.uncertain =>
                    {
                        tracing::error!(
                            identifier = %event.identifier,
                            event_name = %event.event_name,
                            customer = %event.customer,
                            value = event.value,
                            reason = %reason,
                            "Stripe refused a meter event; it is held for its project"
                        );
                        event.held = Some(reason);
                    }
                    Err(reason) if !event.uncertain => {
                        event.held = Some(format!("not sent: {reason}"));
                    }
                    // Stripe may have it from an earlier send. Past a few attempts it is held
                    // (its identifier kept, so that Stripe, if it has it, says so), lest one
                    // project's broken key hold the whole shard back.
                    Ok(Ok(MeterSent::Refused(reason) | MeterSent::KeyRefused(reason)))
                    | Err(reason)
                        if attempt >= UNCERTAIN_ATTEMPTS =>
                    {
                        tracing::error!(
                            identifier = %event.identifier,
                            reason = %reason,
                            "a meter event Stripe may have from an earlier send is held for its project"
                        );
                        event.held = Some(format!(
                            "{reason} (an earlier send had no answer: Stripe may have it)"
                        ));
                    }
                    // Stripe may have it from an earlier send: it stays in the batch, resent
                    // with its identifier by the next run.
                    Ok(Ok(MeterSent::Refused(reason) | MeterSent::KeyRefused(reason)))
                    | Err(reason) => {
                        unknown.get_or_insert(Failure::Stripe(format!(
                            "a meter event whose earlier send had no answer was not taken now: {reason}"
                        )));
                    }
                    Ok(Err(err)) => {
                        event.uncertain = true;
                        unknown.get_or_insert(Failure::from(err));
                    }
                }
            }
            if !self.save_progress(batch, shard, version).await? {
                return Ok(Sent::Lost);
            }
            if let Some(err) = unknown {
                return Ok(Sent::Unknown(err));
            }
        }
    }

    /// Saves what Stripe acknowledged so far (the batch stays pending). `false`: another run
    /// took the shard over.
    async fn save_progress(
        &self,
        batch: &PendingBatch,
        shard: usize,
        version: &mut i64,
    ) -> Result<bool, Failure> {
        let saved = self
            .app
            .store
            .save_meter_batch(shard, *version, batch)
            .await?;
        if saved {
            *version += 1;
        }
        Ok(saved)
    }
}
