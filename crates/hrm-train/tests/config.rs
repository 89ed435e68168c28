//! End-to-end tests of the training config: every preset in `configs/` loads and validates, the
//! defaults equal the reference's `cfg_pretrain.yaml` + `arch/hrm_v1.yaml`, the README's override
//! commands work, and every bad config gives exactly one error line naming the key and its file
//! or override.

mod common;

use std::path::{Path, PathBuf};

use hrm_model::config::{ForwardDtype, PosEncoding};
use hrm_train::config::{DatasetFacts, DeviceSpec, LossType, TrainConfig};

use common::{configs_dir, load, preset};

const SUDOKU: DatasetFacts = DatasetFacts {
    vocab_size: 11,
    seq_len: 81,
    num_puzzle_identifiers: 1,
};

/// A temporary folder with a `pretrain.toml` copy, so test files can inherit the defaults.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(preset("pretrain.toml"), dir.path().join("pretrain.toml")).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Load a file written into `dir`, expect an error, and check it is one line holding `needles`.
fn error_of(path: &Path, overrides: &[&str]) -> String {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let err = TrainConfig::load(path, &o)
        .expect_err("config should be rejected")
        .to_string();
    assert_eq!(err.lines().count(), 1, "error is not one line: {err}");
    err
}

fn assert_has(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "error `{err}` lacks `{n}`");
    }
}

/// `configs/tiny.toml` with `overrides` is rejected with one line holding `needles`.
fn assert_tiny_error(overrides: &[&str], needles: &[&str]) {
    assert_has(&error_of(&preset("tiny.toml"), overrides), needles);
}

