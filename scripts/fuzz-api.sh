#!/usr/bin/env bash
# venued: fuzz the network API from its own OpenAPI document. Run it from anywhere as
#
#     ./scripts/fuzz-api.sh
#
# It installs schemathesis from PyPI into a virtualenv under target/fuzz-venv (once; only
# when missing or of another version), builds venued, starts `venued serve` on a fresh
# data dir with plain HTTP on a free port of 127.0.0.1 (HTTPS off), creates an owner
# account, a bearer token and a few stations and sessions through the control socket,
# and runs schemathesis against http://127.0.0.1:PORT/api/v1/openapi.json with that
# token. The run fails if any request gets a 5xx, if schemathesis finds anything else
# it cannot complete (a connection reset, say: a handler that panicked), if the server
# logs a panic, or if the server does not stop cleanly (exit 0) on SIGTERM.
#
# The live stream (GET /api/v1/stream) is left out: a valid request never ends, so
# there is nothing for a fuzzer to wait for. tests/it/stream_metrics.rs covers it.
#
# Needs python3 (with venv) and curl; network access to PyPI the first time.
#
# Environment:
#   FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 25)
#   FUZZ_TIMEOUT       seconds schemathesis may run before the run is failed (default 240)
#   FUZZ_SEED          schemathesis seed, to replay a run (default: random)
#   FUZZ_CHECKS        schemathesis checks (default not_a_server_error); e.g.
#                      not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
#                      also holds every answer to what the document says
#   FUZZ_REPORT_DIR    keep schemathesis' JUnit report and the server log here
#
# Exit status: 0 if no 5xx was found and the server stopped cleanly, otherwise non-zero.

set -euo pipefail

cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
max_examples=${FUZZ_MAX_EXAMPLES:-25}
time_budget=${FUZZ_TIMEOUT:-240}
venv="$PWD/target/fuzz-venv"
st="$venv/bin/schemathesis"

say() { echo "==> fuzz: $*"; }

# ---- schemathesis and openapi-spec-validator, installed once ----
installed() {
    "$venv/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION'
         or m.version('openapi-spec-validator') != '$VALIDATOR_VERSION')" 2> /dev/null
}
if ! installed; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into ${venv#"$PWD/"}"
    started=$SECONDS
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
    say "installed in $((SECONDS - started)) s"
fi
say "$("$st" --version)"

# ---- venued ----
cargo build --locked --quiet --bin venued
bin=target/debug/venued

work=$(mktemp -d "${TMPDIR:-/tmp}/venued-fuzz.XXXXXX")
data="$work/data"
mkdir -p "$data"
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2> /dev/null; then
        kill -KILL "$server_pid" 2> /dev/null || true
    fi
    if [[ -n ${FUZZ_REPORT_DIR:-} ]]; then
        mkdir -p "$FUZZ_REPORT_DIR"
        cp "$work/serve.log" "$FUZZ_REPORT_DIR/" 2> /dev/null || true
        cp -r "$work/report/." "$FUZZ_REPORT_DIR/" 2> /dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

VENUED_DATA_DIR="$data" VENUED_HTTP_LISTEN="127.0.0.1:$port" VENUED_HTTPS_LISTEN= VENUED_MQTT_LISTEN= VENUED_MQTTS_LISTEN= \
    VENUED_LOG=info "$bin" serve > "$work/serve.log" 2>&1 < /dev/null &
server_pid=$!

for _ in $(seq 1 200); do
    if curl -sf -o /dev/null "$base/healthz"; then
        break
    fi
    if ! kill -0 "$server_pid" 2> /dev/null; then
        echo "fuzz: venued serve exited at start:" >&2
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -sf -o /dev/null "$base/healthz" || {
    echo "fuzz: venued did not answer on $base within 20 s" >&2
    exit 1
}
say "venued serve (pid $server_pid) on $base, data in $data"

# ---- an owner, a token, some stations and sessions (control socket) ----
admin() { VENUED_DATA_DIR="$data" "$bin" "$@" < /dev/null; }
admin user add fuzz --role owner > /dev/null
token=$(admin token create fuzz --user fuzz | sed -n 's/^secret: //p')
[[ -n $token ]] || {
    echo "fuzz: could not create a bearer token" >&2
    exit 1
}
admin station add pc-01 --name "PC 01" --kind pc --zone arena > /dev/null
admin station add pc-02 --name "PC 02" --kind pc --zone arena > /dev/null
admin station add ps-01 --name "PS 01" --kind console > /dev/null
admin session start pc-01 30m > /dev/null
admin session start ps-01 --open > /dev/null

# ---- the document: valid OpenAPI 3.1 ----
curl -sf "$base/api/v1/openapi.json" -o "$work/openapi.json"
"$venv/bin/python" - "$work/openapi.json" << 'PY'
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
with open(sys.argv[1]) as f:
    doc = json.load(f)
validate(doc, cls=OpenAPIV31SpecValidator)
ops = sum(1 for item in doc["paths"].values() for m in item if m in ("get", "post", "put", "patch", "delete"))
print(f"==> fuzz: the document is valid OpenAPI {doc['openapi']}: {len(doc['paths'])} paths, {ops} operations")
PY

# ---- the fuzz run ----
seed=()
if [[ -n ${FUZZ_SEED:-} ]]; then
    seed=(--seed "$FUZZ_SEED")
fi
say "schemathesis: at most $max_examples cases per operation and phase, ${time_budget} s"
started=$SECONDS
set +e
# From the scratch dir: schemathesis keeps state in ./.schemathesis.
(cd "$work" && timeout --kill-after=10 "$time_budget" "$st" run "$base/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "${FUZZ_CHECKS:-not_a_server_error}" \
    --exclude-operation-id streamEvents \
    --max-examples "$max_examples" \
    --workers 1 \
    --request-timeout 35 \
    --generation-database none \
    --no-color \
    --report junit --report-dir "$work/report" \
    "${seed[@]}")
fuzz_rc=$?
set -e
say "schemathesis finished in $((SECONDS - started)) s with exit status $fuzz_rc"
if [[ $fuzz_rc -eq 124 || $fuzz_rc -eq 137 ]]; then
    echo "fuzz: schemathesis ran past ${time_budget} s and was stopped" >&2
fi

# ---- the server: no panic, a clean stop ----
if ! kill -0 "$server_pid" 2> /dev/null; then
    echo "fuzz: venued died during the run:" >&2
    tail -n 50 "$work/serve.log" >&2
    wait "$server_pid" || true
    server_pid=
    exit 1
fi
kill -TERM "$server_pid"
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=
say "venued stopped with exit status $server_rc"

failed=0
if grep -n "panicked" "$work/serve.log" >&2; then
    echo "fuzz: venued panicked (above)" >&2
    failed=1
fi
if [[ $server_rc -ne 0 ]]; then
    echo "fuzz: venued did not stop cleanly (exit status $server_rc):" >&2
    tail -n 20 "$work/serve.log" >&2
    failed=1
fi
if [[ $fuzz_rc -ne 0 ]]; then
    echo "fuzz: schemathesis found failures (exit status $fuzz_rc)" >&2
    failed=1
fi
exit "$failed"
