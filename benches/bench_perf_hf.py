#!/usr/bin/env python3
"""Hugging Face half of bench_perf.py: GPT2LMHeadModel with one attention implementation and
dtype, the same rows as bench_perf.c (forward passes with logits at every position and, through
`logits_to_keep=1`, at the last one; greedy `generate` of 128 tokens with its cache after a
32-token prompt). Prints one JSON object of medians in seconds.

  bench_perf_hf.py HF_DIR eager|sdpa f32|bf16 THREADS REPS
"""
import json
import sys

import torch
from transformers import GPT2LMHeadModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from perf_common import NEW_TOKENS, PROMPT, SHAPES, seeded, timed  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def main():
    folder, attn, dtype, threads, reps = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation=attn, dtype=DTYPES[dtype]).eval()
    ids = torch.tensor(seeded(8 * 128), dtype=torch.long)
    out = {"impl": f"hf-{attn}", "dtype": dtype}
    with torch.inference_mode():
        for b, t in SHAPES:
            x = ids[: b * t].view(b, t)
            out[f"{b}x{t}_all"] = timed(lambda: model(x).logits, int(reps))
            out[f"{b}x{t}_last"] = timed(lambda: model(x, logits_to_keep=1).logits, int(reps))
        prompt = ids[:PROMPT].view(1, PROMPT)
        gen = lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,  # noqa: E731
                                     max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)
        out["generate"] = timed(gen, int(reps))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
