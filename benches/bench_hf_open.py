#!/usr/bin/env python3
"""Benchmark: opening a GPT-2-small-shaped Hugging Face safetensors folder and reading every
weight, the C API against transformers' from_pretrained, side by side in one run.

  C API     mc_open of the folder + mc_get_weight of every location of every layer + a sum
            of its elements (benches/bench_hf_open.c; zero-copy views of the mapped file)
  Python    GPT2LMHeadModel.from_pretrained(folder) + tensor.sum() of every state-dict tensor
            (the same elements: every weight and bias, the tied unembedding once more)

Each repetition starts from a fresh context / model with a warm page cache; medians are
printed with the ratio. Usage: bench_hf_open.py [--model DIR] [--reps N]
(make the folder with `scripts/data.sh bench`).
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import transformers
from transformers import GPT2LMHeadModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
transformers.utils.logging.disable_progress_bar()


def build(out):
    subprocess.run(["cargo", "build", "--release", "--quiet", "--lib"], cwd=REPO, check=True)
    lib = os.path.join(REPO, "target", "release")
    subprocess.run(["gcc", "-std=c11", "-O3", "-march=native", "-I", os.path.join(REPO, "include"),
                    "-o", out, os.path.join(REPO, "benches", "bench_hf_open.c"), "-L", lib,
                    "-lmodel_context", f"-Wl,-rpath,{lib}"], check=True)


def python_once(folder):
    t0 = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(folder)
    t_open = time.perf_counter() - t0
    with torch.no_grad():
        sd = model.state_dict()
        total = sum(v.sum().item() for v in sd.values())
        elements = sum(v.numel() for v in sd.values())
    return t_open, time.perf_counter() - t0, total, len(sd), elements


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "data", "hf-gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    exe = os.path.join(REPO, "target", "bench_hf_open")
    build(exe)
    size = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model))
    python_once(args.model)  # warms the page cache and Python's imports
    c_runs = [json.loads(line) for line in subprocess.run(
        [exe, args.model, str(args.reps)], check=True, capture_output=True, text=True).stdout.splitlines()]
    py_runs = [python_once(args.model) for _ in range(args.reps)]
    c_open = statistics.median(r["open"] for r in c_runs)
    c_all = statistics.median(r["all"] for r in c_runs)
    p_open = statistics.median(r[0] for r in py_runs)
    p_all = statistics.median(r[1] for r in py_runs)
    print(f"folder {args.model}: {size / 1e6:.1f} MB; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}; {args.reps} reps, medians, warm page cache")
    print(f"{'case':<34} {'C API (s)':>10} {'from_pretrained (s)':>20} {'ratio':>8}")
    print(f"{'open / from_pretrained':<34} {c_open:>10.4f} {p_open:>20.4f} {p_open / c_open:>7.1f}x")
    print(f"{'open + read and sum every weight':<34} {c_all:>10.4f} {p_all:>20.4f} {p_all / c_all:>7.1f}x")
    print(f"C API: {c_runs[0]['n_weights']} weights, {c_runs[0]['elements']} elements, sum {c_runs[0]['sum']:.4f}; "
          f"Python: {py_runs[0][3]} tensors, {py_runs[0][4]} elements, sum {py_runs[0][2]:.4f}")
    held = statistics.median(r["rss_held_kb"] - r["rss_start_kb"] for r in c_runs) * 1024
    print(f"C API RSS growth while holding every weight: {held / 1e6:.1f} MB ({held / size:.2f} x the folder)")


if __name__ == "__main__":
    main()
