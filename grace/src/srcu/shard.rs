//! Reader shards of an SRCU domain: per-thread lock/unlock counters, the registry a grace
//! period sums them over, and how a thread finds its own shard.
//!
//! # Counters
//!
//! A [`Shard`] holds `lock[i]` and `unlock[i]` for both indices `i` of the domain. A section
//! that starts with index `i` adds one to `lock[i]` of the shard of the thread that opened it
//! and, when it ends, one to `unlock[i]` of the shard of the thread that *closes* it, which may
//! be another thread (a guard is `Send`, and the raw API hands a token across threads). So a
//! single shard's counts mean nothing; the sums over every shard do: `Σ lock[i] − Σ unlock[i]`
//! is the number of sections of index `i` still open. That is what makes the wait correct for
//! readers that migrate between shards mid-section.
//!
//! Each shard is written by one thread at a time (its owner), so an increment is a load and a
//! store, with no read-modify-write, as the kernel's `this_cpu_inc`.
//!
//! Counters are `u64` and wrap; the grace period compares sums for equality with wrapping
//! arithmetic, so a wrap is harmless (the unit tests start the counters just below it). A
//! false "equal" would need 2^64 sections to open between the two sums of one check.
//!
//! # The index
//!
//! Readers take the index from their own shard (`Shard::flips`, on the line they are about to
//! write anyway), not from the domain: a flip publishes the new count to every shard, and a
//! new shard reads it when it joins (`Registry::adopt`). A shard may lag a flip for a moment;
//! its readers are then stragglers on the old index, which the grace period's two scans
//! handle for any staleness (the argument in `gp` never relies on *when* a reader loaded the
//! index). Publication uses `fetch_max`, so it never goes backwards.
//!
//! # Finding the shard
//!
//! A thread keeps a small direct-mapped cache, `CACHE`, from domain id to shard pointer; the
//! read-side fast path is one thread-local load and a compare. Ids are never reused, so an
//! entry of a dropped domain can never match again. The owning references live in `OWNED`.
//!
//! # Thread exit
//!
//! A shard may be handed to a new thread only once nothing on the old thread can write it
//! again. Guards are `!Send` and remember their shard, and one stored in another thread-local
//! may be dropped after `OWNED` is destroyed. So `OWNED`'s destructor does not give the shards
//! back itself: it arms a final hook ([`crate::sys::FinalHook`], a pthread-key destructor,
//! which runs after every Rust thread-local destructor) that does, and clears the cache.
//! Where no such hook exists the shards are marked `ABANDONED` instead, never reused (they are
//! freed with their domain). A destructor that opens a section after `OWNED` is gone and finds
//! no cache entry gets a shard of its own that joins the list the final hook gives back (or
//! arms the hook afresh if it already ran); it claims a free shard first, as `local_slow`
//! does. A thread whose first read happens in a pthread-key destructor (after Rust's
//! thread-local destructors ran, so `OWNED`'s destructor, registered then, never runs) is
//! covered by the hook as well: it is armed with a marker when `OWNED` takes a shard, and takes
//! the shards out of `OWNED` itself. So thread churn never grows the registry.

use crate::sync::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::ptr;
use std::sync::Arc;

/// Shard states.
///
/// | state | written by | reused by a new thread |
/// |---|---|---|
/// | `FREE` | nobody (its last owner exited) | yes, by CAS to `OWNED` |
/// | `OWNED` | one thread, with plain load + store | no |
/// | `ABANDONED` | its exiting owner's last destructors only | never |
pub(crate) mod state {
    pub(crate) const FREE: u8 = 0;
    pub(crate) const OWNED: u8 = 1;
    pub(crate) const ABANDONED: u8 = 2;
}

/// One thread's counters for one domain. Cache-line aligned so that readers never share.
/// `repr(C)`: `unlock[i]` sits at byte 16 + 8i of a 128-aligned shard, so a reference to it
/// tells its index (`unlock_index`), and a guard needs to keep nothing else.
#[repr(C, align(128))]
pub(crate) struct Shard {
    lock: [AtomicU64; 2],
    unlock: [AtomicU64; 2],
    /// The domain's flip count as last published to this shard (see "The index" in the
    /// module docs); its low bit is the index this shard's readers use.
    flips: AtomicU64,
    /// See [`state`].
    pub(crate) state: AtomicU8,
    /// Next shard in the registry; written once, before the shard is published.
    next: AtomicPtr<Shard>,
}

