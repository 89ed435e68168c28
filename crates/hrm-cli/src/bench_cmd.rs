//! `hrm bench train|eval|solve`: the same measurements, printed with the same JSON fields, as the
//! PyTorch peer's `bench` / `bench-eval` (../shared/peers/torch_hrm.py), so that
//! scripts/bench-vs-torch.sh can run both alternately and report ratios.
//!
//! - `train`: one optimizer step = one ACT segment for the whole batch (gradient segment + the
//!   no-grad Q-target segment + backward + SignSGD + AdamATan2), the carry kept across steps;
//! - `eval`: one eval ACT segment (a fresh rollout every `halt_max_steps` segments);
//! - `solve`: one full rollout (`halt_max_steps` segments) of batch 1, i.e. `hrm solve` without
//!   the process start and the checkpoint load.
//!
//! The model uses the reference initialisation (seed 0) and four synthetic batches of random
//! Sudoku-like rows (labels 2..V-1, inputs = label or 1 = blank), as the peer does.
//!
//! `--device cuda:N` times on a GPU (each step ends with a device synchronisation, so the time
//! is the step's, not its launch's); `--dtype bfloat16` runs the forward in bf16 (f32 master
//! weights and optimizer), as the reference trains on GPUs.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use hrm_model::config::{ForwardDtype, ModelConfig};
use hrm_model::hrm::{Batch, Hrm, Mode};
use hrm_model::loss::LossType;
use hrm_model::train::{forward_backward, Optimizers};
use rand::SeedableRng;
use serde_json::json;

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Training steps.
    Train,
    /// Eval segments.
    Eval,
    /// Whole batch-1 rollouts.
    Solve,
    /// Write the preset's randomly initialised model to `--output` (a checkpoint of the right
    /// size for timing `hrm solve` as a whole process) and exit.
    ExportRandom,
}

/// Model presets of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The reference Sudoku model (hidden 512, 4+4 layers, seq 81).
    Sudoku,
    /// The reference Maze model (seq 900, vocab 6).
    Maze,
    /// hidden 64, 4 heads, 2+2 layers, seq 81.
    Tiny,
}

/// Flags of `hrm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// train | eval | solve.
    #[arg(value_enum)]
    pub mode: BenchMode,
    /// Model preset.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Batch size (solve: always 1).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Where `export-random` writes the model.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// H_cycles x L_cycles override, e.g. `4x4` (memory-flatness sweeps).
    #[arg(long)]
    pub cycles: Option<String>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Forward dtype: `float32` or `bfloat16` (parameters and optimizer stay f32).
    #[arg(long, default_value = "float32", value_parser = ["float32", "bfloat16"])]
    pub dtype: String,
    /// eval / solve: matrix products in bf16 on Intel AMX (f32 activations), as `hrm eval
    /// --bf16` and `hrm solve --bf16`.
    #[arg(long)]
    pub bf16: bool,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user + system) this process has used so far (Linux `/proc/self/stat`).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name; utime and stime are the 12th and 13th of them
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn preset(p: Preset, batch: usize) -> ModelConfig {
    match p {
        Preset::Sudoku => ModelConfig::sudoku(batch),
        Preset::Maze => ModelConfig::maze(batch),
        Preset::Tiny => ModelConfig::tiny(batch),
    }
}

