//! A developer's projects: configuring a mode's Stripe keys (checked against Stripe, stored only
//! in Secrets Manager, shown masked), turning a mode off, checking credentials, and a mode's
//! plans and settings. Configuring is three writes: claim the project, write its secret, save
//! the mode. When a later one fails, a claim that made the project is undone (in one
//! transaction that checks no mode was saved meanwhile), so a failed first configuration never
//! holds a project name. A secret written by a failed attempt is not put back: a failure of the
//! save may hide a save that landed (a timeout), and Secrets Manager has no conditional write
//! to undo it safely against a concurrent request. It is harmless instead: a claim that makes a
//! project never takes anything from a secret already stored under its name, and the next
//! configuration overwrites it whole.

use crate::adapters::secrets::{SecretsError, StripeSecrets};
use crate::adapters::store::{ProjectClaim, SaveOutcome};
use crate::adapters::stripe::{KeyCheck, StripeApi};
use crate::domain::plans::{apply_plan_update, Plan, PlanUpdate};
use crate::domain::projects::{mask_key, ModeConfig, Project, ProjectSettings};
use crate::domain::records::{now_ms, UserId};
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::services::Failure;
use crate::App;

/// The project if it exists and is the developer's; anything else is not found (nobody learns
/// which projects exist).
pub async fn owned(app: &App, developer: &UserId, id: &ProjectId) -> Result<Project, Failure> {
    match app.store.project(id).await? {
        Some(project) if project.is_owned_by(developer) => Ok(project),
        _ => Err(Failure::NotFound("Unknown project.".into())),
    }
}

/// A project as registered (from this instance's memory when read within a minute).
pub async fn registered(app: &App, id: &ProjectId) -> Result<Option<Project>, Failure> {
    Ok(app.project(id).await?)
}

/// Whether the scope takes payments now: the deployment's own, or a project active in the
/// mode, read afresh from the registry (auto-recharge asks just before it charges a card).
pub async fn takes_payments(app: &App, scope: &Scope) -> Result<bool, Failure> {
    if app.is_deployment_scope(scope) {
        return Ok(true);
    }
    Ok(app
        .store
        .project(&scope.project)
        .await?
        .is_some_and(|project| project.active_in(scope.mode)))
}

/// The developer's projects.
pub async fn of_developer(app: &App, developer: &UserId) -> Result<Vec<Project>, Failure> {
    Ok(app.store.projects_of(developer).await?)
}

/// A mode's configuration as the developer sends it, already well-formed.
pub struct ModeInput {
    pub secret_key: String,
    pub publishable_key: String,
    /// `None`: keep the stored one, if any.
    pub webhook_secret: Option<String>,
    /// `None`: keep the saved list.
    pub allowed_principals: Option<Vec<String>>,
}

/// Configures a mode of a project, creating the project for the developer on first use.
pub async fn configure(
    app: &App,
    developer: &UserId,
    scope: &Scope,
    input: ModeInput,
) -> Result<Project, Failure> {
    if scope.project.is_default() {
        // The deployment's own project is configured by its secret, not by a developer.
        return Err(Failure::NotFound("Unknown project.".into()));
    }
    // The key's prefix says its mode (Stripe mints keys per mode); Stripe says whether it works.
    if check_key(app, scope, &input.secret_key).await? == KeyCheck::Invalid {
        return Err(Failure::InvalidCredentials(
            "Stripe refused this secret key.".into(),
        ));
    }
    // Claim the project before its secret is written, so nobody writes another's secret.
    let claim = app.store.claim_project(&scope.project, developer).await?;
    if claim == ProjectClaim::Taken {
        return Err(Failure::NotFound("Unknown project.".into()));
    }
    let written = write_mode(app, developer, scope, input, claim).await;
    if written.is_err() && claim == ProjectClaim::Created {
        // This request made the project: nobody else may be left unable to claim it.
        match app.store.release_project(&scope.project, developer).await {
            Ok(released) => tracing::info!(project = %scope.project, released, "claim undone"),
            Err(err) => {
                tracing::warn!(cause = %crate::telemetry::error_chain(&err), "a project's claim could not be undone")
            }
        }
    }
    app.forget_project(&scope.project);
    written?;
    tracing::info!(project = %scope.project, mode = %scope.mode, "project configured");
    owned(app, developer, &scope.project).await
}

