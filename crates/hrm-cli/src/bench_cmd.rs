//! `hrm bench train|eval|solve`: the flags and the printed JSON, with the same fields as the
//! PyTorch peer's `bench` / `bench-eval` output, so that scripts/bench-vs-torch.sh can run both
//! alternately and report ratios. What is timed, and how, is `hrm_train::bench`.
//!
//! `--device cuda:N` times on a GPU; `--dtype bfloat16` runs the forward in bf16 (f32 master
//! weights and optimizer), as the reference trains on GPUs.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hrm_model::config::Arch;
use hrm_train::bench::{
    bench_config, peak_rss_mib, Bench, BenchMode as Timed, Preset as ModelPreset,
};
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
    /// Forward dtype: `float32` or `bfloat16` (parameters and optimizer stay f32; on the CPU a
    /// bf16 forward is f32 activations with bf16 matrix products on AMX or AVX512-BF16).
    #[arg(long, default_value = "float32", value_parser = ["float32", "bfloat16"])]
    pub dtype: String,
    /// eval / solve: block matrix products in bf16 on AMX or AVX512-BF16 (f32 activations), as
    /// `hrm eval --bf16` and `hrm solve --bf16`.
    #[arg(long)]
    pub bf16: bool,
    /// The preset as this model: `hrm`, `trm` (one 2-block network, 3x6 cycles, a 16-position
    /// prefix) or `transformer` (8 blocks, one call per segment).
    #[arg(long, default_value = "hrm", value_parser = ["hrm", "trm", "transformer"])]
    pub arch: String,
    /// TRM: the sequence SwiGLU instead of attention (no positional encoding).
    #[arg(long)]
    pub mlp_t: bool,
}

impl Preset {
    fn preset(self) -> ModelPreset {
        match self {
            Preset::Sudoku => ModelPreset::Sudoku,
            Preset::Maze => ModelPreset::Maze,
            Preset::Tiny => ModelPreset::Tiny,
        }
    }
}

impl BenchMode {
    /// What is timed (`None`: nothing, the model is written out).
    fn timed(self) -> Option<Timed> {
        match self {
            BenchMode::Train => Some(Timed::Train),
            BenchMode::Eval => Some(Timed::Eval),
            BenchMode::Solve => Some(Timed::Solve),
            BenchMode::ExportRandom => None,
        }
    }
}

/// `hrm bench`.
pub fn bench_cmd(a: &BenchArgs) -> Result<()> {
    let batch = if a.mode == BenchMode::Solve {
        1
    } else {
        a.batch
    };
    let cfg = bench_config(
        a.preset.preset(),
        batch,
        a.cycles.as_deref(),
        a.dtype == "bfloat16",
        (Arch::parse(&a.arch).unwrap_or_default(), a.mlp_t),
    )?;
    let device = crate::device::open_device(&a.device)?;
    let threads = candle_core::utils::get_num_threads();
    let mut bench = Bench::new(&cfg, &device, a.bf16, a.mode.timed())?;
    let Some(mode) = a.mode.timed() else {
        let Some(out) = &a.output else {
            bail!("bench export-random needs --output FILE.safetensors")
        };
        hrm_model::checkpoint::save_model(out, &bench.model, &Default::default())
            .with_context(|| format!("writing {}", out.display()))?;
        println!("{}", json!({ "wrote": out, "params": cfg.num_params() }));
        return Ok(());
    };
    let timing = bench.run(mode, a.warmup, a.steps, |i, dt| {
        let tag = if i < a.warmup { " (warm-up)" } else { "" };
        eprintln!("{:?} step {i}{tag}: {dt:.4}s", a.mode);
    })?;
    let med = timing.median_s;
    let mut res = json!({
        "impl": "hrm-rs",
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "preset": format!("{:?}", a.preset).to_lowercase(),
        "arch": cfg.arch.name(),
        "mlp_t": cfg.mlp_t,
        "batch": batch,
        "threads": threads,
        "device": crate::device::describe(&device),
        "dtype": a.dtype,
        "matmul": if a.bf16 || (a.dtype == "bfloat16" && device.is_cpu()) {
            format!("bf16-{}", hrm_model::cpu::bf16::kernel().name())
        } else {
            "f32".into()
        },
        "cycles": format!("{}x{}", cfg.h_cycles, cfg.l_cycles),
        "steps": a.steps,
        "median_s_per_step": (med * 1e4).round() / 1e4,
        "samples_per_s": ((batch as f64 / med) * 100.0).round() / 100.0,
        "peak_rss_mb": peak_rss_mib().map(|x| x.round()),
        // CPU time per timed step (robust to other load on a shared machine; ~threads x wall)
        "cpu_s_per_step": timing.cpu_s_per_step.map(|s| (s * 1e3).round() / 1e3),
    });
    if mode == Timed::Eval {
        let r = med * cfg.halt_max_steps as f64;
        res["median_s_per_rollout"] = json!((r * 1e3).round() / 1e3);
        res["rollout_samples_per_s"] = json!((batch as f64 / r * 1e3).round() / 1e3);
    }
    println!("{res}");
    Ok(())
}
