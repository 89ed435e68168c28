//! Local generator of Sudoku-Extreme-format CSVs (`source,question,answer,rating`).
//!
//! The HF dataset sapientinc/sudoku-extreme is not reachable, and sapientinc/HRM does not
//! include the code that prepared its CSVs, so this rebuilds an equivalent from real puzzle lists
//! ("Option A" of docs/data.md, "Sudoku-Extreme"), plus an optional from-scratch mode
//! ("Option B" there):
//!
//! 1. **Pool**: puzzle lists, one 81-character puzzle per line (`.` or `0` blanks, `#` lines are
//!    comments, text after the first whitespace is ignored), e.g. the tdoku lists in
//!    `../shared/data/sudoku/tdoku`. A folder given as input expands to its files whose names start
//!    with `puzzles`, in name order. `limit` keeps the first N puzzles of each list. Exact
//!    duplicates (within or across lists) are dropped, first occurrence wins (equivalent
//!    puzzles across lists are rare and not searched for).
//! 2. **Split by original puzzle**, per list (stratified): a seeded permutation of the list, the
//!    first `round(n * test_fraction)` go to test. No transform of a test puzzle is in train.
//! 3. **One random symmetry per puzzle** (the group `shuffle_sudoku` uses: digits, transpose,
//!    bands/stacks, rows/columns within them).
//! 4. **Solve and rate** with [`super::solver`]: the solution must be unique (puzzles with
//!    0 or 2+ solutions are dropped and counted); `rating` follows
//!    [`super::solver::RATING_RULE`] on the transformed puzzle.
//! 5. **From scratch** (`from_scratch = Some(n)`): `n` random minimal puzzles (random complete
//!    grid, then clues removed in random order while the solution stays unique), optionally
//!    improved by a hill climb of `hill_climb_steps` moves (remove, add or move one clue; keep
//!    the move if the puzzle stays unique and its rating rises, or stays equal without adding
//!    a clue). Source `scratch`.
//! 6. **Write** `train.csv` and `test.csv` (rows shuffled with a seeded permutation so sources
//!    are interleaved) and `generation.json` (options, per-source statistics, rating rule).
//!
//! Every puzzle uses its own RNG stream (index in the job list), and the jobs run in parallel
//! with rayon and are collected in order, so the output is byte-identical for a given seed
//! whatever the thread count.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::solver::{analyze, random_solution, RATING_RULE};
use super::{grid_to_string, parse_grid, Grid, SudokuTransform, CSV_HEADER};
use crate::csv::CsvWriter;
use crate::error::{DataError, Result};
use crate::format::{to_python_json, StagingDir};
use crate::progress::Progress;

/// Source name of from-scratch puzzles.
pub const SCRATCH_SOURCE: &str = "scratch";

/// Options of `hrm data sudoku-generate`.
#[derive(Debug, Clone, PartialEq)]
pub struct SudokuGenerateOptions {
    /// Folder to create (holds train.csv, test.csv, generation.json).
    pub output_dir: PathBuf,
    /// Seed of every random choice.
    pub seed: u64,
    /// Puzzle-list files, or folders (expanded to their `puzzles*` files).
    pub inputs: Vec<PathBuf>,
    /// Fraction of each list (and of the scratch puzzles) that goes to test.
    pub test_fraction: f64,
    /// Keep at most this many puzzles of each list (the first ones).
    pub limit: Option<usize>,
    /// Also make this many random minimal puzzles.
    pub from_scratch: Option<usize>,
    /// Hill-climb moves per from-scratch puzzle (0 = plain random minimal puzzles).
    pub hill_climb_steps: usize,
    /// From-scratch puzzles with exactly this many blanks (unique solution) instead of minimal
    /// ones: easier puzzles for small models and CPU runs (20-40 blanks: mostly singles).
    pub blanks: Option<usize>,
    /// Replace an existing output folder.
    pub force: bool,
}

impl SudokuGenerateOptions {
    /// Options with the defaults of the command line (test fraction 0.1, no limit, no scratch
    /// puzzles) for the given inputs.
    pub fn new(output_dir: PathBuf, inputs: Vec<PathBuf>, seed: u64) -> Self {
        SudokuGenerateOptions {
            output_dir,
            seed,
            inputs,
            test_fraction: 0.1,
            limit: None,
            from_scratch: None,
            hill_climb_steps: 0,
            blanks: None,
            force: false,
        }
    }
}

