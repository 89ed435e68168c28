//! The inference engine: a model borrowed with a choice of kernels for its no-gradient calls,
//! and the one no-gradient rollout that evaluation, solving and analysis use.
//!
//! [`Engine`] borrows an [`Hrm`] and owns what inference adds to it: the kernel choice
//! ([`Kernels`]), the block weights packed for that kernel, and the scratch buffers of the host
//! path ([`host`]). A training step uses a plain engine for its no-gradient cycles
//! ([`Hrm::act_step`] builds one), and packed weights live only in an engine, so they cannot
//! reach a gradient step. On the CPU in f32 the no-gradient calls run on host buffers with no
//! autograd bookkeeping; elsewhere (a GPU, a bf16 forward, or [`Engine::candle`]) they run the
//! model's candle path.

mod host;

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use rand::{RngCore, SeedableRng};

use crate::cpu::{bf16, packed};
use crate::model::act::{self, Carry, Mode, StepOutput};
use crate::model::{Hrm, NoGradCalls, Observer, Segment};
use crate::ops::Products;
use crate::{to_host_f32, Batch, Error, Result};
use host::{PackedBlocks, Workspace};

/// The kernels of the block matrix products in the no-gradient calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The general f32 product (the numbers of the reference path).
    Plain,
    /// The small-batch f32 kernel with weights packed once (`hrm solve`: up to
    /// [`packed::MAX_ROWS`] rows on a CPU with AVX-512; elsewhere it is [`Kernels::Plain`]). The
    /// same numbers up to the order of the f32 sums.
    PackedF32,
    /// bf16 products with f32 accumulation on Intel AMX or AVX512-BF16 (changes the numbers:
    /// bf16 operands).
    Bf16,
}

/// A model with the kernels, packed weights and workspace of its no-gradient calls.
#[derive(Debug)]
pub struct Engine<'m> {
    model: &'m Hrm,
    /// Host buffers (CPU, f32) or the model's candle path.
    host: bool,
    packed: Option<PackedBlocks>,
    workspace: RefCell<Workspace>,
}

impl NoGradCalls for Engine<'_> {
    fn model(&self) -> &Hrm {
        self.model
    }

    fn cycles(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)> {
        if self.host {
            let (z_h, z_l, _) = self.host_segment(z_h, z_l, x, false, obs)?;
            Ok((z_h, z_l))
        } else {
            self.model.segment_cycles(z_h, z_l, x, obs)
        }
    }

    fn segment(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        obs: &mut dyn Observer,
    ) -> Result<Segment> {
        if self.host {
            let (z_h, z_l, heads) = self.host_segment(z_h, z_l, x, true, obs)?;
            let (logits, q) = heads.ok_or_else(|| Error::msg("internal: no heads"))?;
            Ok(Segment {
                z_h,
                z_l,
                logits,
                q,
            })
        } else {
            self.model.segment(z_h, z_l, x, false, obs)
        }
    }

    /// The scratch buffers go back to the allocator; the next host call allocates them again.
    fn release_workspace(&self) {
        if let Ok(mut ws) = self.workspace.try_borrow_mut() {
            *ws = Workspace::default();
        }
    }
}

impl Hrm {
    /// One ACT step (one segment for every row): halted rows restart on their row of `batch`,
    /// the others continue their own example and ignore `batch`'s row at their index. Training
    /// steps get the gradient; the no-gradient calls of either mode run on the model's own
    /// kernels, built here (`Engine::new(self, Kernels::Plain)`: the plain engine, whose bf16
    /// forward on the CPU packs the block weights once per step instead of once per product,
    /// the same numbers; inference with other kernels: [`Engine::act_step`]), so a gradient step
    /// never sees inference-only kernels.
    pub fn act_step(
        &self,
        carry: &Carry,
        batch: &Batch,
        mode: Mode,
        rng: &mut dyn RngCore,
    ) -> Result<(Carry, StepOutput)> {
        act::step(
            &Engine::new(self, Kernels::Plain)?,
            carry,
            batch,
            mode,
            rng,
            &mut (),
        )
    }
}

/// One segment's outputs on the host, as a rollout shows them.
#[derive(Debug, Clone)]
pub struct HostSegment {
    /// Logits `[B * L * V]`, f32.
    pub logits: Vec<f32>,
    /// Q-halt logits `[B]`.
    pub q_halt: Vec<f32>,
    /// Q-continue logits `[B]`.
    pub q_continue: Vec<f32>,
}