#[test]
fn every_preset_loads_validates_and_round_trips() {
    let mut names: Vec<String> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    for required in [
        "pretrain.toml",
        "sudoku-extreme-1k.toml",
        "maze-30x30-hard-1k.toml",
        "arc-1.toml",
        "arc-2.toml",
        "tiny.toml",
        "sudoku-cpu.toml",
        "maze-cpu.toml",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "configs/{required} missing"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        let cfg = load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let facts = DatasetFacts {
            vocab_size: 12,
            seq_len: 900,
            num_puzzle_identifiers: 1000,
        };
        let mc = cfg
            .model_config(&facts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(mc.batch_size, cfg.global_batch_size);
        assert_eq!(mc.seq_len, 900);
        // The saved form loads back to an equal config.
        let saved = write(dir.path(), name, &cfg.to_toml_string());
        let back = TrainConfig::load(&saved, &[]).unwrap_or_else(|e| panic!("{name} saved: {e}"));
        assert_eq!(
            back,
            cfg,
            "{name}: saved config differs\n{}",
            cfg.to_toml_string()
        );
        cfg.check_resume_compatible(&back).unwrap();
        // The table shows every key.
        let table = cfg.to_table_string();
        for key in [
            "data_path",
            "global_batch_size",
            "arch.H_cycles",
            "arch.loss.loss_type",
        ] {
            assert!(
                table.contains(&format!("| {key} ")),
                "{name}: table lacks {key}\n{table}"
            );
        }
    }
}

#[test]
fn defaults_equal_the_reference() {
    let c = load("pretrain.toml", &[]).unwrap();
    assert_eq!(c.data_path, "data/arc-aug-1000");
    assert_eq!(c.global_batch_size, 768);
    assert_eq!(c.epochs, 100_000);
    assert_eq!(c.eval_interval, Some(10_000));
    assert!(c.checkpoint_every_eval);
    assert_eq!((c.lr, c.lr_min_ratio, c.lr_warmup_steps), (1e-4, 1.0, 2000));
    assert_eq!((c.beta1, c.beta2), (0.9, 0.95));
    assert_eq!(
        (c.weight_decay, c.puzzle_emb_weight_decay, c.puzzle_emb_lr),
        (0.1, 0.1, 1e-2)
    );
    assert_eq!(c.seed, 0);
    assert!(c.eval_save_outputs.is_empty());
    assert_eq!(
        (c.project_name.as_deref(), c.run_name.as_deref()),
        (None, None)
    );
    assert_eq!(c.checkpoint_path, None);
    let a = &c.arch;
    let m = &a.model; // the architecture keys shared with the model config
    assert_eq!(a.name, "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1");
    assert_eq!(a.loss.name, "losses@ACTLossHead");
    assert_eq!(a.loss.loss_type, LossType::Stablemax);
    assert_eq!((m.halt_max_steps, m.halt_exploration_prob), (16, 0.1));
    assert_eq!(
        (m.h_cycles, m.l_cycles, m.h_layers, m.l_layers),
        (2, 2, 4, 4)
    );
    assert_eq!((m.hidden_size, m.num_heads, m.expansion), (512, 8, 4.0));
    // Absent in the file, resolved to hidden_size on load (the yaml's `${.hidden_size}`).
    assert_eq!(a.puzzle_emb_ndim, Some(512));
    assert_eq!(c.puzzle_emb_ndim(), 512);
    let narrow = load("pretrain.toml", &["arch.hidden_size=256"]).unwrap();
    assert_eq!(narrow.puzzle_emb_ndim(), 256);
    assert_eq!(m.pos_encodings, PosEncoding::Rope);
    assert_eq!((m.rms_norm_eps, m.rope_theta), (1e-5, 10000.0));
    // The reference's Sudoku model, batch 768, f32 on the CPU.
    let mc = c.model_config(&SUDOKU).unwrap();
    assert_eq!(mc, hrm_model::config::ModelConfig::sudoku(768));
    assert_eq!(mc.num_params(), 27_275_266);
    assert_eq!(c.project_name(), "Arc-aug-1000");
}

#[test]
fn presets_carry_the_readme_settings() {
    let s = load("sudoku-extreme-1k.toml", &[]).unwrap();
    assert_eq!(s.data_path, "data/sudoku-extreme-1k-aug-1000");
    assert_eq!((s.epochs, s.eval_interval), (20_000, Some(2000)));
    assert_eq!(
        (
            s.lr,
            s.puzzle_emb_lr,
            s.weight_decay,
            s.puzzle_emb_weight_decay
        ),
        (1e-4, 1e-4, 1.0, 1.0)
    );
    assert_eq!(s.global_batch_size, 768);
    assert_eq!(s.device_spec().unwrap(), DeviceSpec::Cuda(0));
    // Unset forward_dtype follows the device: bf16 on CUDA (the reference), f32 on the CPU.
    assert_eq!(s.forward_dtype(), ForwardDtype::BF16);
    let cpu = load("sudoku-extreme-1k.toml", &["device=cpu"]).unwrap();
    assert_eq!(cpu.forward_dtype(), ForwardDtype::F32);
    assert_eq!(s.project_name(), "Sudoku-extreme-1k-aug-1000");

    let one = load("sudoku-extreme-1k-1gpu.toml", &[]).unwrap();
    assert_eq!(
        (one.global_batch_size, one.lr, one.puzzle_emb_lr),
        (384, 7e-5, 7e-5)
    );
    assert_eq!(one.epochs, 20_000);

    let m = load("maze-30x30-hard-1k.toml", &[]).unwrap();
    assert_eq!(m.data_path, "data/maze-30x30-hard-1k");
    assert_eq!(
        (m.epochs, m.eval_interval, m.lr),
        (20_000, Some(2000), 1e-4)
    );

    assert_eq!(
        load("arc-2.toml", &[]).unwrap().data_path,
        "data/arc-2-aug-1000"
    );
    assert_eq!(load("arc-1.toml", &[]).unwrap().epochs, 100_000);

    // Nested tables merge: the full Sudoku-Hard preset changes three arch keys and the loss,
    // and inherits the rest.
    let h = load("sudoku-hard-full.toml", &[]).unwrap();
    assert_eq!(
        (
            h.arch.model.l_cycles,
            h.arch.model.halt_max_steps,
            h.arch.model.h_cycles
        ),
        (8, 8, 2)
    );
    assert_eq!(h.arch.model.pos_encodings, PosEncoding::Learned);
    assert_eq!(h.arch.loss.loss_type, LossType::Softmax);
    assert_eq!(h.arch.loss.name, "losses@ACTLossHead");
    assert_eq!((h.global_batch_size, h.lr_min_ratio), (2304, 0.1));

    // TRM's README runs: the model and the settings of its commands
    use hrm_model::config::Arch;
    for (file, mlp_t, l_cycles, data) in [
        (
            "trm-sudoku-extreme-mlp-t.toml",
            true,
            6,
            "data/sudoku-extreme-1k-aug-1000",
        ),
        (
            "trm-sudoku-extreme-att.toml",
            false,
            6,
            "data/sudoku-extreme-1k-aug-1000",
        ),
        (
            "trm-maze-30x30-hard.toml",
            false,
            4,
            "data/maze-30x30-hard-1k",
        ),
        ("trm-arc-1.toml", false, 4, "data/arc-aug-1000"),
        ("trm-arc-2.toml", false, 4, "data/arc2concept-aug-1000"),
    ] {
        let c = load(file, &[]).unwrap();
        let m = c.model_config(&SUDOKU).unwrap();
        assert_eq!(m.arch, Arch::Trm, "{file}");
        assert_eq!(
            (m.mlp_t, m.h_cycles, m.l_cycles, m.l_layers),
            (mlp_t, 3, l_cycles, 2),
            "{file}"
        );
        assert_eq!(m.pos_encodings == PosEncoding::None, mlp_t, "{file}");
        assert_eq!(
            (m.puzzle_emb_len(), m.halts_on_q_halt_alone()),
            (16, true),
            "{file}"
        );
        assert!(c.ema && c.ema_rate == 0.999, "{file}");
        assert_eq!(c.data_path, data, "{file}");
        assert!(m.warnings().is_empty(), "{file}: {:?}", m.warnings());
        if !file.contains("arc") {
            assert_eq!(
                (c.epochs, c.eval_interval, c.lr, c.weight_decay),
                (50_000, Some(5000), 1e-4, 1.0)
            );
        }
    }
    let b = load("transformer-pretrain.toml", &[])
        .unwrap()
        .model_config(&SUDOKU)
        .unwrap();
    assert_eq!(
        (b.arch, b.h_layers, b.has_z_l()),
        (Arch::Transformer, 8, false)
    );
    assert!(b.warnings().is_empty(), "{:?}", b.warnings());
    for (file, arch, mlp_t) in [
        ("trm-sudoku-cpu.toml", Arch::Trm, false),
        ("trm-mlp-t-sudoku-cpu.toml", Arch::Trm, true),
        ("transformer-sudoku-cpu.toml", Arch::Transformer, false),
    ] {
        let c = load(file, &[]).unwrap();
        let m = c.model_config(&SUDOKU).unwrap();
        assert_eq!(
            (m.arch, m.mlp_t, m.hidden_size, c.global_batch_size),
            (arch, mlp_t, 128, 32)
        );
        assert!(m.warnings().is_empty(), "{file}: {:?}", m.warnings());
    }

    let t = load("tiny.toml", &[]).unwrap();
    assert!(t.arch.model.hidden_size <= 128 && t.global_batch_size <= 32);
    assert_eq!(t.forward_dtype(), ForwardDtype::F32);
}

#[test]
fn readme_style_overrides() {
    let c = load(
        "pretrain.toml",
        &[
            "data_path=data/sudoku-extreme-1k-aug-1000",
            "epochs=20000",
            "eval_interval=2000",
            "global_batch_size=384",
            "lr=7e-5",
            "puzzle_emb_lr=7e-5",
            "weight_decay=1",
            "arch.L_cycles=8",
            "arch.loss.loss_type=softmax_cross_entropy",
            "arch.pos_encodings=learned",
            "arch.puzzle_emb_ndim=0",
            "run_name=2024",
            "eval_save_outputs=[logits,q_halt_logits]",
            "checkpoint_every_eval=false",
        ],
    )
    .unwrap();
    assert_eq!(c.data_path, "data/sudoku-extreme-1k-aug-1000");
    assert_eq!(
        (c.epochs, c.eval_interval, c.global_batch_size),
        (20_000, Some(2000), 384)
    );
    assert_eq!((c.lr, c.puzzle_emb_lr, c.weight_decay), (7e-5, 7e-5, 1.0));
    assert_eq!(c.arch.model.l_cycles, 8);
    assert_eq!(c.arch.loss.loss_type, LossType::Softmax);
    assert_eq!(c.arch.model.pos_encodings, PosEncoding::Learned);
    assert_eq!(c.puzzle_emb_ndim(), 0);
    assert_eq!(c.run_name.as_deref(), Some("2024"));
    assert_eq!(c.eval_save_outputs, ["logits", "q_halt_logits"]);
    assert!(!c.checkpoint_every_eval);
    // Later overrides win.
    let c = load("tiny.toml", &["lr=1", "lr=2e-3"]).unwrap();
    assert_eq!(c.lr, 2e-3);
}

#[test]
fn unknown_keys_suggest_the_known_one() {
    let dir = scratch();
    let f = write(
        dir.path(),
        "typo.toml",
        "base = \"pretrain.toml\"\n[arch]\nhiden_size = 256\n",
    );
    let err = error_of(&f, &[]);
    assert_has(
        &err,
        &[
            "typo.toml",
            "unknown key `arch.hiden_size`",
            "did you mean `arch.hidden_size`?",
        ],
    );

    let f = write(
        dir.path(),
        "top.toml",
        "base = \"pretrain.toml\"\nepoch = 5\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &["top.toml", "`epoch`", "did you mean `epochs`?"],
    );

    // A nested key given at the top level points at its table.
    let f = write(
        dir.path(),
        "flat.toml",
        "base = \"pretrain.toml\"\nL_cycles = 8\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &["flat.toml", "`L_cycles`", "did you mean `arch.L_cycles`?"],
    );

    // Overrides: the error names the override.
    assert_tiny_error(
        &["lrr=1e-3"],
        &[
            "override `lrr=1e-3`",
            "unknown key `lrr`",
            "did you mean `lr`?",
        ],
    );
    assert_tiny_error(
        &["arch.H_cycle=3"],
        &["override `arch.H_cycle=3`", "did you mean `arch.H_cycles`?"],
    );
    assert_tiny_error(
        &["completely_unrelated_thing=1"],
        &[
            "unknown key `completely_unrelated_thing`",
            "configs/pretrain.toml",
        ],
    );
}

#[test]
fn wrong_types_name_the_key_and_the_expected_type() {
    assert_tiny_error(
        &["epochs=abc"],
        &[
            "override `epochs=abc`",
            "`epochs` expects a non-negative integer, got \"abc\"",
        ],
    );
    assert_tiny_error(
        &["epochs=-4"],
        &["`epochs` expects a non-negative integer, got -4"],
    );
    assert_tiny_error(&["lr=fast"], &["`lr` expects a number, got \"fast\""]);
    assert_tiny_error(
        &["checkpoint_every_eval=yes"],
        &["`checkpoint_every_eval` expects a boolean"],
    );
    assert_tiny_error(
        &["arch.pos_encodings=rop"],
        &[
            "`arch.pos_encodings` expects one of \"rope\", \"learned\"",
            "did you mean \"rope\"?",
        ],
    );
    assert_tiny_error(&["arch=5"], &["`arch` expects a table, got 5"]);

    let dir = scratch();
    let f = write(
        dir.path(),
        "types.toml",
        "base = \"pretrain.toml\"\nepochs = \"abc\"\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &[
            "types.toml",
            "`epochs` expects a non-negative integer, got \"abc\"",
        ],
    );
    let f = write(
        dir.path(),
        "list.toml",
        "base = \"pretrain.toml\"\neval_save_outputs = [1]\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &[
            "list.toml",
            "`eval_save_outputs` expects an array of strings",
        ],
    );
    // A bad value in the base file is reported against the base file, not the preset.
    write(
        dir.path(),
        "bad-base.toml",
        "base = \"pretrain.toml\"\nseed = 1.5\n",
    );
    let f = write(
        dir.path(),
        "child.toml",
        "base = \"bad-base.toml\"\nlr = 1e-3\n",
    );
    let err = error_of(&f, &[]);
    assert_has(
        &err,
        &[
            "bad-base.toml",
            "`seed` expects a non-negative integer, got 1.5",
        ],
    );
    assert!(!err.contains("child.toml"), "{err}");
}

