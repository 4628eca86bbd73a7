//! What an account may use: its plan and period now, the scope's known metrics, and the
//! allowance of the period (opened on first use, raised at once by an upgrade).

use crate::adapters::store::{Allowance, AllowanceKey, Store};
use crate::domain::plans::Plan;
use crate::domain::records::{now_ms, rfc3339, UserId};
use crate::domain::scope::Scope;
use crate::domain::usage::{period_for, Period, UsageTerms};
use crate::services::billing::{self, entitlement_among};
use crate::services::Failure;
use crate::App;

use super::machine::ROUNDS;

/// The plan an account's usage counts against now, the period, and the Stripe customer its
/// subscription to that plan bills (for metered plans).
pub(super) struct Standing {
    pub plan: Plan,
    pub period: Period,
    pub customer: Option<String>,
}

/// The account's plan now, the period its allowances count in, and the Stripe customer its
/// subscription to that plan bills (for metered plans), from the scope's plans.
async fn standing(
    app: &App,
    scope: &Scope,
    account: &UserId,
    plans: &[Plan],
) -> Result<Standing, Failure> {
    let now = entitlement_among(app, scope, account, plans).await?;
    // The subscription gives the period when the plan comes from it: its own plan, or the
    // higher plan a downgrade holds to the end of the paid period.
    let subscribed = now.subscription.as_ref().filter(|s| {
        (s.plan_id == now.plan.id || s.held_plan_id.as_deref() == Some(now.plan.id.as_str()))
            && s.status.counts_as_active()
    });
    let period = period_for(subscribed.map(|s| s.current_period_end), now_ms() / 1000);
    let customer = subscribed
        .map(|s| s.customer_id.clone())
        .filter(|c| !c.is_empty());
    Ok(Standing {
        plan: now.plan,
        period,
        customer,
    })
}

/// The account's usage terms: from this instance's cache unless `fresh`, else read (plans,
/// settings, subscription and tier) and cached.
pub(super) async fn usage_terms(
    app: &App,
    scope: &Scope,
    store: &Store,
    account: &UserId,
    fresh: bool,
) -> Result<UsageTerms, Failure> {
    let key = format!("{}|{}", store.keys().prefix(), account.as_str());
    if !fresh {
        if let Some(terms) = app.usage.terms.get(&key) {
            return Ok(terms);
        }
    }
    let plans = billing::plans(app, scope).await?;
    let Standing {
        plan,
        period,
        customer,
    } = standing(app, scope, account, &plans).await?;
    let mut known_metrics: Vec<String> = plans
        .iter()
        .flat_map(|p| p.limits.keys().cloned())
        .collect();
    known_metrics.sort();
    known_metrics.dedup();
    let terms = UsageTerms {
        plan,
        period,
        customer,
        known_metrics,
    };
    app.usage.terms.put(key, terms.clone());
    Ok(terms)
}

pub(super) fn allowance_cache_key(store: &Store, at: &AllowanceKey<'_>) -> String {
    format!(
        "{}|{}|{}|{}",
        store.keys().prefix(),
        at.account.as_str(),
        at.metric,
        at.period
    )
}

/// The allowance of the period, opened on first use and raised to `limit` when the plan grew.
pub(super) async fn current_allowance(
    store: &Store,
    at: &AllowanceKey<'_>,
    limit: i64,
) -> Result<Allowance, Failure> {
    for _ in 0..ROUNDS {
        match store.allowance(at).await? {
            None => {
                store.open_allowance(at, limit).await?;
            }
            Some(allowance) if allowance.limit < limit => {
                store.raise_allowance(at, allowance.limit, limit).await?;
            }
            Some(allowance) => return Ok(allowance),
        }
    }
    Err(Failure::Unavailable("the allowance kept changing".into()))
}

/// One metric of an account's usage in the current period.
pub struct MetricStanding {
    pub metric: String,
    pub used: i64,
    pub limit: i64,
    /// When it resets (RFC 3339).
    pub resets_at: String,
}

/// The account's plan and, for each metric of it, what is used of what limit.
pub struct UsageStanding {
    pub plan_id: String,
    pub metrics: Vec<MetricStanding>,
}

/// The account's metrics on its plan now: used, limit and reset time of each.
pub async fn usage_overview(
    app: &App,
    scope: &Scope,
    account: &UserId,
) -> Result<UsageStanding, Failure> {
    let store = app.store_for(scope);
    let plans = billing::plans(app, scope).await?;
    let Standing { plan, period, .. } = standing(app, scope, account, &plans).await?;
    let mut metrics = Vec::new();
    for (metric, plan_limit) in &plan.limits {
        let at = AllowanceKey {
            account,
            metric,
            period: &period.id,
        };
        let stored = store.allowance(&at).await?;
        // A downgrade keeps the period's higher limit until the period ends.
        let limit = stored
            .as_ref()
            .map_or(*plan_limit, |a| a.limit.max(*plan_limit));
        let used = stored.as_ref().map_or(0, Allowance::used);
        metrics.push(MetricStanding {
            metric: metric.clone(),
            used,
            limit,
            resets_at: rfc3339(period.resets_at.saturating_mul(1000)),
        });
    }
    Ok(UsageStanding {
        plan_id: plan.id,
        metrics,
    })
}
