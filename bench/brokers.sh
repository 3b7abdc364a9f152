#!/usr/bin/env bash
# Messages per second to each kind of destination (SPEC §15): HTTP to the
# no-op receiver (bench/noop.rs), NATS JetStream, RabbitMQ with publisher
# confirms, and Redis Streams, each measured the same way in the same run.
# For each: a fresh embedded store, one subscription, disabled; `wrk` loads
# changes for DURATION seconds (bench/ingest.lua, a pool of 100,000
# customers), which a disabled subscription is not sent; a replay of
# everything since the load began queues them all as its backlog, then the
# subscription is enabled and the time until the backlog is empty gives
# messages/s. The
# dispatcher's bounds are the same for every kind (64 sends in flight, 8
# per subscription, one at a time per customer), so this compares the
# destinations, not the load. The broker's own count of what arrived is
# printed beside it.
#
#   bench/brokers.sh [seconds=10]
#
# Needs the brokers on their usual ports (.ci/brokers.sh starts them).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-8093}
NOOP_PORT=${NOOP_PORT:-8094}

bash .ci/brokers.sh >/dev/null
[ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin clientele
cargo build --release --quiet --example noop --example brokers

# shellcheck source=bench/common.sh
source bench/common.sh
scratch "target/release/examples/brokers teardown"

target/release/examples/noop "127.0.0.1:$NOOP_PORT" &
wait_for "$NOOP_PORT"
target/release/examples/brokers teardown
target/release/examples/brokers setup

api() {
  curl -sf -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' "$@"
}

# destination NAME URL: messages/s from a backlog to URL.
destination() {
  start_clientele "sqlite://$work/$1/clientele.db"
  local id since
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  sleep 1
  id=$(api -d "{\"url\": \"$2\"}" "http://127.0.0.1:$PORT/api/v1/subscriptions" | grep -o '"id":"sub_[0-9a-f]*"' | cut -d'"' -f4)
  api -o /dev/null -X PATCH -d '{"enabled": false}' "http://127.0.0.1:$PORT/api/v1/subscriptions/$id"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s bench/ingest.lua "http://127.0.0.1:$PORT" >"$work/$1.txt"
  api -o /dev/null -X POST "http://127.0.0.1:$PORT/api/v1/subscriptions/$id/replay?since=$since"
  local backlog started finished
  backlog=$(metric clientele_outbox_backlog)
  started=$(date +%s.%N)
  api -o /dev/null -X PATCH -d '{"enabled": true}' "http://127.0.0.1:$PORT/api/v1/subscriptions/$id"
  until [ "$(metric clientele_outbox_backlog)" = 0 ]; do sleep 0.05; done
  finished=$(date +%s.%N)
  local delivered failed
  delivered=$(metric 'clientele_messages_total{outcome="delivered"}')
  failed=$(metric 'clientele_messages_total{outcome="retried"}')
  stop_clientele
  awk -v n="$1" -v b="$backlog" -v d="$delivered" -v f="$failed" -v t0="$started" -v t1="$finished" 'BEGIN {
    t = t1 - t0
    printf "%-10s %9d %9d %9d %8.1f s %10.0f\n", n, b, d, f, t, d / t
  }' | tee "$work/$1.result"
}

echo "$(nproc) cores; backlog from wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; release build"
printf '%-10s %9s %9s %9s %10s %10s\n' target backlog delivered retried time messages/s
destination http "http://127.0.0.1:$NOOP_PORT/hook"
destination nats "nats://127.0.0.1:4222/bench"
destination amqp "amqp://guest:guest@127.0.0.1:5672/%2f?exchange=clientele-bench"
destination redis "redis://127.0.0.1:6379/clientele-bench"
echo "what the brokers hold: $(target/release/examples/brokers count)"
