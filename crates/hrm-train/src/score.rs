//! Task-specific scoring of an evaluation (Sudoku validity, maze paths, ARC voting and pass@K)
//! and the whole `hrm eval` of a checkpoint: load, evaluate, score, report.
//!
//! Mirrors evaluate.py plus the ARC voting of arc_eval.ipynb; the loss head's metrics come from
//! [`crate::eval`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Device;
use hrm_data::arc::{test_cases_from_split, vote, write_submission, ArcPrediction, PASS_AT_K};
use hrm_data::format::{load_split, read_identifiers, SplitData};
use hrm_model::loss::LossType;
use serde::Serialize;

use crate::checkpoints::{load_for_inference, resolve_checkpoint};
use crate::config::saved_loss_type;
use crate::eval::{evaluate, EvalOptions, Predictions};

/// The puzzle family, for task-specific scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// 9x9 Sudoku: also counts predictions that are valid Sudokus agreeing with the givens.
    Sudoku,
    /// Maze: also the valid-and-optimal path rate (the paper's criterion).
    Maze,
    /// ARC: inverse augmentation, voting, pass@K and an ARC-Prize submission.
    Arc,
    /// Only the loss head's metrics.
    Generic,
}

/// The task a dataset holds, from its shape: 81 tokens / vocab 11 Sudoku, vocab 6 Maze,
/// 900 tokens / vocab 12 ARC, anything else generic.
pub fn detect_task(split: &SplitData) -> Task {
    let m = &split.metadata;
    match (m.seq_len, m.vocab_size) {
        (81, 11) => Task::Sudoku,
        (_, 6) => Task::Maze,
        (900, 12) => Task::Arc,
        _ => Task::Generic,
    }
}

/// Row `r` of a flat `[N * l]` token array.
fn row<T>(v: &[T], r: usize, l: usize) -> &[T] {
    &v[r * l..(r + 1) * l]
}

/// Tokens as bytes, out-of-range values clamped to 0..=255.
fn bytes(v: &[i32]) -> Vec<u8> {
    v.iter().map(|&x| x.clamp(0, 255) as u8).collect()
}

/// Sudoku scoring of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SudokuScore {
    /// Examples scored.
    pub examples: usize,
    /// Predictions that are complete valid Sudokus agreeing with the givens.
    pub valid_solutions: usize,
    /// `valid_solutions / examples`.
    pub valid_solution_rate: f64,
}

/// Count the valid Sudoku answers among the predictions (rows of 81 tokens only).
pub fn sudoku_score(p: &Predictions) -> SudokuScore {
    let l = p.seq_len;
    let n = p.segments.len();
    let valid = (0..n)
        .filter(|&r| l == 81 && sudoku_answer_ok(row(&p.inputs, r, l), row(&p.predictions, r, l)))
        .count();
    SudokuScore {
        examples: n,
        valid_solutions: valid,
        valid_solution_rate: valid as f64 / n.max(1) as f64,
    }
}

/// A predicted Sudoku (tokens 2..10 = digits) is a complete valid grid agreeing with the givens.
pub fn sudoku_answer_ok(input: &[i32], pred: &[i32]) -> bool {
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

/// Maze scoring of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MazeScore {
    /// Examples scored.
    pub examples: usize,
    /// Predictions that are one simple path from S to G that changes nothing else.
    pub valid_paths: usize,
    /// Valid paths as short as a shortest path.
    pub valid_and_optimal: usize,
    /// `valid_and_optimal / examples`.
    pub valid_and_optimal_rate: f64,
}

/// Check every predicted maze path against its question.
pub fn maze_score(p: &Predictions) -> MazeScore {
    let l = p.seq_len;
    let n = p.segments.len();
    let (mut valid, mut optimal) = (0, 0);
    for r in 0..n {
        let v = hrm_data::maze::check_path(
            &bytes(row(&p.inputs, r, l)),
            &bytes(row(&p.predictions, r, l)),
        );
        valid += v.valid as usize;
        optimal += v.optimal as usize;
    }
    MazeScore {
        examples: n,
        valid_paths: valid,
        valid_and_optimal: optimal,
        valid_and_optimal_rate: optimal as f64 / n.max(1) as f64,
    }
}

