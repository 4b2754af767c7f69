#!/usr/bin/env bash
# Builds every C example (examples/c/*.c) and C test (tests/c/test_*.c) against the built
# library, by glob so a new program is covered without an edit here, and runs each under
# valgrind (zero errors, zero bytes definitely, indirectly or possibly lost outside the
# libtorch/MKL/OpenMP frames of tests/c/libtorch.supp) and as an AddressSanitizer +
# LeakSanitizer build (zero findings, no suppressions), then checks each program's output.
# Header checks first; threads sharing a context under ASan; last, a deliberately leaking
# canary must be reported by both checkers, run exactly as the real programs: proof that they
# were active and that the suppressions hide nothing of ours.
#   tests/c/run.sh CHECKPOINT_DIR [LIB_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
model=$1
lib=${2:-$root/target/debug}
out=$root/target/c-tests
mkdir -p "$out"
cc=(gcc -std=c11 -g -O1 -Wall -Wextra -Werror -pthread -I"$root/include")
link=(-L"$lib" -lmodel_context -Wl,-rpath,"$lib" -lm)
asan=("${cc[@]}" -fsanitize=address -fno-omit-frame-pointer)
# ONEDNN_MAX_CPU_ISA (valgrind runs only): under valgrind, which hides AVX-512, oneDNN's float32
# products pick its AVX gemm, and valgrind then reports uninitialised values in libgomp's
# worker threads, every one traced (--track-origins) to one stack allocation in that gemm's
# JIT code, down to pointers passed to free and futex while the program runs correctly and its
# checks pass. Capped at SSE4.1, oneDNN runs another kernel and valgrind reports nothing. The
# ASan runs keep the machine's own kernels.
vg=(env ONEDNN_MAX_CPU_ISA=SSE41
    valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible --suppressions="$root/tests/c/libtorch.supp")
# Full stacks (the library has no frame pointers), leaks fail the run with exit code 98.
asan_options=detect_leaks=1:fast_unwind_on_malloc=0:exitcode=98:strict_string_checks=1

echo "== header: both include orders with a dlpack/dlpack.h of our own, and as C++"
"${cc[@]}" -I"$root/tests/c" -o "$out/inc1" "$root/tests/c/include_dlpack_first.c" && "$out/inc1"
"${cc[@]}" -I"$root/tests/c" -o "$out/inc2" "$root/tests/c/include_dlpack_second.c" && "$out/inc2"
g++ -std=c++17 -Wall -Werror -fsyntax-only -x c++ "$root/include/model_context.h"

# need PATTERN FILE WHY: FILE has a line matching PATTERN, or WHY is printed and 1 returned.
# (Everything below runs in functions called under `||`, where `set -e` does not apply, so
# every step returns its failure explicitly.)
need() { grep -q "$1" "$2" || { echo "$3" >&2; return 1; }; }

# check_output NAME FILE: what each program must print (a program without a rule here must
# still exit 0 under both checkers and print something).
check_output() {
  local f=$2
  [ -s "$f" ] || { echo "$1 printed nothing" >&2; return 1; }
  case $1 in
    weights)
      need '^config {' "$f" "weights printed no config" || return 1
      [ "$(grep -c 'checksum=' "$f")" -ge 13 ] || { echo "weights printed too few weights" >&2; return 1; } ;;
    tour) need 'check logits == resid.post_ln_f @ unembedding: ok' "$f" "the tour's check failed" ;;
    experiments)
      [ "$(grep -c 'logits moved by 0\.0*[1-9]' "$f")" = 4 ] || { echo "an edit did not move the logits" >&2; return 1; }
      need 'vs clean 0\.000000$' "$f" "the patched run differs from the clean run" ;;
    tokens)
      need '^decode: [0-9]* bytes, equal to the text$' "$f" "decode differs from the text" || return 1
      need '^error MC_ERR_TOKEN: token id 4000000000' "$f" "no token error" || return 1
      need '^long text: .* repeated: yes$' "$f" "the parallel encoder differs" ;;
    sample) need '^same seed, same tokens: yes$' "$f" "equal seeds gave different samples" ;;
    attribution)
      [ "$(grep -c '^neuron layer=' "$f")" = 10 ] || { echo "attribution printed no top ten" >&2; return 1; }
      need '^first-order check: .*: ok$' "$f" "the first-order check failed" ;;
    decoding)
      need '^decoding: 300 steps, .*: ok$' "$f" "decoding steps differ from the full pass" || return 1
      need '^error MC_ERR_INVALID_ARGUMENT: append row 0: sequence id 4 is outside 0..4' "$f" "no error for a bad sequence id" || return 1
      need '^sample_batch: 16 tokens' "$f" "mc_sample_batch" ;;
    test_*) need ' checks, 0 failed$' "$f" "$1 had failed checks" ;;
  esac
}

