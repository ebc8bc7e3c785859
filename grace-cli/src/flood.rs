//! `grace bench flood`: every flooding thread frees 64-byte objects through a deferral API as
//! fast as it can for `--duration` (10 s by default) beside `--readers` reader threads (1 by
//! default), for grace's `kvfree`, a `Pending` with `Process::free()`, liburcu `call_rcu`,
//! crossbeam-epoch and seize; objects per second, peak bytes pending and peak RSS. The
//! measuring is `grace_bench::run_flood_one`'s (see `grace_bench::flood` for what each figure
//! is).
//!
//! # One process per implementation
//!
//! Peak RSS (`VmHWM`) is a property of a process, and the allocator keeps memory it was given
//! back, so measured in one process the second implementation would inherit the first one's
//! high-water mark and heap. Each run is therefore made by a child process ([`crate::child`]):
//! this binary re-executed as `grace bench flood --child IMPL --threads N --readers R
//! --duration D`, which runs that one flood and prints its result as one JSON object. If
//! the child cannot be started or its answer cannot be read, the run is made in this process
//! instead (which resets `VmHWM` first) and its note says so.
//!
//! # The memory-pressure experiment (`--budget SIZE`)
//!
//! With `--budget`, the rows are `grace_bench::pressure_impls()`: grace's `kvfree`, `call` on
//! RCU (`call_sized`), `call` on an SRCU domain and a `Pending` with a closure, each without
//! and with the budget (`+budget` rows: `grace::pressure::set_budget` in the child), then the
//! peers; every row has a reader that sleeps 50 ms inside its section once a second, and
//! reports how long after the flood its pending memory took to fall under 1 MiB. Without
//! `--budget` the rows and figures are the plain flood's.
//!
//! `--plot [PATH]` (default `flood.svg`) also writes an SVG chart of every row's pending bytes
//! over time (see [`crate::plot`]), with the budget as a dashed line.
//!
//! The output: a table for a person, or (`--json`) the object other tools parse, with the
//! agreed fields of every suite (`suite`, `results[]` with `impl`, `threads`, `ns_per_op`,
//! `ops_per_s`, `note`, then `machine` and `date`) and the flood's own fields in each result.

use crate::bench::{print_liburcu_notice, utc_now, Machine};
use crate::ui::{self, Align, Table};
use grace_bench::FloodResult;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The default flood length per implementation and thread count.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The default number of reader threads beside the flooders.
pub const DEFAULT_READERS: usize = 1;

/// What to flood with.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// Flooding thread counts, in order.
    pub threads: Vec<usize>,
    /// Reader threads beside the flooders.
    pub readers: usize,
    /// How long each flood runs.
    pub duration: Duration,
    /// `--budget`: run the memory-pressure set with this budget, in bytes (module docs).
    pub budget: Option<u64>,
    /// `--plot`: where to write the SVG chart of pending bytes over time.
    pub plot: Option<PathBuf>,
    /// `--impls`: only these rows (empty: all of the set).
    pub impls: Vec<String>,
}

impl FloodOptions {
    /// What each run of these options is given.
    fn setup(&self) -> grace_bench::FloodSetup {
        match self.budget {
            Some(b) => grace_bench::FloodSetup::pressure(b),
            None => grace_bench::FloodSetup::default(),
        }
    }
}

/// The line a flood child writes to standard error before its `grace::report()`.
const REPORT_MARK: &str = "--- grace report ---";

/// Run one flood in a child process (see the module docs), or here if that fails. Also
/// returns the child's `grace::report()` text for grace's implementations.
pub fn run_isolated(
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    budget: Option<u64>,
) -> (FloodResult, Option<String>) {
    match child(name, threads, readers, duration, budget) {
        Ok((mut r, report)) => {
            r.isolated = true;
            (r, report)
        }
        Err(why) => {
            let setup = match budget {
                Some(b) => grace_bench::FloodSetup::pressure(b),
                None => grace_bench::FloodSetup::default(),
            };
            let mut r = grace_bench::run_flood_with(name, threads, readers, duration, &setup);
            let note = format!("run in the parent process ({why}): peak RSS includes earlier runs");
            r.note = Some(match r.note.take() {
                Some(n) => format!("{note}; {n}"),
                None => note,
            });
            let report = name
                .starts_with("grace")
                .then(|| grace::report().to_string());
            (r, report)
        }
    }
}

