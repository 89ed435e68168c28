//! ARC (ARC-AGI-1 + ConceptARC, ARC-AGI-2, Mini-ARC): task parsing, split routing,
//! augmentation, the 30x30 token encoding, the dataset builder, and the scoring side
//! (crop, inverse augmentation, voting, pass@K, ARC-Prize submission JSON).
//!
//! Builder: mirrors sapientinc/HRM:dataset/build_arc_dataset.py (`arc_grid_to_np`,
//! `np_grid_to_seq_translational_augment`, `puzzle_hash`, `convert_single_arc_puzzle`,
//! `load_puzzles_arcagi`, `convert_dataset`); spec §5.4. Scoring: mirrors
//! sapientinc/HRM:arc_eval.ipynb (`crop`, `inverse_aug`, the vote in `test`); spec §6.3.
//!
//! Differences from the reference, all deliberate:
//! * Task discovery is recursive over each `--dataset-dirs` folder and sorted by path, so the
//!   order (and with it every identifier) is the same on every machine; the reference lists
//!   one level of sub-folders in file-system order and then shuffles with NumPy.
//! * A task's test pairs are held out (test split) when the task file sits in a folder named
//!   `evaluation` (the dataset folder itself or any folder below it), as in the reference; in
//!   addition `--eval-dirs` and `--test-from-train-fraction` can hold out tasks of folders
//!   without an `evaluation` folder (Mini-ARC), for quick runs.
//! * Augmented variants are de-duplicated by exact content (the sorted list of all pairs with
//!   their shapes), the reference's SHA-256 of the same content without the hash.
//! * Puzzle names are parsed from the right (`<task>_t<d>_<10 digits>`), so task ids that
//!   contain `_` (Mini-ARC) work; the reference splits at the first `_`.
//!
//! Encoding (30x30 canvas, row-major, `seq_len` 900, vocab 12): PAD 0, EOS 1, colour `c` ->
//! `c + 2`. A grid of `h x w` placed at `(r0, c0)` gets an EOS frame: row `r0 + h` (if < 30)
//! over columns `c0 .. c0 + w`, and column `c0 + w` (if < 30) over rows `r0 .. r0 + h`; the
//! corner `(r0 + h, c0 + w)` stays PAD.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dihedral::Dihedral;
use crate::error::{DataError, Result};
use crate::format::{self, DatasetMetadata, SetWriter, StagingDir, BLANK_IDENTIFIER};
use crate::progress::Progress;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

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
/// Number of ARC colours (0..=9).
pub const NUM_COLORS: usize = 10;
/// PAD + EOS + 10 colours.
pub const VOCAB_SIZE: usize = NUM_COLORS + 2;
/// Augmentation attempts per requested variant (reference `ARCAugmentRetriesFactor`).
pub const AUGMENT_RETRIES_FACTOR: usize = 5;
/// The K of pass@K that the reference reports.
pub const PASS_AT_K: [usize; 5] = [1, 2, 10, 100, 1000];

// ---------------------------------------------------------------------------------------------
// Grids, colour maps, augmentations
// ---------------------------------------------------------------------------------------------

/// A rectangular grid of colours (0..=9), row-major. A 0x0 grid is allowed (an empty crop).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grid {
    h: usize,
    w: usize,
    cells: Vec<u8>,
}

impl Grid {
    /// A grid of shape `h x w` from row-major cells (`None` if `cells.len() != h * w` or a
    /// dimension is 0 while the other is not).
    pub fn new(h: usize, w: usize, cells: Vec<u8>) -> Option<Grid> {
        let consistent = cells.len() == h * w && ((h == 0) == (w == 0));
        consistent.then_some(Grid { h, w, cells })
    }

    /// A grid from rows (`None` if ragged).
    pub fn from_rows(rows: &[Vec<u8>]) -> Option<Grid> {
        let w = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != w) {
            return None;
        }
        Grid::new(rows.len(), w, rows.concat())
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.h
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.w
    }

    /// Row-major cells.
    pub fn cells(&self) -> &[u8] {
        &self.cells
    }

    /// Cell `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> u8 {
        self.cells[r * self.w + c]
    }

    /// The rows as vectors (the ARC JSON layout).
    pub fn to_rows(&self) -> Vec<Vec<u8>> {
        if self.w == 0 {
            return Vec::new();
        }
        self.cells.chunks(self.w).map(<[u8]>::to_vec).collect()
    }

    /// The grid under dihedral transform `t`.
    pub fn transformed(&self, t: Dihedral) -> Grid {
        let (h, w) = t.output_shape(self.h, self.w);
        Grid {
            h,
            w,
            cells: t.apply(&self.cells, self.h, self.w),
        }
    }

    /// The grid with every colour `c` replaced by `map[c]`.
    pub fn recolored(&self, map: &ColorMap) -> Grid {
        Grid {
            h: self.h,
            w: self.w,
            cells: self.cells.iter().map(|&c| map.apply(c)).collect(),
        }
    }
}

impl Serialize for Grid {
    /// A list of rows, as in ARC task files and submissions.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_rows().serialize(s)
    }
}

/// A permutation of the 10 colours: `map[old] = new` (the reference's `mapping` array; its
/// 10-digit string is the suffix of augmented puzzle names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColorMap([u8; NUM_COLORS]);

