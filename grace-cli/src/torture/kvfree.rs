//! `grace torture kvfree`: the pipeline check through `grace::kvfree`, under
//! allocation-failure injection.
//!
//! The pipeline, the reader's check and the writer are the parent module's (see [`super`]);
//! here every removed element is handed to `kvfree` as a small *token* object naming it, and
//! the element is freed (marked, back to the free list: [`Pipeline::release`]) exactly when
//! `kvfree` frees the token. Readers never touch the token, only the element it names, so a
//! library bug shows up as a marked element, never as a read of freed memory.
//!
//! # Two kinds of token, two paths through `kvfree`
//!
//! * [`Tracked`] has drop glue: its `Drop` releases the element. Such objects go to the
//!   callback engine (one RCU callback per array) and are dropped by a worker.
//! * [`Canary`] has **no** drop glue, so `kvfree` takes its other path: the owning thread frees
//!   the array itself, inside a later `kvfree`, once its cookie has expired (or a sweep or
//!   `kvfree_barrier` does). Nothing runs when such an object is freed except the allocator, so
//!   the `grace` binary's global allocator ([`CanaryWatch`]) recognizes a canary's deallocation
//!   (its layout, 256 bytes aligned to 256, is used by nothing else in the binary on the
//!   platforms grace runs on (crossbeam's `CachePadded` has it on s390x), and it carries a magic
//!   word) and releases the element it names, before the memory goes back to the system
//!   allocator.
//!
//! # What the writer does
//!
//! It rotates ([`ROTATION`]) through `kvfree` of a `Tracked`, `kvfree_raw` of one, `kvfree` of a
//! `Canary`, `kvfree` from inside a read-side section (where `kvfree` must never wait), and
//! `kvfree` followed by `kvfree_barrier` (the element must be released when it returns). After
//! every update it also `kvfree`s [`JUNK_PER_UPDATE`] unpublished objects of every kind
//! (`Tracked` and `Canary` junk, counted when freed, and plain `[u8; 64]` boxes), so that
//! arrays fill up and get handed off, allocations happen (and fail), and backpressure can
//! engage. Readers `kvfree` junk from inside their sections too, and are replaced one at a time
//! every half second (thread churn: an exiting thread's lanes must be handed off, not lost).
//!
//! # Allocation failures
//!
//! One in `--fail-one-in` (50 by default) of grace's fallible allocations fails, on every
//! thread, for the whole run (`grace::alloc::inject_globally`). Since `kvfree` rarely allocates
//! in a steady state (emptied arrays are cached and reused), every [`OOM_EVERY`] updates the
//! writer also starts an *out-of-memory episode* (unless `--fail-one-in 0`): a short-lived
//! helper thread (its lanes are empty, so each new type needs an array) kvfrees one object of
//! each of five types under a thread-local failure plan, with the shard caches treated as
//! empty (`kvfree::testing::avoid`), walking down the fallback ladder: the emergency reserve,
//! a node, a synchronous grace period outside a section, and inside a section the bounded
//! retries and the single-object callback. The report gives the failures injected and
//! `kvfree::stats()`'s fallback counters (and backpressure waits).
//!
//! # Nothing lost
//!
//! After the run and a final `kvfree_barrier`: every element handed over was released exactly
//! once (a second release is an error, and every element must be back on the free list), every
//! junk object was freed (the counts of `Tracked` drops and canary deallocations match what was
//! queued), and `kvfree::stats()` shows as many objects freed as queued during the run, none
//! pending.
//!
//! The hidden `--inject-early-free` option makes the writer drop each token at once instead of
//! handing it to `kvfree` (alternating both kinds): the check must fire.

