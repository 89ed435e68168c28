//! The host path of the engine: a segment's no-gradient module calls on f32 host buffers with
//! reused scratch space, the same kernels as the fused ops (so the same numbers), and the block
//! matrix products on the general, packed f32 or bf16 (AMX or AVX512-BF16) kernel, or in bf16
//! packed per call for a model with a bf16 forward on the CPU. With bf16 weights packed once the
//! MLP keeps its hidden activation in bf16 ([`mlp16`]).

use candle_core::{Tensor, Var};

use crate::cpu::mlp16::{self, PackedMlp};
use crate::cpu::{bf16, gemm, packed};
use crate::model::{Event, Hrm, Observer};
use crate::ops;
use crate::{to_host_f32, Error, Result};

/// The block weights packed for one of the inference kernels, H blocks then L.
#[derive(Debug)]
pub(super) enum PackedBlocks {
    /// bf16 (AMX or AVX512-BF16): (qkv, o) and the MLP.
    Bf16(Vec<([bf16::PackedBf16; 2], PackedMlp)>),
    /// f32, small batches: (qkv, o, gate_up, down).
    F32(Vec<[packed::PackedF32; 4]>),
}

/// Scratch buffers of the host path, kept between calls (no per-op allocation).
#[derive(Debug, Default)]
pub(super) struct Workspace {
    /// `mlp_t`: the block input transposed to `[B, D, S]`.
    seq: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    inj: Vec<f32>,
    mlp: mlp16::Scratch,
}

/// One block's packed weights, if any.
#[derive(Clone, Copy)]
enum BlockPacks<'a> {
    None,
    Bf16(&'a ([bf16::PackedBf16; 2], PackedMlp)),
    F32(&'a [packed::PackedF32; 4]),
}

/// Read access to the weights: one storage read lock per tensor, held for a segment.
struct HostWeights<'a> {
    guards: Vec<(candle_core::StorageRef<'a>, &'a candle_core::Layout)>,
    blocks_h: usize,
}

impl<'a> HostWeights<'a> {
    /// Every block weight (H then L, per block qkv, o, gate_up, down), then lm_head, q_head.
    fn new(m: &'a Hrm) -> Self {
        let w = &m.weights;
        let mut vars: Vec<&Var> = w.h_level.iter().chain(&w.l_level).flatten().collect();
        vars.extend([&w.lm_head, &w.q_head_w, &w.q_head_b]);
        let guards = vars
            .into_iter()
            .map(|v| v.as_tensor().storage_and_layout())
            .collect();
        Self {
            guards,
            blocks_h: w.h_level.len(),
        }
    }

    fn slice(&self, i: usize) -> Result<&[f32]> {
        let (g, l) = &self.guards[i];
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::msg("host inference: a weight is not contiguous"))?;
        match &**g {
            candle_core::Storage::Cpu(c) => Ok(&c.as_slice::<f32>()?[a..b]),
            _ => Err(Error::msg("host inference: a weight is not on the CPU")),
        }
    }

    /// Index of block `i` of the H (`h_blocks`) or L weights among all blocks.
    fn index(&self, h_blocks: bool, i: usize) -> usize {
        if h_blocks {
            i
        } else {
            self.blocks_h + i
        }
    }

    /// (qkv, o, gate_up, down) of block `j` ([`HostWeights::index`]).
    fn block(&self, j: usize) -> Result<[&[f32]; 4]> {
        let base = 4 * j;
        Ok([
            self.slice(base)?,
            self.slice(base + 1)?,
            self.slice(base + 2)?,
            self.slice(base + 3)?,
        ])
    }

    fn heads(&self) -> Result<[&[f32]; 3]> {
        let n = self.guards.len();
        Ok([self.slice(n - 3)?, self.slice(n - 2)?, self.slice(n - 1)?])
    }
}

