//! What a developer reads and manages across their projects: the scopes (project and mode)
//! they configured, each scope's subscriptions, counters, payments (merged across scopes, newest
//! first, with a cursor bound to the developer) and credit packages.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::adapters::store::valid_boundary;
use crate::domain::idempotency::hash_parts;
use crate::domain::ledger::PaymentRecord;
use crate::domain::packages::CreditPackage;
use crate::domain::records::{PaymentStatus, UserId};
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::domain::stats::StatsDelta;
use crate::domain::subscriptions::SubscriptionState;
use crate::services::Failure;
use crate::App;

/// The most subscriptions a listing shows (most recently changed first).
pub const SUBSCRIPTIONS_SHOWN: usize = 100;

/// The developer's scopes: each mode each of their projects was configured in, narrowed to one
/// project and one mode when asked.
pub async fn scopes(
    app: &App,
    developer: &UserId,
    only_project: Option<&ProjectId>,
    only_mode: Option<Mode>,
) -> Result<Vec<Scope>, Failure> {
    let mut scopes = Vec::new();
    for project in app.store.projects_of(developer).await? {
        if only_project.is_some_and(|id| id != &project.id) {
            continue;
        }
        for mode in Mode::both() {
            if only_mode.is_none_or(|m| m == mode) && project.modes.contains_key(&mode) {
                scopes.push(Scope::new(project.id.clone(), mode));
            }
        }
    }
    Ok(scopes)
}

/// A scope's subscriptions as last read from Stripe, most recently changed first.
pub async fn subscriptions(
    app: &App,
    scope: &Scope,
) -> Result<Vec<(UserId, SubscriptionState)>, Failure> {
    Ok(app
        .store_for(scope)
        .list_subscriptions(SUBSCRIPTIONS_SHOWN as i32)
        .await?)
}

/// A scope's counters (kept from the change stream).
pub async fn stats(app: &App, scope: &Scope) -> Result<StatsDelta, Failure> {
    Ok(app.store_for(scope).stats().await?)
}

/// The most days a stats series covers.
pub const MAX_SERIES_DAYS: u32 = 90;

/// A scope's last `days` days (oldest first, today's included): what changed each day and the
/// active subscriptions at its end.
pub async fn daily(
    app: &App,
    scope: &Scope,
    days: u32,
) -> Result<Vec<crate::domain::stats::Day>, Failure> {
    let days = days.clamp(1, MAX_SERIES_DAYS);
    let store = app.store_for(scope);
    let today = crate::domain::records::now_ms() / 1000;
    let from = crate::domain::stats::day_of(today - i64::from(days - 1) * 86_400);
    let to = crate::domain::stats::day_of(today);
    let changes = store.stats_days(&from, &to).await?;
    let active_now = store
        .stats()
        .await?
        .0
        .get("subscriptions_active")
        .copied()
        .unwrap_or(0);
    Ok(crate::domain::stats::series(
        &changes, active_now, today, days,
    ))
}

/// How many ledger entries an account lookup shows, and how many it reads at most from an
/// account whose entries were written before they were listed by time.
pub const LEDGER_SHOWN: usize = 50;
pub const LEDGER_READ: usize = 1_000;
/// How many payments and grants an account lookup shows.
pub const HISTORY_SHOWN: i32 = 20;

/// An account of a scope, as its developer looks it up.
pub struct AccountFacts {
    pub balance: crate::domain::records::Balance,
    pub subscription: Option<SubscriptionState>,
    pub usage: crate::services::usage::UsageStanding,
    /// The newest entries, and whether every entry was read.
    pub ledger: (Vec<crate::domain::records::EntryLine>, bool),
    pub history: Vec<crate::domain::records::HistoryItem>,
    pub more_history: bool,
}

pub async fn account(app: &App, scope: &Scope, account: &UserId) -> Result<AccountFacts, Failure> {
    let store = app.store_for(scope);
    let balance = crate::services::accounts::balance(app, scope, account).await?;
    let subscription = store.subscription_record(account).await?.state;
    let usage = crate::services::usage::usage_overview(app, scope, account).await?;
    let ledger = store
        .ledger_entries(account, LEDGER_SHOWN, LEDGER_READ)
        .await?;
    let (history, next) =
        crate::services::accounts::history(app, scope, account, HISTORY_SHOWN, None).await?;
    Ok(AccountFacts {
        balance,
        subscription,
        usage,
        ledger,
        history,
        more_history: next.is_some(),
    })
}

