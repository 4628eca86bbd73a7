//! Credit packages, and the one read that create-payment-intent makes: the package together with
//! the client's idempotency record.

use super::codec::{get_s, package_from_item, package_to_item, Fields, Item};
use super::{Store, StoreError};
use crate::domain::packages::CreditPackage;

/// The remembered answer to a create-payment-intent call.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyRecord {
    pub package_id: String,
    pub intent_id: String,
}

impl IdempotencyRecord {
    pub(super) fn from_item(item: &Item) -> Result<Self, super::DecodeError> {
        let f = Fields::of(item);
        Ok(Self {
            package_id: f.text("packageId")?.to_owned(),
            intent_id: f.text("intentId")?.to_owned(),
        })
    }
}

impl Store {
    /// Every stored package (active or not), one Query.
    pub async fn list_packages(&self) -> Result<Vec<CreditPackage>, StoreError> {
        let items = self.partition(&self.keys.packages_pk()).await?;
        Ok(items
            .iter()
            .map(package_from_item)
            .collect::<Result<_, _>>()?)
    }

    pub async fn put_package(&self, package: &CreditPackage) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(package_to_item(&self.keys, package)))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// A plan and, when a client key is given, its idempotency record: one BatchGetItem.
    pub async fn plan_and_idempotency(
        &self,
        plan_id: &str,
        idempotency_hash: Option<&str>,
    ) -> Result<
        (
            Option<crate::domain::plans::Plan>,
            Option<IdempotencyRecord>,
        ),
        StoreError,
    > {
        let mut wanted = vec![self.keys.plan(plan_id)];
        if let Some(hash) = idempotency_hash {
            wanted.push(self.keys.idempotency(hash));
        }
        let found = self.get_many(wanted).await?;
        let plans_pk = self.keys.plans_pk();
        let plan = found
            .iter()
            .find(|item| get_s(item, "pk") == Some(plans_pk.as_str()))
            .map(super::billing::plan_from_item)
            .transpose()?;
        let remembered = found
            .iter()
            .find(|item| get_s(item, "pk") != Some(plans_pk.as_str()))
            .map(IdempotencyRecord::from_item)
            .transpose()?;
        Ok((plan, remembered))
    }

    /// The package and, when a client key is given, its idempotency record: one BatchGetItem.
    pub async fn package_and_idempotency(
        &self,
        package_id: &str,
        idempotency_hash: Option<&str>,
    ) -> Result<(Option<CreditPackage>, Option<IdempotencyRecord>), StoreError> {
        let mut wanted = vec![self.keys.package(package_id)];
        if let Some(hash) = idempotency_hash {
            wanted.push(self.keys.idempotency(hash));
        }
        let found = self.get_many(wanted).await?;
        let package = found
            .iter()
            .find(|item| get_s(item, "pk") == Some(self.keys.packages_pk().as_str()))
            .map(package_from_item)
            .transpose()?;
        let record = found
            .iter()
            .find(|item| get_s(item, "sk") == Some("IDEM"))
            .map(IdempotencyRecord::from_item)
            .transpose()?;
        Ok((package, record))
    }
}
