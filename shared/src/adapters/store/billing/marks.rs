//! Duplicate subscriptions, Checkout holds, the scope's subscription list, and the marks that
//! make the scheduled job read a subscription or an invoice again.

use super::*;

impl Store {
    /// Records that `subscription_id`, a second live subscription of `account`, was canceled
    /// (and `refunded` of its payment given back) in favour of `kept_id`. Written once: its
    /// insertion is the `subscription.duplicate_canceled` event. `true` when written now.
    pub async fn record_duplicate_subscription(
        &self,
        account: &UserId,
        subscription_id: &str,
        kept_id: &str,
        refunded: i64,
        currency: &str,
    ) -> Result<bool, StoreError> {
        let mut item = self.keys.duplicate_subscription(subscription_id);
        item.insert("account".into(), s(account.as_str()));
        item.insert("subscriptionId".into(), s(subscription_id));
        item.insert("keptSubscriptionId".into(), s(kept_id));
        item.insert("refunded".into(), n(refunded));
        item.insert("currency".into(), s(currency));
        item.insert("createdAt".into(), n(now_ms()));
        self.put_if_absent(item).await
    }

    /// Whether `subscription_id` was canceled as an account's second live subscription.
    pub async fn is_duplicate_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .get(self.keys.duplicate_subscription(subscription_id))
            .await?
            .is_some())
    }

    /// Releases the account's hold (a create's or a Checkout's) if one is set.
    pub async fn release_subscription_hold(&self, account: &UserId) -> Result<(), StoreError> {
        let record = self.subscription_record(account).await?;
        if record.lock_until_ms.is_some() {
            self.write_subscription(account, record.version, None, None)
                .await?;
        }
        Ok(())
    }

    /// Every subscription of the scope with its account, page by page (the scheduled re-read).
    pub async fn all_subscriptions(&self) -> Result<Vec<(UserId, SubscriptionState)>, StoreError> {
        self.index_partition(super::super::keys::GSI2, &self.keys.subscriptions_pk())
            .await?
            .iter()
            .map(|item| Ok((Fields::of(item).user("account")?, doc(item, "doc")?)))
            .collect()
    }

    /// Marks a subscription whose event could not be applied: the scheduled job reads it again
    /// (a mark lasts a week; Stripe retries the event for three days besides).
    pub async fn mark_for_reread(&self, subscription_id: &str) -> Result<(), StoreError> {
        let mut item = self.keys.reread_mark(subscription_id);
        let now = now_ms();
        item.insert("subscriptionId".into(), s(subscription_id));
        item.insert("markedAt".into(), n(now));
        item.insert("pending".into(), AttributeValue::Bool(true));
        item.insert("expiresAt".into(), n(now / 1000 + REREAD_MARK_TTL_SECS));
        self.put_raw(item).await
    }

    /// Marks a stored subscription that Stripe says it does not have: it is not read again for
    /// a day. Its stored state is left as it is (a key of another account must never end every
    /// subscription); the stale rule bounds what it entitles.
    pub async fn mark_missing(&self, subscription_id: &str) -> Result<(), StoreError> {
        let mut item = self.keys.missing_mark(subscription_id);
        let now = now_ms();
        item.insert("subscriptionId".into(), s(subscription_id));
        item.insert("missingAt".into(), n(now));
        item.insert("expiresAt".into(), n(now / 1000 + MISSING_MARK_SECS));
        self.put_raw(item).await
    }

    /// The subscriptions marked to be read again, each with the time it was marked, and those
    /// Stripe said it does not have within the last day.
    pub async fn reread_marks(
        &self,
    ) -> Result<(Vec<(String, i64)>, std::collections::HashSet<String>), StoreError> {
        let items = self.partition(&self.keys.reread_marks_pk()).await?;
        let now_secs = now_ms() / 1000;
        let marked = items
            .iter()
            .filter(|item| get_s(item, "sk").is_some_and(|sk| sk.starts_with("SUB#")))
            .filter(|item| matches!(item.get("pending"), Some(AttributeValue::Bool(true))))
            .filter_map(|item| {
                let f = Fields::of(item);
                Some((
                    f.text("subscriptionId").ok()?.to_owned(),
                    f.int("markedAt").ok()?,
                ))
            })
            .collect();
        let missing = items
            .iter()
            .filter(|item| get_s(item, "sk").is_some_and(|sk| sk.starts_with("MISSING#")))
            .filter(|item| {
                Fields::of(item)
                    .int("expiresAt")
                    .is_ok_and(|at| at > now_secs)
            })
            .filter_map(|item| get_s(item, "subscriptionId").map(str::to_owned))
            .collect();
        Ok((marked, missing))
    }

    /// Marks an invoice whose event could not be applied: the scheduled job applies it again
    /// (its status, included credits and the refunds kept for it), as the webhook would.
    pub async fn mark_invoice_for_reread(
        &self,
        invoice_id: &str,
        subscription_id: &str,
        payment_failed: bool,
    ) -> Result<(), StoreError> {
        let mut item = self.keys.invoice_reread_mark(invoice_id);
        let now = now_ms();
        item.insert("invoiceId".into(), s(invoice_id));
        item.insert("subscriptionId".into(), s(subscription_id));
        item.insert("paymentFailed".into(), AttributeValue::Bool(payment_failed));
        item.insert("markedAt".into(), n(now));
        item.insert("pending".into(), AttributeValue::Bool(true));
        item.insert("expiresAt".into(), n(now / 1000 + REREAD_MARK_TTL_SECS));
        self.put_raw(item).await
    }

    /// The invoices marked to be applied again: invoice, subscription, whether the event was a
    /// failed payment, and when it was marked.
    pub async fn invoice_reread_marks(
        &self,
    ) -> Result<Vec<(String, String, bool, i64)>, StoreError> {
        Ok(self
            .partition(&self.keys.reread_marks_pk())
            .await?
            .iter()
            .filter(|item| get_s(item, "sk").is_some_and(|sk| sk.starts_with("INV#")))
            .filter(|item| matches!(item.get("pending"), Some(AttributeValue::Bool(true))))
            .filter_map(|item| {
                let f = Fields::of(item);
                Some((
                    f.text("invoiceId").ok()?.to_owned(),
                    f.text("subscriptionId").ok()?.to_owned(),
                    matches!(item.get("paymentFailed"), Some(AttributeValue::Bool(true))),
                    f.int("markedAt").ok()?,
                ))
            })
            .collect())
    }

    /// Clears a mark once its subscription was read again, unless it was marked anew since.
    pub async fn clear_reread_mark(
        &self,
        subscription_id: &str,
        marked_at: i64,
    ) -> Result<(), StoreError> {
        self.clear_mark(self.keys.reread_mark(subscription_id), marked_at)
            .await
    }

    /// Clears an invoice's mark once it was applied again, unless it was marked anew since.
    pub async fn clear_invoice_reread_mark(
        &self,
        invoice_id: &str,
        marked_at: i64,
    ) -> Result<(), StoreError> {
        self.clear_mark(self.keys.invoice_reread_mark(invoice_id), marked_at)
            .await
    }

    async fn clear_mark(&self, key: Item, marked_at: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("REMOVE pending")
            .condition_expression("markedAt = :seen")
            .expression_attribute_values(":seen", n(marked_at))
            .send()
            .await;
        // Marked again meanwhile: the new mark stays.
        super::super::written(result).map(|_| ())
    }

    /// The scope's subscriptions, most recently read first: up to `limit`, with the account
    /// each belongs to.
    pub async fn list_subscriptions(
        &self,
        limit: i32,
    ) -> Result<Vec<(UserId, SubscriptionState)>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(super::super::keys::GSI2)
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s(self.keys.subscriptions_pk()))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        output
            .items()
            .iter()
            .map(|item| Ok((Fields::of(item).user("account")?, doc(item, "doc")?)))
            .collect()
    }
}
