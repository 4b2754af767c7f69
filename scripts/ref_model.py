#!/usr/bin/env python3
"""Reference forward pass of TDB's GPT-2 style transformer in plain Python torch, written from
spec section 6, returning every activation location of the spec's table.

It checks the Rust forward pass on activations Hugging Face does not expose (q, k, v, qk logits,
MLP pre/post activations, layer-norm scales). Keys of the returned dict: "<location>" for the
model-wide locations, "<location>.<layer>" for per-layer ones; tensors are [B, ...per-sequence].

Usage as a module: RefModel(root).forward(tokens, pad=None, simplify=False, edit=None).
`edit(key, tensor) -> tensor`, when given, is called where each activation is produced (the
tensor in its recorded layout, [B, ...]) and its result is what everything downstream sees:
attn.qk_logits before the causal and padding masks (applied again after it), attn.qk_probs
after the softmax (not renormalised), a layer-norm scale before the division.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

CONFIG_DEFAULTS = {"enc": "gpt2", "ctx_window": 1024, "d_model": 256, "n_layers": 2,
                   "m_attn": 1.0, "n_heads": 8, "m_mlp": 4.0}
MODEL_WIDE = ("resid.post_emb", "resid.ln_f.scale", "resid.post_ln_f", "logits")
PER_LAYER = ("resid.delta_attn", "resid.post_attn", "resid.delta_mlp", "resid.post_mlp",
             "attn_ln.scale", "mlp_ln.scale", "resid.post_attn_ln", "resid.post_mlp_ln",
             "attn.q", "attn.k", "attn.v", "attn.qk_logits", "attn.qk_probs", "attn.v_out",
             "mlp.pre_act", "mlp.post_act")
LAYER_PIECES = ("ln_1.weight", "ln_1.bias", "attn.q_proj.weight", "attn.q_proj.bias",
                "attn.k_proj.weight", "attn.k_proj.bias", "attn.v_proj.weight", "attn.v_proj.bias",
                "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
                "mlp.in_layer.weight", "mlp.in_layer.bias", "mlp.out_layer.weight", "mlp.out_layer.bias")


def load_config(root):
    """The seven config keys with their spec defaults filled in."""
    with open(os.path.join(root, "config.json")) as f:
        cfg = json.load(f)
    unknown = set(cfg) - set(CONFIG_DEFAULTS)
    assert not unknown, f"unknown config keys {sorted(unknown)}"
    return {**CONFIG_DEFAULTS, **cfg}


def piece_names(n_layers):
    """Every state-dict key of spec section 1, in a stable order."""
    names = ["tok_embed.weight", "pos_embed.weight"]
    for i in range(n_layers):
        names += [f"xf_layers.{i}.{p}" for p in LAYER_PIECES]
    return names + ["final_ln.weight", "final_ln.bias", "unembed.weight"]


def load_params(root, n_layers):
    """Every piece as float32 (computation is float32 in the reference)."""
    pieces = os.path.join(root, "model_pieces")
    return {name: torch.load(os.path.join(pieces, name + ".pt"), map_location="cpu",
                             weights_only=True).float()
            for name in piece_names(n_layers)}


def fold_ln(params, ln, linears):
    """Folds one LayerNorm's gain and bias into the linears that read it (TDB's simplify)."""
    g, beta = params[ln + ".weight"], params[ln + ".bias"]
    for lin in linears:
        w, b = params[lin + ".weight"], params[lin + ".bias"]
        params[lin + ".weight"] = w * g[None, :]
        params[lin + ".bias"] = b + w @ beta
    params[ln + ".weight"] = torch.ones_like(g)
    params[ln + ".bias"] = torch.zeros_like(beta)


def simplified(params, n_layers):
    """A copy of the parameters with ln_1 and ln_2 folded; final_ln is left as it is."""
    out = dict(params)
    for i in range(n_layers):
        p = f"xf_layers.{i}."
        fold_ln(out, p + "ln_1", [p + "attn.q_proj", p + "attn.k_proj", p + "attn.v_proj"])
        fold_ln(out, p + "ln_2", [p + "mlp.in_layer"])
    return out


def no_edit(_key, t):
    return t


def layer_norm(x, weight, bias, edit=no_edit, key=None):
    """TDB's Norm in float32; returns (output, scale [.., 1]); `edit` sees the scale as `key`."""
    x = x.float()
    x = x - x.mean(dim=-1, keepdim=True)
    scale = edit(key, torch.sqrt((x * x).mean(dim=-1, keepdim=True) + 1e-5))
    return (x / scale) * weight + bias, scale


