//! A bitmask Sudoku solver: solution counting, solving, random full grids and the rating.
//!
//! Solutions are counted up to a limit; the rating counts guesses (below).
//!
//! Not in sapientinc/HRM (its Sudoku CSVs come rated by tdoku); this stands in for tdoku's
//! `solver_dpll_triad_simd` rating as described in docs/data.md, "Sudoku-Extreme", re-implemented
//! from that description, not from tdoku's code.
//!
//! # Rating rule (fixed; the `rating` column of `hrm data sudoku-generate`)
//!
//! State: a 9-bit candidate mask per cell. Propagation runs these sound deductions to a
//! fixpoint (the fixpoint of monotone eliminations does not depend on their order):
//! 1. **naked single**: a cell with one candidate removes it from its 20 peers;
//! 2. **hidden single**: a digit with one possible cell in a row, column or box goes there;
//! 3. **locked candidates** over each of the 54 box/line intersections: *pointing* (a digit
//!    whose box candidates all lie on one line is removed from the rest of that line) and
//!    *claiming* (a digit whose line candidates all lie in one box is removed from the rest of
//!    that box).
//!
//! A cell without candidates, or a unit missing a digit, is a contradiction. When propagation
//! stalls with open cells, the solver **branches** on the open cell with the fewest candidates
//! (ties: lowest cell index, row-major) and tries its digits in increasing order.
//!
//! **rating = the number of branch points** (search nodes where a guess was needed) visited while
//! searching the *whole* tree for up to 2 solutions, i.e. the work needed to solve the puzzle
//! and prove its solution unique. 0 means propagation alone solves it. This counts more than
//! tdoku does (tdoku also propagates over band configurations), so absolute values are not
//! comparable with the HF `rating` column, but ranks are meaningful (docs/data.md,
//! "Sudoku-Extreme").

use rand::Rng;

/// The rating rule in one paragraph (for reports and generated metadata).
pub const RATING_RULE: &str = "rating = number of branch points (guesses) of a DPLL search for up \
to 2 solutions; propagation to fixpoint with naked singles, hidden singles and locked candidates \
(pointing and claiming); branching on the open cell with the fewest candidates (ties: lowest \
row-major index), digits in increasing order; 0 = solved by propagation alone";

/// All nine candidates.
const ALL: u16 = 0x1FF;

/// Precomputed unit tables.
struct Tables {
    /// 27 units: 9 rows, 9 columns, 9 boxes.
    units: [[u8; 9]; 27],
    /// 20 peers of every cell.
    peers: [[u8; 20]; 81],
    /// 54 box/line intersections: (the 3 shared cells, the 6 other box cells, the 6 other
    /// line cells).
    intersections: Vec<([u8; 3], [u8; 6], [u8; 6])>,
}

fn tables() -> &'static Tables {
    static T: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut units = [[0u8; 9]; 27];
        for i in 0..9 {
            for j in 0..9 {
                units[i][j] = (i * 9 + j) as u8; // row i
                units[9 + i][j] = (j * 9 + i) as u8; // column i
                let (br, bc) = (i / 3 * 3, i % 3 * 3);
                units[18 + i][j] = ((br + j / 3) * 9 + bc + j % 3) as u8; // box i
            }
        }
        let mut peers = [[0u8; 20]; 81];
        for c in 0..81 {
            let (r, k, b) = (c / 9, c % 9, (c / 27) * 3 + (c % 9) / 3);
            let mut list: Vec<u8> = Vec::with_capacity(20);
            for u in [r, 9 + k, 18 + b] {
                for &p in &units[u] {
                    if p as usize != c && !list.contains(&p) {
                        list.push(p);
                    }
                }
            }
            peers[c].copy_from_slice(&list);
        }
        let mut intersections = Vec::with_capacity(54);
        for b in 0..9 {
            let bx = units[18 + b];
            let (br, bc) = (b / 3 * 3, b % 3 * 3);
            let lines = (0..3).map(|d| br + d).chain((0..3).map(|d| 9 + bc + d));
            for line in lines {
                let lu = units[line];
                let shared: Vec<u8> = bx.iter().copied().filter(|c| lu.contains(c)).collect();
                let box_rest: Vec<u8> = bx.iter().copied().filter(|c| !lu.contains(c)).collect();
                let line_rest: Vec<u8> = lu.iter().copied().filter(|c| !bx.contains(c)).collect();
                let mut s = [0u8; 3];
                let mut brs = [0u8; 6];
                let mut lrs = [0u8; 6];
                s.copy_from_slice(&shared);
                brs.copy_from_slice(&box_rest);
                lrs.copy_from_slice(&line_rest);
                intersections.push((s, brs, lrs));
            }
        }
        Tables {
            units,
            peers,
            intersections,
        }
    })
}

/// Search state: candidate masks plus the set of cells whose single was already propagated.
#[derive(Clone, Copy)]
struct State {
    cand: [u16; 81],
    /// Bit c set = cell c is decided and removed from its peers.
    done: u128,
}

