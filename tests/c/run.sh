#!/usr/bin/env bash
# Builds the C example and the C test programs against the built library and runs them under
# valgrind (zero errors, zero bytes definitely or indirectly lost) and as AddressSanitizer +
# LeakSanitizer builds (zero findings, no suppressions), plus header checks. A deliberately
# leaking canary must be reported by both checkers, run exactly as for the real programs: proof
# that they were active and that valgrind's libtorch suppressions hide nothing of ours.
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
"${cc[@]}" -o "$out/test_abi" "$root/tests/c/test_abi.c" "${link[@]}"
"${cc[@]}" -o "$out/experiments" "$root/examples/c/experiments.c" "${link[@]}" -lm
"${cc[@]}" -o "$out/canary" "$root/tests/c/sanitizer_canary.c" "${link[@]}"

vg=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --suppressions="$root/tests/c/libtorch.supp")
echo "== test_api under valgrind"
"${vg[@]}" "$out/test_api" "$model"
echo "== test_abi (the struct rule, array lengths) under valgrind"
"${vg[@]}" "$out/test_abi" "$model"
echo "== examples/c/weights under valgrind"
"${vg[@]}" "$out/weights" "$model" > "$out/weights.txt"
grep -q '^config {' "$out/weights.txt"
n=$(grep -c 'checksum=' "$out/weights.txt")
echo "weights example printed $n weights"
[ "$n" -ge 13 ]

# expect_leaks TOOL RC LOG EXPECTED_RC: the canary must have failed with the tool's report of its
# own block and of the context and tensor it leaked through the library.
expect_leaks() {
  if [ "$2" != "$4" ] || ! grep -q "$3" "$out/canary-$1.txt" ||
     ! grep -q 'mc_open' "$out/canary-$1.txt" || ! grep -q 'mc_get_weight' "$out/canary-$1.txt" ||
     ! grep -q 'sanitizer_canary.c' "$out/canary-$1.txt"; then
    cat "$out/canary-$1.txt" >&2
    echo "$1 did not report the canary's leaks (exit $2, expected $4): the checker is not active" >&2
    exit 1
  fi
  echo "$1 reported the canary's leaks (exit $2): active"
}
echo "== examples/c/experiments (ablate, patch, steer) under valgrind"
# check_experiments FILE: every edit moved the logits; the patch reproduced the clean run.
check_experiments() {
  cat "$1"
  [ "$(grep -c 'logits moved by 0\.0*[1-9]' "$1")" = 4 ] || { echo "an edit did not move the logits" >&2; exit 1; }
  grep -q 'vs clean 0\.000000$' "$1" || { echo "the patched run differs from the clean run" >&2; exit 1; }
}
"${vg[@]}" "$out/experiments" "$model" > "$out/experiments.txt"
check_experiments "$out/experiments.txt"
echo "== the canary under the same valgrind command"
rc=0; "${vg[@]}" "$out/canary" "$model" > "$out/canary-valgrind.txt" 2>&1 || rc=$?
expect_leaks valgrind "$rc" 'definitely lost' 99

echo "== AddressSanitizer + LeakSanitizer builds (no suppressions)"
asan=("${cc[@]}" -fsanitize=address -fno-omit-frame-pointer)
"${asan[@]}" -o "$out/weights-asan" "$root/examples/c/weights.c" "${link[@]}"
"${asan[@]}" -pthread -o "$out/test_api-asan" "$root/tests/c/test_api.c" "${link[@]}"
"${asan[@]}" -o "$out/test_abi-asan" "$root/tests/c/test_abi.c" "${link[@]}"
"${asan[@]}" -o "$out/experiments-asan" "$root/examples/c/experiments.c" "${link[@]}" -lm
"${asan[@]}" -pthread -o "$out/stress-asan" "$root/tests/c/stress.c" "${link[@]}"
"${asan[@]}" -o "$out/canary-asan" "$root/tests/c/sanitizer_canary.c" "${link[@]}"
# Full stacks (the library has no frame pointers), leaks fail the run with exit code 98.
export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:exitcode=98:strict_string_checks=1
"$out/test_api-asan" "$model"
"$out/test_abi-asan" "$model"
"$out/experiments-asan" "$model" > "$out/experiments-asan.txt"
check_experiments "$out/experiments-asan.txt"
"$out/weights-asan" "$model" > "$out/weights-asan.txt"
[ "$(grep -c 'checksum=' "$out/weights-asan.txt")" = "$n" ]
echo "== threads sharing one context (tests/c/stress.c) under AddressSanitizer"
"$out/stress-asan" "$model" 4 5
rc=0; "$out/canary-asan" "$model" > "$out/canary-asan.txt" 2>&1 || rc=$?
expect_leaks asan "$rc" 'ERROR: LeakSanitizer: detected memory leaks' 98
echo "c tests: ok"
