#!/usr/bin/env bash
# The main job: set up, build the library, make the demo checkpoint if absent, and run the C
# example on it (config, then every weight's shape, strides, dtype, device and checksum).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
export LIBTORCH=$(readlink -f .libtorch)
cargo build --release --quiet
scripts/data.sh demo
mkdir -p target/c
gcc -std=c11 -O2 -Wall -Wextra -Iinclude -o target/c/weights examples/c/weights.c \
  -Ltarget/release -lmodel_context -Wl,-rpath,"$root/target/release"
target/c/weights data/demo "${1:-cpu}"
