//! The per-thread callback ring, model-checked: producer vs consumer(s).
//!
//! The producer queues three callbacks; consumers drain under the consumer lock and run them.
//! In every interleaving each callback runs exactly once and in FIFO order. Each callback also
//! reads (and then updates) a loom `UnsafeCell` the producer wrote just before queueing it, so
//! that a record handed over without happens-before (a `tail` store or load weaker than
//! Release/Acquire) is reported by loom as a causality violation.
//!
//! The ring's capacity is the production one, so the wrap-around and the full path are reached
//! by starting the model from a ring whose indices sit just below the capacity (filled and
//! drained, or filled and left full, by the main thread before the other threads start).

use crate::callback::ring::{Ring, CAP};
use crate::callback::Callback;
use crate::sync::{lock, AtomicUsize, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

const CALLBACKS: usize = 3;

/// Data the producer prepares for one callback, as a caller of `call` prepares what it frees.
struct Data(UnsafeCell<usize>);
// SAFETY: the cell is accessed only by the producer before the record is published and by
// the one consumer that runs the callback afterwards; loom checks exactly that hand-over.
unsafe impl Sync for Data {}

struct Shared {
    ring: Ring,
    /// Number of real callbacks run so far; callback `i` must see `i` here.
    ran: AtomicUsize,
}

/// Producer side: push, or report the ring full.
fn try_push(sh: &Shared, cb: Callback) -> Result<(), Callback> {
    // SAFETY: every model has exactly one producing thread at a time (the main thread before
    // the others start, then the producer thread).
    unsafe { sh.ring.push(cb).map(drop) }
}

fn real_callback(sh: &Arc<Shared>, i: usize) -> Callback {
    let data = Arc::new(Data(UnsafeCell::new(0)));
    // SAFETY: (this and the two accesses below) loom's UnsafeCell hands out a valid pointer and
    // checks the accesses for races itself; that check (a write by the producer before `push`,
    // reads and a write by the callback after the consumer's drain) is what the model tests.
    data.0.with_mut(|p| unsafe { *p = 100 + i });
    let sh = sh.clone();
    Callback::new(move || {
        // SAFETY: see above; loom validates the access.
        let seen = data.0.with(|p| unsafe { *p });
        assert_eq!(
            seen,
            100 + i,
            "callback {i} read its data before the producer wrote it"
        );
        // SAFETY: see above; loom validates the access.
        data.0.with_mut(|p| unsafe { *p = 0 });
        // Relaxed: only the order of runs matters, and the consumer lock serializes them.
        let n = sh.ran.fetch_add(1, Ordering::Relaxed);
        assert_eq!(n, i, "callback {i} ran out of order (or twice)");
    })
}

/// Drain what is published and run it, holding the consumer lock throughout (as the engine
/// does by pushing into the shard under it), so that runs from two consumers stay FIFO.
fn drain_and_run(sh: &Shared) -> usize {
    let _c = lock(&sh.ring.consumer);
    let mut out = Vec::new();
    // SAFETY: we hold `consumer`.
    let n = unsafe { sh.ring.drain_into(&mut out) };
    for cb in out {
        cb.run();
    }
    n
}

/// The producer: queue the callbacks; when the ring is full either wait for the consumer
/// (`self_drain == false`) or drain it ourselves, as `Engine::ring_full` does.
fn producer(sh: &Arc<Shared>, self_drain: bool) {
    for i in 0..CALLBACKS {
        let mut cb = real_callback(sh, i);
        loop {
            match try_push(sh, cb) {
                Ok(()) => break,
                Err(back) => {
                    cb = back;
                    if self_drain {
                        drain_and_run(sh);
                    } else {
                        thread::yield_now();
                    }
                }
            }
        }
    }
}

/// Build the ring with its indices at `start` (by pushing and draining no-op records on this,
/// the only, thread), then leave `leave_full` no-op records queued in it.
fn ring_at(start: usize, leave_queued: usize) -> Arc<Shared> {
    let sh = Arc::new(Shared {
        ring: Ring::new(0),
        ran: AtomicUsize::new(0),
    });
    for _ in 0..start {
        try_push(&sh, Callback::new(|| ())).ok().expect("room");
    }
    drain_and_run(&sh);
    for _ in 0..leave_queued {
        try_push(&sh, Callback::new(|| ())).ok().expect("room");
    }
    sh
}

fn run_model(start: usize, leave_queued: usize, self_drain: bool) {
    let sh = ring_at(start, leave_queued);
    let consumer = {
        let sh = sh.clone();
        thread::spawn(move || {
            while sh.ran.load(Ordering::Relaxed) < CALLBACKS {
                drain_and_run(&sh);
                thread::yield_now();
            }
        })
    };
    producer(&sh, self_drain);
    consumer.join().unwrap();
    assert_eq!(
        sh.ran.load(Ordering::Relaxed),
        CALLBACKS,
        "a callback ran twice"
    );
    assert!(!sh.ring.has_records(), "records left in the ring");
}

#[test]
fn producer_vs_consumer_from_empty() {
    loom::model(|| run_model(0, 0, false));
}

/// Indices cross the capacity during the model (slot index wraps to 0), and the producer finds
/// the ring full until the consumer's head store reaches it.
#[test]
fn producer_vs_consumer_across_the_wrap_and_full() {
    loom::model(|| run_model(CAP - 1, CAP - 2, false));
}

/// Two consumers: the consumer thread and the producer draining its own full ring
/// (`Engine::ring_full`), serialized by the consumer lock.
#[test]
fn producer_draining_its_own_full_ring_vs_consumer() {
    loom::model(|| run_model(CAP - 1, CAP - 2, true));
}
