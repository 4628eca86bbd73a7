#!/usr/bin/env bash
# The scale harness (not part of the tests' pass/fail): each scheduled job over a hundred times
# the data of its over-the-wire test, cut short by a short deadline run after run, checked for
# nothing lost or doubled, its throughput printed (tests/tests/scale.rs; the figures are in
# docs/operations.md, Capacity). Sizes: SCALE_RECORDS, SCALE_CUSTOMERS, SCALE_INTENTS,
# SCALE_MISSED, SCALE_ACCOUNTS, SCALE_OVERAGE, SCALE_RUN_MS (see tests/tests/scale.rs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_tools
trap stop_all EXIT
trap 'exit 130' INT TERM
STATE_DIR="$ROOT/.stack/bench-scale"
# The test harness names the project localstripes too (the scale jobs do not use them).
start_test_servers "${SCALE_DYNAMODB_PORT:-38200}" "${SCALE_MOTO_PORT:-35200}" "${SCALE_STRIPE_PORT:-38420}" \
  "${SCALE_STRIPE_ALPHA_PORT:-38421}" "${SCALE_STRIPE_BETA_PORT:-38422}"
say "scale harness (debug build, one job at a time)"
cargo test --locked -p integration-tests --test scale -- --ignored --nocapture --test-threads=1 2>&1 \
  | tee "$STATE_DIR/scale.log" | grep -E '^(SCALE|test )' || true
grep -q "test result: ok" "$STATE_DIR/scale.log"
