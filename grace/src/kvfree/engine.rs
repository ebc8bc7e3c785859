//! The shared half of `kvfree`: shards (block cache and emergency reserve), the registry of
//! thread records, the background thread (idle sweeps and refills), hand-off to RCU callbacks,
//! and the counters behind [`super::stats`].
//!
//! # The idle hand-shake (`CTL`'s `ARMED` bit)
//!
//! An owner that publishes an object makes sure the background thread will sweep within the
//! lazy delay; the background thread clears `ARMED` before each sweep. Without a barrier pair
//! both sides could read stale values and an idle thread's object would be stranded:
//!
//! ```text
//!   owner (kvfree; lane::must_arm)          background thread (lane::disarm, then the sweep)
//!   slot[n] = p; tail.store(n+1, Release)   CTL.fetch_and(!ARMED)
//!   light barrier (compiler fence)          heavy_barrier()   (membarrier, or SeqCst fence)
//!   if CTL.load() has no ARMED { arm() }    for each lane: tail.load(Acquire), copy
//! ```
//!
//! Store-buffering: either the sweep sees the new `tail`, or the owner sees `ARMED` clear and
//! arms a new cycle. In membarrier mode the owner's barrier is a compiler fence, made a full
//! fence by the system call; in fence mode (`FENCE` bit) the owner executes a `SeqCst` fence
//! instead, on its slow path. That is the same pair the callback engine's lazy `call` uses,
//! and `kvfree/tests/loom_lane.rs` checks it (and that it fails without the owner's fence).
//! A sweep that leaves work behind (a busy record, an active owner's retired queue) arms the
//! next sweep itself.
//!
//! # Retired queues
//!
//! A full array of a type without drop glue is not sent to a callback worker: it waits in its
//! owner's retired queue (under the owner's lock) with the cookie of the grace period it needs.
//! The owner frees expired arrays itself: [`RECLAIM_CHUNK`] objects from every
//! [`RECLAIM_CHUNK`]-th of its `kvfree` calls (`State::reclaim_chunk`), keeping the emptied
//! array as its next lane block (`Retired::spare`), and, when more than [`QUEUE_SOFT_MAX`]
//! arrays wait, up to [`RECLAIM_MAX`] expired ones in bulk per hand-off. Grace periods are
//! requested with `rcu::start_poll`, once per [`GP_BATCH`] arrays or [`GP_MIN_INTERVAL`],
//! whichever comes first, and never twice at once per thread. An owner with [`QUEUE_HARD_MAX`] arrays waiting waits for a grace period itself
//! (outside read-side sections): the backpressure that bounds a flooding thread's memory. The queue is emptied by someone else only when the owner cannot be counted on: by
//! the idle sweep when the owner handed nothing off since the previous sweep, by
//! `kvfree_barrier`, and by the owner's exit hook. Each of them, under the owner's lock, frees
//! the expired arrays at once and queues the rest with `call_hurry`. Since the owner frees only
//! under that same lock, every object is either still queued or already freed whenever the
//! lock is free.
//!
//! # Lock order
//!
//! `sweep_lock` → a [`Local`]'s lock → the callback engine's locks (through `rcu::call` and
//! `rcu::start_poll`) and a shard's `cache`/`reserve` lock. A shard lock is a leaf: nothing is
//! allocated, freed or called while one is held. Nothing is allocated under a `Local`'s lock
//! either; objects without drop glue are freed under it (deallocation only). No destructor
//! runs under any of these locks.

use super::block::{Block, BlockList, Key, Kind, Panic, CAP};
use super::lane::{self, Local, LocalGuard, Registry, Run, ARMED, FENCE, WAYS};
use crate::config::Config;
use crate::rcu;
use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Condvar, Mutex, Ordering};
use crate::sys::{self, BarrierMode};
use crossbeam_utils::CachePadded;
use std::any::TypeId;
use std::cell::Cell;
use std::ptr;
use std::time::{Duration, Instant};

/// Arrays each shard's cache is refilled to, off the fast path, and filled with at start-up
/// (the kernel's `kvfree_rcu` keeps a per-CPU cache of preallocated pages; 16 KiB per shard).
const CACHE_TARGET: usize = 4;
/// Below this many cached arrays a taker asks the background thread to refill.
const CACHE_LOW: usize = 2;
/// Most arrays a shard keeps when freed batches give theirs back (64 KiB per shard); the rest
/// go back to the allocator. (Owners that free their own arrays keep one each as their next
/// lane block, so under a flood the shard caches see little traffic.)
const CACHE_MAX: usize = 16;
/// Arrays per shard kept only for when allocation fails (the emergency reserve). Refilled by the background thread, first from arrays freed batches give
/// back, then by allocating.
const RESERVE: usize = 2;
/// Flood mode for `kvfree`: pending bytes passed the flood threshold of `crate::pressure`
/// (`GRACE_FLOOD_BYTES`, the same one the callback shards use). While set, arrays are queued
/// with `call_hurry` instead of lazily: a flood should not wait out the lazy delay with this
/// much memory stranded. Cleared, with hysteresis, once pending bytes are under half of it.
static FLOOD: AtomicBool = AtomicBool::new(false);

