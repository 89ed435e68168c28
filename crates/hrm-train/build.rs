//! Build facts recorded in each run's `run.json` (see src/rundir.rs `RunInfo`): the git commit
//! (`git rev-parse --short HEAD`, "unknown" outside a git checkout) and the rustc version.
//! Reruns only when the checked-out commit changes, not on every build.

use std::path::Path;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let commit = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["-V"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HRM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=HRM_RUSTC_VERSION={rustc_version}");
    // A missing rerun-if-changed path makes cargo rerun every build, so name only paths that
    // exist: HEAD (branch switches), the branch refs folder (new commits; cargo scans a folder
    // recursively) and packed-refs.
    let git = Path::new("../../.git");
    let watched: Vec<_> = ["HEAD", "refs/heads", "packed-refs"]
        .iter()
        .map(|p| git.join(p))
        .filter(|p| p.exists())
        .collect();
    if watched.is_empty() {
        println!("cargo:rerun-if-changed=build.rs");
    }
    for p in watched {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