/// Re-execute this binary for one flood and read its answer, and the child's report.
fn child(
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    budget: Option<u64>,
) -> Result<(FloodResult, Option<String>), String> {
    let mut args: Vec<String> = [
        "bench",
        "flood",
        "--child",
        name,
        "--threads",
        &threads.to_string(),
        "--readers",
        &readers.to_string(),
        "--duration",
        &format!("{}ms", duration.as_millis().max(1)),
    ]
    .map(String::from)
    .to_vec();
    if let Some(b) = budget {
        args.extend(["--budget".to_string(), b.to_string()]);
    }
    let (r, err) = crate::child::run_with_stderr(&args)?;
    let report = err
        .split_once(REPORT_MARK)
        .map(|(_, rest)| rest.trim_start_matches('\n').to_string());
    Ok((r, report))
}

/// The hidden child mode: one flood, its result as JSON on standard output.
pub fn child_main(name: &str, opts: &FloodOptions) -> ExitCode {
    let r = grace_bench::run_flood_with(
        name,
        opts.threads[0],
        opts.readers,
        opts.duration,
        &opts.setup(),
    );
    if name.starts_with("grace") {
        // For the parent, which prints it after the table (standard output is the answer).
        eprint!("{REPORT_MARK}\n{}", grace::report());
    }
    crate::child::answer("flood", &r)
}

/// Every implementation at every thread count, each in its own process, with a progress bar
/// unless `show` is false; also each grace run's `grace::report()`, headed.
pub fn run(opts: &FloodOptions, show: bool) -> (Vec<FloodResult>, Vec<String>) {
    let impls: Vec<String> = if !opts.impls.is_empty() {
        opts.impls.clone()
    } else {
        match opts.budget {
            Some(_) => grace_bench::pressure_impls(),
            None => grace_bench::flood_impls()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    };
    let steps = (impls.len() * opts.threads.len()) as u64;
    let bar = ui::bar(steps, "bench flood", show);
    let mut out = Vec::new();
    let mut reports = Vec::new();
    for &threads in &opts.threads {
        for name in &impls {
            bar.set_message(format!(
                "{}/{steps} flood {name} t={threads} ({:.0} s each)",
                out.len() + 1,
                opts.duration.as_secs_f64()
            ));
            let (r, report) = run_isolated(name, threads, opts.readers, opts.duration, opts.budget);
            out.push(r);
            if let Some(text) = report {
                reports.push(format!("after flood {name} t={threads}: {text}"));
            }
            bar.set_position(out.len() as u64);
        }
    }
    bar.finish_and_clear();
    (out, reports)
}

/// grace-kvfree's time per object divided by `r`'s (that is, `r`'s objects/s over grace's),
/// at the same thread count: below 1 grace is faster. `None` when either was not measured.
pub fn ratio_to_grace(results: &[FloodResult], r: &FloodResult) -> Option<f64> {
    let grace = results
        .iter()
        .find(|g| g.impl_name == "grace-kvfree" && g.threads == r.threads && g.is_measured())?;
    r.is_measured()
        .then(|| r.objects_per_s / grace.objects_per_s)
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), ui::bytes)
}

