//! Sudoku-Extreme dataset builder: CSV (`source,question,answer,rating`) -> the reference's
//! `.npy` layout, with the reference's validity-preserving shuffle augmentation.
//!
//! Mirrors sapientinc/HRM:dataset/build_sudoku_dataset.py (`shuffle_sudoku`, `convert_subset`,
//! `preprocess_data`); spec §5.2. Per split:
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

use crate::csv::CsvReader;
use crate::error::{require_dir, DataError, Result};
use crate::format::{write_identifiers, write_metadata, DatasetMetadata, SetWriter, StagingDir};
use crate::progress::Progress;

/// The CSV header of Sudoku-Extreme files.
pub const CSV_HEADER: [&str; 4] = ["source", "question", "answer", "rating"];
/// Tokens per board.
pub const SEQ_LEN: usize = 81;
/// Vocabulary: PAD 0, blank 1, digits 1..9 -> 2..10.
pub const VOCAB_SIZE: usize = 11;

/// A 9x9 board, row-major, values 0..=9 (0 = blank).
pub type Grid = [u8; 81];

/// Parses an 81-character board. `.` (and `0`) are blanks when `allow_blank`; otherwise every
/// cell must be a digit 1..9. The error message names the offending column (1-based).
pub fn parse_grid(s: &str, allow_blank: bool) -> std::result::Result<Grid, String> {
    let n = s.chars().count();
    if n != 81 {
        return Err(format!("has {n} characters, expected 81"));
    }
    let mut g = [0u8; 81];
    for (i, ch) in s.chars().enumerate() {
        g[i] = match ch {
            '1'..='9' => ch as u8 - b'0',
            '.' | '0' if allow_blank => 0,
            _ => {
                let allowed = if allow_blank {
                    "1-9, '.' or '0'"
                } else {
                    "1-9"
                };
                return Err(format!("character {} is {ch:?}, expected {allowed}", i + 1));
            }
        };
    }
    Ok(g)
}

/// Formats a board as 81 characters, blanks as `.` (the Sudoku-Extreme question format).
pub fn grid_to_string(g: &Grid) -> String {
    g.iter()
        .map(|&v| if v == 0 { '.' } else { (b'0' + v) as char })
        .collect()
}

/// Whether `g` is a complete valid solution: every row, column and box holds 1..9 once.
pub fn is_valid_solution(g: &Grid) -> bool {
    for i in 0..9 {
        let (mut row, mut col, mut bx) = (0u16, 0u16, 0u16);
        for j in 0..9 {
            let cells = [
                g[i * 9 + j],
                g[j * 9 + i],
                g[(i / 3 * 3 + j / 3) * 9 + i % 3 * 3 + j % 3],
            ];
            if cells.iter().any(|&v| !(1..=9).contains(&v)) {
                return false;
            }
            row |= 1 << cells[0];
            col |= 1 << cells[1];
            bx |= 1 << cells[2];
        }
        if row != 0x3FE || col != 0x3FE || bx != 0x3FE {
            return false;
        }
    }
    true
}

/// Whether every given (non-zero) cell of `question` equals `answer`'s cell.
pub fn givens_agree(question: &Grid, answer: &Grid) -> bool {
    question.iter().zip(answer).all(|(&q, &a)| q == 0 || q == a)
}

/// One element of the Sudoku symmetry group used by the reference's `shuffle_sudoku`:
/// digit relabelling, optional transpose, band/stack permutations and row/column permutations
/// within bands/stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudokuTransform {
    /// `digit_map[v]` = new value of old value `v`; `digit_map[0] == 0` (blanks stay blank).
    pub digit_map: [u8; 10],
    /// Transpose the board first.
    pub transpose: bool,
    /// New row r takes old row `row_perm[r]` (of the possibly transposed board).
    pub row_perm: [usize; 9],
    /// New column c takes old column `col_perm[c]`.
    pub col_perm: [usize; 9],
}

/// `[0, 1, .., n-1]` in a random order (Fisher–Yates, our RNG).
fn permutation<R: Rng + ?Sized, const N: usize>(rng: &mut R) -> [usize; N] {
    let mut p = [0usize; N];
    for (i, x) in p.iter_mut().enumerate() {
        *x = i;
    }
    for i in (1..N).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

impl SudokuTransform {
    /// Draws a transform in the reference's order: digit permutation, transpose coin (p = 1/2),
    /// band order, row order inside each band, stack order, column order inside each stack.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> SudokuTransform {
        let digits: [usize; 9] = permutation(rng);
        let mut digit_map = [0u8; 10];
        for (i, d) in digits.iter().enumerate() {
            digit_map[i + 1] = *d as u8 + 1;
        }
        let transpose = rng.random::<f64>() < 0.5;
        let line_perm = |rng: &mut R| {
            let blocks: [usize; 3] = permutation(rng);
            let mut p = [0usize; 9];
            for (k, b) in blocks.iter().enumerate() {
                let inner: [usize; 3] = permutation(rng);
                for (m, r) in inner.iter().enumerate() {
                    p[k * 3 + m] = b * 3 + r;
                }
            }
            p
        };
        let row_perm = line_perm(rng);
        let col_perm = line_perm(rng);
        SudokuTransform {
            digit_map,
            transpose,
            row_perm,
            col_perm,
        }
    }

    /// Applies the transform to a board (blanks stay blank).
    pub fn apply(&self, g: &Grid) -> Grid {
        let mut out = [0u8; 81];
        for r in 0..9 {
            for c in 0..9 {
                let (sr, sc) = (self.row_perm[r], self.col_perm[c]);
                // Cell (sr, sc) of the transposed board is cell (sc, sr) of the original.
                let src = if self.transpose {
                    sc * 9 + sr
                } else {
                    sr * 9 + sc
                };
                out[r * 9 + c] = self.digit_map[g[src] as usize];
            }
        }
        out
    }
}

