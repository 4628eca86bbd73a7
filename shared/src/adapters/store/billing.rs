//! Plans, project settings, the Stripe customer of each account, its subscription state, the
//! tier it bought, and its subscription invoices. Plans, settings and subscription states are
//! kept as JSON documents of their domain types (configuration, not money: credits move only
//! through the ledger's entries).

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::codec::{get_s, n, s, Fields, Item};
use super::keys::history_sk;
use super::{written, Store, StoreError};
use crate::domain::plans::Plan;
use crate::domain::projects::ProjectSettings;
use crate::domain::records::{now_ms, UserId};
use crate::domain::subscriptions::SubscriptionState;

/// How long a subscription stays marked to be read again.
const REREAD_MARK_TTL_SECS: i64 = 7 * 24 * 3600;
/// How long a subscription Stripe said it does not have is left unread.
const MISSING_MARK_SECS: i64 = 24 * 3600;

/// The Stripe customer link of an account.
#[derive(Debug, PartialEq, Eq)]
pub enum CustomerLink {
    /// Created and linked.
    Ready(String),
    /// Another request is creating it until this time (ms).
    Claimed {
        until_ms: i64,
    },
    Missing,
}

/// An account's subscription item: the last state read from Stripe, and a create lock.
#[derive(Debug, Default)]
pub struct SubscriptionRecord {
    pub state: Option<SubscriptionState>,
    /// A create-subscription in flight holds the account until this time (ms).
    pub lock_until_ms: Option<i64>,
    /// Bumped by every write: the condition of the next one.
    pub version: i64,
}

/// A subscription invoice, as `my-payments` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRecord {
    pub invoice_id: String,
    pub account: UserId,
    pub subscription_id: String,
    pub plan_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub created_at_ms: i64,
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item, name: &'static str) -> Result<T, StoreError> {
    let text = Fields::of(item).text(name)?;
    serde_json::from_str(text).map_err(|_| {
        StoreError::Malformed(super::DecodeError {
            key: format!(
                "{}/{}",
                get_s(item, "pk").unwrap_or("?"),
                get_s(item, "sk").unwrap_or("?")
            ),
            attribute: name,
            problem: "not a valid document",
        })
    })
}

fn to_doc<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Refused(format!("document could not be written: {e}")))
}

pub(super) fn plan_from_item(item: &Item) -> Result<Plan, StoreError> {
    doc(item, "doc")
}

impl Store {
    /// Every plan of the scope (active or not).
    pub async fn list_plans(&self) -> Result<Vec<Plan>, StoreError> {
        let items = self.partition(&self.keys.plans_pk()).await?;
        items.iter().map(|item| doc(item, "doc")).collect()
    }

    pub async fn plan(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        self.get(self.keys.plan(id))
            .await?
            .map(|item| doc(&item, "doc"))
            .transpose()
    }

    pub async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let mut item = self.keys.plan(&plan.id);
        item.insert("doc".into(), s(to_doc(plan)?));
        item.insert("updatedAt".into(), n(now_ms()));
        self.put_raw(item).await
    }

    /// The scope's settings; `None` when never set.
    pub async fn settings(&self) -> Result<Option<ProjectSettings>, StoreError> {
        self.get(self.keys.settings())
            .await?
            .map(|item| doc(&item, "doc"))
            .transpose()
    }

    /// The customer portal configuration Coffer made for this scope, once made.
    pub async fn portal_configuration(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(self.keys.portal_configuration())
            .await?
            .and_then(|item| get_s(&item, "configurationId").map(str::to_owned)))
    }

    pub async fn put_portal_configuration(&self, id: &str) -> Result<(), StoreError> {
        let mut item = self.keys.portal_configuration();
        item.insert("configurationId".into(), s(id));
        item.insert("updatedAt".into(), n(now_ms()));
        self.put_raw(item).await
    }

    pub async fn put_settings(&self, settings: &ProjectSettings) -> Result<(), StoreError> {
        let mut item = self.keys.settings();
        item.insert("doc".into(), s(to_doc(settings)?));
        item.insert("updatedAt".into(), n(now_ms()));
        self.put_raw(item).await
    }
}

