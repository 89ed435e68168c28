//! `hrm-data`: every dataset HRM trains on, in the reference's on-disk layout, no tensor library.
//!
//! Mirrors sapientinc/HRM:dataset/ (builders), dataset/common.py (metadata, dihedral transforms)
//! and puzzle_dataset.py (loader and batch sampler). The datasets, our generators and the on-disk
//! format are described in docs/data.md. Modules:
//!
//! * [`npy`]: `.npy` reading (v1–v3, memory-mapped) and writing byte-identical to `numpy.save`;
//! * [`format`](mod@format): `dataset.json` / `identifiers.json`, the validating split reader
//!   ([`format::load_split`]), the writers ([`format::write_split`], streaming
//!   [`format::SetWriter`]) and atomic output folders ([`format::StagingDir`]);
//! * [`sampler`]: the training sampler and test iterator of the reference loader;
//! * [`csv`], [`progress`], [`error`], [`fsio`]: shared plumbing for the builders;
//! * [`sudoku`]: the Sudoku-Extreme builder, with its solver/rater ([`sudoku::solver`]) and a
//!   local generator of Sudoku-Extreme-format CSVs ([`sudoku::generator`]);
//! * [`maze`]: Maze-Hard (generator, builder, path checker);
//! * [`arc`]: ARC (builder, scoring);
//! * [`dihedral`]: the 8 grid symmetries shared by the Maze and ARC builders.

pub mod arc;
pub mod csv;
pub mod dihedral;
pub mod error;
pub mod format;
pub mod fsio;
pub mod maze;
pub mod npy;
pub mod progress;
pub mod sampler;
pub mod sudoku;

pub use error::{DataError, Result};
pub use format::{load_split, DatasetMetadata, SetData, SplitData};
pub use progress::Progress;
pub use sampler::Batch;
/// The old path of [`sudoku::generator`] (hrm-cli and hrm-train still use it).
pub use sudoku::generator as sudoku_gen;
/// The old path of [`sudoku::solver`].
pub use sudoku::solver as sudoku_solver;