/// Every block's weights (qkv, o, gate_up, down) through `pack(weights, d, i)`, from their
/// current values: H blocks, then L.
pub(super) fn pack_blocks<P>(
    m: &Hrm,
    pack: impl Fn([&[f32]; 4], usize, usize) -> P,
) -> Result<Vec<P>> {
    let (d, i) = (m.cfg.hidden_size, m.cfg.mlp_inner());
    let weights = HostWeights::new(m);
    let n = m.weights.h_level.len() + m.weights.l_level.len();
    (0..n).map(|j| Ok(pack(weights.block(j)?, d, i))).collect()
}

/// One block packed for the bf16 kernels: (qkv, o) and the MLP.
pub(super) fn bf16_block(
    [qkv, o, gu, down]: [&[f32]; 4],
    d: usize,
    i: usize,
) -> ([bf16::PackedBf16; 2], PackedMlp) {
    let pack = bf16::PackedBf16::pack;
    (
        [pack(qkv, 3 * d, d), pack(o, d, d)],
        PackedMlp::pack(gu, down, i, d, d),
    )
}

/// One block packed for the small-batch f32 kernel: (qkv, o, gate_up, down).
pub(super) fn f32_block(
    [qkv, o, gu, down]: [&[f32]; 4],
    d: usize,
    i: usize,
) -> [packed::PackedF32; 4] {
    let pack = packed::PackedF32::pack;
    [
        pack(qkv, 3 * d, d),
        pack(o, d, d),
        pack(gu, 2 * i, d),
        pack(down, d, i),
    ]
}

/// A segment's no-gradient calls on host buffers, in [`crate::config::ModelConfig::schedule`]
/// order: every call when `heads` (and then the heads too: logits `[B, L, V]`, Q `[B, 2]`), else
/// the calls before the ones that carry the gradient (the cycles before a gradient step).
/// Returns the new (z_H, z_L) `[B, S, D]` (the baseline's z_L stays empty).
#[allow(clippy::too_many_arguments)]
pub(super) fn segment(
    m: &Hrm,
    packs: Option<&PackedBlocks>,
    ws: &mut Workspace,
    z_h: &Tensor,
    z_l: &Tensor,
    x: &Tensor,
    heads: bool,
    obs: &mut dyn Observer,
) -> Result<(Tensor, Tensor, Option<(Tensor, Tensor)>)> {
    let (b, s, d) = z_h.dims3()?;
    let l_shape = z_l.dims3()?;
    let mut zh = to_host_f32(z_h)?;
    let mut zl = to_host_f32(z_l)?;
    let xv = to_host_f32(x)?;
    let weights = HostWeights::new(m);
    let call = Call {
        m,
        packs,
        weights: &weights,
        shape: (b, s),
    };
    let (calls, no_grad) = m.cfg.split_schedule();
    let n = if heads { calls.len() } else { no_grad };
    ws.inj.resize(b * s * d, 0.0);
    for c in &calls[..n] {
        if !c.h {
            let mut inj = std::mem::take(&mut ws.inj);
            for ((o, &a), &c) in inj.iter_mut().zip(&zh).zip(&xv) {
                *o = a + c;
            }
            call.module(false, &mut zl, &inj, ws, obs)?;
            ws.inj = inj;
        } else if m.cfg.has_z_l() {
            call.module(true, &mut zh, &zl, ws, obs)?;
        } else {
            call.module(true, &mut zh, &xv, ws, obs)?;
        }
    }
    let out = if heads { Some(call.heads(&zh)?) } else { None };
    drop(weights);
    Ok((
        Tensor::from_vec(zh, (b, s, d), m.device())?,
        Tensor::from_vec(zl, l_shape, m.device())?,
        out,
    ))
}

/// What every call of one host segment shares.
struct Call<'a> {
    m: &'a Hrm,
    packs: Option<&'a PackedBlocks>,
    weights: &'a HostWeights<'a>,
    /// (B, S).
    shape: (usize, usize),
}