#[test]
fn malformed_overrides_and_files() {
    assert_tiny_error(&["lr"], &["override `lr` is not of the form key=value"]);
    assert_tiny_error(&["=3"], &["override `=3` is not of the form key=value"]);
    assert_tiny_error(
        &["base=x.toml"],
        &["`base` can only be set inside a config file"],
    );

    let dir = scratch();
    let f = write(
        dir.path(),
        "syntax.toml",
        "base = \"pretrain.toml\"\nlr = = 3\n",
    );
    assert_has(&error_of(&f, &[]), &["syntax.toml:2:", "invalid TOML"]);
    let f = write(dir.path(), "cycle-a.toml", "base = \"cycle-b.toml\"\n");
    write(dir.path(), "cycle-b.toml", "base = \"cycle-a.toml\"\n");
    assert_has(&error_of(&f, &[]), &["`base`", "cycle"]);
    let f = write(dir.path(), "nobase.toml", "base = \"nowhere.toml\"\n");
    assert_has(
        &error_of(&f, &[]),
        &["nobase.toml", "`base`", "nowhere.toml", "not found"],
    );
    let err = error_of(&dir.path().join("absent.toml"), &[]);
    assert_has(&err, &["cannot read config file", "absent.toml"]);
}

#[test]
fn missing_data_path() {
    // A file without `base` that lacks a required key.
    let dir = scratch();
    let text = std::fs::read_to_string(preset("pretrain.toml")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("data_path"))
        .map(|l| format!("{l}\n"))
        .collect();
    let f = write(dir.path(), "nodata.toml", &text);
    assert_has(
        &error_of(&f, &[]),
        &["nodata.toml", "missing required key `data_path`"],
    );

    // A data_path that does not exist on disk: checked before training starts.
    let c = load("tiny.toml", &["data_path=/nonexistent/hrm-data"]).unwrap();
    let err = c.check_data_path().unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_has(
        &err,
        &[
            "override `data_path=/nonexistent/hrm-data`",
            "`data_path`",
            "folder not found",
        ],
    );
    // A folder that is not a dataset.
    let empty = tempfile::tempdir().unwrap();
    let c = load(
        "tiny.toml",
        &[&format!("data_path={}", empty.path().display())],
    )
    .unwrap();
    let err = c.check_data_path().unwrap_err().to_string();
    assert_has(&err, &["`data_path`", "has no train/dataset.json"]);
    // A dataset folder passes.
    for split in ["train", "test"] {
        std::fs::create_dir_all(empty.path().join(split)).unwrap();
        std::fs::write(empty.path().join(split).join("dataset.json"), "{}").unwrap();
    }
    c.check_data_path().unwrap();
}

