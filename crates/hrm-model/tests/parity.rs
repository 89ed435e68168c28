//! The golden fixtures of the PyTorch reference (../shared/fixtures/parity) must pass within the
//! tolerances of their README. In CI (`CI=true`) a missing fixture folder is a failure.

use std::path::PathBuf;

use hrm_model::parity::{format_report, run_fixture};

fn fixture_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("HRM_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
    }
    .join("fixtures/parity");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "parity fixtures not found at {} (set HRM_SHARED_DIR)",
            dir.display()
        );
    }
    eprintln!("skipped: parity fixtures not found at {}", dir.display());
    None
}

fn check(name: &str) {
    let Some(dir) = fixture_dir() else { return };
    let path = dir.join(name);
    let rep = run_fixture(&path).unwrap_or_else(|e| panic!("{e}"));
    let text = format_report(&rep);
    eprintln!("{name}\n{text}");
    assert!(rep.ok(), "{name} fails parity:\n{text}");
    assert!(rep.groups.len() > 10, "too few groups compared");
}

#[test]
fn rope_fixture_matches_the_reference() {
    check("hrm-tiny-rope.safetensors");
}

#[test]
fn noact_fixture_matches_the_reference() {
    check("hrm-tiny-noact.safetensors");
}
