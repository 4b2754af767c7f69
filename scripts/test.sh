#!/usr/bin/env bash
# Every test: formatting and lints, the Rust tests (golden data against Python torch and
# transformers, remote checkpoints from a loopback HTTP server, mc-convert's output checked
# by Python torch.load; hostile files, threads sharing a context, flat memory over long loops),
# a short fuzzing run of every file reader (30 s per target), the linkage check, the C example
# and C tests under valgrind and AddressSanitizer, and the Python DLPack consumers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n==== %s\n' "$*"; }

step "setup"; scripts/setup.sh
# One LIBTORCH value for every clone (the shared venv), so shared build outputs stay valid.
export LIBTORCH=$(readlink -f .libtorch)
step "data"; scripts/data.sh demo golden tokens hf
step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build the libraries (cdylib, staticlib) and tools"; cargo build --workspace --quiet
step "rust tests"; cargo test --workspace --quiet
step "fuzz: every reader of untrusted input, 30 s per target"; scripts/fuzz.sh 30
step "linkage"; tests/linkage.sh target/debug
step "python DLPack consumers"; .venv/bin/python tests/python/test_dlpack.py
step "C example and C tests under valgrind and AddressSanitizer"; tests/c/run.sh data/demo target/debug
step "packaging: make install, C/C++/Go examples via pkg-config, go test -race, the docs' programs, Julia package checks"; tests/packaging.sh debug
step "all tests passed"
