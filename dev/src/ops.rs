//! Operator commands: grants, reconciliation, the invariant check and the payments that need
//! attention, run with the caller's AWS credentials against `TABLE_NAME` (the local stack's or a
//! deployed one). Failures print their whole cause chain.

use coffer::auth::UserId;
use coffer::services::reconcile as reconciliation;
use coffer::telemetry::error_chain;
use coffer::App;

async fn app() -> Result<App, String> {
    coffer::telemetry::init();
    let config = coffer::config::Config::from_env().map_err(|e| e.to_string())?;
    Ok(App::new(config, &coffer::app::load_sdk_config().await))
}

/// `grant <user-id> <amount> <reason> <key>`: promotional credits, recorded as a `grant` entry
/// and shown in the user's history. The key makes a repeated command grant once.
pub async fn grant(args: &[String]) -> Result<(), String> {
    let [user, amount, reason, key] = args else {
        return Err(
            "usage: coffer-dev grant <user-id> <amount in major units> <reason> <key>".into(),
        );
    };
    let app = app().await?;
    let user = UserId::parse(user).ok_or("user-id is malformed")?;
    let currency = &app.config.default_currency;
    let minor = currency
        .parse_major(amount, 1_000_000_000)
        .map_err(|e| e.to_string())?;
    let scope = app.default_scope();
    let granted = coffer::services::credits::grant(&app, &scope, &user, minor, reason, key)
        .await
        .map_err(|e| format!("grant failed: {}", e.cause()))?;
    if granted.replayed {
        println!(
            "already granted with this key ({}); nothing changed",
            granted.entry_id
        );
    } else {
        println!(
            "granted {} {currency} to {} ({})",
            currency.to_major(minor),
            user.as_str(),
            granted.entry_id
        );
    }
    Ok(())
}

/// `reconcile [hours]`: credits succeeded intents of the last `hours` (default 72).
pub async fn reconcile(args: &[String]) -> Result<(), String> {
    let hours = match args.first() {
        Some(h) => h
            .parse::<i64>()
            .map_err(|_| "hours must be a whole number")?,
        None => 72,
    };
    let app = app().await?;
    // An operator's run goes on until the window is covered (up to an hour).
    let budget = coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(3600));
    let report = reconciliation::reconcile(&app, hours * 3600, budget)
        .await
        .map_err(|e| format!("reconciliation failed ({}): {}", e.code(), e.cause()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

/// `check`: a whole pass of the ledger check, from the table's start (the scheduled pass's
/// cursor is left alone); exit status 1 when any balance or payment does not add up.
pub async fn check() -> Result<(), String> {
    use coffer::services::ledger_check::{check_ledger, Pass};
    let app = app().await?;
    let budget =
        coffer::services::budget::Budget::lasting(std::time::Duration::from_secs(24 * 3600));
    let report = check_ledger(
        &app,
        Pass::Whole,
        budget,
        std::time::Duration::from_millis(500),
    )
    .await
    .map_err(|e| format!("reading the ledger failed ({}): {}", e.code(), e.cause()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!("{} invariant violation(s)", report.broken))
    }
}

/// `backfill-stats [lead-seconds]`: counts what the stream never brought into the stats, once.
/// The new counters take over `lead-seconds` (300 by default) from now; the command waits for
/// that and a minute more, then reads the table once.
pub async fn backfill_stats(args: &[String]) -> Result<(), String> {
    let lead = match args.first() {
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| "lead-seconds must be a whole number")?,
        None => 300,
    };
    let app = app().await?;
    let report = coffer::services::stats_backfill::backfill_stats(
        &app,
        std::time::Duration::from_secs(lead),
        std::time::Duration::from_secs(60),
    )
    .await
    .map_err(|e| format!("the backfill failed ({}): {}", e.code(), e.cause()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

/// `attention`: the succeeded payments that could not be credited (amount, currency or metadata
/// did not match what was recorded), as JSON; an operator refunds or credits them by hand.
pub async fn attention() -> Result<(), String> {
    let app = app().await?;
    let flagged = app
        .store
        .payments_needing_attention()
        .await
        .map_err(|e| format!("reading the flagged payments failed: {}", error_chain(&e)))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&flagged).unwrap_or_default()
    );
    Ok(())
}

/// The scope `--project <id>`, `--live` and `--test` name (default: the deployment's own), and
/// the other words.
fn scope_and_words<'a>(
    app: &coffer::App,
    args: &'a [String],
) -> Result<(coffer::domain::scope::Scope, Vec<&'a str>), String> {
    use coffer::domain::scope::{Mode, ProjectId, Scope};
    let mut scope = app.default_scope();
    let mut words = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--project" => {
                let id = rest.next().ok_or("--project needs a project id")?;
                scope.project = ProjectId::parse(id).ok_or("the project id is malformed")?;
                if !scope.project.is_default() && !args.iter().any(|a| a == "--live") {
                    scope.mode = Mode::Test;
                }
            }
            "--live" => scope.mode = Mode::Live,
            "--test" => scope.mode = Mode::Test,
            word => words.push(word),
        }
    }
    Ok((Scope::new(scope.project, scope.mode), words))
}

