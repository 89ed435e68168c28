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
//! value is parsed as TOML if it parses, else taken as a bare string) — all in `overrides.rs`;
//! check every key against the schema of `schema.rs` (unknown keys get a "did you mean" from the
//! known ones, wrong types name the expected type); deserialise with `deny_unknown_fields`;
//! validate the invariants (here). Every error (`errors.rs`) is one line naming the key and
//! where its value came from (file or override).
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

use std::path::{Path, PathBuf};

use hrm_model::config::{ForwardDtype, ModelConfig};
use serde::{Deserialize, Serialize};

mod errors;
mod overrides;
mod schema;

/// The device a run trains on (the `device` key, parsed): the model crate's one device parser.
pub use hrm_model::device::DeviceSpec;
/// Cross-entropy flavour of the LM loss (reference key `arch.loss.loss_type`): the model crate's.
pub use hrm_model::loss::LossType;

pub use errors::{ConfigError, Origin};
pub use schema::{
    ArchConfig, DatasetFacts, LossConfig, ARCH_NAME, LOSS_NAME, SAVE_OUTPUT_KEYS, WORLD_SIZE,
};

use errors::{one_line, Provenance};
use overrides::{apply_override, check_schema, closest, load_file_chain};
use schema::{unset_meaning, Kind, RESUME_KEYS, SCHEMA};

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
    /// Addition (TRM's key): start from the weights of this checkpoint instead of a fresh
    /// initialisation: a model file, a run folder (its newest checkpoint) or
    /// `hub:OWNER/REPO[@REV][/FILE]`; the optimizers start fresh. The checkpoint must have the
    /// run's architecture; a puzzle table of another size starts from its mean row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_checkpoint: Option<String>,
    /// Seed of every random stream of the run (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Tensors saved at each evaluation (default none), from [`SAVE_OUTPUT_KEYS`]: rank 0
    /// writes them, one row per evaluated test example (no padding rows), to
    /// `<run>/step_<N>_eval_outputs.safetensors` (the reference's `step_<N>_all_preds.<rank>`):
    /// `inputs`, `labels` i32 `[N, L]`, `puzzle_identifiers` i32 `[N]`, `logits` f32
    /// `[N, L, V]`, `q_halt_logits`, `q_continue_logits` f32 `[N]`.
    #[serde(default)]
    pub eval_save_outputs: Vec<String>,
    /// Addition: evaluate on at most this many test examples (absent = all); for CPU runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_max_examples: Option<usize>,
    /// Addition: optimizer steps between plain log lines (default 100).
    #[serde(default = "schema::default_log_interval")]
    pub log_interval: u64,
    /// Addition: keep only the newest N checkpoints (absent = keep all, as the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_keep: Option<usize>,
    /// Addition: also checkpoint every N optimizer steps (absent = only at evaluations, as the
    /// reference); a killed run resumes from the newest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// Addition: `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default = "schema::default_device")]
    pub device: String,
    /// Addition: CPU threads (absent = `RAYON_NUM_THREADS` or all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Addition (TRM's key): evaluate and save an exponential moving average of the weights
    /// (default false).
    #[serde(default)]
    pub ema: bool,
    /// Addition (TRM's key): the average's decay per optimizer step (default 0.999).
    #[serde(default = "schema::default_ema_rate")]
    pub ema_rate: f64,
    /// Where each key's value came from (not part of the value).
    #[serde(skip)]
    provenance: Provenance,
}

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
        cfg.arch
            .puzzle_emb_ndim
            .get_or_insert(cfg.arch.model.hidden_size);
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
    /// the origin closest to what the user wrote last among them (an override, else the file
    /// nearest the one given on the command line, where its bases set the other keys), so a
    /// `num_heads` set in a preset over a base's `hidden_size` names the preset.
    fn invalid_with(&self, key: &str, related: &[&str], problem: impl Into<String>) -> ConfigError {
        let own = self.origin(key);
        let origin = related.iter().map(|k| self.origin(k)).fold(own, |best, o| {
            if self.provenance.rank(&o) > self.provenance.rank(&best) {
                o
            } else {
                best
            }
        });
        ConfigError::Invalid {
            origin,
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Check every invariant that does not need the dataset (done by [`TrainConfig::load`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if hrm_model::config::Arch::parse(&self.arch.name).is_none() {
            return Err(self.invalid(
                "arch.name",
                format!(
                    "= \"{}\" is not a model hrm has (one of {})",
                    self.arch.name,
                    hrm_model::config::Arch::NAMES
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
        self.arch
            .puzzle_emb_ndim
            .unwrap_or(self.arch.model.hidden_size)
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
        let mc = ModelConfig {
            batch_size: self.global_batch_size / world_size,
            seq_len: meta.seq_len,
            vocab_size: meta.vocab_size,
            num_puzzle_identifiers: meta.num_puzzle_identifiers,
            puzzle_emb_ndim: self.puzzle_emb_ndim(),
            forward_dtype: self.forward_dtype(),
            ..self.arch.model.clone()
        };
        mc.validate().map_err(|e| self.model_error(e))?;
        Ok(mc)
    }

    /// [`ModelConfig::check_memory`] of this run's model config, the error naming this config's
    /// key (`global_batch_size`, `arch.hidden_size`, the dataset's counts).
    pub fn check_memory(&self, mc: &ModelConfig) -> Result<(), ConfigError> {
        mc.check_memory().map_err(|e| self.model_error(e))
    }

    /// A model-config error under the key of this config that set the value.
    fn model_error(&self, e: hrm_model::config::ConfigError) -> ConfigError {
        match e.key {
            "vocab_size" | "seq_len" | "num_puzzle_identifiers" => ConfigError::Dataset {
                data_path: self.data_path.clone(),
                key: e.key.into(),
                problem: e.problem,
            },
            "batch_size" => self.invalid("global_batch_size", e.problem),
            "hidden_size" => self.invalid_with("arch.hidden_size", &["arch.num_heads"], e.problem),
            "num_heads" => self.invalid_with("arch.num_heads", &["arch.hidden_size"], e.problem),
            k => self.invalid(&format!("arch.{k}"), e.problem),
        }
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

    /// The keys a resume may not change, with their values: every `arch.*` key (resolved; the
    /// forward dtype as actually used, not whether it was spelled out) and `data_path`,
    /// `global_batch_size`, `seed`, `ema`, `ema_rate`.
    fn fixed_on_resume(&self) -> Vec<(&'static str, Option<toml::Value>)> {
        self.flatten()
            .into_iter()
            .filter(|(key, _)| key.starts_with("arch.") || RESUME_KEYS.contains(key))
            .map(|(key, v)| {
                if key == "arch.forward_dtype" {
                    let used = match self.forward_dtype() {
                        ForwardDtype::F32 => "float32",
                        ForwardDtype::BF16 => "bfloat16",
                    };
                    (key, Some(toml::Value::String(used.into())))
                } else {
                    (key, v)
                }
            })
            .collect()
    }

    /// Check that this config may resume a run saved with `saved`: every `arch.*` key (resolved)
    /// and `data_path`, `global_batch_size`, `seed` must be equal. Other keys (lr, epochs,
    /// logging, ...) may change. The error names every differing key.
    pub fn check_resume_compatible(&self, saved: &TrainConfig) -> Result<(), ConfigError> {
        let show = |v: &Option<toml::Value>| match v {
            Some(v) => v.to_string(),
            None => "unset".into(),
        };
        let diffs: Vec<String> = self
            .fixed_on_resume()
            .iter()
            .zip(saved.fixed_on_resume().iter())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((key, a), (_, b))| format!("`{key}` (saved {}, now {})", show(b), show(a)))
            .collect();
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::ResumeMismatch { diffs })
        }
    }

    /// A fingerprint of the run this config describes: a hash (FNV-1a 64, hex) of the keys a
    /// resume may not change ([`TrainConfig::check_resume_compatible`]), so overriding `lr`,
    /// `epochs` or logging on resume keeps it. A checkpoint's state file records it.
    pub fn identity_hash(&self) -> String {
        let mut text = String::new();
        for (key, v) in self.fixed_on_resume() {
            let v = v.map_or_else(|| "unset".to_string(), |v| v.to_string());
            text.push_str(&format!("{key}={v}\n"));
        }
        format!("{:016x}", crate::rundir::fnv1a64(text.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::overrides::dotted;
    use super::schema::SCHEMA;
    use super::*;
    use std::collections::BTreeSet;

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
            load_checkpoint = "l"
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
            puzzle_emb_len = 2
            mlp_t = true
            no_ACT_continue = true
            act_enabled = true
            act_inference = false
            [arch.loss]
            name = "losses@ACTLossHead"
            loss_type = "stablemax_cross_entropy"
        "#;
        // every key set (deserialising does not validate: some are other models' keys)
        let cfg: TrainConfig = toml::from_str(text).unwrap();
        let table = toml::Table::try_from(&cfg).unwrap();
        let mut ser_keys = BTreeSet::new();
        fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
            for (k, v) in t {
                let key = dotted(prefix, k);
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
