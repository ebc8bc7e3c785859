//! `grace`: the command-line face of the grace RCU library.
//!
//! * `grace tour` runs the tour (about a minute: RCU and SRCU torture, then the headline
//!   benchmarks); `grace` alone prints the help, except when started by `cargo run` (as in
//!   `cargo run --release` from the repository), where it runs the tour;
//! * `grace torture rcu` runs rcutorture's pipeline check against `grace::rcu`;
//! * `grace torture srcu` runs it on five SRCU domains at once, one with a reader that sleeps
//!   100 ms in its section, and checks that the others' grace periods complete while it is
//!   inside;
//! * `grace torture pending` runs it through `Pending` (on RCU and on an SRCU domain), with
//!   `dequeue` reuse racing readers, and `grace torture kvfree` through `kvfree`, both under
//!   allocation-failure injection;
//! * `grace torture map` runs `grace::collections::HashMap` under readers that check every
//!   value, writers checked against their own models and a resizer forcing grow and shrink
//!   waves, with allocation failures injected;
//! * `grace bench read|sync|call|free|flood|reuse|list|map|rculist` compares grace with its peers.
//!
//! The binary's global allocator is the system allocator behind [`torture::kvfree::CanaryWatch`],
//! which lets `torture kvfree` see objects without drop glue being freed (one comparison per
//! deallocation).
//!
//! This file only parses arguments (clap) and dispatches. Before anything runs, the `GRACE_*`
//! environment is validated with [`grace::config::Config::from_env`]: the library itself
//! would only warn and fall back to defaults, but a tool whose figures depend on those
//! settings must refuse a malformed one (exit status 2, like a bad argument).
//!
//! Exit status: 0 success; 1 a torture test found errors; 2 a bad argument or `GRACE_*`
//! setting; 3 the torture test could not run (a thread failed to start or panicked).

mod bench;
mod child;
mod flood;
mod list;
mod map;
mod plot;
mod rculist;
mod torture;
mod tour;
mod ui;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: torture::kvfree::CanaryWatch = torture::kvfree::CanaryWatch;

#[derive(Parser, Debug)]
#[command(
    name = "grace",
    version,
    about = "Torture tests and peer benchmarks for the grace RCU library",
    long_about = "Torture tests and peer benchmarks for the grace RCU library.\n\n\
        `grace tour` runs the tour: 15 s of RCU torture, 5 s of SRCU torture, 3 s of \
        Pending and 2 s of kvfree torture (with allocation failures injected), then the \
        headline benchmarks against liburcu, crossbeam-epoch, seize and haphazard (with a short \
        run of the list benchmark), about a minute and a quarter in all (`cargo run --release` with no arguments runs it too). \
        Its targets bound the ratio of two rows (a grace row's ns/op over its reference's); \
        MISSED marks a target not met on this run, which does not change the exit status.\n\n\
        Environment: GRACE_NO_MEMBARRIER=1 (fence fallback), GRACE_LAZY_MS (call batching \
        delay, 1..=60000), GRACE_CB_WORKERS (1..=256)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Torture-test a flavor: rcutorture's pipeline check, exit status 1 on any error
    Torture {
        #[command(subcommand)]
        flavor: Flavor,
    },
    /// Benchmark grace against its peers (liburcu, crossbeam-epoch, seize, haphazard)
    Bench(Box<BenchArgs>),
    /// The tour: short tortures of every part, then the headline benchmarks, and a summary
    Tour,
}

#[derive(Subcommand, Debug)]
enum Flavor {
    /// The RCU flavor (grace::rcu)
    Rcu(RcuArgs),
    /// SRCU domains (grace::srcu): five at once, one with a reader sleeping 100 ms in its
    /// section; the others' grace periods must complete while it is inside
    Srcu(SrcuArgs),
    /// grace::pending::Pending on RCU and on an SRCU domain: the pipeline through every
    /// enqueue and processing mode, dequeue reuse racing readers, allocation failures injected
    Pending(PendingArgs),
    /// grace::kvfree: the pipeline through kvfree (objects with and without drop glue, inside
    /// and outside read-side sections), allocation failures injected
    Kvfree(KvfreeArgs),
    /// grace::collections::HashMap on RCU and an SRCU domain: readers check every value while
    /// writers insert, update and remove and a resizer forces grow and shrink waves,
    /// allocation failures injected
    Map(MapArgs),
}

