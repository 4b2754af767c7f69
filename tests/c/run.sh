#!/usr/bin/env bash
# Builds the C example and the C test program against the built library and runs both under
# valgrind (zero errors, zero bytes definitely or indirectly lost), plus header checks.
#   tests/c/run.sh CHECKPOINT_DIR [LIB_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
model=$1
lib=${2:-$root/target/debug}
out=$root/target/c-tests
mkdir -p "$out"
cc=(gcc -std=c11 -g -O1 -Wall -Wextra -Werror -I"$root/include")
link=(-L"$lib" -lmodel_context -Wl,-rpath,"$lib")

echo "== header: both include orders with a dlpack/dlpack.h of our own, and as C++"
"${cc[@]}" -I"$root/tests/c" -o "$out/inc1" "$root/tests/c/include_dlpack_first.c" && "$out/inc1"
"${cc[@]}" -I"$root/tests/c" -o "$out/inc2" "$root/tests/c/include_dlpack_second.c" && "$out/inc2"
g++ -std=c++17 -Wall -Werror -fsyntax-only -x c++ "$root/include/model_context.h"

echo "== build"
"${cc[@]}" -o "$out/weights" "$root/examples/c/weights.c" "${link[@]}"
"${cc[@]}" -pthread -o "$out/test_api" "$root/tests/c/test_api.c" "${link[@]}"

vg=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --suppressions="$root/tests/c/libtorch.supp")
echo "== test_api under valgrind"
"${vg[@]}" "$out/test_api" "$model"
echo "== examples/c/weights under valgrind"
"${vg[@]}" "$out/weights" "$model" > "$out/weights.txt"
grep -q '^config {' "$out/weights.txt"
n=$(grep -c 'checksum=' "$out/weights.txt")
echo "weights example printed $n weights"
[ "$n" -ge 13 ]
echo "c tests: ok"
