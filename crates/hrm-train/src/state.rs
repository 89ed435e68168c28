//! Training checkpoints that resume exactly: the model file `step_<N>.safetensors` (loadable on
//! its own by `hrm eval` / `hrm solve`) and its companion `step_<N>.state.safetensors` holding
//! everything else a run needs to continue bit for bit: both optimizers' state, the step, the
//! RNG state, the sampler position and the ACT carry. The reference saves the model only.
//!
//! Write order: the state file first, then the model file (both atomic, temp file + rename). A
//! checkpoint exists once its model file exists, so a crash between the two leaves an orphan
//! state file that is ignored (and overwritten by the next save of that step).
//!
//! Integrity: the state file records the run it belongs to ([`RunIdentity`]: the config hash,
//! the seed and a hash of its model file's weights), and resume refuses a state of another run
//! or of other weights; states written before that was recorded still load. Nothing non-finite
//! is ever saved: the trainer checks [`first_non_finite`] before writing a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use hrm_data::fsio::write_atomic;
use hrm_data::sampler::SamplerPosition;
use hrm_model::checkpoint::{read_safetensors, safetensors_bytes, save_model};
use hrm_model::optim::AdamState;
use hrm_model::train::Optimizers;
use hrm_model::{to_host_f32, Batch, Carry, Hrm};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::rundir::fnv1a64;

/// Format tag of the companion state file.
pub const STATE_FORMAT: &str = "hrm-train-state-v1";

/// Key prefix of the raw (un-averaged) weights in the state file of a run with `ema = true`,
/// whose model file holds the moving average.
const RAW_PREFIX: &str = "ema.raw.";

/// A ChaCha8 stream position: seed, stream and word position reproduce the generator exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, hex.
    pub seed: String,
    /// Stream id.
    pub stream: u64,
    /// Word position (u128 as a decimal string).
    pub word_pos: String,
}

impl RngState {
    /// Capture `rng`.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// Rebuild the generator.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        anyhow::ensure!(self.seed.len() == 64, "rng seed must be 64 hex digits");
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16).context("rng seed")?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().context("rng word_pos")?);
        Ok(rng)
    }
}

/// The scalar part of the training state (stored as JSON in the state file's metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    /// Optimizer steps taken (the reference's `train_state.step`).
    pub step: u64,
    /// The training iteration (group of `eval_interval` epochs) the sampler is in.
    pub iteration: u64,
    /// Position inside that iteration.
    pub sampler: SamplerPosition,
    /// Whether the iteration's evaluation already ran (a checkpoint at an evaluation).
    pub iteration_done: bool,
    /// Exploration RNG.
    pub rng: RngState,
    /// AdamATan2 step count per parameter.
    pub adam_t: Vec<u64>,
    /// Whether a carry is stored.
    pub has_carry: bool,
    /// The run this state belongs to (absent in states written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RunIdentity>,
}

/// Which run, and which model file, a state file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// [`TrainConfig::identity_hash`] of the run's config.
    pub config_hash: String,
    /// The run's seed.
    pub seed: u64,
    /// [`weights_hash`] of the model file written with this state.
    pub model_hash: String,
}

/// A hash (FNV-1a 64, hex) of a model's tensors: names, shapes and f32 values, in state-dict
/// order. The tensors rather than the file's bytes, because two saves of the same weights (a
/// step checkpointed mid-iteration and again after its evaluation) may order the metadata
/// differently.
pub fn weights_hash(model: &Hrm) -> Result<String> {
    Ok(scan_weights(model)?.1)
}

/// One pass over a model's state dict: the first tensor holding a NaN or infinite value, and
/// [`weights_hash`].
fn scan_weights(model: &Hrm) -> Result<(Option<String>, String)> {
    let mut summary = Vec::new();
    let mut bad = None;
    for (name, t) in model.state_dict() {
        let values = to_host_f32(&t)?;
        if bad.is_none() && values.iter().any(|x| !x.is_finite()) {
            bad = Some(name.clone());
        }
        let bytes: Vec<u8> = values.into_iter().flat_map(f32::to_le_bytes).collect();
        summary.extend_from_slice(format!("{name}{:?}", t.dims()).as_bytes());
        summary.extend_from_slice(&fnv1a64(&bytes).to_le_bytes());
    }
    Ok((bad, format!("{:016x}", fnv1a64(&summary))))
}