impl Shard {
    /// A shard whose four counters start at `start` (0 in production; the tests start near
    /// the wrap point).
    pub(crate) fn new(state: u8, start: u64) -> Shard {
        Shard {
            lock: [AtomicU64::new(start), AtomicU64::new(start)],
            unlock: [AtomicU64::new(start), AtomicU64::new(start)],
            flips: AtomicU64::new(0),
            state: AtomicU8::new(state),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The index a section opened now counts under.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        // Relaxed: any recently published index will do; a stale one makes a straggler, which
        // is what the two scans are for (module docs of `gp`). The reader's fence B follows.
        (self.flips.load(Ordering::Relaxed) & 1) as usize
    }

    /// Tell this shard's readers that the domain has flipped `flips` times. `fetch_max`, so
    /// that a late publication of an older count never takes the index back.
    pub(crate) fn publish(&self, flips: u64) {
        // Relaxed: ordered by the fences around the flip (see `gp`).
        self.flips.fetch_max(flips, Ordering::Relaxed);
    }

    /// Count a section opened with index `idx`. Owner thread only. The caller follows it
    /// with the reader fence (or compiler fence, for lite readers), which orders it before the
    /// section's accesses.
    #[inline]
    pub(crate) fn count_lock(&self, idx: usize) {
        // `& 1`: the index is a bit; saying so spares a bounds check on the fast path.
        let c = &self.lock[idx & 1];
        // Relaxed: only the owner writes this counter, so load + store loses nothing; the
        // caller's fence orders it.
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Count a section of index `idx` closed. Owner thread only.
    #[inline]
    pub(crate) fn count_unlock(&self, idx: usize) {
        count_unlock_at(self.unlock_counter(idx));
    }

    /// The counter `count_unlock(idx)` bumps.
    #[inline]
    pub(crate) fn unlock_counter(&self, idx: usize) -> &AtomicU64 {
        &self.unlock[idx & 1]
    }
}

/// Count a section closed on `counter`, an `unlock_counter` of a shard the calling thread
/// owns.
#[inline]
pub(crate) fn count_unlock_at(counter: &AtomicU64) {
    // Release: every access of the section happens-before a grace period's Acquire load of
    // this counter in `Registry::sum_unlocks` that sees it (the kernel's smp_mb() C before
    // srcu_unlock_count is bumped, here as a store-release). Relaxed load: only the owner
    // writes this counter.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Release,
    );
}

/// The index of an `unlock_counter` (see the layout note on [`Shard`]).
pub(crate) fn unlock_index(counter: &AtomicU64) -> usize {
    let offset = counter as *const AtomicU64 as usize % std::mem::align_of::<Shard>();
    debug_assert!(
        offset == 16 || offset == 24,
        "not an unlock counter: {offset}"
    );
    (offset - 16) / 8
}

impl Shard {}

/// Every shard a domain has handed out. Append-only: shards live until
/// the domain is dropped (the registry holds one `Arc` per node), and a thread that exits
/// gives its shard back for reuse rather than removing it, so the sums never race a removal.
pub(crate) struct Registry {
    head: AtomicPtr<Shard>,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Publish `shard`; the registry keeps one reference.
    pub(crate) fn push(&self, shard: Arc<Shard>) {
        let raw = Arc::into_raw(shard) as *mut Shard;
        // Relaxed: the CAS below publishes the node.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `raw` is not published yet, so we are its only user.
            unsafe { (*raw).next.store(head, Ordering::Relaxed) };
            // Release: pairs with the Acquire loads in `iter`; a walker that finds the node
            // sees it initialized.
            match self
                .head
                .compare_exchange(head, raw, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Every shard, as the raw pointers `push` published (they carry the provenance of the
    /// whole `Arc` allocation, which `claim_free` needs to make a new reference).
    fn iter_raw(&self) -> impl Iterator<Item = *const Shard> + '_ {
        // Acquire: pairs with the Release CAS in `push`.
        let mut p = self.head.load(Ordering::Acquire) as *const Shard;
        std::iter::from_fn(move || {
            if p.is_null() {
                return None;
            }
            let cur = p;
            // SAFETY: published shards stay alive as long as the registry (it holds a
            // reference to each), and `&self` keeps the registry alive.
            // Acquire: as above, for the next node.
            p = unsafe { &*cur }.next.load(Ordering::Acquire);
            Some(cur)
        })
    }

    /// Every shard.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shard> {
        // SAFETY: as in `iter_raw`; the references live no longer than `&self`.
        self.iter_raw().map(|p| unsafe { &*p })
    }

    /// Take over a shard whose owner exited, if there is one.
    pub(crate) fn claim_free(&self) -> Option<Arc<Shard>> {
        let raw = self.iter_raw().find(|&p| {
            // SAFETY: as in `iter_raw`.
            let s = unsafe { &*p };
            // Acquire on success: pairs with the Release store of FREE by the exiting owner,
            // so its last counter writes happen-before ours (one writer at a time).
            s.state
                .compare_exchange(
                    state::FREE,
                    state::OWNED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        })?;
        // SAFETY: `raw` is the pointer `push` got from `Arc::into_raw` (not one derived from a
        // `&Shard`, which would not cover the reference counts), and the registry's reference
        // keeps the count above zero.
        unsafe {
            Arc::increment_strong_count(raw);
            Some(Arc::from_raw(raw))
        }
    }

    /// `Σ unlock[idx]` over every shard. Called first, before the caller's fence A.
    pub(crate) fn sum_unlocks(&self, idx: usize) -> u64 {
        self.iter().fold(0u64, |sum, s| {
            // Acquire: pairs with the Release in `count_unlock`: a section whose end we count
            // happened-before the rest of this grace period.
            sum.wrapping_add(s.unlock[idx].load(Ordering::Acquire))
        })
    }

    /// `Σ lock[idx]` over every shard. Called after the caller's fence A.
    pub(crate) fn sum_locks(&self, idx: usize) -> u64 {
        self.iter().fold(0u64, |sum, s| {
            // Relaxed: ordered after the unlock sum by fence A; and every lock whose unlock
            // the unlock sum counted happens-before that unlock, so it is counted here too.
            sum.wrapping_add(s.lock[idx].load(Ordering::Relaxed))
        })
    }

    /// Publish the flip count to every shard.
    pub(crate) fn publish(&self, flips: u64) {
        self.iter().for_each(|s| s.publish(flips));
    }

    /// Publish `shard` for a new reader and give it the current index. Either the flip that
    /// raced with us finds the shard in its walk, or we read its new count: the `SeqCst` fence
    /// here and the one between a flip's store and its walk (`gp::ReaderSide::flip`) make it
    /// one or the other (store-buffering). `fetch_max` on both sides keeps the newer.
    pub(crate) fn adopt(&self, shard: Arc<Shard>, flips: &AtomicU64) {
        let s = Arc::clone(&shard);
        self.push(shard);
        crate::sync::fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        s.publish(flips.load(Ordering::Relaxed));
    }

    /// Number of shards handed to threads.
    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, nobody else can touch the list.
        let mut p = self.head.load(Ordering::Relaxed) as *const Shard;
        while !p.is_null() {
            // SAFETY: each node was published by `push` from `Arc::into_raw` and the registry
            // owns that reference; it is released exactly once, here.
            let shard = unsafe { Arc::from_raw(p) };
            p = shard.next.load(Ordering::Relaxed);
        }
    }
}

/// Domain ids advance by this much, so that an id masked with `(WAYS - 1) * ID_STEP` is
/// already the byte offset of its cache way (one `and` on the fast path, no shift). 2^59 ids
/// remain.
pub(crate) const ID_STEP: u64 = 16;

#[cfg(not(loom))]
pub(crate) use local::{cached, local};

#[cfg(not(loom))]
mod local {
    use super::{state, Registry, Shard};
    use crate::sync::{AtomicU64, Ordering};
    use std::cell::{Cell, RefCell};
    use std::ptr;
    use std::sync::Arc;

