//! The reference's on-disk dataset layout, with a validating reader and atomic writers.
//!
//! A dataset is `identifiers.json` plus, per split, `dataset.json` and the five `.npy` arrays of
//! each set.
//!
//! Mirrors sapientinc/HRM:dataset/common.py (`PuzzleDatasetMetadata`), the save code at the end
//! of `dataset/build_*_dataset.py` (writers) and `puzzle_dataset.py` (`_load_metadata`,
//! `_lazy_load_dataset`: the reader). Layout (docs/data.md, "On-disk dataset format"):
//!
//! ```text
//! <dataset>/identifiers.json          ["<blank>", ...]: index = puzzle identifier
//! <dataset>/<split>/dataset.json      DatasetMetadata
//! <dataset>/<split>/<set>__inputs.npy             [N, seq_len] uint8 token ids
//! <dataset>/<split>/<set>__labels.npy             [N, seq_len] uint8 token ids
//! <dataset>/<split>/<set>__puzzle_identifiers.npy [P]   int32, in [0, num_puzzle_identifiers)
//! <dataset>/<split>/<set>__puzzle_indices.npy     [P+1] int32 CSR offsets into examples
//! <dataset>/<split>/<set>__group_indices.npy      [G+1] int32 CSR offsets into puzzles
//! ```
//!
//! JSON is written the way Python's `json.dump` writes it (`", "` and `": "` separators, keys in
//! the reference's field order, non-ASCII escaped), so our files are byte-identical to the
//! reference builders' for the same content.
//!
//! Atomicity: builders write the whole dataset into a [`StagingDir`] (`<out>.tmp-<pid>`) and
//! [`StagingDir::commit`] renames it to `<out>` only once every file is complete; on error or
//! panic the staging folder is removed, so a failed run never leaves a folder that looks
//! complete.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{open_file, require_dir, DataError, Result};
use crate::fsio::{pid_after, pid_is_alive, TEMP_MARK};
use crate::npy::{self, Dtype, MappedNpy, NpyStreamWriter};

/// File name of the per-split metadata.
pub const METADATA_FILE: &str = "dataset.json";
/// File name of the identifier list (at the dataset root).
pub const IDENTIFIERS_FILE: &str = "identifiers.json";
/// Name of identifier 0 in every `identifiers.json`.
pub const BLANK_IDENTIFIER: &str = "<blank>";
/// The five arrays of a set, in the order the reference lists them.
pub const SET_FIELDS: [&str; 5] = [
    "inputs",
    "labels",
    "puzzle_identifiers",
    "puzzle_indices",
    "group_indices",
];

/// `dataset.json`: the reference's `PuzzleDatasetMetadata`, same keys in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMetadata {
    /// Token used to pad inputs (0 in every reference builder).
    pub pad_id: i64,
    /// Label token that the loss ignores (mapped to -100 when batches are collated); `null`
    /// means no label is ignored.
    pub ignore_label_id: Option<i64>,
    /// Puzzle identifier of padding rows (0 = `"<blank>"`).
    pub blank_identifier_id: i64,
    /// Number of token ids (inputs and labels are `< vocab_size`).
    pub vocab_size: usize,
    /// Tokens per example.
    pub seq_len: usize,
    /// Rows of the puzzle-embedding table (= length of `identifiers.json`).
    pub num_puzzle_identifiers: usize,
    /// Number of groups over all sets of the split (the epoch length of the sampler).
    pub total_groups: usize,
    /// Mean examples per puzzle (the reference uses `total_groups * mean_puzzle_examples` to
    /// estimate examples per epoch).
    pub mean_puzzle_examples: f64,
    /// Set names; the reference builders only ever produce `["all"]`.
    pub sets: Vec<String>,
}

// ----------------------------------------------------------------------------------------------
// Python-style JSON
// ----------------------------------------------------------------------------------------------

/// serde_json formatter that reproduces Python's `json.dump` defaults: `", "` between items,
/// `": "` after keys, and `ensure_ascii` escaping (`\uXXXX`, lowercase hex).
struct PythonJsonFormatter;

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for ch in fragment.chars() {
            if ch.is_ascii() {
                writer.write_all(&[ch as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serialises `value` exactly as Python's `json.dumps` (default arguments) would.
pub fn to_python_json<T: Serialize>(value: &T) -> std::result::Result<String, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter);
    value.serialize(&mut ser)?;
    // The formatter only ever writes ASCII.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = to_python_json(value).map_err(|err| DataError::Json {
        path: path.to_path_buf(),
        err,
    })?;
    fs::write(path, text).map_err(|e| DataError::io(path, e))
}

fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path, hint: &str) -> Result<T> {
    let file = open_file(path, hint)?;
    serde_json::from_reader(std::io::BufReader::new(file)).map_err(|err| DataError::Json {
        path: path.to_path_buf(),
        err,
    })
}

// ----------------------------------------------------------------------------------------------
// Metadata and identifiers
// ----------------------------------------------------------------------------------------------

impl DatasetMetadata {
    /// Checks the metadata on its own (before any array is read). `path` names the file.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let f = |field: &str, msg: String| Err(DataError::field(path, field, msg));
        if self.vocab_size == 0 || self.vocab_size > 256 {
            return f(
                "vocab_size",
                format!(
                    "{} is outside 1..=256 (tokens are stored as uint8)",
                    self.vocab_size
                ),
            );
        }
        if self.seq_len == 0 {
            return f("seq_len", "must be positive".into());
        }
        if self.pad_id < 0 || self.pad_id as usize >= self.vocab_size {
            return f(
                "pad_id",
                format!(
                    "{} is outside [0, vocab_size={})",
                    self.pad_id, self.vocab_size
                ),
            );
        }
        if self.num_puzzle_identifiers == 0 {
            return f(
                "num_puzzle_identifiers",
                "must be at least 1 (identifier 0 is \"<blank>\")".into(),
            );
        }
        if self.blank_identifier_id < 0
            || self.blank_identifier_id as usize >= self.num_puzzle_identifiers
        {
            return f(
                "blank_identifier_id",
                format!(
                    "{} is outside [0, num_puzzle_identifiers={})",
                    self.blank_identifier_id, self.num_puzzle_identifiers
                ),
            );
        }
        if !self.mean_puzzle_examples.is_finite() || self.mean_puzzle_examples < 0.0 {
            return f(
                "mean_puzzle_examples",
                format!(
                    "{} is not a finite non-negative number",
                    self.mean_puzzle_examples
                ),
            );
        }
        if self.sets.is_empty() {
            return f(
                "sets",
                "must name at least one set (the reference uses [\"all\"])".into(),
            );
        }
        for (i, s) in self.sets.iter().enumerate() {
            if s.is_empty() || s.contains(['/', '\\']) || s == "." || s == ".." {
                return f(
                    "sets",
                    format!("set name {i} ({s:?}) is not a valid file-name part"),
                );
            }
            if self.sets[..i].contains(s) {
                return f("sets", format!("set name {s:?} appears twice"));
            }
        }
        Ok(())
    }
}