/// What a checkpoint of this state needs to know before it is written, from one pass over its
/// tensors.
#[derive(Debug)]
pub struct CheckpointScan {
    /// The name (as the checkpoint files spell it) of the first tensor holding a NaN or infinite
    /// value: the model's weights (under EMA the average, with the puzzle table), the Adam
    /// moments (`adam.m.*`, `adam.v.*`), and with EMA the raw weights (`ema.raw.*`). None if all
    /// are finite.
    pub non_finite: Option<String>,
    /// [`weights_hash`] of the model.
    pub weights_hash: String,
}

/// Scan a checkpoint's tensors ([`CheckpointScan`]).
pub fn scan_checkpoint(
    model: &Hrm,
    opt: &Optimizers,
    raw_weights: Option<&[Tensor]>,
) -> Result<CheckpointScan> {
    let (mut non_finite, weights_hash) = scan_weights(model)?;
    if non_finite.is_none() {
        let states = opt.adam.host_states()?;
        'params: for ((name, _), st) in model.parameters().iter().zip(states.iter()) {
            for (kind, xs) in [("m", &st.m), ("v", &st.v)] {
                if xs.iter().any(|x| !x.is_finite()) {
                    non_finite = Some(format!("adam.{kind}.{name}"));
                    break 'params;
                }
            }
        }
    }
    if non_finite.is_none() {
        let params = model.parameters();
        for ((name, _), w) in params.iter().zip(raw_weights.unwrap_or_default()) {
            if to_host_f32(w)?.iter().any(|x| !x.is_finite()) {
                non_finite = Some(format!("{RAW_PREFIX}{name}"));
                break;
            }
        }
    }
    Ok(CheckpointScan {
        non_finite,
        weights_hash,
    })
}

impl Restored {
    /// Refuse a state file of another run than `cfg` (this folder's config), or of other
    /// weights than `model` (loaded from `model_path`, before any raw EMA weights replace them).
    /// A state without a recorded identity (written by an older version) passes.
    pub fn check_identity(&self, cfg: &TrainConfig, model: &Hrm, model_path: &Path) -> Result<()> {
        let Some(id) = &self.meta.identity else {
            return Ok(());
        };
        let sp = state_path(model_path);
        let name = |p: &Path| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        let here = cfg.identity_hash();
        // the seed is one of the hashed keys: the seeds are named for the user's benefit
        if id.config_hash != here {
            bail!(
                "{}: {} belongs to another run (config hash {}, seed {}) than this folder's \
                 config (hash {here}, seed {}) (hint: put back this run's own state file, or move \
                 this step's files away to resume from the previous checkpoint)",
                sp.display(),
                name(&sp),
                id.config_hash,
                id.seed,
                cfg.seed
            );
        }
        let weights = weights_hash(model)?;
        if id.model_hash != weights {
            bail!(
                "{}: {} was written with other weights (hash {}) than {} holds (hash {weights}): \
                 the two files are not one checkpoint (hint: move this step's files away to \
                 resume from the previous checkpoint)",
                sp.display(),
                name(&sp),
                id.model_hash,
                name(model_path)
            );
        }
        Ok(())
    }
}

/// Everything restored from a checkpoint besides the model weights.
#[derive(Debug)]
pub struct Restored {
    /// Scalars.
    pub meta: StateMeta,
    /// Optimizers with their moments.
    pub opt: Optimizers,
    /// The training carry (None if the run had not started).
    pub carry: Option<Carry>,
    /// With `ema = true`: the raw weights, one per parameter (the model file holds the average).
    pub raw_weights: Option<Vec<Tensor>>,
}

/// Path of the companion state file of a model checkpoint.
pub fn state_path(model_path: &Path) -> PathBuf {
    let name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    model_path.with_file_name(format!("{stem}.state.safetensors"))
}

fn host_u32(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?)
}

fn host_i32(t: &Tensor) -> Result<Vec<i32>> {
    Ok(t.flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|x| x as i32)
        .collect())
}