    /// The id of an empty cache way: not a multiple of `ID_STEP`, so no domain has it, and
    /// not 0, the id a static domain reads before its block is installed.
    const EMPTY: u64 = 1;

    /// Cache ways: a thread reading more than this many domains in turn takes the slow path
    /// (a lookup in `OWNED`) on some of its locks, never a wrong answer.
    const WAYS: usize = 8;

    /// The cache way of domain `id`. An entry is 16 bytes, and ids are multiples of
    /// `ID_STEP` (16), so the compiler turns this into `id & 0x70`.
    #[inline]
    fn way(id: u64) -> usize {
        (id / super::ID_STEP) as usize % WAYS
    }

    thread_local! {
        /// Domain id -> this thread's shard, direct-mapped by id. No destructor, so the fast
        /// path is a plain thread-local load with no state check. Empty ways hold `EMPTY`.
        static CACHE: [Cell<(u64, *const Shard)>; WAYS] =
            const { [const { Cell::new((EMPTY, ptr::null())) }; WAYS] };
        /// The references that keep this thread's shards alive, by domain id.
        static OWNED: RefCell<Owned> = const { RefCell::new(Owned(Vec::new())) };
        /// Once `OWNED` is destroyed: the list handed to the final hook, until the hook runs.
        /// Shards that later thread-local destructors take join it, so that they are given
        /// back too. No destructor, so it stays usable during teardown.
        static LATE: Cell<*mut Shards> = const { Cell::new(ptr::null_mut()) };
    }

