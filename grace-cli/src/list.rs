//! `grace bench list`: a Harris–Michael sorted list, written once in `grace-bench`, over grace's
//! `kvfree_raw` and `rcu::call`, crossbeam-epoch, seize and haphazard: operations per second
//! (median timed round, with the slowest and fastest) and the peak number of nodes retired but
//! not yet freed, for each key range (`--keys`, default 1,000 and 10,000), read share
//! (`--reads`, default 0, 50 and 90 percent) and thread count. The measuring is
//! `grace_bench::run_list_one`'s (see `grace_bench`'s `list` module for what each figure is).
//!
//! Each measurement runs in a child process of its own ([`crate::child`]: `grace bench list
//! --child IMPL --threads N --keys K --reads R --duration D`), so that every row starts with a
//! clean allocator and clean library counters (kvfree's are process-wide); if that fails, it
//! is made in this process and its note says so.
//!
//! Every row is compared with crossbeam-epoch's at the same (keys, reads, threads): its ops/s
//! divided by crossbeam's (above `1.00x` the row is faster), and its peak unreclaimed nodes
//! divided by crossbeam's (below `1.00x` it strands fewer). A row whose nodes were not all
//! freed after the final drain is a bug: its figures are `-` (`null` in JSON) and its note
//! starts with `BUG`.

use crate::bench::{print_liburcu_notice, utc_now, Machine};
use crate::ui::{self, Align, Table};
use grace_bench::{ListParams, ListResult, LIST_REFERENCE};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// What to measure.
#[derive(Clone, Debug)]
pub struct ListOptions {
    /// Worker thread counts, in order.
    pub threads: Vec<usize>,
    /// Key ranges, in order.
    pub keys: Vec<u64>,
    /// Read shares in percent, in order.
    pub reads: Vec<u32>,
    /// How long each round runs (one untimed and three timed rounds per row).
    pub duration: Duration,
}

