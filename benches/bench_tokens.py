#!/usr/bin/env python3
"""Benchmark of the C API's tokenizer against Python tiktoken, side by side in one run on the
same generated text (about 8 MB: English prose, source code, CJK, emoji and combining marks,
digits, whitespace, a few <|endoftext|>), for r50k_base (= gpt2's ranks), cl100k_base and
o200k_base:

  encode 1 thread   mc_encode of the whole text with MC_TOKENIZER_THREADS=1, against Python's
                    enc.encode(text, allowed_special={"<|endoftext|>"}) (single-threaded)
  encode all cores  mc_encode of the whole text (the library cuts long texts at boundaries
                    the pattern never merges across and encodes the parts on all cores)
  batch             mc_encode_batch of the text as ~2 KB documents, against Python's
                    encode_batch (same allowed_special) and encode_ordinary_batch, both with
                    num_threads = the number of cores
  decode            mc_decode of all ids against Python's decode_bytes
  pathological      1 MB of "a" and 1 MB of spaces through mc_encode; Python on 64 KB, and on
                    1 MB too when 64 KB shows it can finish (tiktoken 0.12's merge is quadratic
                    in the length of one piece: 1 MB would take minutes there)

  scaling           mc_encode_batch and mc_encode with MC_TOKENIZER_THREADS = 1, 2, 4, ... cores

Ids are checked equal to Python's for every encoding before any time is reported. Best of
--reps runs for each. Usage: bench_tokens.py [--mb 8] [--reps 5] [--no-build] [--exe PATH]
(--no-build: use an already built driver, e.g. on a machine without cargo; the library is then
found through the driver's RUNPATH or LD_LIBRARY_PATH).
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import gen_token_golden as gold  # noqa: E402

ENCODINGS = ["r50k_base", "cl100k_base", "o200k_base"]
ALLOWED = {"<|endoftext|>"}


def build(out):
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    lib = os.path.join(REPO, "target", "release")
    subprocess.run(["gcc", "-std=c11", "-O3", "-I", os.path.join(REPO, "include"), "-o", out,
                    os.path.join(REPO, "benches", "bench_tokens.c"), "-L", lib, "-lmodel_context",
                    f"-Wl,-rpath,{lib}"], check=True)


def documents(mb):
    """Seeded ~2 KB documents, mostly English prose, with code and other scripts mixed in."""
    rng = random.Random(1234)
    docs, size = [], 0
    while size < mb * 1e6:
        r = rng.random()
        if r < 0.7:
            d = gold.prose(rng, rng.randint(10, 30))
        elif r < 0.85:
            d = "".join(rng.choice(gold.CODE) for _ in range(4))
        elif r < 0.95:
            d = " ".join(rng.choice(gold.CJK + gold.EMOJI_MARKS) for _ in range(8))
        else:
            d = " ".join(rng.choice(gold.DIGITS + gold.WHITESPACE + gold.LINE_ENDS) for _ in range(10))
        if rng.random() < 0.01:
            d += "<|endoftext|>"
        d += "\n\n"
        docs.append(d)
        size += len(d.encode())
    return docs


def best(f, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def run_c(exe, enc, mode, path, reps, ids_out=None, threads=None):
    env = dict(os.environ)
    if threads:
        env["MC_TOKENIZER_THREADS"] = str(threads)
    args = [exe, enc, mode, path, str(reps)] + ([ids_out] if ids_out else [])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout)


def read_ids(path):
    data = open(path, "rb").read()
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--exe", default=os.path.join(REPO, "target", "bench_tokens"))
    args = ap.parse_args()
    tiktoken = gold.offline_tiktoken()
    cores = os.cpu_count()
    tmp = tempfile.mkdtemp(prefix="bench_tokens_")
    exe = args.exe
    if not args.no_build:
        build(exe)
    docs = documents(args.mb)
    text = "".join(docs)
    raw = text.encode()
    text_path = os.path.join(tmp, "text.bin")
    open(text_path, "wb").write(raw)
    batch_path = os.path.join(tmp, "batch.bin")
    enc_docs = [d.encode() for d in docs]
    with open(batch_path, "wb") as f:
        f.write(struct.pack(f"<Q{len(enc_docs)}Q", len(enc_docs), *map(len, enc_docs)))
        f.write(b"".join(enc_docs))
    print(f"text: {len(raw) / 1e6:.2f} MB in {len(docs)} documents; {cores} cores; "
          f"tiktoken {tiktoken.__version__}; best of {args.reps}")
    rows = []
    for name in ENCODINGS:
        enc = tiktoken.get_encoding(name)
        enc.encode("warm up")
        ids_path = os.path.join(tmp, f"{name}.ids")
        c1 = run_c(exe, name, "encode", text_path, args.reps, ids_path, threads=1)
        want = enc.encode(text, allowed_special=ALLOWED)
        got = read_ids(ids_path)
        assert got == want, f"{name}: mc_encode differs from tiktoken"
        cn = run_c(exe, name, "encode", text_path, args.reps, ids_path)
        assert read_ids(ids_path) == want, f"{name}: parallel mc_encode differs"
        cb = run_c(exe, name, "batch", batch_path, args.reps, ids_path)
        py_batch_ids = enc.encode_batch(docs, num_threads=cores, allowed_special=ALLOWED)
        assert read_ids(ids_path) == [i for d in py_batch_ids for i in d], f"{name}: batch differs"
        cd = run_c(exe, name, "decode", ids_path, args.reps)
        p1, _ = best(lambda: enc.encode(text, allowed_special=ALLOWED), args.reps)
        pb, _ = best(lambda: enc.encode_batch(docs, num_threads=cores, allowed_special=ALLOWED), args.reps)
        pbo, _ = best(lambda: enc.encode_ordinary_batch(docs, num_threads=cores), args.reps)
        pd, _ = best(lambda: enc.decode_bytes(want), args.reps)
        mb = len(raw) / 1e6
        rows.append((name, [
            ("encode, 1 thread vs Python", c1["seconds"], p1),
            (f"encode, {cores} cores vs Python 1 thread", cn["seconds"], p1),
            (f"batch vs encode_batch ({cores} threads)", cb["seconds"], pb),
            (f"batch vs encode_ordinary_batch ({cores} threads)", cb["seconds"], pbo),
            ("decode vs decode_bytes", cd["seconds"], pd),
        ], mb, len(want)))
    print(f"\n| encoding | case | C API MB/s | Python MB/s | ratio |\n|---|---|---:|---:|---:|")
    for name, cases, mb, n in rows:
        for case, c, p in cases:
            print(f"| {name} | {case} | {mb / c:.1f} | {mb / p:.1f} | {p / c:.2f}x |")
    threads = sorted({t for t in (1, 2, 4, 8, 16, 32, 64) if t <= cores} | {cores})
    print(f"\nscaling with threads (MC_TOKENIZER_THREADS), MB/s:")
    print("| encoding | call | " + " | ".join(f"{t} thr" for t in threads) + " |")
    print("|---|---|" + "---:|" * len(threads))
    for name, _, mb, _ in rows:
        for mode, path in (("batch", batch_path), ("encode", text_path)):
            speeds = [mb / run_c(exe, name, mode, path, args.reps, threads=t)["seconds"] for t in threads]
            print(f"| {name} | mc_{mode} | " + " | ".join(f"{s:.0f}" for s in speeds) + " |")
    print("\npathological inputs (one piece each):")
    print("| encoding | input | C API 1 MB (s) | Python 1 MB (s) | C API 64 KB (s) | Python 64 KB (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in ENCODINGS:
        enc = tiktoken.get_encoding(name)
        for label, ch in (("1 MB of 'a'", "a"), ("1 MB of spaces", " ")):
            path = os.path.join(tmp, "patho.bin")
            open(path, "wb").write((ch * 1_000_000).encode())
            c = run_c(exe, name, "encode", path, 1)
            small = ch * 64_000
            t = time.perf_counter()
            py_small = enc.encode(small)
            t = time.perf_counter() - t
            c_small_path = os.path.join(tmp, "patho_small.bin")
            open(c_small_path, "wb").write(small.encode())
            cs = run_c(exe, name, "encode", c_small_path, 1, os.path.join(tmp, "patho_small.ids"))
            assert read_ids(os.path.join(tmp, "patho_small.ids")) == py_small, f"{name} {label} 64 KB"
            if t * 256 < 60:  # even if quadratic, 1 MB ends within a minute
                big = ch * 1_000_000
                t_big = time.perf_counter()
                try:
                    enc.encode(big)
                    py_big = f"{time.perf_counter() - t_big:.3f}"
                except ValueError as e:  # tiktoken's regex engine can give up on long runs
                    py_big = f"raises after {time.perf_counter() - t_big:.3f} s: {str(e)[:60]}"
            else:
                py_big = f"not run (~{t * 256:.0f} if quadratic)"
            print(f"| {name} | {label} | {c['seconds']:.3f} | {py_big} | {cs['seconds']:.4f} | {t:.4f} |")


if __name__ == "__main__":
    main()
