#!/usr/bin/env bash
# Outbound keeps up (issue 21, item 2): one subscription to the no-op
# receiver (bench/noop.rs), Clientele under bench/ingest.lua at full rate,
# then at half that rate, on each store, with the HTTP ceiling measured
# first in the same run.
#
#   bench/outbound.sh [seconds=60] [connections=64]
#
# At full rate it samples, every second, the deliveries ingested
# (clientele_deliveries_total) and the messages delivered
# (clientele_messages_total{outcome="delivered"}), and reports delivered /
# ingested over the whole run and its worst 10 s, the backlog left when the
# load stops (pending messages and changes not fanned out), and how long
# it takes to drain. At half rate (PACE_MS in ingest.lua, from the full
# rate just measured) it reports the same ratio and the delivery lag, from
# a change's commit to the receiver's 2xx (clientele_delivery_lag_seconds,
# p50 and p99 read from its buckets). Also each process's CPU, in cores.
#
# BENCH_BINS: the binaries to measure, in turn, on each store (to alternate
# a before and an after); default the release build. STORES: "embedded
# postgres" (Postgres at $PG_URL, when one answers).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-60}
CONNECTIONS=${2:-64}
THREADS=${THREADS:-2}
CEILING_SECONDS=${CEILING_SECONDS:-10}
NOOP_PORT=${NOOP_PORT:-8091}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
STORES=${STORES:-embedded postgres}
NOOP_BIN=${NOOP_BIN:-target/release/examples/noop}

if [ -z "${BENCH_BINS:-}" ]; then
  cargo build --release --quiet --bin clientele --example noop
  BENCH_BINS=target/release/clientele
fi

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

# cpu PID: the process's CPU time so far, in seconds.
cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# sample FILE: every second, the time, deliveries ingested and messages
# delivered, until killed.
sample() {
  while true; do
    echo "$(date +%s.%N) $(metric clientele_deliveries_total) $(metric 'clientele_messages_total{outcome="delivered"}')" >>"$1"
    sleep 1
  done
}

# backlog: pending messages and changes not fanned out yet.
backlog() {
  metric clientele_outbox_
}

# lag: p50 and p99 of clientele_delivery_lag_seconds, interpolated within
# its buckets, and the share of deliveries within 1 s.
lag() {
  curl -s "http://127.0.0.1:$PORT/metrics" | awk '
    /^clientele_delivery_lag_seconds_bucket/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      n++; bound[n] = (le == "+Inf") ? 1e9 : le + 0; count[n] = $NF
      if (le == "1") within = $NF
    }
    /^clientele_delivery_lag_seconds_count/ {total = $NF}
    function quantile(q,   i, target, low, below) {
      target = q * total; low = 0; below = 0
      for (i = 1; i <= n; i++) {
        if (count[i] >= target) {
          return low + (bound[i] - low) * (target - below) / (count[i] - below)
        }
        low = bound[i]; below = count[i]
      }
    }
    END {
      if (total == 0) { print "no delivery"; exit }
      printf "lag p50 %.3f s, p99 %.3f s, within 1 s %.2f%% (%d deliveries)\n",
        quantile(0.5), quantile(0.99), 100 * within / total, total
    }'
}

# run NAME BIN STORE [PACE_MS]: Clientele (BIN) on a fresh STORE with one
# subscription to the no-op receiver, under wrk for $DURATION s; prints
# the rates, the ratio, the backlog at the end, the drain time and the lag.
run() {
  local name=$1 bin=$2 store=$3 pace=${4:-0}
  local url
  if [ "$store" = postgres ]; then
    fresh_database
    url="$PG_URL/$BENCH_DB"
  else
    url="sqlite://$work/$name/clientele.db"
  fi
  "$NOOP_BIN" "127.0.0.1:$NOOP_PORT" &
  local noop=$!
  wait_for "$NOOP_PORT"
  BENCH_BIN=$bin start_clientele "$url"
  curl -sf -o /dev/null -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$NOOP_PORT/hook\"}" "http://127.0.0.1:$PORT/api/v1/subscriptions"
  local cpu0 noop0
  cpu0=$(cpu "$clientele")
  noop0=$(cpu "$noop")
  sample "$work/$name.samples" &
  local sampler=$!
  sleep 0.5
  PACE_MS=$pace wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s bench/ingest.lua \
    "http://127.0.0.1:$PORT" >"$work/$name.txt"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  echo "$(date +%s.%N) $(metric clientele_deliveries_total) $(metric 'clientele_messages_total{outcome="delivered"}')" \
    >>"$work/$name.samples"
  local left lagged cpu1 noop1 stopped drained
  left=$(backlog)
  lagged=$(lag)
  cpu1=$(cpu "$clientele")
  noop1=$(cpu "$noop")
  stopped=$(date +%s.%N)
  drained=$stopped
  for _ in $(seq 1 600); do
    [ "$(backlog)" = 0 ] && break
    sleep 0.2
    drained=$(date +%s.%N)
  done
  stop_clientele
  kill "$noop"; wait "$noop" 2>/dev/null || true
  awk -v name="$name" -v left="$left" -v t0="$stopped" -v t1="$drained" \
    -v cpu0="$cpu0" -v cpu1="$cpu1" -v noop0="$noop0" -v noop1="$noop1" -v d="$DURATION" '
    { t[NR] = $1; in_[NR] = $2; out[NR] = $3 }
    END {
      worst = 1e9
      for (i = 1; i + 10 <= NR; i++) {
        di = in_[i + 10] - in_[i]
        if (di > 0 && (out[i + 10] - out[i]) / di < worst) worst = (out[i + 10] - out[i]) / di
      }
      span = t[NR] - t[1]; ingested = (in_[NR] - in_[1]) / span; delivered = (out[NR] - out[1]) / span
      printf "%-22s ingested %6.0f/s  delivered %6.0f/s  ratio %.2f (worst 10 s %.2f)  backlog %d, drained in %.1f s  CPU %.2f + %.2f cores\n",
        name, ingested, delivered, delivered / ingested, worst, left, t1 - t0,
        (cpu1 - cpu0) / span, (noop1 - noop0) / span
    }' "$work/$name.samples"
  echo "$name: $lagged"
  awk '/^Requests\/sec:/ {print $2}' "$work/$name.txt" >"$work/$name.rate"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$NOOP_BIN" "127.0.0.1:$NOOP_PORT" &
noop=$!
wait_for "$NOOP_PORT"
DURATION=$CEILING_SECONDS measure noop "$noop" "$NOOP_PORT" >/dev/null
kill "$noop"; wait "$noop" 2>/dev/null || true
echo "HTTP ceiling (no-op, ${CEILING_SECONDS} s): $(cat "$work/noop.rate") deliveries/s"

for store in $STORES; do
  if [ "$store" = postgres ] && ! psql "$PG_URL/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    echo "no PostgreSQL at $PG_URL: the Postgres store is not measured"
    continue
  fi
  i=0
  for bin in $BENCH_BINS; do
    i=$((i + 1))
    echo "== $store, $bin"
    run "$store-$i-full" "$bin" "$store"
    pace=$(awk -v r="$(cat "$work/$store-$i-full.rate")" -v c="$CONNECTIONS" 'BEGIN {printf "%d", 2 * c * 1000 / r}')
    run "$store-$i-half" "$bin" "$store" "$pace"
  done
done
