//! Maze-Hard: grids, BFS and the labelled path, the path checker, the generator, the builder.
//!
//! Mirrors sapientinc/HRM:dataset/build_maze_dataset.py (`convert_subset`: `# SGo` -> 1..5,
//! PAD 0, vocab 6, seq_len N*N, all puzzle identifiers 0, optional 8-fold dihedral augmentation of
//! the train split). The reference has no generator; [`generate_mazes`] re-implements the recipe
//! written down in docs/data.md, "Maze-Hard" (Searchformer's random walls + the paper's
//! "shortest path > 110" filter) from its description; no code was taken from either project.
//!
//! Conventions used throughout:
//! * A maze is a square `n x n` grid stored row-major; cell index `i = r * n + c`, `r` = row from
//!   the top (the first `n` characters of a CSV string are row 0).
//! * Path length `L` counts MOVES between 4-connected cells, so a path with `m` intermediate `o`
//!   cells has `L = m + 1`. The CSV `rating` column is `L`.
//! * Neighbour order is fixed: up (`r-1`), down (`r+1`), left (`c-1`), right (`c+1`).
//! * **Labelled-path tie-break** (shortest paths are massively non-unique; docs/data.md,
//!   "Maze-Hard"): BFS from the goal gives each cell its distance to `G`; the label walks from
//!   `S`, and at every step moves to the FIRST neighbour in the order up, down, left, right whose
//!   distance to `G` is one less. The result is one fixed shortest path per maze. It cannot be
//!   checked against Sapient's labels (their CSVs are not reachable), so exact-match accuracy
//!   against our labels and against theirs are different tasks; [`check_path`] gives the
//!   tie-break-free "valid and optimal" criterion of the paper.
//!
//! Files: `grid.rs` (alphabet and grids), `path.rs` (BFS and the labelled path), `check.rs`
//! (path checker), `generator.rs` (random-wall generator), `files.rs` (Maze-Hard CSV files),
//! `build.rs` (CSV folder -> dataset folder), `generate_csvs.rs` (`hrm data maze-generate`).

mod build;
mod check;
mod files;
mod generate_csvs;
mod generator;
mod grid;
mod path;
#[cfg(test)]
mod test_util;

pub use build::{build_maze, MazeBuildOptions, MazeBuildReport, MazeSplitReport};
pub use check::{check_path, check_path_grids, check_path_text, PathFault, PathVerdict};
pub use files::{read_maze_csv, MazeRecord, CSV_HEADER, GENERATED_SOURCE};
pub use generate_csvs::{generate_maze_csvs, MazeGenerateOptions, MazeGenerateReport};
pub use generator::{
    generate_mazes, path_length_histogram, GeneratedMaze, GenerationStats, GoalSampling,
    MazeGenConfig,
};
pub use grid::{validate_answer, validate_question, Cell, MazeGrid, CHARSET, PAD_ID, VOCAB_SIZE};
pub use path::{bfs_distances, label_answer, neighbours, shortest_path, UNREACHABLE};
