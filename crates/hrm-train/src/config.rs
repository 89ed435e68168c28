//! The training configuration: TOML files with Hydra-style `key=value` overrides.
//!
//! Mirrors sapientinc/HRM:pretrain.py `PretrainConfig` (+ `ArchConfig`, `LossConfig`) with the
//! defaults of `config/cfg_pretrain.yaml` and `config/arch/hrm_v1.yaml` (written down in
//! `configs/pretrain.toml`). Key names are the reference's, so its README commands port with a
//! one-word change: `hrm train configs/pretrain.toml data_path=data/sudoku-extreme-1k-aug-1000
//! epochs=20000 eval_interval=2000 lr=7e-5 arch.L_cycles=8`.
//!
//! Loading ([`TrainConfig::load`]) goes: parse the file into a `toml::Table`; if it has
//! `base = "other.toml"` (relative to the file), load that first and merge this file over it
//! table-wise (Hydra's defaults list); apply the overrides (dotted keys reach nested tables; the
//! value is parsed as TOML if it parses, else taken as a bare string); check every key against
//! the schema below (unknown keys get a "did you mean" from the known ones, wrong types name the
//! expected type); deserialise with `deny_unknown_fields`; validate the invariants. Every error
//! is one line naming the key and where its value came from (file or override).
//!
//! Differences from the reference, each deliberate:
//! - Unknown keys are errors (the reference's pydantic `extra='allow'` silently accepts typos).
//! - `arch.puzzle_emb_ndim` absent means `hidden_size` (Hydra's `${.hidden_size}`).
//! - `arch.forward_dtype` absent means `bfloat16` on CUDA (the reference's default) and
//!   `float32` on CPU (bf16 matmuls are slow there and the parity fixtures are f32).
//! - Additions (not in the reference): `eval_max_examples`, `log_interval`, `checkpoint_keep`,
//!   `checkpoint_interval`, `device`, `threads`, and TRM's `ema` / `ema_rate` (a moving average
//!   of the weights for evaluation and the saved model). The world size is not a config key: it is
//!   `hrm train --gpus N` (one process per GPU, see [`crate::dist`]), and
//!   `global_batch_size` must divide by it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use hrm_model::config::{ForwardDtype, ModelConfig, PosEncoding};
use serde::{Deserialize, Serialize};

/// The only architecture implemented (the reference's `arch.name`, `module@class`).
pub const ARCH_NAME: &str = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1";
/// The only loss head implemented (the reference's `arch.loss.name`).
pub const LOSS_NAME: &str = "losses@ACTLossHead";
/// Tensors `eval_save_outputs` may name (the batch's and the loss head's outputs; the list
/// `evaluate.py` forces).
pub const SAVE_OUTPUT_KEYS: [&str; 6] = [
    "inputs",
    "labels",
    "puzzle_identifiers",
    "logits",
    "q_halt_logits",
    "q_continue_logits",
];
/// Number of processes of a plain `hrm train` (one device). `hrm train --gpus N` runs N
/// processes, one per GPU, as the reference does under `torchrun` (see [`crate::dist`]).
pub const WORLD_SIZE: usize = 1;
/// Deepest chain of `base = ...` files followed before giving up.
const MAX_BASE_DEPTH: usize = 16;

// =============================================================================================
// The configuration structs.

/// Cross-entropy flavour of the LM loss (reference key `arch.loss.loss_type`): the model crate's.
pub use hrm_model::loss::LossType;

/// The loss head (reference `LossConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `losses@ACTLossHead` (the only head implemented).
    pub name: String,
    /// `stablemax_cross_entropy` (default) or `softmax_cross_entropy`.
    pub loss_type: LossType,
}

/// The `[arch]` table: `arch/hrm_v1.yaml` plus the model config's optional keys. The
/// dataset-dependent sizes (`vocab_size`, `seq_len`, `num_puzzle_identifiers`) and `batch_size`
/// are injected by [`TrainConfig::model_config`], as the reference's `create_model` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchConfig {
    /// `hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1` (the only model implemented).
    pub name: String,
    /// The loss head.
    pub loss: LossConfig,
    /// Maximum ACT segments M_max (default 16).
    pub halt_max_steps: usize,
    /// Exploration probability of the Q-halting (default 0.1).
    pub halt_exploration_prob: f64,
    /// H-module updates per segment (default 2).
    #[serde(rename = "H_cycles")]
    pub h_cycles: usize,
    /// L-module updates per H update (default 2).
    #[serde(rename = "L_cycles")]
    pub l_cycles: usize,
    /// Blocks in the H module (default 4).
    #[serde(rename = "H_layers")]
    pub h_layers: usize,
    /// Blocks in the L module (default 4).
    #[serde(rename = "L_layers")]
    pub l_layers: usize,
    /// Model width (default 512).
    pub hidden_size: usize,
    /// Attention heads (default 8).
    pub num_heads: usize,
    /// SwiGLU expansion factor (default 4).
    pub expansion: f64,
    /// Puzzle-embedding width; absent = `hidden_size` (the yaml's `${.hidden_size}`, resolved by
    /// [`TrainConfig::load`]); 0 disables the puzzle embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puzzle_emb_ndim: Option<usize>,
    /// `rope` (default) or `learned`.
    pub pos_encodings: PosEncoding,
    /// RMSNorm epsilon (default 1e-5).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (default 10000).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// `float32` or `bfloat16`; absent = `bfloat16` on CUDA, `float32` on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_dtype: Option<ForwardDtype>,
}

fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_log_interval() -> u64 {
    100
}
fn default_ema_rate() -> f64 {
    0.999
}
fn default_device() -> String {
    "cpu".into()
}

/// Provenance of every key (where its value came from), kept for error messages after loading.
/// It is not part of the configuration's value: two configs compare equal whatever their origin.
#[derive(Debug, Clone, Default)]
struct Provenance(BTreeMap<String, Origin>);

impl PartialEq for Provenance {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The training configuration (reference `PretrainConfig`). Field docs give the reference
/// default (`configs/pretrain.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture (`[arch]`).
    pub arch: ArchConfig,
    /// Dataset folder holding `train/` and `test/` (default `data/arc-aug-1000`); relative paths
    /// are resolved from the current directory, as the reference does.
    pub data_path: String,
    /// Examples per optimizer step over all processes (default 768).
    pub global_batch_size: usize,
    /// Passes over the training groups (default 100000).
    pub epochs: u64,
    /// Epochs between evaluations (default 10000); absent = evaluate once at the end. Must
    /// divide `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_interval: Option<u64>,
    /// Save a checkpoint at every evaluation, not only the last (default true).
    #[serde(default)]
    pub checkpoint_every_eval: bool,
    /// Peak learning rate of AdamATan2 (default 1e-4).
    pub lr: f64,
    /// Final learning rate as a fraction of the peak (default 1.0 = constant after warm-up).
    pub lr_min_ratio: f64,
    /// Linear warm-up steps (default 2000).
    pub lr_warmup_steps: u64,
    /// Decoupled weight decay of AdamATan2 (default 0.1).
    pub weight_decay: f64,
    /// AdamATan2 beta1 (default 0.9).
    pub beta1: f64,
    /// AdamATan2 beta2 (default 0.95).
    pub beta2: f64,
    /// Peak learning rate of the puzzle-embedding SignSGD (default 1e-2).
    pub puzzle_emb_lr: f64,
    /// Weight decay of the puzzle-embedding SignSGD (default 0.1).
    pub puzzle_emb_weight_decay: f64,
    /// Project name; absent = the capitalised base name of `data_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// Run name; absent = a two-word slug plus a time stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    /// Run folder; absent = `runs/<project>-<run>` (the CLI's `--run-dir` takes precedence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_path: Option<String>,
    /// Seed of every random stream of the run (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Tensors saved at each evaluation (default none), from [`SAVE_OUTPUT_KEYS`].
    #[serde(default)]
    pub eval_save_outputs: Vec<String>,
    /// Addition: evaluate on at most this many test examples (absent = all); for CPU runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_max_examples: Option<usize>,
    /// Addition: optimizer steps between plain log lines (default 100).
    #[serde(default = "default_log_interval")]
    pub log_interval: u64,
    /// Addition: keep only the newest N checkpoints (absent = keep all, as the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_keep: Option<usize>,
    /// Addition: also checkpoint every N optimizer steps (absent = only at evaluations, as the
    /// reference); a killed run resumes from the newest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// Addition: `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Addition: CPU threads (absent = `RAYON_NUM_THREADS` or all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Addition (TRM's key): evaluate and save an exponential moving average of the weights
    /// (default false).
    #[serde(default)]
    pub ema: bool,
    /// Addition (TRM's key): the average's decay per optimizer step (default 0.999).
    #[serde(default = "default_ema_rate")]
    pub ema_rate: f64,
    #[serde(skip)]
    provenance: Provenance,
}

/// Dataset sizes injected into the model config; read by the trainer from the train split's
/// `dataset.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetFacts {
    /// Token vocabulary (`vocab_size`).
    pub vocab_size: usize,
    /// Tokens per example (`seq_len`).
    pub seq_len: usize,
    /// Rows of the puzzle-embedding table (`num_puzzle_identifiers`).
    pub num_puzzle_identifiers: usize,
}

/// The device a run trains on (the `device` key, parsed): the model crate's one device parser.
pub use hrm_model::device::DeviceSpec;

// =============================================================================================
// Errors.

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A config file (the preset or one of its `base` files).
    File(PathBuf),
    /// A command-line `key=value` override (the whole argument).
    Override(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Override(arg) => write!(f, "override `{arg}`"),
        }
    }
}

/// A configuration problem. Every variant displays as one line that names the key and the file
/// or override it came from, with a hint.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{path}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message (one line).
        message: String,
    },
    /// A key the configuration does not have.
    #[error("{origin}: unknown key `{key}`{}", suggestion_text(.suggestion))]
    UnknownKey {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key, e.g. `arch.hiden_size`.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type.
    #[error("{origin}: `{key}` expects {expected}, got {got}")]
    WrongType {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// What the key takes, e.g. "an integer".
        expected: String,
        /// The value found, as written in TOML.
        got: String,
    },
    /// A required key is set nowhere.
    #[error(
        "{origin}: missing required key `{key}` (start the file with `base = \"pretrain.toml\"` \
         to inherit the reference defaults)"
    )]
    MissingKey {
        /// The top config file.
        origin: Origin,
        /// Dotted key.
        key: String,
    },
    /// A command-line override that is not `key=value`.
    #[error("override `{arg}` is not of the form key=value (e.g. `lr=7e-5` or `arch.L_cycles=8`)")]
    OverrideSyntax {
        /// The argument as given.
        arg: String,
    },
    /// A value of the right type that cannot work.
    #[error("{origin}: `{key}` {problem}")]
    Invalid {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// What is wrong, with a hint.
        problem: String,
    },
    /// The dataset facts give a model that cannot work.
    #[error("{data_path}: dataset.json `{key}` {problem}")]
    Dataset {
        /// The dataset folder.
        data_path: String,
        /// The dataset.json field.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A resumed run's configuration differs from the saved one in keys that must match.
    #[error(
        "config does not match the run being resumed: {} (these keys must equal the saved \
         config.toml; drop the overrides or start a new run)",
        .diffs.join("; ")
    )]
    ResumeMismatch {
        /// One `` `key` (saved X, now Y) `` entry per differing key.
        diffs: Vec<String>,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => " (see configs/pretrain.toml for every key)".into(),
    }
}

