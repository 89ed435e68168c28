//! Architecture configuration of the three models: HRM ACT v1, TRM and the transformer baseline.
//!
//! Mirrors the references' pydantic configs (sapientinc/HRM:models/hrm/hrm_act_v1.py;
//! SamsungSAILMontreal/TinyRecursiveModels: models/recursive_reasoning/trm.py and
//! transformers_baseline.py) and their `config/arch/*.yaml`: the serde names are the reference's
//! key names (`H_cycles`, `puzzle_emb_ndim`, `no_ACT_continue`, ...) so a fixture's `config` JSON,
//! a reference `all_config.yaml` arch block and our own TOML files all deserialise into the same
//! struct. Validation happens once, in [`ModelConfig::validate`], with errors that name the
//! offending key; [`ModelConfig::warnings`] names the keys an architecture ignores.

use serde::{Deserialize, Serialize};

/// Which model (the `[arch]` table's `name`; the references' `module@class` names are accepted
/// too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// HRM: an L module (`L_layers` blocks) and an H module (`H_layers` blocks); the one-step
    /// gradient (only the last L and the last H call of a segment).
    #[default]
    #[serde(
        rename = "hrm",
        alias = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
        alias = "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1"
    )]
    Hrm,
    /// TRM: one network (`L_layers` blocks) for both updates; the whole last H cycle
    /// (`L_cycles` + 1 calls) carries the gradient.
    #[serde(
        rename = "trm",
        alias = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    )]
    Trm,
    /// The transformer baseline: `H_layers` blocks, called once per segment on `z_H + x̃`, with
    /// the gradient; no z_L, no cycles.
    #[serde(
        rename = "transformer",
        alias = "recursive_reasoning.transformers_baseline@Model_ACTV2"
    )]
    Transformer,
}

impl Arch {
    /// The short name (`hrm`, `trm`, `transformer`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Hrm => "hrm",
            Arch::Trm => "trm",
            Arch::Transformer => "transformer",
        }
    }

    /// Parse a name as the config accepts it: the short name or the reference's `module@class`.
    pub fn parse(name: &str) -> Option<Arch> {
        serde_json::from_value(serde_json::Value::String(name.into())).ok()
    }

    /// Every name [`Arch::parse`] accepts, for messages.
    pub const NAMES: &'static str = "hrm, trm, transformer (or the references' \
        hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1, \
        recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1, \
        recursive_reasoning.transformers_baseline@Model_ACTV2)";
}

/// Positional encoding of the sequence (reference key `pos_encodings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    /// Rotary embeddings (rotate-half) on queries and keys, fp32 tables.
    Rope,
    /// A learned `[S, D]` table added to the input embeddings, then scaled by 1/sqrt(2).
    Learned,
    /// None (TRM only; its `mlp_t` Sudoku run mixes positions with the sequence MLP).
    None,
}

/// One reasoning-module call of a segment ([`ModelConfig::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Updates z_H (else z_L): `z_L = f(z_L + z_H + x̃)`, `z_H = f(z_H + z_L)` (the
    /// transformer's `z_H = f(z_H + x̃)`).
    pub h: bool,
    /// Carries the gradient in a training step.
    pub grad: bool,
}

/// Activation dtype of the forward pass (reference key `forward_dtype`). Parameters are always
/// stored in f32; with bf16 they are cast at every call, as the reference's `CastedLinear` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardDtype {
    /// f32 everywhere: what CPU runs and what the parity fixtures check.
    #[serde(rename = "float32")]
    F32,
    /// bf16 activations with fp32 RMSNorm/RoPE internals (the reference's GPU default).
    #[serde(rename = "bfloat16")]
    BF16,
}

