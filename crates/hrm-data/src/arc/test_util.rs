//! Grids shared by the ARC unit tests.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Grid;

/// A random grid with 1..=`max` rows and columns.
pub(super) fn random_grid(rng: &mut ChaCha8Rng, max: usize) -> Grid {
    let h = rng.random_range(1..=max);
    let w = rng.random_range(1..=max);
    let cells = (0..h * w).map(|_| rng.random_range(0..10u8)).collect();
    Grid::new(h, w, cells).unwrap()
}
/// A grid from literal rows.
pub(super) fn g(rows: &[&[u8]]) -> Grid {
    Grid::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
}