impl<'m> Engine<'m> {
    /// The plain engine: the general kernels, on host buffers where the model is f32 on the CPU.
    pub fn plain(model: &'m Hrm) -> Self {
        Self {
            model,
            host: model.device().is_cpu() && model.forward_dtype() == DType::F32,
            packed: None,
            workspace: RefCell::default(),
        }
    }

    /// The model's own candle path for every call (the reference path the host path is checked
    /// against).
    pub fn candle(model: &'m Hrm) -> Self {
        Self {
            host: false,
            ..Self::plain(model)
        }
    }

    /// An engine with `kernels`, packing the block weights from their current values.
    /// [`Kernels::Bf16`] needs an f32 model on the CPU and a CPU with a bf16 unit (AMX under
    /// Linux, or AVX512-BF16), else it is an error; [`Kernels::PackedF32`] packs only
    /// where its kernel would run (an f32 model with attention blocks on the CPU whose batch,
    /// `cfg.batch_size` x the full sequence, is small enough, on a CPU with AVX-512) and is plain
    /// elsewhere.
    pub fn new(model: &'m Hrm, kernels: Kernels) -> Result<Self> {
        let mut e = Self::plain(model);
        let bf16_packs = || host::pack_blocks(model, host::bf16_block).map(PackedBlocks::Bf16);
        if kernels == Kernels::Bf16 && !bf16::available() {
            return Err(Error::msg(format!(
                "bf16 matrix products need {}, and this CPU offers neither (or HRM_NO_SIMD is \
                 set); run without the bf16 option",
                bf16::UNITS
            )));
        }
        if model.products() == Products::Bf16 {
            // a bf16 forward on the CPU: its own products whatever was asked, the attention
            // blocks' weights packed once (where the CPU has no bf16 unit the kernel computes
            // the same numbers in f32)
            if !model.cfg.mlp_t {
                e.packed = Some(bf16_packs()?);
            }
            return Ok(e);
        }
        match kernels {
            Kernels::Plain => {}
            Kernels::Bf16 => {
                if model.cfg.mlp_t {
                    return Err(Error::msg(
                        "bf16 matrix products are for attention blocks; this TRM model uses \
                         mlp_t: run without the bf16 option",
                    ));
                }
                if !e.host {
                    return Err(Error::msg(
                        "bf16 matrix products need an f32 model on the CPU; on a GPU use a \
                         bfloat16 forward (arch.forward_dtype = \"bfloat16\")",
                    ));
                }
                e.packed = Some(bf16_packs()?);
            }
            Kernels::PackedF32 => {
                let rows = model.cfg.batch_size * model.cfg.full_seq_len();
                if e.host && !model.cfg.mlp_t && packed::fast(rows) {
                    let blocks = host::pack_blocks(model, host::f32_block)?;
                    e.packed = Some(PackedBlocks::F32(blocks));
                }
            }
        }
        Ok(e)
    }

    /// The kernels in use (a [`Kernels::PackedF32`] request where its kernel would not run reads
    /// [`Kernels::Plain`]; a model with a bf16 forward on the CPU reads [`Kernels::Bf16`]).
    pub fn kernels(&self) -> Kernels {
        match &self.packed {
            None if self.model.products() == Products::Bf16 => Kernels::Bf16,
            None => Kernels::Plain,
            Some(PackedBlocks::F32(_)) => Kernels::PackedF32,
            Some(PackedBlocks::Bf16(_)) => Kernels::Bf16,
        }
    }

