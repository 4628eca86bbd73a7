//! The hot-account benchmark (`scripts/bench-usage.sh`): one user's usage driven at a target
//! rate through Coffer's usage service against DynamoDB Local, with a proxy that reads every
//! write request and counts writes per item per second. Prints events/s, the most writes any
//! single item took in one second, refusals, errors and overrun. Then an exactness run: more
//! events than the limit, concurrently, and the allowed count must equal the limit.
//!
//! `HOT_RATE` (events/s offered, default 5000), `HOT_SECONDS` (default 10), `HOT_INFLIGHT`
//! (concurrent requests, default 64: more only queues in DynamoDB Local and times out),
//! `HOT_EXACT_LIMIT` (default 2000; 25% more are sent). It first measures DynamoDB Local's own
//! ceiling (conditional puts of distinct items), which bounds any design on the machine it runs on.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer::domain::plans::{apply_plan_update, PlanUpdate};
use coffer::domain::records::UserId;
use coffer::services::usage::{record_usage, usage_key_hash, UsageRequest};
use coffer::services::Failure;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Writes per item, per second since the start.
type WriteLog = Arc<Mutex<HashMap<(u64, String), u64>>>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The items a DynamoDB write request touches (`pk|sk`).
fn written_items(target: &str, body: &[u8]) -> Vec<String> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let key_of = |key: &Value| {
        format!(
            "{}|{}",
            key["pk"]["S"].as_str().unwrap_or("?"),
            key["sk"]["S"].as_str().unwrap_or("?")
        )
    };
    match target {
        "TransactWriteItems" => json["TransactItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        item.get("Update")
                            .map(|u| key_of(&u["Key"]))
                            .or_else(|| item.get("Put").map(|p| key_of(&p["Item"])))
                            .or_else(|| item.get("Delete").map(|d| key_of(&d["Key"])))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "UpdateItem" | "DeleteItem" => vec![key_of(&json["Key"])],
        "PutItem" => vec![key_of(&json["Item"])],
        _ => Vec::new(),
    }
}

