#!/usr/bin/env python3
"""Golden data for the forward pass: seeded random Hugging Face GPT2LMHeadModels (an independent
implementation) converted to the TDB layout exactly as spec section 7 says, with HF's logits,
hidden states and attention probabilities, and every activation of ref_model.py (spec section 6).

Usage: gen_model_golden.py OUT_DIR [MODEL...]   (a subset of MODELS, e.g. to carry less data)
Writes OUT_DIR/<model>/{model_pieces/, config.json, <case>/hf/*.bin, <case>/ref/*.bin} and
OUT_DIR/manifest.json. Every .bin is raw little-endian float32, C-contiguous. The script asserts
that the reference agrees with HF (and with itself: padding, simplify) before writing.
"""
import json
import os
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_model  # noqa: E402

N_VOCAB = 50257  # tiktoken "gpt2"
TOL_HF = 1e-4  # reference vs Hugging Face (logits, hidden states, attention probabilities)
TOL_PAD = 1e-5  # a padded row vs the same sequence alone
TOL_SIMPLIFY = 1e-4  # folded vs unfolded logits

# name -> (GPT2Config overrides, single-sequence length, padded-batch lengths, seed).
MODELS = {
    "e32_l2_h4": (dict(n_embd=32, n_layer=2, n_head=4, n_positions=32), 6, [5, 3, 1], 11),
    # Untied: its unembedding differs from the token embedding, so using one for the other fails.
    "e24_l3_h3": (dict(n_embd=24, n_layer=3, n_head=3, n_positions=20, tie_word_embeddings=False), 5, [4, 2, 1], 12),
    # Its single sequence fills the whole context window.
    "e48_l1_h6_ctx16": (dict(n_embd=48, n_layer=1, n_head=6, n_positions=16, n_inner=96), 16, [3, 1], 13),
}
RENAMES = [("wte.", "tok_embed."), ("wpe.", "pos_embed."), ("ln_f.", "final_ln."),
           ("lm_head.", "unembed."), ("h.", "xf_layers."), ("attn.c_attn.", "attn.linear_qkv."),
           ("attn.c_proj.", "attn.out_proj."), ("mlp.c_fc.", "mlp.in_layer."),
           ("mlp.c_proj.", "mlp.out_layer.")]


def build_hf(overrides, seed):
    """A GPT-2 with eager attention and every parameter random (HF's init leaves LN at 1/0)."""
    cfg = GPT2Config(vocab_size=N_VOCAB, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                     **overrides)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(random_like(name, p, gen))
    return model.eval()


def random_like(name, p, gen):
    """Scales chosen so attention is far from uniform and every check discriminates."""
    noise = torch.randn(p.shape, generator=gen)
    if ".ln_" in name or "ln_f." in name:
        return 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
    if "wte." in name or "wpe." in name:
        return 0.5 * noise
    if "lm_head." in name:  # only present when untied: [vocab, d], unit gain per row
        return noise / p.shape[1] ** 0.5
    if name.endswith("bias"):
        return 0.1 * noise
    return noise / p.shape[0] ** 0.5  # Conv1D weight [in, out]: unit gain per layer


def tdb_config(hf):
    """Spec section 7's config mapping; a config the layout cannot represent is an error."""
    assert hf.activation_function == "gelu_new", "activation_function"
    assert hf.layer_norm_epsilon == 1e-5, "layer_norm_epsilon"
    assert not hf.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx"
    assert not hf.reorder_and_upcast_attn, "reorder_and_upcast_attn"
    m_mlp = hf.n_inner / hf.n_embd if hf.n_inner is not None else 4
    return {"enc": "gpt2", "ctx_window": hf.n_positions, "d_model": hf.n_embd,
            "n_layers": hf.n_layer, "n_heads": hf.n_head, "m_attn": 1, "m_mlp": m_mlp}


def rename(key):
    """HF state-dict key -> TDB key, before the qkv split."""
    key = key.removeprefix("transformer.")
    for old, new in RENAMES:
        if key.startswith(old) or f".{old}" in key:
            key = key.replace(old, new, 1)
    return key


