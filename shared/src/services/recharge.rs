//! Auto-recharge settings per account: read and changed by the account's user or its project's
//! developer, checked against the project's bounds, written on the version read. Starting the
//! charges from committed balances is the next step (see `domain::recharge`).

use crate::domain::recharge::{change_settings, AccountRecharge, ChangedBy, RechargeSettings};
use crate::domain::records::UserId;
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// Attempts of a settings change that lost its race.
const ATTEMPTS: u32 = 5;

/// The account's auto-recharge (off, with nothing saved, when never set).
pub async fn settings(
    app: &App,
    scope: &Scope,
    user: &UserId,
) -> Result<Option<AccountRecharge>, Failure> {
    Ok(app
        .store_for(scope)
        .recharge(user)
        .await?
        .map(|(recharge, _)| recharge))
}

/// Changes the account's auto-recharge settings.
pub async fn change(
    app: &App,
    scope: &Scope,
    user: &UserId,
    settings: RechargeSettings,
    setup_intent: Option<String>,
    by: ChangedBy,
) -> Result<AccountRecharge, Failure> {
    let store = app.store_for(scope);
    let bounds = super::billing::settings(app, scope).await?.auto_recharge;
    for _ in 0..ATTEMPTS {
        let current = store.recharge(user).await?;
        let next = change_settings(
            current.as_ref().map(|(r, _)| r),
            settings.clone(),
            setup_intent.clone(),
            bounds.as_ref(),
            by,
        )
        .map_err(Failure::invalid)?;
        if store
            .put_recharge(user, &next, current.map(|(_, v)| v))
            .await?
        {
            tracing::info!(
                enabled = next.settings.enabled,
                "auto-recharge settings changed"
            );
            return Ok(next);
        }
    }
    Err(Failure::Unavailable(
        "the auto-recharge settings kept changing".into(),
    ))
}