impl ColorMap {
    /// The identity map.
    pub fn identity() -> ColorMap {
        ColorMap([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    }

    /// A map from its table (`None` unless a permutation of 0..=9).
    pub fn from_table(table: [u8; NUM_COLORS]) -> Option<ColorMap> {
        let mut seen = [false; NUM_COLORS];
        for &c in &table {
            let slot = seen.get_mut(usize::from(c))?;
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        Some(ColorMap(table))
    }

    /// Parses the 10-digit form (`"0123456789"` = identity).
    pub fn from_digits(s: &str) -> Option<ColorMap> {
        let bytes = s.as_bytes();
        if bytes.len() != NUM_COLORS || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut table = [0u8; NUM_COLORS];
        for (t, b) in table.iter_mut().zip(bytes) {
            *t = b - b'0';
        }
        ColorMap::from_table(table)
    }

    /// The 10-digit form (index = old colour, digit = new colour).
    pub fn digits(&self) -> String {
        self.0.iter().map(|&c| char::from(b'0' + c)).collect()
    }

    /// The table.
    pub fn table(&self) -> [u8; NUM_COLORS] {
        self.0
    }

    /// A random map that keeps 0 (black) and permutes 1..=9 (reference augmentation).
    pub fn random(rng: &mut impl Rng) -> ColorMap {
        let mut table = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        table[1..].shuffle(rng);
        ColorMap(table)
    }

    /// The inverse permutation (the reference's `argsort` of the digit string).
    pub fn inverse(&self) -> ColorMap {
        let mut inv = [0u8; NUM_COLORS];
        for (old, &new) in self.0.iter().enumerate() {
            inv[usize::from(new)] = old as u8;
        }
        ColorMap(inv)
    }

    /// New colour of `c` (colours >= 10 are returned unchanged; valid grids have none).
    #[inline]
    pub fn apply(&self, c: u8) -> u8 {
        self.0.get(usize::from(c)).copied().unwrap_or(c)
    }
}

/// One augmentation: a colour map applied first, then a dihedral transform (the reference's
/// `dihedral_transform(mapping[grid], trans_id)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Augmentation {
    /// The dihedral transform.
    pub transform: Dihedral,
    /// The colour permutation.
    pub colors: ColorMap,
}

impl Augmentation {
    /// No change.
    pub fn identity() -> Augmentation {
        Augmentation {
            transform: Dihedral::Identity,
            colors: ColorMap::identity(),
        }
    }

    /// Applies the augmentation to a grid.
    pub fn apply(&self, g: &Grid) -> Grid {
        g.recolored(&self.colors).transformed(self.transform)
    }

    /// Undoes [`Augmentation::apply`]: inverse dihedral, then inverse colours.
    pub fn invert(&self, g: &Grid) -> Grid {
        g.transformed(self.transform.inverse())
            .recolored(&self.colors.inverse())
    }

    /// The name suffix `t<id>_<10 digits>`.
    pub fn suffix(&self) -> String {
        format!("t{}_{}", self.transform.id(), self.colors.digits())
    }
}

/// The puzzle name of a task variant: `<task>` for the original, `<task>_t<id>_<digits>` else.
pub fn puzzle_name(task_id: &str, aug: Option<&Augmentation>) -> String {
    match aug {
        None => task_id.to_string(),
        Some(a) => format!("{task_id}_{}", a.suffix()),
    }
}

/// Splits a puzzle name into its task id and augmentation (`None` for an original). The suffix
/// is parsed from the right and must be exactly `_t<0-7>_<permutation of 0-9>`; any other name
/// is an original task id (task ids may contain `_`).
pub fn parse_puzzle_name(name: &str) -> (&str, Option<Augmentation>) {
    let parsed = (|| {
        let (rest, digits) = name.rsplit_once('_')?;
        let (task, t) = rest.rsplit_once('_')?;
        let t = t.strip_prefix('t')?;
        if t.len() != 1 || task.is_empty() {
            return None;
        }
        let transform = Dihedral::from_id(t.parse().ok()?)?;
        let colors = ColorMap::from_digits(digits)?;
        Some((task, Augmentation { transform, colors }))
    })();
    match parsed {
        Some((task, aug)) => (task, Some(aug)),
        None => (name, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding of the 30x30 canvas
// ---------------------------------------------------------------------------------------------

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

/// Crop of spec §6.3 step 2 starting at `(r0, c0)`: scanning rows downwards, row `k` extends the
/// candidate width to the count of leading colour tokens (2..=11), capped by the previous rows';
/// the (rows, cols) pair of largest area wins (first one on ties). Tokens beyond the slice
/// count as PAD.
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

// ---------------------------------------------------------------------------------------------
// Task files
// ---------------------------------------------------------------------------------------------

/// One input/output pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pair {
    /// Input grid.
    pub input: Grid,
    /// Output grid.
    pub output: Grid,
}

impl Pair {
    /// The pair under an augmentation.
    pub fn augmented(&self, aug: &Augmentation) -> Pair {
        Pair {
            input: aug.apply(&self.input),
            output: aug.apply(&self.output),
        }
    }
}

/// One ARC task as read from its JSON file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcTask {
    /// Task id: the file's `name` field if present (reference), else the file stem.
    pub id: String,
    /// The task file.
    pub path: PathBuf,
    /// Demonstration pairs (always training data).
    pub train: Vec<Pair>,
    /// Test pairs (held out in the test split when `held_out`, training data otherwise).
    pub test: Vec<Pair>,
    /// Whether the test pairs go to the test split.
    pub held_out: bool,
}

#[derive(Deserialize)]
struct RawTask {
    train: Vec<RawPair>,
    test: Vec<RawPair>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawPair {
    input: Vec<Vec<i64>>,
    /// Absent in hidden test sets (only [`load_test_inputs`] accepts that).
    #[serde(default)]
    output: Option<Vec<Vec<i64>>>,
}

/// Validates one raw grid; `location` names the task, pair and side for errors.
fn grid_from_raw(path: &Path, location: &str, rows: &[Vec<i64>]) -> Result<Grid> {
    let h = rows.len();
    let w = rows.first().map_or(0, Vec::len);
    if h == 0 || w == 0 || h > MAX_GRID_SIZE || w > MAX_GRID_SIZE {
        return Err(DataError::item(
            path,
            location,
            format!("grid is {h}x{w}; ARC grids are 1..=30 in each dimension"),
        ));
    }
    let mut cells = Vec::with_capacity(h * w);
    for (r, row) in rows.iter().enumerate() {
        if row.len() != w {
            return Err(DataError::item(
                path,
                format!("{location}, row {r}"),
                format!(
                    "has {} cells but row 0 has {w} (grids must be rectangular)",
                    row.len()
                ),
            ));
        }
        for (c, &v) in row.iter().enumerate() {
            if !(0..NUM_COLORS as i64).contains(&v) {
                return Err(DataError::item(
                    path,
                    format!("{location}, row {r}, col {c}"),
                    format!("colour {v} is outside 0..=9"),
                ));
            }
            cells.push(v as u8);
        }
    }
    Ok(Grid { h, w, cells })
}

/// The task id of a parsed file: the `name` field if present, else the file stem.
fn task_id(path: &Path, raw: &RawTask) -> Result<String> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = raw.name.clone().unwrap_or(stem);
    if id.is_empty() {
        return Err(DataError::item(path, "name", "the task id is empty"));
    }
    if parse_puzzle_name(&id).1.is_some() {
        return Err(DataError::item(
            path,
            format!("task {id}"),
            "the task id ends like an augmented puzzle name (`_t<d>_<10 digits>`); rename the \
             file",
        ));
    }
    Ok(id)
}

fn raw_task(path: &Path, text: &str) -> Result<RawTask> {
    serde_json::from_str(text).map_err(|err| DataError::Json {
        path: path.to_path_buf(),
        err,
    })
}

/// Parses a task file's text. The id is the `name` field if present, else the file stem.
pub fn parse_task(path: &Path, text: &str, held_out: bool) -> Result<ArcTask> {
    let raw = raw_task(path, text)?;
    let id = task_id(path, &raw)?;
    let pairs = |kind: &str, raw_pairs: &[RawPair]| -> Result<Vec<Pair>> {
        if raw_pairs.is_empty() {
            return Err(DataError::item(
                path,
                format!("task {id}"),
                format!("has no `{kind}` pairs"),
            ));
        }
        raw_pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = |side: &str| format!("task {id}, {kind} pair {i}, {side}");
                let output = p
                    .output
                    .as_deref()
                    .ok_or_else(|| DataError::item(path, at("output"), "is missing"))?;
                Ok(Pair {
                    input: grid_from_raw(path, &at("input"), &p.input)?,
                    output: grid_from_raw(path, &at("output"), output)?,
                })
            })
            .collect()
    };
    let train = pairs("train", &raw.train)?;
    let test = pairs("test", &raw.test)?;
    Ok(ArcTask {
        id,
        path: path.to_path_buf(),
        train,
        test,
        held_out,
    })
}

/// Reads and parses one task file.
pub fn load_task(path: &Path, held_out: bool) -> Result<ArcTask> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_task(path, &text, held_out)
}

