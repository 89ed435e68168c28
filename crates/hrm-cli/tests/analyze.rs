//! `hrm analyze` end to end on the shipped Sudoku model and a small generated dataset: the files
//! it writes, the schema of `analysis.json`, the report rendered by headless Chromium, and the
//! one-line errors for a mismatched or empty dataset.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

/// A 10-blank Sudoku dataset (40 puzzles, 12 in the test split), built once per test binary.
fn sudoku_data() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, data) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let generate = [
            "--from-scratch",
            "40",
            "--blanks",
            "10",
            "--seed",
            "5",
            "--test-fraction",
            "0.3",
        ];
        let data = generated_dataset(dir.path(), "sudoku", &generate, &[]).1;
        (dir, data)
    });
    data
}

/// `hrm analyze --checkpoint CKPT --data DATA --out OUT`.
fn analyze_args(ckpt: &Path, data: &Path, out: &Path) -> Vec<String> {
    [
        "analyze",
        "--checkpoint",
        p(ckpt),
        "--data",
        p(data),
        "--out",
        p(out),
    ]
    .map(String::from)
    .to_vec()
}

/// `hrm analyze` of the shipped Sudoku model into a fresh folder, once per test binary.
fn analysed() -> &'static Path {
    static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        let ckpt = models().join("sudoku-cpu.safetensors");
        let mut args = analyze_args(&ckpt, sudoku_data(), out.path());
        args.extend(
            [
                "--max-segments",
                "4",
                "--show-puzzles",
                "3",
                "--pca-puzzles",
                "5",
                "--batch-size",
                "5",
            ]
            .map(String::from),
        );
        let stdout = ok(&args);
        assert!(stdout.contains("PR (one per puzzle"), "{stdout}");
        assert!(stdout.contains("accuracy by budget"), "{stdout}");
        out
    })
    .path()
}

const FIGURES: [&str; 6] = [
    "analyze-pr",
    "analyze-pr-saturation",
    "analyze-convergence",
    "analyze-pca",
    "analyze-halting",
    "analyze-scaling",
];

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    v.pointer(path)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{path} is not an array"))
}

