//! Per-thread lanes: the block each thread is filling, and the two ways a block's contents
//! leave the thread (the owner's hand-off of a full block, a sweeper's copy of what an idle
//! thread published).
//!
//! # One lane
//!
//! ```text
//!   block ──► [ taken by sweepers | published, not taken | free slots ]
//!             0                 head                    tail         cap
//! ```
//!
//! | field | written by | read by |
//! |---|---|---|
//! | `block` | the owner, with the lock held (installing or removing a block) | the owner without the lock; sweepers with it |
//! | `tail` | the owner: store-release after writing the slot (no lock, no read-modify-write); reset to 0 with the lock held | sweepers, load-acquire |
//! | `head` | sweepers with the lock held; the owner resets it to 0 with the lock held | the owner with the lock; anyone as a hint |
//! | block header (`ty`, `free`, `obj_size`, `cap`) | the owner, before installing the block | anyone who reached the block as above |
//!
//! The owner's fast path touches only `block`, `tail`, the header and one slot, all owned by
//! its thread; it never takes the lock and never reads `head`. Slots `head..tail` are read only
//! by a sweeper holding the lock, and the owner only ever writes slots at or above `tail`, so
//! the two never touch the same slot.
//!
//! # Why sweepers copy instead of taking the block
//!
//! The owner writes into its block without a lock or a read-modify-write. If a sweeper took the
//! block away, the owner could be between reading `block` and storing `tail`, and its object
//! would land in a block nobody drains; closing that window costs the owner a fence per object
//! (a store-buffering hand-shake) or an atomic read-modify-write. Copying the published run
//! `head..tail` out under the lock needs neither: the block stays with its owner, the sweeper
//! moves only what the owner's store-release published, and advances `head`. The owner, when the
//! block is full, hands off only `head..cap`. Each object leaves exactly once.
//!
//! # Why the hand-off happens under the lock
//!
//! `kvfree_barrier` must see every object freed by a `kvfree` that returned before it. An owner
//! that takes a full block out of its lane is inside a `kvfree` that has not returned, but the
//! objects in that block were freed by earlier calls that did return. If the owner let go of the
//! lock before queueing the block, a barrier could sweep the lane (finding the fresh, empty
//! block), wait for the callbacks queued so far, and return before the block was even queued.
//! So [`Local::replace`]'s caller retires the old block (into the thread's retired queue, which
//! lives under the same lock, or to the callback engine) before releasing the lock, and the
//! barrier's sweep, which takes every lock and empties every retired queue, waits for it.

use super::block::{self, Block, BlockQueue, Header, Key, CAP};
use crate::cookie::Cookie;
use crate::sync::{
    compiler_fence, fence, lock, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Mutex, MutexGuard,
    Ordering,
};
use crate::sys::{self, BarrierMode};
use std::any::TypeId;
use std::ptr;

/// Control-word bit: an idle sweep is scheduled (engine.rs, "The idle hand-shake").
pub(crate) const ARMED: u8 = 1;
/// Control-word bit: fence mode; owners execute a `SeqCst` fence before reading `ARMED`.
pub(crate) const FENCE: u8 = 2;

/// Owner, after publishing an object: must it arm an idle sweep? The owner's half of the idle
/// hand-shake (engine.rs): a compiler fence and one load in membarrier mode.
#[inline]
pub(crate) fn must_arm(ctl: &AtomicU8) -> bool {
    // Pairs with the heavy_barrier() in `disarm`: in membarrier mode the system call makes this
    // compiler fence a full fence wherever this thread happens to be.
    compiler_fence(Ordering::SeqCst);
    // Relaxed: ordered by the barrier pair.
    ctl.load(Ordering::Relaxed) != ARMED && must_arm_slow(ctl)
}

/// Not armed, or fence mode.
#[cold]
#[inline(never)]
fn must_arm_slow(ctl: &AtomicU8) -> bool {
    // Relaxed (both loads): ordered by the barrier pair.
    let mut w = ctl.load(Ordering::Relaxed);
    if w & FENCE != 0 {
        // SeqCst: fence mode's half of the store-buffering pair with the SeqCst fence that
        // heavy_barrier() executes in this mode; the load above only told us the mode.
        fence(Ordering::SeqCst);
        w = ctl.load(Ordering::Relaxed);
    }
    w & ARMED == 0
}

