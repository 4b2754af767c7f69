#!/usr/bin/env python3
"""Golden data for the model context: seeded random TDB checkpoints (real torch.save) and the
result of every (location, layer, normalize_dim) computed with Python torch exactly as the
seed's StandardModelContext.get_weight does (torch.load, split, einsum, expand, normalize).

Usage: gen_context_golden.py OUT_DIR
Writes OUT_DIR/<checkpoint>/{config.json, model_pieces/, expected/*.bin} and OUT_DIR/manifest.json.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoint  # noqa: E402

# The seed's table (spec section 3): piece, split, reshape, broadcast, shape spec.
WEIGHTS = {
    "mlp.to_hidden": ("xf_layers.{layer}.mlp.in_layer.weight", None, "hr->rh", False, ["residual_stream_channels", "mlp_acts"]),
    "mlp.to_residual": ("xf_layers.{layer}.mlp.out_layer.weight", None, "rh->hr", False, ["mlp_acts", "residual_stream_channels"]),
    "embedding": ("tok_embed.weight", None, None, False, ["vocab_size", "residual_stream_channels"]),
    "unembedding": ("unembed.weight", None, "vr->rv", False, ["residual_stream_channels", "vocab_size"]),
    "position_embedding": ("pos_embed.weight", None, None, False, ["max_context_length", "residual_stream_channels"]),
    "attn.to_query": ("xf_layers.{layer}.attn.q_proj.weight", 0, "hqr->hrq", False, ["attn_heads", "residual_stream_channels", "query_and_key_channels"]),
    "attn.to_key": ("xf_layers.{layer}.attn.k_proj.weight", 0, "hkr->hrk", False, ["attn_heads", "residual_stream_channels", "query_and_key_channels"]),
    "attn.to_value": ("xf_layers.{layer}.attn.v_proj.weight", 0, "hvr->hrv", False, ["attn_heads", "residual_stream_channels", "value_channels"]),
    "attn.to_residual": ("xf_layers.{layer}.attn.out_proj.weight", 1, "rhv->hvr", False, ["attn_heads", "value_channels", "residual_stream_channels"]),
    "layer_norm_gain.final": ("final_ln.weight", None, None, True, ["residual_stream_channels"]),
    "layer_norm_bias.final": ("final_ln.bias", None, None, False, ["residual_stream_channels"]),
    "layer_norm_gain.pre_attn": ("xf_layers.{layer}.ln_1.weight", None, None, False, ["residual_stream_channels"]),
    "layer_norm_gain.pre_mlp": ("xf_layers.{layer}.ln_2.weight", None, None, False, ["residual_stream_channels"]),
    # Beyond the seed: the biases, split into heads where the weights are.
    "attn.query_bias": ("xf_layers.{layer}.attn.q_proj.bias", 0, None, False, ["attn_heads", "query_and_key_channels"]),
    "attn.key_bias": ("xf_layers.{layer}.attn.k_proj.bias", 0, None, False, ["attn_heads", "query_and_key_channels"]),
    "attn.value_bias": ("xf_layers.{layer}.attn.v_proj.bias", 0, None, False, ["attn_heads", "value_channels"]),
    "attn.residual_bias": ("xf_layers.{layer}.attn.out_proj.bias", None, None, False, ["residual_stream_channels"]),
    "mlp.hidden_bias": ("xf_layers.{layer}.mlp.in_layer.bias", None, None, False, ["mlp_acts"]),
    "mlp.residual_bias": ("xf_layers.{layer}.mlp.out_layer.bias", None, None, False, ["residual_stream_channels"]),
    "layer_norm_bias.pre_attn": ("xf_layers.{layer}.ln_1.bias", None, None, False, ["residual_stream_channels"]),
    "layer_norm_bias.pre_mlp": ("xf_layers.{layer}.ln_2.bias", None, None, False, ["residual_stream_channels"]),
}

CHECKPOINTS = {
    "basic": ["--d-model", "32", "--n-layers", "2", "--n-heads", "4", "--ctx-window", "16"],
    "m_attn_heads3": ["--d-model", "24", "--n-layers", "3", "--n-heads", "3", "--ctx-window", "8",
                      "--m-attn", "0.5", "--m-mlp", "2.5", "--enc", "p50k_base"],
    "fp16": ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--ctx-window", "8", "--dtype", "float16"],
    "scalar_ln": ["--d-model", "16", "--n-layers", "1", "--n-heads", "4", "--ctx-window", "8", "--scalar-final-ln"],
    "heads6": ["--d-model", "48", "--n-layers", "2", "--n-heads", "6", "--ctx-window", "12", "--m-mlp", "3"],
}


def dims(cfg):
    d_attn = int(cfg["d_model"] * cfg["m_attn"])
    return {
        "max_context_length": cfg["ctx_window"],
        "residual_stream_channels": cfg["d_model"],
        "vocab_size": make_checkpoint.N_VOCAB[cfg["enc"]],
        "attn_heads": cfg["n_heads"],
        "query_and_key_channels": d_attn // cfg["n_heads"],
        "value_channels": d_attn // cfg["n_heads"],
        "mlp_acts": int(cfg["d_model"] * cfg["m_mlp"]),
        "layers": cfg["n_layers"],
        "singleton": 1,
    }


def seed_get_weight(root, cfg, location, layer, normalize_dim):
    piece, split, reshape, broadcast, spec = WEIGHTS[location]
    part = piece.format(layer=layer)
    weight = torch.load(os.path.join(root, "model_pieces", part + ".pt"), map_location="cpu")
    if split is not None:
        w_shape = list(weight.shape)
        n = cfg["n_heads"]
        weight = weight.reshape(*(w_shape[:split] + [n, w_shape[split] // n] + w_shape[split + 1:]))
    if reshape is not None:
        weight = torch.einsum(reshape, weight)
    sizes = dims(cfg)
    if broadcast:
        weight = weight.expand(tuple(sizes[d] for d in spec))
    if normalize_dim is not None:
        weight = torch.nn.functional.normalize(weight, dim=spec.index(normalize_dim))
    assert tuple(weight.shape) == tuple(sizes[d] for d in spec)
    return weight.detach()


def save_bytes(t, path):
    with open(path, "wb") as f:
        f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def main(out):
    manifest = {"checkpoints": []}
    for i, (name, args) in enumerate(CHECKPOINTS.items()):
        root = os.path.join(out, name)
        make_checkpoint.main(["--out", root, "--seed", str(100 + i), "--force"] + args)
        cfg = json.load(open(os.path.join(root, "config.json")))
        exp_dir = os.path.join(root, "expected")
        os.makedirs(exp_dir, exist_ok=True)
        cases = []
        for location, (piece, _, _, _, spec) in WEIGHTS.items():
            layers = range(cfg["n_layers"]) if "{layer}" in piece else [None]
            for layer in layers:
                for nd in [None] + spec:
                    w = seed_get_weight(root, cfg, location, layer, nd)
                    fname = f"{location}.{layer}.{nd}.bin"
                    save_bytes(w, os.path.join(exp_dir, fname))
                    cases.append({
                        "location": location, "layer": layer, "normalize_dim": nd,
                        "shape": list(w.shape), "stride": list(w.stride()),
                        "dtype": str(w.dtype).replace("torch.", ""), "file": f"{name}/expected/{fname}",
                    })
        # The seed's helpers.
        unemb = seed_get_weight(root, cfg, "unembedding", None, None)
        gain = seed_get_weight(root, cfg, "layer_norm_gain.final", None, None)
        helper = torch.einsum("ov,o->ov", unemb, gain)
        save_bytes(helper, os.path.join(exp_dir, "unembedding_with_ln_gain.bin"))
        manifest["checkpoints"].append({
            "name": name, "root": name, "config": cfg, "dims": dims(cfg), "cases": cases,
            "unembedding_with_ln_gain": {"shape": list(helper.shape), "file": f"{name}/expected/unembedding_with_ln_gain.bin"},
        })
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{out}: {sum(len(c['cases']) for c in manifest['checkpoints'])} cases")


if __name__ == "__main__":
    main(sys.argv[1])
