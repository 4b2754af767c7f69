#!/usr/bin/env bash
# Idempotent set-up for building and testing on a fresh machine: system packages, the project
# venv (torch 2.11.0 = the libtorch tch 0.24 expects) and the links the build uses.
# The venv lives outside the clone (MC_CACHE_DIR, default ~/.cache/model_context) so fresh
# clones reuse it; .venv and .libtorch in the clone point at it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MC_CACHE_DIR:-$HOME/.cache/model_context}
venv=$cache/venv

need_apt=()
for tool in gcc g++ make valgrind pkg-config python3 go; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  pkgs=()
  for t in "${need_apt[@]}"; do case $t in python3) pkgs+=(python3 python3-venv) ;; go) pkgs+=(golang-go) ;; *) pkgs+=("$t") ;; esac; done
  echo "setup: installing ${pkgs[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

mkdir -p "$cache"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating venv $venv" >&2
  python3 -m venv "$venv"
fi
want=$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)
have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing requirements.txt into $venv (torch is about 4.7 GB the first time)" >&2
  "$venv/bin/pip" install -q -r "$root/requirements.txt"
  echo "$want" > "$venv/.requirements.sha256"
fi
# Test tools (tests/python/requirements-tools.txt), tracked the same way.
want=$(sha256sum "$root/tests/python/requirements-tools.txt" | cut -d' ' -f1)
if [ "$want" != "$(cat "$venv/.tools.sha256" 2>/dev/null || true)" ]; then
  "$venv/bin/pip" install -q -r "$root/tests/python/requirements-tools.txt"
  echo "$want" > "$venv/.tools.sha256"
fi
ln -sfn "$venv" "$root/.venv"
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" "$root/.libtorch"

# Build outputs are shared by clones too (cargo keys them by path and content), so a fresh
# clone does not rebuild libtorch's bindings; an in-tree target/ that exists is left alone.
if [ ! -e "$root/target" ] && [ ! -L "$root/target" ]; then
  mkdir -p "$cache/target"
  ln -s "$cache/target" "$root/target"
fi

# cargo-fuzz drives the libFuzzer targets of scripts/fuzz.sh (built from crates.io once).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz from crates.io" >&2
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi

# tiktoken (Python) downloads its BPE files at first use; serve it the ones tiktoken-rs embeds.
export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$cache/tiktoken}
