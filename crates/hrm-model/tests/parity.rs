//! The golden fixtures of the PyTorch reference (the shared fixture folder next to the checkout)
//! must pass within the tolerances of docs/parity-fixtures.md. In CI (`CI=true`) a missing fixture
//! folder is a failure.

use std::path::PathBuf;

use hrm_model::parity::{format_report, run_fixture};

fn fixture_dir() -> Option<PathBuf> {
    hrm_testkit::shared("fixtures/parity")
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

/// Extra fixtures in the same format (any folder given by `HRM_EXTRA_FIXTURES`): e.g. the ones
/// `scripts/make_fixture.py` writes for configurations the shared files do not cover. The small
/// committed set under tests/fixtures always runs.
#[test]
fn extra_fixtures_match() {
    let mut dirs = vec![PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures"
    ))];
    if let Some(d) = std::env::var_os("HRM_EXTRA_FIXTURES") {
        dirs.push(PathBuf::from(d));
    }
    let mut n = 0;
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        for path in files {
            let rep = run_fixture(&path).unwrap_or_else(|e| panic!("{e}"));
            let text = format_report(&rep);
            assert!(rep.ok(), "{} fails parity:\n{text}", path.display());
            eprintln!(
                "{}: ok, worst rel {:.2e}\n{text}",
                path.display(),
                rep.worst_rel()
            );
            n += 1;
        }
    }
    assert!(n > 0, "no extra fixtures found");
}
