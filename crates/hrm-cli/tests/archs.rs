//! TRM (attention and mlp_t) and the transformer baseline through the same commands as HRM:
//! train, exact resume, eval and solve; and the config keys only some models have.

mod common;

use common::{
    evaluates_and_solves, hrm, ok, one_line_error, tiny_sudoku_dataset, trains_and_resumes_exactly,
};

/// The tiny preset as each model (`arch.*` overrides).
const ARCHS: [(&str, &[&str]); 3] = [
    (
        "trm",
        &[
            "arch.name=trm",
            "arch.H_layers=0",
            "arch.L_layers=2",
            "arch.H_cycles=2",
            "arch.L_cycles=2",
            "arch.puzzle_emb_len=1",
            "ema=true",
            "ema_rate=0.9",
        ],
    ),
    (
        "trm-mlp_t",
        &[
            "arch.name=recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
            "arch.H_layers=0",
            "arch.L_layers=1",
            "arch.H_cycles=2",
            "arch.L_cycles=2",
            "arch.puzzle_emb_len=2",
            "arch.mlp_t=true",
            "arch.pos_encodings=none",
        ],
    ),
    (
        "transformer",
        &[
            "arch.name=transformer",
            "arch.H_layers=2",
            "arch.L_layers=0",
            "arch.L_cycles=0",
            "arch.H_cycles=1",
        ],
    ),
];

fn train_args(data: &str, run_dir: &str, arch: &[&str], extra: &[&str]) -> Vec<String> {
    let extra: Vec<&str> = arch.iter().chain(extra).copied().collect();
    common::tiny_train_args(data, run_dir, &extra)
}

/// Every model trains, resumes bit for bit from a mid-run checkpoint, evaluates and solves.
#[test]
fn every_model_trains_resumes_exactly_evaluates_and_solves() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_sudoku_dataset(dir.path());
    let d = data.to_str().unwrap();
    for (name, arch) in ARCHS {
        let a = dir.path().join(format!("{name}-a"));
        let b = dir.path().join(format!("{name}-b"));
        let args = |run: &std::path::Path, extra: &[&str]| {
            train_args(d, run.to_str().unwrap(), arch, extra)
        };
        trains_and_resumes_exactly(&args, &a, &b, name);
        // the saved config names the model
        let config = std::fs::read_to_string(a.join("config.toml")).unwrap();
        assert!(config.contains("name = \""), "{name}: {config}");
        evaluates_and_solves(&a, d, 12.0, name);
        // the analysis: TRM's two states; the baseline has one and is refused in one line
        let an = dir.path().join(format!("{name}-analysis"));
        let args = [
            "analyze",
            "--checkpoint",
            a.to_str().unwrap(),
            "--data",
            d,
            "--out",
            an.to_str().unwrap(),
            "--max-examples",
            "8",
            "--max-segments",
            "2",
            "--batch-size",
            "8",
            "--pca-puzzles",
            "2",
            "--show-puzzles",
            "1",
        ];
        if name == "transformer" {
            one_line_error(&args, "only z_H");
        } else {
            ok(&args);
            assert!(an.join("report.html").exists(), "{name}");
        }
    }
}

/// Keys a model does not have, an unknown model and a prefix that cannot hold the puzzle
/// embedding are one-line errors naming the key; a key TRM ignores is a warning.
#[test]
fn model_specific_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_sudoku_dataset(dir.path());
    let d = data.to_str().unwrap();
    let run = dir.path().join("r");
    let r = run.to_str().unwrap();
    let trm = ARCHS[0].1;
    let cases: [(&[&str], &str); 4] = [
        (&["arch.name=hrm-v9"], "arch.name"),
        (&["arch.mlp_t=true"], "arch.mlp_t"),
        (
            &["arch.no_ACT_continue=true", "arch.name=transformer"],
            "arch.no_ACT_continue",
        ),
        (
            &[trm, &["arch.puzzle_emb_ndim=200", "arch.puzzle_emb_len=3"]].concat(),
            "arch.puzzle_emb_ndim",
        ),
    ];
    for (extra, key) in cases {
        let e = one_line_error(&train_args(d, r, extra, &[]), key);
        assert!(
            !run.join("config.toml").exists(),
            "{key}: a run was started: {e}"
        );
    }
    // H_layers set for TRM: ignored, with a warning, and the run goes on
    let mut args = train_args(d, r, trm, &["arch.H_layers=4", "--stop-after", "1"]);
    args.retain(|a| a != "--quiet");
    let out = hrm().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: `arch.H_layers` = 4 is ignored by TRM"),
        "{err}"
    );
}
