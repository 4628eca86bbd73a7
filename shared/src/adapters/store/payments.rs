//! Payments: recording a new PaymentIntent with its idempotency key, crediting a succeeded one
//! exactly once, marking unpaid ones, flagging the ones an operator must look at, and the user's
//! history.

use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::codec::{
    get_s, history_from_item, n, payment_from_item, payment_to_item, s, Fields, Item,
};
use super::wallet::SETTLE_INLINE;
use super::{backoff, keys, IdempotencyRecord, Store, StoreError, CONFLICT_ATTEMPTS};
use crate::domain::buckets::{Step, Terms};
use crate::domain::ledger::EntryKind;
use crate::domain::ledger::{
    crediting_entries, decide_credit, status_of, ChargeEvent, CreditDecision, DisputeStep,
    PaidIntent, PaymentRecord,
};
use crate::domain::records::{now_ms, HistoryItem, PaymentStatus, UserId};

/// The bucket a payment's credits go to: its purchase's, or its invoice's included credits.
pub fn payment_bucket(payment: &PaymentRecord) -> String {
    if payment.is_included_grant() {
        format!("included:{}", payment.intent_id)
    } else {
        format!("purchase:{}", payment.intent_id)
    }
}

/// How long an `Idempotency-Key` is remembered (Stripe keeps its own for 24 h too).
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;

/// How long a refund or dispute event of an unknown intent is kept: longer than Stripe retries
/// the invoice event that would grant the credits it concerns (3 days).
const ORPHAN_EVENT_TTL_SECS: i64 = 35 * 24 * 60 * 60;

/// A charge event as an item's attributes, with a key that is the same for the same event.
fn charge_event_to_item(event: &ChargeEvent) -> (String, Item) {
    let mut item = Item::new();
    let key = match event {
        ChargeEvent::Refunded {
            amount,
            amount_refunded,
            currency,
            at,
        } => {
            item.insert("event".into(), s("refunded"));
            item.insert("amount".into(), n(*amount));
            item.insert("amountRefunded".into(), n(*amount_refunded));
            item.insert("currency".into(), s(currency));
            item.insert("at".into(), n(*at));
            format!("refunded:{amount_refunded}:{at}")
        }
        ChargeEvent::RefundFailed {
            refund_id,
            amount,
            at,
        } => {
            item.insert("event".into(), s("refund_failed"));
            item.insert("refundId".into(), s(refund_id));
            item.insert("amount".into(), n(*amount));
            item.insert("at".into(), n(*at));
            format!("refund_failed:{refund_id}")
        }
        ChargeEvent::Dispute {
            dispute_id,
            step,
            amount,
        } => {
            let step = match step {
                DisputeStep::Created => "created",
                DisputeStep::FundsWithdrawn => "funds_withdrawn",
                DisputeStep::FundsReinstated => "funds_reinstated",
            };
            item.insert("event".into(), s("dispute"));
            item.insert("disputeId".into(), s(dispute_id));
            item.insert("step".into(), s(step));
            if let Some(amount) = amount {
                item.insert("amount".into(), n(*amount));
            }
            format!("dispute:{dispute_id}:{step}")
        }
    };
    (key, item)
}

fn charge_event_from_item(item: &Item) -> Option<ChargeEvent> {
    let f = Fields::of(item);
    Some(match f.text("event").ok()? {
        "refunded" => ChargeEvent::Refunded {
            amount: f.int("amount").ok()?,
            amount_refunded: f.int("amountRefunded").ok()?,
            currency: f.text("currency").ok()?.to_owned(),
            at: f.int("at").ok()?,
        },
        "refund_failed" => ChargeEvent::RefundFailed {
            refund_id: f.text("refundId").ok()?.to_owned(),
            amount: f.int("amount").ok()?,
            at: f.int("at").ok()?,
        },
        "dispute" => ChargeEvent::Dispute {
            dispute_id: f.text("disputeId").ok()?.to_owned(),
            step: match f.text("step").ok()? {
                "created" => DisputeStep::Created,
                "funds_withdrawn" => DisputeStep::FundsWithdrawn,
                "funds_reinstated" => DisputeStep::FundsReinstated,
                _ => return None,
            },
            amount: f.opt_int("amount").ok()?,
        },
        _ => return None,
    })
}

