#!/usr/bin/env bash
# The API description, checked three ways (a stage of scripts/test.sh; runs alone as well):
#   1. openapi.json is what the code generates now (`coffer-dev openapi`);
#   2. Redocly CLI lints it (redocly.yaml: the recommended rules);
#   3. Schemathesis sends generated requests, valid and not, to every operation of a local stack
#      of its own (schemathesis.toml: checks, examples per operation, seed) and fails on any 5xx
#      and on any answer whose status, content type or body the document does not describe;
#   4. the TypeScript client's types are generated from it as committed, type-check, and its
#      tests run the seed flows against that stack.
# Uses DynamoDB Local, moto and localstripe on the test ports: scripts/test.sh's when it runs
# them, else its own, which it stops. Stops the stack it starts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

STATE_DIR="$ROOT/.stack/test"
mkdir -p "$STATE_DIR"
stage_started=$(date +%s)
trap stop_all EXIT
trap 'exit 130' INT TERM

ensure_node_tools
if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  # Alone: the emulators scripts/test.sh would have started, on the same ports, and the binary
  # as scripts/stack.sh builds it.
  ensure_tools "$SCHEMATHESIS"
  start_servers "${TEST_DYNAMODB_PORT:-18000}" "${TEST_MOTO_PORT:-15000}" "${TEST_STRIPE_PORT:-18420}"
  export STRIPE_API_BASE="http://127.0.0.1:${TEST_STRIPE_PORT:-18420}"
  cargo build -q --locked --workspace
else
  # In scripts/test.sh, which has built the workspace (building coffer-dev alone would resolve
  # other features and build it again).
  ensure_python_tools "$SCHEMATHESIS"
fi
DEV="$ROOT/target/debug/coffer-dev"

say "openapi: openapi.json is what the code generates"
if ! "$DEV" openapi | diff -u openapi.json - >"$STATE_DIR/openapi.diff"; then
  head -n 40 "$STATE_DIR/openapi.diff" >&2
  echo "openapi.json is stale: the code describes the API differently (diff above; all of it in" \
    ".stack/test/openapi.diff). Regenerate and commit it:" >&2
  echo "  target/debug/coffer-dev openapi > openapi.json" >&2
  exit 1
fi

# A lint finding fails the stage at the end, after Schemathesis has had its say too.
failed=()
say "openapi: redocly lint openapi.json"
if ! (cd "$NODE_DIR" && npx --no-install @redocly/cli lint --config "$ROOT/redocly.yaml" \
  --format stylish "$ROOT/openapi.json"); then
  failed+=("the lint (its findings are above)")
fi

# The stack, as scripts/stack.sh starts it, on a port of its own, with a table, secrets and a bus
# of its own (DynamoDB Local and moto still hold what the tests made; new names keep them apart).
PORT="${TEST_OPENAPI_PORT:-13000}"
run_id="fuzz-$(date +%s)-$$"
if port_open "$PORT"; then
  echo "port $PORT is taken; set TEST_OPENAPI_PORT to a free port" >&2
  exit 1
fi
say "openapi: starting the API on port $PORT for Schemathesis"
export PORT TABLE_NAME="coffer-$run_id" STRIPE_SECRET_ID="coffer/$run_id/stripe" \
  PROJECT_SECRET_PREFIX="coffer/$run_id/projects" EVENT_BUS_NAME="coffer-$run_id-billing"
"$DEV" up >"$STATE_DIR/openapi-stack.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT" openapi-stack

export COFFER_FUZZ_DEVELOPER_TOKEN COFFER_FUZZ_SERVICE_TOKEN
COFFER_FUZZ_DEVELOPER_TOKEN=$("$DEV" token --developer fuzz-developer 3600)
COFFER_FUZZ_SERVICE_TOKEN=$("$DEV" token --service app-backend 3600)

