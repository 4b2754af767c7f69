#!/usr/bin/env python3
"""Edits benchmark, side by side in one run: the C API (benches/bench_edits.c) against Hugging
Face eager with the same ten edits as hooks (benches/bench_edits_hf.py), same threads, on the
GPT-2-small-shaped random checkpoint; and stopping after layer 3 of 12 against a full pass.
Usage: bench_edits.py [--ckpt DIR] [--reps N]"""
import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_forward  # noqa: E402

REPO = bench_forward.REPO


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    exe = os.path.join(REPO, "target", "bench_edits")
    bench_forward.build(exe, "bench_edits.c")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    c = json.loads(subprocess.run([exe, args.ckpt, str(args.reps)], check=True, capture_output=True,
                                  text=True, env=env).stdout)
    py = json.loads(subprocess.run([sys.executable, os.path.join(REPO, "benches", "bench_edits_hf.py"),
                                    "--ckpt", args.ckpt, "--threads", str(threads), "--reps", str(args.reps)],
                                   check=True, capture_output=True, text=True).stdout)
    print(f"{args.ckpt}: 8x128, {threads} threads each, medians of {args.reps}")
    print(f"{'case':<28} {'C API (s)':>10} {'HF eager (s)':>13} {'speed-up':>9}")
    for name, key in (("forward", "forward"), ("forward + 10 edits", "forward_edits")):
        print(f"{name:<28} {c[key]:>10.4f} {py[key]:>13.4f} {py[key] / c[key]:>8.2f}x")
    print(f"edit overhead: C API {(c['forward_edits'] / c['forward'] - 1) * 100:+.1f}%, "
          f"HF hooks {(py['forward_edits'] / py['forward'] - 1) * 100:+.1f}%")
    print(f"stop after layer 3 of 12: {c['forward_stop3']:.4f} s = "
          f"{c['forward_stop3'] / c['forward'] * 100:.0f}% of a full pass")


if __name__ == "__main__":
    main()