/// The HRM architecture. Field docs give the reference's Sudoku value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model (`hrm` when absent: configs and checkpoints from before TRM).
    #[serde(default, skip_serializing_if = "is_hrm")]
    pub arch: Arch,
    /// Per-rank batch size (`global_batch_size / world_size`), e.g. 768.
    pub batch_size: usize,
    /// Tokens per example, without the puzzle prefix (81 Sudoku, 900 Maze/ARC).
    pub seq_len: usize,
    /// Width of the puzzle embedding; 0 disables it (512 = hidden_size by default).
    pub puzzle_emb_ndim: usize,
    /// Rows of the puzzle-embedding table (1 for Sudoku/Maze, ~1M for ARC).
    pub num_puzzle_identifiers: usize,
    /// Token vocabulary (11 Sudoku, 6 Maze, 12 ARC).
    pub vocab_size: usize,
    /// H-module updates per segment (N in the paper), e.g. 2.
    #[serde(rename = "H_cycles", default)]
    pub h_cycles: usize,
    /// L-module updates per H update (T in the paper), e.g. 2.
    #[serde(rename = "L_cycles", default)]
    pub l_cycles: usize,
    /// Transformer blocks in the H module, e.g. 4.
    #[serde(rename = "H_layers", default)]
    pub h_layers: usize,
    /// Transformer blocks in the L module, e.g. 4.
    #[serde(rename = "L_layers", default)]
    pub l_layers: usize,
    /// Model width D, e.g. 512.
    pub hidden_size: usize,
    /// SwiGLU expansion factor, e.g. 4 (inner width rounded up to a multiple of 256).
    pub expansion: f64,
    /// Attention heads, e.g. 8 (head_dim = hidden_size / num_heads = 64).
    pub num_heads: usize,
    /// `rope` or `learned`.
    pub pos_encodings: PosEncoding,
    /// RMSNorm epsilon, 1e-5.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base, 10000.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Maximum ACT segments M_max, e.g. 16.
    pub halt_max_steps: usize,
    /// Exploration probability epsilon of the Q-halting, e.g. 0.1.
    pub halt_exploration_prob: f64,
    /// `float32` or `bfloat16`.
    #[serde(default = "default_dtype")]
    pub forward_dtype: ForwardDtype,
    /// TRM: puzzle-prefix positions P; 0 = HRM's ceil(puzzle_emb_ndim / hidden_size); absent =
    /// TRM's default 16 (HRM and the baseline: the ceil rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puzzle_emb_len: Option<usize>,
    /// TRM: a SwiGLU across the sequence instead of attention in every block (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mlp_t: bool,
    /// TRM: halt on `q_halt > 0` alone, with no Q-continue target or loss (TRM's default true;
    /// HRM's rule, `q_halt > q_continue` with the bootstrapped target, when false).
    #[serde(
        rename = "no_ACT_continue",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub no_act_continue: Option<bool>,
    /// Transformer baseline: Q-halting in training (default true; false always runs
    /// `halt_max_steps` segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_enabled: Option<bool>,
    /// Transformer baseline: Q-halting in evaluation (default false; only false is implemented,
    /// `hrm eval --halting q` halts on the Q head for any model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_inference: Option<bool>,
}