/// Statistics of one source (a list file, or `scratch`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStats {
    /// Source name (file name of the list).
    pub source: String,
    /// Puzzles read (after `limit`).
    pub read: usize,
    /// Dropped as exact duplicates of an earlier puzzle.
    pub duplicates: usize,
    /// Dropped because they do not have exactly one solution.
    pub not_unique: usize,
    /// Rows written to train.csv.
    pub train: usize,
    /// Rows written to test.csv.
    pub test: usize,
    /// Mean rating of the written rows.
    pub mean_rating: f64,
    /// Median rating.
    pub median_rating: u64,
    /// Largest rating.
    pub max_rating: u64,
    /// Rows solved by propagation alone (rating 0).
    pub zero_rating: usize,
    /// Mean number of givens.
    pub mean_givens: f64,
}

/// What a generation run produced (also written as `generation.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateReport {
    /// The output folder.
    pub output_dir: PathBuf,
    /// Per-source statistics, in input order (scratch last).
    pub sources: Vec<SourceStats>,
    /// Rows of train.csv.
    pub train_rows: usize,
    /// Rows of test.csv.
    pub test_rows: usize,
    /// The rating rule (see [`RATING_RULE`]).
    pub rating_rule: String,
    /// Seed used.
    pub seed: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for GenerateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote {} ({} train + {} test rows) in {:.1} s",
            self.output_dir.display(),
            self.train_rows,
            self.test_rows,
            self.seconds
        )?;
        writeln!(
            f,
            "  {:<34} {:>7} {:>7} {:>7} {:>11} {:>7} {:>7} {:>7}",
            "source", "train", "test", "dropped", "mean rating", "median", "max", "givens"
        )?;
        for s in &self.sources {
            writeln!(
                f,
                "  {:<34} {:>7} {:>7} {:>7} {:>11.2} {:>7} {:>7} {:>7.1}",
                s.source,
                s.train,
                s.test,
                s.duplicates + s.not_unique,
                s.mean_rating,
                s.median_rating,
                s.max_rating,
                s.mean_givens
            )?;
        }
        write!(f, "  rating rule: {}", self.rating_rule)
    }
}

/// Reads a puzzle list (see the module docs for the format). Errors name the file and line.
pub fn read_puzzle_list(path: &Path, limit: Option<usize>) -> Result<Vec<Grid>> {
    let text = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::not_found(
                path,
                "puzzle lists are text files with one 81-char puzzle per line",
            )
        } else {
            DataError::io(path, e)
        }
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        DataError::line(
            path,
            1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            "not valid UTF-8",
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let puzzle = line.split_whitespace().next().unwrap_or("");
        let g = parse_grid(puzzle, true)
            .map_err(|m| DataError::line(path, i + 1, format!("puzzle {m}")))?;
        out.push(g);
    }
    if out.is_empty() {
        return Err(DataError::item(path, "content", "holds no puzzles"));
    }
    Ok(out)
}

/// Expands the inputs: a folder becomes its `puzzles*` files in name order.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::not_found(p, "--inputs takes puzzle-list files or folders of them")
            } else {
                DataError::io(p, e)
            }
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| DataError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("puzzles"))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(DataError::item(
                    p,
                    "folder",
                    "holds no puzzle lists (files named puzzles*)",
                ));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// A random minimal puzzle for `solution`: clues removed in random order while the solution
/// stays unique (removing more clues never restores uniqueness, so the result is minimal).
pub fn minimal_puzzle<R: Rng + ?Sized>(solution: &Grid, rng: &mut R) -> Grid {
    let mut puzzle = *solution;
    let mut cells: Vec<usize> = (0..81).collect();
    for i in (1..81).rev() {
        let j = rng.random_range(0..=i);
        cells.swap(i, j);
    }
    for c in cells {
        let v = puzzle[c];
        puzzle[c] = 0;
        if analyze(&puzzle, 2).solutions != 1 {
            puzzle[c] = v;
        }
    }
    puzzle
}

/// A puzzle of `solution` with `blanks` blank cells and a unique solution: cells are blanked in
/// random order, skipping any whose removal would allow a second solution, until `blanks` are
/// blank (or, for more blanks than a minimal puzzle of this grid has, as many as possible).
pub fn puzzle_with_blanks<R: Rng + ?Sized>(solution: &Grid, blanks: usize, rng: &mut R) -> Grid {
    let mut puzzle = *solution;
    let mut cells: Vec<usize> = (0..81).collect();
    for i in (1..81).rev() {
        let j = rng.random_range(0..=i);
        cells.swap(i, j);
    }
    let mut removed = 0;
    for c in cells {
        if removed == blanks {
            break;
        }
        let v = puzzle[c];
        puzzle[c] = 0;
        if analyze(&puzzle, 2).solutions == 1 {
            removed += 1;
        } else {
            puzzle[c] = v;
        }
    }
    puzzle
}

