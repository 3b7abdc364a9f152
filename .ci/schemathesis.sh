#!/usr/bin/env bash
# CI: checks the running server against its own OpenAPI document with
# schemathesis (pinned, in a virtualenv under target/): a debug build on
# 127.0.0.1 with a fresh SQLite store, seeded with the fixtures so that
# GETs find things. Every finding fails CI (docs/api.md says which checks
# run). Usage: .ci/schemathesis.sh [path to the clientele binary]
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
binary=${1:-target/debug/clientele}
venv=target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat > "$work/clientele.toml" <<TOML
listen = "127.0.0.1:$port"
store = "sqlite://$work/clientele.db"
admin_token = "schemathesis-admin-token"

[[sources]]
name = "treez"
kind = "treez"
tokens = ["schemathesis-treez-token"]
default_country = "US"

[[sources]]
name = "vagaro"
kind = "vagaro"
tokens = ["schemathesis-vagaro-token"]
default_country = "US"

[delivery]
allow_private = ["127.0.0.1/32"]
TOML

"$binary" serve --config "$work/clientele.toml" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -fsS "$base/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/readyz" > /dev/null

# The fixtures, so that customers, events and history exist; and a
# subscription, so that its routes find one.
curl -fsS -H 'Authorization: Bearer schemathesis-treez-token' -H 'Content-Type: application/json' \
    --data-binary @tests/fixtures/treez-customer.json "$base/webhooks/treez" > /dev/null
curl -fsS -H 'X-Vagaro-Signature: schemathesis-vagaro-token' -H 'Content-Type: application/json' \
    --data-binary @tests/fixtures/vagaro-customer-updated.json "$base/webhooks/vagaro" > /dev/null
curl -fsS -H 'Authorization: Bearer schemathesis-admin-token' -H 'Content-Type: application/json' \
    -d '{"url": "http://127.0.0.1:9/hook"}' "$base/api/v1/subscriptions" > /dev/null

cat > "$work/schemathesis.toml" <<TOML
[auth.openapi.apiKey]
bearer = "schemathesis-admin-token"

[auth.openapi.sourceBearer]
bearer = "schemathesis-treez-token"

[auth.openapi.vagaroSignature]
api_key = "schemathesis-vagaro-token"

[[operations]]
include-path = "/webhooks/{source}"
parameters = { source = "treez" }
TOML

status=0
# One worker: with two, hypothesis parses lambdas' source from two threads
# at once, which Python 3.11.7's `ast.parse` is not safe for ("AST
# constructor recursion depth mismatch", CPython gh-106905), a crash of the
# tool reported as an error of the run.
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples 30 --workers 1 --max-time 120 --seed 1 \
    || status=$?
if [ "$status" -ne 0 ]; then
    echo "CI: schemathesis found the server and its document disagree (server log follows)" >&2
    tail -50 "$work/server.log" >&2
fi
exit "$status"
