//! The DynamoDB adapter: the only module that knows keys and attribute maps. One table:
//!
//! | item            | pk                  | sk               | notes                                    |
//! |-----------------|---------------------|------------------|------------------------------------------|
//! | credit package  | `PACKAGES`          | `PKG#<id>`       | one Query lists them all                 |
//! | payment         | `PAY#<intent id>`   | `PAY`            | gsi1: `USER#<user>#PAY` / `<ms>#<pi>`    |
//! | idempotency key | `IDEM#<sha256>`     | `IDEM`           | user + client key → intent; TTL 24 h     |
//! | ledger entry    | `USER#<user>`       | `ENTRY#<id>`     | immutable, signed minor units            |
//! | balance         | `USER#<user>`       | `BALANCE`        | running sum of the user's entries        |
//!
//! Every write that moves credits is one `TransactWriteItems` whose conditions make it happen at
//! most once.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::auth::UserId;
use crate::http::ApiError;
use crate::ledger::{
    now_ms, refund_share, Balance, CreditOutcome, DisputeStep, Grant, HistoryItem,
    LifecycleOutcome, MoveOutcome, PaidIntent, Payment, PaymentStatus, RefundedCharge,
};
use crate::money::Currency;
use crate::packages::CreditPackage;

pub type Item = HashMap<String, AttributeValue>;

/// How long an `Idempotency-Key` is remembered (Stripe keeps its own for 24 h too).
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;
/// Attempts of a transaction that lost a race with another one on the same items.
const CONFLICT_ATTEMPTS: u32 = 12;
pub const GSI1: &str = "gsi1";

/// The remembered answer to a create-payment-intent call.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyRecord {
    pub package_id: String,
    pub intent_id: String,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn user_pk(user: &UserId) -> String {
    format!("USER#{}", user.as_str())
}

fn history_pk(user: &UserId) -> String {
    format!("USER#{}#PAY", user.as_str())
}

fn payment_pk(intent_id: &str) -> String {
    format!("PAY#{intent_id}")
}

/// The stored key for a client's `Idempotency-Key`: a hash, so any text is a safe key.
pub fn idempotency_hash(user: &UserId, client_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user.as_str().as_bytes());
    hasher.update([0u8]);
    hasher.update(client_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// Storage errors: unreachable or throttled → 503 (the caller retries); anything else → 500.
fn storage_error<E, R>(err: SdkError<E, R>) -> ApiError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = DisplayErrorContext(&err).to_string();
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            ApiError::Unavailable(format!("dynamodb: {detail}"))
        }
        _ if detail.contains("Throttling") || detail.contains("ProvisionedThroughputExceeded") => {
            ApiError::Unavailable(format!("dynamodb: {detail}"))
        }
        _ => ApiError::Internal(format!("dynamodb: {detail}")),
    }
}

fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> ApiError {
    ApiError::Internal(format!("dynamodb request: {err}"))
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    // ---- packages ---------------------------------------------------------------------------

    /// Every stored package (active or not), one Query.
    pub async fn list_packages(&self) -> Result<Vec<CreditPackage>, ApiError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("PACKAGES"))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(storage_error)?;
        Ok(items.iter().filter_map(package_from_item).collect())
    }

    pub async fn put_package(&self, package: &CreditPackage) -> Result<(), ApiError> {
        let mut item = key("PACKAGES", format!("PKG#{}", package.id));
        item.insert("id".into(), s(&package.id));
        item.insert("name".into(), s(&package.name));
        item.insert("description".into(), s(&package.description));
        item.insert("amount".into(), n(package.amount));
        item.insert("credits".into(), n(package.credits));
        item.insert("currency".into(), s(package.currency.as_str()));
        item.insert("active".into(), AttributeValue::Bool(package.active));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    /// The package and, when a client key is given, its idempotency record: one BatchGetItem.
    pub async fn package_and_idempotency(
        &self,
        package_id: &str,
        idempotency_hash: Option<&str>,
    ) -> Result<(Option<CreditPackage>, Option<IdempotencyRecord>), ApiError> {
        let package_key = key("PACKAGES", format!("PKG#{package_id}"));
        let mut keys = KeysAndAttributes::builder()
            .consistent_read(true)
            .keys(package_key.clone());
        if let Some(hash) = idempotency_hash {
            keys = keys.keys(key(format!("IDEM#{hash}"), "IDEM"));
        }
        let mut request = HashMap::from([(self.table.clone(), keys.build().map_err(build_error)?)]);
        let mut found: Vec<Item> = Vec::new();
        // BatchGetItem may hand back unprocessed keys under load; ask again for those only.
        for _ in 0..5 {
            let output = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(storage_error)?;
            if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                found.extend(items.iter().cloned());
            }
            match output.unprocessed_keys() {
                Some(rest) if !rest.is_empty() => request = rest.clone(),
                _ => {
                    let package = found
                        .iter()
                        .find(|item| get_s(item, "pk") == Some("PACKAGES"))
                        .and_then(package_from_item);
                    let record = found
                        .iter()
                        .find(|item| get_s(item, "sk") == Some("IDEM"))
                        .and_then(|item| {
                            Some(IdempotencyRecord {
                                package_id: get_s(item, "packageId")?.to_owned(),
                                intent_id: get_s(item, "intentId")?.to_owned(),
                            })
                        });
                    return Ok((package, record));
                }
            }
        }
        Err(ApiError::Unavailable(
            "dynamodb kept keys unprocessed".into(),
        ))
    }

    // ---- payments ---------------------------------------------------------------------------

    /// Records a new pending payment and, with it, the client's idempotency key, in one
    /// transaction. `Ok(Some(record))` means another request already claimed the key first.
    pub async fn record_payment(
        &self,
        payment: &Payment,
        idempotency_hash: Option<&str>,
    ) -> Result<Option<IdempotencyRecord>, ApiError> {
        let mut item = key(payment_pk(&payment.intent_id), "PAY");
        item.insert("intentId".into(), s(&payment.intent_id));
        item.insert("userId".into(), s(payment.user_id.as_str()));
        item.insert("packageId".into(), s(&payment.package_id));
        item.insert("amount".into(), n(payment.amount));
        item.insert("currency".into(), s(payment.currency.as_str()));
        item.insert("credits".into(), n(payment.credits));
        item.insert("status".into(), s(payment.status.as_str()));
        item.insert("createdAt".into(), n(payment.created_at_ms));
        item.insert("description".into(), s(&payment.description));
        item.insert("rev".into(), n(0));
        item.insert("gsi1pk".into(), s(history_pk(&payment.user_id)));
        item.insert(
            "gsi1sk".into(),
            s(format!(
                "{:015}#{}",
                payment.created_at_ms, payment.intent_id
            )),
        );
        let put_payment = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;

        let Some(hash) = idempotency_hash else {
            // No client key: a fresh intent id can only be recorded once anyway.
            let Put {
                item,
                condition_expression,
                ..
            } = put_payment;
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .set_condition_expression(condition_expression)
                .send()
                .await
                .map_err(storage_error)?;
            return Ok(None);
        };

        let mut idem = key(format!("IDEM#{hash}"), "IDEM");
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
            .map_err(build_error)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_payment).build())
            .transact_items(TransactWriteItem::builder().put(put_idem).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(err) => {
                let reasons = cancellation_reasons(&err);
                match reasons.get(1) {
                    Some((Some(code), Some(old))) if code == "ConditionalCheckFailed" => {
                        Ok(Some(IdempotencyRecord {
                            package_id: get_s(old, "packageId").unwrap_or_default().to_owned(),
                            intent_id: get_s(old, "intentId").unwrap_or_default().to_owned(),
                        }))
                    }
                    _ => Err(storage_error(err)),
                }
            }
        }
    }

    /// Credits a succeeded PaymentIntent exactly once: the payment moves to `succeeded`, the
    /// purchase entry is written and the balance grows, all in one conditional transaction.
    pub async fn credit_purchase(&self, paid: &PaidIntent) -> Result<CreditOutcome, ApiError> {
        let (Some(user), Some(package_id), Some(credits)) = (
            paid.user_id.as_deref(),
            paid.package_id.as_deref(),
            paid.credits,
        ) else {
            return self.diagnose_credit(paid).await;
        };
        let Some(user) = UserId::parse(user) else {
            return Ok(CreditOutcome::Mismatch);
        };
        let now = now_ms();
        let payment_key = key(payment_pk(&paid.intent_id), "PAY");
        let update_payment = Update::builder()
            .table_name(&self.table)
            .set_key(Some(payment_key))
            .update_expression(
                "SET #status = :succeeded, creditedAt = :now, updatedAt = :now, creditEvent = :event",
            )
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(creditedAt) AND userId = :user \
                 AND packageId = :package AND amount = :amount AND currency = :currency \
                 AND credits = :credits",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":succeeded", s(PaymentStatus::Succeeded.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":event", s(&paid.event_id))
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":package", s(package_id))
            .expression_attribute_values(":amount", n(paid.amount))
            .expression_attribute_values(":currency", s(&paid.currency))
            .expression_attribute_values(":credits", n(credits))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;

        let mut entry = key(user_pk(&user), format!("ENTRY#purchase:{}", paid.intent_id));
        entry.insert("kind".into(), s("purchase"));
        entry.insert("amount".into(), n(credits));
        entry.insert("currency".into(), s(&paid.currency));
        entry.insert("intentId".into(), s(&paid.intent_id));
        entry.insert("eventId".into(), s(&paid.event_id));
        entry.insert("createdAt".into(), n(now));
        let put_entry = Put::builder()
            .table_name(&self.table)
            .set_item(Some(entry))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;

        let update_balance = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(&user), "BALANCE")))
            .update_expression("ADD balance :credits SET currency = :currency, updatedAt = :now")
            .condition_expression("attribute_not_exists(currency) OR currency = :currency")
            .expression_attribute_values(":credits", n(credits))
            .expression_attribute_values(":currency", s(&paid.currency))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(build_error)?;

        let items = vec![
            TransactWriteItem::builder().update(update_payment).build(),
            TransactWriteItem::builder().put(put_entry).build(),
            TransactWriteItem::builder().update(update_balance).build(),
        ];
        let reasons = match self.transact(items).await? {
            Ok(()) => return Ok(CreditOutcome::Credited),
            Err(reasons) => reasons,
        };
        Ok(match reasons.first() {
            Some((Some(code), old)) if code == "ConditionalCheckFailed" => match old {
                None => CreditOutcome::UnknownPayment,
                Some(old) if old.contains_key("creditedAt") => CreditOutcome::AlreadyCredited,
                Some(_) => CreditOutcome::Mismatch,
            },
            // The payment matched but the balance is held in another currency.
            _ => CreditOutcome::Mismatch,
        })
    }

    /// Runs a transaction, retrying when it lost a race with another transaction on the same
    /// items. `Ok(Err(reasons))`: a condition failed (each item's code and old item).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<Reason>>, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            let reasons = cancellation_reasons(&err);
            if reasons.is_empty() {
                return Err(storage_error(err));
            }
            let failed = reasons
                .iter()
                .any(|(code, _)| code.as_deref() == Some("ConditionalCheckFailed"));
            if failed {
                return Ok(Err(reasons));
            }
            let conflict = reasons
                .iter()
                .any(|(code, _)| code.as_deref() == Some("TransactionConflict"));
            if conflict && attempt < CONFLICT_ATTEMPTS {
                // Jittered backoff so that colliding writers spread out.
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 20;
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt) + jitter)).await;
                continue;
            }
            if conflict {
                return Err(ApiError::Unavailable(
                    "dynamodb: transaction conflict persisted".into(),
                ));
            }
            return Err(storage_error(err));
        }
    }

    /// For an event that lacks Coffer's metadata: tell a duplicate from a mismatch (one read).
    async fn diagnose_credit(&self, paid: &PaidIntent) -> Result<CreditOutcome, ApiError> {
        let item = self.get(key(payment_pk(&paid.intent_id), "PAY")).await?;
        Ok(match item {
            None => CreditOutcome::UnknownPayment,
            Some(item) if item.contains_key("creditedAt") => CreditOutcome::AlreadyCredited,
            Some(_) => CreditOutcome::Mismatch,
        })
    }

    /// Marks a payment `failed` or `canceled` unless it was already credited. Moves no credits.
    /// Returns whether the status changed.
    pub async fn mark_unpaid(
        &self,
        intent_id: &str,
        status: PaymentStatus,
    ) -> Result<bool, ApiError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(payment_pk(intent_id), "PAY")))
            .update_expression("SET #status = :status, updatedAt = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(creditedAt)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(storage_error(err)),
        }
    }

    /// A user's payments, newest first, one Query per page. The cursor is opaque to clients and
    /// bound to the user: a cursor of another user is refused.
    pub async fn payment_history(
        &self,
        user: &UserId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<(Vec<HistoryItem>, Option<String>), ApiError> {
        let pk = history_pk(user);
        let start = cursor.map(|c| decode_cursor(c, &pk)).transpose()?;
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .scan_index_forward(false)
            // One more than asked tells whether another page exists, without an empty last page.
            .limit(limit.saturating_add(1))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(storage_error)?;
        let items = output.items();
        let page = usize::try_from(limit).unwrap_or(0).min(items.len());
        let next = (items.len() > page)
            .then(|| items.get(page.wrapping_sub(1)))
            .flatten()
            .map(encode_cursor);
        let history = items[..page].iter().filter_map(history_from_item).collect();
        Ok((history, next))
    }

    /// One payment record (tests and tools).
    pub async fn payment(&self, intent_id: &str) -> Result<Option<Payment>, ApiError> {
        let item = self.get(key(payment_pk(intent_id), "PAY")).await?;
        Ok(item.as_ref().and_then(payment_from_item))
    }

    // ---- spends and grants ------------------------------------------------------------------

    /// Moves `delta` credits for `user` as the entry `entry_id`, exactly once per entry id.
    /// A negative delta (a spend) never takes the balance below zero; a positive one (a grant)
    /// is recorded in history too.
    pub async fn move_credits(
        &self,
        user: &UserId,
        entry_id: &str,
        kind: &str,
        delta: i64,
        currency: &Currency,
        reason: &str,
    ) -> Result<MoveOutcome, ApiError> {
        let now = now_ms();
        let mut entry = key(user_pk(user), format!("ENTRY#{entry_id}"));
        entry.insert("kind".into(), s(kind));
        entry.insert("entryId".into(), s(entry_id));
        entry.insert("amount".into(), n(delta));
        entry.insert("currency".into(), s(currency.as_str()));
        entry.insert("reason".into(), s(reason));
        entry.insert("createdAt".into(), n(now));
        if delta > 0 {
            entry.insert("gsi1pk".into(), s(history_pk(user)));
            entry.insert("gsi1sk".into(), s(format!("{now:015}#{entry_id}")));
        }
        let put_entry = Put::builder()
            .table_name(&self.table)
            .set_item(Some(entry))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;
        let balance = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), "BALANCE")))
            .expression_attribute_values(":delta", n(delta))
            .expression_attribute_values(":currency", s(currency.as_str()))
            .expression_attribute_values(":now", n(now));
        let balance = if delta < 0 {
            balance
                .update_expression("ADD balance :delta SET updatedAt = :now")
                .condition_expression("balance >= :need AND currency = :currency")
                .expression_attribute_values(":need", n(delta.saturating_neg()))
        } else {
            balance
                .update_expression("ADD balance :delta SET currency = :currency, updatedAt = :now")
                .condition_expression("attribute_not_exists(currency) OR currency = :currency")
        };
        let items = vec![
            TransactWriteItem::builder().put(put_entry).build(),
            TransactWriteItem::builder()
                .update(balance.build().map_err(build_error)?)
                .build(),
        ];
        let reasons = match self.transact(items).await? {
            Ok(()) => return Ok(MoveOutcome::Done(entry_id.to_owned())),
            Err(reasons) => reasons,
        };
        match reasons.first() {
            Some((Some(code), Some(old))) if code == "ConditionalCheckFailed" => {
                Ok(if get_n(old, "amount") == Some(delta) {
                    MoveOutcome::Replayed(entry_id.to_owned())
                } else {
                    MoveOutcome::KeyConflict
                })
            }
            _ if delta < 0 => Ok(MoveOutcome::Insufficient),
            _ => Err(ApiError::Internal(format!(
                "the balance of this user is not in {currency}"
            ))),
        }
    }

    // ---- refunds and disputes ---------------------------------------------------------------

    async fn payment_item(&self, intent_id: &str) -> Result<Option<Item>, ApiError> {
        self.get(key(payment_pk(intent_id), "PAY")).await
    }

    /// One item by key, strongly consistent.
    async fn get(&self, key: Item) -> Result<Option<Item>, ApiError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(storage_error)?
            .item)
    }

    /// One read-then-conditional-write step on a credited payment: `plan` looks at the payment
    /// and says what to change; the write only lands if nobody changed the payment in between
    /// (its `rev`), else the step is read and planned again.
    async fn lifecycle_step<F>(
        &self,
        intent_id: &str,
        plan: F,
    ) -> Result<LifecycleOutcome, ApiError>
    where
        F: Fn(&Item) -> Plan,
    {
        for _ in 0..CONFLICT_ATTEMPTS {
            let Some(item) = self.payment_item(intent_id).await? else {
                return Ok(LifecycleOutcome::UnknownPayment);
            };
            if !item.contains_key("creditedAt") {
                return Ok(LifecycleOutcome::NotReady);
            }
            let (Some(user), Some(currency)) = (
                get_s(&item, "userId").and_then(UserId::parse),
                get_s(&item, "currency").map(str::to_owned),
            ) else {
                return Err(ApiError::Internal(format!(
                    "payment {intent_id} is unreadable"
                )));
            };
            let change = match plan(&item) {
                Plan::Nothing => return Ok(LifecycleOutcome::Unchanged),
                Plan::NotReady => return Ok(LifecycleOutcome::NotReady),
                Plan::Change(change) => change,
            };
            let rev = get_n(&item, "rev").unwrap_or(0);
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(payment_pk(intent_id), "PAY")))
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
                .expression_attribute_values(":next", n(rev + 1))
                .expression_attribute_values(":now", n(now_ms()))
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(change.status.as_str()));
            let mut sets = vec![
                "rev = :next".to_string(),
                "updatedAt = :now".to_string(),
                "#status = :status".to_string(),
            ];
            for (i, (name, value)) in change.set.into_iter().enumerate() {
                sets.push(format!("{name} = :v{i}"));
                update = update.expression_attribute_values(format!(":v{i}"), value);
            }
            update = update.update_expression(format!("SET {}", sets.join(", ")));
            let mut items = vec![TransactWriteItem::builder()
                .update(update.build().map_err(build_error)?)
                .build()];
            if change.delta != 0 {
                let now = now_ms();
                let mut entry = key(user_pk(&user), format!("ENTRY#{}", change.entry_id));
                entry.insert("kind".into(), s(change.kind));
                entry.insert("entryId".into(), s(&change.entry_id));
                entry.insert("amount".into(), n(change.delta));
                entry.insert("currency".into(), s(&currency));
                entry.insert("intentId".into(), s(intent_id));
                entry.insert("createdAt".into(), n(now));
                items.push(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table)
                                .set_item(Some(entry))
                                .condition_expression("attribute_not_exists(pk)")
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                );
                // No floor: credits already spent leave the balance negative, visibly.
                items.push(
                    TransactWriteItem::builder()
                        .update(
                            Update::builder()
                                .table_name(&self.table)
                                .set_key(Some(key(user_pk(&user), "BALANCE")))
                                .update_expression("ADD balance :delta SET updatedAt = :now")
                                .expression_attribute_values(":delta", n(change.delta))
                                .expression_attribute_values(":now", n(now))
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                );
            }
            match self.transact(items).await? {
                Ok(()) => return Ok(LifecycleOutcome::Applied(change.delta)),
                // Someone changed the payment (or wrote this entry) first: look again.
                Err(_) => continue,
            }
        }
        Err(ApiError::Unavailable(format!(
            "payment {intent_id} kept changing; try again"
        )))
    }

    /// `charge.refunded`: claws back the refunded share of the credits, netted against what
    /// was already clawed back. Older (smaller cumulative) refunds change nothing.
    pub async fn apply_refund(
        &self,
        charge: &RefundedCharge,
    ) -> Result<LifecycleOutcome, ApiError> {
        self.lifecycle_step(&charge.intent_id, |item| {
            let amount = get_n(item, "amount").unwrap_or(0);
            let credits = get_n(item, "credits").unwrap_or(0);
            let currency_matches =
                get_s(item, "currency").is_some_and(|c| c.eq_ignore_ascii_case(&charge.currency));
            if charge.amount != amount || !currency_matches {
                tracing::warn!(intent_id = %charge.intent_id, "refunded charge does not match the payment; ignored");
                return Plan::Nothing;
            }
            let refunded_before = get_n(item, "refundedAmount").unwrap_or(0);
            if charge.amount_refunded <= refunded_before {
                return Plan::Nothing;
            }
            let clawed = get_n(item, "refundClawed").unwrap_or(0);
            let held = get_n(item, "disputeHeld").unwrap_or(0);
            let target = refund_share(credits, amount, charge.amount_refunded);
            let take = (target - clawed).min(credits - held - clawed).max(0);
            let disputed = matches!(get_s(item, "disputeState"), Some("open" | "withdrawn"));
            let status = if disputed {
                PaymentStatus::Disputed
            } else if charge.amount_refunded >= amount {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
            Plan::Change(Change {
                status,
                set: vec![
                    ("refundedAmount", n(charge.amount_refunded)),
                    ("refundClawed", n(clawed + take)),
                ],
                delta: -take,
                kind: "refund",
                entry_id: format!("refund:{}:{}", charge.intent_id, charge.amount_refunded),
            })
        })
        .await
    }

    /// `charge.dispute.*`: created marks the payment, funds withdrawn takes the credits that
    /// refunds left, funds reinstated gives them back; each at most once.
    pub async fn apply_dispute(
        &self,
        intent_id: &str,
        dispute_id: &str,
        step: DisputeStep,
    ) -> Result<LifecycleOutcome, ApiError> {
        self.lifecycle_step(intent_id, |item| {
            let state = get_s(item, "disputeState");
            let credits = get_n(item, "credits").unwrap_or(0);
            let clawed = get_n(item, "refundClawed").unwrap_or(0);
            let held = get_n(item, "disputeHeld").unwrap_or(0);
            let dispute = ("disputeId", s(dispute_id));
            match step {
                DisputeStep::Created => match state {
                    Some(_) => Plan::Nothing,
                    None => Plan::Change(Change {
                        status: PaymentStatus::Disputed,
                        set: vec![("disputeState", s("open")), dispute],
                        delta: 0,
                        kind: "dispute",
                        entry_id: String::new(),
                    }),
                },
                DisputeStep::FundsWithdrawn => match state {
                    Some("withdrawn" | "reinstated") => Plan::Nothing,
                    _ => {
                        let take = (credits - clawed).max(0);
                        Plan::Change(Change {
                            status: PaymentStatus::Disputed,
                            set: vec![
                                ("disputeState", s("withdrawn")),
                                ("disputeHeld", n(take)),
                                dispute,
                            ],
                            delta: -take,
                            kind: "dispute_withdrawn",
                            entry_id: format!("dispute-withdrawn:{dispute_id}"),
                        })
                    }
                },
                DisputeStep::FundsReinstated => match state {
                    Some("reinstated") => Plan::Nothing,
                    Some("withdrawn") => {
                        let amount = get_n(item, "amount").unwrap_or(0);
                        let refunded = get_n(item, "refundedAmount").unwrap_or(0);
                        let status = if refunded >= amount && amount > 0 {
                            PaymentStatus::Refunded
                        } else if refunded > 0 {
                            PaymentStatus::PartiallyRefunded
                        } else {
                            PaymentStatus::Succeeded
                        };
                        Plan::Change(Change {
                            status,
                            set: vec![
                                ("disputeState", s("reinstated")),
                                ("disputeHeld", n(0)),
                                dispute,
                            ],
                            delta: held,
                            kind: "dispute_reinstated",
                            entry_id: format!("dispute-reinstated:{dispute_id}"),
                        })
                    }
                    // Reinstated before withdrawn arrived: let Stripe deliver it again later.
                    _ => Plan::NotReady,
                },
            }
        })
        .await
    }

    /// Every item of the table, page by page (the invariant checker's input).
    pub async fn scan_all(&self) -> Result<Vec<Item>, ApiError> {
        self.client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(storage_error)
    }

    /// Writes one raw item (tests use it to corrupt a table on purpose).
    pub async fn put_raw(&self, item: Item) -> Result<(), ApiError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    // ---- balances ---------------------------------------------------------------------------

    /// The user's balance (one consistent GetItem); `None` when nothing was ever credited.
    pub async fn balance(&self, user: &UserId) -> Result<Option<Balance>, ApiError> {
        let item = self.get(key(user_pk(user), "BALANCE")).await?;
        Ok(item.and_then(|item| {
            Some(Balance {
                balance: get_n(&item, "balance").unwrap_or(0),
                currency: Currency::parse(get_s(&item, "currency")?)?,
            })
        }))
    }

    // ---- schema -----------------------------------------------------------------------------

    /// Creates the table (local stack and tests); the SAM template does it when deployed.
    /// An existing table is left as it is.
    pub async fn create_table(&self) -> Result<(), ApiError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key_el("gsi1pk", KeyType::Hash)?)
            .key_schema(key_el("gsi1sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_error)?;
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .attribute_definitions(attr("gsi1pk")?)
            .attribute_definitions(attr("gsi1sk")?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .global_secondary_indexes(gsi)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(storage_error(err)),
        }
    }

    pub async fn delete_table(&self) -> Result<(), ApiError> {
        self.client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(storage_error)?;
        Ok(())
    }
}