/// Writes `<split_dir>/dataset.json` (creating `split_dir`).
pub fn write_metadata(split_dir: &Path, metadata: &DatasetMetadata) -> Result<()> {
    let path = split_dir.join(METADATA_FILE);
    if !metadata.mean_puzzle_examples.is_finite() {
        return Err(DataError::field(
            &path,
            "mean_puzzle_examples",
            "must be finite (no puzzles in the split?)",
        ));
    }
    fs::create_dir_all(split_dir).map_err(|e| DataError::io(split_dir, e))?;
    write_json_file(&path, metadata)
}

/// Reads and validates `<split_dir>/dataset.json`.
pub fn read_metadata(split_dir: &Path) -> Result<DatasetMetadata> {
    let path = split_dir.join(METADATA_FILE);
    let m: DatasetMetadata = read_json_file(
        &path,
        "not a dataset split folder; build one with `hrm data sudoku --output-dir DIR`",
    )?;
    m.validate(&path)?;
    Ok(m)
}

/// Writes `<dataset_dir>/identifiers.json` (a JSON list; index = puzzle identifier).
/// `names[0]` must be `"<blank>"`.
pub fn write_identifiers(dataset_dir: &Path, names: &[String]) -> Result<()> {
    let path = dataset_dir.join(IDENTIFIERS_FILE);
    if names.first().map(String::as_str) != Some(BLANK_IDENTIFIER) {
        return Err(DataError::field(
            &path,
            "[0]",
            format!("identifier 0 must be {BLANK_IDENTIFIER:?}"),
        ));
    }
    fs::create_dir_all(dataset_dir).map_err(|e| DataError::io(dataset_dir, e))?;
    write_json_file(&path, &names)
}

/// Reads `<dataset_dir>/identifiers.json`.
pub fn read_identifiers(dataset_dir: &Path) -> Result<Vec<String>> {
    let path = dataset_dir.join(IDENTIFIERS_FILE);
    read_json_file(
        &path,
        "identifiers.json sits at the dataset root, next to train/ and test/",
    )
}

/// Path of one array file: `<split_dir>/<set>__<field>.npy`.
pub fn array_path(split_dir: &Path, set: &str, field: &str) -> PathBuf {
    split_dir.join(format!("{set}__{field}.npy"))
}

// ----------------------------------------------------------------------------------------------
// Token arrays (memory-mapped when possible)
// ----------------------------------------------------------------------------------------------

#[derive(Debug)]
enum TokenStorage {
    /// A `|u1` C-ordered file, used in place.
    Mapped(MappedNpy),
    /// Decoded from a wider integer dtype (after a range check), or built in memory.
    Owned(Vec<u8>),
}

/// A `[rows, row_len]` matrix of uint8 token ids (inputs or labels of one set).
#[derive(Debug)]
pub struct TokenArray {
    storage: TokenStorage,
    rows: usize,
    row_len: usize,
}

impl TokenArray {
    /// Wraps in-memory tokens; `data.len()` must equal `rows * row_len`.
    pub fn from_vec(data: Vec<u8>, row_len: usize) -> Option<TokenArray> {
        if row_len == 0 || !data.len().is_multiple_of(row_len) {
            return None;
        }
        Some(TokenArray {
            rows: data.len() / row_len,
            row_len,
            storage: TokenStorage::Owned(data),
        })
    }

    /// Number of rows (examples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens per row (`seq_len`).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// All tokens, row-major.
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            TokenStorage::Mapped(m) => m.data(),
            TokenStorage::Owned(v) => v,
        }
    }

    /// Row `i` (panics if `i >= rows()`, like slice indexing).
    pub fn row(&self, i: usize) -> &[u8] {
        &self.as_slice()[i * self.row_len..(i + 1) * self.row_len]
    }

    /// Whether the tokens are memory-mapped from the file (no copy in RAM).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, TokenStorage::Mapped(_))
    }
}

/// Loads `<set>__<field>.npy` as a `[N, seq_len]` token matrix with every token `< vocab_size`.
fn load_tokens(path: &Path, field: &str, seq_len: usize, vocab_size: usize) -> Result<TokenArray> {
    let mapped = MappedNpy::open(path)?;
    let shape = mapped.header.shape.clone();
    if shape.len() != 2 || shape[1] != seq_len {
        return Err(DataError::field(
            path,
            field,
            format!("shape {shape:?} should be [N, seq_len={seq_len}] (seq_len from dataset.json)"),
        ));
    }
    let rows = shape[0];
    let storage = if mapped.header.dtype == Dtype::U8 {
        TokenStorage::Mapped(mapped)
    } else if mapped.header.dtype.is_integer() {
        TokenStorage::Owned(mapped.to_array().into_u8(path, field)?)
    } else {
        return Err(DataError::field(
            path,
            field,
            format!(
                "dtype {} is not an integer type (token ids are uint8)",
                mapped.header.dtype.descr()
            ),
        ));
    };
    let arr = TokenArray {
        storage,
        rows,
        row_len: seq_len,
    };
    check_vocab(path, field, arr.as_slice(), seq_len, vocab_size)?;
    Ok(arr)
}

