//! The `call` suite: deferred-callback throughput, end to end.
//!
//! For a thread count `T`, `T` worker threads each queue `N` callbacks (`N`
//! from [`Options::duration`], see [`calls_per_thread`]) whose work is one
//! relaxed increment of a shared counter, reached through one captured
//! pointer so that every closure is a single word. Then the coordinating
//! thread performs **one** final drain, after which every callback must have
//! run. The clock starts when the first worker is released (all are
//! released together by a barrier, each stamping its own start) and stops
//! when the drain returns; workers stay parked (alive, outside any section)
//! until then, so thread exit is not part of the figure. The row holds total
//! time / total callbacks as `ns_per_op`, and callbacks per second.
//!
//! A full-size untimed round warms each implementation up first (helper
//! threads, allocator pools, memory faulted in); then three timed rounds run
//! and the median is reported. After the drain the counter must equal `T * N`; if it
//! does not, that is a bug: the row gets `NaN` figures and a note, and the
//! crate's tests fail.
//!
//! Implementations:
//!
//! * `grace-rcu`: `grace::rcu::call(closure)` ×N, drained by
//!   `grace::rcu::barrier()`;
//! * `liburcu-memb`: `urcu_memb_call_rcu(&head, cb)` ×N on heads
//!   preallocated (and touched) before the clock starts, since grace stores
//!   small closures inline without allocating; drained by
//!   `urcu_memb_barrier()`;
//! * `crossbeam-epoch`: `guard.defer(closure)` ×N on the default collector,
//!   re-pinning (`drop` + `pin()`) every 64 defers as an operation-per-pin
//!   user would, and a final `guard.flush()` by each worker (its thread-local
//!   bag would otherwise stay private to the parked worker); drained by
//!   looping `pin().flush()` until the counter is complete, giving up with a
//!   note after a timeout rather than hanging;
//! * `seize`: `collector.retire(ptr, reclaim)` ×N of a boxed counter pointer
//!   (seize retires pointers, so the box allocation and its free are part of
//!   the cost), inside guards re-entered every 64 retires, on one collector
//!   shared by the workers; drained by `Collector::reclaim_all`, seize's
//!   documented way to run everything retired once no thread is active.
//!
//! # The free64 workload
//!
//! The rows named `<impl>/free64` run a second workload: each callback frees a
//! 64-byte `Box` allocated just before it is queued, inside the timed loop (the
//! peers' 64-byte `Counted` object, whose `Drop` increments the round's
//! counter, so the exactly-once check holds as above). The same closure for
//! every peer, `move || drop(b)`, one word:
//!
//! * `grace-rcu/free64`: `grace::rcu::call(move || drop(b))`;
//! * `liburcu-memb/free64`: the same Rust `Box`, stored in a preallocated head
//!   beside its `rcu_head` (liburcu has no headless form) and queued with
//!   `call_rcu`; the C callback hands it back to a Rust `extern "C"` function
//!   that drops it;
//! * `crossbeam-epoch/free64`: `guard.defer(move || drop(b))`, re-pinning every
//!   64 as above;
//! * `seize/free64`: `collector.retire(Box::into_raw(b), reclaim::boxed)`, in
//!   guards re-entered every 64 as above.
//!
//! Each workload's rows are compared with its own grace row (`grace-rcu`,
//! `grace-rcu/free64`).

use std::ffi::c_void;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::free::Counted;
use crate::harness::{median_ns_per_op, run_each, Counter, CounterPtr};
use crate::{liburcu, BenchResult, Options};

const SUITE: &str = "call";

/// Deferrals per guard for the epoch peers (crossbeam, seize).
const PER_GUARD: u64 = 64;

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v.extend(["crossbeam-epoch", "seize", "grace-rcu/free64"]);
    if liburcu::available() {
        v.push("liburcu-memb/free64");
    }
    v.extend(["crossbeam-epoch/free64", "seize/free64"]);
    v
}

/// Callbacks each worker queues: one million per second of
/// [`Options::duration`], clamped to `5_000..=2_000_000`.
pub(crate) fn calls_per_thread(duration: Duration) -> u64 {
    ((duration.as_secs_f64() * 1e6) as u64).clamp(5_000, 2_000_000)
}

