//! `hrm analyze`: how a checkpoint computes — the dimensionality of z_H and z_L (participation
//! ratio, trained against untrained), the convergence of every module call, adaptive compute
//! under learned halting and the inference-time scaling curve, and per-segment answers —
//! written as `analysis.json`, one PNG and one SVG per figure, and a self-contained
//! `report.html`.
//!
//! One rollout of `max_segments` segments per batch gives everything: the fixed budget k is
//! segment k's answer, learned halting at budget k the answer at min(halted_at, k).

pub mod figures;
pub mod pr;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hrm_data::format::{load_split, SplitData};
use hrm_data::sampler::TestIterator;
use hrm_model::{Engine, Hrm, ModelConfig};
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoints::{load_for_inference, resolve_checkpoint_for_dataset};
use crate::score::{detect_task, sudoku_answer_ok, Task};
use crate::trace::{record_rollout, PuzzleTrace, Recording};

/// What to analyse and where to write it.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// A checkpoint file or run folder.
    pub checkpoint: PathBuf,
    /// A dataset folder (its `test` split is analysed).
    pub data: PathBuf,
    /// The output folder (created).
    pub out: PathBuf,
    /// Analyse only the first N test examples (default 1,000).
    pub max_examples: usize,
    /// The largest inference budget (segments) of the scaling curve (default 32).
    pub max_segments: usize,
    /// Puzzles whose per-segment answers the report shows (default 4).
    pub show_puzzles: usize,
    /// Puzzles whose trajectories the PCA shows (default 16).
    pub pca_puzzles: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
}

impl AnalyzeOptions {
    /// The defaults for a checkpoint, a dataset and an output folder.
    pub fn new(checkpoint: PathBuf, data: PathBuf, out: PathBuf) -> Self {
        Self {
            checkpoint,
            data,
            out,
            max_examples: 1000,
            max_segments: 32,
            show_puzzles: 4,
            pca_puzzles: 16,
            batch_size: 256,
            progress: true,
        }
    }
}

/// The PR of z_H and z_L of one model under one pooling.
#[derive(Debug, Clone, Serialize)]
pub struct PrPair {
    /// PR of z_H.
    pub pr_h: f64,
    /// PR of z_L.
    pub pr_l: f64,
    /// pr_h / pr_l.
    pub ratio: f64,
}

impl PrPair {
    fn new(pr_h: f64, pr_l: f64) -> Self {
        Self {
            pr_h,
            pr_l,
            ratio: if pr_l > 0.0 { pr_h / pr_l } else { 0.0 },
        }
    }
}

/// PR of a trained and an untrained model under one pooling.
#[derive(Debug, Clone, Serialize)]
pub struct Pooled {
    /// What one sample is.
    pub samples: String,
    /// Samples pooled.
    pub count: usize,
    /// The checkpoint.
    pub trained: PrPair,
    /// A fresh model of the same config and seed.
    pub untrained: PrPair,
}

/// The saturation curve: PR of the first n puzzles (per-puzzle pooling).
#[derive(Debug, Clone, Serialize)]
pub struct Saturation {
    /// n, the trajectories included.
    pub trajectories: Vec<usize>,
    /// PR(z_H) of the checkpoint.
    pub trained_h: Vec<f64>,
    /// PR(z_L) of the checkpoint.
    pub trained_l: Vec<f64>,
    /// PR(z_H) of the untrained model.
    pub untrained_h: Vec<f64>,
    /// PR(z_L) of the untrained model.
    pub untrained_l: Vec<f64>,
}

/// The dimensionality analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Dimensionality {
    /// The states used: the carry after this segment (the checkpoint's own halt_max_steps,
    /// capped by the budget).
    pub after_segment: usize,
    /// Which positions are pooled.
    pub positions: String,
    /// One sample per puzzle: its whole state (answer positions x hidden size), flattened.
    pub per_puzzle: Pooled,
    /// One sample per (puzzle, answer position): a hidden-size vector.
    pub per_token: Pooled,
    /// PR against the number of puzzles (per-puzzle pooling).
    pub saturation: Saturation,
}

