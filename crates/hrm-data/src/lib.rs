//! `hrm-data`: every dataset HRM trains on, in the reference's on-disk layout, with no tensor
//! library.
//!
//! Mirrors sapientinc/HRM:dataset/ (builders), dataset/common.py (metadata, dihedral transforms)
//! and puzzle_dataset.py (loader and batch sampler). Modules:
//!
//! * [`npy`]: `.npy` reading (v1–v3, memory-mapped) and writing byte-identical to `numpy.save`;
//! * [`format`](mod@format): `dataset.json` / `identifiers.json`, the validating split reader
//!   ([`format::load_split`]), the writers ([`format::write_split`], streaming
//!   [`format::SetWriter`]) and atomic output folders ([`format::StagingDir`]);
//! * [`sampler`]: the training sampler and test iterator of the reference loader;
//! * [`csv`], [`progress`], [`error`]: shared plumbing for the builders;
//! * [`sudoku`], [`sudoku_solver`], [`sudoku_gen`]: Sudoku-Extreme builder, solver/rater and a
//!   local generator of Sudoku-Extreme-format CSVs;
//! * `maze`, `dihedral`, `arc`: Maze-Hard and ARC builders.

pub mod csv;
pub mod error;
pub mod format;
pub mod fsio;
pub mod npy;
pub mod progress;
pub mod sampler;
pub mod sudoku;
pub mod sudoku_gen;
pub mod sudoku_solver;
// Maze / ARC modules (helper "mazearc") go below this line.
pub mod arc;
pub mod dihedral;
pub mod maze;

pub use error::{DataError, Result};
pub use format::{load_split, DatasetMetadata, SetData, SplitData};
pub use progress::Progress;
pub use sampler::Batch;
