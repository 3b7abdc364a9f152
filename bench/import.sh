#!/usr/bin/env bash
# Import benchmark (SPEC §10): `clientele import` of N Vagaro customers
# (bench/import_data.py: each customer once, random 32-hex ids) into a fresh
# embedded store (loaded into a copy without a journal: src/store/sqlite/staged.rs),
# then the same file again (every record a duplicate, through the WAL), then
# `clientele export` of the whole directory; each with its wall time and
# peak RSS (/usr/bin/time -v). The reading-and-mapping ceiling
# (`--dry-run`: the same reader and adapter, no store) runs first, in the
# same run. CPU (user + system) is printed besides wall time: on a shared
# machine it says more than the wall time does.
#
#   bench/import.sh [records=1000000] [directory=a fresh temporary one]
#
# The directory holds the generated file and the store (a million
# customers take about 5 GB with their raw events, history and outbox).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

N=${1:-1000000}
DIR=${2:-$(mktemp -d)}
mkdir -p "$DIR"
cargo build --release --quiet --bin clientele
bin=target/release/clientele

data="$DIR/customers-$N.jsonl"
[ -s "$data" ] || bench/import_data.py "$N" > "$data"
rm -rf "$DIR/store"
vagaro_config "$DIR/bench.toml" 18093 "$DIR/store/clientele.db"

# Runs the command, prints its summary line and its peak RSS.
measure() {
  local label=$1; shift
  /usr/bin/time -v -o "$DIR/time" "$@" > "$DIR/out" 2>&1
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f MiB", $2 / 1024}' "$DIR/time")
  local wall
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$DIR/time")
  local cpu
  cpu=$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.1f s", u + s}' "$DIR/time")
  printf '%-8s wall %-8s CPU %-8s peak RSS %-8s %s\n' "$label" "$wall" "$cpu" "$rss" "$(tail -n 1 "$DIR/out")"
}

echo "$N records, $(du -h "$data" | cut -f1), $(nproc) cores"
measure dry-run "$bin" import --config "$DIR/bench.toml" --source vagaro --dry-run "$data"
measure import "$bin" import --config "$DIR/bench.toml" --source vagaro "$data"
measure again "$bin" import --config "$DIR/bench.toml" --source vagaro "$data"
measure export "$bin" export --config "$DIR/bench.toml" --output /dev/null
echo "store: $(du -sh "$DIR/store" | cut -f1)"
