//! Terminal output: progress bars, plain-text tables and number formatting.
//!
//! Everything the other modules show a person goes through here, so that the rules hold in
//! one place: progress bars draw on standard error only (standard output stays clean for
//! `--json` and for pipes), they are hidden entirely when asked to be or when standard error
//! is not a terminal, and results printed on standard output never panic on a closed pipe.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// A progress bar of `len` steps on standard error, or a hidden one when `show` is false or
/// standard error is not a terminal. `prefix` names the task (`torture rcu`, `bench read`).
pub fn bar(len: u64, prefix: &str, show: bool) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    // The template is a constant; should indicatif ever reject it, keep the default style.
    // `wide_msg` is cut to the terminal's width, so the line never wraps (a wrapped line
    // leaves a trail of copies behind as the bar redraws).
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>12.bold} [{bar:24.cyan/blue}] {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

/// Write `text` to standard output. A closed pipe (`grace ... | head`) ends the output
/// quietly instead of panicking as `println!` would.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// A rate or count with an SI suffix: `950`, `12.3 k`, `4.56 M`, `1.20 G`.
pub fn si(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        return format!("{x:.0}");
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Nanoseconds per operation with sensible precision: `0.62`, `14.3`, `1,234`; `-` for a
/// figure that was not measured.
pub fn ns(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        "-".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 1000.0 {
        format!("{x:.1}")
    } else {
        count(x.round() as u64)
    }
}

/// A byte count with a binary suffix: `512 B`, `12.3 KiB`, `4.56 MiB`, `1.20 GiB`.
pub fn bytes(n: u64) -> String {
    let x = n as f64;
    let (v, unit) = if x >= (1u64 << 30) as f64 {
        (x / (1u64 << 30) as f64, "GiB")
    } else if x >= (1u64 << 20) as f64 {
        (x / (1u64 << 20) as f64, "MiB")
    } else if x >= 1024.0 {
        (x / 1024.0, "KiB")
    } else {
        return format!("{n} B");
    };
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// A ratio as `0.52x`; `-` when it could not be computed.
pub fn ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => {
            if r >= 100.0 {
                format!("{r:.0}x")
            } else {
                format!("{r:.2}x")
            }
        }
        _ => "-".into(),
    }
}

/// Column alignment in a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right (text).
    Left,
    /// Pad on the left (numbers).
    Right,
}

/// A plain-text table: a header row, a rule, then rows, columns separated by two spaces.
#[derive(Debug, Default)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns.iter().map(|&(h, a)| (h.to_string(), a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row; missing cells are blank, extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, each line indented by `indent` spaces and ending in a newline.
    pub fn render(&self, indent: usize) -> String {
        let n = self.columns.len();
        let mut width: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let pad = " ".repeat(indent);
        let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
            let mut s = pad.clone();
            for (i, cell) in cells.take(n).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let fill = width[i].saturating_sub(cell.chars().count());
                match self.columns[i].1 {
                    Align::Left => {
                        s.push_str(cell);
                        s.push_str(&" ".repeat(fill));
                    }
                    Align::Right => {
                        s.push_str(&" ".repeat(fill));
                        s.push_str(cell);
                    }
                }
            }
            let mut s = s.trim_end().to_string();
            s.push('\n');
            s
        };
        let mut out = line(&mut self.columns.iter().map(|(h, _)| h.as_str()));
        let total = width.iter().sum::<usize>() + 2 * n.saturating_sub(1);
        out.push_str(&pad);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            let blank = std::iter::repeat("");
            out.push_str(&line(&mut row.iter().map(String::as_str).chain(blank)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn figures_are_formatted() {
        assert_eq!(ns(0.618), "0.62");
        assert_eq!(ns(14.33), "14.3");
        assert_eq!(ns(12345.4), "12,345");
        assert_eq!(ns(f64::NAN), "-");
        assert_eq!(si(1.5e6), "1.50 M");
        assert_eq!(ratio(Some(0.523)), "0.52x");
        assert_eq!(ratio(None), "-");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("impl", Align::Left), ("ns/op", Align::Right)]);
        t.row(vec!["grace-rcu".into(), "1.5".into()]);
        t.row(vec!["x".into(), "12345".into()]);
        let s = t.render(0);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "impl       ns/op");
        assert_eq!(lines[2], "grace-rcu    1.5");
        assert_eq!(lines[3], "x          12345");
    }
}