/// Whether an array queued with `pending` bytes outstanding should skip the lazy delay (and
/// enter or leave flood mode).
fn flood_hurry(pending: u64) -> bool {
    if crate::pressure::is_flood(0, pending) {
        // Relaxed: a hint; it only decides whether flood mode is counted again.
        if !FLOOD.swap(true, Ordering::Relaxed) {
            crate::pressure::count_flood();
        }
        true
    } else {
        if !crate::pressure::is_flood(0, pending.saturating_mul(2)) {
            FLOOD.store(false, Ordering::Relaxed);
        }
        false
    }
}
/// Expired blocks an owner frees in bulk per hand-off, when more than [`QUEUE_SOFT_MAX`] wait:
/// bounds the time one `kvfree` spends freeing (about 2,000 objects), while catching up after a
/// long grace period faster than the chunks alone would.
const RECLAIM_MAX: usize = 4;
/// Objects the owner frees from its expired blocks per [`RECLAIM_CHUNK`] objects it kvfrees.
/// Freed interleaved with its allocations, a chunk fits the allocator's per-thread cache
/// (glibc's tcache holds 7 blocks of a size), so the next allocations take them straight back;
/// a bulk free of a whole array would overflow that cache into the shared arena, one atomic
/// operation per object (HACK(kvfree): sized for glibc; measured on the development machine,
/// box+kvfree went from 2.3x to 1.8x a box+drop with chunks of 4; chunks of 8 overflow the
/// tcache once the allocator refills it, and chunks of 2 pay the lock too often).
pub(crate) const RECLAIM_CHUNK: usize = 4;
/// Retired blocks above which the owner frees expired ones in bulk at a hand-off: chunks free
/// one block per hand-off, as fast as blocks are retired, so a backlog (after a long grace
/// period) would never shrink otherwise. Small, so that a structure under write load keeps few
/// dead objects (about 2,000 64-byte ones per thread beyond those waiting for their grace
/// period), and frees them while they are still warm; it was 32 blocks, which left 16–32
/// thousand dead list nodes per thread where crossbeam-epoch leaves 2–4 thousand.
const QUEUE_SOFT_MAX: usize = 4;
/// Retired blocks at which an owner, outside read-side sections, waits for the oldest one's
/// grace period itself before handing off more (see `State::prepare_handoff`): about 32,000
/// objects, 2.3 MiB of 64-byte ones, per flooding thread.
const QUEUE_HARD_MAX: usize = 4 * GP_BATCH as usize;
/// Retired blocks per grace-period request (see `State::retire`): about 8,000 objects. Fewer
/// grace periods (each a membarrier that interrupts every CPU running our threads, and a
/// wake-up of the grace-period thread) against a longer wait for memory to come back; 16
/// measured best on the 2-vCPU development machine (8 and 32 were no better).
const GP_BATCH: u32 = 16;
/// A block waits at most this long for its grace period to be requested (the kernel drains
/// `kvfree_rcu`'s per-page batches by age as well as by count): at a structure's write rate
/// (a block per 100–200 µs) every block gets its grace period at once; under a flood
/// ([`GP_BATCH`] blocks in far less than this) the count decides.
pub(crate) const GP_MIN_INTERVAL: Duration = Duration::from_micros(100);

/// The word every `kvfree` reads after publishing. Written at start-up (`FENCE`) and by arming
/// and sweeping (`ARMED`), so it is read-mostly and sits on a line of its own.
///
/// | bit | set by | cleared by |
/// |---|---|---|
/// | `ARMED` | the first owner that finds it clear (`State::arm`) | the background thread, before each sweep |
/// | `FENCE` | initialization, before any thread record exists, in fence mode | never |
pub(crate) static CTL: CachePadded<AtomicU8> = CachePadded::new(AtomicU8::new(0));

/// Every thread record.
pub(crate) static REGISTRY: Registry = Registry::new();

/// The process-wide state, null until the first `kvfree` initializes it.
static STATE: AtomicPtr<State> = AtomicPtr::new(ptr::null_mut());

/// Counters for [`super::stats`]. Updated once per array or per fallback, never per object on
/// the fast path.
pub(crate) struct Counters {
    /// Objects that left their owner's lane (queued in a batch, a callback, or freed
    /// synchronously).
    pub(crate) handed: AtomicU64,
    pub(crate) freed: AtomicU64,
    pub(crate) pending_bytes: AtomicU64,
    pub(crate) peak_bytes: AtomicU64,
    pub(crate) arrays_allocated: AtomicU64,
    pub(crate) arrays_from_cache: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) sweeps: AtomicU64,
    pub(crate) swept: AtomicU64,
    pub(crate) reserve: AtomicU64,
    pub(crate) node: AtomicU64,
    pub(crate) sync_gp: AtomicU64,
    pub(crate) retry: AtomicU64,
    pub(crate) callback: AtomicU64,
    pub(crate) backpressure: AtomicU64,
}