/// Writes the mode's secret, then saves the mode.
async fn write_mode(
    app: &App,
    developer: &UserId,
    scope: &Scope,
    input: ModeInput,
    claim: ProjectClaim,
) -> Result<(), Failure> {
    let secret_id = app.secret_id_for(scope)?;
    // The stored webhook secret is kept when none is given, but only for a project that was
    // already the developer's: a secret left under a new project's name by a failed attempt
    // of someone else belongs to nobody.
    let webhook_secret = match (input.webhook_secret, claim) {
        (Some(secret), _) => Some(secret),
        (None, ProjectClaim::Created) => None,
        (None, _) => match app.project_secrets.get(&secret_id).await {
            Ok(existing) => existing.webhook_secret().ok().map(str::to_owned),
            Err(SecretsError::NotConfigured) => None,
            Err(err) => return Err(err.into()),
        },
    };
    let allowed_principals = match input.allowed_principals {
        Some(list) => list,
        None => app
            .store
            .project(&scope.project)
            .await?
            .and_then(|p| {
                p.modes
                    .get(&scope.mode)
                    .map(|m| m.allowed_principals.clone())
            })
            .unwrap_or_default(),
    };
    let config = ModeConfig {
        masked_key: mask_key(&input.secret_key),
        publishable_key: input.publishable_key.clone(),
        webhook_secret_set: webhook_secret.is_some(),
        active: true,
        updated_at_ms: now_ms(),
        allowed_principals,
    };
    let secrets = StripeSecrets::new(Some(input.secret_key), webhook_secret)
        .with_publishable_key(Some(input.publishable_key));
    app.project_secrets.write(&secret_id, secrets).await?;
    match app
        .store
        .save_mode_config(&scope.project, developer, scope.mode, &config)
        .await?
    {
        SaveOutcome::Saved => Ok(()),
        SaveOutcome::NotOwner => Err(Failure::NotFound("Unknown project.".into())),
    }
}

/// Turns a configured mode off (its events still arrive, so that no money is lost).
pub async fn deactivate(app: &App, developer: &UserId, scope: &Scope) -> Result<Project, Failure> {
    let deactivated = app
        .store
        .set_mode_active(&scope.project, developer, scope.mode, false)
        .await?;
    app.forget_project(&scope.project);
    if !deactivated {
        return Err(Failure::NotFound(
            "Unknown project, or not configured for this mode.".into(),
        ));
    }
    tracing::info!(project = %scope.project, mode = %scope.mode, "project deactivated");
    owned(app, developer, &scope.project).await
}

/// What Stripe says of a key.
pub struct KeyVerdict {
    pub valid: bool,
    /// `None`: not a Stripe secret or restricted key at all (Stripe was not asked).
    pub livemode: Option<bool>,
}

/// Checks a given key, or the stored one, with Stripe. A bad key is a verdict; only Stripe
/// being unreachable is a failure.
pub async fn check_credentials(
    app: &App,
    scope: &Scope,
    given: Option<String>,
) -> Result<KeyVerdict, Failure> {
    let key = match given {
        Some(key) => key,
        None => match app.secrets_for(scope).await {
            Ok(secrets) => secrets.stripe_secret_key()?.to_owned(),
            Err(SecretsError::NotConfigured) => {
                return Err(Failure::NotFound(
                    "No key is stored for this mode; give one as secretKey.".into(),
                ))
            }
            Err(err) => return Err(err.into()),
        },
    };
    let Some(key_mode) = Mode::of_secret_key(&key) else {
        return Ok(KeyVerdict {
            valid: false,
            livemode: None,
        });
    };
    Ok(KeyVerdict {
        valid: check_key(app, scope, &key).await? == KeyCheck::Valid,
        livemode: Some(key_mode == Mode::Live),
    })
}

/// Asks Stripe (the project's Stripe: its own base URL on a local stack) about a key.
async fn check_key(app: &App, scope: &Scope, key: &str) -> Result<KeyCheck, Failure> {
    let client = StripeApi::new(
        &app.http,
        key,
        app.config.stripe_api_base_for(&scope.project),
    )?;
    Ok(client.check_key().await?)
}

/// A mode's plans, as stored (active or not), by rank.
pub async fn plans(app: &App, scope: &Scope) -> Result<Vec<Plan>, Failure> {
    let mut plans = super::billing::plans(app, scope).await?;
    crate::domain::plans::sort_by_rank(&mut plans);
    Ok(plans)
}

/// Creates or changes a plan (the rules of a valid plan are `domain::plans`).
pub async fn save_plan(
    app: &App,
    scope: &Scope,
    plan_id: &str,
    update: PlanUpdate,
) -> Result<Plan, Failure> {
    let store = app.store_for(scope);
    let existing = store.plan(plan_id).await?;
    let plan = apply_plan_update(plan_id, existing, update).map_err(Failure::Invalid)?;
    store.put_plan(&plan).await?;
    tracing::info!(plan_id = %plan.id, "plan saved");
    Ok(plan)
}

