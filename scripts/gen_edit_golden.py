#!/usr/bin/env python3
"""Golden data for edits during a forward pass: the seeded random GPT-2s of gen_model_golden.py,
each edit list applied by ref_model.py's edit callback (numpy fancy indexing, `np.ix_`), and,
where Hugging Face exposes the location, cross-checked against PyTorch hooks on
GPT2LMHeadModel (eager): block outputs (resid.post_mlp), `mlp.act` (mlp.post_act),
`attn.attn_dropout` (attn.qk_probs) and a pre-hook on `attn.c_proj` (attn.v_out).

Usage: gen_edit_golden.py OUT_DIR
Writes OUT_DIR/<model>/{model_pieces/, config.json}, OUT_DIR/<model>/<case>/{operand.N.bin,
logits.bin, act.<key>.bin} and OUT_DIR/manifest.json (raw little-endian float32, C-contiguous).
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_golden as gmg  # noqa: E402
import ref_model  # noqa: E402

TOL_HF = 1e-4  # reference with edits vs Hugging Face with the same edits as hooks


def edit_key(e):
    return e["location"] if e["layer"] is None else f"{e['location']}.{e['layer']}"


def apply_edit(t, e):
    """One edit on a [B, ...] tensor with numpy's outer-product indexing."""
    a = t.detach().float().numpy().copy()
    axes = tuple(np.arange(n) if i >= len(e["selection"]) or e["selection"][i] is None
                 else np.array(e["selection"][i]) for i, n in enumerate(a.shape))
    ix = np.ix_(*axes)
    sub = a[ix]
    op = e["op"]
    if op == "set":
        new = np.full_like(sub, e["value"])
    elif op == "scale":
        new = sub * np.float32(e["value"])
    elif op == "add":
        new = sub + e["operand_value"]
    elif op == "replace":
        new = np.broadcast_to(e["operand_value"], sub.shape)
    else:
        raise AssertionError(op)
    a[ix] = new
    return torch.from_numpy(a)


def editor(edits):
    """The ref model's edit callback: every edit at a key, in list order."""
    def edit(key, t):
        for e in edits:
            if edit_key(e) == key:
                t = apply_edit(t, e)
        return t
    return edit


