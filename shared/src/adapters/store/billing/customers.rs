//! The one Stripe customer of each account: claimed before it is made, linked once.

use super::*;

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
