#!/usr/bin/env bash
# What subscriptions that have nothing to send cost (issue 24): durable
# ingest on a fresh store with no subscription, with N disabled ones, and
# with N enabled ones whose filter the load never matches (`deleted`
# only); and, for the latter, the CPU Clientele burns while nothing
# happens (the dispatcher's fan-out and claims). Embedded store, then
# Postgres when one answers at $PG_URL.
#
#   bench/subscriptions.sh [seconds=10] [subscriptions=1000]
#
# BENCH_BIN=path runs another build (e.g. an older one, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
COUNT=${2:-1000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

[ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin clientele

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

# subscribe BODY: creates COUNT subscriptions; prints nothing.
subscribe() {
  for i in $(seq 1 "$COUNT"); do
    curl -sf -o /dev/null -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
      -d "{\"url\": \"http://127.0.0.1:9/idle/$i\", $1}" "http://127.0.0.1:$PORT/api/v1/subscriptions"
  done
}

# cpu_seconds PID: the user and system CPU time PID used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# scenario STORE-KIND NAME SETUP: a fresh store, SETUP's subscriptions, then
# the load.
scenario() {
  local store
  if [ "$1" = sqlite ]; then
    store="sqlite://$work/$2/clientele.db"
  else
    fresh_database
    store="$PG_URL/$BENCH_DB"
  fi
  start_clientele "$store"
  case "$3" in
    none) ;;
    disabled) subscribe '"secret": "bench-secret-of-at-least-24-bytes"'
      curl -s -H 'Authorization: Bearer bench' "http://127.0.0.1:$PORT/api/v1/subscriptions" |
        grep -o '"id":"sub_[0-9a-f]*"' | cut -d'"' -f4 | while read -r id; do
          curl -sf -o /dev/null -X PATCH -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
            -d '{"enabled": false}' "http://127.0.0.1:$PORT/api/v1/subscriptions/$id"
        done ;;
    idle) subscribe '"actions": ["deleted"]'
      local before
      before=$(cpu_seconds "$clientele")
      sleep "$DURATION"
      awk -v a="$before" -v b="$(cpu_seconds "$clientele")" -v d="$DURATION" -v n="$2" \
        'BEGIN {printf "%-22s idle CPU: %.1f%% of a core\n", n, 100 * (b - a) / d}' ;;
  esac
  measure "$2" "$clientele" "$PORT"
  stop_clientele
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, $COUNT subscriptions"
printf '%-10s %12s %10s %10s %10s %10s\n' target deliveries/s p50 p99 non-2xx peak-RSS
for kind in none disabled idle; do
  scenario sqlite "sqlite-$kind" "$kind"
done
if psql "$PG_URL/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  for kind in none disabled idle; do
    scenario postgres "pg-$kind" "$kind"
  done
else
  echo "no PostgreSQL at $PG_URL: the Postgres store is not measured"
fi
