//! `hrm serve`: the page solves a Sudoku and a maze in headless Chromium with the answers of
//! `hrm solve`; malformed requests get a 4xx naming the fault; parallel requests are served.

mod common;
mod page;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{configs, hrm, json, models, ok, one_line_error, p};
use page::{check_solved_page, maze_file, printed_answer, printed_arc_answer, screenshot, SUDOKU};

/// `hrm serve --port 0` with both default shipped models (those `hrm solve` uses without
/// `--checkpoint`), killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let (s, m) = (
            models().join("sudoku-trm-cpu.safetensors"),
            models().join("maze-trm-cpu.safetensors"),
        );
        Server::with(&["--checkpoint", p(&s), "--checkpoint", p(&m)])
    }

    /// `hrm serve --port 0 ARGS`.
    fn with(args: &[&str]) -> Server {
        let mut child = hrm()
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hrm serve");
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // the first line comes once the models are loaded and the port is bound; a server that
        // dies first closes stdout, so this read cannot hang on a dead one
        stdout.read_line(&mut first).unwrap();
        // the rest is read (and dropped) to the server's end, so its prints never hit a closed pipe
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = first
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {first:?}"))
            .parse()
            .unwrap();
        Server { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Send `request` (raw HTTP/1.1 bytes) and return the status and the body.
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        // the server may answer an oversize body before reading all of it
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
             {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        self.raw(&r)
    }

    fn solve(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, text) = self.post(
            "/api/solve",
            "application/json",
            body.to_string().as_bytes(),
        );
        (status, json(&text))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hrm solve`'s answer rows for `args` with the same model and segments as the server.
fn solve_rows(args: &[&str], side: usize) -> Vec<String> {
    printed_answer(&ok(args), side)
}

fn answer(v: &serde_json::Value) -> Vec<String> {
    v["answer"]
        .as_array()
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn malformed_requests_get_a_4xx_naming_the_fault() {
    let s = Server::start();
    let sudoku = |puzzle: &str| serde_json::json!({"task": "sudoku", "puzzle": puzzle});
    let cases: Vec<(&str, (u16, String), u16, &str)> = vec![
        (
            "bad JSON",
            s.post("/api/solve", "application/json", b"{\"task\": \"sudoku\", "),
            400,
            "request body",
        ),
        (
            "not JSON",
            s.post("/api/solve", "text/plain", b"hello"),
            415,
            "Content-Type",
        ),
        (
            "a missing field",
            s.post("/api/solve", "application/json", br#"{"task": "sudoku"}"#),
            422,
            "missing field `puzzle`",
        ),
        (
            "an unknown field",
            s.post(
                "/api/solve",
                "application/json",
                br#"{"task": "maze", "puzzle": "", "x": 1}"#,
            ),
            422,
            "unknown field `x`",
        ),
        (
            "wrong grid size (Sudoku)",
            s.post(
                "/api/solve",
                "application/json",
                sudoku(&SUDOKU[..80]).to_string().as_bytes(),
            ),
            400,
            "has 80 characters, expected 81",
        ),
        (
            "wrong grid size (maze)",
            s.post(
                "/api/solve",
                "application/json",
                serde_json::json!({"task": "maze", "puzzle": "S  \n # \n  G"})
                    .to_string()
                    .as_bytes(),
            ),
            400,
            "the grid is 3x3, but the model",
        ),
        (
            "bad characters",
            s.post(
                "/api/solve",
                "application/json",
                sudoku(&format!("12x{}", &SUDOKU[3..]))
                    .to_string()
                    .as_bytes(),
            ),
            400,
            "character 3 is 'x'",
        ),
        (
            "bad maze characters",
            s.post(
                "/api/solve",
                "application/json",
                serde_json::json!({"task": "maze", "puzzle": "S?\nG "})
                    .to_string()
                    .as_bytes(),
            ),
            400,
            "maze puzzle: character '?'",
        ),
        (
            "unknown task",
            s.post(
                "/api/solve",
                "application/json",
                br#"{"task": "chess", "puzzle": "e4"}"#,
            ),
            400,
            "unknown task `chess`",
        ),
        (
            "segments out of range",
            s.post(
                "/api/solve",
                "application/json",
                br#"{"task": "sudoku", "puzzle": "", "segments": 0}"#,
            ),
            400,
            "segments: 0 is outside 1..=64",
        ),
        (
            "oversize body",
            s.post("/api/solve", "application/json", &vec![b' '; 100_000]),
            413,
            "over the 65536-byte limit",
        ),
        ("unknown route", s.get("/nope"), 404, "no route GET /nope"),
        (
            "wrong method",
            s.get("/api/solve"),
            405,
            "GET is not allowed on /api/solve",
        ),
        (
            "bad query",
            s.get("/api/maze/random?seed=abc"),
            400,
            "query string: ",
        ),
    ];
    for (what, (status, body), want, needle) in cases {
        assert_eq!(status, want, "{what}: {body}");
        let v = json(&body);
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(!msg.contains('\n'), "{what}: one line: {msg}");
    }
    // the server is still up and solving
    let (status, v) = s.solve(&sudoku(SUDOKU));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn parallel_solves_get_hrm_solves_answers() {
    let s = Server::start();
    let maze_text = std::fs::read_to_string(maze_file()).unwrap();
    let want_sudoku = solve_rows(&["solve", "--halt-max-steps", "2", "sudoku", SUDOKU], 9);
    let maze = maze_file();
    let want_maze = solve_rows(&["solve", "--halt-max-steps", "2", "maze", p(&maze)], 6);
    let (status, info) = s.get("/api/info");
    assert_eq!(status, 200);
    let info = json(&info);
    assert_eq!(info["tasks"]["sudoku"]["side"], 9, "{info}");
    assert_eq!(info["tasks"]["maze"]["side"], 6, "{info}");
    std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..6)
            .map(|i| {
                let (s, maze_text) = (&s, &maze_text);
                scope.spawn(move || {
                    let body = if i % 2 == 0 {
                        serde_json::json!({"task": "sudoku", "puzzle": SUDOKU, "segments": 2})
                    } else {
                        serde_json::json!({"task": "maze", "puzzle": maze_text, "segments": 2})
                    };
                    (i, s.solve(&body))
                })
            })
            .collect();
        for j in jobs {
            let (i, (status, v)) = j.join().unwrap();
            assert_eq!(status, 200, "{v}");
            let want = if i % 2 == 0 { &want_sudoku } else { &want_maze };
            assert_eq!(&answer(&v), want, "request {i}");
            assert_eq!(v["trace"]["segments"].as_array().unwrap().len(), 2);
        }
    });
    // a random maze of the model's size, the same for the same seed
    let (status, a) = s.get("/api/maze/random?seed=5");
    assert_eq!(status, 200, "{a}");
    let a = json(&a);
    assert_eq!(json(&s.get("/api/maze/random?seed=5").1), a);
    let text = a["maze"].as_str().unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert_eq!(
        text.matches('S').count() + text.matches('G').count(),
        2,
        "{text}"
    );
}

#[test]
fn the_page_solves_in_headless_chromium() {
    let Some(chrome) = hrm_testkit::browser::chromium() else {
        return;
    };
    let s = Server::start();
    let (status, html) = s.get("/");
    assert_eq!(status, 200);
    assert!(html.contains("id=\"sudoku-editor\"") && !html.contains("src=\"http"));
    let want = solve_rows(&["solve", "--halt-max-steps", "3", "sudoku", SUDOKU], 9);
    let url = s.url(&format!(
        "/?task=sudoku&puzzle={SUDOKU}&segments=3&autosolve=1"
    ));
    let dom = hrm_testkit::browser::dump_dom(&chrome, &url, 20_000);
    // the editable board: 81 inputs holding the puzzle's givens
    let editor = &dom[dom.find("id=\"sudoku-editor\"").unwrap()..];
    assert_eq!(
        editor[..editor.find("</div>").unwrap()]
            .matches("<input")
            .count(),
        81
    );
    check_solved_page(&dom, Some(9), 3, &want);
    screenshot(&chrome, &url, "serve-sudoku.png");
    // a maze from the text box, as a file would fill it
    let maze = maze_file();
    let want = solve_rows(&["solve", "--halt-max-steps", "2", "maze", p(&maze)], 6);
    let text = std::fs::read_to_string(&maze).unwrap();
    let q: String = text
        .bytes()
        .map(|b| match b {
            b'\n' => "%0A".to_string(),
            b' ' => "%20".to_string(),
            b'#' => "%23".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    let url = s.url(&format!("/?task=maze&maze={q}&segments=2&autosolve=1"));
    let dom = hrm_testkit::browser::dump_dom(&chrome, &url, 20_000);
    check_solved_page(&dom, Some(6), 2, &want);
    screenshot(&chrome, &url, "serve-maze.png");
    // a bad puzzle shows the server's message on the page
    let url = s.url("/?task=sudoku&puzzle=123&autosolve=1");
    let dom = hrm_testkit::browser::dump_dom(&chrome, &url, 20_000);
    assert!(dom.contains("data-state=\"error\""), "{dom}");
    assert!(dom.contains("has 3 characters, expected 81"), "{dom}");
}

/// A two-task ARC dataset (the held-out test pairs in an `evaluation` folder) and an untrained
/// tiny model's step-0 checkpoint for it: (task folder, dataset, run folder).
fn tiny_arc(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let eval = dir.join("tasks").join("evaluation");
    std::fs::create_dir_all(&eval).unwrap();
    let copy = r#"{"train": [{"input": [[1, 2], [3, 4]], "output": [[1, 2], [3, 4]]}],
        "test": [{"input": [[6, 7], [8, 9]], "output": [[6, 7], [8, 9]]}]}"#;
    let flip = r#"{"train": [{"input": [[1, 2]], "output": [[2, 1]]}],
        "test": [{"input": [[5, 6]], "output": [[6, 5]]}, {"input": [[7, 8, 9]], "output": [[9, 8, 7]]}]}"#;
    std::fs::write(eval.join("copy.json"), copy).unwrap();
    std::fs::write(eval.join("flip.json"), flip).unwrap();
    let (data, run) = (dir.join("data"), dir.join("run"));
    let tasks = dir.join("tasks");
    ok(&[
        "data",
        "arc",
        "--dataset-dirs",
        p(&tasks),
        "--output-dir",
        p(&data),
        "--num-aug",
        "3",
    ]);
    let tiny = configs().join("tiny.toml");
    let data_path = format!("data_path={}", data.display());
    ok(&[
        "train",
        p(&tiny),
        &data_path,
        "epochs=2",
        "eval_interval=2",
        "--run-dir",
        p(&run),
        "--quiet",
    ]);
    (eval, data, run)
}

#[test]
fn arc_tasks_in_solve_html_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (eval, data, run) = tiny_arc(dir.path());
    let (t, h) = (dir.path().join("t.json"), dir.path().join("p.html"));
    let flip = eval.join("flip.json");
    let solve = [
        "solve",
        "--checkpoint",
        p(&run),
        "--halt-max-steps",
        "2",
        "--trace",
        p(&t),
        "--html",
        p(&h),
        "arc",
        p(&flip),
        "--data",
        p(&data),
    ];
    let out = ok(&solve);
    let want: Vec<Vec<String>> = (0..2).map(|i| printed_arc_answer(&out, i)).collect();
    // the trace: both test inputs, each with the first variant's two segments
    let v = json(&std::fs::read_to_string(&t).unwrap());
    assert_eq!(
        (v["kind"].as_str(), v["task_id"].as_str()),
        (Some("arc-task"), Some("flip"))
    );
    assert_eq!(v["variants"], 4, "the original and three augmentations");
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2);
    for (i, test) in tests.iter().enumerate() {
        assert_eq!(test["answer"], serde_json::json!(want[i]), "test {i}");
        assert_eq!(test["input"], serde_json::json!([["56"], ["789"]][i]));
        assert_eq!(test["segment_answers"].as_array().unwrap().len(), 2);
        assert_eq!(test["segment_changed"].as_array().unwrap().len(), 2);
        let segs = test["trace"]["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 2);
        for s in segs {
            assert_eq!(s["answer"].as_array().unwrap().len(), 900);
            assert!(s["q_halt"].is_f64() && !s["residual_l"].as_array().unwrap().is_empty());
        }
    }
    let chrome = hrm_testkit::browser::chromium();
    if let Some(chrome) = &chrome {
        let url = hrm_testkit::browser::file_url(&h);
        let dom = hrm_testkit::browser::dump_dom(chrome, &url, 5_000);
        check_solved_page(&dom, None, 2, &want[0]);
        assert_eq!(
            dom.matches("data-test=").count(),
            2,
            "a button per test input"
        );
    }
    // hrm serve --data: the tasks of the test split, solved as hrm solve does
    one_line_error(
        &["serve", "--port", "0", "--checkpoint", p(&run)],
        "needs --data DIR",
    );
    let s = Server::with(&["--checkpoint", p(&run), "--data", p(&data)]);
    let info = json(&s.get("/api/info").1);
    assert_eq!(
        info["tasks"]["arc"]["tasks"],
        serde_json::json!(["copy", "flip"]),
        "{info}"
    );
    let (status, r) = s.solve(&serde_json::json!({"task": "arc", "puzzle": "flip", "segments": 2}));
    assert_eq!(status, 200, "{r}");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(r["tests"][i]["answer"], serde_json::json!(w), "test {i}");
    }
    let (status, r) = s.solve(&serde_json::json!({"task": "arc", "puzzle": "nope"}));
    assert_eq!(status, 400, "{r}");
    let msg = r["error"].as_str().unwrap();
    assert!(
        msg.contains("unknown ARC task `nope`") && msg.contains("copy, flip"),
        "{msg}"
    );
    if let Some(chrome) = &chrome {
        let url = s.url("/?task=arc&puzzle=flip&segments=2&autosolve=1");
        let dom = hrm_testkit::browser::dump_dom(chrome, &url, 20_000);
        check_solved_page(&dom, None, 2, &want[0]);
        assert!(
            dom.contains("<option value=\"flip\">flip</option>"),
            "{dom}"
        );
    }
}
