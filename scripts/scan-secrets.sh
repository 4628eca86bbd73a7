#!/usr/bin/env bash
# Fails when a log holds anything secret: a Stripe key, a webhook secret, a PaymentIntent client
# secret, a JWT or a Stripe-Signature value. Prints where and what kind, never the value.
#   scripts/scan-secrets.sh LOG [MIN_LINES]
set -euo pipefail
log=$1
min_lines=${2:-1}
lines=$(wc -l < "$log" 2>/dev/null || echo 0)
if [ "$lines" -lt "$min_lines" ]; then
  echo "secrecy scan: $log has $lines lines, expected at least $min_lines (were logs captured?)" >&2
  exit 1
fi
found=0
check() {
  local kind=$1 pattern=$2 hits
  hits=$(grep -nE -- "$pattern" "$log" | cut -d: -f1 | head -5 | tr '\n' ' ' || true)
  if [ -n "$hits" ]; then
    echo "secrecy scan: $kind in $log at line(s) $hits" >&2
    found=1
  fi
}
check "a Stripe secret key" '(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}'
check "a webhook signing secret" 'whsec_[A-Za-z0-9_]{4,}'
check "a PaymentIntent client secret" 'pi_[A-Za-z0-9]+_secret_[A-Za-z0-9]+'
check "a JWT" 'eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}'
check "a Stripe-Signature value" 'v1=[0-9a-f]{64}'
check "the secret's JSON" '"(stripeSecretKey|webhookSecret)" *: *"[^"]+'
if [ "$found" -ne 0 ]; then
  exit 1
fi
echo "secrecy scan: $lines log lines, no key, secret, client secret, JWT or signature"
