//! The training loop: sapientinc/HRM:pretrain.py (`launch`, `train_batch`, `evaluate`,
//! `save_train_state`), plus exact resume. docs/training.md, "One training step", states what
//! follows in full.
//!
//! Per optimizer step, in order:
//! 1. `step += 1`; past `total_steps` the batch is skipped (the reference's estimate of the run
//!    length);
//! 2. learning rates of both optimizers from the warm-up + cosine schedule;
//! 3. one ACT segment with the carry kept across batches (halted rows take the new batch's rows),
//!    the loss head, backward of `loss / global_batch_size`;
//! 4. SignSGD on the puzzle table, then AdamATan2;
//! 5. metrics: losses / global batch, the rest / count; log; checkpoint every
//!    `checkpoint_interval` steps if set.
//!
//! After each iteration (`eval_interval` epochs) evaluation (whose `eval_save_outputs` tensors
//! are saved in the run folder) and a checkpoint (`checkpoint_every_eval`, and always at the
//! end). A checkpoint holds the model, both optimizers, the step, the RNG, the sampler position
//! and the carry ([`crate::state`]), so `--resume` continues exactly: with the same seed on CPU,
//! a run killed at any point and resumed from its newest checkpoint ends with the same weights
//! and metrics, bit for bit (docs/training.md, "The run folder and resume"). Nothing
//! non-finite is checkpointed or logged: a NaN or infinite train or evaluation metric, weight
//! or optimizer moment stops the run, naming it and the last good (newest) checkpoint.
//!
//! Every run is a rank of a data-parallel group ([`Dist`]; a plain run is the one rank of
//! [`Dist::single`], whose exchanges are the identity): every rank runs this loop on its slice
//! of each global batch, the step's gradients and metric sums are combined across ranks
//! ([`crate::dist`]), and rank 0 alone writes the run folder, logs and checkpoints (with the
//! carry of the whole global batch) and evaluates while the other ranks wait
//! (docs/training.md, "Data parallelism").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hrm_data::format::{load_split, SplitData};
use hrm_data::fsio::write_atomic;
use hrm_data::sampler::TrainSampler;
use hrm_model::checkpoint::safetensors_bytes;
use hrm_model::optim::Ema;
use hrm_model::train::Optimizers;
use hrm_model::{Carry, Engine, Hrm, Kernels};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{DatasetFacts, TrainConfig};
use crate::dist::Dist;
use crate::eval::{evaluate, EvalOptions, EvalOutput, Predictions};
use crate::progress::TrainProgress;
use crate::rundir::{RunDir, RunInfo};
use crate::schedule::{cosine_schedule_with_warmup, total_steps};
use crate::sinks::{check_finite, SinkError, Sinks};
use crate::state::{
    load_state, save_checkpoint, scan_checkpoint, RngState, RunIdentity, StateMeta,
};

/// RNG streams derived from the run's seed (one per purpose).
const STREAM_INIT: u64 = 0;
const STREAM_EXPLORATION: u64 = 1;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Run folder (default: a new folder under `runs/`).
    pub run_dir: Option<PathBuf>,
    /// Set to stop after the current step with a checkpoint (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) once this many optimizer steps are done.
    pub stop_after: Option<u64>,
    /// No progress bar or log lines (tests).
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct TrainSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Optimizer steps done.
    pub step: u64,
    /// The last evaluation, if one ran.
    pub last_eval: Option<EvalOutput>,
    /// Stopped early (Ctrl-C or `stop_after`) after writing a checkpoint.
    pub interrupted: bool,
}

/// The error of a run stopped (Ctrl-C / SIGTERM) before its training loop began: nothing of
/// the run was written (a new run folder holds at most its lock file), so the caller exits with
/// the signal's code and no summary.
#[derive(Debug, thiserror::Error)]
#[error("interrupted before training started; no run state was written")]
pub struct Interrupted;

