//! The wire types: the data every route answers with, as the handlers build it. With the
//! `openapi` feature they also describe themselves (utoipa), and `openapi::document` builds the
//! OpenAPI document from them, so the document cannot drift from what the handlers send.
//!
//! Field names are the contract's (camelCase). Money is shown in major units of its currency
//! (`Major`); inside Coffer it is always integer minor units.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::buckets::BucketKind;
use crate::domain::money::Currency;
#[cfg(feature = "openapi")]
use crate::domain::{
    plans::PlanKind, records::PaymentStatus, scope::Mode, subscriptions::SubscriptionStatus,
};

/// The domain's closed sets of names (statuses, modes, kinds) as string enums, from their own
/// lists.
#[cfg(feature = "openapi")]
macro_rules! names_schema {
    ($($ty:ty => $doc:literal),* $(,)?) => {$(
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($doc))
                    .enum_values(Some(<$ty>::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    )*};
}

#[cfg(feature = "openapi")]
names_schema! {
    PaymentStatus => "A payment's status.",
    SubscriptionStatus => "A subscription's status at Stripe.",
    Mode => "Stripe's test or live mode.",
    PlanKind => "How a plan is sold.",
}

/// An amount in major units of its currency, as a JSON number (`1500` cents → `15.0`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Major(serde_json::Value);

impl Major {
    pub fn of(currency: &Currency, minor: i64) -> Self {
        Self(currency.to_major(minor))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Major {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "An amount in major units of its currency (minor units inside Coffer).",
            ))
            .examples([serde_json::json!(15.0)])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Major {}

mod billing;
mod credits;
mod developers;
mod usage;

pub use billing::*;
pub use credits::*;
pub use developers::*;
pub use usage::*;

use crate::domain::ledger::PaymentRecord as Payment;
use crate::domain::packages::CreditPackage;
use crate::domain::plans::Plan;
use crate::domain::projects::{Project, ProjectSettings};
use crate::domain::records::{rfc3339, Balance, HistoryItem};
use crate::domain::scope::Scope;
use crate::domain::stats::StatsDelta;
use crate::domain::subscriptions::SubscriptionState;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn package_view_uses_major_units() {
        let package = CreditPackage {
            id: "small".into(),
            name: "Small".into(),
            description: String::new(),
            amount: 500,
            currency: Currency::usd(),
            credits: 500,
            active: true,
        };
        let json = serde_json::to_value(CreditPackageView::of(&package)).unwrap();
        assert_eq!(json["amount"], json!(5.0));
        assert_eq!(json["creditAmount"], json!(5.0));
        assert_eq!(json["isActive"], json!(true));
    }

    #[test]
    fn stats_show_credits_in_major_units_and_every_payment_status() {
        let mut counters = StatsDelta::default();
        counters.0.insert("credits_outstanding".into(), 900);
        counters.0.insert("revenue_usd".into(), 1500);
        counters.0.insert("revenue_nope1".into(), 7);
        let scope = Scope::new(
            crate::domain::scope::ProjectId::default_project(),
            crate::domain::scope::Mode::Test,
        );
        let shown =
            serde_json::to_value(ScopeStats::of(&scope, &counters, &Currency::usd())).unwrap();
        assert_eq!(shown["credits"]["outstanding"], json!(9.0));
        assert_eq!(shown["payments"]["succeeded"], json!(0));
        assert_eq!(shown["revenue"], json!({"usd": 15.0}));
        assert_eq!(shown["mode"], "test");
    }
}
