//! BFS over a maze and the labelled shortest path (the tie-break of the [`crate::maze`] docs).

use super::grid::{validate_question, Cell, MazeGrid};

/// Distance value for a cell that BFS did not reach.
pub const UNREACHABLE: u32 = u32::MAX;
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::maze::check_path_grids;
    use crate::maze::test_util::maze;

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
}
