#!/usr/bin/env python3
"""Compact, independent PyTorch implementation of the Tiny Recursive Model (TRM), the speed/parity
peer of `hrm --arch trm`.

Written from the TRM semantics of fixtures/trm-parity/README.md section 1, not from the reference
code. The layers TRM shares with HRM (casted linear/embedding, SwiGLU, RoPE attention, RMSNorm), the
stablemax ACT loss head, AdamATan2, SignSGD and the training loop come from the HRM peer
(../shared/peers/torch_hrm.py, or $TORCH_HRM_PEER); this file adds what TRM changes: one network
`L_level` for both z updates, the schedule (H_cycles - 1 cycles without gradient, the last one with
it), the `puzzle_emb_len` prefix, `mlp_t` blocks (a SwiGLU across the sequence), halting on
q_halt > 0 (no_ACT_continue) and the EMA. state_dict keys are the reference's (`inner.*`).

  python torch_trm_peer.py bench --preset sudoku|tiny --cycles 3xN --batch 32 --steps S --warmup W
                                 --threads 2 [--mlp-t] [--dtype float32|bfloat16] [--ema RATE]
  python torch_trm_peer.py check FIXTURE.safetensors   (format trm-parity-v1)
"""
import argparse, importlib.util, json, os, resource, statistics, sys, time
from dataclasses import dataclass

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_hrm_peer():
    path = os.environ.get("TORCH_HRM_PEER", os.path.join(HERE, "..", "..", "shared", "peers", "torch_hrm.py"))
    if not os.path.exists(path):
        sys.exit(f"error: the HRM peer {path} is missing (set TORCH_HRM_PEER to torch_hrm.py)")
    spec = importlib.util.spec_from_file_location("torch_hrm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


H = _load_hrm_peer()


@dataclass
class TRMConfig:           # field names = the reference's arch-config keys; defaults = its Sudoku run
    batch_size: int
    seq_len: int = 81; vocab_size: int = 11; num_puzzle_identifiers: int = 1; puzzle_emb_ndim: int = 512
    H_cycles: int = 3; L_cycles: int = 6; H_layers: int = 0; L_layers: int = 2     # H_layers: ignored
    hidden_size: int = 512; expansion: float = 4.0; num_heads: int = 8
    pos_encodings: str = "rope"                       # "rope" | "learned" | anything else = none
    rms_norm_eps: float = 1e-5; rope_theta: float = 10000.0
    halt_max_steps: int = 16; halt_exploration_prob: float = 0.1
    forward_dtype: str = "float32"                    # the reference runs bfloat16 (on GPU)
    mlp_t: bool = False                               # SwiGLU across the sequence instead of attention
    puzzle_emb_len: int = 16                          # prefix positions; 0 = ceil(puzzle_emb_ndim / hidden)
    no_ACT_continue: bool = True                      # halt on q_halt > 0; no target forward

    def __post_init__(self):
        if self.mlp_t:
            self.pos_encodings = self.pos_encodings if self.pos_encodings == "learned" else "none"
        if not self.no_ACT_continue:
            raise ValueError("no_ACT_continue false is not supported (the reference's training step crashes)")


PRESETS = {
    "sudoku": dict(seq_len=81, vocab_size=11),
    "tiny": dict(seq_len=81, vocab_size=11, hidden_size=64, num_heads=4, puzzle_emb_ndim=64),
}


class Block(nn.Module):
    """Post-norm block; with mlp_t the token mixer is a SwiGLU over the S positions of each channel,
    normalised over S: u = h^T; u = norm(u + swiglu_t(u)); h = u^T. Then h = norm(h + swiglu(h))."""
    def __init__(self, cfg, S):
        super().__init__()
        self.is_mlp_t, self.eps = cfg.mlp_t, cfg.rms_norm_eps
        if cfg.mlp_t:
            self.mlp_t = H.SwiGLU(S, cfg.expansion)
        else:
            self.self_attn = H.Attention(cfg.hidden_size, cfg.num_heads)
        self.mlp = H.SwiGLU(cfg.hidden_size, cfg.expansion)

    def forward(self, h, rope):
        if self.is_mlp_t:
            u = h.transpose(1, 2)
            h = H.rms_norm(u + self.mlp_t(u), self.eps).transpose(1, 2)
        else:
            h = H.rms_norm(h + self.self_attn(h, rope), self.eps)
        return H.rms_norm(h + self.mlp(h), self.eps)


class Net(nn.Module):
    """f(z, u) = blocks(z + u), no final norm: TRM's one network for z_L and z_H updates."""
    def __init__(self, cfg, S):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg, S) for _ in range(cfg.L_layers))

    def forward(self, z, injection, rope):
        z = z + injection
        for layer in self.layers:
            z = layer(z, rope)
        return z


