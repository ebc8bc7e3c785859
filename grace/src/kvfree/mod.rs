//! Headless deferred free (the kernel's `kvfree_rcu`): [`kvfree`] hands over a `Box<T>` that
//! RCU readers may still see; its destructor runs and its memory is freed after a grace period
//! of the RCU flavor ([`crate::rcu`]). SRCU readers are not waited for: retire objects that
//! an SRCU domain protects through that domain.
//! The object needs no embedded header: the pointer itself is stored, in arrays of pointers
//! that are freed in bulk.
//!
//! ```
//! use grace::{kvfree, kvfree_barrier, rcu};
//! let old = Box::new([0u64; 8]); // unpublished from some RCU-protected structure
//! kvfree(old); // returns at once; freed after a grace period
//! kvfree_barrier(); // wait until it (and everything kvfreed before) is freed
//! assert_eq!(grace::kvfree::stats().objects_pending, 0);
//! ```
//!
//! # Where an object travels
//!
//! ```text
//!                           ┌ no drop glue ─► owner's retired queue ─(cookie expired)─► owner frees
//!  kvfree(box) ─► lane ─(full)                (cookie; one grace period    4 objects per 4 of its
//!   (store the pointer,     │                  requested per 16 arrays)    later kvfrees; the emptied
//!    bump the cursor)       │                                              array is its next lane
//!                           └ drop glue ───► rcu::call(array) ─► grace period ─► worker frees
//!   (thread idle or exiting) ─► background sweep / exit hook: copies what was published into
//!                               shared arrays, empties idle retired queues
//! ```
//!
//! * **Lanes** (`lane.rs`): each thread fills up to four arrays at once, one per type (the
//!   type's `TypeId` is the array's key). The fast path stores the pointer in the slot under
//!   the cursor and publishes the cursor with a store-release: no lock, no atomic
//!   read-modify-write, no allocation, about 15 instructions.
//! * **Hand-off**: a full array leaves its lane whole, under the thread's own (uncontended)
//!   lock, once per ~500 objects.
//!   * Types without drop glue (freeing runs no user code): the array waits in the thread's
//!     *retired queue*, tagged with a grace-period cookie. Once the cookie has expired, the
//!     thread frees its objects itself, four at a time from every fourth of its later `kvfree`
//!     calls (under its own lock, so sweeps never race with it), and the emptied array becomes
//!     its next lane block. Freed on the thread that allocated them, interleaved with its
//!     allocations, the objects go straight back to that thread's allocator cache and are
//!     allocated again while still in the CPU's cache, and a flooding thread is paced by its
//!     own frees. One grace period is requested per 16 arrays (never two at once per thread),
//!     so a flood pays for few grace periods; after a long one, expired arrays beyond 32 are
//!     freed in bulk at hand-offs. A thread with 64 arrays waiting (its grace periods are
//!     late) waits for one itself before handing off more, unless it is inside a read-side
//!     section: backpressure that bounds a flooding thread's memory (about 2.3 MiB of 64-byte
//!     objects).
//!   * Types with drop glue: destructors are user code, which must not run inside an unrelated
//!     `kvfree` call (it may hold locks the destructor takes): the array goes to the callback
//!     engine as one RCU callback (`rcu::call`; lazy, or `call_hurry` once pending bytes pass
//!     8 MiB), and a worker frees it, in bulk and prefetching ahead, after a grace period.
//! * **Shards** (`engine.rs`, one per CPU): a cache of preallocated empty arrays, so that taking
//!   a new array does not allocate (the kernel's `kvfree_rcu` page cache), refilled off the fast path by the background
//!   thread; and an emergency reserve used only when allocation fails.
//! * **Idle and exiting threads**: a thread that frees a few objects and goes quiet must not
//!   strand them. Each `kvfree` makes sure the background thread will sweep within the lazy
//!   delay (`GRACE_LAZY_MS`, 10 ms by default; see "The idle hand-shake" in `engine.rs`). The
//!   sweep copies every lane's published objects, under that lane's lock, into shared arrays
//!   queued with `call_hurry`, and empties the retired queue of every thread that handed
//!   nothing off since the previous sweep (expired arrays are freed on the spot, the others
//!   queued with `call_hurry`). A thread's exit hook does both for its own lanes and queue. So
//!   an object is freed within about two lazy delays plus a grace period of the last `kvfree`.
//!
//! # The chicken switch
//!
//! With `GRACE_PENDING=off` (or [`crate::pending::set_batching`]`(false)` before first use)
//! none of the above happens: a thread never gets lanes, and each `kvfree` queues its object
//! alone as a plain RCU callback (`call_rcu`) that runs its destructor and frees it. [`Stats`]
//! count those objects as queued, pending and freed as usual, and [`kvfree_barrier`] waits for
//! them (it ends in `rcu::barrier`).
//!
//! # When no array can be had
//!
//! Every allocation goes through [`crate::alloc`]'s fallible functions (so failure injection
//! reaches each of them), none happens under a lock, and none is waited for:
//!
//! | rung | what | counted in [`Stats`] |
//! |---|---|---|
//! | 1 | an array from the shard's cache | `arrays_from_cache` |
//! | 2 | a freshly allocated array | `arrays_allocated` |
//! | 3 | an array from the shard's emergency reserve | `fallback_reserve` |
//! | 4 | a *node*: a small array of 8 (152 bytes), more likely to be had than 4 KiB | `fallback_node` |
//! | 5, outside a read-side section | `rcu::synchronize()`, then free the object at once | `fallback_sync_gp` |
//! | 5, inside a read-side section | waiting would wait for ourselves: retry rungs 1–4 a bounded number of times (yielding, so that batches completing elsewhere refill the cache) | `fallback_retry` |
//! | 6, inside a section | queue the object alone as a callback record (no allocation of ours) | `fallback_callback` |
//!
//! A synchronous grace period is the last resort outside sections, as the `rcu_pending`
//! review asks: it needs no memory, so it cannot deadlock on the allocator, and nothing ever
//! blocks on an allocation.
//!
//! # Guarantees
//!
//! * No early free: an object is freed only after a full grace period that began after its
//!   `kvfree` call. A destructor runs on a callback worker (or on the calling thread in the
//!   synchronous fallback); objects without drop glue may be freed by any thread, usually the
//!   one that kvfreed them, inside a later `kvfree` call.
//! * Nothing lost: every object is freed exactly once, also when allocation fails, when its
//!   thread exits or goes idle, and when a destructor panics (the panic is caught and reported
//!   by the callback engine; the rest of the array is still freed). Objects still pending when
//!   the *process* exits are not freed; call [`kvfree_barrier`] first if that matters.
//! * [`kvfree_barrier`] returns once everything kvfreed before it, on any thread, is freed.
//!
//! # Memory accounting
//!
//! [`Stats::bytes_pending`] counts `size_of::<T>()` per object plus each handed-off array's own
//! 4 KiB (152 bytes for a node). It is kept per array (added at hand-off, subtracted when the
//! array is freed), so the fast path pays nothing for it; objects still in a thread's lane are
//! added when [`stats`] is read. [`Stats::peak_bytes_pending`] is the largest total seen at a
//! hand-off (lanes excluded: at most four partly filled arrays per thread).