/// A task file's test inputs, for solving: the task id and each test input with its expected
/// output when the file has one (hidden test sets have none). The demonstrations are not read.
pub fn load_test_inputs(path: &Path) -> Result<(String, Vec<(Grid, Option<Grid>)>)> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let raw = raw_task(path, &text)?;
    let id = task_id(path, &raw)?;
    if raw.test.is_empty() {
        return Err(DataError::item(
            path,
            format!("task {id}"),
            "has no `test` pairs",
        ));
    }
    let tests = raw
        .test
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |side: &str| format!("task {id}, test pair {i}, {side}");
            let output = match &p.output {
                Some(o) => Some(grid_from_raw(path, &at("output"), o)?),
                None => None,
            };
            Ok((grid_from_raw(path, &at("input"), &p.input)?, output))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((id, tests))
}

/// Every `*.json` file under `dir` (recursively), sorted by path.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io(&d, e))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `file` (under `dataset_dir`) is held out by the reference's folder rule: the
/// dataset folder itself or a folder between it and the file is named `evaluation`.
fn in_evaluation_folder(dataset_dir: &Path, file: &Path) -> bool {
    let own_name = std::fs::canonicalize(dataset_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n == "evaluation"))
        .unwrap_or(false);
    let rel = file.strip_prefix(dataset_dir).unwrap_or(file);
    own_name
        || rel
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "evaluation"))
}

const DIR_HINT: &str = "pass folders of ARC task JSON files, e.g. \
                        ../shared/data/arc/ARC-AGI-2 or ../shared/data/arc/Mini-ARC";

/// Loads every task under `dataset_dirs` (held out by the `evaluation` folder rule) and under
/// `eval_dirs` (all held out), in argument order, each folder's files sorted by path. Task ids
/// must be unique.
pub fn discover_tasks(dataset_dirs: &[PathBuf], eval_dirs: &[PathBuf]) -> Result<Vec<ArcTask>> {
    let mut listed = Vec::new();
    for (dirs, all_held_out) in [(dataset_dirs, false), (eval_dirs, true)] {
        for dir in dirs {
            crate::error::require_dir(dir, DIR_HINT)?;
            let files = json_files(dir)?;
            if files.is_empty() {
                return Err(DataError::not_found(
                    dir.join("*.json"),
                    format!("no ARC task files in this folder; {DIR_HINT}"),
                ));
            }
            for f in files {
                let held = all_held_out || in_evaluation_folder(dir, &f);
                listed.push((f, held));
            }
        }
    }
    // Parse in parallel, report the first error in path order (deterministic messages).
    let parsed: Vec<Result<ArcTask>> = listed
        .par_iter()
        .map(|(f, held)| load_task(f, *held))
        .collect();
    let tasks: Vec<ArcTask> = parsed.into_iter().collect::<Result<_>>()?;
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for t in &tasks {
        if let Some(first) = seen.insert(&t.id, &t.path) {
            return Err(DataError::item(
                &t.path,
                format!("task {}", t.id),
                format!(
                    "the same task id is also in {} (puzzle identifiers are per task id; pass \
                     only one of the two folders)",
                    first.display()
                ),
            ));
        }
    }
    Ok(tasks)
}

// ---------------------------------------------------------------------------------------------
// Augmentation and per-task encoding
// ---------------------------------------------------------------------------------------------

/// Canonical content of a task variant for duplicate rejection: every pair (all splits) as
/// `[h_in, w_in, cells.., h_out, w_out, cells..]`, sorted, concatenated. Two variants with the
/// same multiset of pairs are duplicates (the reference's sorted per-pair hashes).
fn variant_key(pairs: &[Pair]) -> Vec<u8> {
    let mut encoded: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| {
            let mut v = Vec::with_capacity(4 + p.input.cells.len() + p.output.cells.len());
            for g in [&p.input, &p.output] {
                v.push(g.h as u8);
                v.push(g.w as u8);
                v.extend_from_slice(&g.cells);
            }
            v
        })
        .collect();
    encoded.sort_unstable();
    encoded.concat()
}