class TRMInner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, self.cfg, self.dtype = cfg.hidden_size, cfg, getattr(torch, cfg.forward_dtype)
        self.P = cfg.puzzle_emb_len or -(-cfg.puzzle_emb_ndim // D)
        if cfg.puzzle_emb_ndim > self.P * D:
            raise ValueError(f"puzzle_emb_ndim {cfg.puzzle_emb_ndim} > puzzle_emb_len {self.P} x hidden_size {D}")
        S, std = cfg.seq_len + self.P, D ** -0.5
        self.register_buffer("H_init", H.trunc_normal_(torch.empty(D, dtype=self.dtype), 1.0))
        self.register_buffer("L_init", H.trunc_normal_(torch.empty(D, dtype=self.dtype), 1.0))
        self.embed_tokens = H.CastedEmbedding(cfg.vocab_size, D, std, self.dtype)
        self.lm_head = H.CastedLinear(D, cfg.vocab_size)
        self.q_head = H.CastedLinear(D, 2, bias=True)                # [halt, continue]
        with torch.no_grad():
            self.q_head.weight.zero_(), self.q_head.bias.fill_(-5.0)
        if cfg.puzzle_emb_ndim > 0:
            self.puzzle_emb = H.SparsePuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim, self.dtype)
        if cfg.pos_encodings == "rope":                              # fp32 tables, not saved
            dh = D // cfg.num_heads
            inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh))
            ang = torch.outer(torch.arange(S, dtype=torch.float32), inv_freq).repeat(1, 2)
            self.register_buffer("rope_cos", ang.cos(), persistent=False)
            self.register_buffer("rope_sin", ang.sin(), persistent=False)
        elif cfg.pos_encodings == "learned":
            self.embed_pos = H.CastedEmbedding(S, D, std, self.dtype)
        self.L_level = Net(cfg, S)

    # x~ = sqrt(D) * [puzzle row padded to P x D, token embeddings] (+ learned positions): HRM's rule
    input_embeddings = H.HRMInner.input_embeddings

    def forward(self, zH, zL, batch, calls=None):
        """One segment: H_cycles - 1 cycles without gradient, the last with it, each cycle
        L_cycles x [z_L = f(z_L, z_H + x~)] then z_H = f(z_H, z_L). `calls` collects every output.
        Returns the detached carry, LM logits of positions P.. and fp32 (q_halt, q_continue)."""
        rope = (self.rope_cos[:, None], self.rope_sin[:, None]) if self.cfg.pos_encodings == "rope" else None
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])

        def cycle(zH, zL):
            for _ in range(self.cfg.L_cycles):
                zL = self.L_level(zL, zH + x, rope)
                calls is None or calls.append(("L", zL))
            zH = self.L_level(zH, zL, rope)
            calls is None or calls.append(("H", zH))
            return zH, zL

        with torch.no_grad():
            for _ in range(self.cfg.H_cycles - 1):
                zH, zL = cycle(zH, zL)
        zH, zL = cycle(zH, zL)
        q = self.q_head(zH[:, 0]).float()
        return zH.detach(), zL.detach(), self.lm_head(zH)[:, self.P:], q[:, 0], q[:, 1]


class TRM(nn.Module):
    """ACT wrapper; state_dict keys are `inner.*` exactly as in the reference."""
    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.inner = cfg, TRMInner(cfg)

    initial_carry = H.HRM.initial_carry                    # zeros, every slot halted

    def forward(self, carry, batch):
        """One ACT step; halted slots restart from H_init/L_init on their row of `batch`."""
        cfg, halted = self.cfg, carry["halted"]
        zH = torch.where(halted[:, None, None], self.inner.H_init, carry["zH"])
        zL = torch.where(halted[:, None, None], self.inner.L_init, carry["zL"])
        steps = torch.where(halted, 0, carry["steps"])
        data = {k: torch.where(halted.view(-1, *[1] * (v.dim() - 1)), batch[k], v) for k, v in carry["data"].items()}
        zH, zL, logits, q_halt, q_cont = self.inner(zH, zL, data)
        with torch.no_grad():
            steps = steps + 1
            halted = steps >= cfg.halt_max_steps              # eval: always halt_max_steps segments
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | (q_halt > 0)
                min_steps = (torch.rand_like(q_halt) < cfg.halt_exploration_prob) * \
                    torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
        return dict(zH=zH, zL=zL, steps=steps, halted=halted, data=data), dict(logits=logits, q_halt=q_halt, q_cont=q_cont)