impl Store {
    pub async fn customer_link(&self, account: &UserId) -> Result<CustomerLink, StoreError> {
        let Some(item) = self.get(self.keys.account(account, "CUSTOMER")).await? else {
            return Ok(CustomerLink::Missing);
        };
        let f = Fields::of(&item);
        if let Some(id) = f.opt_text("customerId")? {
            return Ok(CustomerLink::Ready(id.to_owned()));
        }
        Ok(CustomerLink::Claimed {
            until_ms: f.int("claimUntil")?,
        })
    }

    /// Claims the right to create the account's customer until `until_ms`: only when no customer
    /// is linked and no other claim is alive. `false`: someone else holds it (or it is linked).
    pub async fn claim_customer(
        &self,
        account: &UserId,
        token: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.account(account, "CUSTOMER")))
            .update_expression("SET claimToken = :token, claimUntil = :until")
            .condition_expression(
                "attribute_not_exists(customerId) AND (attribute_not_exists(claimUntil) OR claimUntil < :now)",
            )
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        written(result)
    }

    /// Links the customer created under the claim `token`, and its way back to the account, in
    /// one transaction. `false`: the claim was lost (expired and taken by another request).
    pub async fn link_customer(
        &self,
        account: &UserId,
        token: &str,
        customer_id: &str,
    ) -> Result<bool, StoreError> {
        let link = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.account(account, "CUSTOMER")))
            .update_expression("SET customerId = :id, linkedAt = :now REMOVE claimUntil")
            .condition_expression("claimToken = :token AND attribute_not_exists(customerId)")
            .expression_attribute_values(":id", s(customer_id))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":token", s(token))
            .build()
            .map_err(StoreError::build)?;
        let mut owner = self.keys.customer_owner(customer_id);
        owner.insert("account".into(), s(account.as_str()));
        let owner = Put::builder()
            .table_name(&self.table)
            .set_item(Some(owner))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().update(link).build(),
            TransactWriteItem::builder().put(owner).build(),
        ];
        Ok(self.transact(items).await?.is_ok())
    }

    /// Gives up a claim whose Stripe call failed, so that the next request may try at once.
    pub async fn release_customer_claim(
        &self,
        account: &UserId,
        token: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.account(account, "CUSTOMER")))
            .update_expression("REMOVE claimUntil, claimToken")
            .condition_expression("claimToken = :token AND attribute_not_exists(customerId)")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        written(result).map(|_| ())
    }

    /// The account a Stripe customer of this scope belongs to.
    pub async fn customer_account(&self, customer_id: &str) -> Result<Option<UserId>, StoreError> {
        let item = self.get(self.keys.customer_owner(customer_id)).await?;
        Ok(item
            .as_ref()
            .map(|item| Fields::of(item).user("account"))
            .transpose()?)
    }
}

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
        for attempt in 1..=super::CONFLICT_ATTEMPTS {
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
            super::backoff(attempt).await;
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
        self.put_if_absent(super::codec::payment_to_item(&self.keys, payment))
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

impl Store {
    /// The scope's subscriptions, most recently read first: up to `limit`, with the account
    /// each belongs to.
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
        self.index_partition(super::keys::GSI2, &self.keys.subscriptions_pk())
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
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(StoreError::from_sdk(err)),
        }
    }

    pub async fn list_subscriptions(
        &self,
        limit: i32,
    ) -> Result<Vec<(UserId, SubscriptionState)>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(super::keys::GSI2)
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
            lines.push(AccountPayment::Purchase(super::codec::payment_from_item(
                item,
            )?));
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
                .index_name(super::keys::GSI1)
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