/// The table for a person.
pub fn table(results: &[FloodResult]) -> String {
    // The memory-pressure runs measured the recovery: one more column.
    let pressure = results.iter().any(|r| r.recovery_limit_s > 0.0);
    let mut columns = vec![
        ("impl", Align::Left),
        ("threads", Align::Right),
        ("objects/s", Align::Right),
        ("grace/peer", Align::Right),
        ("peak pending", Align::Right),
        ("", Align::Left),
        ("peak RSS", Align::Right),
        ("RSS growth", Align::Right),
        ("drain s", Align::Right),
        ("reads/s", Align::Right),
    ];
    if pressure {
        columns.push(("back <1 MiB", Align::Right));
    }
    columns.push(("", Align::Left));
    let mut t = Table::new(&columns);
    let mut notes: Vec<&str> = Vec::new();
    for r in results {
        let mark = match &r.note {
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
        };
        let growth = match (r.peak_rss_bytes, r.baseline_rss_bytes) {
            (Some(p), Some(b)) => Some(p.saturating_sub(b)),
            _ => None,
        };
        let mut cells = vec![
            r.impl_name.clone(),
            r.threads.to_string(),
            ui::si(r.objects_per_s),
            if r.impl_name == "grace-kvfree" {
                "(ref)".into()
            } else {
                ui::ratio(ratio_to_grace(results, r))
            },
            if r.is_measured() {
                ui::bytes(r.peak_bytes_pending)
            } else {
                "-".into()
            },
            r.peak_bytes_source.clone(),
            opt_bytes(r.peak_rss_bytes),
            opt_bytes(growth),
            format!("{:.2}", r.drain_s),
            ui::si(r.reads_per_s),
        ];
        if pressure {
            cells.push(recovery_text(r));
        }
        cells.push(mark);
        t.row(cells);
    }
    let (readers, secs) = results
        .first()
        .map_or((0, 0.0), |r| (r.readers, r.duration_s));
    let mut o = format!(
        "bench flood: 64-byte objects freed as fast as possible for ~{secs:.0} s beside {readers} reader thread(s), one process per row\n"
    );
    if let Some(r) = results.iter().find(|r| r.sleeping_reader) {
        o.push_str(&format!(
            "  plus a reader sleeping 50 ms inside its section every second; +budget rows: grace::pressure::set_budget({}); batching {}\n",
            r.budget_bytes
                .or_else(|| results.iter().find_map(|r| r.budget_bytes))
                .map_or_else(|| "-".into(), ui::bytes),
            if grace::pending::batching() { "on" } else { "off (GRACE_PENDING=off)" }
        ));
    }
    o.push_str(&t.render(2));
    for (i, n) in notes.iter().enumerate() {
        o.push_str(&format!("  [{}] {n}\n", i + 1));
    }
    o.push_str(
        "  grace/peer = grace-kvfree's ns per object divided by the row's (the row's objects/s over grace's), \
         same thread count: below 1.00x grace is faster\n",
    );
    o.push_str(
        "  peak pending: library = kvfree::stats().peak_bytes_pending (objects + their pointer arrays); \
         sampled = objects allocated but not yet freed x 64 B, sampled every 10 ms\n",
    );
    o.push_str(
        "  peak RSS = VmHWM of the row's process; RSS growth = VmHWM - VmRSS before the flood; \
         drain = the final barrier / flush after the flood (not in objects/s)\n",
    );
    if pressure {
        o.push_str(
            "  back <1 MiB = time from the end of the flood until pending bytes were under 1 MiB, \
             readers still running, nothing flushed (polled every 1 ms); GP = the grace periods \
             the row's grace flavor completed meanwhile\n",
        );
    }
    o
}

/// The recovery cell: milliseconds, or `>limit` when memory did not come back in time.
fn recovery_text(r: &FloodResult) -> String {
    match r.recovery_s {
        Some(s) => match r.recovery_grace_periods {
            Some(gps) => format!("{:.1} ms, {gps} GP", s * 1e3),
            None => format!("{:.1} ms", s * 1e3),
        },
        None if r.is_measured() => format!(">{:.1} s", r.recovery_limit_s),
        None => "-".into(),
    }
}

/// The chart of pending bytes over time: one line per row (`t=N` added when several thread
/// counts ran), in MiB, with the budget as a reference line.
pub fn chart(results: &[FloodResult], opts: &FloodOptions) -> crate::plot::Chart {
    let several = opts.threads.len() > 1;
    let series = results
        .iter()
        .map(|r| crate::plot::Series {
            label: if several {
                format!("{} t={}", r.impl_name, r.threads)
            } else {
                r.impl_name.clone()
            },
            points: r
                .pending_series
                .iter()
                .map(|&(t, b)| (t, b as f64 / (1u64 << 20) as f64))
                .collect(),
        })
        .collect();
    let secs = opts.duration.as_secs_f64();
    crate::plot::Chart {
        title: format!(
            "bench flood: pending bytes over time ({secs:.1} s flood, then the recovery)"
        ),
        x_label: "seconds since the flood began".into(),
        y_label: "pending (MiB)".into(),
        series,
        reference: opts.budget.map(|b| {
            (
                b as f64 / (1u64 << 20) as f64,
                format!("budget {}", ui::bytes(b)),
            )
        }),
    }
}

/// One row of the JSON output: the agreed fields, then the flood's own.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "impl")]
    impl_name: &'a str,
    threads: usize,
    /// Time per object, all threads together (1e9 / objects_per_s).
    ns_per_op: f64,
    ops_per_s: f64,
    note: Option<&'a str>,
    readers: usize,
    duration_s: f64,
    objects: u64,
    objects_per_s: f64,
    reads_per_s: f64,
    peak_bytes_pending: u64,
    peak_bytes_source: &'a str,
    sampled_peak_bytes_pending: u64,
    baseline_rss_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    sampled_peak_rss_bytes: Option<u64>,
    drain_s: f64,
    isolated: bool,
    budget_bytes: Option<u64>,
    sleeping_reader: bool,
    recovery_s: Option<f64>,
    recovery_grace_periods: Option<u64>,
    recovery_limit_s: f64,
    /// `[seconds since the flood began, bytes]` pairs.
    pending_series: &'a [(f64, u64)],
}

