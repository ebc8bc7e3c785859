//! End-to-end tests of the `grace` binary: the RCU, SRCU, `Pending` and `kvfree` tortures pass,
//! catch an injected early free, work on the fence fallback; the SRCU torture reports its
//! isolation figure; the deferral tortures inject allocation failures, take every fallback and
//! (`Pending`) recycle objects through `dequeue`; bad arguments and bad settings exit with
//! status 2 without a panic; the benchmarks' JSON has the agreed shape, SRCU rows, `call`'s
//! free64 rows, `free`, `reuse`, `flood`, `list`, `map` and `rculist` rows and targets included. About 40 s in
//! all.
//!
//! The torture runs take turns ([`torture`]): each one loads the 2-CPU machine fully, and the
//! SRCU torture measures grace-period latencies that a second torture running beside it
//! would inflate.

use serde_json::Value;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Run a torture (any `grace torture ...` command), one at a time.
fn torture(args: &[&str], env: &[(&str, &str)]) -> Output {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    grace(args, env)
}

fn grace(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grace"));
    cmd.args(args);
    // A GRACE_* setting from the developer's shell must not change what is tested.
    for var in [
        "GRACE_NO_MEMBARRIER",
        "GRACE_LAZY_MS",
        "GRACE_CB_WORKERS",
        "GRACE_PENDING",
        "GRACE_BUDGET",
    ] {
        cmd.env_remove(var);
    }
    // As when run by hand: `cargo test` sets it, and `grace` alone would run the tour.
    cmd.env_remove("CARGO_PKG_NAME");
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

/// Check that `o` exited with status `code`; its JSON `v` and standard error show otherwise.
fn assert_exit(o: &Output, v: &Value, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{v}\n{}", stderr(o));
}

/// Run the torture `args` (with `env`), check it exited with status `code`, and return its JSON.
fn torture_json(args: &[&str], env: &[(&str, &str)], code: i32) -> Value {
    let o = torture(args, env);
    let v = json(&o);
    assert_exit(&o, &v, code);
    v
}

/// `grace torture <flavor> --duration <duration> --inject-early-free --json`, checked to fail
/// with status 1.
fn early_free_json(flavor: &str, duration: &str) -> Value {
    torture_json(
        &[
            "torture",
            flavor,
            "--duration",
            duration,
            "--inject-early-free",
            "--json",
        ],
        &[],
        1,
    )
}

/// One `torture <flavor> --duration <duration> --json` run, kept in `run` and shared by the
/// tests that read it.
fn shared_run(
    run: &'static OnceLock<(Output, Value)>,
    flavor: &str,
    duration: &str,
) -> &'static (Output, Value) {
    run.get_or_init(|| {
        let o = torture(&["torture", flavor, "--duration", duration, "--json"], &[]);
        let v = json(&o);
        (o, v)
    })
}

/// The counts of the JSON array `a`.
fn counts(a: &Value) -> Vec<u64> {
    a.as_array()
        .unwrap_or_else(|| panic!("{a} is not an array"))
        .iter()
        .map(|c| c.as_u64().expect("counts"))
        .collect()
}

/// The object of the array `v[arr]` whose `key` is `value`.
fn find<'a>(v: &'a Value, arr: &str, key: &str, value: &str) -> &'a Value {
    v[arr]
        .as_array()
        .unwrap_or_else(|| panic!("{arr} is not an array in {v}"))
        .iter()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no {arr} with {key} {value} in {v}"))
}

