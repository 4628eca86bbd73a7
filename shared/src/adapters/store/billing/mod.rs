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

mod customers;
mod history;
mod marks;
mod plans;
mod subscriptions;
mod webhooks;

pub use history::{valid_account_boundary, AccountPayment};
