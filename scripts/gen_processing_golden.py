#!/usr/bin/env python3
"""Golden data for weight processing, written from docs/weight-processing.md in Python torch:
for seeded random TDB checkpoints, each processing step alone and all together, the processed
checkpoint as a TDB folder (real torch.save). The Rust tests open the original with the
processing options and compare every weight with the processed folder opened plainly.

Usage: gen_processing_golden.py OUT_DIR"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoint  # noqa: E402

STEPS = ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"]
CHECKPOINTS = {
    "basic": ["--d-model", "32", "--n-layers", "2", "--n-heads", "4", "--ctx-window", "16"],
    "heads3": ["--d-model", "24", "--n-layers", "3", "--n-heads", "3", "--ctx-window", "8", "--m-mlp", "2.5"],
}


def fold_ln(p, layer):
    """docs: fold ln_1 into q/k/v and ln_2 into mlp.in_layer, centring the folded rows."""
    for ln, targets in (("ln_1", ["attn.q_proj", "attn.k_proj", "attn.v_proj"]), ("ln_2", ["mlp.in_layer"])):
        g, beta = p[f"{layer}{ln}.weight"], p[f"{layer}{ln}.bias"]
        for t in targets:
            w, b = p[f"{layer}{t}.weight"], p[f"{layer}{t}.bias"]
            p[f"{layer}{t}.bias"] = b + w @ beta
            w = w * g[None, :]
            p[f"{layer}{t}.weight"] = w - w.mean(dim=1, keepdim=True)
        p[f"{layer}{ln}.weight"] = torch.ones_like(g)
        p[f"{layer}{ln}.bias"] = torch.zeros_like(beta)


def process(p, n_layers, steps):
    layers = [f"xf_layers.{i}." for i in range(n_layers)]
    if "fold_ln" in steps:
        for layer in layers:
            fold_ln(p, layer)
    if "center_writing_weights" in steps:
        for k in ("tok_embed.weight", "pos_embed.weight"):
            p[k] = p[k] - p[k].mean(dim=-1, keepdim=True)
        for layer in layers:
            for t in ("attn.out_proj", "mlp.out_layer"):
                for s in ("weight", "bias"):
                    k = f"{layer}{t}.{s}"
                    p[k] = p[k] - p[k].mean(dim=0, keepdim=True)
    if "center_unembed" in steps:
        p["unembed.weight"] = p["unembed.weight"] - p["unembed.weight"].mean(dim=0, keepdim=True)
    if "fold_value_biases" in steps:
        for layer in layers:
            bv = p[f"{layer}attn.v_proj.bias"]
            p[f"{layer}attn.out_proj.bias"] = p[f"{layer}attn.out_proj.bias"] + p[f"{layer}attn.out_proj.weight"] @ bv
            p[f"{layer}attn.v_proj.bias"] = torch.zeros_like(bv)


def main(out):
    manifest = {"steps": STEPS, "checkpoints": []}
    for i, (name, args) in enumerate(CHECKPOINTS.items()):
        root = os.path.join(out, name, "original")
        make_checkpoint.main(["--out", root, "--seed", str(300 + i), "--force"] + args)
        cfg = json.load(open(os.path.join(root, "config.json")))
        pieces_dir = os.path.join(root, "model_pieces")
        original = {f[:-3]: torch.load(os.path.join(pieces_dir, f)) for f in os.listdir(pieces_dir)}
        variants = {s: [s] for s in STEPS}
        variants["all"] = STEPS
        for vname, steps in variants.items():
            p = {k: v.clone() for k, v in original.items()}
            process(p, cfg["n_layers"], steps)
            vdir = os.path.join(out, name, vname)
            os.makedirs(os.path.join(vdir, "model_pieces"), exist_ok=True)
            for k, v in p.items():
                torch.save(v.contiguous(), os.path.join(vdir, "model_pieces", k + ".pt"))
            json.dump(cfg, open(os.path.join(vdir, "config.json"), "w"))
        manifest["checkpoints"].append({"name": name, "original": f"{name}/original",
                                        "variants": {v: {"steps": s, "root": f"{name}/{v}"} for v, s in variants.items()}})
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=1)
    print(f"{out}: {len(manifest['checkpoints'])} checkpoints x {len(variants)} variants")


if __name__ == "__main__":
    main(sys.argv[1])