class EMA:
    """Shadow of every nn.Parameter (buffers excluded): shadow <- (1 - mu) p + mu shadow after each step."""
    def __init__(self, model, mu):
        self.mu = mu
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model):
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k] = (1.0 - self.mu) * p + self.mu * self.shadow[k]


def sudoku_like_batches(cfg, batch, n=4, seed=1):
    """Random rows as the HRM peer makes them: labels 2..V-1, inputs = label or 1 (blank, p 0.6)."""
    gen, out = torch.Generator().manual_seed(seed), []
    for _ in range(n):
        labels = torch.randint(2, cfg.vocab_size, (batch, cfg.seq_len), generator=gen, dtype=torch.int32)
        inputs = torch.where(torch.rand(labels.shape, generator=gen) < 0.6, 1, labels).int()
        out.append(dict(inputs=inputs, labels=labels, puzzle_identifiers=torch.zeros(batch, dtype=torch.int32)))
    return out


def bench(args):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    h, l = (int(c) for c in args.cycles.split("x"))
    cfg = TRMConfig(batch_size=args.batch, forward_dtype=args.dtype, H_cycles=h, L_cycles=l, mlp_t=args.mlp_t,
                    **PRESETS[args.preset])
    model = TRM(cfg)
    batches = sudoku_like_batches(cfg, args.batch)
    hp = dict(lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0, puzzle_emb_weight_decay=1.0, beta1=0.9, beta2=0.95,
              global_batch_size=args.batch, warmup=0, total=1)
    trainer, times = H.Trainer(model, hp), []
    ema = EMA(model, args.ema) if args.ema else None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            cpu0 = time.process_time()
        t0 = time.perf_counter()
        trainer.forward_backward(batches[i % len(batches)])   # carry kept across steps
        trainer.optimizer_step()                              # SignSGD, then AdamATan2
        if ema:
            ema.update(model)
        dt = time.perf_counter() - t0
        times += [dt] if i >= args.warmup else []
        print(f"train step {i}{' (warm-up)' if i < args.warmup else ''}: {dt:.4f}s", file=sys.stderr)
    med = statistics.median(times)
    print(json.dumps(dict(
        impl="torch-trm-peer", mode="train", preset=args.preset, arch="trm", mlp_t=cfg.mlp_t, batch=args.batch,
        threads=args.threads, dtype=args.dtype, ema=args.ema, cycles=f"{h}x{l}", steps=args.steps,
        median_s_per_step=round(med, 4), samples_per_s=round(args.batch / med, 2),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # CPU time per timed step (robust to other load on a shared machine; ~threads x wall)
        cpu_s_per_step=round((time.process_time() - cpu0) / args.steps, 3), torch=torch.__version__)))


# README section 8 tolerances: (attention fixtures, mlp_t fixtures)
TOL = dict(eval=(1e-4, 2e-4), eval_q=(5e-5, 2e-4), trace=(2e-5, 2e-4), train_out=(2e-4, 1e-3), loss=(1e-5, 5e-5),
           grad=(2e-4, 5e-4), param=(1e-5, 3e-5))


