//! Solving one puzzle with a trained model (`hrm solve`, `hrm serve`): encode it, run the ACT
//! loop with its trace, decode and verify the answer; an ARC task runs all its variants in the
//! dataset and votes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hrm_data::arc::{
    crop, encode_grid, load_test_inputs, parse_puzzle_name, test_cases_from_split, vote,
    ArcPrediction, ArcTestCase, Augmentation, Grid, VoteReport, PASS_AT_K,
};
use hrm_data::format::{load_split, read_identifiers, IDENTIFIERS_FILE};
use hrm_data::Batch;
use hrm_model::loss::IGNORE_LABEL_ID;

use serde::Serialize;

use crate::checkpoints::{load_for_inference, InferenceModel, MAZE_MODEL, SUDOKU_MODEL};
use crate::score::sudoku_answer_ok;
use crate::trace::{trace_rollout, PuzzleTrace, SegmentTrace};

/// A batch of questions (`rows` of `seq_len` tokens, one puzzle identifier each) without labels.
fn question_batch(inputs: Vec<i32>, puzzle_identifiers: Vec<i32>, seq_len: usize) -> Batch {
    let rows = puzzle_identifiers.len();
    Batch {
        labels: vec![IGNORE_LABEL_ID; inputs.len()],
        inputs,
        puzzle_identifiers,
        batch_size: rows,
        seq_len,
        effective_size: rows,
        set_name: String::new(),
    }
}

/// How to run a model on a puzzle.
#[derive(Debug, Clone, Copy, Default)]
pub struct SolveOptions {
    /// Matrix products in bf16 on AMX (see [`load_for_inference`]).
    pub bf16: bool,
    /// Segments to run (default: the checkpoint's `halt_max_steps`).
    pub halt_max_steps: Option<usize>,
}

/// The kind of a grid puzzle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GridKind {
    /// A 9x9 Sudoku.
    Sudoku,
    /// An N x N maze.
    Maze,
}

impl GridKind {
    /// `sudoku` or `maze` (as the JSON of a report and `hrm serve`'s requests spell it).
    pub fn name(self) -> &'static str {
        match self {
            GridKind::Sudoku => "sudoku",
            GridKind::Maze => "maze",
        }
    }
}

/// A Sudoku or a maze, as the model's input tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridPuzzle {
    /// What it is.
    pub kind: GridKind,
    /// Input tokens, row by row (`side * side`).
    pub tokens: Vec<i32>,
    /// Cells per row.
    pub side: usize,
}

impl GridPuzzle {
    /// A Sudoku of 81 characters, digits and `.` or `0` for blanks.
    pub fn sudoku(text: &str) -> Result<GridPuzzle> {
        let g = hrm_data::sudoku::parse_grid(text.trim(), true)
            .map_err(|e| anyhow::anyhow!("sudoku puzzle: {e}"))?;
        Ok(GridPuzzle {
            kind: GridKind::Sudoku,
            tokens: hrm_data::sudoku::encode(&g)
                .iter()
                .map(|&t| t as i32)
                .collect(),
            side: 9,
        })
    }

    /// A maze file: N lines of N characters, `#` wall, ` ` open, `S` start, `G` goal (blank
    /// lines skipped; a row of another length is an error naming it).
    pub fn maze_file(file: &Path) -> Result<GridPuzzle> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        GridPuzzle::maze(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
    }

    /// A maze as text, in the layout of [`GridPuzzle::maze_file`].
    pub fn maze(text: &str) -> Result<GridPuzzle> {
        let grid = hrm_data::maze::MazeGrid::parse_rows(text).map_err(anyhow::Error::msg)?;
        hrm_data::maze::validate_question(&grid).map_err(anyhow::Error::msg)?;
        Ok(GridPuzzle::from_maze_grid(&grid))
    }

    fn from_maze_grid(grid: &hrm_data::maze::MazeGrid) -> GridPuzzle {
        GridPuzzle {
            kind: GridKind::Maze,
            tokens: grid.to_tokens().iter().map(|&t| t as i32).collect(),
            side: grid.side(),
        }
    }

