//! `grace bench map`: concurrent hash maps with `u64` keys and values, head to head, measured
//! by `grace_bench`'s `map` module (dashmap, papaya, scc, `RwLock<HashMap>`, and grace's own
//! map as one more entry of its list).
//!
//! Two row sets:
//!
//! * **throughput**: operations per second (median of three timed rounds, with the slowest and
//!   fastest) and the child's peak RSS, for each key range (`--keys`, default 1,000 and
//!   1,000,000; prefilled to half), read share (`--reads`, default 100, 99, 90 and 50 percent;
//!   the rest half inserts, half removes), key distribution (`--dist`, default uniform and
//!   Zipf with s = 0.99) and thread count (`--threads`, default 1 and 2);
//! * **resize**: each map starts at a capacity of 16 and one writer inserts `--resize-keys`
//!   keys (default 1,000,000; 0 leaves the set out) while readers (the largest thread count)
//!   time every 64th lookup: the p99 while the map doubles against the p99 after.
//!
//! Each measurement runs in a child process of its own ([`crate::child`]: `grace bench map
//! --child IMPL ...`, with `--resize-child` for a resize row), so that its peak RSS (`VmHWM`)
//! is its own; if that fails it is made in this process and its note says so (no RSS then).
//!
//! The targets are judged on grace's row against the best peer at the same row (ops/s), the
//! leanest peer (peak RSS) and its own steady state (resize p99): see
//! `grace_bench::map_checks`. Until grace's map is in the list, every target reads
//! "not measured". `--plot FILE` writes an SVG of ops/s against the read share, one line per
//! map.

use crate::bench::{utc_now, Machine};
use crate::ui::{self, Align, Table};
use grace_bench::map::MAP_GRACE;
use grace_bench::{Dist, MapCheck, MapParams, MapResult, ResizeParams, ResizeResult};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What to measure.
#[derive(Clone, Debug)]
pub struct MapOptions {
    /// Worker thread counts, in order.
    pub threads: Vec<usize>,
    /// Key ranges, in order.
    pub keys: Vec<u64>,
    /// Read shares in percent, in order.
    pub reads: Vec<u32>,
    /// Key distributions, in order.
    pub dists: Vec<Dist>,
    /// Keys the resize rows insert; 0 leaves them out.
    pub resize_keys: u64,
    /// How long each round runs (throughput), or the steady phase lasts (resize).
    pub duration: Duration,
    /// Where to write the SVG plot, if anywhere.
    pub plot: Option<PathBuf>,
}

impl MapOptions {
    /// Every throughput measurement's parameters, in run order.
    fn params(&self) -> Vec<MapParams> {
        let mut out = Vec::new();
        for &keys in &self.keys {
            for &dist in &self.dists {
                for &read_pct in &self.reads {
                    for &threads in &self.threads {
                        out.push(MapParams {
                            threads,
                            keys,
                            read_pct,
                            dist,
                            duration: self.duration,
                        });
                    }
                }
            }
        }
        out
    }

