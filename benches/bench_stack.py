#!/usr/bin/env python3
"""Stacked fetches and dtype conversion (issue 9), side by side in one run: the C API
(benches/bench_stack.c) against the same work in Python torch on weights already loaded the
seed's way (torch.stack of per-layer einsum views; .to(dtype)).
Usage: bench_stack.py [--ckpt DIR] [--reps N]"""
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
import gen_context_golden as seed  # noqa: E402


def timed(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    lib = os.path.join(REPO, "target", "release")
    exe = os.path.join(REPO, "target", "bench_stack")
    subprocess.run(["gcc", "-std=c11", "-O2", "-I", os.path.join(REPO, "include"), "-o", exe,
                    os.path.join(REPO, "benches", "bench_stack.c"), "-L", lib, "-lmodel_context",
                    f"-Wl,-rpath,{lib}"], check=True)
    c = json.loads(subprocess.run([exe, args.ckpt, str(args.reps)], check=True, capture_output=True, text=True).stdout)
    cfg = json.load(open(os.path.join(args.ckpt, "config.json")))
    n = cfg["n_layers"]
    w = {loc: [seed.seed_get_weight(args.ckpt, cfg, loc, l, None) for l in range(n)] for loc in ("attn.to_query", "mlp.to_hidden")}
    emb = seed.seed_get_weight(args.ckpt, cfg, "embedding", None, None)
    py = {
        "to_query_stacked": timed(lambda: torch.stack(w["attn.to_query"]), args.reps),
        "mlp_to_hidden_stacked": timed(lambda: torch.stack(w["mlp.to_hidden"]), args.reps),
        "embedding_to_float16": timed(lambda: emb.to(torch.float16), args.reps),
        "embedding_to_bfloat16": timed(lambda: emb.to(torch.bfloat16), args.reps),
        "mlp_to_hidden_stacked_float16": timed(lambda: torch.stack(w["mlp.to_hidden"]).to(torch.float16), args.reps),
    }
    print(f"{args.ckpt}: medians of {args.reps}, warm; Python works on weights already in memory")
    print(f"{'case':<32} {'C API (ms)':>11} {'Python (ms)':>12} {'ratio':>7}")
    for k, v in c.items():
        p = py.get(k)
        print(f"{k:<32} {v * 1e3:>11.3f} {(f'{p * 1e3:.3f}' if p else '-'):>12} {(f'{p / v:.2f}x' if p else ''):>7}")
    for loc in ("to_query", "mlp_to_hidden"):
        print(f"{loc}: stacked / one fetch per layer = {c[loc + '_stacked'] / c[loc + '_each_layer']:.1f}x "
              "(per-layer fetches are zero-copy views; a stack is a new tensor)")


if __name__ == "__main__":
    main()
