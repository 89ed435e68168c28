//! `report.html` of `hrm analyze`: one self-contained page (figures inlined as SVG, styles
//! inline, no script, nothing fetched) with the measured numbers and the per-segment answers of
//! a few puzzles, changed cells highlighted.

use std::fmt::Write;

use super::figures::Figure;
use super::{Analysis, Example, Pooled};

/// `s` with the HTML special characters escaped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// ARC colours 0..9 (tokens 2..=11).
const ARC_COLOURS: [&str; 10] = [
    "#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b",
    "#7fdbff", "#870c25",
];

/// A cell's text and inline style for a task's token.
fn cell(task: &str, t: i32) -> (String, String) {
    match task {
        "sudoku" if (2..=10).contains(&t) => ((t - 1).to_string(), String::new()),
        "sudoku" => ("·".into(), String::new()),
        "maze" => {
            let c = u8::try_from(t)
                .ok()
                .and_then(hrm_data::maze::Cell::from_token)
                .map_or('?', |c| c.to_char());
            (
                if c == ' ' {
                    "\u{a0}".into()
                } else {
                    c.to_string()
                },
                String::new(),
            )
        }
        "arc" if (2..=11).contains(&t) => (
            "\u{a0}".into(),
            format!("background:{}", ARC_COLOURS[(t - 2) as usize]),
        ),
        "arc" => ("\u{a0}".into(), String::new()),
        _ => (t.to_string(), String::new()),
    }
}