/// Mean and spread over puzzles of one quantity per call.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Mean over puzzles.
    pub mean: Vec<f64>,
    /// 10th percentile.
    pub p10: Vec<f64>,
    /// 90th percentile.
    pub p90: Vec<f64>,
}

/// A 2-D PCA of trajectories.
#[derive(Debug, Clone, Serialize)]
pub struct Pca {
    /// Fraction of the variance of PC1 and PC2.
    pub explained: Vec<f64>,
    /// Per puzzle, the (PC1, PC2) of every call's state, in call order.
    pub trajectories: Vec<Vec<[f64; 2]>>,
}

/// The convergence analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// Residual ||z_t - z_(t-1)|| / ||z_(t-1)|| of every H call of the rollout, over puzzles.
    pub residual_h: Spread,
    /// The same for every L call.
    pub residual_l: Spread,
    /// L calls per H call (L_cycles): L call i belongs to H call i / L_cycles.
    pub l_cycles: usize,
    /// H calls per segment (H_cycles).
    pub h_cycles: usize,
    /// PCA of z_H (mean over positions) after every H call.
    pub pca_h: Pca,
    /// PCA of z_L (mean over positions) after every L call.
    pub pca_l: Pca,
    /// What the PCA points are.
    pub pca_points: String,
}

/// Segments used and accuracy of puzzles of one difficulty.
#[derive(Debug, Clone, Serialize)]
pub struct DifficultyRow {
    /// The difficulty value.
    pub difficulty: usize,
    /// Puzzles with it.
    pub puzzles: usize,
    /// Mean segments under learned halting capped at the checkpoint's halt_max_steps.
    pub mean_segments: f64,
    /// Mean segments under learned halting capped at the largest budget.
    pub mean_segments_uncapped: f64,
    /// Puzzles that never halt within the largest budget.
    pub never_halted: usize,
    /// Accuracy at the checkpoint's own budget with learned halting.
    pub accuracy: f64,
}

/// The adaptive-compute and scaling analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Adaptive {
    /// What the difficulty is.
    pub difficulty_measure: String,
    /// By difficulty.
    pub by_difficulty: Vec<DifficultyRow>,
    /// Inference budgets (halt_max_steps): 1, 2, 4, ... max_segments.
    pub budgets: Vec<usize>,
    /// Accuracy when every puzzle runs the whole budget.
    pub accuracy_fixed: Vec<f64>,
    /// Accuracy with learned halting within the budget.
    pub accuracy_learned: Vec<f64>,
    /// Mean segments used with learned halting within the budget.
    pub mean_segments_learned: Vec<f64>,
    /// What "correct" means for this task.
    pub correct_means: String,
}

/// One puzzle's per-segment answers.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// Its index in the test split.
    pub index: usize,
    /// Input tokens.
    pub input: Vec<i32>,
    /// Label tokens.
    pub label: Vec<i32>,
    /// Whether the answer after each segment is correct.
    pub correct: Vec<bool>,
    /// The rollout.
    pub trace: PuzzleTrace,
}

/// Everything `analysis.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// The checkpoint analysed.
    pub checkpoint: String,
    /// The dataset.
    pub data: String,
    /// `sudoku`, `maze`, `arc` or `generic`.
    pub task: String,
    /// Test examples analysed.
    pub examples: usize,
    /// The checkpoint's model config.
    pub config: ModelConfig,
    /// The seed of the untrained model.
    pub untrained_seed: u64,
    /// The largest budget: segments of every rollout.
    pub max_segments: usize,
    /// Seconds of the whole analysis (loading to report).
    pub seconds: f64,
    /// Dimensionality.
    pub dimensionality: Dimensionality,
    /// Convergence.
    pub convergence: Convergence,
    /// Adaptive compute and scaling.
    pub adaptive: Adaptive,
    /// Per-segment answers of a few puzzles.
    pub per_segment: Vec<Example>,
    /// The figures written (file stems; each has a `.png` and a `.svg`).
    pub figures: Vec<String>,
}

