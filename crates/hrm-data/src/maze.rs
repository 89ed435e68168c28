//! Maze-Hard: the cell alphabet, BFS, the labelled-path tie-break, the path checker used by
//! evaluation, the random-wall generator, and the CSV -> `.npy` builder.
//!
//! Mirrors sapientinc/HRM:dataset/build_maze_dataset.py (`convert_subset`: `# SGo` -> 1..5,
//! PAD 0, vocab 6, seq_len N*N, all puzzle identifiers 0, optional 8-fold dihedral augmentation of
//! the train split). The reference has no generator; [`generate_mazes`] re-implements the
//! procedure of data-sources.md §2.2/§2.4 (Searchformer's random walls + the paper's
//! "shortest path > 110" filter) from its description; no code was taken from either project.
//!
//! Conventions used throughout:
//! * A maze is a square `n x n` grid stored row-major; cell index `i = r * n + c`, `r` = row from
//!   the top (the first `n` characters of a CSV string are row 0).
//! * Path length `L` counts MOVES between 4-connected cells, so a path with `m` intermediate `o`
//!   cells has `L = m + 1`. The CSV `rating` column is `L`.
//! * Neighbour order is fixed: up (`r-1`), down (`r+1`), left (`c-1`), right (`c+1`).
//! * **Labelled-path tie-break** (shortest paths are massively non-unique, data-sources.md §2.4):
//!   BFS from the goal gives each cell its distance to `G`; the label walks from `S`, and at
//!   every step moves to the FIRST neighbour in the order up, down, left, right whose distance
//!   to `G` is one less. The result is one fixed shortest path per maze. It cannot be checked
//!   against Sapient's labels (their CSVs are not reachable), so exact-match accuracy against our
//!   labels and against theirs are different tasks; [`check_path`] gives the tie-break-free
//!   "valid and optimal" criterion of the paper.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dihedral::Dihedral;
use crate::error::{DataError, Result};

// ---------------------------------------------------------------------------------------------
// Alphabet and grids
// ---------------------------------------------------------------------------------------------

/// The reference's character set; character `CHARSET[k]` has token id `k + 1` (PAD = 0).
pub const CHARSET: &[u8; 5] = b"# SGo";

/// Vocabulary size of the encoded maze (PAD + 5 characters), as in the reference.
pub const VOCAB_SIZE: usize = CHARSET.len() + 1;

/// The padding token (never produced by a valid maze).
pub const PAD_ID: u8 = 0;

/// Distance value for a cell that BFS did not reach.
pub const UNREACHABLE: u32 = u32::MAX;

/// One maze cell; the discriminant is the token id of the reference's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cell {
    /// `#` (token 1).
    Wall = 1,
    /// space (token 2).
    Open = 2,
    /// `S` (token 3).
    Start = 3,
    /// `G` (token 4).
    Goal = 4,
    /// `o` (token 5): a cell of the path; only in answers and predictions.
    Path = 5,
}

impl Cell {
    /// The cell for a CSV character, or `None` outside `# SGo`.
    pub fn from_char(c: char) -> Option<Cell> {
        match c {
            '#' => Some(Cell::Wall),
            ' ' => Some(Cell::Open),
            'S' => Some(Cell::Start),
            'G' => Some(Cell::Goal),
            'o' => Some(Cell::Path),
            _ => None,
        }
    }

    /// The CSV character of the cell.
    pub fn to_char(self) -> char {
        char::from(CHARSET[self as usize - 1])
    }

    /// The token id (1..=5).
    pub fn token(self) -> u8 {
        self as u8
    }

    /// The cell for a token id, or `None` for PAD (0) and ids >= 6.
    pub fn from_token(t: u8) -> Option<Cell> {
        match t {
            1 => Some(Cell::Wall),
            2 => Some(Cell::Open),
            3 => Some(Cell::Start),
            4 => Some(Cell::Goal),
            5 => Some(Cell::Path),
            _ => None,
        }
    }
}

/// A square maze, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MazeGrid {
    n: usize,
    cells: Vec<Cell>,
}

/// The side `n` of a sequence of `len` cells, if `len = n * n` with `n >= 1`.
fn square_side(len: usize) -> Option<usize> {
    let n = (len as f64).sqrt().round() as usize;
    (n >= 1 && n * n == len).then_some(n)
}

impl MazeGrid {
    /// A grid from its cells; `cells.len()` must be a perfect square.
    pub fn from_cells(cells: Vec<Cell>) -> std::result::Result<MazeGrid, String> {
        let n = square_side(cells.len()).ok_or_else(|| {
            format!(
                "{} cells is not a square grid (N*N for some N >= 1)",
                cells.len()
            )
        })?;
        Ok(MazeGrid { n, cells })
    }