/// The augmentations of one task: the identity first, then up to `num_aug` distinct variants
/// from at most `AUGMENT_RETRIES_FACTOR * num_aug` random draws (dihedral id uniform in 0..8,
/// then a colour map keeping 0). A draw whose content equals an earlier variant's is rejected.
pub fn task_augmentations(
    task: &ArcTask,
    num_aug: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Augmentation> {
    let all: Vec<Pair> = task.train.iter().chain(&task.test).cloned().collect();
    let mut keys = HashSet::new();
    keys.insert(variant_key(&all));
    let mut augs = vec![Augmentation::identity()];
    for _ in 0..AUGMENT_RETRIES_FACTOR * num_aug {
        if augs.len() > num_aug {
            break;
        }
        let transform = Dihedral::from_id(rng.random_range(0..8u8)).unwrap_or(Dihedral::Identity);
        let colors = ColorMap::random(rng);
        let aug = Augmentation { transform, colors };
        let pairs: Vec<Pair> = all.iter().map(|p| p.augmented(&aug)).collect();
        if keys.insert(variant_key(&pairs)) {
            augs.push(aug);
        }
    }
    augs
}

/// Rows of one split for one task: one entry per variant (puzzle), each holding the
/// concatenated input and label tokens of its pairs.
#[derive(Debug, Default)]
struct SplitRows {
    puzzles: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Everything the builder writes for one task.
#[derive(Debug)]
struct EncodedTask {
    /// Variant names (the original first).
    names: Vec<String>,
    train: SplitRows,
    /// Present only for held-out tasks.
    test: Option<SplitRows>,
}

/// Augments and encodes one task. The RNG is the task's own stream, so tasks can be encoded in
/// parallel with a deterministic result. Train-split pairs are translated (one random pair per
/// variant stays at (0, 0)); test-split pairs sit at (0, 0).
fn encode_task(task: &ArcTask, num_aug: usize, seed: u64, stream: u64) -> Result<EncodedTask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let augs = task_augmentations(task, num_aug, &mut rng);
    let train_pairs: Vec<&Pair> = if task.held_out {
        task.train.iter().collect()
    } else {
        task.train.iter().chain(&task.test).collect()
    };
    let encode = |g: &Grid, r0: usize, c0: usize| {
        encode_grid(g, r0, c0)
            .map_err(|m| DataError::item(&task.path, format!("task {}", task.id), m))
    };
    let mut names = Vec::with_capacity(augs.len());
    let mut train = SplitRows::default();
    let mut test = task.held_out.then(SplitRows::default);
    for (v, aug) in augs.iter().enumerate() {
        names.push(puzzle_name(&task.id, (v > 0).then_some(aug)));
        // Train split: translated pairs.
        let keep_at_origin = rng.random_range(0..train_pairs.len());
        let (mut inputs, mut labels) = (Vec::new(), Vec::new());
        for (i, p) in train_pairs.iter().enumerate() {
            let p = p.augmented(aug);
            let (r0, c0) = if i == keep_at_origin {
                (0, 0)
            } else {
                let max_h = p.input.h.max(p.output.h);
                let max_w = p.input.w.max(p.output.w);
                (
                    rng.random_range(0..=MAX_GRID_SIZE - max_h),
                    rng.random_range(0..=MAX_GRID_SIZE - max_w),
                )
            };
            inputs.extend(encode(&p.input, r0, c0)?);
            labels.extend(encode(&p.output, r0, c0)?);
        }
        train.puzzles.push((inputs, labels));
        // Test split: untranslated.
        if let Some(test) = test.as_mut() {
            let (mut inputs, mut labels) = (Vec::new(), Vec::new());
            for p in &task.test {
                let p = p.augmented(aug);
                inputs.extend(encode(&p.input, 0, 0)?);
                labels.extend(encode(&p.output, 0, 0)?);
            }
            test.puzzles.push((inputs, labels));
        }
    }
    Ok(EncodedTask { names, train, test })
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Options of `hrm data arc`.
#[derive(Clone, Debug)]
pub struct ArcBuildOptions {
    /// Folders of task JSON files (searched recursively); test pairs of tasks under a folder
    /// named `evaluation` are held out.
    pub dataset_dirs: Vec<PathBuf>,
    /// Extra folders whose tasks' test pairs are all held out.
    pub eval_dirs: Vec<PathBuf>,
    /// Dataset folder to create.
    pub output_dir: PathBuf,
    /// Augmented variants per task (reference default 1000).
    pub num_aug: usize,
    /// Seed (reference default 42).
    pub seed: u64,
    /// Also hold out the test pairs of this seeded fraction of the tasks that the folder rule
    /// keeps for training (0 = off; for sets without an `evaluation` folder such as Mini-ARC).
    pub test_from_train_fraction: f64,
    /// Replace an existing output folder.
    pub force: bool,
}

impl ArcBuildOptions {
    /// Reference defaults (`num_aug` 1000, seed 42) for the given folders.
    pub fn new(dataset_dirs: Vec<PathBuf>, output_dir: PathBuf) -> ArcBuildOptions {
        ArcBuildOptions {
            dataset_dirs,
            eval_dirs: Vec::new(),
            output_dir,
            num_aug: 1000,
            seed: 42,
            test_from_train_fraction: 0.0,
            force: false,
        }
    }
}

/// Counts of one written split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArcSplitReport {
    /// Groups (original tasks).
    pub groups: usize,
    /// Puzzles (task variants).
    pub puzzles: usize,
    /// Examples (pairs).
    pub examples: usize,
}

/// What [`build_arc`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcBuildReport {
    /// The dataset folder.
    pub output_dir: PathBuf,
    /// Tasks read.
    pub tasks: usize,
    /// Tasks whose test pairs are in the test split.
    pub held_out_tasks: usize,
    /// Puzzle identifiers including `<blank>`.
    pub num_identifiers: usize,
    /// The train split.
    pub train: ArcSplitReport,
    /// The test split.
    pub test: ArcSplitReport,
    /// Tasks that got fewer than `num_aug` augmented variants: (task id, variants incl. the
    /// original).
    pub short_tasks: Vec<(String, usize)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl fmt::Display for ArcBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {}: {} tasks ({} with held-out test pairs), {} puzzle identifiers",
            self.output_dir.display(),
            self.tasks,
            self.held_out_tasks,
            self.num_identifiers
        )?;
        for (name, s) in [("train", &self.train), ("test", &self.test)] {
            let mean = s.examples as f64 / s.puzzles.max(1) as f64;
            writeln!(
                f,
                "  {name:<5} groups {:>6}  puzzles {:>9}  examples {:>10}  ({mean:.3} per puzzle)",
                s.groups, s.puzzles, s.examples
            )?;
        }
        if let Some((id, n)) = self.short_tasks.first() {
            writeln!(
                f,
                "  {} tasks got fewer augmented variants than requested (e.g. {id}: {n} \
                 including the original)",
                self.short_tasks.len()
            )?;
        }
        write!(f, "  took {:.1} s", self.seconds)
    }
}

/// Stream id of the hold-out draw (task streams are `0..tasks`).
const HOLDOUT_STREAM: u64 = u64::MAX;

/// Tasks encoded in parallel before being written in order (bounds memory: a task with 1000
/// variants of 5 pairs is ~9 MB of tokens).
const CHUNK_TASKS: usize = 16;