fn is_hrm(a: &Arch) -> bool {
    *a == Arch::Hrm
}
fn is_false(b: &bool) -> bool {
    !*b
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_dtype() -> ForwardDtype {
    ForwardDtype::F32
}

/// A configuration value that cannot work, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid model config: `{key}` {problem}")]
pub struct ConfigError {
    /// The reference key name, e.g. `hidden_size`.
    pub key: &'static str,
    /// What is wrong, with a hint.
    pub problem: String,
}

impl ModelConfig {
    /// The reference's Sudoku-Extreme architecture (27,275,266 parameters) at a given batch size.
    pub fn sudoku(batch_size: usize) -> Self {
        Self {
            arch: Arch::Hrm,
            batch_size,
            seq_len: 81,
            puzzle_emb_ndim: 512,
            num_puzzle_identifiers: 1,
            vocab_size: 11,
            h_cycles: 2,
            l_cycles: 2,
            h_layers: 4,
            l_layers: 4,
            hidden_size: 512,
            expansion: 4.0,
            num_heads: 8,
            pos_encodings: PosEncoding::Rope,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            halt_max_steps: 16,
            halt_exploration_prob: 0.1,
            forward_dtype: ForwardDtype::F32,
            puzzle_emb_len: None,
            mlp_t: false,
            no_act_continue: None,
            act_enabled: None,
            act_inference: None,
        }
    }

    /// The Maze-30x30 architecture: Sudoku's with seq_len 900 and vocab 6.
    pub fn maze(batch_size: usize) -> Self {
        Self {
            seq_len: 900,
            vocab_size: 6,
            ..Self::sudoku(batch_size)
        }
    }

    /// The small model of the parity fixtures and of quick tests: hidden 64, 4 heads, 2+2 layers.
    pub fn tiny(batch_size: usize) -> Self {
        Self {
            hidden_size: 64,
            num_heads: 4,
            h_layers: 2,
            l_layers: 2,
            puzzle_emb_ndim: 64,
            ..Self::sudoku(batch_size)
        }
    }

    /// This configuration's sizes (width, heads, sequence, vocabulary, puzzle table, halting) as
    /// `arch`, with that reference's defaults for the rest: TRM's one network of 2 blocks, 3 x 6
    /// cycles, a 16-position prefix (none without a puzzle embedding), halting on q_halt alone,
    /// and with `mlp_t` the sequence SwiGLU and no positional encoding; the baseline's 8 blocks
    /// called once per segment. `Arch::Hrm` returns it unchanged (`mlp_t` is TRM's only).
    pub fn with_arch(self, arch: Arch, mlp_t: bool) -> Self {
        match arch {
            Arch::Hrm => self,
            Arch::Trm => Self {
                arch,
                h_cycles: 3,
                l_cycles: 6,
                h_layers: 0,
                l_layers: 2,
                puzzle_emb_len: Some(if self.puzzle_emb_ndim > 0 { 16 } else { 0 }),
                no_act_continue: Some(true),
                mlp_t,
                pos_encodings: if mlp_t {
                    PosEncoding::None
                } else {
                    self.pos_encodings
                },
                ..self
            },
            Arch::Transformer => Self {
                arch,
                h_cycles: 1,
                l_cycles: 0,
                h_layers: 8,
                l_layers: 0,
                ..self
            },
        }
    }

    /// Check every invariant once; the error names the key and says what would work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem: String| Err(ConfigError { key, problem });
        let arch = self.arch;
        let mut positive = vec![
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("halt_max_steps", self.halt_max_steps),
        ];
        match arch {
            Arch::Hrm => positive.extend([
                ("H_cycles", self.h_cycles),
                ("L_cycles", self.l_cycles),
                ("H_layers", self.h_layers),
                ("L_layers", self.l_layers),
            ]),
            Arch::Trm => positive.extend([
                ("H_cycles", self.h_cycles),
                ("L_cycles", self.l_cycles),
                ("L_layers", self.l_layers),
            ]),
            Arch::Transformer => positive.push(("H_layers", self.h_layers)),
        }
        for (key, v) in positive {
            if v == 0 {
                return err(key, format!("must be at least 1 (arch {})", arch.name()));
            }
        }
        let trm_only = |key, set: bool| {
            if set && arch != Arch::Trm {
                err(
                    key,
                    format!(
                        "is a TRM key and arch {} has no such setting (remove it, or set arch \
                         name = \"trm\")",
                        arch.name()
                    ),
                )
            } else {
                Ok(())
            }
        };
        trm_only("mlp_t", self.mlp_t)?;
        trm_only("puzzle_emb_len", self.puzzle_emb_len.is_some_and(|p| p > 0))?;
        trm_only("pos_encodings", self.pos_encodings == PosEncoding::None)?;
        if arch == Arch::Transformer && self.no_act_continue.is_some() {
            return err(
                "no_ACT_continue",
                "is not a key of the transformer baseline (it halts on q_halt > q_continue and \
                 learns no Q-continue target)"
                    .into(),
            );
        }
        if arch != Arch::Transformer {
            for (key, v) in [
                ("act_enabled", self.act_enabled),
                ("act_inference", self.act_inference),
            ] {
                if v.is_some() {
                    return err(
                        key,
                        format!(
                            "is a key of the transformer baseline, not of arch {}",
                            arch.name()
                        ),
                    );
                }
            }
        }
        if self.act_inference == Some(true) {
            return err(
                "act_inference",
                "= true is not implemented: evaluation runs every segment; `hrm eval --halting q` \
                 halts on the Q head instead"
                    .into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return err(
                "hidden_size",
                format!(
                    "= {} is not divisible by num_heads = {} (head_dim must be an integer)",
                    self.hidden_size, self.num_heads
                ),
            );
        }
        if self.pos_encodings == PosEncoding::Rope && !self.head_dim().is_multiple_of(2) {
            return err(
                "num_heads",
                format!(
                    "gives an odd head_dim {} which RoPE cannot rotate",
                    self.head_dim()
                ),
            );
        }
        if self.puzzle_emb_ndim > 0 && self.num_puzzle_identifiers == 0 {
            return err(
                "num_puzzle_identifiers",
                "is 0 but puzzle_emb_ndim > 0 (set puzzle_emb_ndim = 0 to disable)".into(),
            );
        }
        let p = self.puzzle_emb_len();
        if self.puzzle_emb_ndim > p.saturating_mul(self.hidden_size) {
            return err(
                "puzzle_emb_ndim",
                format!(
                    "= {} does not fit the prefix of puzzle_emb_len x hidden_size = {p} x {} \
                     values (raise puzzle_emb_len to at least {}, or set it to 0 for \
                     ceil(puzzle_emb_ndim / hidden_size))",
                    self.puzzle_emb_ndim,
                    self.hidden_size,
                    self.puzzle_emb_ndim.div_ceil(self.hidden_size)
                ),
            );
        }
        if self.puzzle_emb_ndim == 0 && p > 0 {
            return err(
                "puzzle_emb_len",
                format!(
                    "= {p}{} but puzzle_emb_ndim = 0: there is no puzzle embedding to put in the \
                     prefix (set puzzle_emb_len = 0)",
                    if self.puzzle_emb_len.is_none() {
                        " (TRM's default)"
                    } else {
                        ""
                    }
                ),
            );
        }
        if !self.expansion.is_finite() || self.expansion <= 0.0 {
            return err(
                "expansion",
                format!("= {} must be a positive number", self.expansion),
            );
        }
        if !self.rms_norm_eps.is_finite() || self.rms_norm_eps < 0.0 {
            return err("rms_norm_eps", "must be a non-negative number".into());
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return err("rope_theta", "must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.halt_exploration_prob) {
            return err("halt_exploration_prob", "must lie in [0, 1]".into());
        }
        Ok(())
    }

    /// Keys this architecture ignores although they are set, each with a one-line reason (the
    /// CLI prints them as warnings).
    pub fn warnings(&self) -> Vec<(&'static str, String)> {
        let mut w = Vec::new();
        match self.arch {
            Arch::Hrm => {}
            Arch::Trm => {
                if self.h_layers != 0 {
                    w.push((
                        "H_layers",
                        format!(
                            "= {} is ignored by TRM (one network of L_layers blocks does both \
                             updates)",
                            self.h_layers
                        ),
                    ));
                }
                if self.mlp_t && self.pos_encodings == PosEncoding::Rope {
                    w.push((
                        "pos_encodings",
                        "= rope has no effect with mlp_t (the blocks have no attention)".into(),
                    ));
                }
            }
            Arch::Transformer => {
                for (key, v) in [
                    ("H_cycles", self.h_cycles),
                    ("L_cycles", self.l_cycles),
                    ("L_layers", self.l_layers),
                ] {
                    let meant = if key == "H_cycles" { 1 } else { 0 };
                    if v != 0 && v != meant {
                        w.push((
                            key,
                            format!(
                                "= {v} is ignored by the transformer baseline (one call of \
                                 H_layers blocks per segment)"
                            ),
                        ));
                    }
                }
            }
        }
        w
    }

    /// Whether the carry has a z_L (not the transformer baseline).
    pub fn has_z_l(&self) -> bool {
        self.arch != Arch::Transformer
    }

    /// Blocks of the H (`h`) and the L weights: HRM both, TRM only L, the baseline only H.
    pub fn module_layers(&self, h: bool) -> usize {
        match (self.arch, h) {
            (Arch::Hrm, true) | (Arch::Transformer, true) => self.h_layers,
            (Arch::Hrm, false) | (Arch::Trm, false) => self.l_layers,
            _ => 0,
        }
    }

    /// Whether a z_H update runs the H blocks (HRM, the baseline) or the L blocks (TRM's one
    /// network).
    pub fn h_update_uses_h_blocks(&self) -> bool {
        self.arch != Arch::Trm
    }

    /// The module calls of one segment, in order, with the ones that carry the gradient in a
    /// training step (always the tail):
    /// - HRM: `H_cycles` x (`L_cycles` z_L updates, one z_H update); only the last z_L and the
    ///   last z_H update carry the gradient (the one-step gradient).
    /// - TRM: the same calls; the whole last H cycle (`L_cycles` + 1 calls) carries it.
    /// - Transformer: one z_H update, with the gradient.
    pub fn schedule(&self) -> Vec<Call> {
        let (hc, lc) = (self.h_cycles, self.l_cycles);
        match self.arch {
            Arch::Transformer => vec![Call {
                h: true,
                grad: true,
            }],
            arch => {
                let mut calls = Vec::with_capacity(hc * (lc + 1));
                for n in 0..hc {
                    let last_cycle = n + 1 == hc;
                    for t in 0..lc {
                        let grad = match arch {
                            Arch::Trm => last_cycle,
                            _ => last_cycle && t + 1 == lc,
                        };
                        calls.push(Call { h: false, grad });
                    }
                    calls.push(Call {
                        h: true,
                        grad: last_cycle,
                    });
                }
                calls
            }
        }
    }

    /// [`ModelConfig::schedule`] and how many of its calls come before the ones that carry the
    /// gradient (the calls a training step runs without it).
    pub fn split_schedule(&self) -> (Vec<Call>, usize) {
        let calls = self.schedule();
        let n = calls.iter().take_while(|c| !c.grad).count();
        (calls, n)
    }

    /// Halting in training: on `q_halt > 0` alone (TRM's `no_ACT_continue`), else on
    /// `q_halt > q_continue`.
    pub fn halts_on_q_halt_alone(&self) -> bool {
        match self.arch {
            Arch::Trm => self.no_act_continue.unwrap_or(true),
            Arch::Hrm => self.no_act_continue.unwrap_or(false),
            Arch::Transformer => false,
        }
    }

    /// Whether a training step halts on the Q head at all (`halt_max_steps > 1`, and the
    /// baseline's `act_enabled`).
    pub fn adaptive_halting(&self) -> bool {
        self.halt_max_steps > 1 && self.act_enabled.unwrap_or(true)
    }

    /// Whether a training step bootstraps the Q-continue target with one more no-gradient
    /// segment (HRM; TRM with `no_ACT_continue = false`; never the baseline, whose loss head
    /// does not ask for it).
    pub fn learns_q_continue(&self) -> bool {
        self.adaptive_halting() && self.arch != Arch::Transformer && !self.halts_on_q_halt_alone()
    }

    /// Refuse a configuration whose [`ModelConfig::memory_lower_bound`] exceeds the memory this
    /// machine has available now (Linux; elsewhere nothing is checked), naming the key that
    /// dominates it. Called before a model is allocated in host memory (a model on a GPU is not
    /// checked: its memory is the device's).
    pub fn check_memory(&self) -> Result<(), ConfigError> {
        let err = |key, problem: String| Err(ConfigError { key, problem });
        if let Some(available) = available_memory() {
            let (need, (key, value)) = self.memory_lower_bound();
            if need > available {
                return err(
                    key,
                    format!(
                        "= {} makes the model need at least {} of memory (weights, puzzle \
                         table, RoPE tables, one batch of activations), but this machine has {} \
                         available",
                        value,
                        gib(need),
                        gib(available)
                    ),
                );
            }
        }
        Ok(())
    }

    /// A lower bound of the host memory a model of this configuration needs, in bytes, and the
    /// key whose value dominates it: the f32 weights (`hidden_size`), the puzzle table
    /// (`num_puzzle_identifiers` or `puzzle_emb_ndim`, whichever is larger), the RoPE tables
    /// (`seq_len`, or `puzzle_emb_ndim` when the puzzle prefix is the longer part of the
    /// sequence), and one batch's activations of one block (`batch_size`, or the sequence's key
    /// when the sequence is longer than the batch), with that key's value. Training needs
    /// several times more (gradients, Adam moments, the graph of the gradient calls). In f64, so
    /// that absurd values cannot overflow.
    pub fn memory_lower_bound(&self) -> (f64, (&'static str, usize)) {
        let f = |x: usize| x as f64;
        let (d, i) = (f(self.hidden_size), f(self.mlp_inner()));
        let s = f(self.seq_len) + f(self.puzzle_emb_len());
        let block = 4.0 * d * d + 3.0 * i * d;
        let layers = self.module_layers(true) + self.module_layers(false);
        let params = f(layers) * block + 2.0 * f(self.vocab_size) * d;
        let (ids, ndim) = (
            ("num_puzzle_identifiers", self.num_puzzle_identifiers),
            ("puzzle_emb_ndim", self.puzzle_emb_ndim),
        );
        let puzzle_key = if ndim.1 > ids.1 { ndim } else { ids };
        // the sequence is the tokens plus the puzzle prefix: whichever is longer drives it
        let seq_key = if f(self.seq_len) >= s / 2.0 {
            ("seq_len", self.seq_len)
        } else {
            ndim
        };
        let batch_key = if f(self.batch_size) >= s {
            ("batch_size", self.batch_size)
        } else {
            seq_key
        };
        let terms = [
            (4.0 * params, ("hidden_size", self.hidden_size)),
            (4.0 * f(ids.1) * f(ndim.1), puzzle_key),
            (8.0 * s * d / f(self.num_heads), seq_key),
            (
                4.0 * f(self.batch_size) * s * (4.0 * d + 3.0 * i),
                batch_key,
            ),
        ];
        let total = terms.iter().map(|t| t.0).sum();
        let largest = terms.iter().max_by(|a, b| a.0.total_cmp(&b.0));
        (total, largest.expect("four terms").1)
    }

    /// Per-head width Dh = hidden_size / num_heads.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Puzzle-prefix positions P: `puzzle_emb_len` when set and non-zero; absent, TRM's 16;
    /// otherwise (HRM, the baseline, or 0) ceil(puzzle_emb_ndim / hidden_size), 0 without puzzle
    /// embedding.
    pub fn puzzle_emb_len(&self) -> usize {
        match (self.puzzle_emb_len, self.arch) {
            (Some(p), _) if p > 0 => p,
            (None, Arch::Trm) => 16,
            _ => self.puzzle_emb_ndim.div_ceil(self.hidden_size.max(1)),
        }
    }

    /// Full sequence S = P + seq_len seen by the blocks.
    pub fn full_seq_len(&self) -> usize {
        self.seq_len + self.puzzle_emb_len()
    }

    /// SwiGLU inner width: round(expansion * D * 2/3) rounded up to a multiple of 256
    /// (1536 for D = 512, expansion 4; 256 for D = 64).
    pub fn mlp_inner(&self) -> usize {
        swiglu_width(self.expansion, self.hidden_size)
    }

    /// TRM's `mlp_t`: inner width of the SwiGLU across the S positions,
    /// 256 * ceil(round(expansion * S * 2/3) / 256).
    pub fn mlp_t_inner(&self) -> usize {
        swiglu_width(self.expansion, self.full_seq_len())
    }

    /// Parameters of one block: the mixer (attention or `mlp_t`) and the channel SwiGLU.
    fn block_params(&self) -> usize {
        let (d, i) = (self.hidden_size, self.mlp_inner());
        let mixer = if self.mlp_t {
            let (s, it) = (self.full_seq_len(), self.mlp_t_inner());
            3 * s * it
        } else {
            4 * d * d
        };
        mixer + 3 * i * d
    }

    /// Number of trainable parameters (the reference's `num_params`: the puzzle table and
    /// H_init/L_init are buffers and not counted).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let mut n = (self.module_layers(true) + self.module_layers(false)) * self.block_params();
        n += 2 * self.vocab_size * d; // embed_tokens + lm_head
        n += 2 * d + 2; // q_head
        if self.pos_encodings == PosEncoding::Learned {
            n += self.full_seq_len() * d;
        }
        n
    }
}

/// SwiGLU inner width for a `width`-wide input: round(expansion * width * 2/3) rounded up to a
/// multiple of 256 (Python's round() is round-half-to-even; the product is never exactly .5 for
/// the shipped values, but follow it anyway).
fn swiglu_width(expansion: f64, width: usize) -> usize {
    let x = expansion * width as f64 * 2.0 / 3.0;
    let r = x.round_ties_even() as usize;
    r.div_ceil(256) * 256
}

/// Memory this machine has available now, in bytes (Linux: `MemAvailable` of /proc/meminfo;
/// elsewhere unknown, and nothing is checked).
fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Bytes as GiB for messages.
fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_that_cannot_fit_in_memory_are_refused_by_key() {
        if available_memory().is_none() {
            eprintln!("no /proc/meminfo: the memory check does not run on this system");
            return;
        }
        let base = ModelConfig::sudoku(32);
        assert!(base.validate().is_ok() && base.check_memory().is_ok());
        let cases = [
            (
                ModelConfig {
                    hidden_size: 100_000,
                    num_heads: 8,
                    ..base.clone()
                },
                "hidden_size",
            ),
            (
                ModelConfig {
                    num_puzzle_identifiers: 10_000_000_000,
                    ..base.clone()
                },
                "num_puzzle_identifiers",
            ),
            (
                ModelConfig {
                    puzzle_emb_ndim: 100_000_000,
                    ..base.clone()
                },
                "puzzle_emb_ndim",
            ),
            (
                ModelConfig {
                    seq_len: 1_000_000_000,
                    ..base.clone()
                },
                "seq_len",
            ),
            (
                ModelConfig {
                    batch_size: 1_000_000_000_000,
                    ..base.clone()
                },
                "batch_size",
            ),
        ];
        for (cfg, key) in cases {
            cfg.validate().unwrap();
            let e = cfg.check_memory().unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.problem.contains("GiB") && e.problem.contains("available"),
                "{e}"
            );
        }
    }

    #[test]
    fn sudoku_param_count_matches_reference() {
        // 27,275,266 is the count logged by users of the reference (HRM issue #12).
        assert_eq!(ModelConfig::sudoku(1).num_params(), 27_275_266);
        assert_eq!(ModelConfig::maze(1).num_params(), 27_270_146);
        let learned = ModelConfig {
            pos_encodings: PosEncoding::Learned,
            ..ModelConfig::sudoku(1)
        };
        assert_eq!(learned.num_params(), 27_317_250);
    }

    #[test]
    fn swiglu_width_rounding() {
        assert_eq!(ModelConfig::sudoku(1).mlp_inner(), 1536);
        assert_eq!(ModelConfig::tiny(1).mlp_inner(), 256);
        let c = ModelConfig {
            hidden_size: 96,
            num_heads: 3,
            ..ModelConfig::tiny(1)
        };
        assert_eq!(c.mlp_inner(), 256);
    }

    #[test]
    fn reference_key_names_round_trip() {
        let json = r#"{"batch_size":4,"seq_len":81,"puzzle_emb_ndim":64,"num_puzzle_identifiers":3,
            "vocab_size":11,"H_cycles":2,"L_cycles":2,"H_layers":2,"L_layers":2,"hidden_size":64,
            "expansion":4.0,"num_heads":4,"pos_encodings":"rope","rms_norm_eps":1e-05,
            "rope_theta":10000.0,"halt_max_steps":4,"halt_exploration_prob":0.0,
            "forward_dtype":"float32"}"#;
        let c: ModelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.h_cycles, 2);
        assert_eq!(c.puzzle_emb_len(), 1);
        assert_eq!(c.full_seq_len(), 82);
        let back = serde_json::to_string(&c).unwrap();
        assert!(back.contains("\"H_cycles\":2"));
        c.validate().unwrap();
    }

    /// Which calls of a segment carry the gradient: HRM the last z_L and the last z_H update,
    /// TRM the whole last H cycle, the baseline its one call.
    #[test]
    fn call_schedules() {
        let show = |cfg: &ModelConfig| -> String {
            cfg.schedule()
                .iter()
                .map(|c| match (c.h, c.grad) {
                    (false, false) => "l",
                    (false, true) => "L",
                    (true, false) => "h",
                    (true, true) => "H",
                })
                .collect()
        };
        let hrm = ModelConfig {
            h_cycles: 2,
            l_cycles: 3,
            ..ModelConfig::tiny(1)
        };
        assert_eq!(show(&hrm), "lllhllLH");
        let trm = ModelConfig {
            h_cycles: 2,
            l_cycles: 3,
            ..ModelConfig::tiny(1).with_arch(Arch::Trm, false)
        };
        assert_eq!(show(&trm), "lllhLLLH");
        assert_eq!(show(&ModelConfig { h_cycles: 1, ..trm }), "LLLH");
        let base = ModelConfig::tiny(1).with_arch(Arch::Transformer, false);
        assert_eq!(show(&base), "H");
        assert_eq!(
            show(&ModelConfig {
                h_cycles: 4,
                ..base
            }),
            "H"
        );
    }

    /// What the TRM reference crashes on or ignores: one-line errors or warnings naming the key.
    #[test]
    fn trm_configs_the_reference_mishandles() {
        let trm = ModelConfig::tiny(1).with_arch(Arch::Trm, false);
        trm.validate().unwrap();
        assert_eq!(trm.puzzle_emb_len(), 16);
        let cases = [
            (
                ModelConfig {
                    puzzle_emb_ndim: 200,
                    puzzle_emb_len: Some(3),
                    ..trm.clone()
                },
                "puzzle_emb_ndim",
                "at least 4",
            ),
            (
                ModelConfig {
                    puzzle_emb_ndim: 0,
                    puzzle_emb_len: None,
                    ..trm.clone()
                },
                "puzzle_emb_len",
                "TRM's default",
            ),
            (
                ModelConfig {
                    mlp_t: true,
                    ..ModelConfig::tiny(1)
                },
                "mlp_t",
                "TRM key",
            ),
            (
                ModelConfig {
                    pos_encodings: PosEncoding::None,
                    ..ModelConfig::tiny(1)
                },
                "pos_encodings",
                "TRM key",
            ),
            (
                ModelConfig {
                    l_layers: 0,
                    ..trm.clone()
                },
                "L_layers",
                "at least 1",
            ),
            (
                ModelConfig {
                    act_inference: Some(true),
                    ..ModelConfig::tiny(1).with_arch(Arch::Transformer, false)
                },
                "act_inference",
                "not implemented",
            ),
            (
                ModelConfig {
                    no_act_continue: Some(true),
                    ..ModelConfig::tiny(1).with_arch(Arch::Transformer, false)
                },
                "no_ACT_continue",
                "not a key",
            ),
        ];
        for (cfg, key, text) in cases {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.to_string().contains(text) && !e.to_string().contains('\n'),
                "{e}"
            );
        }
        // 0 selects HRM's ceil rule, which a puzzle_emb_ndim of 0 also satisfies
        let ceil = ModelConfig {
            puzzle_emb_ndim: 200,
            puzzle_emb_len: Some(0),
            ..trm.clone()
        };
        ceil.validate().unwrap();
        assert_eq!(ceil.puzzle_emb_len(), 4);
        // H_layers set for TRM is ignored, with a warning naming it
        let w = ModelConfig { h_layers: 4, ..trm }.warnings();
        assert!(w.len() == 1 && w[0].0 == "H_layers", "{w:?}");
        assert!(ModelConfig::tiny(1).warnings().is_empty());
        // an unknown model is refused by name
        assert!(Arch::parse("trm").is_some() && Arch::parse("hrm-v9").is_none());
        assert_eq!(
            Arch::parse("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"),
            Some(Arch::Trm)
        );
    }

    #[test]
    fn validation_names_the_key() {
        let c = ModelConfig {
            num_heads: 5,
            ..ModelConfig::tiny(1)
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "hidden_size");
        assert!(e.to_string().contains("not divisible by num_heads"));
        let bad = r#"{"batch_size":4,"typo":1}"#;
        let e = serde_json::from_str::<ModelConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("typo"), "{e}");
    }
}
