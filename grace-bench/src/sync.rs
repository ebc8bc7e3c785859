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
//! * `grace-srcu-sync`: `domain.synchronize()` on a `grace::srcu::Srcu`
//!   domain B (regular readers) whose idle readers are the other threads;
//! * `grace-srcu-lite-sync`: the same on a `grace::srcu::SrcuLite` domain
//!   (its grace period issues `membarrier` where regular readers fence);
//! * `grace-srcu-sync-cross`: `grace-srcu-sync` while a reader of another
//!   domain A sleeps inside its section and A's grace period is pending (one
//!   thread waits in `A.synchronize()`, and a `start_poll` cookie keeps the
//!   shared SRCU service visiting A). Its ratio to `grace-srcu-sync` is the
//!   cost one domain's blocked reader puts on another domain: ideally 1. The
//!   two rows are measured together, in slices that alternate between the two
//!   situations (a ~45 ns figure moves by tens of percent between separate
//!   measurements on a shared machine; alternating slices see the same
//!   machine). Both rows are skip notices (a bug) if A's grace period
//!   completed under its reader, or if B's waited for it.

use std::any::Any;
use std::cell::Cell;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use grace::srcu::{ReaderKind, Srcu, SrcuLite};

use crate::harness::{membarrier, ns, row, skipped};
use crate::{liburcu, BenchResult, Options};

const SUITE: &str = "sync";

/// The note on `grace-srcu-sync-cross` rows.
const CROSS_NOTE: &str =
    "domain B's synchronize while a reader of domain A sleeps in its section throughout";

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu", "grace-rcu-expedited", "membarrier-syscall"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v.extend([
        "grace-srcu-sync",
        "grace-srcu-lite-sync",
        "grace-srcu-sync-cross",
    ]);
    v
}

/// Per-thread registration kept alive while the thread idles.
type Keep = Box<dyn Any>;
/// One grace-period wait (it may borrow the domain it waits on).
type WaitFn<'a> = Box<dyn FnMut() -> Result<(), String> + 'a>;

/// Registers `threads - 1` idle readers with `idle`, then runs `body` on one
/// more thread (spawned, so that the caller's thread is never registered with
/// anything). `body` calls its argument, `ready`, once its own setup is done:
/// that waits until every idle reader is registered (if `body` returns
/// without calling it, it is called then, so nobody is left waiting).
fn with_idle_readers<I, T, B>(threads: usize, idle: &I, body: B) -> Result<T, String>
where
    I: Fn() -> Result<Keep, String> + Sync,
    T: Send,
    B: FnOnce(&dyn Fn()) -> Result<T, String> + Send,
{
    let ready = Barrier::new(threads);
    let done = Barrier::new(threads);
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
            let waited = Cell::new(false);
            let go = || {
                if !waited.replace(true) {
                    ready.wait();
                }
            };
            let r = body(&go);
            go();
            done.wait();
            r
        })
        .join()
        .unwrap_or_else(|_| Err("measuring thread panicked".into()))
        .and_then(|r| {
            for idler in idlers {
                idler
                    .join()
                    .unwrap_or_else(|_| Err("idle reader thread panicked".into()))
                    .map_err(|e| format!("idle reader setup failed: {e}"))?;
            }
            Ok(r)
        })
    })
}

/// How long a measurement warms up.
fn warmup(duration: Duration) -> Duration {
    (duration / 10).clamp(Duration::from_millis(1), Duration::from_millis(20))
}

/// Registers `threads - 1` idle readers with `idle`, then times `make`'s wait
/// on one more thread. Returns the mean ns per wait.
fn measure<'a, I, M>(threads: usize, duration: Duration, idle: &I, make: &M) -> Result<f64, String>
where
    I: Fn() -> Result<Keep, String> + Sync,
    M: Fn() -> Result<WaitFn<'a>, String> + Sync,
{
    with_idle_readers(threads, idle, |ready| {
        let made = make();
        ready();
        let mut wait = made?;
        let w = Instant::now();
        let mut n = 0;
        while n < 2 || w.elapsed() < warmup(duration) {
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
    })
}

/// Registers the current thread with grace (one empty read-side section).
fn grace_register() {
    drop(grace::rcu::read_lock());
}

/// `domain.synchronize()`, with the other threads as the domain's idle
/// readers (one section each, so each has a reader shard the grace period
/// sums).
fn measure_srcu<K: ReaderKind>(
    domain: &Srcu<K>,
    threads: usize,
    duration: Duration,
) -> Result<f64, String> {
    measure(threads, duration, &srcu_idle(domain), &|| {
        drop(domain.read_lock());
        Ok(Box::new(|| {
            domain.synchronize();
            Ok(())
        }) as WaitFn)
    })
}

/// An idle reader of `domain`: one section, so that the thread has a shard.
fn srcu_idle<K: ReaderKind>(domain: &Srcu<K>) -> impl Fn() -> Result<Keep, String> + Sync + '_ {
    move || {
        drop(domain.read_lock());
        Ok(Box::new(()) as Keep)
    }
}

