#!/usr/bin/env bash
# Starts the whole local stack and serves the API on http://127.0.0.1:$PORT (default 3000):
# DynamoDB Local, moto (Secrets Manager, EventBridge, SQS), localstripe (unless STRIPE_SECRET_KEY is a real test
# key), the table and sample packages, the secret, the webhook, and every function's routes
# (the contract's and the projects' developer routes), the API description (/openapi.json) and
# its reference page (/reference, Redoc from .local-tools).
# Ctrl-C stops everything it started. Safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export PORT="${PORT:-3000}"
DDB_PORT="${DYNAMODB_PORT:-8000}"
MOTO_PORT="${MOTO_PORT:-5000}"

ensure_tools
# Redoc's bundle for the reference page (REDOC_JS, which the router serves).
ensure_node_tools
trap stop_all EXIT
trap 'exit 130' INT TERM

STRIPE_PORT=""
if [ -z "${STRIPE_SECRET_KEY:-}" ] || [ -n "${STRIPE_API_BASE:-}" ]; then
  # No real key given: use localstripe.
  export STRIPE_API_BASE="${STRIPE_API_BASE:-http://127.0.0.1:8420}"
  case "$STRIPE_API_BASE" in
    http://127.0.0.1:*|http://localhost:*) STRIPE_PORT="${STRIPE_API_BASE##*:}"; STRIPE_PORT="${STRIPE_PORT%%/*}" ;;
  esac
fi
start_servers "$DDB_PORT" "$MOTO_PORT" "$STRIPE_PORT"

export TABLE_NAME="${TABLE_NAME:-coffer-local}"
export STRIPE_SECRET_ID="${STRIPE_SECRET_ID:-coffer/local/stripe}"
# Projects' keys go to coffer/local/projects/<project>/<mode> in moto.
export PROJECT_SECRET_PREFIX="${PROJECT_SECRET_PREFIX:-coffer/local/projects}"
# Billing events go to this bus in moto; a rule copies them to the queue <bus>-events.
export EVENT_BUS_NAME="${EVENT_BUS_NAME:-coffer-local-billing}"
say "building and starting the API (first build takes a few minutes)"
# The whole workspace, as scripts/test.sh builds it: one resolution of features, so that neither
# rebuilds the AWS SDK crates after the other (building coffer-dev alone resolves other features).
cargo build -q --workspace --locked
say "DynamoDB Local: $AWS_ENDPOINT_URL_DYNAMODB   Secrets Manager (moto): $AWS_ENDPOINT_URL_SECRETS_MANAGER   Stripe: ${STRIPE_API_BASE:-api.stripe.com}"
"$ROOT/target/debug/coffer-dev" up &
PIDS+=($!)
wait_port "$PORT" coffer-api || exit 1
cat >&2 <<TXT

  Page:     http://127.0.0.1:$PORT/   (the storefront: sign in with a name)
  API:      http://127.0.0.1:$PORT
  Webhook:  http://127.0.0.1:$PORT/api/stripe/webhook
  Docs:     http://127.0.0.1:$PORT/reference   (the API reference, Redoc)
  OpenAPI:  http://127.0.0.1:$PORT/openapi.json
  Token:    TOKEN=\$(scripts/token.sh alice)       developer: DEV=\$(scripts/token.sh --developer dev-1)
  Try:      curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$PORT/api/stripe/credit-packages

  Ctrl-C stops everything.
TXT
wait