// =============================================================================================
// The schema: every key, its type, whether it is required. Drives the unknown-key and type
// checks (with dotted paths and origins, which serde's messages lack) and the rendering order.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Non-negative integer.
    Int,
    /// Float (integers accepted and converted).
    Float,
    Bool,
    Str,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// Array of strings.
    StrList,
    Table,
}

impl Kind {
    fn expected(&self) -> String {
        match self {
            Kind::Int => "a non-negative integer".into(),
            Kind::Float => "a number".into(),
            Kind::Bool => "a boolean (true or false)".into(),
            Kind::Str => "a string".into(),
            Kind::Enum(opts) => {
                let q: Vec<String> = opts.iter().map(|o| format!("\"{o}\"")).collect();
                format!("one of {}", q.join(", "))
            }
            Kind::StrList => "an array of strings".into(),
            Kind::Table => "a table".into(),
        }
    }
}

struct KeySpec {
    key: &'static str,
    kind: Kind,
    required: bool,
}

const fn spec(key: &'static str, kind: Kind, required: bool) -> KeySpec {
    KeySpec {
        key,
        kind,
        required,
    }
}

const LOSS_TYPES: &[&str] = &["stablemax_cross_entropy", "softmax_cross_entropy"];
const POS_ENCODINGS: &[&str] = &["rope", "learned"];
const DTYPES: &[&str] = &["float32", "bfloat16"];

/// Every key in display order (the order of `configs/pretrain.toml`).
const SCHEMA: &[KeySpec] = &[
    spec("data_path", Kind::Str, true),
    spec("global_batch_size", Kind::Int, true),
    spec("epochs", Kind::Int, true),
    spec("eval_interval", Kind::Int, false),
    spec("checkpoint_every_eval", Kind::Bool, false),
    spec("lr", Kind::Float, true),
    spec("lr_min_ratio", Kind::Float, true),
    spec("lr_warmup_steps", Kind::Int, true),
    spec("beta1", Kind::Float, true),
    spec("beta2", Kind::Float, true),
    spec("weight_decay", Kind::Float, true),
    spec("puzzle_emb_weight_decay", Kind::Float, true),
    spec("puzzle_emb_lr", Kind::Float, true),
    spec("seed", Kind::Int, false),
    spec("project_name", Kind::Str, false),
    spec("run_name", Kind::Str, false),
    spec("checkpoint_path", Kind::Str, false),
    spec("eval_save_outputs", Kind::StrList, false),
    spec("eval_max_examples", Kind::Int, false),
    spec("log_interval", Kind::Int, false),
    spec("checkpoint_keep", Kind::Int, false),
    spec("checkpoint_interval", Kind::Int, false),
    spec("device", Kind::Str, false),
    spec("threads", Kind::Int, false),
    spec("ema", Kind::Bool, false),
    spec("ema_rate", Kind::Float, false),
    spec("arch", Kind::Table, true),
    spec("arch.name", Kind::Str, true),
    spec("arch.halt_max_steps", Kind::Int, true),
    spec("arch.halt_exploration_prob", Kind::Float, true),
    spec("arch.H_cycles", Kind::Int, true),
    spec("arch.L_cycles", Kind::Int, true),
    spec("arch.H_layers", Kind::Int, true),
    spec("arch.L_layers", Kind::Int, true),
    spec("arch.hidden_size", Kind::Int, true),
    spec("arch.num_heads", Kind::Int, true),
    spec("arch.expansion", Kind::Float, true),
    spec("arch.puzzle_emb_ndim", Kind::Int, false),
    spec("arch.pos_encodings", Kind::Enum(POS_ENCODINGS), true),
    spec("arch.rms_norm_eps", Kind::Float, false),
    spec("arch.rope_theta", Kind::Float, false),
    spec("arch.forward_dtype", Kind::Enum(DTYPES), false),
    spec("arch.loss", Kind::Table, true),
    spec("arch.loss.name", Kind::Str, true),
    spec("arch.loss.loss_type", Kind::Enum(LOSS_TYPES), true),
];

fn spec_of(key: &str) -> Option<&'static KeySpec> {
    SCHEMA.iter().find(|s| s.key == key)
}

/// Keys that must be equal when a run is resumed (besides every `arch.*` key).
const RESUME_KEYS: [&str; 5] = ["data_path", "global_batch_size", "seed", "ema", "ema_rate"];

// =============================================================================================
// Loading.

