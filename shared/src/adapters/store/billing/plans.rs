//! A scope's plans, its settings and its customer-portal configuration.

use super::*;

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
