//! The generator front end: `hrm data maze-generate` writes Maze-Hard-format CSVs.

use std::collections::BTreeMap;
use std::fmt;

use super::build::histogram_summary;
use super::files::{CSV_HEADER, GENERATED_SOURCE};
use super::generator::{
    generate_mazes, path_length_histogram, GenerationStats, GoalSampling, MazeGenConfig,
};
use crate::error::{DataError, Result};
impl std::str::FromStr for GoalSampling {
    type Err = String;

    /// `exact` or `far-goal`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exact" => Ok(GoalSampling::Exact),
            "far-goal" => Ok(GoalSampling::FarGoal),
            _ => Err(format!(
                "unknown goal sampling {s:?} (expected `exact` or `far-goal`)"
            )),
        }
    }
}

impl fmt::Display for GoalSampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GoalSampling::Exact => "exact",
            GoalSampling::FarGoal => "far-goal",
        })
    }
}

/// Options of `hrm data maze-generate`.
#[derive(Clone, Debug)]
pub struct MazeGenerateOptions {
    /// Folder to create with `train.csv`, `test.csv` and `generation.json`.
    pub output_dir: std::path::PathBuf,
    /// Master seed.
    pub seed: u64,
    /// Grid side (default 30).
    pub size: usize,
    /// Mazes in `train.csv` (default 1000).
    pub train_count: usize,
    /// Mazes in `test.csv` (default 1000).
    pub test_count: usize,
    /// Override of the fewest walls (default `floor(size²/10)·3`).
    pub min_walls: Option<usize>,
    /// Override of the most walls (default `floor(size²/10)·5`).
    pub max_walls: Option<usize>,
    /// Override of the path bound (accept `L > min_path`; default 110 scaled by cells).
    pub min_path: Option<usize>,
    /// Goal sampling (default exact).
    pub sampling: GoalSampling,
    /// Give up after this many candidates (default 2e10).
    pub max_candidates: Option<u64>,
    /// Replace an existing output folder.
    pub force: bool,
}

impl MazeGenerateOptions {
    /// The generator configuration these options resolve to.
    pub fn config(&self) -> MazeGenConfig {
        let d = MazeGenConfig::for_size(self.size, self.seed);
        MazeGenConfig {
            min_walls: self.min_walls.unwrap_or(d.min_walls),
            max_walls: self.max_walls.unwrap_or(d.max_walls),
            min_path: self.min_path.unwrap_or(d.min_path),
            sampling: self.sampling,
            max_candidates: self.max_candidates.unwrap_or(d.max_candidates),
            ..d
        }
    }
}

/// What [`generate_maze_csvs`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MazeGenerateReport {
    /// The folder written.
    pub output_dir: std::path::PathBuf,
    /// The resolved configuration.
    pub config: MazeGenConfig,
    /// Rows of `train.csv`.
    pub train: usize,
    /// Rows of `test.csv`.
    pub test: usize,
    /// Candidate counters.
    pub stats: GenerationStats,
    /// Wall-clock seconds of the generation.
    pub seconds: f64,
    /// Shortest-path lengths of all mazes (moves -> count).
    pub path_lengths: BTreeMap<usize, usize>,
}

impl fmt::Display for MazeGenerateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "wrote {}: train.csv {} mazes, test.csv {} mazes, generation.json",
            self.output_dir.display(),
            self.train,
            self.test
        )?;
        writeln!(
            f,
            "  {0}x{0}, walls {1}..={2}, accepted L > {3}, goal sampling {4}, seed {5}",
            c.size, c.min_walls, c.max_walls, c.min_path, c.sampling, c.seed
        )?;
        let per_maze = self.stats.candidates as f64 / (self.train + self.test).max(1) as f64;
        writeln!(
            f,
            "  {} candidates ({per_maze:.0} per maze), {} duplicate layouts dropped, {:.1} s",
            self.stats.candidates, self.stats.duplicate_layouts, self.seconds
        )?;
        let hist: Vec<String> = self
            .path_lengths
            .iter()
            .map(|(l, n)| format!("{l}:{n}"))
            .collect();
        write!(
            f,
            "  path lengths ({}): {}",
            histogram_summary(&self.path_lengths),
            hist.join(" ")
        )
    }
}

/// Generates `train_count + test_count` mazes with [`generate_mazes`] and writes them as
/// Maze-Hard CSVs (`source` = `hrm-maze-generate`, `rating` = `L`): the first `train_count`
/// accepted mazes (in candidate order) are train, the rest test; no wall layout is shared.
/// Also writes `generation.json` (configuration, counters, histogram). Written atomically.
pub fn generate_maze_csvs(opts: &MazeGenerateOptions) -> Result<MazeGenerateReport> {
    let cfg = opts.config();
    cfg.validate()?;
    if opts.train_count == 0 || opts.test_count == 0 {
        return Err(DataError::option(
            "--train-count/--test-count",
            "must be at least 1",
        ));
    }
    let staging = crate::format::StagingDir::create(&opts.output_dir, opts.force)?;
    let total = opts.train_count + opts.test_count;
    let progress = crate::progress::Progress::new("maze-generate", total as u64);
    let t0 = std::time::Instant::now();
    let mut shown = 0;
    let (mazes, stats) = generate_mazes(&cfg, total, |accepted, _| {
        progress.inc((accepted - shown) as u64);
        shown = accepted;
    })?;
    progress.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let (train, test) = mazes.split_at(opts.train_count);
    for (name, part) in [("train.csv", train), ("test.csv", test)] {
        let path = staging.path().join(name);
        let mut w = crate::csv::CsvWriter::create(&path)?;
        w.write_record(&CSV_HEADER)?;
        for m in part {
            let rating = m.shortest.to_string();
            let fields = [
                GENERATED_SOURCE,
                &m.question.to_text(),
                &m.answer.to_text(),
                &rating,
            ];
            w.write_record(&fields)?;
        }
        w.finish()?;
    }
    let path_lengths = path_length_histogram(&mazes);
    let histogram_json: serde_json::Map<String, serde_json::Value> = path_lengths
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let info = serde_json::json!({
        "generator": "hrm data maze-generate (random walls, BFS, shortest path > min_path)",
        "tie_break": "BFS from G; walk from S to the first neighbour (up, down, left, right) \
                      one move closer to G",
        "size": cfg.size,
        "min_walls": cfg.min_walls,
        "max_walls": cfg.max_walls,
        "min_path": cfg.min_path,
        "sampling": cfg.sampling.to_string(),
        "seed": cfg.seed,
        "train": train.len(),
        "test": test.len(),
        "candidates": stats.candidates,
        "duplicate_layouts": stats.duplicate_layouts,
        "path_lengths": histogram_json,
    });
    let info_path = staging.path().join("generation.json");
    let text = serde_json::to_string_pretty(&info).map_err(|e| DataError::Json {
        path: info_path.clone(),
        err: e,
    })?;
    std::fs::write(&info_path, text + "\n").map_err(|e| DataError::io(&info_path, e))?;
    let output_dir = staging.commit()?;
    Ok(MazeGenerateReport {
        output_dir,
        config: cfg,
        train: train.len(),
        test: test.len(),
        stats,
        seconds,
        path_lengths,
    })
}