/// The task name as `analysis.json` spells it.
fn task_name(t: Task) -> &'static str {
    match t {
        Task::Sudoku => "sudoku",
        Task::Maze => "maze",
        Task::Arc => "arc",
        Task::Generic => "generic",
    }
}

/// Tokens as bytes, out-of-range values clamped to 0..=255.
fn bytes(v: &[i32]) -> Vec<u8> {
    v.iter().map(|&x| x.clamp(0, 255) as u8).collect()
}

/// Whether `pred` answers the puzzle: Sudoku a complete valid grid keeping the givens, maze a
/// valid and optimal path, otherwise every labelled position equal to the label.
fn correct(task: Task, input: &[i32], label: &[i32], pred: &[i32]) -> bool {
    match task {
        Task::Sudoku if input.len() == 81 => sudoku_answer_ok(input, pred),
        Task::Maze => hrm_data::maze::check_path(&bytes(input), &bytes(pred)).optimal,
        _ => label
            .iter()
            .zip(pred)
            .all(|(&l, &p)| l == hrm_model::loss::IGNORE_LABEL_ID || l == p),
    }
}

/// The difficulty measure of a task and its value for one puzzle.
fn difficulty(task: Task, input: &[i32], label: &[i32]) -> usize {
    match task {
        // token 1 is a blank cell
        Task::Sudoku => input.iter().filter(|&&t| t == 1).count(),
        Task::Maze => hrm_data::maze::check_path(&bytes(input), &bytes(label))
            .shortest
            .unwrap_or(0),
        // colour tokens 2..=11 are grid cells (0 padding, 1 the end-of-row marker)
        Task::Arc => input.iter().filter(|&&t| t >= 2).count(),
        Task::Generic => input.iter().filter(|&&t| t != 0).count(),
    }
}

fn difficulty_measure(task: Task) -> &'static str {
    match task {
        Task::Sudoku => "blank cells",
        Task::Maze => "shortest-path length (moves)",
        Task::Arc => "input grid size (cells)",
        Task::Generic => "non-padding input tokens",
    }
}

/// The seed of the run that trained the checkpoint (its saved config's `seed`), else 0.
fn saved_seed(metadata: &std::collections::HashMap<String, String>) -> u64 {
    metadata
        .get("train_config")
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .and_then(|t| t.get("seed").and_then(|s| s.as_integer()))
        .map_or(0, |s| s as u64)
}

/// Answer-position states of the real rows of a `[B, S, D]` host buffer, appended to `out`
/// (`[rows, seq_len * D]`).
fn answer_states(z: &[f32], cfg: &ModelConfig, rows: usize, out: &mut Vec<f32>) {
    let (s, d, p, l) = (
        cfg.full_seq_len(),
        cfg.hidden_size,
        cfg.puzzle_emb_len(),
        cfg.seq_len,
    );
    for r in 0..rows {
        out.extend_from_slice(&z[(r * s + p) * d..(r * s + p + l) * d]);
    }
}

/// Percentiles and mean over the columns of `rows` (equal lengths).
fn spread(rows: &[Vec<f32>]) -> Spread {
    let k = rows.first().map_or(0, Vec::len);
    let mut s = Spread {
        mean: Vec::with_capacity(k),
        p10: Vec::with_capacity(k),
        p90: Vec::with_capacity(k),
    };
    for j in 0..k {
        let mut col: Vec<f64> = rows.iter().map(|r| r[j] as f64).collect();
        col.sort_by(f64::total_cmp);
        let q = |f: f64| col[((col.len() - 1) as f64 * f).round() as usize];
        s.mean.push(col.iter().sum::<f64>() / col.len() as f64);
        s.p10.push(q(0.1));
        s.p90.push(q(0.9));
    }
    s
}

