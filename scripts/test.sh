#!/usr/bin/env bash
# Every test: formatting and lints, the Rust tests (golden data against Python torch and
# transformers, remote checkpoints from a loopback HTTP server, mc-convert's output checked
# by Python torch.load), the linkage check, the C example and C tests under valgrind, and the
# Python DLPack consumers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n==== %s\n' "$*"; }

step "setup"; scripts/setup.sh
step "data"; scripts/data.sh demo golden tokens hf
step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "rust tests"; cargo test --workspace --quiet
step "linkage"; tests/linkage.sh target/debug
step "python DLPack consumers"; .venv/bin/python tests/python/test_dlpack.py
step "C example and C tests under valgrind"; tests/c/run.sh data/demo target/debug
step "packaging: make install, C/C++/Go examples via pkg-config, go test -race, Julia ABI"; tests/packaging.sh debug
step "all tests passed"