/// The sweeper's half of the idle hand-shake, before it reads any lane: clear `ARMED`, then
/// the heavy barrier. After this, an owner whose publication the sweep misses sees `ARMED`
/// clear in `must_arm`.
pub(crate) fn disarm(ctl: &AtomicU8, mode: BarrierMode) {
    // Relaxed: ordered by the barrier pair.
    ctl.fetch_and(!ARMED, Ordering::Relaxed);
    // Pairs with the compiler fence (membarrier mode) or the SeqCst fence (fence mode) in
    // `must_arm`.
    sys::heavy_barrier(mode);
}

/// Blocks a thread fills at once, one per type it frees. A power of two.
pub(crate) const WAYS: usize = 4;
const _: () = assert!(WAYS.is_power_of_two());

/// The state of a [`Local`] in the registry.
///
/// | state | owned by | swept | reused by a new thread |
/// |---|---|---|---|
/// | `FREE` | nobody (its thread exited after handing everything off) | yes (finds nothing) | yes, by CAS to `IN_USE` |
/// | `IN_USE` | one live thread | yes | no |
pub(crate) mod state {
    pub(crate) const FREE: u8 = 0;
    pub(crate) const IN_USE: u8 = 1;
}

struct Lane {
    block: AtomicPtr<Header>,
    tail: AtomicUsize,
    head: AtomicUsize,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            block: AtomicPtr::new(ptr::null_mut()),
            tail: AtomicUsize::new(0),
            head: AtomicUsize::new(0),
        }
    }
}

/// What a lane holds, as the owner's slow path sees it (see [`Local::probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No block.
    Empty,
    /// A block of this key with free slots.
    Room,
    /// A block of this key, full.
    Full,
    /// A block of another key whose objects sweepers have all taken: reusable at no loss.
    Drained,
    /// A block of another key still holding objects.
    Other,
}

/// What a sweeper took from a lane: `n` pointers of one type.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub(crate) key: Key,
    pub(crate) n: usize,
}

/// A thread's retired blocks and the bookkeeping around them, under the [`Local`]'s lock.
///
/// Blocks whose objects have no drop glue are not sent to a callback worker when they leave
/// a lane: they wait here, tagged with a grace-period cookie, and the owner frees the expired
/// ones itself, a few objects at a time from its later `kvfree` calls. Freeing on the thread
/// that allocated, interleaved with its allocations, keeps the memory in that thread's
/// allocator caches (a worker's free would send every object's cache line to another CPU and
/// back; a bulk free would overflow the allocator's per-thread cache) and paces a flooding
/// thread by its own frees. Blocks of an owner that stops handing off are taken by the idle
/// sweep. Everything here is touched only with the lock held, so a sweep that takes the lock
/// sees every object either still queued or already freed.
pub(crate) struct Retired {
    pub(crate) queue: BlockQueue,
    /// The expired block whose objects the owner frees a chunk at a time (see
    /// `State::reclaim_chunk`); `Local::reclaiming` says whether there is one.
    pub(crate) current: Option<Block>,
    /// An emptied array kept for the owner's next hand-off.
    pub(crate) spare: Option<Block>,
    /// Hand-offs so far (the sweep compares it with `mark` to tell an idle owner).
    pub(crate) handoffs: u64,
    /// `handoffs` as the last idle sweep saw it.
    pub(crate) mark: u64,
    /// The newest cookie a grace period was requested for on behalf of this queue.
    pub(crate) requested: Option<Cookie>,
    /// Blocks retired since that request.
    pub(crate) unrequested: u32,
    /// When that request was made: a block waits at most [`GP_MIN_INTERVAL`] for one.
    ///
    /// [`GP_MIN_INTERVAL`]: super::engine::GP_MIN_INTERVAL
    pub(crate) requested_at: Option<std::time::Instant>,
}

/// One thread's lanes. Allocated on the thread's first `kvfree`, kept in the registry forever
/// and reused by a later thread after this one exits (as reader slots are).
#[repr(align(128))]
pub(crate) struct Local {
    lanes: [Lane; WAYS],
    /// Serializes sweepers with each other and with the owner's hand-offs (module docs), and
    /// guards the retired queue.
    lock: Mutex<Retired>,
    /// Owner only: the lane the last `kvfree` used, tried first by the next.
    hint: AtomicUsize,
    /// Owner only: the next lane to evict when every lane holds another type.
    victim: AtomicUsize,
    /// A hint for the owner's fast path: `Retired::current` holds a block to free from.
    /// Written with the lock held; read without it (a stale value costs one lock, or one
    /// chunk's delay).
    reclaiming: AtomicBool,
    /// See [`state`].
    pub(crate) state: AtomicU8,
    /// Next entry of the registry; written once, before the entry is published.
    next: AtomicPtr<Local>,
}

