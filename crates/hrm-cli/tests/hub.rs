//! `hrm` against a local mirror of the Hugging Face Hub (hrm_testkit::hub_server on 127.0.0.1):
//! datasets built from a Hub repo, `hub:` checkpoints fetched and converted once, the cache,
//! offline mode, and the failures (404, 401, a transfer cut off, a corrupt cache, a config of
//! another architecture).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{configs, final_tensors, hrm, p, tensor_bytes};
use hrm_testkit::hub_server::{Cut, HubServer};

const SUDOKU: &str = "sapientinc/sudoku-extreme";
const MAZE: &str = "sapientinc/maze-30x30-hard-1k";
const MODEL: &str = "sapientinc/HRM-checkpoint-sudoku-extreme";
const CKPT: &str = "hub:sapientinc/HRM-checkpoint-sudoku-extreme";
const PUZZLE: &str =
    "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..";

/// The reference checkpoint fixture (scripts/make_torch_checkpoint.py) and its all_config.yaml.
fn torch_ckpt() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch-ckpt"
    ))
}

/// Sudoku-Extreme-format CSVs: a solved grid and puzzles blanking different cells of it.
fn sudoku_csv(rows: usize, salt: usize) -> String {
    let solved: String = (0..81)
        .map(|i| {
            let (r, c) = (i / 9, i % 9);
            char::from(b'1' + ((r * 3 + r / 3 + c) % 9) as u8)
        })
        .collect();
    let mut out = String::from("source,question,answer,rating\n");
    for k in 0..rows {
        let q: String = solved
            .chars()
            .enumerate()
            .map(|(i, ch)| {
                let h = (i * 31 + k * 17 + salt * 7).wrapping_mul(2_654_435_761) % 97;
                if h < 35 {
                    '.'
                } else {
                    ch
                }
            })
            .collect();
        out.push_str(&format!("tdoku,{q},{solved},{}\n", k % 5));
    }
    out
}

/// A mirror root with the Sudoku and maze dataset repos and the checkpoint repo, its server, and
/// an empty HF_HOME.
struct Mirror {
    root: tempfile::TempDir,
    home: tempfile::TempDir,
    server: Option<HubServer>,
    url: String,
}

impl Mirror {
    fn new() -> Mirror {
        let root = tempfile::tempdir().unwrap();
        let ds = root.path().join("datasets").join(SUDOKU);
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::write(ds.join("train.csv"), sudoku_csv(12, 0)).unwrap();
        std::fs::write(ds.join("test.csv"), sudoku_csv(6, 1)).unwrap();
        std::fs::write(ds.join("README.md"), "Sudoku-Extreme (test mirror)\n").unwrap();
        let m = root.path().join("models").join(MODEL);
        std::fs::create_dir_all(&m).unwrap();
        for f in ["step_26040", "all_config.yaml"] {
            std::fs::copy(torch_ckpt().join(f), m.join(f)).unwrap();
        }
        std::fs::write(m.join(".gitattributes"), "step_* filter=lfs\n").unwrap();
        let server = HubServer::start(root.path());
        Mirror {
            root,
            home: tempfile::tempdir().unwrap(),
            url: server.url().to_string(),
            server: Some(server),
        }
    }

    fn server(&self) -> &HubServer {
        self.server.as_ref().unwrap()
    }

    fn repo(&self, kind: &str, id: &str) -> PathBuf {
        self.root.path().join(kind).join(id)
    }

    /// `hrm` with this mirror as the Hub (stopped or not) and this HF_HOME (no token, online).
    fn hrm(&self) -> Command {
        let mut c = hrm();
        c.env("HF_HOME", self.home.path())
            .env("HF_ENDPOINT", &self.url)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE");
        c
    }

    /// The cache folder of a repo (`datasets--OWNER--NAME`, `models--OWNER--NAME`).
    fn cached(&self, folder: &str) -> PathBuf {
        self.home.path().join("hub").join(folder)
    }
}