#[derive(Args, Debug)]
struct MapArgs {
    /// Reader threads per flavor [default: the number of CPUs, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    readers: Option<u32>,
    #[command(flatten)]
    deferral: DeferralArgs,
    #[command(flatten)]
    run: TortureArgs,
}

#[derive(Args, Debug)]
struct PendingArgs {
    /// Reader threads [default: the number of CPUs, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    readers: Option<u32>,
    /// The flavor(s) to run on, in turn, each for an equal share of --duration [default: rcu,srcu]
    #[arg(long, value_enum, value_delimiter = ',')]
    flavor: Vec<torture::pending::PendingFlavor>,
    #[command(flatten)]
    deferral: DeferralArgs,
    #[command(flatten)]
    run: TortureArgs,
}

#[derive(Args, Debug)]
struct KvfreeArgs {
    /// Reader threads [default: the number of CPUs, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    readers: Option<u32>,
    #[command(flatten)]
    deferral: DeferralArgs,
    #[command(flatten)]
    run: TortureArgs,
}

/// What the deferral tortures (pending, kvfree) take besides the common options.
#[derive(Args, Debug)]
struct DeferralArgs {
    /// Make one in N of grace's fallible allocations fail, on every thread (0 = off)
    #[arg(long, value_name = "N", default_value_t = torture::kvfree::DEFAULT_FAIL_ONE_IN)]
    fail_one_in: u32,
}

#[derive(Args, Debug)]
struct RcuArgs {
    /// Reader threads [default: the number of CPUs, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    readers: Option<u32>,
    #[command(flatten)]
    run: TortureArgs,
}

#[derive(Args, Debug)]
struct SrcuArgs {
    /// Reader threads per domain [default: 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    readers: Option<u32>,
    #[command(flatten)]
    run: TortureArgs,
}

/// What every torture takes.
#[derive(Args, Debug)]
struct TortureArgs {
    /// How long to run: 10s, 500ms, 2m, 1.5s, or plain seconds (5)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Print one JSON object on standard output instead of the report
    #[arg(long)]
    json: bool,
    /// Advance removed elements without waiting for grace periods, to prove the check fires
    #[arg(long, hide = true)]
    inject_early_free: bool,
}

impl TortureArgs {
    /// The options of a run with `readers` reader threads (per pipeline), `default()` when
    /// not given.
    fn options(&self, readers: Option<u32>, default: fn() -> usize) -> torture::Options {
        torture::Options {
            duration: self.duration,
            readers: readers.map_or_else(default, |n| n as usize),
            inject_early_free: self.inject_early_free,
            fail_one_in: 0,
        }
    }

