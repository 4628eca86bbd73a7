//! Every key of the table, and the payment-history cursor. No other code builds a key.
//!
//! | item              | pk                  | sk               | notes                                    |
//! |-------------------|---------------------|------------------|------------------------------------------|
//! | credit package    | `PACKAGES`          | `PKG#<id>`       | one Query lists them all                 |
//! | payment           | `PAY#<intent id>`   | `PAY`            | gsi1: `USER#<user>#PAY` / `<ms>#<pi>`    |
//! | needs attention   | `ATTENTION`         | `PAY#<intent id>`| a succeeded payment that was not credited|
//! | idempotency key   | `IDEM#<sha256>`     | `IDEM`           | user + client key → intent; TTL 24 h     |
//! | ledger entry      | `USER#<user>`       | `ENTRY#<id>`     | immutable, signed minor units; gsi2: `USER#<user>#LEDGER` / `<ms>#<id>` |
//! | balance           | `USER#<user>`       | `BALANCE`        | running sum of the user's entries        |
//! | plan              | `PLANS`             | `PLAN#<id>`      | one Query lists them all                 |
//! | settings          | `SETTINGS`          | `SETTINGS`       | redirect origins, past_due grace         |
//! | customer link     | `ACCT#<account>`    | `CUSTOMER`       | claimed before the Stripe call           |
//! | subscription      | `ACCT#<account>`    | `SUB`            | state read from Stripe; gsi2: `SUBSCRIPTIONS`|
//! | tier              | `ACCT#<account>`    | `TIER`           | the highest tier still held; `held` purchases |
//! | duplicate sub     | `DUP#<sub id>`      | `DUPSUB`         | a second live subscription, canceled (an event) |
//! | customer owner    | `CUS#<customer id>` | `CUS`            | customer → account                       |
//! | invoice           | `INV#<invoice id>`  | `INV`            | gsi1: `USER#<account>#BILL` / `<ms>#<in>`|
//! | allowance         | `USAGE#<acct>#<metric>#<period>[#<n>]` | `HEAD`, `SHARD` | limit; remaining per shard |
//! | usage record      | `USE#<sha256>`      | `USE`            | the first answer to a usage key; gsi1 `LEASED#<lease>` when taken from a lease |
//! | usage lease       | `LEASE#<acct>#<metric>#<period>` | `<lease id>` | a block of an allowance held by one instance |
//! | limit reached     | `LIMIT#<acct>#<metric>#<period>` | `LIMIT` | first refusal in the period (an event) |
//! | webhook endpoint  | `WEBHOOKS`          | `EP#<id>`        | url, event types, signing secrets; `ver` |
//! | endpoint count    | `WEBHOOKCOUNT`      | `COUNT`          | `n`: added with each endpoint, in one transaction, never past the cap |
//! | webhook event     | `WHEVENT#<event id>`| `EVENT`          | the event as sent, for re-sending; TTL 30 d |
//! | webhook attempt   | `WHATT#<endpoint>`  | `<ms>#<event>#<n>` | status, latency, first 1 KB; TTL 30 d |

pub use crate::domain::idempotency::hash_parts;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::codec::{s, Item};
use super::StoreError;
use crate::domain::records::UserId;

