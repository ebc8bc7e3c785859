//! The `call` suite: deferred-callback throughput, end to end.
//!
//! For a thread count `T`, `T` worker threads each queue `N` callbacks (`N`
//! from [`Options::duration`], see [`calls_per_thread`]) whose work is one
//! relaxed increment of a shared counter, reached through one captured
//! pointer so that every closure is a single word. Then the coordinating
//! thread performs **one** final drain, after which every callback must have
//! run. The clock starts when the workers are released together and stops
//! when the drain returns; workers stay parked (alive, outside any section)
//! until then, so thread exit is not part of the figure. The row holds total
//! time / total callbacks as `ns_per_op`, and callbacks per second.
//!
//! A short untimed round warms each implementation up first (helper threads,
//! allocator pools). After the drain the counter must equal `T * N`; if it
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

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::harness::{ns, row, skipped, Counter, CounterPtr};
use crate::{liburcu, BenchResult, Options};

const SUITE: &str = "call";

/// Deferrals per guard for the epoch peers (crossbeam, seize).
const PER_GUARD: u64 = 64;

/// Callbacks per worker in the untimed warm-up round.
const WARMUP_CALLS: u64 = 2_000;

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    let mut v = vec!["grace-rcu"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v.extend(["crossbeam-epoch", "seize"]);
    v
}

/// Callbacks each worker queues: one million per second of
/// [`Options::duration`], clamped to `5_000..=2_000_000`.
pub(crate) fn calls_per_thread(duration: Duration) -> u64 {
    ((duration.as_secs_f64() * 1e6) as u64).clamp(5_000, 2_000_000)
}

/// The phases a worker goes through; the coordinator mirrors them.
struct Phases {
    /// Callbacks queued by all workers together.
    total: u64,
    start: Barrier,
    queued: Barrier,
    drained: Barrier,
}

impl Phases {
    /// Setup done; wait for the clock to start.
    fn start(&self) {
        self.start.wait();
    }

    /// Queuing done; stay parked until the coordinator has drained.
    fn finish(&self) {
        self.queued.wait();
        self.drained.wait();
    }

    /// Whether every callback of the round has run.
    fn all_ran(&self, counter: &Counter) -> bool {
        counter.get() == self.total
    }
}

/// Runs one round: `threads` workers each run `worker(phases, n, counter)`,
/// then a coordinator thread runs `drain(counter, total)`. Returns the time from
/// the workers' release to the end of the drain, or why the counter is
/// short.
fn round<W, D>(threads: usize, n: u64, worker: &W, drain: D) -> Result<Duration, String>
where
    W: Fn(&Phases, u64, CounterPtr, &Counter) + Sync,
    D: FnOnce(&Counter, u64) -> Result<(), String> + Send,
{
    let total = n * threads as u64;
    let counter = Counter::new();
    let phases = Phases {
        total,
        start: Barrier::new(threads + 1),
        queued: Barrier::new(threads + 1),
        drained: Barrier::new(threads + 1),
    };
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
            phases.start.wait();
            let t = Instant::now();
            phases.queued.wait();
            let drained = drain(counter, total);
            let elapsed = t.elapsed();
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

fn grace_drain(_: &Counter, _: u64) -> Result<(), String> {
    grace::rcu::barrier();
    Ok(())
}

fn liburcu_worker(ph: &Phases, n: u64, c: CounterPtr, counter: &Counter) {
    let reg = liburcu::Registration::new();
    // SAFETY: `round` keeps the counter alive until the drain has run and
    // then frees it only if every callback ran (it leaks it otherwise).
    let heads = reg
        .as_ref()
        .and_then(|reg| unsafe { liburcu::CallHeads::new(reg, n, c.as_ptr()) });
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
    drop(reg);
}

fn liburcu_drain(_: &Counter, _: u64) -> Result<(), String> {
    let reg = liburcu::Registration::new().ok_or(liburcu::unavailable_reason())?;
    reg.barrier();
    Ok(())
}

fn crossbeam_worker(ph: &Phases, n: u64, c: CounterPtr, _: &Counter) {
    ph.start();
    let mut guard = crossbeam_epoch::pin();
    for i in 1..=n {
        guard.defer(move || c.bump());
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
    ph.start();
    let mut guard = collector.enter();
    for i in 1..=n {
        let node = Box::into_raw(Box::new(SeizeNode(c)));
        // SAFETY: the node was never shared, so no thread can reach it after
        // this call, and `seize_reclaim` matches its `Box` allocation.
        unsafe { collector.retire(node, seize_reclaim) };
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
        "grace-rcu" => round(threads, n, &grace_worker, grace_drain),
        "liburcu-memb" => {
            if !liburcu::available() {
                return Err(liburcu::unavailable_reason().into());
            }
            round(threads, n, &liburcu_worker, liburcu_drain)
        }
        "crossbeam-epoch" => round(threads, n, &crossbeam_worker, |c, total| {
            crossbeam_drain(c, total, crossbeam_timeout(duration))
        }),
        "seize" => {
            let collector = seize::Collector::new();
            round(
                threads,
                n,
                &|ph, n, c, _| seize_worker(&collector, ph, n, c),
                |_, _| seize_drain(&collector),
            )
        }
        other => Err(format!("unknown call implementation {other}")),
    }
}

fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<f64, String> {
    round_of(name, threads, WARMUP_CALLS, duration)?;
    let n = calls_per_thread(duration);
    let elapsed = round_of(name, threads, n, duration)?;
    Ok(ns(elapsed) / (n * threads as u64) as f64)
}

/// The call suite; see the module docs.
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
