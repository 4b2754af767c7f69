#!/usr/bin/env python3
"""Gradients benchmark, side by side in one run: the C API (benches/bench_grads.c) against
Hugging Face eager with hooks and torch.autograd (benches/bench_grads_hf.py), same threads, on
the GPT-2-small-shaped random checkpoint: forward plus backward from a logit difference on
8x128 with gradients at every layer's mlp.post_act, and the backward pass's cost relative to
the forward pass for both. The two programs alternate ROUNDS times; medians over all reps.
Usage: bench_grads.py [--ckpt DIR] [--reps N] [--rounds N]"""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    exe = os.path.join(REPO, "target", "bench_grads")
    bench_forward.build(exe, "bench_grads.c")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    c_cmd = [exe, args.ckpt, str(args.reps)]
    py_cmd = [sys.executable, os.path.join(REPO, "benches", "bench_grads_hf.py"), "--ckpt", args.ckpt,
              "--threads", str(threads), "--reps", str(args.reps)]
    runs = {"c": [], "py": []}
    for _ in range(args.rounds):
        for side, cmd in (("c", c_cmd), ("py", py_cmd)):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[side].append(json.loads(out))
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("forward", "forward_backward")}
           for side, rs in runs.items()}
    c, py = med["c"], med["py"]
    print(f"{args.ckpt}: 8x128, {threads} threads each, medians of {args.rounds} rounds x {args.reps} reps")
    print(f"{'case':<40} {'C API (s)':>10} {'HF eager (s)':>13} {'speed-up':>9}")
    for name, key in (("forward (last-position logits)", "forward"),
                      ("forward + backward, grads at mlp.post_act", "forward_backward")):
        print(f"{name:<40} {c[key]:>10.4f} {py[key]:>13.4f} {py[key] / c[key]:>8.2f}x")
    for side, name in (("c", "C API"), ("py", "HF")):
        m = med[side]
        print(f"backward cost, {name}: {m['forward_backward'] / m['forward'] - 1:+.2f}x a forward pass "
              f"(forward + backward = {m['forward_backward'] / m['forward']:.2f}x)")


if __name__ == "__main__":
    main()