/// What granting an invoice's included credits did.
#[derive(Debug, PartialEq, Eq)]
pub enum IncludedOutcome {
    Granted,
    AlreadyGranted,
    /// The account's balance is in another currency: nothing was granted.
    CurrencyMismatch,
}

/// The result of trying to credit a payment.
#[derive(Debug, PartialEq, Eq)]
pub enum CreditOutcome {
    Credited,
    AlreadyCredited,
    UnknownPayment,
    /// It does not match the recorded payment; nothing was credited. `newly_flagged` is true
    /// the first time the payment is marked as needing attention.
    Mismatch {
        reason: &'static str,
        newly_flagged: bool,
    },
}

/// A succeeded payment that could not be credited.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttentionItem {
    pub intent_id: String,
    pub user_id: String,
    pub reason: String,
    pub flagged_at_ms: i64,
}

impl Store {
    /// Records a new pending payment and, with it, the client's idempotency key, in one
    /// transaction. `Ok(Some(record))` means another request already claimed the key first.
    /// Records a payment made by Coffer on its own (an auto-recharge), pending, unless its
    /// intent was recorded already (a retry after the first record): `false` then.
    pub async fn record_payment_once(&self, payment: &PaymentRecord) -> Result<bool, StoreError> {
        super::written(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(payment_to_item(&self.keys, payment)))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await,
        )
    }

    pub async fn record_payment(
        &self,
        payment: &PaymentRecord,
        idempotency_hash: Option<&str>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item = payment_to_item(&self.keys, payment);
        let Some(hash) = idempotency_hash else {
            // No client key: a fresh intent id can only be recorded once anyway.
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            return Ok(None);
        };
        let put_payment = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(StoreError::build)?;
        let mut idem = self.keys.idempotency(hash);
        idem.insert("packageId".into(), s(&payment.package_id));
        idem.insert("intentId".into(), s(&payment.intent_id));
        idem.insert("userId".into(), s(payment.user_id.as_str()));
        idem.insert(
            "expiresAt".into(),
            n(payment.created_at_ms / 1000 + IDEMPOTENCY_TTL_SECS),
        );
        let put_idem = Put::builder()
            .table_name(&self.table)
            .set_item(Some(idem))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().put(put_payment).build(),
            TransactWriteItem::builder().put(put_idem).build(),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(None),
            Err(reasons) => match reasons.get(1).and_then(|r| r.old.as_ref()) {
                Some(old) => Ok(Some(IdempotencyRecord::from_item(old)?)),
                None => Err(StoreError::Refused(
                    "a new payment collided with an existing one".into(),
                )),
            },
        }
    }

    /// One payment record.
    pub async fn payment(&self, intent_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let item = self.get(self.keys.payment(intent_id)).await?;
        Ok(item.as_ref().map(payment_from_item).transpose()?)
    }

    /// The payment of this intent: a purchase, or else the included credits of the invoice it
    /// paid.
    pub async fn payment_or_included(
        &self,
        intent_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        if let Some(payment) = self.payment(intent_id).await? {
            return Ok(Some(payment));
        }
        let item = self.get(self.keys.included_grant(intent_id)).await?;
        Ok(item.as_ref().map(payment_from_item).transpose()?)
    }

    /// The item key of a payment record (a purchase's or an invoice's included credits).
    fn payment_key(&self, payment: &PaymentRecord) -> Item {
        if payment.is_included_grant() {
            self.keys.included_grant(&payment.intent_id)
        } else {
            self.keys.payment(&payment.intent_id)
        }
    }

    /// Grants an invoice's included credits once: its record (a payment of its own, so that a
    /// refund or dispute of the invoice's charge takes its share back), the `grant` entry keyed
    /// by the invoice and the balance, in one transaction.
    pub async fn grant_included(
        &self,
        grant: &PaymentRecord,
        entry_id: &str,
        terms: &Terms,
    ) -> Result<IncludedOutcome, StoreError> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let now = now_ms();
            let mut item = payment_to_item(&self.keys, grant);
            item.extend(self.keys.included_grant(&grant.intent_id));
            for listed in ["gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
                item.remove(listed);
            }
            item.insert("creditedAt".into(), n(now));
            item.insert("invoiceEntry".into(), s(entry_id));
            let entries = [(EntryKind::Grant, entry_id.to_owned(), grant.credits)];
            let Some(mut items) = self
                .payment_wallet_items(grant, &entries, terms, true, now)
                .await?
            else {
                return Ok(IncludedOutcome::CurrencyMismatch);
            };
            items.insert(0, self.put_new(item)?);
            // Where the invoice's own entry is among the writes (settled expiries and ended
            // holds come before it).
            let own = items.iter().position(|write| {
                write
                    .put()
                    .and_then(|put| put.item().get("entryId"))
                    .and_then(|id| id.as_s().ok())
                    .is_some_and(|id| id == entry_id)
            });
            match self.transact(items).await? {
                Ok(()) => return Ok(IncludedOutcome::Granted),
                // The record or the invoice's entry exists: granted before (this record, or an
                // entry of the invoice written before included credits had records).
                Err(reasons)
                    if reasons
                        .first()
                        .is_some_and(super::Cancelled::condition_failed)
                        || own
                            .and_then(|i| reasons.get(i))
                            .is_some_and(super::Cancelled::condition_failed) =>
                {
                    return Ok(IncludedOutcome::AlreadyGranted)
                }
                // Anything else (the balance, or a settled entry another writer wrote first)
                // changed meanwhile: read it again.
                Err(_) => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!(
            "the balance of {} kept changing",
            grant.user_id.as_str()
        )))
    }

    /// The writes that move a payment's entries through its account's wallet: credits go to
    /// the payment's own bucket (of `terms`), what is taken back comes from it first. `None`:
    /// `claim_currency` is set and the account's balance is in another currency.
    pub(super) async fn payment_wallet_items(
        &self,
        payment: &PaymentRecord,
        entries: &[(EntryKind, String, i64)],
        terms: &Terms,
        claim_currency: bool,
        now: i64,
    ) -> Result<Option<Vec<TransactWriteItem>>, StoreError> {
        let read = self.wallet(&payment.user_id).await?;
        let currency = match &read.currency {
            Some(held) if held != &payment.currency && claim_currency => return Ok(None),
            Some(held) => held.clone(),
            None => payment.currency.clone(),
        };
        let now_s = now / 1000;
        let bucket = payment_bucket(payment);
        let mut wallet = read.wallet.clone();
        let mut steps = wallet.settle(now_s, read.next_version(), SETTLE_INLINE);
        if let (Some(cap), Some((_, first, _))) = (terms.rollover_cap, entries.first()) {
            // What earlier periods' included credits hold beyond the cap expires first.
            steps.extend(wallet.cap_rollover(cap, now_s, &format!("rollover:{first}")));
        }
        for (kind, entry_id, amount) in entries {
            let gives_back = matches!(kind, EntryKind::RefundFailed | EntryKind::DisputeReinstated);
            let moved = if *amount >= 0 {
                if *amount == 0 {
                    continue;
                }
                if gives_back {
                    wallet.give_back_step(entry_id, *kind, &bucket, *amount, now_s)
                } else {
                    wallet
                        .credit_step(entry_id, *kind, terms.bucket(&bucket, now_s, *amount))
                        .map(|step| vec![step])
                }
            } else {
                let amount = amount.checked_neg().unwrap_or(i64::MAX);
                wallet.claw_back_step(entry_id, *kind, &bucket, amount, now_s, &self.spend_order)
            };
            steps.extend(moved.map_err(|why| {
                StoreError::Refused(format!("a payment's credits could not move: {why:?}"))
            })?);
        }
        let intent = payment.intent_id.clone();
        let own: Vec<String> = entries.iter().map(|(_, id, _)| id.clone()).collect();
        let annotate = move |step: &Step, item: &mut Item| {
            if own.contains(&step.entry_id) {
                item.insert("intentId".into(), s(&intent));
            }
        };
        Ok(Some(self.wallet_items(
            &payment.user_id,
            &read,
            &mut wallet,
            &steps,
            &currency,
            now,
            &annotate,
        )?))
    }

    /// Keeps a refund or dispute event of an intent with no payment (yet), once per event.
    pub async fn remember_orphan_charge_event(
        &self,
        intent_id: &str,
        event: &ChargeEvent,
    ) -> Result<(), StoreError> {
        let (event_key, mut item) = charge_event_to_item(event);
        item.extend(self.keys.orphan_charge_event(intent_id, &event_key));
        item.insert(
            "expiresAt".into(),
            n(now_ms() / 1000 + ORPHAN_EVENT_TTL_SECS),
        );
        self.put_raw(item).await
    }

    /// The refund and dispute events kept for an intent before Coffer had a payment for it.
    pub async fn orphan_charge_events(
        &self,
        intent_id: &str,
    ) -> Result<Vec<ChargeEvent>, StoreError> {
        let items = self.partition(&self.keys.payment_pk(intent_id)).await?;
        Ok(items
            .iter()
            .filter(|item| get_s(item, "sk").is_some_and(|sk| sk.starts_with("ORPHAN#")))
            .filter_map(charge_event_from_item)
            .collect())
    }

    /// Credits a succeeded PaymentIntent exactly once: the payment is read, the rules decide,
    /// and one transaction conditioned on the payment's revision moves it to credited, writes
    /// the purchase entry and grows the balance. A mismatch flags the payment for an operator.
    pub async fn credit_purchase(
        &self,
        paid: &PaidIntent,
        source: &str,
    ) -> Result<CreditOutcome, StoreError> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let Some(payment) = self.payment(&paid.intent_id).await? else {
                return Ok(CreditOutcome::UnknownPayment);
            };
            let (credits, adjustment) = match decide_credit(&payment, paid) {
                CreditDecision::AlreadyCredited => return Ok(CreditOutcome::AlreadyCredited),
                CreditDecision::Mismatch(reason) => match self.flag(&payment, reason).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
                CreditDecision::Credit {
                    credits,
                    adjustment,
                } => (credits, adjustment),
            };
            let mut credited = payment.clone();
            credited.credited = true;
            let (entries, applied) = crediting_entries(&payment, credits, adjustment);
            let now = now_ms();
            let update_payment = self
                .revision_update(&payment)
                .update_expression(
                    "SET #status = :status, creditedAt = :now, updatedAt = :now, \
                     creditEvent = :source, applied = :applied, rev = :next",
                )
                .condition_expression(
                    "(rev = :rev OR attribute_not_exists(rev)) AND attribute_not_exists(creditedAt)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status_of(&credited).as_str()))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":source", s(source))
                .expression_attribute_values(":applied", n(applied))
                .build()
                .map_err(StoreError::build)?;
            let planned: Vec<(EntryKind, String, i64)> = entries
                .iter()
                .map(|e| (e.kind, e.entry_id.clone(), e.amount))
                .collect();
            let Some(moves) = self
                .payment_wallet_items(&payment, &planned, &Terms::paid(), true, now)
                .await?
            else {
                match self.flag(&payment, "balance_currency_mismatch").await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            };
            let mut items = vec![TransactWriteItem::builder().update(update_payment).build()];
            items.extend(moves);
            match self.transact(items).await? {
                Ok(()) => return Ok(CreditOutcome::Credited),
                // The payment or the balance changed first: read them again and decide again.
                Err(_) => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!(
            "payment {} kept changing",
            paid.intent_id
        )))
    }

    /// An update of a payment that lands only if nobody changed it since it was read.
    pub(super) fn revision_update(
        &self,
        payment: &PaymentRecord,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.payment_key(payment)))
            .expression_attribute_values(":rev", n(payment.rev))
            .expression_attribute_values(":next", n(payment.rev + 1))
    }

    /// Marks a succeeded payment that could not be credited, once, with a marker item that
    /// the operator command lists. `None`: the payment changed meanwhile; read it again.
    async fn flag(
        &self,
        payment: &PaymentRecord,
        reason: &'static str,
    ) -> Result<Option<CreditOutcome>, StoreError> {
        if payment.attention.is_some() {
            return Ok(Some(CreditOutcome::Mismatch {
                reason,
                newly_flagged: false,
            }));
        }
        let now = now_ms();
        let update = self
            .revision_update(payment)
            .update_expression("SET attention = :reason, attentionAt = :now, rev = :next")
            .condition_expression(
                "(rev = :rev OR attribute_not_exists(rev)) AND attribute_not_exists(attention) \
                 AND attribute_not_exists(creditedAt)",
            )
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(StoreError::build)?;
        let mut marker = self.keys.attention(&payment.intent_id);
        marker.insert("intentId".into(), s(&payment.intent_id));
        marker.insert("userId".into(), s(payment.user_id.as_str()));
        marker.insert("reason".into(), s(reason));
        marker.insert("flaggedAt".into(), n(now));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        Ok(self
            .transact(items)
            .await?
            .ok()
            .map(|()| CreditOutcome::Mismatch {
                reason,
                newly_flagged: true,
            }))
    }

    /// Every payment waiting for an operator, one Query.
    pub async fn payments_needing_attention(&self) -> Result<Vec<AttentionItem>, StoreError> {
        let items = self.partition(keys::ATTENTION_PK).await?;
        items
            .iter()
            .map(|item| {
                let f = Fields::of(item);
                Ok(AttentionItem {
                    intent_id: f.text("intentId")?.to_owned(),
                    user_id: f.text("userId")?.to_owned(),
                    reason: f.text("reason")?.to_owned(),
                    flagged_at_ms: f.int("flaggedAt")?,
                })
            })
            .collect()
    }

    /// Marks a payment `failed` or `canceled` unless it was already credited. Moves no credits.
    /// Returns whether the status changed.
    pub async fn mark_unpaid(
        &self,
        intent_id: &str,
        status: PaymentStatus,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.payment(intent_id)))
            .update_expression("SET #status = :status, updatedAt = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(creditedAt)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        super::written(result)
    }

    /// A user's payments and grants, newest first, one Query per page. The cursor is opaque to
    /// clients and bound to the user.
    pub async fn payment_history(
        &self,
        user: &UserId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<(Vec<HistoryItem>, Option<String>), StoreError> {
        let start = cursor
            .map(|c| self.keys.decode_cursor(user, c))
            .transpose()?;
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI1)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(self.keys.history_pk(user)))
            .scan_index_forward(false)
            // One more than asked tells whether another page exists, without an empty last page.
            .limit(limit.saturating_add(1))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let items = output.items();
        let page = usize::try_from(limit).unwrap_or(0).min(items.len());
        let next = if items.len() > page && page > 0 {
            items
                .get(page - 1)
                .and_then(|last| self.keys.encode_cursor(user, last))
        } else {
            None
        };
        let history = items[..page]
            .iter()
            .map(history_from_item)
            .collect::<Result<_, _>>()?;
        Ok((history, next))
    }
}

