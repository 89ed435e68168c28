//! The Sudoku-Extreme builder: CSV (`source,question,answer,rating`) -> the reference's `.npy`.
//!
//! Mirrors sapientinc/HRM:dataset/build_sudoku_dataset.py (`shuffle_sudoku`, `convert_subset`,
//! `preprocess_data`); the dataset and its encoding are described in docs/data.md,
//! "Sudoku-Extreme". Per split:
//! * rows are read from `<input_dir>/{train,test}.csv`; `--min-difficulty N` keeps rows with
//!   `rating >= N`;
//! * train only: `--subsample-size N` keeps N rows chosen uniformly without replacement (in the
//!   random order of the draw, as `np.random.choice` returns them), and every kept board becomes
//!   a group of `1 + num_aug` puzzles: the original, then `num_aug` independent shuffles;
//! * test: every row, no augmentation, one puzzle per group;
//! * encoding: token = cell value + 1 (blank 1, digits 2..=10, PAD 0 unused), vocab 11,
//!   seq_len 81, ignore_label_id 0, one puzzle identifier 0 for everything, identifiers.json
//!   `["<blank>"]`, set name `all`.
//!
//! Unlike the reference (unseeded NumPy, bare asserts) the build is seeded (same seed =>
//! byte-identical output), every row is validated (81 characters, digits, a complete valid
//! answer that agrees with the question's givens) with errors naming file, line and column,
//! and the output appears atomically (see [`crate::format::StagingDir`]).
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::grid::{
    encode, is_valid_solution, parse_grid, shuffle_sudoku, Grid, SEQ_LEN, VOCAB_SIZE,
};
use crate::csv::CsvReader;
use crate::error::{require_dir, DataError, Result};
use crate::format::{write_identifiers, write_metadata, DatasetMetadata, SetWriter, StagingDir};
use crate::progress::Progress;
/// The CSV header of Sudoku-Extreme files.
pub const CSV_HEADER: [&str; 4] = ["source", "question", "answer", "rating"];
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudokuRow {
    /// The `source` column.
    pub source: String,
    /// The puzzle (0 = blank).
    pub question: Grid,
    /// Its solution.
    pub answer: Grid,
    /// The `rating` column.
    pub rating: u64,
}

/// Reads and validates a Sudoku-Extreme CSV. Rows with `rating < min_difficulty` are skipped
/// (after validation). `progress` counts bytes.
pub fn read_sudoku_csv(
    path: &Path,
    min_difficulty: Option<u64>,
    progress: Option<&Progress>,
) -> Result<Vec<SudokuRow>> {
    let mut reader = CsvReader::open(
        path,
        "the input folder must hold train.csv and test.csv in the Sudoku-Extreme format \
         (source,question,answer,rating); `hrm data sudoku-generate` writes such a folder",
    )?;
    reader.expect_header(&CSV_HEADER)?;
    let mut rows = Vec::new();
    let mut reported = 0;
    while let Some(rec) = reader.next_record()? {
        if let Some(p) = progress {
            p.inc(reader.bytes_read() - reported);
            reported = reader.bytes_read();
        }
        reader.expect_fields(&rec, 4)?;
        let err =
            |field: &str, msg: String| DataError::line(path, rec.line, format!("{field} {msg}"));
        let question = parse_grid(&rec.fields[1], true).map_err(|m| err("question", m))?;
        let answer = parse_grid(&rec.fields[2], false).map_err(|m| err("answer", m))?;
        if !is_valid_solution(&answer) {
            return Err(err(
                "answer",
                "is not a valid Sudoku solution (a row, column or box repeats a digit)".into(),
            ));
        }
        if let Some(c) = (0..81).find(|&c| question[c] != 0 && question[c] != answer[c]) {
            return Err(err(
                "answer",
                format!(
                    "disagrees with the question's given at character {} ({} vs {})",
                    c + 1,
                    question[c],
                    answer[c]
                ),
            ));
        }
        let rating_text = rec.fields[3].trim();
        let rating = rating_text
            .parse::<u64>()
            .or_else(|_| match rating_text.parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
                _ => Err(()),
            })
            .map_err(|_| {
                err(
                    "rating",
                    format!("is {rating_text:?}, expected a non-negative integer"),
                )
            })?;
        if min_difficulty.is_some_and(|m| rating < m) {
            continue;
        }
        rows.push(SudokuRow {
            source: rec.fields[0].clone(),
            question,
            answer,
            rating,
        });
    }
    if let Some(p) = progress {
        p.inc(reader.bytes_read() - reported);
    }
    Ok(rows)
}

