#!/usr/bin/env bash
# Prints a local JWT (HS256, signed with LOCAL_JWT_SECRET) for the given user id.
#   scripts/token.sh alice [ttl-seconds]
#   scripts/token.sh --service app-backend   (locally stands in for IAM on /internal/*)
#   scripts/token.sh --developer dev-1       (a developer: the developer routes under /api/v1/payments)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build -q -p coffer-dev
exec "$ROOT/target/debug/coffer-dev" token "$@"
