#!/usr/bin/env python3
"""Benchmark of the C API's weights against the seed's Python path, in the same run.

For a fresh context each repetition (warm page cache):
  all         every weight of every layer via mc_get_weight + a sum of its elements, against
              the seed's path: torch.load of each piece + split/einsum (+ expand) + .sum()
  embedding   the embedding alone (get + sum)
  to_query_0  attn.to_query of layer 0 (get + sum)
Also the resident set size after opening and while holding every weight, against the
checkpoint's size. Usage: bench_weights.py [--ckpt DIR] [--reps N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import gen_context_golden as seed  # noqa: E402  (the seed's get_weight, in Python torch)


def seed_all(root, cfg):
    t0 = time.perf_counter()
    total = 0.0
    for loc, (piece, *_rest) in seed.WEIGHTS.items():
        for layer in (range(cfg["n_layers"]) if "{layer}" in piece else [None]):
            total += seed.seed_get_weight(root, cfg, loc, layer, None).sum().item()
    return time.perf_counter() - t0, total


def seed_one(root, cfg, loc, layer):
    t0 = time.perf_counter()
    s = seed.seed_get_weight(root, cfg, loc, layer, None).sum().item()
    return time.perf_counter() - t0, s


def build(out):
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    lib = os.path.join(REPO, "target", "release")
    subprocess.run(["gcc", "-std=c11", "-O3", "-march=native", "-I", os.path.join(REPO, "include"),
                    "-o", out, os.path.join(REPO, "benches", "bench_weights.c"), "-L", lib,
                    "-lmodel_context", f"-Wl,-rpath,{lib}"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.ckpt, "config.json")))
    exe = os.path.join(REPO, "target", "bench_weights")
    build(exe)
    size = sum(os.path.getsize(os.path.join(args.ckpt, "model_pieces", f))
               for f in os.listdir(os.path.join(args.ckpt, "model_pieces")))
    seed_all(args.ckpt, cfg)  # warm the page cache
    runs = [json.loads(l) for l in subprocess.run([exe, args.ckpt, str(args.reps)], check=True,
                                                  capture_output=True, text=True).stdout.splitlines()]
    py = {"all": [], "embedding": [], "to_query_0": []}
    sums = {}
    for _ in range(args.reps):
        t, sums["all"] = seed_all(args.ckpt, cfg)
        py["all"].append(t)
        t, sums["embedding"] = seed_one(args.ckpt, cfg, "embedding", None)
        py["embedding"].append(t)
        t, sums["to_query_0"] = seed_one(args.ckpt, cfg, "attn.to_query", 0)
        py["to_query_0"].append(t)
    print(f"checkpoint {args.ckpt}: {size / 1e6:.1f} MB, {runs[0]['n_weights']} weights, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, {args.reps} reps, medians")
    print(f"{'case':<12} {'C API (s)':>10} {'Python seed (s)':>16} {'speed-up':>9}  sums (C / Python)")
    for case in ("all", "embedding", "to_query_0"):
        c = statistics.median(r[case] for r in runs)
        p = statistics.median(py[case])
        print(f"{case:<12} {c:>10.4f} {p:>16.4f} {p / c:>8.1f}x  {runs[0]['sum_' + case]:.3f} / {sums[case]:.3f}")
    for case in ("embedding_get", "to_query_0_get"):
        print(f"{case:<16} open + get, no sum: {statistics.median(r[case] for r in runs) * 1e3:.3f} ms")
    held = statistics.median(r["rss_held_kb"] - r["rss_open_kb"] for r in runs) * 1024
    print(f"RSS while holding every weight minus RSS after open: {held / 1e6:.1f} MB "
          f"= {held / size:.3f} x checkpoint size")


if __name__ == "__main__":
    main()