fn check_vocab(
    path: &Path,
    field: &str,
    tokens: &[u8],
    seq_len: usize,
    vocab: usize,
) -> Result<()> {
    // Fast path: one max-reduction over the whole array; only locate the culprit on failure.
    let max = tokens.iter().copied().max().unwrap_or(0);
    if (max as usize) < vocab {
        return Ok(());
    }
    let i = tokens
        .iter()
        .position(|&t| t as usize >= vocab)
        .unwrap_or(0);
    Err(DataError::field(
        path,
        field,
        format!(
            "token {} at row {}, column {} is not < vocab_size={vocab}",
            tokens[i],
            i / seq_len,
            i % seq_len
        ),
    ))
}

fn load_index(path: &Path, field: &str) -> Result<Vec<i32>> {
    let arr = npy::read_npy(path)?;
    if arr.shape.len() != 1 {
        return Err(DataError::field(
            path,
            field,
            format!("shape {:?} should be 1-dimensional", arr.shape),
        ));
    }
    arr.into_i32(path, field)
}

// ----------------------------------------------------------------------------------------------
// Loaded splits
// ----------------------------------------------------------------------------------------------

/// One set of a split (the reference only ever has `all`), fully validated.
#[derive(Debug)]
pub struct SetData {
    /// Set name (file-name prefix).
    pub name: String,
    /// `[N, seq_len]` input tokens.
    pub inputs: TokenArray,
    /// `[N, seq_len]` label tokens.
    pub labels: TokenArray,
    /// `[P]` embedding row of each puzzle.
    pub puzzle_identifiers: Vec<i32>,
    /// `[P+1]` CSR offsets: puzzle p owns examples `puzzle_indices[p]..puzzle_indices[p+1]`.
    pub puzzle_indices: Vec<i32>,
    /// `[G+1]` CSR offsets: group g owns puzzles `group_indices[g]..group_indices[g+1]`.
    pub group_indices: Vec<i32>,
}

impl SetData {
    /// Number of examples N.
    pub fn num_examples(&self) -> usize {
        self.inputs.rows()
    }

    /// Number of puzzles P.
    pub fn num_puzzles(&self) -> usize {
        self.puzzle_identifiers.len()
    }

    /// Number of groups G.
    pub fn num_groups(&self) -> usize {
        self.group_indices.len().saturating_sub(1)
    }

    /// Example range of puzzle `p`.
    pub fn puzzle_examples(&self, p: usize) -> std::ops::Range<usize> {
        self.puzzle_indices[p] as usize..self.puzzle_indices[p + 1] as usize
    }

    /// Puzzle range of group `g`.
    pub fn group_puzzles(&self, g: usize) -> std::ops::Range<usize> {
        self.group_indices[g] as usize..self.group_indices[g + 1] as usize
    }

    /// The puzzle that owns example `i` (binary search over `puzzle_indices`; like the
    /// reference's `searchsorted(..., side="right") - 1`, empty puzzles are skipped).
    pub fn puzzle_of_example(&self, i: usize) -> usize {
        let i = i as i64;
        self.puzzle_indices
            .partition_point(|&x| (x as i64) <= i)
            .saturating_sub(1)
    }
}

/// One split (`train` or `test`) of a dataset folder.
#[derive(Debug)]
pub struct SplitData {
    /// The dataset root folder.
    pub dataset_dir: PathBuf,
    /// Split name.
    pub split: String,
    /// Its `dataset.json`.
    pub metadata: DatasetMetadata,
    /// Its sets, in `metadata.sets` order.
    pub sets: Vec<SetData>,
}

impl SplitData {
    /// Total examples over all sets.
    pub fn num_examples(&self) -> usize {
        self.sets.iter().map(SetData::num_examples).sum()
    }
}

/// Checks the CSR structure of one set; `paths` gives the file of each field for errors.
/// `n` examples; `pid`, `pi`, `gi` the index arrays.
fn validate_indices(
    paths: &dyn Fn(&str) -> PathBuf,
    n: usize,
    puzzle_identifiers: &[i32],
    puzzle_indices: &[i32],
    group_indices: &[i32],
    num_puzzle_identifiers: usize,
) -> Result<()> {
    let check_csr = |field: &str, idx: &[i32], end: usize, what: &str| -> Result<()> {
        let path = paths(field);
        if idx.is_empty() {
            return Err(DataError::field(
                &path,
                field,
                "is empty; it must hold at least the leading 0",
            ));
        }
        if idx[0] != 0 {
            return Err(DataError::field(
                &path,
                field,
                format!("starts at {} instead of 0", idx[0]),
            ));
        }
        if let Some(k) = idx.windows(2).position(|w| w[1] < w[0]) {
            return Err(DataError::field(
                &path,
                field,
                format!(
                    "decreases at position {}: {} -> {} (offsets must be non-decreasing)",
                    k + 1,
                    idx[k],
                    idx[k + 1]
                ),
            ));
        }
        let last = *idx.last().unwrap_or(&0);
        if last as i64 != end as i64 {
            return Err(DataError::field(
                &path,
                field,
                format!("ends at {last} but there are {end} {what}"),
            ));
        }
        Ok(())
    };
    let p = puzzle_identifiers.len();
    if puzzle_indices.len() != p + 1 {
        return Err(DataError::field(
            paths("puzzle_indices"),
            "puzzle_indices",
            format!(
                "has {} entries but puzzle_identifiers has {p} puzzles (expected {})",
                puzzle_indices.len(),
                p + 1
            ),
        ));
    }
    check_csr("puzzle_indices", puzzle_indices, n, "examples")?;
    check_csr("group_indices", group_indices, p, "puzzles")?;
    if let Some(k) = puzzle_identifiers
        .iter()
        .position(|&x| x < 0 || x as usize >= num_puzzle_identifiers)
    {
        return Err(DataError::field(
            paths("puzzle_identifiers"),
            "puzzle_identifiers",
            format!(
                "puzzle {k} has identifier {} outside [0, num_puzzle_identifiers={}]",
                puzzle_identifiers[k], num_puzzle_identifiers
            ),
        ));
    }
    Ok(())
}