#[test]
fn invariants_name_the_key() {
    assert_tiny_error(
        &["epochs=5", "eval_interval=2"],
        &[
            "override `eval_interval=2`",
            "`eval_interval` = 2 does not divide epochs = 5",
        ],
    );
    let dir = scratch();
    let f = write(
        dir.path(),
        "div.toml",
        "base = \"pretrain.toml\"\nepochs = 7\neval_interval = 2\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &["div.toml", "`eval_interval`", "does not divide epochs = 7"],
    );

    let err = error_of(&preset("tiny.toml"), &["arch.num_heads=3"]);
    assert_has(&err, &["override `arch.num_heads=3`"]);
    assert_has(
        &err,
        &["`arch.hidden_size`", "not divisible by num_heads = 3"],
    );
    let f = write(
        dir.path(),
        "heads.toml",
        "base = \"pretrain.toml\"\n[arch]\nhidden_size = 100\n",
    );
    assert_has(
        &error_of(&f, &[]),
        &[
            "heads.toml",
            "`arch.hidden_size` = 100 is not divisible by num_heads = 8",
        ],
    );
    // the file that set num_heads is named, not the base that set hidden_size
    let f = write(
        dir.path(),
        "three_heads.toml",
        &format!(
            "base = \"{}\"\n[arch]\nnum_heads = 3\n",
            preset("tiny.toml").display()
        ),
    );
    let err = error_of(&f, &[]);
    assert_has(
        &err,
        &["three_heads.toml", "not divisible by num_heads = 3"],
    );
    assert!(!err.contains("tiny.toml"), "{err}");

    assert_tiny_error(
        &["arch.H_layers=0"],
        &["`arch.H_layers` must be at least 1"],
    );
    assert_tiny_error(&["global_batch_size=0"], &["`global_batch_size`"]);
    assert_has(
        &error_of(&preset("tiny.toml"), &["lr_min_ratio=1.5"]),
        &["`lr_min_ratio` = 1.5 must lie in [0, 1]"],
    );
    assert_tiny_error(&["beta2=1"], &["`beta2` = 1 must lie in [0, 1)"]);
    assert_tiny_error(&["device=gpu"], &["`device` = \"gpu\" is not a device"]);
    assert_tiny_error(&["threads=0"], &["`threads` must be at least 1"]);
    assert_has(
        &error_of(&preset("tiny.toml"), &["eval_save_outputs=[logit]"]),
        &[
            "`eval_save_outputs` entry 0 = \"logit\"",
            "did you mean \"logits\"?",
        ],
    );
    assert_tiny_error(
        &["arch.name=hrm.other@Model"],
        &["`arch.name` = \"hrm.other@Model\" is not a model hrm has (one of hrm, trm, transformer"],
    );
    assert_has(
        &error_of(&preset("tiny.toml"), &["arch.halt_exploration_prob=2"]),
        &["`arch.halt_exploration_prob` must lie in [0, 1]"],
    );
}