/// Where a listing of payments goes on from: the sort key of the last line shown
/// (`<15-digit ms>#<intent id>`). The same boundary works for every scope, so that listings
/// across scopes merge by time.
pub fn valid_boundary(boundary: &str) -> bool {
    let Some((ms, id)) = boundary.split_once('#') else {
        return false;
    };
    ms.len() == 15
        && ms.bytes().all(|b| b.is_ascii_digit())
        && id.starts_with("pi_")
        && id.len() <= 200
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Store {
    /// The scope's payments newest first, older than `before` (a boundary), with `status` if
    /// given: up to `limit`, and whether more exist.
    pub async fn payments_page(
        &self,
        limit: usize,
        before: Option<&str>,
        status: Option<PaymentStatus>,
    ) -> Result<(Vec<(String, PaymentRecord)>, bool), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI2)
            .scan_index_forward(false)
            .expression_attribute_values(":pk", s(self.keys.payments_pk()));
        query = match before {
            Some(boundary) => query
                .key_condition_expression("gsi2pk = :pk AND gsi2sk < :before")
                .expression_attribute_values(":before", s(boundary)),
            None => query.key_condition_expression("gsi2pk = :pk"),
        };
        if let Some(status) = status {
            query = query
                .filter_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()));
        }
        let mut found = Vec::new();
        let mut pages = query.into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(StoreError::from_sdk)?;
            let boundary = Fields::of(&item).text("gsi2sk")?.to_owned();
            found.push((boundary, payment_from_item(&item)?));
            if found.len() > limit {
                break;
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}
