//! The `free` suite: deferred free of a 64-byte object, *including its
//! allocation and its final free*, end to end.
//!
//! For a thread count `T`, `T` workers each allocate and hand over `N`
//! 64-byte objects (`N` from [`Options::duration`], see [`objects_per_thread`]),
//! then one final drain makes sure every object has been freed. The clock
//! starts when the first worker is released (all are released together by a
//! barrier) and stops when the drain returns; workers stay parked until then,
//! so thread exit is not part of the figure. `ns_per_op` is total time over
//! total objects, as in the `call` suite (whose methodology this follows: a
//! full-size untimed warm-up round, then three timed rounds, the median
//! reported).
//!
//! Implementations:
//!
//! * `box-drop`: `Box::new([i as u8; 64])` and drop, the baseline: what the
//!   same allocation and free cost with no deferral at all;
//! * `grace-kvfree`: `grace::kvfree(Box::new([i as u8; 64]))` ×N, drained by
//!   `grace::kvfree_barrier()`, which returns once every object kvfreed before
//!   it is freed. The type has no drop glue, so this is kvfree's fast path (the
//!   owning thread frees expired arrays itself). Checked afterwards, outside
//!   the timing: `kvfree::stats()` must show `T * N` more objects freed (at
//!   least: nothing else in the process kvfrees during a benchmark);
//! * `grace-kvfree-drop`: the same with the peers' object, [`Counted`] (64
//!   bytes whose `Drop` adds one to its worker's counter): drop glue sends it
//!   down kvfree's callback path; the like-for-like row for the peers;
//! * `liburcu-memb`: in C, `malloc(64)` and `call_rcu` with a callback that
//!   counts and `free`s ×N (the `rcu_head` is inside the 64 bytes: liburcu has
//!   no headless form), drained by `rcu_barrier()`;
//! * `crossbeam-epoch`: `pin()`, `Owned::new(Counted)`, `defer_destroy`, unpin,
//!   ×N (one pin per object, an operation-per-pin user), and a final
//!   `flush()` per worker; drained by looping `pin().flush()` until every
//!   object's `Drop` has run (crossbeam has no barrier, so the counters are
//!   what makes "drained" real), giving up with a note after a timeout;
//! * `seize`: `collector.retire(Box::into_raw(Box::new(Counted)),
//!   reclaim::boxed)` ×N on one collector shared by the workers, drained by
//!   `Collector::reclaim_all()` (seize's documented way to reclaim everything
//!   once no thread is active), checked by the counters.
//!
//! The counters are per worker, each on its own cache line; an object counts
//! into the counter of the worker that allocated it, so a free costs an
//! uncontended atomic add unless another thread frees the object. Every
//! counted row must end with exactly `N` on each counter; a shortfall is a bug
//! (the row gets `NaN` figures and a note).

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::call::Phases;
use crate::harness::{median_ns_per_op, run_each, Counter, CounterPtr, Rounds};
use crate::{liburcu, BenchResult, Options};

const SUITE: &str = "free";

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["box-drop", "grace-kvfree", "grace-kvfree-drop"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v.extend(["crossbeam-epoch", "seize"]);
    v
}

/// Objects each worker frees: ten million per second of
/// [`Options::duration`], clamped to `50_000..=20_000_000` (300 ms: 3 M
/// objects, so that the final drain, about one grace period, is a small part
/// of the figure).
pub(crate) fn objects_per_thread(duration: Duration) -> u64 {
    ((duration.as_secs_f64() * 1e7) as u64).clamp(50_000, 20_000_000)
}

/// The peers' object: 64 bytes whose `Drop` adds one to its worker's counter,
/// so that a drain can tell when every object has really been freed.
#[repr(C)]
pub(crate) struct Counted {
    counter: CounterPtr,
    _fill: [u8; 56],
}

impl Counted {
    /// A 64-byte object counting into `counter` when dropped.
    pub(crate) fn new(counter: CounterPtr, i: u64) -> Counted {
        Counted {
            counter,
            _fill: [i as u8; 56],
        }
    }
}

impl Drop for Counted {
    #[inline]
    fn drop(&mut self) {
        self.counter.bump();
    }
}

/// One worker's counter and the objects it counts.
pub(crate) struct Counters(Vec<Counter>);

impl Counters {
    pub(crate) fn new(threads: usize) -> Counters {
        Counters((0..threads).map(|_| Counter::new()).collect())
    }

    /// The handle worker `i`'s objects count into.
    pub(crate) fn ptr(&self, i: usize) -> CounterPtr {
        self.0[i].ptr()
    }