/// What a payment listing is asked for.
pub struct PaymentQuery {
    pub limit: usize,
    /// The boundary (time and id) the listing goes on after.
    pub before: Option<String>,
    pub status: Option<PaymentStatus>,
}

fn developer_tag(developer: &UserId) -> String {
    hash_parts(&["payments-cursor", developer.as_str()])[..16].to_owned()
}

/// The cursor a developer is given for a boundary: only that developer can use it.
pub fn encode_cursor(developer: &UserId, boundary: &str) -> String {
    let fields = [developer_tag(developer), boundary.to_owned()];
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fields).unwrap_or_default())
}

/// The boundary a developer's cursor names; another developer's or a forged one is refused.
pub fn decode_cursor(developer: &UserId, cursor: &str) -> Result<String, Failure> {
    let invalid = || Failure::invalid("cursor is not valid.");
    if cursor.len() > 512 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let [tag, boundary]: [String; 2] = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if tag != developer_tag(developer) || !valid_boundary(&boundary) {
        return Err(invalid());
    }
    Ok(boundary)
}

/// One page of payments over several scopes, merged newest first, and the next cursor.
pub async fn payments(
    app: &App,
    developer: &UserId,
    scopes: &[Scope],
    query: &PaymentQuery,
) -> Result<(Vec<(Scope, PaymentRecord)>, Option<String>), Failure> {
    let mut lines: Vec<(String, Scope, PaymentRecord)> = Vec::new();
    let mut more = false;
    for scope in scopes {
        let (found, scope_more) = app
            .store_for(scope)
            .payments_page(query.limit, query.before.as_deref(), query.status)
            .await?;
        more |= scope_more;
        lines.extend(
            found
                .into_iter()
                .map(|(boundary, payment)| (boundary, scope.clone(), payment)),
        );
    }
    // Newest first across scopes: boundaries sort by time, then id.
    lines.sort_by(|a, b| b.0.cmp(&a.0));
    more |= lines.len() > query.limit;
    lines.truncate(query.limit);
    let next = if more {
        lines
            .last()
            .map(|(boundary, _, _)| encode_cursor(developer, boundary))
    } else {
        None
    };
    Ok((
        lines
            .into_iter()
            .map(|(_, scope, payment)| (scope, payment))
            .collect(),
        next,
    ))
}

/// A scope's packages (active or not), cheapest first.
pub async fn packages(app: &App, scope: &Scope) -> Result<Vec<CreditPackage>, Failure> {
    let mut packages = app.store_for(scope).list_packages().await?;
    packages.sort_by(|a, b| a.amount.cmp(&b.amount).then_with(|| a.id.cmp(&b.id)));
    Ok(packages)
}

/// One of a scope's packages.
pub async fn package(app: &App, scope: &Scope, id: &str) -> Result<CreditPackage, Failure> {
    app.store_for(scope)
        .list_packages()
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| Failure::NotFound("Unknown credit package.".into()))
}

/// Creates or changes a package (never deleted: deactivated).
pub async fn save_package(
    app: &App,
    scope: &Scope,
    package: CreditPackage,
) -> Result<CreditPackage, Failure> {
    app.store_for(scope).put_package(&package).await?;
    tracing::info!(scope = %scope, package_id = %package.id, "credit package saved");
    Ok(package)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_developer_and_hold_a_valid_boundary() {
        let ann = UserId::parse("ann").expect("user");
        let cursor = encode_cursor(&ann, "001790000000000#pi_abc");
        assert_eq!(
            decode_cursor(&ann, &cursor).expect("own cursor"),
            "001790000000000#pi_abc"
        );
        assert!(decode_cursor(&UserId::parse("bob").expect("user"), &cursor).is_err());
        let forged = encode_cursor(&ann, "#");
        assert!(decode_cursor(&ann, &forged).is_err());
        assert!(decode_cursor(&ann, "!!").is_err());
    }
}