#[derive(Serialize)]
struct JsonOut<'a> {
    suite: &'static str,
    results: Vec<JsonRow<'a>>,
    machine: Machine,
    date: String,
    duration_ms: u64,
    readers: usize,
    budget_bytes: Option<u64>,
    batching: bool,
    plot: Option<String>,
}

/// The `--json` object for `results`.
pub fn json(results: &[FloodResult], opts: &FloodOptions) -> String {
    let out = JsonOut {
        suite: "flood",
        results: results
            .iter()
            .map(|r| JsonRow {
                impl_name: &r.impl_name,
                threads: r.threads,
                ns_per_op: 1e9 / r.objects_per_s,
                ops_per_s: r.objects_per_s,
                note: r.note.as_deref(),
                readers: r.readers,
                duration_s: r.duration_s,
                objects: r.objects,
                objects_per_s: r.objects_per_s,
                reads_per_s: r.reads_per_s,
                peak_bytes_pending: r.peak_bytes_pending,
                peak_bytes_source: &r.peak_bytes_source,
                sampled_peak_bytes_pending: r.sampled_peak_bytes_pending,
                baseline_rss_bytes: r.baseline_rss_bytes,
                peak_rss_bytes: r.peak_rss_bytes,
                sampled_peak_rss_bytes: r.sampled_peak_rss_bytes,
                drain_s: r.drain_s,
                isolated: r.isolated,
                budget_bytes: r.budget_bytes,
                sleeping_reader: r.sleeping_reader,
                recovery_s: r.recovery_s,
                recovery_grace_periods: r.recovery_grace_periods,
                recovery_limit_s: r.recovery_limit_s,
                pending_series: &r.pending_series,
            })
            .collect(),
        machine: Machine::this(),
        date: utc_now(),
        duration_ms: opts.duration.as_millis() as u64,
        readers: opts.readers,
        budget_bytes: opts.budget,
        batching: grace::pending::batching(),
        plot: opts.plot.as_ref().map(|p| p.display().to_string()),
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "null".into())
}

/// `grace bench flood`: run it, print the table (or the JSON object).
pub fn main(opts: &FloodOptions, json_out: bool) -> ExitCode {
    let mut known: Vec<String> = grace_bench::pressure_impls();
    for name in grace_bench::flood_impls() {
        if !known.iter().any(|k| k == name) {
            known.push(name.to_string());
        }
    }
    if let Some(bad) = opts.impls.iter().find(|i| !known.contains(i)) {
        eprintln!(
            "grace: no flood implementation named {bad:?}; the names are: {}",
            known.join(", ")
        );
        return ExitCode::from(2);
    }
    print_liburcu_notice();
    let (results, reports) = run(opts, !json_out);
    if json_out {
        ui::out(&format!("{}\n", json(&results, opts)));
    } else {
        ui::out(&table(&results));
        for r in reports {
            ui::out(&format!("\n{r}"));
        }
    }
    if let Some(path) = &opts.plot {
        if let Err(e) = std::fs::write(path, crate::plot::svg(&chart(&results, opts))) {
            eprintln!("grace: cannot write the plot to {}: {e}", path.display());
            return ExitCode::from(3);
        }
        if !json_out {
            ui::out(&format!("  plot: {}\n", path.display()));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, threads: usize, rate: f64) -> FloodResult {
        let mut r = FloodResult::failed(name, threads, 1, String::new());
        r.note = None;
        r.objects_per_s = rate;
        r.objects = rate as u64;
        r.duration_s = 1.0;
        r.peak_bytes_pending = 1 << 20;
        r.peak_bytes_source = "sampled".into();
        r.peak_rss_bytes = Some(64 << 20);
        r.baseline_rss_bytes = Some(4 << 20);
        r
    }

    #[test]
    fn flood_json_keeps_the_agreed_fields() {
        let rs = vec![result("grace-kvfree", 1, 4e7), result("seize", 1, 1e7)];
        let opts = FloodOptions {
            threads: vec![1],
            readers: 1,
            duration: Duration::from_secs(1),
            budget: None,
            plot: None,
            impls: Vec::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&json(&rs, &opts)).unwrap();
        assert_eq!(v["suite"], "flood");
        let r = &v["results"][1];
        assert_eq!(r["impl"], "seize");
        assert_eq!(r["ns_per_op"], 100.0);
        assert_eq!(r["ops_per_s"], 1e7);
        assert_eq!(r["peak_rss_bytes"], 64 << 20);
        assert!(v["machine"]["cpus"].as_u64().is_some());
        assert_eq!(ratio_to_grace(&rs, &rs[1]), Some(0.25));
        let t = table(&rs);
        assert!(t.contains("0.25x") && t.contains("60.0 MiB"), "{t}");
    }
}
