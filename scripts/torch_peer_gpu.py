#!/usr/bin/env python3
"""Time the PyTorch peer's training step on a GPU (used by scripts/gpu-check.sh).

The peer (../shared/peers/torch_hrm.py) benchmarks on the CPU only. This harness imports it
unchanged, builds its model, trainer and synthetic batches exactly as its `bench` does (seed 0
initialisation, four batches of random Sudoku-like rows from generator seed 1, the same optimizer
settings), but on a CUDA device, and times each step up to a `torch.cuda.synchronize()` so that
the time is the step's, not its launch's. It prints one JSON line with the peer's `bench` fields
(plus `device`), to compare with `hrm bench train --device cuda:0`.

  python3 scripts/torch_peer_gpu.py --peer PATH/torch_hrm.py --preset sudoku --batch 768 \
      --steps 5 --warmup 2 --dtype bfloat16 --device cuda:0
"""
import argparse
import importlib.util
import json
import statistics
import sys
import time

import torch


def load_peer(path):
    spec = importlib.util.spec_from_file_location("torch_hrm", path)
    if spec is None or spec.loader is None:
        sys.exit(f"error: cannot load the peer from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, help="path of torch_hrm.py")
    ap.add_argument("--preset", default="sudoku")
    ap.add_argument("--batch", type=int, default=768)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: torch sees no CUDA device")
        torch.cuda.set_device(dev)
        sync = torch.cuda.synchronize
    else:                                # (a CPU run only checks this harness)
        sync = lambda: None  # noqa: E731
    peer = load_peer(args.peer)
    # full f32 matrix products (no TF32), as `hrm` does in float32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    torch.manual_seed(0)
    cfg = peer.HRMConfig(batch_size=args.batch, forward_dtype=args.dtype, **peer.PRESETS[args.preset])
    with torch.device(dev):
        model = peer.HRM(cfg)
    # the peer's batches, drawn on the CPU as its bench does, then moved
    gen, batches = torch.Generator().manual_seed(1), []
    for _ in range(4):
        labels = torch.randint(2, cfg.vocab_size, (args.batch, cfg.seq_len), generator=gen, dtype=torch.int32)
        inputs = torch.where(torch.rand(labels.shape, generator=gen) < 0.6, 1, labels).int()
        b = dict(inputs=inputs, labels=labels, puzzle_identifiers=torch.zeros(args.batch, dtype=torch.int32))
        batches.append({k: v.to(dev) for k, v in b.items()})
    hp = dict(lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0, puzzle_emb_weight_decay=1.0, beta1=0.9,
              beta2=0.95, global_batch_size=args.batch, warmup=0, total=1)
    trainer, times = peer.Trainer(model, hp), []
    model.train(True)
    for i in range(args.warmup + args.steps):
        b = batches[i % len(batches)]
        sync()
        t0 = time.perf_counter()
        with torch.device(dev):          # the peer creates carries and buffers with default devices
            trainer.forward_backward(b)
            trainer.optimizer_step()
        sync()
        dt = time.perf_counter() - t0
        times += [dt] if i >= args.warmup else []
        print(f"train step {i}{' (warm-up)' if i < args.warmup else ''}: {dt:.4f}s", file=sys.stderr)
    med = statistics.median(times)
    print(json.dumps(dict(
        impl="torch-peer", mode="train", preset=args.preset, batch=args.batch, device=args.device,
        gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", dtype=args.dtype,
        steps=args.steps, median_s_per_step=round(med, 4), samples_per_s=round(args.batch / med, 2),
        peak_gpu_mem_gb=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        torch=torch.__version__)))


if __name__ == "__main__":
    main()
