//! ARC (ARC-AGI-1 + ConceptARC, ARC-AGI-2, Mini-ARC): tasks, augmentation, encoding, scoring.
//!
//! Task parsing, split routing, augmentation, the 30x30 token encoding, the dataset builder, and
//! the scoring side (crop, inverse augmentation, voting, pass@K, ARC-Prize submission JSON).
//!
//! Builder: mirrors sapientinc/HRM:dataset/build_arc_dataset.py (`arc_grid_to_np`,
//! `np_grid_to_seq_translational_augment`, `puzzle_hash`, `convert_single_arc_puzzle`,
//! `load_puzzles_arcagi`, `convert_dataset`). Scoring: mirrors sapientinc/HRM:arc_eval.ipynb
//! (`crop`, `inverse_aug`, the vote in `test`). Both are described in docs/data.md, "ARC".
//!
//! Differences from the reference, all deliberate:
//! * Task discovery is recursive over each `--dataset-dirs` folder and sorted by path, so the
//!   order (and with it every identifier) is the same on every machine; the reference lists
//!   one level of sub-folders in file-system order and then shuffles with NumPy.
//! * A task's test pairs are held out (test split) when the task file sits in a folder named
//!   `evaluation` (the dataset folder itself or any folder below it), as in the reference; in
//!   addition `--eval-dirs` and `--test-from-train-fraction` can hold out tasks of folders
//!   without an `evaluation` folder (Mini-ARC), for quick runs.
//! * Augmented variants are de-duplicated by exact content (the sorted list of all pairs with
//!   their shapes), the reference's SHA-256 of the same content without the hash.
//! * Puzzle names are parsed from the right (`<task>_t<d>_<10 digits>`), so task ids that
//!   contain `_` (Mini-ARC) work; the reference splits at the first `_`.
//!
//! Encoding (30x30 canvas, row-major, `seq_len` 900, vocab 12): PAD 0, EOS 1, colour `c` ->
//! `c + 2`. A grid of `h x w` placed at `(r0, c0)` gets an EOS frame: row `r0 + h` (if < 30)
//! over columns `c0 .. c0 + w`, and column `c0 + w` (if < 30) over rows `r0 .. r0 + h`; the
//! corner `(r0 + h, c0 + w)` stays PAD.
//!
//! Files: `grid.rs` (grids, colour maps, augmentations, puzzle names), `canvas.rs` (the 30x30
//! token canvas), `tasks.rs` (task files and the hold-out rule), `augment.rs` (distinct variants
//! and the per-task encoding), `build.rs` (the builder), `score.rs` (ground truth, voting,
//! pass@K, submission).

mod augment;
mod build;
mod canvas;
mod grid;
mod score;
mod tasks;
#[cfg(test)]
mod test_util;

pub use augment::{task_augmentations, AUGMENT_RETRIES_FACTOR};
pub use build::{build_arc, ArcBuildOptions, ArcBuildReport, ArcSplitReport};
pub use canvas::{
    crop, crop_at, decode_grid, encode_grid, COLOR_OFFSET, EOS, MAX_GRID_SIZE, PAD, SEQ_LEN,
    VOCAB_SIZE,
};
pub use grid::{parse_puzzle_name, puzzle_name, Augmentation, ColorMap, Grid, NUM_COLORS};
pub use score::{
    submission_json, test_cases_from_split, test_cases_from_tasks, vote, write_submission,
    ArcPrediction, ArcTestCase, RankedAnswer, TestRanking, VoteError, VoteReport, PASS_AT_K,
};
pub use tasks::{discover_tasks, load_task, load_test_inputs, parse_task, ArcTask, Pair};