    type Shards = Vec<(u64, Arc<Shard>)>;

    static FINAL: crate::sys::FinalHook = crate::sys::FinalHook::new(give_back);

    struct Owned(Shards);

    impl Drop for Owned {
        fn drop(&mut self) {
            if !self.0.is_empty() {
                hand_to_final_hook(std::mem::take(&mut self.0));
            }
        }
    }

    /// Arm the final hook with `shards` (see "Thread exit"); where no hook exists, mark them
    /// abandoned instead, never to be reused.
    fn hand_to_final_hook(shards: Shards) {
        let raw = Box::into_raw(Box::new(shards));
        if FINAL.arm(raw.cast()) {
            let _ = LATE.try_with(|l| l.set(raw));
        } else {
            // SAFETY: the hook refused `raw`, so it is still ours alone.
            let shards = unsafe { Box::from_raw(raw) };
            for (_, shard) in shards.iter() {
                // Relaxed: nobody ever claims an abandoned shard.
                shard.state.store(state::ABANDONED, Ordering::Relaxed);
            }
        }
    }

    /// A shard for domain `id` during thread-local teardown (`OWNED` is gone).
    fn late_shard(id: u64, registry: &Registry, flips: &AtomicU64) -> *const Shard {
        let late = LATE.try_with(Cell::get).unwrap_or(ptr::null_mut());
        if !late.is_null() {
            // SAFETY: `late` is the list the armed hook will free; the hook runs on this
            // thread and has not run yet (it clears LATE first), and no other reference to
            // the list exists while we look.
            let list = unsafe { &mut *late };
            if let Some((_, s)) = list.iter().find(|(i, _)| *i == id) {
                return Arc::as_ptr(s);
            }
        }
        // Reuse a free shard as `local_slow` does: a late reader is no reason to grow the
        // registry (every exiting thread would otherwise add one for good).
        let s = match registry.claim_free() {
            Some(s) => {
                // Relaxed: as in `local_slow`.
                s.publish(flips.load(Ordering::Relaxed));
                s
            }
            None => {
                let s = Arc::new(Shard::new(state::OWNED, 0));
                registry.adopt(s.clone(), flips);
                s
            }
        };
        let raw = Arc::as_ptr(&s);
        if late.is_null() {
            hand_to_final_hook(vec![(id, s)]);
        } else {
            // SAFETY: as above.
            unsafe { &mut *late }.push((id, s));
        }
        raw
    }

    /// The final hook's argument while `OWNED` still holds the thread's shards. `OWNED`'s
    /// destructor replaces it with the list it hands over; if that destructor never runs (a
    /// thread whose first read happens in a pthread-key destructor, after Rust's thread-local
    /// destructors have run: registering one then is too late), the hook finds this marker and
    /// takes the shards out of `OWNED` itself.
    fn owned_marker() -> *mut std::ffi::c_void {
        std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
    }

    /// The final thread-exit hook: give the exited thread's shards back to their domains.
    ///
    /// # Safety
    ///
    /// `arg` is the `Box<Shards>` that `hand_to_final_hook` leaked on this thread, or
    /// `owned_marker()`.
    unsafe extern "C" fn give_back(arg: *mut std::ffi::c_void) {
        // A later lock on this thread (another library's key destructor) must take the slow
        // path, which finds `OWNED` and this list gone and arms the hook afresh.
        let _ = LATE.try_with(|l| l.set(ptr::null_mut()));
        let _ = CACHE.try_with(|c| c.iter().for_each(|w| w.set((EMPTY, ptr::null()))));
        let shards = if arg == owned_marker() {
            // `OWNED`'s destructor did not run (see `owned_marker`); if it did, `OWNED` is gone
            // and its shards went through `hand_to_final_hook`.
            let taken = OWNED.try_with(|o| std::mem::take(&mut o.borrow_mut().0));
            Box::new(taken.unwrap_or_default())
        } else {
            // SAFETY: per the contract.
            unsafe { Box::from_raw(arg.cast::<Vec<(u64, Arc<Shard>)>>()) }
        };
        for (_, shard) in shards.iter() {
            // Release: pairs with the Acquire CAS in `Registry::claim_free`: the next owner's
            // plain load + store increments start from our last values.
            shard.state.store(state::FREE, Ordering::Release);
        }
    }

