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
//! `grace-rcu`, `grace-srcu` and `grace-srcu-lite` are measured together:
//! the same threads time batches of the three in turn (always the one
//! measured least so far) until each has [`Options::duration`], so that the
//! SRCU-to-RCU ratios the crate's targets bound compare figures taken on the
//! same machine state.
//!
//! What one operation is, per implementation:
//!
//! * `grace-rcu`: `grace::rcu::read_lock()` then drop of the guard;
//! * `grace-srcu`: `domain.read_lock()` then drop of the guard, on one
//!   `grace::srcu::Srcu` domain (regular readers: a full fence per section)
//!   shared by the threads;
//! * `grace-srcu-lite`: the same on a `grace::srcu::SrcuLite` domain (lite
//!   readers: a compiler fence only, the updater pays with `membarrier`);
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

use grace::srcu::{ReaderKind, Srcu, SrcuLite};

use crate::harness::{ns, row, skipped};
use crate::{liburcu, BenchResult, Options};

/// Operations timed per clock read.
pub(crate) const BATCH: u64 = 10_000;

const SUITE: &str = "read";

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu", "grace-srcu", "grace-srcu-lite"];
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
    let one = measure_together(threads, duration, &|| make().map(|b| vec![b]))?;
    Ok(one[0])
}

/// Runs the loops `make` returns (one per implementation) on `threads`
/// threads at once, interleaved: each thread always times a batch of the
/// loop it has measured least so far, until every loop has `duration`.
/// Returns (mean per-thread ns/op, aggregate ops/s) per loop, in order.
fn measure_together<'a, M>(
    threads: usize,
    duration: Duration,
    make: &M,
) -> Result<Vec<(f64, f64)>, String>
where
    M: Fn() -> Result<Vec<BatchFn<'a>>, String> + Sync,
{
    let start = Barrier::new(threads);
    let warmup = (duration / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));
    type Totals = Vec<(Duration, u64)>;
    let per_thread: Vec<Result<Totals, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    let made = make();
                    // Everyone waits, even a thread whose setup failed, so
                    // that the others are not left blocked.
                    start.wait();
                    let mut batches = made?;
                    let w = Instant::now();
                    while w.elapsed() < warmup {
                        for b in batches.iter_mut() {
                            b(BATCH / 10);
                        }
                    }
                    let mut totals: Totals = vec![(Duration::ZERO, 0); batches.len()];
                    // The loop measured least so far, while it still needs time.
                    let next = |totals: &Totals| {
                        totals
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, (t, _))| *t)
                            .filter(|(_, (t, ops))| *t < duration || *ops == 0)
                            .map(|(i, _)| i)
                    };
                    while let Some(i) = next(&totals) {
                        totals[i].0 += batches[i](BATCH);
                        totals[i].1 += BATCH;
                    }
                    Ok(totals)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for r in per_thread {
        let totals = r?;
        sums.resize(totals.len(), (0.0, 0.0));
        for (sum, (total, ops)) in sums.iter_mut().zip(totals) {
            let t = ns(total).max(1.0);
            sum.0 += t / ops as f64;
            sum.1 += ops as f64 * 1e9 / t;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(ns_per_op, rate)| (ns_per_op / threads as f64, rate))
        .collect())
}

/// The implementations measured together by [`measure_grace`]: the rows the
/// read targets compare.
const GRACE_TOGETHER: [&str; 3] = ["grace-rcu", "grace-srcu", "grace-srcu-lite"];

/// One section per operation: `grace::rcu`'s, or `domain`'s.
fn rcu_batch<'a>() -> BatchFn<'a> {
    Box::new(|n| {
        time_batch(n, || {
            let g = grace::rcu::read_lock();
            black_box(&g);
            drop(g);
        })
    })
}

/// One section of `domain` per operation. The thread's first section (here,
/// before the clock) allocates its reader shard.
fn srcu_batch<K: ReaderKind>(domain: &Srcu<K>) -> BatchFn<'_> {
    drop(domain.read_lock());
    Box::new(move |n| {
        time_batch(n, || {
            let g = domain.read_lock();
            black_box(&g);
            drop(g);
        })
    })
}

/// `grace-rcu`, `grace-srcu` and `grace-srcu-lite` ([`GRACE_TOGETHER`]), on
/// the same threads in interleaved batches: their ratios are what the read
/// targets bound, and figures of a few nanoseconds taken one after the other
/// move by tens of percent with the machine's state, while interleaved
/// batches see the same machine.
fn measure_grace(threads: usize, duration: Duration) -> Result<Vec<(f64, f64)>, String> {
    let srcu = Srcu::new().map_err(|e| e.to_string())?;
    let lite = SrcuLite::new_lite().map_err(|e| e.to_string())?;
    let (srcu, lite) = (&srcu, &lite);
    measure_together(threads, duration, &|| {
        Ok(vec![rcu_batch(), srcu_batch(srcu), srcu_batch(lite)])
    })
}

fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<(f64, f64), String> {
    match name {
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
        let mut grace = None;
        for name in impls() {
            progress(&format!("{SUITE} {name} t={threads}"));
            let measured = match GRACE_TOGETHER.iter().position(|g| *g == name) {
                Some(i) => grace
                    .get_or_insert_with(|| measure_grace(threads, opts.duration))
                    .clone()
                    .map(|v| v[i]),
                None => measure_impl(name, threads, opts.duration),
            };
            out.push(match measured {
                Ok((ns_per_op, ops_per_s)) => {
                    row(SUITE, name, threads, ns_per_op, ops_per_s, note.clone())
                }
                Err(e) => skipped(SUITE, name, threads, e),
            });
        }
    }
    out
}
