#!/usr/bin/env python3
"""Python half of the forward benchmark: Hugging Face GPT2LMHeadModel (eager attention) carrying
the weights of a TDB checkpoint, timed on the CPU so a driver can compare with the Rust side in
the same run and with the same number of threads.

Times (medians after warm-up, seconds; the *_min_s fields hold the fastest rep): model creation
from the TDB files to a ready model (torch.load of every piece, the inverse of spec section 7's
conversion, a model built without random init), and forward passes of 1x128 and 8x128 seeded
random tokens under torch.inference_mode, without and with capturing every block's MLP
post-activation (a forward hook on mlp.act). Checks once that HF's logits equal
scripts/ref_model.py's within 1e-4. Prints one JSON object to stdout.

Usage: bench_forward_hf.py [--ckpt DIR] [--threads N] [--reps N] [--warmup N] [--create-reps N]
"""
import argparse
import json
import os
import statistics
import sys

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import ref_model  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "benches"))
from perf_common import samples  # noqa: E402

SHAPES = {"1x128": (1, 128), "8x128": (8, 128)}
TOL = 1e-4


def hf_config(cfg, n_vocab):
    """The GPT2Config equivalent of a TDB config (untied unembedding, eager attention)."""
    assert cfg["m_attn"] == 1, "HF GPT-2 has no attention width multiplier"
    return GPT2Config(vocab_size=n_vocab, n_positions=cfg["ctx_window"], n_embd=cfg["d_model"],
                      n_layer=cfg["n_layers"], n_head=cfg["n_heads"],
                      n_inner=int(cfg["d_model"] * cfg["m_mlp"]), activation_function="gelu_new",
                      layer_norm_epsilon=1e-5, tie_word_embeddings=False, use_cache=False)


def hf_state_dict(p, n_layers):
    """Inverse of spec section 7: rename back, concatenate q/k/v, transpose to Conv1D [in, out]."""
    sd = {"transformer.wte.weight": p["tok_embed.weight"], "transformer.wpe.weight": p["pos_embed.weight"],
          "transformer.ln_f.weight": p["final_ln.weight"], "transformer.ln_f.bias": p["final_ln.bias"],
          "lm_head.weight": p["unembed.weight"]}
    for i in range(n_layers):
        t, h = f"xf_layers.{i}.", f"transformer.h.{i}."
        qkv = [t + f"attn.{x}_proj" for x in "qkv"]
        sd[h + "attn.c_attn.weight"] = torch.cat([p[k + ".weight"] for k in qkv]).t().contiguous()
        sd[h + "attn.c_attn.bias"] = torch.cat([p[k + ".bias"] for k in qkv])
        for hf, tdb in (("attn.c_proj", "attn.out_proj"), ("mlp.c_fc", "mlp.in_layer"),
                        ("mlp.c_proj", "mlp.out_layer")):
            sd[h + hf + ".weight"] = p[t + tdb + ".weight"].t().contiguous()
            sd[h + hf + ".bias"] = p[t + tdb + ".bias"]
        for ln in ("ln_1", "ln_2"):
            sd[h + ln + ".weight"], sd[h + ln + ".bias"] = p[t + ln + ".weight"], p[t + ln + ".bias"]
    return sd


def create_model(root):
    """From the TDB files to a ready HF model; built on the meta device so nothing is initialized twice."""
    cfg = ref_model.load_config(root)
    params = ref_model.load_params(root, cfg["n_layers"])
    sd = hf_state_dict(params, cfg["n_layers"])
    with torch.device("meta"):
        model = GPT2LMHeadModel._from_config(hf_config(cfg, params["tok_embed.weight"].shape[0]),
                                             attn_implementation="eager")
    model.load_state_dict(sd, strict=True, assign=True)
    n = cfg["ctx_window"]
    for blk in model.transformer.h:  # the causal-mask buffer is not in the state dict
        blk.attn.bias = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
    return model.eval()


def timed(fn, reps, warmup):
    """(median, min) wall time of fn over reps calls after warmup calls; min helps on busy hosts."""
    times = samples(fn, reps, warmup)
    return statistics.median(times), min(times)


def forward_fn(model, tokens, capture):
    """A forward pass, optionally keeping every block's MLP post-activation."""
    def run():
        kept = []
        hooks = [blk.mlp.act.register_forward_hook(lambda m, i, o: kept.append(o))
                 for blk in model.transformer.h] if capture else []
        with torch.inference_mode():
            logits = model(tokens).logits
        for h in hooks:
            h.remove()
        assert not capture or len(kept) == len(model.transformer.h)
        return logits, kept
    return run


def check_against_ref(root, model, tokens):
    """HF with the converted weights equals the reference forward pass (conversion sanity)."""
    with torch.inference_mode():
        hf = model(tokens).logits
    ref = ref_model.RefModel(root).forward(tokens)["logits"]
    diff = (hf - ref).abs().max().item()
    assert diff <= TOL, f"HF vs ref_model logits differ by {diff}"
    return diff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=os.path.join(REPO, "data", "gpt2-small-random"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--create-reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    create_s, create_min = timed(lambda: create_model(args.ckpt), args.create_reps, 1)
    model = create_model(args.ckpt)
    n_vocab = model.lm_head.weight.shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    inputs = {k: torch.randint(0, n_vocab, s, generator=gen) for k, s in SHAPES.items()}
    out = {"impl": "python-hf-eager", "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": torch.get_num_threads(), "reps": args.reps, "warmup": args.warmup,
           "create_reps": args.create_reps, "checkpoint": args.ckpt,
           "create_s": create_s, "create_min_s": create_min,
           "forward_s": {}, "forward_capture_s": {}, "capture_overhead": {},
           "forward_min_s": {}, "forward_capture_min_s": {}}
    for k, tokens in inputs.items():
        out["forward_s"][k], out["forward_min_s"][k] = timed(
            forward_fn(model, tokens, False), args.reps, args.warmup)
        out["forward_capture_s"][k], out["forward_capture_min_s"][k] = timed(
            forward_fn(model, tokens, True), args.reps, args.warmup)
        out["capture_overhead"][k] = out["forward_capture_s"][k] / out["forward_s"][k] - 1
    out["check"] = {"logits_max_abs_diff_vs_ref_1x128": check_against_ref(args.ckpt, model, inputs["1x128"]),
                    "tol": TOL}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
