//! The workspace's one atomic file write (checkpoints, run-folder records, metrics), and the
//! crash points the kill-anywhere test stops a process at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms the crash points: `HRM_CRASH_POINT=N`.
pub const CRASH_POINT_VAR: &str = "HRM_CRASH_POINT";

/// A place where the files on disk have just changed (an atomic write's temporary file is
/// complete, its rename is done, a prune removed a file, a metrics record was appended). With
/// `HRM_CRASH_POINT=N` set, the process aborts at the N-th crash point it passes, with no
/// destructors and no clean-up, as after `kill -9`; it first names the point (`site`) on stderr.
/// The kill-anywhere test walks N over every point of a run and checks that `--resume` always
/// ends where the uninterrupted run does. Unset (as in normal use), a crash point costs one
/// atomic increment.
pub fn crash_point(site: &str) {
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| std::env::var(CRASH_POINT_VAR).ok()?.parse().ok());
    let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    if *armed == Some(n) {
        eprintln!("{CRASH_POINT_VAR}={n}: aborting after {site}");
        std::process::abort();
    }
}

/// What marks a temporary name: `<anything>.tmp-<pid>` (a [`write_atomic`] temp file, an
/// older `<name>.tmp-<pid>`, a dataset staging folder).
pub const TEMP_MARK: &str = ".tmp-";

/// The pid after the last `mark` of `name` (`<anything><mark><pid>`), if `name` is such a name.
pub fn pid_after(name: &str, mark: &str) -> Option<u32> {
    let (_, digits) = name.rsplit_once(mark)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The pid of a temporary name ([`TEMP_MARK`]), if it is one.
pub fn temp_name_pid(name: &str) -> Option<u32> {
    pid_after(name, TEMP_MARK)
}

/// Whether process `pid` may still be running: this process, or (on Linux) a `/proc/<pid>`
/// entry. Where that cannot be told (no `/proc`), every pid counts as alive, so nothing another
/// process may still be writing is ever removed.
pub fn pid_is_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if !cfg!(target_os = "linux") || !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// The temporary name [`write_atomic`] writes `path` under first: `.<name>.tmp-<pid>` in the same
/// folder (hidden, and recognisable as an interrupted write by the `.tmp-<pid>` suffix).
pub fn temp_path_for(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: path has no file name", path.display()),
        )
    })?;
    Ok(parent_dir(path).join(format!(
        ".{}{TEMP_MARK}{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder ([`temp_path_for`]),
/// fsync, rename over `path`, then fsync the folder so the rename itself is durable. Readers see
/// the old file or the complete new one, never a partial file; on any error the temporary file
/// is removed (a full disk leaves nothing behind). Errors are the plain I/O error: the caller
/// names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path_for(path)?;
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        crash_point(&format!("writing {}", tmp.display()));
        std::fs::rename(&tmp, path)?;
        // Directory fsync makes the rename durable on Linux; other systems may refuse to open a
        // folder for syncing, which is not an error worth failing a write for.
        if let Ok(d) = std::fs::File::open(parent_dir(path)) {
            let _ = d.sync_all();
        }
        crash_point(&format!("renaming to {}", path.display()));
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_and_pids() {
        assert_eq!(temp_name_pid(".step_5.safetensors.tmp-123"), Some(123));
        assert_eq!(temp_name_pid("config.toml.tmp-9"), Some(9));
        assert_eq!(temp_name_pid("ds.tmp-"), None);
        assert_eq!(temp_name_pid("ds.tmp-12x"), None);
        assert_eq!(temp_name_pid("step_5.safetensors"), None);
        assert!(pid_is_alive(std::process::id()));
        #[cfg(target_os = "linux")]
        assert!(!pid_is_alive(u32::MAX - 1), "no such pid");
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the file itself remains");
        // writing into a missing folder fails and leaves nothing behind
        assert!(write_atomic(&dir.path().join("missing/b.txt"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // renaming a file over a non-empty folder fails after the temp file was written
        let p = dir.path().join("target");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"x").unwrap();
        assert!(write_atomic(&p, b"data").is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["target"], "temp file left behind: {names:?}");
    }
}
