#!/usr/bin/env bash
# Generates the test and demo data under data/ (never committed) when absent or when the
# generating script changed since it was made. Usage: scripts/data.sh [demo|golden|tokens|hf|bench]...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin/python
cd "$root"

# make DIR SCRIPT ARGS...: regenerate DIR when any generator script (scripts/*.py) or the
# pinned requirements changed since DIR was made.
make() {
  local dir=$1 script=$2; shift 2
  local stamp
  stamp=$(cat scripts/*.py requirements.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    "$py" "$script" "$@"
    echo "$stamp" > "$dir/.stamp"
  fi
}

for what in "${@:-demo golden tokens hf}"; do
  for w in $what; do
    case $w in
      demo) make data/demo scripts/make_checkpoint.py --preset demo --out data/demo --seed 0 ;;
      golden)
        make data/pt_golden scripts/gen_pt_golden.py data/pt_golden
        make data/context_golden scripts/gen_context_golden.py data/context_golden
        make data/model_golden scripts/gen_model_golden.py data/model_golden
        make data/processing_golden scripts/gen_processing_golden.py data/processing_golden
        make data/edit_golden scripts/gen_edit_golden.py data/edit_golden
        make data/grad_golden scripts/gen_grad_golden.py data/grad_golden
        make data/decode_golden scripts/gen_decode_golden.py data/decode_golden ;;
      tokens) make data/token_golden scripts/gen_token_golden.py data/token_golden ;;
      hf) make data/hf_golden scripts/gen_hf_golden.py data/hf_golden ;;
      bench)
        make data/gpt2-small-random scripts/make_checkpoint.py --preset gpt2-small-random --out data/gpt2-small-random --seed 1
        make data/hf-gpt2-small-random scripts/gen_hf_golden.py --bench data/hf-gpt2-small-random ;;
      *) echo "unknown data set $w" >&2; exit 2 ;;
    esac
  done
done