impl TrainConfig {
    /// Load `path` (following its `base` chain), apply `overrides` (`key=value`), check and
    /// validate. Errors are one line naming the key and the file or override.
    pub fn load(path: &Path, overrides: &[String]) -> Result<TrainConfig, ConfigError> {
        let mut prov = Provenance::default();
        let mut table = load_file_chain(path, &mut prov, &mut Vec::new())?;
        for arg in overrides {
            apply_override(&mut table, &mut prov, arg)?;
        }
        let top = Origin::File(path.to_path_buf());
        check_schema(&mut table, "", &prov, &top)?;
        let mut cfg: TrainConfig = toml::Value::Table(table).try_into().map_err(|e| {
            // The schema check above should make this unreachable; keep the message anyway.
            ConfigError::Invalid {
                origin: top.clone(),
                key: "(config)".into(),
                problem: one_line(&e.to_string()),
            }
        })?;
        cfg.provenance = prov;
        cfg.provenance.0.entry(String::new()).or_insert(top);
        // Resolve the yaml's `${.hidden_size}` interpolation once, so the loaded (and saved)
        // config states the width actually used.
        cfg.arch.puzzle_emb_ndim.get_or_insert(cfg.arch.hidden_size);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Where the value of `key` came from (the top config file if unknown).
    fn origin(&self, key: &str) -> Origin {
        self.provenance
            .0
            .get(key)
            .or_else(|| self.provenance.0.get(""))
            .cloned()
            .unwrap_or_else(|| Origin::File(PathBuf::from("config")))
    }

    fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        self.invalid_with(key, &[], problem)
    }

    /// An invalid-value error for `key` whose problem also involves the `related` keys: it names
    /// the origin of `key`, unless `key` came from a file and a related key from an override
    /// (then the override is what the user just changed, so name it).
    fn invalid_with(&self, key: &str, related: &[&str], problem: impl Into<String>) -> ConfigError {
        let own = self.origin(key);
        let origin = match own {
            Origin::Override(_) => own,
            Origin::File(_) => related
                .iter()
                .map(|k| self.origin(k))
                .find(|o| matches!(o, Origin::Override(_)))
                .unwrap_or(own),
        };
        ConfigError::Invalid {
            origin,
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Check every invariant that does not need the dataset (done by [`TrainConfig::load`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.arch.name != ARCH_NAME {
            return Err(self.invalid(
                "arch.name",
                format!(
                    "= \"{}\" is not implemented (only \"{ARCH_NAME}\")",
                    self.arch.name
                ),
            ));
        }
        if self.arch.loss.name != LOSS_NAME {
            return Err(self.invalid(
                "arch.loss.name",
                format!(
                    "= \"{}\" is not implemented (only \"{LOSS_NAME}\")",
                    self.arch.loss.name
                ),
            ));
        }
        if self.data_path.trim().is_empty() {
            return Err(self.invalid("data_path", "is empty (give the dataset folder)"));
        }
        if self.epochs == 0 {
            return Err(self.invalid("epochs", "must be at least 1"));
        }
        if let Some(iv) = self.eval_interval {
            if iv == 0 {
                return Err(self.invalid("eval_interval", "must be at least 1"));
            }
            if !self.epochs.is_multiple_of(iv) {
                return Err(self.invalid_with(
                    "eval_interval",
                    &["epochs"],
                    format!(
                        "= {iv} does not divide epochs = {} (the reference asserts it; e.g. \
                         epochs=20000 eval_interval=2000)",
                        self.epochs
                    ),
                ));
            }
        }
        for (key, v) in [
            ("lr", self.lr),
            ("puzzle_emb_lr", self.puzzle_emb_lr),
            ("weight_decay", self.weight_decay),
            ("puzzle_emb_weight_decay", self.puzzle_emb_weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.invalid(key, format!("= {v} must be a non-negative number")));
            }
        }
        if !(0.0..=1.0).contains(&self.lr_min_ratio) {
            return Err(self.invalid(
                "lr_min_ratio",
                format!(
                    "= {} must lie in [0, 1] (1 = constant after warm-up)",
                    self.lr_min_ratio
                ),
            ));
        }
        for (key, v) in [
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("ema_rate", self.ema_rate),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(self.invalid(key, format!("= {v} must lie in [0, 1)")));
            }
        }
        if self.log_interval == 0 {
            return Err(self.invalid("log_interval", "must be at least 1"));
        }
        if self.checkpoint_interval == Some(0) {
            return Err(self.invalid(
                "checkpoint_interval",
                "must be at least 1 (leave it out for none)",
            ));
        }
        for (key, v) in [
            ("checkpoint_keep", self.checkpoint_keep),
            ("threads", self.threads),
            ("eval_max_examples", self.eval_max_examples),
        ] {
            if v == Some(0) {
                return Err(self.invalid(key, "must be at least 1 (leave it out for no limit)"));
            }
        }
        for (i, k) in self.eval_save_outputs.iter().enumerate() {
            if !SAVE_OUTPUT_KEYS.contains(&k.as_str()) {
                let hint = closest(k, SAVE_OUTPUT_KEYS.iter().copied())
                    .map(|s| format!("did you mean \"{s}\"? "))
                    .unwrap_or_default();
                return Err(self.invalid(
                    "eval_save_outputs",
                    format!(
                        "entry {i} = \"{k}\" is not a saved tensor ({hint}choose from {})",
                        SAVE_OUTPUT_KEYS.join(", ")
                    ),
                ));
            }
        }
        self.device_spec()?;
        self.check_world_size(WORLD_SIZE)?;
        // The model's own invariants (hidden_size % num_heads, ...), with placeholder dataset
        // sizes: the dataset-dependent checks run again in `model_config`.
        let placeholder = DatasetFacts {
            vocab_size: 1,
            seq_len: 1,
            num_puzzle_identifiers: 1,
        };
        self.model_config(&placeholder).map(|_| ())
    }

    /// The `device` key parsed: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
    pub fn device_spec(&self) -> Result<DeviceSpec, ConfigError> {
        let d = self.device.trim();
        if let Some(spec) = DeviceSpec::parse(d) {
            return Ok(spec);
        }
        Err(self.invalid(
            "device",
            format!("= \"{d}\" is not a device (use \"cpu\" or \"cuda:0\")"),
        ))
    }

    /// `global_batch_size` must split evenly over `world_size` processes (reference assert).
    pub fn check_world_size(&self, world_size: usize) -> Result<(), ConfigError> {
        if world_size == 0 || !self.global_batch_size.is_multiple_of(world_size) {
            return Err(self.invalid(
                "global_batch_size",
                format!(
                    "= {} is not divisible by the world size {world_size} (each process takes an \
                     equal slice of the batch)",
                    self.global_batch_size
                ),
            ));
        }
        Ok(())
    }

    /// `arch.puzzle_emb_ndim` resolved (absent = `hidden_size`).
    pub fn puzzle_emb_ndim(&self) -> usize {
        self.arch.puzzle_emb_ndim.unwrap_or(self.arch.hidden_size)
    }

    /// `arch.forward_dtype` resolved (absent = bf16 on CUDA, f32 on CPU; an unparsable device
    /// counts as CPU here, [`TrainConfig::device_spec`] reports it).
    pub fn forward_dtype(&self) -> ForwardDtype {
        match (self.arch.forward_dtype, self.device_spec()) {
            (Some(d), _) => d,
            (None, Ok(DeviceSpec::Cuda(_))) => ForwardDtype::BF16,
            (None, _) => ForwardDtype::F32,
        }
    }

    /// Project name resolved: `project_name`, or the base name of `data_path` capitalised as
    /// Python's `str.capitalize` does (`sudoku-extreme-1k-aug-1000` -> `Sudoku-extreme-1k-aug-1000`).
    pub fn project_name(&self) -> String {
        if let Some(p) = &self.project_name {
            return p.clone();
        }
        let base = Path::new(self.data_path.trim_end_matches('/'))
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "hrm".into());
        let mut chars = base.chars();
        match chars.next() {
            Some(c) => c
                .to_uppercase()
                .chain(chars.flat_map(|c| c.to_lowercase()))
                .collect(),
            None => "hrm".into(),
        }
    }

