#!/usr/bin/env python3
"""Checks that a TDB folder written by mc-convert loads in Python torch (torch.load with
weights_only=True, and mmap=True, which needs torch's own record alignment) and holds exactly
the pieces and config of an expected TDB folder: same keys, dtypes, shapes and values.

Usage: check_tdb_equal.py CONVERTED_DIR EXPECTED_DIR   (exit status 0 when equal)
"""
import json
import os
import sys

import torch


def main(converted, expected):
    got_cfg = json.load(open(os.path.join(converted, "config.json")))
    want_cfg = json.load(open(os.path.join(expected, "config.json")))
    assert got_cfg == want_cfg, f"config.json differs: {got_cfg} != {want_cfg}"
    got_dir, want_dir = (os.path.join(d, "model_pieces") for d in (converted, expected))
    got_files, want_files = sorted(os.listdir(got_dir)), sorted(os.listdir(want_dir))
    assert got_files == want_files, f"pieces differ: {set(got_files) ^ set(want_files)}"
    for name in want_files:
        want = torch.load(os.path.join(want_dir, name), weights_only=True)
        for mmap in (False, True):
            got = torch.load(os.path.join(got_dir, name), weights_only=True, mmap=mmap)
            assert got.dtype == want.dtype and got.shape == want.shape, \
                f"{name}: {got.dtype} {tuple(got.shape)} != {want.dtype} {tuple(want.shape)}"
            assert torch.equal(got, want), f"{name}: values differ"
    print(f"{converted}: {len(want_files)} pieces and config.json equal to {expected} (torch {torch.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
