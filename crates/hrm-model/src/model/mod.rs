//! The Hierarchical Reasoning Model, ACT v1, on candle: weights, block, reasoning module, input
//! embedding and one segment, in the order of the reference's `hrm_act_v1.py`. The same file runs
//! TRM (one network for both updates, the gradient through the whole last H cycle, optionally the
//! `mlp_t` sequence SwiGLU instead of attention) and the transformer baseline (one call of the H
//! blocks per segment): what differs is the call schedule ([`ModelConfig::schedule`]), which
//! blocks a z_H update runs, and the block's mixer.
//!
//! The ACT wrapper and its carry are in [`act`], the table of tensors in [`weights`], observers
//! of the forward in [`observe`]. The no-gradient calls run through an inference engine
//! ([`crate::infer::Engine`], behind [`act::NoGradCalls`]), which may use faster host kernels;
//! this file is the reference path they are checked against. The equations are written out in `docs/model.md`.
//!
//! Shape legend: B batch, L seq_len (tokens), P puzzle-prefix positions, S = P + L, D hidden,
//! V vocab, I SwiGLU inner width, Dp puzzle_emb_ndim.
//!
//! Parameters are candle `Var`s in f32 named exactly like the reference's `state_dict` keys
//! (`inner.H_level.layers.0.self_attn.qkv_proj.weight`, ...). The no-gradient calls use detached
//! views of the weights, so they record no autograd graph: memory does not grow with
//! `H_cycles x L_cycles` (see the test `no_grad_cycles_record_no_graph`).

pub mod act;
pub mod observe;
pub mod weights;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::config::{Call, ForwardDtype, ModelConfig, PosEncoding};
use crate::init::trunc_normal;
use crate::ops::{self, Attention, Products, RopeTables};
use crate::Result;
pub use act::{Carry, Mode, NoGradCalls, StepOutput};
pub use observe::{Event, Observer, Trace};
use weights::{Init, Slot};
pub use weights::{TensorKind, Weights};

/// Learned-position mix factor: the reference's literal 0.707106781 (~1/sqrt(2)), kept as written
/// so that the f32 rounding of the product is the reference's.
#[allow(clippy::approx_constant)]
const LEARNED_POS_SCALE: f64 = 0.707106781;

/// What one segment produces.
#[derive(Debug)]
pub struct Segment {
    /// The new z_H `[B, S, D]` (detached).
    pub z_h: Tensor,
    /// The new z_L `[B, S, D]` (detached).
    pub z_l: Tensor,
    /// LM logits `[B, L, V]` in the forward dtype (part of the graph when it had a gradient).
    pub logits: Tensor,
    /// Q logits `[B, 2]` (halt, continue), f32.
    pub q: Tensor,
}

/// The HRM ACT v1 model.
#[derive(Debug)]
pub struct Hrm {
    /// Architecture.
    pub cfg: ModelConfig,
    device: Device,
    /// Activation dtype.
    fdt: DType,
    /// Precision of the CPU ops' matrix products.
    products: Products,
    /// The tensors.
    pub weights: Weights,
    attn: Attention,
}

fn dtype_of(f: ForwardDtype) -> DType {
    match f {
        ForwardDtype::F32 => DType::F32,
        ForwardDtype::BF16 => DType::BF16,
    }
}

/// How a forward dtype computes on a device: `(activations, products)`. A bf16 forward is bf16
/// activations on a GPU (the reference's autocast-free bf16 model), and f32 activations with bf16
/// matrix products on the CPU (AMX or AVX512-BF16 products; norms, softmax, SwiGLU, gradients and
/// optimizer in f32).
fn precision(f: ForwardDtype, device: &Device) -> (DType, Products) {
    match f {
        ForwardDtype::F32 => (DType::F32, Products::F32),
        ForwardDtype::BF16 if device.is_cpu() => (DType::F32, Products::Bf16),
        ForwardDtype::BF16 => (DType::BF16, Products::F32),
    }
}

