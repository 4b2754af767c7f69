#!/usr/bin/env python3
"""Forward-pass benchmark, side by side in one run: the C API (benches/bench_forward.c) and
Hugging Face GPT2LMHeadModel in PyTorch eager (benches/bench_forward_hf.py) with the same
weights and the same number of threads, on the GPT-2-small-shaped random checkpoint.
Usage: bench_forward.py [--ckpt DIR] [--reps N]"""
import argparse
import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(exe, source="bench_forward.c"):
    """The release library and one C driver of benches/ linked against it."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    lib = os.path.join(REPO, "target", "release")
    subprocess.run(["gcc", "-std=c11", "-O2", "-I", os.path.join(REPO, "include"), "-o", exe,
                    os.path.join(REPO, "benches", source), "-L", lib, "-lmodel_context",
                    f"-Wl,-rpath,{lib}"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    exe = os.path.join(REPO, "target", "bench_forward")
    build(exe)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    c = json.loads(subprocess.run([exe, args.ckpt, str(args.reps)], check=True, capture_output=True,
                                  text=True, env=env).stdout)
    py = json.loads(subprocess.run([sys.executable, os.path.join(REPO, "benches", "bench_forward_hf.py"),
                                    "--ckpt", args.ckpt, "--threads", str(threads), "--reps", str(args.reps)],
                                   check=True, capture_output=True, text=True).stdout)
    print(f"{args.ckpt}: {threads} threads each, torch {torch.__version__}, medians of {args.reps}")
    print(f"{'case':<26} {'C API (s)':>10} {'HF eager (s)':>13} {'speed-up':>9}")
    rows = [("model creation", c["create"], py["create_s"])]
    for shape in ("1x128", "8x128"):
        rows.append((f"forward {shape}", c[f"forward_{shape}"], py["forward_s"][shape]))
        rows.append((f"forward {shape} + MLP acts", c[f"forward_{shape}_capture"], py["forward_capture_s"][shape]))
    for name, ours, theirs in rows:
        print(f"{name:<26} {ours:>10.4f} {theirs:>13.4f} {theirs / ours:>8.2f}x")
    for shape in ("1x128", "8x128"):
        over = c[f"forward_{shape}_capture"] / c[f"forward_{shape}"] - 1
        print(f"capture overhead {shape}: C API {over * 100:+.1f}%, HF {py['capture_overhead'][shape] * 100:+.1f}%")
    print(f"HF logits vs the spec reference (1x128): max |diff| {py['check']['logits_max_abs_diff_vs_ref_1x128']:.2e}")


if __name__ == "__main__":
    main()
