#!/usr/bin/env bash
# Benchmark peer only (benches/bench_perf.py): llama.cpp through llama-cpp-python 0.3.36, built
# from its PyPI sdist (which vendors llama.cpp and its convert_hf_to_gguf.py) in its own venv,
# so the converter's and llama-cpp-python's pins never touch the project's venv. Idempotent;
# prints the venv's python and the unpacked sdist folder on its last two lines.
set -euo pipefail
version=0.3.36
sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=${MC_CACHE_DIR:-$HOME/.cache/model_context}
venv=$cache/llama-venv
src=$cache/llama-sdist
tarball=$src/llama_cpp_python-$version.tar.gz
mkdir -p "$src"
if [ ! -f "$tarball" ]; then
  url=$(curl -sSf https://pypi.org/simple/llama-cpp-python/ |
    grep -o "https://files.pythonhosted.org/[^\"#]*llama_cpp_python-$version.tar.gz" | head -1)
  curl -sSfL -o "$tarball.part" "$url"
  mv "$tarball.part" "$tarball"
fi
echo "$sha  $tarball" | sha256sum -c --quiet -
[ -d "$src/llama_cpp_python-$version" ] || tar xzf "$tarball" -C "$src"
if ! "$venv/bin/python" -c "import llama_cpp; assert llama_cpp.__version__ == '$version'" 2>/dev/null; then
  echo "setup_llama: building llama-cpp-python $version from source (about 15 minutes on 2 cores)" >&2
  python3 -m venv "$venv"
  # Native CPU build (AVX-512, AMX where the CPU has them), as a C user would build llama.cpp.
  CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$venv/bin/pip" install -q "$tarball" >&2
fi
echo "$venv/bin/python"
echo "$src/llama_cpp_python-$version"
