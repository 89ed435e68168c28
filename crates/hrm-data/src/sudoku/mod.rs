//! Sudoku-Extreme: boards, the CSV -> `.npy` builder, a solver/rater and a CSV generator.
//!
//! * `grid.rs`: boards (0 = blank), their validity, the symmetry group of the reference's
//!   `shuffle_sudoku` and the token encoding;
//! * `build.rs`: the Sudoku-Extreme CSV reader and dataset builder ([`build_sudoku`]);
//! * [`solver`]: a bitmask solver and the guess-counting difficulty rating;
//! * [`generator`]: a local generator of Sudoku-Extreme-format CSVs.
//!
//! The old paths `hrm_data::sudoku_gen` and `hrm_data::sudoku_solver` still name [`generator`]
//! and [`solver`] (re-exported from the crate root).

mod build;
pub mod generator;
mod grid;
pub mod solver;

pub use build::{
    build_sudoku, read_sudoku_csv, BuildReport, SplitReport, SudokuBuildOptions, SudokuRow,
    CSV_HEADER,
};
pub use grid::{
    encode, givens_agree, grid_to_string, is_valid_solution, parse_grid, shuffle_sudoku, Grid,
    SudokuTransform, SEQ_LEN, VOCAB_SIZE,
};