def tdb_pieces(state_dict):
    """Spec section 7: drop mask buffers, rename, transpose Conv1D weights, split qkv."""
    out = {}
    for hf_key, t in state_dict.items():
        if hf_key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        key = rename(hf_key)
        if (".attn." in key or ".mlp." in key) and key.endswith(".weight"):
            t = t.t()
        if ".attn.linear_qkv." in key:
            for part, chunk in zip(("q", "k", "v"), t.chunk(3, dim=0)):
                out[key.replace("linear_qkv", f"{part}_proj")] = chunk
        else:
            out[key] = t
    return out


def write_checkpoint(model, root):
    """TDB checkpoint with real torch.save, one tensor per piece, config.json written last."""
    sd = model.state_dict()
    tied = torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"])
    assert tied == model.config.tie_word_embeddings, "lm_head tying as configured"
    pieces = tdb_pieces(sd)
    assert set(pieces) == set(ref_model.piece_names(model.config.n_layer)), sorted(pieces)
    os.makedirs(os.path.join(root, "model_pieces"), exist_ok=True)
    for key, t in pieces.items():
        torch.save(t.detach().clone().contiguous(), os.path.join(root, "model_pieces", key + ".pt"))
    cfg = tdb_config(model.config)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return cfg


def random_tokens(gen, lengths):
    """Right-padded token ids (0 at padding) covering the top of the vocabulary, and the mask."""
    t = max(lengths)
    tokens = torch.randint(0, N_VOCAB, (len(lengths), t), generator=gen)
    tokens[0, 0] = N_VOCAB - 1
    tokens[0, lengths[0] - 1] = N_VOCAB - 2
    tokens[-1, 0] = 50000 + int(torch.randint(0, N_VOCAB - 50000, (1,), generator=gen))
    pad = torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]
    tokens = tokens.masked_fill(pad, 0)
    return tokens, (pad if bool(pad.any()) else None)


def hf_outputs(model, tokens, pad):
    """HF forward with TDB's positions and HF's attention mask (= !pad)."""
    pos = ref_model.positions(pad, *tokens.shape)
    mask = None if pad is None else (~pad).long()
    with torch.no_grad():
        out = model(tokens, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                    output_attentions=True)
    return {"logits": out.logits, "hidden_states": list(out.hidden_states),
            "attentions": list(out.attentions)}


def max_diff(a, b, keep):
    """Largest absolute difference over the rows where keep [B, T] is True."""
    return (a[keep] - b[keep]).abs().max().item()


def check_hf(ref, hf, pad, n_layers):
    """The reference equals HF at every non-padding position (spec section 6's mapping)."""
    keep = torch.ones(hf["logits"].shape[:2], dtype=torch.bool) if pad is None else ~pad
    pairs = [("logits", hf["logits"], ref["logits"])]
    for i, h in enumerate(hf["hidden_states"]):
        key = ("resid.post_emb" if i == 0 else "resid.post_ln_f" if i == n_layers
               else f"resid.post_mlp.{i - 1}")
        pairs.append((f"hidden_states[{i}]", h, ref[key]))
    for i, a in enumerate(hf["attentions"]):
        pairs.append((f"attentions[{i}]", a.permute(0, 2, 3, 1), ref[f"attn.qk_probs.{i}"]))
    assert len(hf["hidden_states"]) == n_layers + 1 and len(hf["attentions"]) == n_layers
    worst = {}
    for name, h, r in pairs:
        assert h.shape == r.shape, (name, h.shape, r.shape)
        worst[name] = max_diff(h, r, keep)
        assert worst[name] <= TOL_HF, f"{name}: HF vs reference differ by {worst[name]}"
    return max(worst.values())