programs=("$root"/examples/c/*.c "$root"/tests/c/test_*.c)
echo "== build ${#programs[@]} programs, plain and with AddressSanitizer"
for src in "${programs[@]}"; do
  name=$(basename "$src" .c)
  "${cc[@]}" -o "$out/$name" "$src" "${link[@]}"
  "${asan[@]}" -o "$out/$name-asan" "$src" "${link[@]}"
done
"${asan[@]}" -o "$out/stress-asan" "$root/tests/c/stress.c" "${link[@]}"
"${cc[@]}" -o "$out/canary" "$root/tests/c/sanitizer_canary.c" "${link[@]}"
"${asan[@]}" -o "$out/canary-asan" "$root/tests/c/sanitizer_canary.c" "${link[@]}"

# run_one NAME: the program under valgrind, then under ASan, each output checked.
run_one() {
  local name=$1
  echo "== $name under valgrind"
  "${vg[@]}" "$out/$name" "$model" > "$out/$name.txt" || { echo "$name failed under valgrind" >&2; return 1; }
  check_output "$name" "$out/$name.txt" || return 1
  echo "== $name under AddressSanitizer"
  ASAN_OPTIONS=$asan_options "$out/$name-asan" "$model" > "$out/$name-asan.txt" ||
    { echo "$name failed under AddressSanitizer" >&2; return 1; }
  check_output "$name" "$out/$name-asan.txt" || return 1
  echo "$name: ok under both"
}
# Two lanes side by side (two cores), each running its share of the programs in turn.
lane() {
  local i
  for ((i = $1; i < ${#programs[@]}; i += 2)); do
    run_one "$(basename "${programs[$i]}" .c)" || return 1
  done
}
lane 0 > "$out/lane0.log" 2>&1 & lane0=$!
lane 1 > "$out/lane1.log" 2>&1 & lane1=$!
ok=0
wait "$lane0" || ok=1
wait "$lane1" || ok=1
cat "$out/lane0.log" "$out/lane1.log"
[ "$ok" = 0 ] || { echo "a program failed under valgrind or ASan (see above)" >&2; exit 1; }
echo "== threads sharing one context (tests/c/stress.c) under AddressSanitizer"
ASAN_OPTIONS=$asan_options "$out/stress-asan" "$model" 4 5

# expect_leaks TOOL RC EXPECTED_RC PATTERN: the canary must have failed with the tool's report
# of its own block and of the context and tensor it leaked through the library.
expect_leaks() {
  local log=$out/canary-$1.txt
  if [ "$2" != "$3" ] || ! grep -q "$4" "$log" || ! grep -q 'mc_open' "$log" ||
     ! grep -q 'mc_get_weight' "$log" || ! grep -q 'sanitizer_canary.c' "$log"; then
    cat "$log" >&2
    echo "$1 did not report the canary's leaks (exit $2, expected $3): the checker is not active" >&2
    exit 1
  fi
  echo "$1 reported the canary's leaks (exit $2): active"
}
echo "== the canary under the same valgrind command and ASan options"
rc=0; "${vg[@]}" "$out/canary" "$model" > "$out/canary-valgrind.txt" 2>&1 || rc=$?
expect_leaks valgrind "$rc" 99 'definitely lost'
rc=0; ASAN_OPTIONS=$asan_options "$out/canary-asan" "$model" > "$out/canary-asan.txt" 2>&1 || rc=$?
expect_leaks asan "$rc" 98 'ERROR: LeakSanitizer: detected memory leaks'
echo "c tests: ok (${#programs[@]} programs under valgrind and ASan)"
