//! Typed records to and from DynamoDB attribute maps. Decoding fails loudly, naming the item and
//! the attribute, when an item is malformed: a missing or mistyped amount is never read as 0.
//! Payments written by earlier versions (refund and dispute counters instead of facts) decode
//! into the same typed record.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use super::keys::Keys;
use crate::domain::ledger::EntryKind;
use crate::domain::ledger::{ChargeFacts, DisputeFacts, FailedRefund, PaymentRecord};
use crate::domain::money::Currency;
use crate::domain::packages::CreditPackage;
use crate::domain::records::{Grant, HistoryItem, PaymentStatus, UserId};

pub type Item = HashMap<String, AttributeValue>;

/// An item that is not what its key says it is.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("item {key}: attribute `{attribute}` is {problem}")]
pub struct DecodeError {
    pub key: String,
    pub attribute: &'static str,
    pub problem: &'static str,
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute, if present and a string (for keys and optional text).
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// Reads one item's attributes, each failure naming the attribute.
pub struct Fields<'a> {
    item: &'a Item,
}

impl<'a> Fields<'a> {
    pub fn of(item: &'a Item) -> Self {
        Self { item }
    }

    fn error(&self, attribute: &'static str, problem: &'static str) -> DecodeError {
        let part = |name| get_s(self.item, name).unwrap_or("?");
        DecodeError {
            key: format!("{}/{}", part("pk"), part("sk")),
            attribute,
            problem,
        }
    }

    pub fn text(&self, name: &'static str) -> Result<&'a str, DecodeError> {
        match self.item.get(name) {
            None => Err(self.error(name, "missing")),
            Some(AttributeValue::S(text)) => Ok(text),
            Some(_) => Err(self.error(name, "not a string")),
        }
    }

    pub fn opt_text(&self, name: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text)),
            Some(_) => Err(self.error(name, "not a string")),
        }
    }

    pub fn int(&self, name: &'static str) -> Result<i64, DecodeError> {
        self.opt_int(name)?
            .ok_or_else(|| self.error(name, "missing"))
    }

    pub fn opt_int(&self, name: &'static str) -> Result<Option<i64>, DecodeError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => text
                .parse()
                .map(Some)
                .map_err(|_| self.error(name, "not a whole number of minor units")),
            Some(_) => Err(self.error(name, "not a number")),
        }
    }

    pub fn flag(&self, name: &'static str) -> Result<bool, DecodeError> {
        match self.item.get(name) {
            None => Ok(false),
            Some(AttributeValue::Bool(value)) => Ok(*value),
            Some(_) => Err(self.error(name, "not a boolean")),
        }
    }

    pub fn user(&self, name: &'static str) -> Result<UserId, DecodeError> {
        UserId::parse(self.text(name)?).ok_or_else(|| self.error(name, "not a user id"))
    }

    pub fn currency(&self, name: &'static str) -> Result<Currency, DecodeError> {
        Currency::parse(self.text(name)?).ok_or_else(|| self.error(name, "not a currency"))
    }

    pub fn status(&self, name: &'static str) -> Result<PaymentStatus, DecodeError> {
        PaymentStatus::parse(self.text(name)?).ok_or_else(|| self.error(name, "not a status"))
    }
}

pub fn package_from_item(item: &Item) -> Result<CreditPackage, DecodeError> {
    let f = Fields::of(item);
    Ok(CreditPackage {
        id: f.text("id")?.to_owned(),
        name: f.opt_text("name")?.unwrap_or_default().to_owned(),
        description: f.opt_text("description")?.unwrap_or_default().to_owned(),
        amount: f.int("amount")?,
        credits: f.int("credits")?,
        currency: f.currency("currency")?,
        active: f.flag("active")?,
    })
}

pub fn package_to_item(keys: &Keys, package: &CreditPackage) -> Item {
    let mut item = keys.package(&package.id);
    item.insert("id".into(), s(&package.id));
    item.insert("name".into(), s(&package.name));
    item.insert("description".into(), s(&package.description));
    item.insert("amount".into(), n(package.amount));
    item.insert("credits".into(), n(package.credits));
    item.insert("currency".into(), s(package.currency.as_str()));
    item.insert("active".into(), AttributeValue::Bool(package.active));
    item
}