/// Save a checkpoint: the state file, then the model file (`extra` goes into the model
/// file's metadata, e.g. the run's resolved config).
pub fn save_checkpoint(
    model_path: &Path,
    model: &Hrm,
    opt: &Optimizers,
    carry: Option<&Carry>,
    meta: &StateMeta,
    extra: &HashMap<String, String>,
    raw_weights: Option<&[Tensor]>,
) -> Result<()> {
    let dev = Device::Cpu;
    let params = model.parameters();
    anyhow::ensure!(
        params.len() == opt.adam.states.len(),
        "optimizer/model mismatch"
    );
    // Host copies of the moments: on a GPU they live on the device and `states` holds none.
    let states = opt.adam.host_states()?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for ((name, _), st) in params.iter().zip(states.iter()) {
        tensors.push((
            format!("adam.m.{name}"),
            Tensor::from_slice(&st.m, st.m.len(), &dev)?,
        ));
        tensors.push((
            format!("adam.v.{name}"),
            Tensor::from_slice(&st.v, st.v.len(), &dev)?,
        ));
    }
    if let Some(raw) = raw_weights {
        anyhow::ensure!(raw.len() == params.len(), "raw weights/model mismatch");
        for ((name, _), w) in params.iter().zip(raw) {
            tensors.push((format!("{RAW_PREFIX}{name}"), w.to_device(&dev)?));
        }
    }
    if let Some(c) = carry {
        let b = c.data.batch_size;
        let l = c.data.seq_len;
        tensors.push(("carry.z_h".into(), c.z_h.to_device(&dev)?));
        tensors.push(("carry.z_l".into(), c.z_l.to_device(&dev)?));
        tensors.push(("carry.steps".into(), Tensor::from_slice(&c.steps, b, &dev)?));
        let halted: Vec<u8> = c.halted.iter().map(|&h| h as u8).collect();
        tensors.push(("carry.halted".into(), Tensor::from_vec(halted, b, &dev)?));
        let i64s = |v: &[i32]| -> Vec<i64> { v.iter().map(|&x| x as i64).collect() };
        tensors.push((
            "carry.inputs".into(),
            Tensor::from_vec(i64s(&c.data.inputs), (b, l), &dev)?,
        ));
        tensors.push((
            "carry.labels".into(),
            Tensor::from_vec(i64s(&c.data.labels), (b, l), &dev)?,
        ));
        tensors.push((
            "carry.puzzle_identifiers".into(),
            Tensor::from_vec(i64s(&c.data.puzzle_identifiers), b, &dev)?,
        ));
    }
    let mut m = HashMap::new();
    m.insert("format".to_string(), STATE_FORMAT.to_string());
    m.insert("state".to_string(), serde_json::to_string(meta)?);
    let sp = state_path(model_path);
    write_atomic(&sp, &safetensors_bytes(&tensors, &m)?)
        .with_context(|| format!("writing {}", sp.display()))?;
    let mut extra = extra.clone();
    extra.insert("step".into(), meta.step.to_string());
    save_model(model_path, model, &extra)
        .with_context(|| format!("writing {}", model_path.display()))?;
    Ok(())
}