    /// Parses a CSV maze string (`N*N` characters of `# SGo`, row-major).
    pub fn parse(text: &str) -> std::result::Result<MazeGrid, String> {
        let chars: Vec<char> = text.chars().collect();
        let n = square_side(chars.len()).ok_or_else(|| {
            format!(
                "length {} is not N*N for any N >= 1 (30x30 mazes have 900)",
                chars.len()
            )
        })?;
        let cells = chars
            .iter()
            .enumerate()
            .map(|(i, &ch)| {
                Cell::from_char(ch).ok_or_else(|| {
                    format!(
                        "character {ch:?} at row {}, col {} is not one of \"# SGo\"",
                        i / n,
                        i % n
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MazeGrid { n, cells })
    }

    /// Decodes token ids (1..=5, row-major); PAD or unknown ids are an error naming the cell.
    pub fn from_tokens(tokens: &[u8]) -> std::result::Result<MazeGrid, String> {
        let n = square_side(tokens.len())
            .ok_or_else(|| format!("{} tokens is not a square grid", tokens.len()))?;
        let cells = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                Cell::from_token(t).ok_or_else(|| {
                    format!(
                        "token {t} at row {}, col {} is not a maze cell (1..=5)",
                        i / n,
                        i % n
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MazeGrid { n, cells })
    }

    /// Side length `n`.
    pub fn side(&self) -> usize {
        self.n
    }

    /// The cells, row-major.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The CSV string (`N*N` characters).
    pub fn to_text(&self) -> String {
        self.cells.iter().map(|c| c.to_char()).collect()
    }

    /// The token ids (row-major), as stored in `all__inputs.npy` / `all__labels.npy`.
    pub fn to_tokens(&self) -> Vec<u8> {
        self.cells.iter().map(|c| c.token()).collect()
    }

    /// Indices of every cell equal to `kind`.
    pub fn positions(&self, kind: Cell) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|&i| self.cells[i] == kind)
            .collect()
    }

    /// Which cells can be walked on (everything but walls).
    pub fn passable(&self) -> Vec<bool> {
        self.cells.iter().map(|&c| c != Cell::Wall).collect()
    }

    /// The grid under dihedral transform `t` (square, so the shape is kept).
    pub fn transformed(&self, t: Dihedral) -> MazeGrid {
        MazeGrid {
            n: self.n,
            cells: t.apply(&self.cells, self.n, self.n),
        }
    }
}

impl fmt::Display for MazeGrid {
    /// One text row per maze row (for humans; the CSV format is [`MazeGrid::to_text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for row in self.cells.chunks(self.n) {
            let line: String = row.iter().map(|c| c.to_char()).collect();
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Checks a question (exactly one `S`, one `G`, no `o`) and returns `(start, goal)` indices.
pub fn validate_question(q: &MazeGrid) -> std::result::Result<(usize, usize), String> {
    let starts = q.positions(Cell::Start);
    let goals = q.positions(Cell::Goal);
    if starts.len() != 1 {
        return Err(format!(
            "question has {} `S` cells, expected exactly 1",
            starts.len()
        ));
    }
    if goals.len() != 1 {
        return Err(format!(
            "question has {} `G` cells, expected exactly 1",
            goals.len()
        ));
    }
    if let Some(&p) = q.positions(Cell::Path).first() {
        let n = q.side();
        return Err(format!(
            "question has an `o` at row {}, col {} (path marks belong in the answer only)",
            p / n,
            p % n
        ));
    }
    Ok((starts[0], goals[0]))
}

/// Checks that `answer` equals `question` except for `o` placed on open cells.
pub fn validate_answer(question: &MazeGrid, answer: &MazeGrid) -> std::result::Result<(), String> {
    if question.side() != answer.side() {
        return Err(format!(
            "answer is {0}x{0} but question is {1}x{1}",
            answer.side(),
            question.side()
        ));
    }
    let n = question.side();
    for (i, (&q, &a)) in question.cells().iter().zip(answer.cells()).enumerate() {
        let ok = q == a || (q == Cell::Open && a == Cell::Path);
        if !ok {
            return Err(format!(
                "answer has {:?} at row {}, col {} where the question has {:?} (the answer may \
                 only add `o` on open cells)",
                a.to_char(),
                i / n,
                i % n,
                q.to_char()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// BFS and the labelled path
// ---------------------------------------------------------------------------------------------

/// The 4-neighbours of cell `i` in an `n x n` grid, in the fixed order up, down, left, right.
#[inline]
pub fn neighbours(n: usize, i: usize) -> impl Iterator<Item = usize> {
    let (r, c) = (i / n, i % n);
    [
        (r > 0).then(|| i - n),
        (r + 1 < n).then(|| i + n),
        (c > 0).then(|| i - 1),
        (c + 1 < n).then(|| i + 1),
    ]
    .into_iter()
    .flatten()
}

/// BFS move counts from `from` over `passable` cells (`n x n`); [`UNREACHABLE`] elsewhere.
pub fn bfs_distances(passable: &[bool], n: usize, from: usize) -> Vec<u32> {
    let mut dist = vec![UNREACHABLE; passable.len()];
    let mut queue = std::collections::VecDeque::with_capacity(passable.len());
    dist[from] = 0;
    queue.push_back(from);
    while let Some(cur) = queue.pop_front() {
        let d = dist[cur] + 1;
        for nb in neighbours(n, cur) {
            if passable[nb] && dist[nb] == UNREACHABLE {
                dist[nb] = d;
                queue.push_back(nb);
            }
        }
    }
    dist
}

/// The labelled shortest path from `start` to `goal` (both included), chosen by the module's
/// tie-break: BFS from the goal, then from the start always step to the first neighbour (up,
/// down, left, right) one move closer to the goal. `None` if the goal is unreachable.
pub fn shortest_path(passable: &[bool], n: usize, start: usize, goal: usize) -> Option<Vec<usize>> {
    let to_goal = bfs_distances(passable, n, goal);
    let l = to_goal[start];
    if l == UNREACHABLE {
        return None;
    }
    let mut path = Vec::with_capacity(l as usize + 1);
    let mut cur = start;
    path.push(cur);
    while cur != goal {
        let want = to_goal[cur] - 1;
        // A BFS layer structure guarantees such a neighbour exists for every reached cell.
        cur = neighbours(n, cur).find(|&nb| to_goal[nb] == want)?;
        path.push(cur);
    }
    Some(path)
}

/// Labels a question: returns the answer (question with `o` on the intermediate cells of the
/// tie-break path) and the shortest path length `L` in moves.
pub fn label_answer(question: &MazeGrid) -> std::result::Result<(MazeGrid, usize), String> {
    let (start, goal) = validate_question(question)?;
    let n = question.side();
    let path = shortest_path(&question.passable(), n, start, goal)
        .ok_or_else(|| "the goal cannot be reached from the start".to_string())?;
    let mut answer = question.clone();
    for &i in &path[1..path.len() - 1] {
        answer.cells[i] = Cell::Path;
    }
    Ok((answer, path.len() - 1))
}

// ---------------------------------------------------------------------------------------------
// Path checker (the paper's "valid and optimal" criterion)
// ---------------------------------------------------------------------------------------------

/// Why a predicted maze answer is not a valid optimal path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathFault {
    /// The question itself is malformed or unsolvable (the prediction was not judged).
    BadQuestion(String),
    /// The prediction has a different number of cells than the question.
    SizeMismatch {
        /// Cells in the question.
        question: usize,
        /// Cells in the prediction.
        predicted: usize,
    },
    /// The prediction holds a token that is not a maze cell (PAD or >= 6).
    UnknownToken {
        /// (row, col) of the cell.
        cell: (usize, usize),
        /// The token id found.
        token: u8,
    },
    /// A wall, `S`, `G` or open cell was changed (including an `o` on a wall, `S` or `G`).
    CellChanged {
        /// (row, col) of the cell.
        cell: (usize, usize),
        /// The question's character.
        expected: char,
        /// The predicted character.
        found: char,
    },
    /// Following the path from `S` ends at a dead end before reaching `G`.
    Broken {
        /// (row, col) of the last cell reached.
        at: (usize, usize),
    },
    /// A path cell (or `S`/`G`) touches more marked cells than a simple path allows.
    Branching {
        /// (row, col) of the cell with too many marked neighbours.
        at: (usize, usize),
    },
    /// `o` cells that are not on the `S` -> `G` chain.
    StrayCells {
        /// How many marked cells the chain does not visit.
        count: usize,
    },
    /// A valid path that is longer than the shortest one.
    NotShortest {
        /// Moves of the predicted path.
        length: usize,
        /// Moves of a shortest path.
        shortest: usize,
    },
}

impl fmt::Display for PathFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathFault::BadQuestion(msg) => write!(f, "bad question: {msg}"),
            PathFault::SizeMismatch {
                question,
                predicted,
            } => write!(
                f,
                "prediction has {predicted} cells, question has {question}"
            ),
            PathFault::UnknownToken { cell, token } => {
                write!(f, "token {token} at {cell:?} is not a maze cell")
            }
            PathFault::CellChanged {
                cell,
                expected,
                found,
            } => write!(f, "cell {cell:?} changed from {expected:?} to {found:?}"),
            PathFault::Broken { at } => write!(f, "path breaks off at {at:?} before the goal"),
            PathFault::Branching { at } => {
                write!(f, "path touches itself or branches at {at:?}")
            }
            PathFault::StrayCells { count } => {
                write!(f, "{count} path cells are not on the start-goal path")
            }
            PathFault::NotShortest { length, shortest } => {
                write!(f, "path has {length} moves, the shortest has {shortest}")
            }
        }
    }
}

/// Verdict of [`check_path`] on one predicted answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathVerdict {
    /// The marked cells form one simple 4-connected path from `S` to `G` over open cells, and
    /// nothing else changed.
    pub valid: bool,
    /// `valid` and as short as a shortest path.
    pub optimal: bool,
    /// Moves of the predicted path (when it could be traced from `S` to `G`).
    pub length: Option<usize>,
    /// Moves of a shortest path in the question (when the question is solvable).
    pub shortest: Option<usize>,
    /// Why the prediction is not valid and optimal; `None` exactly when `optimal`.
    pub reason: Option<PathFault>,
}

impl PathVerdict {
    fn fault(shortest: Option<usize>, reason: PathFault) -> PathVerdict {
        PathVerdict {
            valid: false,
            optimal: false,
            length: None,
            shortest,
            reason: Some(reason),
        }
    }
}

/// Judges a predicted answer against its question, both as token ids (what evaluation holds:
/// the input row and the argmax prediction). See [`check_path_grids`] for the criterion.
pub fn check_path(question: &[u8], predicted: &[u8]) -> PathVerdict {
    let q = match MazeGrid::from_tokens(question) {
        Ok(q) => q,
        Err(msg) => return PathVerdict::fault(None, PathFault::BadQuestion(msg)),
    };
    if predicted.len() != question.len() {
        return PathVerdict::fault(
            None,
            PathFault::SizeMismatch {
                question: question.len(),
                predicted: predicted.len(),
            },
        );
    }
    let n = q.side();
    let mut cells = Vec::with_capacity(predicted.len());
    for (i, &t) in predicted.iter().enumerate() {
        match Cell::from_token(t) {
            Some(c) => cells.push(c),
            None => {
                return PathVerdict::fault(
                    None,
                    PathFault::UnknownToken {
                        cell: (i / n, i % n),
                        token: t,
                    },
                )
            }
        }
    }
    check_path_grids(&q, &MazeGrid { n, cells })
}

/// [`check_path`] on CSV strings (question and predicted answer).
pub fn check_path_text(question: &str, predicted: &str) -> PathVerdict {
    let q = match MazeGrid::parse(question) {
        Ok(q) => q,
        Err(msg) => return PathVerdict::fault(None, PathFault::BadQuestion(msg)),
    };
    match MazeGrid::parse(predicted) {
        Ok(p) => check_path_grids(&q, &p),
        Err(msg) => PathVerdict::fault(None, PathFault::BadQuestion(format!("prediction: {msg}"))),
    }
}

/// The paper's criterion ("valid and optimal").
///
/// *Valid*: every non-`o` cell equals the question; every `o` is on an open cell; and the set
/// `C = {o cells} ∪ {S, G}` is a simple path from `S` to `G` in the 4-neighbour graph INDUCED on
/// `C` (S and G have exactly one neighbour in `C`, every `o` exactly two, all of `C` is on the
/// chain). A path that touches itself (two non-consecutive cells adjacent) is reported as
/// [`PathFault::Branching`]; such a path is never optimal, because the touching cells would
/// give a shortcut. *Optimal*: valid and `length == shortest` (BFS in the question).
pub fn check_path_grids(question: &MazeGrid, predicted: &MazeGrid) -> PathVerdict {
    let (start, goal) = match validate_question(question) {
        Ok(sg) => sg,
        Err(msg) => return PathVerdict::fault(None, PathFault::BadQuestion(msg)),
    };
    let n = question.side();
    let shortest = bfs_distances(&question.passable(), n, start)[goal];
    if shortest == UNREACHABLE {
        return PathVerdict::fault(
            None,
            PathFault::BadQuestion("the goal cannot be reached from the start".into()),
        );
    }
    let best = shortest as usize;
    let shortest = Some(best);
    if predicted.side() != n {
        return PathVerdict::fault(
            shortest,
            PathFault::SizeMismatch {
                question: n * n,
                predicted: predicted.cells().len(),
            },
        );
    }
    // 1. Nothing but `o` on open cells may differ from the question.
    for (i, (&q, &p)) in question.cells().iter().zip(predicted.cells()).enumerate() {
        let ok = if p == Cell::Path {
            q == Cell::Open
        } else {
            p == q
        };
        if !ok {
            let reason = PathFault::CellChanged {
                cell: (i / n, i % n),
                expected: q.to_char(),
                found: p.to_char(),
            };
            return PathVerdict::fault(shortest, reason);
        }
    }
    // 2. Trace the chain from S through the induced graph on C = {o} ∪ {S, G}.
    let in_chain = |i: usize| matches!(predicted.cells()[i], Cell::Path | Cell::Start | Cell::Goal);
    let chain_size = predicted
        .cells()
        .iter()
        .filter(|&&c| c != Cell::Wall && c != Cell::Open);
    let chain_size = chain_size.count();
    let rc = |i: usize| (i / n, i % n);
    let mut prev = usize::MAX;
    let mut cur = start;
    let mut visited = 1usize;
    while cur != goal {
        let mut next = None;
        for nb in neighbours(n, cur).filter(|&nb| nb != prev && in_chain(nb)) {
            if next.is_some() {
                return PathVerdict::fault(shortest, PathFault::Branching { at: rc(cur) });
            }
            next = Some(nb);
        }
        match next {
            // S is a chain end: only its successor may touch it, and so for every later cell.
            Some(nb) if nb == start => {
                return PathVerdict::fault(shortest, PathFault::Branching { at: rc(cur) })
            }
            Some(nb) => {
                prev = cur;
                cur = nb;
                visited += 1;
            }
            None => return PathVerdict::fault(shortest, PathFault::Broken { at: rc(cur) }),
        }
        // Every step moves to an unvisited cell (a revisit needs a cell of degree >= 3, which
        // was rejected above), so the walk ends within |C| steps; guard anyway.
        if visited > chain_size {
            return PathVerdict::fault(shortest, PathFault::Branching { at: rc(cur) });
        }
    }
    // G must be a chain end too: no marked neighbour besides its predecessor.
    if neighbours(n, goal).any(|nb| nb != prev && in_chain(nb)) {
        return PathVerdict::fault(shortest, PathFault::Branching { at: rc(goal) });
    }
    if visited < chain_size {
        let count = chain_size - visited;
        return PathVerdict::fault(shortest, PathFault::StrayCells { count });
    }
    let length = visited - 1;
    let optimal = length == best;
    PathVerdict {
        valid: true,
        optimal,
        length: Some(length),
        shortest,
        reason: (!optimal).then_some(PathFault::NotShortest {
            length,
            shortest: best,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Generator (data-sources.md §2.2 / §2.4)
// ---------------------------------------------------------------------------------------------

/// How the goal of a candidate maze is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GoalSampling {
    /// Exact rejection sampling of the recipe: walls, then `S` and `G` uniform over free cells,
    /// accept iff `L > min_path`. One bidirectional BFS (stopped as soon as the two searches
    /// meet) per candidate; Maze-Hard 30x30 accepts roughly 1 candidate in 7e4.
    #[default]
    Exact,
    /// The shortcut of data-sources.md §2.4: one BFS from `S`; if any cell is farther than
    /// `min_path`, `G` is drawn uniformly among those cells. For 30x30 / L > 110 it needs ~30x
    /// fewer candidates and ~7x less CPU (measured: 2,441 vs 75,644 candidates per maze), but
    /// layouts with a far region are over-weighted and path lengths pile up just above the
    /// bound (measured on 2000 mazes: median 112, max 134, against 114 and 156 for `Exact`).
    FarGoal,
}

/// Parameters of the random-wall maze distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct MazeGenConfig {
    /// Grid side `n` (the grid is `n x n`, no extra border). Default 30.
    pub size: usize,
    /// Fewest walls (inclusive). Default `floor(n*n/10) * 3` (270 for 30x30).
    pub min_walls: usize,
    /// Most walls (inclusive). Default `floor(n*n/10) * 5` (450 for 30x30).
    pub max_walls: usize,
    /// Accept a maze only if its shortest path has MORE than this many moves. Default 110 for
    /// 30x30 (the paper's filter); see [`MazeGenConfig::for_size`] for other sizes.
    pub min_path: usize,
    /// How the goal is drawn.
    pub sampling: GoalSampling,
    /// Master seed; candidate `i` uses ChaCha8 stream `i` of this seed.
    pub seed: u64,
    /// Give up (with an error) after this many candidates.
    pub max_candidates: u64,
}

impl MazeGenConfig {
    /// The recipe's defaults for an `n x n` grid: walls `U[floor(n²/10)·3, floor(n²/10)·5]`
    /// and a path bound of 110 for 30x30, scaled with the cell count otherwise
    /// (`floor(110 · n² / 900)`, e.g. 17 for 12x12, 12 for 10x10).
    pub fn for_size(size: usize, seed: u64) -> MazeGenConfig {
        let tenth = size * size / 10;
        MazeGenConfig {
            size,
            min_walls: tenth * 3,
            max_walls: tenth * 5,
            min_path: 110 * size * size / 900,
            sampling: GoalSampling::Exact,
            seed,
            max_candidates: 20_000_000_000,
        }
    }

    /// Rejects settings that cannot produce any maze (with the option name in the error).
    pub fn validate(&self) -> Result<()> {
        let cells = self.size * self.size;
        if !(2..=256).contains(&self.size) {
            return Err(DataError::option(
                "--size",
                "the grid side must be in 2..=256",
            ));
        }
        if self.min_walls > self.max_walls {
            return Err(DataError::option(
                "--min-walls",
                format!("{} exceeds --max-walls {}", self.min_walls, self.max_walls),
            ));
        }
        if self.max_walls + 2 > cells {
            return Err(DataError::option(
                "--max-walls",
                format!(
                    "{} walls leave no room for S and G in {cells} cells",
                    self.max_walls
                ),
            ));
        }
        // A path visits distinct free cells, so L <= free cells - 1; L > min_path is only
        // possible if min_path + 2 <= cells - min_walls (the emptiest layout).
        if self.min_path + 2 > cells - self.min_walls {
            return Err(DataError::option(
                "--min-path",
                format!(
                    "no path in a {0}x{0} grid with at least {1} walls can have more than {2} \
                     moves; lower --min-path or --min-walls",
                    self.size, self.min_walls, self.min_path
                ),
            ));
        }
        if self.max_candidates == 0 {
            return Err(DataError::option("--max-candidates", "must be at least 1"));
        }
        Ok(())
    }
}

/// One accepted, labelled maze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedMaze {
    /// The question (walls, open cells, `S`, `G`).
    pub question: MazeGrid,
    /// The answer: the question with `o` on the tie-break shortest path.
    pub answer: MazeGrid,
    /// Shortest path length `L` in moves (`> min_path`).
    pub shortest: usize,
    /// Number of walls.
    pub walls: usize,
    /// Index of the candidate (its RNG stream) that produced the maze.
    pub candidate: u64,
}

/// Counters of one [`generate_mazes`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Candidates drawn (each = one wall layout + start + goal, one BFS).
    pub candidates: u64,
    /// Accepted candidates dropped because their wall layout was already used.
    pub duplicate_layouts: u64,
}

/// Padded-cell states of the candidate loop.
const UNKNOWN: u8 = 0;
const WALL: u8 = 1;
const FREE: u8 = 2;

/// Reusable per-thread buffers of the candidate loop (no allocation per candidate).
///
/// **Lazy walls.** A candidate's `k` walls are a uniform `k`-subset of the cells other than
/// `S` and `G`. Instead of placing all of them up front, a cell's status is drawn the first
/// time a search looks at it: it is a wall with probability `walls_left / cells_left` (both
/// counted over still-undrawn cells). Revealing cells one by one in ANY order, even an order
/// that depends on earlier outcomes, gives exactly the distribution of a uniform `k`-subset
/// (sequential sampling without replacement), so the result is the recipe's distribution
/// while a rejected candidate only pays for the cells its search touched. Accepted candidates
/// then draw their remaining cells in index order.
///
/// The grid is PADDED to side `w = n + 2` with wall borders, so the neighbours of `cur` are
/// always `cur - w`, `cur + w`, `cur - 1`, `cur + 1` (up, down, left, right) without bounds
/// checks. Interior cell `i` of the `n x n` maze is padded cell `(i / n + 1) * w + i % n + 1`.
struct Scratch {
    n: usize,
    w: usize,
    /// Padded cell states (`UNKNOWN`, `WALL`, `FREE`) of the current candidate.
    state: Vec<u8>,
    /// Padded template: border `WALL`, interior `UNKNOWN` (copied in at each candidate).
    template: Vec<u8>,
    /// Walls still to place among the `cells_left` undrawn cells.
    walls_left: usize,
    cells_left: usize,
    /// `stamp[p] == epoch` marks padded cell `p` as reached from the start side.
    stamp: Vec<u32>,
    /// The same for the goal side of [`Scratch::distance`].
    stamp_goal: Vec<u32>,
    epoch: u32,
    /// BFS distances of [`Scratch::bfs`] (valid where `stamp == epoch`).
    dist: Vec<u32>,
    queue: Vec<u32>,
    /// Frontier buffers of [`Scratch::distance`].
    front_a: Vec<u32>,
    front_b: Vec<u32>,
    next: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        let w = n + 2;
        let mut template = vec![WALL; w * w];
        for r in 1..=n {
            template[r * w + 1..r * w + 1 + n].fill(UNKNOWN);
        }
        Scratch {
            n,
            w,
            state: template.clone(),
            template,
            walls_left: 0,
            cells_left: 0,
            stamp: vec![0; w * w],
            stamp_goal: vec![0; w * w],
            epoch: 0,
            dist: vec![0; w * w],
            queue: Vec::with_capacity(w * w),
            front_a: Vec::with_capacity(w * w),
            front_b: Vec::with_capacity(w * w),
            next: Vec::with_capacity(w * w),
        }
    }

    /// Padded index of interior cell `i`.
    #[inline]
    fn pad(&self, i: usize) -> usize {
        (i / self.n + 1) * self.w + i % self.n + 1
    }

    /// Whether padded cell `p` is free, drawing its status now if it is still unknown.
    #[inline]
    fn is_free(&mut self, p: usize, rng: &mut ChaCha8Rng) -> bool {
        match self.state[p] {
            FREE => true,
            WALL => false,
            _ => {
                // P(wall) = walls_left / cells_left: one step of sampling without replacement.
                let wall = rng.random_range(0..self.cells_left) < self.walls_left;
                self.cells_left -= 1;
                if wall {
                    self.walls_left -= 1;
                    self.state[p] = WALL;
                } else {
                    self.state[p] = FREE;
                }
                !wall
            }
        }
    }

    /// Starts a new search: a fresh epoch makes every old mark stale without clearing.
    fn next_epoch(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Wrapped around: old stamps could alias the new epoch, so clear them once.
            self.stamp.fill(0);
            self.stamp_goal.fill(0);
            self.epoch = 1;
        }
        self.epoch
    }

    /// Exact shortest distance between padded cells `a != b` (`None` if unreachable), by
    /// bidirectional BFS: whole layers are expanded, always on the side with the smaller
    /// frontier. While the two searched balls (radii `da`, `db`) are disjoint the distance is
    /// at least `da + db + 1`; the first layer expansion that touches the other side's ball
    /// proves it is exactly that. Far fewer cells are visited (and drawn) than by a one-sided
    /// search, above all when one endpoint sits in a small closed pocket (common at 40-50%
    /// walls).
    fn distance(&mut self, a: usize, b: usize, rng: &mut ChaCha8Rng) -> Option<u32> {
        let epoch = self.next_epoch();
        let w = self.w;
        let mut fa = std::mem::take(&mut self.front_a);
        let mut fb = std::mem::take(&mut self.front_b);
        let mut next = std::mem::take(&mut self.next);
        fa.clear();
        fb.clear();
        fa.push(a as u32);
        fb.push(b as u32);
        self.stamp[a] = epoch;
        self.stamp_goal[b] = epoch;
        let (mut da, mut db) = (0u32, 0u32);
        let result = loop {
            if fa.is_empty() || fb.is_empty() {
                break None;
            }
            // Expand the smaller frontier by one whole layer.
            let a_side = fa.len() <= fb.len();
            next.clear();
            let mut met = false;
            let front = if a_side { &fa } else { &fb };
            'layer: for &cur in front.iter() {
                let cur = cur as usize;
                for nb in [cur - w, cur + w, cur - 1, cur + 1] {
                    let (mine, theirs) = if a_side {
                        (self.stamp[nb], self.stamp_goal[nb])
                    } else {
                        (self.stamp_goal[nb], self.stamp[nb])
                    };
                    if mine == epoch {
                        continue;
                    }
                    if theirs == epoch {
                        met = true;
                        break 'layer;
                    }
                    if !self.is_free(nb, rng) {
                        continue;
                    }
                    if a_side {
                        self.stamp[nb] = epoch;
                    } else {
                        self.stamp_goal[nb] = epoch;
                    }
                    next.push(nb as u32);
                }
            }
            if met {
                break Some(da + db + 1);
            }
            if a_side {
                std::mem::swap(&mut fa, &mut next);
                da += 1;
            } else {
                std::mem::swap(&mut fb, &mut next);
                db += 1;
            }
        };
        self.front_a = fa;
        self.front_b = fb;
        self.next = next;
        result
    }

    /// BFS from padded cell `start` over its whole region. Distances of reached cells are in
    /// `dist` where `stamp == epoch`.
    fn bfs(&mut self, start: usize, rng: &mut ChaCha8Rng) {
        let epoch = self.next_epoch();
        let w = self.w;
        self.queue.clear();
        self.queue.push(start as u32);
        self.stamp[start] = epoch;
        self.dist[start] = 0;
        let mut head = 0;
        while head < self.queue.len() {
            let cur = self.queue[head] as usize;
            head += 1;
            let d = self.dist[cur] + 1;
            for nb in [cur - w, cur + w, cur - 1, cur + 1] {
                if self.stamp[nb] != epoch && self.is_free(nb, rng) {
                    self.stamp[nb] = epoch;
                    self.dist[nb] = d;
                    self.queue.push(nb as u32);
                }
            }
        }
    }
}

/// A candidate that passed the path filter (before labelling and de-duplication).
struct Candidate {
    index: u64,
    /// Unpadded passability (`n x n`).
    passable: Vec<bool>,
    start: usize,
    goal: usize,
    shortest: usize,
    walls: usize,
}

/// Draws candidate `index` (its own RNG stream) and returns it if `L > min_path`.
///
/// Draw order: the wall count `k`, then `S` uniform over all cells, then (Exact) `G` uniform
/// over the other cells, then wall statuses lazily (see [`Scratch`]). This is the recipe's
/// distribution: a uniform `k`-subset of walls with `S != G` uniform over the free cells is the
/// same as `S != G` uniform over all cells with the `k` walls uniform over the rest.
fn try_candidate(
    cfg: &MazeGenConfig,
    base: &ChaCha8Rng,
    index: u64,
    s: &mut Scratch,
) -> Option<Candidate> {
    let cells = cfg.size * cfg.size;
    let mut rng = base.clone();
    rng.set_stream(index);
    let k = rng.random_range(cfg.min_walls..=cfg.max_walls);
    s.state.copy_from_slice(&s.template);
    let start = rng.random_range(0..cells);
    let ps = s.pad(start);
    s.state[ps] = FREE;
    s.walls_left = k;
    let bound = cfg.min_path as u32;
    let (goal, shortest) = match cfg.sampling {
        GoalSampling::Exact => {
            // Uniform over the cells other than `start`.
            let mut goal = rng.random_range(0..cells - 1);
            if goal >= start {
                goal += 1;
            }
            let pg = s.pad(goal);
            s.state[pg] = FREE;
            s.cells_left = cells - 2;
            let d = s.distance(ps, pg, &mut rng)?;
            if d <= bound {
                return None;
            }
            (goal, d)
        }
        GoalSampling::FarGoal => {
            s.cells_left = cells - 1;
            s.bfs(ps, &mut rng);
            // Far cells in index order, so the uniform pick below is deterministic.
            let epoch = s.epoch;
            let far: Vec<usize> = (0..cells)
                .filter(|&i| {
                    let p = s.pad(i);
                    s.stamp[p] == epoch && s.dist[p] > bound
                })
                .collect();
            if far.is_empty() {
                return None;
            }
            let goal = far[rng.random_range(0..far.len())];
            (goal, s.dist[s.pad(goal)])
        }
    };
    // Accepted: draw every cell the search did not look at, in index order.
    let passable = (0..cells)
        .map(|i| {
            let p = s.pad(i);
            s.is_free(p, &mut rng)
        })
        .collect();
    debug_assert_eq!((s.walls_left, s.cells_left), (0, 0));
    Some(Candidate {
        index,
        passable,
        start,
        goal,
        shortest: shortest as usize,
        walls: k,
    })
}

/// Generates `count` distinct labelled mazes with `L > cfg.min_path`.
///
/// Deterministic for a given config whatever the number of threads: candidate `i` is drawn
/// from its own RNG stream, candidates are evaluated in parallel in index-ordered batches, and
/// the accepted ones are kept in index order. A candidate whose wall layout equals an earlier
/// accepted one is dropped, so no two returned mazes share a layout (callers that split the
/// result into train and test get disjoint layouts). `progress(accepted, candidates)` is called
/// after each batch.
pub fn generate_mazes(
    cfg: &MazeGenConfig,
    count: usize,
    mut progress: impl FnMut(usize, u64),
) -> Result<(Vec<GeneratedMaze>, GenerationStats)> {
    cfg.validate()?;
    let n = cfg.size;
    let base = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut stats = GenerationStats::default();
    let mut seen_layouts: HashSet<Vec<bool>> = HashSet::new();
    let mut mazes = Vec::with_capacity(count);
    // Batches grow while acceptance is rare (Maze-Hard accepts ~1 in 8e4 candidates) and stay
    // small when it is common (small mazes), to bound wasted work past the last maze needed.
    let mut batch: u64 = 1024;
    while mazes.len() < count {
        if stats.candidates >= cfg.max_candidates {
            return Err(DataError::option(
                "--max-candidates",
                format!(
                    "gave up after {} candidates with only {} of {count} mazes accepted; \
                     lower --min-path or raise --max-candidates",
                    stats.candidates,
                    mazes.len()
                ),
            ));
        }
        let lo = stats.candidates;
        let hi = lo.saturating_add(batch).min(cfg.max_candidates);
        let found: Vec<Candidate> = (lo..hi)
            .into_par_iter()
            .map_init(|| Scratch::new(n), |s, i| try_candidate(cfg, &base, i, s))
            .collect::<Vec<Option<Candidate>>>()
            .into_iter()
            .flatten()
            .collect();
        stats.candidates = hi;
        let accepted_in_batch = found.len();
        for cand in found {
            if mazes.len() == count {
                break;
            }
            if !seen_layouts.insert(cand.passable.clone()) {
                stats.duplicate_layouts += 1;
                continue;
            }
            mazes.push(build_generated(n, cand));
        }
        progress(mazes.len(), stats.candidates);
        if accepted_in_batch < 4 {
            batch = (batch * 2).min(1 << 18);
        }
    }
    Ok((mazes, stats))
}

/// Turns an accepted candidate into a labelled question/answer pair.
fn build_generated(n: usize, cand: Candidate) -> GeneratedMaze {
    let mut cells: Vec<Cell> = cand
        .passable
        .iter()
        .map(|&p| if p { Cell::Open } else { Cell::Wall })
        .collect();
    cells[cand.start] = Cell::Start;
    cells[cand.goal] = Cell::Goal;
    let question = MazeGrid { n, cells };
    let (answer, shortest) = label_answer(&question)
        .expect("an accepted candidate has one S, one G and a path between them");
    debug_assert_eq!(shortest, cand.shortest);
    GeneratedMaze {
        question,
        answer,
        shortest,
        walls: cand.walls,
        candidate: cand.index,
    }
}

/// Histogram of shortest-path lengths (moves -> number of mazes).
pub fn path_length_histogram(mazes: &[GeneratedMaze]) -> BTreeMap<usize, usize> {
    let mut h = BTreeMap::new();
    for m in mazes {
        *h.entry(m.shortest).or_insert(0) += 1;
    }
    h
}

// ---------------------------------------------------------------------------------------------
// CSV files: the Maze-Hard layout (`source,question,answer,rating`)
// ---------------------------------------------------------------------------------------------

/// The header of every Maze-Hard CSV.
pub const CSV_HEADER: [&str; 4] = ["source", "question", "answer", "rating"];

/// The `source` column written by [`generate_maze_csvs`].
pub const GENERATED_SOURCE: &str = "hrm-maze-generate";

/// One validated CSV row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeRecord {
    /// 1-based line in the CSV file.
    pub line: usize,
    /// The question grid.
    pub question: MazeGrid,
    /// The answer grid.
    pub answer: MazeGrid,
}

const CSV_HINT: &str = "a maze input folder holds train.csv and test.csv with the header \
                        `source,question,answer,rating` (make one with `hrm data maze-generate`)";

/// Reads and validates a Maze-Hard CSV: header, 4 fields per row, `N*N` characters of `# SGo`,
/// one `S` and one `G`, answer = question plus `o` on open cells, the same `N` on every row.
/// Errors name the file and line.
pub fn read_maze_csv(path: &std::path::Path) -> Result<Vec<MazeRecord>> {
    let mut reader = crate::csv::CsvReader::open(path, CSV_HINT)?;
    reader.expect_header(&CSV_HEADER)?;
    let mut rows: Vec<MazeRecord> = Vec::new();
    while let Some(rec) = reader.next_record()? {
        reader.expect_fields(&rec, 4)?;
        let at = |msg: String| DataError::line(path, rec.line, msg);
        let question = MazeGrid::parse(&rec.fields[1]).map_err(|m| at(format!("question: {m}")))?;
        let answer = MazeGrid::parse(&rec.fields[2]).map_err(|m| at(format!("answer: {m}")))?;
        validate_question(&question).map_err(at)?;
        validate_answer(&question, &answer).map_err(at)?;
        if let Some(first) = rows.first() {
            if first.question.side() != question.side() {
                return Err(at(format!(
                    "maze is {0}x{0} but line {1} is {2}x{2} (all mazes of a file must have one \
                     size)",
                    question.side(),
                    first.line,
                    first.question.side()
                )));
            }
        }
        rows.push(MazeRecord {
            line: rec.line,
            question,
            answer,
        });
    }
    if rows.is_empty() {
        return Err(DataError::line(path, 2, "no maze rows after the header"));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Builder: CSV folder -> dataset folder (sapientinc/HRM:dataset/build_maze_dataset.py)
// ---------------------------------------------------------------------------------------------

/// Options of `hrm data maze`.
#[derive(Clone, Debug)]
pub struct MazeBuildOptions {
    /// Folder holding `train.csv` and `test.csv`.
    pub input_dir: std::path::PathBuf,
    /// Dataset folder to create.
    pub output_dir: std::path::PathBuf,
    /// Add the 8 dihedral variants of every TRAIN maze as puzzles of one group (reference
    /// `--aug`, off by default and in the paper). The test split is never augmented.
    pub aug: bool,
    /// Keep a seeded random subset of this many train mazes (in file order).
    pub subsample_size: Option<usize>,
    /// Seed of the subsample draw.
    pub seed: u64,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Counts of one written split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeSplitReport {
    /// Mazes read (after subsampling).
    pub mazes: usize,
    /// Puzzles written (mazes x 8 with `--aug` on train).
    pub puzzles: usize,
    /// Examples written (= puzzles).
    pub examples: usize,
    /// Groups written (= mazes).
    pub groups: usize,
    /// Labels that [`check_path_grids`] finds valid and optimal.
    pub optimal_labels: usize,
    /// Histogram of shortest-path lengths (moves -> mazes).
    pub path_lengths: BTreeMap<usize, usize>,
}

/// What [`build_maze`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MazeBuildReport {
    /// The dataset folder.
    pub output_dir: std::path::PathBuf,
    /// Grid side `N` (`seq_len = N*N`).
    pub side: usize,
    /// The train split.
    pub train: MazeSplitReport,
    /// The test split.
    pub test: MazeSplitReport,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// `min / median / max` of a length histogram.
fn histogram_summary(h: &BTreeMap<usize, usize>) -> String {
    let total: usize = h.values().sum();
    let (Some(min), Some(max)) = (h.keys().next(), h.keys().next_back()) else {
        return "none".to_string();
    };
    let mut seen = 0;
    let median = h
        .iter()
        .find(|(_, &c)| {
            seen += c;
            2 * seen >= total
        })
        .map_or(*min, |(&l, _)| l);
    format!("min {min}, median {median}, max {max}")
}

impl fmt::Display for MazeBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} ({1}x{1} mazes)",
            self.output_dir.display(),
            self.side
        )?;
        for (name, s) in [("train", &self.train), ("test", &self.test)] {
            writeln!(
                f,
                "  {name:<5} mazes {:>7}  puzzles {:>7}  groups {:>7}  labels valid+optimal \
                 {}/{}  path length {}",
                s.mazes,
                s.puzzles,
                s.groups,
                s.optimal_labels,
                s.mazes,
                histogram_summary(&s.path_lengths)
            )?;
        }
        write!(f, "  took {:.1} s", self.seconds)
    }
}

