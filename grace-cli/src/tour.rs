//! `grace` with no subcommand: the tour, about a minute that shows what the library is.
//!
//! First the correctness story (a 15-second `torture rcu`; a 5-second `torture srcu`: five
//! domains, one with a reader sleeping 100 ms in its section, the others' grace periods
//! unaffected; then a 3-second `torture pending` (RCU, then an SRCU domain, with `dequeue`
//! reuse racing readers), a 2-second `torture kvfree` and a 2-second `torture map`
//! (`collections::HashMap` resized under readers, on RCU then an SRCU domain), each with one
//! in 50 allocations failing), then the performance story (the headline `read`, `sync`, `call` and `free`
//! benchmarks against the peers at 1 and 2 threads, and at up to 4 on machines with more
//! CPUs, with the SRCU rows, and a short `list` run: one key range and read share at the
//! largest of those thread counts, a few seconds), then one summary: every torture verdict
//! with the SRCU isolation figure and the fallbacks taken under allocation failure, per suite
//! and thread count grace's figure and its ratio to each peer, the list against
//! crossbeam-epoch, and the targets. The exit status is the tortures': non-zero when any found
//! errors.

use crate::bench::{self, Suite};
use crate::torture::{self, Verdict};
use crate::ui::{self, Align, Table};
use grace_bench::{BenchResult, ListResult, Options};
use indicatif::ProgressBar;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long the tour tortures RCU.
const TORTURE: Duration = Duration::from_secs(15);

/// How long the tour tortures SRCU.
const SRCU_TORTURE: Duration = Duration::from_secs(5);

/// How long the tour tortures `Pending` (half on RCU, half on an SRCU domain).
const PENDING_TORTURE: Duration = Duration::from_secs(3);

/// How long the tour tortures `kvfree`.
const KVFREE_TORTURE: Duration = Duration::from_secs(2);

/// How long the tour tortures `collections::HashMap` (half on RCU, half on an SRCU domain).
const MAP_TORTURE: Duration = Duration::from_secs(2);

/// Each `free` measurement's duration in the tour: it sizes the work (half a million objects
/// per thread), so that the suite takes a few seconds in all.
const FREE_MEASUREMENT: Duration = Duration::from_millis(50);

/// The tour's `list` run: one key range and read share, at the largest thread count, with
/// short rounds (one process per implementation, about half a second each).
const LIST_KEYS: u64 = 1_000;
const LIST_READS: u32 = 50;
const LIST_ROUND: Duration = Duration::from_millis(100);

/// The time the tour gives the `read` and `sync` measurements together; each measurement
/// gets its share, within [`MEASUREMENT_MIN`]..=[`MEASUREMENT_MAX`]. (The `call` suite sizes
/// its work from the same duration and takes a second or two in all.)
const BENCH_BUDGET: Duration = Duration::from_secs(34);
const MEASUREMENT_MIN: Duration = Duration::from_millis(250);
const MEASUREMENT_MAX: Duration = Duration::from_secs(2);

/// How long each benchmark measurement runs in the tour, so that the benchmarks take about
/// [`BENCH_BUDGET`] whatever the number of thread counts and peers.
fn measurement(threads: &[usize]) -> Duration {
    let probe = Options {
        threads: threads.to_vec(),
        duration: MEASUREMENT_MIN,
    };
    let steps =
        grace_bench::planned_steps("read", &probe) + grace_bench::planned_steps("sync", &probe);
    (BENCH_BUDGET / steps.max(1) as u32).clamp(MEASUREMENT_MIN, MEASUREMENT_MAX)
}

/// Thread counts for the tour's benchmarks: 1 and 2, plus the CPU count up to 4.
pub fn thread_counts(cpus: usize) -> Vec<usize> {
    let mut t = vec![1, 2];
    let top = cpus.min(4);
    if top > 2 {
        t.push(top);
    }
    t
}

/// Run the torture `run` of `flavor` for `duration` with `readers` readers (per pipeline)
/// and one in `fail_one_in` allocations failing (0: none), with a progress bar, and print its
/// report.
fn torture<R: Verdict>(
    flavor: &str,
    duration: Duration,
    readers: usize,
    fail_one_in: u32,
    run: impl FnOnce(&torture::Options, &ProgressBar) -> R,
) -> R {
    let opts = torture::Options {
        duration,
        readers,
        inject_early_free: false,
        fail_one_in,
    };
    let bar = torture::progress_bar(flavor, &opts, true);
    let report = run(&opts, &bar);
    bar.finish_and_clear();
    ui::out(&report.human());
    ui::out("\n");
    report
}

