#!/usr/bin/env python3
"""llama.cpp half of bench_perf.py, run in the venv of scripts/setup_llama.sh: llama.cpp's own C
API through llama-cpp-python's ctypes bindings (llama_decode on a llama_batch, as a C program
drives it; no Python-side copies of the logits), on a GGUF written by llama_gguf.py. Rows as in
bench_perf.c: prompt processing of 1x128, 8x128 (eight sequences in one batch) and 1x1024 with
logits at every position and at the last one, and greedy generation of 128 tokens after a
32-token prompt. Before timing, checks its float32 logits of the 1x128 prompt against the C API's.
Prints one JSON object of medians in seconds. With MC_BENCH_ONLY=ROW (as bench_perf.c), only that
row runs.

  bench_perf_llama.py MODEL.gguf f32|bf16 THREADS REPS [C_API_LOGITS_FILE]
"""
import json
import os
import sys

import llama_cpp as L
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import NEW_TOKENS, PROMPT, SHAPES, seeded, timed  # noqa: E402

# KV cache in the weights' precision for float32 (llama.cpp's default is float16, which alone
# moves logits by ~1e-3); the default float16 cache for bfloat16 weights.
KV_TYPE = {"f32": L.GGML_TYPE_F32, "bf16": L.GGML_TYPE_F16}


class Runner:
    """One llama.cpp context sized for `batch` sequences of `seq_len` tokens, in one ubatch."""

    def __init__(self, model, dtype, threads, batch, seq_len):
        p = L.llama_context_default_params()
        p.n_ctx = p.n_batch = p.n_ubatch = batch * seq_len
        p.n_seq_max = batch
        p.n_threads = p.n_threads_batch = threads
        p.type_k = p.type_v = KV_TYPE[dtype]
        p.no_perf = True
        self.ctx = L.llama_init_from_model(model, p)
        if not self.ctx:
            raise SystemExit(f"llama_init_from_model failed for {batch}x{seq_len}")
        self.batch = L.llama_batch_init(batch * seq_len, 0, 1)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

    def decode(self, rows, start, logits_all):
        """Appends each row's tokens (row r is sequence r, positions start..) and decodes."""
        b = self.batch
        i = 0
        for seq, row in enumerate(rows):
            for j, tok in enumerate(row):
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, start + j, 1
                b.seq_id[i][0] = seq
                b.logits[i] = logits_all or j == len(row) - 1
                i += 1
        b.n_tokens = i
        if L.llama_decode(self.ctx, b) != 0:
            raise SystemExit("llama_decode failed")

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def logits(self, n):
        ptr = L.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))

    def prompt(self, rows, logits_all):
        self.clear()
        self.decode(rows, 0, logits_all)

    def generate(self, prompt):
        self.clear()
        self.decode([prompt], 0, False)
        for k in range(NEW_TOKENS):
            tok = int(np.argmax(self.logits(1)[0]))
            self.decode([[tok]], len(prompt) + k, False)

    def close(self):
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)


def main():
    path, dtype, threads, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), mp)
    if not model:
        raise SystemExit(f"cannot load {path}")
    ids = seeded(8 * 128)
    out = {"impl": "llama.cpp", "dtype": dtype}
    if len(sys.argv) > 5:
        r = Runner(model, dtype, threads, 1, 128)
        r.prompt([ids[:128]], True)
        ours = np.fromfile(sys.argv[5], dtype=np.float32).reshape(128, -1)
        theirs = r.logits(128)
        out["check_max_abs_diff"] = float(np.abs(ours - theirs).max())
        out["check_logit_scale"] = float(np.abs(ours).max())
        out["check_top1_agree"] = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
        r.close()
    only = os.environ.get("MC_BENCH_ONLY")
    for b, t in SHAPES:
        names = [n for n in ("all", "last") if only in (None, f"{b}x{t}_{n}")]
        if not names:
            continue
        r = Runner(model, dtype, threads, b, t)
        rows = [ids[k * t:(k + 1) * t] for k in range(b)]
        for name in names:
            out[f"{b}x{t}_{name}"] = timed(lambda: r.prompt(rows, name == "all"), reps)
        r.close()
    if only in (None, "generate"):
        r = Runner(model, dtype, threads, 1, PROMPT + NEW_TOKENS)
        out["generate"] = timed(lambda: r.generate(ids[:PROMPT]), reps)
        r.close()
    L.llama_model_free(model)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