/// Builds a Maze dataset folder from Maze-Hard CSVs (spec §5.3): tokens `# SGo` -> 1..5,
/// `seq_len = N*N`, vocab 6, PAD 0 = ignore label, one puzzle identifier (0) for everything,
/// `identifiers.json = ["<blank>"]`. Each maze is one group; with `aug` a train group holds the
/// 8 dihedral variants (ids 0..8 in order) as separate puzzles. Written atomically.
pub fn build_maze(opts: &MazeBuildOptions) -> Result<MazeBuildReport> {
    crate::error::require_dir(&opts.input_dir, CSV_HINT)?;
    if opts.subsample_size == Some(0) {
        return Err(DataError::option("--subsample-size", "must be at least 1"));
    }
    let t0 = std::time::Instant::now();
    let staging = crate::format::StagingDir::create(&opts.output_dir, opts.force)?;
    let mut side = None;
    let mut reports = Vec::new();
    for split in ["train", "test"] {
        let path = opts.input_dir.join(format!("{split}.csv"));
        let mut rows = read_maze_csv(&path)?;
        let n = rows[0].question.side();
        match side {
            None => side = Some(n),
            Some(s) if s != n => {
                return Err(DataError::line(
                    &path,
                    rows[0].line,
                    format!("mazes are {n}x{n} but train.csv has {s}x{s}"),
                ))
            }
            Some(_) => {}
        }
        if split == "train" {
            if let Some(k) = opts.subsample_size.filter(|&k| k < rows.len()) {
                // Seeded draw without replacement; kept in file order (the reference keeps
                // NumPy's unseeded draw order, which the sampler shuffles anyway).
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                let mut keep = rand::seq::index::sample(&mut rng, rows.len(), k).into_vec();
                keep.sort_unstable();
                rows = keep.into_iter().map(|i| rows[i].clone()).collect();
            }
        }
        let variants: &[Dihedral] = if split == "train" && opts.aug {
            &Dihedral::ALL
        } else {
            &[Dihedral::Identity]
        };
        reports.push(write_maze_split(staging.path(), split, &rows, variants)?);
    }
    crate::format::write_identifiers(
        staging.path(),
        &[crate::format::BLANK_IDENTIFIER.to_string()],
    )?;
    let output_dir = staging.commit()?;
    let test = reports
        .pop()
        .ok_or_else(|| DataError::option("--input-dir", "internal"))?;
    let train = reports
        .pop()
        .ok_or_else(|| DataError::option("--input-dir", "internal"))?;
    Ok(MazeBuildReport {
        output_dir,
        side: side.unwrap_or(0),
        train,
        test,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes one split: one group per maze, one puzzle (and example) per variant.
fn write_maze_split(
    dataset_dir: &std::path::Path,
    split: &str,
    rows: &[MazeRecord],
    variants: &[Dihedral],
) -> Result<MazeSplitReport> {
    let n = rows[0].question.side();
    let split_dir = dataset_dir.join(split);
    let mut writer = crate::format::SetWriter::create(&split_dir, "all", n * n, VOCAB_SIZE)?;
    let progress = crate::progress::Progress::new(format!("maze {split}"), rows.len() as u64);
    let mut optimal_labels = 0;
    let mut path_lengths = BTreeMap::new();
    for row in rows {
        let verdict = check_path_grids(&row.question, &row.answer);
        optimal_labels += usize::from(verdict.optimal);
        if let Some(l) = verdict.shortest {
            *path_lengths.entry(l).or_insert(0) += 1;
        }
        for &t in variants {
            writer.push_example(
                &row.question.transformed(t).to_tokens(),
                &row.answer.transformed(t).to_tokens(),
            )?;
            writer.end_puzzle(0)?;
        }
        writer.end_group()?;
        progress.inc(1);
    }
    progress.finish();
    let stats = writer.finish()?;
    let metadata = crate::format::DatasetMetadata {
        pad_id: i64::from(PAD_ID),
        ignore_label_id: Some(i64::from(PAD_ID)),
        blank_identifier_id: 0,
        vocab_size: VOCAB_SIZE,
        seq_len: n * n,
        num_puzzle_identifiers: 1,
        total_groups: stats.groups,
        // One example per puzzle, as the reference writes it.
        mean_puzzle_examples: 1.0,
        sets: vec!["all".to_string()],
    };
    crate::format::write_metadata(&split_dir, &metadata)?;
    Ok(MazeSplitReport {
        mazes: rows.len(),
        puzzles: stats.puzzles,
        examples: stats.examples,
        groups: stats.groups,
        optimal_labels,
        path_lengths,
    })
}

// ---------------------------------------------------------------------------------------------
// Generator front end: `hrm data maze-generate` writes Maze-Hard-format CSVs
// ---------------------------------------------------------------------------------------------

impl std::str::FromStr for GoalSampling {
    type Err = String;

    /// `exact` or `far-goal`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exact" => Ok(GoalSampling::Exact),
            "far-goal" => Ok(GoalSampling::FarGoal),
            _ => Err(format!(
                "unknown goal sampling {s:?} (expected `exact` or `far-goal`)"
            )),
        }
    }
}

impl fmt::Display for GoalSampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GoalSampling::Exact => "exact",
            GoalSampling::FarGoal => "far-goal",
        })
    }
}