/// Run `cmd` with `args` for at most 60 s: exit code, stdout, stderr.
fn run(mut cmd: Command, args: &[&str]) -> (i32, String, String) {
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("hrm {args:?} ran past 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

fn ok(cmd: Command, args: &[&str]) -> (String, String) {
    let (code, out, err) = run(cmd, args);
    assert_eq!(code, 0, "hrm {args:?} failed:\n{out}\n{err}");
    (out, err)
}

/// `hrm ARGS` must fail with one stderr line (no panic) containing every needle; that line.
fn fails(cmd: Command, args: &[&str], needles: &[&str]) -> String {
    let (code, out, err) = run(cmd, args);
    assert_ne!(code, 0, "expected failure:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
    lines[0].to_string()
}

/// Every file under `dir` (relative path -> bytes), for byte-for-byte comparisons.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_hub_dataset_builds_like_its_files_then_comes_from_the_cache() {
    let mut m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let (hub, local) = (out.path().join("hub"), out.path().join("local"));
    let (_, err) = ok(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&hub)],
    );
    assert!(err.contains("downloaded train.csv"), "{err}");
    let files = m.repo("datasets", SUDOKU);
    ok(
        m.hrm(),
        &[
            "data",
            "sudoku",
            "--input-dir",
            p(&files),
            "--output-dir",
            p(&local),
        ],
    );
    assert_eq!(tree(&hub), tree(&local), "--hub and --input-dir differ");

    // the standard cache layout; LFS blobs named by their SHA-256
    let repo = m.cached("datasets--sapientinc--sudoku-extreme");
    assert_eq!(hrm_testkit::entries(&repo.join("refs")), ["main"]);
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    let csv = repo.join("snapshots").join(commit.trim()).join("train.csv");
    let blob = std::fs::canonicalize(&csv).unwrap();
    assert_eq!(
        blob.parent().unwrap(),
        repo.join("blobs").canonicalize().unwrap()
    );
    assert_eq!(
        blob.file_name().unwrap().to_str().unwrap(),
        sha256_hex(&csv)
    );
    assert_eq!(
        m.server()
            .count("/datasets/sapientinc/sudoku-extreme/resolve/"),
        4
    );

    // the server stopped: the cache, with a note; offline: the cache, silently
    m.server.take().unwrap().stop();
    let again = out.path().join("again");
    let (_, err) = ok(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&again)],
    );
    assert!(
        err.contains("did not answer") && err.contains("cached"),
        "{err}"
    );
    assert_eq!(tree(&again), tree(&local));
    let offline = out.path().join("offline");
    let mut cmd = m.hrm();
    cmd.env("HF_HUB_OFFLINE", "1");
    let (_, err) = ok(
        cmd,
        &[
            "data",
            "sudoku",
            "--hub",
            SUDOKU,
            "--output-dir",
            p(&offline),
        ],
    );
    assert!(
        !err.contains("downloaded") && !err.contains("did not answer"),
        "{err}"
    );
    assert_eq!(tree(&offline), tree(&local));
    // nothing cached and no Hub: the error says so
    fails(
        m.hrm(),
        &[
            "data",
            "maze",
            "--hub",
            MAZE,
            "--output-dir",
            p(&out.path().join("m")),
        ],
        &[MAZE, "cannot reach", "HF_ENDPOINT"],
    );
}

#[test]
fn a_hub_maze_dataset_builds_like_its_files() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let files = m.repo("datasets", MAZE);
    ok(
        m.hrm(),
        &[
            "data",
            "maze-generate",
            "--output-dir",
            p(&files),
            "--size",
            "8",
            "--train-count",
            "6",
            "--test-count",
            "3",
            "--sampling",
            "far-goal",
        ],
    );
    let (hub, local) = (out.path().join("hub"), out.path().join("local"));
    ok(
        m.hrm(),
        &[
            "data",
            "maze",
            "--hub",
            MAZE,
            "--revision",
            "main",
            "--output-dir",
            p(&hub),
        ],
    );
    ok(
        m.hrm(),
        &[
            "data",
            "maze",
            "--input-dir",
            p(&files),
            "--output-dir",
            p(&local),
        ],
    );
    assert_eq!(tree(&hub), tree(&local));
}

