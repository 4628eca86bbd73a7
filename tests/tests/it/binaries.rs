//! The real function binaries, started as Lambda starts them (a Runtime API on loopback, the
//! `AWS_LAMBDA_*` environment), each fed the `events/` file `sam local invoke -e` would use,
//! against the local stack. Proves the binaries, the sample events and the routes agree.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use coffer_dev::runtime_api::RuntimeApi;
use integration_tests::{contract, spawn_app, TestApp};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the function binaries are: `COFFER_BIN_DIR`, or the workspace's debug build.
fn bin_dir() -> PathBuf {
    std::env::var_os("COFFER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug"))
}

/// The binaries' output joins the captured log of the run (see `COFFER_TEST_LOG`).
fn log_sink() -> Stdio {
    std::env::var("COFFER_TEST_LOG")
        .ok()
        .and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .map_or_else(Stdio::null, Stdio::from)
}

async fn invoke_binary(app: &TestApp, function: &str, event: Value) -> Value {
    let binary = bin_dir().join(function);
    assert!(
        binary.exists(),
        "{} is missing: build the functions first (scripts/test.sh does)",
        binary.display()
    );
    let runtime = RuntimeApi::start().await.expect("runtime api");
    let mut child = tokio::process::Command::new(&binary)
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("TABLE_NAME", &app.table)
        .env("STRIPE_SECRET_ID", &app.secret_id)
        // The billing-events function publishes to moto's default bus.
        .env("EVENT_BUS_NAME", "default")
        // Through the test double, as the local stack runs them (Checkout lives there).
        .env("STRIPE_API_BASE", &app.double_base)
        // The role of events/internal-consume-credits.json, not the one of *-other-principal.
        .env(
            "ALLOWED_CALLER_ARNS",
            "arn:aws:iam::123456789012:role/app-backend",
        )
        .stdout(log_sink())
        .stderr(log_sink())
        .kill_on_drop(true)
        .spawn()
        .expect("start the function binary");
    runtime
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{function}: {e}"));
    let reply = runtime.invoke(event, Duration::from_secs(30)).await;
    let _ = child.kill().await;
    reply.unwrap_or_else(|e| panic!("{function}: {e}"))
}

#[tokio::test]
async fn every_sample_event_gets_its_expected_status_from_the_real_binary() {
    let app = spawn_app().await;
    let events = workspace().join("events");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(events.join("expected.json")).expect("events/expected.json"),
    )
    .expect("expected.json is JSON");
    let expected = expected.as_object().expect("an object");

    let mut listed: Vec<String> = std::fs::read_dir(&events)
        .expect("events/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json") && name != "expected.json")
        .collect();
    listed.sort();
    let mut covered: Vec<String> = expected
        .keys()
        .filter(|k| !k.starts_with('_'))
        .cloned()
        .collect();
    covered.sort();
    assert_eq!(
        listed, covered,
        "every events/ file has an expectation, and every expectation a file"
    );

    for (name, want) in expected.iter().filter(|(k, _)| !k.starts_with('_')) {
        let function = want["function"].as_str().expect("function");
        let text = std::fs::read_to_string(events.join(name)).expect("event file");
        let text = if function == "stripe-webhook" && name != "webhook-bad-signature.json" {
            coffer_dev::resign(&text, &app.webhook_secret).expect("re-sign")
        } else {
            text
        };
        let event: Value = serde_json::from_str(&text).expect("event JSON");
        let route = event["routeKey"].as_str().map(str::to_owned);
        let reply = invoke_binary(&app, function, event).await;
        if let Some(field) = want.get("job").and_then(Value::as_str) {
            // A scheduled job answers with its report (and, where given, this figure).
            assert!(reply.get(field).is_some(), "{name}: {reply}");
            if let Some(value) = want.get("value") {
                assert_eq!(&reply[field], value, "{name}: {reply}");
            }
            continue;
        }
        let status = want["status"].as_u64().expect("status");
        assert_eq!(
            reply["statusCode"].as_u64(),
            Some(status),
            "{name}: {reply}"
        );
        let text = reply["body"].as_str().unwrap_or_default();
        let body: Value = serde_json::from_str(text)
            .unwrap_or_else(|_| panic!("{name}: body is not JSON: {reply}"));
        assert_eq!(body["success"], status == 200, "{name}: {body}");
        // The real binary's answer is one the OpenAPI document describes.
        let route = route.unwrap_or_else(|| panic!("{name}: the event has no routeKey"));
        let (method, pattern) = route.split_once(' ').expect("METHOD /path");
        if let Err(why) = contract().check(method, pattern, status as u16, text.as_bytes()) {
            panic!("{name}: {why}");
        }
    }
    app.assert_invariants().await;
}