/// Options of `hrm data maze-generate`.
#[derive(Clone, Debug)]
pub struct MazeGenerateOptions {
    /// Folder to create with `train.csv`, `test.csv` and `generation.json`.
    pub output_dir: std::path::PathBuf,
    /// Master seed.
    pub seed: u64,
    /// Grid side (default 30).
    pub size: usize,
    /// Mazes in `train.csv` (default 1000).
    pub train_count: usize,
    /// Mazes in `test.csv` (default 1000).
    pub test_count: usize,
    /// Override of the fewest walls (default `floor(size²/10)·3`).
    pub min_walls: Option<usize>,
    /// Override of the most walls (default `floor(size²/10)·5`).
    pub max_walls: Option<usize>,
    /// Override of the path bound (accept `L > min_path`; default 110 scaled by cells).
    pub min_path: Option<usize>,
    /// Goal sampling (default exact).
    pub sampling: GoalSampling,
    /// Give up after this many candidates (default 2e10).
    pub max_candidates: Option<u64>,
    /// Replace an existing output folder.
    pub force: bool,
}

impl MazeGenerateOptions {
    /// The generator configuration these options resolve to.
    pub fn config(&self) -> MazeGenConfig {
        let d = MazeGenConfig::for_size(self.size, self.seed);
        MazeGenConfig {
            min_walls: self.min_walls.unwrap_or(d.min_walls),
            max_walls: self.max_walls.unwrap_or(d.max_walls),
            min_path: self.min_path.unwrap_or(d.min_path),
            sampling: self.sampling,
            max_candidates: self.max_candidates.unwrap_or(d.max_candidates),
            ..d
        }
    }
}