impl State {
    fn from_grid(grid: &[u8; 81]) -> Option<State> {
        let mut cand = [ALL; 81];
        for (c, &v) in grid.iter().enumerate() {
            match v {
                0 => {}
                1..=9 => cand[c] = 1 << (v - 1),
                _ => return None,
            }
        }
        Some(State { cand, done: 0 })
    }

    /// Removes `mask` from `cell`; false on contradiction.
    #[inline]
    fn eliminate(&mut self, cell: usize, mask: u16, changed: &mut bool) -> bool {
        let c = self.cand[cell];
        if c & mask != 0 {
            let n = c & !mask;
            self.cand[cell] = n;
            *changed = true;
            return n != 0;
        }
        true
    }

    /// Propagates to a fixpoint; false on contradiction.
    fn propagate(&mut self) -> bool {
        let t = tables();
        loop {
            let mut changed = false;
            // 1. Naked singles.
            for c in 0..81 {
                if self.done & (1u128 << c) != 0 {
                    continue;
                }
                let m = self.cand[c];
                if m == 0 {
                    return false;
                }
                if m & (m - 1) == 0 {
                    self.done |= 1u128 << c;
                    changed = true;
                    for &p in &t.peers[c] {
                        if !self.eliminate(p as usize, m, &mut changed) {
                            return false;
                        }
                    }
                }
            }
            if changed {
                continue;
            }
            // 2. Hidden singles (and "digit has no place" contradictions).
            for unit in &t.units {
                let (mut once, mut twice) = (0u16, 0u16);
                for &c in unit {
                    let m = self.cand[c as usize];
                    twice |= once & m;
                    once |= m;
                }
                if once != ALL {
                    return false;
                }
                let singles = once & !twice;
                if singles == 0 {
                    continue;
                }
                for &c in unit {
                    let m = self.cand[c as usize];
                    let s = m & singles;
                    if s != 0 && m != s {
                        if s & (s - 1) != 0 {
                            return false; // two digits would need this one cell
                        }
                        self.cand[c as usize] = s;
                        changed = true;
                    }
                }
            }
            if changed {
                continue;
            }
            // 3. Locked candidates (pointing and claiming).
            for (shared, box_rest, line_rest) in &t.intersections {
                let or = |cells: &[u8], cand: &[u16; 81]| {
                    cells.iter().fold(0u16, |a, &c| a | cand[c as usize])
                };
                let inter = or(shared, &self.cand);
                let in_box_rest = or(box_rest, &self.cand);
                let in_line_rest = or(line_rest, &self.cand);
                let pointing = inter & !in_box_rest;
                if pointing & in_line_rest != 0 {
                    for &c in line_rest {
                        if !self.eliminate(c as usize, pointing, &mut changed) {
                            return false;
                        }
                    }
                }
                let claiming = inter & !in_line_rest;
                if claiming & in_box_rest != 0 {
                    for &c in box_rest {
                        if !self.eliminate(c as usize, claiming, &mut changed) {
                            return false;
                        }
                    }
                }
            }
            if !changed {
                return true;
            }
        }
    }

    /// The open cell with the fewest candidates (lowest index on ties), or `None` if solved.
    fn branch_cell(&self) -> Option<usize> {
        let mut best = None;
        let mut best_n = 10;
        for c in 0..81 {
            let n = self.cand[c].count_ones();
            if n > 1 && n < best_n {
                best_n = n;
                best = Some(c);
                if n == 2 {
                    break;
                }
            }
        }
        best
    }

    fn grid(&self) -> [u8; 81] {
        let mut g = [0u8; 81];
        for c in 0..81 {
            g[c] = self.cand[c].trailing_zeros() as u8 + 1;
        }
        g
    }
}

/// Result of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// Solutions found, capped at the search limit (so with limit 2: 0, 1, or "2 or more").
    pub solutions: usize,
    /// The first solution found (values 1..=9), if any.
    pub solution: Option<[u8; 81]>,
    /// Branch points visited (the rating when the limit is 2 and the puzzle is unique).
    pub guesses: u64,
}

impl Analysis {
    /// Whether the puzzle has exactly one solution (meaningful for `limit >= 2`).
    pub fn is_unique(&self) -> bool {
        self.solutions == 1
    }
}

fn search(s: State, limit: usize, out: &mut Analysis) {
    let mut s = s;
    if !s.propagate() {
        return;
    }
    let Some(cell) = s.branch_cell() else {
        out.solutions += 1;
        if out.solution.is_none() {
            out.solution = Some(s.grid());
        }
        return;
    };
    out.guesses += 1;
    let mut m = s.cand[cell];
    while m != 0 {
        let bit = m & m.wrapping_neg();
        m &= m - 1;
        let mut child = s;
        child.cand[cell] = bit;
        search(child, limit, out);
        if out.solutions >= limit {
            return;
        }
    }
}