    /// The resize measurement's parameters, unless left out.
    fn resize(&self) -> Option<ResizeParams> {
        (self.resize_keys > 0).then(|| ResizeParams {
            readers: self.threads.iter().copied().max().unwrap_or(1),
            keys: self.resize_keys,
            duration: self.duration,
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_secs_f64() * 1e3)
}

/// Measure `name` with `p` in a child process, or here if that fails.
pub fn run_isolated(name: &str, p: &MapParams) -> MapResult {
    let threads = p.threads.to_string();
    let keys = p.keys.to_string();
    let reads = p.read_pct.to_string();
    let dist = p.dist.to_string();
    let duration = ms(p.duration);
    crate::child::measure(
        &[
            "bench",
            "map",
            "--child",
            name,
            "--threads",
            &threads,
            "--keys",
            &keys,
            "--reads",
            &reads,
            "--dist",
            &dist,
            "--duration",
            &duration,
        ],
        || grace_bench::run_map_one(name, p, false),
    )
}

/// Measure the resize latency of `name` with `p` in a child process, or here if that fails.
pub fn run_resize_isolated(name: &str, p: &ResizeParams) -> ResizeResult {
    let readers = p.readers.to_string();
    let keys = p.keys.to_string();
    let duration = ms(p.duration);
    crate::child::measure(
        &[
            "bench",
            "map",
            "--child",
            name,
            "--resize-child",
            "--threads",
            &readers,
            "--resize-keys",
            &keys,
            "--duration",
            &duration,
        ],
        || grace_bench::run_resize_one(name, p, false),
    )
}

/// The hidden child mode: one measurement (a throughput row, or with `resize` a resize row,
/// from the first thread count, key range, read share and distribution of `opts`), its
/// result as JSON on standard output.
pub fn child_main(name: &str, opts: &MapOptions, resize: bool) -> ExitCode {
    if resize {
        let p = ResizeParams {
            readers: opts.threads[0],
            keys: opts.resize_keys,
            duration: opts.duration,
        };
        crate::child::answer("map resize", &grace_bench::run_resize_one(name, &p, true))
    } else {
        let p = opts.params()[0];
        crate::child::answer("map", &grace_bench::run_map_one(name, &p, true))
    }
}

/// Every map for every parameter set, then the resize rows, each in its own process, with a
/// progress bar unless `show` is false.
pub fn run(opts: &MapOptions, show: bool) -> (Vec<MapResult>, Vec<ResizeResult>) {
    let impls = grace_bench::map_impls();
    let params = opts.params();
    let resize = opts.resize();
    let steps = (impls.len() * (params.len() + usize::from(resize.is_some()))) as u64;
    let bar = ui::bar(steps, "bench map", show);
    let mut out = Vec::new();
    let mut done = 0u64;
    for p in &params {
        for name in &impls {
            done += 1;
            bar.set_message(format!(
                "{done}/{steps} map {name} keys={} reads={}% {} t={}",
                p.keys, p.read_pct, p.dist, p.threads
            ));
            out.push(run_isolated(name, p));
            bar.set_position(done);
        }
    }
    let mut resized = Vec::new();
    if let Some(p) = resize {
        for name in &impls {
            done += 1;
            bar.set_message(format!("{done}/{steps} map resize {name} keys={}", p.keys));
            resized.push(run_resize_isolated(name, &p));
            bar.set_position(done);
        }
    }
    bar.finish_and_clear();
    (out, resized)
}

/// The best peer's row (most ops/s, grace's excluded) at `r`'s keys, reads, dist and threads.
fn best_peer<'a>(results: &'a [MapResult], r: &MapResult) -> Option<&'a MapResult> {
    results
        .iter()
        .filter(|c| {
            c.impl_name != MAP_GRACE
                && (c.keys, c.read_pct, c.dist, c.threads)
                    == (r.keys, r.read_pct, r.dist, r.threads)
                && c.is_measured()
        })
        .max_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s))
}

/// `r`'s ops/s over the best peer's at the same row (above 1: faster).
pub fn ops_vs_best(results: &[MapResult], r: &MapResult) -> Option<f64> {
    let b = best_peer(results, r)?;
    r.is_measured().then(|| r.ops_per_s / b.ops_per_s)
}

fn note_mark<'a>(notes: &mut Vec<&'a str>, note: &'a Option<String>) -> String {
    match note {
        Some(n) => {
            let i = notes
                .iter()
                .position(|m| *m == n.as_str())
                .unwrap_or_else(|| {
                    notes.push(n);
                    notes.len() - 1
                });
            format!("[{}]", i + 1)
        }
        None => String::new(),
    }
}

fn rss_cell(r: Option<u64>) -> String {
    r.map_or("-".into(), ui::bytes)
}

fn load_cell(l: Option<f64>) -> String {
    l.map_or_else(|| "-".into(), |l| format!("{l:.2}"))
}

fn ns_cell(x: f64) -> String {
    if x.is_finite() {
        ui::ns(x)
    } else {
        "-".into()
    }
}

