//! `hrm train`, `hrm eval` and `hrm solve`.
//!
//! `train` mirrors sapientinc/HRM:pretrain.py (config file + Hydra-style `key=value` overrides),
//! `eval` mirrors evaluate.py plus the ARC voting of arc_eval.ipynb, `solve` runs one puzzle.
//!
//! `train --gpus N` replaces `torchrun --nproc-per-node N`: this process becomes a launcher that
//! starts N copies of itself, rank r on `cuda:r` (its environment says which rank it is, see
//! hrm_train::dist), waits for them, and stops the others if one fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use hrm_data::format::{load_split, read_identifiers, SplitData};
use hrm_model::checkpoint::load_model;
use hrm_model::hrm::{Batch, Hrm, Mode};
use hrm_model::loss::LossType;
use hrm_train::config::{DeviceSpec, TrainConfig};
use hrm_train::dist::{Dist, RankEnv, ENV_RANK, ENV_RENDEZVOUS, ENV_WORLD_SIZE};
use hrm_train::eval::{evaluate, EvalOptions, EvalOutput, Predictions};
use hrm_train::rundir::RunDir;
use hrm_train::trainer::{device_for, resume, resume_dist, train, train_dist, TrainOptions};
use rand::SeedableRng;
use serde_json::{json, Value};

/// Flags of `hrm train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config file (TOML; presets in configs/), then `key=value` overrides with the reference's
    /// key names, e.g. `data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 arch.L_cycles=8`.
    /// With --resume, only overrides.
    pub args: Vec<String>,
    /// Run folder (default: a new folder under runs/).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long, conflicts_with = "run_dir")]
    pub resume: Option<PathBuf>,
    /// Stop with a checkpoint after this many optimizer steps (for smoke runs).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// No progress bar or log lines.
    #[arg(long)]
    pub quiet: bool,
    /// Data-parallel training on N GPUs (`cuda:0` .. `cuda:N-1`, one process each, gradients
    /// summed over NCCL; needs a build with `--features nccl`). The global batch is split evenly.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
}

/// The config a `train` invocation will use (for checks before launching ranks).
fn invocation_config(a: &TrainArgs) -> Result<TrainConfig> {
    match &a.resume {
        Some(dir) => {
            let saved = RunDir::open(dir)?.load_config()?;
            if a.args.is_empty() {
                Ok(saved)
            } else {
                Ok(TrainConfig::load(
                    &RunDir::open(dir)?.config_path(),
                    &a.args,
                )?)
            }
        }
        None => {
            let (file, overrides) = config_and_overrides(a)?;
            Ok(TrainConfig::load(&file, &overrides)?)
        }
    }
}

fn config_and_overrides(a: &TrainArgs) -> Result<(PathBuf, Vec<String>)> {
    match a.args.split_first() {
        Some((f, rest)) if !f.contains('=') => Ok((PathBuf::from(f), rest.to_vec())),
        _ => bail!(
            "hrm train needs a config file first, e.g. `hrm train configs/tiny.toml data_path=...`"
        ),
    }
}