    /// The model config for a dataset, with `batch_size = global_batch_size / world size`.
    pub fn model_config(&self, meta: &DatasetFacts) -> Result<ModelConfig, ConfigError> {
        self.model_config_for_world(meta, WORLD_SIZE)
    }

    /// [`TrainConfig::model_config`] for `world_size` processes.
    pub fn model_config_for_world(
        &self,
        meta: &DatasetFacts,
        world_size: usize,
    ) -> Result<ModelConfig, ConfigError> {
        self.check_world_size(world_size)?;
        let a = &self.arch;
        let mc = ModelConfig {
            batch_size: self.global_batch_size / world_size,
            seq_len: meta.seq_len,
            puzzle_emb_ndim: self.puzzle_emb_ndim(),
            num_puzzle_identifiers: meta.num_puzzle_identifiers,
            vocab_size: meta.vocab_size,
            h_cycles: a.h_cycles,
            l_cycles: a.l_cycles,
            h_layers: a.h_layers,
            l_layers: a.l_layers,
            hidden_size: a.hidden_size,
            expansion: a.expansion,
            num_heads: a.num_heads,
            pos_encodings: a.pos_encodings,
            rms_norm_eps: a.rms_norm_eps,
            rope_theta: a.rope_theta,
            halt_max_steps: a.halt_max_steps,
            halt_exploration_prob: a.halt_exploration_prob,
            forward_dtype: self.forward_dtype(),
        };
        mc.validate().map_err(|e| match e.key {
            "vocab_size" | "seq_len" | "num_puzzle_identifiers" => ConfigError::Dataset {
                data_path: self.data_path.clone(),
                key: e.key.into(),
                problem: e.problem,
            },
            "batch_size" => self.invalid("global_batch_size", e.problem),
            "hidden_size" => self.invalid_with("arch.hidden_size", &["arch.num_heads"], e.problem),
            "num_heads" => self.invalid_with("arch.num_heads", &["arch.hidden_size"], e.problem),
            k => self.invalid(&format!("arch.{k}"), e.problem),
        })?;
        Ok(mc)
    }

