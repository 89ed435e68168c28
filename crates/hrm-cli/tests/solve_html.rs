//! `hrm solve --trace FILE.json --html FILE.html`: the trace has every segment's answer, Q values
//! and residuals; the page renders in headless Chromium with the grids, the segment control and
//! `hrm solve`'s answer.

mod common;
mod page;

use std::path::Path;

use common::{json, ok, one_line_error, p};
use page::{check_solved_page, maze_file, printed_answer, screenshot, SUDOKU};

/// `hrm solve --halt-max-steps SEGMENTS --trace DIR/t.json --html DIR/p.html PUZZLE...`: the
/// printed answer, the trace and the page's path.
fn solve_with_files(
    dir: &Path,
    segments: usize,
    puzzle: &[&str],
    side: usize,
) -> (Vec<String>, serde_json::Value, std::path::PathBuf) {
    let (t, h) = (dir.join("t.json"), dir.join("p.html"));
    let seg = segments.to_string();
    let mut args = vec![
        "solve",
        "--halt-max-steps",
        &seg,
        "--trace",
        p(&t),
        "--html",
        p(&h),
    ];
    args.extend_from_slice(puzzle);
    let out = ok(&args);
    assert!(out.contains(&format!("trace: {}", t.display())), "{out}");
    assert!(out.contains(&format!("page: {}", h.display())), "{out}");
    let trace = json(&std::fs::read_to_string(&t).unwrap());
    (printed_answer(&out, side), trace, h)
}

/// The trace of a solve: every segment with its answer tokens (`cells` of them), Q values, the
/// changed cells and the residuals of every H and L call (`calls` = (H, L) calls per segment);
/// its decoded last answer is `answer`.
fn check_trace(
    v: &serde_json::Value,
    segments: usize,
    cells: usize,
    answer: &[String],
    calls: (usize, usize),
) {
    let segs = v["trace"]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), segments, "{v}");
    assert_eq!(v["segments"], segments);
    for (k, s) in segs.iter().enumerate() {
        assert_eq!(s["answer"].as_array().unwrap().len(), cells, "segment {k}");
        assert!(
            s["q_halt"].is_f64() && s["q_continue"].is_f64(),
            "segment {k}: {s}"
        );
        let (h, l) = (
            s["residual_h"].as_array().unwrap(),
            s["residual_l"].as_array().unwrap(),
        );
        assert_eq!((h.len(), l.len()), calls, "segment {k}: {s}");
        assert!(h.iter().chain(l).all(|r| r.as_f64().unwrap() >= 0.0), "{s}");
        let hc = s["h_cycle_answers"].as_array().unwrap();
        assert_eq!(hc.last().unwrap(), &s["answer"], "segment {k}");
        assert!(s["changed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.as_u64().unwrap() < cells as u64));
    }
    let rows: Vec<&str> = v["segment_answers"][segments - 1]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rows, answer);
    assert_eq!(v["answer"], serde_json::json!(answer));
    let verdicts = v["segment_verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), segments);
    assert_eq!(verdicts[segments - 1], v["verdict"]);
    // segment 1's changes are the cells that differ from the puzzle: a Sudoku's blanks
    if v["kind"] == "sudoku" {
        let first = segs[0]["changed"].as_array().unwrap();
        let blanks = SUDOKU.bytes().filter(|&b| b == b'.').count();
        assert_eq!(first.len(), blanks, "{}", segs[0]);
    }
}

#[test]
fn sudoku_trace_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let (answer, trace, page) = solve_with_files(dir.path(), 3, &["sudoku", SUDOKU], 9);
    // the default Sudoku model is TRM with 2 recursions of 2 latent updates per segment
    check_trace(&trace, 3, 81, &answer, (2, 4));
    assert_eq!(trace["kind"], "sudoku");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network"
    );
    let Some(chrome) = hrm_testkit::browser::chromium() else {
        return;
    };
    let url = hrm_testkit::browser::file_url(&page);
    let dom = hrm_testkit::browser::dump_dom(&chrome, &url, 5_000);
    check_solved_page(&dom, Some(9), 3, &answer);
    // a file page has no solve controls
    assert!(dom.contains("id=\"controls\" class=\"hidden\""), "{dom}");
    screenshot(&chrome, &url, "solve-sudoku.png");
}

#[test]
fn maze_trace_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let maze = maze_file();
    let (answer, trace, page) = solve_with_files(dir.path(), 2, &["maze", p(&maze)], 6);
    // the default maze model is TRM too: 2 recursions of 2 latent updates per segment
    check_trace(&trace, 2, 36, &answer, (2, 4));
    assert_eq!(trace["input"][0].as_str().unwrap().len(), 6);
    let Some(chrome) = hrm_testkit::browser::chromium() else {
        return;
    };
    let url = hrm_testkit::browser::file_url(&page);
    let dom = hrm_testkit::browser::dump_dom(&chrome, &url, 5_000);
    check_solved_page(&dom, Some(6), 2, &answer);
    screenshot(&chrome, &url, "solve-maze.png");
}

#[test]
fn trace_and_html_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no-such-dir").join("t.json");
    let e = one_line_error(&["solve", "--trace", p(&bad), "sudoku", SUDOKU], "--trace");
    assert!(e.contains("no-such-dir"), "{e}");
    let bad = dir.path().join("no-such-dir").join("p.html");
    let maze = maze_file();
    let e = one_line_error(&["solve", "--html", p(&bad), "maze", p(&maze)], "--html");
    assert!(e.contains("p.html"), "{e}");
}
