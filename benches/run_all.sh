#!/usr/bin/env bash
# Runs every benchmark (each compares with its Python reference in the same run) and keeps
# the output in target/bench-results.txt; the ratios in docs/benchmarks.md come from one such run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
scripts/data.sh bench
py=.venv/bin/python
{
  for b in bench_reader bench_weights bench_stack bench_forward bench_edits bench_tokens bench_hf_open; do
    echo "==== $b"
    $py benches/$b.py
  done
} 2>&1 | tee target/bench-results.txt
