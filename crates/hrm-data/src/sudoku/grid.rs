//! Sudoku boards: parsing and formatting, validity, the reference's shuffle symmetry, the tokens.

use rand::Rng;
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
#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sudoku::solver::{random_solution, rate};

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
