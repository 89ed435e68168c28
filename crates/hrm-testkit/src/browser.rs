//! Headless Chromium for the tests of the HTML pages: the DOM after the page's scripts ran, and
//! screenshots.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The Chromium binary: `$HRM_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`. A
/// missing browser is a failure in CI (`CI=true`; `.ci/run` installs Debian's `chromium`), and
/// elsewhere `None` with a note on stderr.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("HRM_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "chromium not found: CI must provide it (Debian's `chromium`, or set HRM_CHROMIUM)"
            );
        }
        eprintln!("skipped: chromium not found (install Debian's `chromium` or set HRM_CHROMIUM)");
    }
    found
}

/// Runs headless `chrome` on `url` (an `http://127.0.0.1:...` address or a `file://` path) with
/// `extra` flags, giving the page's scripts `budget_ms` of virtual time; returns stdout.
fn run(chrome: &Path, url: &str, budget_ms: u64, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("temp profile folder");
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--virtual-time-budget={budget_ms}"),
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chrome.display()));
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap();
            if !status.success() {
                let err = child
                    .stderr
                    .take()
                    .map(|e| std::io::read_to_string(e).unwrap_or_default());
                panic!(
                    "chromium on {url} exited with {status}: {}",
                    err.unwrap_or_default()
                );
            }
            return out;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium on {url} took over {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The serialised DOM of `url` after its scripts ran for `budget_ms` of virtual time.
pub fn dump_dom(chrome: &Path, url: &str, budget_ms: u64) -> String {
    run(chrome, url, budget_ms, &["--dump-dom".to_string()])
}

/// A `width` x `height` PNG screenshot of `url` written to `out`.
pub fn screenshot(chrome: &Path, url: &str, budget_ms: u64, out: &Path, width: u32, height: u32) {
    run(
        chrome,
        url,
        budget_ms,
        &[
            format!("--screenshot={}", out.display()),
            format!("--window-size={width},{height}"),
        ],
    );
    assert!(
        out.is_file(),
        "chromium wrote no screenshot {}",
        out.display()
    );
}

/// `file://` address of a local file (for pages opened from disk).
pub fn file_url(path: &Path) -> String {
    format!(
        "file://{}",
        path.canonicalize().expect("page exists").display()
    )
}
