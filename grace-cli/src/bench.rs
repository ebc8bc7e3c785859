//! `grace bench read|sync|call|free|reuse`: run one `grace-bench` suite and present it (the
//! `flood` and `list` suites, whose figures are of another kind, are [`crate::flood`]'s and
//! [`crate::list`]'s).
//!
//! The measuring is `grace-bench`'s (same harness for grace and every peer, in one process);
//! this module only drives it with a progress bar and turns its rows into a table for a
//! person, or into the JSON object other tools parse (`suite`, `results[]` with `impl`,
//! `threads`, `ns_per_op`, `ops_per_s`, `note`, then `machine` and `date`; keep those names).
//!
//! Every row is compared with the suite's grace row ([`grace_bench::reference_impl`]:
//! `grace-rcu`, `grace-kvfree` for `free`, `grace-pending-reuse` for `reuse`; for a second
//! workload of a suite, such as `call`'s `/free64` rows, the grace row of that workload,
//! [`grace_bench::reference_row`]) at the same thread count as `grace's ns/op ÷ the row's
//! ns/op`: `0.52x` means grace takes 0.52 times the peer's time per operation (grace is
//! faster); above `1.00x` the peer is faster. The suites timed in rounds (`call`, `free`) also
//! show the fastest and slowest round (`min-max`; `ns_per_op_min`, `ns_per_op_max` in JSON).
//!
//! Rows with a target ([`grace_bench::TARGETS`]: the SRCU read sections against grace-rcu's,
//! the cross-domain `synchronize` against the same without a blocked reader, `kvfree` against
//! a plain allocate+free on one thread and against crossbeam-epoch and seize at two threads
//! and more) also get the other ratio, `the row's ns/op ÷ its reference's`, next to the bound
//! it must stay under, in the table's `vs ref` column and in the JSON's `targets` array.

use crate::ui::{self, Align, Table};
use grace_bench::{BenchResult, Options, TargetCheck};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

/// A benchmark suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// One outermost read-side section (enter + exit).
    Read,
    /// The latency of one grace-period wait, idle readers.
    Sync,
    /// Deferred-callback throughput, end to end: a one-word callback, and one that frees a
    /// 64-byte box (the /free64 rows).
    Call,
    /// Deferred free of a 64-byte box (kvfree), allocation and final free included.
    Free,
    /// Every thread frees 64-byte objects for a duration beside readers: objects/s, peak
    /// bytes pending, peak RSS (one child process per implementation).
    Flood,
    /// An object cache recycling through Pending::dequeue vs allocating fresh.
    Reuse,
    /// A Harris-Michael list over kvfree_raw, rcu::call, crossbeam-epoch, seize and haphazard:
    /// ops/s and peak unreclaimed nodes (one child process per measurement).
    List,
    /// Concurrent hash maps (dashmap, papaya, scc, RwLock<HashMap>): ops/s by read share, key
    /// range and distribution, peak RSS, p99 lookups while the map doubles (one child process
    /// per measurement).
    Map,
    /// grace's rculist (collections::List) against RwLock<Vec> and Mutex<LinkedList>: readers
    /// sum the list while writers replace entries (one child process per measurement).
    Rculist,
}

impl Suite {
    /// The suites the tour runs, in order.
    pub const TOUR: [Suite; 4] = [Suite::Read, Suite::Sync, Suite::Call, Suite::Free];

    /// The suite's name, as `grace-bench` and the JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Read => "read",
            Suite::Sync => "sync",
            Suite::Call => "call",
            Suite::Free => "free",
            Suite::Flood => "flood",
            Suite::Reuse => "reuse",
            Suite::List => "list",
            Suite::Map => "map",
            Suite::Rculist => "rculist",
        }
    }

    /// The row every other one is compared with.
    pub fn grace_impl(self) -> &'static str {
        grace_bench::reference_impl(self.name())
    }

    /// What one operation is, for table headers.
    pub fn op(self) -> &'static str {
        match self {
            Suite::Read => "one read-side section",
            Suite::Sync => "one grace-period wait",
            Suite::Call => "one deferred callback",
            Suite::Free => "allocate a 64-byte object and free it through the API",
            Suite::Flood => "one object freed during the flood",
            Suite::Reuse => "replace one cache entry (take, write, publish, retire the old)",
            Suite::List => "one list operation (get, insert or remove)",
            Suite::Map => "one map operation (get, insert or remove)",
            Suite::Rculist => "one list operation (sum the list, or replace an entry)",
        }
    }

    fn run(self, opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
        grace_bench::run_suite(self.name(), opts, progress).unwrap_or_default()
    }
}

