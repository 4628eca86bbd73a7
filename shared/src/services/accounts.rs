//! What an account reads of itself: its balance, its payment history and the packages it can
//! buy.

use crate::domain::packages::{active_cheapest_first, CreditPackage};
use crate::domain::records::{Balance, HistoryItem, UserId};
use crate::domain::scope::Scope;
use crate::services::Failure;
use crate::App;

/// The account's balance (zero in the deployment's currency when it has none yet).
pub async fn balance(app: &App, scope: &Scope, user: &UserId) -> Result<Balance, Failure> {
    Ok(app
        .store_for(scope)
        .balance(user)
        .await?
        .unwrap_or_else(|| Balance::empty(app.config.default_currency.clone())))
}

/// A page of the account's payments and grants, newest first, and the cursor of the next one
/// (opaque, bound to the account).
pub async fn history(
    app: &App,
    scope: &Scope,
    user: &UserId,
    limit: i32,
    cursor: Option<&str>,
) -> Result<(Vec<HistoryItem>, Option<String>), Failure> {
    Ok(app
        .store_for(scope)
        .payment_history(user, limit, cursor)
        .await?)
}

/// The packages on sale, cheapest first.
pub async fn packages_on_sale(app: &App, scope: &Scope) -> Result<Vec<CreditPackage>, Failure> {
    Ok(active_cheapest_first(app.packages_for(scope).await?))
}

/// Sets (or removes) the account's own low-balance threshold; its alert is armed again.
pub async fn set_low_threshold(
    app: &App,
    scope: &Scope,
    user: &UserId,
    threshold: Option<i64>,
) -> Result<crate::adapters::store::AccountAlert, Failure> {
    Ok(app
        .store_for(scope)
        .set_account_threshold(user, threshold)
        .await?)
}