/// ARC scoring of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArcScore {
    /// Tasks whose every test input has a known answer.
    pub tasks_scored: usize,
    /// Test inputs ranked.
    pub test_inputs: usize,
    /// Predictions voted on.
    pub predictions: usize,
    /// `pass@K` -> fraction of the scored tasks solved within the top K, for
    /// [`PASS_AT_K`](hrm_data::arc::PASS_AT_K).
    pub pass: BTreeMap<String, f64>,
}

/// Vote over the predictions of an ARC test split (its dataset folder has the identifiers) and
/// score pass@K; with `submission`, also write an ARC-Prize submission there.
pub fn arc_score(
    p: &Predictions,
    split: &SplitData,
    submission: Option<&Path>,
) -> Result<ArcScore> {
    let ids = read_identifiers(&split.dataset_dir)?;
    let cases = test_cases_from_split(split, &ids)?;
    let l = p.seq_len;
    let preds: Vec<ArcPrediction> = (0..p.segments.len())
        .filter(|&r| p.puzzle_identifiers[r] > 0)
        .map(|r| ArcPrediction {
            puzzle_name: ids
                .get(p.puzzle_identifiers[r] as usize)
                .cloned()
                .unwrap_or_default(),
            input: row(&p.inputs, r, l).iter().map(|&x| x as u8).collect(),
            predicted: bytes(row(&p.predictions, r, l)),
            q_halt_logit: p.q_halt[r],
        })
        .collect();
    let report = vote(&cases, &preds, &PASS_AT_K)?;
    if let Some(path) = submission {
        write_submission(path, &report)?;
    }
    let pass = PASS_AT_K
        .iter()
        .filter_map(|&k| Some((format!("pass@{k}"), report.pass_at(k)?)))
        .collect();
    Ok(ArcScore {
        tasks_scored: report.scored_tasks,
        test_inputs: report.tests.len(),
        predictions: report.predictions,
        pass,
    })
}

/// Halting rule at evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Halting {
    /// Always run halt_max_steps segments (the reference's evaluation).
    Fixed,
    /// Stop a row at its first segment with q_halt > q_continue.
    Learned,
}

/// What `hrm eval` evaluates, and how.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// A model file, or a run folder (its newest checkpoint).
    pub checkpoint: PathBuf,
    /// The dataset folder; its `test` split is evaluated.
    pub data: PathBuf,
    /// Matrix products in bf16 on AMX (see [`load_for_inference`]).
    pub bf16: bool,
    /// LM loss of the loss metrics (default: the checkpoint's saved one, else stablemax).
    pub loss_type: Option<LossType>,
    /// Task-specific scoring (default: [`detect_task`]).
    pub task: Option<Task>,
    /// Halting rule.
    pub halting: Halting,
    /// Segments per example (default: the checkpoint's `halt_max_steps`).
    pub halt_max_steps: Option<usize>,
    /// Evaluate only the first N test examples.
    pub max_examples: Option<usize>,
    /// Examples per batch.
    pub batch_size: usize,
    /// ARC: write an ARC-Prize submission JSON here.
    pub submission: Option<PathBuf>,
}

/// The result of `hrm eval` (its JSON: [`EvalReport::to_json`]).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The checkpoint file evaluated.
    pub checkpoint: String,
    /// Its training step (checkpoint metadata), if recorded.
    pub step: Option<String>,
    /// The dataset folder.
    pub data: String,
    /// Segments per example.
    pub halt_max_steps: usize,
    /// Halting rule.
    pub halting: Halting,
    /// LM loss of the loss metrics.
    pub loss_type: LossType,
    /// Mean segments used per example.
    pub mean_segments: f64,
    /// Wall-clock seconds of the evaluation (not the loading).
    pub seconds: f64,
    /// Per set: the loss head's metrics.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Sudoku scoring, for Sudoku datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudoku: Option<SudokuScore>,
    /// Maze scoring, for maze datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maze: Option<MazeScore>,
    /// ARC scoring, for ARC datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arc: Option<ArcScore>,
}