#[test]
fn offline_mode_uses_the_cache_only_and_names_what_is_missing() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = m.hrm();
    cmd.env("HF_HUB_OFFLINE", "1");
    let o = out.path().join("d");
    fails(
        cmd,
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&o)],
        &[SUDOKU, "HF_HUB_OFFLINE=1"],
    );
    assert!(
        m.server().requests().is_empty(),
        "offline mode made requests"
    );
    // the repo cached, a file of it not
    let conv = out.path().join("m.safetensors");
    ok(m.hrm(), &["convert", CKPT, p(&conv), "--seq-len", "81"]);
    let mut cmd = m.hrm();
    cmd.env("HF_HUB_OFFLINE", "1");
    fails(
        cmd,
        &[
            "convert",
            &format!("{CKPT}/step_99"),
            p(&conv),
            "--seq-len",
            "81",
        ],
        &["step_99", MODEL, "HF_HUB_OFFLINE=1"],
    );
}

#[test]
fn missing_repos_files_and_revisions_are_named() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let conv = out.path().join("m.safetensors");
    let c = p(&conv);
    fails(
        m.hrm(),
        &["convert", &format!("{CKPT}/step_99"), c, "--seq-len", "81"],
        &["step_99", MODEL, "revision main", "404", "step_26040"],
    );
    fails(
        m.hrm(),
        &[
            "convert",
            "hub:sapientinc/no-such-model",
            c,
            "--seq-len",
            "81",
        ],
        &["sapientinc/no-such-model", "404"],
    );
    fails(
        m.hrm(),
        &["convert", &format!("{CKPT}@v9"), c, "--seq-len", "81"],
        &[MODEL, "revision v9", "404"],
    );
    fails(
        m.hrm(),
        &["convert", "hub:just-a-name", c, "--seq-len", "81"],
        &["OWNER/REPO"],
    );
    assert!(!conv.exists());
}

#[test]
fn a_private_repo_needs_hf_token() {
    let m = Mirror::new();
    m.server().require_token(Some("hf_test_secret"));
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("d");
    fails(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&o)],
        &["401", "HF_TOKEN", SUDOKU],
    );
    let mut cmd = m.hrm();
    cmd.env("HF_TOKEN", "hf_test_secret");
    ok(
        cmd,
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&o)],
    );
}

#[test]
fn a_transfer_cut_off_is_resumed_or_refused_without_a_corrupt_file() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let conv = out.path().join("m.safetensors");
    // cut once: the retry resumes and the checkpoint converts
    m.server().cut_after("step_26040", 100_000, Cut::Once);
    let (_, err) = ok(m.hrm(), &["convert", CKPT, p(&conv), "--seq-len", "81"]);
    assert!(err.contains("downloaded step_26040"), "{err}");
    let step = "/lfs/models/sapientinc/HRM-checkpoint-sudoku-extreme/";
    assert!(m.server().count(step) >= 3);
    // resumed where the cut left it, not from the start
    let requests = m.server().requests();
    let resumed = requests
        .iter()
        .filter(|r| r.contains(step) && r.ends_with(" bytes=100000-"))
        .count();
    assert_eq!(resumed, 1, "{requests:?}");
    let cached = m.cached("models--sapientinc--HRM-checkpoint-sudoku-extreme");
    let snap = std::fs::read_dir(cached.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let pt = snap.path().join("step_26040");
    assert_eq!(
        std::fs::read(&pt).unwrap(),
        std::fs::read(torch_ckpt().join("step_26040")).unwrap()
    );

    // cut always (fresh cache): a clear error, and nothing incomplete stands as the file
    let m = Mirror::new();
    m.server().cut_after("step_26040", 100_000, Cut::Always);
    fails(
        m.hrm(),
        &["convert", CKPT, p(&conv), "--seq-len", "81"],
        &["step_26040", MODEL, "no complete answer", "retries"],
    );
    let cached = m.cached("models--sapientinc--HRM-checkpoint-sudoku-extreme");
    let want = sha256_hex(&torch_ckpt().join("step_26040"));
    assert!(
        !cached.join("blobs").join(&want).exists(),
        "an incomplete blob was kept"
    );
    for s in std::fs::read_dir(cached.join("snapshots"))
        .into_iter()
        .flatten()
    {
        assert!(!s.unwrap().path().join("step_26040").exists());
    }
    // the Hub answers again: the download resumes from the partial file and completes
    m.server().uncut();
    ok(m.hrm(), &["convert", CKPT, p(&conv), "--seq-len", "81"]);
    assert!(cached.join("blobs").join(&want).exists());
    let resumed: Vec<String> = m
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.contains(step))
        .collect();
    assert!(
        resumed.last().unwrap().ends_with("bytes=100000-"),
        "{resumed:?}"
    );
}