/// Loads and validates `<dataset_dir>/<split>/` the way the reference loader reads it: metadata,
/// then for each set the memory-mapped inputs/labels and the in-memory index arrays.
/// Every problem is reported with the file and field that is wrong.
pub fn load_split(dataset_dir: &Path, split: &str) -> Result<SplitData> {
    require_dir(
        dataset_dir,
        "dataset folder missing; build one with `hrm data sudoku|maze|arc --output-dir DIR`",
    )?;
    let split_dir = dataset_dir.join(split);
    require_dir(
        &split_dir,
        &format!("the dataset has no `{split}` split; was the build interrupted?"),
    )?;
    let metadata = read_metadata(&split_dir)?;
    let meta_path = split_dir.join(METADATA_FILE);
    // the builders write one identifier name per embedding row: a larger count would size the
    // puzzle table for rows no example uses (gigabytes for an edited dataset.json)
    if dataset_dir.join(IDENTIFIERS_FILE).is_file() {
        let names = read_identifiers(dataset_dir)?.len();
        if names != metadata.num_puzzle_identifiers {
            return Err(DataError::field(
                &meta_path,
                "num_puzzle_identifiers",
                format!(
                    "is {} but {IDENTIFIERS_FILE} names {names} identifiers (the two are written \
                     together: rebuild the dataset, or correct the count)",
                    metadata.num_puzzle_identifiers
                ),
            ));
        }
    }
    let mut sets = Vec::with_capacity(metadata.sets.len());
    let mut groups = 0usize;
    for name in &metadata.sets {
        let path_of = |field: &str| array_path(&split_dir, name, field);
        let inputs = load_tokens(
            &path_of("inputs"),
            "inputs",
            metadata.seq_len,
            metadata.vocab_size,
        )?;
        let labels = load_tokens(
            &path_of("labels"),
            "labels",
            metadata.seq_len,
            metadata.vocab_size,
        )?;
        if labels.rows() != inputs.rows() {
            return Err(DataError::field(
                path_of("labels"),
                "labels",
                format!(
                    "has {} rows but inputs has {}",
                    labels.rows(),
                    inputs.rows()
                ),
            ));
        }
        let puzzle_identifiers = load_index(&path_of("puzzle_identifiers"), "puzzle_identifiers")?;
        let puzzle_indices = load_index(&path_of("puzzle_indices"), "puzzle_indices")?;
        let group_indices = load_index(&path_of("group_indices"), "group_indices")?;
        validate_indices(
            &path_of,
            inputs.rows(),
            &puzzle_identifiers,
            &puzzle_indices,
            &group_indices,
            metadata.num_puzzle_identifiers,
        )?;
        groups += group_indices.len() - 1;
        sets.push(SetData {
            name: name.clone(),
            inputs,
            labels,
            puzzle_identifiers,
            puzzle_indices,
            group_indices,
        });
    }
    if groups != metadata.total_groups {
        return Err(DataError::field(
            &meta_path,
            "total_groups",
            format!(
                "is {} but the sets hold {groups} groups",
                metadata.total_groups
            ),
        ));
    }
    Ok(SplitData {
        dataset_dir: dataset_dir.to_path_buf(),
        split: split.to_string(),
        metadata,
        sets,
    })
}

// ----------------------------------------------------------------------------------------------
// Writing
// ----------------------------------------------------------------------------------------------

/// The five arrays of one set, in memory (for small datasets and tests; large builders stream
/// with [`SetWriter`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetArrays {
    /// `[N * seq_len]` input tokens, row-major.
    pub inputs: Vec<u8>,
    /// `[N * seq_len]` label tokens.
    pub labels: Vec<u8>,
    /// `[P]`
    pub puzzle_identifiers: Vec<i32>,
    /// `[P+1]`
    pub puzzle_indices: Vec<i32>,
    /// `[G+1]`
    pub group_indices: Vec<i32>,
}

/// Writes `<dataset_dir>/<split>/` (metadata and all arrays of every set) after validating that
/// the arrays agree with the metadata. `sets` must be in `metadata.sets` order. Call it on a
/// [`StagingDir`] path so the result appears atomically.
pub fn write_split(
    dataset_dir: &Path,
    split: &str,
    metadata: &DatasetMetadata,
    sets: &[(&str, &SetArrays)],
) -> Result<()> {
    let split_dir = dataset_dir.join(split);
    let meta_path = split_dir.join(METADATA_FILE);
    metadata.validate(&meta_path)?;
    let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
    if names != metadata.sets.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(DataError::field(
            &meta_path,
            "sets",
            format!(
                "lists {:?} but the arrays given are {names:?}",
                metadata.sets
            ),
        ));
    }
    let seq = metadata.seq_len;
    let mut groups = 0;
    for (name, arrays) in sets {
        let path_of = |field: &str| array_path(&split_dir, name, field);
        for (field, tokens) in [("inputs", &arrays.inputs), ("labels", &arrays.labels)] {
            if tokens.len() % seq != 0 || tokens.len() != arrays.inputs.len() {
                return Err(DataError::field(
                    path_of(field),
                    field,
                    format!(
                        "{} tokens is not the inputs' row count times seq_len={seq}",
                        tokens.len()
                    ),
                ));
            }
            check_vocab(&path_of(field), field, tokens, seq, metadata.vocab_size)?;
        }
        validate_indices(
            &path_of,
            arrays.inputs.len() / seq,
            &arrays.puzzle_identifiers,
            &arrays.puzzle_indices,
            &arrays.group_indices,
            metadata.num_puzzle_identifiers,
        )?;
        groups += arrays.group_indices.len() - 1;
    }
    if groups != metadata.total_groups {
        return Err(DataError::field(
            &meta_path,
            "total_groups",
            format!(
                "is {} but the sets hold {groups} groups",
                metadata.total_groups
            ),
        ));
    }
    fs::create_dir_all(&split_dir).map_err(|e| DataError::io(&split_dir, e))?;
    for (name, a) in sets {
        let n = a.inputs.len() / seq;
        let path_of = |field: &str| array_path(&split_dir, name, field);
        npy::write_npy(&path_of("inputs"), &[n, seq], &a.inputs)?;
        npy::write_npy(&path_of("labels"), &[n, seq], &a.labels)?;
        npy::write_npy(
            &path_of("group_indices"),
            &[a.group_indices.len()],
            &a.group_indices,
        )?;
        npy::write_npy(
            &path_of("puzzle_indices"),
            &[a.puzzle_indices.len()],
            &a.puzzle_indices,
        )?;
        npy::write_npy(
            &path_of("puzzle_identifiers"),
            &[a.puzzle_identifiers.len()],
            &a.puzzle_identifiers,
        )?;
    }
    // Metadata last: a split folder with dataset.json is complete.
    write_metadata(&split_dir, metadata)
}