/// The verdict column of a check.
fn verdict(c: &MapCheck) -> &'static str {
    match c.met() {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

/// The tables for a person: throughput, resize, then the targets.
pub fn table(results: &[MapResult], resize: &[ResizeResult]) -> String {
    let mut notes: Vec<&str> = Vec::new();
    let mut o = String::new();
    if !results.is_empty() {
        let mut t = Table::new(&[
            ("keys", Align::Right),
            ("dist", Align::Left),
            ("reads", Align::Right),
            ("threads", Align::Right),
            ("map", Align::Left),
            ("ops/s", Align::Right),
            ("min-max", Align::Right),
            ("vs best peer", Align::Right),
            ("peak RSS", Align::Right),
            ("load", Align::Right),
            ("", Align::Left),
        ]);
        for r in results {
            let mark = note_mark(&mut notes, &r.note);
            let measured = r.is_measured();
            t.row(vec![
                ui::count(r.keys),
                r.dist.to_string(),
                format!("{}%", r.read_pct),
                r.threads.to_string(),
                r.impl_name.clone(),
                ui::si(r.ops_per_s),
                if measured {
                    format!("{}-{}", ui::si(r.ops_per_s_min), ui::si(r.ops_per_s_max))
                } else {
                    "-".into()
                },
                ui::ratio(ops_vs_best(results, r)),
                rss_cell(r.peak_rss),
                load_cell(r.load_avg),
                mark,
            ]);
        }
        let secs = results.first().map_or(0.0, |r| r.duration_s);
        o.push_str(&format!(
            "bench map: get/insert/remove of u64 keys (prefilled to half the key range), \
             {secs:.2} s per round, one process per row\n"
        ));
        o.push_str(&t.render(2));
    }
    if !resize.is_empty() {
        let mut t = Table::new(&[
            ("keys", Align::Right),
            ("readers", Align::Right),
            ("map", Align::Left),
            ("insert time", Align::Right),
            ("p99 during", Align::Right),
            ("p99 steady", Align::Right),
            ("during/steady", Align::Right),
            ("max during", Align::Right),
            ("samples", Align::Right),
            ("peak RSS", Align::Right),
            ("load", Align::Right),
            ("", Align::Left),
        ]);
        for r in resize {
            let mark = note_mark(&mut notes, &r.note);
            t.row(vec![
                ui::count(r.keys),
                r.readers.to_string(),
                r.impl_name.clone(),
                format!("{:.3} s", r.insert_s),
                ns_cell(r.p99_during_ns),
                ns_cell(r.p99_steady_ns),
                ui::ratio(r.ratio()),
                ns_cell(r.max_during_ns),
                format!("{}/{}", r.samples_during, r.samples_steady),
                rss_cell(r.peak_rss),
                load_cell(r.load_avg),
                mark,
            ]);
        }
        o.push_str(
            "bench map resize: from a capacity of 16, one writer inserts the keys while readers \
             time every 64th lookup\n",
        );
        o.push_str(&t.render(2));
    }
    let checks = grace_bench::map_checks(results, resize);
    if !checks.is_empty() {
        let mut t = Table::new(&[
            ("target", Align::Left),
            ("against", Align::Left),
            ("ratio", Align::Right),
            ("bound", Align::Right),
            ("", Align::Left),
        ]);
        for c in &checks {
            t.row(vec![
                c.what.clone(),
                c.against.clone(),
                ui::ratio(c.ratio.is_finite().then_some(c.ratio)),
                format!("{} {:.2}x", if c.at_least { ">=" } else { "<=" }, c.bound),
                verdict(c).into(),
            ]);
        }
        o.push_str(&format!(
            "targets: grace's row ({MAP_GRACE}) against the best peer at the same row, the \
             leanest peer's RSS, and its own steady-state p99\n"
        ));
        o.push_str(&t.render(2));
        if !results.iter().any(|r| r.impl_name == MAP_GRACE) {
            o.push_str(&format!(
                "  no {MAP_GRACE} row in this build: every target is not measured\n"
            ));
        }
    }
    for (i, n) in notes.iter().enumerate() {
        o.push_str(&format!("  [{}] {n}\n", i + 1));
    }
    o.push_str(
        "  ops/s = the median of 3 timed rounds, all threads; min-max = the slowest and fastest \
         round; vs best peer = the row's ops/s over the fastest other map's at the same row \
         (grace excluded); peak RSS = the child process's VmHWM\n",
    );
    o.push_str(&format!(
        "  load: the 1-minute load average when the row was taken ({} CPUs): near or above the \
         CPU count, differences are noise\n",
        grace::sys::num_cpus()
    ));
    o
}

/// One throughput row of the JSON output: the agreed fields, then the map's own.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "impl")]
    impl_name: &'a str,
    threads: usize,
    /// Time per operation, all threads together (1e9 / ops_per_s).
    ns_per_op: f64,
    ops_per_s: f64,
    note: Option<&'a str>,
    keys: u64,
    read_pct: u32,
    dist: Dist,
    ops_per_s_min: f64,
    ops_per_s_max: f64,
    /// ops_per_s over the best peer's (grace excluded) at the same row.
    ops_vs_best_peer: Option<f64>,
    peak_rss: Option<u64>,
    duration_s: f64,
    rounds: usize,
    ops: u64,
    isolated: bool,
    load_avg: Option<f64>,
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    what: &'a str,
    against: &'a str,
    ratio: Option<f64>,
    bound: f64,
    at_least: bool,
    met: Option<bool>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    suite: &'static str,
    results: Vec<JsonRow<'a>>,
    resize: &'a [ResizeResult],
    targets: Vec<JsonCheck<'a>>,
    machine: Machine,
    date: String,
    duration_ms: u64,
}

