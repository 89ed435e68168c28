//! The Hugging Face Hub: dataset files and released checkpoints fetched with `hf-hub` into the
//! standard Hub cache (`HF_HOME`, shared with the Python tools), verified, with offline mode.
//!
//! The environment: `HF_HOME` (the cache is `$HF_HOME/hub`, default `~/.cache/huggingface/hub`;
//! `HF_HUB_CACHE` names it directly),
//! `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN` (else the token file of
//! `huggingface-cli login`), `HF_HUB_OFFLINE=1` (the cache only). `hf-hub` does the requests, the
//! cache layout (`blobs/`, `snapshots/COMMIT/`, `refs/REV`), the resumable download into
//! `blobs/ETAG.part` (renamed to the blob only when complete), the retries and the progress bar;
//! this module adds what it lacks: offline mode, a cache fallback when the Hub is unreachable, the
//! check of every blob against its name (the SHA-256 of an LFS file, the git blob SHA-1 of a small
//! one), and errors that name the repo, the file and the revision.

use std::fmt;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The Hub's public endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Attempts after the first for a download broken off (each resumes where the last stopped).
const RETRIES: usize = 3;

/// A model or a dataset repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `OWNER/NAME` (checkpoints).
    Model,
    /// `datasets/OWNER/NAME`.
    Dataset,
}

/// A repo at a revision (a branch, a tag or a commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `OWNER/NAME`.
    pub id: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
}

impl RepoRef {
    /// `id` (`OWNER/NAME`) of `kind` at `revision` (`None`: `main`); an id without exactly one `/`
    /// is refused.
    pub fn new(kind: RepoKind, id: &str, revision: Option<&str>) -> Result<RepoRef> {
        let ok = id.split('/').count() == 2
            && id
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains(['@', '\\']));
        if !ok {
            bail!(
                "`{id}` is not a Hub repo id: expected OWNER/NAME (e.g. sapientinc/sudoku-extreme)"
            );
        }
        let revision = revision.unwrap_or("main");
        if revision.is_empty() || revision.split('/').any(|p| p == ".." || p.is_empty()) {
            bail!("--revision `{revision}` is not a branch, tag or commit");
        }
        Ok(RepoRef {
            kind,
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }

    fn at(&self, revision: &str) -> Repo {
        let kind = match self.kind {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::with_revision(self.id.clone(), kind, revision.to_string())
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        };
        write!(f, "{kind} {} (revision {})", self.id, self.revision)
    }
}

/// A repo's files at one commit, as the Hub (or, offline, the cache) lists them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The repo and the revision asked for.
    pub repo: RepoRef,
    /// The commit the revision points to.
    pub commit: String,
    /// The repo's files (paths inside the repo).
    pub files: Vec<String>,
    /// `snapshots/COMMIT` in the cache: where the fetched files appear.
    pub dir: PathBuf,
    /// This repo's folder in the cache (`models--OWNER--NAME`).
    pub repo_dir: PathBuf,
}

/// The Hub settings of this process (see the module documentation).
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    cache: Cache,
    token: Option<String>,
    offline: bool,
}

/// Why a request failed: an HTTP status (with the Hub's `x-error-code`), no connection, a
/// transfer that kept breaking off, or something else.
enum Failure {
    Status(u16, String),
    Unreachable(String),
    Broken(String),
    Other(String),
}