/// Bytes of pending tokens after which [`SetWriter`] writes to disk.
const WRITE_CHUNK: usize = 4 << 20;

/// Counts of a finished set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetStats {
    /// Examples N.
    pub examples: usize,
    /// Puzzles P.
    pub puzzles: usize,
    /// Groups G.
    pub groups: usize,
}

impl SetStats {
    /// `examples / puzzles` (the reference's `mean_puzzle_examples`), 0 for an empty set.
    pub fn mean_puzzle_examples(&self) -> f64 {
        if self.puzzles == 0 {
            0.0
        } else {
            self.examples as f64 / self.puzzles as f64
        }
    }
}

/// Streams one set to disk: examples are appended as they are produced (inputs/labels are
/// buffered and appended to the `.npy` files in 4 MiB chunks, so memory stays flat), puzzles
/// and groups are closed with [`SetWriter::end_puzzle`] / [`SetWriter::end_group`], and
/// [`SetWriter::finish`] writes the index arrays.
///
/// Usage (one Sudoku group = original + augmentations, one example per puzzle):
/// ```no_run
/// # fn f(dir: &std::path::Path) -> hrm_data::error::Result<()> {
/// use hrm_data::format::SetWriter;
/// let mut w = SetWriter::create(&dir.join("train"), "all", 81, 11)?;
/// let (board, solution) = ([1u8; 81], [2u8; 81]);
/// w.push_example(&board, &solution)?;
/// w.end_puzzle(0)?;
/// w.end_group()?;
/// let stats = w.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SetWriter {
    split_dir: PathBuf,
    name: String,
    seq_len: usize,
    vocab_size: usize,
    inputs: NpyStreamWriter<u8>,
    labels: NpyStreamWriter<u8>,
    /// Pending rows, flushed to the files in large writes.
    inputs_buf: Vec<u8>,
    labels_buf: Vec<u8>,
    puzzle_identifiers: Vec<i32>,
    puzzle_indices: Vec<i32>,
    group_indices: Vec<i32>,
    examples: usize,
}

impl SetWriter {
    /// Creates `split_dir` if needed and opens `<set>__inputs.npy` / `<set>__labels.npy`.
    pub fn create(
        split_dir: &Path,
        set_name: &str,
        seq_len: usize,
        vocab_size: usize,
    ) -> Result<Self> {
        fs::create_dir_all(split_dir).map_err(|e| DataError::io(split_dir, e))?;
        let inputs =
            NpyStreamWriter::create(&array_path(split_dir, set_name, "inputs"), &[seq_len])?;
        let labels =
            NpyStreamWriter::create(&array_path(split_dir, set_name, "labels"), &[seq_len])?;
        Ok(SetWriter {
            split_dir: split_dir.to_path_buf(),
            name: set_name.to_string(),
            seq_len,
            vocab_size,
            inputs,
            labels,
            inputs_buf: Vec::new(),
            labels_buf: Vec::new(),
            puzzle_identifiers: Vec::new(),
            puzzle_indices: vec![0],
            group_indices: vec![0],
            examples: 0,
        })
    }

    /// Appends examples (any whole number of rows; `inputs` and `labels` equally long).
    pub fn push_examples(&mut self, inputs: &[u8], labels: &[u8]) -> Result<()> {
        let path = array_path(&self.split_dir, &self.name, "inputs");
        if inputs.len() != labels.len() || !inputs.len().is_multiple_of(self.seq_len) {
            return Err(DataError::field(
                &path,
                "inputs",
                format!(
                    "internal: {} input and {} label tokens are not whole rows of {}",
                    inputs.len(),
                    labels.len(),
                    self.seq_len
                ),
            ));
        }
        check_vocab(&path, "inputs", inputs, self.seq_len, self.vocab_size)?;
        let lpath = array_path(&self.split_dir, &self.name, "labels");
        check_vocab(&lpath, "labels", labels, self.seq_len, self.vocab_size)?;
        self.inputs_buf.extend_from_slice(inputs);
        self.labels_buf.extend_from_slice(labels);
        self.examples += inputs.len() / self.seq_len;
        if self.inputs_buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.inputs.write_rows(&self.inputs_buf)?;
        self.labels.write_rows(&self.labels_buf)?;
        self.inputs_buf.clear();
        self.labels_buf.clear();
        Ok(())
    }

    /// Appends one example.
    pub fn push_example(&mut self, input: &[u8], label: &[u8]) -> Result<()> {
        self.push_examples(input, label)
    }

    /// Closes the current puzzle (the examples pushed since the previous `end_puzzle`) with its
    /// embedding identifier.
    pub fn end_puzzle(&mut self, identifier: i32) -> Result<()> {
        let end = i32::try_from(self.examples).map_err(|_| {
            DataError::field(
                array_path(&self.split_dir, &self.name, "puzzle_indices"),
                "puzzle_indices",
                "more than 2^31-1 examples do not fit the reference's int32 offsets",
            )
        })?;
        self.puzzle_indices.push(end);
        self.puzzle_identifiers.push(identifier);
        Ok(())
    }

    /// Closes the current group (the puzzles closed since the previous `end_group`).
    pub fn end_group(&mut self) -> Result<()> {
        let end = i32::try_from(self.puzzle_identifiers.len()).map_err(|_| {
            DataError::field(
                array_path(&self.split_dir, &self.name, "group_indices"),
                "group_indices",
                "more than 2^31-1 puzzles",
            )
        })?;
        self.group_indices.push(end);
        Ok(())
    }

