//! The `reuse` suite: an object cache that recycles evicted entries through
//! `grace::pending::Pending::dequeue` (type-stable reuse, the pattern of
//! `grace/examples/object_cache.rs`), against allocating a fresh entry each
//! time, end to end.
//!
//! Every worker owns [`SLOTS`] published slots (`AtomicPtr<Entry>`, 64-byte
//! entries of atomics). One operation replaces the entry of the next slot:
//! take an entry, write a key and value into it, publish it with a swap, and
//! retire the evicted one. The retired entries must wait for a grace period
//! before they are freed (or reused as freed), whatever the row:
//!
//! * `grace-pending-reuse`: the entry comes from `pending.dequeue()` (an
//!   evicted entry whose grace period has not ended), rewritten in place
//!   through its atomics under a sequence count (readers from before its
//!   eviction may still read it), published again with `Reused::into_raw`;
//!   a fresh `Box` only when `dequeue` finds nothing. The evicted entry goes
//!   back with `enqueue_raw`. The `Pending` (`Process::free()`, one per
//!   round, shared by the workers) frees what is never reused;
//! * `grace-pending-fresh`: a fresh `Box::new` every time, the evicted entry
//!   handed to the same kind of `Pending` (freed in bulk after its grace
//!   period);
//! * `grace-kvfree-fresh`: a fresh `Box::new` every time, the evicted entry
//!   handed to `grace::kvfree_raw`;
//! * `box-drop-no-gp`: a fresh `Box::new`, the evicted entry dropped at once:
//!   the floor, *not* a correct RCU pattern (there are no readers in this
//!   benchmark, which makes it sound here).
//!
//! The final drain is inside the timing (`pending.barrier()`,
//! `kvfree_barrier()`), the clock starts when the first worker is released
//! and stops when the drain returns, and `ns_per_op` is total time over total
//! operations; a full-size untimed round first, then the median of three
//! timed rounds, as in the `call` and `free` suites. Operations per worker
//! are one million per second of [`Options::duration`], clamped to
//! `20_000..=5_000_000`. After each pending round `stats()` must balance
//! (`enqueued == processed + dequeued`); the `grace-pending-reuse` row's note
//! gives the share of operations served by `dequeue`.
//!
//! No readers run: this measures what recycling saves the updater.

use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use grace::pending::{Pending, Process};

use crate::call::Phases;
use crate::harness::{ns, row, skipped, TIMED_ROUNDS};
use crate::{BenchResult, Options};

const SUITE: &str = "reuse";

/// Published slots per worker.
pub(crate) const SLOTS: usize = 64;

/// The implementations of this suite, in run order.
pub(crate) fn impls() -> Vec<&'static str> {
    vec![
        "grace-pending-reuse",
        "grace-pending-fresh",
        "grace-kvfree-fresh",
        "box-drop-no-gp",
    ]
}

/// Operations each worker makes: one million per second of
/// [`Options::duration`], clamped to `20_000..=5_000_000`.
pub(crate) fn ops_per_thread(duration: Duration) -> u64 {
    ((duration.as_secs_f64() * 1e6) as u64).clamp(20_000, 5_000_000)
}

/// A cache entry: 64 bytes, all atomics (a recycled entry may be read while
/// it is rewritten).
pub(crate) struct Entry {
    seq: AtomicU64,
    key: AtomicU64,
    value: AtomicU64,
    _fill: [AtomicU64; 5],
}

impl Entry {
    fn new(key: u64, value: u64) -> Box<Entry> {
        Box::new(Entry {
            seq: AtomicU64::new(0),
            key: AtomicU64::new(key),
            value: AtomicU64::new(value),
            _fill: Default::default(),
        })
    }

    /// Rewrite in place, seqlock-style (the caller is the only writer).
    fn rewrite(&self, key: u64, value: u64) {
        // Relaxed: we are the only writer.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        // The odd count is visible before the new fields.
        fence(Ordering::Release);
        self.key.store(key, Ordering::Relaxed);
        self.value.store(value, Ordering::Relaxed);
        // Release: the fields are visible before the even count.
        self.seq.store(s + 2, Ordering::Release);
    }
}

/// How a row takes entries and retires evicted ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    PendingReuse,
    PendingFresh,
    KvfreeFresh,
    BoxDrop,
}

/// A worker's slots, filled before the clock starts.
struct Slots(Vec<AtomicPtr<Entry>>);

impl Slots {
    fn new() -> Slots {
        Slots(
            (0..SLOTS as u64)
                .map(|k| AtomicPtr::new(Box::into_raw(Entry::new(k, k))))
                .collect(),
        )
    }
}

/// One worker: `n` replacements, then (after the drain, untimed) its slots
/// retired the row's way.
fn worker(kind: Kind, pending: &Pending<Entry>, ph: &Phases, n: u64, reused: &AtomicU64) {
    let slots = Slots::new();
    let mut hits = 0u64;
    ph.start();
    for i in 0..n {
        let (key, value) = (i, i.wrapping_mul(7));
        let fresh: NonNull<Entry> = match kind {
            Kind::PendingReuse => match pending.dequeue() {
                Some(r) => {
                    hits += 1;
                    r.rewrite(key, value);
                    r.into_raw()
                }
                None => NonNull::from(Box::leak(Entry::new(key, value))),
            },
            _ => NonNull::from(Box::leak(Entry::new(key, value))),
        };
        // AcqRel: publishes the entry (Release) and takes over the old one.
        let old = slots.0[i as usize % SLOTS].swap(fresh.as_ptr(), Ordering::AcqRel);
        retire(kind, pending, old);
    }
    ph.finish();
    reused.fetch_add(hits, Ordering::Relaxed);
    // After the drain: retire what is still published, the same way.
    for slot in &slots.0 {
        retire(kind, pending, slot.swap(ptr::null_mut(), Ordering::AcqRel));
    }
}