/// A PCA of trajectories (one `[calls][D]` list per puzzle).
fn trajectory_pca(trajectories: &[Vec<Vec<f32>>], d: usize) -> Pca {
    let flat: Vec<f32> = trajectories.iter().flatten().flatten().copied().collect();
    if flat.is_empty() {
        return Pca {
            explained: vec![],
            trajectories: vec![],
        };
    }
    let (proj, explained) = pr::pca(&flat, d, 2);
    let mut it = proj.into_iter();
    let trajectories = trajectories
        .iter()
        .map(|t| {
            it.by_ref()
                .take(t.len())
                .map(|p| [p[0], p.get(1).copied().unwrap_or(0.0)])
                .collect()
        })
        .collect();
    Pca {
        explained,
        trajectories,
    }
}

/// Checks the dataset against the model; returns the test split.
fn open_data(data: &Path, ckpt: &Path, cfg: &ModelConfig) -> Result<Arc<SplitData>> {
    let split = load_split(data, "test")?;
    let m = &split.metadata;
    if m.seq_len != cfg.seq_len || m.vocab_size != cfg.vocab_size {
        bail!(
            "{}: the test split has seq_len {} / vocab_size {} but the checkpoint {} was trained on \
             seq_len {} / vocab_size {}; analyse it with a dataset built for that model",
            data.display(),
            m.seq_len,
            m.vocab_size,
            ckpt.display(),
            cfg.seq_len,
            cfg.vocab_size
        );
    }
    if split.num_examples() == 0 {
        bail!(
            "{}: the test split has no examples; build a dataset with test puzzles",
            data.display()
        );
    }
    Ok(Arc::new(split))
}

/// Per-puzzle results of the trained rollout that the analysis keeps.
struct Kept {
    difficulty: usize,
    halted_at: Option<usize>,
    /// Correct after segment k (index k - 1).
    correct: Vec<bool>,
    residual_h: Vec<f32>,
    residual_l: Vec<f32>,
}

