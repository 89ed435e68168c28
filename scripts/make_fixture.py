#!/usr/bin/env python3
"""Write an `hrm-parity-v1` fixture for any HRM configuration, using the independent PyTorch peer
(`../shared/peers/torch_hrm.py`, which reproduces the reference fixtures bit for bit) as the oracle.

Dev-only tool: the shared fixtures come from the real reference; this one produces extra fixtures
for configurations those two files do not cover (learned positions, multi-token puzzle prefix,
H_cycles != L_cycles, odd batch and head counts, ignored labels, softmax loss, the Sudoku size), so
that `hrm parity` is tested on shapes it was not written against.

    python scripts/make_fixture.py OUT.safetensors [--peer PATH] [--seed N] [--steps T]
        [key=value ...]      # architecture overrides, e.g. pos_encodings=learned H_cycles=3

Needs: torch, numpy, safetensors (`pip install torch numpy safetensors`).
"""
import argparse, importlib.util, json, math, os, sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def load_peer(path):
    spec = importlib.util.spec_from_file_location("torch_hrm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_value(v):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--peer", default=os.path.join(HERE, "..", "..", "shared", "peers", "torch_hrm.py"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3, help="training steps to record")
    ap.add_argument("--ignore-frac", type=float, default=0.2, help="fraction of labels set to -100")
    ap.add_argument("--q-noise", type=float, default=0.25, help="std of the Gaussian noise put on q_head.weight")
    ap.add_argument("--q-shift", type=float, default=0.0, help="added to q_head.bias[0] (halt)")
    ap.add_argument("--loss", default="stablemax_cross_entropy", choices=["stablemax_cross_entropy", "softmax_cross_entropy"])
    ap.add_argument("--float64", action="store_true",
                    help="run the peer in float64 (RMSNorm too): the rounding-free 'truth' for a config")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    P = load_peer(args.peer)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    cfg_d = dict(batch_size=3, seq_len=20, vocab_size=9, num_puzzle_identifiers=4, puzzle_emb_ndim=40,
                 H_cycles=2, L_cycles=3, H_layers=1, L_layers=2, hidden_size=48, expansion=2.5, num_heads=3,
                 pos_encodings="rope", rms_norm_eps=1e-5, rope_theta=10000.0, halt_max_steps=3,
                 halt_exploration_prob=0.0, forward_dtype="float32")
    for o in args.overrides:
        k, v = o.split("=", 1)
        if k not in cfg_d:
            sys.exit(f"unknown key {k}")
        cfg_d[k] = parse_value(v)
    cfg_d["expansion"] = float(cfg_d["expansion"])
    cfg = P.HRMConfig(**cfg_d)
    model = P.HRM(cfg)
    if args.loss == "softmax_cross_entropy":
        def soft_ce(logits, labels):
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.long().flatten(),
                                                     ignore_index=P.IGNORE, reduction="none").view(labels.shape)
        P.stablemax_ce = soft_ce
    with torch.no_grad():  # make halting decisions happen, as in the shared rope fixture
        model.inner.q_head.weight.normal_(0, args.q_noise)
        model.inner.q_head.bias[0] += args.q_shift
        if cfg.puzzle_emb_ndim > 0:
            model.inner.puzzle_emb.weights.normal_(0, 1 / 8)

    if args.float64:
        def rms_norm64(x, eps):
            return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
        P.rms_norm = rms_norm64

        @torch.no_grad()
        def signsgd64(emb, lr, wd):
            if emb.local is None or emb.local[0].grad is None:
                return
            rows, ids = emb.local
            uniq, inv = ids.unique(return_inverse=True)
            g = torch.zeros(len(uniq), rows.shape[1], dtype=rows.grad.dtype).index_add_(0, inv, rows.grad)
            emb.weights[uniq] = emb.weights[uniq] * (1 - lr * wd) - lr * torch.sign(g)
            emb.local = None
        P.signsgd_step = signsgd64
        model.double()
        model.inner.dtype = torch.float64
        model.inner.embed_tokens.dtype = torch.float64
        if cfg.pos_encodings == "learned":
            model.inner.embed_pos.dtype = torch.float64
        if cfg.puzzle_emb_ndim > 0:
            model.inner.puzzle_emb.dtype = torch.float64
        if cfg.pos_encodings == "rope":  # keep the reference's f32 table values, in f64
            model.inner.rope_cos = model.inner.rope_cos.double()
            model.inner.rope_sin = model.inner.rope_sin.double()
    B, L, V = cfg.batch_size, cfg.seq_len, cfg.vocab_size
    gen = torch.Generator().manual_seed(args.seed + 1)

    def make_batch():
        labels = torch.randint(2, V, (B, L), generator=gen, dtype=torch.int32)
        inputs = torch.where(torch.rand(B, L, generator=gen) < 0.5, 1, labels).int()
        ign = torch.rand(B, L, generator=gen) < args.ignore_frac
        labels = torch.where(ign, P.IGNORE, labels).int()
        labels[-1] = P.IGNORE  # one fully ignored row (counts as correct, excluded from metrics)
        ids = torch.randint(0, max(cfg.num_puzzle_identifiers, 1), (B,), generator=gen, dtype=torch.int32)
        return dict(inputs=inputs, labels=labels, puzzle_identifiers=ids)

    T = {}
    for k, v in model.state_dict().items():
        T[f"param.{k}"] = v.float().clone()
    batches = [make_batch() for _ in range(args.steps)]
    for s, b in enumerate(batches, 1):
        for k, v in b.items():
            T[f"batch.{k}" if s == 1 else f"batch{s}.{k}"] = v.clone()

    # eval rollout
    for k, (carry, out) in enumerate(P.eval_rollout(model, batches[0]), 1):
        _, m = P.act_loss(carry, out)
        p = f"eval.seg{k}"
        T[f"{p}.logits"], T[f"{p}.q_halt_logits"], T[f"{p}.q_continue_logits"] = out["logits"].float(), out["q_halt"], out["q_cont"]
        T[f"{p}.z_H"], T[f"{p}.z_L"] = carry["zH"].float(), carry["zL"].float()
        T[f"{p}.halted"], T[f"{p}.steps"] = carry["halted"].float(), carry["steps"].int()
        T[f"{p}.all_halted"] = carry["halted"].all().float()
        for n, v in m.items():
            T[f"{p}.metric.{n}"] = v.float()

    # training steps
    optim = dict(lr=1e-3, weight_decay=0.5, beta1=0.9, beta2=0.95, puzzle_emb_lr=1e-2,
                 puzzle_emb_weight_decay=0.5, global_batch_size=B)
    trainer = P.Trainer(model, dict(optim, warmup=0, total=1))
    for s in range(1, args.steps + 1):
        loss, m, out = trainer.forward_backward(batches[s - 1])
        p, c = f"train{s}", trainer.carry
        T[f"{p}.loss"] = loss.double()
        T[f"{p}.logits"], T[f"{p}.q_halt_logits"], T[f"{p}.q_continue_logits"] = out["logits"].float(), out["q_halt"].detach(), out["q_cont"].detach()
        if "target_q_cont" in out:
            T[f"{p}.target_q_continue"] = out["target_q_cont"].float()
        T[f"{p}.halted"], T[f"{p}.steps"] = c["halted"].float(), c["steps"].int()
        for k, v in c["data"].items():
            T[f"{p}.data.{k}"] = v.int()
        for n, v in m.items():
            T[f"{p}.metric.{n}"] = v.float()
        for n, prm in model.named_parameters():
            T[f"grad{s}.{n}"] = prm.grad.float().clone()
        if cfg.puzzle_emb_ndim > 0:
            T[f"grad{s}.inner.puzzle_emb.local_weights"] = model.inner.puzzle_emb.local[0].grad.float().clone()
        trainer.optimizer_step()
        for k, v in model.state_dict().items():
            T[f"step{s}.param.{k}"] = v.float().clone()

    T = {k: v.detach().contiguous() for k, v in T.items()}
    meta = dict(format="hrm-parity-v1", config=json.dumps(cfg_d), optim=json.dumps(optim), loss_type=args.loss,
                segments=str(cfg.halt_max_steps), train_steps=str(args.steps), reference_commit="peer:torch_hrm.py",
                torch_version=torch.__version__,
                description=f"generated by scripts/make_fixture.py with the torch_hrm peer, seed {args.seed}")
    save_file(T, args.out, metadata=meta)
    halts = [T[f"train{s}.halted"].tolist() for s in range(1, args.steps + 1)]
    print(f"wrote {args.out}: {len(T)} tensors; halted per step {halts}")


if __name__ == "__main__":
    main()