/// The phases a worker goes through; the coordinator mirrors them (also
/// used by the `free` and `reuse` suites).
pub(crate) struct Phases {
    /// Callbacks queued by all workers together.
    pub(crate) total: u64,
    pub(crate) start: Barrier,
    pub(crate) queued: Barrier,
    pub(crate) drained: Barrier,
    /// The earliest instant a worker got past `start`: the clock's start.
    /// (Taken by the workers, not the coordinator, which may be scheduled
    /// late after the barrier when threads outnumber CPUs.)
    pub(crate) first_start: Mutex<Option<Instant>>,
}

impl Phases {
    /// Phases for `threads` workers and one coordinator, `total` operations
    /// in all.
    pub(crate) fn new(threads: usize, total: u64) -> Phases {
        Phases {
            total,
            start: Barrier::new(threads + 1),
            queued: Barrier::new(threads + 1),
            drained: Barrier::new(threads + 1),
            first_start: Mutex::new(None),
        }
    }

    /// The clock's start: the earliest worker's, or `now` if none stamped.
    pub(crate) fn started(&self, now: Instant) -> Instant {
        self.first_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(now)
    }

    /// Setup done; wait for the others, then start the clock.
    pub(crate) fn start(&self) {
        self.start.wait();
        let now = Instant::now();
        let mut first = self.first_start.lock().unwrap_or_else(|e| e.into_inner());
        *first = Some(first.map_or(now, |t| t.min(now)));
    }

    /// Queuing done; stay parked until the coordinator has drained.
    pub(crate) fn finish(&self) {
        self.queued.wait();
        self.drained.wait();
    }

    /// Whether every callback of the round has run.
    fn all_ran(&self, counter: &Counter) -> bool {
        counter.get() == self.total
    }
}

/// Runs one round: `threads` workers each run `worker(phases, n, counter)`,
/// then a coordinator thread, set up by `prepare` before the clock starts,
/// runs `drain(state, counter, total)`. Returns the time from the workers'
/// release to the end of the drain, or why the counter is short.
fn round<W, P, S, D>(
    threads: usize,
    n: u64,
    worker: &W,
    prepare: P,
    drain: D,
) -> Result<Duration, String>
where
    W: Fn(&Phases, u64, CounterPtr, &Counter) + Sync,
    P: FnOnce() -> Result<S, String> + Send,
    D: FnOnce(&S, &Counter, u64) -> Result<(), String> + Send,
{
    let total = n * threads as u64;
    let counter = Counter::new();
    let phases = Phases::new(threads, total);
    let timed = std::thread::scope(|s| {
        for _ in 0..threads {
            let (phases, counter) = (&phases, &counter);
            let ptr = counter.ptr();
            s.spawn(move || worker(phases, n, ptr, counter));
        }
        // The coordinator is a thread of its own too, so the caller's thread
        // is never registered with any implementation.
        let (phases, counter) = (&phases, &counter);
        s.spawn(move || {
            let state = prepare();
            phases.start.wait();
            phases.queued.wait();
            let drained = state.and_then(|state| drain(&state, counter, total));
            let end = Instant::now();
            // Every worker stamped the start before arriving at `queued`.
            let first = *phases.first_start.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = end.duration_since(first.unwrap_or(end));
            phases.drained.wait();
            drained.map(|()| elapsed)
        })
        .join()
        .unwrap_or_else(|_| Err("coordinator thread panicked".into()))
    });
    let ran = counter.finish(total);
    match timed {
        Ok(_) if ran != total => Err(format!(
            "BUG: callback count mismatch: {ran} of {total} callbacks ran after the drain"
        )),
        r => r,
    }
}

fn grace_worker(ph: &Phases, n: u64, c: CounterPtr, _: &Counter) {
    ph.start();
    for _ in 0..n {
        grace::rcu::call(move || c.bump());
    }
    ph.finish();
}

fn grace_free64_worker(ph: &Phases, n: u64, c: CounterPtr, _: &Counter) {
    ph.start();
    for i in 0..n {
        let b = Box::new(Counted::new(c, i));
        grace::rcu::call(move || drop(b));
    }
    ph.finish();
}

fn no_prep() -> Result<(), String> {
    Ok(())
}

fn grace_drain(_: &(), _: &Counter, _: u64) -> Result<(), String> {
    grace::rcu::barrier();
    Ok(())
}

