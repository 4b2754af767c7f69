#!/usr/bin/env python3
"""Time the Rust .pt reader against torch.load on a GPT-2-small-shaped checkpoint.

Usage: bench_reader.py [--ckpt DIR] [--reps N]

Creates the checkpoint if absent (scripts/make_checkpoint.py --preset gpt2-small-random), builds
crates/formats/examples/read_sum.rs in release mode (CARGO_TARGET_DIR=target/formats), warms the
page cache, then times in the same run, N repetitions each:
  rust        load_tensor on every model_pieces/*.pt + float32 sum (zero-copy mmap views)
  torch       torch.load(weights_only=True) + .sum()
  torch-mmap  torch.load(weights_only=True, mmap=True) + .sum()
and prints the median and best seconds, split into load time and load+sum time, with ratios.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pieces(ckpt):
    return sorted((ckpt / "model_pieces").glob("*.pt"))


def ensure_checkpoint(ckpt):
    if (ckpt / "config.json").is_file():
        return
    script = REPO / "scripts" / "make_checkpoint.py"
    print(f"creating {ckpt} with {script.relative_to(REPO)}", flush=True)
    subprocess.run(
        [sys.executable, str(script), "--preset", "gpt2-small-random", "--out", str(ckpt)],
        check=True,
    )


def build_rust():
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target" / "formats"))
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "model_context_formats", "--example", "read_sum"],
        check=True,
        cwd=REPO,
        env=env,
    )
    return REPO / "target" / "formats" / "release" / "examples" / "read_sum"


def warm(files):
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def time_rust(binary, ckpt, reps):
    out = subprocess.run([str(binary), str(ckpt), str(reps)], check=True, capture_output=True, text=True).stdout
    loads, totals, sums = [], [], []
    for line in out.splitlines():
        f = line.split()
        fields = dict(zip(f[0::2], f[1::2]))
        loads.append(float(fields["load_s"]))
        totals.append(float(fields["total_s"]))
        sums.append(float(fields["sum"]))
        elements = int(fields["elements"])
    return loads, totals, sums[-1], elements


def time_torch(files, reps, mmap):
    import torch

    loads, totals = [], []
    for _ in range(reps):
        start = time.perf_counter()
        load = 0.0
        total = 0.0
        for f in files:
            t0 = time.perf_counter()
            t = torch.load(f, weights_only=True, mmap=mmap)
            load += time.perf_counter() - t0
            total += float(t.sum())
        totals.append(time.perf_counter() - start)
        loads.append(load)
    return loads, totals, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, default=REPO / "data" / "gpt2-small-random")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    ensure_checkpoint(args.ckpt)
    files = pieces(args.ckpt)
    if not files:
        sys.exit(f"{args.ckpt}/model_pieces has no .pt files")
    binary = build_rust()
    size = sum(f.stat().st_size for f in files)
    warm(files)
    # One untimed round of each reader, then the timed repetitions.
    time_rust(binary, args.ckpt, 1)
    time_torch(files, 1, False)

    import torch

    results = {}
    results["rust"] = time_rust(binary, args.ckpt, args.reps)
    results["torch"] = time_torch(files, args.reps, False)
    results["torch-mmap"] = time_torch(files, args.reps, True)
    elements = results["rust"][3]

    print()
    print(f"checkpoint {args.ckpt}: {len(files)} files, {size / 1e6:.1f} MB, {elements / 1e6:.1f}M float32 elements")
    print(f"torch {torch.__version__} with {torch.get_num_threads()} threads; {args.reps} repetitions, warm page cache")
    print()
    header = f"{'reader':<11} {'load med s':>10} {'load best':>10} {'load+sum med':>13} {'load+sum best':>14} {'x rust (med)':>12}  sum"
    print(header)
    print("-" * len(header))
    rust_total = statistics.median(results["rust"][1])
    for name, r in results.items():
        loads, totals, total = r[0], r[1], r[2]
        med = statistics.median(totals)
        print(
            f"{name:<11} {statistics.median(loads):>10.4f} {min(loads):>10.4f} {med:>13.4f} {min(totals):>14.4f}"
            f" {med / rust_total:>12.2f}  {total:.4f}"
        )
    print()
    print("x rust: median load+sum seconds of the reader divided by the Rust reader's (higher = Rust faster)")


if __name__ == "__main__":
    main()
