//! Whole-table reads and the schema: the invariant checker's snapshot, raw writes for tests that
//! corrupt a table on purpose, and creating the table where the SAM template does not.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};

use std::collections::{BTreeMap, BTreeSet};

use super::codec::{get_s, payment_from_item, Fields, Item};
use super::keys::{key, split_scope, GSI1, GSI2};
use super::{Store, StoreError};
use crate::domain::invariants::{CheckCursor, LedgerEntry, LedgerSnapshot};
use crate::domain::records::UserId;

/// What one page of a scan holds of the ledger.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// Items read.
    pub items: usize,
    /// The accounts (scope prefix, account) whose balance, entries or payments it holds, each
    /// with the payments seen.
    pub accounts: BTreeMap<(String, UserId), BTreeSet<String>>,
    /// Ledger items that could not be read, each with the attribute at fault.
    pub unreadable: Vec<String>,
    /// The key the page ended at (`None`: the segment is done).
    pub next: Option<(String, String)>,
    /// The account of the page's last item, when it is a balance or an entry: its items may go
    /// on in the next page.
    pub last_account: Option<(String, UserId)>,
}

/// The decoded ledger, as the invariant checker reads it.
pub type LedgerScan = LedgerSnapshot;

impl Store {
    /// Every item of the table, page by page.
    pub async fn scan_all(&self) -> Result<Vec<Item>, StoreError> {
        self.client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(StoreError::from_sdk)
    }

    /// One page of a scan of the whole table (strongly consistent; of one segment when given as
    /// (segment, total)), after `start` (the key the last page ended at): its items and the key
    /// it ended at (`None`: done).
    pub(super) async fn scan_page(
        &self,
        segment: Option<(u32, u32)>,
        start: Option<(String, String)>,
        limit: i32,
    ) -> Result<(Vec<Item>, Option<(String, String)>), StoreError> {
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let mut request = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .limit(limit);
        if let Some((segment, total)) = segment {
            request = request
                .segment(to_i32(segment))
                .total_segments(to_i32(total));
        }
        if let Some((pk, sk)) = start {
            request = request.set_exclusive_start_key(Some(key(pk, sk)));
        }
        let output = request.send().await.map_err(StoreError::from_sdk)?;
        let next = output
            .last_evaluated_key()
            .and_then(|k| Some((get_s(k, "pk")?.to_owned(), get_s(k, "sk")?.to_owned())));
        Ok((output.items.unwrap_or_default(), next))
    }

