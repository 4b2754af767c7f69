#!/usr/bin/env bash
# CUDA checks on the device tool's GPU machine, in two halves:
#   scripts/gpu_check.sh bundle   (here) build the CUDA test binary against torch 2.11.0 and
#                                 pack it with a small slice of golden data into gpu_bundle/
#                                 (listed in .git/info/exclude; well under 64 MiB)
#   scripts/gpu_check.sh run      (there, through the device tool with carry ["gpu_bundle"])
#                                 run it against that machine's own torch 2.11.0 libraries
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case ${1:-} in
  bundle)
    scripts/setup.sh
    scripts/data.sh golden
    grep -qx '/gpu_bundle/' .git/info/exclude 2>/dev/null || echo '/gpu_bundle/' >> .git/info/exclude
    rm -rf gpu_bundle && mkdir -p gpu_bundle/data/model_golden
    for t in cuda edits_golden grads_golden; do
      bin=$(cargo test --release --no-run --test $t --message-format=json 2>/dev/null |
            sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
      cp "$bin" gpu_bundle/${t}_tests
      strip gpu_bundle/${t}_tests
    done
    # The edit golden cases of one model on single rows (the whole set is 175 MB).
    mkdir -p gpu_bundle/data/edit_golden/e24_l3_h3
    cp data/edit_golden/manifest.json gpu_bundle/data/edit_golden/
    cp -r data/edit_golden/e24_l3_h3/config.json data/edit_golden/e24_l3_h3/model_pieces \
      data/edit_golden/e24_l3_h3/single.* gpu_bundle/data/edit_golden/e24_l3_h3/
    mkdir -p gpu_bundle/data/grad_golden/e24_l3_h3
    cp data/grad_golden/manifest.json gpu_bundle/data/grad_golden/
    cp -r data/grad_golden/e24_l3_h3/config.json data/grad_golden/e24_l3_h3/model_pieces \
      data/grad_golden/e24_l3_h3/single.* gpu_bundle/data/grad_golden/e24_l3_h3/
    cp data/model_golden/manifest.json gpu_bundle/data/model_golden/
    cp -r data/model_golden/e24_l3_h3 gpu_bundle/data/model_golden/
    rm -rf gpu_bundle/data/model_golden/e24_l3_h3/*/ref gpu_bundle/data/model_golden/e24_l3_h3/*/hf
    du -sh gpu_bundle
    ;;
  run)
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    nvidia-smi -L || true
    LD_LIBRARY_PATH=$torch_lib MC_MODEL_GOLDEN_DIR=$root/gpu_bundle/data/model_golden \
      gpu_bundle/cuda_tests --nocapture --test-threads=1
    LD_LIBRARY_PATH=$torch_lib MC_EDIT_GOLDEN_DIR=$root/gpu_bundle/data/edit_golden \
      MC_EDIT_GOLDEN_ONLY=e24_l3_h3/single gpu_bundle/edits_golden_tests --nocapture --test-threads=1
    LD_LIBRARY_PATH=$torch_lib MC_GRAD_GOLDEN_DIR=$root/gpu_bundle/data/grad_golden \
      MC_GRAD_GOLDEN_ONLY=e24_l3_h3/single gpu_bundle/grads_golden_tests --nocapture --test-threads=1 float32
    ;;
  *) echo "usage: $0 bundle|run" >&2; exit 2 ;;
esac
