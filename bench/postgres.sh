#!/usr/bin/env bash
# The Postgres store alone, as bench/run.sh measures it after the embedded
# store: the HTTP ceiling (bench/noop.rs), then Clientele on a fresh
# database at $PG_URL, one instance, then two on one database, in the same
# run, under bench/ingest.lua.
#
#   bench/postgres.sh [seconds=20] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-20}
CONNECTIONS=${2:-64}
THREADS=${THREADS:-2}
NOOP_PORT=${NOOP_PORT:-8091}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin clientele --example noop
fi

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
postgres_settings
printf '%-10s %12s %10s %10s %10s %10s\n' target deliveries/s p50 p99 non-2xx peak-RSS

target/release/examples/noop "127.0.0.1:$NOOP_PORT" &
noop=$!
wait_for "$NOOP_PORT"
measure noop "$noop" "$NOOP_PORT"
kill "$noop"; wait "$noop" 2>/dev/null || true

measure_postgres