    /// One page of one segment of a scan of the whole table (strongly consistent), after
    /// `start` (the key the last page ended at): the accounts its ledger items belong to.
    pub async fn scan_segment_page(
        &self,
        segment: u32,
        total: u32,
        start: Option<(String, String)>,
        limit: i32,
    ) -> Result<ScanPage, StoreError> {
        let (items, next) = self.scan_page(Some((segment, total)), start, limit).await?;
        let items = &items;
        let mut page = ScanPage {
            items: items.len(),
            next,
            ..ScanPage::default()
        };
        for item in items {
            let Some((scope, rest, user, sk)) = ledger_place(item) else {
                page.unreadable.push("an item without pk/sk".into());
                continue;
            };
            page.last_account = None;
            match (user, sk) {
                (Some(user), sk) if sk == "BALANCE" || sk.starts_with("ENTRY#") => {
                    page.last_account = Some((scope.to_owned(), user.clone()));
                    page.accounts.entry((scope.to_owned(), user)).or_default();
                }
                (None, "PAY" | "INCLUDED") if rest.starts_with("PAY#") => {
                    match payment_from_item(item) {
                        Ok(payment) => {
                            page.accounts
                                .entry((scope.to_owned(), payment.user_id))
                                .or_default()
                                .insert(payment.intent_id);
                        }
                        Err(err) => page.unreadable.push(format!("{scope}{rest}/{sk}: {err}")),
                    }
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// One account's balance and entries, and every payment they name or `intents` adds, read
    /// strongly consistent (the scope is this store's).
    pub async fn account_snapshot(
        &self,
        user: &UserId,
        intents: &BTreeSet<String>,
    ) -> Result<LedgerSnapshot, StoreError> {
        let mut snapshot = ledger_snapshot(&self.partition(&self.keys.user_pk(user)).await?);
        // The balance read again after its entries: a change means a write landed meanwhile.
        let balance_now = self
            .get(self.keys.balance(user))
            .await?
            .and_then(|item| Fields::of(&item).int("balance").ok());
        let balance_read = snapshot.balances.first().map(|(_, _, b)| *b);
        snapshot.moving = balance_now != balance_read;
        let mut named: BTreeSet<String> = snapshot
            .entries
            .iter()
            .filter_map(|e| e.intent_id.clone())
            .collect();
        named.extend(intents.iter().cloned());
        for intent in named {
            let payments = ledger_snapshot(&self.partition(&self.keys.payment_pk(&intent)).await?);
            snapshot.payments.extend(payments.payments);
            snapshot.unreadable.extend(payments.unreadable);
        }
        Ok(snapshot)
    }

    /// Where the ledger check stands (`None` before the first run).
    pub async fn ledger_check_cursor(&self) -> Result<Option<CheckCursor>, StoreError> {
        let Some(item) = self.get(key("CHECK#RUN", "CURSOR")).await? else {
            return Ok(None);
        };
        let text = Fields::of(&item).text("cursor")?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|_| StoreError::Refused("the ledger check's cursor is not readable".into()))
    }

    pub async fn save_ledger_check_cursor(&self, cursor: &CheckCursor) -> Result<(), StoreError> {
        let text = serde_json::to_string(cursor)
            .map_err(|e| StoreError::Refused(format!("cursor could not be written: {e}")))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some({
                let mut item = key("CHECK#RUN", "CURSOR");
                item.insert("cursor".into(), super::codec::s(text));
                item
            }))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Every balance, entry and payment, decoded; an item that does not decode is listed with
    /// the attribute at fault instead of being skipped or read as zero.
    pub async fn scan_ledger(&self) -> Result<LedgerScan, StoreError> {
        Ok(ledger_snapshot(&self.scan_all().await?))
    }

    /// Writes one raw item (tests use it to corrupt a table on purpose).
    pub async fn put_raw(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Creates the table (local stack and tests); the SAM template does it when deployed.
    /// An existing table is left as it is.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .attribute_definitions(attr("gsi1pk")?)
            .attribute_definitions(attr("gsi1sk")?)
            .attribute_definitions(attr("gsi2pk")?)
            .attribute_definitions(attr("gsi2sk")?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .global_secondary_indexes(index(GSI1, "gsi1pk", "gsi1sk")?)
            .global_secondary_indexes(index(GSI2, "gsi2pk", "gsi2sk")?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                self.add_missing_indexes().await
            }
            Err(err) => Err(StoreError::from_sdk(err)),
        }
    }

    /// A table made by an earlier version lacks the payments index: add it.
    async fn add_missing_indexes(&self) -> Result<(), StoreError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let has_gsi2 = described
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .any(|i| i.index_name() == Some(GSI2));
        if has_gsi2 {
            return Ok(());
        }
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(GSI2)
            .key_schema(key_el("gsi2pk", KeyType::Hash)?)
            .key_schema(key_el("gsi2sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(StoreError::build)?;
        self.client
            .update_table()
            .table_name(&self.table)
            .attribute_definitions(attr("gsi2pk")?)
            .attribute_definitions(attr("gsi2sk")?)
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    pub async fn delete_table(&self) -> Result<(), StoreError> {
        self.client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}

fn attr(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(StoreError::build)
}

fn key_el(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(StoreError::build)
}

fn index(name: &str, hash: &str, range: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_el(hash, KeyType::Hash)?)
        .key_schema(key_el(range, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(StoreError::build)
}

/// Where a ledger item lives: its scope's key prefix, the rest of its partition key, its
/// account (an item of a `USER#` partition) and its sort key. `None`: no pk or sk.
fn ledger_place(item: &Item) -> Option<(&str, &str, Option<UserId>, &str)> {
    let (pk, sk) = (get_s(item, "pk")?, get_s(item, "sk")?);
    let (scope, rest) = split_scope(pk);
    let user = rest
        .strip_prefix("USER#")
        .filter(|id| !id.ends_with("#PAY"))
        .and_then(UserId::parse);
    Some((scope, rest, user, sk))
}

/// Sorts the table's items into the checker's snapshot, every scope apart.
pub fn ledger_snapshot(items: &[Item]) -> LedgerSnapshot {
    let mut snapshot = LedgerSnapshot::default();
    for item in items {
        let Some((scope, rest, user, sk)) = ledger_place(item) else {
            snapshot.unreadable.push("an item without pk/sk".into());
            continue;
        };
        let f = Fields::of(item);
        let scope = scope.to_owned();
        let decoded = match (user, sk) {
            (Some(user), "BALANCE") => f.int("balance").map(|b| {
                if item.contains_key("wallet") {
                    match super::wallet::stored_wallet(item) {
                        Ok(read) => {
                            snapshot
                                .wallets
                                .push((scope.clone(), user.clone(), read.wallet))
                        }
                        Err(err) => snapshot
                            .unreadable
                            .push(format!("{scope}USER#{}: {err}", user.as_str())),
                    }
                }
                snapshot.balances.push((scope, user, b));
            }),
            (Some(user), sk) if sk.starts_with("ENTRY#") => f.int("amount").and_then(|amount| {
                let moves = match get_s(item, "buckets") {
                    None => None,
                    Some(text) => Some(
                        serde_json::from_str::<Vec<super::wallet::BucketMove>>(text)
                            .map_err(|_| super::codec::DecodeError {
                                key: format!("{scope}USER#{}/{sk}", user.as_str()),
                                attribute: "buckets",
                                problem: "not a list of bucket moves",
                            })?
                            .into_iter()
                            .map(|m| (m.b, m.d, m.x))
                            .collect(),
                    ),
                };
                snapshot.entries.push(LedgerEntry {
                    scope,
                    user,
                    entry_id: sk.trim_start_matches("ENTRY#").to_owned(),
                    amount,
                    intent_id: f.opt_text("intentId")?.map(str::to_owned),
                    kind: f.opt_text("kind")?.unwrap_or_default().to_owned(),
                    created_at_ms: f.opt_int("createdAt")?.unwrap_or(0),
                    moves,
                    debt: f.opt_int("debt")?.unwrap_or(0),
                });
                Ok(())
            }),
            (None, "PAY" | "INCLUDED") if rest.starts_with("PAY#") => {
                payment_from_item(item).map(|p| snapshot.payments.push((scope, p)))
            }
            _ => Ok(()),
        };
        if let Err(err) = decoded {
            snapshot.unreadable.push(err.to_string());
        }
    }
    snapshot
}
