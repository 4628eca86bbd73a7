//! What developers read on the wire: projects and their modes, credentials, settings, payments,
//! subscriptions and counters.

use serde::Serialize;

use super::*;

/// A payment as its developer sees it: the history line and where it belongs.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeveloperPayment {
    #[serde(flatten)]
    pub line: HistoryLine,
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub user_id: String,
    /// Whether its credits were added.
    pub credited: bool,
}

/// A project's configuration in one mode, keys masked.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ModeView {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub test_mode: bool,
    pub configured: bool,
    pub is_active: bool,
    /// The secret key masked: prefix and last four characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "sk_test_…wxyz"))]
    pub secret_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishable_key: Option<String>,
    pub webhook_secret_set: bool,
    /// The IAM principals allowed on `/internal/*` in this mode.
    pub allowed_principals: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A project and its status per mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    pub project_id: String,
    pub created_at: String,
    pub test: ModeView,
    pub live: ModeView,
}

/// What Stripe said of a key. A refused key is `valid: false` with the reason in words.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyValidation {
    pub valid: bool,
    /// `null` when the text is not a Stripe key at all.
    pub livemode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The webhook URLs to paste into the Stripe Dashboard, and the events to select.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookUrls {
    pub test: String,
    pub live: String,
    pub events: Vec<&'static str>,
}

/// A project's settings in one mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub allowed_origins: Vec<String>,
    pub past_due_grace_seconds: i64,
    /// Below this balance `credits.low` is published; `null`: never.
    pub credits_low_threshold: Option<Major>,
    /// How far above the threshold a balance must rise for `credits.low` to be armed again
    /// (`credits.recovered`); `null`: a tenth of the threshold.
    pub credits_low_margin: Option<Major>,
    /// The order spends take from credit buckets in.
    pub spend_order: Vec<&'static str>,
    /// Top-ups of an amount the buyer chooses; `null`: packages and tiers only.
    pub custom_amounts: Option<CustomAmountsView>,
    /// Auto-recharge's bounds; `null`: not offered.
    pub auto_recharge: Option<RechargeBoundsView>,
    /// How the end-user routes answer: `envelope` or `plain`.
    #[cfg_attr(feature = "openapi", schema(example = "envelope"))]
    pub response_format: &'static str,
    /// The Stripe API version of PaymentSheet's ephemeral key on every create-payment-intent
    /// answer that did not ask for one; `null`: PaymentSheet's fields only when asked for.
    pub payment_sheet_version: Option<String>,
}

/// Auto-recharge's bounds.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RechargeBoundsView {
    pub max_per_recharge: Major,
    pub max_per_day: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_threshold: Option<Major>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_amount: Option<Major>,
}

/// A project's custom-amount rules.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CustomAmountsView {
    pub min: Major,
    pub max: Major,
    pub currencies: Vec<String>,
    /// Credits for one major unit of the currency.
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 1.25))]
    pub credits_per_unit: serde_json::Value,
    /// The unit of a request's `amount`: `major` or `minor`.
    #[cfg_attr(feature = "openapi", schema(example = "major"))]
    pub unit: &'static str,
}

/// Credits sold, spent and outstanding.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreditTotals {
    pub sold: Major,
    pub spent: Major,
    pub outstanding: Major,
    pub currency: String,
}

/// A project's counters in one mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScopeStats {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    /// By currency code.
    pub revenue: BTreeMap<String, Major>,
    /// By currency code.
    pub refunds: BTreeMap<String, Major>,
    /// Count by payment status.
    pub payments: BTreeMap<String, i64>,
    pub credits: CreditTotals,
    pub active_subscriptions: i64,
}

/// One day of a project's stats in one mode.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DayStats {
    /// The UTC day.
    #[cfg_attr(feature = "openapi", schema(example = "2026-12-07"))]
    pub date: String,
    /// Money received that day (payments credited), by currency code.
    pub revenue: BTreeMap<String, Major>,
    /// Money refunded that day, by currency code.
    pub refunds: BTreeMap<String, Major>,
    pub credits_sold: Major,
    pub credits_spent: Major,
    /// Active subscriptions (trialing, active or past due) at the end of the day.
    pub active_subscriptions: i64,
    /// How many more (or fewer) there were at the end of the day than at its start.
    pub subscriptions_change: i64,
}

/// A project's stats per day in one mode, oldest day first, today last.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DailyStats {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    /// The currency the credits are shown in.
    pub currency: String,
    pub days: Vec<DayStats>,
}

