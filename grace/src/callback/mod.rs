//! Deferred callbacks: `call`, `call_hurry` and `barrier`.
//!
//! # Where a callback travels
//!
//! ```text
//!  call(f) ──► owner's Ring ──drain──► Shard SegList ──advance──► done ──► worker invokes
//!              (per thread,    (GP thread,   (per CPU, segments       (one worker per
//!               wait-free)      or the owner  tagged with the GP        shard at a time,
//!                               when full)    cookie they wait for)     so FIFO per shard)
//! ```
//!
//! * [`ring::Ring`]: a single-producer queue owned by the calling thread, so the fast path of
//!   `call` is a store of the record and a store-release of the tail, with no lock and no
//!   read-modify-write. A grace-period thread (or the owner, when the ring is full) drains it.
//! * [`seglist::SegList`]: the kernel's `rcu_segcblist`, per shard: a `done` segment and up to
//!   [`NUM_ACTIVE_POLL_OLDSTATE`](crate::cookie::NUM_ACTIVE_POLL_OLDSTATE) pending segments,
//!   each tagged with the grace-period snapshot it waits for. Batches are linked nodes
//!   allocated before the shard lock is taken, so no path allocates under a shard lock.
//! * [`engine::Engine`]: the grace-period thread (lazy batching, draining, running grace
//!   periods, advancing segments) and the worker threads that invoke ready callbacks.
//!
//! A [`Callback`] stores a closure of up to three words inline (the common case: a pointer or
//! an `Arc`), so `call` allocates nothing for it; larger closures are boxed.

// Under loom only the data structures are modelled; the engine's user, the public flavor API,
// is compiled out.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod engine;
#[cfg(all(test, loom))]
#[path = "tests/mod.rs"]
mod loom_tests;
pub(crate) mod ring;
pub(crate) mod seglist;
pub(crate) mod shard;

pub use shard::Invocation;

use std::mem::{self, MaybeUninit};

thread_local! {
    /// Set on every thread that runs user code on grace's behalf: RCU and SRCU callback
    /// workers, `Pending` workers.
    static WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Mark the calling thread as one of grace's workers (see [`on_worker`]).
pub(crate) fn mark_worker() {
    WORKER.with(|w| w.set(true));
}

/// Mark or unmark the calling thread as running callbacks on grace's behalf (a queuing thread
/// during a local run, see `shard`); returns the previous mark.
pub(crate) fn set_worker(on: bool) -> bool {
    WORKER.try_with(|w| w.replace(on)).unwrap_or(false)
}

/// Is the calling thread one of grace's workers? A destructor that would wait for callbacks or
/// workers to finish (dropping an SRCU domain or a `Pending`) must not wait there: it may be
/// the very worker it waits for. Such destructors hand their wait to a thread of its own.
#[cfg_attr(loom, allow(dead_code))] // its users are compiled out under loom
pub(crate) fn on_worker() -> bool {
    WORKER.try_with(|w| w.get()).unwrap_or(false)
}

/// Inline payload: three words.
type Payload = [MaybeUninit<usize>; 3];

/// A type-erased `FnOnce() + Send` closure, 32 bytes, no allocation when the closure fits in
/// three words.
///
/// A `Callback` must be consumed by [`Callback::run`] or [`Callback::discard`]; dropping it
/// otherwise leaks the closure (never frees it twice). It has no `Drop` so that arrays of them
/// can be copied bit for bit between ring and batch.
pub(crate) struct Callback {
    /// Runs (`true`) or drops (`false`) the closure stored in `payload`.
    ///
    /// # Safety
    ///
    /// Called at most once per stored closure, with the payload written by `Callback::new`
    /// for the same `F`.
    vtable: unsafe fn(*mut Payload, bool),
    payload: Payload,
}

// SAFETY: a Callback only ever holds an `F: Send` (inline or boxed), and running or dropping
// it on another thread is exactly what `Send` permits.
unsafe impl Send for Callback {}

impl Callback {
    /// Wrap a closure.
    #[inline]
    pub(crate) fn new<F: FnOnce() + Send + 'static>(f: F) -> Callback {
        let mut payload: Payload = [MaybeUninit::uninit(); 3];
        if mem::size_of::<F>() <= mem::size_of::<Payload>()
            && mem::align_of::<F>() <= mem::align_of::<Payload>()
        {
            // SAFETY: the payload is large and aligned enough for F (checked just above), and
            // uninitialized memory may be written.
            unsafe { payload.as_mut_ptr().cast::<F>().write(f) };
            Callback {
                vtable: inline_vtable::<F>,
                payload,
            }
        } else {
            let boxed: *mut F = Box::into_raw(Box::new(f));
            // Stored as a pointer, not an integer, so that it keeps its provenance.
            // SAFETY: a pointer fits in, and is aligned for, the payload's first word.
            unsafe { payload.as_mut_ptr().cast::<*mut F>().write(boxed) };
            Callback {
                vtable: boxed_vtable::<F>,
                payload,
            }
        }
    }

    /// Invoke the closure.
    #[inline]
    pub(crate) fn run(mut self) {
        // SAFETY: `self` is consumed, so this is the only use of the stored closure.
        unsafe { (self.vtable)(&mut self.payload, true) }
    }

    /// Drop the closure without invoking it.
    pub(crate) fn discard(mut self) {
        // SAFETY: `self` is consumed, so this is the only use of the stored closure.
        unsafe { (self.vtable)(&mut self.payload, false) }
    }
}

/// # Safety
/// `p` holds an initialized `F` written by `Callback::new`, used at most once.
unsafe fn inline_vtable<F: FnOnce()>(p: *mut Payload, run: bool) {
    // SAFETY: per the function's contract the payload holds an F, read exactly once.
    let f = unsafe { p.cast::<F>().read() };
    if run {
        f()
    } else {
        drop(f)
    }
}

/// # Safety
/// `p[0]` holds a `Box<F>` pointer written by `Callback::new`, used at most once.
unsafe fn boxed_vtable<F: FnOnce()>(p: *mut Payload, run: bool) {
    // SAFETY: per the contract the first word is an initialized Box<F> raw pointer.
    let raw = unsafe { p.cast::<*mut F>().read() };
    // SAFETY: created by Box::into_raw in Callback::new, reclaimed exactly once.
    let f = unsafe { Box::from_raw(raw) };
    if run {
        f()
    } else {
        drop(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Callback;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn inline_and_boxed_closures_run_once_and_drop_once() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        Callback::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .run();
        let big = [7u64; 16];
        let h = hits.clone();
        Callback::new(move || {
            h.fetch_add(big.iter().sum::<u64>() as usize, Ordering::Relaxed);
        })
        .run();
        assert_eq!(hits.load(Ordering::Relaxed), 1 + 7 * 16);
        // discard drops the captures (the Arc count goes back) without running.
        let h = hits.clone();
        Callback::new(move || {
            h.fetch_add(1000, Ordering::Relaxed);
        })
        .discard();
        let h = hits.clone();
        Callback::new(move || {
            let _ = big;
            h.fetch_add(1000, Ordering::Relaxed);
        })
        .discard();
        assert_eq!(hits.load(Ordering::Relaxed), 1 + 7 * 16);
        assert_eq!(Arc::strong_count(&hits), 1);
    }

    #[test]
    fn record_is_four_words() {
        assert_eq!(
            std::mem::size_of::<Callback>(),
            4 * std::mem::size_of::<usize>()
        );
    }
}