    /// A random `side` x `side` maze of the generator's distribution for that size (the one
    /// `hrm data maze-generate --size SIDE` draws from), fixed by `seed`.
    pub fn random_maze(side: usize, seed: u64) -> Result<GridPuzzle> {
        let cfg = hrm_data::maze::MazeGenConfig::for_size(side, seed);
        let (mazes, _) = hrm_data::maze::generate_mazes(&cfg, 1, |_, _| {})?;
        let q = &mazes
            .first()
            .context("the maze generator returned no maze")?
            .question;
        Ok(GridPuzzle::from_maze_grid(q))
    }

    /// The puzzle's cells as rows of characters (`.` for a Sudoku blank).
    pub fn input_rows(&self) -> Vec<String> {
        self.decode(&self.tokens)
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&c| match (self.kind, c) {
                        (GridKind::Sudoku, '?') => '.',
                        _ => c,
                    })
                    .collect()
            })
            .collect()
    }

    /// The file name of the shipped model for this kind (see
    /// [`default_model`](crate::checkpoints::default_model)).
    pub fn default_model(&self) -> &'static str {
        match self.kind {
            GridKind::Sudoku => SUDOKU_MODEL,
            GridKind::Maze => MAZE_MODEL,
        }
    }

    /// The answer's cells as characters: Sudoku digits `1`..`9`, maze `# SGo`; `?` for a token
    /// that is none of them.
    pub fn decode(&self, pred: &[i32]) -> Vec<Vec<char>> {
        let cell = |t: i32| match self.kind {
            GridKind::Sudoku if (2..=10).contains(&t) => char::from(b'0' + (t - 1) as u8),
            GridKind::Sudoku => '?',
            GridKind::Maze => u8::try_from(t)
                .ok()
                .and_then(hrm_data::maze::Cell::from_token)
                .map_or('?', |c| c.to_char()),
        };
        pred.chunks(self.side)
            .take(self.side)
            .map(|r| r.iter().map(|&t| cell(t)).collect())
            .collect()
    }

    /// Whether `pred` solves the puzzle, and why (not).
    fn verify(&self, pred: &[i32]) -> Verdict {
        match self.kind {
            GridKind::Sudoku => {
                let ok = sudoku_answer_ok(&self.tokens, pred);
                let digit = |t: i32| (2..=10).contains(&t);
                let at = |i: usize| format!("cell ({}, {})", i / 9, i % 9);
                let detail = if ok {
                    "valid Sudoku, agrees with every given".to_string()
                } else if let Some(i) = pred.iter().position(|&t| !digit(t)) {
                    format!("{} is not a digit", at(i))
                } else if let Some(i) =
                    (0..pred.len()).find(|&i| digit(self.tokens[i]) && pred[i] != self.tokens[i])
                {
                    format!(
                        "{} changed from the given {} to {}",
                        at(i),
                        self.tokens[i] - 1,
                        pred[i] - 1
                    )
                } else {
                    "a row, column or box repeats a digit".to_string()
                };
                Verdict {
                    ok,
                    detail: Some(detail),
                }
            }
            GridKind::Maze => {
                let q: Vec<u8> = self.tokens.iter().map(|&t| t as u8).collect();
                let a: Vec<u8> = pred.iter().map(|&t| t.clamp(0, 255) as u8).collect();
                let v = hrm_data::maze::check_path(&q, &a);
                if v.optimal {
                    Verdict {
                        ok: true,
                        detail: Some(format!(
                            "valid path of {} moves, optimal",
                            v.length.unwrap_or(0)
                        )),
                    }
                } else {
                    Verdict {
                        ok: false,
                        detail: v.reason.map(|r| r.to_string()),
                    }
                }
            }
        }
    }
}

/// The check of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Sudoku: a complete valid grid keeping every given; maze: a valid and optimal path.
    pub ok: bool,
    /// What was found, when there is something to say.
    pub detail: Option<String>,
}

/// The model's answer to a grid puzzle.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSolution {
    /// The answer's cells, row by row (see [`GridPuzzle`]'s kinds for the characters).
    pub rows: Vec<Vec<char>>,
    /// Whether it solves the puzzle.
    pub verdict: Verdict,
    /// Segments run.
    pub segments: usize,
    /// The first segment (1-based) with q_halt > q_continue, if any.
    pub first_halt: Option<usize>,
    /// The final segment's q_halt logit.
    pub q_halt: f32,
    /// Seconds of the rollout (not the loading).
    pub seconds: f64,
    /// Every segment's answer, Q values and residuals.
    pub trace: PuzzleTrace,
}