    /// Examples pushed so far.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Finishes the token files and writes the three index arrays. Fails if examples or puzzles
    /// were left outside a closed puzzle / group.
    pub fn finish(mut self) -> Result<SetStats> {
        self.flush()?;
        let path_of = |f: &str| array_path(&self.split_dir, &self.name, f);
        if *self.puzzle_indices.last().unwrap_or(&0) as usize != self.examples {
            return Err(DataError::field(
                path_of("puzzle_indices"),
                "puzzle_indices",
                "internal: examples were pushed after the last end_puzzle()",
            ));
        }
        if *self.group_indices.last().unwrap_or(&0) as usize != self.puzzle_identifiers.len() {
            return Err(DataError::field(
                path_of("group_indices"),
                "group_indices",
                "internal: puzzles were closed after the last end_group()",
            ));
        }
        self.inputs.finish()?;
        self.labels.finish()?;
        npy::write_npy(
            &path_of("group_indices"),
            &[self.group_indices.len()],
            &self.group_indices,
        )?;
        npy::write_npy(
            &path_of("puzzle_indices"),
            &[self.puzzle_indices.len()],
            &self.puzzle_indices,
        )?;
        npy::write_npy(
            &path_of("puzzle_identifiers"),
            &[self.puzzle_identifiers.len()],
            &self.puzzle_identifiers,
        )?;
        Ok(SetStats {
            examples: self.examples,
            puzzles: self.puzzle_identifiers.len(),
            groups: self.group_indices.len() - 1,
        })
    }
}

// ----------------------------------------------------------------------------------------------
// Atomic output folders
// ----------------------------------------------------------------------------------------------

/// A staging folder `<out>.tmp-<pid>` that becomes `<out>` on [`StagingDir::commit`].
///
/// * `create` refuses an existing non-empty `<out>` unless `force` (checked up front, so no
///   work is wasted);
/// * with `force`, the old `<out>` is replaced only after the new one is complete;
/// * dropping a `StagingDir` without committing (error, panic) deletes the staging folder.
#[derive(Debug)]
pub struct StagingDir {
    final_path: PathBuf,
    tmp_path: PathBuf,
    force: bool,
    committed: bool,
}

fn dir_is_nonempty(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(DataError::io(p, e)),
    }
}

fn sibling_with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p
        .file_name()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "output".into());
    name.push(suffix);
    p.with_file_name(name)
}