/// `hrm train --gpus N`: start N ranks of this binary and wait for them.
fn launch_ranks(a: &TrainArgs) -> Result<()> {
    use std::process::{Command, Stdio};
    let n = a.gpus;
    if !cfg!(feature = "nccl") {
        bail!(
            "--gpus {n}: this `hrm` was built without NCCL; build with `--features nccl` \
             (see the README's GPU section)"
        );
    }
    let cfg = invocation_config(a)?;
    if cfg.device_spec()? == DeviceSpec::Cpu {
        bail!("--gpus {n}: the config trains on `device = \"cpu\"`; set device=cuda");
    }
    cfg.check_world_size(n)?;
    let exe = std::env::current_exe().context("locating the hrm executable")?;
    let rendezvous = std::env::temp_dir().join(format!("hrm-dist-{}", std::process::id()));
    std::fs::create_dir_all(&rendezvous)
        .with_context(|| format!("creating {}", rendezvous.display()))?;
    // the first Ctrl-C reaches every rank (same process group): they agree to stop at the same
    // step and checkpoint; the launcher just keeps waiting for them. A SIGTERM sent to the
    // launcher alone is not forwarded (send it to the process group, like Ctrl-C).
    ctrlc::set_handler(|| eprintln!("interrupt: the ranks finish the step and checkpoint"))
        .context("installing the Ctrl-C handler")?;
    let mut children = Vec::with_capacity(n);
    for r in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.arg("train");
        cmd.args(&a.args);
        cmd.arg(format!("device=cuda:{r}"));
        if let Some(d) = &a.run_dir {
            cmd.arg("--run-dir").arg(d);
        }
        if let Some(d) = &a.resume {
            cmd.arg("--resume").arg(d);
        }
        if let Some(s) = a.stop_after {
            cmd.arg("--stop-after").arg(s.to_string());
        }
        if a.quiet || r > 0 {
            cmd.arg("--quiet");
        }
        cmd.env(ENV_RANK, r.to_string())
            .env(ENV_WORLD_SIZE, n.to_string())
            .env(ENV_RENDEZVOUS, &rendezvous)
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting rank {r} ({})", exe.display()))?;
        children.push(Some(child));
    }
    // wait; when a rank fails, the others would wait for it forever inside NCCL: stop them
    let mut failure: Option<String> = None;
    loop {
        let mut running = 0;
        for (r, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && failure.is_none() {
                        failure = Some(format!("rank {r} exited with {status}"));
                    }
                    *slot = None;
                }
                Ok(None) => running += 1,
                Err(e) => {
                    failure.get_or_insert(format!("waiting for rank {r}: {e}"));
                    *slot = None;
                }
            }
        }
        if running == 0 {
            break;
        }
        if failure.is_some() {
            for child in children.iter_mut().flatten() {
                let _ = child.kill();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&rendezvous);
    match failure {
        Some(f) => bail!("data-parallel training failed: {f} (the other ranks were stopped)"),
        None => Ok(()),
    }
}

/// One rank of `hrm train --gpus N` (started by [`launch_ranks`]).
fn train_rank(a: &TrainArgs, env: RankEnv, opts: &TrainOptions) -> Result<()> {
    let r = env.rank;
    let cfg = invocation_config(a).with_context(|| format!("rank {r}"))?;
    let device = device_for(&cfg).with_context(|| format!("rank {r}"))?;
    let coll = env
        .connect(&device)
        .with_context(|| format!("rank {r}: joining the NCCL group"))?;
    let dist = Dist::new(coll).with_device(device);
    let summary = match &a.resume {
        Some(dir) => resume_dist(dir, &a.args, opts, Some(dist)),
        None => train_dist(cfg, opts, Some(dist)),
    }
    .with_context(|| format!("rank {r} of {}", env.world_size))?;
    if r == 0 {
        println!(
            "{} at step {} in {} ({} ranks)",
            if summary.interrupted {
                "stopped"
            } else {
                "finished"
            },
            summary.step,
            summary.run_dir.display(),
            env.world_size
        );
    }
    Ok(())
}

/// `hrm train`.
pub fn train_cmd(a: &TrainArgs) -> Result<()> {
    let rank_env = RankEnv::from_env()?;
    if rank_env.is_none() && a.gpus > 1 {
        return launch_ranks(a);
    }
    if a.gpus == 0 {
        bail!("--gpus must be at least 1");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // first Ctrl-C: finish the step, checkpoint, exit; second: exit at once
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted twice: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "interrupt: finishing the step and writing a checkpoint (Ctrl-C again to abort)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let opts = TrainOptions {
        run_dir: a.run_dir.clone(),
        stop,
        stop_after: a.stop_after,
        quiet: a.quiet,
    };
    if let Some(env) = rank_env {
        return train_rank(a, env, &opts);
    }
    let summary = match &a.resume {
        Some(dir) => resume(dir, &a.args, &opts)?,
        None => {
            let (file, overrides) = config_and_overrides(a)?;
            let cfg = TrainConfig::load(&file, &overrides)?;
            train(cfg, &opts)?
        }
    };
    println!(
        "{} at step {} in {}",
        if summary.interrupted {
            "stopped"
        } else {
            "finished"
        },
        summary.step,
        summary.run_dir.display()
    );
    Ok(())
}

