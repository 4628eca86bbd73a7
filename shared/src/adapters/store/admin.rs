//! Whole-table reads and the schema: the invariant checker's snapshot, raw writes for tests that
//! corrupt a table on purpose, and creating the table where the SAM template does not.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};

use super::codec::{get_s, payment_from_item, Fields, Item};
use super::keys::{split_scope, GSI1, GSI2};
use super::{Store, StoreError};
use crate::domain::invariants::{LedgerEntry, LedgerSnapshot};
use crate::domain::records::UserId;

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

/// Sorts the table's items into the checker's snapshot, every scope apart.
pub fn ledger_snapshot(items: &[Item]) -> LedgerSnapshot {
    let mut snapshot = LedgerSnapshot::default();
    for item in items {
        let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
            snapshot.unreadable.push("an item without pk/sk".into());
            continue;
        };
        let (scope, rest) = split_scope(pk);
        let user = rest
            .strip_prefix("USER#")
            .filter(|id| !id.ends_with("#PAY"))
            .and_then(UserId::parse);
        let f = Fields::of(item);
        let scope = scope.to_owned();
        let decoded = match (user, sk) {
            (Some(user), "BALANCE") => f
                .int("balance")
                .map(|b| snapshot.balances.push((scope, user, b))),
            (Some(user), sk) if sk.starts_with("ENTRY#") => f.int("amount").and_then(|amount| {
                snapshot.entries.push(LedgerEntry {
                    scope,
                    user,
                    entry_id: sk.trim_start_matches("ENTRY#").to_owned(),
                    amount,
                    intent_id: f.opt_text("intentId")?.map(str::to_owned),
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