/// Searches `grid` (0 = blank, 1..=9 givens) for up to `limit` solutions, counting branch
/// points. Values outside 0..=9 or contradictory givens give 0 solutions.
pub fn analyze(grid: &[u8; 81], limit: usize) -> Analysis {
    let mut out = Analysis {
        solutions: 0,
        solution: None,
        guesses: 0,
    };
    if let Some(s) = State::from_grid(grid) {
        search(s, limit.max(1), &mut out);
    }
    out
}

/// Number of solutions of `grid`, capped at `limit`.
pub fn count_solutions(grid: &[u8; 81], limit: usize) -> usize {
    analyze(grid, limit).solutions
}

/// The first solution in search order, if any.
pub fn solve(grid: &[u8; 81]) -> Option<[u8; 81]> {
    analyze(grid, 1).solution
}

/// The rating (see the module docs) and unique solution of `grid`, or `None` if it has no
/// solution or more than one.
pub fn rate(grid: &[u8; 81]) -> Option<(u64, [u8; 81])> {
    let a = analyze(grid, 2);
    match (a.solutions, a.solution) {
        (1, Some(sol)) => Some((a.guesses, sol)),
        _ => None,
    }
}

fn random_fill<R: Rng + ?Sized>(s: State, rng: &mut R) -> Option<State> {
    let mut s = s;
    if !s.propagate() {
        return None;
    }
    let Some(cell) = s.branch_cell() else {
        return Some(s);
    };
    // Try the candidates in a random order.
    let mut digits: Vec<u16> = (0..9)
        .map(|d| 1u16 << d)
        .filter(|b| s.cand[cell] & b != 0)
        .collect();
    for i in (1..digits.len()).rev() {
        let j = rng.random_range(0..=i);
        digits.swap(i, j);
    }
    for bit in digits {
        let mut child = s;
        child.cand[cell] = bit;
        if let Some(done) = random_fill(child, rng) {
            return Some(done);
        }
    }
    None
}

/// A uniformly-seeded random complete grid (randomised DPLL; not exactly uniform over all
/// grids, which does not matter for training data).
pub fn random_solution<R: Rng + ?Sized>(rng: &mut R) -> [u8; 81] {
    let empty = State {
        cand: [ALL; 81],
        done: 0,
    };
    // An empty grid always has a completion, so this cannot fail; fall back to a fixed valid
    // grid to keep the function total.
    random_fill(empty, rng)
        .map(|s| s.grid())
        .unwrap_or_else(|| {
            let mut g = [0u8; 81];
            for r in 0..9 {
                for c in 0..9 {
                    g[r * 9 + c] = ((r * 3 + r / 3 + c) % 9 + 1) as u8;
                }
            }
            g
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sudoku::{is_valid_solution, parse_grid};
    use rand::SeedableRng;

    const EASY: &str =
        "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    const HARD_1106: &str =
        "........8..3...4...9..2..6.....79.......612...6.5.2.7...8...5...1.....2.4.5.....3";

    #[test]
    fn tables_are_consistent() {
        let t = tables();
        for c in 0..81 {
            let mut p = t.peers[c].to_vec();
            p.sort();
            p.dedup();
            assert_eq!(p.len(), 20);
            assert!(!p.contains(&(c as u8)));
        }
        assert_eq!(t.intersections.len(), 54);
        for u in &t.units {
            let mut v = u.to_vec();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), 9);
        }
    }

    #[test]
    fn solves_easy_by_propagation_and_hard_by_search() {
        let g = parse_grid(EASY, true).unwrap();
        let (rating, sol) = rate(&g).unwrap();
        assert_eq!(rating, 0);
        assert!(is_valid_solution(&sol));
        for c in 0..81 {
            assert!(g[c] == 0 || g[c] == sol[c]);
        }
        let h = parse_grid(HARD_1106, true).unwrap();
        let (rh, solh) = rate(&h).unwrap();
        assert!(rh > 5, "hardest-list puzzle rated {rh}");
        assert!(is_valid_solution(&solh));
    }

    #[test]
    fn counts_multiple_and_zero_solutions() {
        let mut g = parse_grid(EASY, true).unwrap();
        // Remove givens until the puzzle is no longer unique.
        for c in 0..81 {
            g[c] = 0;
            if count_solutions(&g, 2) > 1 {
                break;
            }
        }
        assert_eq!(count_solutions(&g, 2), 2);
        assert!(rate(&g).is_none());
        assert_eq!(count_solutions(&[0u8; 81], 5), 5);
        // Contradictory givens: two 5s in row 0.
        let mut bad = [0u8; 81];
        bad[0] = 5;
        bad[1] = 5;
        assert_eq!(count_solutions(&bad, 2), 0);
        let mut bad = [0u8; 81];
        bad[0] = 12;
        assert_eq!(count_solutions(&bad, 2), 0);
    }

    #[test]
    fn random_solutions_are_valid_and_seeded() {
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let a = random_solution(&mut r1);
        assert_eq!(a, random_solution(&mut r2));
        assert!(is_valid_solution(&a));
        let b = random_solution(&mut r1);
        assert!(is_valid_solution(&b));
        assert_ne!(a, b);
    }
}
