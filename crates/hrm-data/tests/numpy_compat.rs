//! Compatibility with NumPy and with the reference builders' folders (sapientinc/HRM:
//! dataset/build_sudoku_dataset.py writes with `np.save` + `json.dump`; puzzle_dataset.py reads
//! with `np.load(mmap_mode="r")`).
//!
//! The required check parses the bytes of every `.npy` file our builder writes the way
//! `numpy.lib.format.read_array_header_1_0` does. When a Python with NumPy is available
//! (`$HRM_PYTHON`, else `python3`), an extra check runs a small script that `np.load`s every
//! array, compares it with our reader, re-saves it with `np.save` (bytes must be identical), and
//! writes a folder the way the reference builder does, which our `load_split` must accept.

use std::path::{Path, PathBuf};
use std::process::Command;

use hrm_data::format::{load_split, read_identifiers, SET_FIELDS};
use hrm_data::sudoku::{build_sudoku, SudokuBuildOptions};

mod common;
use common::{csv_folder, sudoku_options, A, CSV_HEADER, Q};

/// Builds a small Sudoku dataset (3 train boards x (1 + 4 aug), 2 test boards).
fn build_small(root: &Path) -> PathBuf {
    let mut rows = CSV_HEADER.to_string();
    for r in 0..3 {
        rows.push_str(&format!("s,{Q},{A},{r}\n"));
    }
    let test = format!("{CSV_HEADER}s,{Q},{A},1\ns,{},{A},0\n", A);
    let input = csv_folder(&root.join("in"), &rows, &test);
    let out = root.join("ds");
    build_sudoku(&SudokuBuildOptions {
        num_aug: 4,
        seed: 3,
        ..sudoku_options(input, out.clone())
    })
    .unwrap();
    out
}

/// Parses a `.npy` file exactly as NumPy's format reader does: magic, version byte pair,
/// little-endian u16 header length, an ASCII dict literal ending in '\n', with the data starting
/// at a multiple of 64. Returns (descr, fortran_order, shape, data bytes).
fn numpy_parse(bytes: &[u8]) -> (String, String, String, &[u8]) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "magic");
    assert_eq!(
        (bytes[6], bytes[7]),
        (1, 0),
        "numpy.save writes version 1.0 here"
    );
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert_eq!((10 + hlen) % 64, 0, "data must start on a 64-byte boundary");
    assert!(header.ends_with('\n'));
    let dict = header.trim_end_matches('\n').trim_end_matches(' ');
    // NumPy writes the keys sorted, each as `'key': value, `, then `}`.
    assert!(dict.starts_with("{'descr': '"), "{dict}");
    let rest = &dict["{'descr': '".len()..];
    let (descr, rest) = rest.split_once("', 'fortran_order': ").unwrap();
    let (fortran, rest) = rest.split_once(", 'shape': ").unwrap();
    let shape = rest.strip_suffix(", }").unwrap();
    (
        descr.to_string(),
        fortran.to_string(),
        shape.to_string(),
        &bytes[10 + hlen..],
    )
}

