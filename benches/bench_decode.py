#!/usr/bin/env python3
"""Decoding benchmark, side by side in one run on the HF folder data/hf-gpt2-small-random (the
same weights for both): tokens/s of greedy generation for a 32-token prompt and 64 and 256 new
tokens, batch 1 and 8, the C API (benches/bench_decode.c: mc_sample_batch on a decoding state)
against Hugging Face `generate(use_cache=True)` eager and sdpa (benches/bench_decode_hf.py),
same threads, float32 and bfloat16; the fraction of the step's weight-streaming bound; and
ms per token at positions 64, 256 and 1000 of the 1024 window. The two halves run one after the
other `--reps` times (interleaved, so a drift of the machine's speed reaches both), and each
number is the median of its runs.
Usage: bench_decode.py [--ckpt DIR] [--dtypes f32,bf16] [--reps 3]"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_forward  # noqa: E402

REPO = bench_forward.REPO


def medians(runs):
    """Each numeric field's median over the runs."""
    return {k: statistics.median(r[k] for r in runs) for k, v in runs[0].items() if isinstance(v, (int, float))}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "hf-gpt2-small-random"))
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    exe = os.path.join(REPO, "target", "bench_decode")
    bench_forward.build(exe, "bench_decode.c")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    print(f"{args.ckpt}: greedy, 32-token prompts, {threads} threads each; tokens/s (higher is better)")
    print(f"medians of {args.reps} interleaved runs")
    for dtype in args.dtypes.split(","):
        cs, pys = [], []
        for _ in range(args.reps):
            cs.append(json.loads(subprocess.run([exe, args.ckpt, dtype], check=True, capture_output=True,
                                                text=True, env=env).stdout))
            pys.append(json.loads(subprocess.run(
                [sys.executable, os.path.join(REPO, "benches", "bench_decode_hf.py"), "--ckpt", args.ckpt,
                 "--dtype", dtype, "--threads", str(threads)], check=True, capture_output=True, text=True).stdout))
        c, py = medians(cs), medians(pys)
        print(f"\n{dtype}: {'case':<12} {'C API':>8} {'HF eager':>9} {'HF sdpa':>8} {'vs best HF':>10} {'of bound':>9}")
        for b in (1, 8):
            for n in (64, 256):
                k = f"b{b}_n{n}"
                best = max(py[f"eager_{k}"], py[f"sdpa_{k}"])
                print(f"{'':6}{k:<12} {c[k]:>8.1f} {py[f'eager_{k}']:>9.1f} {py[f'sdpa_{k}']:>8.1f} "
                      f"{c[k] / best:>9.2f}x {c[k] / py[f'bound_b{b}'] * 100:>8.0f}%")
        print(f"      step bound: batch 1 {py['bound_b1']:.1f} tokens/s, batch 8 {py['bound_b8']:.1f} tokens/s")
        print("      C API ms per token at positions 64 / 256 / 1000: "
              f"{c['ms_at_64']:.2f} / {c['ms_at_256']:.2f} / {c['ms_at_1000']:.2f}")


if __name__ == "__main__":
    main()
