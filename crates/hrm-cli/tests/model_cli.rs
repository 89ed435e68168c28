//! `hrm parity` and `hrm convert` as a user runs them: exit codes, the summary line, and one-line
//! errors (never a panic) for bad fixtures and checkpoints.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{one_line_error, run, shared};
use hrm_model::checkpoint::{load_model, read_safetensors, safetensors_bytes};

/// A parity fixture of the shared folder (`fixtures/parity/NAME`), if the folder is there.
fn shared_fixture(name: &str) -> Option<PathBuf> {
    Some(shared("fixtures/parity")?.join(name))
}

fn local_fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hrm-model/tests/fixtures"
    ))
    .join(name)
}

#[test]
fn parity_command_passes_and_summarises() {
    let Some(rope) = shared_fixture("hrm-tiny-rope.safetensors") else {
        return;
    };
    let noact = shared_fixture("hrm-tiny-noact.safetensors").unwrap();
    let (code, out, err) = run(&["parity", rope.to_str().unwrap(), noact.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let last = out.lines().last().unwrap_or("");
    assert!(
        last.starts_with("parity: 2 fixture(s) checked, 0 failed"),
        "{last}"
    );
    assert!(out.contains("train4.grads") && out.contains("step4.params") && out.contains("trace"));
}

/// Rewrite a fixture with `edit` applied to its tensors and metadata.
fn edited(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut HashMap<String, String>),
) {
    let mut f = read_safetensors(src, &Device::Cpu).unwrap();
    edit(&mut f.tensors, &mut f.metadata);
    let mut list: Vec<(String, Tensor)> = f.tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::write(dst, safetensors_bytes(&list, &f.metadata).unwrap()).unwrap();
}

/// One `error: ...` line containing `needle` (see [`one_line_error`]).
fn assert_one_line_error(args: &[&str], needle: &str) {
    let line = one_line_error(args, needle);
    assert!(line.starts_with("error: "), "{line}");
}

/// `hrm parity FIXTURE` on a copy of `src` edited by `edit` (written to `dir/name`) fails in
/// one line naming `needle`.
fn assert_edited_fails(
    src: &Path,
    dir: &Path,
    name: &str,
    needle: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut HashMap<String, String>),
) {
    let dst = dir.join(name);
    edited(src, &dst, edit);
    assert_one_line_error(&["parity", dst.to_str().unwrap()], needle);
}

#[test]
fn bad_fixtures_give_one_line_errors_and_trimmed_ones_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let src = local_fixture("peer-softmax-nopuzzle-b5.safetensors");
    let d = dir.path();
    assert_edited_fails(
        &src,
        d,
        "missing.safetensors",
        "inner.lm_head.weight",
        |t, _| {
            t.remove("param.inner.lm_head.weight");
        },
    );
    assert_edited_fails(&src, d, "shape.safetensors", "inner.q_head.bias", |t, _| {
        t.insert(
            "param.inner.q_head.bias".into(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_edited_fails(&src, d, "tag.safetensors", "hrm-parity-v0", |_, m| {
        m.insert("format".into(), "hrm-parity-v0".into());
    });
    // a gradient the fixture lacks is not an error (a trimmed fixture): the rest is checked
    // and the summary names the group it was missing from
    let trimmed = d.join("grad.safetensors");
    edited(&src, &trimmed, |t, _| {
        t.remove("grad2.inner.lm_head.weight");
    });
    let (code, out, err) = run(&["parity", trimmed.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not in the fixture (not checked): train2.grads (1 missing), step2.optimizer"),
        "{out}"
    );
    assert!(
        out.contains("train2.grads") && out.contains("step1.optimizer"),
        "{out}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a fixture").unwrap();
    assert_one_line_error(
        &["parity", garbage.to_str().unwrap()],
        "garbage.safetensors",
    );
}

#[test]
fn a_perturbed_fixture_fails_parity() {
    // a fixture whose recorded logits are off by 1e-3 must fail the logits group (and nothing is
    // special-cased: the same file unperturbed passes in the hrm-model tests)
    let dir = tempfile::tempdir().unwrap();
    let src = local_fixture("peer-learned-prefix2-h3l2.safetensors");
    let bad = dir.path().join("perturbed.safetensors");
    edited(&src, &bad, |t, _| {
        let l = t["eval.seg2.logits"].clone();
        t.insert("eval.seg2.logits".into(), (l + 1e-3).unwrap());
    });
    let (code, out, _) = run(&["parity", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("eval.logits") && out.contains("FAIL"), "{out}");
    assert!(out.lines().last().unwrap().contains("1 failed"), "{out}");
}

fn torch_ckpt() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch-ckpt"
    ))
}

#[test]
fn convert_reads_a_reference_checkpoint() {
    // step_26040 was written by torch.save with the reference's `_orig_mod.model.` prefixes and
    // bf16 H_init/L_init (scripts/make_torch_checkpoint.py); all_config.yaml sits beside it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let input = torch_ckpt().join("step_26040");
    let (code, o, e) = run(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--seq-len",
        "81",
    ]);
    assert_eq!(code, 0, "{o}\n{e}");
    let cfg = assert_tensors_equal_expected(&out, &torch_ckpt());
    assert_eq!(cfg.h_cycles, 3, "H_cycles comes from all_config.yaml");
    assert_eq!(cfg.l_layers, 2);
    assert_eq!(cfg.num_heads, 2);
    assert_eq!(cfg.halt_max_steps, 5);
}

#[test]
fn convert_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let input = torch_ckpt().join("step_26040");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_one_line_error(&["convert", i, o], "--seq-len");
    assert_one_line_error(
        &["convert", i, o, "--seq-len", "81", "expansion=20"],
        "SwiGLU width",
    );
    assert_one_line_error(
        &["convert", i, o, "--seq-len", "81", "num_heads=5"],
        "num_heads",
    );
    let garbage = dir.path().join("step_1");
    std::fs::write(&garbage, b"junk").unwrap();
    assert_one_line_error(
        &["convert", garbage.to_str().unwrap(), o, "--seq-len", "81"],
        "step_1",
    );
    assert!(!out.exists(), "nothing may be written on failure");
}

