"""Seed corpora for the fuzz targets, from the files the project's generators made with the
real writers (torch.save, the safetensors package, the tokenizer corpus) under data/.

Usage: python fuzz/seeds.py DATA_DIR OUT_DIR   (writes OUT_DIR/<target>/*; run by scripts/fuzz.sh)
Needs data/ made by scripts/data.sh (demo, golden, tokens; hf when present) and the venv (torch,
safetensors).
"""
import hashlib
import warnings
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

MAX_SEED = 128 << 10  # the -max_len scripts/fuzz.sh gives libFuzzer


def put(out: Path, data: bytes):
    out.mkdir(parents=True, exist_ok=True)
    if len(data) <= MAX_SEED:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    warnings.filterwarnings("ignore")  # torch.load on protocol 4/5 golden files
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    pt_files = sorted(data.glob("pt_golden/*.pt")) + sorted(data.glob("demo/model_pieces/*.pt"))
    assert pt_files, f"no .pt files under {data}: run scripts/data.sh demo golden"
    for f in pt_files:
        put(out / "pt_reader", f.read_bytes())

    # safetensors: the small demo pieces and golden tensors, one per file and together, as the
    # safetensors package writes them (with and without metadata).
    small = {}
    for f in pt_files:
        if f.stat().st_size > 16 << 10:
            continue
        try:
            t = torch.load(f, weights_only=True)
        except Exception:  # noqa: BLE001 - the hostile golden files
            continue
        if isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float16, torch.bfloat16,
                                                       torch.float64, torch.int64, torch.int32,
                                                       torch.int16, torch.int8, torch.uint8, torch.bool):
            small[f.stem] = t.contiguous()
    for name, t in sorted(small.items()):
        put(out / "safetensors", save_safetensors({name: t}))
    names = sorted(small)
    for i in range(0, len(names), 4):
        group = {n: small[n] for n in names[i:i + 4]}
        put(out / "safetensors", save_safetensors(group, metadata={"format": "pt"}))
    put(out / "safetensors", save_safetensors({}))
    # The Hugging Face golden checkpoints (transformers' save_pretrained), their small tensors
    # with the real names, dtypes and metadata.
    from safetensors import safe_open
    for f in sorted(data.glob("hf_golden/*/hf_safetensors/model.safetensors")):
        with safe_open(f, "pt") as st:
            meta = st.metadata()
            kept = {k: st.get_tensor(k) for k in st.keys() if st.get_slice(k).get_shape() != []
                    and torch.Size(st.get_slice(k).get_shape()).numel() <= 4096}
        names = sorted(kept)
        for i in range(0, len(names), 6):
            put(out / "safetensors", save_safetensors({n: kept[n] for n in names[i:i + 6]}, metadata=meta))

    configs = sorted(data.glob("**/config.json"))
    assert configs, f"no config.json under {data}"
    for f in configs:
        put(out / "config_json", f.read_bytes())
    base = json.loads(configs[0].read_text())
    for variant in ({}, {"m_attn": 0.5, "n_heads": 2}, {"enc": "cl100k_base"}, {"m_mlp": 2.5},
                    {k: v for k, v in base.items() if k != "n_heads"}):
        put(out / "config_json", json.dumps({**base, **variant}).encode())

    texts = json.loads((data / "token_golden" / "texts.json").read_text())
    for i, text in enumerate(texts):
        raw = text.encode("utf-8", "surrogatepass")
        if i % 6 == 0 or len(raw) > 2000:  # a sixth of the corpus and the long texts
            for selector in (0, 1, 2):  # gpt2, cl100k_base, o200k_base
                put(out / "tokenizer", bytes([selector]) + raw[:1024])
    # Inputs that once failed a target (each also has a regression test in its crate).
    for d in sorted((Path(__file__).resolve().parent / "regressions").glob("*")):
        for f in sorted(d.iterdir()):
            put(out / d.name, f.read_bytes())
    for target in ("pt_reader", "safetensors", "config_json", "tokenizer"):
        print(f"seeds: {target}: {len(list((out / target).iterdir()))} files")


if __name__ == "__main__":
    main()
