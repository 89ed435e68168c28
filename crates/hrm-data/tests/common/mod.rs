//! Helpers shared by the hrm-data integration tests: the shared data folder, folder listings,
//! CSV input folders and a Sudoku board with its solution.

// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hrm_data::sudoku::SudokuBuildOptions;

/// A Sudoku puzzle (`.` = blank) and its solution, valid for every Sudoku test.
pub const Q: &str =
    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
/// The solution of [`Q`].
pub const A: &str =
    "534678912672195348198342567859761423426853791713924856961537284287419635345286179";

/// The header line of Sudoku-Extreme and Maze-Hard CSVs.
pub const CSV_HEADER: &str = "source,question,answer,rating\n";

/// The shared folder (see [`hrm_testkit::shared`]).
pub fn shared_dir() -> Option<PathBuf> {
    hrm_testkit::shared("")
}

/// `rel` inside the shared folder (see [`shared_dir`]).
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    shared_dir().map(|d| d.join(rel))
}

/// The entries of a folder, sorted.
#[allow(unused_imports)] // not every test file lists folders
pub use hrm_testkit::entries;

/// Creates `dir` with `train.csv` and `test.csv` holding the given texts; returns `dir`.
pub fn csv_folder(dir: &Path, train: &str, test: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.csv"), train).unwrap();
    std::fs::write(dir.join("test.csv"), test).unwrap();
    dir.to_path_buf()
}

/// Sudoku build options from `input` to `out`: everything kept, no augmentation, seed 0.
pub fn sudoku_options(input: PathBuf, out: PathBuf) -> SudokuBuildOptions {
    SudokuBuildOptions {
        input_dir: input,
        output_dir: out,
        subsample_size: None,
        min_difficulty: None,
        num_aug: 0,
        seed: 0,
        force: false,
    }
}
