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
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
CONNECTIONS=${2:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin clientele
fi

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

fresh_database
RUST_LOG=sqlx::query=debug start_clientele "$PG_URL/$BENCH_DB" 2>"$work/log"
sleep 1
before=$(wc -l <"$work/log")
measure roundtrips "$clientele" "$PORT" >/dev/null
sed -n "$((before + 1)),\$p" "$work/log" >"$work/window"
stop_clientele
answered=$(awk '/requests in/ {print $1}' "$work/roundtrips.txt")

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s: $answered deliveries answered"
awk -v n="$answered" '/sqlx::query/ {
    total++
    if (match($0, /summary="[^"]*"/)) by[substr($0, RSTART + 9, RLENGTH - 10)]++
  } END {
    by["BEGIN"] = by["COMMIT"]
    total += by["BEGIN"]
    printf "%.2f statements per delivery (%d in all)\n", total / n, total
    for (s in by) printf "%8.3f  %s\n", by[s] / n, s | "sort -rn"
  }' "$work/window"