/// Builds an ARC dataset folder (spec §5.4). See the module docs for the rules. The `.npy`
/// files are streamed, so memory stays bounded for `--num-aug 1000`. Written atomically.
pub fn build_arc(opts: &ArcBuildOptions) -> Result<ArcBuildReport> {
    let f = opts.test_from_train_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(DataError::option(
            "--test-from-train-fraction",
            "must be in [0, 1)",
        ));
    }
    if opts.dataset_dirs.is_empty() && opts.eval_dirs.is_empty() {
        return Err(DataError::option(
            "--dataset-dirs",
            "give at least one folder",
        ));
    }
    let t0 = std::time::Instant::now();
    let staging = StagingDir::create(&opts.output_dir, opts.force)?;
    let mut tasks = discover_tasks(&opts.dataset_dirs, &opts.eval_dirs)?;
    if f > 0.0 {
        let mut candidates: Vec<usize> = (0..tasks.len()).filter(|&i| !tasks[i].held_out).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(HOLDOUT_STREAM);
        candidates.shuffle(&mut rng);
        let n = (f * candidates.len() as f64).round() as usize;
        for &i in &candidates[..n] {
            tasks[i].held_out = true;
        }
    }
    let held_out_tasks = tasks.iter().filter(|t| t.held_out).count();
    if held_out_tasks == 0 {
        return Err(DataError::option(
            "--dataset-dirs",
            "no task is held out for the test split: none of the folders has an `evaluation` \
             folder; pass --eval-dirs DIR or --test-from-train-fraction F (e.g. 0.1)",
        ));
    }

    let mut train_w = SetWriter::create(&staging.path().join("train"), "all", SEQ_LEN, VOCAB_SIZE)?;
    let mut test_w = SetWriter::create(&staging.path().join("test"), "all", SEQ_LEN, VOCAB_SIZE)?;
    let mut names = vec![BLANK_IDENTIFIER.to_string()];
    let mut short_tasks = Vec::new();
    let progress = Progress::new("arc tasks", tasks.len() as u64);
    for (chunk_idx, chunk) in tasks.chunks(CHUNK_TASKS).enumerate() {
        let base = chunk_idx * CHUNK_TASKS;
        let encoded: Vec<EncodedTask> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, t)| encode_task(t, opts.num_aug, opts.seed, (base + i) as u64))
            .collect::<Result<_>>()?;
        for (task, enc) in chunk.iter().zip(encoded) {
            if enc.names.len() < opts.num_aug + 1 {
                short_tasks.push((task.id.clone(), enc.names.len()));
            }
            // Identifiers: one per variant, in task then variant order; the test split reuses
            // the train split's identifier of the same name (the reference's name -> id map).
            let first_id = names.len();
            names.extend(enc.names);
            for (v, (inputs, labels)) in enc.train.puzzles.iter().enumerate() {
                train_w.push_examples(inputs, labels)?;
                train_w.end_puzzle(identifier(first_id + v, &task.path)?)?;
            }
            train_w.end_group()?;
            if let Some(test) = enc.test {
                for (v, (inputs, labels)) in test.puzzles.iter().enumerate() {
                    test_w.push_examples(inputs, labels)?;
                    test_w.end_puzzle(identifier(first_id + v, &task.path)?)?;
                }
                test_w.end_group()?;
            }
            progress.inc(1);
        }
    }
    progress.finish();
    let mut reports = Vec::new();
    for (split, writer) in [("train", train_w), ("test", test_w)] {
        let stats = writer.finish()?;
        let metadata = DatasetMetadata {
            pad_id: i64::from(PAD),
            ignore_label_id: Some(i64::from(PAD)),
            blank_identifier_id: 0,
            vocab_size: VOCAB_SIZE,
            seq_len: SEQ_LEN,
            num_puzzle_identifiers: names.len(),
            total_groups: stats.groups,
            mean_puzzle_examples: stats.mean_puzzle_examples(),
            sets: vec!["all".to_string()],
        };
        format::write_metadata(&staging.path().join(split), &metadata)?;
        reports.push(ArcSplitReport {
            groups: stats.groups,
            puzzles: stats.puzzles,
            examples: stats.examples,
        });
    }
    format::write_identifiers(staging.path(), &names)?;
    let output_dir = staging.commit()?;
    let test = reports.pop().unwrap_or_default();
    let train = reports.pop().unwrap_or_default();
    Ok(ArcBuildReport {
        output_dir,
        tasks: tasks.len(),
        held_out_tasks,
        num_identifiers: names.len(),
        train,
        test,
        short_tasks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A puzzle identifier as the reference's int32.
fn identifier(id: usize, path: &Path) -> Result<i32> {
    i32::try_from(id).map_err(|_| {
        DataError::item(
            path,
            "puzzle identifiers",
            "more than 2^31-1 puzzle identifiers",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Scoring: ground truth, voting, pass@K, submission (arc_eval.ipynb)
// ---------------------------------------------------------------------------------------------

/// One held-out test input of a task, with its answer when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcTestCase {
    /// Task id.
    pub task_id: String,
    /// Position among the task's test inputs (0-based, file order).
    pub index: usize,
    /// The input grid.
    pub input: Grid,
    /// The expected output (`None` for hidden test sets: ranking only, no score).
    pub answer: Option<Grid>,
}

/// One model prediction on a test-split row.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcPrediction {
    /// The row's puzzle name (from `identifiers.json`), e.g. `007bbfc7_t3_0947382615`.
    pub puzzle_name: String,
    /// The row's input tokens (900).
    pub input: Vec<u8>,
    /// The argmax output tokens (900).
    pub predicted: Vec<u8>,
    /// The Q-halt logit at the final segment (confidence = sigmoid of it).
    pub q_halt_logit: f32,
}

/// A distinct candidate answer of one test input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedAnswer {
    /// The answer grid (augmentation undone).
    pub grid: Grid,
    /// Number of predictions that gave it.
    pub votes: usize,
    /// Mean sigmoid(q_halt_logit) of those predictions.
    pub mean_confidence: f64,
}

/// The ranked answers of one test input.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRanking {
    /// The test case.
    pub case: ArcTestCase,
    /// Candidates, best first: more votes first, then higher mean confidence, then first seen.
    pub ranked: Vec<RankedAnswer>,
    /// 0-based rank of the true answer among `ranked` (when known and present).
    pub correct_rank: Option<usize>,
}

/// Result of [`vote`].
#[derive(Clone, Debug, PartialEq)]
pub struct VoteReport {
    /// The K values scored.
    pub ks: Vec<usize>,
    /// Tasks solved at each K (every test input's answer within the top K).
    pub solved: Vec<usize>,
    /// Tasks scored (those whose every test input has a known answer).
    pub scored_tasks: usize,
    /// Rankings, grouped by task in the order the cases were given.
    pub tests: Vec<TestRanking>,
    /// Predictions used.
    pub predictions: usize,
}

impl VoteReport {
    /// pass@K as a fraction (None if K was not scored or no task was scored).
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        (self.scored_tasks > 0).then(|| self.solved[i] as f64 / self.scored_tasks as f64)
    }
}

/// Why predictions cannot be voted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// A prediction's task has no test case.
    #[error("prediction {row} ({name}): task {task:?} has no test inputs in the ground truth")]
    UnknownTask {
        /// Row of the prediction.
        row: usize,
        /// Its puzzle name.
        name: String,
        /// Its task id.
        task: String,
    },
    /// A prediction's (de-augmented) input matches none of its task's test inputs.
    #[error(
        "prediction {row} ({name}): after undoing the augmentation its input matches none of \
         the task's test inputs (predictions from another dataset?)"
    )]
    InputMismatch {
        /// Row of the prediction.
        row: usize,
        /// Its puzzle name.
        name: String,
    },
    /// Two test inputs of a task are identical, so votes cannot be assigned.
    #[error("task {task}: test inputs {first} and {second} are identical")]
    DuplicateInput {
        /// Task id.
        task: String,
        /// First index.
        first: usize,
        /// Second index.
        second: usize,
    },
}