/// Load the companion state of `model_path` for `model` (whose weights were loaded from it).
pub fn load_state(model_path: &Path, model: &Hrm, template: &Optimizers) -> Result<Restored> {
    let sp = state_path(model_path);
    if !sp.exists() {
        bail!(
            "{}: the optimizer/RNG/carry state of this checkpoint is missing, so the run cannot \
             resume exactly (hint: move this step's files away to resume from the previous \
             checkpoint)",
            sp.display()
        );
    }
    let f = read_safetensors(&sp, model.device())?;
    match f.metadata.get("format").map(String::as_str) {
        Some(STATE_FORMAT) => {}
        other => bail!(
            "{}: format tag {other:?} is not `{STATE_FORMAT}`",
            sp.display()
        ),
    }
    let meta: StateMeta = serde_json::from_str(
        f.metadata
            .get("state")
            .with_context(|| format!("{}: no `state` metadata", sp.display()))?,
    )
    .with_context(|| format!("{}: metadata `state`", sp.display()))?;
    let mut opt = template.clone();
    let params = model.parameters();
    anyhow::ensure!(
        meta.adam_t.len() == params.len(),
        "{}: {} optimizer step counts for {} parameters",
        sp.display(),
        meta.adam_t.len(),
        params.len()
    );
    // the stored tensor `k` that belongs to parameter `v`: present, with its element count
    let for_param = |k: String, v: &Tensor| -> Result<&Tensor> {
        let x = f
            .tensors
            .get(&k)
            .with_context(|| format!("{}: key `{k}` missing", sp.display()))?;
        anyhow::ensure!(
            x.elem_count() == v.elem_count(),
            "{}: key `{k}` has {} elements, the parameter {}",
            sp.display(),
            x.elem_count(),
            v.elem_count()
        );
        Ok(x)
    };
    opt.adam.states = params
        .iter()
        .zip(&meta.adam_t)
        .map(|((name, v), &t)| {
            let get = |k: String| -> Result<Vec<f32>> {
                let x = for_param(k, v.as_tensor())?;
                Ok(to_host_f32(x)?)
            };
            Ok(AdamState {
                m: get(format!("adam.m.{name}"))?,
                v: get(format!("adam.v.{name}"))?,
                t,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let carry = if meta.has_carry {
        let g = |k: &str| {
            f.tensors
                .get(k)
                .with_context(|| format!("{}: key `{k}` missing", sp.display()))
        };
        let z_h = g("carry.z_h")?.to_dtype(model.forward_dtype())?;
        let z_l = g("carry.z_l")?.to_dtype(model.forward_dtype())?;
        let (b, l) = g("carry.inputs")?.dims2()?;
        Some(Carry {
            z_h,
            z_l,
            steps: host_u32(g("carry.steps")?)?,
            halted: host_u32(g("carry.halted")?)?
                .into_iter()
                .map(|h| h != 0)
                .collect(),
            data: Batch {
                inputs: host_i32(g("carry.inputs")?)?,
                labels: host_i32(g("carry.labels")?)?,
                puzzle_identifiers: host_i32(g("carry.puzzle_identifiers")?)?,
                batch_size: b,
                seq_len: l,
                effective_size: b,
                set_name: String::new(),
            },
        })
    } else {
        None
    };
    let raw_weights = if f.tensors.keys().any(|k| k.starts_with(RAW_PREFIX)) {
        let raw = params
            .iter()
            .map(|(name, v)| {
                let x = for_param(format!("{RAW_PREFIX}{name}"), v.as_tensor())?;
                Ok(x.to_dtype(v.dtype())?.reshape(v.shape())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Some(raw)
    } else {
        None
    };
    Ok(Restored {
        meta,
        opt,
        carry,
        raw_weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hrm_model::loss::LossType;
    use hrm_model::train::forward_backward;
    use hrm_model::ModelConfig;
    use rand::{Rng, SeedableRng};

    /// On a GPU the Adam moments live on the device and the optimizer's host `states` are empty;
    /// a checkpoint must still hold them (the CPU runs the device path here).
    #[test]
    fn checkpoint_holds_device_resident_moments() {
        let cfg = ModelConfig {
            num_puzzle_identifiers: 3,
            ..ModelConfig::tiny(2)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let model = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let n = cfg.batch_size * cfg.seq_len;
        let labels: Vec<i32> = (0..n)
            .map(|_| rng.random_range(2..cfg.vocab_size as i32))
            .collect();
        let batch = Batch {
            inputs: labels
                .iter()
                .map(|&x| if x % 2 == 0 { 1 } else { x })
                .collect(),
            labels,
            puzzle_identifiers: vec![1; cfg.batch_size],
            batch_size: cfg.batch_size,
            seq_len: cfg.seq_len,
            effective_size: cfg.batch_size,
            set_name: String::new(),
        };
        let template = Optimizers::new(&model, (0.9, 0.95), 0.1, 0.1);
        let mut opt = template.clone();
        for j in 0..opt.adam.states.len() {
            opt.adam.use_device_moments(j, &Device::Cpu).unwrap();
        }
        let carry = model.initial_carry(&batch).unwrap();
        let step =
            forward_backward(&model, &carry, &batch, LossType::Stablemax, 2, &mut rng).unwrap();
        opt.step(&model, &step.grads, 1e-3, 1e-2).unwrap();
        assert!(opt.adam.states.iter().all(|s| s.m.is_empty()));
        let expected = opt.adam.host_states().unwrap().into_owned();
        assert!(expected.iter().any(|s| s.m.iter().any(|&x| x != 0.0)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step_1.safetensors");
        let meta = StateMeta {
            step: 1,
            iteration: 0,
            sampler: SamplerPosition {
                iteration: 0,
                batches_yielded: 1,
            },
            iteration_done: false,
            rng: RngState::capture(&rng),
            adam_t: expected.iter().map(|s| s.t).collect(),
            has_carry: false,
            identity: None,
        };
        save_checkpoint(&path, &model, &opt, None, &meta, &HashMap::new(), None).unwrap();
        let restored = load_state(&path, &model, &template).unwrap();
        assert_eq!(restored.opt.adam.states, expected);
        assert_eq!(restored.meta, meta);
    }
}
