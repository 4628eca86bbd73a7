//! Operator commands: grants, reconciliation and the invariant check, run with the caller's AWS
//! credentials against `TABLE_NAME` (the local stack's or a deployed one).

use coffer::auth::UserId;
use coffer::ledger::MoveOutcome;
use coffer::store::idempotency_hash;
use coffer::{invariants, reconcile as reconciliation, App};

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
    let amount: serde_json::Value =
        serde_json::from_str(amount).map_err(|_| "amount must be a number")?;
    let minor = currency
        .parse_major(&amount, 1_000_000_000)
        .map_err(|e| e.to_string())?;
    if minor <= 0 || reason.trim().is_empty() || key.is_empty() {
        return Err("amount must be > 0, reason and key non-empty".into());
    }
    let entry_id = format!("grant:{}", &idempotency_hash(&user, key)[..32]);
    let outcome = app
        .store
        .move_credits(&user, &entry_id, "grant", minor, currency, reason)
        .await
        .map_err(|e| format!("grant failed: {}", e.code()))?;
    match outcome {
        MoveOutcome::Done(id) => println!(
            "granted {} {currency} to {} ({id})",
            currency.to_major(minor),
            user.as_str()
        ),
        MoveOutcome::Replayed(id) => {
            println!("already granted with this key ({id}); nothing changed")
        }
        MoveOutcome::KeyConflict => return Err("this key was used for another amount".into()),
        MoveOutcome::Insufficient => {
            return Err("unexpected: a grant cannot be insufficient".into())
        }
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
    let report = reconciliation::reconcile(&app, hours * 3600)
        .await
        .map_err(|e| format!("reconciliation failed: {}", e.code()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

/// `check`: exit status 1 when any balance or payment does not add up.
pub async fn check() -> Result<(), String> {
    let app = app().await?;
    let items = app
        .store
        .scan_all()
        .await
        .map_err(|e| format!("scan failed: {}", e.code()))?;
    let report = invariants::check(&items);
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!(
            "{} invariant violation(s)",
            report.violations.len()
        ))
    }
}