impl GridSolution {
    /// sigmoid(q_halt): the model's confidence that it is done.
    pub fn confidence(&self) -> f32 {
        sigmoid(self.q_halt)
    }

    /// The solve as one document (`hrm solve --trace`, the page of `--html` and `hrm serve`).
    pub fn report(&self, puzzle: &GridPuzzle, checkpoint: &Path) -> GridReport {
        let rows = |cells: &[Vec<char>]| cells.iter().map(|r| r.iter().collect()).collect();
        GridReport {
            kind: puzzle.kind,
            side: puzzle.side,
            checkpoint: checkpoint.display().to_string(),
            input: puzzle.input_rows(),
            answer: rows(&self.rows),
            verdict: self.verdict.clone(),
            rollout: RolloutView::new(
                &self.trace,
                self.seconds,
                |s| rows(&puzzle.decode(&s.answer)),
                |s| puzzle.verify(&s.answer),
            ),
        }
    }
}

/// A grid puzzle's solve, as `hrm solve --trace` writes it and the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridReport {
    /// `sudoku` or `maze`.
    pub kind: GridKind,
    /// Cells per row.
    pub side: usize,
    /// The model file.
    pub checkpoint: String,
    /// The puzzle's rows (`.` a Sudoku blank; maze `# SG`).
    pub input: Vec<String>,
    /// The final answer's rows.
    pub answer: Vec<String>,
    /// Whether the final answer solves the puzzle.
    pub verdict: Verdict,
    /// The rollout, segment by segment.
    #[serde(flatten)]
    pub rollout: RolloutView,
}

/// One rollout as a report shows it (its fields sit beside the report's own in the JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutView {
    /// Segments run.
    pub segments: usize,
    /// The first segment (1-based) with q_halt > q_continue, if any.
    pub first_halt: Option<usize>,
    /// The final segment's q_halt logit.
    pub q_halt: f32,
    /// sigmoid(q_halt).
    pub confidence: f32,
    /// Seconds of the rollout(s).
    pub seconds: f64,
    /// Every segment's answer as rows (decoded `trace.segments[k].answer`).
    pub segment_answers: Vec<Vec<String>>,
    /// Whether each segment's answer solves the puzzle.
    pub segment_verdicts: Vec<Verdict>,
    /// The rollout's trace: per segment the answer tokens, the changed cells, q_halt,
    /// q_continue and the H / L residuals.
    pub trace: PuzzleTrace,
}