/// Run `suite` with a progress bar (one step per measurement) unless `show` is false.
pub fn run(suite: Suite, opts: &Options, show: bool) -> Vec<BenchResult> {
    let steps = grace_bench::planned_steps(suite.name(), opts) as u64;
    let bar = ui::bar(steps, &format!("bench {}", suite.name()), show);
    let mut done = 0u64;
    let results = suite.run(opts, &mut |label| {
        bar.set_position(done);
        done += 1;
        bar.set_message(format!("{done}/{steps} {label}"));
    });
    bar.finish_and_clear();
    results
}

/// The suite's grace row's ns/op divided by `r`'s, at `r`'s thread count; `None` when either
/// figure is missing.
pub fn ratio_to_grace(results: &[BenchResult], r: &BenchResult) -> Option<f64> {
    let reference = grace_bench::reference_row(r.suite, &r.impl_name);
    let grace = results.iter().find(|g| {
        g.suite == r.suite && g.impl_name == reference && g.threads == r.threads && g.is_measured()
    })?;
    r.is_measured().then(|| grace.ns_per_op / r.ns_per_op)
}

/// What the ratio column means for `suite`.
pub fn ratio_legend(suite: Suite) -> String {
    let workloads = if suite == Suite::Call {
        " (grace-rcu/free64's for the /free64 rows)"
    } else {
        ""
    };
    format!(
        "grace/peer = {}'s ns/op{workloads} divided by the row's, at the same thread count: \
         below 1.00x grace is faster, above it the peer is",
        suite.grace_impl()
    )
}

/// A target check as text: `1.32x <= 1.50x`, `3.41x > 3.00x MISSED`, or `- (<= 1.50x)` when
/// the ratio could not be computed.
pub fn target_text(c: &TargetCheck) -> String {
    let ratio = ui::ratio(c.ratio.is_finite().then_some(c.ratio));
    let max = ui::ratio(Some(c.target.max));
    match c.met() {
        Some(true) => format!("{ratio} <= {max}"),
        Some(false) => format!("{ratio} > {max} MISSED"),
        None => format!("{ratio} (<= {max})"),
    }
}

/// What the `vs ref` column means for `suite`'s targets; `None` when it has none.
fn targets_legend(suite: Suite) -> Option<String> {
    let refs: Vec<String> = grace_bench::TARGETS
        .iter()
        .filter(|t| t.suite == suite.name())
        .map(|t| format!("{} / {} ({})", t.impl_name, t.reference, t.what))
        .collect();
    (!refs.is_empty()).then(|| {
        format!(
            "vs ref = the row's ns/op divided by its reference's, at the same thread count, \
             against its target: {}",
            refs.join("; ")
        )
    })
}

