//! An account's payments as `my-payments` lists them: purchases and subscription invoices,
//! newest first.

use super::*;

/// An invoice item back as a record.
pub fn invoice_from_item(item: &Item) -> Result<InvoiceRecord, StoreError> {
    let f = Fields::of(item);
    let pk = f.text("pk")?;
    Ok(InvoiceRecord {
        invoice_id: pk.rsplit("INV#").next().unwrap_or(pk).to_owned(),
        account: f.user("account")?,
        subscription_id: f.text("subscriptionId")?.to_owned(),
        plan_id: f.text("planId")?.to_owned(),
        amount: f.int("amount")?,
        currency: f.text("currency")?.to_owned(),
        status: f.text("status")?.to_owned(),
        created_at_ms: f.int("createdAt")?,
    })
}

/// A `my-payments` cursor: the boundary of the last line shown, `<15-digit ms>#<pi_… or in_…>`.
pub fn valid_account_boundary(boundary: &str) -> bool {
    let Some((ms, id)) = boundary.split_once('#') else {
        return false;
    };
    ms.len() == 15
        && ms.bytes().all(|b| b.is_ascii_digit())
        && (id.starts_with("pi_") || id.starts_with("in_"))
        && id.len() <= 200
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One line of `my-payments`.
#[derive(Debug)]
pub enum AccountPayment {
    /// A credit or tier purchase.
    Purchase(crate::domain::ledger::PaymentRecord),
    Invoice(InvoiceRecord),
}

impl AccountPayment {
    /// Its place in the listing: `<15-digit ms>#<id>`.
    pub fn boundary(&self) -> String {
        match self {
            Self::Purchase(p) => history_sk(p.created_at_ms, &p.intent_id),
            Self::Invoice(i) => history_sk(i.created_at_ms, &i.invoice_id),
        }
    }
}

impl Store {
    /// The account's purchases and subscription invoices newest first, older than `before`
    /// (a boundary from an earlier page): up to `limit` lines, and whether more exist.
    pub async fn account_payments(
        &self,
        account: &UserId,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<AccountPayment>, bool), StoreError> {
        let want = limit + 1;
        let purchases = self
            .gsi1_older_than(&self.keys.history_pk(account), before, want, true)
            .await?;
        let invoices = self
            .gsi1_older_than(&self.keys.bills_pk(account), before, want, false)
            .await?;
        let mut lines = Vec::with_capacity(purchases.len() + invoices.len());
        for item in &purchases {
            lines.push(AccountPayment::Purchase(
                super::super::codec::payment_from_item(item)?,
            ));
        }
        for item in &invoices {
            lines.push(AccountPayment::Invoice(invoice_from_item(item)?));
        }
        lines.sort_by_key(|line| std::cmp::Reverse(line.boundary()));
        let more = lines.len() > limit;
        lines.truncate(limit);
        Ok((lines, more))
    }

    /// Up to `want` items of a gsi1 partition, newest first, older than `before`; with
    /// `payments_only`, the payment items alone (the history partition also holds grants).
    async fn gsi1_older_than(
        &self,
        pk: &str,
        before: Option<&str>,
        want: usize,
        payments_only: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(super::super::keys::GSI1)
                .expression_attribute_values(":pk", s(pk))
                .scan_index_forward(false)
                .limit(i32::try_from(want.max(10)).unwrap_or(100))
                .set_exclusive_start_key(start);
            query = match before {
                Some(boundary) => query
                    .key_condition_expression("gsi1pk = :pk AND gsi1sk < :before")
                    .expression_attribute_values(":before", s(boundary)),
                None => query.key_condition_expression("gsi1pk = :pk"),
            };
            if payments_only {
                query = query
                    .filter_expression("sk = :pay")
                    .expression_attribute_values(":pay", s("PAY"));
            }
            let output = query.send().await.map_err(StoreError::from_sdk)?;
            found.extend(output.items().iter().cloned());
            start = output.last_evaluated_key().cloned();
            if found.len() >= want || start.is_none() {
                found.truncate(want);
                return Ok(found);
            }
        }
    }
}
