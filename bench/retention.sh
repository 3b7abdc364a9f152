#!/usr/bin/env bash
# Bounded over time (issue 19, item 4): the embedded store's size over DAYS
# simulated days (default 10) of deliveries that keep updating a live set
# of customers (bench/ingest.lua, wrk -t2 -c64, over CUSTOMERS per
# platform, default 10,000: 20,000 customers), with short retention:
# raw_events, quarantine, messages and history "1d", dedupe "3d" (the
# shortest it may be). Clientele runs as `bench/retention.rs` runs it: `serve` whose
# retention clock moves a day forward at each SIGUSR1 (src/clock.rs), so
# the rows are dropped by the compactor's own passes.
#
# Each day: DAY_SECONDS (default 60) of load, then the end of the next
# compaction pass (a pass a minute), then a sample: the day's deliveries
# per second, the events received so far (the last event's seq), the kept
# events and customers, the database file's size (its pages,
# free ones given back by each pass) and each table's with its indexes
# (dbstat). After the last day: the load stops, the clock moves past every
# age (4 days) and, after two more passes, a last sample: what is kept for
# the live set alone. The sizes do not depend on the machine's speed, so
# the debug build serves (the default; PROFILE=release for throughput).
#
#   bench/retention.sh      # DAYS=10 DAY_SECONDS=60 CUSTOMERS=10000; PACE_MS (bench/ingest.lua) for a steady rate
set -euo pipefail
cd "$(dirname "$0")/.."

DAYS=${DAYS:-10}
DAY_SECONDS=${DAY_SECONDS:-60}
PORT=${PORT:-8099}
PROFILE=${PROFILE:-debug}
export CUSTOMERS=${CUSTOMERS:-10000}
export CLIENTELE_RETENTION__RAW_EVENTS=1d CLIENTELE_RETENTION__QUARANTINE=1d CLIENTELE_RETENTION__MESSAGES=1d \
  CLIENTELE_RETENTION__HISTORY=1d CLIENTELE_RETENTION__DEDUPE=3d RUST_LOG=error,clientele::retention=debug
BENCH_BIN=target/$PROFILE/examples/retention
work=$(mktemp -d -p "${TMPDIR:-/tmp}" clientele-retention.XXXXXX)
source bench/common.sh
cargo build --quiet --example retention "$([ "$PROFILE" = release ] && echo --release || echo --profile=dev)"
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT

# Passes finished so far (each logs what it dropped, or that it found
# nothing).
passes() { grep -c 'compaction' "$work/log" || true; }

# after_passes N: waits until N more passes have ended.
after_passes() {
  local until=$(($(passes) + $1))
  while [ "$(passes)" -lt "$until" ]; do sleep 1; done
}

# next_day N: moves the clock a day forward, to day N.
next_day() {
  kill -USR1 "$clientele"
  until grep -qx "day $1" "$work/out"; do sleep 0.1; done
}

# sample LABEL RATE: one line of the table.
sample() {
  python3 - "$work/clientele.db" "$1" "$2" <<'PY'
import sqlite3, sys
path, label, rate = sys.argv[1:]
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
one = lambda sql: db.execute(sql).fetchone()[0]
received, events = one("SELECT MAX(seq) FROM events"), one("SELECT COUNT(*) FROM events")
customers = one("SELECT COUNT(*) FROM customers")
size = one("PRAGMA page_count") * one("PRAGMA page_size")
tables = dict(db.execute("""SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d
                            LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY 1"""))
mb = lambda b: f"{b / 1e6:.1f}"
shown = [tables.pop(t, 0) for t in ("events", "customers", "history", "outbox")]
print(f"{label:>6} {rate:>8} {received:>10,} {events:>10,} {customers:>9,} {mb(size):>9} "
      + " ".join(f"{mb(b):>9}" for b in shown) + f" {mb(sum(tables.values())):>9} {size / customers:>12,.0f}")
PY
}

start_clientele "sqlite://$work/clientele.db" >"$work/out" 2>"$work/log"
echo "$BENCH_BIN, wrk -t2 -c64${PACE_MS:+ paced ${PACE_MS} ms}, ${DAY_SECONDS}s a day, $CUSTOMERS customers per platform, raw_events, quarantine, messages, history 1d, dedupe 3d;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "received: events so far; kept: events in the store. In MB: the database file, then each table with its indexes"
printf '%6s %8s %10s %10s %9s %9s %9s %9s %9s %9s %9s %12s\n' day per-s received kept customers store \
  events customers history outbox other bytes/customer
for day in $(seq 0 $((DAYS - 1))); do
  [ "$day" -eq 0 ] || next_day "$day"
  wrk -t2 -c64 -d"${DAY_SECONDS}s" -s bench/ingest.lua "http://127.0.0.1:$PORT" >"$work/wrk.txt"
  after_passes 1
  sample "$day" "$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk.txt")"
done
for day in $(seq "$DAYS" $((DAYS + 3))); do next_day "$day"; done
after_passes 2
sample idle -
stop_clientele
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
