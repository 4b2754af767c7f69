#!/usr/bin/env python3
"""Golden data for backward passes: the seeded random GPT-2s of gen_model_golden.py, each
objective computed on ref_model.py's forward pass (with edits applied by differentiable torch
indexing) and differentiated by torch.autograd from the embeddings (or the start residual)
to every layer's mlp.post_act, attn.qk_probs, attn.v_out and resid.post_attn. A central
finite-difference check of each objective on the reference, in float32, comes first.

Usage: gen_grad_golden.py OUT_DIR
Writes OUT_DIR/<model>/{model_pieces/, config.json}, OUT_DIR/<model>/<input>.<case>/*.bin
(raw little-endian float32, C-contiguous) and OUT_DIR/manifest.json.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_golden as gmg  # noqa: E402
import ref_model  # noqa: E402

GRAD_LOCATIONS = ("mlp.post_act", "attn.qk_probs", "attn.v_out", "resid.post_attn")
FD_STEP = 1e-2  # central differences in float32
FD_TOL = (2e-3, 2e-2)  # |fd - autograd| <= abs + rel * |autograd|


def edit_key(e):
    return e["location"] if e["layer"] is None else f"{e['location']}.{e['layer']}"


def apply_edit(t, e):
    """One edit on a [B, ...] tensor, differentiable: outer-product indexing on a clone."""
    axes = [torch.arange(n) if i >= len(e["selection"]) or e["selection"][i] is None
            else torch.tensor(e["selection"][i]) for i, n in enumerate(t.shape)]
    ix = tuple(a.reshape([-1 if j == i else 1 for j in range(t.dim())]) for i, a in enumerate(axes))
    out = t.clone()
    sub = t[ix]
    if e["op"] == "set":
        out[ix] = torch.full_like(sub, e["value"])
    elif e["op"] == "scale":
        out[ix] = sub * e["value"]
    elif e["op"] == "add":
        out[ix] = sub + torch.from_numpy(e["operand_value"])
    else:
        raise AssertionError(e["op"])
    return out


def lengths_of(pad, b, t):
    return [t] * b if pad is None else [int((~pad[r]).sum()) for r in range(b)]


def objective_value(obj, acts, lengths):
    """Each row's objective [B] from the reference's activations (positions resolved)."""
    b = len(lengths)
    pos = [lengths[r] - 1 if p == -1 else p for r, p in enumerate(obj.get("positions", [-1] * b))]
    rows = torch.arange(b)
    kind = obj["kind"]
    if kind in ("logit", "logit_diff"):
        picked = acts["logits"][rows, pos]
        v = picked[rows, obj["tokens"]]
        return v - picked[rows, obj["others"]] if kind == "logit_diff" else v
    if kind == "log_prob":
        lp = torch.log_softmax(acts["logits"].float(), dim=-1)
        total = []
        for r in range(b):
            terms = [lp[r, p, obj["targets"][r][p]] for p in range(lengths[r]) if obj["targets"][r][p] != -1]
            total.append(torch.stack(terms).mean())
        return torch.stack(total)
    act = acts[edit_key(obj)][rows, pos]
    direction = torch.from_numpy(obj["direction_value"]).expand(act.shape)
    return (act * direction).reshape(b, -1).sum(dim=1)


def reference(rm, tokens, pad, edits, obj, grad_keys, start=None, bump=None):
    """(objective [B], {key: grad}, logits) on the reference; `bump=(key, index, h)` adds h
    to one element where `key` is produced (for finite differences)."""
    saved = {}

    def tap(key, t):
        for e in edits:
            if edit_key(e) == key:
                t = apply_edit(t, e)
        if bump is not None and bump[0] == key:
            t = t.clone()
            t[bump[1]] += bump[2]
        saved[key] = t
        return t

    b, t = tokens.shape
    with torch.enable_grad():
        if start is None:
            pos = ref_model.positions(pad, b, t)
            x = rm.params["tok_embed.weight"][tokens] + rm.params["pos_embed.weight"][pos]
            root = (0, x.detach().requires_grad_())
        else:
            root = (start[0], torch.from_numpy(start[1]).clone().requires_grad_())
        acts = ref_model.run(rm.params, rm.cfg, tokens, pad, tap, start=root)
        value = objective_value(obj, acts, lengths_of(pad, b, t))
        keys = list(grad_keys)
        grads = torch.autograd.grad(value.sum(), [saved[k] for k in keys],
                                    allow_unused=True) if keys else []
    grads = {k: torch.zeros_like(saved[k]) if g is None else g for k, g in zip(keys, grads)}
    return value.detach(), grads, acts["logits"].detach()


def next_targets(tokens, lengths):
    t = tokens.shape[1]
    return [[int(tokens[r, p + 1]) if p + 1 < n else -1 for p in range(t)] for r, n in enumerate(lengths)]


def objectives(cfg, tokens, pad, gen):
    """(case name, objective, edits, start layer or None) covering every objective kind."""
    b, t = tokens.shape
    d, n_layers, n_vocab = cfg["d_model"], cfg["n_layers"], 50257
    d_ff = int(d * cfg["m_mlp"])
    lengths = lengths_of(pad, b, t)

    def ids():
        return torch.randint(0, n_vocab, (b,), generator=gen).tolist()
    mixed = [-1 if r % 2 == 0 else max(0, lengths[r] - 2) for r in range(b)]
    caller = next_targets(tokens, lengths)
    for r in range(b):  # some positions without a target, some other targets
        caller[r][0] = -1 if lengths[r] > 2 else caller[r][0]
        if lengths[r] > 1:
            caller[r][lengths[r] - 1] = int(torch.randint(0, n_vocab, (1,), generator=gen))
    neuron = np.zeros([d_ff], np.float32)
    neuron[5 % d_ff] = 1.0
    per_row = (torch.randn([b, d], generator=gen)).numpy().astype(np.float32)
    steer = (0.5 * torch.randn([d], generator=gen)).numpy().astype(np.float32)
    edits = [{"location": "mlp.post_act", "layer": 0, "selection": [None, None, [1, 2]], "op": "set",
              "value": 0.0, "operand_value": None},
             {"location": "resid.post_mlp", "layer": 0, "selection": [], "op": "add", "value": 0.0,
              "operand_value": steer},
             {"location": "attn.qk_probs", "layer": n_layers - 1, "selection": [None, None, [0]],
              "op": "scale", "value": 0.5, "operand_value": None}]
    return [
        ("logit", {"kind": "logit", "tokens": ids(), "positions": mixed}, [], None),
        ("logit_diff", {"kind": "logit_diff", "tokens": ids(), "others": ids()}, [], None),
        ("log_prob", {"kind": "log_prob", "targets": next_targets(tokens, lengths), "default": True}, [], None),
        ("log_prob_targets", {"kind": "log_prob", "targets": caller, "default": False}, [], None),
        ("neuron", {"kind": "direction", "location": "mlp.post_act", "layer": 0,
                    "direction_value": neuron}, [], None),
        ("residual_direction", {"kind": "direction", "location": "resid.post_attn", "layer": n_layers - 1,
                                "positions": mixed, "direction_value": per_row}, [], None),
        ("edited_logit_diff", {"kind": "logit_diff", "tokens": ids(), "others": ids()}, edits, None),
        ("start", {"kind": "logit_diff", "tokens": ids(), "others": ids()}, [], n_layers // 2),
    ]


def finite_differences(rm, tokens, pad, obj, gen):
    """Central differences of the objective at six elements of resid.post_attn.0 against
    autograd on the reference, in float32; returns the worst |fd - autograd|."""
    key = "resid.post_attn.0"
    _, grads, _ = reference(rm, tokens, pad, [], obj, [key])
    g = grads[key]
    worst = 0.0
    for _ in range(6):
        index = tuple(int(torch.randint(0, n, (1,), generator=gen)) for n in g.shape)
        hi = reference(rm, tokens, pad, [], obj, [], bump=(key, index, FD_STEP))[0].sum()
        lo = reference(rm, tokens, pad, [], obj, [], bump=(key, index, -FD_STEP))[0].sum()
        fd = float((hi - lo) / (2 * FD_STEP))
        err = abs(fd - float(g[index]))
        assert err <= FD_TOL[0] + FD_TOL[1] * abs(float(g[index])), \
            f"finite differences {obj['kind']} at {index}: fd {fd} vs autograd {float(g[index])}"
        worst = max(worst, err)
    return worst


def save(out, rel, arr):
    return gmg.save_bin(torch.as_tensor(np.ascontiguousarray(arr)).float(), out, rel)


def make_case(out, base, rm, tokens, pad, case, obj, edits, start_layer, gen):
    cfg = rm.cfg
    start = None
    run_layers = range(cfg["n_layers"])
    grad_keys = []
    if start_layer is not None:
        clean = rm.forward(tokens, pad)[ref_model.start_key(start_layer)]
        noise = 0.1 * torch.randn(clean.shape, generator=gen)
        start = (start_layer, (clean + noise).numpy().astype(np.float32))
        run_layers = range(start_layer, cfg["n_layers"])
        grad_keys.append(ref_model.start_key(start_layer))
    grad_keys += [f"{loc}.{layer}" for layer in run_layers for loc in GRAD_LOCATIONS]
    value, grads, logits = reference(rm, tokens, pad, edits, obj, grad_keys, start)
    entry = {"name": case, "tokens": tokens.tolist(), "pad": None if pad is None else pad.tolist(),
             "objective": {k: v for k, v in obj.items() if not k.endswith("_value")},
             "edits": [], "logits": save(out, f"{base}/logits.bin", logits),
             "value": value.tolist(), "grads": {}}
    if "direction_value" in obj:
        entry["objective"]["direction"] = save(out, f"{base}/direction.bin", obj["direction_value"])
    for i, e in enumerate(edits):
        spec = {k: v for k, v in e.items() if k != "operand_value"}
        if e["operand_value"] is not None:
            spec["operand"] = save(out, f"{base}/operand.{i}.bin", e["operand_value"])
        entry["edits"].append(spec)
    if start is not None:
        entry["start"] = {"layer": start_layer, "resid": save(out, f"{base}/start.bin", start[1])}
    for k, g in grads.items():
        entry["grads"][k] = save(out, f"{base}/grad.{k}.bin", g)
    nonzero = sum(bool(g.abs().max() > 0) for g in grads.values())
    print(f"  {base}: objective {[round(v, 3) for v in value.tolist()]}, {nonzero}/{len(grads)} "
          f"gradients non-zero")
    return entry


def make_model(out, name, overrides, single_len, pad_lengths, seed):
    model = gmg.build_hf(overrides, seed)
    gmg.write_checkpoint(model, os.path.join(out, name))
    rm = ref_model.RefModel(os.path.join(out, name))
    gen = torch.Generator().manual_seed(seed + 3000)
    single, _ = gmg.random_tokens(gen, [single_len])
    # Every row has two tokens or more, so each has a next-token target.
    padded, pad = gmg.random_tokens(gen, [max(2, n) for n in pad_lengths])
    fd = None
    if name == next(iter(gmg.MODELS)):
        fd = {c: finite_differences(rm, single, None, o, gen)
              for c, o, e, s in objectives(rm.cfg, single, None, gen) if not e and s is None}
        print(f"  {name}: finite differences (step {FD_STEP}) worst " +
              " ".join(f"{c}={v:.1e}" for c, v in fd.items()))
    cases = []
    for inp, tokens, p in (("single", single, None), ("padded", padded, pad)):
        for case, obj, edits, start in objectives(rm.cfg, tokens, p, gen):
            entry = make_case(out, f"{name}/{inp}.{case}", rm, tokens, p, case, obj, edits, start, gen)
            entry["input"] = inp
            cases.append(entry)
    return {"name": name, "root": name, "finite_differences": fd, "cases": cases}


def main(out):
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    manifest = {"fd_step": FD_STEP, "fd_tol": FD_TOL, "grad_locations": GRAD_LOCATIONS,
                "models": [make_model(out, n, *spec) for n, spec in gmg.MODELS.items()]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    n = sum(len(m["cases"]) for m in manifest["models"])
    print(f"{out}: {len(manifest['models'])} models, {n} cases, {gmg.dir_size(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/grad_golden")
