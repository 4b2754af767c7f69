#!/usr/bin/env python3
"""Python half of the decoding benchmark: Hugging Face `generate(do_sample=False,
use_cache=True)` on the same HF folder and seeded prompts as benches/bench_decode.c (1 and 8
prompts of 32 tokens, 64 and 256 new tokens), eager and sdpa attention, in the dtype given;
and the step's weight-streaming bound: the matrix products of one decoding step alone (every
layer's four linears and the unembedding at the batch's rows, the faster of two libtorch calls),
timed in the same process. Prints JSON (tokens/s).

Usage: bench_decode_hf.py --ckpt DIR --dtype f32|bf16 [--threads N]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import GPT2LMHeadModel

import bench_perf

PROMPT = 32


def prompts(batch):
    s, out = 12345, []
    for _ in range(batch * PROMPT):
        s = (s * 1103515245 + 12345) % 2**32
        out.append(s % 50257)
    return torch.tensor(out).view(batch, PROMPT)


def generate(model, batch, new):
    ids = prompts(batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, use_cache=True, pad_token_id=0)
    dt = time.perf_counter() - t0
    assert out.shape == (batch, PROMPT + new)
    return batch * new / dt


def bound(model, batch, reps=20):
    """Tokens/s if a step cost only its matrix products, each way libtorch offers timed over the
    whole step and the fastest taken: `x @ W` in HF's layout (what `linear` runs), `W @ x^T`
    on the `[out, in]` matrix with at least two columns (the library's float32 CPU path below
    three rows, src/model/product.rs), and oneDNN on the `[out, in]` matrix reordered once (its
    bfloat16 path, src/model/packed.rs; at least as fast as oneDNN on the plain float32 matrix,
    its float32 path from three rows)."""
    sd = model.state_dict()
    dtype = next(model.parameters()).dtype
    weights = [w for k, w in sd.items() if k.endswith(".weight") and w.dim() == 2 and ".h." in k]
    weights.append(sd["lm_head.weight"].t())  # the unembedding, as [d, vocab]
    out_in = [w.t().contiguous() for w in weights]
    xs = {w.shape[0]: torch.randn(batch, w.shape[0], dtype=dtype) for w in weights}
    cols = {d: torch.randn(max(batch, 2), d, dtype=dtype).t() for d in xs}
    reorder = [bench_perf.reordered(xs[w.shape[1]], w) for w in out_in]
    ways = [lambda: [xs[w.shape[0]] @ w for w in weights],
            lambda: [w @ cols[w.shape[1]] for w in out_in],
            lambda: [op() for op in reorder]]
    best = float("inf")
    with torch.inference_mode():
        for way in ways:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                way()
                times.append(time.perf_counter() - t0)
            best = min(best, statistics.median(times))
    return batch / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    result = {"threads": torch.get_num_threads(), "dtype": args.dtype}
    for impl in ("eager", "sdpa"):
        model = GPT2LMHeadModel.from_pretrained(args.ckpt, attn_implementation=impl, torch_dtype=dtype).eval()
        generate(model, 1, 4)  # warm-up
        for batch in (1, 8):
            for new in (64, 256):
                result[f"{impl}_b{batch}_n{new}"] = generate(model, batch, new)
        if impl == "eager":
            result["bound_b1"], result["bound_b8"] = bound(model, 1), bound(model, 8)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