/// The table for a person: one row per implementation and thread count, notes below it.
pub fn table(suite: Suite, results: &[BenchResult]) -> String {
    let checks = grace_bench::check_targets(results);
    let with_targets = grace_bench::TARGETS.iter().any(|t| t.suite == suite.name());
    let mut columns = vec![
        ("impl", Align::Left),
        ("threads", Align::Right),
        ("ns/op", Align::Right),
        ("min-max", Align::Right),
        ("ops/s", Align::Right),
        ("grace/peer", Align::Right),
        ("load", Align::Right),
    ];
    if with_targets {
        columns.push(("vs ref", Align::Left));
    }
    columns.push(("", Align::Left));
    let mut t = Table::new(&columns);
    let mut notes: Vec<&str> = Vec::new();
    for r in results {
        let mark = match &r.note {
            Some(n) => {
                let i = match notes.iter().position(|m| *m == n.as_str()) {
                    Some(i) => i,
                    None => {
                        notes.push(n);
                        notes.len() - 1
                    }
                };
                format!("[{}]", i + 1)
            }
            None => String::new(),
        };
        let ratio = if r.impl_name == grace_bench::reference_row(r.suite, &r.impl_name) {
            "(ref)".to_string()
        } else {
            ui::ratio(ratio_to_grace(results, r))
        };
        let mut cells = vec![
            r.impl_name.clone(),
            r.threads.to_string(),
            ui::ns(r.ns_per_op),
            spread_text(r),
            ui::si(r.ops_per_s),
            ratio,
            r.load_avg.map_or_else(|| "-".into(), |l| format!("{l:.2}")),
        ];
        if with_targets {
            cells.push(
                checks
                    .iter()
                    .find(|c| c.target.impl_name == r.impl_name && c.threads == r.threads)
                    .map_or_else(String::new, target_text),
            );
        }
        cells.push(mark);
        t.row(cells);
    }
    let mut o = format!("bench {}: ns/op = {}\n", suite.name(), suite.op());
    o.push_str(&t.render(2));
    for (i, n) in notes.iter().enumerate() {
        o.push_str(&format!("  [{}] {n}\n", i + 1));
    }
    o.push_str(&format!("  {}\n", ratio_legend(suite)));
    o.push_str(&format!(
        "  min-max: the fastest and slowest of the timed rounds ns/op is the median of (- when \
         measured in one run); load: the 1-minute load average when the row was taken ({} CPUs): \
         near or above the CPU count, differences are noise\n",
        grace::sys::num_cpus()
    ));
    if let Some(legend) = targets_legend(suite) {
        o.push_str(&format!("  {legend}\n"));
    }
    o
}

/// `min-max` of a row's rounds, `-` when it has none.
fn spread_text(r: &BenchResult) -> String {
    match r.spread {
        Some(s) if r.is_measured() => {
            format!("{}-{}", ui::ns(s.min_ns_per_op), ui::ns(s.max_ns_per_op))
        }
        _ => "-".into(),
    }
}

/// Why the liburcu peer is missing, with how to get it; `None` when it is built in.
pub fn liburcu_notice() -> Option<String> {
    let reason = grace_bench::liburcu_status().err()?;
    let mut s = format!("the liburcu peer is not in this build: {reason}");
    if !reason.contains("apt-get") {
        s.push_str(
            "; install liburcu-dev (apt-get install liburcu-dev, dnf install userspace-rcu-devel) \
             and rebuild to compare with it",
        );
    }
    Some(s)
}

/// Print [`liburcu_notice`] on standard error, at most once per process.
pub fn print_liburcu_notice() {
    static ONCE: OnceLock<()> = OnceLock::new();
    if let Some(n) = liburcu_notice() {
        ONCE.get_or_init(|| eprintln!("grace: {n}"));
    }
}

/// One row of the JSON output.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "impl")]
    impl_name: &'a str,
    threads: usize,
    /// `null` when not measured (serde_json writes non-finite numbers as `null`).
    ns_per_op: f64,
    ops_per_s: f64,
    note: Option<&'a str>,
    /// The fastest and slowest timed round, and how many there were; `null` when measured in
    /// one run.
    min_ns_per_op: Option<f64>,
    max_ns_per_op: Option<f64>,
    rounds: Option<usize>,
    /// The 1-minute load average when the row was taken; `null` where unknown.
    load_avg: Option<f64>,
}

/// The machine the figures were taken on.
#[derive(Serialize)]
pub struct Machine {
    cpus: usize,
    os: &'static str,
    arch: &'static str,
    kernel: Option<String>,
    cpu_model: Option<String>,
    barrier_mode: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        Machine {
            cpus: grace::sys::num_cpus(),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            kernel,
            cpu_model,
            barrier_mode: format!("{:?}", grace::rcu::stats().barrier_mode).to_lowercase(),
        }
    }
}

#[derive(Serialize)]
struct Liburcu {
    available: bool,
    reason: Option<&'static str>,
}

/// One target check of the JSON output.
#[derive(Serialize)]
struct JsonTarget {
    #[serde(rename = "impl")]
    impl_name: &'static str,
    reference: &'static str,
    threads: usize,
    /// `impl`'s ns/op over `reference`'s; `null` when not computed.
    ratio: f64,
    max: f64,
    /// `null` when the ratio could not be computed.
    met: Option<bool>,
    min_threads: usize,
    /// `null` for "no upper limit".
    max_threads: Option<usize>,
    what: &'static str,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    suite: &'static str,
    results: Vec<JsonRow<'a>>,
    machine: Machine,
    date: String,
    duration_ms: u64,
    liburcu: Liburcu,
    targets: Vec<JsonTarget>,
}

