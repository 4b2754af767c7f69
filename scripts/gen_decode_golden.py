#!/usr/bin/env python3
"""Golden data for incremental decoding: Hugging Face `generate(do_sample=False)` with its
key-value cache on the seeded random GPT-2s of gen_model_golden.py, for prompts whose every
greedy step has a top-2 logit margin above 1e-3 (so float rounding cannot flip a token); the
first prompt of each model runs to the end of the context window.

Usage: gen_decode_golden.py OUT_DIR
Writes OUT_DIR/<model>/{model_pieces/, config.json} and OUT_DIR/manifest.json with each
prompt, HF's greedy continuation and the smallest top-2 margin seen.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_golden as gmg  # noqa: E402

MARGIN = 1e-3
MODELS = ("e32_l2_h4", "e24_l3_h3")


def greedy(model, prompt, n_new):
    """HF's greedy continuation with its cache, and the smallest top-2 margin of its steps."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    margins = [float(torch.topk(s[0].float(), 2).values.diff().abs()) for s in out.scores]
    return out.sequences[0, len(prompt):].tolist(), min(margins)


def make_model(out, name, gen):
    overrides = gmg.MODELS[name][0]
    model = gmg.build_hf(overrides, gmg.MODELS[name][3])
    cfg = gmg.write_checkpoint(model, os.path.join(out, name))
    window = cfg["ctx_window"]
    cases = []
    for length, n_new in ((3, window - 3), (5, 8), (1, 6), (7, 4)):
        for _ in range(50):
            prompt = torch.randint(0, gmg.N_VOCAB, (length,), generator=gen).tolist()
            tokens, margin = greedy(model, prompt, n_new)
            if margin > MARGIN:
                break
        else:
            raise AssertionError(f"{name}: no prompt of length {length} without a near-tie")
        cases.append({"prompt": prompt, "greedy": tokens, "min_margin": margin})
        print(f"  {name}: prompt {length} + {n_new} greedy tokens, smallest top-2 margin {margin:.2e}")
    return {"name": name, "root": name, "ctx_window": window, "cases": cases}


def main(out):
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(4000)
    manifest = {"margin": MARGIN, "models": [make_model(out, n, gen) for n in MODELS]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{out}: {len(manifest['models'])} models, {gmg.dir_size(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/decode_golden")