/// What a lifecycle step wants to do to a payment.
enum Plan {
    Nothing,
    NotReady,
    Change(Change),
}

struct Change {
    status: PaymentStatus,
    set: Vec<(&'static str, AttributeValue)>,
    /// Credits to move (0: status only, no entry).
    delta: i64,
    kind: &'static str,
    entry_id: String,
}

/// A cancelled transaction item: its code and, for a failed condition, the item as it was.
type Reason = (Option<String>, Option<Item>);

/// Each cancelled item's code and, for failed conditions, the item as it was.
fn cancellation_reasons<R>(
    err: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Vec<Reason> {
    match err.as_service_error() {
        Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .map(|r| (r.code().map(str::to_owned), r.item().cloned().filter(|i| !i.is_empty())))
            .collect(),
        _ => Vec::new(),
    }
}

fn package_from_item(item: &Item) -> Option<CreditPackage> {
    Some(CreditPackage {
        id: get_s(item, "id")?.to_owned(),
        name: get_s(item, "name").unwrap_or_default().to_owned(),
        description: get_s(item, "description").unwrap_or_default().to_owned(),
        amount: get_n(item, "amount")?,
        credits: get_n(item, "credits")?,
        currency: Currency::parse(get_s(item, "currency")?)?,
        active: item
            .get("active")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    })
}

fn history_from_item(item: &Item) -> Option<HistoryItem> {
    if get_s(item, "kind") == Some("grant") {
        return Some(HistoryItem::Grant(Grant {
            entry_id: get_s(item, "entryId")?.to_owned(),
            credits: get_n(item, "amount")?,
            currency: Currency::parse(get_s(item, "currency")?)?,
            reason: get_s(item, "reason").unwrap_or_default().to_owned(),
            created_at_ms: get_n(item, "createdAt")?,
        }));
    }
    payment_from_item(item).map(HistoryItem::Payment)
}

fn payment_from_item(item: &Item) -> Option<Payment> {
    Some(Payment {
        intent_id: get_s(item, "intentId")?.to_owned(),
        user_id: UserId::parse(get_s(item, "userId")?)?,
        package_id: get_s(item, "packageId")?.to_owned(),
        amount: get_n(item, "amount")?,
        currency: Currency::parse(get_s(item, "currency")?)?,
        credits: get_n(item, "credits")?,
        status: PaymentStatus::parse(get_s(item, "status")?)?,
        created_at_ms: get_n(item, "createdAt")?,
        description: get_s(item, "description").unwrap_or_default().to_owned(),
    })
}

const CURSOR_FIELDS: [&str; 4] = ["pk", "sk", "gsi1pk", "gsi1sk"];

fn encode_cursor(last: &Item) -> String {
    let fields: Vec<&str> = CURSOR_FIELDS
        .iter()
        .map(|f| get_s(last, f).unwrap_or_default())
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fields).unwrap_or_default())
}

