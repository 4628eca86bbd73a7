//! The project registry, outside every scope: who owns a project, and its configuration per mode
//! (never a key). One partition per project; gsi1 lists a developer's projects.
//!
//! | item         | pk               | sk             | gsi1                              |
//! |--------------|------------------|----------------|-----------------------------------|
//! | project      | `PROJECT#<id>`   | `META`         | `DEV#<owner>#PROJECTS` / `<id>`   |
//! | mode config  | `PROJECT#<id>`   | `MODE#<mode>`  |                                   |

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem, Update};

use super::codec::{n, s, Fields, Item};
use super::keys::{key, GSI1, GSI2};
use super::{Store, StoreError};
use crate::domain::projects::{ModeConfig, Project};
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::{Mode, ProjectId};

/// The gsi2 partition that lists every project.
const PROJECT_REGISTRY: &str = "PROJECTS";

fn project_pk(id: &ProjectId) -> String {
    format!("PROJECT#{id}")
}

fn developer_pk(owner: &UserId) -> String {
    format!("DEV#{}#PROJECTS", owner.as_str())
}

/// What claiming a project found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectClaim {
    /// It did not exist: it is the owner's now, made by this claim.
    Created,
    /// It was already the owner's.
    Owned,
    /// It belongs to someone else.
    Taken,
}

/// What saving a mode's configuration did.
#[derive(Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved,
    /// The project exists and belongs to someone else (or was created by someone else first).
    NotOwner,
}

impl Store {
    /// A project with its modes; `None` when it does not exist.
    pub async fn project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError> {
        let items = self.partition(&project_pk(id)).await?;
        project_from_items(id, &items)
    }

    /// Every project of the deployment, by id (the registry partition of gsi2: each project's
    /// `META` item is in it from its first save). For jobs that act in every scope.
    pub async fn all_project_ids(&self) -> Result<Vec<ProjectId>, StoreError> {
        let listed = self.index_partition(GSI2, PROJECT_REGISTRY).await?;
        Ok(listed
            .iter()
            .filter_map(|item| Fields::of(item).text("projectId").ok())
            .filter_map(ProjectId::parse)
            .collect())
    }