/// Run the analysis and write `analysis.json`, the figures and `report.html` into `opts.out`.
pub fn analyze(opts: &AnalyzeOptions, device: &Device) -> Result<Analysis> {
    let t0 = std::time::Instant::now();
    if opts.max_examples == 0 || opts.max_segments == 0 || opts.batch_size == 0 {
        bail!("--max-examples, --max-segments and the batch size must be at least 1");
    }
    let ckpt = resolve_checkpoint_for_dataset(&opts.checkpoint, &opts.data)?;
    let bs = opts.batch_size;
    let loaded = load_for_inference(&ckpt, device, false, |c| c.batch_size = bs)?;
    let model = &loaded.model;
    let cfg = model.cfg.clone();
    if !cfg.has_z_l() {
        bail!(
            "{}: the analysis compares the two states z_H and z_L, and this model (arch {}) has \
             only z_H; `hrm solve --trace` shows its per-segment answers",
            ckpt.display(),
            cfg.arch.name()
        );
    }
    let split = open_data(&opts.data, &ckpt, &cfg)?;
    let task = detect_task(&split);
    let engine = loaded.engine()?;
    let seed = saved_seed(&loaded.metadata);
    let mut init = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // the trainer's stream for the initial weights
    init.set_stream(0);
    let fresh = Hrm::new(&cfg, device, &mut init)?;
    let fresh_engine = Engine::new(&fresh, loaded.kernels)?;

    let n = split.num_examples().min(opts.max_examples);
    let max_seg = opts.max_segments;
    let state_seg = cfg.halt_max_steps.min(max_seg);
    let (l, d) = (cfg.seq_len, cfg.hidden_size);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;

    let bar = if opts.progress {
        indicatif::ProgressBar::new(n as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "analyze {bar:30} {pos}/{len} puzzles [{elapsed_precise} < {eta_precise}]",
        )
        .map_err(|e| anyhow::anyhow!("progress style: {e}"))?,
    );

    let mut kept: Vec<Kept> = Vec::with_capacity(n);
    let mut examples: Vec<Example> = Vec::new();
    let (mut traj_h, mut traj_l) = (Vec::new(), Vec::new());
    let (mut trained_h, mut trained_l, mut fresh_h, mut fresh_l) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seen = 0usize;
    for batch in TestIterator::new(split.clone(), bs)? {
        if seen >= n {
            break;
        }
        let mut batch = batch;
        batch.effective_size = batch.effective_size.min(n - seen);
        let rows = batch.effective_size;
        let want_traj = traj_h.len() < opts.pca_puzzles;
        let rec: Recording = record_rollout(&engine, &batch, max_seg, want_traj, Some(state_seg))?;
        let (zh, zl) = rec.states.context("internal: no states recorded")?;
        answer_states(&zh, &cfg, rows, &mut trained_h);
        answer_states(&zl, &cfg, rows, &mut trained_l);
        let un = record_rollout(&fresh_engine, &batch, state_seg, false, Some(state_seg))?;
        let (uh, ul) = un.states.context("internal: no states recorded")?;
        answer_states(&uh, &cfg, rows, &mut fresh_h);
        answer_states(&ul, &cfg, rows, &mut fresh_l);
        if let (Some(th), Some(tl)) = (rec.trajectory_h, rec.trajectory_l) {
            let take = opts.pca_puzzles - traj_h.len();
            traj_h.extend(th.into_iter().take(take));
            traj_l.extend(tl.into_iter().take(take));
        }
        for (r, tr) in rec.traces.into_iter().enumerate() {
            let input = &batch.inputs[r * l..(r + 1) * l];
            let label = &batch.labels[r * l..(r + 1) * l];
            let ok: Vec<bool> = tr
                .segments
                .iter()
                .map(|s| correct(task, input, label, &s.answer))
                .collect();
            kept.push(Kept {
                difficulty: difficulty(task, input, label),
                halted_at: tr.halted_at,
                correct: ok.clone(),
                residual_h: tr
                    .segments
                    .iter()
                    .flat_map(|s| s.residual_h.clone())
                    .collect(),
                residual_l: tr
                    .segments
                    .iter()
                    .flat_map(|s| s.residual_l.clone())
                    .collect(),
            });
            if examples.len() < opts.show_puzzles {
                examples.push(Example {
                    index: seen + r,
                    input: input.to_vec(),
                    label: label.to_vec(),
                    correct: ok,
                    trace: tr,
                });
            }
        }
        seen += rows;
        bar.set_position(seen as u64);
    }
    bar.finish_and_clear();

    // dimensionality
    let feat = l * d;
    let counts = pr::curve_counts(seen);
    let per_puzzle = Pooled {
        samples: format!("one per puzzle: its {l} answer positions x {d} hidden units, flattened"),
        count: seen,
        trained: PrPair::new(
            pr::participation_ratio(&trained_h, feat),
            pr::participation_ratio(&trained_l, feat),
        ),
        untrained: PrPair::new(
            pr::participation_ratio(&fresh_h, feat),
            pr::participation_ratio(&fresh_l, feat),
        ),
    };
    let per_token = Pooled {
        samples: format!("one per (puzzle, answer position): a {d}-vector"),
        count: seen * l,
        trained: PrPair::new(
            pr::participation_ratio(&trained_h, d),
            pr::participation_ratio(&trained_l, d),
        ),
        untrained: PrPair::new(
            pr::participation_ratio(&fresh_h, d),
            pr::participation_ratio(&fresh_l, d),
        ),
    };
    let saturation = Saturation {
        trained_h: pr::pr_curve(&trained_h, feat, &counts),
        trained_l: pr::pr_curve(&trained_l, feat, &counts),
        untrained_h: pr::pr_curve(&fresh_h, feat, &counts),
        untrained_l: pr::pr_curve(&fresh_l, feat, &counts),
        trajectories: counts,
    };
    let dimensionality = Dimensionality {
        after_segment: state_seg,
        positions: format!(
            "the {l} answer positions (the {} puzzle-embedding positions left out) of the first \
             {seen} test examples, after segment {state_seg}",
            cfg.puzzle_emb_len()
        ),
        per_puzzle,
        per_token,
        saturation,
    };

    // convergence
    let convergence = Convergence {
        residual_h: spread(
            &kept
                .iter()
                .map(|k| k.residual_h.clone())
                .collect::<Vec<_>>(),
        ),
        residual_l: spread(
            &kept
                .iter()
                .map(|k| k.residual_l.clone())
                .collect::<Vec<_>>(),
        ),
        l_cycles: cfg.l_cycles,
        h_cycles: cfg.h_cycles,
        pca_h: trajectory_pca(&traj_h, d),
        pca_l: trajectory_pca(&traj_l, d),
        pca_points: format!(
            "the mean over positions of z_H (z_L) after every H (L) call of the {max_seg}-segment \
             rollout, for the first {} test puzzles; one PCA per module over all their points",
            traj_h.len()
        ),
    };

    // adaptive compute
    let budgets: Vec<usize> = std::iter::successors(Some(1usize), |&b| Some(b * 2))
        .take_while(|&b| b < max_seg)
        .chain(std::iter::once(max_seg))
        .collect();
    let stop = |k: &Kept, budget: usize| k.halted_at.map_or(budget, |h| h.min(budget));
    let frac = |c: usize| c as f64 / seen.max(1) as f64;
    let accuracy_fixed = budgets
        .iter()
        .map(|&b| frac(kept.iter().filter(|k| k.correct[b - 1]).count()))
        .collect();
    let accuracy_learned = budgets
        .iter()
        .map(|&b| frac(kept.iter().filter(|k| k.correct[stop(k, b) - 1]).count()))
        .collect();
    let mean_segments_learned = budgets
        .iter()
        .map(|&b| kept.iter().map(|k| stop(k, b)).sum::<usize>() as f64 / seen.max(1) as f64)
        .collect();
    let mut levels: Vec<usize> = kept.iter().map(|k| k.difficulty).collect();
    levels.sort_unstable();
    levels.dedup();
    let own = state_seg;
    let by_difficulty = levels
        .into_iter()
        .map(|lv| {
            let g: Vec<&Kept> = kept.iter().filter(|k| k.difficulty == lv).collect();
            let m = g.len() as f64;
            DifficultyRow {
                difficulty: lv,
                puzzles: g.len(),
                mean_segments: g.iter().map(|k| stop(k, own)).sum::<usize>() as f64 / m,
                mean_segments_uncapped: g.iter().map(|k| stop(k, max_seg)).sum::<usize>() as f64
                    / m,
                never_halted: g.iter().filter(|k| k.halted_at.is_none()).count(),
                accuracy: g.iter().filter(|k| k.correct[stop(k, own) - 1]).count() as f64 / m,
            }
        })
        .collect();
    let adaptive = Adaptive {
        difficulty_measure: difficulty_measure(task).to_string(),
        by_difficulty,
        budgets,
        accuracy_fixed,
        accuracy_learned,
        mean_segments_learned,
        correct_means: match task {
            Task::Sudoku => "a complete valid Sudoku keeping every given",
            Task::Maze => "a valid and optimal path",
            _ => "every labelled position equal to the label",
        }
        .to_string(),
    };

    let mut analysis = Analysis {
        checkpoint: ckpt.display().to_string(),
        data: opts.data.display().to_string(),
        task: task_name(task).to_string(),
        examples: seen,
        config: cfg,
        untrained_seed: seed,
        max_segments: max_seg,
        seconds: 0.0,
        dimensionality,
        convergence,
        adaptive,
        per_segment: examples,
        figures: Vec::new(),
    };
    let figs = figures::all(&analysis)?;
    for f in &figs {
        f.write(&opts.out)?;
    }
    analysis.figures = figs.iter().map(|f| f.name.clone()).collect();
    analysis.seconds = t0.elapsed().as_secs_f64();
    let json = opts.out.join("analysis.json");
    hrm_data::fsio::write_atomic(&json, serde_json::to_string_pretty(&analysis)?.as_bytes())
        .with_context(|| format!("writing {}", json.display()))?;
    let html = opts.out.join("report.html");
    hrm_data::fsio::write_atomic(&html, report::html(&analysis, &figs).as_bytes())
        .with_context(|| format!("writing {}", html.display()))?;
    Ok(analysis)
}