pub const ATTENTION_PK: &str = "ATTENTION";
pub const GSI1: &str = "gsi1";
/// A scope's payments, newest first, for its developer.
pub const GSI2: &str = "gsi2";

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// The keys of one scope: every partition key starts with its prefix (`P#<project>#<mode>#`,
/// or nothing for the default project in the deployment's mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn packages_pk(&self) -> String {
        format!("{}PACKAGES", self.prefix)
    }

    pub fn package(&self, id: &str) -> Item {
        key(self.packages_pk(), format!("PKG#{id}"))
    }

    pub fn payment_pk(&self, intent_id: &str) -> String {
        format!("{}PAY#{intent_id}", self.prefix)
    }

    pub fn payment(&self, intent_id: &str) -> Item {
        key(self.payment_pk(intent_id), "PAY")
    }

    /// The included credits of the invoice this intent paid, kept as a payment of their own.
    pub fn included_grant(&self, intent_id: &str) -> Item {
        key(self.payment_pk(intent_id), "INCLUDED")
    }

    /// A refund or dispute event of an intent Coffer has no payment for (yet): kept so that
    /// included credits granted later still take it into account.
    pub fn orphan_charge_event(&self, intent_id: &str, event_key: &str) -> Item {
        key(self.payment_pk(intent_id), format!("ORPHAN#{event_key}"))
    }

    /// The marker of a payment that needs attention: one partition for every scope, so that an
    /// operator lists them all with one Query.
    pub fn attention(&self, intent_id: &str) -> Item {
        key(ATTENTION_PK, format!("{}PAY#{intent_id}", self.prefix))
    }

    pub fn idempotency(&self, hash: &str) -> Item {
        key(format!("{}IDEM#{hash}", self.prefix), "IDEM")
    }

    pub fn user_pk(&self, user: &UserId) -> String {
        format!("{}USER#{}", self.prefix, user.as_str())
    }

    pub fn balance(&self, user: &UserId) -> Item {
        key(self.user_pk(user), "BALANCE")
    }

    /// An account's auto-recharge: its settings and state, with a version.
    pub fn recharge(&self, user: &UserId) -> Item {
        key(self.user_pk(user), "RECHARGE")
    }

    /// An account's low-balance alert: its own threshold, and whether the alert is armed.
    pub fn alerts(&self, user: &UserId) -> Item {
        key(self.user_pk(user), "ALERTS")
    }

    /// What the scheduled job must do for an account at a time: warn of or expire a bucket
    /// (`B`), or end a hold (`H`).
    pub fn due(&self, user: &UserId, what: char, id: &str) -> Item {
        key(self.user_pk(user), format!("DUE#{what}#{id}"))
    }

    pub fn entry(&self, user: &UserId, entry_id: &str) -> Item {
        key(self.user_pk(user), format!("ENTRY#{entry_id}"))
    }

    /// The partition of the scope's payments in gsi2.
    pub fn payments_pk(&self) -> String {
        format!("{}PAYMENTS", self.prefix)
    }

    pub fn plans_pk(&self) -> String {
        format!("{}PLANS", self.prefix)
    }

    pub fn plan(&self, id: &str) -> Item {
        key(self.plans_pk(), format!("PLAN#{id}"))
    }

    /// A scope's webhook endpoints (one Query lists them all).
    pub fn webhooks_pk(&self) -> String {
        format!("{}WEBHOOKS", self.prefix)
    }

    pub fn webhook_endpoint(&self, id: &str) -> Item {
        key(self.webhooks_pk(), format!("EP#{id}"))
    }

    /// How many endpoints the scope has (apart from them, so listing them reads endpoints only).
    pub fn webhook_count(&self) -> Item {
        key(format!("{}WEBHOOKCOUNT", self.prefix), "COUNT")
    }

    /// An event kept (30 days) so that it can be sent to an endpoint again.
    pub fn webhook_event(&self, event_id: &str) -> Item {
        key(format!("{}WHEVENT#{event_id}", self.prefix), "EVENT")
    }

    /// An endpoint's delivery attempts, oldest first by `<ms>#<event>#<attempt>`.
    pub fn webhook_attempts_pk(&self, endpoint_id: &str) -> String {
        format!("{}WHATT#{endpoint_id}", self.prefix)
    }

    pub fn settings(&self) -> Item {
        key(format!("{}SETTINGS", self.prefix), "SETTINGS")
    }

    /// Where the scope's reconciliation stands (`domain::reconcile::Coverage`).
    pub fn reconcile_coverage(&self) -> Item {
        key(format!("{}RECONCILE", self.prefix), "COVERAGE")
    }

    /// The Stripe customer portal configuration Coffer made for the scope.
    pub fn portal_configuration(&self) -> Item {
        key(format!("{}SETTINGS", self.prefix), "PORTAL")
    }

    /// An item of the account (a user or an organisation) that holds plans and subscriptions.
    pub fn account(&self, account: &UserId, what: &str) -> Item {
        key(format!("{}ACCT#{}", self.prefix, account.as_str()), what)
    }

    /// The record of a second live subscription of an account, canceled and refunded.
    pub fn duplicate_subscription(&self, subscription_id: &str) -> Item {
        key(format!("{}DUP#{subscription_id}", self.prefix), "DUPSUB")
    }

    pub fn customer_owner(&self, customer_id: &str) -> Item {
        key(format!("{}CUS#{customer_id}", self.prefix), "CUS")
    }

    pub fn invoice(&self, invoice_id: &str) -> Item {
        key(format!("{}INV#{invoice_id}", self.prefix), "INV")
    }

    /// The allowance of an account's metric in one period: the head (the limit) and, each in a
    /// partition of its own so that a hot account's writes spread over partitions, the counter
    /// shards (their remaining share).
    pub fn usage_head(&self, account: &UserId, metric: &str, period: &str) -> Item {
        key(
            format!(
                "{}USAGE#{}#{metric}#{period}",
                self.prefix,
                account.as_str()
            ),
            "HEAD",
        )
    }

    pub fn usage_shard(&self, account: &UserId, metric: &str, period: &str, shard: usize) -> Item {
        key(
            format!(
                "{}USAGE#{}#{metric}#{period}#{shard:02}",
                self.prefix,
                account.as_str()
            ),
            "SHARD",
        )
    }

    /// The blocks of an allowance leased to instances: one partition per allowance, one item
    /// per lease.
    pub fn usage_lease(&self, account: &UserId, metric: &str, period: &str, lease: &str) -> Item {
        key(
            format!(
                "{}LEASE#{}#{metric}#{period}",
                self.prefix,
                account.as_str()
            ),
            lease.to_owned(),
        )
    }

    /// The gsi1 partition of the usage records taken from one lease (to settle it).
    pub fn leased_records_pk(&self, lease: &str) -> String {
        format!("{}LEASED#{lease}", self.prefix)
    }

    /// The mark that a metric's allowance was first refused in a period (`limit.reached`).
    pub fn usage_limit(&self, account: &UserId, metric: &str, period: &str) -> Item {
        key(
            format!(
                "{}LIMIT#{}#{metric}#{period}",
                self.prefix,
                account.as_str()
            ),
            "LIMIT",
        )
    }

    /// The record of one usage request (its key's hash): the first answer, replayed.
    pub fn usage_record(&self, hash: &str) -> Item {
        key(format!("{}USE#{hash}", self.prefix), "USE")
    }

    /// The partition of the scope's subscriptions in gsi2 (most recently read first).
    pub fn subscriptions_pk(&self) -> String {
        format!("{}SUBSCRIPTIONS", self.prefix)
    }

    /// The subscriptions whose last event failed, for the scheduled job to read again.
    pub fn reread_marks_pk(&self) -> String {
        format!("{}REREAD", self.prefix)
    }

    pub fn reread_mark(&self, subscription_id: &str) -> Item {
        key(self.reread_marks_pk(), format!("SUB#{subscription_id}"))
    }

    /// An invoice whose event failed, for the scheduled job to apply again.
    pub fn invoice_reread_mark(&self, invoice_id: &str) -> Item {
        key(self.reread_marks_pk(), format!("INV#{invoice_id}"))
    }

    /// A stored subscription Stripe said it does not have, not read again for a day.
    pub fn missing_mark(&self, subscription_id: &str) -> Item {
        key(self.reread_marks_pk(), format!("MISSING#{subscription_id}"))
    }

    /// The partition of an account's subscription invoices in gsi1.
    pub fn bills_pk(&self, account: &UserId) -> String {
        format!("{}USER#{}#BILL", self.prefix, account.as_str())
    }

    /// The partition of a user's ledger entries in gsi2, by time (newest last).
    pub fn ledger_pk(&self, user: &UserId) -> String {
        format!("{}USER#{}#LEDGER", self.prefix, user.as_str())
    }

    /// The partition of a user's history in gsi1.
    pub fn history_pk(&self, user: &UserId) -> String {
        format!("{}USER#{}#PAY", self.prefix, user.as_str())
    }
}