async fn start_proxy(upstream: String, log: WriteLog, started: Instant) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
                    async move {
                        let target = req
                            .headers()
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
                            .unwrap_or_default();
                        let (mut parts, body) = req.into_parts();
                        let sent = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_owned();
                        parts.uri = format!("{upstream}{path}").parse().expect("uri");
                        let response = client
                            .request(hyper::Request::from_parts(parts, Full::new(sent.clone())))
                            .await;
                        let reply = match response {
                            Ok(response) => {
                                let (parts, body) = response.into_parts();
                                let ok = parts.status.is_success();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if ok {
                                    let second = started.elapsed().as_secs();
                                    if let Ok(mut log) = log.lock() {
                                        for item in written_items(&target, &sent) {
                                            *log.entry((second, item)).or_default() += 1;
                                        }
                                    }
                                }
                                hyper::Response::from_parts(parts, Full::new(bytes))
                            }
                            Err(_) => {
                                let mut reply = hyper::Response::new(Full::new(Bytes::new()));
                                *reply.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                                reply
                            }
                        };
                        Ok::<_, Infallible>(reply)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

#[derive(Default)]
struct Counts {
    allowed: AtomicUsize,
    refused: AtomicUsize,
    errors: AtomicUsize,
    /// Errors by code and cause, to tell the emulator's overload from anything else.
    kinds: Mutex<BTreeMap<String, usize>>,
}

/// Offers `total` events of one unit at `rate`/s with at most `inflight` in flight.
async fn drive(
    app: Arc<coffer::App>,
    user: &UserId,
    run: &str,
    total: u64,
    rate: u64,
    inflight: usize,
) -> (Arc<Counts>, Duration) {
    let counts = Arc::new(Counts::default());
    let gate = Arc::new(Semaphore::new(inflight));
    let scope = app.default_scope();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (app, counts, scope, user) = (app.clone(), counts.clone(), scope.clone(), user.clone());
        let key = usage_key_hash("bench", &user, &format!("{run}-{i}"));
        tasks.push(tokio::spawn(async move {
            let request = UsageRequest {
                account: &user,
                metric: "requests",
                quantity: 1,
                key_hash: &key,
                dry_run: false,
            };
            match record_usage(&app, &scope, &request).await {
                Ok(_) => counts.allowed.fetch_add(1, Ordering::Relaxed),
                Err(Failure::LimitReached(_)) => counts.refused.fetch_add(1, Ordering::Relaxed),
                Err(err) => {
                    if let Ok(mut kinds) = counts.kinds.lock() {
                        let cause = err.cause();
                        let short: String = cause.chars().take(90).collect();
                        *kinds.entry(format!("{}: {short}", err.code())).or_default() += 1;
                    }
                    counts.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    (counts, started.elapsed())
}

/// DynamoDB Local's own ceiling here: conditional puts of distinct small items, nothing else,
/// with the same concurrency. Usage events cannot go faster than the writes they need.
async fn put_ceiling(app: &coffer::App, total: u64, inflight: usize) -> f64 {
    use aws_sdk_dynamodb::types::AttributeValue;
    let gate = Arc::new(Semaphore::new(inflight));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (client, table) = (app.store.client().clone(), app.store.table().to_owned());
        tasks.push(tokio::spawn(async move {
            let _ = client
                .put_item()
                .table_name(table)
                .item("pk", AttributeValue::S(format!("CEILING#{i}")))
                .item("sk", AttributeValue::S("CEILING".into()))
                .item("quantity", AttributeValue::N("1".into()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn set_limit(app: &coffer::App, limit: i64) {
    let store = app.store_for(&app.default_scope());
    let free = store.plan("free").await.expect("read").expect("seeded");
    let update = PlanUpdate {
        limits: Some(BTreeMap::from([("requests".to_owned(), limit)])),
        ..PlanUpdate::default()
    };
    store
        .put_plan(&apply_plan_update("free", Some(free), update).expect("plan"))
        .await
        .expect("save");
}

fn print_kinds(counts: &Counts) {
    if let Ok(kinds) = counts.kinds.lock() {
        for (kind, count) in kinds.iter() {
            println!("    error {count} x {kind}");
        }
    }
}

/// Writes to allowance items (head, shards, leases), and all writes.
fn write_totals(log: &WriteLog) -> (u64, u64) {
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    let shared = log
        .iter()
        .filter(|((_, item), _)| item.contains("USAGE#") || item.contains("LEASE#"))
        .map(|(_, count)| count)
        .sum();
    (shared, log.values().sum())
}

fn max_item_writes(log: &WriteLog) -> (u64, String) {
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    log.into_iter()
        .filter(|((_, item), _)| item.contains("USAGE#") || item.contains("LEASE#"))
        .map(|((_, item), count)| (count, item))
        .max()
        .unwrap_or((0, String::new()))
}

#[tokio::main]
async fn main() {
    let rate = env_num("HOT_RATE", 5_000);
    let seconds = env_num("HOT_SECONDS", 10);
    let inflight = usize::try_from(env_num("HOT_INFLIGHT", 64)).unwrap_or(64);
    let ddb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("AWS_ENDPOINT_URL_DYNAMODB");
    let log: WriteLog = Arc::default();
    let proxy = start_proxy(
        ddb.trim_end_matches('/').to_owned(),
        log.clone(),
        Instant::now(),
    )
    .await;
    std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", &proxy);

    let table = format!(
        "coffer-hot-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let sdk = coffer::app::load_sdk_config().await;
    let config = coffer::config::Config::new(table, None, None);
    let app = Arc::new(coffer::App::new(config, &sdk));
    coffer_dev::setup::table_and_packages(&app.store)
        .await
        .expect("table");

    println!(
        "hot account: one user, metric `requests`, {} counter shards, blocks of {} leased per instance, DynamoDB Local via a write-counting proxy",
        coffer::domain::usage::USAGE_SHARDS,
        coffer::domain::usage::LEASE_BLOCK
    );

    // 1. Throughput: a limit far above what is sent.
    set_limit(&app, 1_000_000_000).await;
    let user = UserId::parse("hot-user").expect("user");
    let total = rate * seconds;
    log.lock().map(|mut l| l.clear()).ok();
    let (counts, took) = drive(app.clone(), &user, "load", total, rate, inflight).await;
    let done = counts.allowed.load(Ordering::Relaxed) + counts.refused.load(Ordering::Relaxed);
    let (max_writes, item) = max_item_writes(&log);
    println!("offered {rate}/s for {seconds} s ({total} events, {inflight} in flight)");
    println!(
        "  achieved {:.0} events/s; allowed {}, refused {}, errors {} (throttling or unavailable)",
        done as f64 / took.as_secs_f64(),
        counts.allowed.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed)
    );
    println!("  most writes to one item in one second: {max_writes} ({item})");
    let (shared, all) = write_totals(&log);
    println!(
        "  writes: {all} in all, {:.2} per event; to allowance items (head, shards, leases): {shared}",
        all as f64 / done.max(1) as f64
    );
    print_kinds(&counts);
    // Measured after the load, with the emulator's JIT warm.
    let ceiling = put_ceiling(&app, 20_000, inflight).await;
    println!("  DynamoDB Local's own ceiling here: {ceiling:.0} conditional puts/s of distinct items ({inflight} in flight): the bound here for any design that writes a record per event");

    // 2. Exactness: a quarter more events than the limit, all at once.
    let limit = i64::try_from(env_num("HOT_EXACT_LIMIT", 2_000)).unwrap_or(2_000);
    let sent = u64::try_from(limit + limit / 4).unwrap_or(0);
    set_limit(&app, limit).await;
    let exact_user = UserId::parse("hot-user-exact").expect("user");
    let (counts, took) = drive(app.clone(), &exact_user, "exact", sent, rate, inflight).await;
    let allowed = counts.allowed.load(Ordering::Relaxed) as i64;
    let store = app.store_for(&app.default_scope());
    let period = coffer::domain::usage::calendar_month(coffer::domain::records::now_ms() / 1000);
    let allowance = store
        .allowance(&coffer::adapters::store::AllowanceKey {
            account: &exact_user,
            metric: "requests",
            period: &period.id,
        })
        .await
        .expect("read")
        .expect("opened");
    println!(
        "exactness: {sent} events against a limit of {limit} in {:.1} s: allowed {allowed}, refused {}, errors {}, recorded used {}, overrun {}",
        took.as_secs_f64(),
        counts.refused.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        allowance.used(),
        (allowance.used() - limit).max(0)
    );
    print_kinds(&counts);
    // An error is an answer the caller did not get (a timeout while DynamoDB Local is slow): its
    // usage may have been recorded, and a retry with the same key answers it. So the recorded
    // usage lies between the allowed count and allowed + errors, and never passes the limit.
    let errors = counts.errors.load(Ordering::Relaxed) as i64;
    let used = allowance.used();
    if used > limit || used < allowed || used > allowed + errors {
        eprintln!("FAILED: the recorded usage passes the limit or does not match the answers");
        std::process::exit(1);
    }
    app.store.delete_table().await.ok();
}
