//! The path checker: the paper's "valid and optimal" criterion for a predicted maze answer.

use std::fmt;

use super::grid::{validate_question, Cell, MazeGrid};
use super::path::{bfs_distances, neighbours, UNREACHABLE};
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dihedral::Dihedral;
    use crate::maze::test_util::maze;
    use crate::maze::{label_answer, PAD_ID};

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
}