/// Hill climb on the rating: `steps` random moves (remove a clue, add a clue of `solution`, or
/// move a clue), each kept if the puzzle stays unique and either its rating rises, or the rating
/// is unchanged and the move does not add a clue. Returns the puzzle and its rating.
pub fn hill_climb<R: Rng + ?Sized>(
    puzzle: &Grid,
    solution: &Grid,
    steps: usize,
    rng: &mut R,
) -> (Grid, u64) {
    let mut cur = *puzzle;
    let mut cur_rating = analyze(&cur, 2).guesses;
    for _ in 0..steps {
        let givens: Vec<usize> = (0..81).filter(|&c| cur[c] != 0).collect();
        let blanks: Vec<usize> = (0..81).filter(|&c| cur[c] == 0).collect();
        let mut cand = cur;
        match rng.random_range(0..3u8) {
            0 if !givens.is_empty() => cand[givens[rng.random_range(0..givens.len())]] = 0,
            1 if !blanks.is_empty() => {
                let c = blanks[rng.random_range(0..blanks.len())];
                cand[c] = solution[c];
            }
            _ if !givens.is_empty() && !blanks.is_empty() => {
                cand[givens[rng.random_range(0..givens.len())]] = 0;
                let c = blanks[rng.random_range(0..blanks.len())];
                cand[c] = solution[c];
            }
            _ => continue,
        }
        let a = analyze(&cand, 2);
        // Accept a higher rating; on a tie accept only moves that do not add clues, so the
        // walk explores plateaus without drifting towards easy, clue-heavy puzzles.
        let clues = |g: &Grid| g.iter().filter(|&&v| v != 0).count();
        let better =
            a.guesses > cur_rating || (a.guesses == cur_rating && clues(&cand) <= clues(&cur));
        if a.solutions == 1 && better {
            cur = cand;
            cur_rating = a.guesses;
        }
    }
    (cur, cur_rating)
}

/// One unit of work: a list puzzle or a from-scratch puzzle.
struct Job {
    source: usize,
    test: bool,
    /// `None` for from-scratch jobs.
    puzzle: Option<Grid>,
}

/// One output row.
struct Row {
    source: usize,
    test: bool,
    question: Grid,
    answer: Grid,
    rating: u64,
}