fn liburcu_worker(ph: &Phases, n: u64, c: CounterPtr, counter: &Counter) {
    let reg = liburcu::Registration::new();
    let heads = reg.as_ref().and_then(|reg| {
        // SAFETY: `round` keeps the counter alive until the drain has run
        // and then frees it only if every callback ran (else it leaks it).
        unsafe { liburcu::CallHeads::new(reg, n, c.as_ptr()) }
    });
    ph.start();
    let heads = match (reg.as_ref(), heads) {
        (Some(reg), Some(mut heads)) => {
            heads.queue(reg);
            Some(heads)
        }
        // No registration or no memory: queue nothing, and the count check
        // in `round` reports the shortfall.
        _ => None,
    };
    ph.finish();
    if let Some(heads) = heads {
        // The coordinator's barrier has returned: the heads can be freed if
        // every callback ran; otherwise they are leaked.
        heads.free_after_barrier(ph.all_ran(counter));
    }
    // `reg` drops last (unregistering the thread), after the heads are gone.
}

/// The free64 rows' liburcu callback: frees one [`Counted`] box.
///
/// # Safety
///
/// `p` must come from `Box::into_raw` of a `Counted` and be passed here once.
unsafe extern "C" fn free_counted(p: *mut c_void) {
    // SAFETY: guaranteed by the caller (each head's callback runs once, with
    // the box stored in it by `liburcu_free64_worker`). `Counted::drop` only
    // increments a counter, so no panic unwinds into C.
    drop(unsafe { Box::from_raw(p.cast::<Counted>()) });
}

fn liburcu_free64_worker(ph: &Phases, n: u64, c: CounterPtr, counter: &Counter) {
    let reg = liburcu::Registration::new();
    let heads = reg
        .as_ref()
        .and_then(|reg| liburcu::BoxHeads::new(reg, n, free_counted));
    ph.start();
    let heads = match (reg.as_ref(), heads) {
        (Some(reg), Some(mut heads)) => {
            for i in 0..n {
                let b = Box::into_raw(Box::new(Counted::new(c, i)));
                // SAFETY: `b` is a fresh `Box<Counted>` that only this head
                // holds; `free_counted` frees it once, on liburcu's thread
                // (`Counted` is `Send`).
                if !unsafe { heads.call(reg, b.cast()) } {
                    // More calls than heads cannot happen (n of each); were it
                    // to, the box is freed here and the count check reports it.
                    // SAFETY: liburcu never saw `b`.
                    drop(unsafe { Box::from_raw(b) });
                }
            }
            Some(heads)
        }
        // No registration or no memory: queue nothing, and the count check
        // in `round` reports the shortfall.
        _ => None,
    };
    ph.finish();
    if let Some(heads) = heads {
        heads.free_after_barrier(ph.all_ran(counter));
    }
}

fn liburcu_prep() -> Result<liburcu::Registration, String> {
    liburcu::register()
}

fn liburcu_drain(reg: &liburcu::Registration, _: &Counter, _: u64) -> Result<(), String> {
    reg.barrier();
    Ok(())
}

fn crossbeam_worker(ph: &Phases, n: u64, c: CounterPtr, _: &Counter) {
    crossbeam_loop(ph, n, |guard, _| guard.defer(move || c.bump()));
}

fn crossbeam_free64_worker(ph: &Phases, n: u64, c: CounterPtr, _: &Counter) {
    crossbeam_loop(ph, n, |guard, i| {
        let b = Box::new(Counted::new(c, i));
        guard.defer(move || drop(b));
    });
}

/// `defer_one(guard, i)` for i in 1..=n, re-pinning every [`PER_GUARD`], then a flush.
#[inline]
fn crossbeam_loop(ph: &Phases, n: u64, defer_one: impl Fn(&crossbeam_epoch::Guard, u64)) {
    ph.start();
    let mut guard = crossbeam_epoch::pin();
    for i in 1..=n {
        defer_one(&guard, i);
        if i % PER_GUARD == 0 {
            drop(guard);
            guard = crossbeam_epoch::pin();
        }
    }
    guard.flush();
    drop(guard);
    ph.finish();
}

/// How long the crossbeam drain may loop before giving up.
fn crossbeam_timeout(duration: Duration) -> Duration {
    Duration::from_secs(10) + duration * 10
}

fn crossbeam_drain(counter: &Counter, total: u64, timeout: Duration) -> Result<(), String> {
    let t = Instant::now();
    while counter.get() < total {
        if t.elapsed() > timeout {
            return Err(format!(
                "drain gave up after {timeout:?}: {} of {total} deferred closures ran",
                counter.get()
            ));
        }
        let guard = crossbeam_epoch::pin();
        guard.flush();
        drop(guard);
    }
    Ok(())
}

