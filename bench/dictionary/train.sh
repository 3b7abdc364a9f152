#!/usr/bin/env bash
# Trains the dictionary the store compresses raw bodies with
# (src/store/compress/bodies-1.dict, dictionary id 1) on bodies shaped like
# the platforms' (samples.py). A new dictionary takes the next id and a new
# file: bodies kept with an older one still read with it.
#
#   bench/dictionary/train.sh [id=1]
set -euo pipefail
cd "$(dirname "$0")/../.."
ID=${1:-1}
samples=$(mktemp -d)
trap 'rm -rf "$samples"' EXIT
python3 bench/dictionary/samples.py "$samples" 3000
zstd --train -q -r "$samples" --maxdict=16384 --dictID="$ID" -o "src/store/compress/bodies-$ID.dict"