/// The `--json` object for `results`, as text (fields in the agreed order: `suite`,
/// `results`, `machine`, `date`, then extras).
pub fn json(suite: Suite, results: &[BenchResult], duration: Duration) -> String {
    let out = JsonOut {
        suite: suite.name(),
        results: results
            .iter()
            .map(|r| JsonRow {
                impl_name: &r.impl_name,
                threads: r.threads,
                ns_per_op: r.ns_per_op,
                ops_per_s: r.ops_per_s,
                note: r.note.as_deref(),
                min_ns_per_op: r.spread.map(|s| s.min_ns_per_op),
                max_ns_per_op: r.spread.map(|s| s.max_ns_per_op),
                rounds: r.spread.map(|s| s.rounds),
                load_avg: r.load_avg,
            })
            .collect(),
        machine: Machine::this(),
        date: utc_now(),
        duration_ms: duration.as_millis() as u64,
        liburcu: Liburcu {
            available: grace_bench::liburcu_status().is_ok(),
            reason: grace_bench::liburcu_status().err(),
        },
        targets: grace_bench::check_targets(results)
            .into_iter()
            .map(|c| JsonTarget {
                impl_name: c.target.impl_name,
                reference: c.target.reference,
                threads: c.threads,
                ratio: c.ratio,
                max: c.target.max,
                met: c.met(),
                min_threads: c.target.min_threads,
                max_threads: (c.target.max_threads != usize::MAX).then_some(c.target.max_threads),
                what: c.target.what,
            })
            .collect(),
    };
    // Serializing plain structs of numbers and strings cannot fail.
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "null".into())
}

/// The current time in UTC as ISO 8601 (`2025-01-31T12:34:56Z`).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso8601(secs)
}

