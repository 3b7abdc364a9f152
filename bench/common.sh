# Shared by the benchmark scripts (sourced): starting and stopping
# Clientele, and measuring it under wrk with bench/ingest.lua. Expects
# $work (a scratch directory: `scratch` makes it), $PORT, $THREADS, $CONNECTIONS, $DURATION;
# runs $BENCH_BIN (default: the release build); $PG_URL for Postgres.

BENCH_BIN=${BENCH_BIN:-target/release/clientele}
# The Postgres database the benchmarks drop and create again.
BENCH_DB=${BENCH_DB:-clientele_bench}

if ! command -v wrk >/dev/null; then
  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi

# scratch [COMMAND]: a fresh $work; when the script exits, COMMAND runs
# (if given), the script's jobs are stopped and $work is removed.
scratch() {
  work=$(mktemp -d)
  on_exit=${1:-}
  trap cleanup EXIT
}

cleanup() {
  if [ -n "$on_exit" ]; then $on_exit || true; fi
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}

wait_for() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# measure NAME PID PORT: runs wrk against PORT, then reads PID's peak RSS.
measure() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/ingest.lua "http://127.0.0.1:$3" >"$work/$1.txt"
  local rate p50 p99 errors rss
  rate=$(awk '/^Requests\/sec:/ {print $2}' "$work/$1.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
  errors=$(awk '/Non-2xx/ {print $5}' "$work/$1.txt")
  rss=$(awk '/^VmHWM:/ {printf "%.0f MiB", $2 / 1024}' "/proc/$2/status")
  printf '%-10s %12s %10s %10s %10s %10s\n' "$1" "$rate" "$p50" "$p99" "${errors:-0}" "$rss"
  echo "$rate" >"$work/$1.rate"
}

# start_clientele STORE [PORT]: Clientele on STORE (a URL), the example
# sources; its pid in $clientele.
start_clientele() {
  local port=${2:-$PORT}
  CLIENTELE_STORE="$1" CLIENTELE_LISTEN="127.0.0.1:$port" CLIENTELE_ADMIN_TOKEN=bench \
    CLIENTELE_DELIVERY__ALLOW_PRIVATE='["127.0.0.1/32"]' \
    RUST_LOG=${RUST_LOG:-error} "$BENCH_BIN" serve &
  clientele=$!
  wait_for "$port"
}

stop_clientele() {
  kill -TERM "$clientele"
  wait "$clientele" 2>/dev/null || true
}

# metric NAME: the sum of a metric's series on Clientele's /metrics.
metric() {
  curl -s "http://127.0.0.1:$PORT/metrics" | awk -v name="$1" 'index($0, name) == 1 {s += $NF} END {print s + 0}'
}

# postgres_settings: the server settings that change what the Postgres
# runs measure (autovacuum off leaves statistics as the tables' first
# rows left them; libraries preloaded such as auto_explain time every
# statement).
postgres_settings() {
  psql "$PG_URL/postgres" -Atc "SELECT 'Postgres ' || current_setting('server_version') || ': autovacuum '
    || current_setting('autovacuum') || ', preloaded [' || current_setting('shared_preload_libraries') || '] ['
    || current_setting('session_preload_libraries') || ']'"
}

# fresh_database: an empty $BENCH_DB at $PG_URL.
fresh_database() {
  psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"
}

# measure_postgres: the Postgres store on a fresh $BENCH_DB, one instance,
# then two instances on one database, each driven by its own wrk with half
# the connections, at once; their rates against the ceiling measured
# before ($work/noop.rate).
measure_postgres() {
  fresh_database
  start_clientele "$PG_URL/$BENCH_DB"
  measure postgres "$clientele" "$PORT"
  stop_clientele

  fresh_database
  start_clientele "$PG_URL/$BENCH_DB" "$PORT"
  local first=$clientele
  start_clientele "$PG_URL/$BENCH_DB" "$((PORT + 1))"
  local second=$clientele
  CONNECTIONS=$((CONNECTIONS / 2)) THREADS=1 measure postgres-a "$first" "$PORT" &
  local a=$!
  CONNECTIONS=$((CONNECTIONS / 2)) THREADS=1 measure postgres-b "$second" "$((PORT + 1))" &
  local b=$!
  wait "$a" "$b"
  kill -TERM "$first" "$second"
  wait "$first" "$second" 2>/dev/null || true

  awk -v p="$(cat "$work/postgres.rate")" -v a="$(cat "$work/postgres-a.rate")" -v b="$(cat "$work/postgres-b.rate")" \
    -v n="$(cat "$work/noop.rate")" 'BEGIN {
      printf "Postgres store / HTTP ceiling: %.2f with one instance, %.2f with two (%.0f deliveries/s together)\n", p / n, (a + b) / n, a + b
    }'
}

# create_sources N FILE PORT: N Treez sources through the API, "name token" lines in FILE.
create_sources() {
  seq 1 "$1" | xargs -P 8 -I{} curl -s -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d '{"name": "shop-{}", "kind": "treez", "defaultCountry": "US"}' "http://127.0.0.1:$3/api/v1/sources" |
    sed 's/}{/}\n{/g' |
    sed -n 's/.*"name":"\([^"]*\)".*"token":"\([^"]*\)".*/\1 \2/p' >"$2"
  local made
  made=$(grep -c . "$2")
  [ "$made" = "$1" ] || { echo "created $made sources of $1" >&2; exit 1; }
}

# vagaro_config FILE PORT DATABASE: a configuration listening on PORT, its
# embedded store at DATABASE (a path), with one Vagaro source (token
# `vagaro-secret`), as the import, console and memory benchmarks use.
vagaro_config() {
  cat >"$1" <<TOML
listen = "127.0.0.1:$2"
store = "sqlite://$3"
admin_token = "bench-admin-token"
[[sources]]
name = "vagaro"
kind = "vagaro"
tokens = ["vagaro-secret"]
default_country = "US"
TOML
}
