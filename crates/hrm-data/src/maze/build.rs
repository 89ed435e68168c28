//! The Maze builder: a Maze-Hard CSV folder -> a dataset folder (dataset/build_maze_dataset.py).

use std::collections::BTreeMap;
use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::check::check_path_grids;
use super::files::{read_maze_csv, MazeRecord, CSV_HINT};
use super::grid::{PAD_ID, VOCAB_SIZE};
use crate::dihedral::Dihedral;
use crate::error::{DataError, Result};
/// Options of `hrm data maze`.
#[derive(Clone, Debug)]
pub struct MazeBuildOptions {
    /// Folder holding `train.csv` and `test.csv`.
    pub input_dir: std::path::PathBuf,
    /// Dataset folder to create.
    pub output_dir: std::path::PathBuf,
    /// Add the 8 dihedral variants of every TRAIN maze as puzzles of one group (reference
    /// `--aug`, off by default and in the paper). The test split is never augmented.
    pub aug: bool,
    /// Keep a seeded random subset of this many train mazes (in file order).
    pub subsample_size: Option<usize>,
    /// Seed of the subsample draw.
    pub seed: u64,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Counts of one written split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeSplitReport {
    /// Mazes read (after subsampling).
    pub mazes: usize,
    /// Puzzles written (mazes x 8 with `--aug` on train).
    pub puzzles: usize,
    /// Examples written (= puzzles).
    pub examples: usize,
    /// Groups written (= mazes).
    pub groups: usize,
    /// Labels that [`check_path_grids`] finds valid and optimal.
    pub optimal_labels: usize,
    /// Histogram of shortest-path lengths (moves -> mazes).
    pub path_lengths: BTreeMap<usize, usize>,
}

/// What [`build_maze`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MazeBuildReport {
    /// The dataset folder.
    pub output_dir: std::path::PathBuf,
    /// Grid side `N` (`seq_len = N*N`).
    pub side: usize,
    /// The train split.
    pub train: MazeSplitReport,
    /// The test split.
    pub test: MazeSplitReport,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// `min / median / max` of a length histogram.
pub(super) fn histogram_summary(h: &BTreeMap<usize, usize>) -> String {
    let total: usize = h.values().sum();
    let (Some(min), Some(max)) = (h.keys().next(), h.keys().next_back()) else {
        return "none".to_string();
    };
    let mut seen = 0;
    let median = h
        .iter()
        .find(|(_, &c)| {
            seen += c;
            2 * seen >= total
        })
        .map_or(*min, |(&l, _)| l);
    format!("min {min}, median {median}, max {max}")
}

impl fmt::Display for MazeBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} ({1}x{1} mazes)",
            self.output_dir.display(),
            self.side
        )?;
        for (name, s) in [("train", &self.train), ("test", &self.test)] {
            writeln!(
                f,
                "  {name:<5} mazes {:>7}  puzzles {:>7}  groups {:>7}  labels valid+optimal \
                 {}/{}  path length {}",
                s.mazes,
                s.puzzles,
                s.groups,
                s.optimal_labels,
                s.mazes,
                histogram_summary(&s.path_lengths)
            )?;
        }
        write!(f, "  took {:.1} s", self.seconds)
    }
}