/// Run the tour.
pub fn run() -> ExitCode {
    let started = Instant::now();
    let cpus = grace::sys::num_cpus();
    ui::out(&format!(
        "grace tour: {} s of RCU torture, {} s of SRCU torture, {} s of Pending, {} s of kvfree and {} s of HashMap torture, then the headline benchmarks ({} CPUs)\n\n",
        TORTURE.as_secs(),
        SRCU_TORTURE.as_secs(),
        PENDING_TORTURE.as_secs(),
        KVFREE_TORTURE.as_secs(),
        MAP_TORTURE.as_secs(),
        cpus
    ));

    let report = torture(
        "rcu",
        TORTURE,
        torture::rcu::default_readers(),
        0,
        torture::rcu::run,
    );
    let srcu = torture(
        "srcu",
        SRCU_TORTURE,
        torture::srcu::default_readers(),
        0,
        torture::srcu::run,
    );
    let flavors = [
        torture::pending::PendingFlavor::Rcu,
        torture::pending::PendingFlavor::Srcu,
    ];
    let pending = torture(
        "pending",
        PENDING_TORTURE,
        torture::pending::default_readers(),
        torture::kvfree::DEFAULT_FAIL_ONE_IN,
        |o, bar| torture::pending::run(o, &flavors, bar),
    );
    let kvfree = torture(
        "kvfree",
        KVFREE_TORTURE,
        torture::kvfree::default_readers(),
        torture::kvfree::DEFAULT_FAIL_ONE_IN,
        torture::kvfree::run,
    );
    let map = torture(
        "map",
        MAP_TORTURE,
        torture::map::default_readers(),
        torture::kvfree::DEFAULT_FAIL_ONE_IN,
        torture::map::run,
    );
    let tortures = Tortures {
        rcu: &report,
        srcu: &srcu,
        pending: &pending,
        kvfree: &kvfree,
        map: &map,
    };
    // What grace holds back after the five tortures, and why.
    ui::out(&format!("{}\n", grace::report()));

    bench::print_liburcu_notice();
    let threads = thread_counts(cpus);
    let list_opts = crate::list::ListOptions {
        threads: threads.iter().copied().max().into_iter().collect(),
        keys: vec![LIST_KEYS],
        reads: vec![LIST_READS],
        duration: LIST_ROUND,
    };
    let opts = Options {
        duration: measurement(&threads),
        threads,
    };
    let mut suites = Vec::new();
    for suite in Suite::TOUR {
        let opts = if suite == Suite::Free {
            Options {
                duration: FREE_MEASUREMENT,
                ..opts.clone()
            }
        } else {
            opts.clone()
        };
        let results = bench::run(suite, &opts, true);
        ui::out(&bench::table(suite, &results));
        ui::out("\n");
        suites.push((suite, results));
    }

    let list = crate::list::run(&list_opts, true);
    ui::out(&crate::list::table(&list));
    ui::out("\n");

    ui::out(&summary(&tortures, &suites, &list, started.elapsed()));
    if tortures.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The tour's torture reports.
struct Tortures<'a> {
    rcu: &'a torture::rcu::Report,
    srcu: &'a torture::srcu::Report,
    pending: &'a torture::pending::Report,
    kvfree: &'a torture::kvfree::Report,
    map: &'a torture::map::Report,
}

impl Tortures<'_> {
    fn passed(&self) -> bool {
        self.rcu.passed()
            && self.srcu.passed()
            && self.pending.passed()
            && self.kvfree.passed()
            && self.map.passed()
    }
}

/// `SUCCESS` or `FAILURE`.
fn verdict(passed: bool) -> &'static str {
    if passed {
        "SUCCESS"
    } else {
        "FAILURE"
    }
}

/// Rows that are grace's own (SRCU domains, kvfree of an object with drop glue) rather than
/// peers: the summary keeps them out of the peer column (the SRCU ones are in the targets).
fn is_grace(r: &BenchResult) -> bool {
    r.impl_name.starts_with("grace-")
}