fn torch_ckpt_trm() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch-ckpt-trm"
    ))
}

/// The tensors of the checkpoint at `path` equal `expected.safetensors` in `fixture`, key by key.
fn assert_tensors_equal_expected(path: &Path, fixture: &Path) -> hrm_model::config::ModelConfig {
    let (model, _) = load_model(path, &Device::Cpu, |_| {}).unwrap();
    let expected = read_safetensors(&fixture.join("expected.safetensors"), &Device::Cpu).unwrap();
    let sd: HashMap<String, Tensor> = model.state_dict().into_iter().collect();
    let mut keys: Vec<&String> = sd.keys().collect();
    keys.sort();
    let mut want: Vec<&String> = expected.tensors.keys().collect();
    want.sort();
    assert_eq!(keys, want);
    for (k, t) in &expected.tensors {
        let d = hrm_model::parity::max_abs_diff(&sd[k], t).unwrap();
        assert_eq!(d, 0.0, "{k} differs");
    }
    model.cfg
}

#[test]
fn convert_reads_a_trm_checkpoint() {
    // step_1302: a torch.save'd state dict of TRM's compiled loss head (`_orig_mod.model.inner.*`,
    // mlp_t blocks, bf16 H_init/L_init) with TRM's all_config.yaml beside it, written by
    // `scripts/make_torch_checkpoint.py --trm`; no --seq-len: the mlp_t weights fix it
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trm.safetensors");
    let input = torch_ckpt_trm().join("step_1302");
    let (code, o, e) = run(&["convert", input.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}\n{e}");
    let cfg = assert_tensors_equal_expected(&out, &torch_ckpt_trm());
    assert_eq!(cfg.arch, hrm_model::config::Arch::Trm);
    assert!(cfg.mlp_t);
    assert_eq!(cfg.puzzle_emb_len, Some(2));
    assert_eq!(cfg.seq_len, 9, "seq_len = mlp_t width 11 - prefix 2");
    assert_eq!(cfg.pos_encodings, hrm_model::config::PosEncoding::None);
    assert_eq!(
        (cfg.h_cycles, cfg.l_cycles),
        (2, 2),
        "cycles come from all_config.yaml"
    );
    assert_eq!((cfg.h_layers, cfg.l_layers), (0, 2));
    assert_eq!((cfg.hidden_size, cfg.num_heads), (32, 2));
    assert_eq!(cfg.num_puzzle_identifiers, 3);
    assert_eq!(cfg.no_act_continue, Some(true));
}

#[test]
fn convert_rejects_a_trm_config_on_hrm_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let input = torch_ckpt().join("step_26040");
    let yaml = torch_ckpt_trm().join("all_config.yaml");
    let args = [
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--seq-len",
        "81",
        "--config",
        yaml.to_str().unwrap(),
    ];
    let line = one_line_error(&args, "arch.name");
    assert!(
        line.starts_with("error: ") && line.contains("all_config.yaml"),
        "{line}"
    );
    assert!(!out.exists(), "nothing may be written on failure");
}

/// `hrm bench export-random` writes a loadable checkpoint of the preset's size (what
/// scripts/bench-vs-torch.sh times `hrm solve` on), and `hrm solve` runs it.
#[test]
fn bench_export_random_writes_a_checkpoint_solve_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-random.safetensors");
    let (code, stdout, err) = run(&[
        "bench",
        "export-random",
        "--preset",
        "tiny",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("\"wrote\""), "{stdout}");
    let (model, _) = load_model(&out, &Device::Cpu, |_| {}).unwrap();
    assert_eq!(model.cfg.hidden_size, 64);
    let puzzle =
        "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......";
    let (code, stdout, err) = run(&[
        "solve",
        "--checkpoint",
        out.to_str().unwrap(),
        "sudoku",
        puzzle,
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("segments:"), "{stdout}");
    // without --output: one clear line
    let (code, _, err) = run(&["bench", "export-random", "--preset", "tiny"]);
    assert_eq!(code, 1);
    assert!(err.contains("--output"), "{err}");
}
