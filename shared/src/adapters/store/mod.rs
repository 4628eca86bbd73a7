//! The DynamoDB adapter: the only code that knows keys and attribute maps. It loads and decodes
//! typed records, asks the domain's rules what to do, and writes what they decided as one
//! conditional `TransactWriteItems`, so that every write that moves credits happens at most once.
//! One file per aggregate: packages, payments, credits (balances, spends, grants), lifecycle
//! (refunds and disputes), projects (the registry), admin (scans and schema); keys and codec
//! beside them.

mod admin;
mod billing;
mod changes;
pub mod codec;
mod coverage;
mod credits;
mod grants;
pub mod keys;
mod lifecycle;
mod metering;
mod packages;
mod payments;
mod projects;
mod stats;
mod usage;
mod wallet;

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use crate::domain::buckets::SpendOrder;

pub use admin::{LedgerScan, ScanPage};
pub use billing::{
    valid_account_boundary, AccountPayment, CustomerLink, InvoiceRecord, SubscriptionRecord,
};
pub use changes::Change;
pub use codec::{get_s, payment_from_item, DecodeError, Fields, Item};
pub use credits::MoveOutcome;
pub use grants::{GrantOutcome, GrantRequest, GrantState, HoldOutcome, HoldState, HoldStatus};
pub use keys::{hash_parts, split_scope, Keys, GSI1, GSI2};
pub use lifecycle::LifecycleOutcome;
pub use metering::{MeterHold, MeterWatermark};
pub use packages::IdempotencyRecord;
pub use payments::{valid_boundary, AttentionItem, CreditOutcome, IncludedOutcome};
pub use projects::{ProjectClaim, SaveOutcome};
pub use stats::{
    item_from_stream_json, records_from_event, BackfillPage, Recount, StatsEpoch, StatsOutcome,
    StreamRecord, STATS_SHARDS,
};
pub use usage::{
    leases_pk, meter_pk, Allowance, AllowanceKey, EndedLease, LeaseItem, MeterTag, NewUsage,
    UsageRecord, LEASE_INDEX_SHARDS, USAGE_RECORD_TTL_SECS,
};
pub use wallet::{AccountAlert, BucketMove, DueNote, DueWhat, WalletRead, DUE_SHARDS};

/// Attempts of a transaction that lost a race with another one on the same items.
const CONFLICT_ATTEMPTS: u32 = 40;

/// Attempts of one transaction DynamoDB cancelled for a conflict with another in flight (each
/// caller's own retries on a failed condition are counted apart).
const TRANSACT_CONFLICT_ATTEMPTS: u32 = 12;

/// Why a storage call failed. The HTTP edge turns it into a status; jobs log the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out or throttled: worth retrying.
    #[error("dynamodb is unavailable: {0}")]
    Unavailable(String),
    /// A request DynamoDB refused for another reason.
    #[error("dynamodb refused the request: {0}")]
    Refused(String),
    #[error("a stored item is malformed")]
    Malformed(#[from] DecodeError),
    /// Writers kept changing the same items faster than this one could land.
    #[error("the items kept changing: {0}")]
    Contention(String),
    /// A history cursor that Coffer did not issue to this user.
    #[error("the cursor is not valid")]
    InvalidCursor,
}

impl StoreError {
    fn from_sdk<E, R>(err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let detail = DisplayErrorContext(&err).to_string();
        match err {
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => Self::Unavailable(detail),
            _ if detail.contains("Throttling")
                || detail.contains("ProvisionedThroughputExceeded")
                || detail.contains("RequestLimitExceeded") =>
            {
                Self::Unavailable(detail)
            }
            _ => Self::Refused(detail),
        }
    }

    fn build(err: aws_sdk_dynamodb::error::BuildError) -> Self {
        Self::Refused(format!("request could not be built: {err}"))
    }
}

/// A cancelled transaction item: its code and, for a failed condition, the item as it was.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub code: Option<String>,
    pub old: Option<Item>,
}

impl Cancelled {
    fn condition_failed(&self) -> bool {
        self.code.as_deref() == Some("ConditionalCheckFailed")
    }
}

/// The table, seen through one scope's keys.
#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    keys: Keys,
    /// The order spends take from buckets in (the project's, or the default).
    spend_order: SpendOrder,
}