/// What seize retires: the counter the reclaimer bumps.
struct SeizeNode(CounterPtr);

/// The reclaimer: count, then free the node.
///
/// # Safety
///
/// `node` must come from `Box::into_raw` of a `SeizeNode` and be reclaimed
/// once (seize's retire contract).
unsafe fn seize_reclaim(node: *mut SeizeNode, _: &seize::Collector) {
    // SAFETY: guaranteed by the caller (seize calls this once per retire).
    let node = unsafe { Box::from_raw(node) };
    node.0.bump();
}

fn seize_worker(collector: &seize::Collector, ph: &Phases, n: u64, c: CounterPtr) {
    seize_loop(collector, ph, n, |_| {
        let node = Box::into_raw(Box::new(SeizeNode(c)));
        // SAFETY: the node was never shared, so no thread can reach it after
        // this call, and `seize_reclaim` matches its `Box` allocation.
        unsafe { collector.retire(node, seize_reclaim) };
    });
}

fn seize_free64_worker(collector: &seize::Collector, ph: &Phases, n: u64, c: CounterPtr) {
    seize_loop(collector, ph, n, |i| {
        let b = Box::into_raw(Box::new(Counted::new(c, i)));
        // SAFETY: the box was never shared, so no thread can reach it after
        // this call, and `reclaim::boxed` matches its `Box` allocation.
        unsafe { collector.retire(b, seize::reclaim::boxed) };
    });
}

/// `retire_one(i)` for i in 1..=n inside guards re-entered every [`PER_GUARD`].
#[inline]
fn seize_loop(collector: &seize::Collector, ph: &Phases, n: u64, retire_one: impl Fn(u64)) {
    ph.start();
    let mut guard = collector.enter();
    for i in 1..=n {
        retire_one(i);
        if i % PER_GUARD == 0 {
            drop(guard);
            guard = collector.enter();
        }
    }
    drop(guard);
    ph.finish();
}

fn seize_drain(collector: &seize::Collector) -> Result<(), String> {
    // SAFETY: reclaim_all requires that no thread is active on the
    // collector: the workers have dropped their guards and are parked on
    // the `drained` barrier, the coordinator holds none, and nobody can
    // reach a retired node (each was only ever known to its retirer).
    unsafe { collector.reclaim_all() };
    Ok(())
}

/// One round of `name`; `n` callbacks per worker.
fn round_of(name: &str, threads: usize, n: u64, duration: Duration) -> Result<Duration, String> {
    match name {
        "grace-rcu" => round(threads, n, &grace_worker, no_prep, grace_drain),
        "liburcu-memb" => {
            if !liburcu::available() {
                return Err(liburcu::unavailable_reason().into());
            }
            round(threads, n, &liburcu_worker, liburcu_prep, liburcu_drain)
        }
        "crossbeam-epoch" => round(threads, n, &crossbeam_worker, no_prep, |_, c, total| {
            crossbeam_drain(c, total, crossbeam_timeout(duration))
        }),
        "seize" => {
            let collector = seize::Collector::new();
            round(
                threads,
                n,
                &|ph, n, c, _| seize_worker(&collector, ph, n, c),
                no_prep,
                |_, _, _| seize_drain(&collector),
            )
        }
        "grace-rcu/free64" => round(threads, n, &grace_free64_worker, no_prep, grace_drain),
        "liburcu-memb/free64" => {
            if !liburcu::available() {
                return Err(liburcu::unavailable_reason().into());
            }
            round(
                threads,
                n,
                &liburcu_free64_worker,
                liburcu_prep,
                liburcu_drain,
            )
        }
        "crossbeam-epoch/free64" => round(
            threads,
            n,
            &crossbeam_free64_worker,
            no_prep,
            |_, c, total| crossbeam_drain(c, total, crossbeam_timeout(duration)),
        ),
        "seize/free64" => {
            let collector = seize::Collector::new();
            round(
                threads,
                n,
                &|ph, n, c, _| seize_free64_worker(&collector, ph, n, c),
                no_prep,
                |_, _, _| seize_drain(&collector),
            )
        }
        other => Err(format!("unknown call implementation {other}")),
    }
}

/// [`median_ns_per_op`] of `name`'s rounds.
fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<f64, String> {
    let n = calls_per_thread(duration);
    median_ns_per_op(threads, n, || round_of(name, threads, n, duration))
}

/// The call suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    run_each(SUITE, &impls(), opts, progress, measure_impl)
}