#[cfg_attr(loom, allow(dead_code))]
mod block;
#[cfg(not(loom))]
mod engine;
#[cfg_attr(loom, allow(dead_code))]
mod lane;
#[cfg(all(test, loom))]
mod tests;

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use super::block::{Key, CAP};
    use super::engine::{
        self, count, started, state, State, Sweep, AVOID, AVOID_CACHE, AVOID_RESERVE, COUNTERS,
        CTL, RECLAIM_CHUNK, REGISTRY,
    };
    use super::lane::{self, Local, Probe, WAYS};
    use crate::rcu;
    use crate::sync::Ordering;
    use crate::sys;
    use std::any::TypeId;
    use std::cell::Cell;
    use std::mem;
    use std::ptr;

    /// Objects per pointer array: an array is 4 KiB, header included (the kernel's page of
    /// pointers). A thread's full array is handed off with one RCU callback.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(grace::kvfree::ARRAY_CAPACITY >= 500);
    /// ```
    pub const ARRAY_CAPACITY: usize = CAP;

    /// How many times a `kvfree` inside a read-side section retries the block ladder before it
    /// queues its object alone.
    const RETRIES: usize = 4;

    thread_local! {
        /// This thread's record, or null before its first `kvfree`. No destructor, so the fast
        /// path's access is a plain thread-local load.
        static LOCAL: Cell<*const Local> = const { Cell::new(ptr::null()) };
        /// Hands the lanes off and gives the record back when the thread exits.
        static EXIT_HOOK: ExitHook = const { ExitHook(Cell::new(ptr::null())) };
    }

    struct ExitHook(Cell<*const Local>);

    impl Drop for ExitHook {
        fn drop(&mut self) {
            // SAFETY: records are leaked by the registry and never freed.
            let Some(local) = (unsafe { self.0.get().as_ref() }) else {
                return;
            };
            // A kvfree from a later thread-local destructor finds no record, and hands its
            // object off on its own (see `register`).
            let _ = LOCAL.try_with(|l| l.set(ptr::null()));
            if let Some(st) = started() {
                st.retire_local(local);
            }
        }
    }

    /// Free `object` after a grace period (the kernel's `kvfree_rcu`, its one-argument
    /// "headless" form): its destructor runs, and its memory is freed, once every **RCU**
    /// read-side section ([`rcu::read_lock`]) that began before this call has ended. Returns without waiting and, in the
    /// common case, without allocating. Outside read-side sections it may wait for a grace
    /// period in two cases only: as backpressure, when the thread already has about 32,000
    /// objects waiting for a grace period that is late, and in the last-resort fallback below.
    ///
    /// Objects are batched in arrays of pointers per thread and per type, and freed in bulk
    /// after a grace period: by a callback worker thread when `T` has drop glue (the
    /// destructor is user code), otherwise usually by this same thread, inside a later
    /// `kvfree`, where the memory is still in its allocator's and CPU's caches. A thread that
    /// stops calling `kvfree` does not strand its objects: they are swept up within about two
    /// lazy delays (`GRACE_LAZY_MS`). Zero-sized types without drop glue need nothing at all
    /// and are dropped at once (and not counted).
    ///
    /// May be called inside a read-side section. When memory is exhausted it falls back, in
    /// turn, to an emergency reserve, a small node, and then (outside any read-side section
    /// only) a synchronous grace period followed by an immediate free on the calling thread;
    /// inside a section it never waits for a grace period (see the [module docs](mod@crate::kvfree)).
    ///
    /// Only the RCU flavor's readers are waited for, as in the kernel: an object that readers
    /// of an SRCU domain may still hold must not go through `kvfree` (it would be freed under
    /// them); retire it through that domain instead (`Pending::new(&domain, Process::free())`
    /// or the domain's `call`).
    ///
    /// A `kvfree` from a thread-local destructor that runs after grace's own (a pool drained at
    /// thread exit) is batched with the thread's other late ones and handed to a grace period
    /// when the thread finishes exiting.
    ///
    /// An object that readers may still be looking at is better handed over as the raw
    /// pointer it was published as, with [`kvfree_raw`]: making a `Box` of it first claims a
    /// uniqueness the concurrent readers contradict (Miri's Stacked Borrows reports it).
    ///
    /// # Panics
    ///
    /// Only if `T`'s destructor panics while the synchronous fallback runs it on this thread.
    /// A destructor that panics on a worker is caught and reported there.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::kvfree;
    /// kvfree(Box::new([0u8; 64]));
    /// kvfree(Box::new(String::from("any Send + 'static type")));
    /// grace::kvfree_barrier(); // both are freed when this returns
    /// ```
    #[inline]
    pub fn kvfree<T: Send + 'static>(object: Box<T>) {
        // SAFETY: the pointer comes from Box::into_raw, and we give it up here.
        unsafe { kvfree_raw(Box::into_raw(object)) }
    }

    /// [`kvfree`] for an object held as a raw pointer: the usual case when it was published
    /// through an `AtomicPtr`, and readers may still hold references to it.
    ///
    /// # Safety
    ///
    /// * `ptr` came from `Box::<T>::into_raw` (or `Box::leak`) and is not freed otherwise;
    /// * the caller does not use it again, and it is no longer reachable by readers that
    ///   start after this call (it was unpublished before), so that only readers already
    ///   inside an **RCU** read-side section ([`rcu::read_lock`]) may still hold references to
    ///   it. Readers of an SRCU domain are not waited for: an object they may hold must not be
    ///   passed here.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::{kvfree::kvfree_raw, rcu};
    /// use std::sync::atomic::{AtomicPtr, Ordering};
    /// use std::sync::Arc;
    ///
    /// let current = Arc::new(AtomicPtr::new(Box::into_raw(Box::new(1u64))));
    /// let reader = {
    ///     let current = current.clone();
    ///     std::thread::spawn(move || {
    ///         let g = rcu::read_lock();
    ///         // SAFETY: published objects are freed only by kvfree_raw, after this section.
    ///         let v = unsafe { *current.load(Ordering::Acquire) };
    ///         assert!(v == 1 || v == 2);
    ///         drop(g);
    ///     })
    /// };
    /// let old = current.swap(Box::into_raw(Box::new(2u64)), Ordering::AcqRel);
    /// // SAFETY: `old` came from Box::into_raw and is unpublished; we never touch it again.
    /// unsafe { kvfree_raw(old) };
    /// reader.join().unwrap();
    /// # unsafe { kvfree_raw(current.load(Ordering::Relaxed)) };
    /// # grace::kvfree_barrier();
    /// ```
    #[inline]
    pub unsafe fn kvfree_raw<T: Send + 'static>(ptr: *mut T) {
        if mem::size_of::<T>() == 0 && !mem::needs_drop::<T>() {
            // No memory to free and no destructor to run: dropping the box now is
            // indistinguishable from dropping it after a grace period.
            return;
        }
        let p = ptr.cast::<()>();
        // SAFETY: records are leaked by the registry and never freed; a non-null LOCAL is the
        // record this thread acquired.
        if let Some(local) = unsafe { LOCAL.with(Cell::get).as_ref() } {
            // SAFETY: this thread owns `local`.
            let tail = unsafe { local.try_push(local.hint(), TypeId::of::<T>(), p) };
            if tail != 0 {
                if tail % RECLAIM_CHUNK == 0 && local.reclaiming() {
                    reclaim_chunk(local);
                }
                arm_check();
                return;
            }
        }
        kvfree_slow(p, Key::of::<T>());
    }

    /// After publishing an object, make sure an idle sweep will come (engine.rs, "The idle
    /// hand-shake"): one compiler fence and one load of a read-mostly word in membarrier mode.
    #[inline]
    fn arm_check() {
        if lane::must_arm(&CTL) {
            arm();
        }
    }

    /// Every `RECLAIM_CHUNK`-th object while the thread has expired objects to free.
    #[inline(never)]
    fn reclaim_chunk(local: &Local) {
        if let Some(st) = started() {
            st.reclaim_chunk(local);
        }
    }

    #[cold]
    #[inline(never)]
    fn arm() {
        if let Some(st) = started() {
            st.arm();
        }
    }

    /// This thread's record, registering on first use; `None` when there is none to be had:
    /// initialization failed, the record could not be allocated, or the thread's
    /// thread-locals are being destroyed (its exit hook already ran or cannot be installed).
    fn register() -> Option<(&'static State, &'static Local)> {
        let st = state()?;
        // SAFETY: as in `kvfree`.
        if let Some(local) = unsafe { LOCAL.with(Cell::get).as_ref() } {
            return Some((st, local));
        }
        EXIT_HOOK.try_with(|_| ()).ok()?;
        // This thread's hand-offs call `rcu::call` / `start_poll` under its lane lock: have
        // them allocate nothing and start no thread there.
        rcu::prewarm();
        let local = REGISTRY.acquire().ok()?;
        if EXIT_HOOK.try_with(|h| h.0.set(local)).is_err() {
            REGISTRY.release(local);
            return None;
        }
        LOCAL.with(|l| l.set(local));
        Some((st, local))
    }

    /// The slow path: the hinted lane could not take the object.
    #[cold]
    #[inline(never)]
    fn kvfree_slow(p: *mut (), key: Key) {
        // A thread registers (and so reaches the fast path) only with batching on.
        if !crate::pending::batching() {
            return engine::submit_unbatched(p, key);
        }
        let Some((st, local)) = register() else {
            return without_lane(p, key);
        };
        let (mut full, mut empty, mut drained) = (None, None, None);
        for i in 0..WAYS {
            match local.probe(i, key.ty) {
                Probe::Room => {
                    // SAFETY: this thread owns `local`.
                    if unsafe { local.try_push(i, key.ty, p) } != 0 {
                        local.set_hint(i);
                        arm_check();
                        return;
                    }
                }
                Probe::Full => {
                    full.get_or_insert(i);
                }
                Probe::Empty => {
                    empty.get_or_insert(i);
                }
                Probe::Drained => {
                    drained.get_or_insert(i);
                }
                Probe::Other => {}
            }
        }
        // A hand-off is due: the memory budget is checked here, once per array, with no lock
        // held.
        if crate::pressure::over_budget() {
            let may_wait = !rcu::is_reading()
                && !crate::callback::engine::IN_CALLBACK
                    .try_with(Cell::get)
                    .unwrap_or(true);
            crate::pressure::enforce(&BudgetHelper(st), may_wait);
        }
        // Keep a type in the lane it already has; else take an unused lane; else evict.
        let lane = full
            .or(empty)
            .or(drained)
            .unwrap_or_else(|| local.next_victim());
        // A new block: first the array this thread's own expired objects last gave back, else
        // the ladder.
        match st
            .prepare_handoff(local)
            .or_else(|| st.take_block(sys::current_cpu()))
        {
            Some(b) => fill(st, local, lane, b, p, key),
            None => last_resort(Some(st), Some((local, lane)), p, key),
        }
    }

    /// Key `b`, install it in `lane` (handing off what was there) and put `p` in it.
    fn fill(
        st: &'static State,
        local: &Local,
        lane: usize,
        mut b: super::block::Block,
        p: *mut (),
        key: Key,
    ) {
        b.set_key(key);
        st.install(local, lane, b);
        local.set_hint(lane);
        // SAFETY: this thread owns `local`; the block just installed is empty and keyed `key`.
        let pushed = unsafe { local.try_push(lane, key.ty, p) } != 0;
        debug_assert!(pushed, "a fresh block refused an object");
        if pushed {
            arm_check();
        } else {
            last_resort(Some(st), None, p, key);
        }
    }

    /// No thread record: put the object in a block of its own and queue it at once.
    fn without_lane(p: *mut (), key: Key) {
        let st = state();
        if let Some(st) = st {
            if late::push(st, p, key) {
                return;
            }
            if let Some(mut b) = st.take_block(sys::current_cpu()) {
                b.set_key(key);
                let pushed = b.push(p);
                debug_assert!(pushed);
                st.submit(b, false);
                return;
            }
        }
        last_resort(st, None, p, key);
    }

    /// `kvfree` from thread-local destructors that run after `EXIT_HOOK`'s (a pool drained at
    /// thread exit): the thread has no record any more, so its objects are batched in one
    /// block of their own, handed to a grace period when it is full, when an object of another
    /// type comes, or by the thread's final hook (a pthread-key destructor, after every Rust
    /// thread-local destructor), instead of one block and one callback per object. Where no
    /// final hook exists, each object goes alone, as before.
    mod late {
        use super::super::block::{Block, Key};
        use super::super::engine::{state, State};
        use super::{sys, EXIT_HOOK};
        use std::cell::Cell;
        use std::mem::ManuallyDrop;

        thread_local! {
            /// The block being filled. No destructor (`ManuallyDrop`), so it stays usable
            /// during teardown; the final hook empties it.
            static LATE: Cell<Option<ManuallyDrop<Block>>> = const { Cell::new(None) };
        }

        static FINAL: sys::FinalHook = sys::FinalHook::new(submit_at_final_exit);

        /// Batch `p` if the thread is past its exit hook; `false` if the caller must place it.
        pub(super) fn push(st: &'static State, p: *mut (), key: Key) -> bool {
            if EXIT_HOOK.try_with(|_| ()).is_ok() {
                return false; // not in teardown: initialization or allocation failed
            }
            let mut cur = LATE.take();
            if let Some(b) = cur.as_mut() {
                if b.ty() == key.ty && b.push(p) {
                    LATE.set(cur);
                    return true;
                }
            }
            if let Some(full) = cur {
                st.submit(ManuallyDrop::into_inner(full), false);
            }
            // The hook reads LATE itself; its argument only has to be non-null.
            if !FINAL.arm(std::ptr::NonNull::<u8>::dangling().as_ptr().cast()) {
                return false;
            }
            let Some(mut b) = st.take_block(sys::current_cpu()) else {
                return false;
            };
            b.set_key(key);
            let pushed = b.push(p);
            debug_assert!(pushed);
            LATE.set(Some(ManuallyDrop::new(b)));
            true
        }

        /// The thread's final hook: hand the batch to a grace period (which began after every
        /// object in it was kvfreed, since it begins now).
        unsafe extern "C" fn submit_at_final_exit(_arg: *mut std::ffi::c_void) {
            if let (Some(b), Some(st)) = (LATE.take(), state()) {
                st.submit(ManuallyDrop::into_inner(b), false);
            }
        }
    }

    /// Every rung of the block ladder failed (module docs, rungs 5 and 6).
    fn last_resort(
        st: Option<&'static State>,
        lane: Option<(&Local, usize)>,
        p: *mut (),
        key: Key,
    ) {
        if !rcu::is_reading() {
            engine::free_after_synchronize(p, key);
            return;
        }
        // Inside a read-side section: a grace period would wait for this very section. Retry a
        // bounded number of times; arrays freed by batches whose grace period ended before our
        // section began keep coming back to the caches meanwhile.
        if let Some(st) = st {
            count(&COUNTERS.retry, 1);
            for _ in 0..RETRIES {
                std::thread::yield_now();
                if let Some(mut b) = st.take_block(sys::current_cpu()) {
                    match lane {
                        Some((local, i)) => fill(st, local, i, b, p, key),
                        None => {
                            b.set_key(key);
                            let pushed = b.push(p);
                            debug_assert!(pushed);
                            st.submit(b, false);
                        }
                    }
                    return;
                }
            }
        }
        engine::submit_one(p, key);
    }

    /// Wait until every object handed to [`kvfree`] before this call, on any thread, has been
    /// freed (its destructor has run). Objects kvfreed concurrently with the call may or may
    /// not be waited for.
    ///
    /// Sweeps every thread's lanes (waiting out hand-offs in flight), queues what it finds,
    /// then waits with [`rcu::barrier`].
    ///
    /// # Panics
    ///
    /// If called inside a read-side section, or from inside an RCU callback (including a
    /// destructor run by a kvfree batch): both would wait for themselves. And in a child process created by `fork()` after grace had started background threads in
    /// the parent (they do not exist in the child; see [`crate::sys`], "fork()"), instead of
    /// waiting forever.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// static DROPPED: AtomicBool = AtomicBool::new(false);
    /// struct Noisy;
    /// impl Drop for Noisy {
    ///     fn drop(&mut self) {
    ///         DROPPED.store(true, Ordering::Relaxed);
    ///     }
    /// }
    /// grace::kvfree(Box::new(Noisy));
    /// grace::kvfree_barrier();
    /// assert!(DROPPED.load(Ordering::Relaxed));
    /// ```
    pub fn kvfree_barrier() {
        if rcu::is_reading() {
            barrier_panic("inside an RCU read-side critical section on the same thread");
        }
        if crate::callback::engine::IN_CALLBACK
            .try_with(Cell::get)
            .unwrap_or(false)
        {
            barrier_panic("from inside an RCU callback (a kvfree destructor, for instance)");
        }
        sys::assert_not_orphaned("kvfree_barrier()");
        if let Some(st) = started() {
            // The sweep queues blocks with `rcu::call` under other threads' lane locks.
            rcu::prewarm();
            st.sweep(Sweep::Complete);
        }
        rcu::barrier();
    }

    #[cold]
    #[inline(never)]
    fn barrier_panic(where_: &str) -> ! {
        panic!("grace: kvfree_barrier() called {where_}; it would wait for itself (self-deadlock)");
    }

    /// What kvfree holds back now, for `crate::pressure`: objects handed off (out of the
    /// threads' lanes) and not yet freed, and their bytes. Cheaper than [`stats`]: it takes no
    /// lock, and leaves out the few objects still in lanes (at most a few arrays per thread).
    pub(crate) fn pressure_counts() -> crate::pressure::Counts {
        let c = &COUNTERS;
        // Relaxed: statistics (freed first: whatever was freed had been handed before).
        let freed = c.freed.load(Ordering::Relaxed);
        let handed = c.handed.load(Ordering::Relaxed);
        crate::pressure::Counts {
            objects: handed.saturating_sub(freed),
            bytes: c.pending_bytes.load(Ordering::Relaxed),
        }
    }

    /// What a `kvfree` over the memory budget does: free expired arrays of objects without
    /// drop glue at once (no user code runs), and drive a grace period, expedited, for the
    /// rest; destructors keep running on the callback workers, never inside `kvfree`.
    struct BudgetHelper(&'static State);

    impl crate::pressure::Helper for BudgetHelper {
        fn help(&self, max: u64) -> u64 {
            self.0.shrink(max)
        }
        fn expedite(&self) {
            rcu::expedite_pending();
        }
    }

    /// The shrinker's part for kvfree (see `crate::pressure::scan`).
    pub(crate) fn shrink(n: u64) -> u64 {
        match started() {
            Some(st) => st.shrink(n),
            None => 0,
        }
    }

    /// Counters and state of [`kvfree`], for diagnostics and tests.
    ///
    /// # Examples
    ///
    /// ```
    /// grace::kvfree(Box::new([1u8; 64]));
    /// grace::kvfree_barrier();
    /// let s = grace::kvfree::stats();
    /// assert!(s.objects_freed >= 1);
    /// assert_eq!(s.objects_queued, s.objects_freed + s.objects_pending);
    /// ```
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct Stats {
        /// Objects handed to `kvfree` so far (zero-sized types without drop glue excepted).
        pub objects_queued: u64,
        /// Objects freed so far (destructor run, memory released).
        pub objects_freed: u64,
        /// Objects queued and not yet freed.
        pub objects_pending: u64,
        /// Bytes stranded now: `size_of::<T>()` per pending object, plus each queued array's
        /// own size (see the module docs).
        pub bytes_pending: u64,
        /// The most bytes pending at any hand-off so far.
        pub peak_bytes_pending: u64,
        /// Arrays handed off to wait for a grace period (in their owner's retired queue, or as
        /// one RCU callback each).
        pub batches: u64,
        /// Arrays taken from a shard's cache (no allocation).
        pub arrays_from_cache: u64,
        /// Arrays allocated because the shard's cache was empty.
        pub arrays_allocated: u64,
        /// Empty arrays in the shards' caches now.
        pub arrays_cached: usize,
        /// Arrays in the shards' emergency reserves now.
        pub reserve_arrays: usize,
        /// Idle sweeps run (background and `kvfree_barrier`).
        pub sweeps: u64,
        /// Objects a sweep took from an idle (or barrier-swept) thread's lanes.
        pub objects_swept: u64,
        /// Fallback: an array from the emergency reserve (allocation failed).
        pub fallback_reserve: u64,
        /// Fallback: a small node instead of an array (allocation of an array failed, and the
        /// reserve was empty).
        pub fallback_node: u64,
        /// Fallback: a synchronous grace period and an immediate free (nothing could be
        /// allocated; outside any read-side section).
        pub fallback_sync_gp: u64,
        /// Fallback: bounded retries inside a read-side section (nothing could be allocated).
        pub fallback_retry: u64,
        /// Fallback: an object queued alone as a callback record (retries failed inside a
        /// read-side section, or a sweep found nothing to copy into).
        pub fallback_callback: u64,
        /// Backpressure: times a thread with too many arrays waiting for a grace period (a
        /// flood outrunning grace periods) waited for one itself before going on.
        pub backpressure_waits: u64,
    }

    /// A snapshot of [`Stats`]. Reads every thread's lanes under their locks, so it is meant
    /// for diagnostics, not for hot loops.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = grace::kvfree::stats();
    /// println!("{} bytes pending (peak {})", s.bytes_pending, s.peak_bytes_pending);
    /// ```
    pub fn stats() -> Stats {
        let (mut lane_objs, mut lane_bytes) = (0, 0);
        let (mut cached, mut reserve) = (0, 0);
        if let Some(st) = started() {
            for local in REGISTRY.iter() {
                let g = local.lock();
                let (o, b) = local.published(&g);
                lane_objs += o;
                lane_bytes += b;
            }
            (cached, reserve) = st.cached();
        }
        let c = &COUNTERS;
        // Relaxed (all loads): statistics.
        let load = |a: &crate::sync::AtomicU64| a.load(Ordering::Relaxed);
        let queued = load(&c.handed) + lane_objs;
        let freed = load(&c.freed);
        let bytes = load(&c.pending_bytes) + lane_bytes;
        Stats {
            objects_queued: queued,
            objects_freed: freed,
            objects_pending: queued.saturating_sub(freed),
            bytes_pending: bytes,
            peak_bytes_pending: load(&c.peak_bytes).max(bytes),
            batches: load(&c.batches),
            arrays_from_cache: load(&c.arrays_from_cache),
            arrays_allocated: load(&c.arrays_allocated),
            arrays_cached: cached,
            reserve_arrays: reserve,
            sweeps: load(&c.sweeps),
            objects_swept: load(&c.swept),
            fallback_reserve: load(&c.reserve),
            fallback_node: load(&c.node),
            fallback_sync_gp: load(&c.sync_gp),
            fallback_retry: load(&c.retry),
            fallback_callback: load(&c.callback),
            backpressure_waits: load(&c.backpressure),
        }
    }

    /// Hooks for grace's own tests. Not part of the supported API.
    #[doc(hidden)]
    pub mod testing {
        use super::{AVOID, AVOID_CACHE, AVOID_RESERVE};
        use std::cell::Cell;
        use std::marker::PhantomData;

        /// While it lives, the calling thread's `kvfree` treats the shard caches and/or the
        /// emergency reserves as empty, so that tests reach the later fallbacks
        /// deterministically. Affects only where blocks come from, never correctness.
        #[must_use]
        pub struct Avoid {
            previous: u8,
            _not_send: PhantomData<*const ()>,
        }

        /// See [`Avoid`].
        pub fn avoid(cache: bool, reserve: bool) -> Avoid {
            let bits =
                if cache { AVOID_CACHE } else { 0 } | if reserve { AVOID_RESERVE } else { 0 };
            Avoid {
                previous: AVOID.with(|a| a.replace(bits)),
                _not_send: PhantomData,
            }
        }

        impl Drop for Avoid {
            fn drop(&mut self) {
                AVOID.with(|a: &Cell<u8>| a.set(self.previous));
            }
        }
    }
}
