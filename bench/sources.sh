#!/usr/bin/env bash
# Sources as data (SPEC §9): "10,000 sources cost ingest nothing
# measurable". Ingest on a fresh embedded store with 3 sources created
# through the API, then with 10,000, under the same wrk load
# (bench/ingest.lua with SOURCES_FILE: every delivery a Treez body to a
# source picked at random, with its own token), alternated A B A B so that
# the machine's drift shows.
#
#   bench/sources.sh [seconds=20] [connections=64] [sources=10000]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-20}
CONNECTIONS=${2:-64}
MANY=${3:-10000}
THREADS=${THREADS:-2}
PORT=${PORT:-8092}

cargo build --release --quiet --bin clientele

work=$(mktemp -d)
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/common.sh
source bench/common.sh

# create_sources N FILE: N Treez sources through the API, "name token" lines in FILE.
create_sources() {
  seq 1 "$1" | xargs -P 8 -I{} curl -s -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d '{"name": "shop-{}", "kind": "treez", "defaultCountry": "US"}' "http://127.0.0.1:$PORT/api/v1/sources" |
    sed 's/}{/}\n{/g' |
    sed -n 's/.*"name":"\([^"]*\)".*"token":"\([^"]*\)".*/\1 \2/p' >"$2"
  local made
  made=$(grep -c . "$2")
  [ "$made" = "$1" ] || { echo "created $made sources of $1" >&2; exit 1; }
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores; 3 sources against $MANY"
printf '%-10s %12s %10s %10s %10s %10s\n' target deliveries/s p50 p99 non-2xx peak-RSS

for round in 1 2; do
  for count in 3 "$MANY"; do
    start_clientele "sqlite://$work/$round-$count/clientele.db"
    started=$(date +%s.%N)
    create_sources "$count" "$work/sources-$count.txt"
    created=$(date +%s.%N)
    [ "$round" = 1 ] && [ "$count" = "$MANY" ] &&
      awk -v a="$started" -v b="$created" -v n="$count" 'BEGIN {printf "(%d sources created in %.1f s)\n", n, b - a}'
    SOURCES_FILE="$work/sources-$count.txt" measure "$count-$round" "$clientele" "$PORT"
    stop_clientele
  done
done

awk -v a1="$(cat "$work/3-1.rate")" -v a2="$(cat "$work/3-2.rate")" \
  -v b1="$(cat "$work/$MANY-1.rate")" -v b2="$(cat "$work/$MANY-2.rate")" -v n="$MANY" 'BEGIN {
    a = (a1 + a2) / 2; b = (b1 + b2) / 2
    printf "mean: 3 sources %.0f/s, %d sources %.0f/s: %+.1f%%\n", a, n, b, (b - a) / a * 100
  }'
