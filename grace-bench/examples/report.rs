//! Prints all three suites as a plain table.
//!
//! ```text
//! cargo run -p grace-bench --release --example report -- [DURATION_MS] [THREADS...]
//! ```
//!
//! Defaults: 300 ms per measurement, threads 1 and 2.

use std::time::Duration;

use grace_bench::{liburcu_status, run_suite, Options, SUITES};

fn main() {
    let mut args = std::env::args().skip(1);
    let ms: u64 = args.next().map_or(300, |a| a.parse().expect("DURATION_MS"));
    let mut threads: Vec<usize> = args.map(|a| a.parse().expect("THREADS")).collect();
    if threads.is_empty() {
        threads = vec![1, 2];
    }
    let opts = Options {
        threads,
        duration: Duration::from_millis(ms),
    };
    if let Err(why) = liburcu_status() {
        println!("liburcu peer skipped: {why}");
    }
    for suite in SUITES {
        let rows = run_suite(suite, &opts, &mut |label| eprintln!("  {label}")).expect("suite");
        println!(
            "{:<5} {:<22} {:>3} {:>14} {:>16}  note",
            "suite", "impl", "t", "ns/op", "ops/s"
        );
        for r in rows {
            println!(
                "{:<5} {:<22} {:>3} {:>14.2} {:>16.0}  {}",
                r.suite,
                r.impl_name,
                r.threads,
                r.ns_per_op,
                r.ops_per_s,
                r.note.as_deref().unwrap_or("")
            );
        }
        println!();
    }
}
