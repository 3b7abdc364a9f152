#!/usr/bin/env bash
# Instructions per delivery on the ingest path (the connection tasks: HTTP,
# the JSON, the adapter, normalization, the content hash), counted by
# callgrind: repeatable whatever the machine's load, unlike times.
#
#   bench/callgrind.sh [deliveries=2000] [binary=target/release/clientele]
#
# Serves a fresh embedded store under valgrind, sends 200 deliveries to warm
# up, then counts only inside the connection tasks (--toggle-collect) while
# bench/deliveries.py sends the same deliveries each run over 4 connections.
# The writer and the persons resolver are not counted. Keeps the callgrind
# files (one per thread) for callgrind_annotate in the printed directory.
# valgrind hides SHA-NI: SHA-256 runs in software there, several times the
# instructions it takes natively.
#
# With SOURCES=N, the store first gets N Treez sources through the API
# (from the same binary without valgrind), and every delivery goes to one
# of them with its own token (bench/deliveries.py's SOURCES_FILE): the
# ingest path's cost with 3 sources against 10,000 (SPEC §9), as a count.
# With COLLECT=all, every thread counts (the writer, the dispatcher and the
# persons resolver too), each count taken once the persons resolver has
# caught up: a total whose batching varies a little with timing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
BIN=${2:-target/release/clientele}
PORT=${PORT:-8195}
[ "$BIN" != target/release/clientele ] || cargo build --release --quiet --bin clientele
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
work=$(mktemp -d)
if [ "${COLLECT:-}" = all ]; then
  toggle=--collect-atstart=yes
  what="in all"
else
  toggle='--toggle-collect=*http::server::serve::*'
  what="on the ingest path"
fi
if [ -n "${SOURCES:-}" ]; then
  BENCH_BIN=$BIN
  # shellcheck source=bench/common.sh
  source bench/common.sh
  start_clientele "sqlite://$work/clientele.db" "$PORT"
  create_sources "$SOURCES" "$work/sources.txt" "$PORT"
  stop_clientele
  export SOURCES_FILE="$work/sources.txt"
fi
CLIENTELE_STORE="sqlite://$work/clientele.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" CLIENTELE_ADMIN_TOKEN=bench \
  RUST_LOG=error valgrind --tool=callgrind --separate-threads=yes "$toggle" \
  --callgrind-out-file="$work/callgrind.out" "$BIN" serve 2>"$work/valgrind.log" &
pid=$!
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
# Until nothing waits for the persons resolver, if every thread counts.
settled() {
  [ "${COLLECT:-}" = all ] || return 0
  until curl -s "http://127.0.0.1:$PORT/metrics" | grep -qx 'clientele_persons_unresolved 0'; do sleep 1; done
}
bench/deliveries.py "$PORT" 200 4 1000000 >/dev/null
settled
callgrind_control -z "$pid" >/dev/null 2>&1
bench/deliveries.py "$PORT" "$N" 4 2000000
settled
callgrind_control -d "$pid" >/dev/null 2>&1
kill -TERM "$pid"
wait "$pid" || true
cat "$work"/callgrind.out.1-* | awk -v n="$N" -v what="$what" '/^summary:/ {s += $2} END {
  printf "%d instructions per delivery %s\n", s / n, what }'
echo "callgrind files: $work"
