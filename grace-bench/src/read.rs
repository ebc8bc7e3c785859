//! The `read` suite: the cost of one outermost read-side critical section
//! (enter + exit, nothing inside) per implementation and thread count.
//!
//! Every thread of a measurement runs the same loop concurrently: it builds
//! its per-thread state (registration, hazard pointer, ...), waits on a
//! barrier so all threads start together, warms up, then times batches of
//! [`BATCH`] sections per clock read until it has measured for
//! [`Options::duration`]. Each thread reports its own ns/op; the row holds
//! the mean of those, and `ops_per_s` is the sum of the per-thread rates.
//!
//! What one operation is, per implementation:
//!
//! * `grace-rcu`: `grace::rcu::read_lock()` then drop of the guard;
//! * `liburcu-memb-inline-c`: `urcu_memb_read_lock(); barrier();
//!   urcu_memb_read_unlock();` in a C loop compiled with liburcu's inline
//!   read side (`_LGPL_SOURCE`), timed in C with the same clock and batch;
//! * `liburcu-memb-ffi`: the same through the exported liburcu symbols,
//!   called from Rust (one call each way);
//! * `crossbeam-epoch`: `crossbeam_epoch::pin()` then drop, on the default
//!   collector (which every 128th pin also tries to advance the epoch);
//! * `seize`: `collector.enter()` then drop of the `LocalGuard`, on one
//!   `seize::Collector` shared by the threads;
//! * `haphazard`: `protect` of a shared `haphazard::AtomicPtr` with the
//!   thread's `HazardPointer`, then `reset_protection()`: the hazard-pointer
//!   read side, which protects one pointer rather than opening a section.
//!
//! Guards go through [`std::hint::black_box`] so no section is elided.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::harness::{ns, row, skipped};
use crate::{liburcu, BenchResult, Options};

/// Operations timed per clock read.
pub(crate) const BATCH: u64 = 10_000;

const SUITE: &str = "read";

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu"];
    if liburcu::available() {
        v.extend(["liburcu-memb-inline-c", "liburcu-memb-ffi"]);
    }
    v.extend(["crossbeam-epoch", "seize", "haphazard"]);
    v
}

/// A thread's timed loop: runs `n` operations and returns how long they took.
type BatchFn<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Times `n` runs of `op` with one clock read at each end.
#[inline(always)]
fn time_batch(n: u64, mut op: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        op();
    }
    t.elapsed()
}

/// Runs `make`'s loop on `threads` threads at once; returns (mean per-thread
/// ns/op, aggregate ops/s).
fn measure<'a, M>(threads: usize, duration: Duration, make: &M) -> Result<(f64, f64), String>
where
    M: Fn() -> Result<BatchFn<'a>, String> + Sync,
{
    let start = Barrier::new(threads);
    let warmup = (duration / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));
    let per_thread: Vec<Result<(Duration, u64), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    let made = make();
                    // Everyone waits, even a thread whose setup failed, so
                    // that the others are not left blocked.
                    start.wait();
                    let mut batch = made?;
                    let w = Instant::now();
                    while w.elapsed() < warmup {
                        batch(BATCH / 10);
                    }
                    let (mut total, mut ops) = (Duration::ZERO, 0u64);
                    while total < duration || ops == 0 {
                        total += batch(BATCH);
                        ops += BATCH;
                    }
                    Ok((total, ops))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut sum_ns_per_op = 0.0;
    let mut sum_rate = 0.0;
    for r in per_thread {
        let (total, ops) = r?;
        let t = ns(total).max(1.0);
        sum_ns_per_op += t / ops as f64;
        sum_rate += ops as f64 * 1e9 / t;
    }
    Ok((sum_ns_per_op / threads as f64, sum_rate))
}

fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<(f64, f64), String> {
    match name {
        "grace-rcu" => measure(threads, duration, &|| {
            Ok(Box::new(|n| {
                time_batch(n, || {
                    let g = grace::rcu::read_lock();
                    black_box(&g);
                    drop(g);
                })
            }) as BatchFn)
        }),
        "liburcu-memb-inline-c" => measure(threads, duration, &|| {
            let reg = liburcu::register()?;
            Ok(Box::new(move |n| reg.read_loop_inline(n)) as BatchFn)
        }),
        "liburcu-memb-ffi" => measure(threads, duration, &|| {
            let reg = liburcu::register()?;
            Ok(Box::new(move |n| time_batch(n, || reg.read_section_ffi())) as BatchFn)
        }),
        "crossbeam-epoch" => measure(threads, duration, &|| {
            Ok(Box::new(|n| {
                time_batch(n, || {
                    let g = crossbeam_epoch::pin();
                    black_box(&g);
                    drop(g);
                })
            }) as BatchFn)
        }),
        "seize" => {
            let collector = seize::Collector::new();
            let collector = &collector;
            measure(threads, duration, &|| {
                Ok(Box::new(move |n| {
                    time_batch(n, || {
                        let g = collector.enter();
                        black_box(&g);
                        drop(g);
                    })
                }) as BatchFn)
            })
        }
        "haphazard" => {
            let shared: haphazard::AtomicPtr<u64> = haphazard::AtomicPtr::from(Box::new(42));
            let r = {
                let shared = &shared;
                measure(threads, duration, &|| {
                    let mut hp = haphazard::HazardPointer::new();
                    Ok(Box::new(move |n| {
                        time_batch(n, || {
                            black_box(shared.safe_load(&mut hp));
                            hp.reset_protection();
                        })
                    }) as BatchFn)
                })
            };
            // SAFETY: the value was never retired and every reader thread
            // (and its hazard pointer) is gone, so we own it again; it came
            // from `Box::new` above.
            drop(unsafe { Box::from_raw(shared.into_inner()) });
            r
        }
        other => Err(format!("unknown read implementation {other}")),
    }
}

/// The read suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut out = Vec::new();
    for threads in opts.thread_counts() {
        let note = (threads > cpus).then(|| {
            format!("{threads} threads on {cpus} CPUs: preemption inflates the per-thread figure")
        });
        for name in impls() {
            progress(&format!("{SUITE} {name} t={threads}"));
            out.push(match measure_impl(name, threads, opts.duration) {
                Ok((ns_per_op, ops_per_s)) => {
                    row(SUITE, name, threads, ns_per_op, ops_per_s, note.clone())
                }
                Err(e) => skipped(SUITE, name, threads, e),
            });
        }
    }
    out
}
