#!/usr/bin/env bash
# The hot-account benchmark (not part of the tests' pass/fail): one user's usage at a target rate
# through Coffer's usage service against DynamoDB Local, counting writes per item. Prints
# events/s, the most writes one item took in a second, refusals, errors and overrun, then an
# exactness run (25% more events than a limit of HOT_EXACT_LIMIT, default 2,000). HOT_RATE,
# HOT_SECONDS and HOT_INFLIGHT change the load (defaults 5000, 10, 64). See docs/usage-capacity.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_tools
trap stop_all EXIT
trap 'exit 130' INT TERM
say "cargo build --release (the benchmark)"
cargo build --release --locked -p coffer-bench --bin hot_account
STATE_DIR="$ROOT/.stack/bench-usage"
start_servers "${BENCH_DYNAMODB_PORT:-38100}" "${BENCH_MOTO_PORT:-35100}" ""
say "hot account"
"$ROOT/target/release/hot_account"
