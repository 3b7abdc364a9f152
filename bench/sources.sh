#!/usr/bin/env bash
# Sources as data (SPEC §9): ingest with 10,000 sources within 10% of
# ingest with 3. Two servers, each on a fresh embedded store of its own,
# one with 3 sources and one with 10,000, all created through the API
# once; then rounds of the same wrk load (bench/ingest.lua with
# SOURCES_FILE: every delivery a Treez body to its customer's source, with
# its token) against one and the other in turn, in the order
# A B, B A, A B... so that a machine that slows down or speeds up weighs
# on both alike. Only the server being measured has work meanwhile.
#
# Besides deliveries/s, each round gives the server's CPU time (user +
# system, from /proc/PID/stat) per delivery, which depends much less on
# what else the machine runs, and the load average when it ended.
#
#   bench/sources.sh [seconds=20] [connections=64] [sources=10000] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-20}
CONNECTIONS=${2:-64}
MANY=${3:-10000}
ROUNDS=${4:-3}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}
PORT_MANY=$((PORT + 1))

cargo build --release --quiet --bin clientele

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

# cpu_ticks PID: the process's user + system time, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# round LABEL PID PORT SOURCES_FILE: one wrk run; prints its line and
# appends "label rate cpu_us_per_delivery" to $work/results.
round() {
  local before after out="$work/$1.txt"
  before=$(cpu_ticks "$2")
  SOURCES_FILE="$4" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/ingest.lua \
    "http://127.0.0.1:$3" >"$out"
  after=$(cpu_ticks "$2")
  local load rss
  load=$(cut -d' ' -f1 /proc/loadavg)
  rss=$(awk '/^VmHWM:/ {printf "%.0f MiB", $2 / 1024}' "/proc/$2/status")
  awk -v label="$1" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v avg="$load" -v rss="$rss" '
    / requests in / {requests = $1}
    /^Requests\/sec:/ {rate = $2}
    /Non-2xx/ {errors = $5}
    $1 == "50%" {p50 = $2}
    $1 == "99%" {p99 = $2}
    END {
      ok = requests - errors
      cpu = ok > 0 ? ticks / hz / ok * 1e6 : 0
      printf "%-14s %12.0f %10s %10s %10d %12.0f %8s %10s\n", label, rate, p50, p99, errors, cpu, avg, rss
      printf "%s %f %f\n", label, rate, cpu >> "'"$work/results"'"
    }' "$out"
}

start_clientele "sqlite://$work/few/clientele.db" "$PORT"
few=$clientele
start_clientele "sqlite://$work/many/clientele.db" "$PORT_MANY"
many=$clientele
create_sources 3 "$work/sources-few.txt" "$PORT"
started=$(date +%s.%N)
create_sources "$MANY" "$work/sources-many.txt" "$PORT_MANY"
awk -v a="$started" -v b="$(date +%s.%N)" -v n="$MANY" 'BEGIN {printf "(%d sources created in %.1f s)\n", n, b - a}'

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, $ROUNDS rounds; 3 sources against $MANY"
printf '%-14s %12s %10s %10s %10s %12s %8s %10s\n' round deliveries/s p50 p99 non-2xx 'CPU µs/dlv' load peak-RSS
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    round "3-$r" "$few" "$PORT" "$work/sources-few.txt"
    round "$MANY-$r" "$many" "$PORT_MANY" "$work/sources-many.txt"
  else
    round "$MANY-$r" "$many" "$PORT_MANY" "$work/sources-many.txt"
    round "3-$r" "$few" "$PORT" "$work/sources-few.txt"
  fi
done

awk -v many="$MANY" '
  $1 ~ /^3-/ {fr += $2; fc += $3; fn++}
  $1 !~ /^3-/ {mr += $2; mc += $3; mn++}
  END {
    fr /= fn; fc /= fn; mr /= mn; mc /= mn
    printf "mean: 3 sources %.0f/s and %.0f µs CPU a delivery; %d sources %.0f/s (%+.1f%%) and %.0f µs (%+.1f%%)\n",
      fr, fc, many, mr, (mr - fr) / fr * 100, mc, (mc - fc) / fc * 100
  }' "$work/results"
