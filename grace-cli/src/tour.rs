//! `grace` with no subcommand: the tour, about a minute that shows what the library is.
//!
//! First the correctness story (a 15-second `torture rcu`), then the performance story (the
//! headline `read`, `sync` and `call` benchmarks against the peers at 1 and 2 threads, and
//! at up to 4 on machines with more CPUs), then one summary table: the torture verdict and,
//! per suite and thread count, grace's figure and its ratio to each peer. The exit status is
//! the torture's: non-zero when it found errors.

use crate::bench::{self, Suite, GRACE_IMPL};
use crate::torture;
use crate::ui::{self, Align, Table};
use grace_bench::{BenchResult, Options};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long the tour tortures.
const TORTURE: Duration = Duration::from_secs(15);

/// The time the tour gives the `read` and `sync` measurements together; each measurement
/// gets its share, within [`MEASUREMENT_MIN`]..=[`MEASUREMENT_MAX`]. (The `call` suite sizes
/// its work from the same duration and takes a second or two in all.)
const BENCH_BUDGET: Duration = Duration::from_secs(40);
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

/// Run the tour.
pub fn run() -> ExitCode {
    let started = Instant::now();
    let cpus = grace::sys::num_cpus();
    ui::out(&format!(
        "grace tour: {} s of torture, then the headline benchmarks ({} CPUs)\n\n",
        TORTURE.as_secs(),
        cpus
    ));

    let topts = torture::Options {
        duration: TORTURE,
        readers: torture::Options::default_readers(),
        inject_early_free: false,
    };
    let bar = torture::progress_bar(&topts, true);
    let report = torture::run(&topts, &bar);
    bar.finish_and_clear();
    ui::out(&report.human());
    ui::out("\n");

    bench::print_liburcu_notice();
    let threads = thread_counts(cpus);
    let opts = Options {
        duration: measurement(&threads),
        threads,
    };
    let mut suites = Vec::new();
    for suite in Suite::ALL {
        let results = bench::run(suite, &opts, true);
        ui::out(&bench::table(suite, &results));
        ui::out("\n");
        suites.push((suite, results));
    }

    ui::out(&summary(&report, &suites, started.elapsed()));
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The closing table: torture verdict, then grace's figure and its ratio to every peer.
fn summary(
    report: &torture::Report,
    suites: &[(Suite, Vec<BenchResult>)],
    took: Duration,
) -> String {
    let mut o = String::from("summary\n");
    o.push_str(&format!(
        "  torture rcu: {} ({} errors; {} reads, {} grace periods + {} expedited, {} updates in {:.0} s)\n",
        if report.passed() { "SUCCESS" } else { "FAILURE" },
        ui::count(report.errors),
        ui::si(report.reads as f64),
        ui::count(report.grace_periods),
        ui::count(report.expedited_grace_periods),
        ui::count(report.updates),
        report.duration_s
    ));
    let mut t = Table::new(&[
        ("suite", Align::Left),
        ("threads", Align::Right),
        ("grace-rcu ns/op", Align::Right),
        ("grace/peer", Align::Left),
    ]);
    for (suite, results) in suites {
        let mut threads: Vec<usize> = results.iter().map(|r| r.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        for n in threads {
            let grace = results
                .iter()
                .find(|r| r.impl_name == GRACE_IMPL && r.threads == n)
                .map_or(f64::NAN, |r| r.ns_per_op);
            let peers = results
                .iter()
                .filter(|r| r.threads == n && r.impl_name != GRACE_IMPL)
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
                ui::ns(grace),
                peers,
            ]);
        }
    }
    o.push_str(&t.render(2));
    o.push_str(&format!("  {}\n", bench::RATIO_LEGEND));
    o.push_str(&format!("  the tour took {:.0} s\n", took.as_secs_f64()));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tour_threads_grow_with_the_machine_up_to_four() {
        assert_eq!(thread_counts(1), vec![1, 2]);
        assert_eq!(thread_counts(2), vec![1, 2]);
        assert_eq!(thread_counts(3), vec![1, 2, 3]);
        assert_eq!(thread_counts(64), vec![1, 2, 4]);
    }
}
