//! Shared measurement plumbing: callback counters, the membarrier baseline,
//! and helpers that turn raw timings into [`BenchResult`]s.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{BenchResult, Options, Spread};

/// A callback counter that deferred closures reach through one raw pointer,
/// so that a closure is a single word (small enough for every peer to store
/// inline) and costs no reference-count traffic.
///
/// The counter is heap-allocated; [`Counter::finish`] frees it only when all
/// expected callbacks have run and leaks it otherwise, so a straggling
/// callback never touches freed memory.
pub(crate) struct Counter {
    /// Points at the `AtomicU64` at offset 0 of a heap [`PaddedCell`].
    cell: *mut AtomicU64,
}

// SAFETY: `Counter` owns its heap cell, an `AtomicU64`; moving the owner to
// another thread is fine.
unsafe impl Send for Counter {}
// SAFETY: through `&Counter` the cell is only read atomically (`get`).
unsafe impl Sync for Counter {}

impl Counter {
    pub(crate) fn new() -> Self {
        Self {
            // repr(C): the AtomicU64 is at offset 0, so the cast keeps pointing at it.
            cell: Box::into_raw(Box::new(PaddedCell(AtomicU64::new(0)))).cast::<AtomicU64>(),
        }
    }

    /// The handle callbacks capture.
    pub(crate) fn ptr(&self) -> CounterPtr {
        CounterPtr(self.cell)
    }

    pub(crate) fn get(&self) -> u64 {
        // SAFETY: `cell` came from `Box::into_raw` and is only freed by
        // `finish`, which consumes `self`.
        unsafe { (*self.cell).load(Ordering::Acquire) }
    }

    /// Frees the counter if `expected` callbacks ran, else leaks it (a late
    /// callback may still increment it). Returns the final count.
    pub(crate) fn finish(self, expected: u64) -> u64 {
        let ran = self.get();
        if ran == expected {
            // SAFETY: every callback that holds a `CounterPtr` to this cell
            // has run (the count says so and each runs exactly once), and
            // `self` is consumed, so no reference to the cell remains.
            drop(unsafe { Box::from_raw(self.cell.cast::<PaddedCell>()) });
        }
        ran
    }
}

/// The counter on a cache line of its own. A small heap cell shares its line with whatever
/// the allocator put beside it (other small objects, malloc's chunk headers), which the
/// implementation under test may write on every operation; that false sharing made the
/// figures depend on allocation order (a 3x swing for grace's `call` at one thread).
#[repr(C, align(128))]
struct PaddedCell(AtomicU64);

/// A pointer to a [`Counter`], captured by callbacks.
#[derive(Clone, Copy)]
pub(crate) struct CounterPtr(*const AtomicU64);

// SAFETY: the pointee is an `AtomicU64` (itself `Send + Sync`) that
// `Counter` keeps alive until every callback holding this pointer has run.
unsafe impl Send for CounterPtr {}
// SAFETY: as above; only atomic operations go through the pointer.
unsafe impl Sync for CounterPtr {}

impl CounterPtr {
    /// Adds one (the callbacks' "tiny work"). A method rather than a field
    /// access, so closures capture the whole `Send` wrapper.
    #[inline]
    pub(crate) fn bump(self) {
        // SAFETY: `Counter` keeps the cell alive until this callback has run
        // (see `Counter::finish`).
        unsafe { (*self.0).fetch_add(1, Ordering::Relaxed) };
    }

    pub(crate) fn as_ptr(self) -> *const AtomicU64 {
        self.0
    }
}

