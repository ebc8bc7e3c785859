//! `grace bench rculist`: grace's `collections::List` (the kernel's `rculist`) against
//! `RwLock<Vec<u64>>` and `Mutex<LinkedList<u64>>`: readers sum the whole list, writers replace
//! one entry or remove it and add a new one at the back, for each list length (`--lengths`,
//! default 16 and 1,000), read share (`--reads`, default 100, 99 and 90 percent) and thread
//! count. The measuring is `grace_bench::run_rculist_one`'s (see `grace_bench`'s `rculist`
//! module). Each measurement runs in a child process of its own (`grace bench rculist --child
//! IMPL ...`), so that kvfree's process-wide counters are the row's; every row is compared with
//! grace's at the same length, reads and threads.

use crate::bench::{utc_now, Machine};
use crate::ui::{self, Align, Table};
use grace_bench::{RculistParams, RculistResult};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// The row every other is compared with.
const REFERENCE: &str = grace_bench::rculist::RCULIST_REFERENCE;

/// What to measure.
#[derive(Clone, Debug)]
pub struct RculistOptions {
    /// Worker thread counts, in order.
    pub threads: Vec<usize>,
    /// List lengths, in order.
    pub lengths: Vec<usize>,
    /// Read shares in percent, in order.
    pub reads: Vec<u32>,
    /// How long each round runs.
    pub duration: Duration,
}

impl RculistOptions {
    /// Every measurement's parameters, in run order.
    fn params(&self) -> Vec<RculistParams> {
        let mut out = Vec::new();
        for &len in &self.lengths {
            for &read_pct in &self.reads {
                for &threads in &self.threads {
                    out.push(RculistParams {
                        threads,
                        len,
                        read_pct,
                        duration: self.duration,
                    });
                }
            }
        }
        out
    }
}

/// Measure `name` with `p` in a child process, or here if that fails.
pub fn run_isolated(name: &str, p: &RculistParams) -> RculistResult {
    let threads = p.threads.to_string();
    let len = p.len.to_string();
    let reads = p.read_pct.to_string();
    let duration = format!("{}ms", p.duration.as_secs_f64() * 1e3);
    crate::child::measure(
        &[
            "bench",
            "rculist",
            "--child",
            name,
            "--threads",
            &threads,
            "--lengths",
            &len,
            "--reads",
            &reads,
            "--duration",
            &duration,
        ],
        || grace_bench::run_rculist_one(name, p, false),
    )
}

/// The hidden child mode: one measurement, its result as JSON on standard output.
pub fn child_main(name: &str, p: &RculistParams) -> ExitCode {
    crate::child::answer("rculist", &grace_bench::run_rculist_one(name, p, true))
}

/// Every implementation for every parameter set, each in its own process.
pub fn run(opts: &RculistOptions, show: bool) -> Vec<RculistResult> {
    let impls = grace_bench::rculist_impls();
    let params = opts.params();
    let steps = (impls.len() * params.len()) as u64;
    let bar = ui::bar(steps, "bench rculist", show);
    let mut out = Vec::new();
    for p in &params {
        for name in &impls {
            bar.set_message(format!(
                "{}/{steps} rculist {name} len={} reads={}% t={}",
                out.len() + 1,
                p.len,
                p.read_pct,
                p.threads
            ));
            out.push(run_isolated(name, p));
            bar.set_position(out.len() as u64);
        }
    }
    bar.finish_and_clear();
    out
}

/// grace's ops/s over `r`'s at the same row (above 1: grace is faster).
pub fn grace_vs(results: &[RculistResult], r: &RculistResult) -> Option<f64> {
    let g = results.iter().find(|c| {
        c.impl_name == REFERENCE
            && (c.len, c.read_pct, c.threads) == (r.len, r.read_pct, r.threads)
            && c.is_measured()
    })?;
    r.is_measured().then(|| g.ops_per_s / r.ops_per_s)
}