fn decode_cursor(cursor: &str, expected_pk: &str) -> Result<Item, ApiError> {
    let invalid = || ApiError::bad_request("cursor is not valid.");
    if cursor.len() > 2048 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let fields: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if fields.len() != CURSOR_FIELDS.len() || fields[2] != expected_pk {
        return Err(invalid());
    }
    Ok(CURSOR_FIELDS
        .iter()
        .zip(fields)
        .map(|(name, value)| (name.to_string(), s(value)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_user() {
        let mut last = key("PAY#pi_1", "PAY");
        last.insert("gsi1pk".into(), s("USER#a#PAY"));
        last.insert("gsi1sk".into(), s("000000000000001#pi_1"));
        let cursor = encode_cursor(&last);
        assert_eq!(decode_cursor(&cursor, "USER#a#PAY").unwrap(), last);
        assert_eq!(
            decode_cursor(&cursor, "USER#b#PAY").unwrap_err().status(),
            400
        );
        assert_eq!(
            decode_cursor("!!!", "USER#a#PAY").unwrap_err().status(),
            400
        );
    }

    #[test]
    fn idempotency_hash_separates_users_and_keys() {
        let a = UserId::parse("a").unwrap();
        let ab = UserId::parse("ab").unwrap();
        assert_ne!(idempotency_hash(&a, "bc"), idempotency_hash(&ab, "c"));
        assert_eq!(idempotency_hash(&a, "k"), idempotency_hash(&a, "k"));
    }
}
