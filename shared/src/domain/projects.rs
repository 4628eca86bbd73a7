//! Projects: an app that brings its own Stripe account, configured per mode by the developer who
//! owns it. Only what may be shown is kept here: keys live in Secrets Manager, never in a record.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::domain::records::{rfc3339, UserId};
use crate::domain::scope::{Mode, ProjectId};

/// A project and who owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub owner: UserId,
    pub created_at_ms: i64,
    /// Its configuration per mode (absent: never configured in that mode).
    pub modes: BTreeMap<Mode, ModeConfig>,
}

/// A project's Stripe configuration in one mode, as it may be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeConfig {
    /// `sk_test_…wxyz`: the prefix and the last four characters.
    pub masked_key: String,
    pub publishable_key: String,
    pub webhook_secret_set: bool,
    /// False after DELETE: no new payments; webhooks are still applied.
    pub active: bool,
    pub updated_at_ms: i64,
}

impl Project {
    pub fn is_owned_by(&self, developer: &UserId) -> bool {
        &self.owner == developer
    }

    /// The mode's configuration if it takes payments.
    pub fn active_in(&self, mode: Mode) -> bool {
        self.modes.get(&mode).is_some_and(|config| config.active)
    }

    /// The developer view of one mode.
    pub fn mode_json(&self, mode: Mode) -> Value {
        match self.modes.get(&mode) {
            None => json!({
                "projectId": self.id.as_str(),
                "mode": mode.as_str(),
                "testMode": mode == Mode::Test,
                "configured": false,
                "isActive": false,
                "webhookSecretSet": false,
            }),
            Some(config) => json!({
                "projectId": self.id.as_str(),
                "mode": mode.as_str(),
                "testMode": mode == Mode::Test,
                "configured": true,
                "isActive": config.active,
                "secretKey": config.masked_key,
                "publishableKey": config.publishable_key,
                "webhookSecretSet": config.webhook_secret_set,
                "updatedAt": rfc3339(config.updated_at_ms),
            }),
        }
    }

    /// The list view: the project and its status per mode.
    pub fn summary_json(&self) -> Value {
        json!({
            "projectId": self.id.as_str(),
            "createdAt": rfc3339(self.created_at_ms),
            "test": self.mode_json(Mode::Test),
            "live": self.mode_json(Mode::Live),
        })
    }
}

/// A key shown as its prefix and last four characters: `sk_test_…wxyz`. Keys too short to hide
/// anything show only the prefix.
pub fn mask_key(key: &str) -> String {
    let prefix_len = key.match_indices('_').nth(1).map_or(0, |(at, _)| at + 1);
    let (prefix, rest) = key.split_at(prefix_len.min(key.len()));
    let tail: String = if rest.chars().count() >= 12 {
        let skip = rest.chars().count() - 4;
        rest.chars().skip(skip).collect()
    } else {
        String::new()
    };
    format!("{prefix}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_keys_keep_the_prefix_and_the_last_four_only() {
        assert_eq!(mask_key("sk_test_51Habcdefghijwxyz"), "sk_test_…wxyz");
        assert_eq!(mask_key("rk_live_0123456789abcdef"), "rk_live_…cdef");
        assert_eq!(mask_key("sk_test_short"), "sk_test_…");
        assert_eq!(mask_key("weird"), "…");
    }
}