#[test]
fn world_size_and_dataset_facts() {
    let c = load("tiny.toml", &["global_batch_size=16"]).unwrap();
    c.check_world_size(4).unwrap();
    assert_eq!(c.model_config_for_world(&SUDOKU, 4).unwrap().batch_size, 4);
    let err = c.check_world_size(3).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1);
    assert_has(
        &err,
        &[
            "override `global_batch_size=16`",
            "`global_batch_size` = 16 is not divisible by the world size 3",
        ],
    );
    let err = load("tiny.toml", &[])
        .unwrap()
        .check_world_size(5)
        .unwrap_err()
        .to_string();
    assert_has(
        &err,
        &[
            "configs/tiny.toml",
            "`global_batch_size` = 16 is not divisible by the world size 5",
        ],
    );
    let err = c
        .model_config_for_world(&SUDOKU, 3)
        .unwrap_err()
        .to_string();
    assert_has(&err, &["`global_batch_size`"]);

    // Facts from a bad dataset.json name the dataset and the field.
    let bad = DatasetFacts {
        vocab_size: 0,
        seq_len: 81,
        num_puzzle_identifiers: 1,
    };
    let err = c.model_config(&bad).unwrap_err().to_string();
    assert_has(
        &err,
        &["data/tiny", "dataset.json `vocab_size` must be at least 1"],
    );
    let no_ids = DatasetFacts {
        vocab_size: 11,
        seq_len: 81,
        num_puzzle_identifiers: 0,
    };
    assert_has(
        &c.model_config(&no_ids).unwrap_err().to_string(),
        &["`num_puzzle_identifiers`"],
    );

    let mc = c.model_config(&SUDOKU).unwrap();
    assert_eq!(
        (mc.batch_size, mc.vocab_size, mc.seq_len, mc.hidden_size),
        (16, 11, 81, 64)
    );
    assert_eq!(mc.puzzle_emb_ndim, 64);
}

