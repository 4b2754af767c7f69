#!/usr/bin/env python3
"""Write a seeded random checkpoint in the TDB layout (spec section 1) with real torch.save.

Used for the demo model, the golden tests and the benchmarks, so nothing large is committed.
"""
import argparse
import json
import os
import sys

import torch

# n_vocab of each tiktoken encoding (the model's vocabulary rows must match the encoding).
N_VOCAB = {
    "gpt2": 50257,
    "r50k_base": 50257,
    "p50k_base": 50281,
    "p50k_edit": 50284,
    "cl100k_base": 100277,
    "o200k_base": 200019,
}

PRESETS = {
    # Small widths, GPT-2 vocabulary: the README's demo model.
    "demo": dict(d_model=64, n_layers=2, n_heads=4, ctx_window=128, m_attn=1.0, m_mlp=4.0),
    # GPT-2 small shapes (about 163M parameters with an untied unembedding): benchmarks.
    "gpt2-small-random": dict(d_model=768, n_layers=12, n_heads=12, ctx_window=1024, m_attn=1.0, m_mlp=4.0),
}


def piece_shapes(cfg, n_vocab):
    d, dqk = cfg["d_model"], int(cfg["d_model"] * cfg["m_attn"])
    dff = int(d * cfg["m_mlp"])
    shapes = {"tok_embed.weight": [n_vocab, d], "pos_embed.weight": [cfg["ctx_window"], d]}
    for i in range(cfg["n_layers"]):
        p = f"xf_layers.{i}."
        shapes.update({
            p + "ln_1.weight": [d], p + "ln_1.bias": [d],
            p + "attn.q_proj.weight": [dqk, d], p + "attn.q_proj.bias": [dqk],
            p + "attn.k_proj.weight": [dqk, d], p + "attn.k_proj.bias": [dqk],
            p + "attn.v_proj.weight": [dqk, d], p + "attn.v_proj.bias": [dqk],
            p + "attn.out_proj.weight": [d, dqk], p + "attn.out_proj.bias": [d],
            p + "ln_2.weight": [d], p + "ln_2.bias": [d],
            p + "mlp.in_layer.weight": [dff, d], p + "mlp.in_layer.bias": [dff],
            p + "mlp.out_layer.weight": [d, dff], p + "mlp.out_layer.bias": [d],
        })
    shapes.update({"final_ln.weight": [d], "final_ln.bias": [d], "unembed.weight": [n_vocab, d]})
    return shapes


def random_piece(name, shape, gen):
    if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "final_ln.weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--enc", default="gpt2", choices=sorted(N_VOCAB))
    for key in ("d_model", "n_layers", "n_heads", "ctx_window"):
        ap.add_argument("--" + key.replace("_", "-"), type=int)
    for key in ("m_attn", "m_mlp"):
        ap.add_argument("--" + key.replace("_", "-"), type=float)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--scalar-final-ln", action="store_true", help="store final_ln.weight as a 0-d tensor")
    ap.add_argument("--force", action="store_true", help="rewrite even if config.json exists")
    args = ap.parse_args(argv)

    cfg = dict(PRESETS[args.preset]) if args.preset else dict(PRESETS["demo"])
    for key in ("d_model", "n_layers", "n_heads", "ctx_window", "m_attn", "m_mlp"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    config = {"enc": args.enc, **cfg}
    if os.path.exists(os.path.join(args.out, "config.json")) and not args.force:
        print(f"{args.out}: exists, kept")
        return 0
    pieces = os.path.join(args.out, "model_pieces")
    os.makedirs(pieces, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    for name, shape in piece_shapes(cfg, N_VOCAB[args.enc]).items():
        t = random_piece(name, shape, gen)
        if name == "final_ln.weight" and args.scalar_final_ln:
            t = t[0].clone()
        torch.save(t.to(dtype).contiguous(), os.path.join(pieces, name + ".pt"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"{args.out}: wrote {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
