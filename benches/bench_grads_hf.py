#!/usr/bin/env python3
"""Python half of the gradients benchmark: Hugging Face GPT2LMHeadModel (eager) on the same
checkpoint and 8x128 tokens as benches/bench_grads.c, the unembedding applied at the last
position only (as the C side asks, so neither computes logits it does not need). A forward
pass under inference_mode, and the usual attribution recipe: forward hooks keep every block's mlp.act output, the logit
difference at each row's last position is summed over rows and torch.autograd.grad gives the
gradients at those outputs. Parameters are frozen (requires_grad False), as in the library.
Prints medians (seconds) as JSON; the two cases' repetitions are interleaved.

Usage: bench_grads_hf.py [--ckpt DIR] [--threads N] [--reps N]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_forward_hf as hf  # noqa: E402

B, T = 8, 128


def tokens_like_c(vocab):
    """The C driver's linear congruential tokens, so both sides run the same ids."""
    s, out = 12345, []
    for _ in range(B * T):
        s = (s * 1103515245 + 12345) % 2**32
        out.append(s % vocab)
    return torch.tensor(out).view(B, T)


def last_logits(model, **inputs):
    """The logits of each row's last position, with lm_head applied there only."""
    return model.lm_head(model.transformer(**inputs).last_hidden_state[:, -1])


def forward_fn(model, tokens):
    def run():
        with torch.inference_mode():
            return last_logits(model, input_ids=tokens)
    return run


def backward_fn(model, tokens):
    good, bad, rows = torch.arange(1000, 1000 + B), torch.arange(2000, 2000 + B), torch.arange(B)

    def run():
        kept = []
        hooks = [blk.mlp.act.register_forward_hook(lambda m, i, o: kept.append(o))
                 for blk in model.transformer.h]
        with torch.enable_grad():
            emb = model.transformer.wte(tokens).detach().requires_grad_()
            logits = last_logits(model, inputs_embeds=emb)
            objective = (logits[rows, good] - logits[rows, bad]).sum()
            grads = torch.autograd.grad(objective, kept)
        for h in hooks:
            h.remove()
        assert len(grads) == len(model.transformer.h)
        return grads
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=os.path.join(hf.REPO, "data", "gpt2-small-random"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = hf.create_model(args.ckpt)
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = tokens_like_c(model.lm_head.weight.shape[0])
    fns = {"forward": forward_fn(model, tokens), "forward_backward": backward_fn(model, tokens)}
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(json.dumps({"impl": "python-hf-eager-autograd", "threads": torch.get_num_threads(),
                      **{k: statistics.median(v) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
