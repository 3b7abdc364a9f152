#!/usr/bin/env bash
# Ingest as the embedded store grows: one Clientele on a fresh store, driven
# by bench/ingest.lua over a pool of CUSTOMERS (default 1,000,000) in
# back-to-back windows of WINDOW seconds (default 60), until EVENTS kept
# events (default 5,000,000) or MINUTES of load (default 60).
#
#   bench/growth.sh [events=5000000] [minutes=60]
#
# Prints, per window: deliveries/s, p50/p99, the kept events and customers
# at its end, and the store's size on disk. Needs wrk and python3 (for the
# counts, read from the database while it runs).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-5000000}
MINUTES=${2:-60}
WINDOW=${WINDOW:-60}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-8093}
export CUSTOMERS=${CUSTOMERS:-1000000}
STORE_DIR=${STORE_DIR:-$(mktemp -d -p "${TMPDIR:-/tmp}" clientele-growth.XXXXXX)}

command -v wrk >/dev/null || { echo "wrk is needed (bench/run.sh installs it)" >&2; exit 1; }
cargo build --release --quiet --bin clientele

cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$STORE_DIR"
}
trap cleanup EXIT

CLIENTELE_STORE="sqlite://$STORE_DIR/clientele.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" CLIENTELE_ADMIN_TOKEN=bench \
  RUST_LOG=error target/release/clientele serve &
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

counts() {
  python3 - "$STORE_DIR/clientele.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
customers = db.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
print(events, customers)
EOF
}

echo "wrk -t2 -c$CONNECTIONS, ${WINDOW}s windows, a pool of $CUSTOMERS customers, $(nproc) cores"
printf '%8s %12s %10s %10s %12s %12s %10s\n' minute deliveries/s p50 p99 events customers store
started=$(date +%s)
while :; do
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${WINDOW}s" --latency -s bench/ingest.lua "http://127.0.0.1:$PORT")
  read -r events customers < <(counts)
  printf '%8.1f %12s %10s %10s %12s %12s %10s\n' "$(echo "($(date +%s) - $started) / 60" | bc -l)" \
    "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")" "$events" "$customers" "$(du -sh "$STORE_DIR" | cut -f1)"
  if [ "$events" -ge "$EVENTS" ] || [ $(($(date +%s) - started)) -ge $((MINUTES * 60)) ]; then break; fi
done
