//! `hrm parity` (replay the reference's golden fixtures) and `hrm convert` (reference PyTorch
//! checkpoint -> our safetensors checkpoint, through `hrm_train::convert`): flags and reports.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use hrm_model::parity::{format_report, run_fixture_on};
use hrm_train::checkpoints::fetch_hub_checkpoint;
use hrm_train::hub::{Hub, HubCheckpoint};

/// Flags of `hrm parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// `hrm-parity-v1` fixture files (safetensors) to replay.
    #[arg(required = true)]
    pub fixtures: Vec<PathBuf>,
    /// Device to replay on: `cpu`, `cuda` or `cuda:N` (f32 fixtures run with full-precision
    /// f32 matrix products there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Replay every fixture; print one line per group and a summary last; fail on any violation.
pub fn parity(args: &ParityArgs) -> Result<()> {
    let device = crate::device::open_device(&args.device)?;
    let (mut failed, mut worst) = (Vec::new(), 0f64);
    for path in &args.fixtures {
        let t0 = std::time::Instant::now();
        let rep =
            run_fixture_on(path, &device).with_context(|| format!("fixture {}", path.display()))?;
        println!(
            "== {} on {} ({:.1} s)",
            path.display(),
            crate::device::describe(&device),
            t0.elapsed().as_secs_f64()
        );
        print!("{}", format_report(&rep));
        worst = worst.max(rep.worst_rel());
        if !rep.ok() {
            let bad: Vec<&str> = rep
                .groups
                .iter()
                .filter(|g| !g.ok())
                .map(|g| g.name.as_str())
                .collect();
            println!("FAIL: {}", bad.join(", "));
            failed.push(path.display().to_string());
        }
    }
    println!(
        "parity: {} fixture(s) checked, {} failed, worst relative difference {:.3e}",
        args.fixtures.len(),
        failed.len(),
        worst
    );
    if !failed.is_empty() {
        bail!("parity violated in {}", failed.join(", "));
    }
    Ok(())
}

/// Flags of `hrm convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The reference checkpoint (torch.save of the state dict, e.g. `step_26040`), or one on the
    /// Hugging Face Hub: `hub:OWNER/REPO[@REVISION][/FILE]` (fetched with its all_config.yaml).
    pub input: PathBuf,
    /// The safetensors file to write.
    pub output: PathBuf,
    /// The run's `all_config.yaml` (default: the one next to INPUT, if any).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tokens per example (81 Sudoku, 900 Maze/ARC); the reference keeps it in the dataset, not
    /// in the checkpoint, so it is needed unless the model has learned positions.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Architecture overrides `KEY=VALUE` with the reference's key names (e.g. `halt_max_steps=16`).
    pub overrides: Vec<String>,
}

/// `hrm convert`: read, check against the config, write atomically, report.
pub fn convert(args: &ConvertArgs) -> Result<()> {
    let (input, config) = match HubCheckpoint::from_path(&args.input)? {
        Some(c) => {
            let f = fetch_hub_checkpoint(&Hub::from_env()?, &c)?;
            (f.checkpoint, args.config.clone().or(f.config))
        }
        None => (args.input.clone(), args.config.clone()),
    };
    let done = hrm_train::convert::convert(
        &input,
        &args.output,
        config.as_deref(),
        args.seq_len,
        &args.overrides,
    )?;
    println!(
        "wrote {} ({} tensors, {} parameters; config from {})",
        args.output.display(),
        done.tensors,
        done.parameters,
        done.config
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "shapes and defaults".into())
    );
    Ok(())
}
