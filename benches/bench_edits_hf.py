#!/usr/bin/env python3
"""Python half of the edits benchmark: Hugging Face GPT2LMHeadModel (eager) with the same ten
edits as benches/bench_edits.c, each as a PyTorch hook (forward hooks on mlp.act for the neuron
ablations, pre-hooks on attn.c_proj for the head ablations, a block forward hook for the
steering vector, and an attention forward hook writing patch - block input for the patch of
resid.post_attn). 8x128 seeded random tokens under torch.inference_mode; prints medians as JSON.

Usage: bench_edits_hf.py [--ckpt DIR] [--threads N] [--reps N]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_forward_hf as hf  # noqa: E402

B, T, D = 8, 128, 768


def hooks(model):
    """Registers the ten edits; returns the handles."""
    h = model.transformer.h
    steer = torch.tensor([((i % 7) - 3) * 0.1 for i in range(D)], dtype=torch.float32)
    patch = torch.tensor([((i % 13) - 6) * 0.05 for i in range(T * D)], dtype=torch.float32).view(1, T, D)
    handles = []
    for layer, neuron in enumerate((100, 200, 300, 400, 500)):
        def ablate(_m, _i, out, n=neuron):
            out = out.clone()
            out[:, :, n] = 0
            return out
        handles.append(h[layer].mlp.act.register_forward_hook(ablate))
    for layer in (5, 6, 7):
        def head(_m, args):
            x = args[0].clone()
            x.view(B, T, -1, 64)[:, :, 3] = 0
            return (x,) + tuple(args[1:])
        handles.append(h[layer].attn.c_proj.register_forward_pre_hook(head))

    def steer_hook(_m, _i, out):
        first = out[0] if isinstance(out, tuple) else out
        first = first + steer
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first
    handles.append(h[8].register_forward_hook(steer_hook))
    block_in = {}
    handles.append(h[9].register_forward_pre_hook(lambda _m, args: block_in.update(x=args[0])))

    def patch_hook(_m, _i, out):
        return (patch - block_in["x"],) + tuple(out[1:])
    handles.append(h[9].attn.register_forward_hook(patch_hook))
    return handles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=os.path.join(hf.REPO, "data", "gpt2-small-random"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = hf.create_model(args.ckpt)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.lm_head.weight.shape[0], (B, T), generator=gen)
    plain, _ = hf.timed(hf.forward_fn(model, tokens, False), args.reps, 1)
    handles = hooks(model)
    edited, _ = hf.timed(hf.forward_fn(model, tokens, False), args.reps, 1)
    for handle in handles:
        handle.remove()
    print(json.dumps({"impl": "python-hf-eager-hooks", "threads": torch.get_num_threads(),
                      "forward": plain, "forward_edits": edited}))


if __name__ == "__main__":
    main()