    /// Check that `data_path` is a dataset folder (`train/dataset.json` and `test/dataset.json`
    /// exist). Relative paths are resolved from the current directory.
    pub fn check_data_path(&self) -> Result<(), ConfigError> {
        let root = Path::new(&self.data_path);
        if !root.is_dir() {
            return Err(self.invalid(
                "data_path",
                format!(
                    "= \"{}\": folder not found (relative to the current directory; build it \
                     first with `hrm data <sudoku|maze|arc> --output-dir {}`)",
                    self.data_path, self.data_path
                ),
            ));
        }
        for split in ["train", "test"] {
            if !root.join(split).join("dataset.json").is_file() {
                return Err(self.invalid(
                    "data_path",
                    format!(
                        "= \"{}\" has no {split}/dataset.json (not a dataset built by `hrm data` \
                         or the reference's builders)",
                        self.data_path
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every setting in display order, resolved: `(dotted key, value)`, `None` for an unset
    /// optional key. `arch.puzzle_emb_ndim` is always given (resolved from `hidden_size`).
    fn flatten(&self) -> Vec<(&'static str, Option<toml::Value>)> {
        let table = toml::Table::try_from(self).unwrap_or_default();
        SCHEMA
            .iter()
            .filter(|s| s.kind != Kind::Table)
            .map(|s| {
                let mut v = lookup(&table, s.key).cloned();
                if s.key == "arch.puzzle_emb_ndim" {
                    v = Some(toml::Value::Integer(self.puzzle_emb_ndim() as i64));
                }
                (s.key, v)
            })
            .collect()
    }

    /// The resolved config as TOML, in the order of `configs/pretrain.toml`, with unset optional
    /// keys as comments. [`TrainConfig::load`] reads it back to an equal config.
    pub fn to_toml_string(&self) -> String {
        let mut top = String::new();
        let mut sections: Vec<(&str, String)> =
            vec![("arch", String::new()), ("arch.loss", String::new())];
        for (key, value) in self.flatten() {
            let (section, leaf) = match key.rsplit_once('.') {
                Some((s, l)) => (Some(s), l),
                None => (None, key),
            };
            let line = match &value {
                Some(v) => format!("{leaf} = {v}\n"),
                None => format!("# {leaf} = (unset: {})\n", unset_meaning(key)),
            };
            match section {
                None => top.push_str(&line),
                Some(s) => {
                    if let Some((_, body)) = sections.iter_mut().find(|(n, _)| *n == s) {
                        body.push_str(&line);
                    }
                }
            }
        }
        let mut out = format!(
            "# Resolved training configuration written by hrm {} (load it with `hrm train \
             <this file>`).\n\n",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str(&top);
        for (name, body) in sections {
            out.push_str(&format!("\n[{name}]\n{body}"));
        }
        out
    }

    /// A `| key | value |` table of every resolved setting (llm.c style), ready to print.
    pub fn to_table_string(&self) -> String {
        let rows: Vec<(String, String)> = self
            .flatten()
            .into_iter()
            .map(|(k, v)| {
                let shown = match v {
                    Some(toml::Value::String(s)) => s,
                    Some(v) => v.to_string(),
                    None => format!("({})", unset_meaning(k)),
                };
                (k.to_string(), shown)
            })
            .collect();
        let kw = rows
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0)
            .max("Parameter".len());
        let vw = rows
            .iter()
            .map(|(_, v)| v.chars().count())
            .max()
            .unwrap_or(0)
            .max("Value".len());
        let rule = format!("+{}+{}+\n", "-".repeat(kw + 2), "-".repeat(vw + 2));
        let mut out = rule.clone();
        out.push_str(&format!("| {:<kw$} | {:<vw$} |\n", "Parameter", "Value"));
        out.push_str(&rule);
        for (k, v) in &rows {
            out.push_str(&format!("| {k:<kw$} | {v:<vw$} |\n"));
        }
        out.push_str(&rule);
        out
    }

    /// Check that this config may resume a run saved with `saved`: every `arch.*` key (resolved)
    /// and `data_path`, `global_batch_size`, `seed` must be equal. Other keys (lr, epochs,
    /// logging, ...) may change. The error names every differing key.
    pub fn check_resume_compatible(&self, saved: &TrainConfig) -> Result<(), ConfigError> {
        let now = self.flatten();
        let then = saved.flatten();
        let mut diffs = Vec::new();
        for ((key, a), (_, b)) in now.iter().zip(then.iter()) {
            let mut must_match = key.starts_with("arch.") || RESUME_KEYS.contains(key);
            let (mut a, mut b) = (a.clone(), b.clone());
            if *key == "arch.forward_dtype" {
                // Compare the dtype actually used, not whether it was spelled out.
                let show = |d: ForwardDtype| match d {
                    ForwardDtype::F32 => "float32",
                    ForwardDtype::BF16 => "bfloat16",
                };
                a = Some(toml::Value::String(show(self.forward_dtype()).into()));
                b = Some(toml::Value::String(show(saved.forward_dtype()).into()));
                must_match = true;
            }
            if must_match && a != b {
                let show = |v: &Option<toml::Value>| match v {
                    Some(v) => v.to_string(),
                    None => "unset".into(),
                };
                diffs.push(format!("`{key}` (saved {}, now {})", show(&b), show(&a)));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::ResumeMismatch { diffs })
        }
    }
}

/// The LM loss a checkpoint was trained with, read from the run config its metadata holds
/// (`train_config`, written by `hrm train`); None for a checkpoint without one (e.g. an imported
/// reference checkpoint) or with an unreadable one.
pub fn saved_loss_type(metadata: &std::collections::HashMap<String, String>) -> Option<LossType> {
    let table: toml::Table = toml::from_str(metadata.get("train_config")?).ok()?;
    let name = lookup(&table, "arch.loss.loss_type")?.as_str()?;
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// What an unset optional key means, for the table and the saved file.
fn unset_meaning(key: &str) -> &'static str {
    match key {
        "eval_interval" => "= epochs: evaluate at the end only",
        "project_name" => "from data_path",
        "run_name" => "generated",
        "checkpoint_path" => "runs/<project>-<run>",
        "eval_max_examples" => "all test examples",
        "checkpoint_keep" => "keep all",
        "checkpoint_interval" => "at evaluations only",
        "threads" => "all cores",
        "arch.forward_dtype" => "bfloat16 on cuda, float32 on cpu",
        _ => "default",
    }
}

/// Value at a dotted path of a table.
fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let first = parts.next()?;
    let mut v = table.get(first)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// Squash a multi-line message (toml's errors carry a source excerpt) into one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read and parse one file, following its `base` chain; records the origin of every key.
fn load_file_chain(
    path: &Path,
    prov: &mut Provenance,
    chain: &mut Vec<PathBuf>,
) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: one_line(e.message()),
        }
    })?;
    let own = table.clone();
    let origin = Origin::File(path.to_path_buf());
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: "forms a cycle of base files (a file cannot inherit from itself)".into(),
        });
    }
    if chain.len() >= MAX_BASE_DEPTH {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: format!("chain is deeper than {MAX_BASE_DEPTH} files"),
        });
    }
    chain.push(canonical);
    let merged = match table.remove("base") {
        None => table,
        Some(toml::Value::String(b)) => {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(&b);
            if !base_path.is_file() {
                return Err(ConfigError::Invalid {
                    origin,
                    key: "base".into(),
                    problem: format!(
                        "= \"{b}\": {} not found (base paths are relative to the file)",
                        base_path.display()
                    ),
                });
            }
            let mut base = load_file_chain(&base_path, prov, chain)?;
            merge(&mut base, table);
            base
        }
        Some(other) => {
            return Err(ConfigError::WrongType {
                origin,
                key: "base".into(),
                expected: "a string (a path relative to this file)".into(),
                got: show_value(&other),
            })
        }
    };
    // Record this file as the origin of every key it sets (after its bases: it overrides them).
    record(prov, "", &own, &origin);
    prov.0.remove("base");
    chain.pop();
    Ok(merged)
}