impl Call<'_> {
    /// Show `v`, `[B, S, D]` values (`transposed`: `[B, D, S]`), to an observer that wants `e`.
    fn show_as(&self, obs: &mut dyn Observer, e: Event, v: &[f32], transposed: bool) -> Result<()> {
        if obs.wants(&e) {
            let (b, s) = self.shape;
            let d = self.m.cfg.hidden_size;
            let shape = if transposed { (b, d, s) } else { (b, s, d) };
            obs.observe(e, &Tensor::from_slice(v, shape, self.m.device())?);
        }
        Ok(())
    }

    fn show(&self, obs: &mut dyn Observer, e: Event, v: &[f32]) -> Result<()> {
        self.show_as(obs, e, v, false)
    }

    /// A reasoning module: `z = blocks(z + inj)` in place.
    fn module(
        &self,
        h_level: bool,
        z: &mut [f32],
        inj: &[f32],
        ws: &mut Workspace,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        for (zi, &ii) in z.iter_mut().zip(inj) {
            *zi += ii;
        }
        for layer in 0..self.m.blocks(h_level).len() {
            let j = self.weights.index(self.m.runs_h_blocks(h_level), layer);
            let packs = match self.packs {
                None => BlockPacks::None,
                Some(PackedBlocks::Bf16(p)) => BlockPacks::Bf16(&p[j]),
                Some(PackedBlocks::F32(p)) => BlockPacks::F32(&p[j]),
            };
            self.block((h_level, layer), self.weights.block(j)?, packs, z, ws, obs)?;
        }
        self.show(obs, Event::Module { h_level }, z)
    }

    /// One post-norm block, in place on `h` `[B*S, D]`.
    fn block(
        &self,
        (h_level, layer): (bool, usize),
        [qkv_w, o_w, gu_w, down_w]: [&[f32]; 4],
        packs: BlockPacks,
        h: &mut [f32],
        ws: &mut Workspace,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let cfg = &self.m.cfg;
        let (d, i) = (cfg.hidden_size, cfg.mlp_inner());
        let (b, s) = self.shape;
        let n = b * s;
        if n == 0 {
            return Ok(());
        }
        let norm = ops::AddRmsNorm {
            eps: cfg.rms_norm_eps,
        };
        // x · Wᵀ for weight `j` of the block (`[out, in]`): bf16 packed once, the small-batch
        // f32 kernel, or the model's own products (f32, or bf16 packed per call)
        let small = packed::fast(n);
        let products = self.m.products();
        let lin = |j: usize, x: &[f32], w: &[f32], out: &mut [f32]| match packs {
            BlockPacks::Bf16((p, _)) => bf16::matmul(n, x, &p[j], out),
            BlockPacks::F32(p) if small => packed::matmul(n, x, &p[j], out),
            _ => {
                let (o, k) = (out.len() / n, x.len() / n);
                products.matmul_into(n, o, k, x, gemm::Op::N, w, gemm::Op::T, out)
            }
        };
        let part = |part| Event::Block {
            h_level,
            layer,
            part,
        };
        if cfg.mlp_t {
            self.seq_mlp([qkv_w, o_w], h, ws, obs, part("mlp_t"))?;
        } else {
            ws.qkv.resize(n * 3 * d, 0.0);
            ws.attn.resize(n * d, 0.0);
            ws.tmp.resize(n * d, 0.0);
            lin(0, h, qkv_w, &mut ws.qkv);
            self.m.attention().forward_into(&ws.qkv, b, s, &mut ws.attn);
            lin(1, &ws.attn, o_w, &mut ws.tmp);
            self.show(obs, part("attn"), &ws.tmp)?;
            norm.forward_inplace(h, &ws.tmp, d, false);
        }
        ws.tmp.resize(n * d, 0.0);
        if let BlockPacks::Bf16((_, mlp)) = packs {
            mlp.forward(n, h, &mut ws.mlp, &mut ws.tmp);
        } else {
            ws.gate_up.resize(n * 2 * i, 0.0);
            ws.act.resize(n * i, 0.0);
            lin(2, h, gu_w, &mut ws.gate_up);
            ops::SwiGlu::forward_into(&ws.gate_up, i, &mut ws.act);
            lin(3, &ws.act, down_w, &mut ws.tmp);
        }
        self.show(obs, part("mlp"), &ws.tmp)?;
        norm.forward_inplace(h, &ws.tmp, d, false);
        self.show(obs, part("out"), h)
    }

    /// TRM's `mlp_t` in place on `h` `[B, S, D]`: `u = hᵀ [B, D, S]`, `u = norm(u +
    /// down(swiglu(gate_up(u))))` over S, `h = uᵀ` (the general f32 product: its rows are
    /// B x D, not the tokens the packed kernels were packed for).
    fn seq_mlp(
        &self,
        [gu_w, down_w]: [&[f32]; 2],
        h: &mut [f32],
        ws: &mut Workspace,
        obs: &mut dyn Observer,
        e: Event,
    ) -> Result<()> {
        let cfg = &self.m.cfg;
        let (b, s) = self.shape;
        let (d, it) = (cfg.hidden_size, cfg.mlp_t_inner());
        let rows = b * d;
        ws.seq.resize(rows * s, 0.0);
        ws.gate_up.resize(rows * 2 * it, 0.0);
        ws.act.resize(rows * it, 0.0);
        ws.tmp.resize(rows * s, 0.0);
        let transpose = |from: &[f32], to: &mut [f32], (r, c): (usize, usize)| {
            for bi in 0..b {
                let (f, t) = (&from[bi * r * c..][..r * c], &mut to[bi * r * c..][..r * c]);
                for i in 0..r {
                    for j in 0..c {
                        t[j * r + i] = f[i * c + j];
                    }
                }
            }
        };
        transpose(h, &mut ws.seq, (s, d));
        let products = self.m.products();
        products.matmul_into(
            rows,
            2 * it,
            s,
            &ws.seq,
            gemm::Op::N,
            gu_w,
            gemm::Op::T,
            &mut ws.gate_up,
        );
        ops::SwiGlu::forward_into(&ws.gate_up, it, &mut ws.act);
        products.matmul_into(
            rows,
            s,
            it,
            &ws.act,
            gemm::Op::N,
            down_w,
            gemm::Op::T,
            &mut ws.tmp,
        );
        self.show_as(obs, e, &ws.tmp, true)?;
        let norm = ops::AddRmsNorm {
            eps: cfg.rms_norm_eps,
        };
        norm.forward_inplace(&mut ws.seq, &ws.tmp, s, false);
        transpose(&ws.seq, h, (d, s));
        Ok(())
    }

    /// The heads on z_H `[B*S*D]`: logits `[B, L, V]` of positions P.., Q `[B, 2]` from
    /// position 0.
    fn heads(&self, zh: &[f32]) -> Result<(Tensor, Tensor)> {
        let cfg = &self.m.cfg;
        let (b, s) = self.shape;
        let d = cfg.hidden_size;
        let (p, l, v) = (cfg.puzzle_emb_len(), cfg.seq_len, cfg.vocab_size);
        let [lm, qw, qb] = self.weights.heads()?;
        let products = self.m.products();
        let mut logits = vec![0f32; b * l * v];
        for bi in 0..b {
            let rows = &zh[(bi * s + p) * d..(bi * s + p + l) * d];
            let out = &mut logits[bi * l * v..(bi + 1) * l * v];
            products.matmul_into(l, v, d, rows, gemm::Op::N, lm, gemm::Op::T, out);
        }
        let mut q = vec![0f32; b * 2];
        for bi in 0..b {
            let first = &zh[bi * s * d..(bi * s + 1) * d];
            for k in 0..2 {
                // the same product as the linear op (one row), then the bias
                let w = &qw[k * d..(k + 1) * d];
                let mut dot = [0f32];
                products.matmul_into(1, 1, d, first, gemm::Op::N, w, gemm::Op::T, &mut dot);
                q[bi * 2 + k] = dot[0] + qb[k];
            }
        }
        let dev = self.m.device();
        Ok((
            Tensor::from_vec(logits, (b, l, v), dev)?,
            Tensor::from_vec(q, (b, 2), dev)?,
        ))
    }
}
