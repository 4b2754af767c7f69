#!/usr/bin/env python3
"""Golden data for Hugging Face GPT-2 folders: seeded random GPT2LMHeadModels saved by
transformers (`save_pretrained`, safetensors) and as a `.bin` (`torch.save` of the state dict,
spec section 7), each beside its TDB conversion done here in Python as spec section 7 says.

Usage: gen_hf_golden.py OUT_DIR           the golden cases and OUT_DIR/manifest.json
       gen_hf_golden.py --bench OUT_DIR   a GPT-2-small-shaped safetensors folder (benchmarks)
"""
import json
import os
import re
import shutil
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

# name -> (GPT2Config arguments, dtype, weight formats written)
CASES = {
    "tied_f32": (dict(n_embd=32, n_layer=2, n_head=4, n_positions=64), torch.float32, ["safetensors", "bin"]),
    "untied_f16_inner": (dict(n_embd=48, n_layer=1, n_head=3, n_positions=32, n_inner=96,
                              tie_word_embeddings=False), torch.float16, ["safetensors", "bin"]),
}


def random_model(kwargs, dtype, seed):
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**kwargs)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Noise on every parameter, so layer-norm gains and biases are not all 1 or 0.
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.to(dtype)


def tdb_config(cfg):
    n_inner = cfg.n_inner if cfg.n_inner is not None else 4 * cfg.n_embd
    return {"enc": "gpt2", "ctx_window": cfg.n_positions, "d_model": cfg.n_embd, "n_layers": cfg.n_layer,
            "m_attn": 1.0, "n_heads": cfg.n_head, "m_mlp": n_inner / cfg.n_embd}


RENAMES = [("wte", "tok_embed"), ("wpe", "pos_embed"), ("ln_f", "final_ln"), ("lm_head", "unembed"),
           ("attn.c_attn", "attn.linear_qkv"), ("attn.c_proj", "attn.out_proj"),
           ("mlp.c_fc", "mlp.in_layer"), ("mlp.c_proj", "mlp.out_layer")]


def to_tdb(state_dict, cfg):
    """Spec section 7: drop the attention buffers, rename, transpose Conv1D weights, split
    linear_qkv into q/k/v, tie the unembedding to the token embedding."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".attn.bias") or key.endswith(".attn.masked_bias"):
            continue
        key = key.removeprefix("transformer.")
        key = re.sub(r"^h\.(\d+)\.", r"xf_layers.\1.", key)
        for old, new in RENAMES:
            key = key.replace(old, new)
        if (".attn." in key or ".mlp." in key) and key.endswith(".weight"):
            value = value.t()
        out[key] = value
    for i in range(cfg.n_layer):
        for kind in ("weight", "bias"):
            q, k, v = out.pop(f"xf_layers.{i}.attn.linear_qkv.{kind}").chunk(3, dim=0)
            for name, part in (("q", q), ("k", k), ("v", v)):
                out[f"xf_layers.{i}.attn.{name}_proj.{kind}"] = part
    if cfg.tie_word_embeddings or "unembed.weight" not in out:
        out["unembed.weight"] = out["tok_embed.weight"]
    return out


def write_tdb(root, pieces, config):
    os.makedirs(os.path.join(root, "model_pieces"), exist_ok=True)
    for key, value in pieces.items():
        torch.save(value.contiguous().clone(), os.path.join(root, "model_pieces", key + ".pt"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(config, f)


def main(out):
    os.makedirs(out, exist_ok=True)
    manifest = {"cases": []}
    for i, (name, (kwargs, dtype, formats)) in enumerate(CASES.items()):
        model = random_model(kwargs, dtype, seed=600 + i)
        cfg = model.config
        tdb = os.path.join(name, "tdb")
        write_tdb(os.path.join(out, tdb), to_tdb(model.state_dict(), cfg), tdb_config(cfg))
        folders = {}
        for fmt in formats:
            folder = os.path.join(name, "hf_" + fmt)
            path = os.path.join(out, folder)
            if fmt == "safetensors":
                model.save_pretrained(path)
                assert os.path.isfile(os.path.join(path, "model.safetensors"))
            else:
                os.makedirs(path, exist_ok=True)
                torch.save(model.state_dict(), os.path.join(path, "pytorch_model.bin"))
                cfg.to_json_file(os.path.join(path, "config.json"))
            folders[fmt] = folder
        manifest["cases"].append({"name": name, "tdb": tdb, "hf": folders, "dtype": str(dtype).removeprefix("torch."),
                                  "config": tdb_config(cfg)})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{out}: {len(manifest['cases'])} Hugging Face GPT-2 cases")


def bench(out):
    """GPT-2 small's shapes (124M parameters, tied), random, saved as safetensors."""
    if os.path.exists(out):
        shutil.rmtree(out)
    model = random_model({}, torch.float32, seed=7)
    model.save_pretrained(out)
    print(f"{out}: GPT-2-small-shaped safetensors folder")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        bench(sys.argv[2])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit(__doc__)