#[test]
fn a_corrupt_cached_file_is_reported() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("d");
    ok(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&o)],
    );
    let repo = m.cached("datasets--sapientinc--sudoku-extreme");
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    let blob =
        std::fs::canonicalize(repo.join("snapshots").join(commit.trim()).join("test.csv")).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let o2 = out.path().join("d2");
    fails(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&o2)],
        &[
            "test.csv",
            SUDOKU,
            "corrupt",
            "sha256",
            blob.file_name().unwrap().to_str().unwrap(),
        ],
    );
    assert!(!o2.exists());
}

#[test]
fn a_config_of_another_architecture_names_the_key() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let conv = out.path().join("m.safetensors");
    let yaml = m.repo("models", MODEL).join("all_config.yaml");
    let good = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        good.replace(
            "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
            "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        ),
    )
    .unwrap();
    fails(
        m.hrm(),
        &["solve", "--checkpoint", CKPT, "sudoku", PUZZLE],
        &[
            "arch.name",
            "all_config.yaml",
            "TinyRecursiveReasoningModel",
        ],
    );
    std::fs::write(&yaml, good.replace("hidden_size: 32", "hidden_size: 512")).unwrap();
    fails(
        m.hrm(),
        &["convert", CKPT, p(&conv), "--seq-len", "81"],
        &["arch.hidden_size", "512", "32"],
    );
}

/// `hrm solve`'s answer without its time (the last field of the segments line).
fn answer(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| match l.rsplit_once(", ") {
            Some((head, t)) if l.starts_with("segments:") && t.ends_with(" ms") => head,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn solve_from_the_hub_matches_a_hand_conversion_and_converts_once() {
    let mut m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let by_hand = out.path().join("by-hand.safetensors");
    ok(
        hrm(),
        &[
            "convert",
            p(&torch_ckpt().join("step_26040")),
            p(&by_hand),
            "--seq-len",
            "81",
        ],
    );
    let (want, _) = ok(
        hrm(),
        &["solve", "--checkpoint", p(&by_hand), "sudoku", PUZZLE],
    );
    let (got, err) = ok(m.hrm(), &["solve", "--checkpoint", CKPT, "sudoku", PUZZLE]);
    assert_eq!(answer(&got), answer(&want));
    assert!(err.contains("converted step_26040"), "{err}");
    // a repo of this project's own checkpoints: used as it is, nothing converted
    let ours = m.repo("models", "hrm-rs/sudoku-tiny");
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::copy(&by_hand, ours.join("model.safetensors")).unwrap();
    let (same, err) = ok(
        m.hrm(),
        &[
            "solve",
            "--checkpoint",
            "hub:hrm-rs/sudoku-tiny",
            "sudoku",
            PUZZLE,
        ],
    );
    assert_eq!(answer(&same), answer(&want));
    assert!(!err.contains("converted"), "{err}");
    let cached = m.cached("models--sapientinc--HRM-checkpoint-sudoku-extreme");
    let commit = std::fs::read_to_string(cached.join("refs/main")).unwrap();
    let conv = cached
        .join("hrm-converted")
        .join(commit.trim())
        .join("step_26040.seq81.safetensors");
    let mtime = std::fs::metadata(&conv).unwrap().modified().unwrap();
    let fetched = m.server().count("/resolve/");

    // a second use: neither fetched nor converted again
    let (again, err) = ok(m.hrm(), &["solve", "--checkpoint", CKPT, "sudoku", PUZZLE]);
    assert_eq!(answer(&again), answer(&want));
    assert!(
        !err.contains("converted") && !err.contains("downloaded"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&conv).unwrap().modified().unwrap(), mtime);
    assert_eq!(m.server().count("/resolve/"), fetched);

    // a new upstream commit (another halt_max_steps): fetched and converted again
    let yaml = m.repo("models", MODEL).join("all_config.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        text.replace("halt_max_steps: 5", "halt_max_steps: 3"),
    )
    .unwrap();
    let (newer, err) = ok(
        m.hrm(),
        &[
            "solve",
            "--checkpoint",
            &format!("{CKPT}@main/step_26040"),
            "sudoku",
            PUZZLE,
        ],
    );
    assert!(err.contains("converted step_26040"), "{err}");
    assert!(newer.contains("segments: 3"), "{newer}");
    let commit2 = std::fs::read_to_string(cached.join("refs/main")).unwrap();
    assert_ne!(commit2, commit);

    // evaluation of the Hub checkpoint on a subsample of the Hub dataset's test split
    let data = out.path().join("data");
    ok(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&data)],
    );
    let (json, _) = ok(
        m.hrm(),
        &[
            "eval",
            "--checkpoint",
            CKPT,
            "--data",
            p(&data),
            "--max-examples",
            "4",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metrics"]["all"]["count"], 4.0, "{json}");
    assert_eq!(v["sudoku"]["examples"], 4, "{json}");
    // and `hrm analyze` of it
    let report = out.path().join("analysis");
    ok(
        m.hrm(),
        &[
            "analyze",
            "--checkpoint",
            CKPT,
            "--data",
            p(&data),
            "--out",
            p(&report),
            "--max-examples",
            "4",
            "--max-segments",
            "2",
        ],
    );
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("analysis.json")).unwrap())
            .unwrap();
    assert!(a.is_object() && report.join("report.html").is_file(), "{a}");

    // the Hub gone: the cached conversion, offline as well as with a note
    m.server.take().unwrap().stop();
    let (cached_run, err) = ok(m.hrm(), &["solve", "--checkpoint", CKPT, "sudoku", PUZZLE]);
    assert!(err.contains("did not answer"), "{err}");
    let mut cmd = m.hrm();
    cmd.env("HF_HUB_OFFLINE", "1");
    let (offline, err) = ok(cmd, &["solve", "--checkpoint", CKPT, "sudoku", PUZZLE]);
    assert!(err.is_empty(), "{err}");
    assert_eq!(answer(&offline), answer(&cached_run));
    assert_eq!(answer(&offline), answer(&newer));
}

