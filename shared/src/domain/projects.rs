//! Projects: an app that brings its own Stripe account, configured per mode by the developer who
//! owns it. Only what may be shown is kept here: keys live in Secrets Manager, never in a record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::records::UserId;
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
    /// The IAM principals (role or user ARNs) allowed on the internal routes in this mode.
    pub allowed_principals: Vec<String>,
}

impl Project {
    pub fn is_owned_by(&self, developer: &UserId) -> bool {
        &self.owner == developer
    }

    /// The mode's configuration if it takes payments.
    pub fn active_in(&self, mode: Mode) -> bool {
        self.modes.get(&mode).is_some_and(|config| config.active)
    }
}

/// A key shown as its prefix and last four characters: `sk_test_…wxyz`. Keys too short to hide
/// anything show only the prefix.
/// Whether `secret` has the shape of a Stripe webhook signing secret: `whsec_` and at least 32
/// letters or digits (Stripe's dashboard secrets have 32, `stripe listen`'s 64). A shorter one
/// could be guessed, and every forged event signed with it would be believed.
pub fn is_webhook_secret(secret: &str) -> bool {
    secret.strip_prefix("whsec_").is_some_and(|rest| {
        rest.len() >= MIN_WEBHOOK_SECRET_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The most IAM principals one project's mode may allow on the internal routes.
pub const MAX_ALLOWED_PRINCIPALS: usize = 20;

/// Whether `arn` names an IAM role or user that the internal routes can allow:
/// `arn:<partition>:iam::<12 digits>:role/…` or `…:user/…`. No wildcard: a principal is allowed
/// by its exact name (or as a session of the exact role).
pub fn is_principal_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    *prefix == "arn"
        && partition.starts_with("aws")
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (resource.starts_with("role/") || resource.starts_with("user/"))
        && resource.len() > 5
        && arn.len() <= 2048
        && !arn.contains('*')
        && !arn
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// The least number of characters after `whsec_` in a webhook signing secret.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 32;

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

/// A project's settings for its payments in one mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettings {
    /// Origins (`https://app.example.com`) that Checkout and portal redirects may go to.
    pub allowed_origins: Vec<String>,
    /// How long a `past_due` subscription keeps its plan's limits.
    pub past_due_grace_seconds: i64,
    /// A balance falling below this (minor units) publishes `credits.low`; `None`: never.
    #[serde(default)]
    pub credits_low_threshold: Option<i64>,
    /// How far above the threshold a balance must rise to arm `credits.low` again (and say
    /// `credits.recovered`); `None`: a tenth of the threshold.
    #[serde(default)]
    pub credits_low_margin: Option<i64>,
    /// The order spends take from buckets in; `None`: the default (priority, soonest expiry,
    /// promotional before paid, oldest).
    #[serde(default)]
    pub spend_order: Option<crate::domain::buckets::SpendOrder>,
    /// Auto-recharge's bounds; `None`: the project does not offer it.
    #[serde(default)]
    pub auto_recharge: Option<crate::domain::recharge::RechargeBounds>,
    /// Top-ups of an amount the buyer chooses, within bounds; `None`: packages and tiers only.
    #[serde(default)]
    pub custom_amounts: Option<crate::domain::packages::CustomAmounts>,
    /// How the end-user routes answer; `None`: the envelope.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// When set, every PaymentIntent made for a client to confirm (create-payment-intent without
    /// `paymentSheet`) answers with the customer and an ephemeral key for Stripe's PaymentSheet,
    /// made with this API version: for an app that never asks for them.
    #[serde(default)]
    pub payment_sheet_version: Option<String>,
}

/// How a project's end-user routes answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    /// `{"success": true, "data": …}` and `{"success": false, "error", "code"}` (the contract's).
    #[default]
    Envelope,
    /// The answer's own fields at the top level (with the names other backends' apps read) and
    /// `{"error": <a sentence>}`: for apps written against another backend.
    Plain,
}

impl ResponseFormat {
    pub const ALL: &'static [ResponseFormat] = &[ResponseFormat::Envelope, ResponseFormat::Plain];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Plain => "plain",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.as_str() == text)
    }
}

/// The grace when a project set none: three days.
pub const DEFAULT_PAST_DUE_GRACE_SECONDS: i64 = 3 * 24 * 3600;

impl Default for ProjectSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            past_due_grace_seconds: DEFAULT_PAST_DUE_GRACE_SECONDS,
            credits_low_threshold: None,
            credits_low_margin: None,
            spend_order: None,
            custom_amounts: None,
            auto_recharge: None,
            response_format: None,
            payment_sheet_version: None,
        }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lowercased; `None` for anything else.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Whether a redirect URL goes to one of the allowed origins (exact origin match).
pub fn redirect_allowed(url: &str, allowed_origins: &[String]) -> bool {
    url.len() <= 2048
        && origin_of(url).is_some_and(|origin| {
            allowed_origins
                .iter()
                .filter_map(|allowed| origin_of(allowed))
                .any(|allowed| allowed == origin)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_iam_roles_and_users_can_be_allowed() {
        assert!(is_principal_arn(
            "arn:aws:iam::123456789012:role/app-backend"
        ));
        assert!(is_principal_arn(
            "arn:aws:iam::123456789012:role/service/app"
        ));
        assert!(is_principal_arn("arn:aws-cn:iam::123456789012:user/ops"));
        for bad in [
            "arn:aws:iam::123456789012:role/*",
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:sts::123456789012:assumed-role/x/y",
            "arn:aws:iam::123456789012:group/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam:eu-west-1:123456789012:role/x",
            "app-backend",
            "",
        ] {
            assert!(!is_principal_arn(bad), "{bad}");
        }
    }

    #[test]
    fn webhook_secrets_need_stripes_length_and_alphabet() {
        assert!(is_webhook_secret("whsec_0123456789abcdefABCDEF0123456789"));
        assert!(is_webhook_secret(&format!("whsec_{}", "a1".repeat(32))));
        for weak in [
            "whsec_",
            "whsec_short",
            "whsec_0123456789abcdefABCDEF012345678", // 31
            "whsec_0123456789abcdefABCDEF01234567 8",
            "whsec_0123456789abcdefABCDEF012345678_",
            "0123456789abcdefABCDEF0123456789abcdef",
            "WHSEC_0123456789abcdefABCDEF0123456789",
        ] {
            assert!(!is_webhook_secret(weak), "{weak}");
        }
    }

    #[test]
    fn masked_keys_keep_the_prefix_and_the_last_four_only() {
        assert_eq!(mask_key("sk_test_51Habcdefghijwxyz"), "sk_test_…wxyz");
        // Built at run time, so that no key-shaped literal sits in the source.
        let restricted = ["rk", "live", "notakey0000cdef"].join("_");
        assert_eq!(mask_key(&restricted), "rk_live_…cdef");
        assert_eq!(mask_key("sk_test_short"), "sk_test_…");
        assert_eq!(mask_key("weird"), "…");
    }

    #[test]
    fn redirects_must_match_an_allowed_origin_exactly() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(redirect_allowed("https://app.example.com/ok?x=1", &allowed));
        assert!(redirect_allowed("HTTPS://APP.example.com", &allowed));
        for url in [
            "https://app.example.com.evil.net/",
            "https://evil.net/?https://app.example.com",
            "http://app.example.com/",
            "https://user@app.example.com/",
            "javascript:alert(1)",
            "//app.example.com/",
            "",
        ] {
            assert!(!redirect_allowed(url, &allowed), "{url}");
        }
        assert!(!redirect_allowed("https://app.example.com/", &[]));
    }
}