impl EvalReport {
    /// The report as a JSON object (keys in alphabetical order).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

/// Evaluate a checkpoint on a dataset's test split on `device` and score it for its task.
pub fn evaluate_checkpoint(req: &EvalRequest, device: &Device) -> Result<EvalReport> {
    let checkpoint = resolve_checkpoint(&req.checkpoint)?;
    let loaded = load_for_inference(&checkpoint, device, req.bf16, |_| {})?;
    let engine = loaded.engine()?;
    let (model, meta) = (&loaded.model, &loaded.metadata);
    let loss_type = req
        .loss_type
        .or_else(|| saved_loss_type(meta))
        .unwrap_or(LossType::Stablemax);
    let split = Arc::new(load_split(&req.data, "test")?);
    let m = &split.metadata;
    if m.seq_len != model.cfg.seq_len || m.vocab_size != model.cfg.vocab_size {
        bail!(
            "{}: the test split has seq_len {} / vocab_size {} but the checkpoint {} was trained on \
             seq_len {} / vocab_size {}",
            req.data.display(),
            m.seq_len,
            m.vocab_size,
            checkpoint.display(),
            model.cfg.seq_len,
            model.cfg.vocab_size
        );
    }
    let task = req.task.unwrap_or_else(|| detect_task(&split));
    let opts = EvalOptions {
        halt_max_steps: req.halt_max_steps,
        learned_halting: req.halting == Halting::Learned,
        max_examples: req.max_examples,
        keep_predictions: task != Task::Generic,
        keep_logits: false,
    };
    let t0 = std::time::Instant::now();
    let ev = evaluate(&engine, split.clone(), req.batch_size, loss_type, &opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut report = EvalReport {
        checkpoint: checkpoint.display().to_string(),
        step: meta.get("step").cloned(),
        data: req.data.display().to_string(),
        halt_max_steps: req.halt_max_steps.unwrap_or(model.cfg.halt_max_steps),
        halting: req.halting,
        loss_type,
        mean_segments: ev.mean_segments,
        seconds,
        metrics: ev.metrics,
        sudoku: None,
        maze: None,
        arc: None,
    };
    if let Some(p) = &ev.predictions {
        match task {
            Task::Sudoku => report.sudoku = Some(sudoku_score(p)),
            Task::Maze => report.maze = Some(maze_score(p)),
            Task::Arc => report.arc = Some(arc_score(p, &split, req.submission.as_deref())?),
            Task::Generic => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudoku_answers_must_be_complete_valid_and_keep_the_givens() {
        let a = "534678912672195348198342567859761423426853791713924856961537284287419635345286179";
        let tokens = |s: &str| -> Vec<i32> {
            s.bytes()
                .map(|c| if c == b'.' { 1 } else { (c - b'0') as i32 + 1 })
                .collect()
        };
        let mut q = a.to_string();
        q.replace_range(0..1, ".");
        assert!(sudoku_answer_ok(&tokens(&q), &tokens(a)));
        // a blank in the answer
        assert!(!sudoku_answer_ok(&tokens(&q), &tokens(&q)));
        // two cells swapped: no longer a valid grid
        let mut wrong = tokens(a);
        wrong.swap(0, 1);
        assert!(!sudoku_answer_ok(&tokens(a), &wrong));
    }

    #[test]
    fn the_report_json_keeps_the_field_names() {
        let r = EvalReport {
            checkpoint: "c".into(),
            step: None,
            data: "d".into(),
            halt_max_steps: 2,
            halting: Halting::Learned,
            loss_type: LossType::Softmax,
            mean_segments: 1.5,
            seconds: 0.0,
            metrics: BTreeMap::new(),
            sudoku: Some(SudokuScore {
                examples: 2,
                valid_solutions: 1,
                valid_solution_rate: 0.5,
            }),
            maze: None,
            arc: None,
        };
        let v = r.to_json().unwrap();
        assert_eq!(v["halting"], "learned");
        assert_eq!(v["loss_type"], "softmax_cross_entropy");
        assert_eq!(v["step"], serde_json::Value::Null);
        assert_eq!(v["sudoku"]["valid_solution_rate"], 0.5);
        assert!(v.get("maze").is_none());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
