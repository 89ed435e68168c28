//! ARC task files: parsing with located errors, discovery, and the `evaluation` hold-out rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use super::canvas::MAX_GRID_SIZE;
use super::grid::{parse_puzzle_name, Augmentation, Grid, NUM_COLORS};
use crate::error::{DataError, Result};
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::arc::test_util::g;

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
}