/// Check that a bench's JSON `v` has a measured row for each of `names`.
fn assert_measured<'a>(v: &Value, names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        let r = find(v, "results", "impl", name);
        assert!(r["ns_per_op"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
}

/// Check that `o` was refused with status 2, a message on standard error that names
/// `needle`, and no panic; `ctx` says which case it was. Its standard error.
fn assert_refused(o: &Output, needle: &str, ctx: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{ctx}: {err}");
    assert!(err.contains(needle), "{ctx}: {err}");
    assert!(!err.contains("panicked"), "{ctx}: {err}");
    err
}

#[test]
fn torture_passes() {
    let v = torture_json(&["torture", "rcu", "--duration", "2s", "--json"], &[], 0);
    assert_eq!(v["flavor"], "rcu");
    assert_eq!(u64_of(&v, "errors"), 0, "{v}");
    assert!(u64_of(&v, "grace_periods") > 0, "{v}");
    assert!(u64_of(&v, "reads") > 0, "{v}");
    assert!(u64_of(&v, "updates") > 0, "{v}");
    let pipe = clean_pipe(&v);
    assert_eq!(pipe.iter().sum::<u64>(), u64_of(&v, "reads"));
    for key in ["duration_s", "expedited_grace_periods", "callbacks_invoked"] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
}

#[test]
fn torture_catches_an_injected_early_free() {
    let v = early_free_json("rcu", "3s");
    assert!(u64_of(&v, "errors") > 0, "{v}");
    assert!(u64_of(&v, "pipe_errors") > 0, "{v}");
}

#[test]
fn torture_passes_on_the_fence_fallback() {
    let v = torture_json(
        &["torture", "rcu", "--duration", "1s", "--json"],
        &[("GRACE_NO_MEMBARRIER", "1")],
        0,
    );
    assert_eq!(u64_of(&v, "errors"), 0);
    assert_eq!(v["barrier_mode"], "fence");
}

/// The reader pipe histogram of `v`, checked: `PIPE_LEN + 1` counts, none past stage 1.
fn clean_pipe(v: &Value) -> Vec<u64> {
    let pipe = counts(&v["pipe"]);
    assert_eq!(pipe.len(), 11, "{v}");
    assert!(pipe[2..].iter().all(|&c| c == 0), "{v}");
    pipe
}

/// One 3-second `torture srcu --json` run, shared by the tests that read it.
fn srcu_run() -> &'static (Output, Value) {
    static RUN: OnceLock<(Output, Value)> = OnceLock::new();
    shared_run(&RUN, "srcu", "3s")
}

#[test]
fn srcu_torture_passes_on_every_domain() {
    let (o, v) = srcu_run();
    assert_exit(o, v, 0);
    assert_eq!(v["flavor"], "srcu");
    assert_eq!(u64_of(v, "errors"), 0, "{v}");
    let pipe = clean_pipe(v);
    assert_eq!(pipe.iter().sum::<u64>(), u64_of(v, "reads"));
    let domains = v["domains"].as_array().expect("domains is an array");
    let names: Vec<&str> = domains.iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(
        names,
        ["dynamic-0", "dynamic-1", "dynamic-2", "static", "lite"],
        "{v}"
    );
    assert_eq!(domains[3]["storage"], "static");
    assert_eq!(domains[4]["readers_kind"], "lite");
    for d in domains {
        for key in [
            "reads",
            "raw_sections",
            "updates",
            "grace_periods",
            "callbacks_invoked",
        ] {
            assert!(u64_of(d, key) > 0, "{key} is zero in {d}");
        }
        assert_eq!(u64_of(d, "errors"), 0, "{d}");
        clean_pipe(d);
        if d["blocked"] == false {
            // Every API of the rotation was used (the blocked domain, whose grace periods
            // take 100 ms, gets through fewer updates).
            let modes = d["updates_by_mode"].as_object().expect("updates_by_mode");
            for m in [
                "sync",
                "expedited",
                "poll",
                "cond_sync",
                "get_state_poll",
                "call",
                "call_hurry",
                "barrier",
                "raw_handoff",
            ] {
                assert!(
                    modes.get(m).and_then(Value::as_u64).unwrap_or(0) > 0,
                    "{m} unused in {d}"
                );
            }
        }
    }
}

#[test]
fn srcu_json_reports_the_blocked_reader_isolation() {
    let (o, v) = srcu_run();
    assert_exit(o, v, 0);
    let iso = &v["isolation"];
    let f = |path: &[&str]| {
        let mut x = iso;
        for k in path {
            x = &x[*k];
        }
        x.as_f64()
            .unwrap_or_else(|| panic!("isolation.{} missing in {iso}", path.join(".")))
    };
    assert_eq!(iso["blocked_domain"], "dynamic-2", "{iso}");
    assert_eq!(iso["passed"], true, "{iso}");
    assert_eq!(f(&["reader_sleep_ms"]), 100.0);
    // The blocked domain's grace periods waited for the sleeping reader...
    assert!(f(&["blocked_sync", "samples"]) >= 1.0, "{iso}");
    assert!(f(&["blocked_gp_min_ms"]) >= 100.0, "{iso}");
    // ...and nobody else's did: every other domain completed grace periods while it slept
    // (relative to the same run, so machine load cannot fail it).
    assert!(f(&["others_sync", "samples"]) >= 1.0, "{iso}");
    assert!(f(&["others_inside_min"]) >= 1.0, "{iso}");
    assert!(f(&["others_inside_sections"]) >= 4.0, "{iso}");
    let fraction = f(&["others_inside_max_fraction"]);
    assert!(fraction > 0.0 && fraction <= 1.0, "{iso}");
    let blocked = &v["domains"][2];
    assert_eq!(blocked["blocked"], true, "{blocked}");
    assert!(u64_of(blocked, "sleeper_sections") >= 1, "{blocked}");
}