/// Record `origin` for every (dotted) key of `table`, tables included.
fn record(prov: &mut Provenance, prefix: &str, table: &toml::Table, origin: &Origin) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            record(prov, &key, t, origin);
        }
        prov.0.insert(key, origin.clone());
    }
}

/// Merge `over` into `base` table-wise: nested tables merge, everything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parse an override value: TOML if it parses as a single value, else a bare string. For keys
/// that take strings, the raw text is kept (`run_name=2024` is the string "2024").
fn parse_override_value(key: &str, raw: &str) -> toml::Value {
    let kind = spec_of(key).map(|s| s.kind);
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    match (kind, parsed) {
        (Some(Kind::Str | Kind::Enum(_)), Some(v @ toml::Value::String(_))) => v,
        (Some(Kind::Str | Kind::Enum(_)), _) => toml::Value::String(raw.to_string()),
        (Some(Kind::StrList), None) if raw.starts_with('[') && raw.ends_with(']') => {
            // Hydra-style bare list: eval_save_outputs=[logits,labels].
            let inner = &raw[1..raw.len() - 1];
            let items = inner
                .split(',')
                .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\''))
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect();
            toml::Value::Array(items)
        }
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.to_string()),
    }
}

/// Apply one `key=value` override to the merged table.
fn apply_override(
    table: &mut toml::Table,
    prov: &mut Provenance,
    arg: &str,
) -> Result<(), ConfigError> {
    let Some((key, raw)) = arg.split_once('=') else {
        return Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        });
    };
    let key = key.trim();
    let raw = raw.trim();
    let origin = Origin::Override(arg.to_string());
    let valid_key = !key.is_empty()
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid_key {
        return Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        });
    }
    if key == "base" {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: "can only be set inside a config file".into(),
        });
    }
    if spec_of(key).is_none() {
        return Err(ConfigError::UnknownKey {
            origin,
            key: key.into(),
            suggestion: suggest(key),
        });
    }
    let value = parse_override_value(key, raw);
    let parts: Vec<&str> = key.split('.').collect();
    let mut t = table;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            other => {
                let parent = parts[..=i].join(".");
                return Err(ConfigError::WrongType {
                    origin: prov.0.get(&parent).cloned().unwrap_or(origin),
                    key: parent,
                    expected: "a table".into(),
                    got: show_value(other),
                });
            }
        };
    }
    if let toml::Value::Table(sub) = &value {
        record(prov, key, sub, &origin);
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    prov.0.insert(key.to_string(), origin);
    Ok(())
}