fn shape_of(tuple: &str) -> Vec<usize> {
    tuple
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

#[test]
fn headers_parse_as_numpy_would() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = build_small(tmp.path());
    let expect = |split: &str, field: &str, descr: &str, shape: &[usize]| {
        let bytes = std::fs::read(ds.join(split).join(format!("all__{field}.npy"))).unwrap();
        let (d, f, s, data) = numpy_parse(&bytes);
        assert_eq!(d, descr, "{split}/{field}");
        assert_eq!(f, "False");
        assert_eq!(shape_of(&s), shape, "{split}/{field}");
        let elem = if descr == "|u1" { 1 } else { 4 };
        assert_eq!(data.len(), shape.iter().product::<usize>() * elem);
        // Tuple repr: `(N,)` for 1-d, `(N, 81)` for 2-d.
        if shape.len() == 1 {
            assert!(s.ends_with(",)"), "{s}");
        } else {
            assert_eq!(s, format!("({}, {})", shape[0], shape[1]));
        }
        data.to_vec()
    };
    let inputs = expect("train", "inputs", "|u1", &[15, 81]);
    expect("train", "labels", "|u1", &[15, 81]);
    expect("train", "puzzle_identifiers", "<i4", &[15]);
    let pi = expect("train", "puzzle_indices", "<i4", &[16]);
    let gi = expect("train", "group_indices", "<i4", &[4]);
    expect("test", "inputs", "|u1", &[2, 81]);
    expect("test", "group_indices", "<i4", &[3]);
    // Values: tokens in 1..=10, CSR offsets as the reference builds them.
    assert!(inputs.iter().all(|&t| (1..=10).contains(&t)));
    let ints = |b: &[u8]| -> Vec<i32> {
        b.chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    assert_eq!(ints(&pi), (0..16).collect::<Vec<i32>>());
    assert_eq!(ints(&gi), vec![0, 5, 10, 15]);
    // dataset.json / identifiers.json exactly as json.dump writes them.
    assert_eq!(
        std::fs::read_to_string(ds.join("train/dataset.json")).unwrap(),
        "{\"pad_id\": 0, \"ignore_label_id\": 0, \"blank_identifier_id\": 0, \"vocab_size\": 11, \
         \"seq_len\": 81, \"num_puzzle_identifiers\": 1, \"total_groups\": 3, \
         \"mean_puzzle_examples\": 1.0, \"sets\": [\"all\"]}"
    );
    assert_eq!(
        std::fs::read_to_string(ds.join("identifiers.json")).unwrap(),
        "[\"<blank>\"]"
    );
    assert_eq!(read_identifiers(&ds).unwrap(), vec!["<blank>"]);
}

fn python_with_numpy() -> Option<String> {
    let py = std::env::var("HRM_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        eprintln!("note: no Python with NumPy ({py}); set HRM_PYTHON to run the np.load check");
        None
    }
}

/// np.load every array, compare with the Rust-side expectations, re-save with np.save (must be
/// byte-identical), then write a dataset folder the way the reference builder does.
const SCRIPT: &str = r#"
import io, json, os, sys
import numpy as np
ds, py_out = sys.argv[1], sys.argv[2]
for split, n in (("train", 15), ("test", 2)):
    meta = json.load(open(os.path.join(ds, split, "dataset.json")))
    assert meta["seq_len"] == 81 and meta["vocab_size"] == 11 and meta["sets"] == ["all"], meta
    for field, dtype, shape in (("inputs", np.uint8, (n, 81)), ("labels", np.uint8, (n, 81)),
                                ("puzzle_identifiers", np.int32, (n,)),
                                ("puzzle_indices", np.int32, (n + 1,))):
        path = os.path.join(ds, split, "all__%s.npy" % field)
        mode = "r" if field in ("inputs", "labels") else None
        a = np.load(path, mmap_mode=mode)
        assert a.dtype == dtype, (path, a.dtype)
        assert a.shape == shape, (path, a.shape)
        buf = io.BytesIO()
        np.save(buf, np.asarray(a))
        assert buf.getvalue() == open(path, "rb").read(), "np.save bytes differ: " + path
# A folder written like dataset/build_sudoku_dataset.py (np.save + json.dump).
rng = np.random.default_rng(0)
os.makedirs(os.path.join(py_out, "train"))
inputs = rng.integers(1, 11, size=(6, 81)).astype(np.uint8)
labels = rng.integers(2, 11, size=(6, 81)).astype(np.uint8)
arrays = {"inputs": inputs, "labels": labels,
          "group_indices": np.array([0, 2, 6], dtype=np.int32),
          "puzzle_indices": np.arange(7, dtype=np.int32),
          "puzzle_identifiers": np.zeros(6, dtype=np.int32)}
meta = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
            num_puzzle_identifiers=1, total_groups=2, mean_puzzle_examples=1.0, sets=["all"])
with open(os.path.join(py_out, "train", "dataset.json"), "w") as f:
    json.dump(meta, f)
for k, v in arrays.items():
    np.save(os.path.join(py_out, "train", "all__%s.npy" % k), v)
with open(os.path.join(py_out, "identifiers.json"), "w") as f:
    json.dump(["<blank>"], f)
np.save(os.path.join(py_out, "expected_inputs.npy"), inputs)
print("numpy", np.__version__, "ok")
"#;

#[test]
fn numpy_loads_our_folder_and_we_load_numpys() {
    let Some(py) = python_with_numpy() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ds = build_small(tmp.path());
    let py_out = tmp.path().join("py");
    let out = Command::new(&py)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&ds)
        .arg(&py_out)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());

    // The folder NumPy wrote loads in Rust, with the same content, and our writer reproduces
    // NumPy's bytes for every file.
    let split = load_split(&py_out, "train").unwrap();
    let set = &split.sets[0];
    assert_eq!(set.num_examples(), 6);
    assert_eq!(set.group_indices, vec![0, 2, 6]);
    assert_eq!(set.num_groups(), 2);
    let expected = hrm_data::npy::read_npy_as::<u8>(&py_out.join("expected_inputs.npy")).unwrap();
    assert_eq!(set.inputs.as_slice(), &expected.1[..]);
    let ours = tempfile::tempdir().unwrap();
    let arrays = hrm_data::format::SetArrays {
        inputs: set.inputs.as_slice().to_vec(),
        labels: set.labels.as_slice().to_vec(),
        puzzle_identifiers: set.puzzle_identifiers.clone(),
        puzzle_indices: set.puzzle_indices.clone(),
        group_indices: set.group_indices.clone(),
    };
    hrm_data::format::write_split(ours.path(), "train", &split.metadata, &[("all", &arrays)])
        .unwrap();
    for f in SET_FIELDS {
        let name = format!("train/all__{f}.npy");
        assert_eq!(
            std::fs::read(py_out.join(&name)).unwrap(),
            std::fs::read(ours.path().join(&name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(py_out.join("train/dataset.json")).unwrap(),
        std::fs::read(ours.path().join("train/dataset.json")).unwrap()
    );
}
