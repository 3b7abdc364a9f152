#!/usr/bin/env bash
# The persons resolver on the embedded store: changes resolved per second,
# and its lag while deliveries arrive at a steady rate. Results:
# bench/README.md, "Persons".
#
#   bench/persons/resolver.sh [base=30000] [changes=20000] [rate=1000] [seconds=20]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release --example persons_resolver
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"${CARGO_TARGET_DIR:-target}"/release/examples/persons_resolver --base "${1:-30000}" --changes "${2:-20000}" --rate "${3:-1000}" --seconds "${4:-20}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
