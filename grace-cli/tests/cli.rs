//! End-to-end tests of the `grace` binary: the torture passes, catches an injected early
//! free, works on the fence fallback; bad arguments and bad settings exit with status 2
//! without a panic; the benchmark's JSON has the agreed shape. About 10 s in all.

use serde_json::Value;
use std::process::{Command, Output};

fn grace(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grace"));
    cmd.args(args);
    // A GRACE_* setting from the developer's shell must not change what is tested.
    for var in ["GRACE_NO_MEMBARRIER", "GRACE_LAZY_MS", "GRACE_CB_WORKERS"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the grace binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[test]
fn torture_passes() {
    let o = grace(&["torture", "rcu", "--duration", "2s", "--json"], &[]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}\n{}", stderr(&o));
    assert_eq!(v["flavor"], "rcu");
    assert_eq!(u64_of(&v, "errors"), 0, "{v}");
    assert!(u64_of(&v, "grace_periods") > 0, "{v}");
    assert!(u64_of(&v, "reads") > 0, "{v}");
    assert!(u64_of(&v, "updates") > 0, "{v}");
    let pipe: Vec<u64> = v["pipe"]
        .as_array()
        .expect("pipe is an array")
        .iter()
        .map(|c| c.as_u64().expect("pipe holds counts"))
        .collect();
    assert_eq!(pipe.len(), 11, "{v}");
    assert!(pipe[2..].iter().all(|&c| c == 0), "{v}");
    assert_eq!(pipe.iter().sum::<u64>(), u64_of(&v, "reads"));
    for key in ["duration_s", "expedited_grace_periods", "callbacks_invoked"] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
}

#[test]
fn torture_catches_an_injected_early_free() {
    let o = grace(
        &[
            "torture",
            "rcu",
            "--duration",
            "3s",
            "--inject-early-free",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_eq!(o.status.code(), Some(1), "{v}\n{}", stderr(&o));
    assert!(u64_of(&v, "errors") > 0, "{v}");
    assert!(u64_of(&v, "pipe_errors") > 0, "{v}");
}

#[test]
fn torture_passes_on_the_fence_fallback() {
    let o = grace(
        &["torture", "rcu", "--duration", "1s", "--json"],
        &[("GRACE_NO_MEMBARRIER", "1")],
    );
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}\n{}", stderr(&o));
    assert_eq!(u64_of(&v, "errors"), 0);
    assert_eq!(v["barrier_mode"], "fence");
}

#[test]
fn a_bad_duration_is_refused() {
    for bad in ["banana", "0", "10parsecs"] {
        let o = grace(&["torture", "rcu", "--duration", bad], &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("duration"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
}

#[test]
fn an_unknown_suite_is_refused() {
    let o = grace(&["bench", "nosuch"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn a_bad_setting_is_refused() {
    let o = grace(
        &["torture", "rcu", "--duration", "1s"],
        &[("GRACE_LAZY_MS", "soon")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("GRACE_LAZY_MS"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "nothing ran");
}

#[test]
fn bench_json_has_the_agreed_shape() {
    let o = grace(
        &[
            "bench",
            "read",
            "--threads",
            "1",
            "--duration-ms",
            "20",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}\n{}", stderr(&o));
    assert_eq!(v["suite"], "read");
    let results = v["results"].as_array().expect("results is an array");
    let grace = results
        .iter()
        .find(|r| r["impl"] == "grace-rcu")
        .unwrap_or_else(|| panic!("no grace-rcu row in {v}"));
    assert_eq!(grace["threads"], 1);
    assert!(grace["ns_per_op"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(grace["ops_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    for r in results {
        for key in ["impl", "threads", "ns_per_op", "ops_per_s", "note"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    assert!(v["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(v["machine"]["os"].is_string(), "{v}");
    assert!(v["date"].is_string(), "{v}");
}