#[test]
fn training_starts_from_a_hub_checkpoint() {
    let m = Mirror::new();
    let out = tempfile::tempdir().unwrap();
    let data = out.path().join("data");
    ok(
        m.hrm(),
        &["data", "sudoku", "--hub", SUDOKU, "--output-dir", p(&data)],
    );
    let run = out.path().join("run");
    let tiny = configs().join("tiny.toml");
    let data_path = format!("data_path={}", p(&data));
    let init = format!("load_checkpoint={CKPT}");
    // the fixture checkpoint's architecture, and rates of 0: one step leaves its weights as loaded
    let mut args = vec![
        "train",
        p(&tiny),
        &data_path,
        &init,
        "lr=0",
        "puzzle_emb_lr=0",
        "arch.H_cycles=3",
        "arch.L_cycles=2",
        "arch.L_layers=2",
        "arch.hidden_size=32",
        "arch.num_heads=2",
        "arch.expansion=4",
        "arch.puzzle_emb_ndim=32",
        "--stop-after",
        "1",
        "--quiet",
        "--run-dir",
        p(&run),
    ];
    ok(m.hrm(), &args);
    let (step, got) = final_tensors(&run);
    assert_eq!(step, "step_1");
    let want = tensor_bytes(&torch_ckpt().join("expected.safetensors"));
    assert_eq!(got.len(), want.len());
    for (k, v) in &want {
        assert!(got[k] == *v, "{k}: not the checkpoint's weights");
    }
    // another width: refused by key and shape, naming the setting, before anything is written
    args.retain(|a| *a != "arch.hidden_size=32");
    let other = out.path().join("other");
    let last = args.len() - 1;
    args[last] = p(&other);
    fails(
        m.hrm(),
        &args,
        &[
            "load_checkpoint = \"hub:sapientinc/HRM-checkpoint-sudoku-extreme\"",
            "shape",
        ],
    );
    assert!(!other.join("config.toml").exists());
}
