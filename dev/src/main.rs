//! `coffer-dev`: the local stack's command line.
//!
//! - `coffer-dev up`: set up the table, packages, secret and webhook, then serve the API.
//! - `coffer-dev token <user-id> [ttl-seconds]`: print a local JWT for a user
//!   (`token --service <name>`: a token for `/internal/*`, standing in for IAM locally;
//!   `token --developer <name>`: a developer's token for the developer routes).
//! - `coffer-dev sign <event.json> [secret]`: print the event with a fresh `Stripe-Signature`.
//! - `coffer-dev grant <user-id> <amount> <reason> <key>`: promotional credits (operator).
//! - `coffer-dev reconcile [hours]`: credit succeeded intents the webhook missed.
//! - `coffer-dev check`: recompute every balance and payment; exit 1 on any difference.
//! - `coffer-dev backfill-stats [lead-seconds]`: count into the stats what the change stream
//!   never brought (data older than it), once; see docs/operations.md.
//! - `coffer-dev attention`: list succeeded payments that could not be credited.
//! - `coffer-dev events`: print (and take) the billing events waiting in the local stack's
//!   queue, which a rule on its event bus fills.
//! - `coffer-dev replay-parked <stats|billing-events> [queue-url]`: hand the stream records a
//!   function parked (after its retries) to its code again, once the fix is deployed; the local
//!   stack's failure queue unless a URL (the stack's `…FailuresQueueUrl` output) is given.
//! - `coffer-dev register-projects`: after upgrading a deployment whose projects were saved
//!   before the project registry existed, puts them in it (so the scheduled jobs reach them).
//! - `coffer-dev webhook-events`: the Stripe event types to send to a webhook endpoint.
//! - `coffer-dev plans link <plan> <price-id> [--project <id>] [--live]`: link a plan to a
//!   Stripe price; `plans get <plan> …`: show a plan with its price; `plans list …`.
//! - `coffer-dev settings ['<json>'] [--project <id>] [--live]`: a scope's settings, changed
//!   first by the JSON the developer route takes (the deployment's own account has no developer).
//!
//! `grant`, `reconcile` and `check` act on `TABLE_NAME` with the caller's AWS credentials
//! (IAM is the authorization), locally or against a deployed stack.

use std::process::ExitCode;
use std::sync::Arc;

use coffer::config::Config;
use coffer::{app, telemetry, App};
use coffer_dev::{ops, router, setup, token};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The local defaults, documented in the README. None of them is a real credential.
pub const DEFAULT_STRIPE_KEY: &str = "sk_test_coffer_local";
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_cofferLocalSigningSecret0123456789";
pub const DEFAULT_JWT_SECRET: &str = "coffer-local-jwt-secret";
/// The role the local stack allows on `/internal/*` unless `ALLOWED_CALLER_ARNS` says otherwise.
pub const LOCAL_BACKEND_ROLE: &str = "arn:aws:iam::000000000000:role/app-backend";

