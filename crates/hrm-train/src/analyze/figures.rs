//! The figures of `hrm analyze`, drawn with plotters: one description per figure, rendered to an
//! SVG string (inlined in the report) and a PNG file. PNG text uses DejaVu Sans, committed in
//! `crates/hrm-train/assets/fonts` with its licence and registered with plotters' `ab_glyph`
//! renderer, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::Analysis;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("internal: the bundled font does not load"))
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// How an axis maps its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// As they are.
    Linear,
    /// log10 (values <= 0 are left out).
    Log10,
    /// log2 (values <= 0 are left out).
    Log2,
}

impl Scale {
    fn map(self, v: f64) -> Option<f64> {
        match self {
            Scale::Linear => Some(v),
            _ if v <= 0.0 || !v.is_finite() => None,
            Scale::Log10 => Some(v.log10()),
            Scale::Log2 => Some(v.log2()),
        }
        .filter(|x| x.is_finite())
    }

    fn label(self, v: f64) -> String {
        match self {
            Scale::Linear if v.abs() >= 100.0 || v == v.round() => format!("{v:.0}"),
            Scale::Linear => format!("{v:.2}"),
            // ticks at whole powers only
            _ if (v - v.round()).abs() > 1e-6 => String::new(),
            Scale::Log10 => format!("{:.0e}", 10f64.powf(v.round())),
            Scale::Log2 => format!("{:.0}", 2f64.powf(v.round())),
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A polyline.
    Line,
    /// A polyline with a dot at each point.
    LinePoints,
    /// A bar of this width per point.
    Bars(f64),
}

/// One data series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry ("" for none).
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// A shaded band (x, low, high).
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// How it is drawn.
    pub kind: Kind,
}

impl Series {
    fn new(name: &str, points: Vec<(f64, f64)>, kind: Kind) -> Self {
        Self {
            name: name.to_string(),
            points,
            band: None,
            kind,
        }
    }
}

/// One chart of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// x-axis description.
    pub x_label: String,
    /// y-axis description.
    pub y_label: String,
    /// x scale.
    pub x_scale: Scale,
    /// y scale.
    pub y_scale: Scale,
    /// Names of integer x positions (a categorical axis), when set.
    pub x_names: Option<Vec<String>>,
    /// The series.
    pub series: Vec<Series>,
    /// Dashed vertical markers at these x values, with their label.
    pub vlines: Vec<(f64, String)>,
    /// The y range starts at 0 (linear axes).
    pub y_from_zero: bool,
}

impl Panel {
    fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_names: None,
            series: Vec::new(),
            vlines: Vec::new(),
            y_from_zero: false,
        }
    }
}

/// A figure: panels side by side.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`analyze-...`).
    pub name: String,
    /// What it shows (the report's caption).
    pub caption: String,
    /// Panels, left to right.
    pub panels: Vec<Panel>,
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        (520 * self.panels.len().max(1) as u32, 420)
    }

    /// The figure as an SVG document.
    pub fn svg(&self) -> Result<String> {
        register_font()?;
        let mut s = String::new();
        {
            let root = SVGBackend::with_string(&mut s, self.size()).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(plot_err)?;
        }
        Ok(s)
    }

    /// Write `<name>.svg` and `<name>.png` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let svg = self.svg()?;
        let svg_path = dir.join(format!("{}.svg", self.name));
        hrm_data::fsio::write_atomic(&svg_path, svg.as_bytes())
            .map_err(|e| anyhow!("writing {}: {e}", svg_path.display()))?;
        let png = dir.join(format!("{}.png", self.name));
        let root = BitMapBackend::new(&png, self.size()).into_drawing_area();
        self.draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", png.display()))?;
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (area, p) in areas.iter().zip(&self.panels) {
            draw_panel(area, p)?;
        }
        Ok(())
    }
}

