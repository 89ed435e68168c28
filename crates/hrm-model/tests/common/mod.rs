//! Helpers shared by the integration tests of this crate.

use hrm_model::{ModelConfig, PuzzleBatch};
use rand::Rng;

/// A random Sudoku-like batch: labels in 2..V, 40% of the inputs blank (token 1), random puzzle
/// ids.
pub fn batch(cfg: &ModelConfig, rng: &mut impl Rng) -> PuzzleBatch {
    let n = cfg.batch_size * cfg.seq_len;
    let labels: Vec<i32> = (0..n)
        .map(|_| rng.random_range(2..cfg.vocab_size as i32))
        .collect();
    PuzzleBatch {
        inputs: labels
            .iter()
            .map(|&x| if rng.random::<f32>() < 0.4 { 1 } else { x })
            .collect(),
        labels,
        puzzle_identifiers: (0..cfg.batch_size)
            .map(|_| rng.random_range(0..cfg.num_puzzle_identifiers as i32))
            .collect(),
        batch_size: cfg.batch_size,
        seq_len: cfg.seq_len,
    }
}