const USAGE: &str = "usage: coffer-dev up | token [--service|--developer] <name> [ttl-seconds] | \
sign <event.json> [secret] | grant <user-id> <amount> <reason> <key> | reconcile [hours] | check | backfill-stats [lead-seconds] | attention | events | replay-parked <stats|billing-events> [queue-url] | register-projects | webhook-events | plans link <plan> <price-id> | plans get <plan> | plans list | settings ['<json>'] | openapi";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up().await,
        Some("token") => print_token(&args[1..]),
        Some("sign") => sign(&args[1..]),
        Some("grant") => ops::grant(&args[1..]).await,
        Some("reconcile") => ops::reconcile(&args[1..]).await,
        Some("check") => ops::check().await,
        Some("backfill-stats") => ops::backfill_stats(&args[1..]).await,
        Some("attention") => ops::attention().await,
        Some("plans") => ops::plans(&args[1..]).await,
        Some("settings") => ops::settings(&args[1..]).await,
        Some("events") => events().await,
        Some("replay-parked") => ops::replay_parked(&args[1..]).await,
        Some("register-projects") => ops::register_projects().await,
        Some("webhook-events") => {
            println!(
                "{}",
                coffer::services::inbound::handled_event_types().join("\n")
            );
            Ok(())
        }
        // The OpenAPI document, as committed in openapi.json.
        Some("openapi") => coffer::openapi::document_json().map(|text| print!("{text}")),
        // The routes the local router serves, as [method, path, function] (scripts/check-iam.py
        // holds template.yaml's HttpApi events to them).
        Some("routes") => serde_json::to_string(coffer::handlers::ROUTES)
            .map(|text| println!("{text}"))
            .map_err(|e| e.to_string()),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("coffer-dev: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn up() -> Result<(), String> {
    telemetry::init();
    let port = env_or("PORT", "3000");
    let stripe_key = env_or("STRIPE_SECRET_KEY", DEFAULT_STRIPE_KEY);
    let webhook_secret = env_or("STRIPE_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET);
    let jwt_secret = env_or("LOCAL_JWT_SECRET", DEFAULT_JWT_SECRET);
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    if config.allowed_callers.is_empty() {
        // Locally, `token --service app-backend` is the app's backend (see the README).
        config.allowed_callers = vec![LOCAL_BACKEND_ROLE.to_owned()];
    }
    let secret_id = config
        .secret_id
        .clone()
        .ok_or("STRIPE_SECRET_ID is required")?;
    let localstripe = config.stripe_api_base.clone().filter(|base| {
        base.starts_with("http://127.0.0.1") || base.starts_with("http://localhost")
    });
    if let Some(base) = &localstripe {
        // localstripe lacks Checkout, the portal and ephemeral keys: the test double answers
        // those and forwards the rest.
        let double = coffer_dev::stripe_double::start(base)
            .await
            .map_err(|e| format!("cannot start the Stripe test double: {e}"))?;
        eprintln!("Stripe test double (Checkout, portal, ephemeral keys): {double} -> {base}");
        config.stripe_api_base = Some(double);
    }
    let sdk = app::load_sdk_config().await;
    // Projects' own webhooks: their deliveries queue (in moto), read below as the deliverer's
    // event source mapping reads it deployed. Locally an endpoint may be on this machine.
    let webhooks_queue = setup::queue(
        &setup::sqs_client(&sdk),
        &format!("{}-webhooks", config.table_name),
    )
    .await?;
    config.webhook_queue_url = Some(webhooks_queue.clone());
    config.webhooks_local = true;
    let app = App::new(config, &sdk);

    setup::table_and_packages(&app.store).await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    setup::store_secret(&secrets, &secret_id, &stripe_key, &webhook_secret).await?;
    if let Some(bus) = &app.config.event_bus_name {
        let queue = setup::event_bus_and_queue(&sdk, bus, &format!("{bus}-events")).await?;
        eprintln!("Billing events: bus {bus} -> queue {queue} (scripts/events.sh prints them)");
    }
    let webhook_url = format!("http://127.0.0.1:{port}/api/stripe/webhook");
    if let Some(base) = &localstripe {
        setup::stripe_plans(base, &stripe_key).await?;
        setup::register_webhook(base, "coffer-local", &webhook_url, &webhook_secret).await?;
    }

    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    eprintln!(
        "Coffer API:   http://127.0.0.1:{port}/api/stripe/credit-packages (and the other routes)"
    );
    eprintln!("Webhook URL:  {webhook_url}");
    eprintln!("Get a token:  scripts/token.sh <user-id>   (a developer's: scripts/token.sh --developer <name>)");
    let mut api = router::LocalApi::new(app, jwt_secret);
    api.page = match &localstripe {
        Some(base) => router::PageConfig::localstripe(base),
        None => router::PageConfig::stripe(env_or("STRIPE_PUBLISHABLE_KEY", "")),
    };
    // The page's own origin needs no CORS; other origins (a page served elsewhere) are named.
    api.allowed_origins = env_or("ALLOWED_ORIGINS", "")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    // Answers the document does not describe are logged as errors (the tests fail on them).
    api.contract = Some(Arc::new(coffer_dev::contract::Contract::load()?));
    let api = Arc::new(api);
    // What the stats function's event source mapping does when deployed.
    coffer_dev::streams::start(api.clone(), &sdk).await?;
    coffer_dev::webhooks::start(api.clone(), &sdk, webhooks_queue);
    router::serve(listener, api)
        .await
        .map_err(|e| format!("server stopped: {e}"))
}

/// Prints the billing events waiting in the local stack's queue, one JSON line each.
async fn events() -> Result<(), String> {
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME is not set")?;
    let sdk = app::load_sdk_config().await;
    let queue = setup::event_bus_and_queue(&sdk, &bus, &format!("{bus}-events")).await?;
    let sqs = setup::sqs_client(&sdk);
    loop {
        let events = setup::take_events(&sqs, &queue, 1).await?;
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            println!("{event}");
        }
    }
}

fn print_token(args: &[String]) -> Result<(), String> {
    let (kind, args) = match args.first().map(String::as_str) {
        Some("--service") => ("service", &args[1..]),
        Some("--developer") => ("developer", &args[1..]),
        _ => ("user", args),
    };
    let user = args.first().ok_or(USAGE)?;
    let ttl = match args.get(1) {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| "ttl-seconds must be a number")?,
        None => 3600,
    };
    let secret = env_or("LOCAL_JWT_SECRET", DEFAULT_JWT_SECRET);
    let jwt = match kind {
        "service" => token::issue_service(&secret, user, ttl),
        "developer" => token::issue_developer(&secret, user, ttl),
        _ => token::issue(&secret, user, ttl),
    }
    .map_err(|e| e.to_string())?;
    println!("{jwt}");
    Ok(())
}

fn sign(args: &[String]) -> Result<(), String> {
    let path = args
        .first()
        .ok_or("usage: coffer-dev sign <event.json> [secret]")?;
    let secret = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| env_or("STRIPE_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET));
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let signed = coffer_dev::resign(&text, &secret).map_err(|e| format!("{path}: {e}"))?;
    println!("{signed}");
    Ok(())
}