/// Seconds since the Unix epoch as ISO 8601 UTC (Howard Hinnant's `civil_from_days`).
fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `grace bench <suite>`: run it, print the table (or the JSON object).
pub fn main(suite: Suite, opts: &Options, json_out: bool) -> ExitCode {
    print_liburcu_notice();
    let results = run(suite, opts, !json_out);
    if json_out {
        ui::out(&format!("{}\n", json(suite, &results, opts.duration)));
    } else {
        ui::out(&table(suite, &results));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, threads: usize, ns: f64) -> BenchResult {
        BenchResult {
            suite: "read",
            impl_name: name.into(),
            threads,
            ns_per_op: ns,
            ops_per_s: 1e9 / ns,
            note: None,
            spread: None,
            load_avg: None,
        }
    }

    #[test]
    fn ratio_is_grace_over_peer_at_the_same_thread_count() {
        let rs = vec![
            row("grace-rcu", 1, 1.0),
            row("grace-rcu", 2, 3.0),
            row("seize", 1, 2.0),
            row("seize", 2, 2.0),
            row("haphazard", 4, 2.0),
        ];
        assert_eq!(ratio_to_grace(&rs, &rs[2]), Some(0.5));
        assert_eq!(ratio_to_grace(&rs, &rs[3]), Some(1.5));
        assert_eq!(ratio_to_grace(&rs, &rs[4]), None);
        assert_eq!(ratio_to_grace(&rs, &row("x", 1, f64::NAN)), None);
    }

    #[test]
    fn rows_show_their_spread_and_load() {
        let mut r = row("grace-rcu", 1, 20.0);
        r.spread = Some(grace_bench::Spread {
            min_ns_per_op: 18.5,
            max_ns_per_op: 31.0,
            rounds: 3,
        });
        r.load_avg = Some(1.75);
        let t = table(Suite::Read, std::slice::from_ref(&r));
        assert!(t.contains("18.5-31.0") && t.contains("1.75"), "{t}");
        assert!(t.contains("min-max") && t.contains("load"), "{t}");
        let v: serde_json::Value =
            serde_json::from_str(&json(Suite::Read, &[r], Duration::from_millis(20))).unwrap();
        let row = &v["results"][0];
        assert_eq!(
            (row["min_ns_per_op"].as_f64(), row["max_ns_per_op"].as_f64()),
            (Some(18.5), Some(31.0))
        );
        assert_eq!(row["rounds"], 3);
        assert_eq!(row["load_avg"], 1.75);
    }

    #[test]
    fn json_keeps_the_agreed_field_names() {
        let mut rs = vec![row("grace-rcu", 1, 1.5), row("seize", 1, f64::NAN)];
        rs[1].note = Some("skipped".into());
        let text = json(Suite::Read, &rs, Duration::from_millis(20));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let order: Vec<usize> = ["\"suite\"", "\"results\"", "\"machine\"", "\"date\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(v["suite"], "read");
        assert_eq!(v["results"][0]["impl"], "grace-rcu");
        assert_eq!(v["results"][0]["threads"], 1);
        assert_eq!(v["results"][0]["ns_per_op"], 1.5);
        assert!(v["results"][0]["ops_per_s"].is_number());
        assert!(v["results"][0]["note"].is_null());
        assert!(v["results"][1]["ns_per_op"].is_null());
        assert!(v["results"][0]["min_ns_per_op"].is_null()); // one run, no rounds
        assert!(v["results"][0]["load_avg"].is_null());
        assert_eq!(v["results"][1]["note"], "skipped");
        assert!(v["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1));
        assert!(v["machine"]["os"].is_string());
        assert!(v["date"].as_str().is_some_and(|d| d.ends_with('Z')));
    }

    #[test]
    fn dates_are_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn targets_are_shown_and_serialized() {
        let rs = vec![
            row("grace-rcu", 1, 1.0),
            row("grace-srcu", 1, 2.5),
            row("grace-srcu-lite", 1, 2.0),
        ];
        let t = table(Suite::Read, &rs);
        assert!(t.contains("vs ref"), "{t}");
        assert!(t.contains("2.50x <= 3.00x"), "{t}");
        assert!(t.contains("2.00x > 1.50x MISSED"), "{t}");
        assert!(t.contains("grace-srcu-lite / grace-rcu"), "{t}");
        let v: serde_json::Value =
            serde_json::from_str(&json(Suite::Read, &rs, Duration::from_millis(20))).unwrap();
        let targets = v["targets"].as_array().expect("targets is an array");
        assert_eq!(targets.len(), 2, "{v}");
        assert_eq!(targets[0]["impl"], "grace-srcu-lite");
        assert_eq!(targets[0]["reference"], "grace-rcu");
        assert_eq!(targets[0]["ratio"], 2.0);
        assert_eq!(targets[0]["max"], 1.5);
        assert_eq!(targets[0]["met"], false);
        assert_eq!(targets[1]["met"], true);
        // The call suite has no target: no column.
        assert!(!table(Suite::Call, &[row("grace-rcu", 1, 1.0)]).contains("vs ref"));
    }

    #[test]
    fn free_rows_are_compared_with_kvfree() {
        let mut rs = vec![
            row("box-drop", 1, 10.0),
            row("grace-kvfree", 1, 12.0),
            row("crossbeam-epoch", 2, 90.0),
            row("grace-kvfree", 2, 15.0),
        ];
        rs.iter_mut().for_each(|r| r.suite = "free");
        assert_eq!(ratio_to_grace(&rs, &rs[0]), Some(1.2));
        let t = table(Suite::Free, &rs);
        assert!(t.contains("grace-kvfree's ns/op"), "{t}");
        assert!(t.contains("1.20x <= 1.50x"), "{t}");
        assert!(t.contains("0.17x <= 0.33x"), "{t}");
        let v: serde_json::Value =
            serde_json::from_str(&json(Suite::Free, &rs, Duration::from_millis(20))).unwrap();
        let targets = v["targets"].as_array().expect("targets");
        // The seize target is listed too, without a ratio (no seize row).
        assert_eq!(targets.len(), 3, "{v}");
        assert_eq!(targets[0]["max_threads"], 1);
        assert!(targets[1]["max_threads"].is_null());
        assert!(targets[2]["ratio"].is_null() && targets[2]["met"].is_null());
    }

    #[test]
    fn tables_say_what_the_ratio_means() {
        let rs = vec![row("grace-rcu", 1, 1.0), row("seize", 1, 2.0)];
        let t = table(Suite::Read, &rs);
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("divided by"), "{t}");
    }
}