/// Retire an unpublished entry the row's way.
fn retire(kind: Kind, pending: &Pending<Entry>, old: *mut Entry) {
    let Some(old) = NonNull::new(old) else {
        return;
    };
    match kind {
        // SAFETY: `old` came from Box::into_raw or Reused::into_raw, was
        // unpublished by the caller's swap, and is retired once.
        Kind::PendingReuse | Kind::PendingFresh => unsafe { pending.enqueue_raw(old) },
        // SAFETY: as above (kvfree_raw's contract is the same).
        Kind::KvfreeFresh => unsafe { grace::kvfree::kvfree_raw(old.as_ptr()) },
        // SAFETY: from Box::into_raw (never recycled in this row) and
        // unpublished; no reader exists in this benchmark, so nobody can still
        // hold it.
        Kind::BoxDrop => drop(unsafe { Box::from_raw(old.as_ptr()) }),
    }
}

/// One round: returns the time from the workers' release to the end of the
/// drain, and how many operations `dequeue` served.
fn round(kind: Kind, threads: usize, n: u64) -> Result<(Duration, u64), String> {
    let pending: Pending<Entry> = Pending::new(grace::Rcu, Process::free());
    let phases = Phases::new(threads, n * threads as u64);
    let reused = AtomicU64::new(0);
    let elapsed = Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (pending, phases, reused) = (&pending, &phases, &reused);
            s.spawn(move || worker(kind, pending, phases, n, reused));
        }
        let (pending, phases, elapsed) = (&pending, &phases, &elapsed);
        s.spawn(move || {
            phases.start.wait();
            phases.queued.wait();
            match kind {
                Kind::PendingReuse | Kind::PendingFresh => pending.barrier(),
                Kind::KvfreeFresh => grace::kvfree_barrier(),
                Kind::BoxDrop => {}
            }
            let end = Instant::now();
            *elapsed.lock().unwrap_or_else(|e| e.into_inner()) =
                end.duration_since(phases.started(end));
            phases.drained.wait();
        });
    });
    // The workers retired their slots after the drain: settle those too.
    pending.barrier();
    let st = pending.stats();
    if st.enqueued != st.processed + st.dequeued || st.pending != 0 {
        return Err(format!(
            "BUG: Pending::stats() does not balance after barrier(): {} enqueued, {} processed, {} dequeued, {} pending",
            st.enqueued, st.processed, st.dequeued, st.pending
        ));
    }
    let t = *elapsed.lock().unwrap_or_else(|e| e.into_inner());
    Ok((t, reused.load(Ordering::Relaxed)))
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "grace-pending-reuse" => Kind::PendingReuse,
        "grace-pending-fresh" => Kind::PendingFresh,
        "grace-kvfree-fresh" => Kind::KvfreeFresh,
        "box-drop-no-gp" => Kind::BoxDrop,
        _ => return None,
    })
}

/// A full-size untimed round, then the median of [`TIMED_ROUNDS`] timed ones:
/// ns per operation, and the share of operations `dequeue` served.
fn measure_impl(name: &str, threads: usize, duration: Duration) -> Result<(f64, f64), String> {
    let kind = kind_of(name).ok_or_else(|| format!("unknown reuse implementation {name}"))?;
    let n = ops_per_thread(duration);
    let total = n * threads as u64;
    round(kind, threads, n)?;
    let mut per_op = Vec::with_capacity(TIMED_ROUNDS);
    let mut reused = 0;
    for _ in 0..TIMED_ROUNDS {
        let (elapsed, hits) = round(kind, threads, n)?;
        per_op.push(ns(elapsed) / total as f64);
        reused += hits;
    }
    crate::harness::note_rounds(&per_op);
    per_op.sort_by(f64::total_cmp);
    Ok((
        per_op[TIMED_ROUNDS / 2],
        reused as f64 / (total * TIMED_ROUNDS as u64) as f64,
    ))
}

/// The reuse suite; see the module docs.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    let mut out = Vec::new();
    for threads in opts.thread_counts() {
        for name in impls() {
            progress(&format!("{SUITE} {name} t={threads}"));
            out.push(match measure_impl(name, threads, opts.duration) {
                Ok((ns_per_op, share)) => {
                    let note = (kind_of(name) == Some(Kind::PendingReuse)).then(|| {
                        format!(
                            "{:.1}% of the entries came from dequeue (the rest were allocated)",
                            share * 100.0
                        )
                    });
                    row(SUITE, name, threads, ns_per_op, 1e9 / ns_per_op, note)
                }
                Err(e) => skipped(SUITE, name, threads, e),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_64_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn every_row_runs_and_balances() {
        for name in impls() {
            for threads in [1, 2] {
                let (t, hits) = round(kind_of(name).unwrap(), threads, 5_000)
                    .unwrap_or_else(|e| panic!("{name} t={threads}: {e}"));
                assert!(t > Duration::ZERO);
                if name == "grace-pending-reuse" {
                    assert!(hits > 0, "dequeue never served an entry");
                } else {
                    assert_eq!(hits, 0);
                }
            }
        }
    }
}
