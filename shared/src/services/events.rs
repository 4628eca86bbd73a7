//! Billing events out: the table's stream (committed changes only) is read by the publisher
//! function, each change is turned into the events it means (`domain::events`), and they go to
//! the EventBridge bus. Nothing on the payment or usage path publishes, so an event is never sent
//! for a write that did not commit, and a write that committed is in the stream. A record that
//! fails is retried a bounded number of times, then parked (a pointer in the failure queue, for
//! `coffer-dev replay-parked`) while the records behind it go on. Each event's id is derived
//! from the stream record, so a retried or replayed record sends the same ids again and
//! subscribers drop the repeats.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::adapters::events::{OutgoingEvent, ENTRIES_PER_CALL};
use crate::adapters::store::{get_s, payment_from_item, split_scope, Fields, Item, StreamRecord};
use crate::domain::events::{
    balance_events, duplicate_subscription_events, invoice_events, limit_events, payment_events,
    subscription_events, tier_events, DomainEvent,
};
use crate::domain::records::{now_ms, rfc3339};
use crate::domain::scope::Scope;
use crate::domain::subscriptions::SubscriptionState;
use crate::services::streams::{FailedRecord, StreamBatch};
use crate::services::Failure;
use crate::App;

/// What one stream record means, before thresholds: the events, or a balance change that
/// needs the scope's threshold.
enum Meaning {
    Events(Vec<DomainEvent>),
    Balance {
        account: String,
        old: i64,
        new: i64,
        currency: String,
    },
}

fn subscription_doc(item: Option<&Item>) -> Option<SubscriptionState> {
    let doc = get_s(item?, "doc")?;
    serde_json::from_str(doc).ok()
}

/// The events one change means, by the kind of item it changed.
fn meaning(record: &StreamRecord) -> Option<(String, Meaning)> {
    let image = record.new.as_ref().or(record.old.as_ref())?;
    let (pk, sk) = (get_s(image, "pk")?, get_s(image, "sk")?);
    let (prefix, rest) = split_scope(pk);
    let new = record.new.as_ref()?;
    let old = record.old.as_ref();
    let events = match (sk, rest) {
        ("SUB", rest) if rest.starts_with("ACCT#") => {
            let account = rest.strip_prefix("ACCT#")?;
            let state = subscription_doc(Some(new))?;
            subscription_events(account, subscription_doc(old).as_ref(), &state)
        }
        ("TIER", rest) if rest.starts_with("ACCT#") => {
            let account = rest.strip_prefix("ACCT#")?;
            tier_events(
                account,
                old.and_then(|o| get_s(o, "planId")),
                get_s(new, "planId"),
            )
        }
        ("PAY", rest) if rest.starts_with("PAY#") => {
            let payment = payment_from_item(new).ok()?;
            let before = old
                .and_then(|o| payment_from_item(o).ok())
                .map(|p| p.status);
            payment_events(before, &payment)
        }
        ("INV", rest) if rest.starts_with("INV#") => {
            let f = Fields::of(new);
            let account = f.text("account").ok()?;
            let data = json!({
                "invoiceId": rest.strip_prefix("INV#"),
                "subscriptionId": f.opt_text("subscriptionId").ok().flatten(),
                "planId": f.opt_text("planId").ok().flatten(),
                "amount": f.opt_int("amount").ok().flatten(),
                "currency": f.opt_text("currency").ok().flatten(),
            });
            invoice_events(
                account,
                old.and_then(|o| get_s(o, "status")),
                f.text("status").ok()?,
                data,
            )
        }
        ("BALANCE", rest) if rest.starts_with("USER#") => {
            let balance = |item: Option<&Item>| {
                item.and_then(|i| Fields::of(i).int("balance").ok())
                    .unwrap_or(0)
            };
            return Some((
                prefix.to_owned(),
                Meaning::Balance {
                    account: rest.strip_prefix("USER#")?.to_owned(),
                    old: balance(old),
                    new: balance(Some(new)),
                    currency: get_s(new, "currency").unwrap_or_default().to_owned(),
                },
            ));
        }
        ("DUPSUB", rest) if rest.starts_with("DUP#") && old.is_none() => {
            let f = Fields::of(new);
            duplicate_subscription_events(
                f.text("account").ok()?,
                f.text("subscriptionId").ok()?,
                f.text("keptSubscriptionId").ok()?,
                f.int("refunded").ok()?,
                f.text("currency").ok()?,
            )
        }
        ("LIMIT", rest) if rest.starts_with("LIMIT#") && old.is_none() => {
            let f = Fields::of(new);
            limit_events(
                f.text("account").ok()?,
                f.text("metric").ok()?,
                f.text("period").ok()?,
                f.int("limit").ok()?,
            )
        }
        _ => return None,
    };
    Some((prefix.to_owned(), Meaning::Events(events)))
}