use super::{
    control, drain, dwell, histogram, join, linger, queue_exit_callback, read_until, spawn,
    FailureInjection, Host, Mode, Options, Pipeline, ReaderCounts, Readers, Rng, Totals, Verdict,
    Writer,
};
use grace::{kvfree, rcu, Rcu};
use indicatif::ProgressBar;
use serde::Serialize;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The default reader count of `torture kvfree`: the number of CPUs, at least 2.
pub fn default_readers() -> usize {
    grace::sys::num_cpus().max(2)
}

/// The default `--fail-one-in` of the deferral tortures.
pub const DEFAULT_FAIL_ONE_IN: u32 = 50;

/// Unpublished objects the writer kvfrees after each update (of each kind in turn).
const JUNK_PER_UPDATE: u64 = 12;

/// The writer's rotation: every way into `kvfree`; the canary path twice, since it is the
/// path most objects (those without drop glue) take.
const ROTATION: &[Mode] = &[
    Mode::Kvfree,
    Mode::KvfreeNoDrop,
    Mode::KvfreeRaw,
    Mode::KvfreeInSection,
    Mode::KvfreeNoDrop,
    Mode::KvfreeBarrier,
];

/// A token's `idx` when it names no element (junk).
const JUNK: usize = usize::MAX;

/// Updates between two out-of-memory episodes (see the module docs).
pub const OOM_EVERY: u64 = 64;

/// Everything the threads share.
struct Shared {
    /// This very value, for the tokens made from `&self` (each holds an `Arc` of it).
    me: Weak<Shared>,
    p: Pipeline,
    /// `Tracked` junk queued and dropped.
    tracked_junk_queued: AtomicU64,
    tracked_junk_dropped: AtomicU64,
    /// Canary junk queued (their frees are counted by the allocator, [`CANARY_JUNK_FREED`]).
    canary_junk_queued: AtomicU64,
    /// Plain `[u8; 64]` boxes queued (counted only by `kvfree::stats()`).
    plain_junk_queued: AtomicU64,
    /// `kvfree` calls made from inside read-side sections (readers and writer).
    in_section: AtomicU64,
    /// Barrier checks made, and the longest `kvfree_barrier()` among them, in nanoseconds.
    barrier_checks: AtomicU64,
    max_barrier_ns: AtomicU64,
    /// Out-of-memory episodes run.
    oom_episodes: AtomicU64,
    /// Whether episodes run (allocation failures are injected).
    oom: bool,
}

/// A token with drop glue: dropping it releases the element it names (or counts junk).
struct Tracked {
    s: Arc<Shared>,
    idx: usize,
    generation: u64,
    /// Makes the object 64 bytes, a typical small allocation.
    _fill: [u64; 5],
}

impl Tracked {
    fn new(s: &Arc<Shared>, idx: usize, generation: u64) -> Box<Tracked> {
        Box::new(Tracked {
            s: s.clone(),
            idx,
            generation,
            _fill: [generation; 5],
        })
    }

    fn junk(s: &Arc<Shared>) -> Box<Tracked> {
        s.tracked_junk_queued.fetch_add(1, Ordering::Relaxed);
        Tracked::new(s, JUNK, 0)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.idx == JUNK {
            self.s.tracked_junk_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.s.p.release(self.idx, self.generation);
        }
    }
}

/// A token without drop glue: its *deallocation* releases the element it names, seen by
/// [`CanaryWatch`]. 256 bytes aligned to 256: a layout nothing else in the binary uses.
#[repr(C, align(256))]
pub struct Canary {
    magic: u64,
    idx: u64,
    generation: u64,
    fill: [u64; 29],
}

/// The first word of every canary.
const CANARY_MAGIC: u64 = 0x6b76_6672_6565_2121;

/// The pipeline whose elements canaries name, while a `torture kvfree` runs (null otherwise).
static CANARY_TARGET: AtomicPtr<Pipeline> = AtomicPtr::new(ptr::null_mut());
/// Junk canaries deallocated, ever.
static CANARY_JUNK_FREED: AtomicU64 = AtomicU64::new(0);
/// Element canaries deallocated while no pipeline was registered: an element that outlived
/// its run (an error).
static CANARY_ORPHANS: AtomicU64 = AtomicU64::new(0);

