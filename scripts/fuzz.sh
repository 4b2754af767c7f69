#!/usr/bin/env bash
# Fuzzes every reader of untrusted input with cargo-fuzz (libFuzzer + AddressSanitizer), each
# target for a bounded time, and prints the executions per target.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (default 30 s per target, every target)
# scripts/test.sh runs the short form (30 s per target). A long run, e.g. an hour per target:
#   scripts/fuzz.sh 3600
# The corpus each target builds up is kept in fuzz/corpus/<target> (git-ignored), on top of
# seeds made from the generators' real files (fuzz/seeds.py over data/). A crash stops the
# script with its input in fuzz/artifacts/<target>/; reproduce it with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a TARGET artifacts/TARGET/crash-...)
# then fix it, add a regression test in the crate that owns the reader, and keep the input in
# fuzz/regressions/<target>/ (seeds.py replays those on every run).
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 allows them on the stable
# toolchain. Needs scripts/setup.sh (cargo-fuzz, venv) and scripts/data.sh (demo golden tokens).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pt_reader safetensors config_json tokenizer)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing: run scripts/setup.sh" >&2; exit 1; }
cd "$root/fuzz"

echo "fuzz: building ${targets[*]} (release, debug assertions, AddressSanitizer)"
cargo fuzz build -O -a >/dev/null
seeds=$root/target/fuzz-seeds
rm -rf "$seeds"
"$root/.venv/bin/python" seeds.py "$root/data" "$seeds"

report=$root/target/fuzz-report.txt
printf '%-12s %8s %12s %9s %12s %8s\n' target seconds executions exec/s "corpus new" "rss MB" > "$report"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$root/target/fuzz-$t.log
  echo "fuzz: $t for ${secs}s"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a reader must not need 2 GiB.
  if ! cargo fuzz run -O -a "$t" "corpus/$t" "$seeds/$t" -- \
      -max_total_time="$secs" -max_len=131072 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/, the log in $log" >&2
    exit 1
  fi
  field() { sed -n "s/^stat::$1: *//p" "$log"; }
  printf '%-12s %8s %12s %9s %12s %8s\n' "$t" "$secs" "$(field number_of_executed_units)" \
    "$(field average_exec_per_sec)" "$(field new_units_added)" "$(field peak_rss_mb)" >> "$report"
done
cat "$report"
echo "fuzz: no crash, hang, leak or out-of-memory in ${#targets[@]} targets"