/// What [`generate_maze_csvs`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MazeGenerateReport {
    /// The folder written.
    pub output_dir: std::path::PathBuf,
    /// The resolved configuration.
    pub config: MazeGenConfig,
    /// Rows of `train.csv`.
    pub train: usize,
    /// Rows of `test.csv`.
    pub test: usize,
    /// Candidate counters.
    pub stats: GenerationStats,
    /// Wall-clock seconds of the generation.
    pub seconds: f64,
    /// Shortest-path lengths of all mazes (moves -> count).
    pub path_lengths: BTreeMap<usize, usize>,
}

impl fmt::Display for MazeGenerateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "wrote {}: train.csv {} mazes, test.csv {} mazes, generation.json",
            self.output_dir.display(),
            self.train,
            self.test
        )?;
        writeln!(
            f,
            "  {0}x{0}, walls {1}..={2}, accepted L > {3}, goal sampling {4}, seed {5}",
            c.size, c.min_walls, c.max_walls, c.min_path, c.sampling, c.seed
        )?;
        let per_maze = self.stats.candidates as f64 / (self.train + self.test).max(1) as f64;
        writeln!(
            f,
            "  {} candidates ({per_maze:.0} per maze), {} duplicate layouts dropped, {:.1} s",
            self.stats.candidates, self.stats.duplicate_layouts, self.seconds
        )?;
        let hist: Vec<String> = self
            .path_lengths
            .iter()
            .map(|(l, n)| format!("{l}:{n}"))
            .collect();
        write!(
            f,
            "  path lengths ({}): {}",
            histogram_summary(&self.path_lengths),
            hist.join(" ")
        )
    }
}