/// The puzzle family, for task-specific scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Pick from the dataset's shape (81 tokens / vocab 11: Sudoku; vocab 6: Maze; vocab 12 x 900:
    /// ARC).
    Auto,
    /// 9x9 Sudoku: also counts predictions that are valid Sudokus agreeing with the givens.
    Sudoku,
    /// Maze: also the valid-and-optimal path rate (the paper's criterion).
    Maze,
    /// ARC: inverse augmentation, voting, pass@K and an ARC-Prize submission.
    Arc,
    /// Only the loss head's metrics.
    Generic,
}

/// Halting rule at evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Halting {
    /// Always run halt_max_steps segments (the reference's evaluation).
    Fixed,
    /// Stop a row at its first segment with q_halt > q_continue.
    Learned,
}

/// Flags of `hrm eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model checkpoint (safetensors; reference .pt files: `hrm convert` first), or a run folder
    /// (its newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset folder (its `test` split is evaluated).
    #[arg(long)]
    pub data: PathBuf,
    /// Segments per example (inference-time scaling); default: the checkpoint's halt_max_steps.
    #[arg(long)]
    pub halt_max_steps: Option<usize>,
    /// Halting rule.
    #[arg(long, value_enum, default_value_t = Halting::Fixed)]
    pub halting: Halting,
    /// Evaluate only the first N test examples.
    #[arg(long)]
    pub max_examples: Option<usize>,
    /// Examples per batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Task-specific scoring.
    #[arg(long, value_enum, default_value_t = Task::Auto)]
    pub task: Task,
    /// Write the metrics JSON here (it is always printed).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// ARC: write an ARC-Prize submission JSON here.
    #[arg(long)]
    pub submission: Option<PathBuf>,
    /// LM loss used for the loss metrics (default: the one the checkpoint was trained with, as
    /// its saved run config says; stablemax_cross_entropy for checkpoints without one).
    #[arg(long)]
    pub loss_type: Option<String>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matrix products in bf16 on Intel AMX (f32 accumulation and activations; Xeon 4th
    /// generation or newer): faster (a Sudoku eval segment in 0.57x the f32 time on 2 cores),
    /// answers may differ from f32 where logits are close.
    #[arg(long)]
    pub bf16: bool,
}

/// Load a checkpoint for evaluation or solving; `bf16` switches the model's matrix products to
/// bf16 on AMX (CPU only, f32 activations: a bf16-trained checkpoint is run with f32 activations);
/// otherwise batches of at most `packed::MAX_ROWS` rows get the small-batch f32 kernel.
fn load_for_inference(
    ckpt: &Path,
    device: &candle_core::Device,
    bf16: bool,
    adjust: impl FnOnce(&mut hrm_model::config::ModelConfig),
) -> Result<(Hrm, std::collections::HashMap<String, String>)> {
    if bf16 && !device.is_cpu() {
        bail!(
            "--bf16 selects AMX matrix products on the CPU; on a GPU, bf16 is the checkpoint's \
             arch.forward_dtype (a model trained with forward_dtype = \"bfloat16\" runs in bf16)"
        );
    }
    let (mut model, meta) = load_model(ckpt, device, |c| {
        adjust(c);
        if bf16 {
            c.forward_dtype = hrm_model::config::ForwardDtype::F32;
        }
    })?;
    if bf16 {
        model
            .set_bf16_matmul(true)
            .map_err(|e| anyhow::anyhow!("--bf16: {e}"))?;
    } else {
        // small batches (one Sudoku): the f32 kernel with weights packed once (where it runs)
        model.set_packed_f32(true)?;
    }
    Ok((model, meta))
}

fn detect_task(split: &SplitData) -> Task {
    let m = &split.metadata;
    match (m.seq_len, m.vocab_size) {
        (81, 11) => Task::Sudoku,
        (_, 6) => Task::Maze,
        (900, 12) => Task::Arc,
        _ => Task::Generic,
    }
}

fn sudoku_score(p: &Predictions) -> Value {
    let l = p.seq_len;
    let n = p.segments.len();
    let mut valid = 0;
    for r in 0..n {
        let (inp, pred) = (
            &p.inputs[r * l..(r + 1) * l],
            &p.predictions[r * l..(r + 1) * l],
        );
        if l == 81 && sudoku_answer_ok(inp, pred) {
            valid += 1;
        }
    }
    json!({ "examples": n, "valid_solutions": valid, "valid_solution_rate": valid as f64 / n.max(1) as f64 })
}