def hf_hooks(model, edits):
    """Registers each edit as a hook on HF's module; None if some edit has no HF module."""
    h = model.transformer.h
    handles = []

    def forward_hook(e, to_ours, from_ours):
        def hook(_mod, _inp, out):
            first = out[0] if isinstance(out, tuple) else out
            edited = from_ours(apply_edit(to_ours(first), e).to(first.dtype), first)
            return (edited,) + tuple(out[1:]) if isinstance(out, tuple) else edited
        return hook

    ident = (lambda t: t, lambda t, _like: t)
    for e in edits:
        loc, layer = e["location"], e["layer"]
        if loc == "resid.post_mlp":
            handles.append(h[layer].register_forward_hook(forward_hook(e, *ident)))
        elif loc == "mlp.post_act":
            handles.append(h[layer].mlp.act.register_forward_hook(forward_hook(e, *ident)))
        elif loc == "attn.qk_probs":
            handles.append(h[layer].attn.attn_dropout.register_forward_hook(forward_hook(
                e, lambda t: t.permute(0, 2, 3, 1), lambda t, _like: t.permute(0, 3, 1, 2))))
        elif loc == "attn.v_out":
            heads = model.config.n_head

            def pre(_mod, args, e=e, heads=heads):
                x = args[0]
                b, t, w = x.shape
                edited = apply_edit(x.reshape(b, t, heads, w // heads), e).reshape(b, t, w)
                return (edited.to(x.dtype),) + tuple(args[1:])
            handles.append(h[layer].attn.c_proj.register_forward_pre_hook(pre))
        else:
            for handle in handles:
                handle.remove()
            return None
    return handles


def operand(gen, shape, scale=0.5):
    return (scale * torch.randn(shape, generator=gen)).numpy().astype(np.float32)


def cases(cfg, b, t, gen):
    """(name, edits) lists covering every editable location and each operation."""
    d, n_heads, n_layers = cfg["d_model"], cfg["n_heads"], cfg["n_layers"]
    d_ff = int(d * cfg["m_mlp"])
    d_head = d // n_heads
    last, mid = n_layers - 1, n_layers // 2

    def e(loc, layer, sel, op, value=0.0, opnd=None):
        return {"location": loc, "layer": layer, "selection": sel, "op": op, "value": value,
                "operand_value": opnd}
    return [
        ("zero_neuron", [e("mlp.post_act", 0, [None, None, [7 % d_ff, 3]], "set")]),
        ("zero_head", [e("attn.v_out", last, [None, None, [n_heads - 1]], "set")]),
        ("steer", [e("resid.post_mlp", 0, [], "add", opnd=operand(gen, [d]))]),
        ("patch", [e("resid.post_mlp", mid, [], "replace", opnd=operand(gen, [1, t, d], 1.0))]),
        ("probs", [e("attn.qk_probs", 0, [None, [t - 1], [0, min(1, t - 1)]], "scale", 0.5),
                   e("attn.qk_probs", last, [[b - 1], None, [0]], "set", 0.25)]),
        ("row_position", [e("resid.post_attn", 0, [[b - 1], [min(4, t - 1)]], "add",
                            opnd=operand(gen, [d], 2.0))]),
        ("qkv", [e("attn.q", 0, [None, None, [0]], "set", 0.1),
                 e("attn.k", 0, [], "scale", 2.0),
                 e("attn.v", last, [None, [0, t - 1]], "add", opnd=operand(gen, [d_head]))]),
        # A future key (masked again after the edit) and a visible one.
        ("qk_logits", [e("attn.qk_logits", 0, [None, [0], [t - 1]], "add", opnd=np.float32([50.0])),
                       e("attn.qk_logits", 0, [None, [t - 1], [0], None], "add", opnd=np.float32([1.0]))]),
        ("ln_scales", [e("attn_ln.scale", 0, [], "scale", 2.0),
                       e("mlp_ln.scale", last, [None, [0]], "set", 1.0),
                       e("resid.ln_f.scale", None, [], "scale", 0.5)]),
        ("ordered", [e("mlp.pre_act", last, [None, None, [1]], "set", 0.0),
                     e("mlp.pre_act", last, [None, None, [1]], "add", opnd=np.float32([3.0]).reshape([1])),
                     e("mlp.pre_act", last, [None, None, [1, 2]], "scale", -1.0)]),
        ("every_other_location", [
            e("resid.post_emb", None, [None, [0]], "replace", opnd=operand(gen, [d])),
            e("resid.delta_attn", 0, [], "scale", 0.5),
            e("resid.delta_mlp", last, [], "add", opnd=operand(gen, [1, 1, d])),
            e("resid.post_attn_ln", 0, [None, None, [0, 1]], "set", 0.0),
            e("resid.post_mlp_ln", last, [], "scale", 1.5),
            e("resid.post_ln_f", None, [None, [t - 1]], "add", opnd=operand(gen, [d]))]),
    ]


def hf_logits(model, tokens, pad, edits):
    handles = hf_hooks(model, edits)
    if handles is None:
        return None
    try:
        return gmg.hf_outputs(model, tokens, pad)["logits"]
    finally:
        for handle in handles:
            handle.remove()


def save(out, rel, arr):
    return gmg.save_bin(torch.as_tensor(np.ascontiguousarray(arr)), out, rel)


def make_case(out, name, model, rm, inp, tokens, pad, case, edits):
    ref = rm.forward(tokens, pad, edit=editor(edits))
    keep = torch.ones(tokens.shape, dtype=torch.bool) if pad is None else ~pad
    plain = rm.forward(tokens, pad)["logits"]
    note = {"changed": (ref["logits"] - plain)[keep].abs().max().item()}
    hf = hf_logits(model, tokens, pad, edits)
    if hf is not None:
        note["hf_vs_ref"] = gmg.max_diff(hf, ref["logits"], keep)
        assert note["hf_vs_ref"] <= TOL_HF, f"{name}/{inp}/{case}: HF vs reference {note}"
    base = f"{name}/{inp}.{case}"
    spec = []
    for i, e in enumerate(edits):
        entry = {k: v for k, v in e.items() if k != "operand_value"}
        if e["operand_value"] is not None:
            entry["operand"] = save(out, f"{base}/operand.{i}.bin", e["operand_value"])
        spec.append(entry)
    acts = {edit_key(e): gmg.save_bin(ref[edit_key(e)], out, f"{base}/act.{edit_key(e)}.bin")
            for e in edits}
    print(f"  {base}: " + " ".join(f"{k}={v:.2e}" for k, v in note.items()))
    return {"name": case, "input": inp, "tokens": tokens.tolist(),
            "pad": None if pad is None else pad.tolist(), "edits": spec, "hf_checked": hf is not None,
            "logits": gmg.save_bin(ref["logits"], out, f"{base}/logits.bin"), "acts": acts}


def make_model(out, name, overrides, single_len, pad_lengths, seed):
    model = gmg.build_hf(overrides, seed)
    cfg = gmg.write_checkpoint(model, os.path.join(out, name))
    rm = ref_model.RefModel(os.path.join(out, name))
    gen = torch.Generator().manual_seed(seed + 2000)
    single, _ = gmg.random_tokens(gen, [single_len])
    padded, pad = gmg.random_tokens(gen, pad_lengths)
    out_cases = []
    for inp, tokens, p in (("single", single, None), ("padded", padded, pad)):
        for case, edits in cases(cfg, *tokens.shape, gen):
            out_cases.append(make_case(out, name, model, rm, inp, tokens, p, case, edits))
    assert sum(c["hf_checked"] for c in out_cases) >= 10, "too few cases checked against HF"
    return {"name": name, "root": name, "config": cfg, "cases": out_cases}


def main(out):
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    manifest = {"models": [make_model(out, n, *spec) for n, spec in gmg.MODELS.items()]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    n = sum(len(m["cases"]) for m in manifest["models"])
    print(f"{out}: {len(manifest['models'])} models, {n} cases, {gmg.dir_size(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/edit_golden")