/// Votes over predictions (spec §6.3 steps 4-6): each prediction's input and output are
/// cropped and de-augmented, matched to its task's test input, and counted; answers are ranked
/// by (votes, mean confidence) descending, ties kept in first-seen order (Python's stable
/// `sorted(reverse=True)`); a task is solved at K when every test input's answer is in its top
/// K. A test input without predictions has no candidates (not solved).
///
/// Callers drop padding rows (puzzle identifier 0) first, as step 1 of the notebook does.
pub fn vote(
    cases: &[ArcTestCase],
    predictions: &[ArcPrediction],
    ks: &[usize],
) -> std::result::Result<VoteReport, VoteError> {
    // Candidate accumulators per case: (grid, votes, confidence sum), in first-seen order.
    let mut acc: Vec<Vec<(Grid, usize, f64)>> = vec![Vec::new(); cases.len()];
    // Position of each distinct answer in `acc[case]` (thousands of votes per test input).
    let mut slot: Vec<HashMap<Grid, usize>> = vec![HashMap::new(); cases.len()];
    let mut lookup: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        let list = lookup.entry(&c.task_id).or_default();
        if let Some(&j) = list.iter().find(|&&j| cases[j].input == c.input) {
            return Err(VoteError::DuplicateInput {
                task: c.task_id.clone(),
                first: cases[j].index,
                second: c.index,
            });
        }
        list.push(i);
    }
    for (row, p) in predictions.iter().enumerate() {
        let (task, aug) = parse_puzzle_name(&p.puzzle_name);
        let aug = aug.unwrap_or_else(Augmentation::identity);
        let Some(candidates) = lookup.get(task) else {
            return Err(VoteError::UnknownTask {
                row,
                name: p.puzzle_name.clone(),
                task: task.to_string(),
            });
        };
        let input = aug.invert(&crop(&p.input));
        let Some(&case) = candidates.iter().find(|&&i| cases[i].input == input) else {
            return Err(VoteError::InputMismatch {
                row,
                name: p.puzzle_name.clone(),
            });
        };
        let answer = aug.invert(&crop(&p.predicted));
        let confidence = 1.0 / (1.0 + (-f64::from(p.q_halt_logit)).exp());
        match slot[case].get(&answer) {
            Some(&k) => {
                acc[case][k].1 += 1;
                acc[case][k].2 += confidence;
            }
            None => {
                slot[case].insert(answer.clone(), acc[case].len());
                acc[case].push((answer, 1, confidence));
            }
        }
    }
    let mut tests = Vec::with_capacity(cases.len());
    for (case, entries) in cases.iter().zip(acc) {
        let mut ranked: Vec<RankedAnswer> = entries
            .into_iter()
            .map(|(grid, votes, sum)| RankedAnswer {
                grid,
                votes,
                mean_confidence: sum / votes as f64,
            })
            .collect();
        // Stable sort, descending by (votes, mean confidence).
        ranked.sort_by(|a, b| {
            b.votes.cmp(&a.votes).then(
                b.mean_confidence
                    .partial_cmp(&a.mean_confidence)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        let correct_rank = case
            .answer
            .as_ref()
            .and_then(|ans| ranked.iter().position(|r| r.grid == *ans));
        tests.push(TestRanking {
            case: case.clone(),
            ranked,
            correct_rank,
        });
    }
    // Per task: solved at K iff every test input has its answer within the top K.
    let mut solved = vec![0usize; ks.len()];
    let mut scored_tasks = 0;
    let mut order: Vec<&str> = Vec::new();
    for c in cases {
        if !order.contains(&c.task_id.as_str()) {
            order.push(&c.task_id);
        }
    }
    for task in order {
        let tests_of: Vec<&TestRanking> = tests.iter().filter(|t| t.case.task_id == task).collect();
        if tests_of.iter().any(|t| t.case.answer.is_none()) {
            continue;
        }
        scored_tasks += 1;
        for (i, &k) in ks.iter().enumerate() {
            if tests_of
                .iter()
                .all(|t| t.correct_rank.is_some_and(|r| r < k))
            {
                solved[i] += 1;
            }
        }
    }
    Ok(VoteReport {
        ks: ks.to_vec(),
        solved,
        scored_tasks,
        tests,
        predictions: predictions.len(),
    })
}

/// The ground truth of a built test split (spec §6.3 step 3): every example of a puzzle whose
/// name is an original task id, cropped; in file order, indexed per task.
pub fn test_cases_from_split(
    split: &format::SplitData,
    identifiers: &[String],
) -> Result<Vec<ArcTestCase>> {
    let mut cases = Vec::new();
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for set in &split.sets {
        for p in 0..set.num_puzzles() {
            let id = set.puzzle_identifiers[p];
            let name = usize::try_from(id)
                .ok()
                .and_then(|i| identifiers.get(i))
                .ok_or_else(|| {
                    DataError::field(
                        split.dataset_dir.join(format::IDENTIFIERS_FILE),
                        format!("[{id}]"),
                        "puzzle identifier of the test split is missing from identifiers.json",
                    )
                })?;
            if id == 0 || parse_puzzle_name(name).1.is_some() {
                continue;
            }
            for e in set.puzzle_examples(p) {
                let index = per_task.entry(name.clone()).or_insert(0);
                cases.push(ArcTestCase {
                    task_id: name.clone(),
                    index: *index,
                    input: crop(set.inputs.row(e)),
                    answer: Some(crop(set.labels.row(e))),
                });
                *index += 1;
            }
        }
    }
    Ok(cases)
}

/// The test cases of held-out tasks read from task files (for scoring without a built split).
pub fn test_cases_from_tasks(tasks: &[ArcTask]) -> Vec<ArcTestCase> {
    tasks
        .iter()
        .filter(|t| t.held_out)
        .flat_map(|t| {
            t.test.iter().enumerate().map(|(index, p)| ArcTestCase {
                task_id: t.id.clone(),
                index,
                input: p.input.clone(),
                answer: Some(p.output.clone()),
            })
        })
        .collect()
}

/// #[derive(Serialize)] helper for one submission entry.
#[derive(Serialize)]
struct Attempts<'a> {
    attempt_1: &'a Grid,
    attempt_2: &'a Grid,
}

/// The ARC-Prize submission: `{"<task_id>": [{"attempt_1": grid, "attempt_2": grid}, ...]}`,
/// one entry per test input in index order; attempts are the top two ranked non-empty answers
/// (the first repeated if there is only one, `[[0]]` if there is none).
pub fn submission_json(report: &VoteReport) -> serde_json::Value {
    let fallback = Grid {
        h: 1,
        w: 1,
        cells: vec![0],
    };
    let mut by_task: std::collections::BTreeMap<&str, Vec<&TestRanking>> = Default::default();
    for t in &report.tests {
        by_task.entry(&t.case.task_id).or_default().push(t);
    }
    let mut out = serde_json::Map::new();
    for (task, mut tests) in by_task {
        tests.sort_by_key(|t| t.case.index);
        let entries: Vec<serde_json::Value> = tests
            .iter()
            .map(|t| {
                let mut top = t.ranked.iter().map(|r| &r.grid).filter(|g| g.h > 0);
                let first = top.next().unwrap_or(&fallback);
                let second = top.next().unwrap_or(first);
                serde_json::to_value(Attempts {
                    attempt_1: first,
                    attempt_2: second,
                })
                .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        out.insert(task.to_string(), serde_json::Value::Array(entries));
    }
    serde_json::Value::Object(out)
}

/// Writes [`submission_json`] to `path`.
pub fn write_submission(path: &Path, report: &VoteReport) -> Result<()> {
    let text = serde_json::to_string(&submission_json(report)).map_err(|err| DataError::Json {
        path: path.to_path_buf(),
        err,
    })?;
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}

impl fmt::Display for VoteReport {
    /// `pass@1 12.50% | pass@2 15.00% | ...` over the scored tasks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ks
            .iter()
            .zip(&self.solved)
            .map(|(k, s)| {
                let pct = if self.scored_tasks == 0 {
                    0.0
                } else {
                    100.0 * *s as f64 / self.scored_tasks as f64
                };
                format!("pass@{k} {pct:.2}% ({s}/{})", self.scored_tasks)
            })
            .collect();
        f.write_str(&parts.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_grid(rng: &mut ChaCha8Rng, max: usize) -> Grid {
        let h = rng.random_range(1..=max);
        let w = rng.random_range(1..=max);
        let cells = (0..h * w).map(|_| rng.random_range(0..10u8)).collect();
        Grid::new(h, w, cells).unwrap()
    }

    fn g(rows: &[&[u8]]) -> Grid {
        Grid::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn colour_maps_parse_invert_and_keep_black() {
        let m = ColorMap::from_digits("0947382615").unwrap();
        assert_eq!(m.digits(), "0947382615");
        assert_eq!(m.apply(1), 9);
        // Inverse = argsort of the digit string: new colour 9 came from old colour 1.
        assert_eq!(m.inverse().apply(9), 1);
        assert_eq!(m.inverse().inverse(), m);
        assert_eq!(ColorMap::from_digits("0123456788"), None); // not a permutation
        assert_eq!(ColorMap::from_digits("012345678"), None); // 9 digits
        assert_eq!(ColorMap::from_digits("01234567a9"), None);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let r = ColorMap::random(&mut rng);
            assert_eq!(r.apply(0), 0);
            assert!(ColorMap::from_table(r.table()).is_some());
        }
    }

    #[test]
    fn property_inverse_augmentation_recovers_every_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        for _ in 0..200 {
            let grid = random_grid(&mut rng, 30);
            for t in Dihedral::ALL {
                let aug = Augmentation {
                    transform: t,
                    colors: ColorMap::random(&mut rng),
                };
                let out = aug.apply(&grid);
                let swapped = (out.height(), out.width()) == (grid.width(), grid.height());
                if t.swaps_shape() {
                    assert!(swapped);
                } else {
                    assert_eq!((out.height(), out.width()), (grid.height(), grid.width()));
                }
                assert_eq!(aug.invert(&out), grid, "{aug:?}");
                // The colour map alone and the dihedral alone invert too.
                assert_eq!(
                    grid.recolored(&aug.colors).recolored(&aug.colors.inverse()),
                    grid
                );
                let moved = grid.transformed(t);
                assert_eq!(moved.transformed(t.inverse()), grid);
            }
        }
    }

    #[test]
    fn puzzle_names_round_trip_and_allow_underscores() {
        let aug = Augmentation {
            transform: Dihedral::Rot270,
            colors: ColorMap::from_digits("0947382615").unwrap(),
        };
        let name = puzzle_name("Tetris_l6ab7fu64lvutswrtbk", Some(&aug));
        assert_eq!(name, "Tetris_l6ab7fu64lvutswrtbk_t3_0947382615");
        assert_eq!(
            parse_puzzle_name(&name),
            ("Tetris_l6ab7fu64lvutswrtbk", Some(aug))
        );
        assert_eq!(parse_puzzle_name("007bbfc7"), ("007bbfc7", None));
        assert_eq!(parse_puzzle_name("a_b_c"), ("a_b_c", None));
        assert_eq!(
            parse_puzzle_name("x_t8_0123456789"),
            ("x_t8_0123456789", None)
        );
        assert_eq!(
            parse_puzzle_name("x_t1_0123456788"),
            ("x_t1_0123456788", None)
        );
        assert_eq!(
            parse_puzzle_name("_t1_0123456789"),
            ("_t1_0123456789", None)
        );
        assert_eq!(puzzle_name("abc", None), "abc");
    }

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

    fn task_json(train: &str, test: &str) -> String {
        format!("{{\"train\": [{train}], \"test\": [{test}]}}")
    }

    const OK_PAIR: &str = "{\"input\": [[1, 2], [3, 4]], \"output\": [[4]]}";

    #[test]
    fn parse_task_validates_grids_with_locations() {
        let p = Path::new("data/abc123.json");
        let t = parse_task(p, &task_json(OK_PAIR, OK_PAIR), false).unwrap();
        assert_eq!(t.id, "abc123");
        assert_eq!(t.train[0].input, g(&[&[1, 2], &[3, 4]]));
        let named = "{\"name\": \"xyz\", \"train\": [".to_string()
            + OK_PAIR
            + "], \"test\": ["
            + OK_PAIR
            + "]}";
        assert_eq!(parse_task(p, &named, true).unwrap().id, "xyz");

        let ragged = "{\"input\": [[1, 2], [3]], \"output\": [[4]]}";
        let e = parse_task(p, &task_json(OK_PAIR, ragged), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data/abc123.json") && e.contains("test pair 0, input, row 1"),
            "{e}"
        );
        assert!(e.contains("rectangular"), "{e}");

        let colour = "{\"input\": [[1, 2]], \"output\": [[4, 10]]}";
        let e = parse_task(p, &task_json(colour, OK_PAIR), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train pair 0, output, row 0, col 1") && e.contains("colour 10"),
            "{e}"
        );
        let negative = "{\"input\": [[-1]], \"output\": [[4]]}";
        let e = parse_task(p, &task_json(negative, OK_PAIR), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour -1"), "{e}");

        let big = format!(
            "{{\"input\": [{}], \"output\": [[1]]}}",
            vec!["[1]"; 31].join(",")
        );
        let e = parse_task(p, &task_json(&big, OK_PAIR), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("31x1"), "{e}");
        let empty = "{\"input\": [], \"output\": [[1]]}";
        let e = parse_task(p, &task_json(empty, OK_PAIR), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0x0"), "{e}");
        let e = parse_task(p, &task_json("", OK_PAIR), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `train` pairs"), "{e}");
        let e = parse_task(
            p,
            "{\"train\": [\n  {\"input\": [[1]],}\n], \"test\": []}",
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid JSON") && e.contains("line 2"), "{e}");
        // a pair without an output (only `hrm solve arc` reads test inputs without outputs)
        let no_output = "{\"input\": [[1]]}";
        let e = parse_task(p, &task_json(OK_PAIR, no_output), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test pair 0, output") && e.contains("missing"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hidden.json");
        std::fs::write(&file, task_json(OK_PAIR, no_output)).unwrap();
        let (id, tests) = load_test_inputs(&file).unwrap();
        assert_eq!(id, "hidden");
        assert_eq!(tests.len(), 1);
        assert_eq!(tests[0].0.cells(), &[1]);
        assert!(tests[0].1.is_none());
        let e = parse_task(
            Path::new("x_t1_0123456789.json"),
            &task_json(OK_PAIR, OK_PAIR),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("augmented puzzle name"), "{e}");
    }

    fn toy_task(held_out: bool) -> ArcTask {
        ArcTask {
            id: "toy".into(),
            path: PathBuf::from("toy.json"),
            train: vec![
                Pair {
                    input: g(&[&[1, 2, 0], &[0, 3, 0]]),
                    output: g(&[&[3, 2], &[0, 1], &[5, 5]]),
                },
                Pair {
                    input: g(&[&[4]]),
                    output: g(&[&[6, 7, 8, 9]]),
                },
            ],
            test: vec![Pair {
                input: g(&[&[1, 1], &[2, 2]]),
                output: g(&[&[2, 1]]),
            }],
            held_out,
        }
    }

    #[test]
    fn augmentations_are_distinct_and_start_with_the_original() {
        let task = toy_task(true);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let augs = task_augmentations(&task, 50, &mut rng);
        assert_eq!(augs.len(), 51);
        assert_eq!(augs[0], Augmentation::identity());
        let all: Vec<Pair> = task.train.iter().chain(&task.test).cloned().collect();
        let keys: HashSet<Vec<u8>> = augs
            .iter()
            .map(|a| variant_key(&all.iter().map(|p| p.augmented(a)).collect::<Vec<_>>()))
            .collect();
        assert_eq!(keys.len(), augs.len());

        // All-black grids look the same under every augmentation: only the original survives,
        // after the allowed 5 * num_aug attempts.
        let black = Pair {
            input: Grid::new(2, 2, vec![0; 4]).unwrap(),
            output: Grid::new(2, 2, vec![0; 4]).unwrap(),
        };
        let dull = ArcTask {
            train: vec![black.clone()],
            test: vec![black],
            ..toy_task(false)
        };
        assert_eq!(task_augmentations(&dull, 10, &mut rng).len(), 1);
    }

    #[test]
    fn encoded_task_routes_pairs_and_translates_train_only() {
        for held_out in [true, false] {
            let task = toy_task(held_out);
            let enc = encode_task(&task, 3, 9, 0).unwrap();
            assert_eq!(enc.names.len(), 4);
            assert_eq!(enc.names[0], "toy");
            let train_pairs = if held_out { 2 } else { 3 };
            for (v, (inputs, labels)) in enc.train.puzzles.iter().enumerate() {
                assert_eq!(inputs.len(), train_pairs * SEQ_LEN);
                let (_, aug) = parse_puzzle_name(&enc.names[v]);
                let aug = aug.unwrap_or_else(Augmentation::identity);
                let originals: Vec<&Pair> = task.train.iter().chain(&task.test).collect();
                let mut at_origin = 0;
                for (i, (x, y)) in inputs
                    .chunks(SEQ_LEN)
                    .zip(labels.chunks(SEQ_LEN))
                    .enumerate()
                {
                    assert_eq!(aug.invert(&decode_grid(x)), originals[i].input);
                    assert_eq!(aug.invert(&decode_grid(y)), originals[i].output);
                    at_origin += usize::from(x[0] != PAD && crop(x) == decode_grid(x));
                }
                assert!(at_origin >= 1, "one pair per variant stays at (0, 0)");
            }
            assert_eq!(enc.test.is_some(), held_out);
            if let Some(test) = &enc.test {
                for (v, (inputs, labels)) in test.puzzles.iter().enumerate() {
                    let aug = parse_puzzle_name(&enc.names[v]).1;
                    let aug = aug.unwrap_or_else(Augmentation::identity);
                    assert_eq!(aug.invert(&crop(inputs)), task.test[0].input);
                    assert_eq!(aug.invert(&crop(labels)), task.test[0].output);
                }
            }
            // Deterministic per (seed, stream).
            let again = encode_task(&task, 3, 9, 0).unwrap();
            assert_eq!(again.names, enc.names);
            assert_eq!(again.train.puzzles, enc.train.puzzles);
        }
    }

    /// A prediction row for `case` seen through augmentation `aug`, predicting `answer`.
    fn pred(task: &str, input: &Grid, aug: &Augmentation, answer: &Grid, q: f32) -> ArcPrediction {
        let name = if *aug == Augmentation::identity() {
            task.to_string()
        } else {
            puzzle_name(task, Some(aug))
        };
        ArcPrediction {
            puzzle_name: name,
            input: encode_grid(&aug.apply(input), 0, 0).unwrap(),
            predicted: encode_grid(&aug.apply(answer), 0, 0).unwrap(),
            q_halt_logit: q,
        }
    }

    #[test]
    fn vote_ranks_by_count_then_confidence_and_scores_pass_at_k() {
        let (in_a0, in_a1, in_b) = (g(&[&[1, 2]]), g(&[&[3], &[4]]), g(&[&[5, 6], &[7, 8]]));
        let (ans_a0, ans_a1, ans_b) = (g(&[&[2, 1]]), g(&[&[4, 3]]), g(&[&[8]]));
        let wrong = g(&[&[9, 9]]);
        let case = |task: &str, index, input: &Grid, answer: &Grid| ArcTestCase {
            task_id: task.into(),
            index,
            input: input.clone(),
            answer: Some(answer.clone()),
        };
        let cases = vec![
            case("task_a", 0, &in_a0, &ans_a0),
            case("task_a", 1, &in_a1, &ans_a1),
            case("b", 0, &in_b, &ans_b),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut aug = || Augmentation {
            transform: Dihedral::from_id(rng.random_range(0..8)).unwrap(),
            colors: ColorMap::random(&mut rng),
        };
        let id = Augmentation::identity();
        let preds = vec![
            // task_a / 0: right answer twice (through augmentations), wrong once -> rank 0.
            pred("task_a", &in_a0, &aug(), &ans_a0, 0.0),
            pred("task_a", &in_a0, &aug(), &ans_a0, 0.0),
            pred("task_a", &in_a0, &id, &wrong, 5.0),
            // task_a / 1: right and wrong once each; wrong is more confident -> rank 1.
            pred("task_a", &in_a1, &aug(), &ans_a1, -1.0),
            pred("task_a", &in_a1, &aug(), &wrong, 1.0),
            // b / 0: only wrong answers -> unsolved at every K.
            pred("b", &in_b, &aug(), &wrong, 0.0),
        ];
        let report = vote(&cases, &preds, &PASS_AT_K).unwrap();
        let ranks: Vec<Option<usize>> = report.tests.iter().map(|t| t.correct_rank).collect();
        assert_eq!(ranks, vec![Some(0), Some(1), None]);
        assert_eq!(report.tests[0].ranked[0].votes, 2);
        assert!((report.tests[0].ranked[0].mean_confidence - 0.5).abs() < 1e-12);
        // task_a needs both inputs: solved at K >= 2 only; b never.
        assert_eq!(report.solved, vec![0, 1, 1, 1, 1]);
        assert_eq!(report.scored_tasks, 2);
        assert_eq!(report.pass_at(2), Some(0.5));
        assert_eq!(report.pass_at(1), Some(0.0));
        assert_eq!(report.pass_at(3), None);
        assert!(report
            .to_string()
            .starts_with("pass@1 0.00% (0/2) | pass@2 50.00% (1/2)"));

        // Equal votes and confidence: first seen wins (Python's stable sort).
        let tie = vec![
            pred("b", &in_b, &id, &wrong, 0.0),
            pred("b", &in_b, &id, &ans_b, 0.0),
        ];
        let r = vote(&cases[2..], &tie, &[1, 2]).unwrap();
        assert_eq!(r.tests[0].correct_rank, Some(1));
        assert_eq!(r.solved, vec![0, 1]);

        // Submission: top two per test input, in index order.
        let sub = submission_json(&report);
        assert_eq!(sub["task_a"][0]["attempt_1"], serde_json::json!([[2, 1]]));
        assert_eq!(sub["task_a"][0]["attempt_2"], serde_json::json!([[9, 9]]));
        assert_eq!(sub["task_a"][1]["attempt_1"], serde_json::json!([[9, 9]]));
        assert_eq!(sub["task_a"][1]["attempt_2"], serde_json::json!([[4, 3]]));
        assert_eq!(sub["b"][0]["attempt_2"], serde_json::json!([[9, 9]]));
    }

    #[test]
    fn vote_rejects_unmatched_predictions() {
        let input = g(&[&[1, 2]]);
        let cases = vec![ArcTestCase {
            task_id: "t".into(),
            index: 0,
            input: input.clone(),
            answer: None,
        }];
        let id = Augmentation::identity();
        let stranger = pred("u", &input, &id, &input, 0.0);
        assert!(matches!(
            vote(&cases, &[stranger], &[1]),
            Err(VoteError::UnknownTask { .. })
        ));
        let other_input = pred("t", &g(&[&[3]]), &id, &input, 0.0);
        assert!(matches!(
            vote(&cases, &[other_input], &[1]),
            Err(VoteError::InputMismatch { row: 0, .. })
        ));
        let twice = vec![
            cases[0].clone(),
            ArcTestCase {
                index: 1,
                ..cases[0].clone()
            },
        ];
        assert!(matches!(
            vote(&twice, &[], &[1]),
            Err(VoteError::DuplicateInput { .. })
        ));
        // Unknown answers: ranked but not scored; an empty ranking submits [[0]].
        let r = vote(&cases, &[], &[1]).unwrap();
        assert_eq!(r.scored_tasks, 0);
        assert_eq!(r.pass_at(1), None);
        assert_eq!(
            submission_json(&r)["t"][0]["attempt_1"],
            serde_json::json!([[0]])
        );
    }
}
