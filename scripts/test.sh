#!/usr/bin/env bash
# Runs every test: the library's layers as its code imports them (scripts/check-layers.py); unit
# tests; integration tests over the wire against DynamoDB Local, moto and
# localstripe, which it installs (project-local) and starts on their own ports, then stops; the
# storefront in headless Chromium (Debian's chromium and chromium-driver, installed with apt); the
# real function binaries fed every events/ file through a local Lambda Runtime API; the API
# description (scripts/check-openapi.sh: openapi.json current, linted with Redocly CLI, and a
# local stack fuzzed against it with Schemathesis); and the deployment checks (cfn-lint,
# sam validate --lint, cargo lambda build --release --arm64).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

COFFER_STAGE_LOG="$(mktemp -t coffer-stages.XXXXXX)"
finish() { stop_all; stage_times; rm -f "$COFFER_STAGE_LOG"; }
trap finish EXIT
say "installing what the tests need (project-local tools; apt only when missing)"
ensure_tools aws-sam-cli cfn-lint "$SCHEMATHESIS" standardwebhooks
trap 'exit 130' INT TERM

# Ports of their own, so that tests can run beside a running local stack.
STATE_DIR="$ROOT/.stack/test"
# Two projects, each with a localstripe of its own (tests/tests/it/projects.rs).
start_test_servers "${TEST_DYNAMODB_PORT:-18000}" "${TEST_MOTO_PORT:-15000}" "${TEST_STRIPE_PORT:-18420}" \
  "${TEST_STRIPE_ALPHA_PORT:-18421}" "${TEST_STRIPE_BETA_PORT:-18422}"

# Headless Chromium for the storefront's browser tests (tests/tests/it/browser.rs), over
# chromedriver on a port of its own.
ensure_chromium
CHROMEDRIVER_PORT="${TEST_CHROMEDRIVER_PORT:-19515}"
start chromedriver "$CHROMEDRIVER_PORT" chromedriver --port="$CHROMEDRIVER_PORT"
export CHROMEDRIVER_URL="http://127.0.0.1:$CHROMEDRIVER_PORT"
say "chromedriver: $CHROMEDRIVER_URL ($("$CHROMIUM_BINARY" --version 2>/dev/null | head -n1))"

# Every log line of the run (in-process functions and the real binaries) and each test's figures.
export COFFER_TEST_LOG="$STATE_DIR/functions.log" COFFER_REPORT_FILE="$STATE_DIR/report.jsonl"
# Every AWS call each function makes during the tests (shared/src/calls.rs), for the IAM check.
export COFFER_AWS_CALL_LOG="$STATE_DIR/aws-calls.jsonl"
rm -f "$COFFER_TEST_LOG" "$COFFER_REPORT_FILE" "$COFFER_AWS_CALL_LOG"

say "cargo fmt --check"
cargo fmt --all -- --check
say "layers: every import between the library's layers is allowed, no circle, no handler calls an adapter"
python3 "$ROOT/scripts/check-layers.py"
say "cargo build (the function binaries that tests/tests/it/binaries.rs runs)"
cargo build --workspace --locked
say "cargo test"
# COFFER_TEST_FILTER=<name> runs only the matching tests while iterating; CI never sets it.
cargo test --workspace --locked -- ${COFFER_TEST_FILTER:-}

say "secrecy: scanning every captured log line"
# (A filtered run captures fewer lines: it needs only some.)
"$ROOT/scripts/scan-secrets.sh" "$COFFER_TEST_LOG" "$([ -n "${COFFER_TEST_FILTER:-}" ] && echo 1 || echo 200)"
say "permissions: every AWS call a function made is allowed by its policy; routes = template"
"$VENV/bin/python" "$ROOT/scripts/check-iam.py" --self-test template.yaml
"$ROOT/target/debug/coffer-dev" routes > "$STATE_DIR/routes.json"
if [ -n "${COFFER_TEST_FILTER:-}" ]; then
  # A filtered run records only some calls: the check still runs, on what was recorded.
  touch "$COFFER_AWS_CALL_LOG"
fi
"$VENV/bin/python" "$ROOT/scripts/check-iam.py" template.yaml "$COFFER_AWS_CALL_LOG" "$STATE_DIR/routes.json"
say "reliability report"
python3 "$ROOT/scripts/report.py" "$COFFER_REPORT_FILE"

say "the API description: openapi.json current and linted; a local stack fuzzed against it"
"$ROOT/scripts/check-openapi.sh"

# Template lint/validate, template ↔ crates, release arm64 bootstraps (the slow part: ~10 min cold).
# (COFFER_SKIP_DEPLOY_CHECKS=1 skips them while iterating; CI never sets it.)
if [ "${COFFER_SKIP_DEPLOY_CHECKS:-}" != 1 ]; then
  "$ROOT/scripts/check-deploy.sh"
fi
say "all stages passed"