/// The keys and types of analysis.json, and values that must hold whatever the model.
#[test]
fn analysis_json_has_its_schema() {
    let out = analysed();
    let a = json(&std::fs::read_to_string(out.join("analysis.json")).unwrap());
    assert_eq!(a["task"], "sudoku");
    let n = num(&a, "/examples") as usize;
    assert_eq!(n, 12, "the whole test split (12 puzzles)");
    assert_eq!(num(&a, "/max_segments"), 4.0);
    assert!(a["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("sudoku-cpu.safetensors"));
    assert!(num(&a, "/seconds") > 0.0);
    assert_eq!(num(&a, "/config/hidden_size"), 128.0);
    // dimensionality: both poolings, trained and untrained, ratio = H / L
    for pool in ["per_puzzle", "per_token"] {
        for model in ["trained", "untrained"] {
            let base = format!("/dimensionality/{pool}/{model}");
            let (h, l) = (
                num(&a, &format!("{base}/pr_h")),
                num(&a, &format!("{base}/pr_l")),
            );
            assert!(h >= 1.0 && l >= 1.0, "{base}: {h} {l}");
            assert!((num(&a, &format!("{base}/ratio")) - h / l).abs() < 1e-9);
        }
        assert!(a["dimensionality"][pool]["samples"].is_string());
    }
    // n puzzles span at most n - 1 dimensions
    assert!(num(&a, "/dimensionality/per_puzzle/trained/pr_h") <= 11.0 + 1e-6);
    assert_eq!(num(&a, "/dimensionality/per_token/count"), (12 * 81) as f64);
    assert!(a["dimensionality"]["positions"].is_string());
    let counts: Vec<u64> = arr(&a, "/dimensionality/saturation/trajectories")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(counts, [2, 4, 8, 12]);
    for k in ["trained_h", "trained_l", "untrained_h", "untrained_l"] {
        assert_eq!(arr(&a, &format!("/dimensionality/saturation/{k}")).len(), 4);
    }
    // convergence: one value per call of the 4-segment rollout (1 H x 2 L cycles a segment)
    assert_eq!(num(&a, "/convergence/h_cycles"), 1.0);
    assert_eq!(num(&a, "/convergence/l_cycles"), 2.0);
    for (m, calls) in [("residual_h", 4), ("residual_l", 8)] {
        for s in ["mean", "p10", "p90"] {
            let v = arr(&a, &format!("/convergence/{m}/{s}"));
            assert_eq!(v.len(), calls, "{m}/{s}");
            assert!(v.iter().all(|x| x.as_f64().unwrap() >= 0.0));
        }
    }
    let pca = arr(&a, "/convergence/pca_h/trajectories");
    assert_eq!(pca.len(), 5);
    assert_eq!(pca[0].as_array().unwrap().len(), 4);
    assert_eq!(
        arr(&a, "/convergence/pca_l/trajectories")[0]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(arr(&a, "/convergence/pca_h/explained").len(), 2);
    // adaptive compute: budgets 1, 2, 4
    let budgets: Vec<u64> = arr(&a, "/adaptive/budgets")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(budgets, [1, 2, 4]);
    for k in [
        "accuracy_fixed",
        "accuracy_learned",
        "mean_segments_learned",
    ] {
        assert_eq!(arr(&a, &format!("/adaptive/{k}")).len(), 3);
    }
    assert_eq!(a["adaptive"]["difficulty_measure"], "blank cells");
    let rows = arr(&a, "/adaptive/by_difficulty");
    assert_eq!(rows.len(), 1, "every puzzle has 10 blanks");
    assert_eq!(rows[0]["difficulty"], 10);
    assert_eq!(rows[0]["puzzles"], 12);
    // the shipped model runs one segment: capped at its M_max it always uses one
    assert_eq!(rows[0]["mean_segments"], 1.0);
    // per-segment answers
    let ex = arr(&a, "/per_segment");
    assert_eq!(ex.len(), 3);
    let segs = arr(&ex[0], "/trace/segments");
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[0]["answer"].as_array().unwrap().len(), 81);
    assert_eq!(segs[0]["h_cycle_answers"].as_array().unwrap().len(), 1);
    assert!(segs[0]["q_halt"].is_number() && segs[0]["q_continue"].is_number());
    assert!(segs[0]["changed"].is_array());
    assert_eq!(ex[0]["correct"].as_array().unwrap().len(), 4);
    assert!(ex[0]["trace"].get("halted_at").is_some());
    let figs: Vec<&str> = arr(&a, "/figures")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(figs, FIGURES);
    for f in FIGURES {
        let png = std::fs::read(out.join(format!("{f}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{f}.png");
        let svg = std::fs::read_to_string(out.join(format!("{f}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{f}.svg");
    }
}

/// The report opens from disk in headless Chromium and shows every figure (an inline SVG
/// each) and the per-segment grids of the puzzles shown; it fetches nothing.
#[test]
fn report_renders_every_figure_and_the_segment_grids() {
    let out = analysed();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(external), "the report loads {external}...");
    }
    assert!(!html.contains("<script"), "the report needs no script");
    let Some(chrome) = hrm_testkit::browser::chromium() else {
        return;
    };
    let dom = hrm_testkit::browser::dump_dom(
        &chrome,
        &hrm_testkit::browser::file_url(&out.join("report.html")),
        1500,
    );
    for f in FIGURES {
        let at = dom
            .find(&format!("id=\"fig-{f}\""))
            .unwrap_or_else(|| panic!("figure {f} missing from the rendered page"));
        let rest = &dom[at..];
        let end = rest.find("</figure>").unwrap();
        assert!(rest[..end].contains("<svg"), "figure {f} has no SVG");
        assert!(
            rest[..end].contains("<figcaption>"),
            "figure {f} has no caption"
        );
    }
    for k in 0..3 {
        let at = dom
            .find(&format!("id=\"puzzle-{k}\""))
            .unwrap_or_else(|| panic!("puzzle {k} missing"));
        let rest = &dom[at..];
        let section = &rest[..rest.find("</section>").unwrap()];
        assert_eq!(section.matches("class=\"grid segment-grid\"").count(), 4);
        assert_eq!(section.matches("class=\"grid input-grid\"").count(), 1);
        assert_eq!(section.matches("data-segment=").count(), 4);
        assert!(section.matches("<td").count() >= 5 * 81);
    }
    assert!(dom.contains("id=\"pr-table\"") && dom.contains("id=\"scaling-table\""));
}

/// A dataset for another model: one line naming the dataset, the checkpoint and the numbers.
#[test]
fn a_dataset_of_another_shape_is_refused_in_one_line() {
    let out = tempfile::tempdir().unwrap();
    let ckpt = models().join("maze-cpu.safetensors");
    let args = analyze_args(&ckpt, sudoku_data(), out.path());
    let line = one_line_error(&args, "seq_len 81 / vocab_size 11");
    assert!(
        line.contains("maze-cpu.safetensors") && line.contains("seq_len 36"),
        "{line}"
    );
}

/// An empty test split and a missing dataset: one line each.
#[test]
fn an_empty_or_missing_dataset_is_refused_in_one_line() {
    use hrm_data::format::{read_metadata, write_split, SetArrays};
    let dir = tempfile::tempdir().unwrap();
    let generate = [
        "--from-scratch",
        "6",
        "--blanks",
        "10",
        "--test-fraction",
        "0.5",
    ];
    let (_, data) = generated_dataset(&dir.path().join("empty"), "sudoku", &generate, &[]);
    // the builders refuse an empty split: write one with the library
    let mut meta = read_metadata(&data.join("test")).unwrap();
    meta.total_groups = 0;
    meta.mean_puzzle_examples = 0.0;
    std::fs::remove_dir_all(data.join("test")).unwrap();
    let empty = SetArrays {
        inputs: vec![],
        labels: vec![],
        puzzle_identifiers: vec![],
        puzzle_indices: vec![0],
        group_indices: vec![0],
    };
    let sets: Vec<(&str, &SetArrays)> = meta.sets.iter().map(|n| (n.as_str(), &empty)).collect();
    write_split(&data, "test", &meta, &sets).unwrap();
    let ckpt = models().join("sudoku-cpu.safetensors");
    let out = dir.path().join("out");
    let args = |d: &Path| analyze_args(&ckpt, d, &out);
    one_line_error(&args(&data), "the test split has no examples");
    one_line_error(&args(&dir.path().join("nowhere")), "nowhere");
    assert!(!out.join("analysis.json").exists());
}