/// Proof that the caller holds a [`Local`]'s lock; gives access to the retired queue.
pub(crate) struct LocalGuard<'a>(MutexGuard<'a, Retired>);

impl std::ops::Deref for LocalGuard<'_> {
    type Target = Retired;
    fn deref(&self) -> &Retired {
        &self.0
    }
}

impl std::ops::DerefMut for LocalGuard<'_> {
    fn deref_mut(&mut self) -> &mut Retired {
        &mut self.0
    }
}

impl Local {
    pub(crate) fn new(st: u8) -> Local {
        Local {
            lanes: std::array::from_fn(|_| Lane::new()),
            lock: Mutex::new(Retired {
                queue: BlockQueue::new(),
                current: None,
                spare: None,
                handoffs: 0,
                mark: 0,
                requested: None,
                unrequested: 0,
                requested_at: None,
            }),
            hint: AtomicUsize::new(0),
            victim: AtomicUsize::new(0),
            reclaiming: AtomicBool::new(false),
            state: AtomicU8::new(st),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn lock(&self) -> LocalGuard<'_> {
        LocalGuard(lock(&self.lock))
    }

    pub(crate) fn try_lock(&self) -> Option<LocalGuard<'_>> {
        match self.lock.try_lock() {
            Ok(g) => Some(LocalGuard(g)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(LocalGuard(p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Owner only: the lane to try first.
    #[inline]
    pub(crate) fn hint(&self) -> usize {
        // Relaxed: owner-only field.
        self.hint.load(Ordering::Relaxed)
    }

    /// Owner only.
    pub(crate) fn set_hint(&self, i: usize) {
        // Relaxed: owner-only field.
        self.hint.store(i, Ordering::Relaxed);
    }

    /// Owner only: the lane to evict next (round robin).
    pub(crate) fn next_victim(&self) -> usize {
        // Relaxed: owner-only field.
        let v = self.victim.load(Ordering::Relaxed);
        self.victim.store((v + 1) % WAYS, Ordering::Relaxed);
        v % WAYS
    }

    /// Is there an expired block to free a chunk of? A hint (see the field).
    #[inline]
    pub(crate) fn reclaiming(&self) -> bool {
        // Relaxed: a hint; the lock taken to act on it orders everything.
        self.reclaiming.load(Ordering::Relaxed)
    }

    /// Lock held: record whether `Retired::current` holds a block.
    pub(crate) fn set_reclaiming(&self, _g: &LocalGuard<'_>, on: bool) {
        // Relaxed: a hint (see the field).
        self.reclaiming.store(on, Ordering::Relaxed);
    }

    /// The fast path: append `p` to lane `i` if that lane's block holds type `ty` and has room.
    /// Returns the lane's new `tail` (at least 1), or 0 if the lane refused.
    ///
    /// # Safety
    ///
    /// Only the owner thread calls this (one writer of `tail` and of the slots at or above it).
    #[inline]
    pub(crate) unsafe fn try_push(&self, i: usize, ty: TypeId, p: *mut ()) -> usize {
        // Masked rather than bounds-checked: `i` is always below WAYS, a power of two.
        let lane = &self.lanes[i & (WAYS - 1)];
        // Relaxed: only this thread (the owner) stores `block`.
        let b = lane.block.load(Ordering::Relaxed);
        if b.is_null() {
            return 0;
        }
        // Relaxed: only the owner stores `tail`.
        let n = lane.tail.load(Ordering::Relaxed);
        // SAFETY: `b` is installed in our lane, so it is live until we remove it, and its
        // header is not written while it is installed.
        let (k, cap) = unsafe { ((*b).ty, (*b).cap) };
        if k != ty || n >= cap {
            return 0;
        }
        // SAFETY: n < cap, so the slot lies inside the live block; slots at or above `tail` are
        // written only by the owner (us) and read by no one until `tail` covers them.
        unsafe { block::slots(b).add(n).write(p) };
        // Release: pairs with the Acquire in `take_published`; the slot is written before a
        // sweeper can see it.
        lane.tail.store(n + 1, Ordering::Release);
        n + 1
    }

    /// Owner only: what lane `i` holds with respect to type `ty`. A snapshot for choosing a
    /// lane; `replace` re-reads everything under the lock.
    pub(crate) fn probe(&self, i: usize, ty: TypeId) -> Probe {
        let lane = &self.lanes[i];
        // Relaxed: only the owner (the caller) stores `block` and `tail`.
        let b = lane.block.load(Ordering::Relaxed);
        if b.is_null() {
            return Probe::Empty;
        }
        let tail = lane.tail.load(Ordering::Relaxed);
        // SAFETY: installed in our lane, so live; header fixed while installed.
        let (k, cap) = unsafe { ((*b).ty, (*b).cap) };
        if k == ty {
            if tail < cap {
                Probe::Room
            } else {
                Probe::Full
            }
        // Relaxed: a hint; a stale (smaller) head only makes the lane look busier.
        } else if lane.head.load(Ordering::Relaxed) == tail {
            Probe::Drained
        } else {
            Probe::Other
        }
    }

    /// Owner, lock held: put `new` (prepared with its key; or nothing) into lane `i` and return
    /// the block that was there, its run set to the objects no sweeper took (`head..tail`).
    /// The caller must queue or recycle that block *before* dropping the guard (module docs).
    ///
    /// # Safety
    ///
    /// Only the owner thread calls this.
    pub(crate) unsafe fn replace(
        &self,
        _g: &LocalGuard<'_>,
        i: usize,
        new: Option<Block>,
    ) -> Option<Block> {
        let lane = &self.lanes[i];
        let new = new.map_or(ptr::null_mut(), Block::into_raw);
        // Relaxed (all three loads and stores): `block` and `head` are written only under the
        // lock we hold, and `tail` only by us; the lock's release publishes the new values to
        // the next sweeper.
        let old = lane.block.swap(new, Ordering::Relaxed);
        let head = lane.head.load(Ordering::Relaxed);
        let tail = lane.tail.load(Ordering::Relaxed);
        lane.head.store(0, Ordering::Relaxed);
        lane.tail.store(0, Ordering::Relaxed);
        if old.is_null() {
            return None;
        }
        // SAFETY: `old` was installed by a `replace` (from Block::into_raw) and is no longer
        // reachable: sweepers reach blocks only through `block`, under the lock we hold.
        let mut old = unsafe { Block::from_raw(old) };
        old.set_run(head, tail);
        Some(old)
    }

    /// Is anything published and not yet taken, in any lane? A hint for sweepers, read without
    /// the lock.
    pub(crate) fn has_published(&self) -> bool {
        self.lanes.iter().any(|lane| {
            // Acquire: pairs with the Release in `try_push` (the same argument as in
            // `take_published`). Reading `tail` before `head` matters: an owner's reset of
            // `head` to 0 happens before every later `tail` it publishes, so a `tail` we see
            // brings the matching `head` with it.
            let t = lane.tail.load(Ordering::Acquire);
            // Relaxed: see above.
            t != lane.head.load(Ordering::Relaxed)
        })
    }

    /// Sweeper, lock held: copy the objects lane `i` published and no one took yet into `out`,
    /// and mark them taken.
    pub(crate) fn take_published(
        &self,
        _g: &LocalGuard<'_>,
        i: usize,
        out: &mut [*mut (); CAP],
    ) -> Option<Run> {
        let lane = &self.lanes[i];
        // Relaxed: `block` is written only under the lock we hold.
        let b = lane.block.load(Ordering::Relaxed);
        if b.is_null() {
            return None;
        }
        // Acquire: pairs with the Release in `try_push`; the slots below `t` are written.
        let t = lane.tail.load(Ordering::Acquire);
        // Relaxed: written only under the lock we hold.
        let h = lane.head.load(Ordering::Relaxed);
        if t <= h {
            return None;
        }
        let n = t - h;
        // SAFETY: `b` is installed (we hold the lock, so it stays installed); slots h..t were
        // published by the owner's Release store of `tail`, which our Acquire load read, and
        // the owner writes only slots at or above `t`. `out` has room for CAP >= n pointers.
        let run = unsafe {
            ptr::copy_nonoverlapping(block::slots(b).add(h), out.as_mut_ptr(), n);
            Run {
                key: Key {
                    ty: (*b).ty,
                    free: (*b).free,
                    obj_size: (*b).obj_size,
                    drops: (*b).drops,
                },
                n,
            }
        };
        // Relaxed: written only under the lock; the owner reads it under the lock too.
        lane.head.store(t, Ordering::Relaxed);
        Some(run)
    }

    /// Lock held: objects published and not taken, and their bytes (for statistics).
    pub(crate) fn published(&self, _g: &LocalGuard<'_>) -> (u64, u64) {
        let (mut objs, mut bytes) = (0u64, 0u64);
        for lane in &self.lanes {
            // Relaxed: written only under the lock we hold.
            let b = lane.block.load(Ordering::Relaxed);
            if b.is_null() {
                continue;
            }
            // Acquire: as in take_published.
            let t = lane.tail.load(Ordering::Acquire);
            // Relaxed: as in take_published.
            let n = t.saturating_sub(lane.head.load(Ordering::Relaxed)) as u64;
            // SAFETY: installed, hence live, while we hold the lock.
            let size = unsafe { (*b).obj_size } as u64;
            objs += n;
            bytes += n * size;
        }
        (objs, bytes)
    }
}

/// Every [`Local`] ever created: an append-only list that sweepers walk without a lock (entries
/// are never freed, so the walk has no reclamation problem of its own).
pub(crate) struct Registry {
    head: AtomicPtr<Local>,
}

#[cfg_attr(loom, allow(dead_code))]
impl Registry {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Registry {
        Registry {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Claim a free entry, or allocate (fallibly) and publish a new one. The entry is `IN_USE`
    /// and its lanes are empty.
    pub(crate) fn acquire(&self) -> Result<&'static Local, crate::alloc::AllocError> {
        for l in self.iter() {
            // Acquire on success: pairs with the Release in `release`, so the previous owner's
            // last accesses (its hint and victim words) happen-before ours.
            if l.state.load(Ordering::Relaxed) == state::FREE
                && l.state
                    .compare_exchange(
                        state::FREE,
                        state::IN_USE,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return Ok(l);
            }
        }
        let l: &'static Local = Box::leak(crate::alloc::try_box(
            Local::new(state::IN_USE),
            "a kvfree thread record",
        )?);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            l.next.store(head, Ordering::Relaxed);
            // Release: publishes the entry's initialized fields to walkers (pairs with the
            // Acquire in `iter`).
            match self.head.compare_exchange_weak(
                head,
                l as *const Local as *mut Local,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(l),
                Err(h) => head = h,
            }
        }
    }

    /// Give an entry back at thread exit (its lanes already handed off).
    pub(crate) fn release(&self, l: &Local) {
        // Release: pairs with the Acquire CAS in `acquire`.
        l.state.store(state::FREE, Ordering::Release);
    }

    /// Every entry ever created.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Local> {
        // Acquire: pairs with the Release CAS in `acquire` (and, for later entries, with the
        // Relaxed `next` store that preceded it).
        let mut cur = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: entries are leaked by `acquire` and never freed.
            let l: &'static Local = unsafe { cur.as_ref()? };
            // Relaxed: written before the entry was published by the Release CAS we (or a
            // predecessor's walk) synchronized with.
            cur = l.next.load(Ordering::Relaxed);
            Some(l)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::kvfree::block::Kind;
    use std::sync::atomic::AtomicUsize as StdUsize;
    use std::sync::Arc;

    static DROPS: StdUsize = StdUsize::new(0);
    struct D(#[allow(dead_code)] u64);
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn keyed() -> Block {
        let mut b = Block::alloc(Kind::Array).unwrap();
        b.set_key(Key::of::<D>());
        b
    }

    /// Free a block's live run (no readers exist in these tests).
    fn free(mut b: Block) -> usize {
        let n = b.live();
        // SAFETY: no reader exists in these tests.
        assert!(unsafe { b.free_objects() }.is_none());
        n
    }

    #[test]
    fn probe_push_replace_and_take() {
        let local = Local::new(state::IN_USE);
        let key = TypeId::of::<D>();
        let other = TypeId::of::<u64>();
        assert_eq!(local.probe(0, key), Probe::Empty);
        // SAFETY (every unsafe call below): this test thread is the owner.
        assert_eq!(unsafe { local.try_push(0, key, ptr::null_mut()) }, 0);
        let g = local.lock();
        assert!(unsafe { local.replace(&g, 0, Some(keyed())) }.is_none());
        drop(g);
        assert_eq!(local.probe(0, key), Probe::Room);
        assert_eq!(local.probe(0, other), Probe::Drained);
        assert_eq!(unsafe { local.try_push(0, other, ptr::null_mut()) }, 0);
        for i in 0..CAP {
            let p = Box::into_raw(Box::new(D(i as u64))).cast();
            assert_eq!(unsafe { local.try_push(0, key, p) }, i + 1);
        }
        assert_eq!(local.probe(0, key), Probe::Full);
        assert_eq!(local.probe(0, other), Probe::Other);
        assert!(local.has_published());
        // A sweeper takes what is published...
        let mut buf = [ptr::null_mut(); CAP];
        let g = local.lock();
        assert_eq!(local.published(&g), (CAP as u64, 8 * CAP as u64));
        let run = local.take_published(&g, 0, &mut buf).unwrap();
        assert_eq!((run.n, run.key.obj_size), (CAP, 8));
        assert!(local.take_published(&g, 0, &mut buf).is_none());
        assert_eq!(local.published(&g), (0, 0));
        drop(g);
        assert!(!local.has_published());
        let mut copy = Block::alloc(Kind::Array).unwrap();
        copy.set_key(run.key);
        for &p in &buf[..run.n] {
            assert!(copy.push(p));
        }
        // ...and the owner's hand-off of the full block then carries nothing.
        let g = local.lock();
        let old = unsafe { local.replace(&g, 0, None) }.unwrap();
        drop(g);
        assert_eq!(old.live(), 0);
        let before = DROPS.load(Ordering::Relaxed);
        assert_eq!(free(copy), CAP);
        assert!(DROPS.load(Ordering::Relaxed) >= before + CAP);
        assert_eq!(local.probe(0, key), Probe::Empty);
    }

    #[test]
    fn owner_and_sweeper_deliver_each_object_exactly_once() {
        // The owner pushes, handing off full blocks under the lock; a sweeper thread keeps
        // copying what is published. Every object must come out exactly once.
        let local = Arc::new(Local::new(state::IN_USE));
        let n = if cfg!(miri) { 12 } else { 20_000 };
        let key = TypeId::of::<D>();
        let before = DROPS.load(Ordering::Relaxed);
        let done = Arc::new(crate::sync::AtomicBool::new(false));
        let sweeper = {
            let (local, done) = (local.clone(), done.clone());
            std::thread::spawn(move || {
                let mut took = 0;
                let mut buf = [ptr::null_mut(); CAP];
                loop {
                    let last = done.load(Ordering::Acquire);
                    let g = local.lock();
                    let run = local.take_published(&g, 0, &mut buf);
                    drop(g);
                    if let Some(run) = run {
                        let mut b = Block::alloc(Kind::Array).unwrap();
                        b.set_key(run.key);
                        for &p in &buf[..run.n] {
                            assert!(b.push(p));
                        }
                        took += free(b);
                    } else if last {
                        return took;
                    }
                    std::thread::yield_now();
                }
            })
        };
        let mut handed = 0;
        for i in 0..n {
            let p = Box::into_raw(Box::new(D(i))).cast();
            // SAFETY (both unsafe calls): this thread is the owner.
            if unsafe { local.try_push(0, key, p) } == 0 {
                let g = local.lock();
                if let Some(old) = unsafe { local.replace(&g, 0, Some(keyed())) } {
                    handed += free(old);
                }
                drop(g);
                assert_eq!(unsafe { local.try_push(0, key, p) }, 1);
            }
        }
        // Release: the sweeper's last pass (after its Acquire load) sees every push.
        done.store(true, Ordering::Release);
        let took = sweeper.join().unwrap();
        let g = local.lock();
        // SAFETY: the owner (this thread) empties its lane.
        if let Some(old) = unsafe { local.replace(&g, 0, None) } {
            handed += free(old);
        }
        drop(g);
        assert_eq!(
            handed + took,
            n as usize,
            "an object was lost or delivered twice"
        );
        assert!(DROPS.load(Ordering::Relaxed) >= before + n as usize);
    }

    #[test]
    fn registry_reuses_released_entries() {
        // A static, as the production registry is: the leaked entries stay reachable from it
        // (so Miri's leak check does not count them).
        static REG: Registry = Registry::new();
        let reg = &REG;
        let a = reg.acquire().unwrap();
        let b = reg.acquire().unwrap();
        assert!(!std::ptr::eq(a, b));
        reg.release(a);
        let c = reg.acquire().unwrap();
        assert!(
            std::ptr::eq(a, c),
            "a released entry is reused, not reallocated"
        );
        assert_eq!(reg.iter().count(), 2);
        {
            let _fail = crate::alloc::inject(crate::alloc::FailurePlan::AllAfter(0));
            assert!(
                reg.acquire().is_err(),
                "a new entry allocates through try_box"
            );
        }
    }
}