impl RolloutView {
    /// `trace` with each segment's answer decoded by `rows` and checked by `verify`.
    fn new(
        trace: &PuzzleTrace,
        seconds: f64,
        rows: impl Fn(&SegmentTrace) -> Vec<String>,
        verify: impl Fn(&SegmentTrace) -> Verdict,
    ) -> RolloutView {
        let q_halt = trace.segments.last().map_or(0.0, |s| s.q_halt);
        RolloutView {
            segments: trace.segments.len(),
            first_halt: trace.halted_at,
            q_halt,
            confidence: sigmoid(q_halt),
            seconds,
            segment_answers: trace.segments.iter().map(rows).collect(),
            segment_verdicts: trace.segments.iter().map(verify).collect(),
            trace: trace.clone(),
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A Sudoku or maze model loaded once for many solves (`hrm serve` shares one across requests:
/// each solve builds its own [`hrm_model::Engine`] on it).
#[derive(Debug)]
pub struct GridModel {
    /// The model file.
    pub path: PathBuf,
    /// The model and its kernels.
    pub loaded: InferenceModel,
}

impl GridModel {
    /// Load the model file `ckpt` on `device` for one puzzle at a time.
    pub fn load(ckpt: &Path, device: &Device, bf16: bool) -> Result<GridModel> {
        let loaded = load_for_inference(ckpt, device, bf16, |c| c.batch_size = 1)?;
        Ok(GridModel {
            path: ckpt.to_path_buf(),
            loaded,
        })
    }

    /// What the model solves, from its vocabulary (Sudoku 11 tokens, maze 6), and the side of
    /// its grids; None for anything else (e.g. ARC).
    pub fn kind(&self) -> Option<(GridKind, usize)> {
        let c = &self.loaded.model.cfg;
        let side = (1..=c.seq_len).find(|s| s * s >= c.seq_len)?;
        if side * side != c.seq_len {
            return None;
        }
        match c.vocab_size {
            hrm_data::sudoku::VOCAB_SIZE if side == 9 => Some((GridKind::Sudoku, 9)),
            hrm_data::maze::VOCAB_SIZE => Some((GridKind::Maze, side)),
            _ => None,
        }
    }

    /// The checkpoint's segments (`halt_max_steps`).
    pub fn default_segments(&self) -> usize {
        self.loaded.model.cfg.halt_max_steps
    }

    /// Solve `puzzle` for `segments` segments (default: the checkpoint's `halt_max_steps`).
    pub fn solve(&self, puzzle: &GridPuzzle, segments: Option<usize>) -> Result<GridSolution> {
        let engine = self.loaded.engine()?;
        let cfg = &self.loaded.model.cfg;
        let tokens = &puzzle.tokens;
        if tokens.len() != cfg.seq_len {
            bail!(
                "the puzzle has {} cells but the model {} was trained on {}",
                tokens.len(),
                self.path.display(),
                cfg.seq_len
            );
        }
        let batch = question_batch(tokens.clone(), vec![0], tokens.len());
        let segments = segments.unwrap_or(cfg.halt_max_steps);
        let t0 = std::time::Instant::now();
        let trace = trace_rollout(&engine, &batch, segments)?
            .pop()
            .context("the rollout traced no puzzle")?;
        let seconds = t0.elapsed().as_secs_f64();
        let last = trace.segments.last().context("no segment ran")?;
        Ok(GridSolution {
            rows: puzzle.decode(&last.answer),
            verdict: puzzle.verify(&last.answer),
            segments,
            first_halt: trace.halted_at,
            q_halt: last.q_halt,
            seconds,
            trace,
        })
    }
}

/// Solve a grid puzzle with the checkpoint `ckpt` (a model file) on `device`.
pub fn solve_grid(
    puzzle: &GridPuzzle,
    ckpt: &Path,
    device: &Device,
    opts: SolveOptions,
) -> Result<GridSolution> {
    GridModel::load(ckpt, device, opts.bf16)?.solve(puzzle, opts.halt_max_steps)
}

/// An ARC task and its variants (original and augmentations) in a dataset, each with its own
/// puzzle embedding.
#[derive(Debug, Clone)]
pub struct ArcTask {
    /// Where the task was read: its file, or the dataset's test split.
    pub path: PathBuf,
    /// The task id.
    pub task_id: String,
    /// Its test inputs, with their outputs when known.
    pub tests: Vec<(Grid, Option<Grid>)>,
    /// The dataset's puzzle identifiers (`identifiers.json`; 0 is the blank).
    pub identifiers: Vec<String>,
    /// The dataset's `identifiers.json`.
    pub identifiers_file: PathBuf,
    /// The task's variants: (puzzle identifier, augmentation).
    pub variants: Vec<(usize, Augmentation)>,
}

impl ArcTask {
    /// Read the task file and find its variants in the dataset folder `data` (at most
    /// `max_variants` of them).
    pub fn load(task_path: &Path, data: &Path, max_variants: Option<usize>) -> Result<ArcTask> {
        let (task_id, tests) = load_test_inputs(task_path)?;
        let identifiers = read_identifiers(data)?;
        ArcTask::new(task_path, task_id, tests, identifiers, data, max_variants)
    }

    /// The task `task_id` with `tests`, and its variants among the `identifiers` of the dataset
    /// folder `data` (at most `max_variants`).
    fn new(
        path: &Path,
        task_id: String,
        tests: Vec<(Grid, Option<Grid>)>,
        identifiers: Vec<String>,
        data: &Path,
        max_variants: Option<usize>,
    ) -> Result<ArcTask> {
        let identifiers_file = data.join(IDENTIFIERS_FILE);
        let variants: Vec<(usize, Augmentation)> = identifiers
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
                "{}: task `{}` is not in {}: HRM learns a puzzle embedding per task variant, so \
                 it solves only tasks whose demonstrations were in its training set (hint: build \
                 the dataset with this task's folder in --dataset-dirs or --eval-dirs)",
                path.display(),
                task_id,
                identifiers_file.display()
            );
        }
        Ok(ArcTask {
            path: path.to_path_buf(),
            task_id,
            tests,
            identifiers,
            identifiers_file,
            variants,
        })
    }
}

/// The tasks of a built ARC dataset's test split, solvable by id (`hrm serve --data`).
#[derive(Debug, Clone)]
pub struct ArcDataset {
    /// The dataset folder.
    pub dir: PathBuf,
    /// Its puzzle identifiers.
    pub identifiers: Vec<String>,
    /// The test inputs and outputs of its original (not augmented) tasks.
    pub cases: Vec<ArcTestCase>,
}

impl ArcDataset {
    /// Read the identifiers and the test split of the dataset folder `dir`.
    pub fn load(dir: &Path) -> Result<ArcDataset> {
        let identifiers = read_identifiers(dir)?;
        let split = load_split(dir, "test")?;
        let cases = test_cases_from_split(&split, &identifiers)?;
        Ok(ArcDataset {
            dir: dir.to_path_buf(),
            identifiers,
            cases,
        })
    }

    /// The task ids, in the split's order.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for c in &self.cases {
            if ids.last() != Some(&c.task_id) {
                ids.push(c.task_id.clone());
            }
        }
        ids
    }