/// The closing table: torture verdicts, then grace's figure and its ratio to every peer, then
/// the targets.
fn summary(
    t: &Tortures<'_>,
    suites: &[(Suite, Vec<BenchResult>)],
    list: &[ListResult],
    took: Duration,
) -> String {
    let (report, srcu) = (t.rcu, t.srcu);
    let mut o = String::from("summary\n");
    o.push_str(&format!(
        "  torture rcu: {} ({} errors; {} reads, {} grace periods + {} expedited, {} updates in {:.0} s)\n",
        if report.passed() { "SUCCESS" } else { "FAILURE" },
        ui::count(report.totals.errors),
        ui::si(report.totals.reads as f64),
        ui::count(report.grace_periods),
        ui::count(report.expedited_grace_periods),
        ui::count(report.totals.updates),
        report.totals.duration_s
    ));
    let iso = &srcu.isolation;
    o.push_str(&format!(
        "  torture srcu: {} ({} errors; {} domains, {} reads, {} grace periods, {} updates in {:.0} s)\n",
        if srcu.passed() { "SUCCESS" } else { "FAILURE" },
        ui::count(srcu.totals.errors),
        srcu.domains.len(),
        ui::si(srcu.totals.reads as f64),
        ui::count(srcu.grace_periods),
        ui::count(srcu.totals.updates),
        srcu.totals.duration_s
    ));
    o.push_str(&format!(
        "    isolation: {}'s reader sleeps {:.0} ms in its section, its synchronize() takes up to {:.1} ms; \
         the other domains completed {} grace periods inside its sections (synchronize() max {:.2} ms, p99 {:.2} ms): {}\n",
        iso.blocked_domain,
        iso.reader_sleep_ms,
        iso.blocked_sync.max_ms,
        iso.others_inside_sections,
        iso.others_sync.max_ms,
        iso.others_sync.p99_ms,
        if iso.passed { "isolated" } else { "NOT ISOLATED" }
    ));
    o.push_str(&pending_line(t.pending));
    o.push_str(&kvfree_line(t.kvfree));
    o.push_str(&map_line(t.map));
    let mut t = Table::new(&[
        ("suite", Align::Left),
        ("threads", Align::Right),
        ("grace", Align::Left),
        ("ns/op", Align::Right),
        ("grace/peer", Align::Left),
    ]);
    for (suite, results) in suites {
        let mut threads: Vec<usize> = results.iter().map(|r| r.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let reference = suite.grace_impl();
        for n in threads {
            let grace = results
                .iter()
                .find(|r| r.impl_name == reference && r.threads == n)
                .map_or(f64::NAN, |r| r.ns_per_op);
            let peers = results
                .iter()
                .filter(|r| r.threads == n && r.impl_name != reference && !is_grace(r))
                .map(|r| {
                    format!(
                        "{} {}",
                        r.impl_name,
                        ui::ratio(bench::ratio_to_grace(results, r))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            t.row(vec![
                suite.name().to_string(),
                n.to_string(),
                reference.to_string(),
                ui::ns(grace),
                peers,
            ]);
        }
    }
    o.push_str(&t.render(2));
    o.push_str(
        "  grace/peer = grace's ns/op divided by the peer's, at the same thread count (a \
         /free64 row against grace's own /free64 row): below 1.00x grace is faster, above it \
         the peer is\n",
    );
    o.push_str(&list_line(list));
    let checks: Vec<_> = suites
        .iter()
        .flat_map(|(_, results)| grace_bench::check_targets(results))
        .collect();
    if !checks.is_empty() {
        o.push_str("  targets (the row's ns/op divided by its reference's):\n");
        for c in &checks {
            o.push_str(&format!(
                "    {} t={}: {} / {} = {}\n",
                c.target.suite,
                c.threads,
                c.target.impl_name,
                c.target.reference,
                bench::target_text(c)
            ));
        }
    }
    o.push_str(&format!("  the tour took {:.0} s\n", took.as_secs_f64()));
    o
}

/// The summary's line for the `list` run: each row's ops/s and peak unreclaimed nodes against
/// crossbeam-epoch's.
fn list_line(list: &[ListResult]) -> String {
    let Some(first) = list.first() else {
        return String::new();
    };
    let versus = |ratio: fn(&[ListResult], &ListResult) -> Option<f64>| {
        list.iter()
            .filter(|r| r.impl_name != grace_bench::LIST_REFERENCE)
            .map(|r| format!("{} {}", r.impl_name, ui::ratio(ratio(list, r))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "  list ({} keys, {}% reads, {} threads), against {}: ops/s {}; peak unreclaimed nodes {}\n",
        ui::count(first.keys),
        first.read_pct,
        first.threads,
        grace_bench::LIST_REFERENCE,
        versus(crate::list::ops_ratio),
        versus(crate::list::unreclaimed_ratio),
    )
}

/// The summary's line for `torture pending`.
fn pending_line(p: &torture::pending::Report) -> String {
    let sum = |f: fn(&torture::pending::PendingFigures) -> u64| {
        p.flavors
            .iter()
            .flat_map(|f| &f.pendings)
            .map(f)
            .sum::<u64>()
    };
    let reuse: u64 = p.flavors.iter().map(|f| f.reuse.dequeued).sum();
    let processed: u64 = p.flavors.iter().map(|f| f.reuse.processed).sum();
    format!(
        "  torture pending: {} ({} errors; on {}: {} reads, {} updates, {} objects reused through dequeue vs {} processed; \
         1 in {} allocations failed ({} injected): {} chunk and {} node allocation failures, {} fallback nodes, {} synchronous, {} given back)\n",
        verdict(p.passed()),
        ui::count(p.totals.errors),
        p.flavors
            .iter()
            .map(|f| f.flavor)
            .collect::<Vec<_>>()
            .join(" and "),
        ui::si(p.totals.reads as f64),
        ui::count(p.totals.updates),
        ui::count(reuse),
        ui::count(processed),
        p.fail_one_in,
        ui::count(p.injected_failures),
        ui::count(sum(|f| f.chunk_alloc_failures)),
        ui::count(sum(|f| f.node_alloc_failures)),
        ui::count(sum(|f| f.fallback_nodes)),
        ui::count(sum(|f| f.synchronous)),
        ui::count(sum(|f| f.given_back)),
    )
}

/// The summary's line for `torture kvfree`.
fn kvfree_line(k: &torture::kvfree::Report) -> String {
    format!(
        "  torture kvfree: {} ({} errors; {} reads, {} elements freed by kvfree, {} objects in all; \
         1 in {} allocations failed ({} injected), fallbacks: {})\n",
        verdict(k.passed()),
        ui::count(k.totals.errors),
        ui::si(k.totals.reads as f64),
        ui::count(k.released),
        ui::count(k.kvfree.objects_queued),
        k.fail_one_in,
        ui::count(k.injected_failures),
        k.kvfree.fallbacks()
    )
}

fn map_line(m: &torture::map::Report) -> String {
    let sum = |f: fn(&torture::map::FlavorReport) -> u64| m.runs.iter().map(f).sum::<u64>();
    format!(
        "  torture map: {} ({} errors; on {}: {} reads, {} iterations, {} updates, {} resizes; \
         {} allocation failures injected; every value made was dropped once: {})\n",
        verdict(m.passed()),
        ui::count(m.errors),
        m.runs
            .iter()
            .map(|r| r.flavor)
            .collect::<Vec<_>>()
            .join(" and "),
        ui::si(sum(|r| r.reads) as f64),
        ui::count(sum(|r| r.iterations)),
        ui::count(sum(|r| r.updates)),
        ui::count(sum(|r| r.resizes)),
        ui::count(m.injected_failures),
        if sum(|r| r.values_made) == sum(|r| r.values_dropped) {
            "yes"
        } else {
            "NO"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_line_compares_with_crossbeam() {
        let p = grace_bench::ListParams {
            threads: 2,
            keys: LIST_KEYS,
            read_pct: LIST_READS,
            duration: LIST_ROUND,
        };
        let row = |name: &str, rate: f64, peak: u64| {
            let mut r = ListResult::failed(name, &p, String::new());
            (r.note, r.ops_per_s, r.peak_unreclaimed) = (None, rate, peak);
            r
        };
        let list = [
            row("grace-kvfree", 2e6, 50),
            row("crossbeam-epoch", 1e6, 100),
        ];
        let line = list_line(&list);
        assert!(line.contains("1,000 keys, 50% reads, 2 threads"), "{line}");
        assert!(
            line.contains("grace-kvfree 2.00x") && line.contains("grace-kvfree 0.50x"),
            "{line}"
        );
        assert!(!line.contains("crossbeam-epoch ("), "{line}");
        assert!(list_line(&[]).is_empty());
    }

    #[test]
    fn tour_threads_grow_with_the_machine_up_to_four() {
        assert_eq!(thread_counts(1), vec![1, 2]);
        assert_eq!(thread_counts(2), vec![1, 2]);
        assert_eq!(thread_counts(3), vec![1, 2, 3]);
        assert_eq!(thread_counts(64), vec![1, 2, 4]);
    }
}
