#!/usr/bin/env python3
"""oneDNN's side of benches/gemv_design.cpp: a decoding step's 73 distinct GPT-2-small weight
products (mkldnn::_linear_pointwise; bfloat16 on weights reordered once, float32 on the plain
matrices, as src/model/packed.rs does) times 1, 2, 4 and 8 rows, median milliseconds of a whole
step over 15 repetitions. Run it in the same session as gemv_design.

  .venv/bin/python benches/onednn_step_products.py [--threads 2]
"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(ap.parse_args().threads)
    d = 768
    shapes = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)] * 12 + [(50257, d)]
    for dtype in (torch.bfloat16, torch.float32):
        ws = [torch.randn(o, i).to(dtype) for o, i in shapes]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in ws] if dtype == torch.bfloat16 else ws
        for rows in (1, 2, 4, 8):
            xs = {i: torch.randn(rows, i).to(dtype) for i in (d, 4 * d)}

            def step():
                for w, p in zip(ws, packed):
                    torch.ops.mkldnn._linear_pointwise(xs[w.shape[1]], p, None, "none", [], "")
            step()
            times = []
            for _ in range(15):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            print(f"{dtype} rows {rows}: {sorted(times)[7] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