/// The reference's `shuffle_sudoku`: one random symmetry applied to puzzle and solution alike.
pub fn shuffle_sudoku<R: Rng + ?Sized>(board: &Grid, solution: &Grid, rng: &mut R) -> (Grid, Grid) {
    let t = SudokuTransform::random(rng);
    (t.apply(board), t.apply(solution))
}

/// Token encoding of a board: value + 1.
pub fn encode(g: &Grid) -> [u8; 81] {
    let mut t = [0u8; 81];
    for (o, &v) in t.iter_mut().zip(g) {
        *o = v + 1;
    }
    t
}

/// One validated CSV row.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sudoku_solver::{random_solution, rate};

    const Q: &str =
        "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    const A: &str =
        "534678912672195348198342567859761423426853791713924856961537284287419635345286179";

    #[test]
    fn parse_and_validate() {
        let q = parse_grid(Q, true).unwrap();
        let a = parse_grid(A, false).unwrap();
        assert!(is_valid_solution(&a));
        assert!(givens_agree(&q, &a));
        assert_eq!(grid_to_string(&q), Q);
        assert!(!is_valid_solution(&q));
        let mut bad = a;
        bad.swap(0, 1);
        assert!(!is_valid_solution(&bad));
        assert_eq!(
            parse_grid(&Q[..80], true).unwrap_err(),
            "has 80 characters, expected 81"
        );
        assert_eq!(
            parse_grid(&Q.replace('7', "x"), true).unwrap_err(),
            "character 5 is 'x', expected 1-9, '.' or '0'"
        );
        assert!(parse_grid(Q, false)
            .unwrap_err()
            .contains("character 3 is '.'"));
        let zeros = Q.replace('.', "0");
        assert_eq!(parse_grid(&zeros, true).unwrap(), q);
        assert_eq!(encode(&q)[0], 6);
        assert_eq!(encode(&q)[2], 1);
    }

    /// Property test: for many random solved grids and random puzzles carved from them, every
    /// random shuffle keeps the solution valid, the givens consistent, the blank pattern's size,
    /// and the puzzle uniquely solvable with the shuffled solution.
    #[test]
    fn shuffle_preserves_validity() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for trial in 0..200 {
            let sol = random_solution(&mut rng);
            let mut puzzle = sol;
            for c in 0..81 {
                if rng.random::<f64>() < 0.6 {
                    puzzle[c] = 0;
                }
            }
            for _ in 0..20 {
                let (p2, s2) = shuffle_sudoku(&puzzle, &sol, &mut rng);
                assert!(is_valid_solution(&s2), "trial {trial}");
                assert!(givens_agree(&p2, &s2));
                assert_eq!(
                    p2.iter().filter(|&&v| v == 0).count(),
                    puzzle.iter().filter(|&&v| v == 0).count()
                );
            }
        }
        // Uniqueness is invariant under the symmetry group.
        let q = parse_grid(Q, true).unwrap();
        let a = parse_grid(A, false).unwrap();
        for _ in 0..50 {
            let (q2, a2) = shuffle_sudoku(&q, &a, &mut rng);
            let (_, s) = rate(&q2).unwrap();
            assert_eq!(s, a2);
        }
    }

    #[test]
    fn transform_is_a_bijection_of_cells() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..100 {
            let t = SudokuTransform::random(&mut rng);
            let mut d = t.digit_map[1..].to_vec();
            d.sort();
            assert_eq!(d, (1..=9).collect::<Vec<u8>>());
            assert_eq!(t.digit_map[0], 0);
            // Rows stay inside their band.
            for k in 0..3 {
                let band: Vec<usize> = t.row_perm[k * 3..k * 3 + 3].iter().map(|r| r / 3).collect();
                assert!(band.iter().all(|&b| b == band[0]));
            }
        }
        // The reference's index rule on a concrete case: transpose, identity permutations.
        let mut g = [0u8; 81];
        g[1] = 7; // row 0, col 1
        let t = SudokuTransform {
            digit_map: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            transpose: true,
            row_perm: [0, 1, 2, 3, 4, 5, 6, 7, 8],
            col_perm: [0, 1, 2, 3, 4, 5, 6, 7, 8],
        };
        assert_eq!(t.apply(&g)[9], 7); // now row 1, col 0
        let t = SudokuTransform {
            transpose: false,
            row_perm: [2, 1, 0, 3, 4, 5, 6, 7, 8],
            ..t
        };
        let out = t.apply(&g);
        assert_eq!(out[2 * 9 + 1], 7); // new row 2 takes old row 0
    }
}
