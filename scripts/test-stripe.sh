#!/usr/bin/env bash
# The opt-in suite against Stripe's real test mode (tests/tests/it/stripe_test_mode.rs):
#   STRIPE_TEST_SECRET_KEY=sk_test_… scripts/test-stripe.sh
# It starts DynamoDB Local and moto like scripts/test.sh (no localstripe, no test double) and
# runs only the ignored stripe_test_mode tests. It creates a product, prices, customers and
# subscriptions in that test account. The customer-portal test needs the account's portal
# settings saved once (Dashboard → Settings → Billing → Customer portal).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

case "${STRIPE_TEST_SECRET_KEY:-}" in
  sk_test_*) ;;
  *) echo "set STRIPE_TEST_SECRET_KEY to a Stripe test-mode secret key (sk_test_…)" >&2; exit 2 ;;
esac
ensure_tools
trap stop_all EXIT
trap 'exit 130' INT TERM
STATE_DIR="$ROOT/.stack/test-stripe"
start_servers "${TEST_DYNAMODB_PORT:-18100}" "${TEST_MOTO_PORT:-15100}" ""
say "cargo test (stripe_test_mode, against Stripe's test mode)"
cargo test -p integration-tests --test it --locked -- --ignored stripe_test_mode
say "all stripe test-mode tests passed"