/// `settings [--project <id>] [--live|--test] ['<json>']`: a scope's settings, changed first
/// by the JSON the developer route takes (`{"responseFormat": "plain"}`): how the operator sets
/// the deployment's own account, which no developer owns.
pub async fn settings(args: &[String]) -> Result<(), String> {
    let app = app().await?;
    let (scope, words) = scope_and_words(&app, args)?;
    let currency = app.config.default_currency.clone();
    match words.as_slice() {
        [] => {}
        [json] => {
            let change = coffer::handlers::settings_change_from_json(json, &currency)?;
            coffer::services::projects::save_settings(&app, &scope, change)
                .await
                .map_err(|e| format!("{}: {}", e.code(), e.cause()))?;
        }
        _ => return Err("usage: settings [--project <id>] [--live|--test] ['<json>']".into()),
    }
    let settings = coffer::services::projects::settings(&app, &scope)
        .await
        .map_err(|e| format!("{}: {}", e.code(), e.cause()))?;
    let mut shown = serde_json::json!(coffer::api::SettingsView::of(&settings, &currency));
    shown["scope"] = scope.to_string().into();
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    Ok(())
}

/// `plans link <plan> <price-id> | plans get <plan> | plans list`, in the default project and
/// the deployment's mode unless `--project <id>` and/or `--live`/`--test` say otherwise.
pub async fn plans(args: &[String]) -> Result<(), String> {
    use coffer::domain::plans::{apply_plan_update, PlanUpdate};

    let app = app().await?;
    let (scope, words) = scope_and_words(&app, args)?;
    let store = app.store_for(&scope);
    let currency = app.config.default_currency.clone();
    let show = |plan: &coffer::domain::plans::Plan| {
        let mut json =
            serde_json::json!(coffer::api::PlanView::of(plan, &currency).with_active(plan.active));
        json["scope"] = scope.to_string().into();
        serde_json::to_string_pretty(&json).unwrap_or_default()
    };
    match words.as_slice() {
        ["link", plan_id, price_id] => {
            let existing = store
                .plan(plan_id)
                .await
                .map_err(|e| error_chain(&e))?
                .ok_or_else(|| format!("no plan {plan_id} in {scope}"))?;
            let update = PlanUpdate {
                price_id: Some(Some((*price_id).to_owned())),
                ..PlanUpdate::default()
            };
            let plan = apply_plan_update(plan_id, Some(existing), update)?;
            store.put_plan(&plan).await.map_err(|e| error_chain(&e))?;
            println!("{}", show(&plan));
            Ok(())
        }
        ["get", plan_id] => {
            let plan = store
                .plan(plan_id)
                .await
                .map_err(|e| error_chain(&e))?
                .ok_or_else(|| format!("no plan {plan_id} in {scope}"))?;
            println!("{}", show(&plan));
            Ok(())
        }
        ["list"] => {
            let mut plans = store.list_plans().await.map_err(|e| error_chain(&e))?;
            plans.sort_by_key(|p| p.rank);
            for plan in &plans {
                println!("{}", show(plan));
            }
            Ok(())
        }
        _ => Err("usage: coffer-dev plans link <plan> <price-id> | plans get <plan> | plans list [--project <id>] [--live|--test]".into()),
    }
}

/// `replay-parked <stats|billing-events> [queue-url]`: the stream records the function parked
/// after its retries, handed to its code again (run once the fix is deployed). Each pointer
/// leaves the queue once its records were handled; what fails again stays. The stream keeps
/// records 24 hours: a pointer to an older record is reported, and stays for an operator.
pub async fn replay_parked(args: &[String]) -> Result<(), String> {
    use crate::streams::{replay_parked, Consumer};
    let (Some(name), rest) = (args.first(), args.get(1..).unwrap_or_default()) else {
        return Err("usage: coffer-dev replay-parked <stats|billing-events> [queue-url]".into());
    };
    let consumer = Consumer::parse(name).ok_or("the function is stats or billing-events")?;
    let app = app().await?;
    let sdk = coffer::app::load_sdk_config().await;
    let queue = match rest.first() {
        Some(url) => url.clone(),
        None => {
            let name = consumer.failure_queue_name(app.store.table());
            crate::setup::queue(&crate::setup::sqs_client(&sdk), &name).await?
        }
    };
    let report = replay_parked(&app, &sdk, consumer, &queue).await?;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    if report.still_failing > 0 || report.gone > 0 {
        return Err("some parked records were not replayed (see above and the log)".into());
    }
    Ok(())
}

/// `register-projects`: puts in the registry every project saved before the registry existed,
/// so that the scheduled jobs (reconciliation) reach them. Once after an upgrade; safe to run
/// again.
pub async fn register_projects() -> Result<(), String> {
    let app = app().await?;
    let registered = app
        .store
        .register_unlisted_projects()
        .await
        .map_err(|e| format!("registering projects failed: {}", error_chain(&e)))?;
    println!("{registered} project(s) registered");
    Ok(())
}