    /// The model.
    pub fn model(&self) -> &'m Hrm {
        self.model
    }

    fn host_segment(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        heads: bool,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor, Option<(Tensor, Tensor)>)> {
        let mut ws = self
            .workspace
            .try_borrow_mut()
            .map_err(|_| Error::msg("internal: the engine's workspace is in use"))?;
        host::segment(
            self.model,
            self.packed.as_ref(),
            &mut ws,
            z_h,
            z_l,
            x,
            heads,
            obs,
        )
    }

    /// One evaluation ACT step ([`Mode::Eval`]) with this engine's kernels; `obs` sees the
    /// intermediate tensors (pass `&mut ()` for none).
    pub fn act_step(
        &self,
        carry: &Carry,
        batch: &Batch,
        obs: &mut dyn Observer,
    ) -> Result<(Carry, StepOutput)> {
        // eval mode draws no random numbers
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        act::step(self, carry, batch, Mode::Eval, &mut rng, obs)
    }

    /// The no-gradient rollout: a fresh carry for `batch`, then up to `segments` evaluation ACT
    /// steps in which no row halts (every row runs every segment, whatever the model's
    /// `halt_max_steps`). After segment `k` (1-based), `each(k, &carry, &outputs)` sees the new
    /// carry and the segment's outputs on the host, and ends the rollout early by returning
    /// `false`. Returns the last carry (its `halted` all false, `steps` the segments run) and the
    /// last segment's outputs (None when `segments` is 0).
    pub fn rollout(
        &self,
        batch: &Batch,
        segments: usize,
        obs: &mut dyn Observer,
        mut each: impl FnMut(usize, &Carry, &HostSegment) -> Result<bool>,
    ) -> Result<(Carry, Option<HostSegment>)> {
        let mut carry = self.model.initial_carry(batch)?;
        let mut last = None;
        for k in 1..=segments {
            let (mut c, out) = self.act_step(&carry, batch, obs)?;
            let seg = HostSegment {
                logits: to_host_f32(&out.logits)?,
                q_halt: to_host_f32(&out.q_halt)?,
                q_continue: to_host_f32(&out.q_continue)?,
            };
            c.halted = vec![false; batch.batch_size];
            carry = c;
            let go = each(k, &carry, &seg)?;
            last = Some(seg);
            if !go {
                break;
            }
        }
        Ok((carry, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use candle_core::Device;

    /// A hidden-128 model (seed) for the kernel tests.
    fn model_128(seed: u64) -> Hrm {
        let cfg = ModelConfig {
            hidden_size: 128,
            num_heads: 4,
            halt_max_steps: 3,
            ..ModelConfig::tiny(3)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap()
    }

    fn batch(m: &Hrm, seed: u64) -> Batch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let c = &m.cfg;
        Batch::random(c.batch_size, c.seq_len, c.vocab_size, 0.5, None, &mut rng)
    }

    /// Logits and q_halt of the last segment of a rollout of `halt_max_steps` segments.
    fn last_segment(e: &Engine, b: &Batch) -> (Vec<f32>, Vec<f32>) {
        let segments = e.model().cfg.halt_max_steps;
        let (_, last) = e.rollout(b, segments, &mut (), |_, _, _| Ok(true)).unwrap();
        let s = last.unwrap();
        (s.logits, s.q_halt)
    }

    fn max_abs(x: &[f32]) -> f32 {
        x.iter().fold(0f32, |a, &v| a.max(v.abs()))
    }

    fn max_diff(x: &[f32], y: &[f32]) -> f32 {
        x.iter().zip(y).fold(0f32, |a, (p, q)| a.max((p - q).abs()))
    }

    /// The host path against the model's own candle path on the CPU (the reference path the
    /// host kernels must reproduce): the same numbers, for HRM, TRM (attention and mlp_t) and
    /// the baseline.
    #[test]
    fn host_path_follows_the_candle_path() {
        use crate::config::Arch;
        for (arch, mlp_t) in [
            (Arch::Hrm, false),
            (Arch::Trm, false),
            (Arch::Trm, true),
            (Arch::Transformer, false),
        ] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
            let cfg = ModelConfig {
                puzzle_emb_len: (arch == Arch::Trm).then_some(2),
                h_cycles: if arch == Arch::Trm { 2 } else { 1 },
                l_cycles: if arch == Arch::Trm { 2 } else { 0 },
                ..model_128(0).cfg.with_arch(arch, mlp_t)
            };
            let cfg = if arch == Arch::Hrm {
                model_128(0).cfg
            } else {
                cfg
            };
            let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
            host_matches_candle(&m, &format!("{arch:?} mlp_t {mlp_t}"));
            // a bf16 forward on the CPU: bf16 products on both paths, and the engine's weights
            // packed once give the numbers of the per-call packing
            let cfg16 = ModelConfig {
                forward_dtype: crate::config::ForwardDtype::BF16,
                ..cfg
            };
            let sd = m.state_dict().into_iter().collect();
            let m16 = Hrm::from_state_dict(&cfg16, &Device::Cpu, &sd).unwrap();
            host_matches_candle(&m16, &format!("bf16 {arch:?} mlp_t {mlp_t}"));
            let b = batch(&m16, 5);
            let packed = Engine::new(&m16, Kernels::PackedF32).unwrap();
            assert_eq!(packed.kernels(), Kernels::Bf16);
            assert_eq!(packed.packed.is_some(), !mlp_t);
            let once = last_segment(&packed, &b);
            assert_eq!(
                once,
                last_segment(&Engine::plain(&m16), &b),
                "{arch:?} packed once"
            );
            assert_ne!(
                once,
                last_segment(&Engine::plain(&m), &b),
                "{arch:?}: bf16 unused"
            );
        }
    }

    fn host_matches_candle(m: &Hrm, what: &str) {
        let b = batch(m, 5);
        let (host, candle) = (Engine::plain(m), Engine::candle(m));
        assert!(host.host && !candle.host);
        let (hl, hq) = last_segment(&host, &b);
        let (cl, cq) = last_segment(&candle, &b);
        let spread = max_abs(&cl);
        assert!(
            max_diff(&hl, &cl) <= 1e-5 * spread,
            "{what}: logits differ by {} of spread {spread}",
            max_diff(&hl, &cl)
        );
        assert!(
            max_diff(&hq, &cq) <= 1e-5 * (1.0 + max_abs(&cq)),
            "{what}: {hq:?} vs {cq:?}"
        );
    }

    /// bf16 matrix products (AMX) for evaluation: close to f32 at bf16 precision; where AMX is
    /// missing (or switched off) the engine refuses with a one-line error.
    #[test]
    fn bf16_matmul_eval_follows_f32() {
        let m = model_128(5);
        let b = batch(&m, 6);
        let (f32_logits, f32_q) = last_segment(&Engine::plain(&m), &b);
        if !bf16::available() {
            let e = Engine::new(&m, Kernels::Bf16).unwrap_err().to_string();
            assert!(e.contains("AMX"), "{e}");
            eprintln!("AMX is not available on this CPU: checked the refusal only");
            return;
        }
        let e = Engine::new(&m, Kernels::Bf16).unwrap();
        assert_eq!(e.kernels(), Kernels::Bf16);
        let (bf_logits, bf_q) = last_segment(&e, &b);
        // bf16 keeps 8 significant bits; over 3 segments x 2x2 cycles x 2 layers the logits
        // move by a few percent of their spread, not more
        let spread = max_abs(&f32_logits);
        let worst = max_diff(&f32_logits, &bf_logits);
        assert!(
            worst > 0.0,
            "bf16 products changed nothing: were they used?"
        );
        assert!(
            worst < 0.05 * spread,
            "max |diff| {worst} vs spread {spread}"
        );
        for (x, y) in f32_q.iter().zip(&bf_q) {
            assert!((x - y).abs() < 0.05 * (1.0 + x.abs()), "q {x} vs {y}");
        }
        // the model itself is untouched: a plain engine gives the f32 numbers again
        assert_eq!(last_segment(&Engine::plain(&m), &b), (f32_logits, f32_q));
    }

    /// Weights packed for the small-batch f32 kernel: the same outputs up to the order of the
    /// f32 sums. Without AVX-512 (or with HRM_NO_SIMD) nothing is packed and the engine is plain.
    #[test]
    fn packed_f32_eval_follows_f32() {
        let m = model_128(9);
        let b = batch(&m, 10);
        let rows = m.cfg.batch_size * m.cfg.full_seq_len();
        assert!(rows <= packed::MAX_ROWS);
        let plain = last_segment(&Engine::plain(&m), &b);
        let e = Engine::new(&m, Kernels::PackedF32).unwrap();
        if packed::fast(rows) {
            assert_eq!(e.kernels(), Kernels::PackedF32);
        } else {
            assert_eq!(e.kernels(), Kernels::Plain);
            eprintln!("no AVX-512 here (or HRM_NO_SIMD): nothing is packed, the plain kernel runs");
        }
        let packed_out = last_segment(&e, &b);
        let spread = max_abs(&plain.0);
        for (x, y) in plain.0.iter().zip(&packed_out.0) {
            // f32 sums in another order, through 3 segments of 2x2 cycles: ulps of the spread
            assert!((x - y).abs() <= 1e-4 * spread, "{x} vs {y}");
        }
        assert_eq!(last_segment(&Engine::plain(&m), &b), plain);
    }

    /// The rollout runs past the model's halt_max_steps when asked and stops when told.
    #[test]
    fn rollout_runs_the_segments_asked_and_stops_early() {
        let m = model_128(11);
        let b = batch(&m, 12);
        let e = Engine::plain(&m);
        let mut seen = Vec::new();
        let (c, _) = e
            .rollout(&b, 5, &mut (), |k, c, s| {
                assert_eq!(s.q_halt.len(), b.batch_size);
                assert!(c.halted.iter().all(|&h| !h));
                seen.push(k);
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        assert!(c.steps.iter().all(|&s| s == 5));
        let (c, _) = e.rollout(&b, 5, &mut (), |k, _, _| Ok(k < 2)).unwrap();
        assert!(c.steps.iter().all(|&s| s == 2));
    }
}
