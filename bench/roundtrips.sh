#!/usr/bin/env bash
# Round trips to Postgres per delivery: a count, not a timing, so that it
# holds on a busy machine. Clientele on a fresh Postgres database logs every
# statement it sends (sqlx at debug; it does not log BEGIN, counted here
# as one per COMMIT); wrk sends
# bench/ingest.lua's deliveries for a while; the statements sent meanwhile
# (the dispatcher's and the source registry's included) are divided by the
# deliveries answered, in all and by statement.
#
#   bench/roundtrips.sh [seconds=10] [connections=64]
#
# BENCH_BIN names the binary (default: the release build, built if missing).
# SUBSCRIBED=1: with one subscription to the no-op receiver
# (bench/noop.rs, $NOOP_BIN on $NOOP_PORT); the window then runs until the
# messages are delivered, and the counts are also given per message
# delivered.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
CONNECTIONS=${2:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
SUBSCRIBED=${SUBSCRIBED:-}
NOOP_PORT=${NOOP_PORT:-8091}
NOOP_BIN=${NOOP_BIN:-target/release/examples/noop}

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin clientele --example noop
fi

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

fresh_database
RUST_LOG=sqlx::query=debug start_clientele "$PG_URL/$BENCH_DB" 2>"$work/log"
if [ -n "$SUBSCRIBED" ]; then
  "$NOOP_BIN" "127.0.0.1:$NOOP_PORT" &
  wait_for "$NOOP_PORT"
  curl -sf -o /dev/null -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$NOOP_PORT/hook\"}" "http://127.0.0.1:$PORT/api/v1/subscriptions"
fi
sleep 1
before=$(wc -l <"$work/log")
measure roundtrips "$clientele" "$PORT" >/dev/null
delivered=0
if [ -n "$SUBSCRIBED" ]; then
  # Until every change is delivered (the backlog's gauges at 0).
  for _ in $(seq 1 3000); do
    [ "$(metric clientele_outbox_)" = 0 ] && break
    sleep 0.2
  done
  delivered=$(metric 'clientele_messages_total{outcome="delivered"}')
fi
sed -n "$((before + 1)),\$p" "$work/log" >"$work/window"
stop_clientele
answered=$(awk '/requests in/ {print $1}' "$work/roundtrips.txt")

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s: $answered deliveries answered"
if [ -n "$SUBSCRIBED" ]; then
  echo "$delivered messages delivered; per message delivered: the counts below times $(awk -v a="$answered" -v d="$delivered" 'BEGIN {printf "%.3f", a / d}')"
fi
awk -v n="$answered" '/sqlx::query/ {
    total++
    if (match($0, /summary="[^"]*"/)) by[substr($0, RSTART + 9, RLENGTH - 10)]++
  } END {
    by["BEGIN"] = by["COMMIT"]
    total += by["BEGIN"]
    printf "%.2f statements per delivery (%d in all)\n", total / n, total
    for (s in by) printf "%8.3f  %s\n", by[s] / n, s | "sort -rn"
  }' "$work/window"