/// The bare `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` system call.
pub(crate) mod membarrier {
    #[cfg(target_os = "linux")]
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    #[cfg(target_os = "linux")]
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    #[cfg(target_os = "linux")]
    fn call(cmd: libc::c_long) -> Result<(), String> {
        // SAFETY: membarrier takes two integer arguments (cmd, flags) and a
        // cpu id that is ignored without MEMBARRIER_CMD_FLAG_CPU; it touches
        // no memory of ours.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }

    /// Registers the process for private expedited membarrier (idempotent).
    #[cfg(target_os = "linux")]
    pub(crate) fn register() -> Result<(), String> {
        call(CMD_REGISTER_PRIVATE_EXPEDITED)
            .map_err(|e| format!("membarrier REGISTER_PRIVATE_EXPEDITED failed: {e}"))
    }

    /// One private expedited membarrier.
    #[cfg(target_os = "linux")]
    pub(crate) fn barrier() -> Result<(), String> {
        call(CMD_PRIVATE_EXPEDITED).map_err(|e| format!("membarrier PRIVATE_EXPEDITED failed: {e}"))
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn register() -> Result<(), String> {
        Err("membarrier is Linux-only".into())
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn barrier() -> Result<(), String> {
        Err("membarrier is Linux-only".into())
    }
}

/// A row from a mean per-operation cost and an aggregate rate.
pub(crate) fn row(
    suite: &'static str,
    impl_name: &str,
    threads: usize,
    ns_per_op: f64,
    ops_per_s: f64,
    note: Option<String>,
) -> BenchResult {
    BenchResult {
        suite,
        impl_name: impl_name.to_string(),
        threads,
        ns_per_op,
        ops_per_s,
        note,
        spread: ROUNDS.take(),
        load_avg: load_average(),
    }
}

thread_local! {
    /// The spread of the last median this thread computed ([`note_rounds`]), until the row
    /// built from it takes it. A hand-off rather than a return value so that the suites'
    /// `measure` functions keep returning a plain ns/op.
    static ROUNDS: Cell<Option<Spread>> = const { Cell::new(None) };
}

/// Record the timed rounds (ns per operation) behind the next [`row`] of this thread.
pub(crate) fn note_rounds(per_op: &[f64]) {
    let min = per_op.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_op.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    ROUNDS.set((!per_op.is_empty()).then_some(Spread {
        min_ns_per_op: min,
        max_ns_per_op: max,
        rounds: per_op.len(),
    }));
}

/// The 1-minute load average, from `/proc/loadavg` (Linux); `None` elsewhere.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A row for a measurement that could not be taken (`NaN` figures).
pub(crate) fn skipped(
    suite: &'static str,
    impl_name: &str,
    threads: usize,
    why: String,
) -> BenchResult {
    ROUNDS.set(None); // rounds of a failed measurement describe nothing
    row(suite, impl_name, threads, f64::NAN, f64::NAN, Some(why))
}

/// Nanoseconds in `d`, as a float.
pub(crate) fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// Timed rounds per measurement of the round-based suites; the median is reported, with the
/// fastest and slowest round as the spread.
pub(crate) const TIMED_ROUNDS: usize = 3;

/// A full-size untimed `round` first, then [`TIMED_ROUNDS`] timed ones, in ns per operation
/// (median and spread): each round does `n` operations on each of `threads` threads.
///
/// The untimed round lets every implementation reach its steady state (pools filled, memory
/// faulted in, helper threads started) before the clock runs. A tiny warm-up left the first
/// timed round paying one-time page faults, which made short runs report 2-4x their
/// steady-state cost.
pub(crate) fn median_ns_per_op(
    threads: usize,
    n: u64,
    mut round: impl FnMut() -> Result<Duration, String>,
) -> Result<f64, String> {
    round()?;
    let mut per_op = Vec::with_capacity(TIMED_ROUNDS);
    for _ in 0..TIMED_ROUNDS {
        let elapsed = round()?;
        per_op.push(ns(elapsed) / (n * threads as u64) as f64);
    }
    note_rounds(&per_op);
    per_op.sort_by(f64::total_cmp);
    Ok(per_op[TIMED_ROUNDS / 2])
}

/// The rows of `suite`: each of `impls` at each of the thread counts of `opts`, measured by
/// `measure` (ns per operation over the timed rounds, or why it could not be) and announced
/// on `progress` first. A row's figures are the median round's; its spread the others'.
pub(crate) fn run_each(
    suite: &'static str,
    impls: &[&str],
    opts: &Options,
    progress: &mut dyn FnMut(&str),
    measure: impl Fn(&str, usize, Duration) -> Result<f64, String>,
) -> Vec<BenchResult> {
    let mut out = Vec::new();
    for threads in opts.thread_counts() {
        for &name in impls {
            progress(&format!("{suite} {name} t={threads}"));
            out.push(match measure(name, threads, opts.duration) {
                Ok(ns) => row(suite, name, threads, ns, 1e9 / ns, None),
                Err(e) => skipped(suite, name, threads, e),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_and_frees() {
        let c = Counter::new();
        let p = c.ptr();
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || (0..1000).for_each(|_| p.bump())))
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.finish(4000), 4000);
    }

    #[test]
    fn a_row_carries_the_spread_of_its_rounds_and_the_load() {
        let mut times = [5u64, 10, 30, 20].into_iter(); // warm-up, then three timed rounds
        let ns = median_ns_per_op(1, 1, || Ok(Duration::from_nanos(times.next().unwrap())));
        let r = row("call", "x", 1, ns.unwrap(), 1.0, None);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(r.ns_per_op, 20.0), "{r:?}");
        let s = r.spread.expect("a median has a spread");
        assert!(
            close(s.min_ns_per_op, 10.0) && close(s.max_ns_per_op, 30.0),
            "{s:?}"
        );
        assert_eq!(s.rounds, 3);
        // The spread went with its row: the next row has none of its own.
        assert_eq!(row("call", "y", 1, 1.0, 1.0, None).spread, None);
        if cfg!(target_os = "linux") {
            assert!(r.load_avg.is_some_and(|l| l >= 0.0), "{r:?}");
        }
        // A failed measurement does not pass its rounds on.
        note_rounds(&[1.0, 2.0]);
        assert_eq!(skipped("call", "z", 1, "why".into()).spread, None);
    }

    #[test]
    fn membarrier_register_then_barrier() {
        if membarrier::register().is_ok() {
            membarrier::barrier().expect("registered membarrier");
        }
    }
}