    /// This thread's shard of the domain with `id`, if the cache has it. A hit means this
    /// thread went through `local_slow` for this very domain (ids are never reused, and neither
    /// 0 nor `EMPTY` is ever stored with a shard), and so has seen the domain's block
    /// installed.
    ///
    /// # Safety
    ///
    /// The domain with `id` stays alive for `'a` (its registry keeps the shard alive).
    #[inline]
    pub(crate) unsafe fn cached<'a>(id: u64) -> Option<&'a Shard> {
        let (cid, p) = CACHE.with(|c| c[way(id)].get());
        if cid == id {
            // SAFETY: as in `local`; the caller keeps the domain alive for 'a.
            Some(unsafe { &*p })
        } else {
            None
        }
    }

    /// This thread's shard of the domain with `id`, whose flip counter is `flips`.
    #[inline]
    pub(crate) fn local<'a>(id: u64, registry: &'a Registry, flips: &AtomicU64) -> &'a Shard {
        let (cid, p) = CACHE.with(|c| c[way(id)].get());
        if cid == id {
            // SAFETY: an entry with this id was made by `local_slow` for this very domain (ids
            // are never reused), and the domain's registry, which `registry` borrows, keeps
            // every shard it handed out alive.
            unsafe { &*p }
        } else {
            local_slow(id, registry, flips)
        }
    }

    #[cold]
    #[inline(never)]
    fn local_slow<'a>(id: u64, registry: &'a Registry, flips: &AtomicU64) -> &'a Shard {
        let found = OWNED.try_with(|owned| {
            let mut owned = owned.borrow_mut();
            let shard = match owned.0.iter().find(|(i, _)| *i == id) {
                Some((_, s)) => s.clone(),
                None => {
                    // Forget shards of dropped domains (we hold the last reference).
                    owned.0.retain(|(_, s)| Arc::strong_count(s) > 1);
                    let s = match registry.claim_free() {
                        Some(s) => {
                            // Already in the registry, so every flip publishes to it; this only
                            // spares its new owner a stale index until the next one.
                            // Relaxed: a straggler is safe either way.
                            s.publish(flips.load(Ordering::Relaxed));
                            s
                        }
                        None => {
                            let s = Arc::new(Shard::new(state::OWNED, 0));
                            registry.adopt(s.clone(), flips);
                            s
                        }
                    };
                    owned.0.push((id, s.clone()));
                    // In case `OWNED`'s destructor never runs (see `owned_marker`). Where there
                    // is no final hook, `OWNED`'s destructor is the only way back, as before.
                    FINAL.arm(owned_marker());
                    s
                }
            };
            Arc::as_ptr(&shard)
        });
        let raw = found.unwrap_or_else(|_| late_shard(id, registry, flips));
        // The cache has no destructor, so it works during teardown as well.
        let _ = CACHE.try_with(|c| c[way(id)].set((id, raw)));
        // SAFETY: the registry (borrowed for the result's lifetime) holds a reference.
        unsafe { &*raw }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sums_are_wrap_safe_and_count_migrated_sections() {
        let reg = Registry::new();
        let a = Arc::new(Shard::new(state::OWNED, u64::MAX - 1));
        let b = Arc::new(Shard::new(state::OWNED, u64::MAX - 1));
        reg.push(a.clone());
        reg.push(b.clone());
        let balanced = |r: &Registry, i| r.sum_locks(i) == r.sum_unlocks(i);
        assert!(balanced(&reg, 0));
        // Three sections on `a` cross the wrap; two of them end on `b`.
        for _ in 0..3 {
            a.count_lock(0);
        }
        assert!(!balanced(&reg, 0));
        assert!(balanced(&reg, 1), "index 1 is untouched");
        b.count_unlock(0);
        b.count_unlock(0);
        assert!(!balanced(&reg, 0));
        a.count_unlock(0);
        assert!(balanced(&reg, 0));
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn an_unlock_counter_knows_its_index() {
        let s = Shard::new(state::OWNED, 0);
        assert_eq!(unlock_index(s.unlock_counter(0)), 0);
        assert_eq!(unlock_index(s.unlock_counter(1)), 1);
        count_unlock_at(s.unlock_counter(1));
        assert_eq!(s.unlock[1].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_freed_shard_is_reused_once() {
        let reg = Registry::new();
        let s = Arc::new(Shard::new(state::OWNED, 0));
        reg.push(s.clone());
        assert!(reg.claim_free().is_none());
        s.state.store(state::FREE, Ordering::Release);
        drop(s);
        let again = reg.claim_free().expect("the freed shard");
        assert_eq!(again.state.load(Ordering::Relaxed), state::OWNED);
        assert!(reg.claim_free().is_none());
    }
}