/// The extent of mapped values with a margin (a unit range around a single value).
fn extent(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    let m = (hi - lo) * 0.05;
    (if from_zero && lo >= 0.0 { lo } else { lo - m }, hi + m)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()> {
    let (xs, ys) = (p.x_scale, p.y_scale);
    let map = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .filter_map(|&(x, y)| Some((xs.map(x)?, ys.map(y)?)))
            .collect()
    };
    let all_x = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0))
        .chain(p.vlines.iter().map(|v| v.0))
        .filter_map(|x| xs.map(x));
    let all_y = p.series.iter().flat_map(|s| {
        let band = s.band.iter().flatten().flat_map(|b| [b.1, b.2]);
        s.points.iter().map(|q| q.1).chain(band).collect::<Vec<_>>()
    });
    let (mut x0, mut x1) = extent(all_x, false);
    if let Some(n) = &p.x_names {
        (x0, x1) = (-0.6, n.len() as f64 - 0.4);
    }
    let (y0, mut y1) = extent(
        all_y.filter_map(|y| ys.map(y)),
        p.y_from_zero && ys == Scale::Linear,
    );
    // headroom for the legend box in the upper right
    if p.series.iter().any(|s| !s.name.is_empty()) {
        y1 += (y1 - y0) * 0.2;
    }
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    let names = p.x_names.clone();
    let x_fmt = move |v: &f64| match &names {
        Some(n) => {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n.len() {
                n[i as usize].clone()
            } else {
                String::new()
            }
        }
        None => xs.label(*v),
    };
    let y_fmt = move |v: &f64| ys.label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0));
    if let Some(n) = &p.x_names {
        mesh.x_labels(n.len() * 4 + 1);
    }
    mesh.draw().map_err(plot_err)?;
    let mut legend = false;
    for (i, s) in p.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if let Some(band) = &s.band {
            let lo: Vec<(f64, f64)> = band
                .iter()
                .filter_map(|&(x, l, _)| Some((xs.map(x)?, ys.map(l)?)))
                .collect();
            let hi: Vec<(f64, f64)> = band
                .iter()
                .filter_map(|&(x, _, h)| Some((xs.map(x)?, ys.map(h)?)))
                .collect();
            let poly: Vec<(f64, f64)> = lo.into_iter().chain(hi.into_iter().rev()).collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    color.mix(0.18).filled(),
                )))
                .map_err(plot_err)?;
        }
        let pts = map(s);
        let drawn = match s.kind {
            Kind::Line => chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(plot_err)?,
            Kind::LinePoints => {
                chart
                    .draw_series(pts.iter().map(|&q| Circle::new(q, 3, color.filled())))
                    .map_err(plot_err)?;
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(plot_err)?
            }
            Kind::Bars(w) => chart
                .draw_series(pts.iter().map(|&(x, y)| {
                    Rectangle::new(
                        [(x - w / 2.0, y0.max(0.0)), (x + w / 2.0, y)],
                        color.filled(),
                    )
                }))
                .map_err(plot_err)?,
        };
        if !s.name.is_empty() {
            legend = true;
            drawn.label(s.name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled())
            });
        }
    }
    for (x, label) in &p.vlines {
        if let Some(x) = xs.map(*x) {
            let dashes = (0..40).map(|k| {
                let a = y0 + (y1 - y0) * k as f64 / 40.0;
                let b = y0 + (y1 - y0) * (k as f64 + 0.5) / 40.0;
                PathElement::new(vec![(x, a), (x, b)], BLACK.mix(0.6))
            });
            chart.draw_series(dashes).map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (x, y1 - (y1 - y0) * 0.04),
                    (FONT, 12),
                )))
                .map_err(plot_err)?;
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The x position (in segments) of every H and L call of a rollout: call j of a segment's
/// `H_cycles * (L_cycles + 1)` calls ends at `segment + (j + 1) / calls`.
fn call_positions(segments: usize, hc: usize, lc: usize) -> (Vec<f64>, Vec<f64>) {
    let per = (hc * (lc + 1)) as f64;
    let (mut h, mut l) = (Vec::new(), Vec::new());
    for s in 0..segments {
        for n in 0..hc {
            for t in 0..lc {
                l.push(s as f64 + (n * (lc + 1) + t + 1) as f64 / per);
            }
            h.push(s as f64 + (n * (lc + 1) + lc + 1) as f64 / per);
        }
    }
    (h, l)
}

/// A line with dots through (x, y) for integer x.
fn counted(name: &str, xs: &[usize], ys: &[f64]) -> Series {
    let points = xs.iter().zip(ys).map(|(&x, &y)| (x as f64, y)).collect();
    Series::new(name, points, Kind::LinePoints)
}

/// Title, x label and y label of the saturation curve.
const SATURATION_LABELS: [&str; 3] = [
    "PR against trajectories included",
    "trajectories (puzzles)",
    "participation ratio",
];
/// Title, x label and y label of the scaling curve.
const SCALING_LABELS: [&str; 3] = [
    "Inference-time scaling",
    "budget halt_max_steps (segments)",
    "accuracy",
];

