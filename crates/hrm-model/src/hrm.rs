//! The Hierarchical Reasoning Model, ACT v1: blocks, H/L reasoning modules, one segment, and the
//! ACT wrapper with its carry.
//!
//! Mirrors sapientinc/HRM:models/hrm/hrm_act_v1.py (`HierarchicalReasoningModel_ACTV1Block`,
//! `..ReasoningModule`, `.._Inner`, `HierarchicalReasoningModel_ACTV1`) and the layers of
//! models/layers.py; paper arXiv 2506.21734 §2 (one-step gradient, deep supervision, ACT).
//!
//! Shape legend: B batch, L seq_len (tokens), P puzzle-prefix positions, S = P + L, D hidden,
//! V vocab, I SwiGLU inner width, Dp puzzle_emb_ndim.
//!
//! Parameters are candle `Var`s in f32 named exactly like the reference's `state_dict` keys
//! (`inner.H_level.layers.0.self_attn.qkv_proj.weight`, ...). The no-gradient cycles of a segment
//! use detached views of the weights, so they record no autograd graph: memory does not grow with
//! `H_cycles x L_cycles` (see the test `no_grad_cycles_record_no_graph`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
pub use hrm_data::Batch;
use rand::{Rng, RngCore};

use crate::config::{ForwardDtype, ModelConfig, PosEncoding};
use crate::init::trunc_normal;
use crate::ops::{self, Attention, RopeTables};
use crate::{amx, gemm, packed};
use crate::{to_host_f32, Error, Result};

/// Learned-position mix factor: the reference's literal 0.707106781 (~1/sqrt(2)), kept as written
/// so that the f32 rounding of the product is the reference's.
#[allow(clippy::approx_constant)]
const LEARNED_POS_SCALE: f64 = 0.707106781;

/// One transformer block's weights (post-norm, attention then SwiGLU).
#[derive(Debug, Clone)]
pub struct Block {
    /// `self_attn.qkv_proj.weight` `[3D, D]` (rows Q | K | V, heads contiguous).
    pub qkv_proj: Var,
    /// `self_attn.o_proj.weight` `[D, D]`.
    pub o_proj: Var,
    /// `mlp.gate_up_proj.weight` `[2I, D]` (rows gate | up).
    pub gate_up_proj: Var,
    /// `mlp.down_proj.weight` `[D, I]`.
    pub down_proj: Var,
}

/// Train or eval behaviour of the ACT wrapper (halting, exploration, Q target, sparse embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gradient through the last L and H calls; Q-halting with exploration; the extra
    /// no-gradient forward for the Q-continue target.
    Train,
    /// No gradient anywhere; every row runs exactly `halt_max_steps` segments.
    Eval,
}

/// The recurrent state carried between ACT steps (the reference's `..ACTV1Carry`).
#[derive(Debug, Clone)]
pub struct Carry {
    /// High-level state `[B, S, D]` (detached).
    pub z_h: Tensor,
    /// Low-level state `[B, S, D]` (detached).
    pub z_l: Tensor,
    /// Segments done in the current episode, per row.
    pub steps: Vec<u32>,
    /// Whether the row's episode ended (it restarts on the next batch row).
    pub halted: Vec<bool>,
    /// The example each row is working on.
    pub data: Batch,
}

/// What one ACT step produces besides the new carry.
#[derive(Debug)]
pub struct StepOutput {
    /// LM logits `[B, L, V]` in the forward dtype (part of the autograd graph in train mode).
    pub logits: Tensor,
    /// Q-halt logits `[B]`, f32.
    pub q_halt: Tensor,
    /// Q-continue logits `[B]`, f32.
    pub q_continue: Tensor,
    /// Bootstrapped Q-continue target `[B]` (train mode with `halt_max_steps > 1`).
    pub target_q_continue: Option<Vec<f32>>,
    /// The per-row copy of the puzzle-embedding rows that received the gradient (train mode),
    /// with the ids it was read from (the reference's `local_weights` / `local_ids`).
    pub puzzle_local: Option<(Var, Vec<i32>)>,
}

/// Recorded intermediate tensors of a forward (for localising a parity mismatch).
#[derive(Debug, Default)]
pub struct Trace {
    /// `(name, tensor)` in call order: `input_embeddings`, `call<i>.L` / `call<i>.H`,
    /// `call0.layer0.{attn,mlp,out}`.
    pub entries: Vec<(String, Tensor)>,
    calls: usize,
}

/// The HRM ACT v1 model.
#[derive(Debug)]
pub struct Hrm {
    /// Architecture.
    pub cfg: ModelConfig,
    device: Device,
    fdt: DType,
    /// `inner.H_init` `[D]`: initial z_H (buffer, never trained).
    pub h_init: Var,
    /// `inner.L_init` `[D]`: initial z_L (buffer, never trained).
    pub l_init: Var,
    /// `inner.embed_tokens.embedding_weight` `[V, D]`.
    pub embed_tokens: Var,
    /// `inner.embed_pos.embedding_weight` `[S, D]` with learned positions.
    pub embed_pos: Option<Var>,
    /// `inner.lm_head.weight` `[V, D]`.
    pub lm_head: Var,
    /// `inner.q_head.weight` `[2, D]` (row 0 halt, row 1 continue).
    pub q_head_w: Var,
    /// `inner.q_head.bias` `[2]`.
    pub q_head_b: Var,
    /// `inner.puzzle_emb.weights` `[num_puzzle_identifiers, Dp]` (buffer, trained by SignSGD).
    pub puzzle_emb: Option<Var>,
    /// `inner.H_level.layers.*`.
    pub h_level: Vec<Block>,
    /// `inner.L_level.layers.*`.
    pub l_level: Vec<Block>,
    attn: Attention,
    trace: Mutex<Option<Trace>>,
    /// Run the no-gradient module calls on host buffers (CPU, f32; see [`Hrm::segment`]).
    host_inference: bool,
    /// Reused buffers of the host inference path.
    workspace: Mutex<Workspace>,
    /// Copies of the block weights packed for an inference kernel (H blocks, then L; qkv, o,
    /// gate_up, down): [`Hrm::set_bf16_matmul`] or [`Hrm::set_packed_f32`].
    packed: Option<PackedBlocks>,
}

