#!/usr/bin/env bash
# The installed package as its users meet it: `make install` into a temporary prefix, then the
# C, C++ and Go examples built against it through pkg-config and run on the demo checkpoint
# (the same lines from each), the Go binding's tests under the race detector, every program
# block of README.md and docs/ built and run, the Julia package's static checks and ABI
# replay through ctypes, the Python DLPack example, and `make uninstall`.
#   tests/packaging.sh [debug|release]      (default debug, the build scripts/test.sh makes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=${1:-debug}
model=${MC_DEMO_MODEL:-$root/data/demo}
py=$root/.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "packaging: $passed passed, 1 failed"; exit 1; }
[ -f "$model/config.json" ] || fail "no demo checkpoint at $model (scripts/data.sh demo)"

echo "== make install PREFIX=$prefix PROFILE=$profile"
make -s -C "$root" install PREFIX="$prefix" PROFILE="$profile" > "$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "make install"; }
version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
soname=$(make -s -C "$root" print-soname)
lib=$prefix/lib
[ "$(readlink "$lib/libmodel_context.so")" = "$soname" ] || fail "libmodel_context.so does not link to $soname"
[ "$(readlink "$lib/$soname")" = "libmodel_context.so.$version" ] || fail "$soname does not link to the versioned file"
[ -f "$lib/libmodel_context.so.$version" ] && [ -f "$lib/libmodel_context.a" ] && [ -f "$prefix/include/model_context.h" ] ||
  fail "installed files missing"
cmp -s "$root/include/model_context.h" "$prefix/include/model_context.h" || fail "installed header differs"
dyn=$(readelf -d "$lib/libmodel_context.so.$version")
echo "$dyn" | grep -q "(SONAME).*\[$soname\]" || fail "installed library's SONAME is not $soname"
libtorch=$(readlink -f "$root/.libtorch")/lib
echo "$dyn" | grep -q "(RUNPATH).*\[$libtorch\]" || fail "installed library has no RUNPATH to $libtorch"
ok "installed layout: $soname -> libmodel_context.so.$version, static library, header, RUNPATH $libtorch"

export PKG_CONFIG_PATH=$lib/pkgconfig
[ "$(pkg-config --modversion model_context)" = "$version" ] || fail "pkg-config version"
[ "$(pkg-config --cflags model_context | xargs)" = "-I$prefix/include" ] || fail "pkg-config --cflags: $(pkg-config --cflags model_context)"
[ "$(pkg-config --libs model_context | xargs)" = "-L$lib -lmodel_context" ] || fail "pkg-config --libs: $(pkg-config --libs model_context)"
# Outputs are captured before grep -q reads them: with pipefail, a writer still writing when
# grep -q has matched and exited dies of SIGPIPE and fails the pipeline (seen with ldd).
static_libs=$(pkg-config --libs model_context-static)
grep -q "$lib/libmodel_context.a" <<<"$static_libs" || fail "model_context-static.pc"
ok "pkg-config: model_context $version, model_context-static"

echo "== C examples against the installed package"
cflags=$(pkg-config --cflags model_context)
libs=$(pkg-config --libs model_context)
# shellcheck disable=SC2086
gcc -std=c11 -O1 -Wall -Wextra -Werror $cflags -o "$work/tour" "$root/examples/c/tour.c" $libs -lm -Wl,-rpath,"$lib"
tour_dyn=$(readelf -d "$work/tour")
grep -q "NEEDED.*\[$soname\]" <<<"$tour_dyn" || fail "tour does not depend on $soname"
tour_deps=$(ldd "$work/tour")
grep -q "$soname => $lib/$soname" <<<"$tour_deps" || fail "tour does not load the installed library: $tour_deps"
"$work/tour" "$model" > "$work/c.txt" || { cat "$work/c.txt"; fail "C tour"; }
cat "$work/c.txt"
grep -qx "model_context $version" "$work/c.txt" &&
  grep -qx 'config {.*"d_model":64.*}' "$work/c.txt" &&
  grep -qx 'dims layers=2 d_model=64 heads=4 vocab=50257' "$work/c.txt" &&
  grep -qx 'weight attn.to_query layer=0 shape=\[4,64,16\] strides=\[1024,1,64\] dtype=float32 sum=-\?[0-9.]*' "$work/c.txt" &&
  grep -qx 'tokens "Hello, world" -> \[15496,11,995\]' "$work/c.txt" &&
  grep -qx 'decode -> "Hello, world"' "$work/c.txt" &&
  grep -qx 'forward logits layer=- shape=\[1,3,50257\] .*' "$work/c.txt" &&
  grep -qx 'activation mlp.post_act layer=1 shape=\[1,3,256\] .*' "$work/c.txt" &&
  grep -qx 'check logits == resid.post_ln_f @ unembedding: ok' "$work/c.txt" &&
  grep -qx 'next token [0-9]* ".*"' "$work/c.txt" &&
  grep -qx 'error mc_get_weight(attn.to_query, layer 99): MC_ERR_INVALID_ARGUMENT: .*layer 99.*' "$work/c.txt" &&
  grep -qx 'error mc_open(/no/such/model): MC_ERR_NOT_FOUND: /no/such/model.*' "$work/c.txt" ||
  fail "C tour output"