def check_rows_alone(rm, tokens, pad, logits):
    """Each sequence of a padded batch gives the same logits as alone."""
    worst = 0.0
    for row in range(tokens.shape[0]):
        n = int((~pad[row]).sum())
        alone = rm.forward(tokens[row:row + 1, :n])["logits"][0]
        worst = max(worst, (alone - logits[row, :n]).abs().max().item())
    assert worst <= TOL_PAD, f"padded rows vs alone differ by {worst}"
    return worst


def save_bin(t, out, rel):
    """Raw little-endian float32, contiguous; returns the manifest entry."""
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = t.detach().to(torch.float32).contiguous()
    with open(path, "wb") as f:
        f.write(t.numpy().astype("<f4", copy=False).tobytes())
    return {"file": rel, "shape": list(t.shape)}


def save_hf(hf, out, base):
    """HF's logits, hidden states and attentions ([B, H, T, S], as HF returns them)."""
    return {"logits": save_bin(hf["logits"], out, f"{base}/hf/logits.bin"),
            "hidden_states": [save_bin(h, out, f"{base}/hf/hidden_states.{i}.bin")
                              for i, h in enumerate(hf["hidden_states"])],
            "attentions": [save_bin(a, out, f"{base}/hf/attentions.{i}.bin")
                           for i, a in enumerate(hf["attentions"])]}


def make_case(out, name, case, model, rm, tokens, pad, simplify):
    """Runs one case, checks it, writes its .bin files and returns its manifest entry."""
    n_layers = rm.cfg["n_layers"]
    ref = rm.forward(tokens, pad, simplify)
    assert len(ref) == len(ref_model.MODEL_WIDE) + n_layers * len(ref_model.PER_LAYER)
    notes = {}
    if simplify:
        plain = rm.forward(tokens, pad)["logits"]
        notes["simplify_vs_plain"] = (ref["logits"] - plain).abs().max().item()
        assert notes["simplify_vs_plain"] <= TOL_SIMPLIFY, notes
        hf_entry = None
    else:
        hf = hf_outputs(model, tokens, pad)
        notes["hf_vs_ref"] = check_hf(ref, hf, pad, n_layers)
        hf_entry = save_hf(hf, out, f"{name}/{case}")
    if pad is not None:
        notes["padded_vs_alone"] = check_rows_alone(rm, tokens, pad, ref["logits"])
    print(f"  {name}/{case}: tokens {list(tokens.shape)} " +
          " ".join(f"{k}={v:.2e}" for k, v in notes.items()))
    return {"name": case, "tokens": tokens.tolist(), "pad": None if pad is None else pad.tolist(),
            "simplify": simplify,
            "ref": {k: save_bin(v, out, f"{name}/{case}/ref/{k}.bin") for k, v in ref.items()},
            "hf": hf_entry}


def make_model(out, name, overrides, single_len, pad_lengths, seed):
    """One model: its checkpoint and its cases (single, padded batch, simplify)."""
    model = build_hf(overrides, seed)
    cfg = write_checkpoint(model, os.path.join(out, name))
    rm = ref_model.RefModel(os.path.join(out, name))
    assert rm.cfg == cfg
    gen = torch.Generator().manual_seed(seed + 1000)
    single, _ = random_tokens(gen, [single_len])
    padded, pad = random_tokens(gen, pad_lengths)
    simple = single[:, :min(single_len, 6)]
    cases = [make_case(out, name, "single", model, rm, single, None, False),
             make_case(out, name, "padded", model, rm, padded, pad, False),
             make_case(out, name, "simplify", model, rm, simple, None, True)]
    return {"name": name, "root": name, "config": cfg, "cases": cases}


def dir_size(path):
    """Bytes under path."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(out, names=None):
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    names = names or list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    assert not unknown, f"unknown models {unknown}; known: {sorted(MODELS)}"
    manifest = {"models": [make_model(out, name, *MODELS[name]) for name in names]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    n = sum(len(m["cases"]) for m in manifest["models"])
    print(f"{out}: {len(manifest['models'])} models, {n} cases, {dir_size(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/model_golden", sys.argv[2:])