pub(crate) static COUNTERS: CachePadded<Counters> = CachePadded::new(Counters {
    handed: AtomicU64::new(0),
    freed: AtomicU64::new(0),
    pending_bytes: AtomicU64::new(0),
    peak_bytes: AtomicU64::new(0),
    arrays_allocated: AtomicU64::new(0),
    arrays_from_cache: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    sweeps: AtomicU64::new(0),
    swept: AtomicU64::new(0),
    reserve: AtomicU64::new(0),
    node: AtomicU64::new(0),
    sync_gp: AtomicU64::new(0),
    retry: AtomicU64::new(0),
    callback: AtomicU64::new(0),
    backpressure: AtomicU64::new(0),
});

/// Bump a statistic.
pub(crate) fn count(c: &AtomicU64, n: u64) {
    // Relaxed: a statistic; nothing is published through it.
    c.fetch_add(n, Ordering::Relaxed);
}

/// Add `bytes` to the pending total and raise the peak.
fn add_pending(bytes: u64) -> u64 {
    // Relaxed: statistics (the matching subtraction happens after a grace period, which
    // orders it after this addition anyway).
    let now = COUNTERS.pending_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
    COUNTERS.peak_bytes.fetch_max(now, Ordering::Relaxed);
    now
}

fn sub_pending(bytes: u64) {
    // Relaxed: as in add_pending.
    COUNTERS.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
}

thread_local! {
    /// Test hook (see `kvfree::testing`): bit 0 makes this thread's block ladder skip the
    /// shard cache, bit 1 the reserve, as if they were empty.
    pub(crate) static AVOID: Cell<u8> = const { Cell::new(0) };
}
pub(crate) const AVOID_CACHE: u8 = 1;
pub(crate) const AVOID_RESERVE: u8 = 2;

/// One shard's empty arrays. Both lists are leaves in the lock order.
struct Shard {
    cache: Mutex<BlockList>,
    reserve: Mutex<BlockList>,
}

/// Requests to the background thread, under `State::wake`.
#[derive(Default)]
struct Wake {
    /// When the next idle sweep is due.
    deadline: Option<Instant>,
    /// Caches or reserves want refilling now.
    refill: bool,
}

/// Which sweep: the background thread's, or `kvfree_barrier`'s.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Skip thread records whose lock is busy (their owner is handing off; come back later).
    Idle,
    /// Take every lock, waiting out hand-offs in flight.
    Complete,
}

pub(crate) struct State {
    shards: Box<[CachePadded<Shard>]>,
    lazy: Duration,
    mode: BarrierMode,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
    /// A refill request is on its way (collapses a burst of requests into one wake-up).
    refill_requested: AtomicBool,
    /// Serializes sweeps, so that `kvfree_barrier` also waits for objects a background sweep
    /// has taken but not yet queued.
    sweep_lock: Mutex<()>,
}

/// The state, initializing it on first use; `None` if initialization failed (allocation
/// failure, or no background thread could be started), in which case callers use the
/// fallbacks that need no state, and a later call tries again.
#[inline]
pub(crate) fn state() -> Option<&'static State> {
    // Acquire: pairs with the Release in init_slow; the state's fields are initialized.
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: once published, the state is leaked and never freed.
    match unsafe { p.as_ref() } {
        Some(s) => Some(s),
        None => init_slow(),
    }
}

/// The state if it was ever initialized, without initializing it.
pub(crate) fn started() -> Option<&'static State> {
    // Acquire: as in `state`.
    // SAFETY: as in `state`.
    unsafe { STATE.load(Ordering::Acquire).as_ref() }
}