/// The attributes a new payment is written with.
pub fn payment_to_item(keys: &Keys, payment: &PaymentRecord) -> Item {
    let mut item = keys.payment(&payment.intent_id);
    item.insert("intentId".into(), s(&payment.intent_id));
    item.insert("userId".into(), s(payment.user_id.as_str()));
    item.insert("packageId".into(), s(&payment.package_id));
    item.insert("amount".into(), n(payment.amount));
    item.insert("currency".into(), s(payment.currency.as_str()));
    item.insert("credits".into(), n(payment.credits));
    item.insert("status".into(), s(payment.status.as_str()));
    item.insert("createdAt".into(), n(payment.created_at_ms));
    item.insert("description".into(), s(&payment.description));
    item.insert("rev".into(), n(payment.rev));
    item.insert("applied".into(), n(payment.applied));
    item.insert("gsi1pk".into(), s(keys.history_pk(&payment.user_id)));
    item.insert(
        "gsi1sk".into(),
        s(super::keys::history_sk(
            payment.created_at_ms,
            &payment.intent_id,
        )),
    );
    // A project's payments are listed for its developer (the default project's are not).
    if !keys.prefix().is_empty() {
        item.insert("gsi2pk".into(), s(keys.payments_pk()));
        item.insert(
            "gsi2sk".into(),
            s(super::keys::history_sk(
                payment.created_at_ms,
                &payment.intent_id,
            )),
        );
    }
    item
}

pub fn payment_from_item(item: &Item) -> Result<PaymentRecord, DecodeError> {
    let f = Fields::of(item);
    let credited = f.opt_int("creditedAt")?.is_some();
    let credits = f.int("credits")?;
    let amount = f.int("amount")?;
    let facts = facts_from_item(&f, amount)?;
    // Earlier versions kept counters instead of `applied`: credits less what they took.
    let applied = match f.opt_int("applied")? {
        Some(applied) => applied,
        None if credited => credits
            .saturating_sub(f.opt_int("refundClawed")?.unwrap_or(0))
            .saturating_sub(f.opt_int("disputeHeld")?.unwrap_or(0)),
        None => 0,
    };
    Ok(PaymentRecord {
        intent_id: f.text("intentId")?.to_owned(),
        user_id: f.user("userId")?,
        package_id: f.text("packageId")?.to_owned(),
        amount,
        currency: f.currency("currency")?,
        credits,
        status: f.status("status")?,
        created_at_ms: f.int("createdAt")?,
        description: f.opt_text("description")?.unwrap_or_default().to_owned(),
        credited,
        attention: f.opt_text("attention")?.map(str::to_owned),
        facts,
        applied,
        rev: f.opt_int("rev")?.unwrap_or(0),
    })
}

fn facts_from_item(f: &Fields<'_>, amount: i64) -> Result<ChargeFacts, DecodeError> {
    let dispute = match f.opt_text("disputeState")? {
        None => None,
        Some(state) => {
            let (withdrawn, reinstated) = match state {
                "open" => (false, false),
                "withdrawn" => (true, false),
                "reinstated" => (true, true),
                _ => return Err(f.error("disputeState", "not a dispute state")),
            };
            Some(DisputeFacts {
                id: f.opt_text("disputeId")?.unwrap_or_default().to_owned(),
                amount: f.opt_int("disputeAmount")?.unwrap_or(amount),
                withdrawn,
                reinstated,
            })
        }
    };
    let mut failed_refunds = BTreeMap::new();
    match f.item.get("failedRefunds") {
        None => {}
        Some(AttributeValue::M(map)) => {
            for (id, value) in map {
                let AttributeValue::M(fields) = value else {
                    return Err(f.error("failedRefunds", "not a map of refunds"));
                };
                let inner = Fields::of(fields);
                let refund = FailedRefund {
                    amount: inner
                        .int("amount")
                        .map_err(|_| f.error("failedRefunds", "missing a refund's amount"))?,
                    at: inner
                        .int("at")
                        .map_err(|_| f.error("failedRefunds", "missing a refund's time"))?,
                };
                failed_refunds.insert(id.clone(), refund);
            }
        }
        Some(_) => return Err(f.error("failedRefunds", "not a map")),
    }
    Ok(ChargeFacts {
        refunded: f.opt_int("refundedAmount")?.unwrap_or(0),
        refunded_at: f.opt_int("refundedAt")?.unwrap_or(0),
        failed_refunds,
        dispute,
    })
}

/// The attributes that store a payment's facts (set on every lifecycle write). An empty map is
/// never written (`failedRefunds` is left out when there are none): DynamoDB Local's stream
/// renders an empty map as `{}`, which the AWS SDK cannot read.
pub fn facts_to_attributes(facts: &ChargeFacts) -> Vec<(&'static str, AttributeValue)> {
    let failed: Item = facts
        .failed_refunds
        .iter()
        .map(|(id, refund)| {
            let fields = HashMap::from([
                ("amount".to_string(), n(refund.amount)),
                ("at".to_string(), n(refund.at)),
            ]);
            (id.clone(), AttributeValue::M(fields))
        })
        .collect();
    let mut attributes = vec![
        ("refundedAmount", n(facts.refunded)),
        ("refundedAt", n(facts.refunded_at)),
    ];
    if !failed.is_empty() {
        attributes.push(("failedRefunds", AttributeValue::M(failed)));
    }
    if let Some(dispute) = &facts.dispute {
        let state = match (dispute.withdrawn, dispute.reinstated) {
            (_, true) => "reinstated",
            (true, false) => "withdrawn",
            (false, false) => "open",
        };
        attributes.push(("disputeState", s(state)));
        attributes.push(("disputeId", s(&dispute.id)));
        attributes.push(("disputeAmount", n(dispute.amount)));
    }
    attributes
}

