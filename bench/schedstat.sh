#!/usr/bin/env bash
# CPU time per delivery by thread (the kernel's schedstat): running, and
# waiting for a core. A fresh embedded store; `wrk -t2 -c64` with
# bench/ingest.lua, 3 s to warm up, then 10 s counted.
#
#   bench/schedstat.sh [binary=target/release/clientele]
#
# Threads of one name are summed (`tokio-rt-worker`: the connection tasks
# and the persons resolver; `clientele-write`: the writer). Times depend on
# the machine's load: alternate the binaries compared, and give the load
# average printed with each run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/clientele}
PORT=${PORT:-8195}
work=$(mktemp -d)
pid=
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
CLIENTELE_STORE="sqlite://$work/clientele.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" CLIENTELE_ADMIN_TOKEN=bench \
  RUST_LOG=error "$BIN" serve &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
wrk -t2 -c64 -d3s -s bench/ingest.lua "http://127.0.0.1:$PORT" >/dev/null
# Each thread: its id, name, nanoseconds running and waiting.
snapshot() {
  for task in /proc/"$pid"/task/*; do
    echo "$(basename "$task") $(tr ' ' '_' <"$task/comm") $(cut -d' ' -f1,2 "$task/schedstat")"
  done
}
snapshot >"$work/before"
wrk -t2 -c64 -d10s -s bench/ingest.lua "http://127.0.0.1:$PORT" >"$work/wrk.txt"
snapshot >"$work/after"
echo "$(awk '/requests in/ {print $1}' "$work/wrk.txt") deliveries, $(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")/s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v n="$(awk '/requests in/ {print $1}' "$work/wrk.txt")" '
  NR == FNR { running[$1] = $3; waiting[$1] = $4; next }
  { r[$2] += $3 - running[$1]; w[$2] += $4 - waiting[$1] }
  END { for (name in r) if (r[name] > 0) printf "  %-18s %7.1f us running %7.1f us waiting per delivery\n", name, r[name] / n / 1000, w[name] / n / 1000 }
' "$work/before" "$work/after" | sort -k2 -rn