#[cold]
#[inline(never)]
fn init_slow() -> Option<&'static State> {
    static INIT: Mutex<()> = Mutex::new(());
    let _init = lock(&INIT);
    if let Some(s) = started() {
        return Some(s);
    }
    // The flavor first: its initialization chooses the barrier mode for the process.
    let _ = rcu::get_state();
    let mode = sys::mode().unwrap_or(BarrierMode::Fence);
    // The flavor already reported a malformed setting; here the default simply applies.
    let lazy = Config::from_env_or_warn().lazy_delay;
    let n = sys::num_cpus();
    let mut shards = crate::alloc::try_vec(n, "the kvfree shards").ok()?;
    for _ in 0..n {
        let mut cache = BlockList::new();
        let mut reserve = BlockList::new();
        // Preallocated so that the first kvfree on a CPU does not allocate (as in the kernel); a
        // failure here only leaves the lists short, and the background thread tops them up.
        for (list, want) in [(&mut cache, CACHE_TARGET), (&mut reserve, RESERVE)] {
            for _ in 0..want {
                match Block::alloc(Kind::Array) {
                    Ok(b) => list.push(b),
                    Err(_) => break,
                }
            }
        }
        shards.push(CachePadded::new(Shard {
            cache: Mutex::new(cache),
            reserve: Mutex::new(reserve),
        }));
    }
    let st = crate::alloc::try_box(
        State {
            shards: shards.into_boxed_slice(),
            lazy,
            mode,
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            refill_requested: AtomicBool::new(false),
            sweep_lock: Mutex::new(()),
        },
        "the kvfree state",
    )
    .ok()?;
    let st: &'static State = Box::leak(st);
    crate::sys::thread_starting();
    let spawned = std::thread::Builder::new()
        .name("grace-kvfree".into())
        .spawn(move || st.background());
    if spawned.is_err() {
        // SAFETY: `st` was leaked just above and never shared: the thread did not start and
        // STATE was not published.
        drop(unsafe { Box::from_raw(st as *const State as *mut State) });
        return None;
    }
    if mode == BarrierMode::Fence {
        // Relaxed: published by the Release store of STATE below, which every owner's path to
        // the fast path (registration) reads with Acquire first.
        CTL.fetch_or(FENCE, Ordering::Relaxed);
    }
    // Release: pairs with the Acquire in `state`/`started`.
    STATE.store(st as *const State as *mut State, Ordering::Release);
    Some(st)
}

impl State {
    /// Make sure an idle sweep comes within the lazy delay (see "The idle hand-shake").
    #[cold]
    pub(crate) fn arm(&self) {
        // Relaxed: the bit is a hint guarded by the barrier pair; the wake mutex orders the
        // deadline itself.
        if CTL.fetch_or(ARMED, Ordering::Relaxed) & ARMED != 0 {
            return;
        }
        let due = Instant::now() + self.lazy;
        let mut w = lock(&self.wake);
        match w.deadline {
            Some(d) if d <= due => {}
            _ => {
                w.deadline = Some(due);
                self.wake_cv.notify_one();
            }
        }
    }

    fn request_refill(&self) {
        // Relaxed: a hint; the wake mutex carries the request itself.
        if self.refill_requested.swap(true, Ordering::Relaxed) {
            return;
        }
        lock(&self.wake).refill = true;
        self.wake_cv.notify_one();
    }

    /// The block ladder: a cached array, a fresh array, a reserve array, a node. Never blocks
    /// on anything but a shard lock (held by others for a list push or pop only); `None` when
    /// every rung failed.
    pub(crate) fn take_block(&self, shard: usize) -> Option<Block> {
        let avoid = AVOID.with(Cell::get);
        let sh = &self.shards[shard % self.shards.len()];
        if avoid & AVOID_CACHE == 0 {
            let (b, left) = {
                let mut c = lock(&sh.cache);
                (c.pop(), c.len())
            };
            if left < CACHE_LOW {
                self.request_refill();
            }
            if let Some(mut b) = b {
                count(&COUNTERS.arrays_from_cache, 1);
                b.set_home(shard);
                return Some(b);
            }
        }
        // No lock is held from here on: allocation may take as long as the allocator likes,
        // and it may fail, but it never waits for anything of ours.
        if let Ok(mut b) = Block::alloc(Kind::Array) {
            count(&COUNTERS.arrays_allocated, 1);
            b.set_home(shard);
            return Some(b);
        }
        if avoid & AVOID_RESERVE == 0 {
            let b = lock(&sh.reserve).pop();
            if let Some(mut b) = b {
                count(&COUNTERS.reserve, 1);
                self.request_refill();
                b.set_home(shard);
                return Some(b);
            }
        }
        if let Ok(b) = Block::alloc(Kind::Node) {
            count(&COUNTERS.node, 1);
            return Some(b);
        }
        None
    }

    /// Owner fast path, every [`RECLAIM_CHUNK`]-th object while `Local::reclaiming`: free the
    /// next chunk of the expired block being reclaimed, under the owner's (uncontended) lock.
    pub(crate) fn reclaim_chunk(&self, local: &Local) {
        let mut g = local.lock();
        self.free_chunk(&mut g, RECLAIM_CHUNK);
        let on = g.current.is_some();
        local.set_reclaiming(&g, on);
    }

    /// Lock held: free up to `n` objects of the current expired block, moving on to the next
    /// expired block of the queue when one is used up.
    fn free_chunk(&self, g: &mut LocalGuard<'_>, mut n: usize) {
        while n > 0 {
            if g.current.is_none() {
                g.current = g.queue.pop_front_if(rcu::poll_state);
            }
            let Some(b) = g.current.as_mut() else {
                return;
            };
            let k = n.min(b.live());
            free_part(b, k);
            n -= k;
            if b.live() == 0 {
                if let Some(b) = g.current.take() {
                    self.finish(g, b);
                }
            }
        }
    }

