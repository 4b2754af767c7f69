#!/usr/bin/env bash
# The built library finds libtorch by RUNPATH (so LD_LIBRARY_PATH still overrides it) and
# keeps libtorch_cuda.so as a real dependency when the libtorch it was built with has one.
#   tests/linkage.sh [LIB_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
so=${1:-$root/target/debug}/libmodel_context.so
libtorch=$(readlink -f "$root/.libtorch")/lib
dyn=$(readelf -d "$so")
echo "$dyn" | grep -q "(RUNPATH).*\[$libtorch\]" || { echo "no RUNPATH to $libtorch in $so"; exit 1; }
if echo "$dyn" | grep -q "(RPATH)"; then echo "$so uses DT_RPATH, which LD_LIBRARY_PATH cannot override"; exit 1; fi
if [ -e "$libtorch/libtorch_cuda.so" ]; then
  echo "$dyn" | grep -q "NEEDED.*\[libtorch_cuda.so\]" || { echo "libtorch_cuda.so dropped from NEEDED"; exit 1; }
fi
# Resolved without LD_LIBRARY_PATH, from the libtorch it was built against.
deps=$(env -u LD_LIBRARY_PATH ldd "$so")
if echo "$deps" | grep -q "not found"; then echo "$deps" | grep "not found"; exit 1; fi
echo "$deps" | grep -q "libtorch_cpu.so => $libtorch/libtorch_cpu.so" || { echo "libtorch_cpu not from $libtorch"; exit 1; }
# LD_LIBRARY_PATH overrides the RUNPATH: a decoy folder holding a libc10.so link wins.
decoy=$(mktemp -d); trap 'rm -rf "$decoy"' EXIT
ln -s "$libtorch/libc10.so" "$decoy/libc10.so"
decoyed=$(LD_LIBRARY_PATH=$decoy ldd "$so")  # captured: grep -q exiting early must not SIGPIPE ldd
grep -q "libc10.so => $decoy/libc10.so" <<<"$decoyed" || { echo "LD_LIBRARY_PATH did not override"; exit 1; }
echo "linkage: ok (RUNPATH $libtorch; libtorch_cuda.so kept: $([ -e "$libtorch/libtorch_cuda.so" ] && echo yes || echo 'n/a'))"