    /// Run the torture `run` of `flavor` (with a progress bar unless `--json`), print its
    /// report; the exit status is its verdict.
    fn run<R: torture::Verdict>(
        &self,
        flavor: &str,
        opts: &torture::Options,
        run: impl FnOnce(&torture::Options, &indicatif::ProgressBar) -> R,
    ) -> ExitCode {
        let bar = torture::progress_bar(flavor, opts, !self.json);
        let report = run(opts, &bar);
        bar.finish_and_clear();
        // What grace holds back at the end of the run, and why (`grace::report()`).
        let grace_report = grace::report();
        if self.json {
            let text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "null".into());
            ui::out(&format!("{}\n", with_grace_report(&text, &grace_report)));
        } else {
            ui::out(&report.human());
            ui::out(&format!("\n{grace_report}"));
        }
        if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// `json`, a pretty-printed object, with `grace_report` (the library's own JSON) added as
/// its last field; the fields before it keep their order. Anything else is left as it is.
fn with_grace_report(json: &str, report: &grace::report::Report) -> String {
    match json.trim_end().strip_suffix('}') {
        Some(head) if head.trim_end() != "{" => format!(
            "{},\n  \"grace_report\": {}\n}}",
            head.trim_end(),
            report.to_json()
        ),
        _ => json.to_string(),
    }
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Which suite to run
    #[arg(value_enum)]
    suite: bench::Suite,
    /// Thread counts, comma-separated [default: 1 and the number of CPUs; flood: 1]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Vec<u32>,
    /// Milliseconds per measurement (after its warm-up) [default: 300]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600_000), conflicts_with = "duration")]
    duration_ms: Option<u64>,
    /// Per measurement, as a duration: 300ms, 2s, 10 (seconds) [default: 300ms; flood: 10s per
    /// implementation and thread count; list: per round, one warm-up and three timed rounds
    /// per measurement]
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// flood: reader threads running read-side sections beside the flooders [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=256))]
    readers: Option<u32>,
    /// list, map: key ranges, comma-separated [default: list 1000,10000; map 1000,1000000]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    keys: Vec<u64>,
    /// list, map, rculist: read shares in percent, comma-separated; the rest are writes (list,
    /// map: half inserts, half removes) [default: list 0,50,90; map 100,99,90,50; rculist
    /// 100,99,90]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(0..=100))]
    reads: Vec<u32>,
    /// map: key distributions, comma-separated: uniform, zipf (s = 0.99) [default: uniform,zipf]
    #[arg(long, value_delimiter = ',', value_parser = parse_dist)]
    dist: Vec<grace_bench::Dist>,
    /// map: keys the resize rows' writer inserts from a capacity of 16; 0 leaves the resize
    /// rows out [default: 1000000]
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    resize_keys: Option<u64>,
    /// rculist: list lengths, comma-separated [default: 16,1000]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    lengths: Vec<u64>,
    /// Print one JSON object on standard output instead of the table
    #[arg(long)]
    json: bool,
    /// flood: the memory-pressure set, with this memory budget for its `+budget` rows (64MiB,
    /// 512KiB, 1G or bytes): grace's kvfree, call on RCU and on an SRCU domain and Pending
    /// with a closure, each with and without the budget, beside the peers; a reader sleeps
    /// 50 ms inside its section every second, and each row reports when its pending memory was
    /// back under 1 MiB after the flood
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    budget: Option<u64>,
    /// flood: also write an SVG chart of every row's pending bytes over time to PATH; map: of
    /// ops/s against the read share, one line per map [default PATH: flood.svg, map.svg]
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    plot: Option<std::path::PathBuf>,
    /// flood: run only these implementations, comma-separated (names as in the table, e.g.
    /// grace-call-srcu,grace-pending-closure+budget) [default: every row of the set]
    #[arg(long, value_delimiter = ',', value_name = "IMPLS")]
    impls: Vec<String>,
    /// flood, list, map, rculist: run this one implementation (first thread count, key range,
    /// read share...) in this process and print its result as JSON (the parent runs each
    /// measurement in a child process this way)
    #[arg(long, hide = true, value_name = "IMPL", alias = "flood-child")]
    child: Option<String>,
    /// map: with --child, run a resize row instead of a throughput row
    #[arg(long, hide = true, requires = "child")]
    resize_child: bool,
}

/// Parse a key distribution (`uniform` or `zipf`).
fn parse_dist(s: &str) -> Result<grace_bench::Dist, String> {
    s.parse()
}

/// Parse a size: bytes with an optional unit, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`
/// (all powers of 1024), as `GRACE_BUDGET` takes it; zero and garbage are errors.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(0),
        "k" | "kb" | "kib" => Some(10),
        "m" | "mb" | "mib" => Some(20),
        "g" | "gb" | "gib" => Some(30),
        _ => None,
    };
    match (num.parse::<u64>(), shift) {
        (Ok(0), Some(_)) => Err("the size must be greater than zero".into()),
        (Ok(n), Some(shift)) => n
            .checked_mul(1 << shift)
            .ok_or_else(|| format!("{s:?} is too large")),
        _ => Err(format!(
            "expected a size such as 64MiB, 512KiB, 1G or 1048576 (bytes), got {s:?}"
        )),
    }
}

/// `--plot` given without a path (an empty one): `default`.
fn default_plot(path: std::path::PathBuf, default: &str) -> std::path::PathBuf {
    if path.as_os_str().is_empty() {
        default.into()
    } else {
        path
    }
}

/// The longest `--duration` accepted: one day.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The shortest `--duration` accepted.
const MIN_DURATION: Duration = Duration::from_millis(1);

/// Parse `10s`, `500ms`, `2m`, `1h`, `1.5s` or plain seconds (`5`); zero and garbage are
/// errors (clap prints them, naming the option).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let value: f64 = num.parse().unwrap_or(f64::NAN);
    let secs = value * scale;
    if !secs.is_finite() || num.is_empty() {
        return Err(format!(
            "expected a duration such as 10s, 500ms, 2m or 5 (seconds), got {s:?}"
        ));
    }
    if secs <= 0.0 {
        return Err("the duration must be greater than zero".into());
    }
    // Compared as seconds before converting: `Duration::from_secs_f64` panics past u64::MAX s.
    if secs > MAX_DURATION.as_secs_f64() {
        return Err("the duration must be at most 24h".into());
    }
    let d = Duration::from_secs_f64(secs);
    if d < MIN_DURATION {
        return Err("the duration must be at least 1ms (a shorter run checks nothing)".into());
    }
    Ok(d)
}