/// Builds a Maze dataset folder from Maze-Hard CSVs (docs/data.md, "Maze-Hard"): tokens
/// `# SGo` -> 1..5, `seq_len = N*N`, vocab 6, PAD 0 = ignore label, one puzzle identifier (0) for
/// everything, `identifiers.json = ["<blank>"]`. Each maze is one group; with `aug` a train group
/// holds the 8 dihedral variants (ids 0..8 in order) as separate puzzles. Written atomically.
pub fn build_maze(opts: &MazeBuildOptions) -> Result<MazeBuildReport> {
    crate::error::require_dir(&opts.input_dir, CSV_HINT)?;
    if opts.subsample_size == Some(0) {
        return Err(DataError::option("--subsample-size", "must be at least 1"));
    }
    let t0 = std::time::Instant::now();
    let staging = crate::format::StagingDir::create(&opts.output_dir, opts.force)?;
    let mut side = None;
    let mut reports = Vec::new();
    for split in ["train", "test"] {
        let path = opts.input_dir.join(format!("{split}.csv"));
        let mut rows = read_maze_csv(&path)?;
        let n = rows[0].question.side();
        match side {
            None => side = Some(n),
            Some(s) if s != n => {
                return Err(DataError::line(
                    &path,
                    rows[0].line,
                    format!("mazes are {n}x{n} but train.csv has {s}x{s}"),
                ))
            }
            Some(_) => {}
        }
        if split == "train" {
            if let Some(k) = opts.subsample_size.filter(|&k| k < rows.len()) {
                // Seeded draw without replacement; kept in file order (the reference keeps
                // NumPy's unseeded draw order, which the sampler shuffles anyway).
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                let mut keep = rand::seq::index::sample(&mut rng, rows.len(), k).into_vec();
                keep.sort_unstable();
                rows = keep.into_iter().map(|i| rows[i].clone()).collect();
            }
        }
        let variants: &[Dihedral] = if split == "train" && opts.aug {
            &Dihedral::ALL
        } else {
            &[Dihedral::Identity]
        };
        reports.push(write_maze_split(staging.path(), split, &rows, variants)?);
    }
    crate::format::write_identifiers(
        staging.path(),
        &[crate::format::BLANK_IDENTIFIER.to_string()],
    )?;
    let output_dir = staging.commit()?;
    let test = reports
        .pop()
        .ok_or_else(|| DataError::option("--input-dir", "internal"))?;
    let train = reports
        .pop()
        .ok_or_else(|| DataError::option("--input-dir", "internal"))?;
    Ok(MazeBuildReport {
        output_dir,
        side: side.unwrap_or(0),
        train,
        test,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes one split: one group per maze, one puzzle (and example) per variant.
fn write_maze_split(
    dataset_dir: &std::path::Path,
    split: &str,
    rows: &[MazeRecord],
    variants: &[Dihedral],
) -> Result<MazeSplitReport> {
    let n = rows[0].question.side();
    let split_dir = dataset_dir.join(split);
    let mut writer = crate::format::SetWriter::create(&split_dir, "all", n * n, VOCAB_SIZE)?;
    let progress = crate::progress::Progress::new(format!("maze {split}"), rows.len() as u64);
    let mut optimal_labels = 0;
    let mut path_lengths = BTreeMap::new();
    for row in rows {
        let verdict = check_path_grids(&row.question, &row.answer);
        optimal_labels += usize::from(verdict.optimal);
        if let Some(l) = verdict.shortest {
            *path_lengths.entry(l).or_insert(0) += 1;
        }
        for &t in variants {
            writer.push_example(
                &row.question.transformed(t).to_tokens(),
                &row.answer.transformed(t).to_tokens(),
            )?;
            writer.end_puzzle(0)?;
        }
        writer.end_group()?;
        progress.inc(1);
    }
    progress.finish();
    let stats = writer.finish()?;
    let metadata = crate::format::DatasetMetadata {
        pad_id: i64::from(PAD_ID),
        ignore_label_id: Some(i64::from(PAD_ID)),
        blank_identifier_id: 0,
        vocab_size: VOCAB_SIZE,
        seq_len: n * n,
        num_puzzle_identifiers: 1,
        total_groups: stats.groups,
        // One example per puzzle, as the reference writes it.
        mean_puzzle_examples: 1.0,
        sets: vec!["all".to_string()],
    };
    crate::format::write_metadata(&split_dir, &metadata)?;
    Ok(MazeSplitReport {
        mazes: rows.len(),
        puzzles: stats.puzzles,
        examples: stats.examples,
        groups: stats.groups,
        optimal_labels,
        path_lengths,
    })
}