    /// Puts in the registry every project saved before it existed (an upgrade, once; safe to
    /// run again): one Scan for project items without a registry key, then one update each.
    /// An operator's command, never a function's. The number registered.
    pub async fn register_unlisted_projects(&self) -> Result<usize, StoreError> {
        let unlisted: Vec<Item> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(
                "begins_with(pk, :project) AND sk = :meta AND attribute_not_exists(gsi2pk)",
            )
            .expression_attribute_values(":project", s("PROJECT#"))
            .expression_attribute_values(":meta", s("META"))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(StoreError::from_sdk)?;
        let mut registered = 0;
        for item in &unlisted {
            let Some(id) = Fields::of(item)
                .text("projectId")
                .ok()
                .and_then(ProjectId::parse)
            else {
                continue;
            };
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(project_pk(&id), "META")))
                .update_expression("SET gsi2pk = :registry, gsi2sk = :id")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":registry", s(PROJECT_REGISTRY))
                .expression_attribute_values(":id", s(id.as_str()))
                .send()
                .await;
            if super::written(result)? {
                registered += 1;
            }
        }
        Ok(registered)
    }

    /// The projects a developer owns, oldest id first.
    pub async fn projects_of(&self, owner: &UserId) -> Result<Vec<Project>, StoreError> {
        let listed = self.index_partition(GSI1, &developer_pk(owner)).await?;
        let mut projects = Vec::new();
        for item in &listed {
            let id = Fields::of(item).text("projectId")?;
            let Some(id) = ProjectId::parse(id) else {
                continue;
            };
            if let Some(project) = self.project(&id).await? {
                projects.push(project);
            }
        }
        Ok(projects)
    }

    /// Creates the project for `owner` if it does not exist, and says whether it did.
    /// Called before a project's secret is written, so that nobody writes another's secret.
    pub async fn claim_project(
        &self,
        id: &ProjectId,
        owner: &UserId,
    ) -> Result<ProjectClaim, StoreError> {
        let claim = self.claim_update(id, owner)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(claim.key))
            .set_update_expression(Some(claim.update_expression))
            .set_condition_expression(claim.condition_expression)
            .set_expression_attribute_values(claim.expression_attribute_values)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            // Nothing was there before (no old item with an owner): this claim made it.
            Ok(output) => Ok(
                match output
                    .attributes
                    .is_some_and(|old| old.contains_key("ownerId"))
                {
                    true => ProjectClaim::Owned,
                    false => ProjectClaim::Created,
                },
            ),
            Err(err) => match super::written::<(), _, _>(Err(err))? {
                false => Ok(ProjectClaim::Taken),
                true => Ok(ProjectClaim::Owned),
            },
        }
    }

    /// Undoes a claim that made a project when nothing was configured after it: the project
    /// goes, in one transaction that checks it is still the owner's and has no mode. `false`:
    /// something was configured meanwhile, and the project stays.
    pub async fn release_project(
        &self,
        id: &ProjectId,
        owner: &UserId,
    ) -> Result<bool, StoreError> {
        let pk = project_pk(id);
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "META")))
            .condition_expression("ownerId = :owner")
            .expression_attribute_values(":owner", s(owner.as_str()))
            .build()
            .map_err(StoreError::build)?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        for mode in Mode::both() {
            let unconfigured = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(&pk, format!("MODE#{mode}"))))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(StoreError::build)?;
            items.push(
                TransactWriteItem::builder()
                    .condition_check(unconfigured)
                    .build(),
            );
        }
        Ok(self.transact(items).await?.is_ok())
    }

    /// The update that creates a project for `owner`, or only checks that it is the owner's.
    fn claim_update(&self, id: &ProjectId, owner: &UserId) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(project_pk(id), "META")))
            .update_expression(
                "SET ownerId = if_not_exists(ownerId, :owner), \
                 createdAt = if_not_exists(createdAt, :now), projectId = :id, \
                 gsi1pk = if_not_exists(gsi1pk, :devpk), gsi1sk = :id, \
                 gsi2pk = :registry, gsi2sk = :id",
            )
            .condition_expression("attribute_not_exists(pk) OR ownerId = :owner")
            .expression_attribute_values(":owner", s(owner.as_str()))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":id", s(id.as_str()))
            .expression_attribute_values(":devpk", s(developer_pk(owner)))
            .expression_attribute_values(":registry", s(PROJECT_REGISTRY))
            .build()
            .map_err(StoreError::build)
    }

    /// Saves a mode's configuration, creating the project for `owner` if it does not exist,
    /// in one transaction: a project is never half-created, and never taken from its owner.
    pub async fn save_mode_config(
        &self,
        id: &ProjectId,
        owner: &UserId,
        mode: Mode,
        config: &ModeConfig,
    ) -> Result<SaveOutcome, StoreError> {
        let now = now_ms();
        let pk = project_pk(id);
        // Creates the project if missing; else only checks the owner.
        let claim = self.claim_update(id, owner)?;
        let mut item = key(&pk, format!("MODE#{mode}"));
        item.insert("maskedKey".into(), s(&config.masked_key));
        item.insert("publishableKey".into(), s(&config.publishable_key));
        item.insert(
            "webhookSecretSet".into(),
            aws_sdk_dynamodb::types::AttributeValue::Bool(config.webhook_secret_set),
        );
        item.insert(
            "active".into(),
            aws_sdk_dynamodb::types::AttributeValue::Bool(config.active),
        );
        item.insert("updatedAt".into(), n(now));
        if !config.allowed_principals.is_empty() {
            item.insert(
                "allowedPrincipals".into(),
                aws_sdk_dynamodb::types::AttributeValue::L(
                    config.allowed_principals.iter().map(s).collect(),
                ),
            );
        }
        let put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder().update(claim).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        Ok(match self.transact(items).await? {
            Ok(()) => SaveOutcome::Saved,
            Err(_) => SaveOutcome::NotOwner,
        })
    }

    /// Turns a configured mode on or off. `false` when the mode was never configured or the
    /// project is not the owner's.
    pub async fn set_mode_active(
        &self,
        id: &ProjectId,
        owner: &UserId,
        mode: Mode,
        active: bool,
    ) -> Result<bool, StoreError> {
        let pk = project_pk(id);
        let owner_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "META")))
            .condition_expression("ownerId = :owner")
            .expression_attribute_values(":owner", s(owner.as_str()))
            .build()
            .map_err(StoreError::build)?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, format!("MODE#{mode}"))))
            .update_expression("SET active = :active, updatedAt = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":active",
                aws_sdk_dynamodb::types::AttributeValue::Bool(active),
            )
            .expression_attribute_values(":now", n(now_ms()))
            .build()
            .map_err(StoreError::build)?;
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(owner_check)
                .build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        Ok(self.transact(items).await?.is_ok())
    }
}

fn project_from_items(id: &ProjectId, items: &[Item]) -> Result<Option<Project>, StoreError> {
    let Some(meta) = items
        .iter()
        .find(|i| super::codec::get_s(i, "sk") == Some("META"))
    else {
        return Ok(None);
    };
    let f = Fields::of(meta);
    let mut modes = BTreeMap::new();
    for mode in Mode::both() {
        let sk = format!("MODE#{mode}");
        if let Some(item) = items
            .iter()
            .find(|i| super::codec::get_s(i, "sk") == Some(sk.as_str()))
        {
            let m = Fields::of(item);
            modes.insert(
                mode,
                ModeConfig {
                    masked_key: m.text("maskedKey")?.to_owned(),
                    publishable_key: m.text("publishableKey")?.to_owned(),
                    webhook_secret_set: m.flag("webhookSecretSet")?,
                    active: m.flag("active")?,
                    updated_at_ms: m.int("updatedAt")?,
                    allowed_principals: match item.get("allowedPrincipals") {
                        Some(aws_sdk_dynamodb::types::AttributeValue::L(list)) => {
                            list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
                        }
                        _ => Vec::new(),
                    },
                },
            );
        }
    }
    Ok(Some(Project {
        id: id.clone(),
        owner: f.user("ownerId")?,
        created_at_ms: f.int("createdAt")?,
        modes,
    }))
}
