//! Architecture configuration of the HRM ACT v1 model.
//!
//! Mirrors the reference's pydantic config (sapientinc/HRM:models/hrm/hrm_act_v1.py) and
//! `config/arch/hrm_v1.yaml`: the serde names are the reference's key names (`H_cycles`,
//! `puzzle_emb_ndim`, ...) so a fixture's `config` JSON, a reference `all_config.yaml` arch block
//! and our own TOML files all deserialise into the same struct. Validation happens once, in
//! [`ModelConfig::validate`], with errors that name the offending key.

use serde::{Deserialize, Serialize};

/// Positional encoding of the sequence (reference key `pos_encodings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    /// Rotary embeddings (rotate-half) on queries and keys, fp32 tables.
    Rope,
    /// A learned `[S, D]` table added to the input embeddings, then scaled by 1/sqrt(2).
    Learned,
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
    #[serde(rename = "H_cycles")]
    pub h_cycles: usize,
    /// L-module updates per H update (T in the paper), e.g. 2.
    #[serde(rename = "L_cycles")]
    pub l_cycles: usize,
    /// Transformer blocks in the H module, e.g. 4.
    #[serde(rename = "H_layers")]
    pub h_layers: usize,
    /// Transformer blocks in the L module, e.g. 4.
    #[serde(rename = "L_layers")]
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

    /// Check every invariant once; the error names the key and says what would work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem: String| Err(ConfigError { key, problem });
        for (key, v) in [
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("vocab_size", self.vocab_size),
            ("H_cycles", self.h_cycles),
            ("L_cycles", self.l_cycles),
            ("H_layers", self.h_layers),
            ("L_layers", self.l_layers),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("halt_max_steps", self.halt_max_steps),
        ] {
            if v == 0 {
                return err(key, "must be at least 1".into());
            }
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
        let s = f(self.seq_len) + (f(self.puzzle_emb_ndim) / d).ceil();
        let block = 4.0 * d * d + 3.0 * i * d;
        let params = f(self.h_layers + self.l_layers) * block + 2.0 * f(self.vocab_size) * d;
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

    /// Puzzle-prefix positions P = ceil(puzzle_emb_ndim / hidden_size) (0 without puzzle embedding).
    pub fn puzzle_emb_len(&self) -> usize {
        self.puzzle_emb_ndim.div_ceil(self.hidden_size)
    }

    /// Full sequence S = P + seq_len seen by the blocks.
    pub fn full_seq_len(&self) -> usize {
        self.seq_len + self.puzzle_emb_len()
    }

    /// SwiGLU inner width: round(expansion * D * 2/3) rounded up to a multiple of 256
    /// (1536 for D = 512, expansion 4; 256 for D = 64).
    pub fn mlp_inner(&self) -> usize {
        // Python's round() is round-half-to-even; the product is never exactly .5 for the
        // shipped values, but follow it anyway.
        let x = self.expansion * self.hidden_size as f64 * 2.0 / 3.0;
        let r = x.round_ties_even() as usize;
        r.div_ceil(256) * 256
    }

    /// Number of trainable parameters (the reference's `num_params`: the puzzle table and
    /// H_init/L_init are buffers and not counted).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let i = self.mlp_inner();
        let block = 3 * d * d + d * d + 2 * i * d + d * i;
        let mut n = (self.h_layers + self.l_layers) * block;
        n += 2 * self.vocab_size * d; // embed_tokens + lm_head
        n += 2 * d + 2; // q_head
        if self.pos_encodings == PosEncoding::Learned {
            n += self.full_seq_len() * d;
        }
        n
    }
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
