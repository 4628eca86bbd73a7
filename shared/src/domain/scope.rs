//! Who owns a piece of data: a project and a mode (test or live). The edge resolves the scope
//! once (from the route, the `project_id` and `test_mode` parameters, or the webhook path); after
//! that every store and Stripe call takes it, so one project's or mode's data is never reachable
//! from another.

use std::fmt;

/// Stripe's two worlds. Keys, objects and webhooks of one never touch the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub const ALL: [Self; 2] = [Self::Test, Self::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }

    /// `test` or `live`, as in the webhook path.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "test" => Some(Self::Test),
            "live" => Some(Self::Live),
            _ => None,
        }
    }

    /// The `test_mode` query parameter: `true`/`false` (also `1`/`0`).
    pub fn from_test_mode(text: &str) -> Option<Self> {
        match text {
            "true" | "1" => Some(Self::Test),
            "false" | "0" => Some(Self::Live),
            _ => None,
        }
    }

    /// The mode a Stripe secret or restricted key belongs to, from its prefix.
    pub fn of_secret_key(key: &str) -> Option<Self> {
        if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(Self::Test)
        } else if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(Self::Live)
        } else {
            None
        }
    }

    /// The mode of a publishable key, from its prefix.
    pub fn of_publishable_key(key: &str) -> Option<Self> {
        if key.starts_with("pk_test_") {
            Some(Self::Test)
        } else if key.starts_with("pk_live_") {
            Some(Self::Live)
        } else {
            None
        }
    }

    pub fn both() -> [Self; 2] {
        [Self::Test, Self::Live]
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project id: 1–64 characters of lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit. Safe in keys, secret names and URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

/// The project the deployment's own secret configures: the one end-user routes use without
/// `project_id`, whose data keeps the keys it had before projects existed.
pub const DEFAULT_PROJECT: &str = "default";

impl ProjectId {
    pub fn parse(text: &str) -> Option<Self> {
        let first_ok = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok = first_ok
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_owned()))
    }

    pub fn default_project() -> Self {
        Self(DEFAULT_PROJECT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_PROJECT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A project in one mode: the owner of payments, balances, ledgers and packages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub project: ProjectId,
    pub mode: Mode,
}

impl Scope {
    pub fn new(project: ProjectId, mode: Mode) -> Self {
        Self { project, mode }
    }

    /// The prefix of every key this scope owns. The default project in the mode of the
    /// deployment's own key keeps the unprefixed keys of the single-project layout, so tables
    /// written before projects existed need no migration.
    pub fn key_prefix(&self, default_mode: Mode) -> String {
        if self.project.is_default() && self.mode == default_mode {
            String::new()
        } else {
            format!("P#{}#{}#", self.project, self.mode)
        }
    }

    /// The scope that owns keys starting with `prefix` (as `key_prefix` made it).
    pub fn from_key_prefix(prefix: &str, default_mode: Mode) -> Option<Self> {
        if prefix.is_empty() {
            return Some(Self::new(ProjectId::default_project(), default_mode));
        }
        let inner = prefix.strip_prefix("P#")?.strip_suffix('#')?;
        let (project, mode) = inner.split_once('#')?;
        Some(Self::new(ProjectId::parse(project)?, Mode::parse(mode)?))
    }
}

impl Scope {
    /// Whether a Stripe object whose `coffer_scope` metadata is `made_in` belongs to this
    /// scope. Projects and modes may share one Stripe account, so every one of their webhooks
    /// sees every object: an object made for another scope is never applied here. With
    /// `required`, an object without the mark (not made by Coffer) does not belong either.
    pub fn owns(&self, made_in: Option<&str>, required: bool) -> bool {
        self.owns_in(None, made_in, required)
    }

    /// The mark Coffer puts on the Stripe objects it makes for this scope in `deployment`:
    /// `project/mode`, and `@deployment` when the deployment has a name.
    pub fn mark(&self, deployment: Option<&str>) -> String {
        match deployment {
            Some(name) => format!("{self}@{name}"),
            None => self.to_string(),
        }
    }

    /// [`Scope::owns`] for a named deployment: an object marked for another deployment sharing
    /// the Stripe account is not this one's. A mark without a deployment (made before marks
    /// named one) is still read as this scope's, so that payments begun before an upgrade are
    /// credited.
    pub fn owns_in(&self, deployment: Option<&str>, made_in: Option<&str>, required: bool) -> bool {
        match made_in {
            Some(text) => text == self.mark(deployment) || text == self.to_string(),
            None => !required,
        }
    }
}

/// A deployment's name as it may appear in a mark: 1 to 128 letters, digits or dashes.
pub fn valid_deployment(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_belongs_to_the_scope_it_was_made_in_only() {
        let alpha = Scope::new(ProjectId::parse("alpha").unwrap(), Mode::Test);
        assert!(alpha.owns(Some("alpha/test"), true));
        // Two deployments on one Stripe account: each owns its own marks only.
        assert_eq!(alpha.mark(Some("stack-a")), "alpha/test@stack-a");
        assert!(alpha.owns_in(Some("stack-a"), Some("alpha/test@stack-a"), true));
        assert!(!alpha.owns_in(Some("stack-a"), Some("alpha/test@stack-b"), true));
        assert!(!alpha.owns(Some("alpha/test@stack-b"), true));
        assert!(
            alpha.owns_in(Some("stack-a"), Some("alpha/test"), true),
            "made before marks named one"
        );
        assert!(
            valid_deployment("coffer-prod-1") && !valid_deployment("a b") && !valid_deployment("")
        );
        assert!(!alpha.owns(Some("alpha/live"), false));
        assert!(!alpha.owns(Some("beta/test"), false));
        assert!(!alpha.owns(Some("alpha/test "), false));
        assert!(!alpha.owns(None, true));
        assert!(alpha.owns(None, false));
    }

    #[test]
    fn project_ids_are_restricted_to_safe_characters() {
        for ok in ["acme", "a", "shop-2", "x_y", &"a".repeat(64)] {
            assert!(ProjectId::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "-a", "Acme", "a/b", "a#b", "a b", "ä", &"a".repeat(65)] {
            assert!(ProjectId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn modes_come_from_key_prefixes_and_parameters() {
        assert_eq!(Mode::of_secret_key("sk_test_123"), Some(Mode::Test));
        assert_eq!(Mode::of_secret_key("rk_live_123"), Some(Mode::Live));
        assert_eq!(Mode::of_secret_key("pk_test_123"), None);
        assert_eq!(Mode::of_publishable_key("pk_live_1"), Some(Mode::Live));
        assert_eq!(Mode::from_test_mode("true"), Some(Mode::Test));
        assert_eq!(Mode::from_test_mode("yes"), None);
        assert_eq!(Mode::parse("live"), Some(Mode::Live));
        assert_eq!(Mode::parse("Live"), None);
    }

    #[test]
    fn only_the_default_project_in_its_own_mode_keeps_the_unprefixed_keys() {
        let default_test = Scope::new(ProjectId::default_project(), Mode::Test);
        assert_eq!(default_test.key_prefix(Mode::Test), "");
        for scope in [
            default_test.clone(),
            Scope::new(ProjectId::default_project(), Mode::Live),
            Scope::new(ProjectId::parse("acme").unwrap(), Mode::Test),
        ] {
            let prefix = scope.key_prefix(Mode::Test);
            assert_eq!(Scope::from_key_prefix(&prefix, Mode::Test), Some(scope));
        }
        assert_eq!(Scope::from_key_prefix("P#Bad#test#", Mode::Test), None);
        assert_eq!(default_test.key_prefix(Mode::Live), "P#default#test#");
        let acme = Scope::new(ProjectId::parse("acme").unwrap(), Mode::Live);
        assert_eq!(acme.key_prefix(Mode::Live), "P#acme#live#");
    }
}