/// The table for a person.
pub fn table(results: &[RculistResult]) -> String {
    let mut t = Table::new(&[
        ("len", Align::Right),
        ("reads", Align::Right),
        ("threads", Align::Right),
        ("impl", Align::Left),
        ("ops/s", Align::Right),
        ("min-max", Align::Right),
        ("grace vs this", Align::Right),
        ("load", Align::Right),
        ("", Align::Left),
    ]);
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
        t.row(vec![
            ui::count(r.len as u64),
            format!("{}%", r.read_pct),
            r.threads.to_string(),
            r.impl_name.clone(),
            ui::si(r.ops_per_s),
            if r.is_measured() {
                format!("{}-{}", ui::si(r.ops_per_s_min), ui::si(r.ops_per_s_max))
            } else {
                "-".into()
            },
            if r.impl_name == REFERENCE {
                "(ref)".into()
            } else {
                ui::ratio(grace_vs(results, r))
            },
            r.load_avg.map_or_else(|| "-".into(), |l| format!("{l:.2}")),
            mark,
        ]);
    }
    let secs = results.first().map_or(0.0, |r| r.duration_s);
    let mut o = format!(
        "bench rculist: readers sum the whole list, writers replace one entry or remove it and \
         add a new one, {secs:.2} s per round, one process per row\n"
    );
    o.push_str(&t.render(2));
    for (i, n) in notes.iter().enumerate() {
        o.push_str(&format!("  [{}] {n}\n", i + 1));
    }
    o.push_str(&format!(
        "  ops/s = the median of 3 timed rounds, all threads (a read is one whole-list sum); \
         grace vs this = {REFERENCE}'s ops/s over the row's at the same length, reads and \
         threads; load = the 1-minute load average when the row was taken ({} CPUs)\n",
        grace::sys::num_cpus()
    ));
    o
}

/// One row of the JSON output: the agreed fields, then the suite's own.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "impl")]
    impl_name: &'a str,
    threads: usize,
    ns_per_op: f64,
    ops_per_s: f64,
    note: Option<&'a str>,
    len: usize,
    read_pct: u32,
    ops_per_s_min: f64,
    ops_per_s_max: f64,
    /// grace's ops/s over this row's.
    grace_vs_this: Option<f64>,
    duration_s: f64,
    rounds: usize,
    ops: u64,
    isolated: bool,
    load_avg: Option<f64>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    suite: &'static str,
    results: Vec<JsonRow<'a>>,
    machine: Machine,
    date: String,
    duration_ms: u64,
    reference: &'static str,
}

/// The `--json` object for `results`.
pub fn json(results: &[RculistResult], opts: &RculistOptions) -> String {
    let out = JsonOut {
        suite: "rculist",
        results: results
            .iter()
            .map(|r| JsonRow {
                impl_name: &r.impl_name,
                threads: r.threads,
                ns_per_op: 1e9 / r.ops_per_s,
                ops_per_s: r.ops_per_s,
                note: r.note.as_deref(),
                len: r.len,
                read_pct: r.read_pct,
                ops_per_s_min: r.ops_per_s_min,
                ops_per_s_max: r.ops_per_s_max,
                grace_vs_this: grace_vs(results, r),
                duration_s: r.duration_s,
                rounds: r.rounds,
                ops: r.ops,
                isolated: r.isolated,
                load_avg: r.load_avg,
            })
            .collect(),
        machine: Machine::this(),
        date: utc_now(),
        duration_ms: opts.duration.as_millis() as u64,
        reference: REFERENCE,
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "null".into())
}

/// `grace bench rculist`: run it, print the table (or the JSON object).
pub fn main(opts: &RculistOptions, json_out: bool) -> ExitCode {
    let results = run(opts, !json_out);
    if json_out {
        ui::out(&format!("{}\n", json(&results, opts)));
    } else {
        ui::out(&table(&results));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_compared_with_grace() {
        let p = RculistParams {
            threads: 1,
            len: 16,
            read_pct: 99,
            duration: Duration::from_millis(1),
        };
        let mut rs = vec![
            RculistResult::failed(REFERENCE, &p, String::new()),
            RculistResult::failed("rwlock-vec", &p, String::new()),
        ];
        for (r, rate) in rs.iter_mut().zip([4e6, 2e6]) {
            r.note = None;
            (r.ops_per_s, r.ops_per_s_min, r.ops_per_s_max) = (rate, rate, rate);
        }
        assert_eq!(grace_vs(&rs, &rs[1]), Some(2.0));
        let t = table(&rs);
        assert!(t.contains("2.00x") && t.contains("(ref)"), "{t}");
        let opts = RculistOptions {
            threads: vec![1],
            lengths: vec![16],
            reads: vec![99],
            duration: Duration::from_millis(1),
        };
        let v: serde_json::Value = serde_json::from_str(&json(&rs, &opts)).unwrap();
        assert_eq!(v["suite"], "rculist");
        assert_eq!(v["results"][1]["grace_vs_this"], 2.0);
    }
}