    /// Lock held: a retired block whose objects are all freed. Its own bytes stop counting as
    /// pending; an array is kept as the owner's spare (its next lane block) or recycled.
    fn finish(&self, g: &mut LocalGuard<'_>, b: Block) {
        sub_pending(b.bytes() as u64);
        if g.spare.is_none() && b.kind() == Kind::Array {
            g.spare = Some(b);
        } else {
            self.recycle(b);
        }
    }

    /// Owner, slow path, about to need a new block: make sure an expired block is being freed
    /// chunk by chunk, free expired blocks in bulk when too many wait (a long grace period
    /// just ended), and return the spare array, if any, for the caller to fill next (its lines
    /// are still in this CPU's cache).
    ///
    /// Backpressure: when [`QUEUE_HARD_MAX`] blocks wait and the oldest has not expired (the
    /// grace-period thread is late, or a reader is long), the owner waits for that grace
    /// period itself, unless it is inside a read-side section (where waiting would deadlock:
    /// there its queue keeps growing, as its section holds every grace period back anyway).
    pub(crate) fn prepare_handoff(&self, local: &Local) -> Option<Block> {
        let mut g = local.lock();
        if g.current.is_none() {
            g.current = g.queue.pop_front_if(rcu::poll_state);
        }
        self.free_backlog(&mut g);
        let late = match g.queue.front_cookie() {
            Some(c) if g.queue.len() >= QUEUE_HARD_MAX && !rcu::poll_state(c) => Some(c),
            _ => None,
        };
        if let Some(c) = late {
            if !rcu::is_reading() {
                // No lock held while waiting: sweeps must be able to take ours meanwhile.
                drop(g);
                count(&COUNTERS.backpressure, 1);
                rcu::cond_synchronize(c);
                g = local.lock();
                self.free_backlog(&mut g);
            }
        }
        let on = g.current.is_some();
        local.set_reclaiming(&g, on);
        g.spare.take()
    }

    /// Lock held: while more than [`QUEUE_SOFT_MAX`] blocks wait, free up to [`RECLAIM_MAX`]
    /// expired ones in bulk (chunks alone free only as fast as blocks are retired).
    fn free_backlog(&self, g: &mut LocalGuard<'_>) {
        for _ in 0..RECLAIM_MAX {
            if g.queue.len() <= QUEUE_SOFT_MAX {
                break;
            }
            match g.queue.pop_front_if(rcu::poll_state) {
                Some(mut b) => {
                    free_part(&mut b, usize::MAX);
                    self.finish(g, b);
                }
                None => break,
            }
        }
    }

    /// Owner, slow path: install `new` in lane `i`, retiring what the lane held before the
    /// lock is released (see `lane.rs`, "Why the hand-off happens under the lock").
    pub(crate) fn install(&self, local: &Local, i: usize, new: Block) {
        let mut g = local.lock();
        // SAFETY: called on the thread that owns `local` (the slow path of its kvfree).
        if let Some(old) = unsafe { local.replace(&g, i, Some(new)) } {
            self.retire(&mut g, old);
        }
        drop(g);
    }

    /// A block leaves its owner's lane (lock held). Objects without drop glue wait in the
    /// owner's retired queue for a grace period (a cookie, and a grace period requested for
    /// it unless one already was); the others go to the callback engine at once.
    fn retire(&self, g: &mut LocalGuard<'_>, mut b: Block) {
        if b.live() == 0 {
            self.recycle(b);
            return;
        }
        let pending = account(&b);
        if b.drops() {
            enqueue(b, flood_hurry(pending));
            return;
        }
        // The cookie is taken after every object in the block was handed to kvfree (they were
        // published before this hand-off, in program order or through the lane's tail).
        let c = rcu::get_state();
        g.unrequested += 1;
        // Ask for a grace period once `GP_BATCH` blocks wait without one, or the last request
        // is `GP_MIN_INTERVAL` old, and only when the one asked for last has ended. A flood then pays one grace period (a membarrier that
        // interrupts every CPU running our threads, and a wake-up of the grace-period thread)
        // per few blocks rather than per block, and slow grace periods batch more. Blocks an
        // owner leaves unrequested when it goes quiet are the idle sweep's, which queues them
        // with `call_hurry`.
        if g.requested.map_or(true, rcu::poll_state)
            && (g.unrequested >= GP_BATCH
                || g.requested_at
                    .map_or(true, |t| t.elapsed() >= GP_MIN_INTERVAL))
        {
            g.requested = Some(rcu::start_poll());
            g.requested_at = Some(Instant::now());
            g.unrequested = 0;
        }
        b.set_cookie(c);
        g.queue.push_back(b);
        g.handoffs += 1;
    }

