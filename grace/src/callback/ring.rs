//! The per-thread callback ring: a bounded single-producer queue whose producer is the thread
//! that owns the reader slot, and whose consumer is whoever holds `consumer` (the
//! grace-period thread, `barrier`, or the owner itself when the ring is full).
//!
//! ```text
//!   head (consumer)                tail (producer)
//!     │                              │
//!  ───┼──────────────────────────────┼────────  indices grow forever; slot = index % CAP
//!     └──── records to be drained ───┘
//! ```
//!
//! | field | written by | read by |
//! |---|---|---|
//! | `tail` | owner, store-release after writing the record | consumer, load-acquire |
//! | `head` | consumer, store-release after copying records out | owner, load-acquire, only when its cached copy says full |
//! | `cached_head` | owner only | owner only |
//!
//! When a thread exits, its slot (and ring) goes back to the registry with the records still
//! in it; the next drain takes them, and the next owner continues from the same indices.

use super::Callback;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

/// Capacity in records (a power of two; 8 KiB per ring on 64-bit).
#[cfg(not(miri))]
pub(crate) const CAP: usize = 256;
/// Tiny under Miri so that wrap-around and the full path are exercised.
#[cfg(miri)]
pub(crate) const CAP: usize = 4;

/// The producer's line: the tail and the bytes the pushed records free.
struct Producer {
    tail: AtomicUsize,
    /// Bytes stated for the records pushed so far (wrapping); written only by the owner.
    bytes: AtomicU64,
}

pub(crate) struct Ring {
    tail: CachePadded<Producer>,
    /// Owner-only lower bound of `head`.
    cached_head: UnsafeCell<usize>,
    head: CachePadded<AtomicUsize>,
    /// `Producer::bytes` as of the last drain; consumers only, under `consumer`.
    drained_bytes: AtomicU64,
    /// Serializes consumers.
    pub(crate) consumer: Mutex<()>,
    /// Shard whose list receives this ring's callbacks.
    pub(crate) shard: usize,
    /// A record pushed since the last drain must run on a worker (see `Node::offload`). A
    /// hint: set by the owner before the push, taken by a drainer after the drain, so that a
    /// race at worst marks one batch too many or too few, which changes only who runs it.
    pub(crate) offload: AtomicBool,
    slots: Box<[UnsafeCell<MaybeUninit<Callback>>]>,
}

// SAFETY: the ring is shared between its owner (producer) and consumers. Records move through
// it by value (Callback is Send). `cached_head` is touched only by the owning thread (the
// thread holding the slot IN_USE), and each record slot is written only by the producer while
// it lies in [tail, head + CAP) and read only by a consumer holding `consumer` while it lies
// in [head, tail); the Release/Acquire pairs on head and tail hand each slot over.
unsafe impl Sync for Ring {}
// SAFETY: as above; nothing in the ring is tied to a thread.
unsafe impl Send for Ring {}

impl Ring {
    pub(crate) fn new(shard: usize) -> Ring {
        Ring {
            tail: CachePadded::new(Producer {
                tail: AtomicUsize::new(0),
                bytes: AtomicU64::new(0),
            }),
            drained_bytes: AtomicU64::new(0),
            cached_head: UnsafeCell::new(0),
            head: CachePadded::new(AtomicUsize::new(0)),
            consumer: Mutex::new(()),
            shard,
            offload: AtomicBool::new(false),
            slots: (0..CAP)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
        }
    }

    /// Producer: append a record and return how many records the ring has taken in its life
    /// (this one included), or give the record back if the ring is full.
    ///
    /// # Safety
    ///
    /// Only the ring's owner thread may call this (one producer at a time).
    #[inline]
    pub(crate) unsafe fn push(&self, cb: Callback) -> Result<usize, Callback> {
        // Relaxed: only the producer writes tail.
        let t = self.tail.tail.load(Ordering::Relaxed);
        // SAFETY: owner-only field, and the caller is the owner.
        let cached = unsafe { &mut *self.cached_head.get() };
        if t.wrapping_sub(*cached) >= CAP {
            // Acquire: pairs with the Release in `drain_into`; the consumer finished copying
            // the records we are about to overwrite.
            *cached = self.head.load(Ordering::Acquire);
            if t.wrapping_sub(*cached) >= CAP {
                return Err(cb);
            }
        }
        // SAFETY: index t lies in [tail, head + CAP): no consumer reads it until we publish
        // the new tail below, and we are the only producer.
        unsafe { (*self.slots[t % CAP].get()).write(cb) };
        // Release: pairs with the Acquire in `drain_into`; the record is written before a
        // consumer can see it.
        let t = t.wrapping_add(1);
        self.tail.tail.store(t, Ordering::Release);
        Ok(t)
    }

    /// Producer-side: number of records queued so far in the ring's life (for statistics).
    pub(crate) fn produced(&self) -> usize {
        // Relaxed: a statistic.
        self.tail.tail.load(Ordering::Relaxed)
    }

    /// Producer: count `n` more bytes that the records pushed from now on free (the
    /// memory-pressure accounting). Call before the push it is for, so that a consumer that
    /// sees the record sees its bytes too.
    #[inline]
    pub(crate) fn add_bytes(&self, n: u64) {
        // Relaxed (load and store, no read-modify-write): only the owner writes `bytes`; the
        // push's store-release of the tail publishes the new value with the record.
        let b = self.tail.bytes.load(Ordering::Relaxed);
        self.tail.bytes.store(b.wrapping_add(n), Ordering::Relaxed);
    }