/// A new immutable ledger entry.
pub struct NewEntry<'a> {
    pub user: &'a UserId,
    pub entry_id: &'a str,
    pub kind: EntryKind,
    /// Signed credits, minor units.
    pub amount: i64,
    pub currency: &'a Currency,
    pub created_at_ms: i64,
}

/// The attributes every entry has; callers add the ones of their kind.
pub fn entry_to_item(keys: &Keys, entry: &NewEntry<'_>) -> Item {
    let mut item = keys.entry(entry.user, entry.entry_id);
    item.insert("kind".into(), s(entry.kind.as_str()));
    item.insert("entryId".into(), s(entry.entry_id));
    item.insert("amount".into(), n(entry.amount));
    item.insert("currency".into(), s(entry.currency.as_str()));
    item.insert("createdAt".into(), n(entry.created_at_ms));
    // Every entry in time order, for its developer's account lookup.
    item.insert("gsi2pk".into(), s(keys.ledger_pk(entry.user)));
    item.insert(
        "gsi2sk".into(),
        s(super::keys::history_sk(entry.created_at_ms, entry.entry_id)),
    );
    item
}

/// A history line: a payment, or a grant entry.
pub fn history_from_item(item: &Item) -> Result<HistoryItem, DecodeError> {
    let f = Fields::of(item);
    if let Some(kind) = f
        .opt_text("kind")?
        .and_then(EntryKind::parse)
        .filter(|k| k.shows_in_history())
    {
        return Ok(HistoryItem::Grant(Grant {
            entry_id: f.text("entryId")?.to_owned(),
            kind,
            credits: f.int("amount")?,
            currency: f.currency("currency")?,
            reason: f.opt_text("reason")?.unwrap_or_default().to_owned(),
            captured: f.opt_int("captured")?,
            created_at_ms: f.int("createdAt")?,
        }));
    }
    payment_from_item(item).map(HistoryItem::Payment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_refunded_payment() -> Item {
        let mut item = super::super::keys::Keys::default().payment("pi_1");
        for (name, value) in [
            ("intentId", s("pi_1")),
            ("userId", s("u")),
            ("packageId", s("standard")),
            ("amount", n(1500)),
            ("currency", s("usd")),
            ("credits", n(1650)),
            ("status", s("disputed")),
            ("createdAt", n(1)),
            ("creditedAt", n(2)),
            ("rev", n(3)),
            ("refundedAmount", n(500)),
            ("refundClawed", n(550)),
            ("disputeState", s("withdrawn")),
            ("disputeHeld", n(1100)),
            ("disputeId", s("dp_1")),
        ] {
            item.insert(name.into(), value);
        }
        item
    }

    #[test]
    fn payments_written_by_the_previous_version_decode_with_their_counters() {
        let payment = payment_from_item(&legacy_refunded_payment()).unwrap();
        assert!(payment.credited);
        assert_eq!(payment.applied, 0);
        assert_eq!(payment.facts.refunded, 500);
        let dispute = payment.facts.dispute.unwrap();
        assert!(dispute.holds_funds());
        assert_eq!(dispute.amount, 1500);
    }

    #[test]
    fn a_malformed_item_names_the_attribute() {
        let mut item = legacy_refunded_payment();
        item.insert("amount".into(), s("lots"));
        let err = payment_from_item(&item).unwrap_err();
        assert_eq!(err.attribute, "amount");
        assert_eq!(err.key, "PAY#pi_1/PAY");
        item.remove("amount");
        assert_eq!(payment_from_item(&item).unwrap_err().problem, "missing");
    }

    #[test]
    fn no_empty_map_is_ever_written() {
        let facts = ChargeFacts::default();
        let attributes = facts_to_attributes(&facts);
        assert!(attributes.iter().all(|(name, _)| *name != "failedRefunds"));
        assert!(attributes
            .iter()
            .all(|(_, value)| !matches!(value, AttributeValue::M(map) if map.is_empty())));
    }

    #[test]
    fn facts_round_trip_through_attributes() {
        let mut item = legacy_refunded_payment();
        let mut facts = payment_from_item(&item).unwrap().facts;
        facts
            .failed_refunds
            .insert("re_1".into(), FailedRefund { amount: 100, at: 9 });
        facts.refunded_at = 7;
        for (name, value) in facts_to_attributes(&facts) {
            item.insert(name.into(), value);
        }
        assert_eq!(payment_from_item(&item).unwrap().facts, facts);
    }
}
