//! Whole-table reads and the schema: the invariant checker's snapshot, raw writes for tests that
//! corrupt a table on purpose, and creating the table where the SAM template does not.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};

use super::codec::{get_s, payment_from_item, Fields, Item};
use super::keys::GSI1;
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
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(StoreError::build)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(StoreError::build)
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
            .map_err(StoreError::build)?;
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
            Err(err) => Err(StoreError::from_sdk(err)),
        }
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
            (None, "PAY") if rest.starts_with("PAY#") => {
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

/// `P#<project>#<mode>#<rest>` → (`P#<project>#<mode>#`, `<rest>`); unprefixed keys → ("", key).
fn split_scope(pk: &str) -> (&str, &str) {
    if let Some(after) = pk.strip_prefix("P#") {
        let mut parts = after.splitn(3, '#');
        if let (Some(project), Some(mode), Some(rest)) = (parts.next(), parts.next(), parts.next())
        {
            let prefix_len = 2 + project.len() + 1 + mode.len() + 1;
            return (&pk[..prefix_len], rest);
        }
    }
    ("", pk)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scoped_keys_split_into_their_prefix_and_the_rest() {
        assert_eq!(
            super::split_scope("P#acme#test#USER#u"),
            ("P#acme#test#", "USER#u")
        );
        assert_eq!(super::split_scope("USER#u"), ("", "USER#u"));
        assert_eq!(super::split_scope("P#broken"), ("", "P#broken"));
    }
}