#[test]
fn srcu_torture_catches_an_injected_early_free() {
    let v = early_free_json("srcu", "2s");
    assert_eq!(v["inject_early_free"], true);
    assert!(u64_of(&v, "pipe_errors") > 0, "{v}");
    // Every domain catches it, the blocked one's sleeper included.
    for d in v["domains"].as_array().expect("domains") {
        assert!(
            u64_of(d, "pipe_errors") + u64_of(d, "check_errors") > 0,
            "{d}"
        );
    }
}

#[test]
fn srcu_torture_passes_on_the_fence_fallback() {
    // Lite readers fence for real then; the lite domain's grace periods use no membarrier.
    let v = torture_json(
        &[
            "torture",
            "srcu",
            "--duration",
            "1s",
            "--readers",
            "1",
            "--json",
        ],
        &[("GRACE_NO_MEMBARRIER", "1")],
        0,
    );
    assert_eq!(u64_of(&v, "errors"), 0, "{v}");
    assert_eq!(v["barrier_mode"], "fence");
    assert_eq!(u64_of(&v, "readers_per_domain"), 1);
}

#[test]
fn a_bad_srcu_reader_count_is_refused() {
    for bad in ["0", "65", "many"] {
        let o = grace(&["torture", "srcu", "--readers", bad], &[]);
        assert_refused(&o, "readers", bad);
        assert!(o.stdout.is_empty(), "{bad}: nothing ran");
    }
}

