//! The random-wall maze generator: the Maze-Hard recipe (docs/data.md, "Maze-Hard"), labelled.

use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::grid::{Cell, MazeGrid};
use super::path::label_answer;
use crate::error::{DataError, Result};
/// How the goal of a candidate maze is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GoalSampling {
    /// Exact rejection sampling of the recipe: walls, then `S` and `G` uniform over free cells,
    /// accept iff `L > min_path`. One bidirectional BFS (stopped as soon as the two searches
    /// meet) per candidate; Maze-Hard 30x30 accepts roughly 1 candidate in 7e4.
    #[default]
    Exact,
    /// The shortcut of docs/data.md, "Maze-Hard": one BFS from `S`; if any cell is farther than
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::maze::check_path_grids;

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