    /// Objects counted so far, all workers.
    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }

    /// Free the counters if each reached `each` (else leak them: a late
    /// `Drop` may still count); `Err` with the counts otherwise.
    pub(crate) fn finish(self, each: u64) -> Result<(), String> {
        let counts: Vec<u64> = self.0.into_iter().map(|c| c.finish(each)).collect();
        if counts.iter().all(|&c| c == each) {
            Ok(())
        } else {
            Err(format!(
                "BUG: free count mismatch after the drain: {counts:?}, expected {each} per worker"
            ))
        }
    }
}

/// How a row's workers hand objects over and how its coordinator drains.
pub(crate) trait Scheme: Sync {
    /// Whether objects count frees (then every counter must reach `n`).
    const COUNTED: bool;
    /// What the coordinator sets up before the clock starts.
    type Coordinator;

    /// Worker `i`: set up, `ph.start()`, hand over `n` objects counting into
    /// `c`, `ph.finish()`, clean up.
    fn worker(&self, ph: &Phases, n: u64, c: CounterPtr);

    /// The coordinator's setup, before the clock starts.
    fn prepare(&self) -> Result<Self::Coordinator, String>;

    /// The drain: every object handed over must be freed when it returns.
    fn drain(&self, co: &Self::Coordinator, counters: &Counters, total: u64) -> Result<(), String>;
}

/// One round of `scheme`: `threads` workers of `n` objects each, then the
/// drain. Returns the time from the workers' release to the end of the drain.
pub(crate) fn round<S: Scheme>(scheme: &S, threads: usize, n: u64) -> Result<Duration, String> {
    let total = n * threads as u64;
    let counters = Counters::new(threads);
    let phases = Phases::new(threads, total);
    let timed = std::thread::scope(|s| {
        for i in 0..threads {
            let (phases, ptr) = (&phases, counters.ptr(i));
            s.spawn(move || scheme.worker(phases, n, ptr));
        }
        // The coordinator is a thread of its own, so the caller's thread is
        // never registered with any implementation.
        let (phases, counters) = (&phases, &counters);
        s.spawn(move || {
            let co = scheme.prepare();
            phases.start.wait();
            phases.queued.wait();
            let drained = co.and_then(|co| scheme.drain(&co, counters, total));
            let end = Instant::now();
            let elapsed = end.duration_since(phases.started(end));
            phases.drained.wait();
            drained.map(|()| elapsed)
        })
        .join()
        .unwrap_or_else(|_| Err("coordinator thread panicked".into()))
    });
    let counted = if S::COUNTED {
        counters.finish(n)
    } else {
        Ok(())
    };
    timed.and_then(|t| counted.map(|()| t))
}

/// `box-drop`.
struct BoxDrop;

impl Scheme for BoxDrop {
    const COUNTED: bool = false;
    type Coordinator = ();

    fn worker(&self, ph: &Phases, n: u64, _: CounterPtr) {
        ph.start();
        for i in 0..n {
            drop(black_box(Box::new([i as u8; 64])));
        }
        ph.finish();
    }

    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }

    fn drain(&self, _: &(), _: &Counters, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// `grace-kvfree` (`counted: false`, `[u8; 64]`) and `grace-kvfree-drop`.
struct GraceKvfree {
    counted: bool,
}

impl Scheme for GraceKvfree {
    // Checked through `kvfree::stats()` instead when not counted (see `measure`).
    const COUNTED: bool = false;
    type Coordinator = ();

    fn worker(&self, ph: &Phases, n: u64, c: CounterPtr) {
        ph.start();
        if self.counted {
            for i in 0..n {
                grace::kvfree(black_box(Box::new(Counted::new(c, i))));
            }
        } else {
            for i in 0..n {
                grace::kvfree(black_box(Box::new([i as u8; 64])));
            }
        }
        ph.finish();
    }

    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }

    fn drain(&self, _: &(), counters: &Counters, total: u64) -> Result<(), String> {
        grace::kvfree_barrier();
        if self.counted && counters.sum() != total {
            return Err(format!(
                "BUG: {} of {total} objects dropped after kvfree_barrier()",
                counters.sum()
            ));
        }
        Ok(())
    }
}

/// `liburcu-memb`.
struct Liburcu;

impl Scheme for Liburcu {
    const COUNTED: bool = true;
    type Coordinator = liburcu::Registration;

    fn worker(&self, ph: &Phases, n: u64, c: CounterPtr) {
        let reg = liburcu::Registration::new();
        ph.start();
        if let Some(reg) = &reg {
            // SAFETY: the counter outlives the coordinator's barrier, after
            // which every callback has run (`round` leaks it otherwise).
            unsafe { reg.free_loop(n, c.as_ptr()) };
        }
        // Without a registration nothing is queued, and the count check
        // reports the shortfall.
        ph.finish();
    }

    fn prepare(&self) -> Result<liburcu::Registration, String> {
        liburcu::register()
    }

    fn drain(&self, reg: &liburcu::Registration, _: &Counters, _: u64) -> Result<(), String> {
        reg.barrier();
        Ok(())
    }
}