# Something to find (schemathesis.toml draws these half of the time): the project `fuzz`, configured
# in test mode (localstripe takes any key), with a package, both the developer's; and credits for
# the developer's own account in the default project.
developer_call() { # METHOD PATH BODY
  local answer
  if ! answer=$(curl -sS --fail-with-body -X "$1" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $COFFER_FUZZ_DEVELOPER_TOKEN" -d "$3" "http://127.0.0.1:$PORT$2"); then
    echo "setting up the data to fuzz with: $1 $2 answered $answer" >&2
    return 1
  fi
}
developer_call PUT "/api/v1/payments/stripe/projects/fuzz/config?test_mode=true" \
  '{"secretKey":"sk_test_fuzz_0123456789abcdef","publishableKey":"pk_test_fuzz_0123","webhookSecret":"whsec_fuzzSigningSecret0123456789abcdefgh"}'
developer_call PUT "/api/v1/payments/stripe/projects/fuzz/credit-packages/ten?test_mode=true" \
  '{"name":"Ten","description":"10 credits","amount":10,"currency":"usd","creditAmount":12.5,"isActive":true}'
"$DEV" grant fuzz-developer 1000 "credits to spend while fuzzing" "$run_id" >/dev/null

say "openapi: Schemathesis against http://127.0.0.1:$PORT (settings: schemathesis.toml)"
rm -rf "$STATE_DIR/schemathesis"
status=0
"$VENV/bin/st" --config-file "$ROOT/schemathesis.toml" --no-color run openapi.json \
  --url "http://127.0.0.1:$PORT" --report json --report-json-path "$STATE_DIR/schemathesis/report.json" \
  >"$STATE_DIR/schemathesis.log" 2>&1 || status=$?
python3 "$ROOT/scripts/schemathesis-summary.py" "$STATE_DIR/schemathesis/report.json" \
  "$STATE_DIR/schemathesis.log" >&2 || echo "(no summary; the run is in .stack/test/schemathesis.log)" >&2
if [ "$status" -ne 0 ]; then
  failed+=("Schemathesis, exit $status (each failure, its request, answer and a curl line to replay it: .stack/test/schemathesis.log)")
fi

# The TypeScript client (clients/typescript): its types are what openapi-typescript generates
# from openapi.json now, it type-checks, and its tests run the seed flows against this stack.
CLIENT="$ROOT/clients/typescript"
say "openapi: the TypeScript client, generated, type-checked and run against http://127.0.0.1:$PORT"
client_log="$STATE_DIR/typescript-client.log"
: >"$client_log"
if [ ! -f "$CLIENT/node_modules/.package-lock.json" ] \
  || [ "$CLIENT/package-lock.json" -nt "$CLIENT/node_modules/.package-lock.json" ]; then
  if ! (cd "$CLIENT" && npm ci --no-audit --no-fund) >>"$client_log" 2>&1; then
    tail -n 20 "$client_log" >&2
    failed+=("npm ci in clients/typescript (.stack/test/typescript-client.log)")
  fi
fi
if ! (cd "$CLIENT" && npx --no-install openapi-typescript "$ROOT/openapi.json" \
  --output "$STATE_DIR/schema.d.ts") >>"$client_log" 2>&1; then
  tail -n 20 "$client_log" >&2
  failed+=("openapi-typescript could not generate the client's types (.stack/test/typescript-client.log)")
elif ! diff -q "$CLIENT/src/schema.d.ts" "$STATE_DIR/schema.d.ts" >/dev/null; then
  failed+=("the TypeScript client's types are stale: regenerate them (cd clients/typescript && npm run generate) and commit src/schema.d.ts")
fi
client_user="ts-$run_id"
if ! (cd "$CLIENT" && COFFER_CLIENT_URL="http://127.0.0.1:$PORT" COFFER_CLIENT_USER="$client_user" \
  COFFER_CLIENT_TOKEN="$("$DEV" token "$client_user" 3600)" \
  COFFER_CLIENT_SERVICE_TOKEN="$COFFER_FUZZ_SERVICE_TOKEN" \
  COFFER_CLIENT_STRIPE_URL="$STRIPE_API_BASE" npm test) >>"$client_log" 2>&1; then
  tail -n 40 "$client_log" >&2
  failed+=("the TypeScript client's type check or tests (.stack/test/typescript-client.log)")
else
  grep -E '^# (pass|fail)' "$client_log" >&2 || true
fi

say "openapi: the stack's log holds no secret"
"$ROOT/scripts/scan-secrets.sh" "$STATE_DIR/openapi-stack.log" || failed+=("the secrecy scan")

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'openapi: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
say "openapi: passed in $(( $(date +%s) - stage_started ))s"