/// Generates `train_count + test_count` mazes with [`generate_mazes`] and writes them as
/// Maze-Hard CSVs (`source` = `hrm-maze-generate`, `rating` = `L`): the first `train_count`
/// accepted mazes (in candidate order) are train, the rest test; no wall layout is shared.
/// Also writes `generation.json` (configuration, counters, histogram). Written atomically.
pub fn generate_maze_csvs(opts: &MazeGenerateOptions) -> Result<MazeGenerateReport> {
    let cfg = opts.config();
    cfg.validate()?;
    if opts.train_count == 0 || opts.test_count == 0 {
        return Err(DataError::option(
            "--train-count/--test-count",
            "must be at least 1",
        ));
    }
    let staging = crate::format::StagingDir::create(&opts.output_dir, opts.force)?;
    let total = opts.train_count + opts.test_count;
    let progress = crate::progress::Progress::new("maze-generate", total as u64);
    let t0 = std::time::Instant::now();
    let mut shown = 0;
    let (mazes, stats) = generate_mazes(&cfg, total, |accepted, _| {
        progress.inc((accepted - shown) as u64);
        shown = accepted;
    })?;
    progress.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let (train, test) = mazes.split_at(opts.train_count);
    for (name, part) in [("train.csv", train), ("test.csv", test)] {
        let path = staging.path().join(name);
        let mut w = crate::csv::CsvWriter::create(&path)?;
        w.write_record(&CSV_HEADER)?;
        for m in part {
            let rating = m.shortest.to_string();
            let fields = [
                GENERATED_SOURCE,
                &m.question.to_text(),
                &m.answer.to_text(),
                &rating,
            ];
            w.write_record(&fields)?;
        }
        w.finish()?;
    }
    let path_lengths = path_length_histogram(&mazes);
    let histogram_json: serde_json::Map<String, serde_json::Value> = path_lengths
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let info = serde_json::json!({
        "generator": "hrm data maze-generate (random walls, BFS, shortest path > min_path)",
        "tie_break": "BFS from G; walk from S to the first neighbour (up, down, left, right) \
                      one move closer to G",
        "size": cfg.size,
        "min_walls": cfg.min_walls,
        "max_walls": cfg.max_walls,
        "min_path": cfg.min_path,
        "sampling": cfg.sampling.to_string(),
        "seed": cfg.seed,
        "train": train.len(),
        "test": test.len(),
        "candidates": stats.candidates,
        "duplicate_layouts": stats.duplicate_layouts,
        "path_lengths": histogram_json,
    });
    let info_path = staging.path().join("generation.json");
    let text = serde_json::to_string_pretty(&info).map_err(|e| DataError::Json {
        path: info_path.clone(),
        err: e,
    })?;
    std::fs::write(&info_path, text + "\n").map_err(|e| DataError::io(&info_path, e))?;
    let output_dir = staging.commit()?;
    Ok(MazeGenerateReport {
        output_dir,
        config: cfg,
        train: train.len(),
        test: test.len(),
        stats,
        seconds,
        path_lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins rows into a CSV maze string.
    fn maze(rows: &[&str]) -> String {
        rows.concat()
    }

    #[test]
    fn alphabet_matches_the_reference_encoding() {
        for (k, ch) in "# SGo".chars().enumerate() {
            let cell = Cell::from_char(ch).unwrap();
            assert_eq!(cell.token() as usize, k + 1);
            assert_eq!(cell.to_char(), ch);
            assert_eq!(Cell::from_token(cell.token()), Some(cell));
        }
        assert_eq!(Cell::from_token(PAD_ID), None);
        assert_eq!(Cell::from_token(6), None);
        assert_eq!(Cell::from_char('.'), None);
        assert_eq!(VOCAB_SIZE, 6);
    }

    #[test]
    fn parse_rejects_bad_strings() {
        let e = MazeGrid::parse("S  G ").unwrap_err();
        assert!(e.contains("length 5"), "{e}");
        let e = MazeGrid::parse("S  x").unwrap_err();
        assert!(e.contains("'x'") && e.contains("row 1, col 1"), "{e}");
        let q = MazeGrid::parse("S  S").unwrap();
        assert!(validate_question(&q).unwrap_err().contains("2 `S`"));
        let q = MazeGrid::parse("S o ").unwrap();
        assert!(validate_question(&q).unwrap_err().contains("0 `G`"));
        let q = MazeGrid::parse("S oG").unwrap();
        assert!(validate_question(&q)
            .unwrap_err()
            .contains("`o` at row 1, col 0"));
        let q = MazeGrid::parse("S #G").unwrap();
        let a = MazeGrid::parse("So#G").unwrap();
        assert!(validate_answer(&q, &a).is_ok());
        let a = MazeGrid::parse("S oG").unwrap();
        let e = validate_answer(&q, &a).unwrap_err();
        assert!(e.contains("row 1, col 0") && e.contains("'#'"), "{e}");
    }

    #[test]
    fn tie_break_prefers_up_down_left_right() {
        // 3x3 open grid, S top-left, G bottom-right: every monotone path is shortest. From S the
        // walk goes down first (up does not exist), then down again, then right twice.
        let q = MazeGrid::parse(&maze(&["S  ", "   ", "  G"])).unwrap();
        let (a, l) = label_answer(&q).unwrap();
        assert_eq!(l, 4);
        assert_eq!(a.to_text(), maze(&["S  ", "o  ", "ooG"]));
        // Mirror case: G top-left, S bottom-right: up is preferred over left.
        let q = MazeGrid::parse(&maze(&["G  ", "   ", "  S"])).unwrap();
        let (a, _) = label_answer(&q).unwrap();
        assert_eq!(a.to_text(), maze(&["Goo", "  o", "  S"]));
        let v = check_path_grids(&q, &a);
        assert!(v.valid && v.optimal, "{v:?}");
    }

    #[test]
    fn bfs_counts_moves_and_marks_unreachable() {
        let q = MazeGrid::parse(&maze(&["S#  ", " #  ", " ###", "   G"])).unwrap();
        let d = bfs_distances(&q.passable(), 4, 0);
        assert_eq!(d[15], 6);
        assert_eq!(d[3], UNREACHABLE);
        assert_eq!(d[1], UNREACHABLE); // a wall
        let shut = MazeGrid::parse(&maze(&["S#", "#G"])).unwrap();
        assert!(label_answer(&shut)
            .unwrap_err()
            .contains("cannot be reached"));
    }

    /// A 5x5 maze with a single (snake) path of 16 moves.
    fn snake() -> (String, String) {
        let q = maze(&["S    ", "#### ", "     ", " ####", "    G"]);
        let a = maze(&["Soooo", "####o", "ooooo", "o####", "ooooG"]);
        (q, a)
    }

    #[test]
    fn check_path_accepts_the_label_and_rejects_faults() {
        let (q, a) = snake();
        let v = check_path_text(&q, &a);
        assert_eq!(
            v,
            PathVerdict {
                valid: true,
                optimal: true,
                length: Some(16),
                shortest: Some(16),
                reason: None
            }
        );
        assert_eq!(
            label_answer(&MazeGrid::parse(&q).unwrap())
                .unwrap()
                .0
                .to_text(),
            a
        );

        // Broken: one path cell missing.
        let broken = maze(&["Soooo", "####o", "oo oo", "o####", "ooooG"]);
        let v = check_path_text(&q, &broken);
        assert!(!v.valid && !v.optimal);
        assert_eq!(v.reason, Some(PathFault::Broken { at: (2, 3) }));

        // Through a wall.
        let walled = maze(&["Soooo", "###oo", "ooooo", "o####", "ooooG"]);
        let v = check_path_text(&q, &walled);
        assert_eq!(
            v.reason,
            Some(PathFault::CellChanged {
                cell: (1, 3),
                expected: '#',
                found: 'o'
            })
        );
        // The start overwritten.
        let moved = maze(&["ooooo", "####o", "ooooo", "o####", "ooooG"]);
        assert!(matches!(
            check_path_text(&q, &moved).reason,
            Some(PathFault::CellChanged { cell: (0, 0), .. })
        ));
    }

    #[test]
    fn check_path_judges_detours_branches_and_strays() {
        let q = maze(&["S  G", "    ", "    ", "    "]);
        let best = maze(&["SooG", "    ", "    ", "    "]);
        let v = check_path_text(&q, &best);
        assert!(v.valid && v.optimal && v.length == Some(3));

        // A valid detour through row 1: 5 moves against 3.
        let detour = maze(&["S  G", "oooo", "    ", "    "]);
        let v = check_path_text(&q, &detour);
        assert!(v.valid && !v.optimal, "{v:?}");
        assert_eq!(v.length, Some(5));
        assert_eq!(
            v.reason,
            Some(PathFault::NotShortest {
                length: 5,
                shortest: 3
            })
        );

        // A branch off the path.
        let branch = maze(&["SooG", " o  ", "    ", "    "]);
        assert_eq!(
            check_path_text(&q, &branch).reason,
            Some(PathFault::Branching { at: (0, 1) })
        );
        // A stray mark away from the path.
        let stray = maze(&["SooG", "    ", "    ", "   o"]);
        assert_eq!(
            check_path_text(&q, &stray).reason,
            Some(PathFault::StrayCells { count: 1 })
        );
        // No path at all.
        assert_eq!(
            check_path_text(&q, &q).reason,
            Some(PathFault::Broken { at: (0, 0) })
        );
        // A mark that touches the goal besides the path's last cell.
        let touch = maze(&["SooG", "   o", "    ", "    "]);
        assert_eq!(
            check_path_text(&q, &touch).reason,
            Some(PathFault::Branching { at: (0, 3) })
        );
        // A detour that touches itself: not an induced path, reported where it branches.
        let q2 = maze(&["S   ", "    ", "  G ", "    "]);
        let touch = maze(&["Sooo", "   o", "  Go", "  oo"]);
        assert_eq!(
            check_path_text(&q2, &touch).reason,
            Some(PathFault::Branching { at: (2, 3) })
        );
    }

    #[test]
    fn check_path_on_tokens_reports_bad_tokens_and_sizes() {
        let (q, a) = snake();
        let qt = MazeGrid::parse(&q).unwrap().to_tokens();
        let mut at = MazeGrid::parse(&a).unwrap().to_tokens();
        assert!(check_path(&qt, &at).optimal);
        at[7] = PAD_ID;
        assert_eq!(
            check_path(&qt, &at).reason,
            Some(PathFault::UnknownToken {
                cell: (1, 2),
                token: 0
            })
        );
        assert!(matches!(
            check_path(&qt, &at[..24]).reason,
            Some(PathFault::SizeMismatch { .. })
        ));
        let shut = MazeGrid::parse("S##G").unwrap().to_tokens();
        assert!(matches!(
            check_path(&shut, &shut).reason,
            Some(PathFault::BadQuestion(_))
        ));
    }

    #[test]
    fn dihedral_variants_keep_paths_valid_and_optimal() {
        let (q, a) = snake();
        let (q, a) = (MazeGrid::parse(&q).unwrap(), MazeGrid::parse(&a).unwrap());
        for t in Dihedral::ALL {
            let v = check_path_grids(&q.transformed(t), &a.transformed(t));
            assert!(v.valid && v.optimal, "{t}: {v:?}");
        }
    }

    fn small_config(sampling: GoalSampling, seed: u64) -> MazeGenConfig {
        MazeGenConfig {
            min_path: 15,
            sampling,
            ..MazeGenConfig::for_size(12, seed)
        }
    }

    #[test]
    fn generator_accepts_only_long_paths_with_valid_labels() {
        for sampling in [GoalSampling::Exact, GoalSampling::FarGoal] {
            let cfg = small_config(sampling, 3);
            assert_eq!((cfg.min_walls, cfg.max_walls), (42, 70));
            let (mazes, stats) = generate_mazes(&cfg, 120, |_, _| {}).unwrap();
            assert_eq!(mazes.len(), 120);
            assert!(stats.candidates >= 120);
            let mut layouts = HashSet::new();
            for m in &mazes {
                assert!(m.shortest > 15, "{sampling:?}: L = {}", m.shortest);
                assert!((42..=70).contains(&m.walls));
                assert_eq!(m.question.positions(Cell::Wall).len(), m.walls);
                let v = check_path_grids(&m.question, &m.answer);
                assert!(v.valid && v.optimal, "{v:?}");
                assert_eq!(v.length, Some(m.shortest));
                assert!(layouts.insert(m.question.passable()), "duplicate layout");
            }
            let hist = path_length_histogram(&mazes);
            assert_eq!(hist.values().sum::<usize>(), 120);
            assert!(*hist.keys().next().unwrap() > 15);
        }
    }

    #[test]
    fn generator_is_deterministic_across_thread_counts() {
        let cfg = small_config(GoalSampling::Exact, 11);
        let (a, sa) = generate_mazes(&cfg, 40, |_, _| {}).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (b, sb) = pool
            .install(|| generate_mazes(&cfg, 40, |_, _| {}))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = generate_mazes(&small_config(GoalSampling::Exact, 12), 40, |_, _| {}).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn generator_rejects_impossible_settings() {
        let mut cfg = MazeGenConfig::for_size(10, 0);
        cfg.min_path = 95;
        let e = generate_mazes(&cfg, 1, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("--min-path"), "{e}");
        let mut cfg = MazeGenConfig::for_size(10, 0);
        cfg.min_walls = 60;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--min-walls"));
        let mut cfg = MazeGenConfig::for_size(10, 0);
        cfg.max_candidates = 10;
        cfg.min_path = 60;
        let e = generate_mazes(&cfg, 1, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("gave up after 10 candidates"), "{e}");
    }

    #[test]
    fn default_config_is_the_maze_hard_recipe() {
        let cfg = MazeGenConfig::for_size(30, 0);
        assert_eq!(
            (cfg.min_walls, cfg.max_walls, cfg.min_path),
            (270, 450, 110)
        );
        assert_eq!(MazeGenConfig::for_size(12, 0).min_path, 17);
    }
}