/// [`Interrupted`] if the run was asked to stop.
fn honour_stop(opts: &TrainOptions) -> Result<()> {
    if opts.stop.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// The device named by the config.
pub fn device_for(cfg: &TrainConfig) -> Result<Device> {
    Ok(cfg.device_spec()?.open()?)
}

/// Apply the config's `threads` (unless RAYON_NUM_THREADS is set): the tensor kernels read it
/// when they first run, so this must happen before any training work.
fn apply_threads(cfg: &TrainConfig) {
    if let (Some(n), None) = (cfg.threads, std::env::var_os("RAYON_NUM_THREADS")) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Load both splits and check that they fit together.
fn load_data(cfg: &TrainConfig) -> Result<(Arc<SplitData>, Arc<SplitData>)> {
    cfg.check_data_path()?;
    let dir = Path::new(&cfg.data_path);
    let train = Arc::new(load_split(dir, "train")?);
    let test = Arc::new(load_split(dir, "test")?);
    let (a, b) = (&train.metadata, &test.metadata);
    if a.seq_len != b.seq_len || a.vocab_size != b.vocab_size {
        bail!(
            "{}: train and test splits differ (seq_len {} vs {}, vocab_size {} vs {})",
            dir.display(),
            a.seq_len,
            b.seq_len,
            a.vocab_size,
            b.vocab_size
        );
    }
    Ok((train, test))
}

fn facts(train: &SplitData, test: &SplitData) -> DatasetFacts {
    DatasetFacts {
        vocab_size: train.metadata.vocab_size,
        seq_len: train.metadata.seq_len,
        // the reference sizes the table from the train split; test ids share the numbering
        num_puzzle_identifiers: train
            .metadata
            .num_puzzle_identifiers
            .max(test.metadata.num_puzzle_identifiers),
    }
}

/// The reference's estimate of the run length: epochs x groups x mean examples / batch.
fn run_total_steps(cfg: &TrainConfig, train: &SplitData) -> u64 {
    total_steps(
        cfg.epochs,
        train.metadata.total_groups as u64,
        train.metadata.mean_puzzle_examples,
        cfg.global_batch_size as u64,
    )
}

/// Everything the loop carries from step to step.
struct Run {
    cfg: TrainConfig,
    dir: RunDir,
    model: Hrm,
    opt: Optimizers,
    sampler: TrainSampler,
    test: Arc<SplitData>,
    carry: Option<Carry>,
    rng: ChaCha8Rng,
    step: u64,
    total_steps: u64,
    /// None on data-parallel ranks other than 0 (they write nothing).
    sinks: Option<Sinks>,
    config_text: String,
    /// [`TrainConfig::identity_hash`] of `cfg` (fixed for the run), recorded in every state file.
    identity_hash: String,
    /// This rank of the data-parallel group ([`Dist::single`] without one).
    dist: Dist,
    /// The moving average of the weights (`ema = true`).
    ema: Option<Ema>,
}

/// The model's parameter variables, in [`Hrm::parameters`] order.
fn vars(model: &Hrm) -> Vec<&candle_core::Var> {
    model.parameters().into_iter().map(|(_, v)| v).collect()
}

impl Run {
    /// Run `f` with the averaged weights in the model (the raw ones otherwise), restoring the
    /// raw weights afterwards; the shadow passed to `f` then holds the raw weights.
    fn with_average<T>(
        &mut self,
        f: impl FnOnce(&Self, Option<&[candle_core::Tensor]>) -> Result<T>,
    ) -> Result<T> {
        let Some(mut ema) = self.ema.take() else {
            return f(self, None);
        };
        ema.swap(&vars(&self.model))?;
        let out = f(self, Some(&ema.shadow));
        ema.swap(&vars(&self.model))?;
        self.ema = Some(ema);
        out
    }

    /// What to resume from after the run stops on a non-finite value: the newest checkpoint
    /// (nothing non-finite is ever checkpointed, so it is the last good one).
    fn last_good_checkpoint(&self) -> String {
        match self.dir.latest_checkpoint() {
            Ok(Some(c)) => format!(
                "the last good checkpoint is {} (resume from it with `hrm train --resume {}`, \
                 e.g. with a lower `lr`)",
                c.path.display(),
                self.dir.path().display()
            ),
            Ok(None) => "no checkpoint was written yet: start the run again, e.g. with a \
                         lower `lr`"
                .into(),
            Err(e) => format!("the run folder's checkpoints cannot be listed ({e})"),
        }
    }

    /// Stop the run on a non-finite metric, naming the checkpoint to resume from.
    fn non_finite_metric(&self, e: SinkError) -> anyhow::Error {
        anyhow::anyhow!("{e}; {}", self.last_good_checkpoint())
    }

    fn checkpoint(&mut self, iteration: u64, iteration_done: bool) -> Result<PathBuf> {
        let path = self.dir.checkpoint_path(self.step);
        // data parallel: every rank contributes its rows of the carry, rank 0 writes
        let carry = self
            .carry
            .as_ref()
            .map(|c| self.dist.gather_carry(c))
            .transpose()?;
        let meta = StateMeta {
            step: self.step,
            iteration,
            sampler: self.sampler.position(),
            iteration_done,
            rng: RngState::capture(&self.rng),
            adam_t: self.opt.adam.states.iter().map(|s| s.t).collect(),
            has_carry: self.carry.is_some(),
            identity: None,
        };
        let extra = HashMap::from([("train_config".to_string(), self.config_text.clone())]);
        // with EMA the model file holds the average (what evaluation uses) and the state file
        // the raw weights training continues from
        self.with_average(|run, raw| {
            // never checkpoint a NaN: the newest checkpoint stays the last good one (every rank
            // holds the same weights and moments, so all of them stop here together)
            let scan = scan_checkpoint(&run.model, &run.opt, raw)?;
            if let Some(bad) = scan.non_finite {
                bail!(
                    "step {}: `{bad}` holds a NaN or infinite value — stopping the run without \
                     writing its checkpoint; {}",
                    run.step,
                    run.last_good_checkpoint()
                );
            }
            if !run.dist.is_main() {
                return Ok(());
            }
            let identity = RunIdentity {
                config_hash: run.identity_hash.clone(),
                seed: run.cfg.seed,
                model_hash: scan.weights_hash,
            };
            let meta = StateMeta {
                identity: Some(identity),
                ..meta
            };
            save_checkpoint(
                &path,
                &run.model,
                &run.opt,
                carry.as_ref(),
                &meta,
                &extra,
                raw,
            )
        })?;
        if !self.dist.is_main() {
            return Ok(path);
        }
        if let Some(keep) = self.cfg.checkpoint_keep {
            self.dir.prune_checkpoints(keep)?;
        }
        Ok(path)
    }

    /// Evaluate (with the averaged weights under EMA); the per-example outputs are kept only
    /// for `eval_save_outputs`.
    fn eval(&mut self) -> Result<EvalOutput> {
        let save = &self.cfg.eval_save_outputs;
        let opts = EvalOptions {
            max_examples: self.cfg.eval_max_examples,
            keep_predictions: !save.is_empty(),
            keep_logits: save.iter().any(|k| k == "logits"),
            ..Default::default()
        };
        self.with_average(|run, _| {
            evaluate(
                &Engine::new(&run.model, Kernels::Plain)?,
                run.test.clone(),
                run.cfg.global_batch_size,
                run.cfg.arch.loss.loss_type,
                &opts,
            )
        })
    }

    /// Write the `eval_save_outputs` tensors of this step's evaluation to
    /// `<run>/step_<N>_eval_outputs.safetensors` (the reference saves `step_<N>_all_preds.<rank>`
    /// with torch.save in its checkpoint folder).
    fn save_eval_outputs(&self, p: &Predictions) -> Result<PathBuf> {
        let tensors = p.tensors(&self.cfg.eval_save_outputs, self.model.cfg.vocab_size)?;
        let meta = HashMap::from([("step".to_string(), self.step.to_string())]);
        let path = self.dir.eval_outputs_path(self.step);
        write_atomic(&path, &safetensors_bytes(&tensors, &meta)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Start a new run.
pub fn train(cfg: TrainConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    train_dist(cfg, opts, Dist::single())
}

/// The device a rank trains on: the one its group was connected on, else the config's.
fn rank_device(dist: &Dist, cfg: &TrainConfig) -> Result<Device> {
    match dist.device() {
        Some(d) => Ok(d.clone()),
        None => device_for(cfg),
    }
}

/// Start a new run as one rank of a data-parallel group ([`Dist::single`]: a single process, as
/// [`train`] does).
pub fn train_dist(cfg: TrainConfig, opts: &TrainOptions, dist: Dist) -> Result<TrainSummary> {
    start(cfg, opts, dist, None)
}

/// A run from step 0: in a new folder ([`RunDir::create`], locked), or with `locked` in the
/// folder of a run killed before its first checkpoint (rank 0 of a resume holds its lock).
/// The run's files are written only once the data is loaded and the model built, and an
/// interrupt before that is [`Interrupted`].
fn start(
    mut cfg: TrainConfig,
    opts: &TrainOptions,
    dist: Dist,
    locked: Option<RunDir>,
) -> Result<TrainSummary> {
    apply_threads(&cfg);
    let device = rank_device(&dist, &cfg)?;
    honour_stop(opts)?;
    let (train_split, test) = load_data(&cfg)?;
    honour_stop(opts)?;
    let model_cfg = cfg.model_config_for_world(&facts(&train_split, &test), dist.world_size())?;
    if device.is_cpu() {
        cfg.check_memory(&model_cfg)?;
        check_cpu_bf16(model_cfg.forward_dtype)?;
    }
    let main = dist.is_main();
    if main && !opts.quiet {
        for (key, why) in model_cfg.warnings() {
            eprintln!("warning: `arch.{key}` {why}");
        }
    }
    let dir = if main {
        match locked {
            Some(dir) => dir,
            None => RunDir::create(opts.run_dir.as_deref(), &mut cfg)?,
        }
    } else {
        // the other ranks use rank 0's folder (and its resolved config) without writing to it
        let dir = RunDir::open(&dist.share_path(None)?)?;
        cfg = dir.load_config()?;
        dir
    };
    let mut init = ChaCha8Rng::seed_from_u64(cfg.seed);
    init.set_stream(STREAM_INIT);
    let model = match &cfg.load_checkpoint {
        None => Hrm::new(&model_cfg, &device, &mut init)?,
        Some(src) => {
            let data = std::path::Path::new(&cfg.data_path);
            let (model, note) = crate::checkpoints::initial_model(src, data, &model_cfg, &device)?;
            if let (Some(note), true, false) = (note, main, opts.quiet) {
                println!("{note}");
            }
            model
        }
    };
    let opt = Optimizers::new(
        &model,
        (cfg.beta1, cfg.beta2),
        cfg.weight_decay,
        cfg.puzzle_emb_weight_decay,
    );
    let ema = if cfg.ema {
        Some(Ema::new(&vars(&model), cfg.ema_rate)?)
    } else {
        None
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(STREAM_EXPLORATION);
    let epochs_per_iter = cfg.eval_interval.unwrap_or(cfg.epochs) as usize;
    let sampler = TrainSampler::new(
        train_split.clone(),
        cfg.global_batch_size,
        epochs_per_iter,
        cfg.seed,
    )?;
    let n_params: usize = model.parameters().iter().map(|(_, v)| v.elem_count()).sum();
    honour_stop(opts)?;
    let sinks = if main {
        // what a run killed before its first checkpoint left goes only now
        dir.clear_unstarted()?;
        dir.write_config(&cfg)?;
        dir.write_run_info(&RunInfo::collect(&cfg))?;
        dist.share_path(Some(dir.path()))?;
        let mut sinks = Sinks::create(dir.path())?;
        sinks.log(0, [("num_params", n_params as f64)])?;
        Some(sinks)
    } else {
        None
    };
    if !opts.quiet && main {
        println!("{}", cfg.to_table_string());
        let group = match dist.world_size() {
            1 => String::new(),
            n => format!(", data parallel over {n} ranks"),
        };
        println!(
            "run folder: {}  ({n_params} parameters{group})",
            dir.path().display(),
        );
    }
    let total = run_total_steps(&cfg, &train_split);
    let run = Run {
        config_text: cfg.to_toml_string(),
        identity_hash: cfg.identity_hash(),
        cfg,
        dir,
        model,
        opt,
        sampler,
        test,
        carry: None,
        rng,
        step: 0,
        total_steps: total,
        sinks,
        dist,
        ema,
    };
    run_loop(run, 0, None, opts)
}

/// Continue the run in `run_dir` from its newest checkpoint. `overrides` may change settings
/// that do not affect the result (e.g. `log_interval`); architecture, data and seed must match.
pub fn resume(run_dir: &Path, overrides: &[String], opts: &TrainOptions) -> Result<TrainSummary> {
    resume_dist(run_dir, overrides, opts, Dist::single())
}

/// [`resume`] as one rank of a data-parallel group (as for [`train_dist`], `None` is a single
/// process): every rank loads the checkpoint and takes its rows of the saved (global) carry.
pub fn resume_dist(
    run_dir: &Path,
    overrides: &[String],
    opts: &TrainOptions,
    dist: Dist,
) -> Result<TrainSummary> {
    // rank 0 locks the folder before reading it; the other ranks only read it
    let dir = if dist.is_main() {
        RunDir::open_locked(run_dir)?
    } else {
        RunDir::open(run_dir)?
    };
    let saved = dir.load_config()?;
    let cfg = if overrides.is_empty() {
        saved.clone()
    } else {
        let c = TrainConfig::load(&dir.config_path(), overrides)?;
        c.check_resume_compatible(&saved)?;
        c
    };
    let Some(ckpt) = dir.latest_checkpoint()? else {
        // killed before its first checkpoint: the run starts again with its recorded config
        if !opts.quiet && dist.is_main() {
            println!(
                "{}: no checkpoint yet (the run stopped before its first one); starting it again \
                 from step 0 with its recorded config",
                run_dir.display()
            );
        }
        return start(cfg, opts, dist, Some(dir));
    };
    if let (true, Some(keep)) = (dist.is_main(), cfg.checkpoint_keep) {
        // a run killed between a checkpoint and its prune: finish that prune
        dir.prune_checkpoints(keep)?;
    }
    apply_threads(&cfg);
    honour_stop(opts)?;
    let device = rank_device(&dist, &cfg)?;
    let (train_split, test) = load_data(&cfg)?;
    let model_cfg = cfg.model_config_for_world(&facts(&train_split, &test), dist.world_size())?;
    if device.is_cpu() {
        cfg.check_memory(&model_cfg)?;
        check_cpu_bf16(model_cfg.forward_dtype)?;
    }
    let main = dist.is_main();
    let (model, _) = hrm_model::checkpoint::load_model(&ckpt.path, &device, |c| {
        // run-time settings come from the (possibly overridden) run config
        c.batch_size = model_cfg.batch_size;
    })?;
    if model.cfg != model_cfg {
        bail!(
            "{}: the checkpoint's model config does not match the run's config.toml (hint: the \
             dataset at `{}` may have changed since the run started)",
            ckpt.path.display(),
            cfg.data_path
        );
    }
    let template = Optimizers::new(
        &model,
        (cfg.beta1, cfg.beta2),
        cfg.weight_decay,
        cfg.puzzle_emb_weight_decay,
    );
    let restored = load_state(&ckpt.path, &model, &template)?;
    restored.check_identity(&saved, &model, &ckpt.path)?;
    // with EMA the model file holds the average: it becomes the shadow, and training continues
    // from the raw weights of the state file
    let ema = match (cfg.ema, &restored.raw_weights) {
        (true, Some(raw)) => {
            let ema = Ema::new(&vars(&model), cfg.ema_rate)?;
            for (v, w) in vars(&model).into_iter().zip(raw) {
                v.set(w)?;
            }
            Some(ema)
        }
        (false, None) => None,
        (true, None) => bail!(
            "{}: `ema = true` but the checkpoint's state holds no raw weights (it was written \
             without EMA)",
            ckpt.path.display()
        ),
        (false, Some(_)) => bail!(
            "{}: the checkpoint was written with `ema = true` but the config has `ema = false`",
            ckpt.path.display()
        ),
    };
    let epochs_per_iter = cfg.eval_interval.unwrap_or(cfg.epochs) as usize;
    let mut sampler = TrainSampler::new(
        train_split.clone(),
        cfg.global_batch_size,
        epochs_per_iter,
        cfg.seed,
    )?;
    let meta = restored.meta;
    let (start_iter, position) = if meta.iteration_done {
        (meta.iteration + 1, None)
    } else {
        (meta.iteration, Some(meta.sampler))
    };
    if let Some(p) = position {
        sampler.start_iteration(p.iteration);
        sampler.restore(&p);
    }
    honour_stop(opts)?;
    let sinks = if main {
        if !overrides.is_empty() {
            // the overrides stay in effect for later resumes
            dir.write_config(&cfg)?;
        }
        Some(Sinks::open_append(dir.path(), meta.step)?)
    } else {
        None
    };
    if !opts.quiet && main {
        println!("resuming {} from step {}", run_dir.display(), meta.step);
    }
    let carry = restored.carry.map(|c| dist.local_carry(&c)).transpose()?;
    let total = run_total_steps(&cfg, &train_split);
    let run = Run {
        config_text: cfg.to_toml_string(),
        identity_hash: cfg.identity_hash(),
        cfg,
        dir,
        model,
        opt: restored.opt,
        sampler,
        test,
        carry,
        rng: meta.rng.restore()?,
        step: meta.step,
        total_steps: total,
        sinks,
        dist,
        ema,
    };
    run_loop(run, start_iter, position.map(|_| ()), opts)
}

/// The loop over iterations from `start_iter`; `mid_iteration` = the sampler is already
/// positioned inside `start_iter`.
fn run_loop(
    mut run: Run,
    start_iter: u64,
    mid_iteration: Option<()>,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    let cfg = run.cfg.clone();
    let epochs_per_iter = cfg.eval_interval.unwrap_or(cfg.epochs);
    let total_iters = cfg.epochs / epochs_per_iter;
    let warmup = cfg.lr_warmup_steps;
    let gbs = cfg.global_batch_size;
    let mut progress =
        TrainProgress::new(run.total_steps, run.step).with_log_interval(cfg.log_interval);
    if opts.quiet || run.sinks.is_none() {
        progress = progress.with_mode(crate::progress::ProgressMode::Silent);
    }
    let mut last_eval = None;
    for it in start_iter..total_iters {
        if !(it == start_iter && mid_iteration.is_some()) {
            run.sampler.start_iteration(it);
        }
        while let Some(batch) = run.sampler.next_batch() {
            run.step += 1;
            if run.step > run.total_steps {
                continue; // the reference skips batches past its step estimate
            }
            let lr = cosine_schedule_with_warmup(
                run.step,
                cfg.lr,
                warmup,
                run.total_steps,
                cfg.lr_min_ratio,
            );
            let plr = cosine_schedule_with_warmup(
                run.step,
                cfg.puzzle_emb_lr,
                warmup,
                run.total_steps,
                cfg.lr_min_ratio,
            );
            let batch = run.dist.local_batch(batch)?;
            let carry = match run.carry.take() {
                Some(c) => c,
                None => run.model.initial_carry(&batch)?,
            };
            // this rank's rows; gradients and metric sums come back for the global batch
            let ts = {
                let mut rng = run.dist.exploration_rng(&mut run.rng, cfg.seed, run.step);
                run.dist.forward_backward(
                    &run.model,
                    &carry,
                    &batch,
                    cfg.arch.loss.loss_type,
                    gbs,
                    &mut *rng,
                    opts.stop.load(Ordering::SeqCst),
                )?
            };
            let m = &ts.loss.metrics;
            let count = m.count.max(1.0);
            let mut metrics: Vec<(String, f64)> = m
                .entries()
                .into_iter()
                .map(|(k, v)| {
                    let div = if k.ends_with("loss") {
                        gbs as f64
                    } else {
                        count
                    };
                    (format!("train/{k}"), v / div)
                })
                .collect();
            metrics.push(("train/lr".into(), lr));
            check_finite(
                run.step,
                metrics
                    .iter()
                    .map(|(k, v)| (k.as_str(), *v))
                    .chain([("train/loss", ts.loss.total)]),
            )
            .map_err(|e| run.non_finite_metric(e))?;
            run.opt.step(&run.model, &ts.grads, lr, plr)?;
            // (unlike TRM, batches skipped past the step estimate above do not update the
            // average: no optimizer step happened)
            if let Some(ema) = run.ema.as_mut() {
                ema.update(&vars(&run.model))?;
            }
            run.carry = Some(ts.carry);
            if let Some(sinks) = run.sinks.as_mut() {
                sinks.log(run.step, metrics.iter().map(|(k, v)| (k.as_str(), *v)))?;
            }
            progress.update(run.step, metrics.iter().map(|(k, v)| (k.as_str(), *v)));
            // data parallel: all ranks stop at the same step if any of them was interrupted
            let interrupted = run.dist.stop_requested(opts.stop.load(Ordering::SeqCst));
            let stop = interrupted || opts.stop_after.is_some_and(|n| run.step >= n);
            if stop
                || cfg
                    .checkpoint_interval
                    .is_some_and(|n| run.step.is_multiple_of(n))
            {
                let p = run.checkpoint(it, false)?;
                if stop {
                    progress.finish();
                    if !opts.quiet && run.sinks.is_some() {
                        println!("stopped at step {}; checkpoint {}", run.step, p.display());
                    }
                    return Ok(TrainSummary {
                        run_dir: run.dir.path().to_path_buf(),
                        step: run.step,
                        last_eval,
                        interrupted: true,
                    });
                }
            }
        }
        // data parallel: rank 0 evaluates the whole test split while the others wait
        let ev = if run.dist.is_main() {
            Some(run.eval()?)
        } else {
            None
        };
        run.dist.barrier()?;
        let Some(mut ev) = ev else {
            if cfg.checkpoint_every_eval || it + 1 == total_iters {
                run.checkpoint(it, true)?;
            }
            continue;
        };
        if let Some(p) = ev.predictions.take() {
            run.save_eval_outputs(&p)?;
        }
        let flat = ev.flat();
        check_finite(run.step, flat.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| run.non_finite_metric(e))?;
        if let Some(sinks) = run.sinks.as_mut() {
            sinks.log(run.step, flat.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        if !opts.quiet {
            let line: Vec<String> = flat
                .iter()
                .filter(|(k, _)| {
                    k.ends_with("/exact_accuracy")
                        || k.ends_with("/accuracy")
                        || k.ends_with("/count")
                })
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect();
            progress.println(&format!("eval @ step {}: {}", run.step, line.join(" | ")));
        }
        last_eval = Some(ev);
        if cfg.checkpoint_every_eval || it + 1 == total_iters {
            run.checkpoint(it, true)?;
        }
    }
    progress.finish();
    Ok(TrainSummary {
        run_dir: run.dir.path().to_path_buf(),
        step: run.step,
        last_eval,
        interrupted: false,
    })
}

/// A bf16 forward trains on the CPU only where its products run on a bf16 unit (AMX or
/// AVX512-BF16): elsewhere they would run as f32 products of rounded operands, slower than f32.
fn check_cpu_bf16(f: hrm_model::config::ForwardDtype) -> Result<()> {
    if f == hrm_model::config::ForwardDtype::BF16 && !hrm_model::cpu::bf16::available() {
        anyhow::bail!(
            "arch.forward_dtype = \"bfloat16\" trains on the CPU with bf16 matrix products on \
             {}, and this CPU offers neither (or HRM_NO_SIMD is set): set arch.forward_dtype = \
             \"float32\"",
            hrm_model::cpu::bf16::UNITS
        );
    }
    Ok(())
}
