#!/usr/bin/env bash
# Prints (and takes) the billing events the running local stack published: a rule on its bus in
# moto copies every event to the queue <bus>-events, one JSON line each.
#   scripts/events.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
moto="http://127.0.0.1:${MOTO_PORT:-5000}"
export AWS_ENDPOINT_URL_EVENTBRIDGE="${AWS_ENDPOINT_URL_EVENTBRIDGE:-$moto}"
export AWS_ENDPOINT_URL_SQS="${AWS_ENDPOINT_URL_SQS:-$moto}"
export EVENT_BUS_NAME="${EVENT_BUS_NAME:-coffer-local-billing}"
# moto accepts any credentials; these are placeholders, not keys.
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
cargo build -q -p coffer-dev
exec "$ROOT/target/debug/coffer-dev" events