#[test]
fn resume_compatibility_names_every_differing_key() {
    let saved = load("tiny.toml", &[]).unwrap();
    // Schedule and logging may change on resume.
    let ok = load(
        "tiny.toml",
        &["lr=5e-4", "epochs=8", "log_interval=1", "checkpoint_keep=2"],
    )
    .unwrap();
    ok.check_resume_compatible(&saved).unwrap();
    // forward_dtype spelled out with the same value is compatible.
    let same = load("tiny.toml", &["arch.forward_dtype=float32"]).unwrap();
    same.check_resume_compatible(&saved).unwrap();

    let now = load(
        "tiny.toml",
        &[
            "arch.hidden_size=128",
            "seed=3",
            "data_path=data/other",
            "arch.puzzle_emb_ndim=64",
        ],
    )
    .unwrap();
    let err = now.check_resume_compatible(&saved).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_has(
        &err,
        &[
            "`arch.hidden_size` (saved 64, now 128)",
            "`seed` (saved 0, now 3)",
            "`data_path` (saved \"data/tiny\", now \"data/other\")",
        ],
    );
    // puzzle_emb_ndim resolves to 64 in both (hidden_size 64 saved, explicit 64 now).
    assert!(!err.contains("puzzle_emb_ndim"), "{err}");
    let bigger_batch = load("tiny.toml", &["global_batch_size=32"]).unwrap();
    assert_has(
        &bigger_batch
            .check_resume_compatible(&saved)
            .unwrap_err()
            .to_string(),
        &["`global_batch_size` (saved 16, now 32)"],
    );
}

#[test]
fn table_rendering() {
    let c = load("sudoku-extreme-1k.toml", &[]).unwrap();
    let t = c.to_table_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("+-") && lines[1].starts_with("| Parameter"));
    let width = lines[0].len();
    assert!(
        lines.iter().all(|l| l.chars().count() == width),
        "ragged table\n{t}"
    );
    assert!(t.contains("| data_path ") && t.contains("data/sudoku-extreme-1k-aug-1000"));
    assert!(t.contains("| arch.puzzle_emb_ndim "), "{t}");
    assert!(t.contains("(bfloat16 on cuda, float32 on cpu)"), "{t}");
}