/// A predicted Sudoku (tokens 2..10 = digits) is a complete valid grid agreeing with the givens.
fn sudoku_answer_ok(input: &[i32], pred: &[i32]) -> bool {
    let mut q = [0u8; 81];
    let mut a = [0u8; 81];
    for i in 0..81 {
        q[i] = if (2..=10).contains(&input[i]) {
            (input[i] - 1) as u8
        } else {
            0
        };
        if !(2..=10).contains(&pred[i]) {
            return false;
        }
        a[i] = (pred[i] - 1) as u8;
    }
    hrm_data::sudoku::is_valid_solution(&a) && hrm_data::sudoku::givens_agree(&q, &a)
}

fn maze_score(p: &Predictions) -> Value {
    let l = p.seq_len;
    let n = p.segments.len();
    let (mut valid, mut optimal) = (0, 0);
    for r in 0..n {
        let q: Vec<u8> = p.inputs[r * l..(r + 1) * l]
            .iter()
            .map(|&x| x.clamp(0, 255) as u8)
            .collect();
        let a: Vec<u8> = p.predictions[r * l..(r + 1) * l]
            .iter()
            .map(|&x| x.clamp(0, 255) as u8)
            .collect();
        let v = hrm_data::maze::check_path(&q, &a);
        valid += v.valid as usize;
        optimal += v.optimal as usize;
    }
    json!({
        "examples": n,
        "valid_paths": valid,
        "valid_and_optimal": optimal,
        "valid_and_optimal_rate": optimal as f64 / n.max(1) as f64,
    })
}

fn arc_score(
    p: &Predictions,
    split: &SplitData,
    data: &Path,
    submission: Option<&Path>,
) -> Result<Value> {
    use hrm_data::arc::{test_cases_from_split, vote, write_submission, ArcPrediction};
    let ids = read_identifiers(data)?;
    let cases = test_cases_from_split(split, &ids)?;
    let l = p.seq_len;
    let preds: Vec<ArcPrediction> = (0..p.segments.len())
        .filter(|&r| p.puzzle_identifiers[r] > 0)
        .map(|r| ArcPrediction {
            puzzle_name: ids
                .get(p.puzzle_identifiers[r] as usize)
                .cloned()
                .unwrap_or_default(),
            input: p.inputs[r * l..(r + 1) * l]
                .iter()
                .map(|&x| x as u8)
                .collect(),
            predicted: p.predictions[r * l..(r + 1) * l]
                .iter()
                .map(|&x| x.clamp(0, 255) as u8)
                .collect(),
            q_halt_logit: p.q_halt[r],
        })
        .collect();
    let ks = [1, 2, 10, 100, 1000];
    let report = vote(&cases, &preds, &ks)?;
    if let Some(path) = submission {
        write_submission(path, &report)?;
    }
    let mut pass = BTreeMap::new();
    for k in ks {
        if let Some(v) = report.pass_at(k) {
            pass.insert(format!("pass@{k}"), v);
        }
    }
    Ok(json!({
        "tasks_scored": report.scored_tasks,
        "test_inputs": report.tests.len(),
        "predictions": report.predictions,
        "pass": pass,
    }))
}

fn eval_json(ev: &EvalOutput) -> Value {
    json!(ev.metrics)
}

