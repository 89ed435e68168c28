#!/usr/bin/env python3
"""PyTorch's (MKL) throughput on the matrix products of one Sudoku-size block, forward and
backward shapes, for comparison with `cargo run --release --example matmul -p hrm-model`.

    HRM_M=2624 python3 scripts/matmul-torch.py     # rows: 2624 = batch 32 x 82 (default), 82 = one puzzle
"""
import os
import time

import torch

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
n = int(os.environ.get("HRM_M", 32 * 82))


def best(f):
    f()
    t = []
    for _ in range(8):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


for k, m, name in [(512, 1536, "qkv"), (512, 512, "o"), (512, 3072, "gate_up"), (1536, 512, "down")]:
    x, w, dy = torch.randn(n, k), torch.randn(m, k), torch.randn(n, m)
    gflop = 2 * n * k * m / 1e9
    row = [f"{name:8} [{n}x{k}]x[{k}x{m}]"]
    for label, f in [("fwd", lambda: x @ w.t()), ("dx", lambda: dy @ w), ("dw", lambda: dy.t() @ x)]:
        s = best(f)
        row.append(f"{label} {s * 1e3:.1f} ms ({gflop / s:.0f} GFLOP/s)")
    print(", ".join(row))