/// One ledger entry of an account.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LedgerLine {
    pub entry_id: String,
    #[cfg_attr(feature = "openapi", schema(example = "purchase"))]
    pub kind: String,
    /// Signed: credits in are positive, credits out negative.
    pub amount: Major,
    pub currency: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An account of a project at a glance: what its developer's console shows.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AccountOverview {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub account_id: String,
    pub balance: BalanceView,
    /// Its subscription as last read from Stripe; absent when it never had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionLine>,
    /// Its plan, and each metric's use against the plan's limit this period.
    pub usage: UsageOverview,
    /// The newest ledger entries (up to 50).
    pub ledger: Vec<LedgerLine>,
    /// `false` when the account has more entries than shown.
    pub ledger_complete: bool,
    /// The newest payments and grants (up to 20).
    pub payments: Vec<HistoryLine>,
    /// `true` when there are older ones (the payments listing pages through them).
    pub more_payments: bool,
}

/// A subscription as its developer sees it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionLine {
    pub project_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Mode))]
    pub mode: &'static str,
    pub subscription_id: String,
    pub account: String,
    pub plan_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = SubscriptionStatus))]
    pub status: &'static str,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    /// When Coffer last read it from Stripe (Unix milliseconds).
    pub observed_at: i64,
}

impl DeveloperPayment {
    pub fn of(scope: &Scope, payment: &Payment) -> Self {
        Self {
            line: HistoryLine::of_payment(payment),
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            user_id: payment.user_id.as_str().to_owned(),
            credited: payment.credited,
        }
    }
}

impl ModeView {
    pub fn of(project: &Project, mode: crate::domain::scope::Mode) -> Self {
        let config = project.modes.get(&mode);
        Self {
            project_id: project.id.as_str().to_owned(),
            mode: mode.as_str(),
            test_mode: mode == crate::domain::scope::Mode::Test,
            configured: config.is_some(),
            is_active: config.is_some_and(|c| c.active),
            secret_key: config.map(|c| c.masked_key.clone()),
            publishable_key: config.map(|c| c.publishable_key.clone()),
            webhook_secret_set: config.is_some_and(|c| c.webhook_secret_set),
            allowed_principals: config
                .map(|c| c.allowed_principals.clone())
                .unwrap_or_default(),
            updated_at: config.map(|c| rfc3339(c.updated_at_ms)),
        }
    }
}

impl ProjectSummary {
    pub fn of(project: &Project) -> Self {
        Self {
            project_id: project.id.as_str().to_owned(),
            created_at: rfc3339(project.created_at_ms),
            test: ModeView::of(project, crate::domain::scope::Mode::Test),
            live: ModeView::of(project, crate::domain::scope::Mode::Live),
        }
    }
}

impl SettingsView {
    pub fn of(settings: &ProjectSettings, currency: &Currency) -> Self {
        Self {
            allowed_origins: settings.allowed_origins.clone(),
            past_due_grace_seconds: settings.past_due_grace_seconds,
            credits_low_threshold: settings
                .credits_low_threshold
                .map(|t| Major::of(currency, t)),
            credits_low_margin: settings.credits_low_margin.map(|m| Major::of(currency, m)),
            spend_order: settings.spend_order.clone().unwrap_or_default().names(),
            auto_recharge: settings.auto_recharge.map(|b| RechargeBoundsView {
                max_per_recharge: Major::of(currency, b.max_per_recharge),
                max_per_day: b.max_per_day,
                default_threshold: b.default_threshold.map(|t| Major::of(currency, t)),
                default_amount: b.default_amount.map(|a| Major::of(currency, a)),
            }),
            custom_amounts: settings
                .custom_amounts
                .as_ref()
                .map(|rules| CustomAmountsView {
                    min: Major::of(currency, rules.min),
                    max: Major::of(currency, rules.max),
                    currencies: rules.currencies.clone(),
                    credits_per_unit: rate_value(rules.credits_per_unit_e4),
                    unit: rules.unit.as_str(),
                }),
            response_format: settings.response_format.unwrap_or_default().as_str(),
            payment_sheet_version: settings.payment_sheet_version.clone(),
        }
    }
}

impl ScopeStats {
    /// A scope's counters; `currency` shows the credits.
    pub fn of(scope: &Scope, counters: &StatsDelta, currency: &Currency) -> Self {
        let count = |name: &str| counters.0.get(name).copied().unwrap_or(0);
        let payments = crate::domain::records::PaymentStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_owned(),
                    count(&format!("payments_{}", s.as_str())),
                )
            })
            .collect();
        Self {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            revenue: by_currency(counters, "revenue_"),
            refunds: by_currency(counters, "refunds_"),
            payments,
            credits: CreditTotals {
                sold: Major::of(currency, count("credits_sold")),
                spent: Major::of(currency, count("credits_spent")),
                outstanding: Major::of(currency, count("credits_outstanding")),
                currency: currency.as_str().to_owned(),
            },
            active_subscriptions: count("subscriptions_active"),
        }
    }
}

/// Counters named `<prefix><currency>` as amounts by currency code.
fn by_currency(counters: &StatsDelta, prefix: &str) -> BTreeMap<String, Major> {
    counters
        .0
        .iter()
        .filter_map(|(name, value)| {
            let code = name.strip_prefix(prefix)?;
            let currency = Currency::parse(code)?;
            Some((code.to_owned(), Major::of(&currency, *value)))
        })
        .collect()
}