    /// The task `task_id` with all its variants.
    pub fn task(&self, task_id: &str) -> Result<ArcTask> {
        let tests: Vec<(Grid, Option<Grid>)> = self
            .cases
            .iter()
            .filter(|c| c.task_id == task_id)
            .map(|c| (c.input.clone(), c.answer.clone()))
            .collect();
        let split = self.dir.join("test");
        if tests.is_empty() {
            bail!(
                "unknown ARC task `{task_id}`: the test split {} has {} task(s) ({})",
                split.display(),
                self.task_ids().len(),
                self.task_ids().join(", ")
            );
        }
        let ids = self.identifiers.clone();
        ArcTask::new(&split, task_id.to_string(), tests, ids, &self.dir, None)
    }
}

/// The voted answers to an ARC task.
#[derive(Debug, Clone)]
pub struct ArcSolution {
    /// Ranked answers per test input and the pass@K of [`PASS_AT_K`].
    pub report: VoteReport,
    /// Rows run (test inputs x variants).
    pub rows: usize,
    /// Segments run per row.
    pub segments: usize,
    /// Seconds of the rollouts (not the loading).
    pub seconds: f64,
    /// Per test input, the trace of the task's first variant (`ArcTask::variants[0]`).
    pub traces: Vec<PuzzleTrace>,
}

/// An ARC model loaded once for many tasks, run in batches of `batch_size` rows.
#[derive(Debug)]
pub struct ArcModel {
    /// The model file.
    pub path: PathBuf,
    /// The model and its kernels.
    pub loaded: InferenceModel,
    /// Rows per batch.
    pub batch_size: usize,
}

impl ArcModel {
    /// Load the model file `ckpt` on `device` for batches of `batch_size` rows.
    pub fn load(ckpt: &Path, device: &Device, bf16: bool, batch_size: usize) -> Result<ArcModel> {
        let loaded = load_for_inference(ckpt, device, bf16, |c| c.batch_size = batch_size)?;
        Ok(ArcModel {
            path: ckpt.to_path_buf(),
            loaded,
            batch_size,
        })
    }

    /// Whether the model is an ARC model (its sequence length and vocabulary).
    pub fn is_arc(cfg: &hrm_model::config::ModelConfig) -> bool {
        cfg.seq_len == hrm_data::arc::SEQ_LEN && cfg.vocab_size == hrm_data::arc::VOCAB_SIZE
    }