/// One grid as a table; `changed` cells get the class `changed`, cells given in the input the
/// class `given`.
fn grid(task: &str, tokens: &[i32], input: &[i32], changed: &[usize], class: &str) -> String {
    let n = tokens.len();
    let side = (n as f64).sqrt().round() as usize;
    let width = if side * side == n { side } else { n.max(1) };
    let given = |i: usize| match task {
        "sudoku" => input.get(i).is_some_and(|&t| t >= 2),
        _ => false,
    };
    let mut s = format!("<table class=\"grid {class}\">");
    for (r, row) in tokens.chunks(width).enumerate() {
        s.push_str("<tr>");
        for (c, &t) in row.iter().enumerate() {
            let i = r * width + c;
            let (text, style) = cell(task, t);
            let mut classes = Vec::new();
            if changed.contains(&i) {
                classes.push("changed");
            }
            if given(i) {
                classes.push("given");
            }
            let _ = write!(
                s,
                "<td class=\"{}\" style=\"{style}\">{}</td>",
                classes.join(" "),
                esc(&text)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn pr_rows(name: &str, p: &Pooled) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
         <td>{:.2}</td><td>{:.2}</td></tr>",
        esc(name),
        p.count,
        p.trained.pr_h,
        p.trained.pr_l,
        p.trained.ratio,
        p.untrained.pr_h,
        p.untrained.pr_l,
        p.untrained.ratio
    )
}

fn puzzle(task: &str, k: usize, e: &Example) -> String {
    let mut s = format!(
        "<section class=\"puzzle\" id=\"puzzle-{k}\"><h3>Test puzzle #{} — learned halting stops \
         at {}</h3><div class=\"segments\">",
        e.index,
        e.trace.halted_at.map_or(
            "no segment (never within the budget)".to_string(),
            |h| format!("segment {h}")
        )
    );
    let _ = write!(
        s,
        "<div class=\"segment input\"><div class=\"head\">input</div>{}</div>",
        grid(task, &e.input, &e.input, &[], "input-grid")
    );
    for (j, seg) in e.trace.segments.iter().enumerate() {
        let ok = e.correct.get(j).copied().unwrap_or(false);
        let halt = e.trace.halted_at == Some(j + 1);
        let _ = write!(
            s,
            "<div class=\"segment{}\" data-segment=\"{}\"><div class=\"head\">segment {} {}<br>\
             q_halt {:.2} · q_cont {:.2}<br>{} changed</div>",
            if halt { " halted" } else { "" },
            j + 1,
            j + 1,
            if ok { "✓" } else { "✗" },
            seg.q_halt,
            seg.q_continue,
            seg.changed.len()
        );
        // the answers after the H cycles before the last (the last is the segment's answer)
        let hc = seg.h_cycle_answers.len();
        let mut prev: &[i32] = if j == 0 {
            &e.input
        } else {
            &e.trace.segments[j - 1].answer
        };
        for (n, ans) in seg
            .h_cycle_answers
            .iter()
            .enumerate()
            .take(hc.saturating_sub(1))
        {
            let ch: Vec<usize> = (0..ans.len()).filter(|&i| ans[i] != prev[i]).collect();
            let _ = write!(
                s,
                "<div class=\"hcycle\">after H cycle {}</div>{}",
                n + 1,
                grid(task, ans, &e.input, &ch, "hcycle-grid")
            );
            prev = ans;
        }
        s.push_str(&grid(
            task,
            &seg.answer,
            &e.input,
            &seg.changed,
            "segment-grid",
        ));
        s.push_str("</div>");
    }
    s.push_str("</div></section>");
    s
}

/// The report page.
pub fn html(a: &Analysis, figures: &[Figure]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hrm analyze: {}</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}}\
         table.nums{{border-collapse:collapse;margin:8px 0}}table.nums td,table.nums th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         figure{{margin:16px 0}}figure svg{{max-width:100%;height:auto}}figcaption{{font-size:14px;color:#444}}\
         .segments{{display:flex;gap:10px;overflow-x:auto;padding-bottom:8px}}.segment{{flex:none;border:1px solid #ddd;padding:4px}}\
         .segment.halted{{border:2px solid #2a7}}.head,.hcycle{{font-size:11px;color:#444;margin-bottom:3px}}\
         table.grid{{border-collapse:collapse;font-family:monospace;font-size:11px}}table.grid td{{border:1px solid #eee;width:12px;height:12px;text-align:center;padding:0}}\
         td.given{{color:#999}}td.changed{{background:#ffe08a;font-weight:bold}}</style></head><body>",
        esc(&a.checkpoint)
    );
    let _ = write!(
        s,
        "<h1>hrm analyze</h1><p>Checkpoint <code>{}</code>, dataset <code>{}</code> ({}), {} test \
         examples, rollouts of {} segments; model H_cycles {} x L_cycles {}, hidden {}, trained \
         halt_max_steps {}. The analysis took {:.1} s. The numbers are in \
         <code>analysis.json</code> beside this file.</p>",
        esc(&a.checkpoint),
        esc(&a.data),
        esc(&a.task),
        a.examples,
        a.max_segments,
        a.config.h_cycles,
        a.config.l_cycles,
        a.config.hidden_size,
        a.config.halt_max_steps,
        a.seconds
    );
    let d = &a.dimensionality;
    let _ = write!(
        s,
        "<h2>Dimensionality</h2><p>Pooled: {}. The untrained model has the same config and seed \
         ({}).</p><table class=\"nums\" id=\"pr-table\"><tr><th>pooling</th><th>samples</th>\
         <th>PR(z_H)</th><th>PR(z_L)</th><th>H/L</th><th>untrained PR(z_H)</th>\
         <th>untrained PR(z_L)</th><th>untrained H/L</th></tr>{}{}</table>",
        esc(&d.positions),
        a.untrained_seed,
        pr_rows(&d.per_puzzle.samples, &d.per_puzzle),
        pr_rows(&d.per_token.samples, &d.per_token)
    );
    let section = |name: &str| match name {
        "analyze-pr" => Some("Dimensionality"),
        "analyze-convergence" => Some("Convergence"),
        "analyze-halting" => Some("Adaptive compute"),
        _ => None,
    };
    for f in figures {
        if let Some(h) = section(&f.name).filter(|&h| h != "Dimensionality") {
            let _ = write!(s, "<h2>{h}</h2>");
        }
        let svg = f
            .svg()
            .unwrap_or_else(|e| format!("<p>{}</p>", esc(&e.to_string())));
        // the XML declaration is not HTML
        let svg = svg
            .find("<svg")
            .map_or(svg.as_str(), |i| &svg[i..])
            .to_string();
        let _ = write!(
            s,
            "<figure class=\"figure\" id=\"fig-{}\">{svg}<figcaption>{}</figcaption></figure>",
            esc(&f.name),
            esc(&f.caption)
        );
    }
    let ad = &a.adaptive;
    s.push_str(
        "<table class=\"nums\" id=\"scaling-table\"><tr><th>budget</th><th>accuracy, fixed</th>\
         <th>accuracy, learned</th><th>mean segments, learned</th></tr>",
    );
    for (i, b) in ad.budgets.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{b}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}</td></tr>",
            ad.accuracy_fixed[i], ad.accuracy_learned[i], ad.mean_segments_learned[i]
        );
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        "<h2>Per-segment answers</h2><p>The decoded answer after every segment (and after every \
         H cycle before the last, when H_cycles > 1); cells that changed since the previous \
         answer (segment 1: since the input) are highlighted; ✓ marks a correct answer ({}); a \
         green frame the segment where learned halting stops.</p>",
        esc(&ad.correct_means)
    );
    for (k, e) in a.per_segment.iter().enumerate() {
        s.push_str(&puzzle(&a.task, k, e));
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_mark_changed_and_given_cells_and_escape_text() {
        let g = grid("sudoku", &[2, 3, 1, 10], &[2, 1, 1, 1], &[1], "g");
        assert!(g.contains("<td class=\"given\" style=\"\">1</td>"), "{g}");
        assert!(g.contains("<td class=\"changed\" style=\"\">2</td>"), "{g}");
        assert_eq!(g.matches("<tr>").count(), 2);
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
