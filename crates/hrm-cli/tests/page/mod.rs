//! Shared checks of the solve page (`hrm solve --html`, `hrm serve`): `hrm solve`'s printed
//! answer, and the grids and segment control of the page's rendered DOM.
#![allow(dead_code)] // each test file uses some of them

use std::path::{Path, PathBuf};

/// The Sudoku of models/README.md (10 blanks).
pub const SUDOKU: &str =
    "13247569868.1.234549538672137125.96.954631.722.874915351.927486.2681453..49563217";

/// The maze of `examples/maze-6x6.txt`.
pub fn maze_file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/maze-6x6.txt"
    ))
}

/// The answer rows `hrm solve` printed (the first `side` lines, Sudoku digits without their
/// separating spaces).
pub fn printed_answer(stdout: &str, side: usize) -> Vec<String> {
    let rows: Vec<String> = stdout
        .lines()
        .take(side)
        .map(|l| {
            if l.len() == 2 * side - 1 && l.as_bytes().iter().skip(1).step_by(2).all(|&b| b == b' ')
            {
                l.chars().step_by(2).collect()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(rows.len(), side, "{stdout}");
    assert!(rows.iter().all(|r| r.chars().count() == side), "{stdout}");
    rows
}

/// The value of attribute `attr` of the first element whose opening tag contains `anchor`
/// (e.g. `id="answer-grid"`), in a serialised DOM.
pub fn attr<'a>(dom: &'a str, anchor: &str, attr: &str) -> &'a str {
    let at = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("no element with {anchor} in the page:\n{dom}"));
    let tag_end = at + dom[at..].find('>').unwrap();
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let v = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in <{tag}>"));
    let rest = &tag[v + key.len()..];
    &rest[..rest.find('"').unwrap()]
}

/// The rows of the grid inside the element `id` (its `data-rows`, `/`-separated).
pub fn grid_rows(dom: &str, id: &str) -> Vec<String> {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    attr(&dom[at..], "class=\"grid ", "data-rows")
        .split('/')
        .map(str::to_string)
        .collect()
}

/// `hrm solve arc`'s printed answer 1 of test input `test` (its rows; none for an empty grid).
pub fn printed_arc_answer(stdout: &str, test: usize) -> Vec<String> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("test input {test} (")))
        .skip_while(|l| !l.starts_with("answer 1 ("));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no answer 1:\n{stdout}"));
    let h: usize = head["answer 1 (".len()..]
        .split('x')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    lines.take(h).map(str::to_string).collect()
}

/// Checks a rendered solve page: the puzzle, per-segment and final grids are there (with
/// `side x side` cells each when `side` is given), the slider and the strip cover `segments`
/// segments, the segment table shows Q values, and the final grid is `answer`.
pub fn check_solved_page(dom: &str, side: Option<usize>, segments: usize, answer: &[String]) {
    assert!(
        dom.contains("data-state=\"solved\""),
        "the page did not solve:\n{dom}"
    );
    for id in ["input-grid", "segment-grid", "answer-grid"] {
        let rows = grid_rows(dom, id);
        if let Some(side) = side {
            assert_eq!(rows.len(), side, "#{id}: {rows:?}");
            assert!(
                rows.iter().all(|r| r.chars().count() == side),
                "#{id}: {rows:?}"
            );
        }
    }
    // an empty grid's data-rows is "": one empty row
    let shown = grid_rows(dom, "answer-grid");
    let shown: Vec<&String> = shown.iter().filter(|r| !r.is_empty()).collect();
    assert_eq!(shown, answer.iter().collect::<Vec<_>>());
    assert_eq!(
        attr(dom, "id=\"segment-slider\"", "max"),
        segments.to_string()
    );
    let strip = &dom[dom.find("id=\"segment-strip\"").unwrap()..];
    let strip = &strip[..strip.find("</div>").unwrap()];
    assert_eq!(strip.matches("data-segment=").count(), segments, "{strip}");
    let cells = dom.matches("class=\"cell").count();
    assert!(cells >= side.map_or(1, |s| 3 * s * s), "{cells} cells");
    for label in [
        "this answer",
        "q_halt",
        "q_continue",
        "H residuals",
        "halts here",
    ] {
        assert!(dom.contains(&format!("<td>{label}</td>")), "no {label} row");
    }
}

/// A screenshot of `url` in a temporary folder, checked to be a PNG; with
/// `HRM_UPDATE_SCREENSHOTS=1` it is also copied to docs/images/`name`.
pub fn screenshot(chrome: &Path, url: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    hrm_testkit::browser::screenshot(chrome, url, 20_000, &file, 1280, 900);
    let png = std::fs::read(&file).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    if std::env::var("HRM_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/images"));
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&file, docs.join(name)).unwrap();
    }
}