/// `crossbeam-epoch`.
struct Crossbeam {
    timeout: Duration,
}

impl Scheme for Crossbeam {
    const COUNTED: bool = true;
    type Coordinator = ();

    fn worker(&self, ph: &Phases, n: u64, c: CounterPtr) {
        ph.start();
        for i in 0..n {
            let guard = crossbeam_epoch::pin();
            let p = crossbeam_epoch::Owned::new(Counted::new(c, i)).into_shared(&guard);
            // SAFETY: the object was never shared, so no other thread can
            // hold a reference to it; it is destroyed once, after the epoch.
            unsafe { guard.defer_destroy(p) };
            drop(guard);
        }
        crossbeam_epoch::pin().flush();
        ph.finish();
    }

    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }

    fn drain(&self, _: &(), counters: &Counters, total: u64) -> Result<(), String> {
        drain_crossbeam(&|| counters.sum(), total, self.timeout)
    }
}

/// Loop `pin().flush()` until `freed()` reaches `total`, or give up after
/// `timeout`.
pub(crate) fn drain_crossbeam(
    freed: &dyn Fn() -> u64,
    total: u64,
    timeout: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    while freed() < total {
        if t.elapsed() > timeout {
            return Err(format!(
                "drain gave up after {timeout:?}: {} of {total} objects freed",
                freed()
            ));
        }
        crossbeam_epoch::pin().flush();
    }
    Ok(())
}

/// `seize`.
struct Seize {
    collector: seize::Collector,
}

impl Scheme for Seize {
    const COUNTED: bool = true;
    type Coordinator = ();

    fn worker(&self, ph: &Phases, n: u64, c: CounterPtr) {
        ph.start();
        for i in 0..n {
            let p = Box::into_raw(Box::new(Counted::new(c, i)));
            // SAFETY: `p` is a fresh Box pointer, never shared, retired once
            // with the reclaimer matching its allocation.
            unsafe { self.collector.retire(p, seize::reclaim::boxed) };
        }
        ph.finish();
    }

    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }

    fn drain(&self, _: &(), _: &Counters, _: u64) -> Result<(), String> {
        // SAFETY: no thread is active on the collector: the workers hold no
        // guard (they never enter one) and are parked, the coordinator holds
        // none, and no retired object was ever shared.
        unsafe { self.collector.reclaim_all() };
        Ok(())
    }
}

/// One round of `name`; `n` objects per worker.
fn round_of(name: &str, threads: usize, n: u64, duration: Duration) -> Result<Duration, String> {
    match name {
        "box-drop" => round(&BoxDrop, threads, n),
        "grace-kvfree" => {
            let before = grace::kvfree::stats().objects_freed;
            let t = round(&GraceKvfree { counted: false }, threads, n)?;
            let freed = grace::kvfree::stats().objects_freed - before;
            let total = n * threads as u64;
            // At least: other kvfree users in the process (tests running in parallel) may
            // add to the count; the benchmark itself has none.
            if freed < total {
                return Err(format!(
                    "BUG: kvfree::stats() shows {freed} of {total} objects freed after kvfree_barrier()"
                ));
            }
            Ok(t)
        }
        "grace-kvfree-drop" => round(&GraceKvfree { counted: true }, threads, n),
        "liburcu-memb" => {
            if !liburcu::available() {
                return Err(liburcu::unavailable_reason().into());
            }
            round(&Liburcu, threads, n)
        }
        "crossbeam-epoch" => round(
            &Crossbeam {
                timeout: Duration::from_secs(10) + duration * 10,
            },
            threads,
            n,
        ),
        "seize" => round(
            &Seize {
                collector: seize::Collector::new(),
            },
            threads,
            n,
        ),
        other => Err(format!("unknown free implementation {other}")),
    }
}

/// [`median_ns_per_op`] of `name`'s rounds.
fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<Rounds, String> {
    let n = objects_per_thread(duration);
    median_ns_per_op(threads, n, || round_of(name, threads, n, duration))
}

/// The free suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    run_each(SUITE, &impls(), opts, progress, measure_impl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_64_bytes() {
        assert_eq!(std::mem::size_of::<Counted>(), 64);
        assert_eq!(std::mem::size_of::<[u8; 64]>(), 64);
    }

    #[test]
    fn sizes_are_clamped() {
        assert_eq!(objects_per_thread(Duration::ZERO), 50_000);
        assert_eq!(objects_per_thread(Duration::from_millis(300)), 3_000_000);
        assert_eq!(objects_per_thread(Duration::from_secs(60)), 20_000_000);
    }

    #[test]
    fn every_row_drains_completely() {
        for name in impls() {
            for threads in [1, 2] {
                round_of(name, threads, 20_000, Duration::from_millis(10))
                    .unwrap_or_else(|e| panic!("{name} t={threads}: {e}"));
            }
        }
    }
}
