//! Smoke test: every suite runs with tiny settings and reports every expected
//! implementation with finite, positive figures; the SRCU rows are there and their targets
//! can be computed.

use std::time::Duration;

use grace_bench::{
    check_targets, expected_impls, liburcu_status, planned_steps, run_call, run_read, run_sync,
    BenchResult, Options, TARGETS,
};

fn tiny() -> Options {
    Options {
        threads: vec![1, 2],
        duration: Duration::from_millis(20),
    }
}

/// A suite's entry point.
type Suite = fn(&Options, &mut dyn FnMut(&str)) -> Vec<BenchResult>;

/// Runs `suite` and checks its rows against `expected_impls`; returns them.
fn check(suite: &str, run: Suite) -> Vec<BenchResult> {
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
    rows
}

/// Every target of `suite` is evaluated at both thread counts with a finite ratio.
fn check_suite_targets(suite: &str, rows: &[BenchResult]) -> Vec<grace_bench::TargetCheck> {
    let checks = check_targets(rows);
    let expected = TARGETS.iter().filter(|t| t.suite == suite).count();
    assert_eq!(checks.len(), expected * 2, "{checks:?}");
    for c in &checks {
        assert!(c.ratio.is_finite() && c.ratio > 0.0, "{c:?}");
        assert!(c.met().is_some(), "{c:?}");
    }
    checks
}

#[test]
fn read_suite() {
    let rows = check("read", run_read);
    for name in ["grace-srcu", "grace-srcu-lite"] {
        assert!(expected_impls("read").contains(&name), "{name}");
    }
    // Timing targets are reported, not asserted: 20 ms on a shared machine is noise.
    check_suite_targets("read", &rows);
}

#[test]
fn sync_suite() {
    let rows = check("sync", run_sync);
    for name in [
        "grace-srcu-sync",
        "grace-srcu-lite-sync",
        "grace-srcu-sync-cross",
    ] {
        assert!(expected_impls("sync").contains(&name), "{name}");
    }
    // Were domain B's grace periods to wait for domain A's blocked reader, the cross row would
    // be a skip notice (which `check` refuses) or thousands of times the plain one; noise on a
    // busy machine stays far below this bound.
    for c in check_suite_targets("sync", &rows) {
        assert!(c.ratio < 20.0, "{c:?}");
    }
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
