#!/usr/bin/env bash
# Prints (and takes) the billing events the running local stack published: a rule on its bus in
# moto copies every event to the queue <bus>-events, one JSON line each.
#   scripts/events.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
local_aws_env "${DYNAMODB_PORT:-8000}" "${MOTO_PORT:-5000}"
export EVENT_BUS_NAME="${EVENT_BUS_NAME:-coffer-local-billing}"
cargo build -q -p coffer-dev
exec "$ROOT/target/debug/coffer-dev" events