    /// Refuses a dataset whose identifiers are not the model's puzzle embeddings.
    pub fn check(&self, identifiers: &[String], identifiers_file: &Path) -> Result<()> {
        let c = &self.loaded.model.cfg;
        let (seq_len, vocab) = (hrm_data::arc::SEQ_LEN, hrm_data::arc::VOCAB_SIZE);
        if !ArcModel::is_arc(c) || c.num_puzzle_identifiers != identifiers.len() {
            bail!(
                "{}: the checkpoint has seq_len {}, vocab_size {} and {} puzzle identifiers, but \
                 ARC needs {seq_len} and {vocab}, and {} lists {} (hint: pass the dataset the \
                 model was trained on)",
                self.path.display(),
                c.seq_len,
                c.vocab_size,
                c.num_puzzle_identifiers,
                identifiers_file.display(),
                identifiers.len()
            );
        }
        Ok(())
    }

    /// Run every (test input, variant) of `task` for `segments` segments (default: the
    /// checkpoint's `halt_max_steps`); the answers are cropped, de-augmented and voted on
    /// (arc_eval.ipynb's ranking: votes, then mean confidence).
    pub fn solve(&self, task: &ArcTask, segments: Option<usize>) -> Result<ArcSolution> {
        self.check(&task.identifiers, &task.identifiers_file)?;
        let engine = self.loaded.engine()?;
        let seq_len = hrm_data::arc::SEQ_LEN;
        let ids = &task.identifiers;
        // one row per (test input, variant), in the test split's layout: the augmented input
        // at the top-left corner of the canvas
        let mut rows: Vec<(usize, Vec<u8>)> = Vec::new();
        for (ti, (input, _)) in task.tests.iter().enumerate() {
            for &(id, aug) in &task.variants {
                let tokens = encode_grid(&aug.apply(input), 0, 0).map_err(|e| {
                    anyhow::anyhow!("{}: test input {ti}: {e}", task.path.display())
                })?;
                rows.push((id, tokens));
            }
        }
        let segments = segments.unwrap_or(self.loaded.model.cfg.halt_max_steps);
        let t0 = std::time::Instant::now();
        let mut preds = Vec::with_capacity(rows.len());
        let mut traces = Vec::new();
        for (c, chunk) in rows.chunks(self.batch_size).enumerate() {
            let batch = question_batch(
                chunk
                    .iter()
                    .flat_map(|(_, t)| t.iter().map(|&x| x as i32))
                    .collect(),
                chunk.iter().map(|(id, _)| *id as i32).collect(),
                seq_len,
            );
            let chunk_traces = trace_rollout(&engine, &batch, segments)?;
            for (r, ((id, input), trace)) in chunk.iter().zip(chunk_traces).enumerate() {
                let last = trace.segments.last().context("no segment ran")?;
                preds.push(ArcPrediction {
                    puzzle_name: ids[*id].clone(),
                    input: input.clone(),
                    predicted: tokens_u8(&last.answer),
                    q_halt_logit: last.q_halt,
                });
                if (c * self.batch_size + r).is_multiple_of(task.variants.len()) {
                    traces.push(trace);
                }
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        let cases: Vec<ArcTestCase> = task
            .tests
            .iter()
            .enumerate()
            .map(|(i, (input, answer))| ArcTestCase {
                task_id: task.task_id.clone(),
                index: i,
                input: input.clone(),
                answer: answer.clone(),
            })
            .collect();
        let report = vote(&cases, &preds, &PASS_AT_K)
            .map_err(|e| anyhow::anyhow!("{}: {e}", task.path.display()))?;
        Ok(ArcSolution {
            report,
            rows: preds.len(),
            segments,
            seconds,
            traces,
        })
    }
}

fn tokens_u8(tokens: &[i32]) -> Vec<u8> {
    tokens.iter().map(|&x| x.clamp(0, 255) as u8).collect()
}

/// Run every (test input, variant) of `task` through the checkpoint `ckpt` on `device` in batches
/// of `batch_size` rows (see [`ArcModel::solve`]).
pub fn solve_arc(
    task: &ArcTask,
    ckpt: &Path,
    device: &Device,
    opts: SolveOptions,
    batch_size: usize,
) -> Result<ArcSolution> {
    ArcModel::load(ckpt, device, opts.bf16, batch_size)?.solve(task, opts.halt_max_steps)
}

/// An ARC grid as rows of color digits.
fn arc_rows(g: &Grid) -> Vec<String> {
    g.to_rows()
        .iter()
        .map(|r| r.iter().map(|&c| char::from(b'0' + c.min(9))).collect())
        .collect()
}

impl ArcSolution {
    /// The solve as one document (`hrm solve arc --trace/--html`, `hrm serve`): per test input
    /// the voted answers, and the rollout of the task's first variant segment by segment.
    pub fn report(&self, task: &ArcTask, checkpoint: &Path) -> ArcReport {
        let (_, aug) = task.variants[0];
        let tests = self
            .report
            .tests
            .iter()
            .zip(&self.traces)
            .map(|(t, trace)| {
                let expected = t.case.answer.as_ref();
                let unknown = || Verdict {
                    ok: false,
                    detail: Some("the expected output is unknown".into()),
                };
                let check = |g: &Grid| match expected {
                    None => unknown(),
                    Some(e) => Verdict {
                        ok: g == e,
                        detail: Some(
                            if g == e {
                                "the expected output"
                            } else {
                                "not the expected output"
                            }
                            .into(),
                        ),
                    },
                };
                let grid = |s: &SegmentTrace| aug.invert(&crop(&tokens_u8(&s.answer)));
                let grids: Vec<Grid> = trace.segments.iter().map(grid).collect();
                let mut prev = &t.case.input;
                let mut segment_changed = Vec::new();
                for g in &grids {
                    let same = (g.height(), g.width()) == (prev.height(), prev.width());
                    let cells = g.cells().iter().zip(prev.cells()).enumerate();
                    segment_changed.push(match same {
                        true => cells.filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect(),
                        false => (0..g.cells().len()).collect(),
                    });
                    prev = g;
                }
                let verdict = match (expected, t.correct_rank) {
                    (None, _) => unknown(),
                    (Some(_), Some(0)) => Verdict {
                        ok: true,
                        detail: Some("answer 1 is the expected output".into()),
                    },
                    (Some(_), Some(r)) => Verdict {
                        ok: false,
                        detail: Some(format!("the expected output is answer {}", r + 1)),
                    },
                    (Some(_), None) => Verdict {
                        ok: false,
                        detail: Some("the expected output is not among the answers".into()),
                    },
                };
                ArcTestReport {
                    kind: "arc",
                    index: t.case.index,
                    checkpoint: checkpoint.display().to_string(),
                    input: arc_rows(&t.case.input),
                    expected: expected.map(arc_rows),
                    answer: t
                        .ranked
                        .first()
                        .map(|a| arc_rows(&a.grid))
                        .unwrap_or_default(),
                    answers: t
                        .ranked
                        .iter()
                        .take(10)
                        .map(|a| ArcAnswer {
                            rows: arc_rows(&a.grid),
                            votes: a.votes,
                            mean_confidence: a.mean_confidence,
                        })
                        .collect(),
                    correct_rank: t.correct_rank,
                    verdict,
                    rollout: RolloutView::new(
                        trace,
                        self.seconds,
                        |s| arc_rows(&grid(s)),
                        |s| check(&grid(s)),
                    ),
                    segment_changed,
                }
            })
            .collect();
        ArcReport {
            kind: "arc-task",
            task_id: task.task_id.clone(),
            checkpoint: checkpoint.display().to_string(),
            variants: task.variants.len(),
            traced_variant: task.identifiers[task.variants[0].0].clone(),
            rows: self.rows,
            segments: self.segments,
            seconds: self.seconds,
            tests,
        }
    }
}

/// An ARC task's solve, as `hrm solve arc --trace` writes it and the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArcReport {
    /// `arc-task`.
    pub kind: &'static str,
    /// The task id.
    pub task_id: String,
    /// The model file.
    pub checkpoint: String,
    /// Variants run per test input.
    pub variants: usize,
    /// The puzzle name of the variant whose rollout is traced.
    pub traced_variant: String,
    /// Rows run.
    pub rows: usize,
    /// Segments run.
    pub segments: usize,
    /// Seconds of the rollouts.
    pub seconds: f64,
    /// Per test input.
    pub tests: Vec<ArcTestReport>,
}

/// One voted answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArcAnswer {
    /// Its rows of color digits.
    pub rows: Vec<String>,
    /// Variants that gave it.
    pub votes: usize,
    /// Their mean sigmoid(q_halt).
    pub mean_confidence: f64,
}

