#!/usr/bin/env bash
# Deployment checks (part of scripts/test.sh): the SAM template lints and validates, a first
# deploy in a new account needs nothing it may not have (scripts/check-deploy-settings.py), every
# function in it is a crate of this workspace (and every function crate is in it), and
# `cargo lambda build --release --arm64` produces an arm64 `bootstrap` for each.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0 AWS_REGION="${AWS_REGION:-us-east-1}"

say "cfn-lint template.yaml"
cfn-lint template.yaml
say "sam validate --lint"
sam validate --lint >/dev/null
say "a first deploy: no reservation needed, no named resource left by a rollback, nothing asked"
"$VENV/bin/python" "$ROOT/scripts/check-deploy-settings.py"

in_template=$(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\) *$/\1/p' template.yaml | sort)
crates=$(ls functions | sort)
if [ "$in_template" != "$crates" ]; then
  echo "template.yaml functions and functions/ crates differ:" >&2
  diff <(echo "$in_template") <(echo "$crates") >&2 || true
  exit 1
fi
for name in $in_template; do
  grep -q "^name = \"$name\"" "functions/$name/Cargo.toml" || {
    echo "functions/$name/Cargo.toml does not define the package $name" >&2; exit 1; }
done
echo "template functions = crates: $(echo $in_template)"

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  say "rustup target add $target"
  rustup target add "$target"
fi
say "cargo lambda build --release --arm64"
packages=()
for name in $in_template; do packages+=(-p "$name"); done
cargo lambda build --release --arm64 --locked "${packages[@]}"
for name in $in_template; do
  bootstrap="target/lambda/$name/bootstrap"
  [ -f "$bootstrap" ] || { echo "missing $bootstrap" >&2; exit 1; }
  # ELF e_machine (bytes 18-19, little endian) 0xB7 = AArch64.
  machine=$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' \n')
  [ "$machine" = "b700" ] || { echo "$bootstrap is not an arm64 ELF (e_machine $machine)" >&2; exit 1; }
  printf '%-24s %8s bytes  arm64\n' "$name" "$(stat -c %s "$bootstrap")"
done