/// Staging folders of this process not yet committed or dropped, for
/// [`remove_live_staging_dirs`].
static LIVE_STAGING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live_staging() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_STAGING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Delete every staging folder of this process that is not committed yet, and return their
/// paths: what a SIGINT / SIGTERM handler calls just before the process exits (a signal skips
/// the `Drop` of [`StagingDir`]).
pub fn remove_live_staging_dirs() -> Vec<PathBuf> {
    let live = std::mem::take(&mut *live_staging());
    for p in &live {
        // the builder's threads may still be writing into it: a file created while the folder
        // is being emptied fails the last rmdir, so try again (briefly) until it is gone
        for _ in 0..200 {
            if fs::remove_dir_all(p).is_ok() || !p.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    live
}

/// The mark of an old output set aside while its replacement is moved in: `<out>.old-<pid>`.
const OLD_MARK: &str = ".old-";

/// Remove the staging folders `<out>.tmp-<pid>` (and set-aside old outputs `<out>.old-<pid>`)
/// that processes no longer alive left next to `out` (a SIGKILL skips every cleanup).
fn remove_stale_staging(out: &Path) {
    let (Some(name), Some(parent)) = (out.file_name(), out.parent()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy();
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = entry_name.strip_prefix(&*name) else {
            continue;
        };
        // only `<out>` itself followed by a mark: not another output's staging folder
        let pid = [OLD_MARK, TEMP_MARK]
            .into_iter()
            .find(|m| rest.starts_with(m))
            .and_then(|m| pid_after(rest, m));
        if pid.is_some_and(|pid| !pid_is_alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl StagingDir {
    /// Prepares `<output_dir>.tmp-<pid>` (removing a stale one of the same name, and those of
    /// processes no longer alive).
    pub fn create(output_dir: &Path, force: bool) -> Result<StagingDir> {
        if output_dir.as_os_str().is_empty() || output_dir.file_name().is_none() {
            return Err(DataError::option(
                "--output-dir",
                format!("{:?} is not a usable folder name", output_dir.display()),
            ));
        }
        if !force && dir_is_nonempty(output_dir)? {
            return Err(DataError::OutputExists {
                path: output_dir.to_path_buf(),
            });
        }
        remove_stale_staging(output_dir);
        let tmp_path =
            sibling_with_suffix(output_dir, &format!("{TEMP_MARK}{}", std::process::id()));
        if tmp_path.exists() {
            fs::remove_dir_all(&tmp_path).map_err(|e| DataError::io(&tmp_path, e))?;
        }
        // registered before it exists: a signal between the two still finds it
        live_staging().push(tmp_path.clone());
        if let Err(e) = fs::create_dir_all(&tmp_path) {
            live_staging().retain(|p| p != &tmp_path);
            return Err(DataError::io(&tmp_path, e));
        }
        Ok(StagingDir {
            final_path: output_dir.to_path_buf(),
            tmp_path,
            force,
            committed: false,
        })
    }

    /// Where to write (the staging folder).
    pub fn path(&self) -> &Path {
        &self.tmp_path
    }

    /// Where the result will appear.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the staging folder to the output folder (replacing an old one if `force`).
    pub fn commit(mut self) -> Result<PathBuf> {
        let out = self.final_path.clone();
        if out.exists() {
            if !self.force && dir_is_nonempty(&out)? {
                return Err(DataError::OutputExists { path: out });
            }
            // Move the old folder aside, move the new one in, then delete the old one.
            let old = sibling_with_suffix(&out, &format!("{OLD_MARK}{}", std::process::id()));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
            }
            fs::rename(&out, &old).map_err(|e| DataError::io(&out, e))?;
            if let Err(e) = fs::rename(&self.tmp_path, &out) {
                // Best effort: put the old output back before reporting.
                let _ = fs::rename(&old, &out);
                return Err(DataError::io(&out, e));
            }
            self.committed = true;
            let removed = if old.is_dir() {
                fs::remove_dir_all(&old)
            } else {
                fs::remove_file(&old)
            };
            removed.map_err(|e| DataError::io(&old, e))?;
        } else {
            fs::rename(&self.tmp_path, &out).map_err(|e| DataError::io(&out, e))?;
            self.committed = true;
        }
        Ok(out)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        live_staging().retain(|p| p != &self.tmp_path);
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sudoku_meta(groups: usize) -> DatasetMetadata {
        DatasetMetadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size: 11,
            seq_len: 4,
            num_puzzle_identifiers: 1,
            total_groups: groups,
            mean_puzzle_examples: 1.0,
            sets: vec!["all".into()],
        }
    }

    fn small_set() -> SetArrays {
        SetArrays {
            inputs: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2],
            labels: vec![2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 2],
            puzzle_identifiers: vec![0, 0, 0],
            puzzle_indices: vec![0, 1, 2, 3],
            group_indices: vec![0, 2, 3],
        }
    }

    #[test]
    fn metadata_json_matches_python_json_dump() {
        let m = sudoku_meta(1000);
        // What `json.dump(metadata.model_dump(), f)` writes in the reference Sudoku builder.
        assert_eq!(
            to_python_json(&m).unwrap(),
            "{\"pad_id\": 0, \"ignore_label_id\": 0, \"blank_identifier_id\": 0, \
             \"vocab_size\": 11, \"seq_len\": 4, \"num_puzzle_identifiers\": 1, \
             \"total_groups\": 1000, \"mean_puzzle_examples\": 1.0, \"sets\": [\"all\"]}"
        );
        let names = vec!["<blank>".to_string(), "caf\u{e9}_t1".to_string()];
        assert_eq!(
            to_python_json(&names).unwrap(),
            "[\"<blank>\", \"caf\\u00e9_t1\"]"
        );
        let mut m2 = m.clone();
        m2.ignore_label_id = None;
        m2.mean_puzzle_examples = 4.154166666666667;
        let s = to_python_json(&m2).unwrap();
        assert!(s.contains("\"ignore_label_id\": null"), "{s}");
        assert!(
            s.contains("\"mean_puzzle_examples\": 4.154166666666667"),
            "{s}"
        );
        let back: DatasetMetadata = serde_json::from_str(&s).unwrap();
        assert_eq!(back, m2);
    }

    #[test]
    fn write_then_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let set = small_set();
        write_split(dir.path(), "train", &sudoku_meta(2), &[("all", &set)]).unwrap();
        write_identifiers(dir.path(), &["<blank>".to_string()]).unwrap();
        let split = load_split(dir.path(), "train").unwrap();
        assert_eq!(split.metadata, sudoku_meta(2));
        let s = &split.sets[0];
        assert!(s.inputs.is_mapped());
        assert_eq!(s.inputs.as_slice(), &set.inputs[..]);
        assert_eq!(s.labels.row(2), &[9, 10, 3, 2]);
        assert_eq!(s.num_examples(), 3);
        assert_eq!(s.num_puzzles(), 3);
        assert_eq!(s.num_groups(), 2);
        assert_eq!(s.group_puzzles(0), 0..2);
        assert_eq!(s.puzzle_of_example(2), 2);
        assert_eq!(
            read_identifiers(dir.path()).unwrap(),
            vec!["<blank>".to_string()]
        );
    }

    #[test]
    fn an_identifier_count_that_disagrees_with_identifiers_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = sudoku_meta(2);
        meta.num_puzzle_identifiers = 10_000_000;
        write_split(dir.path(), "train", &meta, &[("all", &small_set())]).unwrap();
        write_identifiers(dir.path(), &["<blank>".to_string()]).unwrap();
        let e = load_split(dir.path(), "train").unwrap_err().to_string();
        assert!(
            e.contains("dataset.json")
                && e.contains("num_puzzle_identifiers")
                && e.contains("is 10000000 but identifiers.json names 1"),
            "{e}"
        );
    }

    #[test]
    fn streaming_writer_equals_in_memory_writer() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let set = small_set();
        write_split(a.path(), "test", &sudoku_meta(2), &[("all", &set)]).unwrap();
        let mut w = SetWriter::create(&b.path().join("test"), "all", 4, 11).unwrap();
        for p in 0..3 {
            w.push_example(&set.inputs[p * 4..p * 4 + 4], &set.labels[p * 4..p * 4 + 4])
                .unwrap();
            w.end_puzzle(0).unwrap();
            if p != 0 {
                w.end_group().unwrap();
            }
        }
        let stats = w.finish().unwrap();
        assert_eq!(
            stats,
            SetStats {
                examples: 3,
                puzzles: 3,
                groups: 2
            }
        );
        write_metadata(&b.path().join("test"), &sudoku_meta(2)).unwrap();
        for f in SET_FIELDS {
            let p = format!("test/all__{f}.npy");
            assert_eq!(
                fs::read(a.path().join(&p)).unwrap(),
                fs::read(b.path().join(&p)).unwrap(),
                "{p}"
            );
        }
        assert_eq!(
            fs::read(a.path().join("test/dataset.json")).unwrap(),
            fs::read(b.path().join("test/dataset.json")).unwrap()
        );
    }

    #[test]
    fn writer_rejects_bad_tokens_and_unclosed_puzzles() {
        let d = tempfile::tempdir().unwrap();
        let mut w = SetWriter::create(d.path(), "all", 4, 11).unwrap();
        let e = w
            .push_example(&[1, 2, 11, 0], &[1, 1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("all__inputs.npy") && e.contains("token 11 at row 0, column 2"),
            "{e}"
        );
        w.push_example(&[1, 2, 3, 0], &[1, 1, 1, 1]).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("after the last end_puzzle"));
    }

    /// Each corruption is reported with the file and the field.
    #[test]
    fn reader_names_file_and_field() {
        let check =
            |mutate: &dyn Fn(&mut SetArrays, &mut DatasetMetadata), file: &str, want: &str| {
                let dir = tempfile::tempdir().unwrap();
                let mut set = small_set();
                let mut meta = sudoku_meta(2);
                mutate(&mut set, &mut meta);
                // Write unvalidated, like a foreign builder could.
                let sd = dir.path().join("train");
                fs::create_dir_all(&sd).unwrap();
                let n = set.inputs.len() / 4;
                npy::write_npy(&array_path(&sd, "all", "inputs"), &[n, 4], &set.inputs).unwrap();
                let ln = set.labels.len() / 4;
                npy::write_npy(&array_path(&sd, "all", "labels"), &[ln, 4], &set.labels).unwrap();
                for (f, v) in [
                    ("puzzle_identifiers", &set.puzzle_identifiers),
                    ("puzzle_indices", &set.puzzle_indices),
                    ("group_indices", &set.group_indices),
                ] {
                    npy::write_npy(&array_path(&sd, "all", f), &[v.len()], v).unwrap();
                }
                fs::write(sd.join(METADATA_FILE), to_python_json(&meta).unwrap()).unwrap();
                let e = load_split(dir.path(), "train").unwrap_err().to_string();
                assert!(e.contains(file), "expected file {file} in: {e}");
                assert!(e.contains(want), "expected {want:?} in: {e}");
            };
        check(
            &|s, _| s.inputs[5] = 11,
            "all__inputs.npy",
            "token 11 at row 1, column 1",
        );
        check(
            &|s, _| s.labels.truncate(8),
            "all__labels.npy",
            "has 2 rows but inputs has 3",
        );
        check(
            &|s, _| s.puzzle_indices[0] = 1,
            "all__puzzle_indices.npy",
            "starts at 1",
        );
        check(
            &|s, _| s.puzzle_indices = vec![0, 2, 1, 3],
            "all__puzzle_indices.npy",
            "decreases at position 2",
        );
        check(
            &|s, _| s.puzzle_indices[3] = 2,
            "all__puzzle_indices.npy",
            "ends at 2 but there are 3 examples",
        );
        check(
            &|s, _| s.group_indices = vec![0, 3],
            "dataset.json",
            "total_groups",
        );
        check(
            &|s, _| s.group_indices = vec![0, 1, 2],
            "all__group_indices.npy",
            "ends at 2 but there are 3 puzzles",
        );
        check(
            &|s, _| s.puzzle_identifiers[1] = 1,
            "all__puzzle_identifiers.npy",
            "puzzle 1 has identifier 1",
        );
        check(
            &|s, _| s.puzzle_identifiers.push(0),
            "all__puzzle_indices.npy",
            "has 4 entries",
        );
        check(
            &|_, m| m.seq_len = 5,
            "all__inputs.npy",
            "should be [N, seq_len=5]",
        );
        check(&|_, m| m.vocab_size = 300, "dataset.json", "vocab_size");
        check(
            &|_, m| m.blank_identifier_id = 3,
            "dataset.json",
            "blank_identifier_id",
        );
        check(
            &|_, m| m.sets = vec!["all".into(), "extra".into()],
            "extra__inputs.npy",
            "not found",
        );

        let dir = tempfile::tempdir().unwrap();
        let e = load_split(&dir.path().join("nope"), "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("not found"), "{e}");
        fs::create_dir_all(dir.path().join("train")).unwrap();
        fs::write(dir.path().join("train/dataset.json"), "{\"pad_id\": 0}").unwrap();
        let e = load_split(dir.path(), "train").unwrap_err().to_string();
        assert!(
            e.contains("dataset.json") && e.contains("missing field"),
            "{e}"
        );
    }

    #[test]
    fn wide_token_dtypes_are_converted_after_range_check() {
        let dir = tempfile::tempdir().unwrap();
        let set = small_set();
        write_split(dir.path(), "train", &sudoku_meta(2), &[("all", &set)]).unwrap();
        let p = array_path(&dir.path().join("train"), "all", "inputs");
        let wide: Vec<i64> = set.inputs.iter().map(|&x| x as i64).collect();
        npy::write_npy(&p, &[3, 4], &wide).unwrap();
        let split = load_split(dir.path(), "train").unwrap();
        assert!(!split.sets[0].inputs.is_mapped());
        assert_eq!(split.sets[0].inputs.as_slice(), &set.inputs[..]);
        let mut wide = wide;
        wide[0] = -1;
        npy::write_npy(&p, &[3, 4], &wide).unwrap();
        let e = load_split(dir.path(), "train").unwrap_err().to_string();
        assert!(e.contains("element 0 = -1"), "{e}");
    }

    #[test]
    fn staging_dir_is_atomic() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("ds");
        {
            let s = StagingDir::create(&out, false).unwrap();
            fs::write(s.path().join("x"), "1").unwrap();
            // Dropped without commit: nothing left.
        }
        assert!(!out.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);

        let s = StagingDir::create(&out, false).unwrap();
        fs::write(s.path().join("x"), "1").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read_to_string(out.join("x")).unwrap(), "1");

        assert!(matches!(
            StagingDir::create(&out, false),
            Err(DataError::OutputExists { .. })
        ));
        let s = StagingDir::create(&out, true).unwrap();
        fs::write(s.path().join("y"), "2").unwrap();
        // The old output is untouched until commit.
        assert!(out.join("x").exists());
        s.commit().unwrap();
        assert!(!out.join("x").exists());
        assert_eq!(fs::read_to_string(out.join("y")).unwrap(), "2");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_staging_of_dead_pids_is_removed_and_live_staging_on_interrupt() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("ds");
        let dead = root.path().join(format!("ds.tmp-{}", u32::MAX - 1));
        let dead_old = root.path().join(format!("ds.old-{}", u32::MAX - 1));
        let alive = root.path().join("ds.tmp-1"); // init: always alive
        let other = root.path().join(format!("other.tmp-{}", u32::MAX - 1));
        for d in [&dead, &dead_old, &alive, &other] {
            fs::create_dir_all(d.join("train")).unwrap();
        }
        let s = StagingDir::create(&out, false).unwrap();
        #[cfg(target_os = "linux")]
        assert!(
            !dead.exists() && !dead_old.exists(),
            "dead pids' folders removed"
        );
        assert!(
            alive.exists() && other.exists(),
            "live pid and other outputs kept"
        );
        // the uncommitted staging folder is listed for the interrupt handler
        // (remove_live_staging_dirs; tested through `hrm data` and a signal, since it removes
        // the folders of every test of this process) until it is dropped
        let tmp = s.path().to_path_buf();
        assert!(tmp.is_dir() && live_staging().contains(&tmp));
        drop(s);
        assert!(!tmp.exists() && !live_staging().contains(&tmp));
        assert!(!out.exists());
    }
}