/// A panel ([title, x label, y label]) over a log2 x axis of counts, y from 0.
fn log2_panel([title, x, y]: [&str; 3], series: Vec<Series>) -> Panel {
    let mut p = Panel::new(title, x, y);
    p.x_scale = Scale::Log2;
    p.y_from_zero = true;
    p.series = series;
    p
}

/// Every figure of an analysis.
pub fn all(a: &Analysis) -> Result<Vec<Figure>> {
    let own = a.config.halt_max_steps as f64;
    let own_label = format!("trained M_max = {}", a.config.halt_max_steps);
    let dim = &a.dimensionality;

    // participation ratio, trained vs untrained, both poolings
    let bars = |pooled: &super::Pooled, title: &str| {
        let mut p = Panel::new(title, "", "participation ratio");
        p.x_names = Some(vec!["z_H".into(), "z_L".into()]);
        p.y_from_zero = true;
        p.series = vec![
            Series::new(
                &format!("trained (H/L = {:.2})", pooled.trained.ratio),
                vec![(-0.18, pooled.trained.pr_h), (0.82, pooled.trained.pr_l)],
                Kind::Bars(0.34),
            ),
            Series::new(
                &format!("untrained (H/L = {:.2})", pooled.untrained.ratio),
                vec![(0.18, pooled.untrained.pr_h), (1.18, pooled.untrained.pr_l)],
                Kind::Bars(0.34),
            ),
        ];
        p
    };
    let pr_fig = Figure {
        name: "analyze-pr".into(),
        caption: format!(
            "Participation ratio of z_H and z_L after segment {} (trained vs an untrained model of \
             the same config and seed). Left: one sample per puzzle ({} puzzles); right: one \
             sample per answer position ({} tokens).",
            dim.after_segment, dim.per_puzzle.count, dim.per_token.count
        ),
        panels: vec![
            bars(&dim.per_puzzle, "PR, per-puzzle pooling"),
            bars(&dim.per_token, "PR, per-token pooling"),
        ],
    };

    let sat = &dim.saturation;
    let curve = |name: &str, v: &[f64]| counted(name, &sat.trajectories, v);
    let sp = log2_panel(
        SATURATION_LABELS,
        vec![
            curve("z_H trained", &sat.trained_h),
            curve("z_L trained", &sat.trained_l),
            curve("z_H untrained", &sat.untrained_h),
            curve("z_L untrained", &sat.untrained_l),
        ],
    );
    let sat_fig = Figure {
        name: "analyze-pr-saturation".into(),
        caption: "Participation ratio (per-puzzle pooling) of the first n test puzzles against n."
            .into(),
        panels: vec![sp],
    };

    // convergence
    let c = &a.convergence;
    let (hx, lx) = call_positions(a.max_segments, c.h_cycles, c.l_cycles);
    let spread_series = |name: &str, xs: &[f64], s: &super::Spread| {
        let mut ser = Series::new(
            name,
            xs.iter().copied().zip(s.mean.iter().copied()).collect(),
            Kind::Line,
        );
        ser.band = Some(
            xs.iter()
                .zip(s.p10.iter().zip(&s.p90))
                .map(|(&x, (&lo, &hi))| (x, lo, hi))
                .collect(),
        );
        ser
    };
    let mut cp = Panel::new(
        "Forward residual of every module call",
        "segment",
        "||z_t - z_(t-1)|| / ||z_(t-1)||",
    );
    cp.y_scale = Scale::Log10;
    cp.series = vec![
        spread_series("H calls (mean, p10-p90)", &hx, &c.residual_h),
        spread_series("L calls (mean, p10-p90)", &lx, &c.residual_l),
    ];
    cp.vlines = vec![(own, own_label.clone())];
    let conv_fig = Figure {
        name: "analyze-convergence".into(),
        caption: format!(
            "Residual of every H and L call across a {}-segment rollout ({} H x {} L cycles per \
             segment), mean and 10th-90th percentile over {} puzzles.",
            a.max_segments, c.h_cycles, c.l_cycles, a.examples
        ),
        panels: vec![cp],
    };

    let pca_panel = |title: &str, p: &super::Pca| {
        let pc = |i: usize| p.explained.get(i).map_or(0.0, |e| e * 100.0);
        let mut panel = Panel::new(
            title,
            &format!("PC1 ({:.0}%)", pc(0)),
            &format!("PC2 ({:.0}%)", pc(1)),
        );
        panel.series = p
            .trajectories
            .iter()
            .map(|t| {
                Series::new(
                    "",
                    t.iter().map(|q| (q[0], q[1])).collect(),
                    Kind::LinePoints,
                )
            })
            .collect();
        panel
    };
    let pca_fig = Figure {
        name: "analyze-pca".into(),
        caption: format!("2-D PCA of the trajectories: {}.", a.convergence.pca_points),
        panels: vec![
            pca_panel("z_H trajectories", &c.pca_h),
            pca_panel("z_L trajectories", &c.pca_l),
        ],
    };

    // adaptive compute
    let ad = &a.adaptive;
    let rows = &ad.by_difficulty;
    let mut hp = Panel::new(
        "Segments used under learned halting",
        &ad.difficulty_measure,
        "mean segments",
    );
    hp.y_from_zero = true;
    hp.series = vec![
        Series::new(
            &format!("capped at M_max = {}", a.config.halt_max_steps),
            rows.iter()
                .map(|r| (r.difficulty as f64, r.mean_segments))
                .collect(),
            Kind::LinePoints,
        ),
        Series::new(
            &format!("capped at {}", a.max_segments),
            rows.iter()
                .map(|r| (r.difficulty as f64, r.mean_segments_uncapped))
                .collect(),
            Kind::LinePoints,
        ),
    ];
    let mut hq = Panel::new("Accuracy by difficulty", &ad.difficulty_measure, "accuracy");
    hq.y_from_zero = true;
    hq.series = vec![Series::new(
        "learned halting, M_max",
        rows.iter()
            .map(|r| (r.difficulty as f64, r.accuracy))
            .collect(),
        Kind::LinePoints,
    )];
    let halt_fig = Figure {
        name: "analyze-halting".into(),
        caption: format!(
            "Segments used (first segment with q_halt > q_continue, else the cap) and accuracy \
             against puzzle difficulty ({}).",
            ad.difficulty_measure
        ),
        panels: vec![hp, hq],
    };

    let budget_series = |name: &str, v: &[f64]| counted(name, &ad.budgets, v);
    let mut sc = log2_panel(
        SCALING_LABELS,
        vec![
            budget_series("fixed budget", &ad.accuracy_fixed),
            budget_series("learned halting", &ad.accuracy_learned),
        ],
    );
    sc.vlines = vec![(own, own_label)];
    let scale_fig = Figure {
        name: "analyze-scaling".into(),
        caption: format!(
            "Accuracy ({}) against the inference budget, every puzzle running the whole budget \
             (fixed) or stopping at its first q_halt > q_continue (learned).",
            ad.correct_means
        ),
        panels: vec![sc],
    };
    Ok(vec![
        pr_fig, sat_fig, conv_fig, pca_fig, halt_fig, scale_fig,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_renders_to_svg_with_its_text_and_to_png() {
        let mut p = Panel::new("Title here", "x axis", "y axis");
        p.y_scale = Scale::Log10;
        let mut s = Series::new(
            "a series",
            vec![(1.0, 0.1), (2.0, 0.01), (3.0, 0.0)],
            Kind::Line,
        );
        s.band = Some(vec![(1.0, 0.05, 0.2), (2.0, 0.005, 0.02)]);
        p.series.push(s);
        p.vlines.push((2.0, "marker".into()));
        let f = Figure {
            name: "t".into(),
            caption: String::new(),
            panels: vec![p],
        };
        let svg = f.svg().unwrap();
        for text in ["Title here", "x axis", "a series", "marker", "<svg"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let dir = tempfile::tempdir().unwrap();
        f.write(dir.path()).unwrap();
        let png = std::fs::read(dir.path().join("t.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(dir.path().join("t.svg").exists());
    }

    #[test]
    fn log_axes_label_whole_powers_only() {
        assert_eq!(Scale::Log2.label(3.0), "8");
        assert_eq!(Scale::Log2.label(1.5), "");
        assert_eq!(Scale::Log10.label(-2.0), "1e-2");
        assert_eq!(Scale::Linear.label(0.25), "0.25");
    }

    #[test]
    fn call_positions_follow_the_call_order() {
        // 2 segments of 1 H cycle x 2 L cycles: L, L, H per segment
        let (h, l) = call_positions(2, 1, 2);
        let thirds = |v: &[f64]| {
            v.iter()
                .map(|x| (x * 3.0).round() as i32)
                .collect::<Vec<_>>()
        };
        assert_eq!(thirds(&l), [1, 2, 4, 5]);
        assert_eq!(thirds(&h), [3, 6]);
    }
}
