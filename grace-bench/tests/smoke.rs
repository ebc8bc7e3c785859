//! Smoke test: every suite runs with tiny settings and reports every expected
//! implementation with finite, positive figures.

use std::time::Duration;

use grace_bench::{
    expected_impls, liburcu_status, planned_steps, run_call, run_read, run_sync, BenchResult,
    Options,
};

fn tiny() -> Options {
    Options {
        threads: vec![1, 2],
        duration: Duration::from_millis(20),
    }
}

/// A suite's entry point.
type Suite = fn(&Options, &mut dyn FnMut(&str)) -> Vec<BenchResult>;

/// Runs `suite` and checks its rows against `expected_impls`.
fn check(suite: &str, run: Suite) {
    let opts = tiny();
    let mut labels = Vec::new();
    let rows = run(&opts, &mut |l| labels.push(l.to_string()));
    for r in &rows {
        println!(
            "{:<5} {:<22} t={} {:>12.1} ns/op {:>14.0} ops/s {}",
            r.suite,
            r.impl_name,
            r.threads,
            r.ns_per_op,
            r.ops_per_s,
            r.note.as_deref().unwrap_or("")
        );
    }
    assert_eq!(labels.len(), planned_steps(suite, &opts), "{labels:?}");

    let expected: Vec<&str> = expected_impls(suite);
    if liburcu_status().is_ok() {
        assert!(
            expected.iter().any(|i| i.starts_with("liburcu")),
            "liburcu is available but not expected in {suite}"
        );
    } else {
        assert!(expected.iter().all(|i| !i.starts_with("liburcu")));
    }
    // The membarrier baseline may be refused by the kernel (seccomp, old
    // kernels); then its row is a skip notice.
    let may_skip = |r: &BenchResult| r.impl_name == "membarrier-syscall" && r.note.is_some();
    for threads in [1, 2] {
        for &name in &expected {
            let row = rows
                .iter()
                .find(|r| r.impl_name == name && r.threads == threads)
                .unwrap_or_else(|| panic!("{suite}: no row for {name} at {threads} threads"));
            assert_eq!(row.suite, suite);
            if may_skip(row) {
                continue;
            }
            assert!(
                row.is_measured() && row.ops_per_s.is_finite() && row.ops_per_s > 0.0,
                "{suite}: bad figures for {name} at {threads} threads: {row:?}"
            );
        }
    }
    assert_eq!(rows.len(), planned_steps(suite, &opts));
}

#[test]
fn read_suite() {
    check("read", run_read);
}

#[test]
fn sync_suite() {
    check("sync", run_sync);
}

#[test]
fn call_suite() {
    check("call", run_call);
}

#[test]
fn liburcu_status_matches_module() {
    assert_eq!(liburcu_status().is_ok(), grace_bench::liburcu::available());
    if let Err(why) = liburcu_status() {
        assert!(!why.is_empty());
    }
}
