//! The 30x30 token canvas of ARC examples: encoding with the EOS frame, the crop, decoding.

use super::grid::{Grid, NUM_COLORS};
/// Largest ARC grid side, and the canvas side.
pub const MAX_GRID_SIZE: usize = 30;
/// Tokens per example (30 x 30).
pub const SEQ_LEN: usize = MAX_GRID_SIZE * MAX_GRID_SIZE;
/// Padding token (also the ignored label).
pub const PAD: u8 = 0;
/// End-of-grid marker token.
pub const EOS: u8 = 1;
/// Token of colour `c` is `c + COLOR_OFFSET`.
pub const COLOR_OFFSET: u8 = 2;
/// PAD + EOS + 10 colours.
pub const VOCAB_SIZE: usize = NUM_COLORS + 2;
/// Writes `g` at offset `(r0, c0)` with its EOS frame into a PAD-filled 900-token canvas.
/// `Err` if the grid does not fit.
pub fn encode_grid(g: &Grid, r0: usize, c0: usize) -> std::result::Result<Vec<u8>, String> {
    let (h, w) = (g.height(), g.width());
    if h == 0 || r0 + h > MAX_GRID_SIZE || c0 + w > MAX_GRID_SIZE {
        return Err(format!(
            "a {h}x{w} grid at ({r0}, {c0}) does not fit the 30x30 canvas"
        ));
    }
    let mut out = vec![PAD; SEQ_LEN];
    for r in 0..h {
        let row = (r0 + r) * MAX_GRID_SIZE + c0;
        for c in 0..w {
            out[row + c] = g.get(r, c) + COLOR_OFFSET;
        }
    }
    // EOS frame: the row below the grid (under its columns) and the column to its right (beside
    // its rows); the corner cell stays PAD, exactly as the reference writes it.
    if r0 + h < MAX_GRID_SIZE {
        let row = (r0 + h) * MAX_GRID_SIZE;
        out[row + c0..row + c0 + w].fill(EOS);
    }
    if c0 + w < MAX_GRID_SIZE {
        for r in r0..r0 + h {
            out[r * MAX_GRID_SIZE + c0 + w] = EOS;
        }
    }
    Ok(out)
}

/// The crop of the reference's scoring (docs/data.md, "ARC", scoring step 2) starting at
/// `(r0, c0)`: scanning rows downwards, row `k` extends the candidate width to the count of
/// leading colour tokens (2..=11), capped by the previous rows'; the (rows, cols) pair of largest
/// area wins (first one on ties). Tokens beyond the slice count as PAD.
pub fn crop_at(tokens: &[u8], r0: usize, c0: usize) -> Grid {
    let is_color = |r: usize, c: usize| {
        let t = tokens.get(r * MAX_GRID_SIZE + c).copied().unwrap_or(PAD);
        (COLOR_OFFSET..COLOR_OFFSET + NUM_COLORS as u8).contains(&t)
    };
    let (max_r, max_c) = (
        MAX_GRID_SIZE - r0.min(MAX_GRID_SIZE),
        MAX_GRID_SIZE - c0.min(30),
    );
    let mut best = (0usize, 0usize);
    let mut best_area = 0usize;
    let mut num_c = max_c;
    for num_r in 1..=max_r {
        // Shrink the width to the leading run of colours in this row.
        if let Some(c) = (0..num_c).find(|&c| !is_color(r0 + num_r - 1, c0 + c)) {
            num_c = c;
        }
        let area = num_r * num_c;
        if area > best_area {
            best_area = area;
            best = (num_r, num_c);
        }
    }
    let (h, w) = best;
    let mut cells = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in 0..w {
            let t = tokens[(r0 + r) * MAX_GRID_SIZE + c0 + c];
            cells.push(t - COLOR_OFFSET);
        }
    }
    Grid { h, w, cells }
}

/// The reference's crop (from the top-left corner); what voting applies to test-split rows and
/// predictions.
pub fn crop(tokens: &[u8]) -> Grid {
    crop_at(tokens, 0, 0)
}

/// Decodes a grid placed anywhere on the canvas (train-split rows are translated): the first
/// non-PAD token in row-major order is the grid's top-left cell, then [`crop_at`] from there.
/// An all-PAD canvas decodes to the empty grid.
pub fn decode_grid(tokens: &[u8]) -> Grid {
    match tokens.iter().position(|&t| t != PAD) {
        Some(i) => crop_at(tokens, i / MAX_GRID_SIZE, i % MAX_GRID_SIZE),
        None => Grid {
            h: 0,
            w: 0,
            cells: Vec::new(),
        },
    }
}
#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::arc::test_util::{g, random_grid};

    #[test]
    fn encoding_writes_the_reference_eos_frame() {
        let grid = g(&[&[1, 2, 3], &[4, 5, 6]]);
        let t = encode_grid(&grid, 1, 2).unwrap();
        let at = |r: usize, c: usize| t[r * 30 + c];
        // Colours shifted by 2 at rows 1..3, cols 2..5.
        assert_eq!(
            [at(1, 2), at(1, 3), at(1, 4), at(2, 2), at(2, 4)],
            [3, 4, 5, 6, 8]
        );
        // EOS row under the grid's columns, EOS column beside its rows, corner PAD.
        assert_eq!([at(3, 2), at(3, 3), at(3, 4)], [EOS; 3]);
        assert_eq!([at(1, 5), at(2, 5)], [EOS; 2]);
        assert_eq!(at(3, 5), PAD);
        // Nothing else is set.
        let set = t.iter().filter(|&&x| x != PAD).count();
        assert_eq!(set, 6 + 3 + 2);
        // A grid touching the bottom-right edge has no frame there.
        let big = Grid::new(30, 30, vec![7; 900]).unwrap();
        let t = encode_grid(&big, 0, 0).unwrap();
        assert!(t.iter().all(|&x| x == 9));
        let edge = encode_grid(&grid, 28, 27).unwrap();
        assert_eq!(edge.iter().filter(|&&x| x == EOS).count(), 0);
        assert!(encode_grid(&grid, 29, 0).is_err());
    }

    #[test]
    fn crop_inverts_encoding_and_follows_the_reference_scan() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..300 {
            let grid = random_grid(&mut rng, 30);
            let (r0, c0) = (
                rng.random_range(0..=30 - grid.height()),
                rng.random_range(0..=30 - grid.width()),
            );
            let t = encode_grid(&grid, r0, c0).unwrap();
            assert_eq!(decode_grid(&t), grid);
            assert_eq!(crop_at(&t, r0, c0), grid);
            if (r0, c0) == (0, 0) {
                assert_eq!(crop(&t), grid);
            }
        }
        // The scan keeps the largest area: row 0 has 5 colours, rows 1-2 have 3 -> 3x3 = 9
        // beats 1x5 = 5 and the 2x3 = 6 of the first two rows.
        let mut t = vec![PAD; SEQ_LEN];
        t[..5].fill(2);
        t[30..33].fill(3);
        t[60..63].fill(4);
        t[33] = EOS;
        assert_eq!(crop(&t), g(&[&[0, 0, 0], &[1, 1, 1], &[2, 2, 2]]));
        // Top-left not a colour: empty grid.
        t[0] = EOS;
        let empty = crop(&t);
        assert_eq!((empty.height(), empty.width()), (0, 0));
        assert_eq!(decode_grid(&[PAD; SEQ_LEN]).cells().len(), 0);
    }
}