/// The block weights packed for one of the inference kernels.
#[derive(Debug)]
enum PackedBlocks {
    /// bf16 on AMX.
    Bf16(Vec<[amx::PackedBf16; 4]>),
    /// f32, small batches.
    F32(Vec<[packed::PackedF32; 4]>),
}

/// Scratch buffers of the host inference path, kept between calls (no per-op allocation).
#[derive(Debug, Default)]
struct Workspace {
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    inj: Vec<f32>,
}

/// One block's packed weights, if any.
#[derive(Clone, Copy)]
enum BlockPacks<'a> {
    None,
    Bf16(&'a [amx::PackedBf16; 4]),
    F32(&'a [packed::PackedF32; 4]),
}

/// Read access to the weights of the host inference path: one storage read lock per tensor,
/// held for the duration of a segment's no-gradient calls.
struct HostWeights<'a> {
    guards: Vec<(candle_core::StorageRef<'a>, &'a candle_core::Layout)>,
    blocks_h: usize,
}

impl<'a> HostWeights<'a> {
    /// Every block weight (H then L, per block qkv, o, gate_up, down), then lm_head, q_head.
    fn new(m: &'a Hrm) -> Self {
        let mut vars: Vec<&Var> = Vec::new();
        for b in m.h_level.iter().chain(&m.l_level) {
            vars.extend([&b.qkv_proj, &b.o_proj, &b.gate_up_proj, &b.down_proj]);
        }
        vars.extend([&m.lm_head, &m.q_head_w, &m.q_head_b]);
        let guards = vars
            .into_iter()
            .map(|v| v.as_tensor().storage_and_layout())
            .collect();
        Self {
            guards,
            blocks_h: m.h_level.len(),
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

    /// (qkv, o, gate_up, down) of block `i` of the H (`h_level`) or L module.
    fn block(&self, h_level: bool, i: usize) -> Result<[&[f32]; 4]> {
        let base = 4 * if h_level { i } else { self.blocks_h + i };
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

/// Whether a state-dict entry is an `nn.Parameter` (trained by AdamATan2) or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Trainable by AdamATan2.
    Parameter,
    /// Persistent buffer (H_init, L_init, the puzzle table).
    Buffer,
}

fn dtype_of(f: ForwardDtype) -> DType {
    match f {
        ForwardDtype::F32 => DType::F32,
        ForwardDtype::BF16 => DType::BF16,
    }
}

impl Hrm {
    /// Build a freshly initialised model (the reference's initialisation; our own seeded RNG).
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut impl Rng) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let std_d = 1.0 / (d as f64).sqrt();
        let mut var = |shape: &[usize], std: f64| -> Result<Var> {
            let n = shape.iter().product();
            Ok(Var::from_vec(trunc_normal(n, std, rng), shape, device)?)
        };
        let h_init = var(&[d], 1.0)?;
        let l_init = var(&[d], 1.0)?;
        let embed_tokens = var(&[cfg.vocab_size, d], std_d)?;
        let lm_head = var(&[cfg.vocab_size, d], std_d)?;
        // Q head: weight 0 and bias -5 so that q_halt == q_continue at start and nothing halts
        // early until the Q-head has learned ("init Q to (almost) zero for faster learning
        // during bootstrapping").
        let q_head_w = Var::zeros((2, d), DType::F32, device)?;
        let q_head_b = Var::from_vec(vec![-5f32, -5.0], 2, device)?;
        let puzzle_emb = if cfg.puzzle_emb_ndim > 0 {
            Some(Var::zeros(
                (cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim),
                DType::F32,
                device,
            )?)
        } else {
            None
        };
        let embed_pos = match cfg.pos_encodings {
            PosEncoding::Learned => Some(var(&[cfg.full_seq_len(), d], std_d)?),
            PosEncoding::Rope => None,
        };
        let i = cfg.mlp_inner();
        let mut blocks = |n: usize| -> Result<Vec<Block>> {
            (0..n)
                .map(|_| {
                    Ok(Block {
                        qkv_proj: var(&[3 * d, d], std_d)?,
                        o_proj: var(&[d, d], std_d)?,
                        gate_up_proj: var(&[2 * i, d], std_d)?,
                        down_proj: var(&[d, i], 1.0 / (i as f64).sqrt())?,
                    })
                })
                .collect()
        };
        let h_level = blocks(cfg.h_layers)?;
        let l_level = blocks(cfg.l_layers)?;
        let mut m = Self::assemble(
            cfg,
            device,
            h_init,
            l_init,
            embed_tokens,
            embed_pos,
            lm_head,
            q_head_w,
            q_head_b,
            puzzle_emb,
            h_level,
            l_level,
        );
        // the reference draws H_init/L_init directly in the forward dtype
        if m.fdt != DType::F32 {
            for v in [&m.h_init, &m.l_init] {
                v.set(&v.as_tensor().to_dtype(m.fdt)?.to_dtype(DType::F32)?)?;
            }
        }
        m.cfg = cfg.clone();
        Ok(m)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: &ModelConfig,
        device: &Device,
        h_init: Var,
        l_init: Var,
        embed_tokens: Var,
        embed_pos: Option<Var>,
        lm_head: Var,
        q_head_w: Var,
        q_head_b: Var,
        puzzle_emb: Option<Var>,
        h_level: Vec<Block>,
        l_level: Vec<Block>,
    ) -> Self {
        let rope = match cfg.pos_encodings {
            PosEncoding::Rope => Some(Arc::new(RopeTables::new(
                cfg.full_seq_len(),
                cfg.head_dim(),
                cfg.rope_theta,
            ))),
            PosEncoding::Learned => None,
        };
        Self {
            cfg: cfg.clone(),
            device: device.clone(),
            fdt: dtype_of(cfg.forward_dtype),
            h_init,
            l_init,
            embed_tokens,
            embed_pos,
            lm_head,
            q_head_w,
            q_head_b,
            puzzle_emb,
            h_level,
            l_level,
            attn: Attention {
                num_heads: cfg.num_heads,
                head_dim: cfg.head_dim(),
                rope,
            },
            trace: Mutex::new(None),
            host_inference: true,
            workspace: Mutex::new(Workspace::default()),
            packed: None,
        }
    }

    /// Every state-dict entry in the reference's order: `(key, var, kind)`, keys starting `inner.`.
    pub fn named_tensors(&self) -> Vec<(String, &Var, TensorKind)> {
        use TensorKind::*;
        let mut v: Vec<(String, &Var, TensorKind)> = vec![
            ("inner.H_init".into(), &self.h_init, Buffer),
            ("inner.L_init".into(), &self.l_init, Buffer),
            (
                "inner.embed_tokens.embedding_weight".into(),
                &self.embed_tokens,
                Parameter,
            ),
            ("inner.lm_head.weight".into(), &self.lm_head, Parameter),
            ("inner.q_head.weight".into(), &self.q_head_w, Parameter),
            ("inner.q_head.bias".into(), &self.q_head_b, Parameter),
        ];
        if let Some(p) = &self.puzzle_emb {
            v.push(("inner.puzzle_emb.weights".into(), p, Buffer));
        }
        if let Some(p) = &self.embed_pos {
            v.push(("inner.embed_pos.embedding_weight".into(), p, Parameter));
        }
        for (level, blocks) in [("H_level", &self.h_level), ("L_level", &self.l_level)] {
            for (i, b) in blocks.iter().enumerate() {
                let p = format!("inner.{level}.layers.{i}");
                v.push((
                    format!("{p}.self_attn.qkv_proj.weight"),
                    &b.qkv_proj,
                    Parameter,
                ));
                v.push((format!("{p}.self_attn.o_proj.weight"), &b.o_proj, Parameter));
                v.push((
                    format!("{p}.mlp.gate_up_proj.weight"),
                    &b.gate_up_proj,
                    Parameter,
                ));
                v.push((format!("{p}.mlp.down_proj.weight"), &b.down_proj, Parameter));
            }
        }
        v
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
        let (d, i, v) = (cfg.hidden_size, cfg.mlp_inner(), cfg.vocab_size);
        let mut out = vec![
            ("inner.H_init".to_string(), vec![d]),
            ("inner.L_init".into(), vec![d]),
            ("inner.embed_tokens.embedding_weight".into(), vec![v, d]),
            ("inner.lm_head.weight".into(), vec![v, d]),
            ("inner.q_head.weight".into(), vec![2, d]),
            ("inner.q_head.bias".into(), vec![2]),
        ];
        if cfg.puzzle_emb_ndim > 0 {
            out.push((
                "inner.puzzle_emb.weights".into(),
                vec![cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim],
            ));
        }
        if cfg.pos_encodings == PosEncoding::Learned {
            out.push((
                "inner.embed_pos.embedding_weight".into(),
                vec![cfg.full_seq_len(), d],
            ));
        }
        for (level, n) in [("H_level", cfg.h_layers), ("L_level", cfg.l_layers)] {
            for l in 0..n {
                let p = format!("inner.{level}.layers.{l}");
                out.push((format!("{p}.self_attn.qkv_proj.weight"), vec![3 * d, d]));
                out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, d]));
                out.push((format!("{p}.mlp.gate_up_proj.weight"), vec![2 * i, d]));
                out.push((format!("{p}.mlp.down_proj.weight"), vec![d, i]));
            }
        }
        out
    }

    /// Build a model from a state dict (keys as in [`Hrm::named_tensors`]). Strict: every
    /// missing, unexpected or mis-shaped key is reported by name in one error.
    pub fn from_state_dict(
        cfg: &ModelConfig,
        device: &Device,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        cfg.validate()?;
        let expected = Self::expected_shapes(cfg);
        let mut problems = Vec::new();
        for (k, shape) in &expected {
            match tensors.get(k) {
                None => problems.push(format!("missing key `{k}` (expected shape {shape:?})")),
                Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                    "key `{k}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )),
                _ => {}
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut unexpected: Vec<&String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        unexpected.sort();
        for k in unexpected {
            problems.push(format!("unexpected key `{k}`"));
        }
        if !problems.is_empty() {
            return Err(Error::StateDict(problems));
        }
        let var = |k: &str| -> Result<Var> {
            let t = tensors[k].to_device(device)?.to_dtype(DType::F32)?;
            Ok(Var::from_tensor(&t)?)
        };
        let blocks = |level: &str, n: usize| -> Result<Vec<Block>> {
            (0..n)
                .map(|l| {
                    let p = format!("inner.{level}.layers.{l}");
                    Ok(Block {
                        qkv_proj: var(&format!("{p}.self_attn.qkv_proj.weight"))?,
                        o_proj: var(&format!("{p}.self_attn.o_proj.weight"))?,
                        gate_up_proj: var(&format!("{p}.mlp.gate_up_proj.weight"))?,
                        down_proj: var(&format!("{p}.mlp.down_proj.weight"))?,
                    })
                })
                .collect()
        };
        Ok(Self::assemble(
            cfg,
            device,
            var("inner.H_init")?,
            var("inner.L_init")?,
            var("inner.embed_tokens.embedding_weight")?,
            match cfg.pos_encodings {
                PosEncoding::Learned => Some(var("inner.embed_pos.embedding_weight")?),
                PosEncoding::Rope => None,
            },
            var("inner.lm_head.weight")?,
            var("inner.q_head.weight")?,
            var("inner.q_head.bias")?,
            if cfg.puzzle_emb_ndim > 0 {
                Some(var("inner.puzzle_emb.weights")?)
            } else {
                None
            },
            blocks("H_level", cfg.h_layers)?,
            blocks("L_level", cfg.l_layers)?,
        ))
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

    /// Start recording intermediate tensors of the next forward passes.
    pub fn start_trace(&self) {
        *self.trace.lock().expect("trace lock") = Some(Trace::default());
    }

    /// Stop recording and return what was recorded.
    pub fn take_trace(&self) -> Option<Trace> {
        self.trace.lock().expect("trace lock").take()
    }

    fn record(&self, name: impl FnOnce(&mut Trace) -> Option<String>, t: &Tensor) {
        if let Ok(mut g) = self.trace.lock() {
            if let Some(tr) = g.as_mut() {
                if let Some(n) = name(tr) {
                    tr.entries.push((n, t.detach()));
                }
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // Layers
    // --------------------------------------------------------------------------------------------

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

    /// `CastedLinear`: `x [.., in] @ w^T` with `w [out, in]`.
    fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, w)?)
    }

    /// Post-norm block: `h = norm(h + attn(h)); h = norm(h + mlp(h))`.
    fn block(&self, b: &Block, h: &Tensor, grad: bool, trace0: bool) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        let qkv = Self::linear(h, &self.weight(&b.qkv_proj, grad)?)?;
        // attention and SwiGLU each fused with the projection after them: their outputs are
        // recomputed in the backward instead of held by the graph (peak memory)
        let a = ops::then_linear(&qkv, &self.attn, &self.weight(&b.o_proj, grad)?)?;
        let h = ops::add_rms_norm(h, &a, eps)?;
        let gu = Self::linear(&h, &self.weight(&b.gate_up_proj, grad)?)?;
        let m = ops::then_linear(&gu, &ops::SwiGlu, &self.weight(&b.down_proj, grad)?)?;
        let out = ops::add_rms_norm(&h, &m, eps)?;
        if trace0 {
            self.record(|_| Some("call0.layer0.attn".into()), &a);
            self.record(|_| Some("call0.layer0.mlp".into()), &m);
            self.record(|_| Some("call0.layer0.out".into()), &out);
        }
        Ok(out)
    }

    /// Reasoning module `f(z, u)`: add the injection once, then the block stack.
    fn module(&self, h_level: bool, z: &Tensor, inj: &Tensor, grad: bool) -> Result<Tensor> {
        let blocks = if h_level {
            &self.h_level
        } else {
            &self.l_level
        };
        let first_call = self
            .trace
            .lock()
            .map(|g| g.as_ref().is_some_and(|t| t.calls == 0));
        let trace0 = !h_level && first_call.unwrap_or(false);
        let mut z = (z + inj)?;
        for (i, b) in blocks.iter().enumerate() {
            z = self.block(b, &z, grad, trace0 && i == 0)?;
        }
        self.record(
            |t| {
                let n = format!("call{}.{}", t.calls, if h_level { "H" } else { "L" });
                t.calls += 1;
                Some(n)
            },
            &z,
        );
        Ok(z)
    }

    /// Input encoding x̃ `[B, S, D]`: token embeddings, the puzzle-embedding prefix (zero-padded to
    /// P*D), learned positions if any, times sqrt(D). `puzzle_rows` are `[B, Dp]` in f32.
    fn input_embeddings(&self, inputs: &Tensor, puzzle_rows: Option<&Tensor>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, l) = inputs.dims2()?;
        let d = cfg.hidden_size;
        // Rows are gathered from the f32 master table and then cast: the same values as casting
        // the table first (the reference's `embedding(weight.to(dtype))`), but the backward
        // scatter-adds B*L row gradients into V rows in f32; in bf16 that sum loses most of its
        // bits (measured gradient cosine 0.95 at batch 64 against f32, 0.999 this way).
        let mut x = self
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
        if let Some(pos) = &self.embed_pos {
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

    /// One segment (the reference's inner forward): `H_cycles x L_cycles` module calls, all but the
    /// last L and the last H without gradient; returns the detached carry, logits `[B, L, V]` and
    /// Q logits `[B, 2]` (f32). With `grad == false` nothing records a graph.
    pub fn segment(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        grad: bool,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        if grad && self.packed.is_some() {
            return Err(Error::msg(
                "a gradient segment with inference-packed weights (bf16 matrix products or \
                 small-batch packing): they are for evaluation only",
            ));
        }
        if (self.host_inference || self.packed.is_some())
            && self.device.is_cpu()
            && self.fdt == DType::F32
        {
            return self.segment_host(z_h, z_l, x, grad);
        }
        let (hc, lc) = (self.cfg.h_cycles, self.cfg.l_cycles);
        let (mut z_h, mut z_l) = (z_h.detach(), z_l.detach());
        let x_nograd = x.detach();
        // Phase A: no gradient (the one-step gradient approximation of the paper).
        for n in 0..hc {
            for t in 0..lc {
                if !(n == hc - 1 && t == lc - 1) {
                    z_l = self.module(false, &z_l, &(&z_h + &x_nograd)?, false)?;
                }
            }
            if n < hc - 1 {
                z_h = self.module(true, &z_h, &z_l, false)?;
            }
        }
        self.segment_last(z_h, z_l, x, grad)
    }

    /// Phase B of a segment and the heads: the last L and H calls carry the gradient (when
    /// `grad`). The injection is (z_H + x̃) first, then added to z_L, as in the reference (the
    /// order matters for bitwise bf16 parity).
    fn segment_last(
        &self,
        z_h: Tensor,
        z_l: Tensor,
        x: &Tensor,
        grad: bool,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let inj = if grad {
            (&z_h + x)?
        } else {
            (&z_h + &x.detach())?
        };
        let z_l = self.module(false, &z_l, &inj, grad)?;
        let z_h = self.module(true, &z_h, &z_l, grad)?;
        let p = self.cfg.puzzle_emb_len();
        let logits = Self::linear(&z_h, &self.weight(&self.lm_head, grad)?)?;
        let logits = logits.narrow(1, p, self.cfg.seq_len)?;
        let first = z_h.narrow(1, 0, 1)?.squeeze(1)?; // [B, D]
        let q = Self::linear(&first, &self.weight(&self.q_head_w, grad)?)?
            .broadcast_add(&self.weight(&self.q_head_b, grad)?)?
            .to_dtype(DType::F32)?;
        Ok((z_h.detach(), z_l.detach(), logits, q))
    }

    /// Choose the candle path for every module call (tests compare it with the host path).
    pub fn set_host_inference(&mut self, on: bool) {
        self.host_inference = on;
    }

    /// Run the matrix products of the blocks in bf16 on AMX (f32 accumulation, f32 activations)
    /// for evaluation: the block weights are rounded and packed now, from their current values.
    /// An inference option: training steps refuse to run while it is on (the packed copies would
    /// not follow the optimizer), and it changes the numbers (bf16 operands), so parity holds
    /// only with it off. Needs an f32 model on the CPU and a CPU with AMX-BF16 (Intel Xeon 4th
    /// generation or newer) under Linux.
    pub fn set_bf16_matmul(&mut self, on: bool) -> Result<()> {
        if !on {
            if self.bf16_matmul() {
                self.packed = None;
            }
            return Ok(());
        }
        if !self.device.is_cpu() || self.fdt != DType::F32 {
            return Err(Error::msg(
                "bf16 matrix products (AMX) need an f32 model on the CPU; on a GPU use a bfloat16 \
                 forward (arch.forward_dtype = \"bfloat16\")",
            ));
        }
        if !amx::available() {
            return Err(Error::msg(
                "bf16 matrix products need Intel AMX (amx-bf16 and amx-tile: Xeon 4th generation \
                 or newer) under Linux, and this CPU or kernel does not offer it (or HRM_NO_AMX is \
                 set); run without the bf16 option",
            ));
        }
        self.packed = Some(PackedBlocks::Bf16(self.pack_blocks(amx::PackedBf16::pack)?));
        Ok(())
    }

    /// Every block's (qkv, o, gate_up, down) weight through `pack(w, out, in)`: H blocks, then L.
    fn pack_blocks<P>(&self, pack: impl Fn(&[f32], usize, usize) -> P) -> Result<Vec<[P; 4]>> {
        let (d, i) = (self.cfg.hidden_size, self.cfg.mlp_inner());
        let weights = HostWeights::new(self);
        let mut packs = Vec::new();
        for (h_level, n) in [(true, self.h_level.len()), (false, self.l_level.len())] {
            for b in 0..n {
                let [qkv, o, gu, down] = weights.block(h_level, b)?;
                packs.push([
                    pack(qkv, 3 * d, d),
                    pack(o, d, d),
                    pack(gu, 2 * i, d),
                    pack(down, d, i),
                ]);
            }
        }
        Ok(packs)
    }

    /// Pack the block weights for the f32 small-batch kernel ([`packed`]: up to
    /// [`packed::MAX_ROWS`] rows, e.g. `hrm solve`'s one puzzle), from their current values; the
    /// same numbers up to the order of the f32 sums. Like [`Hrm::set_bf16_matmul`] an inference
    /// option (training steps refuse to run with it) that costs a second copy of the block
    /// weights. Packs only where the kernel would run: an f32 model on the CPU whose batch
    /// (`cfg.batch_size` x the full sequence) is small enough on a CPU with AVX-512.
    pub fn set_packed_f32(&mut self, on: bool) -> Result<()> {
        let rows = self.cfg.batch_size * self.cfg.full_seq_len();
        let useful = self.device.is_cpu() && self.fdt == DType::F32 && packed::fast(rows);
        if on && useful {
            self.packed = Some(PackedBlocks::F32(
                self.pack_blocks(packed::PackedF32::pack)?,
            ));
        } else if matches!(self.packed, Some(PackedBlocks::F32(_))) {
            self.packed = None;
        }
        Ok(())
    }

    /// Whether the no-gradient matrix products run in bf16 ([`Hrm::set_bf16_matmul`]).
    pub fn bf16_matmul(&self) -> bool {
        matches!(self.packed, Some(PackedBlocks::Bf16(_)))
    }

    /// [`Hrm::segment`] on the CPU in f32: the no-gradient module calls (all of them when
    /// `grad` is false, and then the heads too) run on host buffers with reused scratch space and
    /// no autograd bookkeeping; the same kernels as the custom ops compute the same numbers.
    fn segment_host(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        grad: bool,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (hc, lc) = (self.cfg.h_cycles, self.cfg.l_cycles);
        let (b, s, d) = z_h.dims3()?;
        let mut zh = to_host_f32(z_h)?;
        let mut zl = to_host_f32(z_l)?;
        let xv = to_host_f32(x)?;
        let weights = HostWeights::new(self);
        let mut guard = self
            .workspace
            .lock()
            .map_err(|_| Error::msg("workspace lock"))?;
        let ws = &mut *guard;
        let n_tok = b * s;
        ws.inj.resize(n_tok * d, 0.0);
        for n in 0..hc {
            for t in 0..lc {
                let last = n == hc - 1 && t == lc - 1;
                if !last || !grad {
                    let mut inj = std::mem::take(&mut ws.inj);
                    for ((o, &a), &c) in inj.iter_mut().zip(&zh).zip(&xv) {
                        *o = a + c;
                    }
                    self.module_host(false, &mut zl, &inj, (b, s), &weights, ws)?;
                    ws.inj = inj;
                }
            }
            if n < hc - 1 || !grad {
                self.module_host(true, &mut zh, &zl, (b, s), &weights, ws)?;
            }
        }
        if grad {
            // the gradient calls and their backward come next: hand the scratch buffers back to
            // the allocator for them (peak memory of a training step; reallocated next step)
            *guard = Workspace::default();
            drop(guard);
            drop(weights);
            let z_h = Tensor::from_vec(zh, (b, s, d), &self.device)?;
            let z_l = Tensor::from_vec(zl, (b, s, d), &self.device)?;
            return self.segment_last(z_h, z_l, x, true);
        }
        // heads: logits of positions P.. of z_H, Q from position 0
        let (p, l, v) = (
            self.cfg.puzzle_emb_len(),
            self.cfg.seq_len,
            self.cfg.vocab_size,
        );
        let [lm, qw, qb] = weights.heads()?;
        let mut logits = vec![0f32; b * l * v];
        for bi in 0..b {
            let rows = &zh[(bi * s + p) * d..(bi * s + p + l) * d];
            let out = &mut logits[bi * l * v..(bi + 1) * l * v];
            gemm::sgemm_into(l, v, d, rows, gemm::Op::N, lm, gemm::Op::T, out);
        }
        let mut q = vec![0f32; b * 2];
        for bi in 0..b {
            let first = &zh[bi * s * d..(bi * s + 1) * d];
            for k in 0..2 {
                // the same product as the linear op (one row), then the bias
                let w = &qw[k * d..(k + 1) * d];
                let dot = gemm::sgemm(1, 1, d, first, gemm::Op::N, w, gemm::Op::T)[0];
                q[bi * 2 + k] = dot + qb[k];
            }
        }
        drop(guard);
        drop(weights);
        Ok((
            Tensor::from_vec(zh, (b, s, d), &self.device)?,
            Tensor::from_vec(zl, (b, s, d), &self.device)?,
            Tensor::from_vec(logits, (b, l, v), &self.device)?,
            Tensor::from_vec(q, (b, 2), &self.device)?,
        ))
    }

    /// A reasoning module on host buffers: `z = blocks(z + inj)` in place.
    fn module_host(
        &self,
        h_level: bool,
        z: &mut [f32],
        inj: &[f32],
        (b, s): (usize, usize),
        w: &HostWeights,
        ws: &mut Workspace,
    ) -> Result<()> {
        let (trace_on, first_call) = match self.trace.lock() {
            Ok(g) => (g.is_some(), g.as_ref().is_some_and(|t| t.calls == 0)),
            Err(_) => (false, false),
        };
        for (zi, &ii) in z.iter_mut().zip(inj) {
            *zi += ii;
        }
        let layers = if h_level {
            self.h_level.len()
        } else {
            self.l_level.len()
        };
        for i in 0..layers {
            let trace0 = trace_on && first_call && !h_level && i == 0;
            let j = if h_level { i } else { self.h_level.len() + i };
            let packs = match &self.packed {
                None => BlockPacks::None,
                Some(PackedBlocks::Bf16(p)) => BlockPacks::Bf16(&p[j]),
                Some(PackedBlocks::F32(p)) => BlockPacks::F32(&p[j]),
            };
            self.block_host(w.block(h_level, i)?, packs, z, (b, s), ws, trace0)?;
        }
        if trace_on {
            let t = Tensor::from_slice(z, (b, s, self.cfg.hidden_size), &self.device)?;
            self.record(
                |tr| {
                    let n = format!("call{}.{}", tr.calls, if h_level { "H" } else { "L" });
                    tr.calls += 1;
                    Some(n)
                },
                &t,
            );
        }
        Ok(())
    }

    /// One post-norm block on host buffers, in place on `h` `[B*S, D]`.
    fn block_host(
        &self,
        [qkv_w, o_w, gu_w, down_w]: [&[f32]; 4],
        packs: BlockPacks,
        h: &mut [f32],
        (b, s): (usize, usize),
        ws: &mut Workspace,
        trace0: bool,
    ) -> Result<()> {
        let (d, i) = (self.cfg.hidden_size, self.cfg.mlp_inner());
        let n = b * s;
        if n == 0 {
            return Ok(());
        }
        let eps = self.cfg.rms_norm_eps;
        let norm = ops::AddRmsNorm { eps };
        ws.qkv.resize(n * 3 * d, 0.0);
        ws.attn.resize(n * d, 0.0);
        ws.tmp.resize(n * d, 0.0);
        ws.gate_up.resize(n * 2 * i, 0.0);
        ws.act.resize(n * i, 0.0);
        // x · Wᵀ for weight `j` of the block (`[out, in]`): bf16 on AMX, the small-batch f32
        // kernel, or the general one
        let small = packed::fast(n);
        let lin = |j: usize, x: &[f32], w: &[f32], out: &mut [f32]| match packs {
            BlockPacks::Bf16(p) => amx::matmul(n, x, &p[j], out),
            BlockPacks::F32(p) if small => packed::matmul(n, x, &p[j], out),
            _ => {
                let (o, k) = (out.len() / n, x.len() / n);
                gemm::sgemm_into(n, o, k, x, gemm::Op::N, w, gemm::Op::T, out)
            }
        };
        lin(0, h, qkv_w, &mut ws.qkv);
        self.attn.forward_into(&ws.qkv, b, s, &mut ws.attn);
        lin(1, &ws.attn, o_w, &mut ws.tmp);
        if trace0 {
            let t = Tensor::from_slice(&ws.tmp, (b, s, d), &self.device)?;
            self.record(|_| Some("call0.layer0.attn".into()), &t);
        }
        norm.forward_inplace(h, &ws.tmp, d, false);
        lin(2, h, gu_w, &mut ws.gate_up);
        ops::SwiGlu::forward_into(&ws.gate_up, i, &mut ws.act);
        lin(3, &ws.act, down_w, &mut ws.tmp);
        if trace0 {
            let t = Tensor::from_slice(&ws.tmp, (b, s, d), &self.device)?;
            self.record(|_| Some("call0.layer0.mlp".into()), &t);
        }
        norm.forward_inplace(h, &ws.tmp, d, false);
        if trace0 {
            let t = Tensor::from_slice(h, (b, s, d), &self.device)?;
            self.record(|_| Some("call0.layer0.out".into()), &t);
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------------------
    // ACT wrapper
    // --------------------------------------------------------------------------------------------

    /// A fresh carry for `batch`'s shape: every row halted, so the first step loads every row.
    pub fn initial_carry(&self, batch: &Batch) -> Result<Carry> {
        let (b, s, d) = (
            batch.batch_size,
            self.cfg.full_seq_len(),
            self.cfg.hidden_size,
        );
        let z = Tensor::zeros((b, s, d), self.fdt, &self.device)?;
        Ok(Carry {
            z_h: z.clone(),
            z_l: z,
            steps: vec![0; b],
            halted: vec![true; b],
            data: Batch::zeros(b, batch.seq_len),
        })
    }

    /// Rows of `init` `[D]` where `halted`, else the carry's rows.
    fn reset_rows(&self, init: &Var, z: &Tensor, halted: &[bool]) -> Result<Tensor> {
        let init = init.as_detached_tensor().to_dtype(self.fdt)?;
        let init = init
            .reshape((1, 1, self.cfg.hidden_size))?
            .broadcast_as(z.shape())?;
        if halted.iter().all(|&h| h) {
            return Ok(init.contiguous()?);
        }
        if !halted.iter().any(|&h| h) {
            return Ok(z.clone());
        }
        let mask: Vec<u8> = halted.iter().map(|&h| h as u8).collect();
        let mask =
            Tensor::from_vec(mask, (halted.len(), 1, 1), &self.device)?.broadcast_as(z.shape())?;
        Ok(mask.where_cond(&init, z)?)
    }

    fn ids_tensor(&self, ids: &[i32], shape: (usize, usize)) -> Result<Tensor> {
        let v: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        Ok(Tensor::from_vec(v, shape, &self.device)?)
    }

    /// One ACT step (one segment for every row): halted rows restart on their row of `batch`,
    /// the others continue their own example and ignore `batch`'s row at their index.
    pub fn act_step(
        &self,
        carry: &Carry,
        batch: &Batch,
        mode: Mode,
        rng: &mut dyn RngCore,
    ) -> Result<(Carry, StepOutput)> {
        check_batch(batch, &self.cfg)?;
        let b = batch.batch_size;
        if carry.halted.len() != b {
            return Err(Error::msg(format!(
                "carry has {} rows but the batch has {b}",
                carry.halted.len()
            )));
        }
        let cfg = &self.cfg;
        // 1. reset halted rows
        let z_h = self.reset_rows(&self.h_init, &carry.z_h, &carry.halted)?;
        let z_l = self.reset_rows(&self.l_init, &carry.z_l, &carry.halted)?;
        let mut steps: Vec<u32> = carry
            .steps
            .iter()
            .zip(&carry.halted)
            .map(|(&s, &h)| if h { 0 } else { s })
            .collect();
        let mut data = carry.data.clone();
        for (i, &h) in carry.halted.iter().enumerate() {
            if h {
                data.copy_row(batch, i);
            }
        }
        // 2. the segment
        let inputs = self.ids_tensor(&data.inputs, (b, data.seq_len))?;
        let mut puzzle_local = None;
        let rows = match &self.puzzle_emb {
            Some(table) => {
                let ids = self
                    .ids_tensor(&data.puzzle_identifiers, (b, 1))?
                    .flatten_all()?;
                let rows = table.as_detached_tensor().index_select(&ids, 0)?;
                if mode == Mode::Train {
                    // the reference's `local_weights`: a leaf copy of the rows that gets the grad
                    let local = Var::from_tensor(&rows)?;
                    let t = local.as_tensor().clone();
                    puzzle_local = Some((local, data.puzzle_identifiers.clone()));
                    Some(t)
                } else {
                    Some(rows)
                }
            }
            None => None,
        };
        let x = self.input_embeddings(&inputs, rows.as_ref())?;
        self.record(|_| Some("input_embeddings".into()), &x);
        let (z_h, z_l, logits, q) = self.segment(&z_h, &z_l, &x, mode == Mode::Train)?;
        let q_halt = q.narrow(1, 0, 1)?.squeeze(1)?;
        let q_continue = q.narrow(1, 1, 1)?.squeeze(1)?;
        // 3. step counting and halting (no gradient)
        for s in steps.iter_mut() {
            *s += 1;
        }
        let m = cfg.halt_max_steps as u32;
        let is_last: Vec<bool> = steps.iter().map(|&s| s >= m).collect();
        let mut halted = is_last.clone();
        let mut target_q_continue = None;
        if mode == Mode::Train && cfg.halt_max_steps > 1 {
            let qh = q_halt.detach().to_vec1::<f32>()?;
            let qc = q_continue.detach().to_vec1::<f32>()?;
            for i in 0..b {
                halted[i] = halted[i] || qh[i] > qc[i];
            }
            // exploration: a minimum segment count redrawn every step (prob eps, uniform 2..=M)
            for i in 0..b {
                let r: f32 = rng.random();
                let k: u32 = rng.random_range(2..=m.max(2));
                let min_steps = if (r as f64) < cfg.halt_exploration_prob {
                    k
                } else {
                    0
                };
                halted[i] = halted[i] && steps[i] >= min_steps;
            }
            // Q-learning target from one more no-gradient segment on the new carry (no replay
            // buffer or target network: many parallel rows stand in for them, as in PQN)
            let (_, _, _, q2) = self.segment(&z_h, &z_l, &x.detach(), false)?;
            // the backward comes next: hand the scratch buffers back to the allocator for it
            if let Ok(mut ws) = self.workspace.lock() {
                *ws = Workspace::default();
            }
            let q2 = q2.to_vec2::<f32>()?;
            target_q_continue = Some(
                (0..b)
                    .map(|i| {
                        let v = if is_last[i] {
                            q2[i][0]
                        } else {
                            q2[i][0].max(q2[i][1])
                        };
                        sigmoid_f32(v)
                    })
                    .collect(),
            );
        }
        let new_carry = Carry {
            z_h,
            z_l,
            steps,
            halted,
            data,
        };
        Ok((
            new_carry,
            StepOutput {
                logits,
                q_halt,
                q_continue,
                target_q_continue,
                puzzle_local,
            },
        ))
    }
}

/// A batch fits the model: its seq_len, array lengths, token ids and puzzle identifiers.
fn check_batch(batch: &Batch, cfg: &ModelConfig) -> Result<()> {
    let (b, l) = (batch.batch_size, batch.seq_len);
    if l != cfg.seq_len {
        return Err(Error::msg(format!(
            "batch seq_len {l} does not match the model's seq_len {}",
            cfg.seq_len
        )));
    }
    if batch.inputs.len() != b * l
        || batch.labels.len() != b * l
        || batch.puzzle_identifiers.len() != b
    {
        return Err(Error::msg(format!(
            "batch arrays have lengths {}/{}/{} but B = {b}, L = {l}",
            batch.inputs.len(),
            batch.labels.len(),
            batch.puzzle_identifiers.len()
        )));
    }
    if let Some(&t) = batch
        .inputs
        .iter()
        .find(|&&t| t < 0 || t as usize >= cfg.vocab_size)
    {
        return Err(Error::msg(format!(
            "input token {t} outside the vocabulary [0, {})",
            cfg.vocab_size
        )));
    }
    if cfg.puzzle_emb_ndim > 0 {
        if let Some(&p) = batch
            .puzzle_identifiers
            .iter()
            .find(|&&p| p < 0 || p as usize >= cfg.num_puzzle_identifiers)
        {
            return Err(Error::msg(format!(
                "puzzle identifier {p} outside [0, {})",
                cfg.num_puzzle_identifiers
            )));
        }
    }
    Ok(())
}

/// torch.sigmoid on an f32 value.
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A hidden-128 model (seed) for the inference-option tests.
    fn model_128(seed: u64) -> (ModelConfig, Hrm) {
        let cfg = ModelConfig {
            hidden_size: 128,
            num_heads: 4,
            ..tiny(3)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        (cfg, m)
    }

    /// Logits and q_halt of the last segment of an eval rollout of `halt_max_steps` segments.
    fn eval_rollout(m: &Hrm, b: &Batch) -> (Vec<f32>, Vec<f32>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut carry = m.initial_carry(b).unwrap();
        let mut last = None;
        for _ in 0..m.cfg.halt_max_steps {
            let (c, out) = m.act_step(&carry, b, Mode::Eval, &mut rng).unwrap();
            carry = c;
            last = Some(out);
        }
        let out = last.unwrap();
        (
            to_host_f32(&out.logits).unwrap(),
            to_host_f32(&out.q_halt).unwrap(),
        )
    }

    /// A training step must refuse to run on inference-packed weights.
    fn assert_training_refused(m: &Hrm, b: &Batch) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let carry = m.initial_carry(b).unwrap();
        let e = m
            .act_step(&carry, b, Mode::Train, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("evaluation only"), "{e}");
    }

    /// bf16 matrix products (AMX) for evaluation: close to f32 at bf16 precision, exactly f32
    /// again once switched off, and refused for training steps.
    #[test]
    fn bf16_matmul_eval_follows_f32_and_refuses_training() {
        let (cfg, mut m) = model_128(5);
        let b = batch(&cfg, 6);
        let (f32_logits, f32_q) = eval_rollout(&m, &b);
        if !amx::available() {
            let e = m.set_bf16_matmul(true).unwrap_err().to_string();
            assert!(e.contains("AMX"), "{e}");
            eprintln!("AMX is not available on this CPU: checked the refusal only");
            return;
        }
        m.set_bf16_matmul(true).unwrap();
        assert!(m.bf16_matmul());
        let (bf_logits, bf_q) = eval_rollout(&m, &b);
        // bf16 keeps 8 significant bits; over 3 segments x 2x2 cycles x 2 layers the logits
        // move by a few percent of their spread, not more
        let spread = f32_logits.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let worst = f32_logits
            .iter()
            .zip(&bf_logits)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
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
        assert_training_refused(&m, &b);
        m.set_bf16_matmul(false).unwrap();
        assert_eq!(eval_rollout(&m, &b), (f32_logits, f32_q));
    }

    /// Weights packed for the small-batch f32 kernel: the same outputs up to the order of the
    /// f32 sums, exactly the plain path again once switched off, and refused for training steps.
    #[test]
    fn packed_f32_eval_follows_f32_and_refuses_training() {
        let (cfg, mut m) = model_128(9);
        let b = batch(&cfg, 10);
        assert!(cfg.batch_size * cfg.full_seq_len() <= packed::MAX_ROWS);
        if !packed::fast(cfg.batch_size * cfg.full_seq_len()) {
            eprintln!("no AVX-512 here: nothing is packed and the plain kernel runs");
        }
        let plain = eval_rollout(&m, &b);
        m.set_packed_f32(true).unwrap();
        let packed_out = eval_rollout(&m, &b);
        let spread = plain.0.iter().fold(0f32, |a, &x| a.max(x.abs()));
        for (x, y) in plain.0.iter().zip(&packed_out.0) {
            // f32 sums in another order, through 3 segments of 2x2 cycles: ulps of the spread
            assert!((x - y).abs() <= 1e-4 * spread, "{x} vs {y}");
        }
        assert_training_refused(&m, &b);
        m.set_packed_f32(false).unwrap();
        assert_eq!(eval_rollout(&m, &b), plain);
    }
}