/// `hrm bench`.
pub fn bench_cmd(a: &BenchArgs) -> Result<()> {
    let batch = if a.mode == BenchMode::Solve {
        1
    } else {
        a.batch
    };
    let mut cfg = preset(a.preset, batch);
    if let Some(c) = &a.cycles {
        let Some((h, l)) = c.split_once('x') else {
            bail!("--cycles expects HxL, e.g. 2x2")
        };
        cfg.h_cycles = h.parse()?;
        cfg.l_cycles = l.parse()?;
    }
    if a.dtype == "bfloat16" {
        cfg.forward_dtype = ForwardDtype::BF16;
    }
    let device: Device = crate::device::open_device(&a.device)?;
    let threads = candle_core::utils::get_num_threads();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = Hrm::new(&cfg, &device, &mut rng)?;
    if a.bf16 {
        if a.mode == BenchMode::Train {
            bail!("--bf16 (AMX matrix products) is for eval and solve; training stays f32 here");
        }
        model
            .set_bf16_matmul(true)
            .map_err(|e| anyhow::anyhow!("--bf16: {e}"))?;
    } else if a.mode == BenchMode::Solve {
        // as `hrm solve` does for its one puzzle (where the small-batch kernel runs)
        model.set_packed_f32(true)?;
    }
    if a.mode == BenchMode::ExportRandom {
        let Some(out) = &a.output else {
            bail!("bench export-random needs --output FILE.safetensors")
        };
        hrm_model::checkpoint::save_model(out, &model, &Default::default())
            .with_context(|| format!("writing {}", out.display()))?;
        println!("{}", json!({ "wrote": out, "params": cfg.num_params() }));
        return Ok(());
    }
    let mut data_rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let batches: Vec<Batch> = (0..4)
        .map(|_| Batch::random(batch, cfg.seq_len, cfg.vocab_size, 0.6, None, &mut data_rng))
        .collect();
    let mut opt = Optimizers::new(&model, (0.9, 0.95), 1.0, 1.0);
    let mut carry = None;
    let mut times = Vec::new();
    let mut cpu_start = None;
    for i in 0..a.warmup + a.steps {
        if i == a.warmup {
            cpu_start = cpu_seconds();
        }
        let b = &batches[i % batches.len()];
        let t0 = Instant::now();
        match a.mode {
            BenchMode::ExportRandom => {} // handled (and returned) above
            BenchMode::Train => {
                let c = match carry.take() {
                    Some(c) => c,
                    None => model.initial_carry(b)?,
                };
                let step = forward_backward(&model, &c, b, LossType::Stablemax, batch, &mut rng)?;
                opt.step(&model, &step.grads, 1e-4, 1e-4)?;
                carry = Some(step.carry);
            }
            BenchMode::Eval => {
                let c = match carry.take() {
                    Some(c) if i % cfg.halt_max_steps != 0 => c,
                    _ => model.initial_carry(b)?,
                };
                let (c, out) = model.act_step(&c, b, Mode::Eval, &mut rng)?;
                out.logits.flatten_all()?.to_vec1::<f32>()?; // include the host copy
                carry = Some(c);
            }
            BenchMode::Solve => {
                let mut c = model.initial_carry(b)?;
                for _ in 0..cfg.halt_max_steps {
                    let (next, out) = model.act_step(&c, b, Mode::Eval, &mut rng)?;
                    out.logits.flatten_all()?.to_vec1::<f32>()?;
                    c = next;
                }
            }
        }
        device.synchronize()?; // a GPU step is done when its kernels are, not when they are queued
        let dt = t0.elapsed().as_secs_f64();
        let tag = if i < a.warmup { " (warm-up)" } else { "" };
        eprintln!("{:?} step {i}{tag}: {dt:.4}s", a.mode);
        if i >= a.warmup {
            times.push(dt);
        }
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let med = if times.is_empty() {
        bail!("--steps must be at least 1")
    } else if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    let mode = format!("{:?}", a.mode).to_lowercase();
    let mut res = json!({
        "impl": "hrm-rs",
        "mode": mode,
        "preset": format!("{:?}", a.preset).to_lowercase(),
        "batch": batch,
        "threads": threads,
        "device": crate::device::describe(&device),
        "dtype": a.dtype,
        "matmul": if a.bf16 { "bf16-amx" } else { "f32" },
        "cycles": format!("{}x{}", cfg.h_cycles, cfg.l_cycles),
        "steps": a.steps,
        "median_s_per_step": (med * 1e4).round() / 1e4,
        "samples_per_s": ((batch as f64 / med) * 100.0).round() / 100.0,
        "peak_rss_mb": peak_rss_mib().map(|x| x.round()),
        // CPU time per timed step (robust to other load on a shared machine; ~threads x wall)
        "cpu_s_per_step": cpu_start
            .zip(cpu_seconds())
            .map(|(a0, a1)| ((a1 - a0) / a.steps as f64 * 1e3).round() / 1e3),
    });
    if a.mode == BenchMode::Eval {
        let r = med * cfg.halt_max_steps as f64;
        res["median_s_per_rollout"] = json!((r * 1e3).round() / 1e3);
        res["rollout_samples_per_s"] = json!((batch as f64 / r * 1e3).round() / 1e3);
    }
    println!("{res}");
    Ok(())
}
