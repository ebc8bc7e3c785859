//! The `sync` suite: the latency of one grace-period wait with idle readers.
//!
//! For a thread count `T`, the measuring thread plus `T - 1` idle reader
//! threads are registered with the implementation (they have each run one
//! read-side section, or registered explicitly for liburcu) and then park on
//! a barrier, outside any section. The measuring thread warms up, then calls
//! the wait back to back for [`Options::duration`]; the row holds the mean
//! ns per call and calls per second. All threads are spawned by the suite,
//! so the caller's thread is never registered with anything.
//!
//! Implementations:
//!
//! * `grace-rcu`: `grace::rcu::synchronize()`;
//! * `grace-rcu-expedited`: `grace::rcu::synchronize_expedited()`;
//! * `membarrier-syscall`: one bare
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` system call, the floor
//!   under any expedited grace period built on it (registered first with
//!   `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`; if the kernel refuses, the
//!   row has `NaN` figures and a note);
//! * `liburcu-memb`: `urcu_memb_synchronize_rcu()`.

use std::any::Any;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::harness::{membarrier, ns, row, skipped};
use crate::{liburcu, BenchResult, Options};

const SUITE: &str = "sync";

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu", "grace-rcu-expedited", "membarrier-syscall"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v
}

/// Per-thread registration kept alive while the thread idles.
type Keep = Box<dyn Any>;
/// One grace-period wait.
type WaitFn = Box<dyn FnMut() -> Result<(), String>>;

/// Registers `threads - 1` idle readers with `idle`, then times `make`'s wait
/// on one more thread. Returns the mean ns per wait.
fn measure<I, M>(threads: usize, duration: Duration, idle: &I, make: &M) -> Result<f64, String>
where
    I: Fn() -> Result<Keep, String> + Sync,
    M: Fn() -> Result<WaitFn, String> + Sync,
{
    let ready = Barrier::new(threads);
    let done = Barrier::new(threads);
    let warmup = (duration / 10).clamp(Duration::from_millis(1), Duration::from_millis(20));
    std::thread::scope(|s| {
        let idlers: Vec<_> = (1..threads)
            .map(|_| {
                let (ready, done) = (&ready, &done);
                s.spawn(move || {
                    let keep = idle();
                    ready.wait();
                    done.wait();
                    // Unregisters (drops the registration) after measuring.
                    keep.map(drop)
                })
            })
            .collect();
        let (ready, done) = (&ready, &done);
        s.spawn(move || {
            let made = make();
            ready.wait();
            let r = made.and_then(|mut wait| {
                let w = Instant::now();
                let mut n = 0;
                while n < 2 || w.elapsed() < warmup {
                    wait()?;
                    n += 1;
                }
                let t = Instant::now();
                let mut calls = 0u64;
                while calls < 3 || t.elapsed() < duration {
                    wait()?;
                    calls += 1;
                }
                Ok(ns(t.elapsed()) / calls as f64)
            });
            done.wait();
            r
        })
        .join()
        .unwrap_or_else(|_| Err("measuring thread panicked".into()))
        .and_then(|ns_per_op| {
            for idler in idlers {
                idler
                    .join()
                    .unwrap_or_else(|_| Err("idle reader thread panicked".into()))
                    .map_err(|e| format!("idle reader setup failed: {e}"))?;
            }
            Ok(ns_per_op)
        })
    })
}

/// Registers the current thread with grace (one empty read-side section).
fn grace_register() {
    drop(grace::rcu::read_lock());
}

fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<f64, String> {
    let grace_idle = || {
        grace_register();
        Ok(Box::new(()) as Keep)
    };
    match name {
        "grace-rcu" => measure(threads, duration, &grace_idle, &|| {
            grace_register();
            Ok(Box::new(|| {
                grace::rcu::synchronize();
                Ok(())
            }) as WaitFn)
        }),
        "grace-rcu-expedited" => measure(threads, duration, &grace_idle, &|| {
            grace_register();
            Ok(Box::new(|| {
                grace::rcu::synchronize_expedited();
                Ok(())
            }) as WaitFn)
        }),
        "membarrier-syscall" => {
            membarrier::register()?;
            measure(threads, duration, &|| Ok(Box::new(()) as Keep), &|| {
                Ok(Box::new(membarrier::barrier) as WaitFn)
            })
        }
        "liburcu-memb" => measure(
            threads,
            duration,
            &|| Ok(Box::new(liburcu::register()?) as Keep),
            &|| {
                let reg = liburcu::register()?;
                Ok(Box::new(move || {
                    reg.synchronize();
                    Ok(())
                }) as WaitFn)
            },
        ),
        other => Err(format!("unknown sync implementation {other}")),
    }
}

/// The sync suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    let mut out = Vec::new();
    for threads in opts.thread_counts() {
        for name in impls() {
            progress(&format!("{SUITE} {name} t={threads}"));
            out.push(match measure_impl(name, threads, opts.duration) {
                Ok(ns_per_op) => row(SUITE, name, threads, ns_per_op, 1e9 / ns_per_op, None),
                Err(e) => skipped(SUITE, name, threads, e),
            });
        }
    }
    out
}
