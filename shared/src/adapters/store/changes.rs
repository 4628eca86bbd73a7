//! The table's change stream as the rest of Coffer reads it: each committed change of an item
//! the billing events care about, decoded by the store that wrote it (its keys and attributes
//! stay the store's business). A change of any other item, or one that does not decode, is
//! `None`.

use super::codec::{get_s, payment_from_item, Fields, Item};
use super::keys::split_scope;
use super::StreamRecord;
use crate::domain::ledger::PaymentRecord;
use crate::domain::records::PaymentStatus;
use crate::domain::scope::{Mode, Scope};
use crate::domain::subscriptions::SubscriptionState;

/// What one committed change was.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// An account's subscription state (as last read from Stripe).
    Subscription {
        account: String,
        old: Option<SubscriptionState>,
        new: SubscriptionState,
    },
    /// An account's tier.
    Tier {
        account: String,
        old_plan: Option<String>,
        new_plan: Option<String>,
    },
    /// A payment, and its status before.
    Payment {
        before: Option<PaymentStatus>,
        payment: PaymentRecord,
    },
    /// A subscription invoice, and its status before.
    Invoice {
        account: String,
        invoice_id: String,
        subscription_id: Option<String>,
        plan_id: Option<String>,
        amount: Option<i64>,
        currency: Option<String>,
        old_status: Option<String>,
        status: String,
    },
    /// An account's balance (minor units).
    Balance {
        account: String,
        old: i64,
        new: i64,
        currency: String,
    },
    /// A duplicate subscription was canceled (and refunded).
    DuplicateSubscription {
        account: String,
        subscription_id: String,
        kept_subscription_id: String,
        refunded: i64,
        currency: String,
    },
    /// A bucket's expiry was warned of (once), with what was left of it.
    CreditsExpiring {
        account: String,
        bucket: String,
        left: i64,
        expires_at: i64,
        currency: String,
    },
    /// An expired bucket's remainder left through its entry.
    CreditsExpired {
        account: String,
        bucket: String,
        amount: i64,
        expires_at: Option<i64>,
        currency: String,
    },
    /// An allowance was first found used up in its period.
    LimitReached {
        account: String,
        metric: String,
        period: String,
        limit: i64,
    },
    /// An account's auto-recharge settings or state.
    Recharge {
        account: String,
        old: Option<Box<crate::domain::recharge::AccountRecharge>>,
        new: Box<crate::domain::recharge::AccountRecharge>,
    },
}

fn recharge_doc(item: Option<&Item>) -> Option<crate::domain::recharge::AccountRecharge> {
    serde_json::from_str(get_s(item?, "doc")?).ok()
}

fn subscription_doc(item: Option<&Item>) -> Option<SubscriptionState> {
    let doc = get_s(item?, "doc")?;
    serde_json::from_str(doc).ok()
}

