//! A line chart as a stand-alone SVG file, written by hand (no plotting dependency): one
//! polyline per series over shared axes, with ticks, axis labels, a title, a legend and an
//! optional dashed horizontal reference line. `grace bench flood --plot` draws the pending
//! bytes of every implementation over time with it.

use std::fmt::Write;

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend's label.
    pub label: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// What to draw.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The title above the plot area.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// A dashed horizontal line at this y, with its label.
    pub reference: Option<(f64, String)>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Distinct line colours (the Tableau 10 palette, then darker shades), reused cyclically.
const COLOURS: [&str; 14] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f3b5a", "#8c4a00", "#2f6b2a", "#6b2f5c",
];

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `ticks` steps over `range`.
fn tick_step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// `v` for a tick label: no trailing zeros, at most three decimals.
fn label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Escape text for SVG character data and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document of `chart`.
pub fn svg(chart: &Chart) -> String {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite))
    };
    let x_max = all().map(|p| p.0).fold(0.0, f64::max);
    let mut y_max = all().map(|p| p.1).fold(0.0, f64::max);
    if let Some((r, _)) = &chart.reference {
        y_max = y_max.max(*r);
    }
    let (x_step, y_step) = (tick_step(x_max, 10.0), tick_step(y_max, 6.0));
    // Axes end on a tick at or above the largest value (an empty chart gets one step).
    let x_end = ((x_max / x_step).ceil() * x_step).max(x_step);
    let y_end = ((y_max / y_step).ceil() * y_step).max(y_step);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / x_end * pw;
    let py = |y: f64| TOP + ph - y / y_end * ph;

    let mut o = String::new();
    // Writing to a String cannot fail; the results are ignored throughout.
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        LEFT + pw / 2.0,
        escape(&chart.title)
    );
    // Grid and ticks.
    let mut x = 0.0;
    while x <= x_end + x_step / 2.0 {
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#e0e0e0"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"##,
            px(x),
            TOP,
            TOP + ph,
            TOP + ph + 18.0,
            label(x)
        );
        x += x_step;
    }
    let mut y = 0.0;
    while y <= y_end + y_step / 2.0 {
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#e0e0e0"/><text x="{3:.1}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            LEFT,
            py(y),
            LEFT + pw,
            LEFT - 8.0,
            py(y) + 4.0,
            label(y)
        );
        y += y_step;
    }
    // Axes and their labels.
    let _ = writeln!(
        o,
        r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0:.1}" stroke="black"/>"#,
        TOP + ph,
        LEFT + pw
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 15.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        o,
        r#"<text x="20" y="{0:.1}" text-anchor="middle" transform="rotate(-90 20 {0:.1})">{1}</text>"#,
        TOP + ph / 2.0,
        escape(&chart.y_label)
    );
    if let Some((r, text)) = &chart.reference {
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{1:.1}" y="{2:.1}" text-anchor="end" fill="#555">{3}</text>"##,
            py(*r),
            LEFT + pw,
            py(*r) - 4.0,
            escape(text)
        );
    }
    // The lines, then the legend.
    for (i, s) in chart.series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .filter(finite)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            COLOURS[i % COLOURS.len()],
            points.join(" "),
            escape(&s.label)
        );
    }
    let lx = LEFT + pw + 20.0;
    for (i, s) in chart.series.iter().enumerate() {
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            COLOURS[i % COLOURS.len()],
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(tick_step(10.0, 10.0), 1.0);
        assert_eq!(tick_step(9.3, 6.0), 2.0);
        assert_eq!(tick_step(0.3, 10.0), 0.05);
        assert_eq!(tick_step(0.0, 6.0), 1.0);
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(3.0), "3");
    }

    #[test]
    fn the_svg_has_a_line_per_series_axes_and_a_legend() {
        let chart = Chart {
            title: "a & b".into(),
            x_label: "s".into(),
            y_label: "MiB".into(),
            series: vec![
                Series {
                    label: "one".into(),
                    points: vec![(0.0, 0.0), (1.0, 2.5), (2.0, f64::NAN)],
                },
                Series {
                    label: "<two>".into(),
                    points: vec![],
                },
            ],
            reference: Some((4.0, "budget".into())),
        };
        let s = svg(&chart);
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("a &amp; b") && s.contains("&lt;two&gt;"));
        assert!(s.contains("budget") && s.contains("stroke-dasharray"));
        assert!(!s.contains("NaN"));
    }
}
