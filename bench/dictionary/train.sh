#!/usr/bin/env bash
# Trains the dictionaries the store compresses with (store::compress),
# each with the next free id, into src/store/compress/:
#
#   bench/dictionary/train.sh bodies ID      # raw bodies: samples.py's, shaped like the platforms'
#   bench/dictionary/train.sh documents ID   # Clientele's own JSON: history entries, envelopes,
#                                            # profiles, as a Clientele (BENCH_BIN, default the
#                                            # debug build) makes them of those bodies
#   bench/dictionary/train.sh persons ID     # persons' documents, as the resolver of such a
#                                            # Clientele makes them of those bodies
#
# A new dictionary takes a new id and file: what was kept with an older
# one still reads with it (it stays listed in store::compress).
set -euo pipefail
cd "$(dirname "$0")/../.."
KIND=$1
ID=$2
work=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/dictionary/samples.py "$work/bodies" 3000
if [ "$KIND" = documents ] || [ "$KIND" = persons ]; then
  BIN=${BENCH_BIN:-target/debug/clientele}
  PORT=${PORT:-8096}
  CLIENTELE_STORE="sqlite://$work/c.db" CLIENTELE_LISTEN="127.0.0.1:$PORT" CLIENTELE_ADMIN_TOKEN=train \
    RUST_LOG=error "$BIN" serve &
  server=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  python3 bench/dictionary/documents.py "$work/bodies" "http://127.0.0.1:$PORT" "$work/c.db" "$work/documents"
  if [ "$KIND" = persons ]; then
    python3 bench/dictionary/persons.py "http://127.0.0.1:$PORT" train "$work/persons"
  fi
  kill -TERM "$server"; wait "$server" || true
  samples="$work/$KIND"
else
  samples="$work/bodies"
fi
zstd --train -q -r "$samples" --maxdict=16384 --dictID="$ID" -o "src/store/compress/$KIND-$ID.dict"