impl DailyStats {
    pub fn of(scope: &Scope, days: &[crate::domain::stats::Day], currency: &Currency) -> Self {
        Self {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            currency: currency.as_str().to_owned(),
            days: days
                .iter()
                .map(|day| {
                    let count = |name: &str| day.change.0.get(name).copied().unwrap_or(0);
                    DayStats {
                        date: day.date.clone(),
                        revenue: by_currency(&day.change, "revenue_"),
                        refunds: by_currency(&day.change, "refunds_"),
                        credits_sold: Major::of(currency, count("credits_sold")),
                        credits_spent: Major::of(currency, count("credits_spent")),
                        active_subscriptions: day.active_subscriptions,
                        subscriptions_change: count("subscriptions_active"),
                    }
                })
                .collect(),
        }
    }
}

impl LedgerLine {
    pub fn of(entry: &crate::domain::records::EntryLine) -> Self {
        Self {
            entry_id: entry.entry_id.clone(),
            kind: entry.kind.clone(),
            amount: Major::of(&entry.currency, entry.amount),
            currency: entry.currency.as_str().to_owned(),
            created_at: rfc3339(entry.created_at_ms),
            reason: entry.reason.clone(),
        }
    }
}

impl SubscriptionLine {
    pub fn of(scope: &Scope, account: &str, state: &SubscriptionState) -> Self {
        Self {
            project_id: scope.project.as_str().to_owned(),
            mode: scope.mode.as_str(),
            subscription_id: state.subscription_id.clone(),
            account: account.to_owned(),
            plan_id: state.plan_id.clone(),
            status: state.status.as_str(),
            current_period_end: (state.current_period_end > 0)
                .then(|| rfc3339(state.current_period_end * 1000)),
            cancel_at_period_end: state.cancel_at_period_end,
            observed_at: state.observed_at_ms,
        }
    }
}

/// Ten-thousandths as a JSON number with no float noise (`12_500` → `1.25`).
fn rate_value(e4: i64) -> serde_json::Value {
    let text = format!("{}.{:04}", e4 / 10_000, e4 % 10_000);
    text.parse::<f64>()
        .map(serde_json::Value::from)
        .unwrap_or(serde_json::Value::Null)
}

/// A project's webhook endpoint (its signing secret is shown only when made or rotated).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointView {
    #[cfg_attr(feature = "openapi", schema(example = "ep_3f2a"))]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://app.example.com/hooks/coffer")
    )]
    pub url: String,
    /// The event types sent; `null`: all.
    pub events: Option<Vec<String>>,
    pub enabled: bool,
    /// Why Coffer disabled it: `gone` (it answered 410) or `failing` (three days of failures).
    pub disabled_reason: Option<String>,
    /// Since when its deliveries have failed, none succeeding.
    pub failing_since: Option<String>,
    /// Until when a rotated-out secret still signs beside the current one.
    pub previous_secret_until: Option<String>,
    pub created_at: String,
}

impl WebhookEndpointView {
    pub fn of(endpoint: &crate::domain::webhooks::Endpoint) -> Self {
        let now = crate::domain::records::now_ms() / 1000;
        Self {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            failing_since: endpoint
                .failing_since
                .map(|s| rfc3339(s.saturating_mul(1000))),
            previous_secret_until: endpoint
                .secrets
                .iter()
                .filter_map(|s| s.expires_at)
                .filter(|until| *until > now)
                .max()
                .map(|until| rfc3339(until.saturating_mul(1000))),
            created_at: rfc3339(endpoint.created_at.saturating_mul(1000)),
        }
    }
}

/// An endpoint with its signing secret: shown this once (when made or rotated).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointSecret {
    pub endpoint: WebhookEndpointView,
    /// The Standard Webhooks signing secret (`whsec_…`): keep it; it is not shown again.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "whsec_<32 random bytes in base64>")
    )]
    pub secret: String,
}

/// One delivery attempt, as kept 30 days.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttemptView {
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub at: String,
    /// The endpoint's status; `null` when it gave none (timeout, connection error, refused
    /// address).
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// `delivered`, `retrying`, `failed` or `gone`.
    pub outcome: String,
    /// The first 1 KB of the answer, or why there was none.
    pub answer: String,
}

impl WebhookAttemptView {
    pub fn of(attempt: &crate::domain::webhooks::Attempt) -> Self {
        Self {
            event_id: attempt.event_id.clone(),
            event_type: attempt.event_type.clone(),
            attempt: attempt.attempt,
            at: rfc3339(attempt.at_ms),
            status: attempt.status,
            latency_ms: attempt.latency_ms,
            outcome: attempt.outcome.clone(),
            answer: attempt.answer.clone(),
        }
    }
}