impl Hrm {
    // --------------------------------------------------------------------------------------------
    // Weights
    // --------------------------------------------------------------------------------------------

    /// Build a freshly initialised model (the reference's initialisation; our own seeded RNG).
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut impl Rng) -> Result<Self> {
        cfg.validate()?;
        if device.is_cpu() {
            cfg.check_memory()?;
        }
        let fdt = dtype_of(cfg.forward_dtype);
        let weights = Weights::build(cfg, |e| {
            let n = e.shape.iter().product();
            let v = match e.init {
                Init::TruncNormal(std) => {
                    Var::from_vec(trunc_normal(n, std, rng), &*e.shape, device)?
                }
                Init::Zeros => Var::zeros(&*e.shape, DType::F32, device)?,
                Init::Fill(x) => Var::from_vec(vec![x; n], &*e.shape, device)?,
            };
            // the reference draws H_init/L_init directly in the forward dtype
            if matches!(e.slot, Slot::HInit | Slot::LInit) && fdt != DType::F32 {
                v.set(&v.as_tensor().to_dtype(fdt)?.to_dtype(DType::F32)?)?;
            }
            Ok(v)
        })?;
        Ok(Self::assemble(cfg, device, weights))
    }

    /// Build a model from a state dict (keys as in [`Hrm::named_tensors`]). Strict: every
    /// missing, unexpected or mis-shaped key is reported by name in one error.
    pub fn from_state_dict(
        cfg: &ModelConfig,
        device: &Device,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        cfg.validate()?;
        if device.is_cpu() {
            cfg.check_memory()?;
        }
        let weights = Weights::from_state_dict(cfg, device, tensors)?;
        Ok(Self::assemble(cfg, device, weights))
    }

    fn assemble(cfg: &ModelConfig, device: &Device, weights: Weights) -> Self {
        let rope = match cfg.pos_encodings {
            PosEncoding::Rope => Some(Arc::new(RopeTables::new(
                cfg.full_seq_len(),
                cfg.head_dim(),
                cfg.rope_theta,
            ))),
            PosEncoding::Learned | PosEncoding::None => None,
        };
        let (fdt, products) = precision(cfg.forward_dtype, device);
        Self {
            cfg: cfg.clone(),
            device: device.clone(),
            fdt,
            products,
            weights,
            attn: Attention {
                num_heads: cfg.num_heads,
                head_dim: cfg.head_dim(),
                rope,
            },
        }
    }

    /// Every state-dict entry in the reference's order: `(key, var, kind)`, keys starting `inner.`.
    pub fn named_tensors(&self) -> Vec<(String, &Var, TensorKind)> {
        weights::table(&self.cfg)
            .into_iter()
            .map(|e| (e.key, self.weights.get(e.slot), e.kind))
            .collect()
    }

    /// The trainable parameters in the reference's `named_parameters()` order.
    pub fn parameters(&self) -> Vec<(String, &Var)> {
        self.named_tensors()
            .into_iter()
            .filter(|(_, _, k)| *k == TensorKind::Parameter)
            .map(|(n, v, _)| (n, v))
            .collect()
    }

    /// Expected shape of every state-dict key.
    pub fn expected_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
        weights::table(cfg)
            .into_iter()
            .map(|e| (e.key, e.shape))
            .collect()
    }

    /// The state dict (f32 tensors sharing storage with the model; clone before mutating).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.named_tensors()
            .into_iter()
            .map(|(k, v, _)| (k, v.as_detached_tensor()))
            .collect()
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Activation dtype (f32 or bf16).
    pub fn forward_dtype(&self) -> DType {
        self.fdt
    }

    /// Precision of the matrix products of the CPU ops (bf16 for a bf16 forward on the CPU).
    pub fn products(&self) -> Products {
        self.products
    }

    /// The GPU's bf16 numerics on any device: bf16 activations through candle's ops (instead of
    /// the CPU's f32 activations with bf16 products), for checking the GPU path on a CPU. A model
    /// with an f32 forward is returned unchanged.
    pub fn with_bf16_activations(mut self) -> Self {
        if self.cfg.forward_dtype == ForwardDtype::BF16 {
            (self.fdt, self.products) = (DType::BF16, Products::F32);
        }
        self
    }

    /// The attention op of every block (heads, RoPE tables).
    pub fn attention(&self) -> &Attention {
        &self.attn
    }

    /// A weight in the forward dtype; detached (no graph) unless `grad`.
    fn weight(&self, v: &Var, grad: bool) -> Result<Tensor> {
        let t = if grad {
            v.as_tensor().clone()
        } else {
            v.as_detached_tensor()
        };
        Ok(if t.dtype() != self.fdt {
            t.to_dtype(self.fdt)?
        } else {
            t
        })
    }

    // --------------------------------------------------------------------------------------------
    // Block: post-norm, attention (or TRM's mlp_t) then SwiGLU
    // --------------------------------------------------------------------------------------------

    /// `h = norm(h + attn(h)); h = norm(h + mlp(h))` for block `layer` of a z_H (`h_level`) or
    /// z_L update; `h` `[B, S, D]`. `CastedLinear` is `x [.., in] @ w^T` with `w [out, in]`.
    /// With `mlp_t` the attention is TRM's SwiGLU across the sequence, normalised over S:
    /// `u = hᵀ [B, D, S]; u = norm(u + mlp_t(u)); h = uᵀ`.
    fn block(
        &self,
        (h_level, layer): (bool, usize),
        h: &Tensor,
        grad: bool,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        let [w0, w1, gu_w, down_w] = &self.blocks(h_level)[layer];
        let eps = self.cfg.rms_norm_eps;
        let mut show = |part, t: &Tensor| {
            let e = Event::Block {
                h_level,
                layer,
                part,
            };
            if obs.wants(&e) {
                obs.observe(e, t);
            }
        };
        // attention and SwiGLU each fused with the projection after them, and with bf16 products
        // on the CPU with the one before too: what they fuse is recomputed in the backward
        // instead of held by the graph (peak memory)
        let h = if self.cfg.mlp_t {
            let (gu, down) = (self.weight(w0, grad)?, self.weight(w1, grad)?);
            // [B, S, D]
            ops::mlp_t_block(h, &gu, &down, eps, self.products, &mut |m| show("mlp_t", m))?
        } else {
            let (qkv_w, o_w) = (self.weight(w0, grad)?, self.weight(w1, grad)?);
            // qkv = h · qkv_wᵀ [B, S, 3D]; a = attn(qkv) · o_wᵀ [B, S, D]
            let a = ops::linear_then_linear(h, &qkv_w, &self.attn, &o_w, self.products)?;
            show("attn", &a);
            ops::add_rms_norm(h, &a, eps)?
        };
        let (gu_w, down_w) = (self.weight(gu_w, grad)?, self.weight(down_w, grad)?);
        // gu = h · gu_wᵀ [B, S, 2I]; m = swiglu(gu) · down_wᵀ [B, S, D]
        let m = ops::linear_then_linear(&h, &gu_w, &ops::SwiGlu, &down_w, self.products)?;
        show("mlp", &m);
        let out = ops::add_rms_norm(&h, &m, eps)?;
        show("out", &out);
        Ok(out)
    }

    /// Whether a z_H (`h_update`) or z_L update runs the H blocks (else the L blocks): HRM's two
    /// modules, TRM's one network (always L), the baseline's one stack (H).
    pub(crate) fn runs_h_blocks(&self, h_update: bool) -> bool {
        h_update && self.cfg.h_update_uses_h_blocks()
    }

    /// The blocks a z_H (`h_level`) or z_L update runs.
    pub(crate) fn blocks(&self, h_level: bool) -> &[[Var; 4]] {
        if self.runs_h_blocks(h_level) {
            &self.weights.h_level
        } else {
            &self.weights.l_level
        }
    }

    // --------------------------------------------------------------------------------------------
    // Reasoning module f(z, u)
    // --------------------------------------------------------------------------------------------

    /// Add the injection once, then the block stack: `z [B, S, D]`, `inj [B, S, D]`.
    fn module(
        &self,
        h_level: bool,
        z: &Tensor,
        inj: &Tensor,
        grad: bool,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        let mut z = (z + inj)?;
        for layer in 0..self.blocks(h_level).len() {
            z = self.block((h_level, layer), &z, grad, obs)?;
        }
        let e = Event::Module { h_level };
        if obs.wants(&e) {
            obs.observe(e, &z);
        }
        Ok(z)
    }

    // --------------------------------------------------------------------------------------------
    // Input embedding
    // --------------------------------------------------------------------------------------------

    /// Input encoding x̃ `[B, S, D]`: token embeddings, the puzzle-embedding prefix (zero-padded to
    /// P*D), learned positions if any, times sqrt(D). `inputs` `[B, L]`; `puzzle_rows` are
    /// `[B, Dp]` in f32.
    pub(crate) fn input_embeddings(
        &self,
        inputs: &Tensor,
        puzzle_rows: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, l) = inputs.dims2()?;
        let d = cfg.hidden_size;
        // Rows are gathered from the f32 master table and then cast: the same values as casting
        // the table first (the reference's `embedding(weight.to(dtype))`), but the backward
        // scatter-adds B*L row gradients into V rows in f32; in bf16 that sum loses most of its
        // bits (measured gradient cosine 0.95 at batch 64 against f32, 0.999 this way).
        let mut x = self
            .weights
            .embed_tokens
            .as_tensor()
            .index_select(&inputs.flatten_all()?, 0)?
            .to_dtype(self.fdt)?
            .reshape((b, l, d))?;
        if let Some(rows) = puzzle_rows {
            let p = cfg.puzzle_emb_len();
            let mut rows = rows.to_dtype(self.fdt)?;
            let pad = p * d - cfg.puzzle_emb_ndim;
            if pad > 0 {
                let zeros = Tensor::zeros((b, pad), self.fdt, &self.device)?;
                rows = Tensor::cat(&[&rows, &zeros], 1)?;
            }
            x = Tensor::cat(&[&rows.reshape((b, p, d))?, &x], 1)?;
        }
        if let Some(pos) = &self.weights.embed_pos {
            // broadcast over the batch before the cast, so the backward sums over it in f32
            let pos = pos
                .as_tensor()
                .unsqueeze(0)?
                .broadcast_as(x.shape())?
                .to_dtype(self.fdt)?;
            x = ((x + pos)? * LEARNED_POS_SCALE)?;
        }
        Ok((x * (d as f64).sqrt())?)
    }

    // --------------------------------------------------------------------------------------------
    // Segment: H_cycles x L_cycles module calls, then the heads
    // --------------------------------------------------------------------------------------------

    /// One segment (the reference's inner forward): the calls of [`ModelConfig::schedule`] that
    /// carry no gradient ([`Hrm::segment_cycles`]), then the ones that do, with a gradient when
    /// `grad`, and the heads ([`Hrm::segment_last`]). With `grad == false` nothing records a graph.
    pub fn segment(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        grad: bool,
        obs: &mut dyn Observer,
    ) -> Result<Segment> {
        let (z_h, z_l) = self.segment_cycles(z_h, z_l, x, obs)?;
        self.segment_last(z_h, z_l, x, grad, obs)
    }

    /// The calls of a segment in [`ModelConfig::schedule`] order: `z_L = f(z_L, z_H + x̃)`,
    /// `z_H = f(z_H, z_L)` (the baseline: `z_H = f(z_H, x̃)`). The injection is (z_H + x̃) first,
    /// then added to z_L, as in the reference (the order matters for bitwise bf16 parity).
    fn run_calls(
        &self,
        calls: &[Call],
        (mut z_h, mut z_l): (Tensor, Tensor),
        x: &Tensor,
        grad: bool,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)> {
        for c in calls {
            if !c.h {
                z_l = self.module(false, &z_l, &(&z_h + x)?, grad, obs)?;
            } else if self.cfg.has_z_l() {
                z_h = self.module(true, &z_h, &z_l, grad, obs)?;
            } else {
                z_h = self.module(true, &z_h, x, grad, obs)?;
            }
        }
        Ok((z_h, z_l))
    }

    /// The no-gradient part of a segment, on detached tensors: HRM's one-step gradient
    /// approximation leaves all calls but the last L and the last H here, TRM the first
    /// `H_cycles - 1` cycles, the baseline nothing.
    pub(crate) fn segment_cycles(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)> {
        let (calls, n) = self.cfg.split_schedule();
        self.run_calls(
            &calls[..n],
            (z_h.detach(), z_l.detach()),
            &x.detach(),
            false,
            obs,
        )
    }

    /// The calls of a segment that carry the gradient (with it when `grad`) and the heads:
    /// logits of positions P.. of z_H, Q logits from position 0.
    pub(crate) fn segment_last(
        &self,
        z_h: Tensor,
        z_l: Tensor,
        x: &Tensor,
        grad: bool,
        obs: &mut dyn Observer,
    ) -> Result<Segment> {
        let (calls, n) = self.cfg.split_schedule();
        let x = if grad { x.clone() } else { x.detach() };
        let (z_h, z_l) = self.run_calls(&calls[n..], (z_h, z_l), &x, grad, obs)?;
        let p = self.cfg.puzzle_emb_len();
        let w = &self.weights;
        let logits = ops::linear(&z_h, &self.weight(&w.lm_head, grad)?, self.products)?; // [B, S, V]
        let logits = logits.narrow(1, p, self.cfg.seq_len)?; // [B, L, V]
        let first = z_h.narrow(1, 0, 1)?.squeeze(1)?; // [B, D]
        let q = ops::linear(&first, &self.weight(&w.q_head_w, grad)?, self.products)?
            .broadcast_add(&self.weight(&w.q_head_b, grad)?)?
            .to_dtype(DType::F32)?; // [B, 2]
        Ok(Segment {
            z_h: z_h.detach(),
            z_l: z_l.detach(),
            logits,
            q,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use rand::SeedableRng;

    fn tiny(batch: usize) -> ModelConfig {
        ModelConfig {
            halt_max_steps: 3,
            ..ModelConfig::tiny(batch)
        }
    }

    fn batch(cfg: &ModelConfig, seed: u64) -> Batch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Batch::random(
            cfg.batch_size,
            cfg.seq_len,
            cfg.vocab_size,
            0.5,
            None,
            &mut rng,
        )
    }

    #[test]
    fn state_dict_round_trip_and_strict_loading() {
        let cfg = tiny(2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let sd: HashMap<String, Tensor> = m.state_dict().into_iter().collect();
        assert_eq!(sd.len(), 7 + 16);
        let m2 = Hrm::from_state_dict(&cfg, &Device::Cpu, &sd).unwrap();
        assert_eq!(m2.parameters().len(), m.parameters().len());
        let mut bad = sd.clone();
        bad.remove("inner.lm_head.weight");
        bad.insert(
            "inner.extra".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        bad.insert(
            "inner.q_head.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = Hrm::from_state_dict(&cfg, &Device::Cpu, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key `inner.lm_head.weight`"), "{e}");
        assert!(e.contains("unexpected key `inner.extra`"), "{e}");
        assert!(e.contains("`inner.q_head.bias` has shape [3]"), "{e}");
        // integer weights and non-finite values are refused by key
        let mut bad = sd.clone();
        let lm = &sd["inner.lm_head.weight"];
        bad.insert(
            "inner.lm_head.weight".into(),
            lm.to_dtype(DType::I64).unwrap(),
        );
        let h = Tensor::from_vec(
            vec![f32::NAN; cfg.hidden_size],
            cfg.hidden_size,
            &Device::Cpu,
        );
        bad.insert("inner.H_init".into(), h.unwrap());
        let e = Hrm::from_state_dict(&cfg, &Device::Cpu, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`inner.lm_head.weight` has dtype I64"), "{e}");
        assert!(e.contains("`inner.H_init` holds 64 NaN"), "{e}");
    }

    #[test]
    fn eval_runs_exactly_halt_max_steps() {
        let cfg = tiny(3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let b = batch(&cfg, 2);
        let mut carry = m.initial_carry(&b).unwrap();
        for k in 1..=cfg.halt_max_steps {
            let (c, out) = m.act_step(&carry, &b, Mode::Eval, &mut rng).unwrap();
            assert_eq!(out.logits.dims(), &[3, cfg.seq_len, cfg.vocab_size]);
            assert!(c.steps.iter().all(|&s| s as usize == k));
            assert_eq!(c.halted.iter().all(|&h| h), k == cfg.halt_max_steps);
            assert!(out.target_q_continue.is_none());
            carry = c;
        }
    }

    /// A tiny TRM (attention or mlp_t) or baseline of `tiny`'s sizes.
    fn tiny_as(arch: crate::config::Arch, mlp_t: bool, batch: usize) -> ModelConfig {
        ModelConfig {
            puzzle_emb_len: (arch == crate::config::Arch::Trm).then_some(2),
            ..tiny(batch).with_arch(arch, mlp_t)
        }
    }

    /// TRM back-propagates through the whole last H cycle: its graph grows with L_cycles (the
    /// L_cycles + 1 calls that carry the gradient) but not with H_cycles (the others run without
    /// it); the baseline's one call always carries it.
    #[test]
    fn trm_gradient_spans_the_last_cycle_only() {
        use crate::config::Arch;
        let count = |arch, mlp_t, h: usize, l: usize| {
            let cfg = ModelConfig {
                h_cycles: h,
                l_cycles: l,
                ..tiny_as(arch, mlp_t, 2)
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
            let b = batch(&cfg, 4);
            let carry = m.initial_carry(&b).unwrap();
            let (_, out) = m.act_step(&carry, &b, Mode::Train, &mut rng).unwrap();
            out.logits.sum_all().unwrap().sorted_nodes().len()
        };
        for mlp_t in [false, true] {
            let (one, three) = (count(Arch::Trm, mlp_t, 1, 2), count(Arch::Trm, mlp_t, 3, 2));
            assert_eq!(one, three, "TRM's no-gradient cycles recorded graph nodes");
            let (l2, l4) = (count(Arch::Trm, mlp_t, 2, 2), count(Arch::Trm, mlp_t, 2, 4));
            // two more L calls in the gradient cycle: each adds the same number of nodes
            let l3 = count(Arch::Trm, mlp_t, 2, 3);
            assert!(l2 < l3 && l3 < l4 && l4 - l3 == l3 - l2, "{l2} {l3} {l4}");
        }
        let t = count(Arch::Transformer, false, 1, 0);
        assert_eq!(
            t,
            count(Arch::Transformer, false, 5, 7),
            "the baseline ignores the cycles"
        );
    }

    /// The halting rule of a training step and whether it learns a Q-continue target, per
    /// model, with the Q head's bias alone deciding (weights 0): q_halt = 0.5 > 0 but below
    /// q_continue = 2.
    #[test]
    fn halting_rules_of_each_model() {
        use crate::config::Arch;
        let cases = [
            // (arch, no_ACT_continue, halts at step 1, learns a target)
            (Arch::Hrm, None, false, true),
            (Arch::Trm, None, true, false),
            (Arch::Trm, Some(false), false, true),
            (Arch::Transformer, None, false, false),
        ];
        for (arch, no_act, halts, target) in cases {
            let cfg = ModelConfig {
                no_act_continue: no_act,
                halt_exploration_prob: 0.0,
                ..tiny_as(arch, false, 3)
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
            let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
            let bias = Tensor::new(&[0.5f32, 2.0], &Device::Cpu).unwrap();
            m.weights.q_head_b.set(&bias).unwrap();
            let b = batch(&cfg, 6);
            let carry = m.initial_carry(&b).unwrap();
            let (c, out) = m.act_step(&carry, &b, Mode::Train, &mut rng).unwrap();
            let what = format!("{arch:?} no_ACT_continue {no_act:?}");
            assert!(
                c.halted.iter().all(|&h| h == halts),
                "{what}: {:?}",
                c.halted
            );
            assert_eq!(out.target_q_continue.is_some(), target, "{what}");
            // evaluation never halts early, whatever the rule
            let (c, _) = m.act_step(&carry, &b, Mode::Eval, &mut rng).unwrap();
            assert!(c.halted.iter().all(|&h| !h), "{what}");
        }
        // the baseline with act_enabled = false never halts on the Q head in training
        let cfg = ModelConfig {
            act_enabled: Some(false),
            halt_exploration_prob: 0.0,
            ..tiny_as(Arch::Transformer, false, 3)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let bias = Tensor::new(&[9.0f32, -9.0], &Device::Cpu).unwrap();
        m.weights.q_head_b.set(&bias).unwrap();
        let b = batch(&cfg, 6);
        let (c, _) = m
            .act_step(&m.initial_carry(&b).unwrap(), &b, Mode::Train, &mut rng)
            .unwrap();
        assert!(c.halted.iter().all(|&h| !h));
    }

    /// Each model's state dict: TRM has no H blocks (and mlp_t blocks no attention), the
    /// baseline no L blocks and no L_init; both load back strictly.
    #[test]
    fn state_dicts_of_trm_and_the_baseline() {
        use crate::config::Arch;
        for (arch, mlp_t, has, lacks) in [
            (
                Arch::Trm,
                false,
                "inner.L_level.layers.1.self_attn.qkv_proj.weight",
                "inner.H_level",
            ),
            (
                Arch::Trm,
                true,
                "inner.L_level.layers.0.mlp_t.down_proj.weight",
                "self_attn",
            ),
            (
                Arch::Transformer,
                false,
                "inner.H_level.layers.7.mlp.down_proj.weight",
                "L_",
            ),
        ] {
            let cfg = tiny_as(arch, mlp_t, 2);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
            let sd: HashMap<String, Tensor> = m.state_dict().into_iter().collect();
            assert!(sd.contains_key(has), "{arch:?}: no {has}");
            assert!(
                sd.keys().all(|k| !k.contains(lacks)),
                "{arch:?}: has {lacks}"
            );
            let n: usize = m.parameters().iter().map(|(_, v)| v.elem_count()).sum();
            assert_eq!(n, cfg.num_params(), "{arch:?}");
            Hrm::from_state_dict(&cfg, &Device::Cpu, &sd).unwrap();
        }
        // mlp_t's widths: I_t = 256 * ceil(round(4 * S * 2/3) / 256) for S = 81 + 2
        let cfg = tiny_as(Arch::Trm, true, 2);
        let shapes: HashMap<String, Vec<usize>> = Hrm::expected_shapes(&cfg).into_iter().collect();
        assert_eq!(
            shapes["inner.L_level.layers.0.mlp_t.gate_up_proj.weight"],
            [512, 83]
        );
        assert_eq!(
            shapes["inner.L_level.layers.0.mlp_t.down_proj.weight"],
            [83, 256]
        );
    }

    #[test]
    fn no_grad_cycles_record_no_graph() {
        // The graph of a training segment must not depend on H_cycles x L_cycles: count the
        // tensors reachable from the logits for 1x1 and 3x3 cycles.
        let count = |h: usize, l: usize| {
            let cfg = ModelConfig {
                h_cycles: h,
                l_cycles: l,
                ..tiny(2)
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
            let b = batch(&cfg, 4);
            let carry = m.initial_carry(&b).unwrap();
            let (_, out) = m.act_step(&carry, &b, Mode::Train, &mut rng).unwrap();
            let loss = out.logits.sum_all().unwrap();
            loss.sorted_nodes().len()
        };
        let small = count(1, 1);
        let big = count(3, 3);
        assert_eq!(small, big, "the no-gradient cycles recorded graph nodes");
    }
}