fn failure(e: &ApiError) -> Failure {
    match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, resp) => Failure::Status(
                *code,
                resp.header("x-error-code").unwrap_or_default().to_string(),
            ),
            ureq::Error::Transport(t) => Failure::Unreachable(t.to_string()),
        },
        ApiError::TooManyRetries(inner) => match failure(inner) {
            Failure::Status(c, x) => Failure::Status(c, x),
            Failure::Unreachable(m) | Failure::Broken(m) | Failure::Other(m) => {
                Failure::Broken(format!("{m}; gave up after {RETRIES} retries"))
            }
        },
        ApiError::IoError(io) => Failure::Broken(format!("the transfer broke off ({io})")),
        other => Failure::Other(other.to_string()),
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl Hub {
    /// The settings from `HF_HUB_CACHE` / `HF_HOME` / `XDG_CACHE_HOME` / `HOME` (the cache
    /// folder, in that order, as the Python tools look for it), `HF_ENDPOINT`, `HF_TOKEN` and
    /// `HF_HUB_OFFLINE`.
    pub fn from_env() -> Result<Hub> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
            .context("no Hub cache folder: set HF_HOME (the cache is $HF_HOME/hub)")?;
        let cache = Cache::new(dir);
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| cache.token());
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| truthy(&v));
        Ok(Hub {
            endpoint,
            cache,
            token,
            offline,
        })
    }

    /// The cache folder (`$HF_HOME/hub`).
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    fn api(&self) -> Result<Api> {
        ApiBuilder::from_cache(self.cache.clone())
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_retries(RETRIES)
            .with_progress(std::io::stderr().is_terminal())
            .build()
            .map_err(|e| anyhow!("the Hub client: {e}"))
    }

    fn repo_dir(&self, repo: &RepoRef) -> PathBuf {
        self.cache
            .path()
            .join(repo.at(&repo.revision).folder_name())
    }

    /// The one-line explanation of a failed request for `what` of `repo`.
    fn explain(&self, e: &ApiError, repo: &RepoRef, what: &str) -> anyhow::Error {
        let at = &self.endpoint;
        match failure(e) {
            Failure::Status(401 | 403, _) => {
                let token = if self.token.is_some() {
                    "the token given (HF_TOKEN or the login token file) was refused"
                } else {
                    "no token is set"
                };
                anyhow!(
                    "{what} of {repo}: {at} answered 401/403 Unauthorized ({token}); set HF_TOKEN \
                     to a token that may read this repo (private or gated repos need one)"
                )
            }
            Failure::Status(404, code) if code == "EntryNotFound" => {
                anyhow!("{what} not found in {repo} on {at} (HTTP 404): check the file name")
            }
            Failure::Status(404, code) => anyhow!(
                "{what} of {repo}: not found on {at} (HTTP 404{}): check the repo id and the \
                 revision (a private repo also answers 404 without HF_TOKEN)",
                if code.is_empty() {
                    String::new()
                } else {
                    format!(", {code}")
                }
            ),
            Failure::Status(code, x) => {
                anyhow!("{what} of {repo}: {at} answered HTTP {code} {x}")
            }
            Failure::Unreachable(m) => anyhow!(
                "{what} of {repo}: cannot reach {at} ({m}); check the network and HF_ENDPOINT (what \
                 is in the Hub cache {} is used without them)",
                self.cache.path().display()
            ),
            Failure::Broken(m) => anyhow!(
                "{what} of {repo}: no complete answer from {at} ({m}); nothing incomplete was kept \
                 as the file (run again to resume), or set HF_HUB_OFFLINE=1 to use the cache only"
            ),
            Failure::Other(m) => anyhow!("{what} of {repo}: {m}"),
        }
    }

    /// The commit and the files of `repo` at its revision: asked of the Hub, or taken from the
    /// cache when offline (`HF_HUB_OFFLINE=1`) or when the Hub cannot be reached (with a note).
    pub fn snapshot(&self, repo: &RepoRef) -> Result<Snapshot> {
        if self.offline {
            return self.cached_snapshot(repo)?.with_context(|| {
                format!(
                    "{repo} is not in the Hub cache {} and HF_HUB_OFFLINE=1 is set: unset it to \
                     download",
                    self.cache.path().display()
                )
            });
        }
        let api = self.api()?;
        match api.repo(repo.at(&repo.revision)).info() {
            Ok(info) => {
                if info.sha != repo.revision {
                    // the revision's commit, for offline use (what hf-hub and Python write)
                    self.cache
                        .repo(repo.at(&repo.revision))
                        .create_ref(&info.sha)
                        .with_context(|| format!("writing the ref of {repo} in the Hub cache"))?;
                }
                let repo_dir = self.repo_dir(repo);
                Ok(Snapshot {
                    repo: repo.clone(),
                    dir: repo_dir.join("snapshots").join(&info.sha),
                    repo_dir,
                    commit: info.sha,
                    files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
                })
            }
            Err(e) => match failure(&e) {
                Failure::Unreachable(m) => match self.cached_snapshot(repo)? {
                    Some(s) => {
                        eprintln!(
                            "note: {} did not answer ({m}); using the cached {repo} at commit {}",
                            self.endpoint, s.commit
                        );
                        Ok(s)
                    }
                    None => Err(self.explain(&e, repo, "the file list")),
                },
                _ => Err(self.explain(&e, repo, "the file list")),
            },
        }
    }

    /// `repo` as the cache has it: the commit of `refs/REVISION` (or the revision itself when it
    /// is a cached commit) and the files of that snapshot; `None` when it is not cached.
    fn cached_snapshot(&self, repo: &RepoRef) -> Result<Option<Snapshot>> {
        let repo_dir = self.repo_dir(repo);
        let commit = match std::fs::read_to_string(repo_dir.join("refs").join(&repo.revision)) {
            Ok(c) => c.trim().to_string(),
            Err(_) => repo.revision.clone(),
        };
        let dir = repo_dir.join("snapshots").join(&commit);
        if commit.is_empty() || !dir.is_dir() {
            return Ok(None);
        }
        let mut files = Vec::new();
        list_files(&dir, &dir, &mut files)?;
        files.sort();
        Ok(Some(Snapshot {
            repo: repo.clone(),
            commit,
            files,
            dir,
            repo_dir,
        }))
    }

    /// `file` of the snapshot: the cached copy (checked against its blob name), else downloaded
    /// (resumable, retried, checked; a file that fails the check is removed, never used).
    pub fn fetch(&self, snap: &Snapshot, file: &str) -> Result<PathBuf> {
        let repo = &snap.repo;
        let cached = snap.dir.join(file);
        if cached.exists() {
            if let Some(bad) = check_blob(&cached)? {
                bail!(
                    "{file} of {repo} in the Hub cache is corrupt: {bad}; delete that blob and \
                     run again to download it anew"
                );
            }
            return Ok(cached);
        }
        if cached.symlink_metadata().is_ok() {
            // a link to a blob deleted by hand: downloaded again below
            std::fs::remove_file(&cached)
                .with_context(|| format!("removing the dangling {}", cached.display()))?;
        }
        if self.offline {
            bail!(
                "{file} of {repo} is not in the Hub cache {} and HF_HUB_OFFLINE=1 is set: unset \
                 it to download",
                self.cache.path().display()
            );
        }
        let api = self.api()?;
        let path = api
            .repo(repo.at(&snap.commit))
            .download(file)
            .map_err(|e| {
                let known = if snap.files.is_empty() || snap.files.iter().any(|f| f == file) {
                    String::new()
                } else {
                    format!(" (the repo has: {})", snap.files.join(", "))
                };
                let err = self.explain(&e, repo, file);
                anyhow!("{err}{known}")
            })?;
        // hf-hub also records the commit as a ref of itself; the Hub's own tools do not
        let _ = std::fs::remove_file(snap.repo_dir.join("refs").join(&snap.commit));
        if let Some(bad) = check_blob(&path)? {
            let blob = std::fs::canonicalize(&path).ok();
            let _ = std::fs::remove_file(&path);
            if let Some(b) = blob {
                let _ = std::fs::remove_file(b);
            }
            bail!("{file} of {repo} was downloaded corrupt ({bad}) and removed; run again");
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("downloaded {file} of {repo} ({size} bytes)");
        Ok(path)
    }

    /// Fetch `files` of `repo` and return the snapshot folder that holds them (what a builder
    /// reads like a local `--input-dir`).
    pub fn fetch_all(&self, repo: &RepoRef, files: &[&str]) -> Result<PathBuf> {
        let snap = self.snapshot(repo)?;
        for f in files {
            self.fetch(&snap, f)?;
        }
        Ok(snap.dir)
    }
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            list_files(base, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_file<D: Digest>(mut h: D, path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Check the cached file `pointer` (a snapshot entry) against the name of its blob, the Hub's
/// ETag: a SHA-256 (64 hex digits, LFS files) or a git blob SHA-1 (40, small files); `None` when
/// it matches or the name is neither. `Some(what differs)` otherwise.
pub fn check_blob(pointer: &Path) -> Result<Option<String>> {
    let blob = std::fs::canonicalize(pointer)
        .with_context(|| format!("resolving {} in the Hub cache", pointer.display()))?;
    let name = blob
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let got = match name.len() {
        64 => digest_file(Sha256::new(), &blob)?,
        40 => {
            let len = std::fs::metadata(&blob)?.len();
            let mut h = Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            digest_file(h, &blob)?
        }
        _ => return Ok(None),
    };
    let algo = if name.len() == 64 {
        "sha256"
    } else {
        "git sha1"
    };
    Ok((got != name).then(|| format!("{algo} {got} but the blob is named {}", blob.display())))
}

/// A `hub:OWNER/REPO[@REV][/FILE]` checkpoint reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCheckpoint {
    /// The model repo and revision.
    pub repo: RepoRef,
    /// The checkpoint file in it (`None`: chosen from the file list, see [`pick_checkpoint`]).
    pub file: Option<String>,
}

/// The prefix of a checkpoint on the Hub.
pub const HUB_PREFIX: &str = "hub:";

impl HubCheckpoint {
    /// [`HubCheckpoint::parse`] of a `--checkpoint` path (one not valid UTF-8 is local).
    pub fn from_path(path: &Path) -> Result<Option<HubCheckpoint>> {
        path.to_str().map_or(Ok(None), HubCheckpoint::parse)
    }

    /// Parse `spec` if it starts with `hub:`; `Ok(None)` for anything else (a local path).
    pub fn parse(spec: &str) -> Result<Option<HubCheckpoint>> {
        let Some(rest) = spec.strip_prefix(HUB_PREFIX) else {
            return Ok(None);
        };
        let hint = "expected hub:OWNER/REPO[@REVISION][/FILE]";
        let (owner, rest) = rest
            .split_once('/')
            .with_context(|| format!("`{spec}`: {hint}"))?;
        let (name_rev, file) = match rest.split_once('/') {
            Some((n, f)) => (n, Some(f.to_string())),
            None => (rest, None),
        };
        let (name, rev) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (name_rev, None),
        };
        if file
            .as_deref()
            .is_some_and(|f| f.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
        {
            bail!("`{spec}`: the file part is not a path inside the repo ({hint})");
        }
        let repo = RepoRef::new(RepoKind::Model, &format!("{owner}/{name}"), rev)
            .with_context(|| format!("`{spec}`: {hint}"))?;
        Ok(Some(HubCheckpoint { repo, file }))
    }
}

/// Whether a repo file is a checkpoint: named `checkpoint` or `step_N`, or ending in `.pt`,
/// `.pth`, `.ckpt` or `.safetensors`.
fn is_checkpoint_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "checkpoint"
        || name
            .strip_prefix("step_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        || [".pt", ".pth", ".ckpt", ".safetensors"]
            .iter()
            .any(|e| name.ends_with(e))
}

/// The checkpoint file of a repo whose reference names none: the one file that looks like a
/// checkpoint (see `is_checkpoint_file`); none or several is an error listing the candidates.
pub fn pick_checkpoint(snap: &Snapshot) -> Result<String> {
    let found: Vec<&String> = snap
        .files
        .iter()
        .filter(|f| is_checkpoint_file(f))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "{} has no checkpoint file (named `checkpoint`, `step_N`, *.pt, *.pth, *.ckpt or \
             *.safetensors) among: {}",
            snap.repo,
            snap.files.join(", ")
        ),
        many => bail!(
            "{} has several checkpoint files ({}): name one, hub:{}@{}/FILE",
            snap.repo,
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            snap.repo.id,
            snap.repo.revision
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_parse() {
        let c = HubCheckpoint::parse("hub:sapientinc/HRM-checkpoint-sudoku-extreme")
            .unwrap()
            .unwrap();
        assert_eq!(c.repo.id, "sapientinc/HRM-checkpoint-sudoku-extreme");
        assert_eq!((c.repo.revision.as_str(), c.file), ("main", None));
        let c = HubCheckpoint::parse("hub:o/r@v1.0/sub/step_5")
            .unwrap()
            .unwrap();
        assert_eq!(c.repo.revision, "v1.0");
        assert_eq!(c.file.as_deref(), Some("sub/step_5"));
        assert_eq!(HubCheckpoint::parse("models/m.safetensors").unwrap(), None);
        for bad in ["hub:onlyowner", "hub:o/r/../x", "hub:/r", "hub:o/@x"] {
            assert!(HubCheckpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_checkpoint_file_is_the_one_that_looks_like_one() {
        let snap = |files: &[&str]| Snapshot {
            repo: RepoRef::new(RepoKind::Model, "o/r", None).unwrap(),
            commit: "c".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            dir: PathBuf::new(),
            repo_dir: PathBuf::new(),
        };
        let s = snap(&[
            ".gitattributes",
            "all_config.yaml",
            "step_26040",
            "README.md",
        ]);
        assert_eq!(pick_checkpoint(&s).unwrap(), "step_26040");
        assert_eq!(
            pick_checkpoint(&snap(&["checkpoint", "all_config.yaml"])).unwrap(),
            "checkpoint"
        );
        let e = pick_checkpoint(&snap(&["step_1", "step_2"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step_1, step_2") && e.contains("hub:o/r@main/FILE"),
            "{e}"
        );
        let e = pick_checkpoint(&snap(&["all_config.yaml"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no checkpoint file"), "{e}");
    }
}