def gelu_tanh(x):
    """GELU with the tanh approximation (TDB's and GPT-2's)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def positions(pad, batch, seq):
    """Position ids: arange without a pad mask, else cumsum(!pad) - 1 clamped at 0."""
    if pad is None:
        return torch.arange(seq).expand(batch, seq)
    return ((~pad).long().cumsum(dim=1) - 1).clamp(min=0)


def attention(x, params, prefix, cfg, pad, acts, layer, edit=no_edit):
    """Multi-head causal self-attention recording q, k, v, logits, probs and v_out."""
    b, t, _ = x.shape
    h = cfg["n_heads"]
    d_head = int(cfg["d_model"] * cfg["m_attn"]) // h
    qk_scale = d_head ** -0.25

    def proj(name):
        return F.linear(x, params[f"{prefix}{name}.weight"], params[f"{prefix}{name}.bias"])

    q = edit(f"attn.q.{layer}", proj("q_proj").reshape(b, t, h, d_head) * qk_scale)
    k = edit(f"attn.k.{layer}", proj("k_proj").reshape(b, t, h, d_head) * qk_scale)
    v = edit(f"attn.v.{layer}", proj("v_proj").reshape(b, t, h, d_head))
    logits = edit(f"attn.qk_logits.{layer}", torch.einsum("bqhd,bkhd->bqkh", q, k))
    masked = ~torch.ones(t, t, dtype=torch.bool).tril()[None, :, :]
    if pad is not None and bool(pad.any()):
        masked = masked | (pad[:, :, None] ^ pad[:, None, :])
    logits = logits.masked_fill(masked[..., None], float("-inf"))
    probs = edit(f"attn.qk_probs.{layer}", torch.softmax(logits.float(), dim=2))
    v_out = edit(f"attn.v_out.{layer}", torch.einsum("bqkh,bkhd->bqhd", probs, v))
    for name, val in (("q", q), ("k", k), ("v", v), ("qk_logits", logits), ("qk_probs", probs),
                      ("v_out", v_out)):
        acts[f"attn.{name}.{layer}"] = val
    return F.linear(v_out.reshape(b, t, h * d_head), params[prefix + "out_proj.weight"],
                    params[prefix + "out_proj.bias"])


def mlp(x, params, prefix, acts, layer, edit=no_edit):
    """in_layer -> tanh GELU -> out_layer, recording pre and post activations."""
    pre = edit(f"mlp.pre_act.{layer}",
               F.linear(x, params[prefix + "in_layer.weight"], params[prefix + "in_layer.bias"]))
    post = edit(f"mlp.post_act.{layer}", gelu_tanh(pre))
    acts[f"mlp.pre_act.{layer}"] = pre
    acts[f"mlp.post_act.{layer}"] = post
    return F.linear(post, params[prefix + "out_layer.weight"], params[prefix + "out_layer.bias"])


def block(x, params, cfg, pad, acts, i, edit=no_edit):
    """One pre-LN transformer block, recording the residual stream around it."""
    p = f"xf_layers.{i}."
    ln_x, acts[f"attn_ln.scale.{i}"] = layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"],
                                                  edit, f"attn_ln.scale.{i}")
    ln_x = acts[f"resid.post_attn_ln.{i}"] = edit(f"resid.post_attn_ln.{i}", ln_x)
    delta = acts[f"resid.delta_attn.{i}"] = edit(f"resid.delta_attn.{i}",
                                                 attention(ln_x, params, p + "attn.", cfg, pad, acts, i, edit))
    x = acts[f"resid.post_attn.{i}"] = edit(f"resid.post_attn.{i}", x + delta)
    ln_x, acts[f"mlp_ln.scale.{i}"] = layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"],
                                                 edit, f"mlp_ln.scale.{i}")
    ln_x = acts[f"resid.post_mlp_ln.{i}"] = edit(f"resid.post_mlp_ln.{i}", ln_x)
    delta = acts[f"resid.delta_mlp.{i}"] = edit(f"resid.delta_mlp.{i}", mlp(ln_x, params, p + "mlp.", acts, i, edit))
    x = acts[f"resid.post_mlp.{i}"] = edit(f"resid.post_mlp.{i}", x + delta)
    return x


def start_key(layer):
    """The activation a residual stream entering `layer` stands for."""
    return "resid.post_emb" if layer == 0 else f"resid.post_mlp.{layer - 1}"


def run(params, cfg, tokens, pad, edit=no_edit, start=None):
    """The whole forward pass; every activation in a dict (see the module docstring).
    `start=(layer, resid)` enters `resid` [B, T, d_model] at `layer` instead of the embeddings."""
    b, t = tokens.shape
    acts = {}
    pos = positions(pad, b, t)
    assert int(pos.max()) < cfg["ctx_window"], "sequence longer than ctx_window"
    first = 0 if start is None else start[0]
    if start is None:
        x = params["tok_embed.weight"][tokens] + params["pos_embed.weight"][pos]
    else:
        x = start[1]
    x = acts[start_key(first)] = edit(start_key(first), x)
    for i in range(first, cfg["n_layers"]):
        x = block(x, params, cfg, pad, acts, i, edit)
    gain = params["final_ln.weight"].expand(cfg["d_model"])
    x, acts["resid.ln_f.scale"] = layer_norm(x, gain, params["final_ln.bias"], edit, "resid.ln_f.scale")
    x = acts["resid.post_ln_f"] = edit("resid.post_ln_f", x)
    acts["logits"] = F.linear(x, params["unembed.weight"])
    return acts


class RefModel:
    """A TDB checkpoint folder loaded once, with its simplified parameters made on demand."""

    def __init__(self, root):
        self.cfg = load_config(root)
        self.params = load_params(root, self.cfg["n_layers"])
        self._simple = None

    def forward(self, tokens, pad=None, simplify=False, edit=None):
        """All 20 activation locations for tokens [B, T] (pad True at padding positions)."""
        if simplify and self._simple is None:
            self._simple = simplified(self.params, self.cfg["n_layers"])
        params = self._simple if simplify else self.params
        with torch.no_grad():
            return run(params, self.cfg, tokens.long(), None if pad is None else pad.bool(),
                       edit or no_edit)


def forward(root, tokens, pad=None, simplify=False):
    """One-shot convenience: load root and run the forward pass."""
    return RefModel(root).forward(tokens, pad, simplify)