/// Options of `hrm data sudoku` (the reference's `DataProcessConfig` plus seed and force).
#[derive(Debug, Clone, PartialEq)]
pub struct SudokuBuildOptions {
    /// Folder holding `train.csv` and `test.csv`.
    pub input_dir: PathBuf,
    /// Dataset folder to create.
    pub output_dir: PathBuf,
    /// Keep this many training rows (uniform without replacement); `None` = all.
    pub subsample_size: Option<usize>,
    /// Keep rows with `rating >= min_difficulty` (both splits, as in the reference).
    pub min_difficulty: Option<u32>,
    /// Augmented copies per training board.
    pub num_aug: usize,
    /// Seed of the subsample and the augmentations.
    pub seed: u64,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Counts of one built split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitReport {
    /// `train` or `test`.
    pub split: String,
    /// Valid rows read (after `--min-difficulty`).
    pub rows: usize,
    /// Groups written (= boards kept).
    pub groups: usize,
    /// Puzzles = examples written.
    pub examples: usize,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// The dataset folder.
    pub output_dir: PathBuf,
    /// Per split counts, train first.
    pub splits: Vec<SplitReport>,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for BuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wrote {}", self.output_dir.display())?;
        for s in &self.splits {
            writeln!(
                f,
                "  {:<5} rows {:>9}  groups {:>9}  examples {:>10}",
                s.split, s.rows, s.groups, s.examples
            )?;
        }
        write!(f, "  took {:.1} s", self.seconds)
    }
}

/// RNG streams of the builder (one per purpose, so changing `num_aug` does not change the
/// subsample).
const STREAM_SUBSAMPLE: u64 = 1;
const STREAM_AUGMENT: u64 = 2;

/// Writes one split; returns its report.
fn build_split(
    opts: &SudokuBuildOptions,
    staging: &Path,
    split: &str,
    csv: &Path,
) -> Result<SplitReport> {
    let size = std::fs::metadata(csv).map(|m| m.len()).unwrap_or(0);
    let read_progress = Progress::new(format!("sudoku {split}: reading {}", csv.display()), size);
    let mut rows = read_sudoku_csv(
        csv,
        opts.min_difficulty.map(u64::from),
        Some(&read_progress),
    )?;
    read_progress.finish();
    let n_read = rows.len();
    let is_train = split == "train";
    if is_train {
        if let Some(k) = opts.subsample_size {
            if k < rows.len() {
                // Uniform sample without replacement, in draw order (partial Fisher-Yates).
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                rng.set_stream(STREAM_SUBSAMPLE);
                for i in 0..k {
                    let j = rng.random_range(i..rows.len());
                    rows.swap(i, j);
                }
                rows.truncate(k);
            }
        }
    }
    if rows.is_empty() {
        let why = if opts.min_difficulty.is_some() {
            " after --min-difficulty"
        } else {
            ""
        };
        return Err(DataError::item(
            csv,
            "rows",
            format!("no puzzles left{why}"),
        ));
    }
    let num_aug = if is_train { opts.num_aug } else { 0 };
    let split_dir = staging.join(split);
    let mut w = SetWriter::create(&split_dir, "all", SEQ_LEN, VOCAB_SIZE)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(STREAM_AUGMENT);
    let progress = Progress::new(format!("sudoku {split}: writing groups"), rows.len() as u64);
    for row in &rows {
        // Group = the original board followed by its augmentations; one example per puzzle.
        for aug in 0..=num_aug {
            let (q, a) = if aug == 0 {
                (row.question, row.answer)
            } else {
                shuffle_sudoku(&row.question, &row.answer, &mut rng)
            };
            w.push_example(&encode(&q), &encode(&a))?;
            w.end_puzzle(0)?;
        }
        w.end_group()?;
        progress.inc(1);
    }
    let stats = w.finish()?;
    progress.finish();
    let metadata = DatasetMetadata {
        pad_id: 0,
        ignore_label_id: Some(0),
        blank_identifier_id: 0,
        vocab_size: VOCAB_SIZE,
        seq_len: SEQ_LEN,
        num_puzzle_identifiers: 1,
        total_groups: stats.groups,
        mean_puzzle_examples: 1.0,
        sets: vec!["all".to_string()],
    };
    write_metadata(&split_dir, &metadata)?;
    Ok(SplitReport {
        split: split.to_string(),
        rows: n_read,
        groups: stats.groups,
        examples: stats.examples,
    })
}

/// Builds a Sudoku dataset folder (train and test splits plus identifiers.json).
pub fn build_sudoku(opts: &SudokuBuildOptions) -> Result<BuildReport> {
    let start = Instant::now();
    require_dir(
        &opts.input_dir,
        "--input-dir must be a folder holding train.csv and test.csv",
    )?;
    let csvs: Vec<(&str, PathBuf)> = ["train", "test"]
        .iter()
        .map(|s| (*s, opts.input_dir.join(format!("{s}.csv"))))
        .collect();
    for (_, p) in &csvs {
        if !p.is_file() {
            return Err(DataError::not_found(
                p,
                "the input folder must hold train.csv and test.csv (header \
                 source,question,answer,rating)",
            ));
        }
    }
    let staging = StagingDir::create(&opts.output_dir, opts.force)?;
    let mut splits = Vec::new();
    for (split, csv) in &csvs {
        splits.push(build_split(opts, staging.path(), split, csv)?);
    }
    write_identifiers(staging.path(), &["<blank>".to_string()])?;
    let output_dir = staging.commit()?;
    Ok(BuildReport {
        output_dir,
        splits,
        seconds: start.elapsed().as_secs_f64(),
    })
}