/// A mode's settings, or the defaults.
pub async fn settings(app: &App, scope: &Scope) -> Result<ProjectSettings, Failure> {
    super::billing::settings(app, scope).await
}

/// A change of a mode's settings; what is `None` stays as it is.
#[derive(Default)]
pub struct SettingsChange {
    /// Already checked to be origins (`scheme://host[:port]`).
    pub allowed_origins: Option<Vec<String>>,
    pub past_due_grace_seconds: Option<i64>,
    /// `Some(None)` turns `credits.low` off.
    pub credits_low_threshold: Option<Option<i64>>,
    /// `Some(None)`: a tenth of the threshold.
    pub credits_low_margin: Option<Option<i64>>,
    /// `Some(None)` goes back to the default order.
    pub spend_order: Option<Option<crate::domain::buckets::SpendOrder>>,
    /// `Some(None)`: the project does not offer auto-recharge.
    pub auto_recharge: Option<Option<crate::domain::recharge::RechargeBounds>>,
    /// `Some(None)` turns custom amounts off.
    pub custom_amounts: Option<Option<CustomAmountsChange>>,
    pub response_format: Option<crate::domain::projects::ResponseFormat>,
    /// `Some(None)`: PaymentSheet's fields only when a request asks for them.
    pub payment_sheet_version: Option<Option<String>>,
}

/// New custom-amount rules, and the unit of a request's amount when the change names one (left
/// out, the unit stays as it was: a change of the bounds never turns a mobile app's cents into
/// dollars).
pub struct CustomAmountsChange {
    pub rules: crate::domain::packages::CustomAmounts,
    pub unit: Option<crate::domain::packages::AmountUnit>,
}

/// The longest grace a past-due subscription may keep its plan.
const MAX_GRACE_SECS: i64 = 90 * 24 * 3600;

/// Changes a mode's settings (the stored ones, or the defaults).
pub async fn save_settings(
    app: &App,
    scope: &Scope,
    change: SettingsChange,
) -> Result<ProjectSettings, Failure> {
    let store = app.store_for(scope);
    let mut settings = store.settings().await?.unwrap_or_default();
    if let Some(origins) = change.allowed_origins {
        settings.allowed_origins = origins;
    }
    if let Some(grace) = change.past_due_grace_seconds {
        if !(0..=MAX_GRACE_SECS).contains(&grace) {
            return Err(Failure::invalid(
                "pastDueGraceSeconds must be from 0 to 90 days.",
            ));
        }
        settings.past_due_grace_seconds = grace;
    }
    if let Some(threshold) = change.credits_low_threshold {
        settings.credits_low_threshold = threshold;
    }
    if let Some(margin) = change.credits_low_margin {
        if margin.is_some_and(|m| m < 0) {
            return Err(Failure::invalid("creditsLowMargin must not be negative."));
        }
        settings.credits_low_margin = margin;
    }
    if let Some(order) = change.spend_order {
        settings.spend_order = order;
    }
    if let Some(bounds) = change.auto_recharge {
        if bounds.is_some_and(|b| b.max_per_recharge < 1 || !(1..=100).contains(&b.max_per_day)) {
            return Err(Failure::invalid(
                "autoRecharge needs maxPerRecharge above zero and maxPerDay from 1 to 100.",
            ));
        }
        if bounds.is_some_and(|b| {
            b.default_amount
                .is_some_and(|a| a < 1 || a > b.max_per_recharge)
                || b.default_threshold.is_some_and(|t| t < 0)
        }) {
            return Err(Failure::invalid(
                "autoRecharge's defaultAmount must be above zero and at most maxPerRecharge, and its defaultThreshold not negative.",
            ));
        }
        settings.auto_recharge = bounds;
    }
    if let Some(rules) = change.custom_amounts {
        let rules = rules.map(|CustomAmountsChange { mut rules, unit }| {
            rules.unit = unit
                .or(settings.custom_amounts.as_ref().map(|kept| kept.unit))
                .unwrap_or_default();
            rules
        });
        if let Some(rules) = &rules {
            crate::domain::packages::valid_custom_amounts(rules, &app.config.default_currency)
                .map_err(Failure::invalid)?;
        }
        settings.custom_amounts = rules;
    }
    if let Some(format) = change.response_format {
        settings.response_format = Some(format);
    }
    if let Some(version) = change.payment_sheet_version {
        if version
            .as_deref()
            .is_some_and(|v| !crate::adapters::stripe::valid_api_version(v))
        {
            return Err(Failure::invalid(
                "paymentSheetVersion must be a Stripe API version such as 2024-06-20.",
            ));
        }
        settings.payment_sheet_version = version;
    }
    store.put_settings(&settings).await?;
    app.forget_settings(scope);
    Ok(settings)
}
