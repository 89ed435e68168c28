//! `hrm eval`: the flags and the metrics JSON; the evaluation and its task scoring are
//! `hrm_train::score` (evaluate.py plus the ARC voting of arc_eval.ipynb).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use hrm_model::loss::LossType;
use hrm_train::checkpoints::resolve_checkpoint_for_dataset;
use hrm_train::score::{evaluate_checkpoint, EvalRequest, Halting as HaltingRule, Task as Scoring};

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

impl Task {
    /// The scoring asked for (`None`: detect it from the dataset).
    fn scoring(self) -> Option<Scoring> {
        match self {
            Task::Auto => None,
            Task::Sudoku => Some(Scoring::Sudoku),
            Task::Maze => Some(Scoring::Maze),
            Task::Arc => Some(Scoring::Arc),
            Task::Generic => Some(Scoring::Generic),
        }
    }
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
    /// Model checkpoint (safetensors; reference .pt files: `hrm convert` first), a run folder
    /// (its newest checkpoint), or `hub:OWNER/REPO[@REVISION][/FILE]` on the Hugging Face Hub
    /// (a reference checkpoint is fetched and converted once, cached beside the download).
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
    /// Matrix products in bf16 on Intel AMX (Xeon 4th generation or newer) or AVX512-BF16 (AMD
    /// Zen 4 or newer), f32 accumulation and activations: faster (a Sudoku eval segment in 0.57x
    /// the f32 time on 2 AMX cores), answers may differ from f32 where logits are close.
    #[arg(long)]
    pub bf16: bool,
}

/// `hrm eval`.
pub fn eval_cmd(a: &EvalArgs) -> Result<()> {
    let loss_type: Option<LossType> = match &a.loss_type {
        Some(l) => Some(
            serde_json::from_value(serde_json::Value::String(l.clone())).with_context(|| {
                format!("--loss-type `{l}` (stablemax_cross_entropy | softmax_cross_entropy)")
            })?,
        ),
        None => None,
    };
    if a.batch_size == 0 {
        // (the library would name the sampler's `global_batch_size`, a training key)
        anyhow::bail!("--batch-size must be at least 1");
    }
    let device = crate::device::open_device(&a.device)?;
    let req = EvalRequest {
        checkpoint: resolve_checkpoint_for_dataset(&a.checkpoint, &a.data)?,
        data: a.data.clone(),
        bf16: a.bf16,
        loss_type,
        task: a.task.scoring(),
        halting: match a.halting {
            Halting::Fixed => HaltingRule::Fixed,
            Halting::Learned => HaltingRule::Learned,
        },
        halt_max_steps: a.halt_max_steps,
        max_examples: a.max_examples,
        batch_size: a.batch_size,
        submission: a.submission.clone(),
    };
    let report = evaluate_checkpoint(&req, &device)?;
    let text = serde_json::to_string_pretty(&report.to_json()?)?;
    println!("{text}");
    if let Some(path) = &a.output {
        hrm_data::fsio::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