/// `hrm eval`.
pub fn eval_cmd(a: &EvalArgs) -> Result<()> {
    let explicit: Option<LossType> = match &a.loss_type {
        Some(l) => Some(serde_json::from_value(json!(l)).with_context(|| {
            format!("--loss-type `{l}` (stablemax_cross_entropy | softmax_cross_entropy)")
        })?),
        None => None,
    };
    let device = crate::device::open_device(&a.device)?;
    let checkpoint = resolve_checkpoint(&a.checkpoint)?;
    let (model, meta) = load_for_inference(&checkpoint, &device, a.bf16, |_| {})?;
    let loss_type = explicit
        .or_else(|| hrm_train::config::saved_loss_type(&meta))
        .unwrap_or(LossType::Stablemax);
    let split = Arc::new(load_split(&a.data, "test")?);
    let m = &split.metadata;
    if m.seq_len != model.cfg.seq_len || m.vocab_size != model.cfg.vocab_size {
        bail!(
            "{}: the test split has seq_len {} / vocab_size {} but the checkpoint {} was trained on \
             seq_len {} / vocab_size {}",
            a.data.display(),
            m.seq_len,
            m.vocab_size,
            checkpoint.display(),
            model.cfg.seq_len,
            model.cfg.vocab_size
        );
    }
    let task = if a.task == Task::Auto {
        detect_task(&split)
    } else {
        a.task
    };
    let opts = EvalOptions {
        halt_max_steps: a.halt_max_steps,
        learned_halting: a.halting == Halting::Learned,
        max_examples: a.max_examples,
        keep_predictions: task != Task::Generic,
        keep_logits: false,
    };
    let t0 = std::time::Instant::now();
    let ev = evaluate(&model, split.clone(), a.batch_size, loss_type, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    let mut out = json!({
        "checkpoint": checkpoint.display().to_string(),
        "step": meta.get("step").cloned(),
        "data": a.data.display().to_string(),
        "halt_max_steps": a.halt_max_steps.unwrap_or(model.cfg.halt_max_steps),
        "halting": format!("{:?}", a.halting).to_lowercase(),
        "loss_type": loss_type,
        "mean_segments": ev.mean_segments,
        "seconds": secs,
        "metrics": eval_json(&ev),
    });
    if let Some(p) = &ev.predictions {
        match task {
            Task::Sudoku => out["sudoku"] = sudoku_score(p),
            Task::Maze => out["maze"] = maze_score(p),
            Task::Arc => out["arc"] = arc_score(p, &split, &a.data, a.submission.as_deref())?,
            Task::Generic | Task::Auto => {}
        }
    }
    let text = serde_json::to_string_pretty(&out)?;
    println!("{text}");
    if let Some(path) = &a.output {
        hrm_data::fsio::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `hrm solve` puzzles.
#[derive(Debug, Subcommand)]
pub enum SolveCommand {
    /// A 9x9 Sudoku: 81 characters, digits and `.` or `0` for blanks.
    Sudoku {
        /// The puzzle.
        puzzle: String,
    },
    /// A maze: a text file of N lines of N characters `#` wall, ` ` open, `S` start, `G` goal.
    Maze {
        /// The maze file.
        file: PathBuf,
    },
    /// An ARC task file (`{"train": [...], "test": [...]}`): every augmented variant of the task
    /// in the dataset runs with its own puzzle embedding, the answers are de-augmented and voted
    /// on as `hrm eval` does; prints the top answers of each test input and, when the file has
    /// the test outputs, whether they are right.
    Arc {
        /// The task JSON file.
        task: PathBuf,
        /// The dataset folder the checkpoint was trained on (its identifiers.json names the
        /// task's variants and their puzzle embeddings).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Use at most this many variants of the task (default: all in the dataset).
        #[arg(long)]
        max_variants: Option<usize>,
        /// Answers to print per test input.
        #[arg(long, default_value_t = 2)]
        top: usize,
        /// Variants per batch.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
}

/// Flags of `hrm solve`.
#[derive(Debug, Args)]
pub struct SolveArgs {
    /// Model checkpoint or run folder (default for sudoku and maze: the model shipped under
    /// models/; arc needs one).
    #[arg(long, global = true)]
    pub checkpoint: Option<PathBuf>,
    /// Segments to run (default: the checkpoint's halt_max_steps).
    #[arg(long, global = true)]
    pub halt_max_steps: Option<usize>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Matrix products in bf16 on Intel AMX (f32 accumulation and activations; Xeon 4th
    /// generation or newer): several times faster, the answer may differ from f32's.
    #[arg(long, global = true)]
    pub bf16: bool,
    /// The puzzle.
    #[command(subcommand)]
    pub puzzle: SolveCommand,
}

/// Where the shipped default models live (next to the binary's source tree, or `HRM_MODELS`).
/// `--checkpoint` as given: a model file, or a run folder meaning its newest `step_N.safetensors`.
fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let run = RunDir::open(path)?;
    match run.latest_checkpoint()? {
        Some(c) => Ok(c.path),
        None => bail!(
            "{}: a run folder without checkpoints (step_N.safetensors); pass a model file",
            path.display()
        ),
    }
}

fn default_model(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("HRM_MODELS") {
        candidates.push(PathBuf::from(d).join(name));
    }
    candidates.push(PathBuf::from("models").join(name));
    candidates.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")).join(name));
    candidates.into_iter().find(|p| p.exists()).with_context(|| {
        format!("no default model `models/{name}` found; pass --checkpoint CKPT (or set HRM_MODELS)")
    })
}

/// One segment's outputs for every row: argmax tokens `[B * L]`, q_halt `[B]`, q_continue `[B]`.
type Segment = (Vec<i32>, Vec<f32>, Vec<f32>);

/// Run a batch through the ACT loop for `segments` segments (no halting); returns every
/// segment's outputs.
fn rollout(model: &Hrm, batch: &Batch, segments: usize) -> Result<Vec<Segment>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut carry = model.initial_carry(batch)?;
    let v = model.cfg.vocab_size;
    let mut out = Vec::new();
    for _ in 0..segments {
        let (mut c, o) = model.act_step(&carry, batch, Mode::Eval, &mut rng)?;
        let logits = o
            .logits
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let pred: Vec<i32> = logits
            .chunks(v)
            .map(|r| (0..v).fold(0, |b, k| if r[k] > r[b] { k } else { b }) as i32)
            .collect();
        let qh = o
            .q_halt
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let qc = o
            .q_continue
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        out.push((pred, qh, qc));
        c.halted = vec![false; batch.batch_size];
        carry = c;
    }
    Ok(out)
}

/// `hrm solve`.
pub fn solve_cmd(a: &SolveArgs) -> Result<()> {
    let (ckpt, tokens, side) = match &a.puzzle {
        SolveCommand::Sudoku { puzzle } => {
            let g = hrm_data::sudoku::parse_grid(puzzle.trim(), true)
                .map_err(|e| anyhow::anyhow!("sudoku puzzle: {e}"))?;
            let ckpt = a
                .checkpoint
                .as_deref()
                .map(resolve_checkpoint)
                .unwrap_or_else(|| default_model("sudoku-cpu.safetensors"))?;
            (
                ckpt,
                hrm_data::sudoku::encode(&g)
                    .iter()
                    .map(|&t| t as i32)
                    .collect::<Vec<_>>(),
                9,
            )
        }
        SolveCommand::Maze { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let flat: String = text.lines().filter(|l| !l.is_empty()).collect();
            let grid = hrm_data::maze::MazeGrid::parse(&flat)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            hrm_data::maze::validate_question(&grid)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let ckpt = a
                .checkpoint
                .as_deref()
                .map(resolve_checkpoint)
                .unwrap_or_else(|| default_model("maze-cpu.safetensors"))?;
            let side = grid.side();
            (
                ckpt,
                grid.to_tokens().iter().map(|&t| t as i32).collect(),
                side,
            )
        }
        SolveCommand::Arc {
            task,
            data,
            max_variants,
            top,
            batch_size,
        } => {
            let data = data.as_deref().context(
                "ARC needs the dataset the checkpoint was trained on: pass --data DIR (its \
                 identifiers.json maps the task's variants to their puzzle embeddings)",
            )?;
            return solve_arc(a, task, data, *max_variants, *top, *batch_size);
        }
    };
    let device = crate::device::open_device(&a.device)?;
    let (model, _) = load_for_inference(&ckpt, &device, a.bf16, |c| c.batch_size = 1)?;
    if tokens.len() != model.cfg.seq_len {
        bail!(
            "the puzzle has {} cells but the model {} was trained on {}",
            tokens.len(),
            ckpt.display(),
            model.cfg.seq_len
        );
    }
    let batch = Batch {
        inputs: tokens.clone(),
        labels: vec![-100; tokens.len()],
        puzzle_identifiers: vec![0],
        batch_size: 1,
        seq_len: tokens.len(),
        effective_size: 1,
        set_name: String::new(),
    };
    let segments = a.halt_max_steps.unwrap_or(model.cfg.halt_max_steps);
    let t0 = std::time::Instant::now();
    let steps = rollout(&model, &batch, segments)?;
    let secs = t0.elapsed().as_secs_f64();
    let (pred, qh, _) = steps.last().context("no segment ran")?;
    let qh = qh[0];
    let halt_at = steps
        .iter()
        .position(|(_, h, c)| h[0] > c[0])
        .map(|i| i + 1);
    match &a.puzzle {
        SolveCommand::Sudoku { .. } => {
            for r in 0..9 {
                let row: Vec<String> = (0..9)
                    .map(|c| {
                        let t = pred[r * 9 + c];
                        if (2..=10).contains(&t) {
                            (t - 1).to_string()
                        } else {
                            "?".into()
                        }
                    })
                    .collect();
                println!("{}", row.join(" "));
            }
            let ok = sudoku_answer_ok(&tokens, pred);
            println!(
                "verified: {}",
                if ok {
                    "yes (valid Sudoku, agrees with every given)"
                } else {
                    "no"
                }
            );
        }
        SolveCommand::Maze { .. } => {
            let chars = "?# SGo";
            for r in 0..side {
                let line: String = (0..side)
                    .map(|c| {
                        chars
                            .chars()
                            .nth(pred[r * side + c].clamp(0, 5) as usize)
                            .unwrap_or('?')
                    })
                    .collect();
                println!("{line}");
            }
            let q: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
            let a2: Vec<u8> = pred.iter().map(|&t| t.clamp(0, 255) as u8).collect();
            let v = hrm_data::maze::check_path(&q, &a2);
            match (&v.reason, v.optimal) {
                (_, true) => println!(
                    "verified: yes (valid path of {} moves, optimal)",
                    v.length.unwrap_or(0)
                ),
                (Some(r), _) => println!("verified: no ({r})"),
                (None, false) => println!("verified: no"),
            }
        }
        SolveCommand::Arc { .. } => unreachable!("returned above"),
    }
    println!(
        "segments: {segments} (q_halt > q_continue first at segment {}), final q_halt {qh:.3} \
         (confidence {:.3}), {:.0} ms",
        halt_at
            .map(|k| k.to_string())
            .unwrap_or_else(|| "never".into()),
        1.0 / (1.0 + (-qh).exp()),
        secs * 1000.0
    );
    Ok(())
}

/// `hrm solve arc`: the task's variants in the dataset (original and augmentations, each with its
/// own puzzle embedding) run for the checkpoint's segments; their answers are cropped,
/// de-augmented and voted on (arc_eval.ipynb's ranking: votes, then mean confidence).
fn solve_arc(
    a: &SolveArgs,
    task_path: &Path,
    data: &Path,
    max_variants: Option<usize>,
    top: usize,
    batch_size: usize,
) -> Result<()> {
    use hrm_data::arc::{
        encode_grid, load_test_inputs, parse_puzzle_name, vote, ArcPrediction, ArcTestCase,
        Augmentation, Grid,
    };
    for (flag, v) in [
        ("--batch-size", batch_size),
        ("--top", top),
        ("--max-variants", max_variants.unwrap_or(1)),
    ] {
        anyhow::ensure!(v > 0, "{flag} must be at least 1");
    }
    let (task_id, tests) = load_test_inputs(task_path)?;
    let ids = read_identifiers(data)?;
    let ids_file = data.join(hrm_data::format::IDENTIFIERS_FILE);
    let variants: Vec<(usize, Augmentation)> = ids
        .iter()
        .enumerate()
        .skip(1) // identifier 0 is the blank
        .filter_map(|(i, name)| {
            let (t, aug) = parse_puzzle_name(name);
            (t == task_id).then(|| (i, aug.unwrap_or_else(Augmentation::identity)))
        })
        .take(max_variants.unwrap_or(usize::MAX))
        .collect();
    if variants.is_empty() {
        bail!(
            "{}: task `{}` is not in {}: HRM learns a puzzle embedding per task variant, so it \
             solves only tasks whose demonstrations were in its training set (hint: build the \
             dataset with this task's folder in --dataset-dirs or --eval-dirs)",
            task_path.display(),
            task_id,
            ids_file.display()
        );
    }
    let ckpt = match a.checkpoint.as_deref() {
        Some(p) => resolve_checkpoint(p)?,
        None => {
            bail!("ARC ships no default model: pass --checkpoint CKPT (a model trained on --data)")
        }
    };
    let device = crate::device::open_device(&a.device)?;
    let (model, _) = load_for_inference(&ckpt, &device, a.bf16, |c| c.batch_size = batch_size)?;
    let c = &model.cfg;
    let (seq_len, vocab) = (hrm_data::arc::SEQ_LEN, hrm_data::arc::VOCAB_SIZE);
    if c.seq_len != seq_len || c.vocab_size != vocab || c.num_puzzle_identifiers != ids.len() {
        bail!(
            "{}: the checkpoint has seq_len {}, vocab_size {} and {} puzzle identifiers, but ARC \
             needs {seq_len} and {vocab}, and {} lists {} (hint: pass the dataset the model was \
             trained on)",
            ckpt.display(),
            c.seq_len,
            c.vocab_size,
            c.num_puzzle_identifiers,
            ids_file.display(),
            ids.len()
        );
    }
    // one row per (test input, variant), in the test split's layout: the augmented input at the
    // top-left corner of the canvas
    let mut rows: Vec<(usize, Vec<u8>)> = Vec::new();
    for (ti, (input, _)) in tests.iter().enumerate() {
        for &(id, aug) in &variants {
            let tokens = encode_grid(&aug.apply(input), 0, 0)
                .map_err(|e| anyhow::anyhow!("{}: test input {ti}: {e}", task_path.display()))?;
            rows.push((id, tokens));
        }
    }
    let segments = a.halt_max_steps.unwrap_or(model.cfg.halt_max_steps);
    let t0 = std::time::Instant::now();
    let mut preds = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size) {
        let batch = Batch {
            inputs: chunk
                .iter()
                .flat_map(|(_, t)| t.iter().map(|&x| x as i32))
                .collect(),
            labels: vec![-100; chunk.len() * seq_len],
            puzzle_identifiers: chunk.iter().map(|(id, _)| *id as i32).collect(),
            batch_size: chunk.len(),
            seq_len,
            effective_size: chunk.len(),
            set_name: String::new(),
        };
        let steps = rollout(&model, &batch, segments)?;
        let (pred, qh, _) = steps.last().context("no segment ran")?;
        for (r, (id, input)) in chunk.iter().enumerate() {
            preds.push(ArcPrediction {
                puzzle_name: ids[*id].clone(),
                input: input.clone(),
                predicted: pred[r * seq_len..(r + 1) * seq_len]
                    .iter()
                    .map(|&x| x.clamp(0, 255) as u8)
                    .collect(),
                q_halt_logit: qh[r],
            });
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cases: Vec<ArcTestCase> = tests
        .iter()
        .enumerate()
        .map(|(i, (input, answer))| ArcTestCase {
            task_id: task_id.clone(),
            index: i,
            input: input.clone(),
            answer: answer.clone(),
        })
        .collect();
    let ks = [1, 2];
    let report =
        vote(&cases, &preds, &ks).map_err(|e| anyhow::anyhow!("{}: {e}", task_path.display()))?;
    let show = |g: &Grid| -> String {
        g.to_rows()
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!(
        "task {task_id}: {} test input(s), {} variant(s) each",
        tests.len(),
        variants.len()
    );
    for t in &report.tests {
        println!(
            "\ntest input {} ({}x{}): {} distinct answer(s)",
            t.case.index,
            t.case.input.height(),
            t.case.input.width(),
            t.ranked.len()
        );
        for (k, ans) in t.ranked.iter().take(top).enumerate() {
            println!(
                "answer {} ({}x{}): {} vote(s), mean confidence {:.3}",
                k + 1,
                ans.grid.height(),
                ans.grid.width(),
                ans.votes,
                ans.mean_confidence
            );
            if ans.grid.height() == 0 {
                println!("(empty: the prediction has no grid at the top-left corner)");
            } else {
                println!("{}", show(&ans.grid));
            }
        }
        match (&t.case.answer, t.correct_rank) {
            (None, _) => println!("correct: unknown (the task file has no expected output)"),
            (Some(_), Some(r)) => println!("correct: yes (answer {})", r + 1),
            (Some(_), None) => {
                println!("correct: no (the expected output is not among the answers)")
            }
        }
    }
    let yes = |n: usize| if n == 1 { "yes" } else { "no" };
    let solved = if report.scored_tasks == 1 {
        format!(
            "solved: pass@1 {} | pass@2 {}",
            yes(report.solved[0]),
            yes(report.solved[1])
        )
    } else {
        "solved: unknown (no expected outputs)".to_string()
    };
    println!(
        "\n{solved} | segments: {segments} | {} rows in {:.0} ms",
        preds.len(),
        secs * 1000.0
    );
    Ok(())
}
