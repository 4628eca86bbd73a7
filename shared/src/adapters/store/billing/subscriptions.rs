//! An account's subscription record (the state last read from Stripe and the create lock),
//! the tier it holds from its tier purchases, and its subscription invoices.

use super::*;

impl Store {
    pub async fn subscription_record(
        &self,
        account: &UserId,
    ) -> Result<SubscriptionRecord, StoreError> {
        let Some(item) = self.get(self.keys.account(account, "SUB")).await? else {
            return Ok(SubscriptionRecord::default());
        };
        let f = Fields::of(&item);
        let state = match f.opt_text("doc")? {
            Some(_) => Some(doc(&item, "doc")?),
            None => None,
        };
        Ok(SubscriptionRecord {
            state,
            lock_until_ms: f.opt_int("lockUntil")?,
            version: f.opt_int("ver")?.unwrap_or(0),
        })
    }

    /// Writes the subscription item only if it is still at `version` (or absent at 0): the
    /// state (when given), and the create lock set (`Some`) or cleared (`None`).
    pub async fn write_subscription(
        &self,
        account: &UserId,
        version: i64,
        state: Option<&SubscriptionState>,
        lock_until_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut set = vec!["ver = :next", "updatedAt = :now"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.account(account, "SUB")))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":now", n(now_ms()));
        if let Some(state) = state {
            set.extend([
                "doc = :doc",
                "subscriptionId = :sub",
                "account = :account",
                "gsi2pk = :gsi2pk",
                "gsi2sk = :gsi2sk",
            ]);
            request = request
                .expression_attribute_values(":doc", s(to_doc(state)?))
                .expression_attribute_values(":sub", s(&state.subscription_id))
                .expression_attribute_values(":account", s(account.as_str()))
                .expression_attribute_values(":gsi2pk", s(self.keys.subscriptions_pk()))
                .expression_attribute_values(
                    ":gsi2sk",
                    s(history_sk(state.observed_at_ms, &state.subscription_id)),
                );
        }
        let mut expression = format!("SET {}", set.join(", "));
        match lock_until_ms {
            Some(until) => {
                expression.push_str(", lockUntil = :lock");
                request = request.expression_attribute_values(":lock", n(until));
            }
            None => expression.push_str(" REMOVE lockUntil"),
        }
        request = if version == 0 {
            request.condition_expression("attribute_not_exists(ver)")
        } else {
            request
                .condition_expression("ver = :ver")
                .expression_attribute_values(":ver", n(version))
        };
        written(request.update_expression(expression).send().await)
    }

    /// The tier (a plan bought once) the account holds.
    pub async fn tier(&self, account: &UserId) -> Result<Option<String>, StoreError> {
        let item = self.get(self.keys.account(account, "TIER")).await?;
        let Some(item) = &item else {
            return Ok(None);
        };
        let f = Fields::of(item);
        let plan = f.opt_text("planId")?.map(str::to_owned);
        // An item written before tiers kept their purchases names one purchase, unchecked:
        // its tier holds only while that purchase is still paid for.
        if !item.contains_key("held") {
            if let Some(intent) = f.opt_text("intentId")? {
                let holds = self
                    .payment(intent)
                    .await?
                    .is_some_and(|p| crate::domain::plans::purchase_holds_tier(&p));
                return Ok(plan.filter(|_| holds));
            }
        }
        Ok(plan)
    }

    /// Brings the account's tier up to date with one tier purchase as it stands now: the
    /// purchase is held or not (`domain::plans::purchase_holds_tier`), and the tier is the
    /// highest one still held (`held_tier`). The item keeps every held purchase, so events of
    /// several purchases in any order, repeated or late, end at the same tier. Written only when
    /// it changes, conditioned on its revision. The tier before and after.
    pub async fn sync_tier(
        &self,
        intent_id: &str,
        plans: &[Plan],
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        use crate::domain::plans::{held_tier, purchase_holds_tier, tier_of_purchase};
        for attempt in 1..=super::super::CONFLICT_ATTEMPTS {
            // The payment is read after the tier item, each attempt: a write made from a
            // payment read before a refund landed is refused by the tier's revision when the
            // refund's own sync wrote first, and read again here.
            let Some(payment) = self.payment(intent_id).await? else {
                return Ok((None, None));
            };
            let Some(tier) = tier_of_purchase(&payment.package_id).map(str::to_owned) else {
                return Ok((None, None));
            };
            let key = self.keys.account(&payment.user_id, "TIER");
            let item = self.get(key.clone()).await?;
            let payment = match self.payment(intent_id).await? {
                Some(now) => now,
                None => payment,
            };
            let fields = item.as_ref().map(Fields::of);
            let rev = match &fields {
                Some(f) => f.opt_int("rev")?,
                None => None,
            };
            let before = match &fields {
                Some(f) => f.opt_text("planId")?.map(str::to_owned),
                None => None,
            };
            let mut held = held_purchases(item.as_ref())?;
            // A purchase an item of the earlier layout named, unchecked: kept only while it
            // still holds its tier.
            let legacy: Vec<String> = held
                .keys()
                .filter(|intent| {
                    **intent != payment.intent_id
                        && item.as_ref().is_some_and(|i| !i.contains_key("held"))
                })
                .cloned()
                .collect();
            for intent in legacy {
                let holds = self
                    .payment(&intent)
                    .await?
                    .is_some_and(|p| purchase_holds_tier(&p));
                if !holds {
                    held.remove(&intent);
                }
            }
            if purchase_holds_tier(&payment) {
                held.insert(payment.intent_id.clone(), tier.clone());
            } else {
                held.remove(&payment.intent_id);
            }
            let after = held_tier(&held, plans).map(|p| p.id.clone());
            if held == held_purchases(item.as_ref())? && after == before {
                return Ok((before, after));
            }
            let mut new = key.clone();
            if !held.is_empty() {
                let map = held
                    .iter()
                    .map(|(intent, plan)| (intent.clone(), s(plan)))
                    .collect();
                new.insert(
                    "held".into(),
                    aws_sdk_dynamodb::types::AttributeValue::M(map),
                );
            }
            if let Some(plan) = &after {
                new.insert("planId".into(), s(plan));
            }
            new.insert("rev".into(), n(rev.unwrap_or(0) + 1));
            new.insert("updatedAt".into(), n(now_ms()));
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(new));
            let request = match rev {
                Some(rev) => request
                    .condition_expression("rev = :rev")
                    .expression_attribute_values(":rev", n(rev)),
                None => request.condition_expression("attribute_not_exists(rev)"),
            };
            if written(request.send().await)? {
                return Ok((before, after));
            }
            super::super::backoff(attempt).await;
        }
        Err(StoreError::Contention(
            "the tier of an account kept changing".into(),
        ))
    }

    /// Records a payment unless one with its intent id exists (a Checkout payment the create
    /// route never saw). `true`: recorded now.
    pub async fn record_payment_if_new(
        &self,
        payment: &crate::domain::ledger::PaymentRecord,
    ) -> Result<bool, StoreError> {
        self.put_if_absent(super::super::codec::payment_to_item(&self.keys, payment))
            .await
    }

    /// Records (or moves forward the status of) a subscription invoice for `my-payments`:
    /// `true` when written now. The status only moves forward
    /// (`domain::events::invoice_status_advances`): a stored `paid` is never overwritten by a
    /// late `failed`, and a status is never written twice, so the stream says each once.
    pub async fn record_invoice(&self, invoice: &InvoiceRecord) -> Result<bool, StoreError> {
        let mut item = self.keys.invoice(&invoice.invoice_id);
        item.insert("account".into(), s(invoice.account.as_str()));
        item.insert("subscriptionId".into(), s(&invoice.subscription_id));
        item.insert("planId".into(), s(&invoice.plan_id));
        item.insert("amount".into(), n(invoice.amount));
        item.insert("currency".into(), s(&invoice.currency));
        item.insert("status".into(), s(&invoice.status));
        item.insert("createdAt".into(), n(invoice.created_at_ms));
        item.insert("gsi1pk".into(), s(self.keys.bills_pk(&invoice.account)));
        item.insert(
            "gsi1sk".into(),
            s(history_sk(invoice.created_at_ms, &invoice.invoice_id)),
        );
        // The statuses the stored one must not already have: the new one and those after it.
        let not_behind: Vec<&str> = ["failed", "paid"]
            .into_iter()
            .filter(|done| {
                !crate::domain::events::invoice_status_advances(Some(done), &invoice.status)
            })
            .collect();
        let mut condition = String::from("attribute_not_exists(pk)");
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if !not_behind.is_empty() {
            let names: Vec<String> = (0..not_behind.len()).map(|i| format!(":s{i}")).collect();
            condition.push_str(&format!(" OR NOT (#status IN ({}))", names.join(", ")));
            request = request.expression_attribute_names("#status", "status");
            for (name, status) in names.iter().zip(&not_behind) {
                request = request.expression_attribute_values(name, s(*status));
            }
        }
        written(request.condition_expression(condition).send().await)
    }
}

/// The purchases a tier item holds (intent id → plan id). An item written before purchases
/// were kept names one: its `intentId` and `planId`.
fn held_purchases(
    item: Option<&Item>,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut held = std::collections::BTreeMap::new();
    let Some(item) = item else {
        return Ok(held);
    };
    match item.get("held") {
        Some(aws_sdk_dynamodb::types::AttributeValue::M(map)) => {
            for (intent, plan) in map {
                if let Ok(plan) = plan.as_s() {
                    held.insert(intent.clone(), plan.clone());
                }
            }
        }
        _ => {
            let f = Fields::of(item);
            if let (Some(intent), Some(plan)) = (f.opt_text("intentId")?, f.opt_text("planId")?) {
                held.insert(intent.to_owned(), plan.to_owned());
            }
        }
    }
    Ok(held)
}