/// A value as written in TOML, shortened for an error message.
fn show_value(v: &toml::Value) -> String {
    let s = match v {
        toml::Value::Table(_) => return "a table".into(),
        v => v.to_string(),
    };
    let s = one_line(&s);
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Walk the merged table: reject unknown keys, check and normalise types (integers given for
/// float keys become floats), and require the required keys.
fn check_schema(
    table: &mut toml::Table,
    prefix: &str,
    prov: &Provenance,
    top: &Origin,
) -> Result<(), ConfigError> {
    let origin_of = |key: &str| prov.0.get(key).cloned().unwrap_or_else(|| top.clone());
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(spec) = spec_of(&key) else {
            return Err(ConfigError::UnknownKey {
                origin: origin_of(&key),
                suggestion: suggest(&key),
                key,
            });
        };
        let wrong = |v: &toml::Value| ConfigError::WrongType {
            origin: origin_of(&key),
            key: key.clone(),
            expected: spec.kind.expected(),
            got: show_value(v),
        };
        match (spec.kind, &*v) {
            (Kind::Int, toml::Value::Integer(i)) if *i >= 0 => {}
            (Kind::Float, toml::Value::Float(_)) => {}
            (Kind::Float, toml::Value::Integer(i)) => *v = toml::Value::Float(*i as f64),
            (Kind::Bool, toml::Value::Boolean(_)) => {}
            (Kind::Str, toml::Value::String(_)) => {}
            (Kind::Enum(opts), toml::Value::String(s)) => {
                if !opts.contains(&s.as_str()) {
                    let hint = closest(s, opts.iter().copied())
                        .map(|c| format!(" (did you mean \"{c}\"?)"))
                        .unwrap_or_default();
                    return Err(ConfigError::WrongType {
                        origin: origin_of(&key),
                        key: key.clone(),
                        expected: spec.kind.expected(),
                        got: format!("\"{s}\"{hint}"),
                    });
                }
            }
            (Kind::StrList, toml::Value::Array(items)) => {
                if let Some(bad) = items.iter().find(|i| !i.is_str()) {
                    return Err(ConfigError::WrongType {
                        origin: origin_of(&key),
                        key: key.clone(),
                        expected: spec.kind.expected(),
                        got: format!("an array holding {}", show_value(bad)),
                    });
                }
            }
            (Kind::Table, toml::Value::Table(_)) => {}
            (_, other) => return Err(wrong(other)),
        }
        if let toml::Value::Table(sub) = v {
            check_schema(sub, &key, prov, top)?;
        }
    }
    // Required keys of this table level.
    for s in SCHEMA.iter().filter(|s| s.required) {
        let (parent, leaf) = match s.key.rsplit_once('.') {
            Some((p, l)) => (p, l),
            None => ("", s.key),
        };
        if parent == prefix && !table.contains_key(leaf) {
            return Err(ConfigError::MissingKey {
                origin: top.clone(),
                key: s.key.into(),
            });
        }
    }
    Ok(())
}

/// Levenshtein distance (on chars), for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "Did you mean" for an unknown dotted key: a key with the same last component elsewhere
/// (`L_cycles` -> `arch.L_cycles`), else the closest known key by edit distance.
fn suggest(key: &str) -> Option<String> {
    let leaf = key.rsplit('.').next().unwrap_or(key).to_lowercase();
    let known = || SCHEMA.iter().map(|s| s.key);
    if let Some(k) =
        known().find(|k| k.rsplit('.').next().map(str::to_lowercase) == Some(leaf.clone()))
    {
        return Some(k.to_string());
    }
    if let Some(k) = closest(key, known()) {
        return Some(k.to_string());
    }
    // A typo in the last component of a nested key: compare within the same table.
    let parent = key.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    let siblings: BTreeSet<&str> = known()
        .filter(|k| k.rsplit_once('.').map(|(p, _)| p).unwrap_or("") == parent)
        .collect();
    closest(key, siblings.into_iter()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("lr", "lr"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("arch.hiden_size").as_deref(),
            Some("arch.hidden_size")
        );
        assert_eq!(suggest("L_cycles").as_deref(), Some("arch.L_cycles"));
        assert_eq!(suggest("l_cycles").as_deref(), Some("arch.L_cycles"));
        assert_eq!(suggest("epoch").as_deref(), Some("epochs"));
        assert_eq!(suggest("zzzzzzzzzzzz"), None);
    }

    #[test]
    fn override_values() {
        assert_eq!(parse_override_value("lr", "7e-5"), toml::Value::Float(7e-5));
        assert_eq!(
            parse_override_value("epochs", "20000"),
            toml::Value::Integer(20000)
        );
        assert_eq!(
            parse_override_value("data_path", "data/x"),
            toml::Value::String("data/x".into())
        );
        assert_eq!(
            parse_override_value("run_name", "2024"),
            toml::Value::String("2024".into())
        );
        assert_eq!(
            parse_override_value("eval_save_outputs", "[logits, labels]"),
            toml::Value::Array(vec!["logits".into(), "labels".into()])
        );
        assert_eq!(
            parse_override_value("eval_save_outputs", "[\"logits\"]"),
            toml::Value::Array(vec!["logits".into()])
        );
        // Not a single TOML value: kept as a bare string (then rejected by the type check).
        assert_eq!(
            parse_override_value("epochs", "1\nx = 2"),
            toml::Value::String("1\nx = 2".into())
        );
    }

    #[test]
    fn schema_matches_the_struct() {
        // Every non-table schema key appears in the serialised form of a full config, and the
        // serialised form has no key the schema lacks.
        let text = r#"
            data_path = "d"
            global_batch_size = 8
            epochs = 4
            eval_interval = 2
            checkpoint_every_eval = true
            lr = 1e-4
            lr_min_ratio = 1.0
            lr_warmup_steps = 2
            beta1 = 0.9
            beta2 = 0.95
            weight_decay = 0.1
            puzzle_emb_weight_decay = 0.1
            puzzle_emb_lr = 1e-2
            seed = 1
            project_name = "p"
            run_name = "r"
            checkpoint_path = "c"
            eval_save_outputs = ["logits"]
            eval_max_examples = 5
            log_interval = 3
            checkpoint_keep = 2
            checkpoint_interval = 4
            device = "cpu"
            threads = 2
            ema = true
            ema_rate = 0.99
            [arch]
            name = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
            halt_max_steps = 2
            halt_exploration_prob = 0.1
            H_cycles = 1
            L_cycles = 1
            H_layers = 1
            L_layers = 1
            hidden_size = 8
            num_heads = 2
            expansion = 2.0
            puzzle_emb_ndim = 8
            pos_encodings = "rope"
            rms_norm_eps = 1e-5
            rope_theta = 10000.0
            forward_dtype = "float32"
            [arch.loss]
            name = "losses@ACTLossHead"
            loss_type = "stablemax_cross_entropy"
        "#;
        let cfg: TrainConfig = toml::from_str(text).unwrap();
        let table = toml::Table::try_from(&cfg).unwrap();
        let mut ser_keys = BTreeSet::new();
        fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if let toml::Value::Table(s) = v {
                    walk(s, &key, out);
                }
                out.insert(key);
            }
        }
        walk(&table, "", &mut ser_keys);
        let schema_keys: BTreeSet<String> = SCHEMA.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(ser_keys, schema_keys);
    }
}
