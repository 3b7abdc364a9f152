#!/usr/bin/env bash
# Where the database's time goes: one instance on a fresh Postgres database
# under bench/ingest.lua, optionally after a warm-up, then the statements
# that took the most of the database's execution time in the measured
# window (pg_stat_statements), and the CPU both processes spent per
# delivery meanwhile (from /proc; every `postgres` process of the machine).
#
#   bench/statements.sh [seconds=15] [connections=64] [warm-up seconds=0]
#
# Needs pg_stat_statements loaded by the server: as a superuser,
#   ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';
# then restart Postgres (and RESET it afterwards the same way).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-15}
CONNECTIONS=${2:-64}
WARM=${3:-0}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin clientele
fi

# shellcheck source=bench/common.sh
source bench/common.sh
scratch

if ! psql "$PG_URL/postgres" -Atc "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
  echo "pg_stat_statements is not loaded by the server at $PG_URL: see this script's header" >&2
  exit 1
fi
fresh_database
psql "$PG_URL/$BENCH_DB" -qc "CREATE EXTENSION pg_stat_statements"
start_clientele "$PG_URL/$BENCH_DB"
if [ "$WARM" -gt 0 ]; then
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARM}s" -s bench/ingest.lua "http://127.0.0.1:$PORT" >/dev/null
fi

# cpu PID...: the processes' user + system ticks. Postgres's are read
# again at the end: a connection opened meanwhile started at zero.
cpu() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'; }
psql "$PG_URL/$BENCH_DB" -qc "SELECT pg_stat_statements_reset()" >/dev/null
c0=$(cpu "$clientele"); p0=$(cpu $(pgrep -x postgres))
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s after ${WARM}s of warm-up, load average $(cut -d' ' -f1-3 /proc/loadavg)"
postgres_settings
printf '%-10s %12s %10s %10s %10s %10s\n' target deliveries/s p50 p99 non-2xx peak-RSS
measure postgres "$clientele" "$PORT"
c1=$(cpu "$clientele"); p1=$(cpu $(pgrep -x postgres))
answered=$(awk '/requests in/ {print $1}' "$work/postgres.txt")
tick=$(getconf CLK_TCK)
awk -v c=$((c1 - c0)) -v p=$((p1 - p0)) -v n="$answered" -v t="$tick" 'BEGIN {
  printf "CPU per delivery: Clientele %.0f µs, Postgres %.0f µs\n", c / t / n * 1e6, p / t / n * 1e6
}'
psql "$PG_URL/$BENCH_DB" -c "
  SELECT calls, round(total_exec_time::numeric) AS ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows,
         left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS statement
  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  ORDER BY total_exec_time DESC LIMIT 15"
stop_clientele
