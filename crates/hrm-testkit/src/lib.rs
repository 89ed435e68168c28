//! Test support shared by the workspace's test suites (a dev-dependency of every crate): where
//! the shared data and fixtures folder is, and what a missing one means; folder listings; headless
//! Chromium for the HTML pages ([`browser`]); a local Hugging Face Hub mirror ([`hub_server`]).

pub mod browser;
pub mod hub_server;

use std::path::{Path, PathBuf};

/// `sub` inside the shared folder: `$HRM_SHARED_DIR`, else `shared/` beside the checkout. A
/// missing folder is a failure in CI (`CI=true`), and elsewhere `None` with a note on stderr (a
/// checkout without the shared folder skips those tests).
pub fn shared(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("HRM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let dir = if sub.is_empty() { root } else { root.join(sub) };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "shared folder {} not found: CI must provide it (set HRM_SHARED_DIR)",
            dir.display()
        );
    }
    eprintln!("skipped: shared folder {} not found", dir.display());
    None
}

/// The names of the entries of `dir`, sorted (to prove nothing was left behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