    /// Bytes stated for every record pushed so far (wrapping; for statistics).
    pub(crate) fn produced_bytes(&self) -> u64 {
        // Relaxed: a statistic.
        self.tail.bytes.load(Ordering::Relaxed)
    }

    /// Is anything waiting to be drained? A hint: may be stale as soon as it returns.
    pub(crate) fn has_records(&self) -> bool {
        // Relaxed: a hint; the drain itself re-reads with Acquire.
        self.tail.tail.load(Ordering::Relaxed) != self.head.load(Ordering::Relaxed)
    }

    /// Consumer: the bytes of the records drained since the last call (see
    /// [`Ring::add_bytes`]), after a [`Ring::drain_into`].
    ///
    /// # Safety
    ///
    /// The caller holds `self.consumer`.
    pub(crate) unsafe fn take_drained_bytes(&self) -> u64 {
        // Relaxed: after the drain's Acquire of the tail, the owner's earlier `add_bytes` is
        // visible; a later one may be too, and is then counted with this drain (sums stay
        // exact; only which batch carries the bytes may shift by a record).
        let b = self.tail.bytes.load(Ordering::Relaxed);
        // Relaxed: written only by consumers, serialized by `consumer`.
        let before = self.drained_bytes.swap(b, Ordering::Relaxed);
        b.wrapping_sub(before)
    }

    /// Consumer: move every published record into `out`. Returns how many moved.
    ///
    /// # Safety
    ///
    /// The caller holds `self.consumer`.
    pub(crate) unsafe fn drain_into(&self, out: &mut Vec<Callback>) -> usize {
        // Relaxed: only consumers (serialized by `consumer`) write head.
        let h = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release in `push`; the records up to t are written.
        let t = self.tail.tail.load(Ordering::Acquire);
        let n = t.wrapping_sub(h);
        out.reserve(n);
        // The records form at most two contiguous runs of the slot array (before and after the
        // wrap); copy each with one memcpy.
        let first = n.min(CAP - h % CAP);
        for (start, len) in [(h % CAP, first), (0, n - first)] {
            if len == 0 {
                continue;
            }
            // SAFETY: slots [start, start + len) lie in [head, tail): written by the producer
            // (published by the Acquire above) and not yet consumed; the caller is the only
            // consumer. `out` has room for `len` more (reserved above); UnsafeCell and
            // MaybeUninit are repr(transparent) over Callback. Copying moves the records out:
            // advancing head below forgets the originals.
            unsafe {
                let src = self.slots.as_ptr().add(start).cast::<Callback>();
                let dst = out.as_mut_ptr().add(out.len());
                std::ptr::copy_nonoverlapping(src, dst, len);
                out.set_len(out.len() + len);
            }
        }
        // Release: pairs with the Acquire in `push`; our reads of the slots are done before
        // the producer may reuse them.
        self.head.store(t, Ordering::Release);
        n
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Rings live as long as their slot, which is never freed; a ring is dropped only in
        // tests. Discard what is left so that captures are dropped.
        let mut left = Vec::new();
        // SAFETY: `&mut self`: no other producer or consumer exists.
        unsafe { self.drain_into(&mut left) };
        for cb in left {
            cb.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdUsize;
    use std::sync::Arc;

    #[test]
    fn fifo_wraparound_and_full() {
        let ring = Ring::new(0);
        let hits = Arc::new(StdUsize::new(0));
        let mut out = Vec::new();
        let mut pushed = 0;
        for round in 0..3 {
            loop {
                let h = hits.clone();
                let expect = pushed;
                // SAFETY: this test thread is the only producer.
                let r = unsafe {
                    ring.push(Callback::new(move || {
                        assert_eq!(h.fetch_add(1, Ordering::Relaxed), expect, "FIFO order");
                    }))
                };
                match r {
                    Ok(_) => pushed += 1,
                    Err(cb) => {
                        cb.discard();
                        break;
                    }
                }
            }
            assert_eq!(pushed, (round + 1) * CAP, "ring holds exactly CAP records");
            let _c = crate::sync::lock(&ring.consumer);
            // SAFETY: we hold `consumer`.
            assert_eq!(unsafe { ring.drain_into(&mut out) }, CAP);
            for cb in out.drain(..) {
                cb.run();
            }
        }
        assert_eq!(hits.load(Ordering::Relaxed), 3 * CAP);
        assert_eq!(Arc::strong_count(&hits), 1);
    }

    #[test]
    fn concurrent_producer_and_consumer() {
        let ring = Arc::new(Ring::new(0));
        let total = Arc::new(StdUsize::new(0));
        let n = if cfg!(miri) { 50 } else { 20_000 };
        let producer = {
            let ring = ring.clone();
            let total = total.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let t = total.clone();
                    let mut cb = Callback::new(move || {
                        t.fetch_add(i, Ordering::Relaxed);
                    });
                    loop {
                        // SAFETY: this thread is the only producer.
                        match unsafe { ring.push(cb) } {
                            Ok(_) => break,
                            Err(back) => {
                                cb = back;
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            })
        };
        let mut got = 0;
        let mut out = Vec::new();
        while got < n {
            let _c = crate::sync::lock(&ring.consumer);
            // SAFETY: we hold `consumer`.
            got += unsafe { ring.drain_into(&mut out) };
            for cb in out.drain(..) {
                cb.run();
            }
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(total.load(Ordering::Relaxed), (0..n).sum::<usize>());
    }
}
