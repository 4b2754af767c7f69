#!/usr/bin/env python3
"""GGUF files of a Hugging Face GPT-2 folder for the llama.cpp peer of bench_perf.py, written by
the llama.cpp converter that llama-cpp-python's sdist vendors (scripts/setup_llama.sh unpacks it).

The converter needs what a `save_pretrained` folder of transformers 5 lacks: `n_ctx` in the
config (written as a copy of `n_positions`) and the tokenizer files `vocab.json`/`merges.txt`,
derived here from tiktoken's gpt2 ranks (the merges in rank order, each token split into the
two parts BPE joins last). It runs in the project's venv (torch, transformers) with the vendored
gguf-py on the path; nothing is installed. Usage:

  llama_gguf.py HF_DIR LLAMA_CPP_DIR OUT_DIR     writes OUT_DIR/model-f32.gguf, model-bf16.gguf
"""
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import gen_token_golden as gold  # noqa: E402

TYPES = ("f32", "bf16")


def byte_chars():
    """GPT-2's printable stand-in for each byte in vocab.json and merges.txt."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def last_merge(token, ranks):
    """The two parts BPE (by rank, leftmost first) joins last when it encodes `token` with the
    ranks below the token's own."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = min(((ranks.get(parts[i] + parts[i + 1], limit), i) for i in range(len(parts) - 1)))
        if best[0] >= limit:
            raise ValueError(f"{token!r}: BPE does not reach it with lower ranks")
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def tokenizer_files(out):
    enc = gold.reference_encoding(gold.offline_tiktoken(), "gpt2")
    ranks = enc._mergeable_ranks
    chars = byte_chars()
    show = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    vocab = {show(tok): r for tok, r in ranks.items()}
    vocab["<|endoftext|>"] = enc.eot_token
    merges = [" ".join(show(p) for p in last_merge(tok, ranks))
              for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(tok) > 1]
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "model_max_length": 1024}, f)


def main():
    hf, llama, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    todo = [t for t in TYPES if not os.path.exists(os.path.join(out, f"model-{t}.gguf"))]
    if not todo:
        return
    folder = os.path.join(out, "hf")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name in os.listdir(hf):
        if name != "config.json":
            os.symlink(os.path.abspath(os.path.join(hf, name)), os.path.join(folder, name))
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    config["n_ctx"] = config["n_positions"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    tokenizer_files(folder)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(llama, "gguf-py"), llama]))
    for t in todo:
        target = os.path.join(out, f"model-{t}.gguf")
        subprocess.run([sys.executable, os.path.join(llama, "convert_hf_to_gguf.py"), folder,
                        "--outtype", t, "--outfile", target + ".part"], check=True, env=env)
        os.replace(target + ".part", target)


if __name__ == "__main__":
    main()
