#!/usr/bin/env bash
# The brokers the destination tests publish to (tests/brokers.rs, SPEC §15):
# NATS with JetStream on 127.0.0.1:4222, RabbitMQ on 5672 (guest/guest),
# Redis on 6379. Starts any that is down and waits until each accepts
# connections; fails, saying which, if one does not within the deadline.
# Safe to run again: a server already up is left alone.
set -euo pipefail

DEADLINE=${BROKERS_DEADLINE:-120}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local name=$1 port=$2
    shift 2
    if up "$port"; then
        return 0
    fi
    echo "brokers: starting $name (port $port)"
    "$@" || { echo "brokers: cannot start $name: $*" >&2; return 1; }
}

wait_for() {
    local name=$1 port=$2 waited=0
    until up "$port"; do
        if (( waited >= DEADLINE )); then
            echo "brokers: $name is not accepting connections on 127.0.0.1:$port after ${DEADLINE}s" >&2
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "brokers: $name accepts connections on 127.0.0.1:$port"
}

# The servers come with this kind of machine; on one without them, from
# Debian's packages.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if (( ${#missing[@]} )); then
    echo "brokers: installing ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

mkdir -p /var/lib/redis /var/log/redis /var/lib/nats-server
start Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start RabbitMQ 5672 rabbitmq-server -detached
start NATS 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log

wait_for Redis 6379
wait_for NATS 4222
wait_for RabbitMQ 5672
# RabbitMQ opens its port before it has finished booting.
if command -v rabbitmqctl >/dev/null; then
    timeout "$DEADLINE" rabbitmqctl await_startup >/dev/null \
        || { echo "brokers: RabbitMQ did not finish starting" >&2; exit 1; }
fi
