//! `hrm solve`: the flags and the printed answer; encoding, running, decoding, verifying and the
//! ARC voting are `hrm_train::solve`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hrm_data::arc::Grid;
use hrm_train::checkpoints::{default_model, resolve_checkpoint_for};
use hrm_train::solve::{
    solve_arc, solve_grid, ArcSolution, ArcTask, GridKind, GridPuzzle, GridSolution, SolveOptions,
};
use hrm_train::view::report_page;

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
    /// models/; arc needs one), or `hub:OWNER/REPO[@REVISION][/FILE]` on the Hugging Face Hub
    /// (a reference checkpoint is fetched and converted once, cached beside the download).
    #[arg(long, global = true)]
    pub checkpoint: Option<PathBuf>,
    /// Segments to run (default: the checkpoint's halt_max_steps).
    #[arg(long, global = true)]
    pub halt_max_steps: Option<usize>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Matrix products in bf16 on Intel AMX (Xeon 4th generation or newer) or AVX512-BF16 (AMD
    /// Zen 4 or newer), f32 accumulation and activations: faster, the answer may differ from
    /// f32's.
    #[arg(long, global = true)]
    pub bf16: bool,
    /// Also write every segment's answer, Q values and residuals to this JSON file (ARC: the
    /// voted answers, and the rollout of the task's first variant per test input).
    #[arg(long, global = true, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Also write the solve as a self-contained page (grids, a slider over the segments,
    /// changed cells, Q values, halting, the verdict).
    #[arg(long, global = true, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// The puzzle.
    #[command(subcommand)]
    pub puzzle: SolveCommand,
}

impl SolveArgs {
    fn options(&self) -> SolveOptions {
        SolveOptions {
            bf16: self.bf16,
            halt_max_steps: self.halt_max_steps,
        }
    }
}

/// `hrm solve`.
pub fn solve_cmd(a: &SolveArgs) -> Result<()> {
    let puzzle = match &a.puzzle {
        SolveCommand::Sudoku { puzzle } => GridPuzzle::sudoku(puzzle)?,
        SolveCommand::Maze { file } => GridPuzzle::maze_file(file)?,
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
            return arc(a, task, data, *max_variants, *top, *batch_size);
        }
    };
    let ckpt = match a.checkpoint.as_deref() {
        Some(p) => resolve_checkpoint_for(p, Some(puzzle.tokens.len()))?,
        None => default_model(puzzle.default_model())?,
    };
    let device = crate::device::open_device(&a.device)?;
    let solution = solve_grid(&puzzle, &ckpt, &device, a.options())?;
    print_grid(puzzle.kind, &solution);
    write_report(a, serde_json::to_value(solution.report(&puzzle, &ckpt))?)
}

/// `--trace` and `--html`.
fn write_report(a: &SolveArgs, report: serde_json::Value) -> Result<()> {
    if let Some(f) = &a.trace {
        let text = serde_json::to_string_pretty(&report)?;
        hrm_data::fsio::write_atomic(f, text.as_bytes())
            .with_context(|| format!("--trace {}", f.display()))?;
        println!("trace: {}", f.display());
    }
    if let Some(f) = &a.html {
        hrm_data::fsio::write_atomic(f, report_page(&report)?.as_bytes())
            .with_context(|| format!("--html {}", f.display()))?;
        println!("page: {}", f.display());
    }
    Ok(())
}

/// The answer grid, the verdict and the segment line.
fn print_grid(kind: GridKind, s: &GridSolution) {
    let sep = match kind {
        GridKind::Sudoku => " ",
        GridKind::Maze => "",
    };
    for row in &s.rows {
        let cells: Vec<String> = row.iter().map(char::to_string).collect();
        println!("{}", cells.join(sep));
    }
    let v = &s.verdict;
    match &v.detail {
        Some(d) => println!("verified: {} ({d})", if v.ok { "yes" } else { "no" }),
        None => println!("verified: {}", if v.ok { "yes" } else { "no" }),
    }
    println!(
        "segments: {} (q_halt > q_continue first at segment {}), final q_halt {:.3} \
         (confidence {:.3}), {:.0} ms",
        s.segments,
        s.first_halt
            .map(|k| k.to_string())
            .unwrap_or_else(|| "never".into()),
        s.q_halt,
        s.confidence(),
        s.seconds * 1000.0
    );
}

/// `hrm solve arc`: the task's variants in the dataset run for the checkpoint's segments and
/// vote; prints the top answers of each test input.
fn arc(
    a: &SolveArgs,
    task_path: &Path,
    data: &Path,
    max_variants: Option<usize>,
    top: usize,
    batch_size: usize,
) -> Result<()> {
    for (flag, v) in [
        ("--batch-size", batch_size),
        ("--top", top),
        ("--max-variants", max_variants.unwrap_or(1)),
    ] {
        anyhow::ensure!(v > 0, "{flag} must be at least 1");
    }
    let task = ArcTask::load(task_path, data, max_variants)?;
    let ckpt = match a.checkpoint.as_deref() {
        Some(p) => resolve_checkpoint_for(p, Some(hrm_data::arc::SEQ_LEN))?,
        None => {
            bail!("ARC ships no default model: pass --checkpoint CKPT (a model trained on --data)")
        }
    };
    let device = crate::device::open_device(&a.device)?;
    let solution = solve_arc(&task, &ckpt, &device, a.options(), batch_size)?;
    print_arc(&task, &solution, top);
    write_report(a, serde_json::to_value(solution.report(&task, &ckpt))?)
}

/// A grid as rows of digits.
fn show(g: &Grid) -> String {
    g.to_rows()
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_arc(task: &ArcTask, s: &ArcSolution, top: usize) {
    let report = &s.report;
    println!(
        "task {}: {} test input(s), {} variant(s) each",
        task.task_id,
        task.tests.len(),
        task.variants.len()
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
    let yes = |k: usize| {
        if report.pass_at(k) == Some(1.0) {
            "yes"
        } else {
            "no"
        }
    };
    let solved = if report.scored_tasks == 1 {
        format!("solved: pass@1 {} | pass@2 {}", yes(1), yes(2))
    } else {
        "solved: unknown (no expected outputs)".to_string()
    };
    println!(
        "\n{solved} | segments: {} | {} rows in {:.0} ms",
        s.segments,
        s.rows,
        s.seconds * 1000.0
    );
}