    /// Empty a retired queue (lock held): free the expired blocks now (no drop glue, so no
    /// user code runs), queue the others with the callback engine. Done under the lock so that
    /// `kvfree_barrier`, which takes every lock, waits for it.
    fn drain_retired(&self, local: &Local, g: &mut LocalGuard<'_>) {
        if let Some(mut b) = g.current.take() {
            free_part(&mut b, usize::MAX);
            sub_pending(b.bytes() as u64);
            self.recycle(b);
        }
        if let Some(b) = g.spare.take() {
            self.recycle(b);
        }
        local.set_reclaiming(g, false);
        while let Some(mut b) = g.queue.pop_front() {
            if rcu::poll_state(b.cookie()) {
                free_part(&mut b, usize::MAX);
                sub_pending(b.bytes() as u64);
                self.recycle(b);
            } else {
                enqueue(b, true);
            }
        }
        // Nothing waits for a grace period of this queue's any more.
        g.unrequested = 0;
    }

    /// The shrinker (see `crate::pressure::scan`): free up to `n` objects of expired arrays
    /// from every thread's retired queue now, skipping threads whose lock is taken (never
    /// waiting), and ask for the grace period the rest wait for. Returns how many were freed.
    pub(crate) fn shrink(&self, n: u64) -> u64 {
        let mut freed = 0u64;
        for local in REGISTRY.iter() {
            if freed >= n {
                break;
            }
            let Some(mut g) = local.try_lock() else {
                continue;
            };
            loop {
                if g.current.is_none() {
                    g.current = g.queue.pop_front_if(rcu::poll_state);
                }
                let Some(b) = g.current.as_mut() else {
                    break;
                };
                let k = (b.live() as u64).min(n - freed);
                free_part(b, k as usize);
                freed += k;
                if b.live() == 0 {
                    if let Some(b) = g.current.take() {
                        self.finish(&mut g, b);
                    }
                }
                if freed >= n {
                    break;
                }
            }
            let on = g.current.is_some();
            local.set_reclaiming(&g, on);
            if g.queue.len() > 0 && g.requested.map_or(true, rcu::poll_state) {
                g.requested = Some(rcu::start_poll());
                g.requested_at = Some(Instant::now());
                g.unrequested = 0;
            }
        }
        freed
    }

    /// Thread exit: retire every lane, empty the retired queue, then give the record back
    /// for reuse.
    pub(crate) fn retire_local(&self, local: &Local) {
        let mut g = local.lock();
        for i in 0..WAYS {
            // SAFETY: called on the owner thread, from its exit hook.
            if let Some(old) = unsafe { local.replace(&g, i, None) } {
                self.retire(&mut g, old);
            }
        }
        self.drain_retired(local, &mut g);
        drop(g);
        REGISTRY.release(local);
    }

    /// Queue a block that does not come from its owner's lane (a sweep's, or one made for a
    /// single object) to be freed after a grace period, or recycle it if it holds nothing.
    pub(crate) fn submit(&self, b: Block, hurry: bool) {
        if b.live() == 0 {
            self.recycle(b);
            return;
        }
        let pending = account(&b);
        enqueue(b, flood_hurry(pending) || hurry);
    }

    /// Give an empty block back: to its shard's reserve if that is short, else to its cache if
    /// that has room, else to the allocator. Nodes always go back to the allocator.
    pub(crate) fn recycle(&self, b: Block) {
        debug_assert_eq!(b.live(), 0);
        if b.kind() == Kind::Array {
            let sh = &self.shards[b.home() % self.shards.len()];
            {
                let mut r = lock(&sh.reserve);
                if r.len() < RESERVE {
                    r.push(b);
                    return;
                }
            }
            let mut c = lock(&sh.cache);
            if c.len() < CACHE_MAX {
                c.push(b);
                return;
            }
        }
        // Freed with no lock held.
        drop(b);
    }

