#!/usr/bin/env bash
# Ingest p99 with compaction running against without (issue 19, item 4):
# twice on a fresh embedded store, the same load (bench/ingest.lua over a
# small pool of CUSTOMERS, default 2,000, so that nearly every delivery
# supersedes a kept one): WARM seconds (default 20), then a window of
# WINDOW seconds (default 75) that holds the compactor's second pass (a
# minute after its first, at start). "with": `retention.raw_events`,
# `messages` and `history` `"1s"`, so that pass drops the bodies of every
# superseded event, every envelope the resolver has read (no
# subscriptions) and the history entries of the bodies dropped;
# "without": the default ages, so it finds nothing. Prints each window's rate and
# latencies, what the pass dropped, and the store's size.
#
#   bench/compaction.sh            # BENCH_BIN=target/debug/clientele to skip the release build
set -euo pipefail
cd "$(dirname "$0")/.."

WARM=${WARM:-20}
WINDOW=${WINDOW:-75}
PORT=${PORT:-8098}
export CUSTOMERS=${CUSTOMERS:-2000}
work=$(mktemp -d -p "${TMPDIR:-/tmp}" clientele-compaction.XXXXXX)
BENCH_BIN=${BENCH_BIN:-target/release/clientele}
[ "$BENCH_BIN" != target/release/clientele ] || cargo build --release --quiet --bin clientele
command -v wrk >/dev/null || { echo "wrk is needed (bench/run.sh installs it)" >&2; exit 1; }
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT

echo "wrk -t2 -c64, ${WARM}s then ${WINDOW}s, $CUSTOMERS customers per platform; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %12s %10s %10s %10s  %s\n' run deliveries/s p50 p99 store compaction
for run in without with; do
  mkdir -p "$work/$run"
  ages=()
  [ "$run" = with ] && ages=(CLIENTELE_RETENTION__RAW_EVENTS=1s CLIENTELE_RETENTION__MESSAGES=1s CLIENTELE_RETENTION__HISTORY=1s)
  env "${ages[@]}" CLIENTELE_STORE="sqlite://$work/$run/clientele.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" \
    CLIENTELE_ADMIN_TOKEN=bench RUST_LOG=error,clientele::retention=info "$BENCH_BIN" serve >"$work/$run.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  wrk -t2 -c64 -d"${WARM}s" -s bench/ingest.lua "http://127.0.0.1:$PORT" >/dev/null
  wrk -t2 -c64 -d"${WINDOW}s" --latency -s bench/ingest.lua "http://127.0.0.1:$PORT" >"$work/$run.txt"
  kill -TERM "$server"; wait "$server" || true
  printf '%-8s %12s %10s %10s %10s  %s\n' "$run" "$(awk '/^Requests\/sec:/ {print $2}' "$work/$run.txt")" \
    "$(awk '$1 == "50%" {print $2}' "$work/$run.txt")" "$(awk '$1 == "99%" {print $2}' "$work/$run.txt")" \
    "$(du -sh "$work/$run" | cut -f1)" "$(grep -o 'bodies=[0-9]* events=[0-9]* messages=[0-9]* envelopes=[0-9]* history=[0-9]*' "$work/$run.log" | tr '\n' ' ')"
done
