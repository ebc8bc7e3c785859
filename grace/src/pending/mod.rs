//! [`Pending<T>`]: objects waiting for a grace period, tracked explicitly (the kernel's
//! `rcu_pending`, from bcachefs), so that they can be processed in bulk afterwards, or taken back
//! before that for type-stable reuse.
//!
//! # Shape
//!
//! ```text
//!  enqueue(obj) ─► shard[cpu] (lock) ─┬─► batch[cookie a] : chunks ▒▒▒▒▒▒▒▒ ▒▒▒░░ + fallback nodes
//!                                     ├─► batch[cookie b] : chunks ▒▒░░░░░░
//!                                     ├─► (one more slot, for a batch whose cookie just completed)
//!                                     └─► expired         : chunks + nodes ──► worker: process, in bulk
//!  re-arming callback (one per shard) ─ after each grace period: expire, wake the worker, re-arm
//!  dequeue() ◄─ newest waiting object (grace period NOT ended) ─ Reused<T>: shared access only
//! ```
//!
//! Each shard (one per CPU) holds, behind its lock, a small inline vector of *batches*, one per
//! grace-period cookie that can be outstanding ([`NUM_ACTIVE_POLL_OLDSTATE`] of them) plus
//! one. A batch is a cookie, append-only chunked storage of object pointers with a cursor, and
//! a linked fallback; the shard also has an *expired* batch and one re-arming callback.
//!
//! * **Enqueue fast path**: lock the local shard, take a cookie with `get_state` (it starts
//!   nothing), find the batch for that cookie (almost always the newest), store the pointer at
//!   the cursor, unlock. A new chunk is needed only at a chunk boundary, and it is allocated
//!   *outside* the lock and the push retried (`rcu_pending`'s preallocate-then-retry); emptied
//!   chunks are kept as spares (two per shard), so a boundary often costs no allocation.
//!   The first object of a batch queues the shard's callback with the flavor's `call`, or, if
//!   the callback is already queued, makes sure the batch's grace period runs with
//!   `start_poll` (the callback will re-arm for it).
//!   A batch emptied by dequeues and refilled with the same cookie asks for nothing: the shard
//!   remembers the newest cookie it requested a grace period for (by `call` or `start_poll`),
//!   so a dequeue/enqueue loop costs one request per grace period, not one per object.
//! * **Backpressure** (bounded memory under floods): the worker takes expired objects in
//!   slices of 8 chunks, so a backlog stays visible in the shard; when a shard holds more than
//!   4 chunks' worth of expired objects, an enqueue on it frees one chunk's worth itself,
//!   outside the lock. Only when processing is a plain deallocation (`Process::free` of a `T`
//!   without drop glue): that runs no user code, so it is sound anywhere, read-side sections
//!   included, and never blocks. Other modes keep processing on the worker only.
//! * **The callback** runs after a grace period: it moves every batch whose cookie has
//!   completed to the expired batch (an O(1) link of chunk lists), wakes the worker, and
//!   queues itself again while objects still wait.
//! * **The worker** (one thread per `Pending`, started on first use) takes a shard's expired
//!   batch whole, in O(1) under the lock, and processes it outside the lock: a closure per
//!   object ([`Process::with`]), dropping each `Box` ([`Process::free`], kvfree-like), or
//!   running each object as a callback ([`Process::run`]). Panics are caught and counted.
//! * **Dequeue** ([`Pending::dequeue`], [`Pending::dequeue_from_all`],
//!   [`Pending::dequeue_where`]) takes back an object whose grace period has *not* ended, for
//!   type-stable reuse (the replacement for `SLAB_TYPESAFE_BY_RCU`); see [`Reused`] and the
//!   `object_cache` example.
//! * **Drop** waits, like `rcu_pending_exit`, until no shard holds an object or has its
//!   callback queued: flavor `barrier`, then a worker pass, in a loop.
//!
//! # Storage: pages of pointers, not a radix tree
//!
//! The kernel's `rcu_pending` stores each batch in a radix tree used as a vector (cursor on the
//! fast path); pages of pointers would merge in O(1). Both layouts were built with
//! the same cursor fast path and measured at four node sizes
//! (`cargo bench -p grace-bench --bench pending_storage`; 2-vCPU AMD EPYC VM shared with other
//! builds, 2026-11-23; median of three runs, ns per object, batches of 4096):
//!
//! | operation | chunks 256 B | 512 B | 1 KiB | 4 KiB | radix 256 B | 512 B | 1 KiB | 4 KiB |
//! |---|---|---|---|---|---|---|---|---|
//! | push, then visit and free (enqueue + worker pass) | 1.78 | 1.34 | 1.51 | 1.12 | 2.33 | 1.85 | 1.62 | 1.53 |
//! | push, then pop one by one (dequeue) | 2.05 | 1.49 | 1.44 | 1.54 | 4.97 | 3.17 | 2.73 | 2.71 |
//! | two halves merged, then visit and free (expiry) | 2.67 | 1.31 | 1.13 | 1.81 | 3.29 | 2.66 | 3.14 | 2.84 |
//!
//! The chunk list wins every row at every size: a push at a boundary is one allocation, where
//! the radix tree also walks and grows interior levels (which under a shard lock would all
//! have to be preallocated); a pop is a cursor decrement, not a walk; and appending is O(1),
//! which is what lets a shard keep a single expired batch. The storage itself is 1 to 3 ns
//! of an enqueue either way; the chunk *size* matters more end to end, through the allocator.
//! Enqueueing a 64-byte box that the worker frees after the grace period (one thread
//! enqueueing, interleaved builds, 26 samples each) took a median of 139 / 108 / 93 / 72 ns
//! with 256 B / 512 B / 1 KiB / 4 KiB chunks (a plain allocate-and-free: 14 ns; the enqueue
//! path alone, with no object allocated or freed: 17 to 26 ns): bigger chunks mean fewer
//! chunks allocated on the enqueuing thread and freed on the worker. So chunks are 4 KiB,
//! 510 pointers, the kernel's page of pointers; the cost is memory held by a quiet shard (a
//! partly filled chunk per live batch, and up to two spares).
//!
//! # When memory is short
//!
//! Objects carry no link of their own, so every fallback needs *some* memory; the ladder,
//! from cheap to drastic (each step counted in [`Stats`]):
//!
//! 1. a spare chunk of the shard (up to two, recycled from processed batches; one is
//!    preallocated when the `Pending` is built, 4 KiB per shard: the emergency reserve);
//! 2. a chunk allocated outside the lock, then a retry;
//! 3. a 16-byte fallback node (object pointer and link), allocated outside the lock and linked
//!    into the batch of the object's cookie;
//! 4. [`Pending::enqueue`] only: wait for a grace period on the calling thread and process the
//!    object there. This is only correct outside a read-side section of the flavor, so inside
//!    one use [`Pending::try_enqueue`], which gives the object back instead (the RCU flavor
//!    panics rather than deadlock if `enqueue` gets here inside a section).
//!
//! No path holds a shard lock while it allocates or frees: emptied chunks and nodes are
//! collected under the lock and freed after it.
//!
//! # Ordering guarantee
//!
//! An object is processed only after the flavor reported the cookie taken inside `enqueue` as
//! completed: every read-side section that began before the `enqueue` call has ended, and its
//! accesses happen-before the processing. Objects reach the worker (and dequeuers) through the
//! shard lock, so the enqueuer's writes to them happen-before too.
//!
//! # The chicken switch
//!
//! `GRACE_PENDING=off` in the environment, or [`set_batching`]`(false)` before first use,
//! turns the batching off for the whole process (see [`batching`] for when it is decided):
//!
//! * every `enqueue*` queues the object alone, with one callback of the flavor
//!   (`call_rcu` for RCU; never run on the enqueuing thread), and that callback processes it
//!   after the grace period, in the `Pending`'s mode ([`Process::free`], [`Process::with`],
//!   [`Process::run`]); nothing is stored in the shards, so `dequeue*` always return `None`;
//! * [`Stats`] still count `enqueued` and `processed`, and `pending` counts the callbacks in
//!   flight; [`Pending::barrier`] waits for them with the flavor's `barrier`, and dropping the
//!   `Pending` waits until none is left;
//! * [`kvfree`](crate::kvfree()) queues one RCU callback per object, which runs its destructor
//!   and frees it, counted in [`kvfree::stats`](crate::kvfree::stats) as usual;
//!   [`kvfree_barrier`](crate::kvfree_barrier) waits for them.
//!
//! The ordering guarantee is the same either way.
//!
//! [`NUM_ACTIVE_POLL_OLDSTATE`]: crate::cookie::NUM_ACTIVE_POLL_OLDSTATE