    /// Arrays in the caches and in the reserves, now.
    pub(crate) fn cached(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(c, r), sh| {
            (c + lock(&sh.cache).len(), r + lock(&sh.reserve).len())
        })
    }

    /// Move what idle threads published into batches and queue them, and empty the retired
    /// queues of owners that stopped handing off (all of them, for `Sweep::Complete`).
    /// Returns whether another idle sweep is needed: a record was skipped because its owner
    /// held the lock, or an active owner's retired queue was left to it.
    pub(crate) fn sweep(&self, how: Sweep) -> bool {
        let _serial = lock(&self.sweep_lock);
        count(&COUNTERS.sweeps, 1);
        let mut acc = Accumulator::default();
        let mut buf = [ptr::null_mut::<()>(); CAP];
        let mut again = false;
        for local in REGISTRY.iter() {
            // The barrier takes every lock even when nothing looks published: an owner may be
            // handing a block off under it right now (lane.rs, "Why the hand-off happens under
            // the lock"), and its retired queue must be emptied.
            let mut g = match how {
                Sweep::Complete => local.lock(),
                Sweep::Idle => match local.try_lock() {
                    Some(g) => g,
                    None => {
                        again = true;
                        continue;
                    }
                },
            };
            if how == Sweep::Complete || g.handoffs == g.mark {
                // Nothing handed off since the last sweep: the owner will not come back for
                // these soon.
                self.drain_retired(local, &mut g);
            } else if g.queue.len() > 0 || g.current.is_some() {
                again = true;
            }
            g.mark = g.handoffs;
            drop(g);
            if how == Sweep::Idle && !local.has_published() {
                continue;
            }
            for i in 0..WAYS {
                let g = match how {
                    Sweep::Complete => local.lock(),
                    Sweep::Idle => match local.try_lock() {
                        Some(g) => g,
                        None => {
                            again = true;
                            break;
                        }
                    },
                };
                let run = local.take_published(&g, i, &mut buf);
                drop(g);
                if let Some(run) = run {
                    count(&COUNTERS.swept, run.n as u64);
                    self.deliver(&mut acc, run, &buf[..run.n]);
                }
            }
        }
        for b in acc.blocks.iter_mut().filter_map(Option::take) {
            self.submit(b, true);
        }
        again
    }

    /// Put a run a sweep took into the accumulator's block of its type (merging the leftovers
    /// of many idle threads into few batches), queueing blocks as they fill.
    fn deliver(&self, acc: &mut Accumulator, run: Run, mut ptrs: &[*mut ()]) {
        while !ptrs.is_empty() {
            let j = match acc.find(run.key.ty) {
                Some(j) => j,
                None => {
                    let j = match acc.blocks.iter().position(Option::is_none) {
                        Some(j) => j,
                        None => {
                            if let Some(b) = acc.blocks[0].take() {
                                self.submit(b, true);
                            }
                            0
                        }
                    };
                    match self.take_block(sys::current_cpu()) {
                        Some(mut b) => {
                            b.set_key(run.key);
                            acc.blocks[j] = Some(b);
                            j
                        }
                        None => {
                            // Nothing to copy into: one callback record per object, which
                            // needs no allocation of ours.
                            for &p in ptrs {
                                submit_one(p, run.key);
                            }
                            return;
                        }
                    }
                }
            };
            let full = match acc.blocks[j].as_mut() {
                Some(b) => {
                    while let Some((&p, rest)) = ptrs.split_first() {
                        if !b.push(p) {
                            break;
                        }
                        ptrs = rest;
                    }
                    b.is_full()
                }
                None => false,
            };
            if full {
                if let Some(b) = acc.blocks[j].take() {
                    self.submit(b, true);
                }
            }
        }
    }

    /// The background thread: idle sweeps when armed, refills when asked.
    fn background(&'static self) {
        // Its sweeps queue blocks with `rcu::call` under other threads' lane locks.
        rcu::prewarm();
        loop {
            if self.wait_for_work() {
                lane::disarm(&CTL, self.mode);
                if self.sweep(Sweep::Idle) {
                    // A busy record was skipped, or an active owner still has retired blocks:
                    // come back, in case it goes quiet now.
                    self.arm();
                }
            }
            self.refill();
        }
    }

    /// Sleep until a sweep is due (returns `true`) or a refill is asked for (`false`).
    fn wait_for_work(&self) -> bool {
        let mut w = lock(&self.wake);
        loop {
            let now = Instant::now();
            let due = w.deadline.is_some_and(|d| d <= now);
            if due || w.refill {
                if due {
                    w.deadline = None;
                }
                w.refill = false;
                return due;
            }
            w = match w.deadline {
                Some(d) => match self.wake_cv.wait_timeout(w, d - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                },
                None => match self.wake_cv.wait(w) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                },
            };
        }
    }

    /// Top every reserve up to `RESERVE` and every cache up to `CACHE_TARGET`, allocating with
    /// no lock held. Stops at the first allocation failure (the next request tries again).
    fn refill(&self) {
        // Relaxed: see request_refill.
        self.refill_requested.store(false, Ordering::Relaxed);
        for sh in self.shards.iter() {
            for (list, want) in [(&sh.reserve, RESERVE), (&sh.cache, CACHE_TARGET)] {
                while lock(list).len() < want {
                    match Block::alloc(Kind::Array) {
                        Ok(b) => lock(list).push(b),
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// A sweep's open blocks, one per type met (at most `WAYS`; a further type evicts the first).
#[derive(Default)]
struct Accumulator {
    blocks: [Option<Block>; WAYS],
}

impl Accumulator {
    fn find(&self, ty: TypeId) -> Option<usize> {
        self.blocks
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.ty() == ty && !b.is_full()))
    }
}

/// Account a block leaving a lane: its objects are queued, its bytes pending. Returns the
/// pending total.
fn account(b: &Block) -> u64 {
    count(&COUNTERS.handed, b.live() as u64);
    count(&COUNTERS.batches, 1);
    add_pending(b.pending_bytes())
}

/// Hand an accounted block to the callback engine: one callback frees it after a grace
/// period. The closure is one pointer, stored without allocating.
fn enqueue(b: Block, hurry: bool) {
    let batch = Batch(b);
    // Never runs callbacks here: we may hold a lane lock.
    rcu::call_internal(move || batch.free(), hurry);
}

/// Free the first `n` objects (`usize::MAX`: all) of a retired block now, on this thread (the accounting for
/// them included; the block's own bytes are the caller's).
///
/// The caller has checked that the block's cookie expired: a full grace period began after it
/// was retired, which was after each of its objects was handed to kvfree. Used only for types
/// without drop glue, so no user code runs.
fn free_part(b: &mut Block, n: usize) {
    debug_assert!(!b.drops() && rcu::poll_state(b.cookie()));
    let n = n.min(b.live());
    // SAFETY: the grace period is over (the caller's check, above); the block holds one type
    // (its key) and we are its only holder.
    let panic = unsafe { b.free_prefix(n) };
    count(&COUNTERS.freed, n as u64);
    sub_pending((n * b.obj_size()) as u64);
    if let Some(p) = panic {
        // Only a panicking allocator could get here (no drop glue).
        std::panic::resume_unwind(p);
    }
}

/// A block queued for freeing; runs as an RCU callback.
struct Batch(Block);

impl Batch {
    fn free(self) {
        let mut b = self.0;
        let n = b.live() as u64;
        let bytes = b.pending_bytes();
        // SAFETY: we run as an RCU callback queued by `submit`, so a full grace period began
        // after the submit; every object in the block was handed to kvfree before it (its
        // owner's store-release of `tail`, read by the hand-off or a sweep with Acquire, or the
        // owner's own program order), so no reader can still reach any of them. The block
        // holds one type (its key), and this is the block's only holder.
        let panic = unsafe { b.free_objects() };
        count(&COUNTERS.freed, n);
        sub_pending(bytes);
        match started() {
            Some(st) => st.recycle(b),
            None => drop(b),
        }
        if let Some(p) = panic {
            // The callback engine catches, counts and reports it; the batch is complete.
            std::panic::resume_unwind(p);
        }
    }
}

/// An object pointer on its way to a callback worker.
struct SendPtr(*mut ());
// SAFETY: it points to a `T: Send` (kvfree's bound), exclusively ours to free.
unsafe impl Send for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut () {
        self.0
    }
}

/// Queue one object with its own callback record: the last non-blocking resort, which needs
/// no block and no allocation of ours (the record lives in the calling thread's callback ring).
pub(crate) fn submit_one(p: *mut (), key: Key) {
    count(&COUNTERS.callback, 1);
    queue_alone(p, key, true);
}

/// The chicken switch (`GRACE_PENDING=off`): every object is queued alone, as a plain lazy
/// RCU callback, and freed by it after the grace period.
pub(crate) fn submit_unbatched(p: *mut (), key: Key) {
    queue_alone(p, key, false);
}

/// Queue one object as an RCU callback record of its own that frees it, counted as handed and
/// pending until it runs.
fn queue_alone(p: *mut (), key: Key, hurry: bool) {
    count(&COUNTERS.handed, 1);
    let (free, obj_size) = (key.free, key.obj_size);
    add_pending(obj_size as u64);
    let p = SendPtr(p);
    // Three words (pointer, routine, size): stored inline in the callback record.
    rcu::call_internal(
        move || {
            // SAFETY: as in Batch::free: a grace period began after this call, which came after
            // the object was handed to kvfree; `free` is the object's own routine.
            let panic = unsafe { free(&[p.get()]) };
            count(&COUNTERS.freed, 1);
            sub_pending(obj_size as u64);
            if let Some(p) = panic {
                std::panic::resume_unwind(p);
            }
        },
        hurry,
    );
}

/// Free one object now, after a synchronous grace period: the fallback outside read-side
/// sections when no block could be had. Re-raises a panic of its destructor.
pub(crate) fn free_after_synchronize(p: *mut (), key: Key) {
    count(&COUNTERS.sync_gp, 1);
    count(&COUNTERS.handed, 1);
    rcu::synchronize();
    // SAFETY: `synchronize` began after the object was handed to kvfree (program order on this
    // thread) and has returned, so no reader can still reach it; `free` is its routine.
    let panic: Option<Panic> = unsafe { (key.free)(&[p]) };
    count(&COUNTERS.freed, 1);
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
}