/// The event as subscribers read it, with an id that is the same whenever this record is read.
fn outgoing(
    scope: &Scope,
    record: &StreamRecord,
    index: usize,
    event: DomainEvent,
) -> OutgoingEvent {
    let name = event.kind.name();
    let id = crate::domain::idempotency::billing_event(&record.event_id, name, index);
    let time_secs = record.created_at_secs.unwrap_or_else(|| now_ms() / 1000);
    OutgoingEvent {
        detail_type: name.to_owned(),
        time_secs,
        detail: json!({
            "id": id,
            "type": name,
            "project": scope.project.as_str(),
            "mode": scope.mode.as_str(),
            "account": event.account,
            "occurredAt": rfc3339(time_secs.saturating_mul(1000)),
            "data": event.data,
        }),
    }
}

/// Every event one stream record means, in order. `thresholds` keeps each scope's low-credit
/// threshold for the rest of the batch.
async fn events_of_record(
    app: &App,
    record: &StreamRecord,
    thresholds: &mut HashMap<String, Option<i64>>,
) -> Result<Vec<OutgoingEvent>, Failure> {
    let Some((prefix, meaning)) = meaning(record) else {
        return Ok(Vec::new());
    };
    let Some(scope) = Scope::from_key_prefix(&prefix, app.config.default_mode) else {
        return Ok(Vec::new());
    };
    let events = match meaning {
        Meaning::Events(events) => events,
        Meaning::Balance {
            account,
            old,
            new,
            currency,
        } => {
            let threshold = match thresholds.get(&prefix) {
                Some(known) => *known,
                None => {
                    let settings = app.store_for(&scope).settings().await?;
                    let threshold = settings.and_then(|s| s.credits_low_threshold);
                    thresholds.insert(prefix.clone(), threshold);
                    threshold
                }
            };
            // The threshold is in the deployment's currency: another currency's balance is
            // only ever depleted.
            let threshold = threshold.filter(|_| currency == app.config.default_currency.as_str());
            balance_events(&account, old, new, threshold, &currency)
        }
    };
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(index, event)| outgoing(&scope, record, index, event))
        .collect())
}

/// Publishes what a stream event (a Lambda DynamoDB Streams batch) means, record by record in
/// order, and stops at the first record whose events cannot be made or sent: the records before
/// it are done. Without a bus configured it publishes nothing.
pub async fn publish_stream_event(app: &App, event: &Value) -> StreamBatch {
    let records = crate::adapters::store::records_from_event(event);
    let Some(bus) = app.events.as_ref() else {
        return StreamBatch {
            figures: json!({ "records": records.len(), "published": 0 }),
            failed: None,
        };
    };
    let mut thresholds = HashMap::new();
    // Each event, and the index of the record it comes from.
    let (mut events, mut origins) = (Vec::new(), Vec::new());
    let mut failed: Option<(usize, String)> = None;
    for (index, record) in records.iter().enumerate() {
        match events_of_record(app, record, &mut thresholds).await {
            Ok(made) => {
                origins.extend(std::iter::repeat_n(index, made.len()));
                events.extend(made);
            }
            Err(err) => {
                failed = Some((index, format!("{}: {}", err.code(), err.cause())));
                break;
            }
        }
    }
    let mut published = 0;
    for (chunk, from) in events
        .chunks(ENTRIES_PER_CALL)
        .zip(origins.chunks(ENTRIES_PER_CALL))
    {
        if let Err(err) = bus.publish(chunk).await {
            // Every event of the records before this chunk's first record went out; that
            // record's are sent again (same ids) when the batch goes on from it.
            failed = Some((from[0], err.to_string()));
            break;
        }
        published += chunk.len();
    }
    if published > 0 {
        let kinds: Vec<&str> = events[..published]
            .iter()
            .map(|e| e.detail_type.as_str())
            .collect();
        tracing::info!(records = records.len(), published, kinds = ?kinds, "billing events published");
    }
    StreamBatch {
        figures: json!({ "records": records.len(), "published": published }),
        failed: failed.map(|(index, cause)| FailedRecord {
            sequence: records[index].sequence.clone(),
            first: index == 0,
            cause,
        }),
    }
}