/// The sort key of a history line in gsi1: newest last, so a descending Query is newest first.
pub fn history_sk(created_at_ms: i64, id: &str) -> String {
    format!("{created_at_ms:015}#{id}")
}

/// `P#<project>#<mode>#<rest>` → (`P#<project>#<mode>#`, `<rest>`); unprefixed keys → ("", key).
pub fn split_scope(pk: &str) -> (&str, &str) {
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

/// Which item a history cursor points after.
#[derive(Debug, PartialEq, Eq)]
enum CursorKind {
    Payment,
    Grant,
}

/// Largest id a cursor may name (intent and entry ids are far shorter).
const MAX_CURSOR_ID: usize = 200;
/// Timestamps are at most 15 digits, as `history_sk` writes them.
const MAX_CURSOR_MS: i64 = 999_999_999_999_999;

impl Keys {
    /// The cursor after `last`: the user's tag, the line's time and id, and whether it is a payment
    /// or a grant. The keys are rebuilt from these on the way back in, never taken from the client.
    pub fn encode_cursor(&self, user: &UserId, last: &Item) -> Option<String> {
        let sk = super::codec::get_s(last, "gsi1sk")?;
        let (ms, id) = sk.split_once('#')?;
        let kind = if super::codec::get_s(last, "sk") == Some("PAY") {
            "p"
        } else {
            "g"
        };
        let fields = [self.user_tag(user).as_str(), ms, id, kind].map(str::to_owned);
        serde_json::to_vec(&fields)
            .ok()
            .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The `ExclusiveStartKey` for a cursor that Coffer issued to this user; anything else is
    /// `InvalidCursor`, so that nothing a client makes up reaches DynamoDB.
    pub fn decode_cursor(&self, user: &UserId, cursor: &str) -> Result<Item, StoreError> {
        let invalid = || StoreError::InvalidCursor;
        if cursor.len() > 1024 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let [tag, ms, id, kind]: [String; 4] =
            serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if tag != self.user_tag(user) {
            return Err(invalid());
        }
        let valid_ms = ms.len() == 15 && ms.bytes().all(|b| b.is_ascii_digit());
        let created: i64 = ms.parse().map_err(|_| invalid())?;
        let valid_id = !id.is_empty()
            && id.len() <= MAX_CURSOR_ID
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
        let kind = match kind.as_str() {
            "p" if id.starts_with("pi_") => CursorKind::Payment,
            "g" => CursorKind::Grant,
            _ => return Err(invalid()),
        };
        if !valid_ms || !valid_id || !(0..=MAX_CURSOR_MS).contains(&created) {
            return Err(invalid());
        }
        let mut start = match kind {
            CursorKind::Payment => self.payment(&id),
            CursorKind::Grant => self.entry(user, &id),
        };
        start.insert("gsi1pk".into(), s(self.history_pk(user)));
        start.insert("gsi1sk".into(), AttributeValue::S(history_sk(created, &id)));
        Ok(start)
    }

    /// A short tag that binds a cursor to its user and scope.
    fn user_tag(&self, user: &UserId) -> String {
        hash_parts(&["cursor", &self.prefix, user.as_str()])[..16].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn history_line(keys: &Keys, user: &UserId) -> Item {
        let mut last = keys.payment("pi_1");
        last.insert("gsi1pk".into(), s(keys.history_pk(user)));
        last.insert("gsi1sk".into(), s(history_sk(1, "pi_1")));
        last
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_user() {
        let keys = Keys::default();
        let a = user("a");
        let last = history_line(&keys, &a);
        let cursor = keys.encode_cursor(&a, &last).unwrap();
        assert_eq!(keys.decode_cursor(&a, &cursor).unwrap(), last);
        assert!(matches!(
            keys.decode_cursor(&user("b"), &cursor),
            Err(StoreError::InvalidCursor)
        ));
        assert!(matches!(
            Keys::new("P#acme#test#").decode_cursor(&a, &cursor),
            Err(StoreError::InvalidCursor)
        ));
        assert!(matches!(
            keys.decode_cursor(&a, "!!!"),
            Err(StoreError::InvalidCursor)
        ));
    }

    #[test]
    fn well_formed_cursors_with_empty_or_oversized_keys_are_refused() {
        let keys = Keys::default();
        let a = user("a");
        let tag = keys.user_tag(&a);
        let forged = |fields: serde_json::Value| URL_SAFE_NO_PAD.encode(fields.to_string());
        for fields in [
            serde_json::json!([tag, "000000000000001", "", "p"]),
            serde_json::json!([tag, "", "pi_1", "p"]),
            serde_json::json!([tag, "000000000000001", "x".repeat(5000), "g"]),
            serde_json::json!([tag, "000000000000001", "pi_1#PAY", "p"]),
            serde_json::json!([tag, "000000000000001", "pi_1", "x"]),
            serde_json::json!([tag, "-00000000000001", "pi_1", "p"]),
            serde_json::json!(["", "", "", ""]),
            serde_json::json!(["PAY#pi_1", "PAY", "USER#a#PAY", "1#pi_1"]),
        ] {
            assert!(
                matches!(
                    keys.decode_cursor(&a, &forged(fields.clone())),
                    Err(StoreError::InvalidCursor)
                ),
                "{fields}"
            );
        }
    }

    #[test]
    fn scoped_keys_split_into_their_prefix_and_the_rest() {
        assert_eq!(
            split_scope("P#acme#test#USER#u"),
            ("P#acme#test#", "USER#u")
        );
        assert_eq!(split_scope("USER#u"), ("", "USER#u"));
        assert_eq!(split_scope("P#broken"), ("", "P#broken"));
    }

    #[test]
    fn hashes_separate_their_parts() {
        assert_ne!(hash_parts(&["a", "bc"]), hash_parts(&["ab", "c"]));
    }
}