/// One test input of an ARC task: the voted answers and the traced variant's rollout (its grids
/// de-augmented and cropped), in the fields the page shows for every puzzle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArcTestReport {
    /// `arc`.
    pub kind: &'static str,
    /// Position among the task's test inputs.
    pub index: usize,
    /// The model file.
    pub checkpoint: String,
    /// The input grid's rows of color digits.
    pub input: Vec<String>,
    /// The expected output, when known.
    pub expected: Option<Vec<String>>,
    /// The top-voted answer.
    pub answer: Vec<String>,
    /// The top 10 answers, best first.
    pub answers: Vec<ArcAnswer>,
    /// 0-based rank of the expected output among all answers.
    pub correct_rank: Option<usize>,
    /// Whether answer 1 is the expected output.
    pub verdict: Verdict,
    /// The traced variant's rollout, its answers de-augmented and cropped (`trace` has the
    /// tokens on that variant's 30x30 canvas; `seconds` are those of all the task's rows).
    #[serde(flatten)]
    pub rollout: RolloutView,
    /// Cells of each segment's grid that differ from the previous one (segment 1: from the
    /// input; all of them when the size changed), row-major in that grid.
    pub segment_changed: Vec<Vec<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_answers_are_decoded_and_verified() {
        let s = "534678912672195348198342567859761423426853791713924856961537284287419635345286179";
        let mut q = s.to_string();
        q.replace_range(0..1, ".");
        let p = GridPuzzle::sudoku(&q).unwrap();
        assert_eq!(
            (p.kind, p.side, p.default_model()),
            (GridKind::Sudoku, 9, SUDOKU_MODEL)
        );
        let answer = GridPuzzle::sudoku(s).unwrap().tokens;
        assert_eq!(p.decode(&answer)[0].iter().collect::<String>(), "534678912");
        let v = p.verify(&answer);
        assert!(v.ok && v.detail.unwrap().contains("valid Sudoku"));
        let mut blank = answer.clone();
        blank[0] = 1;
        assert_eq!(p.decode(&blank)[0][0], '?');
        let not = |detail: &str| Verdict {
            ok: false,
            detail: Some(detail.to_string()),
        };
        assert_eq!(p.verify(&blank), not("cell (0, 0) is not a digit"));
        let mut given = answer.clone();
        given[1] = 2; // the given 3 made a 1
        assert_eq!(
            p.verify(&given),
            not("cell (0, 1) changed from the given 3 to 1")
        );
        let mut repeat = answer.clone();
        repeat[0] = 2; // the blank made a 1: row 0 has two
        assert_eq!(
            p.verify(&repeat),
            not("a row, column or box repeats a digit")
        );
        let e = GridPuzzle::sudoku("12").unwrap_err().to_string();
        assert!(e.starts_with("sudoku puzzle: "), "{e}");
    }

    #[test]
    fn maze_files_are_read_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.txt");
        std::fs::write(&file, "S  \n # \n\n  G\n").unwrap();
        let p = GridPuzzle::maze_file(&file).unwrap();
        assert_eq!((p.kind, p.side, p.tokens.len()), (GridKind::Maze, 3, 9));
        assert_eq!(p.default_model(), MAZE_MODEL);
        // decoding the question gives its drawing back; as an answer it marks no path
        let rows: Vec<String> = p
            .decode(&p.tokens)
            .iter()
            .map(|r| r.iter().collect())
            .collect();
        assert_eq!(rows, ["S  ", " # ", "  G"]);
        let v = p.verify(&p.tokens);
        assert!(!v.ok && v.detail.is_some(), "{v:?}");
        // nine cells in a ragged file: an error naming the row, not a reflowed maze
        std::fs::write(&file, "S  #\n \n  G\n").unwrap();
        let e = GridPuzzle::maze_file(&file).unwrap_err().to_string();
        assert!(e.contains("m.txt") && e.contains("row 1"), "{e}");
    }
}