/// The `--json` object.
pub fn json(results: &[MapResult], resize: &[ResizeResult], opts: &MapOptions) -> String {
    let checks = grace_bench::map_checks(results, resize);
    let out = JsonOut {
        suite: "map",
        results: results
            .iter()
            .map(|r| JsonRow {
                impl_name: &r.impl_name,
                threads: r.threads,
                ns_per_op: 1e9 / r.ops_per_s,
                ops_per_s: r.ops_per_s,
                note: r.note.as_deref(),
                keys: r.keys,
                read_pct: r.read_pct,
                dist: r.dist,
                ops_per_s_min: r.ops_per_s_min,
                ops_per_s_max: r.ops_per_s_max,
                ops_vs_best_peer: ops_vs_best(results, r),
                peak_rss: r.peak_rss,
                duration_s: r.duration_s,
                rounds: r.rounds,
                ops: r.ops,
                isolated: r.isolated,
                load_avg: r.load_avg,
            })
            .collect(),
        resize,
        targets: checks
            .iter()
            .map(|c| JsonCheck {
                what: &c.what,
                against: &c.against,
                ratio: c.ratio.is_finite().then_some(c.ratio),
                bound: c.bound,
                at_least: c.at_least,
                met: c.met(),
            })
            .collect(),
        machine: Machine::this(),
        date: utc_now(),
        duration_ms: opts.duration.as_millis() as u64,
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "null".into())
}

/// The plot: ops/s against the read share, one line per map, at the first key range and
/// distribution and the largest thread count measured.
pub fn chart(results: &[MapResult]) -> crate::plot::Chart {
    let first = results.first();
    let keys = first.map_or(0, |r| r.keys);
    let dist = first.map_or(Dist::Uniform, |r| r.dist);
    let threads = results.iter().map(|r| r.threads).max().unwrap_or(1);
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        if !names.contains(&r.impl_name.as_str()) {
            names.push(&r.impl_name);
        }
    }
    let series = names
        .iter()
        .map(|name| {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| {
                    r.impl_name == *name
                        && (r.keys, r.dist, r.threads) == (keys, dist, threads)
                        && r.is_measured()
                })
                .map(|r| (f64::from(r.read_pct), r.ops_per_s))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::plot::Series {
                label: name.to_string(),
                points,
            }
        })
        .collect();
    crate::plot::Chart {
        title: format!(
            "grace bench map: ops/s by read share ({} keys, {dist}, {threads} threads)",
            ui::count(keys)
        ),
        x_label: "reads (%)".into(),
        y_label: "operations per second".into(),
        series,
        reference: None,
    }
}

/// `grace bench map`: run it, print the tables (or the JSON object), write the plot.
pub fn main(opts: &MapOptions, json_out: bool) -> ExitCode {
    let (results, resize) = run(opts, !json_out);
    if json_out {
        ui::out(&format!("{}\n", json(&results, &resize, opts)));
    } else {
        ui::out(&table(&results, &resize));
    }
    if let Some(path) = &opts.plot {
        if let Err(e) = std::fs::write(path, crate::plot::svg(&chart(&results))) {
            eprintln!("grace: cannot write the plot to {}: {e}", path.display());
            return ExitCode::from(1);
        }
        if !json_out {
            ui::out(&format!("plot written to {}\n", path.display()));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, reads: u32, rate: f64) -> MapResult {
        let p = MapParams {
            threads: 1,
            keys: 1000,
            read_pct: reads,
            dist: Dist::Zipf,
            duration: Duration::from_millis(1),
        };
        let mut r = MapResult::failed(name, &p, String::new());
        r.note = None;
        (r.ops_per_s, r.ops_per_s_min, r.ops_per_s_max) = (rate, rate * 0.9, rate * 1.1);
        r.peak_rss = Some(10 << 20);
        r
    }

    #[test]
    fn rows_are_compared_with_the_best_peer_and_plotted() {
        let rs = vec![
            result("dashmap", 90, 2e6),
            result("papaya", 90, 4e6),
            result("papaya", 50, 3e6),
        ];
        assert_eq!(ops_vs_best(&rs, &rs[0]), Some(0.5));
        let t = table(&rs, &[]);
        assert!(t.contains("0.50x") && t.contains("not measured"), "{t}");
        let opts = MapOptions {
            threads: vec![1],
            keys: vec![1000],
            reads: vec![90],
            dists: vec![Dist::Zipf],
            resize_keys: 0,
            duration: Duration::from_millis(1),
            plot: None,
        };
        let v: serde_json::Value = serde_json::from_str(&json(&rs, &[], &opts)).unwrap();
        assert_eq!(v["suite"], "map");
        assert_eq!(v["results"][1]["ops_vs_best_peer"], 1.0);
        assert_eq!(v["results"][0]["dist"], "zipf");
        assert!(v["targets"][0]["met"].is_null());
        let c = chart(&rs);
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[1].points, [(50.0, 3e6), (90.0, 4e6)]);
        assert!(crate::plot::svg(&c).contains("papaya"));
    }
}
