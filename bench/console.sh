#!/usr/bin/env bash
# Console benchmark (SPEC §13, issue 18 item 6): every page's time to its
# first byte, p50 and p99 over REQUESTS requests, on an embedded store of
# N customers. BASE customers are imported as webhooks would be
# (bench/import_data.py, `clientele import`: records, history, lookups,
# raw events), then multiplied to N by bench/console_fill.py, which writes
# the copies straight into the customer tables. Requests are sequential,
# over loopback, by curl with a signed-in session: the time is the
# server's (routing, the session's lookup, the store's reads, rendering)
# plus a loopback round trip.
#
#   bench/console.sh [customers=1000000] [directory=a fresh temporary one]
#   BASE=20000 REQUESTS=200 bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

N=${1:-1000000}
DIR=${2:-$(mktemp -d)}
BASE=${BASE:-20000}
REQUESTS=${REQUESTS:-200}
PORT=${PORT:-18094}
mkdir -p "$DIR"
cargo build --release --quiet --bin clientele
bin=target/release/clientele
base="http://127.0.0.1:$PORT"

rm -rf "$DIR/store"
vagaro_config "$DIR/bench.toml" "$PORT" "$DIR/store/clientele.db"
bench/import_data.py "$BASE" > "$DIR/customers.jsonl"
echo "importing $BASE customers"
"$bin" import --config "$DIR/bench.toml" --source vagaro "$DIR/customers.jsonl" > /dev/null 2>&1
echo "multiplying them to $N: $(bench/console_fill.py "$DIR/store/clientele.db" $((N / BASE)))"

"$bin" serve --config "$DIR/bench.toml" > "$DIR/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -sf "$base/readyz" > /dev/null; do sleep 0.2; done
grep 'found the names' "$DIR/serve.log" || true
# The persons resolver finds the copies unresolved and works through them
# in the background all along (persons of a million customers take longer
# than this run): the pages are measured beside it.

# Sign in as a browser does: the form's token and its cookie, then the key.
jar="$DIR/cookies"
rm -f "$jar"
token=$(curl -s -c "$jar" "$base/console/sign-in" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
curl -s -b "$jar" -c "$jar" -o /dev/null --data-urlencode "key=bench-admin-token" --data-urlencode "csrf=$token" "$base/console/sign-in"

some=$(curl -s -b "$jar" "$base/console/customers?q=person4242%40example.com" | grep -o 'href="/console/customers/[^"]*"' | head -1 | cut -d'"' -f2)
last=$(curl -s -b "$jar" "$base/console/customers" | grep -o 'cursor=[0-9]*' | head -1)
# Its person's page, once the resolver has reached it (else the customer's again).
person=$(curl -s -b "$jar" "$base$some" | grep -o 'href="/console/persons/per_[^"]*"' | head -1 | cut -d'"' -f2 || true)
person=${person:-$some}
pages=(
  "/console"
  "/console/sources"
  "/console/deliveries"
  "/console/deliveries?status=quarantined"
  "/console/quarantine"
  "/console/customers"
  "/console/customers?$last"
  "/console/customers?q=914-555-0042"
  "/console/customers?q=7.person4242%40example.com"
  "/console/customers?q=Last4242"
  "/console/customers?q=Mary"
  "/console/customers?q=mary+last4200"
  "$some"
  "/console/persons"
  "$person"
  "/console/subscriptions"
  "/console/keys"
)
echo "$N customers, $REQUESTS requests a page, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
printf '%-50s %8s %8s %8s\n' page p50_ms p99_ms max_ms
for page in "${pages[@]}"; do
  for _ in 1 2 3 4 5; do curl -s -o /dev/null -b "$jar" "$base$page"; done
  for _ in $(seq "$REQUESTS"); do
    curl -s -o /dev/null -b "$jar" -w '%{http_code} %{time_starttransfer}\n' "$base$page"
  done | awk -v page="$page" '
    $1 != 200 { bad++ }
    { t[NR] = $2 * 1000 }
    END {
      n = asort(t)
      printf "%-50s %8.1f %8.1f %8.1f%s\n", page, t[int(n * 0.5)], t[int(n * 0.99)], t[n], (bad ? "  (" bad " not 200)" : "")
    }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