mod chunks;
// Under loom only the data structure is modelled; the public API is compiled out.
#[cfg_attr(loom, allow(dead_code))]
mod shard;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
pub use api::{Pending, Process, Reused, Run, Stats};
#[cfg(not(loom))]
mod switch;
#[cfg(not(loom))]
pub use switch::{batching, set_batching, SwitchError};

#[cfg(all(test, loom))]
#[path = "tests/mod.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod unit_tests;

/// The most shards a `Pending` may have (`Pending::with_shards` panics beyond it, and
/// `Pending::new` uses at most this many, one per CPU).
///
/// # Examples
///
/// ```
/// assert!(grace::pending::MAX_SHARDS >= 1024);
/// ```
pub const MAX_SHARDS: usize = 4096;

/// Pointer slots per chunk: 4 KiB chunks (510 pointers), chosen by measurement (see the module
/// docs). Under Miri and loom, two, so that small models cross chunk boundaries.
#[cfg(not(any(miri, loom)))]
pub(crate) const CHUNK_SLOTS: usize = layout::slots_for(layout::CHUNK_BYTES);
#[cfg(any(miri, loom))]
#[cfg_attr(loom, allow(dead_code))] // its user, the public API, is compiled out under loom
pub(crate) const CHUNK_SLOTS: usize = 2;

/// The storage building blocks, public for the storage benchmark
/// (`grace-bench/benches/pending_storage.rs`) only; not a stable API.
#[doc(hidden)]
pub mod layout {
    pub use super::chunks::{
        slots_for, Chunk, ChunkPile, ChunkStack, FreeChunk, FreeNode, NodeList,
    };

    /// Bytes per chunk in `Pending` (header included), outside Miri and loom.
    pub const CHUNK_BYTES: usize = 4096;
}
