//! [`Pending<T>`]: objects waiting for a grace period, tracked explicitly (the kernel's
//! `rcu_pending`, seed 002), so that they can be processed in bulk afterwards, or taken back
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
//!   *outside* the lock and the push retried (the seed's preallocate-then-retry); emptied
//!   chunks are kept as spares, so in steady state the boundary costs no allocation at all.
//!   The first object of a batch queues the shard's callback with the flavor's `call`, or, if
//!   the callback is already queued, makes sure the batch's grace period runs with
//!   `start_poll` (the callback will re-arm for it).
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
//! # Storage: chunks of pointers, not a radix tree
//!
//! The seed stores each batch in a radix tree used as a vector (cursor on the fast path); its
//! review asks why not pages of pointers, which merge in O(1). Both layouts were built with
//! the same cursor fast path and measured (`grace-bench/benches/pending_storage.rs`,
//! [`layout`] holds the winner):
//!
//! | per object (2-vCPU AMD EPYC VM) | chunk list, 512 B | radix, 512 B nodes |
//! |---|---|---|
//! | push, chunks/nodes allocated | see `BENCHMARKS.md` | see `BENCHMARKS.md` |
//!
//! The chunk list is kept: it is as fast or faster on every operation, it needs one
//! allocation per chunk where the radix tree needs a leaf and, at each new level, interior
//! nodes (which would all have to be preallocated outside the lock), and its O(1) append is
//! what lets a shard keep a single expired batch. 512-byte chunks (62 pointers) are kept too:
//! larger chunks gained little, and 512 bytes bounds what a nearly empty batch wastes.
//!
//! # When memory is short
//!
//! Objects carry no link of their own, so every fallback needs *some* memory; the ladder,
//! from cheap to drastic (each step counted in [`Stats`]):
//!
//! 1. a spare chunk of the shard (up to two, recycled from processed batches; one is
//!    preallocated when the `Pending` is built: the emergency reserve);
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
//! [`NUM_ACTIVE_POLL_OLDSTATE`]: crate::cookie::NUM_ACTIVE_POLL_OLDSTATE

mod chunks;
// Under loom only the data structure is modelled; the public API is compiled out.
#[cfg_attr(loom, allow(dead_code))]
mod shard;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
pub use api::{Pending, Process, Reused, Run, Stats};

#[cfg(all(test, loom))]
#[path = "tests/mod.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod unit_tests;

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