#[test]
fn a_bad_duration_is_refused() {
    for flavor in ["rcu", "srcu"] {
        for bad in ["banana", "0", "10parsecs"] {
            let o = grace(&["torture", flavor, "--duration", bad], &[]);
            assert_refused(&o, "duration", &format!("{flavor} {bad}"));
        }
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
    assert_refused(&o, "GRACE_LAZY_MS", "GRACE_LAZY_MS=soon");
    assert!(o.stdout.is_empty(), "nothing ran");
}

/// `grace bench <suite> --threads 1 --duration-ms 20 --json`, checked to succeed.
fn bench_json(suite: &str) -> Value {
    let o = grace(
        &[
            "bench",
            suite,
            "--threads",
            "1",
            "--duration-ms",
            "20",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["suite"], suite);
    v
}

#[test]
fn bench_json_has_the_agreed_shape() {
    let v = bench_json("read");
    let results = v["results"].as_array().expect("results is an array");
    let grace = find(&v, "results", "impl", "grace-rcu");
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
    // The SRCU rows, and their ratio to grace-rcu against the targets.
    assert_measured(&v, ["grace-srcu", "grace-srcu-lite"]);
    for (name, max) in [("grace-srcu-lite", 1.5), ("grace-srcu", 3.0)] {
        let t = find(&v, "targets", "impl", name);
        assert_eq!(t["reference"], "grace-rcu", "{t}");
        assert_eq!(t["threads"], 1, "{t}");
        assert_eq!(t["max"], max, "{t}");
        assert!(t["ratio"].as_f64().is_some_and(|x| x > 0.0), "{t}");
        assert!(t["met"].is_boolean(), "{t}");
    }
}

#[test]
fn bench_sync_reports_the_cross_domain_ratio() {
    let v = bench_json("sync");
    assert_measured(
        &v,
        [
            "grace-srcu-sync",
            "grace-srcu-lite-sync",
            "grace-srcu-sync-cross",
        ],
    );
    let t = find(&v, "targets", "impl", "grace-srcu-sync-cross");
    assert_eq!(t["reference"], "grace-srcu-sync", "{t}");
    assert_eq!(t["max"], 1.2, "{t}");
    assert!(t["ratio"].as_f64().is_some_and(|x| x > 0.0), "{t}");
}

/// The sum of `key` over the objects of the array `v[arr]`.
fn sum_of(v: &Value, arr: &str, key: &str) -> u64 {
    v[arr]
        .as_array()
        .unwrap_or_else(|| panic!("{arr} is not an array in {v}"))
        .iter()
        .map(|x| u64_of(x, key))
        .sum()
}

/// One 2-second `torture pending --json` run (both flavors), shared by the tests that read it.
fn pending_run() -> &'static (Output, Value) {
    static RUN: OnceLock<(Output, Value)> = OnceLock::new();
    shared_run(&RUN, "pending", "2s")
}

#[test]
fn pending_torture_passes_on_both_flavors() {
    let (o, v) = pending_run();
    assert_exit(o, v, 0);
    assert_eq!(v["flavor"], "pending");
    assert_eq!(u64_of(v, "errors"), 0, "{v}");
    let pipe = clean_pipe(v);
    assert_eq!(pipe.iter().sum::<u64>(), u64_of(v, "reads"));
    let flavors = v["flavors"].as_array().expect("flavors is an array");
    let names: Vec<&str> = flavors
        .iter()
        .filter_map(|f| f["flavor"].as_str())
        .collect();
    assert_eq!(names, ["rcu", "srcu"], "{v}");
    for f in flavors {
        assert_eq!(u64_of(f, "errors"), 0, "{f}");
        clean_pipe(f);
        for key in ["reads", "updates", "released", "grace_periods"] {
            assert!(u64_of(f, key) > 0, "{key} is zero in {f}");
        }
        // Every element handed over came back exactly once; every private object too.
        assert_eq!(u64_of(f, "released"), u64_of(f, "updates"), "{f}");
        let p = &f["private"];
        assert_eq!(u64_of(p, "enqueued"), u64_of(p, "processed"), "{f}");
        // dequeue reuse raced the readers, and the counts balance.
        let r = &f["reuse"];
        for key in ["dequeued", "reused_shared", "processed", "reads", "whole"] {
            assert!(u64_of(r, key) > 0, "reuse.{key} is zero in {f}");
        }
        assert_eq!(
            u64_of(r, "enqueued"),
            u64_of(r, "processed") + u64_of(r, "dequeued"),
            "{f}"
        );
        assert_eq!(u64_of(r, "torn"), 0, "{f}");
        let reuse_pipe = counts(&r["pipe"]);
        assert!(reuse_pipe[2..].iter().all(|&c| c == 0), "{f}");
        let pendings = f["pendings"].as_array().expect("pendings");
        let names: Vec<&str> = pendings.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(
            names,
            ["process_with", "process_free", "process_run", "reuse"],
            "{f}"
        );
    }
}

#[test]
fn pending_torture_injects_allocation_failures_and_takes_the_fallbacks() {
    let (o, v) = pending_run();
    assert_exit(o, v, 0);
    assert_eq!(u64_of(v, "fail_one_in"), 50);
    assert!(u64_of(v, "injected_failures") > 0, "{v}");
    let flavors = v["flavors"].as_array().expect("flavors");
    let total = |key: &str| -> u64 { flavors.iter().map(|f| sum_of(f, "pendings", key)).sum() };
    for key in [
        "chunk_alloc_failures",
        "fallback_nodes",
        "node_alloc_failures",
        "synchronous",
        "given_back",
    ] {
        assert!(total(key) > 0, "no {key} in {v}");
    }
    assert!(
        flavors
            .iter()
            .map(|f| u64_of(f, "oom_episodes"))
            .sum::<u64>()
            > 0,
        "{v}"
    );
}

#[test]
fn pending_torture_catches_an_injected_early_free() {
    let v = early_free_json("pending", "2s");
    assert_eq!(v["inject_early_free"], true);
    for f in v["flavors"].as_array().expect("flavors") {
        // Both the pipeline and the reuse objects' readers catch it.
        assert!(u64_of(f, "pipe_errors") > 0, "{f}");
        let reuse_pipe: u64 = counts(&f["reuse"]["pipe"])[2..].iter().sum();
        assert!(reuse_pipe > 0, "{f}");
    }
}

#[test]
fn pending_torture_runs_one_flavor_without_injection() {
    let v = torture_json(
        &[
            "torture",
            "pending",
            "--flavor",
            "srcu",
            "--fail-one-in",
            "0",
            "--duration",
            "1s",
            "--json",
        ],
        &[],
        0,
    );
    let flavors = v["flavors"].as_array().expect("flavors");
    assert_eq!(flavors.len(), 1);
    assert_eq!(flavors[0]["flavor"], "srcu");
    assert_eq!(u64_of(&v, "injected_failures"), 0, "{v}");
    assert_eq!(u64_of(&flavors[0], "oom_episodes"), 0, "{v}");
}

#[test]
fn kvfree_torture_passes_and_takes_every_fallback() {
    let v = torture_json(&["torture", "kvfree", "--duration", "2s", "--json"], &[], 0);
    assert_eq!(v["flavor"], "kvfree");
    assert_eq!(u64_of(&v, "errors"), 0, "{v}");
    let pipe = clean_pipe(&v);
    assert_eq!(pipe.iter().sum::<u64>(), u64_of(&v, "reads"));
    assert_eq!(u64_of(&v, "released"), u64_of(&v, "updates"), "{v}");
    let modes = v["updates_by_mode"].as_object().expect("updates_by_mode");
    for m in [
        "kvfree_drop",
        "kvfree_raw",
        "kvfree_no_drop_glue",
        "kvfree_in_section",
        "kvfree_barrier",
    ] {
        assert!(
            modes.get(m).and_then(Value::as_u64).unwrap_or(0) > 0,
            "{m} unused in {v}"
        );
    }
    let j = &v["junk"];
    assert!(u64_of(j, "drop_glue_queued") > 0, "{v}");
    assert_eq!(
        u64_of(j, "drop_glue_queued"),
        u64_of(j, "drop_glue_dropped")
    );
    assert!(u64_of(j, "no_drop_glue_queued") > 0, "{v}");
    assert_eq!(
        u64_of(j, "no_drop_glue_queued"),
        u64_of(j, "no_drop_glue_freed")
    );
    let k = &v["kvfree"];
    assert_eq!(
        u64_of(k, "objects_queued"),
        u64_of(k, "objects_freed"),
        "{k}"
    );
    assert_eq!(u64_of(k, "objects_pending_after"), 0, "{k}");
    assert!(u64_of(&v, "injected_failures") > 0, "{v}");
    assert!(u64_of(&v, "oom_episodes") > 0, "{v}");
    for key in [
        "fallback_node",
        "fallback_sync_gp",
        "fallback_retry",
        "fallback_callback",
    ] {
        assert!(u64_of(k, key) > 0, "no {key} in {k}");
    }
}

#[test]
fn kvfree_torture_catches_an_injected_early_free() {
    let v = early_free_json("kvfree", "2s");
    assert_eq!(v["inject_early_free"], true);
    assert!(u64_of(&v, "pipe_errors") > 0, "{v}");
}

#[test]
fn a_bad_failure_rate_is_refused() {
    for flavor in ["pending", "kvfree"] {
        for bad in ["often", "4294967296", "1.5"] {
            let o = grace(&["torture", flavor, "--fail-one-in", bad], &[]);
            assert_refused(&o, "fail-one-in", &format!("{flavor} {bad}"));
            assert!(o.stdout.is_empty(), "{flavor} {bad}: nothing ran");
        }
    }
    let o = grace(&["torture", "pending", "--flavor", "tree"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_free_reports_kvfree_against_every_peer() {
    let v = bench_json("free");
    let mut names = vec![
        "box-drop",
        "grace-kvfree",
        "grace-kvfree-drop",
        "crossbeam-epoch",
        "seize",
    ];
    if v["liburcu"]["available"] == true {
        names.push("liburcu-memb");
    }
    assert_measured(&v, names);
    let t = find(&v, "targets", "reference", "box-drop");
    assert_eq!(t["impl"], "grace-kvfree", "{t}");
    assert_eq!(t["max"], 1.5, "{t}");
    assert_eq!(t["threads"], 1, "{t}");
    assert!(t["ratio"].as_f64().is_some_and(|x| x > 0.0), "{t}");
}

#[test]
fn bench_call_reports_both_workloads_with_their_spread() {
    let v = bench_json("call");
    let mut names = vec![
        "grace-rcu",
        "crossbeam-epoch",
        "seize",
        "grace-rcu/free64",
        "crossbeam-epoch/free64",
        "seize/free64",
    ];
    if v["liburcu"]["available"] == true {
        names.extend(["liburcu-memb", "liburcu-memb/free64"]);
    }
    // A free64 row is measured only when every box was freed exactly once.
    assert_measured(&v, names.iter().copied());
    for name in names {
        let r = find(&v, "results", "impl", name);
        let (lo, mid, hi) = (
            r["min_ns_per_op"].as_f64().expect("min"),
            r["ns_per_op"].as_f64().expect("median"),
            r["max_ns_per_op"].as_f64().expect("max"),
        );
        assert!(lo <= mid && mid <= hi, "{r}");
    }
}

#[test]
fn bench_list_measures_every_reclaimer_in_its_own_process() {
    let o = grace(
        &[
            "bench",
            "list",
            "--duration",
            "10ms",
            "--keys",
            "100",
            "--reads",
            "0,90",
            "--threads",
            "1,2",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["suite"], "list");
    let results = v["results"].as_array().expect("results is an array");
    let impls = [
        "grace-kvfree",
        "grace-call",
        "crossbeam-epoch",
        "seize",
        "haphazard",
    ];
    assert_eq!(results.len(), impls.len() * 2 * 2, "{v}");
    for reads in [0, 90] {
        for threads in [1, 2] {
            for name in impls {
                let r = results
                    .iter()
                    .find(|r| {
                        r["impl"] == name && r["read_pct"] == reads && r["threads"] == threads
                    })
                    .unwrap_or_else(|| panic!("no {name} row at {reads}% t={threads} in {v}"));
                assert_eq!(r["keys"], 100, "{r}");
                assert_eq!(r["isolated"], true, "{r}");
                // Every retired node was freed after the drain: otherwise the row is a BUG.
                assert_eq!(r["reclaimed_all"], true, "{r}");
                assert!(r["note"].is_null(), "{r}");
                for key in ["ops_per_s", "ops_per_s_min", "ops_per_s_max", "ns_per_op"] {
                    assert!(r[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {r}");
                }
                assert!(r["peak_unreclaimed"].is_u64(), "{r}");
                if reads == 0 {
                    assert!(r["retired"].as_u64().is_some_and(|x| x > 0), "{r}");
                }
                let ratio = &r["ops_vs_crossbeam"];
                assert!(ratio.as_f64().is_some_and(|x| x > 0.0), "{r}");
            }
        }
    }
    let kv = find(&v, "results", "impl", "grace-kvfree");
    assert_eq!(kv["unreclaimed_source"], "library", "{kv}");
    let hp = find(&v, "results", "impl", "haphazard");
    assert_eq!(hp["unreclaimed_source"], "counted", "{hp}");
}

#[test]
fn bench_reuse_reports_recycling_against_fresh_allocation() {
    let v = bench_json("reuse");
    assert_measured(
        &v,
        [
            "grace-pending-reuse",
            "grace-pending-fresh",
            "grace-kvfree-fresh",
            "box-drop-no-gp",
        ],
    );
}

#[test]
fn bench_flood_runs_each_implementation_in_its_own_process() {
    let o = grace(&["bench", "flood", "--duration", "200ms", "--json"], &[]);
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["suite"], "flood");
    let results = v["results"].as_array().expect("results is an array");
    let names: Vec<&str> = results.iter().filter_map(|r| r["impl"].as_str()).collect();
    for name in ["grace-kvfree", "grace-pending", "crossbeam-epoch", "seize"] {
        assert!(names.contains(&name), "no {name} row in {v}");
    }
    for r in results {
        assert_eq!(r["threads"], 1, "{r}");
        assert_eq!(r["readers"], 1, "{r}");
        assert_eq!(r["isolated"], true, "{r}");
        for key in ["objects_per_s", "ops_per_s", "ns_per_op", "reads_per_s"] {
            assert!(r[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {r}");
        }
        assert!(r["peak_rss_bytes"].as_u64().is_some_and(|x| x > 0), "{r}");
        assert!(r["peak_bytes_pending"].is_u64(), "{r}");
    }
    let grace = find(&v, "results", "impl", "grace-kvfree");
    assert_eq!(grace["peak_bytes_source"], "library", "{grace}");
}

#[test]
fn out_of_range_and_too_short_durations_are_refused_without_a_panic() {
    for (args, what) in [
        (
            &["torture", "rcu", "--duration", "99999999999999999999s"][..],
            "huge torture",
        ),
        (
            &["bench", "read", "--duration", "18446744073709551616"][..],
            "huge bench",
        ),
        (
            &["torture", "rcu", "--duration", "0.0000001s"][..],
            "tiny torture",
        ),
        (
            &["bench", "read", "--duration", "0.0000001s"][..],
            "tiny bench",
        ),
    ] {
        let o = grace(args, &[]);
        assert_refused(&o, "duration", what);
        assert!(o.stdout.is_empty(), "{what}: nothing ran");
    }
}

#[cfg(unix)]
#[test]
fn a_non_utf8_setting_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let o = Command::new(env!("CARGO_BIN_EXE_grace"))
        .args(["torture", "rcu", "--duration", "1ms"])
        .env("GRACE_LAZY_MS", std::ffi::OsStr::from_bytes(b"1\xff"))
        .output()
        .unwrap();
    assert_refused(&o, "GRACE_LAZY_MS", "non-UTF-8 GRACE_LAZY_MS");
}

#[test]
fn a_run_that_checked_nothing_does_not_pass() {
    // 1 ms is accepted; whatever the machine manages in it, SUCCESS needs an update and a read.
    let o = torture(&["torture", "rcu", "--duration", "1ms", "--json"], &[]);
    let v = json(&o);
    let checked = u64_of(&v, "updates") > 0 && u64_of(&v, "reads") > 0;
    assert_eq!(
        o.status.code() == Some(0),
        checked && u64_of(&v, "errors") == 0,
        "{v}"
    );
}

#[test]
fn grace_alone_prints_help_and_names_the_tour() {
    let o = grace(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Usage:") && out.contains("tour"), "{out}");
    let o = grace(&["tour", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bench_flood_with_a_budget_runs_the_pressure_set_and_plots_it() {
    let svg = std::env::temp_dir().join(format!("grace-cli-flood-{}.svg", std::process::id()));
    let o = grace(
        &[
            "bench",
            "flood",
            "--duration",
            "300ms",
            "--budget",
            "8MiB",
            "--plot",
            svg.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["budget_bytes"], 8 << 20);
    let results = v["results"].as_array().expect("results is an array");
    let names: Vec<&str> = results.iter().filter_map(|r| r["impl"].as_str()).collect();
    for base in [
        "grace-kvfree",
        "grace-call-rcu",
        "grace-call-srcu",
        "grace-pending-closure",
    ] {
        for name in [base.to_string(), format!("{base}+budget")] {
            let r = find(&v, "results", "impl", &name);
            let budget = if name.ends_with("+budget") {
                Value::from(8u64 << 20)
            } else {
                Value::Null
            };
            assert_eq!(r["budget_bytes"], budget, "{r}");
        }
    }
    for peer in ["crossbeam-epoch", "seize"] {
        assert!(names.contains(&peer), "no {peer} row in {v}");
    }
    for r in results {
        assert_eq!(r["isolated"], true, "{r}");
        assert_eq!(r["sleeping_reader"], true, "{r}");
        assert!(r["objects_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["peak_bytes_pending"].is_u64(), "{r}");
        assert!(r["peak_rss_bytes"].as_u64().is_some_and(|x| x > 0), "{r}");
        assert!(
            r["recovery_limit_s"].as_f64().is_some_and(|x| x > 0.0),
            "{r}"
        );
        assert!(r["recovery_s"].is_null() || r["recovery_s"].is_f64(), "{r}");
        let series = r["pending_series"].as_array().expect("a series");
        assert!(!series.is_empty(), "{r}");
        assert!(series.iter().all(|p| p[0].is_f64() && p[1].is_u64()), "{r}");
    }
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    let _ = std::fs::remove_file(&svg);
    assert!(text.starts_with("<svg"), "{text}");
    assert!(text.trim_end().ends_with("</svg>"), "{text}");
    assert_eq!(text.matches("<svg").count(), 1);
    assert_eq!(text.matches("<polyline").count(), results.len(), "{text}");
    assert_eq!(text.matches("</polyline>").count(), results.len());
    for name in &names {
        assert!(
            text.contains(&format!(">{name}</text>")),
            "{name} not in the legend"
        );
    }
    assert!(text.contains("budget 8.00 MiB"), "{text}");
}

#[test]
fn bench_budget_and_plot_belong_to_flood() {
    let o = grace(&["bench", "read", "--budget", "8MiB"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("flood"), "{}", stderr(&o));
    let o = grace(&["bench", "flood", "--budget", "lots"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_flood_impls_are_checked_and_run_alone() {
    let o = grace(&["bench", "flood", "--impls", "grace-nothing"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("grace-call-srcu"), "{}", stderr(&o));
    let o = grace(&["bench", "read", "--impls", "grace-kvfree"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = grace(
        &[
            "bench",
            "flood",
            "--impls",
            "grace-call-srcu",
            "--duration",
            "50ms",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["impl"], "grace-call-srcu");
}

#[test]
fn map_torture_passes_with_resizes_and_allocation_failures() {
    let v = torture_json(
        &[
            "torture",
            "map",
            "--duration",
            "1s",
            "--readers",
            "2",
            "--json",
        ],
        &[],
        0,
    );
    assert_eq!(v["flavor"], "map");
    assert_eq!(u64_of(&v, "errors"), 0, "{v}");
    assert!(u64_of(&v, "injected_failures") > 0, "{v}");
    let runs = v["runs"].as_array().expect("one run per flavor");
    assert_eq!(runs.len(), 2);
    for r in runs {
        for key in [
            "reads",
            "iterations",
            "updates",
            "resizes",
            "try_insert_failures",
        ] {
            assert!(u64_of(r, key) > 0, "{key} in {r}");
        }
        assert_eq!(u64_of(r, "values_made"), u64_of(r, "values_dropped"), "{r}");
    }
    let o = grace(
        &["torture", "map", "--duration", "1s", "--inject-early-free"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_map_measures_every_peer_in_its_own_process_and_plots_it() {
    let svg = std::env::temp_dir().join(format!("grace-cli-map-{}.svg", std::process::id()));
    let o = grace(
        &[
            "bench",
            "map",
            "--duration",
            "20ms",
            "--keys",
            "1000",
            "--reads",
            "99,50",
            "--dist",
            "uniform,zipf",
            "--threads",
            "2",
            "--resize-keys",
            "20000",
            "--plot",
            svg.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["suite"], "map");
    let results = v["results"].as_array().expect("results is an array");
    let peers = ["grace", "dashmap", "papaya", "scc", "rwlock-std"];
    assert_eq!(results.len(), peers.len() * 2 * 2, "{v}");
    for r in results {
        assert_eq!(r["isolated"], true, "{r}");
        assert_eq!(
            (r["keys"].as_u64(), r["threads"].as_u64()),
            (Some(1000), Some(2))
        );
        for key in ["ops_per_s", "ops_per_s_min", "ops_per_s_max", "ns_per_op"] {
            assert!(r[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {r}");
        }
        assert!(r["peak_rss"].as_u64().is_some_and(|x| x > 0), "{r}");
        // Each row's ops/s over the best peer's (grace's row may be above 1).
        let top = if r["impl"] == "grace" { f64::MAX } else { 1.0 };
        assert!(
            r["ops_vs_best_peer"]
                .as_f64()
                .is_some_and(|x| x > 0.0 && x <= top),
            "{r}"
        );
    }
    let resize = v["resize"].as_array().expect("resize is an array");
    assert_eq!(resize.len(), peers.len(), "{v}");
    for r in resize {
        assert_eq!(r["isolated"], true, "{r}");
        assert_eq!(r["keys"], 20_000, "{r}");
        assert!(r["samples_steady"].as_u64().is_some_and(|x| x > 0), "{r}");
        assert!(r["p99_steady_ns"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    // Every target is listed and judged (met or missed) against the grace row.
    let targets = v["targets"].as_array().expect("targets is an array");
    assert!(targets.len() > 2 * 2 * 2, "{v}");
    assert!(targets.iter().all(|t| t["met"].is_boolean()), "{v}");
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    let _ = std::fs::remove_file(&svg);
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<polyline").count(), peers.len(), "{text}");
    for name in peers {
        assert!(
            text.contains(&format!(">{name}</text>")),
            "{name} not in the legend"
        );
    }
}

#[test]
fn bench_rculist_compares_grace_with_locked_lists() {
    let o = grace(
        &[
            "bench",
            "rculist",
            "--duration",
            "20ms",
            "--lengths",
            "16",
            "--reads",
            "100,90",
            "--threads",
            "1,2",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    assert_exit(&o, &v, 0);
    assert_eq!(v["suite"], "rculist");
    let results = v["results"].as_array().expect("results is an array");
    let impls = ["grace-list", "rwlock-vec", "mutex-linkedlist"];
    assert_eq!(results.len(), impls.len() * 2 * 2, "{v}");
    for r in results {
        assert_eq!(r["isolated"], true, "{r}");
        // A row that lost entries, or left removed ones unfreed, has a BUG note.
        assert!(r["note"].is_null(), "{r}");
        assert!(r["ops_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["grace_vs_this"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    let o = grace(&["bench", "rculist", "--plot", "x.svg"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = grace(&["bench", "map", "--dist", "pareto"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