/// Whether `cargo run` started this process (it sets `CARGO_PKG_NAME` for the program it
/// runs): `cargo run --release` from the repository keeps running the tour, while an installed
/// `grace` with no subcommand prints its help like other tools.
fn started_by_cargo_run() -> bool {
    std::env::var_os("CARGO_PKG_NAME").is_some_and(|n| n == env!("CARGO_PKG_NAME"))
}

fn main() -> ExitCode {
    // Bad arguments: clap prints the error and exits with status 2.
    let cli = Cli::parse();
    if let Err(e) = grace::config::Config::from_env() {
        eprintln!("grace: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Tour) => tour::run(),
        None if started_by_cargo_run() => tour::run(),
        None => {
            use clap::CommandFactory;
            // `print_help` fails only when stdout is closed; there is nothing to report then.
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
        Some(Command::Torture {
            flavor: Flavor::Rcu(a),
        }) => {
            let opts = a.run.options(a.readers, torture::rcu::default_readers);
            a.run.run("rcu", &opts, torture::rcu::run)
        }
        Some(Command::Torture {
            flavor: Flavor::Srcu(a),
        }) => {
            let opts = a.run.options(a.readers, torture::srcu::default_readers);
            a.run.run("srcu", &opts, torture::srcu::run)
        }
        Some(Command::Torture {
            flavor: Flavor::Pending(a),
        }) => {
            let mut opts = a.run.options(a.readers, torture::pending::default_readers);
            opts.fail_one_in = a.deferral.fail_one_in;
            let flavors = if a.flavor.is_empty() {
                vec![
                    torture::pending::PendingFlavor::Rcu,
                    torture::pending::PendingFlavor::Srcu,
                ]
            } else {
                a.flavor.clone()
            };
            a.run.run("pending", &opts, |o, bar| {
                torture::pending::run(o, &flavors, bar)
            })
        }
        Some(Command::Torture {
            flavor: Flavor::Kvfree(a),
        }) => {
            let mut opts = a.run.options(a.readers, torture::kvfree::default_readers);
            opts.fail_one_in = a.deferral.fail_one_in;
            a.run.run("kvfree", &opts, torture::kvfree::run)
        }
        Some(Command::Torture {
            flavor: Flavor::Map(a),
        }) => {
            if a.run.inject_early_free {
                eprintln!("grace: torture map has no --inject-early-free (its loom models prove the checks instead)");
                return ExitCode::from(2);
            }
            let mut opts = a.run.options(a.readers, torture::map::default_readers);
            opts.fail_one_in = a.deferral.fail_one_in;
            a.run.run("map", &opts, torture::map::run)
        }
        Some(Command::Bench(a)) => {
            let threads: Vec<usize> = a.threads.iter().map(|&n| n as usize).collect();
            let duration = a.duration.or(a.duration_ms.map(Duration::from_millis));
            if a.suite == bench::Suite::Flood {
                let opts = flood::FloodOptions {
                    threads: if threads.is_empty() { vec![1] } else { threads },
                    readers: a.readers.map_or(flood::DEFAULT_READERS, |n| n as usize),
                    duration: duration.unwrap_or(flood::DEFAULT_DURATION),
                    budget: a.budget,
                    plot: a.plot.map(|p| default_plot(p, "flood.svg")),
                    impls: a.impls,
                };
                return match a.child {
                    Some(name) => flood::child_main(&name, &opts),
                    None => flood::main(&opts, a.json),
                };
            }
            if a.suite == bench::Suite::Map {
                if a.budget.is_some() || !a.impls.is_empty() {
                    eprintln!(
                        "grace: --budget and --impls are options of `grace bench flood` only"
                    );
                    return ExitCode::from(2);
                }
                let opts = map::MapOptions {
                    threads: if threads.is_empty() {
                        vec![1, 2]
                    } else {
                        threads
                    },
                    keys: if a.keys.is_empty() {
                        grace_bench::map::MAP_KEYS.to_vec()
                    } else {
                        a.keys.clone()
                    },
                    reads: if a.reads.is_empty() {
                        grace_bench::map::MAP_READS.to_vec()
                    } else {
                        a.reads.clone()
                    },
                    dists: if a.dist.is_empty() {
                        grace_bench::map::MAP_DISTS.to_vec()
                    } else {
                        a.dist.clone()
                    },
                    resize_keys: a.resize_keys.unwrap_or(grace_bench::map::RESIZE_KEYS),
                    duration: duration.unwrap_or(grace_bench::Options::default().duration),
                    plot: a.plot.map(|p| default_plot(p, "map.svg")),
                };
                return match a.child {
                    Some(name) => map::child_main(&name, &opts, a.resize_child),
                    None => map::main(&opts, a.json),
                };
            }
            if a.budget.is_some() || a.plot.is_some() || !a.impls.is_empty() {
                eprintln!(
                    "grace: --budget and --impls are options of `grace bench flood` only, --plot \
                     of `grace bench flood` and `grace bench map`"
                );
                return ExitCode::from(2);
            }
            if a.suite == bench::Suite::Rculist {
                let opts = rculist::RculistOptions {
                    threads: if threads.is_empty() {
                        vec![1, 2]
                    } else {
                        threads
                    },
                    lengths: if a.lengths.is_empty() {
                        grace_bench::rculist::RCULIST_LENGTHS.to_vec()
                    } else {
                        a.lengths.iter().map(|&n| n as usize).collect()
                    },
                    reads: if a.reads.is_empty() {
                        grace_bench::rculist::RCULIST_READS.to_vec()
                    } else {
                        a.reads.clone()
                    },
                    duration: duration.unwrap_or(grace_bench::Options::default().duration),
                };
                return match a.child {
                    Some(name) => rculist::child_main(
                        &name,
                        &grace_bench::RculistParams {
                            threads: opts.threads[0],
                            len: opts.lengths[0],
                            read_pct: opts.reads[0],
                            duration: opts.duration,
                        },
                    ),
                    None => rculist::main(&opts, a.json),
                };
            }
            if a.suite == bench::Suite::List {
                let opts = list::ListOptions {
                    threads: if threads.is_empty() {
                        grace_bench::Options::default().threads
                    } else {
                        threads
                    },
                    keys: if a.keys.is_empty() {
                        grace_bench::LIST_KEYS.to_vec()
                    } else {
                        a.keys.clone()
                    },
                    reads: if a.reads.is_empty() {
                        grace_bench::LIST_READS.to_vec()
                    } else {
                        a.reads.clone()
                    },
                    duration: duration.unwrap_or(grace_bench::Options::default().duration),
                };
                return match a.child {
                    Some(name) => list::child_main(
                        &name,
                        &grace_bench::ListParams {
                            threads: opts.threads[0],
                            keys: opts.keys[0],
                            read_pct: opts.reads[0],
                            duration: opts.duration,
                        },
                    ),
                    None => list::main(&opts, a.json),
                };
            }
            let defaults = grace_bench::Options::default();
            let opts = grace_bench::Options {
                threads: if threads.is_empty() {
                    defaults.threads
                } else {
                    threads
                },
                duration: duration.unwrap_or(defaults.duration),
            };
            bench::main(a.suite, &opts, a.json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_grace_report_joins_the_json_object_last() {
        let r = grace::report();
        let text = with_grace_report("{\n  \"b\": 1,\n  \"a\": [2]\n}", &r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["b"], 1);
        assert!(v["grace_report"]["grace_period"].is_object());
        assert!(text.find("\"b\"").unwrap() < text.find("\"a\"").unwrap());
        assert_eq!(with_grace_report("{}", &r), "{}");
        assert_eq!(with_grace_report("null", &r), "null");
    }

    #[test]
    fn durations_parse() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(" 3 s "), Duration::from_secs(3));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            "banana",
            "s",
            "10x",
            "0",
            "0s",
            "0.0",
            "-1s",
            "1.2.3",
            "nan",
            "inf",
            "1e3",
            "99999h",
            "0.0000000001ms",
            "0.0000001s",
            "0.5ms",
            "99999999999999999999s",
            "18446744073709551616",
            "1e400",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sizes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size(" 512 KiB "), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in [
            "",
            "0",
            "0MiB",
            "MiB",
            "12XB",
            "-1",
            "1.5M",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
