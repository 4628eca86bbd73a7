//! A scope's webhook endpoints (JSON documents of `domain::webhooks::Endpoint`, written under a
//! version), the events kept for re-sending, and each endpoint's delivery attempts (kept 30
//! days by the table's TTL on `expiresAt`).

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Update};

use super::*;
use crate::domain::webhooks::{Attempt, Endpoint, KEEP_SECS};

impl Store {
    /// An endpoint's item at version `ver`.
    fn endpoint_item(&self, endpoint: &Endpoint, ver: i64) -> Result<Item, StoreError> {
        let mut item = self.keys.webhook_endpoint(&endpoint.id);
        item.insert("doc".into(), s(to_doc(endpoint)?));
        item.insert("ver".into(), n(ver));
        item.insert("updatedAt".into(), n(now_ms()));
        Ok(item)
    }

    /// Every endpoint of the scope, with its version.
    pub async fn webhook_endpoints(&self) -> Result<Vec<(Endpoint, i64)>, StoreError> {
        let items = self.partition(&self.keys.webhooks_pk()).await?;
        items
            .iter()
            .map(|item| Ok((doc(item, "doc")?, Fields::of(item).int("ver")?)))
            .collect()
    }

    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<(Endpoint, i64)>, StoreError> {
        let Some(item) = self.get(self.keys.webhook_endpoint(id)).await? else {
            return Ok(None);
        };
        Ok(Some((doc(&item, "doc")?, Fields::of(&item).int("ver")?)))
    }

    /// Writes an endpoint if its version is still `read` (`None`: only if it is new). `false`
    /// when another write came first.
    pub async fn put_webhook_endpoint(
        &self,
        endpoint: &Endpoint,
        read: Option<i64>,
    ) -> Result<bool, StoreError> {
        let item = self.endpoint_item(endpoint, read.unwrap_or(0) + 1)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let put = match read {
            Some(version) => put
                .condition_expression("ver = :read")
                .expression_attribute_values(":read", n(version)),
            None => put.condition_expression("attribute_not_exists(pk)"),
        };
        written(put.send().await)
    }

    /// Writes a new endpoint and counts it, in one transaction, unless the scope has `max`
    /// already: `false` then.
    pub async fn add_webhook_endpoint(
        &self,
        endpoint: &Endpoint,
        max: usize,
    ) -> Result<bool, StoreError> {
        let item = self.endpoint_item(endpoint, 1)?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.webhook_count()))
            .update_expression("ADD n :one")
            .condition_expression("attribute_not_exists(n) OR n < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(i64::try_from(max).unwrap_or(i64::MAX)))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            self.put_new(item)?,
            TransactWriteItem::builder().update(count).build(),
        ];
        Ok(self.transact(items).await?.is_ok())
    }

    /// Deletes an endpoint and takes it off the count, once.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<(), StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.webhook_endpoint(id)))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(StoreError::build)?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.webhook_count()))
            .update_expression("ADD n :less")
            .expression_attribute_values(":less", n(-1))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        // A condition that failed: it was deleted meanwhile (and taken off the count then).
        let _ = self.transact(items).await?;
        Ok(())
    }

    /// Keeps an event as sent (30 days), so that it can be sent again.
    pub async fn keep_webhook_event(&self, event_id: &str, body: &str) -> Result<(), StoreError> {
        let mut item = self.keys.webhook_event(event_id);
        item.insert("body".into(), s(body));
        item.insert("expiresAt".into(), n(now_ms() / 1000 + KEEP_SECS));
        self.put_raw(item).await
    }

    pub async fn webhook_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(self.keys.webhook_event(event_id))
            .await?
            .and_then(|item| get_s(&item, "body").map(str::to_owned)))
    }

    pub async fn record_webhook_attempt(
        &self,
        endpoint_id: &str,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let mut item = super::super::keys::key(
            self.keys.webhook_attempts_pk(endpoint_id),
            format!(
                "{:013}#{}#{}",
                attempt.at_ms, attempt.event_id, attempt.attempt
            ),
        );
        item.insert("doc".into(), s(to_doc(attempt)?));
        item.insert("expiresAt".into(), n(attempt.at_ms / 1000 + KEEP_SECS));
        self.put_raw(item).await
    }

    /// An endpoint's attempts, newest first: up to `limit`, before the boundary `before` (a
    /// previous page's last), and whether more follow.
    pub async fn webhook_attempts(
        &self,
        endpoint_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<(String, Attempt)>, bool), StoreError> {
        let pk = self.keys.webhook_attempts_pk(endpoint_id);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk.clone()))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(101));
        if let Some(boundary) = before {
            query = query
                .exclusive_start_key("pk", s(pk))
                .exclusive_start_key("sk", AttributeValue::S(boundary.to_owned()));
        }
        let found = query.send().await.map_err(StoreError::from_sdk)?;
        let mut page = Vec::new();
        for item in found.items() {
            let sk = get_s(item, "sk").unwrap_or_default().to_owned();
            page.push((sk, doc(item, "doc")?));
        }
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }
}
