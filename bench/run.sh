#!/usr/bin/env bash
# Ingest benchmark: the HTTP ceiling (bench/noop.rs, same stack, parses the
# JSON and answers) and Clientele's durable ingest on a fresh embedded store,
# under the same wrk load (bench/ingest.lua), in the same run.
#
#   bench/run.sh [seconds=20] [connections=64]
#
# Prints deliveries/s, p50/p99 acknowledgement latency, non-2xx answers and
# peak RSS for both, and Clientele's rate as a ratio of the ceiling; then
# Clientele's latency at half its own rate (wrk paced), and under ten times
# the connections (overload: 503s, bounded memory). Then the
# delivery benchmark: Clientele again, with one subscription to the no-op
# receiver, the same load; its ingest ratio with the outbox on, and the
# end-to-end changes/s from the load's start until every message is
# delivered. Then, when a PostgreSQL answers at $PG_URL (default: the local
# one), the Postgres store the same way: one instance, and two instances on
# one database, each driven by its own wrk with half the connections.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-20}
CONNECTIONS=${2:-64}
THREADS=${THREADS:-2}
NOOP_PORT=${NOOP_PORT:-8091}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

cargo build --release --quiet --bin clientele --example noop

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores"
printf '%-10s %12s %10s %10s %10s %10s\n' target deliveries/s p50 p99 non-2xx peak-RSS

target/release/examples/noop "127.0.0.1:$NOOP_PORT" &
noop=$!
wait_for "$NOOP_PORT"
measure noop "$noop" "$NOOP_PORT"
kill "$noop"; wait "$noop" 2>/dev/null || true

start_clientele "sqlite://$work/ingest/clientele.db"
measure clientele "$clientele" "$PORT"
stop_clientele

# The latency at half that rate, on a fresh store: each connection pauses
# between deliveries (bench/ingest.lua's PACE_MS).
pace=$(awk -v r="$(cat "$work/clientele.rate")" -v c="$CONNECTIONS" 'BEGIN {printf "%d", 2 * c * 1000 / r}')
start_clientele "sqlite://$work/paced/clientele.db"
PACE_MS=$pace measure half-rate "$clientele" "$PORT"
stop_clientele

# Ten times the connections, on a fresh store: beyond its bound of
# deliveries in flight, Clientele answers 503 with Retry-After at once, and
# its memory stays bounded.
start_clientele "sqlite://$work/overload/clientele.db"
CONNECTIONS=$((CONNECTIONS * 10)) measure overload "$clientele" "$PORT"
stop_clientele
awk -v d="$DURATION" '/requests in/ {n = $1} /Non-2xx/ {e = $5} END {
  printf "overload: %d answers, %d of them non-2xx, %.0f accepted/s\n", n, e, (n - e) / d
}' "$work/overload.txt"

target/release/examples/noop "127.0.0.1:$NOOP_PORT" &
noop=$!
wait_for "$NOOP_PORT"
start_clientele "sqlite://$work/delivery/clientele.db"
curl -s -o /dev/null -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$NOOP_PORT/hook\"}" "http://127.0.0.1:$PORT/api/v1/subscriptions"
started=$(date +%s.%N)
measure subscribed "$clientele" "$PORT"
# Pending messages and changes not fanned out yet.
until [ "$(metric clientele_outbox_)" = 0 ]; do sleep 0.2; done
finished=$(date +%s.%N)
delivered=$(metric 'clientele_messages_total{outcome="delivered"}')
stop_clientele
kill "$noop"; wait "$noop" 2>/dev/null || true

awk -v c="$(cat "$work/clientele.rate")" -v s="$(cat "$work/subscribed.rate")" -v n="$(cat "$work/noop.rate")" \
  -v d="$delivered" -v t0="$started" -v t1="$finished" 'BEGIN {
    t = t1 - t0
    printf "durable ingest / HTTP ceiling: %.2f (with a subscriber: %.2f)\n", c / n, s / n
    printf "delivered end to end: %d changes in %.1f s = %.0f changes/s\n", d, t, d / t
  }'

# The Postgres store, on a fresh database, when one answers.
if ! psql "$PG_URL/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  echo "no PostgreSQL at $PG_URL: the Postgres store is not measured"
  exit 0
fi

measure_postgres