impl ListOptions {
    /// Every measurement's parameters, in run order (keys, then reads, then threads).
    fn params(&self) -> Vec<ListParams> {
        let mut out = Vec::new();
        for &keys in &self.keys {
            for &read_pct in &self.reads {
                for &threads in &self.threads {
                    out.push(ListParams {
                        threads,
                        keys,
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
pub fn run_isolated(name: &str, p: &ListParams) -> ListResult {
    let threads = p.threads.to_string();
    let keys = p.keys.to_string();
    let reads = p.read_pct.to_string();
    let duration = format!("{}ms", p.duration.as_secs_f64() * 1e3);
    crate::child::measure(
        &[
            "bench",
            "list",
            "--child",
            name,
            "--threads",
            &threads,
            "--keys",
            &keys,
            "--reads",
            &reads,
            "--duration",
            &duration,
        ],
        || grace_bench::run_list_one(name, p, false),
    )
}

/// The hidden child mode: one measurement, its result as JSON on standard output.
pub fn child_main(name: &str, p: &ListParams) -> ExitCode {
    let r = grace_bench::run_list_one(name, p, true);
    crate::child::answer("list", &r)
}

/// Every implementation for every parameter set, each in its own process, with a progress bar
/// unless `show` is false.
pub fn run(opts: &ListOptions, show: bool) -> Vec<ListResult> {
    let impls = grace_bench::list_impls();
    let params = opts.params();
    let steps = (impls.len() * params.len()) as u64;
    let bar = ui::bar(steps, "bench list", show);
    let mut out = Vec::new();
    for p in &params {
        for name in &impls {
            bar.set_message(format!(
                "{}/{steps} list {name} keys={} reads={}% t={}",
                out.len() + 1,
                p.keys,
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

/// crossbeam-epoch's row at `r`'s keys, reads and threads, when measured.
fn reference<'a>(results: &'a [ListResult], r: &ListResult) -> Option<&'a ListResult> {
    results.iter().find(|c| {
        c.impl_name == LIST_REFERENCE
            && (c.keys, c.read_pct, c.threads) == (r.keys, r.read_pct, r.threads)
            && c.is_measured()
    })
}

/// `r`'s ops/s divided by crossbeam-epoch's (above 1: `r` is faster).
pub fn ops_ratio(results: &[ListResult], r: &ListResult) -> Option<f64> {
    let c = reference(results, r)?;
    r.is_measured().then(|| r.ops_per_s / c.ops_per_s)
}

/// `r`'s peak unreclaimed nodes divided by crossbeam-epoch's (below 1: `r` strands fewer);
/// `None` when either was not measured or crossbeam's peak is zero.
pub fn unreclaimed_ratio(results: &[ListResult], r: &ListResult) -> Option<f64> {
    let c = reference(results, r)?;
    (r.is_measured() && c.peak_unreclaimed > 0)
        .then(|| r.peak_unreclaimed as f64 / c.peak_unreclaimed as f64)
}

/// The table for a person.
pub fn table(results: &[ListResult]) -> String {
    let mut t = Table::new(&[
        ("keys", Align::Right),
        ("reads", Align::Right),
        ("threads", Align::Right),
        ("impl", Align::Left),
        ("ops/s", Align::Right),
        ("min-max", Align::Right),
        ("vs crossbeam", Align::Right),
        ("peak unreclaimed", Align::Right),
        ("vs crossbeam", Align::Right),
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
        let is_ref = r.impl_name == LIST_REFERENCE;
        let measured = r.is_measured();
        t.row(vec![
            ui::count(r.keys),
            format!("{}%", r.read_pct),
            r.threads.to_string(),
            r.impl_name.clone(),
            ui::si(r.ops_per_s),
            if measured {
                format!("{}-{}", ui::si(r.ops_per_s_min), ui::si(r.ops_per_s_max))
            } else {
                "-".into()
            },
            if is_ref {
                "(ref)".into()
            } else {
                ui::ratio(ops_ratio(results, r))
            },
            if measured {
                ui::count(r.peak_unreclaimed)
            } else {
                "-".into()
            },
            if is_ref {
                "(ref)".into()
            } else {
                ui::ratio(unreclaimed_ratio(results, r))
            },
            mark,
        ]);
    }
    let secs = results.first().map_or(0.0, |r| r.duration_s);
    let mut o = format!(
        "bench list: a Harris-Michael sorted list (get/insert/remove of random keys, prefilled to \
         half the key range), {secs:.2} s per round, one process per row\n"
    );
    o.push_str(&t.render(2));
    for (i, n) in notes.iter().enumerate() {
        o.push_str(&format!("  [{}] {n}\n", i + 1));
    }
    o.push_str(
        "  ops/s = the median of 3 timed rounds, all threads; min-max = the slowest and fastest round; \
         reads = the share of gets, the rest half inserts, half removes\n",
    );
    o.push_str(&format!(
        "  vs crossbeam = the row's ops/s (then peak unreclaimed) divided by {LIST_REFERENCE}'s at the \
         same keys, reads and threads: above 1.00x faster (then more nodes stranded)\n"
    ));
    o.push_str(
        "  peak unreclaimed = nodes retired and not yet freed, sampled every 1 ms: grace-kvfree from \
         kvfree::stats().objects_pending, the others counted by the nodes' Drop\n",
    );
    o
}

/// One row of the JSON output: the agreed fields, then the list's own.
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
    ops_per_s_min: f64,
    ops_per_s_max: f64,
    /// ops_per_s over crossbeam-epoch's at the same keys, reads and threads.
    ops_vs_crossbeam: Option<f64>,
    peak_unreclaimed: u64,
    unreclaimed_source: &'a str,
    /// peak_unreclaimed over crossbeam-epoch's.
    unreclaimed_vs_crossbeam: Option<f64>,
    retired: u64,
    reclaimed_all: bool,
    duration_s: f64,
    rounds: usize,
    ops: u64,
    isolated: bool,
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
pub fn json(results: &[ListResult], opts: &ListOptions) -> String {
    let out = JsonOut {
        suite: "list",
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
                ops_per_s_min: r.ops_per_s_min,
                ops_per_s_max: r.ops_per_s_max,
                ops_vs_crossbeam: ops_ratio(results, r),
                peak_unreclaimed: r.peak_unreclaimed,
                unreclaimed_source: &r.unreclaimed_source,
                unreclaimed_vs_crossbeam: unreclaimed_ratio(results, r),
                retired: r.retired,
                reclaimed_all: r.reclaimed_all,
                duration_s: r.duration_s,
                rounds: r.rounds,
                ops: r.ops,
                isolated: r.isolated,
            })
            .collect(),
        machine: Machine::this(),
        date: utc_now(),
        duration_ms: opts.duration.as_millis() as u64,
        reference: LIST_REFERENCE,
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "null".into())
}

/// `grace bench list`: run it, print the table (or the JSON object).
pub fn main(opts: &ListOptions, json_out: bool) -> ExitCode {
    print_liburcu_notice();
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

    fn result(name: &str, rate: f64, peak: u64) -> ListResult {
        let p = ListParams {
            threads: 1,
            keys: 1000,
            read_pct: 50,
            duration: Duration::from_millis(1),
        };
        let mut r = ListResult::failed(name, &p, String::new());
        r.note = None;
        (r.ops_per_s, r.ops_per_s_min, r.ops_per_s_max) = (rate, rate * 0.9, rate * 1.1);
        r.peak_unreclaimed = peak;
        r.reclaimed_all = true;
        r
    }

    #[test]
    fn rows_are_compared_with_crossbeam() {
        let rs = vec![
            result("grace-kvfree", 3e6, 100),
            result("crossbeam-epoch", 2e6, 400),
        ];
        assert_eq!(ops_ratio(&rs, &rs[0]), Some(1.5));
        assert_eq!(unreclaimed_ratio(&rs, &rs[0]), Some(0.25));
        let t = table(&rs);
        assert!(
            t.contains("1.50x") && t.contains("0.25x") && t.contains("(ref)"),
            "{t}"
        );
        let opts = ListOptions {
            threads: vec![1],
            keys: vec![1000],
            reads: vec![50],
            duration: Duration::from_millis(1),
        };
        let v: serde_json::Value = serde_json::from_str(&json(&rs, &opts)).unwrap();
        assert_eq!(v["suite"], "list");
        assert_eq!(v["results"][0]["impl"], "grace-kvfree");
        assert_eq!(v["results"][0]["ops_vs_crossbeam"], 1.5);
        assert_eq!(v["results"][1]["peak_unreclaimed"], 400);
    }
}