ok "C tour (shared library, RUNPATH to the prefix)"
# shellcheck disable=SC2086
gcc -std=c11 -O1 $cflags -o "$work/tour_env" "$root/examples/c/tour.c" $libs -lm
LD_LIBRARY_PATH=$lib "$work/tour_env" "$model" | cmp -s - "$work/c.txt" || fail "C tour found through LD_LIBRARY_PATH"
ok "C tour found through LD_LIBRARY_PATH"
# shellcheck disable=SC2046
gcc -std=c11 -O1 -o "$work/tour_static" "$root/examples/c/tour.c" $(pkg-config --cflags --libs model_context-static) -lm
! ldd "$work/tour_static" | grep -q libmodel_context || fail "static tour still loads libmodel_context"
"$work/tour_static" "$model" | cmp -s - "$work/c.txt" || fail "statically linked C tour output differs"
ok "C tour linked with libmodel_context.a"
# shellcheck disable=SC2086
gcc -std=c11 -O1 $cflags -o "$work/weights" "$root/examples/c/weights.c" $libs -Wl,-rpath,"$lib"
[ "$("$work/weights" "$model" | grep -c 'checksum=')" -ge 13 ] || fail "weights example"
ok "weights example"

echo "== C++ example (RAII)"
# shellcheck disable=SC2086
g++ -std=c++17 -O1 -Wall -Wextra -Werror $cflags -o "$work/tour_cpp" "$root/examples/cpp/tour.cpp" $libs -Wl,-rpath,"$lib"
"$work/tour_cpp" "$model" > "$work/cpp.txt" || fail "C++ tour"
diff -u "$work/c.txt" "$work/cpp.txt" || fail "C++ tour output differs from C"
ok "C++ tour prints the C tour's lines"

echo "== Go binding (go test -race) and example"
command -v go >/dev/null || fail "go is not installed (scripts/setup.sh installs golang-go)"
export GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=1 CGO_LDFLAGS="-Wl,-rpath,$lib" MC_DEMO_MODEL=$model
[ -z "$(gofmt -l "$root/bindings/go" "$root/examples/go")" ] || fail "gofmt: $(gofmt -l "$root/bindings/go" "$root/examples/go")"
(cd "$root/bindings/go" && go vet ./... && GODEBUG=cgocheck=2 go test -race -count=1 ./...) || fail "go test -race"
ok "go vet, go test -race (cgocheck=2)"
(cd "$root/examples/go" && go vet . && go build -o "$work/tour_go" .) || fail "go build examples/go"
"$work/tour_go" "$model" > "$work/go.txt" || fail "Go tour"
diff -u "$work/c.txt" "$work/go.txt" || fail "Go tour output differs from C"
ok "Go tour prints the C tour's lines"

echo "== every program block in README.md and docs/ builds and runs"
"$py" "$root/tests/docs_programs.py" "$lib" "$model" || fail "a documented program"
ok "documented programs"

echo "== Julia binding's ABI and call sequence through ctypes"
export MC_LIB=$lib/libmodel_context.so
"$py" "$root/tests/python/test_julia_abi.py" || fail "Julia ABI checks"
"$py" "$root/tests/python/test_julia_abi.py" --tour "$model" > "$work/julia.txt" || fail "Julia ABI replay (ctypes)"
diff -u "$work/c.txt" "$work/julia.txt" || fail "Julia ABI replay (ctypes) differs from C"
ok "Julia package layout, ccall signatures, struct layouts, ABI replay (not a run of the Julia code)"

echo "== Python example (NumPy and PyTorch through __dlpack__)"
"$py" "$root/examples/python/tour.py" "$model" > "$work/py.txt" || { cat "$work/py.txt"; fail "Python example"; }
cat "$work/py.txt"
c_sum() { grep "^$1 " "$work/c.txt" | sed 's/.* sum=//'; }
grep -qx "numpy weight attn.to_query layer=0 shape=\[4, 64, 16\] strides=\[1024, 1, 64\] writeable=False sum=$(c_sum 'weight attn.to_query')" "$work/py.txt" &&
  grep -qx "torch forward logits shape=\[1, 3, 50257\] sum=$(c_sum 'forward logits')" "$work/py.txt" &&
  grep -qx "numpy activation mlp.post_act layer=1 shape=\[1, 3, 256\] sum=$(c_sum 'activation mlp.post_act')" "$work/py.txt" &&
  grep -qx 'torch check logits == resid.post_ln_f @ unembedding: ok' "$work/py.txt" &&
  grep -qx "$(grep '^tokens' "$work/c.txt" | sed 's/[][]/\\&/g')" "$work/py.txt" ||
  fail "Python example output"
ok "Python example agrees with the C tour"

echo "== staged install and uninstall"
make -s -C "$root" install DESTDIR="$work/stage" PREFIX=/opt/mc PROFILE="$profile" NO_BUILD=1 > /dev/null
[ -f "$work/stage/opt/mc/lib/libmodel_context.so.$version" ] && grep -qx 'prefix=/opt/mc' "$work/stage/opt/mc/lib/pkgconfig/model_context.pc" ||
  fail "DESTDIR install"
make -s -C "$root" uninstall PREFIX="$prefix" > /dev/null
[ -z "$(find "$prefix" \( -type f -o -type l \))" ] || fail "uninstall left $(find "$prefix" \( -type f -o -type l \))"
ok "DESTDIR staging, uninstall"
echo "packaging: $passed passed, 0 failed"