/// Slices of each kind in [`measure_srcu_pair`].
const PAIR_ROUNDS: u32 = 10;

/// `grace-srcu-sync` and `grace-srcu-sync-cross` together: domain B's
/// `synchronize()` timed in slices that alternate between no reader blocked
/// anywhere and a reader of domain A asleep inside its section with A's grace
/// period pending (a `start_poll` cookie the shared SRCU service keeps trying,
/// and a thread waiting in `A.synchronize()`). Alternating slices see the same
/// machine, so their ratio does not move with the machine's state the way two
/// separate measurements do. Returns (ns per wait without, with).
///
/// Were B's grace periods to wait for A's reader, B's first wait would never
/// return: A's reader gives up after a while, and this returns an error that
/// says so. It also errs if A's grace period ended under its reader.
fn measure_srcu_pair(threads: usize, duration: Duration) -> Result<(f64, f64), String> {
    let a = Srcu::new().map_err(|e| e.to_string())?;
    let b = Srcu::new().map_err(|e| e.to_string())?;
    let (a, b) = (&a, &b);
    let slice = (duration / PAIR_ROUNDS).max(Duration::from_millis(1));
    let patience = slice + Duration::from_secs(2);
    // To A's reader: true enter a section, false leave it. From it: false
    // once inside, then whether it had to leave on its own (timed out).
    let (cmd_tx, cmd_rx) = mpsc::channel::<bool>();
    let (reply_tx, reply_rx) = mpsc::channel::<bool>();
    let time = |total: &mut (Duration, u64)| {
        let t = Instant::now();
        let mut n = 0u64;
        while n < 3 || t.elapsed() < slice {
            b.synchronize();
            n += 1;
        }
        total.0 += t.elapsed();
        total.1 += n;
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(true) = cmd_rx.recv() {
                let g = a.read_lock();
                if reply_tx.send(false).is_err() {
                    break;
                }
                // Asleep inside A's section until told to leave.
                let timed_out = cmd_rx.recv_timeout(patience).is_err();
                drop(g);
                if reply_tx.send(timed_out).is_err() {
                    break;
                }
            }
        });
        with_idle_readers(threads, &srcu_idle(b), move |ready| {
            drop(b.read_lock());
            ready();
            let w = Instant::now();
            while w.elapsed() < warmup(duration) {
                b.synchronize();
            }
            let (mut plain, mut cross) = ((Duration::ZERO, 0), (Duration::ZERO, 0));
            let lost = || "domain A's reader thread is gone".to_string();
            for round in 0..PAIR_ROUNDS {
                // Alternate which kind goes first, so that drift cancels out.
                for blocked in [round % 2 == 1, round % 2 == 0] {
                    if !blocked {
                        time(&mut plain);
                        continue;
                    }
                    cmd_tx.send(true).map_err(|_| lost())?;
                    reply_rx.recv().map_err(|_| lost())?;
                    let cookie = a.start_poll();
                    let (leaked, timed_out) = std::thread::scope(|w| {
                        w.spawn(|| a.synchronize());
                        time(&mut cross);
                        let leaked = a.poll_state(cookie);
                        let _ = cmd_tx.send(false);
                        (leaked, reply_rx.recv())
                    });
                    match timed_out {
                        Ok(false) if leaked => {
                            return Err("bug: domain A's grace period ended while its reader \
                                 was inside"
                                .into())
                        }
                        Ok(false) => {}
                        Ok(true) => {
                            return Err(format!(
                                "bug: domain B's grace periods waited for domain A's reader \
                                 (released after {:.1} s)",
                                patience.as_secs_f64()
                            ))
                        }
                        Err(_) => return Err(lost()),
                    }
                }
            }
            Ok((ns(plain.0) / plain.1 as f64, ns(cross.0) / cross.1 as f64))
        })
    })
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
        "grace-srcu-lite-sync" => {
            let domain = SrcuLite::new_lite().map_err(|e| e.to_string())?;
            measure_srcu(&domain, threads, duration)
        }
        other => Err(format!("unknown sync implementation {other}")),
    }
}

/// The sync suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    let mut out = Vec::new();
    for threads in opts.thread_counts() {
        // grace-srcu-sync and grace-srcu-sync-cross are measured together.
        let mut pair = None;
        for name in impls() {
            progress(&format!("{SUITE} {name} t={threads}"));
            let note = (name == "grace-srcu-sync-cross").then(|| CROSS_NOTE.to_string());
            let measured = match name {
                "grace-srcu-sync" | "grace-srcu-sync-cross" => pair
                    .get_or_insert_with(|| measure_srcu_pair(threads, opts.duration))
                    .clone()
                    .map(|(plain, cross)| {
                        if name == "grace-srcu-sync" {
                            plain
                        } else {
                            cross
                        }
                    }),
                _ => measure_impl(name, threads, opts.duration),
            };
            out.push(match measured {
                Ok(ns_per_op) => row(SUITE, name, threads, ns_per_op, 1e9 / ns_per_op, note),
                Err(e) => skipped(SUITE, name, threads, e),
            });
        }
    }
    out
}