impl Store {
    /// The table with the unprefixed keys (the default project in the deployment's mode, and
    /// tools that read the whole table).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            keys: Keys::default(),
            spend_order: SpendOrder::default(),
        }
    }

    /// The same store, spending in `order`.
    pub fn with_spend_order(mut self, order: SpendOrder) -> Self {
        self.spend_order = order;
        self
    }

    /// The same table through another scope's keys.
    pub fn scoped(&self, keys: Keys) -> Self {
        Self {
            client: self.client.clone(),
            table: self.table.clone(),
            keys,
            spend_order: SpendOrder::default(),
        }
    }

    pub fn spend_order(&self) -> &SpendOrder {
        &self.spend_order
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One item by key, strongly consistent.
    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?
            .item)
    }

    /// Every item of one partition, page by page, strongly consistent.
    async fn partition(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", codec::s(pk))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(StoreError::from_sdk)
    }

    /// Every item of one partition of a global secondary index (`<index>pk = pk`), page by page.
    async fn index_partition(&self, index: &str, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(format!("{index}pk = :pk"))
            .expression_attribute_values(":pk", codec::s(pk))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(StoreError::from_sdk)
    }

    /// A transaction item that writes `item` only if nothing has its key yet.
    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(StoreError::build)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Several items by key in one BatchGetItem, strongly consistent, in no particular order.
    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut request = KeysAndAttributes::builder().consistent_read(true);
        for key in keys {
            request = request.keys(key);
        }
        let mut pending = std::collections::HashMap::from([(
            self.table.clone(),
            request.build().map_err(StoreError::build)?,
        )]);
        let mut found = Vec::new();
        // BatchGetItem may hand back unprocessed keys under load; ask again for those only.
        for _ in 0..5 {
            let output = self
                .client
                .batch_get_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                found.extend(items.iter().cloned());
            }
            match output.unprocessed_keys() {
                Some(rest) if !rest.is_empty() => pending = rest.clone(),
                _ => return Ok(found),
            }
        }
        Err(StoreError::Unavailable(
            "dynamodb kept keys unprocessed".into(),
        ))
    }

    /// Runs a transaction, retrying when it lost a race with another transaction on the same
    /// items. `Ok(Err(cancelled))`: a condition failed (each item's code and old item).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<Cancelled>>, StoreError> {
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
                return Err(StoreError::from_sdk(err));
            }
            if reasons.iter().any(Cancelled::condition_failed) {
                return Ok(Err(reasons));
            }
            let conflict = reasons
                .iter()
                .any(|r| r.code.as_deref() == Some("TransactionConflict"));
            if !conflict {
                return Err(StoreError::from_sdk(err));
            }
            if attempt >= TRANSACT_CONFLICT_ATTEMPTS {
                return Err(StoreError::Contention(
                    "transaction conflict persisted".into(),
                ));
            }
            backoff(attempt).await;
        }
    }
}

/// `true` when a conditional write was made, `false` when its condition failed.
fn written<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(err) => Err(StoreError::from_sdk(err)),
    }
}

impl Store {
    /// Writes `item` unless an item with its key exists: `true` when written now.
    async fn put_if_absent(&self, item: Item) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        written(result)
    }
}

impl Store {
    /// Up to `limit` items of one gsi2 partition whose sort key is below `before`, in order,
    /// from after `start`; and where the next page starts (`None`: no more).
    async fn index_before(
        &self,
        partition: String,
        before: String,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI2)
            .key_condition_expression("gsi2pk = :pk AND gsi2sk < :before")
            .expression_attribute_values(":pk", codec::s(partition))
            .expression_attribute_values(":before", codec::s(before))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok((
            output.items().to_vec(),
            output.last_evaluated_key().cloned(),
        ))
    }
}

/// A jittered pause before another attempt, so that colliding writers spread out.
async fn backoff(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 20;
    let step = u64::from(attempt.min(8));
    tokio::time::sleep(Duration::from_millis(5 * step + jitter)).await;
}

/// Each cancelled item's code and, for failed conditions, the item as it was.
fn cancellation_reasons<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<Cancelled> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .map(|r| Cancelled {
                code: r.code().map(str::to_owned),
                old: r.item().cloned().filter(|i| !i.is_empty()),
            })
            .collect(),
        _ => Vec::new(),
    }
}