impl Canary {
    fn new(idx: usize, generation: u64) -> Box<Canary> {
        Box::new(Canary {
            magic: CANARY_MAGIC,
            idx: idx as u64,
            generation,
            fill: [generation; 29],
        })
    }

    fn junk(s: &Shared) -> Box<Canary> {
        s.canary_junk_queued.fetch_add(1, Ordering::Relaxed);
        Canary::new(JUNK, 0)
    }

    /// Called by [`CanaryWatch::dealloc`] for every block of the canary layout, before it is
    /// freed.
    ///
    /// # Safety
    ///
    /// `block` is valid for reads of a `Canary` (a live allocation of that layout, which only
    /// `Box<Canary>` makes in this binary).
    unsafe fn freeing(block: *const Canary) {
        // SAFETY: guaranteed by the caller; every field is a plain integer, initialized by
        // `Canary::new`.
        let (magic, idx, generation) = unsafe {
            (
                ptr::addr_of!((*block).magic).read(),
                ptr::addr_of!((*block).idx).read(),
                ptr::addr_of!((*block).generation).read(),
            )
        };
        if magic != CANARY_MAGIC {
            return;
        }
        if idx as usize == JUNK {
            CANARY_JUNK_FREED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Acquire: pairs with the Release store that registered the pipeline.
        let target = CANARY_TARGET.load(Ordering::Acquire);
        // SAFETY: a registered pipeline stays alive until it is unregistered, which happens
        // only after a kvfree_barrier() that freed every canary naming it (see `run`).
        match unsafe { target.as_ref() } {
            Some(p) => {
                p.release(idx as usize, generation);
            }
            None => {
                CANARY_ORPHANS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `grace` binary's global allocator: the system allocator, plus one comparison per
/// deallocation that recognizes a [`Canary`] being freed (see the module docs). The cost is a
/// compare-and-branch on the layout's alignment, never taken outside `torture kvfree`.
pub struct CanaryWatch;

// SAFETY: every method forwards to the system allocator with the same arguments; `dealloc`
// only reads the block (still allocated) before forwarding.
unsafe impl GlobalAlloc for CanaryWatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() == std::mem::align_of::<Canary>()
            && layout.size() == std::mem::size_of::<Canary>()
        {
            // SAFETY: `ptr` is a live block of the canary layout (the caller's guarantee),
            // which only `Box<Canary>` allocates in this binary.
            unsafe { Canary::freeing(ptr.cast::<Canary>()) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (canaries are never reallocated).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl Host for Shared {
    type F = Rcu;

    fn pipeline(&self) -> &Pipeline {
        &self.p
    }

    fn flavor(&self) -> &Rcu {
        &Rcu
    }

    fn wait_own(&self, mode: Mode, _rng: &mut Rng) {
        self.p
            .api_error(format!("mode {} is not a kvfree mode", mode.name()));
    }

    fn retire(&self, mode: Mode, idx: usize, generation: u64) {
        let s = self.arc();
        match mode {
            Mode::Kvfree => kvfree(Tracked::new(&s, idx, generation)),
            Mode::KvfreeRaw => {
                let raw = Box::into_raw(Tracked::new(&s, idx, generation));
                // SAFETY: `raw` comes from Box::into_raw, was never published (readers see
                // the element, not the token) and is not used again.
                unsafe { kvfree::kvfree_raw(raw) };
            }
            Mode::KvfreeNoDrop => kvfree(Canary::new(idx, generation)),
            Mode::KvfreeInSection => {
                let g = rcu::read_lock();
                if generation % 2 == 0 {
                    kvfree(Tracked::new(&s, idx, generation));
                } else {
                    kvfree(Canary::new(idx, generation));
                }
                self.in_section.fetch_add(1, Ordering::Relaxed);
                drop(g);
            }
            Mode::KvfreeBarrier => {
                if generation % 2 == 0 {
                    kvfree(Tracked::new(&s, idx, generation));
                } else {
                    kvfree(Canary::new(idx, generation));
                }
                let t = Instant::now();
                grace::kvfree_barrier();
                let took = t.elapsed().as_nanos() as u64;
                self.max_barrier_ns.fetch_max(took, Ordering::Relaxed);
                self.barrier_checks.fetch_add(1, Ordering::Relaxed);
                if !self.p.is_released(idx, generation) {
                    self.p.api_error(format!(
                        "kvfree_barrier() returned before the object kvfreed just before it was freed (element {idx})"
                    ));
                }
            }
            Mode::EarlyFree => {
                // The deliberate bug: free the token now, through the very code that releases
                // it after a grace period.
                if generation % 2 == 0 {
                    drop(black_box(Tracked::new(&s, idx, generation)));
                } else {
                    drop(black_box(Canary::new(idx, generation)));
                }
            }
            other => self
                .p
                .api_error(format!("mode {} is not a kvfree mode", other.name())),
        }
    }

    fn inject_mode(&self) -> Mode {
        Mode::EarlyFree
    }

    fn after_update(&self, n: u64) {
        let s = self.arc();
        if self.oom && n % OOM_EVERY == OOM_EVERY - 1 {
            let s2 = s.clone();
            join(spawn("kvfree-oom", move || oom_episode(&s2)), "kvfree oom");
        }
        for i in 0..JUNK_PER_UPDATE {
            match (n + i) % 3 {
                0 => kvfree(Tracked::junk(&s)),
                1 => kvfree(Canary::junk(&s)),
                _ => {
                    s.plain_junk_queued.fetch_add(1, Ordering::Relaxed);
                    kvfree(Box::new([n as u8; 64]));
                }
            }
        }
    }

    fn barrier_all(&self) {
        grace::kvfree_barrier();
        rcu::barrier();
    }
}

impl Shared {
    /// An `Arc` of this shared state (it lives in one while threads run).
    fn arc(&self) -> Arc<Shared> {
        match self.me.upgrade() {
            Some(s) => s,
            None => super::fail("the kvfree torture's shared state is gone"),
        }
    }
}

/// An out-of-memory episode, on a fresh thread (see the module docs): one object per rung of
/// kvfree's fallback ladder, each of a type this thread has not used yet, so that each needs a
/// new array.
fn oom_episode(s: &Arc<Shared>) {
    use grace::alloc::{inject, FailurePlan};
    use grace::kvfree::testing::avoid;
    s.oom_episodes.fetch_add(1, Ordering::Relaxed);
    // Register the thread first (its record is allocated on first use), with a type of its
    // own.
    s.plain_junk_queued.fetch_add(1, Ordering::Relaxed);
    kvfree(Box::new([7u16; 32]));
    {
        // The array allocation fails: the emergency reserve.
        let (_cache, _oom) = (avoid(true, false), inject(FailurePlan::Nth(1)));
        kvfree(Tracked::junk(s));
    }
    {
        // The array fails and the reserve is out of reach: a node (its allocation succeeds).
        let (_cache, _oom) = (avoid(true, true), inject(FailurePlan::Nth(1)));
        kvfree(Canary::junk(s));
    }
    {
        // Nothing at all, outside a section: a synchronous grace period.
        let (_cache, _oom) = (avoid(true, true), inject(FailurePlan::AllAfter(0)));
        s.plain_junk_queued.fetch_add(1, Ordering::Relaxed);
        kvfree(Box::new([9u8; 64]));
    }
    {
        // Nothing at all, inside a section: retries, then a callback of its own.
        let (_cache, _oom) = (avoid(true, true), inject(FailurePlan::AllAfter(0)));
        let g = rcu::read_lock();
        s.plain_junk_queued.fetch_add(1, Ordering::Relaxed);
        kvfree(Box::new([11u64; 4]));
        s.in_section.fetch_add(1, Ordering::Relaxed);
        drop(g);
    }
}

/// One reader thread: checked sections, some of which `kvfree` junk from inside; then one
/// callback queued from the exiting thread.
fn reader(s: &Arc<Shared>, exit: &AtomicBool, salt: u64) {
    let mut rng = Rng::seeded(salt);
    let linger = linger(s.p.inject);
    read_until(&s.p, exit, |c| read_once(s, &mut rng, c, linger));
    queue_exit_callback(s);
}

/// One read-side section of the pipeline check.
#[inline]
fn read_once(s: &Arc<Shared>, rng: &mut Rng, c: &mut ReaderCounts, linger: (u64, Duration)) {
    let r = rng.next();
    let guard = rcu::read_lock();
    let look = s.p.look();
    dwell(r, linger);
    if (r >> 4) & 31 == 0 {
        // kvfree inside a section: it must not wait for a grace period here.
        if r & (1 << 9) == 0 {
            kvfree(Tracked::junk(s));
        } else {
            kvfree(Canary::junk(s));
        }
        s.in_section.fetch_add(1, Ordering::Relaxed);
    }
    s.p.verify(look, c);
    drop(guard);
}

/// `kvfree::stats()` figures of a run: counters as differences over the run, state after it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KvfreeFigures {
    /// Objects handed to `kvfree` during the run (all threads, junk included).
    pub objects_queued: u64,
    /// Objects freed during the run (after the final barrier).
    pub objects_freed: u64,
    /// Objects still pending after the final barrier (must be 0).
    pub objects_pending_after: u64,
    /// The most bytes pending at any hand-off (process-wide peak so far).
    pub peak_bytes_pending: u64,
    /// Arrays handed off to wait for a grace period.
    pub batches: u64,
    /// Arrays taken from a shard's cache.
    pub arrays_from_cache: u64,
    /// Arrays allocated.
    pub arrays_allocated: u64,
    /// Idle sweeps run.
    pub sweeps: u64,
    /// Objects sweeps took from lanes.
    pub objects_swept: u64,
    /// Fallback: an array from the emergency reserve.
    pub fallback_reserve: u64,
    /// Fallback: a small node instead of an array.
    pub fallback_node: u64,
    /// Fallback: a synchronous grace period, then an immediate free.
    pub fallback_sync_gp: u64,
    /// Fallback: bounded retries inside a read-side section.
    pub fallback_retry: u64,
    /// Fallback: one object queued alone as a callback.
    pub fallback_callback: u64,
    /// Backpressure waits of flooding threads.
    pub backpressure_waits: u64,
}

impl KvfreeFigures {
    fn between(a: &kvfree::Stats, b: &kvfree::Stats) -> KvfreeFigures {
        KvfreeFigures {
            objects_queued: b.objects_queued - a.objects_queued,
            objects_freed: b.objects_freed - a.objects_freed,
            objects_pending_after: b.objects_pending,
            peak_bytes_pending: b.peak_bytes_pending,
            batches: b.batches - a.batches,
            arrays_from_cache: b.arrays_from_cache - a.arrays_from_cache,
            arrays_allocated: b.arrays_allocated - a.arrays_allocated,
            sweeps: b.sweeps - a.sweeps,
            objects_swept: b.objects_swept - a.objects_swept,
            fallback_reserve: b.fallback_reserve - a.fallback_reserve,
            fallback_node: b.fallback_node - a.fallback_node,
            fallback_sync_gp: b.fallback_sync_gp - a.fallback_sync_gp,
            fallback_retry: b.fallback_retry - a.fallback_retry,
            fallback_callback: b.fallback_callback - a.fallback_callback,
            backpressure_waits: b.backpressure_waits - a.backpressure_waits,
        }
    }

    /// The fallbacks taken, on one line.
    pub(crate) fn fallbacks(&self) -> String {
        format!(
            "reserve {}, node {}, sync GP {}, in-section retry {}, lone callback {}; backpressure waits {}",
            self.fallback_reserve,
            self.fallback_node,
            self.fallback_sync_gp,
            self.fallback_retry,
            self.fallback_callback,
            self.backpressure_waits
        )
    }
}

/// Junk objects: queued and freed, per kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Junk {
    /// `Tracked` junk (drop glue) queued.
    pub drop_glue_queued: u64,
    /// ... and dropped (must match).
    pub drop_glue_dropped: u64,
    /// Canary junk (no drop glue) queued.
    pub no_drop_glue_queued: u64,
    /// ... and deallocated (must match).
    pub no_drop_glue_freed: u64,
    /// Plain `[u8; 64]` boxes queued (counted by `kvfree::stats()` only).
    pub plain_queued: u64,
}

/// The result of a run; also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What every torture reports (`flavor` is `"kvfree"`).
    #[serde(flatten)]
    pub totals: Totals,
    /// `"on"`, or `"off"` under the chicken switch (`GRACE_PENDING=off`: one callback per
    /// object, no batching; see `grace::pending::set_batching`).
    pub batching: &'static str,
    /// Reader threads alive at a time.
    pub readers: usize,
    /// Updates per way into `kvfree`.
    pub updates_by_mode: BTreeMap<&'static str, u64>,
    /// Elements released by `kvfree` (each exactly once).
    pub released: u64,
    /// `kvfree` calls made inside read-side sections.
    pub kvfree_in_section: u64,
    /// `kvfree_barrier` checks made by the writer.
    pub barrier_checks: u64,
    /// Out-of-memory episodes run (each walks the fallback ladder once).
    pub oom_episodes: u64,
    /// Junk objects, queued and freed.
    pub junk: Junk,
    /// One in this many fallible allocations failed on purpose (0: off).
    pub fail_one_in: u32,
    /// Allocation failures injected during the run.
    pub injected_failures: u64,
    /// `kvfree::stats()` over the run.
    pub kvfree: KvfreeFigures,
    /// RCU grace periods completed during the run.
    pub grace_periods: u64,
    /// rcutorture's "Free-Block Circulation".
    pub free_block_circulation: Vec<u64>,
    /// The longest `kvfree_barrier()` of the writer's barrier checks, in milliseconds.
    pub max_barrier_ms: f64,
}

/// Run the torture test, showing progress on `bar`, whose length should be the duration in
/// milliseconds (see [`super::progress_bar`]).
pub fn run(opts: &Options, bar: &ProgressBar) -> Report {
    let started_at = Instant::now();
    let s = Arc::new_cyclic(|me| Shared {
        me: me.clone(),
        p: Pipeline::new(opts.inject_early_free),
        tracked_junk_queued: AtomicU64::new(0),
        tracked_junk_dropped: AtomicU64::new(0),
        canary_junk_queued: AtomicU64::new(0),
        plain_junk_queued: AtomicU64::new(0),
        in_section: AtomicU64::new(0),
        barrier_checks: AtomicU64::new(0),
        max_barrier_ns: AtomicU64::new(0),
        oom_episodes: AtomicU64::new(0),
        oom: opts.fail_one_in != 0,
    });
    // Settle what earlier users of kvfree left (the tour runs benchmarks in this process).
    grace::kvfree_barrier();
    let (before, rcu_before) = (kvfree::stats(), rcu::stats());
    let (canary_junk_before, orphans_before) = (
        CANARY_JUNK_FREED.load(Ordering::Relaxed),
        CANARY_ORPHANS.load(Ordering::Relaxed),
    );
    // Release: the pipeline is initialized before any canary naming it can be freed.
    CANARY_TARGET.store(ptr::from_ref(&s.p).cast_mut(), Ordering::Release);
    let injection = FailureInjection::start(opts.fail_one_in);
    let readers = opts.readers.max(1);

    let s2 = s.clone();
    let mut pool = Readers::start("kvfree-reader", readers, move |exit, salt| {
        reader(&s2, exit, salt)
    });
    let writer = Writer::new(s.clone(), ROTATION, 0);
    let writer = spawn("kvfree-writer", move || writer.run());

    let duration = control(opts.duration, Duration::ZERO, bar, &mut [&mut pool], || {
        format!(
            "{} reads, {} updates, {} released, {} errors",
            crate::ui::si(s.p.reads() as f64),
            crate::ui::si(s.p.updates.load(Ordering::Relaxed) as f64),
            crate::ui::si(s.p.released() as f64),
            s.p.errors()
        )
    });

    // Stop readers first (the pipe histogram is theirs), then the writer.
    pool.stop();
    s.p.stopping.store(true, Ordering::Relaxed);
    let writer = join(writer, "writer");

    // Everything kvfreed comes back (still under injection), then check the counts.
    let mut lost = drain(&*s);
    let injected = injection.finish();
    grace::kvfree_barrier();
    let after = kvfree::stats();
    // Every canary naming the pipeline has been freed: it may go.
    CANARY_TARGET.store(ptr::null_mut(), Ordering::Release);

    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let junk = Junk {
        drop_glue_queued: load(&s.tracked_junk_queued),
        drop_glue_dropped: load(&s.tracked_junk_dropped),
        no_drop_glue_queued: load(&s.canary_junk_queued),
        no_drop_glue_freed: load(&CANARY_JUNK_FREED) - canary_junk_before,
        plain_queued: load(&s.plain_junk_queued),
    };
    let figures = KvfreeFigures::between(&before, &after);
    let mut missing = |n: u64, what: String| {
        if n > 0 {
            lost += n;
            s.p.note(|| what);
        }
    };
    missing(
        junk.drop_glue_queued.abs_diff(junk.drop_glue_dropped),
        format!(
            "{} objects with drop glue kvfreed, {} dropped after kvfree_barrier()",
            junk.drop_glue_queued, junk.drop_glue_dropped
        ),
    );
    missing(
        junk.no_drop_glue_queued.abs_diff(junk.no_drop_glue_freed),
        format!(
            "{} objects without drop glue kvfreed, {} deallocated after kvfree_barrier()",
            junk.no_drop_glue_queued, junk.no_drop_glue_freed
        ),
    );
    missing(
        figures.objects_queued.abs_diff(figures.objects_freed),
        format!(
            "kvfree::stats(): {} objects queued during the run, {} freed after kvfree_barrier()",
            figures.objects_queued, figures.objects_freed
        ),
    );
    missing(
        figures.objects_pending_after,
        format!(
            "kvfree::stats(): {} objects still pending after kvfree_barrier()",
            figures.objects_pending_after
        ),
    );
    missing(
        load(&CANARY_ORPHANS) - orphans_before,
        "canaries were freed after their run ended".to_string(),
    );

    let rcu_after = rcu::stats();
    Report {
        totals: s.p.totals(
            "kvfree",
            lost,
            duration,
            started_at,
            pool.started,
            opts.inject_early_free,
        ),
        batching: super::batching_text(),
        readers,
        updates_by_mode: writer.by_name(),
        released: s.p.released(),
        kvfree_in_section: load(&s.in_section),
        barrier_checks: load(&s.barrier_checks),
        oom_episodes: load(&s.oom_episodes),
        junk,
        fail_one_in: opts.fail_one_in,
        injected_failures: injected,
        kvfree: figures,
        grace_periods: rcu_after.grace_periods - rcu_before.grace_periods,
        free_block_circulation: s.p.circulation(),
        max_barrier_ms: load(&s.max_barrier_ns) as f64 / 1e6,
    }
}

impl Verdict for Report {
    fn passed(&self) -> bool {
        self.totals.passed()
    }

    /// The report for a person, in rcutorture's terms.
    fn human(&self) -> String {
        use crate::ui::{count, si};
        let t = &self.totals;
        let k = &self.kvfree;
        let j = &self.junk;
        let rate = |n: u64| si(n as f64 / t.duration_s.max(1e-9));
        let mut o = format!(
            "grace torture kvfree: {:.1} s, {} readers ({} reader threads in all), barrier mode {}, batching {}, {}{}\n",
            t.duration_s,
            self.readers,
            t.reader_threads_started,
            t.barrier_mode,
            self.batching,
            injection_text(self.fail_one_in, self.injected_failures),
            t.injected()
        );
        o.push_str(&t.reader_pipe_line());
        o.push_str(&format!(
            "kvfree-torture: Free-Block Circulation:  {}\n",
            histogram(&self.free_block_circulation)
        ));
        o.push_str(&format!(
            "  reads              {:>14}  ({}/s)\n",
            count(t.reads),
            rate(t.reads)
        ));
        let modes = super::modes_line(&self.updates_by_mode);
        o.push_str(&format!(
            "  updates            {:>14}  ({}/s: {modes})\n",
            count(t.updates),
            rate(t.updates)
        ));
        o.push_str(&format!(
            "  released           {:>14}  elements freed by kvfree, each once; {} barrier checks, {} kvfree calls inside sections\n",
            count(self.released),
            count(self.barrier_checks),
            count(self.kvfree_in_section)
        ));
        o.push_str(&format!(
            "  junk               {:>14}  queued: drop glue {}/{} dropped, no drop glue {}/{} deallocated, plain {}\n",
            count(j.drop_glue_queued + j.no_drop_glue_queued + j.plain_queued),
            count(j.drop_glue_dropped),
            count(j.drop_glue_queued),
            count(j.no_drop_glue_freed),
            count(j.no_drop_glue_queued),
            count(j.plain_queued)
        ));
        o.push_str(&format!(
            "  kvfree::stats()    {:>14}  objects queued, {} freed, {} pending after; {} batches, {} arrays allocated, {} from cache, {} sweeps; peak {} pending\n",
            count(k.objects_queued),
            count(k.objects_freed),
            count(k.objects_pending_after),
            count(k.batches),
            count(k.arrays_allocated),
            count(k.arrays_from_cache),
            count(k.sweeps),
            crate::ui::bytes(k.peak_bytes_pending)
        ));
        o.push_str(&format!(
            "  fallbacks          {:>14}  out-of-memory episodes; {}\n",
            count(self.oom_episodes),
            k.fallbacks()
        ));
        o.push_str(&format!(
            "  grace periods      {:>14}  (longest kvfree_barrier() {:.2} ms)\n",
            count(self.grace_periods),
            self.max_barrier_ms
        ));
        o.push_str(&t.tail(""));
        o
    }
}

/// `allocation failures: 1 in 50 (1,234 injected)`, or `no allocation failures injected`.
pub(crate) fn injection_text(one_in: u32, injected: u64) -> String {
    if one_in == 0 {
        "no allocation failures injected".into()
    } else {
        format!(
            "allocation failures: 1 in {one_in} ({} injected)",
            crate::ui::count(injected)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_have_the_watched_layout() {
        assert_eq!(std::mem::size_of::<Canary>(), 256);
        assert_eq!(std::mem::align_of::<Canary>(), 256);
        assert!(!std::mem::needs_drop::<Canary>());
        assert!(std::mem::needs_drop::<Tracked>());
        assert_eq!(std::mem::size_of::<Tracked>(), 64);
    }

    #[test]
    fn a_junk_canary_is_counted_when_freed() {
        let before = CANARY_JUNK_FREED.load(Ordering::Relaxed);
        drop(black_box(Canary::new(JUNK, 0)));
        assert!(CANARY_JUNK_FREED.load(Ordering::Relaxed) > before);
    }
}
