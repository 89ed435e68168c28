//! The configuration's schema: the structs of the `[arch]` table and the dataset facts, the
//! defaults, and the list of every known key with its type (checked before deserialising, so
//! that errors name the dotted key and its origin).

use hrm_model::config::{ForwardDtype, ModelConfig};
use hrm_model::loss::LossType;
use serde::{Deserialize, Serialize};

/// HRM's `arch.name` as the reference writes it (`module@class`); `hrm`, `trm` and
/// `transformer` (or the TRM repository's `module@class` names) select the others
/// ([`hrm_model::config::Arch`]).
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

/// The loss head (reference `LossConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `losses@ACTLossHead` (the only head implemented).
    pub name: String,
    /// `stablemax_cross_entropy` (default) or `softmax_cross_entropy`.
    pub loss_type: LossType,
}

/// Keys of the model config that the `[arch]` table does not hold: the per-run sizes, filled in
/// by [`super::TrainConfig::model_config`] from the dataset and the world size, as the
/// reference's `create_model` does.
pub(super) const RUN_SIZES: [&str; 4] = [
    "batch_size",
    "seq_len",
    "vocab_size",
    "num_puzzle_identifiers",
];

/// The `[arch]` table: `arch/hrm_v1.yaml`. Its architecture keys are the model config's own
/// ([`ModelConfig`], under the reference's names `H_cycles`, `hidden_size`, ... with its
/// defaults), declared there once; the table adds the model and loss names, and two keys that may
/// be left out here and are resolved from the rest of the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct ArchConfig {
    /// The model: `hrm` (or the reference's `hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1`),
    /// `trm` or `transformer` (or the TRM repository's names), as written; parsed into
    /// `model.arch`.
    pub name: String,
    /// The loss head.
    pub loss: LossConfig,
    /// Puzzle-embedding width; absent = `hidden_size` (the yaml's `${.hidden_size}`, resolved by
    /// [`super::TrainConfig::load`]); 0 disables the puzzle embedding.
    pub puzzle_emb_ndim: Option<usize>,
    /// `float32` or `bfloat16`; absent = `bfloat16` on CUDA, `float32` on CPU.
    pub forward_dtype: Option<ForwardDtype>,
    /// Every other key of the table: the architecture hyper-parameters (`H_cycles`, `L_cycles`,
    /// `H_layers`, `L_layers`, `hidden_size`, `num_heads`, `expansion`, `pos_encodings`,
    /// `halt_max_steps`, `halt_exploration_prob`, `rms_norm_eps`, `rope_theta`; the reference's
    /// values are in `configs/pretrain.toml`). Its per-run sizes (`batch_size`, `seq_len`,
    /// `vocab_size`, `num_puzzle_identifiers`) and `puzzle_emb_ndim` are 0 and its
    /// `forward_dtype` is `float32` here: the model config of a run is
    /// [`super::TrainConfig::model_config`].
    pub model: ModelConfig,
}

impl TryFrom<toml::Table> for ArchConfig {
    type Error = String;

    fn try_from(mut t: toml::Table) -> Result<Self, String> {
        fn take<T: serde::de::DeserializeOwned>(
            t: &mut toml::Table,
            key: &str,
        ) -> Result<Option<T>, String> {
            t.remove(key)
                .map(|v| v.try_into().map_err(|e| format!("`{key}`: {e}")))
                .transpose()
        }
        if let Some(k) = RUN_SIZES.iter().find(|k| t.contains_key(**k)) {
            return Err(format!(
                "unknown field `{k}` (set from the dataset and the world size)"
            ));
        }
        let name: String = take(&mut t, "name")?.ok_or("missing field `name`")?;
        let loss = take(&mut t, "loss")?.ok_or("missing field `loss`")?;
        let puzzle_emb_ndim = take(&mut t, "puzzle_emb_ndim")?;
        let forward_dtype = take(&mut t, "forward_dtype")?;
        if t.contains_key("arch") {
            return Err("unknown field `arch` (the model is `name`)".into());
        }
        for k in RUN_SIZES.into_iter().chain(["puzzle_emb_ndim"]) {
            t.insert(k.into(), toml::Value::Integer(0));
        }
        let mut model: ModelConfig = t.try_into().map_err(|e: toml::de::Error| e.to_string())?;
        // an unknown name is reported by `TrainConfig::validate`, naming the key
        model.arch = hrm_model::config::Arch::parse(&name).unwrap_or_default();
        Ok(Self {
            name,
            loss,
            puzzle_emb_ndim,
            forward_dtype,
            model,
        })
    }
}

