#!/usr/bin/env python3
"""The forward pass against this machine's matrix-multiply limit and against its peers, side by
side in one run, same weights (the HF folder data/hf-gpt2-small-random, opened directly by the
library), same thread count, float32 and bfloat16:

  bound       libtorch matmuls of exactly the products the request performs (per layer: the q,
              k and v projections, q.k^T and probs.v per head, the output projection, the two
              MLP products; then the unembedding at every position or at the last one), on
              random operands of the request's shapes and layouts (weights [out, in] as the
              model holds them; each weight product the faster of `linear` and `w @ x^T`,
              timed over the whole request), nothing else
  C API       benches/bench_perf.c
  HF          GPT2LMHeadModel, eager and sdpa attention (benches/bench_perf_hf.py)
  llama.cpp   llama-cpp-python 0.3.36's llama.cpp on GGUFs of the same weights
              (benches/bench_perf_llama.py; scripts/setup_llama.sh builds it, once)

Rows: forward 1x128, 8x128 and 1x1024 tokens with logits at every position and at the last one
(llama.cpp: prompt processing with that many outputs), and greedy generation of 128 tokens after
a 32-token prompt. Reports medians in seconds, each forward as a fraction of its bound, and each
peer's time over ours. Then, because this machine's speed drifts by tens of percent within
minutes, generation against llama.cpp again as PAIRS back-to-back pairs (one generation each,
a fresh process each, alternating which goes first), with the median of the pairs' ratios.
Usage:

  bench_perf.py [--reps 5] [--pairs 5] [--threads N] [--dtypes f32,bf16] [--no-llama]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benches"))
from perf_common import ROWS, SHAPES, timed  # noqa: E402

HF_DIR = os.path.join(REPO, "data", "hf-gpt2-small-random")
def products(cfg, b, t, logits):
    """(name, batch, m, k, n) of each matrix product of one forward pass, in order."""
    d, heads, vocab = cfg["n_embd"], cfg["n_head"], cfg["vocab_size"]
    ff = cfg.get("n_inner") or 4 * d
    dh, rows = d // heads, b * t
    layer = [("qkv", 1, rows, d, d)] * 3 + [
        ("q.k", b * heads, t, dh, t), ("probs.v", b * heads, t, t, dh),
        ("out", 1, rows, d, d), ("mlp_in", 1, rows, d, ff), ("mlp_out", 1, rows, ff, d)]
    return layer * cfg["n_layer"] + [("unembed", 1, rows if logits == "all" else b, d, vocab)]


def reordered(x, w):
    """`x @ w^T` through oneDNN on `w` reordered once (mkldnn's own operators), or `linear`
    where this libtorch has no such operator."""
    import torch
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except (RuntimeError, AttributeError):
        return lambda: torch.nn.functional.linear(x, w)
    return lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def bound(cfg, b, t, logits, dtype, reps):
    """Median seconds of the request's matrix products alone, on distinct random operands laid
    out as the model holds them: weights `[n, k]`, keys `[t, d_head]` per head (`q @ k^T`),
    values `[t, d_head]` (`probs @ v`). Weight products are timed each way libtorch offers
    (`linear`; `w @ x^T` with at least two columns, the library's float32 CPU path below three
    rows, src/model/product.rs; oneDNN on a weight reordered once, the library's bfloat16 path
    in src/model/packed.rs, at least as fast as oneDNN on the plain float32 matrix, its float32
    path from three rows), and the fastest run is the bound."""
    import torch
    kind = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    ways = ([], [], [])
    for name, bt, m, k, n in products(cfg, b, t, logits):
        x = torch.randn(bt, m, k, dtype=kind)
        if name == "q.k":
            kt = torch.randn(bt, n, k, dtype=kind).transpose(1, 2)
            ops = [lambda x=x, kt=kt: torch.bmm(x, kt)] * 3
        elif name == "probs.v":
            v = torch.randn(bt, k, n, dtype=kind)
            ops = [lambda x=x, v=v: torch.bmm(x, v)] * 3
        else:
            w, cols = torch.randn(n, k, dtype=kind), torch.randn(max(m, 2), k, dtype=kind).t()
            ops = [lambda x=x[0], w=w: torch.nn.functional.linear(x, w), lambda w=w, c=cols: w @ c,
                   reordered(x[0], w)]
        for way, op in zip(ways, ops):
            way.append(op)

    def run(way):
        for op in way:
            op()

    return min(timed(lambda: run(way), reps) for way in ways)


def logits_path(dtype):
    return os.path.join(REPO, "target", f"bench-perf-logits-{dtype}.bin")


def run_json(cmd, env=None):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def llama_setup():
    """(venv python, unpacked sdist) of scripts/setup_llama.sh, and the GGUFs, made once."""
    lines = subprocess.run([os.path.join(REPO, "scripts", "setup_llama.sh")], check=True,
                           capture_output=True, text=True).stdout.split()
    py, sdist = lines[-2], lines[-1]
    out = os.path.join(REPO, "target", "bench-llama")
    subprocess.run([sys.executable, os.path.join(REPO, "benches", "llama_gguf.py"), HF_DIR,
                    os.path.join(sdist, "vendor", "llama.cpp"), out], check=True)
    return py, out


def report(results, bounds):
    peers = [k for k in ("hf-eager", "hf-sdpa", "llama.cpp") if k in results]
    print(f"{'row':<14} {'bound s':>8} {'ours s':>8} {'of bound':>8} " + " ".join(f"{p + ' s':>12} {'x':>6}" for p in peers))
    for row in ROWS:
        ours = results["c-api"][row]
        b = bounds.get(row)
        cells = [f"{row:<14}", f"{b:>8.4f}" if b else f"{'':>8}", f"{ours:>8.4f}",
                 f"{b / ours:>8.2f}" if b else f"{'':>8}"]
        for p in peers:
            cells += [f"{results[p][row]:>12.4f}", f"{results[p][row] / ours:>5.2f}x"]
        print(" ".join(cells))


def generation_pairs(exe, llama, dtype, threads, pairs, env):
    """Seconds of (ours, llama.cpp) for each back-to-back pair of one generation each, the first
    of a pair alternating, and the median of llama.cpp's time over ours."""
    py, folder = llama
    env = dict(env, MC_BENCH_ONLY="generate")
    ours = lambda: run_json([exe, HF_DIR, dtype, "1"], env)["generate"]  # noqa: E731
    theirs = lambda: run_json([py, os.path.join(REPO, "benches", "bench_perf_llama.py"),  # noqa: E731
                               os.path.join(folder, f"model-{dtype}.gguf"), dtype, str(threads), "1"],
                              env)["generate"]
    timings = []
    for i in range(pairs):
        if i % 2:
            t, o = theirs(), ours()
        else:
            o, t = ours(), theirs()
        timings.append((o, t))
    return timings, statistics.median(t / o for o, t in timings)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--no-llama", action="store_true")
    args = ap.parse_args()
    import torch
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with open(os.path.join(HF_DIR, "config.json")) as f:
        cfg = json.load(f)
    for stale in map(logits_path, ("f32", "bf16")):
        if os.path.exists(stale):
            os.remove(stale)
    exe = os.path.join(REPO, "target", "bench_perf")
    import bench_forward
    bench_forward.build(exe, "bench_perf.c")
    llama = None if args.no_llama else llama_setup()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    everything = {"threads": threads, "torch": torch.__version__, "reps": args.reps}
    for dtype in args.dtypes.split(","):
        # The float32 pass's logits: what llama.cpp's and ours in bfloat16 are checked against.
        logits_file = logits_path("f32")
        results = {"c-api": run_json([exe, HF_DIR, dtype, str(args.reps), logits_path(dtype)], env)}
        for attn in ("eager", "sdpa"):
            results[f"hf-{attn}"] = run_json([sys.executable, os.path.join(REPO, "benches", "bench_perf_hf.py"),
                                              HF_DIR, attn, dtype, str(threads), str(args.reps)], env)
        if llama:
            py, folder = llama
            results["llama.cpp"] = run_json([py, os.path.join(REPO, "benches", "bench_perf_llama.py"),
                                             os.path.join(folder, f"model-{dtype}.gguf"), dtype, str(threads),
                                             str(args.reps)] + [logits_file] * os.path.exists(logits_file), env)
        bounds = {f"{b}x{t}_{lc}": bound(cfg, b, t, lc, dtype, args.reps) for b, t in SHAPES for lc in ("all", "last")}
        print(f"\n{dtype}: {threads} threads each, torch {torch.__version__}, medians of {args.reps}")
        if "check_max_abs_diff" in results.get("llama.cpp", {}):
            r = results["llama.cpp"]
            print(f"llama.cpp {dtype} logits vs the C API's float32 (1x128): max |diff| {r['check_max_abs_diff']:.2e} "
                  f"(logits up to {r['check_logit_scale']:.1f}), top-1 agreement {r['check_top1_agree']:.3f}")
        if dtype != "f32" and os.path.exists(logits_file):
            import numpy as np
            ours, full = (np.fromfile(logits_path(d), dtype=np.float32).reshape(128, -1) for d in (dtype, "f32"))
            results["c-api"]["check_vs_f32"] = {
                "max_abs_diff": float(np.abs(ours - full).max()), "logit_scale": float(np.abs(full).max()),
                "top1_agree": float((ours.argmax(-1) == full.argmax(-1)).mean())}
            print(f"C API {dtype} logits vs its float32 (1x128): max |diff| "
                  f"{results['c-api']['check_vs_f32']['max_abs_diff']:.2e}, top-1 agreement "
                  f"{results['c-api']['check_vs_f32']['top1_agree']:.3f}")
        report(results, bounds)
        everything[dtype] = {"results": results, "bounds": bounds}
        if llama and args.pairs > 0:
            timings, median = generation_pairs(exe, llama, dtype, threads, args.pairs, env)
            print(f"generate, {args.pairs} back-to-back pairs (ours s, llama.cpp s): "
                  + ", ".join(f"({o:.3f}, {t:.3f})" for o, t in timings)
                  + f"; llama.cpp over ours, median {median:.2f}x")
            everything[dtype]["generate_pairs"] = {"timings": timings, "median_ratio": median}
    with open(os.path.join(REPO, "target", "bench-perf.json"), "w") as f:
        json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