def check(args):
    """Replay a trm-parity-v1 fixture: the eval rollout (with the segment-1 trace), then every training
    step (loss, outputs, carry, gradients, parameters after both optimizers, EMA shadow)."""
    from safetensors import safe_open
    torch.set_num_threads(args.threads)
    with safe_open(args.fixture, "pt") as f:
        meta, T = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != "trm-parity-v1":
        sys.exit(f"error: {args.fixture}: format {meta.get('format')!r} is not trm-parity-v1")
    cfg, hp = TRMConfig(**json.loads(meta["config"])), json.loads(meta["optim"])
    model = TRM(cfg)
    model.load_state_dict({k[len("param."):]: v for k, v in T.items() if k.startswith("param.")})
    tol = {k: v[cfg.mlp_t] * args.tol_scale for k, v in TOL.items()}
    rep = H.Report()
    batch = lambda p: {k: T[f"{p}.{k}"] for k in ("inputs", "labels", "puzzle_identifiers")}

    def cmp_outputs(tag, p, carry, out, atol, q_atol):
        rep.cmp(f"{tag}.logits", out["logits"], T[f"{p}.logits"], atol=atol)
        rep.cmp(f"{tag}.q", out["q_halt"], T[f"{p}.q_halt_logits"], atol=q_atol)
        rep.cmp(f"{tag}.q", out["q_cont"], T[f"{p}.q_continue_logits"], atol=q_atol)
        rep.cmp(f"{tag}.halted/steps", carry["halted"].float(), T[f"{p}.halted"], atol=0)
        rep.cmp(f"{tag}.halted/steps", carry["steps"], T[f"{p}.steps"], atol=0)

    # 0) trace of eval segment 1 (localises a mismatch): every call of the network, the first block's parts
    model.eval()
    calls, seen, hooks = [], {}, []
    blk = model.inner.L_level.layers[0]
    for name in ("self_attn", "mlp_t", "mlp"):
        if hasattr(blk, name):
            key = "attn" if name == "self_attn" else name
            hooks.append(getattr(blk, name).register_forward_hook(lambda m, i, o, k=key: None if k in seen else seen.update({k: o})))
    hooks.append(blk.register_forward_hook(lambda m, i, o: None if "out" in seen else seen.update(out=o)))
    if "trace.rope.cos" in T:
        rep.cmp("trace", model.inner.rope_cos, T["trace.rope.cos"], atol=tol["trace"])
        rep.cmp("trace", model.inner.rope_sin, T["trace.rope.sin"], atol=tol["trace"])
    with torch.inference_mode():
        b = batch("batch")
        rep.cmp("trace", model.inner.input_embeddings(b["inputs"], b["puzzle_identifiers"]),
                T["trace.seg1.input_embeddings"], atol=tol["trace"])
        c = model.initial_carry(b)
        zH = model.inner.H_init.expand_as(c["zH"])
        model.inner(zH, model.inner.L_init.expand_as(c["zL"]), b, calls=calls)
    for hk in hooks:
        hk.remove()
    for i, (kind, o) in enumerate(calls):
        rep.cmp("trace", o, T[f"trace.seg1.call{i}.{kind}"], atol=tol["trace"])
    for name, o in seen.items():
        rep.cmp("trace", o, T[f"trace.seg1.call0.layer0.{name}"], atol=tol["trace"])
    # 1) eval rollout: the mlp_t recursion amplifies rounding by about 5x per segment
    for k, (carry, out) in enumerate(H.eval_rollout(model, batch("batch")), 1):
        grow = 5 ** (k - 1) if cfg.mlp_t else 1
        cmp_outputs(f"eval.seg{k}", f"eval.seg{k}", carry, out, tol["eval"] * grow, tol["eval_q"] * grow)
        for z in ("z_H", "z_L"):
            rep.cmp(f"eval.seg{k}.{z}", carry[z.replace("_", "")], T[f"eval.seg{k}.{z}"], atol=tol["eval"] * grow)
    # 2) training steps from the same parameters
    trainer = H.Trainer(model, dict(hp, warmup=0, total=1))
    ema = EMA(model, hp["ema_rate"]) if hp.get("ema") else None
    for n in range(1, int(meta["train_steps"]) + 1):
        loss, _, out = trainer.forward_backward(batch("batch" if n == 1 else f"batch{n}"))
        cmp_outputs(f"train{n}", f"train{n}", trainer.carry, out, tol["train_out"], tol["train_out"])
        rep.cmp(f"train{n}.loss", loss, T[f"train{n}.loss"], rtol=tol["loss"])
        grads = {k: p.grad for k, p in model.named_parameters()}
        if cfg.puzzle_emb_ndim > 0:
            grads["inner.puzzle_emb.local_weights"] = model.inner.puzzle_emb.local[0].grad
        for k, g in grads.items():
            rep.cmp(f"grad{n}.{k}", g, T[f"grad{n}.{k}"], rtol=tol["grad"])
        trainer.optimizer_step()
        for k, v in model.state_dict().items():
            rep.cmp(f"step{n}.params", v, T[f"step{n}.param.{k}"], atol=tol["param"])
        if ema:
            ema.update(model)
            for k, v in ema.shadow.items():
                rep.cmp(f"ema{n}.params", v, T[f"ema{n}.param.{k}"], atol=tol["param"])
    ok = rep.print()
    print(json.dumps(dict(fixture=os.path.basename(args.fixture), ok=ok,
                          max_abs={k: float(f"{g['abs']:.3e}") for k, g in rep.groups.items()})))
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("bench", help="time training steps (loss head forward + backward + both optimizers)")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny")
    p.add_argument("--cycles", default="3x6", help="H_cycles x L_cycles")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--mlp-t", action="store_true", help="sequence SwiGLU instead of attention, no positions")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--ema", type=float, default=None, metavar="RATE", help="also update an EMA shadow (e.g. 0.999)")
    p = sub.add_parser("check", help="replay a trm-parity-v1 fixture")
    p.add_argument("fixture")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tol-scale", type=float, default=1.0, help="multiply every tolerance")
    args = ap.parse_args()
    check(args) if args.cmd == "check" else bench(args)


if __name__ == "__main__":
    main()