impl Serialize for ArchConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn value<T: Serialize, E: serde::ser::Error>(v: &T) -> Result<toml::Value, E> {
            toml::Value::try_from(v).map_err(E::custom)
        }
        let toml::Value::Table(mut t) = value(&self.model)? else {
            return Err(serde::ser::Error::custom("the model config is not a table"));
        };
        for k in RUN_SIZES
            .into_iter()
            .chain(["puzzle_emb_ndim", "forward_dtype", "arch"])
        {
            t.remove(k);
        }
        t.insert("name".into(), value(&self.name)?);
        t.insert("loss".into(), value(&self.loss)?);
        if let Some(n) = &self.puzzle_emb_ndim {
            t.insert("puzzle_emb_ndim".into(), value(n)?);
        }
        if let Some(d) = &self.forward_dtype {
            t.insert("forward_dtype".into(), value(d)?);
        }
        t.serialize(s)
    }
}

/// Default of `log_interval`.
pub(super) fn default_log_interval() -> u64 {
    100
}
/// Default of `ema_rate`.
pub(super) fn default_ema_rate() -> f64 {
    0.999
}
/// Default of `device`.
pub(super) fn default_device() -> String {
    "cpu".into()
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

/// The type of a key's value, as the schema checks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
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
    /// What the key takes, for "expects ..." messages.
    pub(super) fn expected(&self) -> String {
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

/// One key of the schema.
pub(super) struct KeySpec {
    /// Dotted key, e.g. `arch.H_cycles`.
    pub(super) key: &'static str,
    /// Its type.
    pub(super) kind: Kind,
    /// Whether a config must set it (directly or through its `base`).
    pub(super) required: bool,
}

const fn spec(key: &'static str, kind: Kind, required: bool) -> KeySpec {
    KeySpec {
        key,
        kind,
        required,
    }
}

const LOSS_TYPES: &[&str] = &["stablemax_cross_entropy", "softmax_cross_entropy"];
const POS_ENCODINGS: &[&str] = &["rope", "learned", "none"];
const DTYPES: &[&str] = &["float32", "bfloat16"];

/// Every key, its type and whether it is required, in display order (the order of
/// `configs/pretrain.toml`). Drives the unknown-key and type checks (with dotted paths and
/// origins, which serde's messages lack) and the rendering of a config.
pub(super) const SCHEMA: &[KeySpec] = &[
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
    spec("load_checkpoint", Kind::Str, false),
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
    spec("arch.L_cycles", Kind::Int, false),
    spec("arch.H_layers", Kind::Int, false),
    spec("arch.L_layers", Kind::Int, false),
    spec("arch.hidden_size", Kind::Int, true),
    spec("arch.num_heads", Kind::Int, true),
    spec("arch.expansion", Kind::Float, true),
    spec("arch.puzzle_emb_ndim", Kind::Int, false),
    spec("arch.pos_encodings", Kind::Enum(POS_ENCODINGS), true),
    spec("arch.rms_norm_eps", Kind::Float, false),
    spec("arch.rope_theta", Kind::Float, false),
    spec("arch.forward_dtype", Kind::Enum(DTYPES), false),
    spec("arch.puzzle_emb_len", Kind::Int, false),
    spec("arch.mlp_t", Kind::Bool, false),
    spec("arch.no_ACT_continue", Kind::Bool, false),
    spec("arch.act_enabled", Kind::Bool, false),
    spec("arch.act_inference", Kind::Bool, false),
    spec("arch.loss", Kind::Table, true),
    spec("arch.loss.name", Kind::Str, true),
    spec("arch.loss.loss_type", Kind::Enum(LOSS_TYPES), true),
];

/// The schema entry of a dotted key.
pub(super) fn spec_of(key: &str) -> Option<&'static KeySpec> {
    SCHEMA.iter().find(|s| s.key == key)
}

/// Keys that must be equal when a run is resumed (besides every `arch.*` key).
pub(super) const RESUME_KEYS: [&str; 5] =
    ["data_path", "global_batch_size", "seed", "ema", "ema_rate"];

/// What an unset optional key means, for the table and the saved file.
pub(super) fn unset_meaning(key: &str) -> &'static str {
    match key {
        "eval_interval" => "= epochs: evaluate at the end only",
        "project_name" => "from data_path",
        "run_name" => "generated",
        "checkpoint_path" => "runs/<project>-<run>",
        "load_checkpoint" => "fresh initialisation",
        "eval_max_examples" => "all test examples",
        "checkpoint_keep" => "keep all",
        "checkpoint_interval" => "at evaluations only",
        "threads" => "all cores",
        "arch.forward_dtype" => "bfloat16 on cuda, float32 on cpu",
        "arch.L_cycles" | "arch.L_layers" => "0 (transformer baseline only)",
        "arch.H_layers" => "0 (TRM only)",
        "arch.puzzle_emb_len" => "trm: 16; hrm, transformer: ceil(puzzle_emb_ndim / hidden_size)",
        "arch.mlp_t" => "false (attention)",
        "arch.no_ACT_continue" => "trm: true; hrm: false",
        "arch.act_enabled" | "arch.act_inference" => "transformer: true / false",
        _ => "default",
    }
}
