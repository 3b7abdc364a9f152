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
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
BIN=${2:-target/release/clientele}
PORT=${PORT:-8195}
[ "$BIN" != target/release/clientele ] || cargo build --release --quiet --bin clientele
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
work=$(mktemp -d)
CLIENTELE_STORE="sqlite://$work/clientele.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" CLIENTELE_ADMIN_TOKEN=bench \
  RUST_LOG=error valgrind --tool=callgrind --separate-threads=yes '--toggle-collect=*http::server::serve::*' \
  --callgrind-out-file="$work/callgrind.out" "$BIN" serve 2>"$work/valgrind.log" &
pid=$!
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
bench/deliveries.py "$PORT" 200 4 1000000 >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
bench/deliveries.py "$PORT" "$N" 4 2000000
callgrind_control -d "$pid" >/dev/null 2>&1
kill -TERM "$pid"
wait "$pid" || true
cat "$work"/callgrind.out.1-* | awk -v n="$N" '/^summary:/ {s += $2} END {
  printf "%d instructions per delivery on the ingest path\n", s / n }'
echo "callgrind files: $work"