impl StreamRecord {
    /// The scope a change belongs to and what it was (`default_mode`: the mode of the
    /// deployment's own, unprefixed items).
    pub fn change(&self, default_mode: Mode) -> Option<(Scope, Change)> {
        let image = self.new.as_ref().or(self.old.as_ref())?;
        let (pk, sk) = (get_s(image, "pk")?, get_s(image, "sk")?);
        let (prefix, rest) = split_scope(pk);
        let scope = Scope::from_key_prefix(prefix, default_mode)?;
        let new = self.new.as_ref()?;
        let old = self.old.as_ref();
        let change = match (sk, rest) {
            ("SUB", rest) if rest.starts_with("ACCT#") => Change::Subscription {
                account: rest.strip_prefix("ACCT#")?.to_owned(),
                old: subscription_doc(old),
                new: subscription_doc(Some(new))?,
            },
            ("TIER", rest) if rest.starts_with("ACCT#") => Change::Tier {
                account: rest.strip_prefix("ACCT#")?.to_owned(),
                old_plan: old.and_then(|o| get_s(o, "planId")).map(str::to_owned),
                new_plan: get_s(new, "planId").map(str::to_owned),
            },
            ("PAY", rest) if rest.starts_with("PAY#") => Change::Payment {
                before: old
                    .and_then(|o| payment_from_item(o).ok())
                    .map(|p| p.status),
                payment: payment_from_item(new).ok()?,
            },
            ("INV", rest) if rest.starts_with("INV#") => {
                let f = Fields::of(new);
                Change::Invoice {
                    account: f.text("account").ok()?.to_owned(),
                    invoice_id: rest.strip_prefix("INV#")?.to_owned(),
                    subscription_id: f
                        .opt_text("subscriptionId")
                        .ok()
                        .flatten()
                        .map(str::to_owned),
                    plan_id: f.opt_text("planId").ok().flatten().map(str::to_owned),
                    amount: f.opt_int("amount").ok().flatten(),
                    currency: f.opt_text("currency").ok().flatten().map(str::to_owned),
                    old_status: old.and_then(|o| get_s(o, "status")).map(str::to_owned),
                    status: f.text("status").ok()?.to_owned(),
                }
            }
            ("BALANCE", rest) if rest.starts_with("USER#") => {
                let balance = |item: Option<&Item>| {
                    item.and_then(|i| Fields::of(i).int("balance").ok())
                        .unwrap_or(0)
                };
                Change::Balance {
                    account: rest.strip_prefix("USER#")?.to_owned(),
                    old: balance(old),
                    new: balance(Some(new)),
                    currency: get_s(new, "currency").unwrap_or_default().to_owned(),
                }
            }
            ("DUPSUB", rest) if rest.starts_with("DUP#") && old.is_none() => {
                let f = Fields::of(new);
                Change::DuplicateSubscription {
                    account: f.text("account").ok()?.to_owned(),
                    subscription_id: f.text("subscriptionId").ok()?.to_owned(),
                    kept_subscription_id: f.text("keptSubscriptionId").ok()?.to_owned(),
                    refunded: f.int("refunded").ok()?,
                    currency: f.text("currency").ok()?.to_owned(),
                }
            }
            (sk, rest)
                if sk.starts_with("DUE#B#")
                    && rest.starts_with("USER#")
                    && old.is_none_or(|o| !o.contains_key("warnedAt"))
                    && new.contains_key("warnedAt") =>
            {
                let f = Fields::of(new);
                Change::CreditsExpiring {
                    account: rest.strip_prefix("USER#")?.to_owned(),
                    bucket: f.text("dueRef").ok()?.to_owned(),
                    left: f.int("warnedLeft").ok()?,
                    expires_at: f.int("dueAt").ok()?,
                    currency: f.text("currency").ok()?.to_owned(),
                }
            }
            (sk, rest)
                if sk.starts_with("ENTRY#")
                    && rest.starts_with("USER#")
                    && old.is_none()
                    && get_s(new, "kind") == Some("expire") =>
            {
                let f = Fields::of(new);
                let moved: Vec<super::BucketMove> = get_s(new, "buckets")
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default();
                let first = moved.into_iter().next()?;
                Change::CreditsExpired {
                    account: rest.strip_prefix("USER#")?.to_owned(),
                    bucket: first.b,
                    amount: f.int("amount").ok()?.saturating_neg(),
                    expires_at: first.x,
                    currency: f.text("currency").ok()?.to_owned(),
                }
            }
            ("RECHARGE", rest) if rest.starts_with("USER#") => Change::Recharge {
                account: rest.strip_prefix("USER#")?.to_owned(),
                old: recharge_doc(old).map(Box::new),
                new: Box::new(recharge_doc(Some(new))?),
            },
            ("LIMIT", rest) if rest.starts_with("LIMIT#") && old.is_none() => {
                let f = Fields::of(new);
                Change::LimitReached {
                    account: f.text("account").ok()?.to_owned(),
                    metric: f.text("metric").ok()?.to_owned(),
                    period: f.text("period").ok()?.to_owned(),
                    limit: f.int("limit").ok()?,
                }
            }
            _ => return None,
        };
        Some((scope, change))
    }
}
