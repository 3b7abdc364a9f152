#!/usr/bin/env bash
# Bytes per kept event, per table: one Clientele on a fresh store driven by
# bench/ingest.lua (wrk -t2 -c64, the growth mix: a pool of CUSTOMERS,
# default 1,000,000) for SECONDS, then stopped, and the store measured:
# SQLite's dbstat (each table with its indexes) or, with PG_URL set,
# pg_total_relation_size. The sizes do not depend on the machine's speed,
# so a debug build serves (BENCH_BIN=target/debug/clientele).
#
#   bench/footprint.sh [seconds=30]          # PG_URL=postgres://postgres@127.0.0.1:5432 for Postgres
#   KEEP=/tmp/store.db bench/footprint.sh    # keeps the SQLite store there, to look into
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_LOAD=${1:-30}
PORT=${PORT:-8094}
export CUSTOMERS=${CUSTOMERS:-1000000}
work=$(mktemp -d -p "${TMPDIR:-/tmp}" clientele-footprint.XXXXXX)
source bench/common.sh
[ -x "$BENCH_BIN" ] || cargo build --release --quiet --bin clientele
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -n "${PG_URL:-}" ]; then
  fresh_database
  store="$PG_URL/$BENCH_DB"
else
  store="sqlite://$work/clientele.db"
fi
start_clientele "$store"
wrk -t2 -c64 -d"${SECONDS_OF_LOAD}s" -s bench/ingest.lua "http://127.0.0.1:$PORT" >"$work/wrk.txt"
stop_clientele
echo "$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt") deliveries/s over ${SECONDS_OF_LOAD}s; load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -n "${PG_URL:-}" ]; then
  psql "$store" -qAt -F' ' -c "VACUUM ANALYZE" -c "
    SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC" >"$work/tables"
  events=$(psql "$store" -qAt -c "SELECT COUNT(*) FROM events")
else
  python3 - "$work/clientele.db" >"$work/tables" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("""SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d
                     LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY 1 ORDER BY 2 DESC""")
for name, size in rows:
    print(name, size)
PY
  events=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM events').fetchone()[0])" "$work/clientele.db")
  [ -z "${KEEP:-}" ] || cp "$work/clientele.db" "$KEEP"
fi
awk -v events="$events" '
  { size[NR] = $2; name[NR] = $1; total += $2 }
  END {
    printf "%-22s %14s %16s\n", "table", "bytes", "bytes per event"
    for (i = 1; i <= NR; i++) if (size[i] > 0) printf "%-22s %14d %16.0f\n", name[i], size[i], size[i] / events
    printf "%-22s %14d %16.0f   (%d kept events)\n", "total", total, total / events, events
  }' "$work/tables"
