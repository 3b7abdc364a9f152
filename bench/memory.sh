#!/usr/bin/env bash
# Memory against the directory's size: N Vagaro customers (bench/import_data.py)
# imported into a fresh embedded store with `clientele import`, then `serve`
# on it until the persons resolver has resolved them all, then `serve` again
# (its index loaded from the store), each time reading the process's RSS and
# peak RSS once the resolver has started ("persons resolver started" logged:
# its index is loaded) and `clientele_persons_unresolved` is 0. An empty
# store first.
#
#   bench/memory.sh [customers=50000]...   # one fresh store for each size given
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_BIN=${BENCH_BIN:-target/release/clientele}
PORT=${PORT:-18393}
[ -x "$BENCH_BIN" ] || cargo build --release --quiet --bin clientele
source bench/common.sh
scratch

# serve_resolved LABEL: serve on $work/store until every change is resolved, its RSS, stop.
serve_resolved() {
  RUST_LOG=info "$BENCH_BIN" serve --config "$work/bench.toml" >"$work/serve.log" 2>&1 &
  clientele=$!
  wait_for "$PORT"
  until grep -q "persons resolver started" "$work/serve.log"; do sleep 1; done
  until curl -s "http://127.0.0.1:$PORT/metrics" | grep -qx 'clientele_persons_unresolved 0'; do sleep 1; done
  printf '%-44s %s\n' "$1" "$(awk '/^VmRSS:|^VmHWM:/ {printf "%s %.0f MiB  ", $1, $2 / 1024}' "/proc/$clientele/status")"
  stop_clientele
}

for n in "${@:-50000}"; do
  rm -rf "$work/store"
  vagaro_config "$work/bench.toml" "$PORT" "$work/store/clientele.db"
  bench/import_data.py "$n" >"$work/customers.jsonl"
  serve_resolved "empty store"
  "$BENCH_BIN" import --config "$work/bench.toml" --source vagaro "$work/customers.jsonl" | tail -n 1
  serve_resolved "$n customers, resolving the import"
  serve_resolved "$n customers, serve again (index loaded)"
done