/// RNG streams: per-list split permutations use `STREAM_SPLIT + list index`, row order uses
/// `STREAM_ORDER`, and job i uses `STREAM_JOB + i`.
const STREAM_SPLIT: u64 = 1 << 32;
const STREAM_ORDER: u64 = (1 << 32) + (1 << 20);
const STREAM_JOB: u64 = 1 << 40;

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Marks `round(n * fraction)` of `n` items as test, chosen by a seeded permutation.
fn test_mask(n: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let k = ((n as f64) * fraction).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    let mut mask = vec![false; n];
    for &i in &idx[..k.min(n)] {
        mask[i] = true;
    }
    mask
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Generates `train.csv`, `test.csv` and `generation.json` in `opts.output_dir`.
pub fn generate_sudoku_csv(opts: &SudokuGenerateOptions) -> Result<GenerateReport> {
    let start = Instant::now();
    if !(0.0..=1.0).contains(&opts.test_fraction) {
        return Err(DataError::option(
            "--test-fraction",
            format!("{} is not in [0, 1]", opts.test_fraction),
        ));
    }
    if opts.inputs.is_empty() && opts.from_scratch.unwrap_or(0) == 0 {
        return Err(DataError::option(
            "--inputs",
            "give puzzle lists (e.g. ../shared/data/sudoku/tdoku) and/or --from-scratch N",
        ));
    }
    let files = expand_inputs(&opts.inputs)?;
    let mut names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string())
        })
        .collect();
    // Read the lists, drop exact duplicates, split each list by original puzzle.
    let mut seen: HashSet<Grid> = HashSet::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut stats: Vec<SourceStats> = Vec::new();
    let empty_stats = |source: String| SourceStats {
        source,
        read: 0,
        duplicates: 0,
        not_unique: 0,
        train: 0,
        test: 0,
        mean_rating: 0.0,
        median_rating: 0,
        max_rating: 0,
        zero_rating: 0,
        mean_givens: 0.0,
    };
    for (li, file) in files.iter().enumerate() {
        let list = read_puzzle_list(file, opts.limit)?;
        let mut st = empty_stats(names[li].clone());
        st.read = list.len();
        let unique: Vec<Grid> = list.into_iter().filter(|g| seen.insert(*g)).collect();
        st.duplicates = st.read - unique.len();
        let mask = test_mask(
            unique.len(),
            opts.test_fraction,
            &mut rng_for(opts.seed, STREAM_SPLIT + li as u64),
        );
        jobs.extend(unique.into_iter().zip(mask).map(|(g, test)| Job {
            source: li,
            test,
            puzzle: Some(g),
        }));
        stats.push(st);
    }
    if let Some(n) = opts.from_scratch.filter(|&n| n > 0) {
        let li = files.len();
        names.push(SCRATCH_SOURCE.to_string());
        let mut st = empty_stats(SCRATCH_SOURCE.to_string());
        st.read = n;
        stats.push(st);
        let mask = test_mask(
            n,
            opts.test_fraction,
            &mut rng_for(opts.seed, STREAM_SPLIT + li as u64),
        );
        jobs.extend(mask.into_iter().map(|test| Job {
            source: li,
            test,
            puzzle: None,
        }));
    }
    let staging = StagingDir::create(&opts.output_dir, opts.force)?;

    // Transform, solve and rate in parallel; collect in job order (deterministic).
    let progress = Progress::new("sudoku-generate: solving and rating", jobs.len() as u64);
    let steps = opts.hill_climb_steps;
    let rows: Vec<Option<Row>> = jobs
        .par_iter()
        .enumerate()
        .map(|(i, job)| {
            let mut rng = rng_for(opts.seed, STREAM_JOB + i as u64);
            let row = match job.puzzle {
                Some(g) => {
                    let t = SudokuTransform::random(&mut rng);
                    let q = t.apply(&g);
                    let a = analyze(&q, 2);
                    match (a.solutions, a.solution) {
                        (1, Some(sol)) => Some(Row {
                            source: job.source,
                            test: job.test,
                            question: q,
                            answer: sol,
                            rating: a.guesses,
                        }),
                        _ => None,
                    }
                }
                None => {
                    let sol = random_solution(&mut rng);
                    let mut q = match opts.blanks {
                        Some(b) => puzzle_with_blanks(&sol, b, &mut rng),
                        None => minimal_puzzle(&sol, &mut rng),
                    };
                    let rating = if steps > 0 {
                        let (h, r) = hill_climb(&q, &sol, steps, &mut rng);
                        q = h;
                        r
                    } else {
                        analyze(&q, 2).guesses
                    };
                    Some(Row {
                        source: job.source,
                        test: job.test,
                        question: q,
                        answer: sol,
                        rating,
                    })
                }
            };
            progress.inc(1);
            row
        })
        .collect();
    progress.finish();

    // Statistics per source.
    let mut ratings: Vec<Vec<u64>> = vec![Vec::new(); stats.len()];
    let mut givens: Vec<u64> = vec![0; stats.len()];
    let mut train: Vec<&Row> = Vec::new();
    let mut test: Vec<&Row> = Vec::new();
    for (job, row) in jobs.iter().zip(&rows) {
        match row {
            None => stats[job.source].not_unique += 1,
            Some(r) => {
                ratings[r.source].push(r.rating);
                givens[r.source] += r.question.iter().filter(|&&v| v != 0).count() as u64;
                if r.test {
                    stats[r.source].test += 1;
                    test.push(r);
                } else {
                    stats[r.source].train += 1;
                    train.push(r);
                }
            }
        }
    }
    for (st, (rs, g)) in stats.iter_mut().zip(ratings.iter_mut().zip(&givens)) {
        let n = rs.len().max(1) as f64;
        st.mean_rating = rs.iter().sum::<u64>() as f64 / n;
        st.max_rating = rs.iter().copied().max().unwrap_or(0);
        st.zero_rating = rs.iter().filter(|&&r| r == 0).count();
        st.mean_givens = *g as f64 / n;
        st.median_rating = median(rs);
    }
    if train.is_empty() && test.is_empty() {
        return Err(DataError::option(
            "--inputs",
            "no puzzle with a unique solution was found",
        ));
    }

    // Interleave sources: write each split in a seeded random order.
    let mut order_rng = rng_for(opts.seed, STREAM_ORDER);
    for (split, list) in [("train", &mut train), ("test", &mut test)] {
        for i in (1..list.len()).rev() {
            let j = order_rng.random_range(0..=i);
            list.swap(i, j);
        }
        let path = staging.path().join(format!("{split}.csv"));
        let mut w = CsvWriter::create(&path)?;
        w.write_record(&CSV_HEADER)?;
        for r in list.iter() {
            let answer: String = r.answer.iter().map(|&v| (b'0' + v) as char).collect();
            w.write_record(&[
                names[r.source].as_str(),
                &grid_to_string(&r.question),
                &answer,
                &r.rating.to_string(),
            ])?;
        }
        w.finish()?;
    }
    let mut report = GenerateReport {
        output_dir: opts.output_dir.clone(),
        sources: stats,
        train_rows: train.len(),
        test_rows: test.len(),
        rating_rule: RATING_RULE.to_string(),
        seed: opts.seed,
        seconds: 0.0,
    };
    // generation.json: the report without the wall time (so reruns are byte-identical) plus
    // the options.
    #[derive(Serialize)]
    struct Record<'a> {
        seed: u64,
        inputs: Vec<String>,
        test_fraction: f64,
        limit: Option<usize>,
        from_scratch: Option<usize>,
        hill_climb_steps: usize,
        train_rows: usize,
        test_rows: usize,
        rating_rule: &'a str,
        sources: &'a [SourceStats],
    }
    let record = Record {
        seed: opts.seed,
        inputs: names.clone(),
        test_fraction: opts.test_fraction,
        limit: opts.limit,
        from_scratch: opts.from_scratch,
        hill_climb_steps: opts.hill_climb_steps,
        train_rows: report.train_rows,
        test_rows: report.test_rows,
        rating_rule: RATING_RULE,
        sources: &report.sources,
    };
    let json_path = staging.path().join("generation.json");
    let text = to_python_json(&record).map_err(|err| DataError::Json {
        path: json_path.clone(),
        err,
    })?;
    std::fs::write(&json_path, text).map_err(|e| DataError::io(&json_path, e))?;
    report.output_dir = staging.commit()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sudoku::is_valid_solution;

    #[test]
    fn puzzles_with_blanks_are_unique_with_the_requested_blanks() {
        let mut rng = rng_for(5, 0);
        for b in [10, 30, 45] {
            let sol = random_solution(&mut rng);
            let q = puzzle_with_blanks(&sol, b, &mut rng);
            assert_eq!(q.iter().filter(|&&v| v == 0).count(), b);
            let a = analyze(&q, 2);
            assert_eq!(a.solutions, 1);
            assert_eq!(a.solution, Some(sol));
        }
    }

    #[test]
    fn minimal_puzzles_are_unique_and_minimal() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..3 {
            let sol = random_solution(&mut rng);
            let p = minimal_puzzle(&sol, &mut rng);
            let a = analyze(&p, 2);
            assert_eq!(a.solutions, 1);
            assert_eq!(a.solution, Some(sol));
            for c in (0..81).filter(|&c| p[c] != 0) {
                let mut q = p;
                q[c] = 0;
                assert_eq!(analyze(&q, 2).solutions, 2, "clue {c} is redundant");
            }
            let (h, r) = hill_climb(&p, &sol, 30, &mut rng);
            let a = analyze(&h, 2);
            assert_eq!(a.solutions, 1);
            assert_eq!(a.guesses, r);
            assert!(r >= analyze(&p, 2).guesses);
            assert!(is_valid_solution(&sol));
        }
    }

    #[test]
    fn test_mask_is_seeded_and_exact() {
        let m = test_mask(101, 0.1, &mut rng_for(1, 5));
        assert_eq!(m.iter().filter(|&&x| x).count(), 10);
        assert_eq!(m, test_mask(101, 0.1, &mut rng_for(1, 5)));
        assert_ne!(m, test_mask(101, 0.1, &mut rng_for(2, 5)));
    }

    #[test]
    fn puzzle_list_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("puzzles_x");
        let good = "1".repeat(81);
        std::fs::write(&p, format!("# comment\n{good}\n{}\n", "2".repeat(80))).unwrap();
        let e = read_puzzle_list(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("puzzles_x: line 3: puzzle has 80 characters"),
            "{e}"
        );
        assert_eq!(read_puzzle_list(&p, Some(1)).unwrap().len(), 1);
        std::fs::write(
            &p,
            format!(
                "{good}  extra rating\n{}\n",
                "1".repeat(40) + "x" + &"1".repeat(40)
            ),
        )
        .unwrap();
        let e = read_puzzle_list(&p, None).unwrap_err().to_string();
        assert!(e.contains("line 2: puzzle character 41 is 'x'"), "{e}");
    }
}
