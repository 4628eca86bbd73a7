#!/usr/bin/env bash
# Benchmark (not part of the tests' pass/fail). Installs what it needs (project-local: Java if
# missing, the .venv tools including cfn-lint and sam, DynamoDB Local, the Node.js peers' npm
# packages), builds release binaries for the local architecture (to run: every function, and the bench with
# its floor, a bare lambda_http function), runs the deployment checks of scripts/check-deploy.sh
# (cfn-lint, sam validate --lint, and the arm64 `cargo lambda build` whose bootstraps are what is
# deployed, for their size), starts DynamoDB Local, moto and localstripe on their own ports, and
# prints, for the floor, every function and the Node.js peers (balance, webhook): size and zip
# (this build and the arm64 bootstrap), init, first/warm latency, CPU time per warm invocation,
# peak RSS, calls per request and cost per million requests; what each function costs above the
# floor; the Rust/Node ratios; warm throughput on one core; the TLS warm-up (cold starts through a
# TLS proxy, with and without it); then which targets were met.
# COFFER_BENCH_ONLY=balance,stripe-webhook measures only those functions (with the floor and the
# Node peers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_tools aws-sam-cli cfn-lint
trap stop_all EXIT
trap 'exit 130' INT TERM

say "npm install (bench/node-peer: stripe, @aws-sdk/client-dynamodb, @aws-sdk/client-secrets-manager)"
(cd bench/node-peer && npm install --silent --no-audit --no-fund >/dev/null)

functions=$(ls functions)
packages=(-p coffer-bench)
for name in $functions; do packages+=(-p "$name"); done
say "cargo build --release (the local architecture, to run; fat LTO, opt-level z)"
cargo build --release --locked "${packages[@]}"
say "deployment checks: cfn-lint, sam validate --lint, cargo lambda build --release --arm64 (what is deployed, for its size)"
"$ROOT/scripts/check-deploy.sh" >/dev/null

STATE_DIR="$ROOT/.stack/bench"
start_servers "${BENCH_DYNAMODB_PORT:-38000}" "${BENCH_MOTO_PORT:-35000}" "${BENCH_STRIPE_PORT:-38420}"
export STRIPE_API_BASE="http://127.0.0.1:${BENCH_STRIPE_PORT:-38420}"
"$ROOT/target/release/coffer-bench"
