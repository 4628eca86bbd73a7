//! Usage on the wire: one usage's answer and an account's metrics.

use serde::Serialize;

use super::*;

/// The answer to a usage: allowed (recorded, or checked with `dryRun`) and where the account
/// stands.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageAnswer {
    pub allowed: bool,
    pub used: i64,
    pub limit: i64,
    pub remaining: i64,
    pub resets_at: String,
    /// Credits taken for units beyond the allowance (overage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_with_credits: Option<Major>,
}

/// One metric of the account's usage in the current period.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MetricUsage {
    pub metric: String,
    pub used: i64,
    pub limit: i64,
    pub remaining: i64,
    pub resets_at: String,
}

/// The account's usage per metric in the current period.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageOverview {
    pub plan_id: String,
    pub metrics: Vec<MetricUsage>,
}
