//! The `list` suite: a Harris–Michael sorted linked list, written once, over
//! every reclamation scheme.
//!
//! # The list
//!
//! [`List`] is the lock-free sorted list of Harris (2001) with Michael's
//! (2002) changes for hazard pointers: keys are `u64`, each node carries a
//! `u64` value and its `next` pointer is a plain [`AtomicPtr`] whose low bit
//! marks the node as logically deleted. `remove` marks the victim's `next`,
//! then tries to unlink it with one CAS on its predecessor; every traversal
//! (`find`, behind `insert`, `remove` and `get`) unlinks the marked nodes it
//! meets with a CAS and retires each node it unlinks, so a node is retired
//! exactly once, by the thread whose CAS unlinked it. Nodes are 32 bytes: key,
//! value, `next`, and one word the counting (below) uses.
//!
//! The list is generic over a small [`Reclaimer`] trait: start an operation
//! (`pin`: an RCU read-side section, an epoch pin, a seize guard, or the
//! thread's three hazard pointers), load a pointer so that its target stays
//! valid (`protect`: a plain `Acquire` load for the epoch schemes, the
//! publish–fence–validate loop for hazard pointers), and retire an unlinked
//! node. Hazard pointers also need Michael's extra validation, after
//! protecting `cur.next`, that `prev` still points to `cur` unmarked
//! ([`Reclaimer::VALIDATE`]); it is a constant, so the epoch schemes compile
//! without it. Implementations:
//!
//! * `grace-kvfree`: `grace::rcu::read_lock()` per operation, retire through
//!   `grace::kvfree::kvfree_raw` (the node has no drop glue: kvfree's fast
//!   path);
//! * `grace-call`: the same sections, retire through
//!   `grace::rcu::call(move || drop(Box::from_raw(node)))`;
//! * `crossbeam-epoch`: `crossbeam_epoch::pin()` per operation, retire through
//!   `guard.defer_destroy`;
//! * `seize`: `collector.enter()` per operation on one collector, loads
//!   through `guard.protect`, retire through `guard.defer_retire(node,
//!   reclaim::boxed)`;
//! * `haphazard`: three hazard pointers per thread from the global domain
//!   (taken once per thread, reset after every operation), retire through
//!   `Domain::retire_ptr` of the node's `Box`.
//!
//! # The measurement
//!
//! [`run_list_one`] measures one implementation at one (key range, read
//! share, thread count): the list is prefilled to half the key range with
//! random keys; then each of `threads` workers runs operations on uniformly
//! random keys, `read_pct` percent `get`, the rest half `insert` and half
//! `remove` (so the list stays about half full), checking a stop flag every
//! 32 operations. An untimed warm-up round comes first, then
//! [`TIMED_ROUNDS`] timed rounds of `duration` each; `ops_per_s` is the median
//! round's rate, with the slowest and fastest beside it.
//!
//! **Unreclaimed nodes** (retired, not yet freed) are sampled every
//! [`SAMPLE_EVERY`] by the measuring thread during the timed rounds, and the
//! peak is reported. For `grace-kvfree` the figure is the library's own
//! counter (`kvfree::stats().objects_pending`: a counting `Drop` would give the
//! node drop glue and send it down kvfree's slower callback path). For the
//! others it is counted: every retire adds one, and the node's `Drop` (run by
//! whatever frees it: the `defer_destroy`, `reclaim::boxed`, `Box` drop of each
//! library) adds one to a freed count, on per-thread cache lines of a
//! per-list [`Counts`]; retires are counted for `grace-kvfree` too. So the
//! counted rows pay one uncontended atomic add per freed node that
//! `grace-kvfree` does not: a few nanoseconds per retired node, next to
//! operations that each walk hundreds of nodes.
//!
//! After the last round the implementation is drained (`kvfree_barrier`,
//! `rcu::barrier`, crossbeam `pin().flush()` until every node is freed, seize
//! `reclaim_all`, haphazard `eager_reclaim`), and every retired node must have
//! been freed: otherwise the result's figures are `NaN` and its note says
//! `BUG`. The `grace` CLI runs each measurement in a child process of its own
//! (`grace bench list`), so that allocator state and the libraries' global
//! counters start clean.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::harness::TIMED_ROUNDS;

/// The implementations of the list suite, in run order.
///
/// # Examples
///
/// ```
/// assert!(grace_bench::list_impls().contains(&"crossbeam-epoch"));
/// ```
pub fn list_impls() -> Vec<&'static str> {
    vec![
        "grace-kvfree",
        "grace-call",
        "crossbeam-epoch",
        "seize",
        "haphazard",
    ]
}

/// The row every other is compared with, per (keys, reads, threads).
pub const LIST_REFERENCE: &str = "crossbeam-epoch";

/// The default key ranges.
pub const LIST_KEYS: [u64; 2] = [1_000, 10_000];

/// The default read shares, in percent (0: write-only).
pub const LIST_READS: [u32; 3] = [0, 50, 90];

/// How often the unreclaimed nodes are sampled during a timed round.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// Operations a worker runs between two looks at the stop flag.
const CHECK_EVERY: u64 = 32;

/// What one list measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListParams {
    /// Worker threads.
    pub threads: usize,
    /// The key range `0..keys`; the list is prefilled with `keys / 2` of them.
    pub keys: u64,
    /// The share of `get`s, in percent; the rest are half inserts, half removes.
    pub read_pct: u32,
    /// How long each round runs.
    pub duration: Duration,
}

/// What one list measurement measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// The implementation (see [`list_impls`]).
    pub impl_name: String,
    /// Worker threads.
    pub threads: usize,
    /// The key range.
    pub keys: u64,
    /// The share of `get`s, in percent.
    pub read_pct: u32,
    /// Seconds per timed round (as run).
    pub duration_s: f64,
    /// Timed rounds.
    pub rounds: usize,
    /// Operations in the timed rounds, all threads.
    pub ops: u64,
    /// Operations per second, all threads: the median timed round's; `NaN`
    /// when the measurement failed.
    pub ops_per_s: f64,
    /// The slowest timed round's rate.
    pub ops_per_s_min: f64,
    /// The fastest timed round's rate.
    pub ops_per_s_max: f64,
    /// The most nodes retired and not yet freed at any sample.
    pub peak_unreclaimed: u64,
    /// Where that figure comes from: `"library"` or `"counted"` (module docs).
    pub unreclaimed_source: String,
    /// Nodes retired in the whole run (warm-up included).
    pub retired: u64,
    /// Whether every retired node was freed after the final drain.
    pub reclaimed_all: bool,
    /// Whether the measurement had a process of its own (set by the caller
    /// that re-executed itself).
    pub isolated: bool,
    /// A caveat, or why the measurement failed.
    pub note: Option<String>,
}

impl ListResult {
    /// Whether the measurement produced figures.
    pub fn is_measured(&self) -> bool {
        self.ops_per_s.is_finite() && self.ops_per_s > 0.0
    }

    /// A result for a measurement that could not be made.
    pub fn failed(impl_name: &str, p: &ListParams, why: String) -> ListResult {
        ListResult {
            impl_name: impl_name.to_string(),
            threads: p.threads,
            keys: p.keys,
            read_pct: p.read_pct,
            duration_s: 0.0,
            rounds: 0,
            ops: 0,
            ops_per_s: f64::NAN,
            ops_per_s_min: f64::NAN,
            ops_per_s_max: f64::NAN,
            peak_unreclaimed: 0,
            unreclaimed_source: String::new(),
            retired: 0,
            reclaimed_all: false,
            isolated: false,
            note: Some(why),
        }
    }
}

// ---------------------------------------------------------------------------
// Counting retired and freed nodes.

/// Counter slots per list; a thread uses slot `id % SLOTS`.
const SLOTS: usize = 64;

/// One thread's counts, on a cache line pair of its own.
#[repr(align(128))]
struct Slot {
    retired: AtomicU64,
    freed: AtomicU64,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's counter slot, assigned on first use.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's counter slot.
#[inline]
fn slot_index() -> usize {
    THREAD_SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                // Relaxed: only a distinct number is needed.
                s.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SLOTS);
            }
            s.get()
        })
        .unwrap_or(0)
}

/// Nodes retired and freed, summed over per-thread slots. Two threads may
/// share a slot (more than [`SLOTS`] threads), so every update is an atomic
/// add; unshared, it stays on the thread's own cache line.
pub(crate) struct Counts {
    slots: Box<[Slot]>,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    retired: AtomicU64::new(0),
                    freed: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    #[inline]
    fn add_retired(&self) {
        // Relaxed: a count; readers synchronize through joins and barriers.
        self.slots[slot_index()]
            .retired
            .fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn add_freed(&self) {
        // Release: pairs with the Acquire loads in `freed`, so that whoever
        // sees every node freed may free the counts (`List`'s `Drop`) after
        // this last touch of them (each add extends the slot's release
        // sequence).
        self.slots[slot_index()]
            .freed
            .fetch_add(1, Ordering::Release);
    }

    /// Nodes freed, all threads.
    fn freed(&self) -> u64 {
        self.slots
            .iter()
            // Acquire: pairs with the Release add in `add_freed`.
            .map(|s| s.freed.load(Ordering::Acquire))
            .sum()
    }

    /// Nodes retired, all threads.
    fn retired(&self) -> u64 {
        self.slots
            .iter()
            // Relaxed: a sample, or read after the workers were joined.
            .map(|s| s.retired.load(Ordering::Relaxed))
            .sum()
    }

    /// `(retired, freed)`, all threads.
    fn totals(&self) -> (u64, u64) {
        let freed = self.freed();
        (self.retired(), freed)
    }

    /// Retired and not yet freed (0 when a sample races the other way).
    fn unreclaimed(&self) -> u64 {
        // Freed first: a node freed before the second read was retired before it.
        let freed = self.freed();
        self.retired().saturating_sub(freed)
    }
}

// ---------------------------------------------------------------------------
// Nodes.

/// The word every node carries after its `next`: a pointer to its list's
/// [`Counts`], used by [`Counted`]'s `Drop`; [`Uncounted`] carries it too,
/// so that every implementation's nodes are 32 bytes.
pub(crate) trait Tag: Send + Sync + Sized + 'static {
    /// Whether dropping the node counts it as freed.
    const COUNTED: bool;
    fn new(counts: *const Counts) -> Self;
}

/// Counts the node as freed when it is dropped.
pub(crate) struct Counted(*const Counts);

/// No drop glue: kvfree's fast path.
pub(crate) struct Uncounted(#[allow(dead_code)] *const Counts);

// SAFETY: `Counted` only reads its `Counts` (atomically) from `Drop`, on
// whatever thread frees the node; `Counts` is `Sync` and outlives every node
// (see `List`'s `Drop`).
unsafe impl Send for Counted {}
// SAFETY: as above; `&Counted` gives no access to the pointer.
unsafe impl Sync for Counted {}
// SAFETY: the pointer is never dereferenced.
unsafe impl Send for Uncounted {}
// SAFETY: as above.
unsafe impl Sync for Uncounted {}

impl Tag for Counted {
    const COUNTED: bool = true;
    fn new(counts: *const Counts) -> Self {
        Counted(counts)
    }
}

impl Tag for Uncounted {
    const COUNTED: bool = false;
    fn new(counts: *const Counts) -> Self {
        Uncounted(counts)
    }
}

impl Drop for Counted {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `List` frees its `Counts` only when every node counted in
        // it has been freed, this one included (it is being freed now).
        unsafe { (*self.0).add_freed() };
    }
}

/// A list node: 32 bytes.
#[repr(C)]
pub(crate) struct Node<C> {
    key: u64,
    value: u64,
    /// The successor; the low bit set marks *this* node as deleted.
    next: AtomicPtr<Node<C>>,
    tag: C,
}

const MARK: usize = 1;

#[inline]
fn is_marked<T>(p: *mut T) -> bool {
    p as usize & MARK != 0
}

// Byte offsets rather than `map_addr` (Rust 1.84; the workspace supports 1.80), so that the
// pointers keep their provenance (Miri's strict provenance accepts them).
#[inline]
fn marked<T>(p: *mut T) -> *mut T {
    debug_assert!(!is_marked(p));
    p.cast::<u8>().wrapping_add(MARK).cast()
}

#[inline]
fn unmarked<T>(p: *mut T) -> *mut T {
    p.cast::<u8>().wrapping_sub(p as usize & MARK).cast()
}

// ---------------------------------------------------------------------------
// Reclaimers.

/// A memory-reclamation scheme, as the list uses it.
///
/// # Safety
///
/// Implementations promise: a node loaded through [`Reclaimer::protect`] in
/// a guard stays allocated while the guard lives (for hazard pointers: while
/// its slot is not reused, and provided the list validates as
/// [`Reclaimer::VALIDATE`] asks), and a node passed to [`Reclaimer::retire`]
/// is freed, once, as a `Box<Node<Tag>>`, after every guard that could have
/// loaded it is gone.
pub(crate) unsafe trait Reclaimer: Sync + Sized {
    /// The nodes' tag: whether their `Drop` counts.
    type Tag: Tag;
    /// Per-thread state (hazard pointers), made once per worker thread.
    type Local;
    /// One operation's protection.
    type Guard<'a>
    where
        Self: 'a;
    /// Whether the list must check, after protecting `cur.next`, that `prev`
    /// still points to `cur` unmarked (hazard pointers: Michael 2002).
    const VALIDATE: bool = false;

    fn local(&self) -> Self::Local;

    fn pin<'a>(&'a self, local: &'a mut Self::Local) -> Self::Guard<'a>;

    /// Loads `src` (which may be marked) so that the node it points to stays
    /// allocated while `g` lives, using protection slot `slot` (0..3).
    fn protect(
        g: &mut Self::Guard<'_>,
        slot: usize,
        src: &AtomicPtr<Node<Self::Tag>>,
    ) -> *mut Node<Self::Tag>;

    /// Hands an unlinked node over to be freed when no guard can reach it.
    ///
    /// # Safety
    ///
    /// `node` came from `Box::into_raw`, is unlinked (no thread that starts
    /// an operation afterwards can reach it), and is retired once.
    unsafe fn retire(g: &mut Self::Guard<'_>, node: *mut Node<Self::Tag>);

    /// The library's own count of retired, unfreed nodes, if it has one (and
    /// the list uses it instead of the counts): `(pending, freed so far)`.
    fn library_counts(&self) -> Option<(u64, u64)> {
        None
    }

    /// Makes every retired node be freed (no worker is running); gives up
    /// after `timeout` where the scheme has no barrier.
    fn drain(&self, counts: &Counts, timeout: Duration) -> Result<(), String>;
}

/// grace RCU sections; retire through `kvfree_raw`.
pub(crate) struct GraceKvfree;

// SAFETY: nodes are loaded inside an RCU read-side section, and `kvfree_raw`
// frees them as a `Box` after a grace period, so after every section that
// could have loaded them.
unsafe impl Reclaimer for GraceKvfree {
    type Tag = Uncounted;
    type Local = ();
    type Guard<'a> = grace::rcu::Guard;

    fn local(&self) {}

    #[inline]
    fn pin<'a>(&'a self, _: &'a mut ()) -> grace::rcu::Guard {
        grace::rcu::read_lock()
    }

    #[inline]
    fn protect(
        _: &mut grace::rcu::Guard,
        _: usize,
        src: &AtomicPtr<Node<Uncounted>>,
    ) -> *mut Node<Uncounted> {
        // Acquire: pairs with the Release CAS that published the node.
        src.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn retire(_: &mut grace::rcu::Guard, node: *mut Node<Uncounted>) {
        // SAFETY: from `Box::into_raw`, unlinked and retired once (the
        // caller's contract), so only readers already in a section may still
        // hold it: `kvfree_raw`'s contract.
        unsafe { grace::kvfree::kvfree_raw(node) }
    }

    fn library_counts(&self) -> Option<(u64, u64)> {
        let s = grace::kvfree::stats();
        Some((s.objects_pending, s.objects_freed))
    }

    fn drain(&self, _: &Counts, _: Duration) -> Result<(), String> {
        grace::kvfree_barrier();
        Ok(())
    }
}

/// grace RCU sections; retire through `rcu::call` of a closure that frees the node.
pub(crate) struct GraceCall;

/// A retired node on its way to a callback.
struct SendNode(*mut Node<Counted>);

// SAFETY: the node is unlinked and owned by the callback that frees it;
// `Node<Counted>` is `Send`.
unsafe impl Send for SendNode {}

impl SendNode {
    /// Frees the node. A method, so that a closure captures the whole
    /// wrapper (edition 2021 closures capture fields).
    ///
    /// # Safety
    ///
    /// As [`Reclaimer::retire`]'s, and no reader can reach the node any more.
    unsafe fn free(self) {
        // SAFETY: guaranteed by the caller.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

// SAFETY: nodes are loaded inside an RCU read-side section, and the callback
// that frees them runs after a grace period.
unsafe impl Reclaimer for GraceCall {
    type Tag = Counted;
    type Local = ();
    type Guard<'a> = grace::rcu::Guard;

    fn local(&self) {}

    #[inline]
    fn pin<'a>(&'a self, _: &'a mut ()) -> grace::rcu::Guard {
        grace::rcu::read_lock()
    }

    #[inline]
    fn protect(
        _: &mut grace::rcu::Guard,
        _: usize,
        src: &AtomicPtr<Node<Counted>>,
    ) -> *mut Node<Counted> {
        // Acquire: pairs with the Release CAS that published the node.
        src.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn retire(_: &mut grace::rcu::Guard, node: *mut Node<Counted>) {
        let node = SendNode(node);
        // SAFETY (of the callback's `free`): it runs after a grace period,
        // when no read-side section that could have loaded the node is left;
        // the node came from `Box::into_raw` and is retired once.
        grace::rcu::call(move || unsafe { node.free() });
    }

    fn drain(&self, _: &Counts, _: Duration) -> Result<(), String> {
        grace::rcu::barrier();
        Ok(())
    }
}

/// crossbeam-epoch's default collector; retire through `defer_destroy`.
pub(crate) struct Crossbeam;

// SAFETY: nodes are loaded while pinned, and `defer_destroy` drops them (as
// `Owned`, that is a `Box`) once every thread pinned then has unpinned.
unsafe impl Reclaimer for Crossbeam {
    type Tag = Counted;
    type Local = ();
    type Guard<'a> = crossbeam_epoch::Guard;

    fn local(&self) {}

    #[inline]
    fn pin<'a>(&'a self, _: &'a mut ()) -> crossbeam_epoch::Guard {
        crossbeam_epoch::pin()
    }

    #[inline]
    fn protect(
        _: &mut crossbeam_epoch::Guard,
        _: usize,
        src: &AtomicPtr<Node<Counted>>,
    ) -> *mut Node<Counted> {
        // Acquire: pairs with the Release CAS that published the node.
        src.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn retire(g: &mut crossbeam_epoch::Guard, node: *mut Node<Counted>) {
        // SAFETY: the node came from `Box::into_raw` (crossbeam's `Owned` is
        // a `Box`), is unlinked, so only threads pinned now can hold it, and
        // is destroyed once.
        unsafe { g.defer_destroy(crossbeam_epoch::Shared::from(node.cast_const())) }
    }

    fn drain(&self, counts: &Counts, timeout: Duration) -> Result<(), String> {
        let t = Instant::now();
        while counts.unreclaimed() > 0 {
            if t.elapsed() > timeout {
                return Err(format!(
                    "drain gave up after {timeout:?}: {} nodes unreclaimed",
                    counts.unreclaimed()
                ));
            }
            crossbeam_epoch::pin().flush();
        }
        Ok(())
    }
}

/// One seize collector; loads through `guard.protect`, retire through `defer_retire`.
pub(crate) struct Seize(seize::Collector);

// SAFETY: nodes are loaded through `Guard::protect` inside a guard, and
// `reclaim::boxed` frees them as a `Box` once no guard that could have
// loaded them is left.
unsafe impl Reclaimer for Seize {
    type Tag = Counted;
    type Local = ();
    type Guard<'a> = seize::LocalGuard<'a>;

    fn local(&self) {}

    #[inline]
    fn pin<'a>(&'a self, _: &'a mut ()) -> seize::LocalGuard<'a> {
        self.0.enter()
    }

    #[inline]
    fn protect(
        g: &mut seize::LocalGuard<'_>,
        _: usize,
        src: &AtomicPtr<Node<Counted>>,
    ) -> *mut Node<Counted> {
        use seize::Guard;
        // Acquire: pairs with the Release CAS that published the node.
        g.protect(src, Ordering::Acquire)
    }

    #[inline]
    unsafe fn retire(g: &mut seize::LocalGuard<'_>, node: *mut Node<Counted>) {
        use seize::Guard;
        // SAFETY: unlinked, so no guard entered later can load it; from
        // `Box::into_raw`, matching `reclaim::boxed`; retired once.
        unsafe { g.defer_retire(node, seize::reclaim::boxed) }
    }

    fn drain(&self, _: &Counts, _: Duration) -> Result<(), String> {
        // SAFETY: no thread is active on the collector: the workers and the
        // prefill thread were joined and held guards only during operations,
        // and the measuring thread never entered it.
        unsafe { self.0.reclaim_all() };
        Ok(())
    }
}

/// haphazard's global domain, three hazard pointers per thread.
pub(crate) struct Haphazard;

/// A thread's hazard pointers for one operation; reset when it ends.
pub(crate) struct HpGuard<'a>([&'a mut haphazard::HazardPointer<'static>; 3]);

impl Drop for HpGuard<'_> {
    fn drop(&mut self) {
        for hp in self.0.iter_mut() {
            hp.reset_protection();
        }
    }
}

// SAFETY: `protect` publishes the node's address in a hazard pointer, fences
// (the same `SeqCst` fence as haphazard's own `try_protect_ptr`), and returns
// only once `src` still holds the same value, so the node was reachable after
// the hazard pointer was visible; the list adds Michael's validation
// (`VALIDATE`). Retired nodes are freed as a `Box` by the global domain once
// no hazard pointer holds them.
unsafe impl Reclaimer for Haphazard {
    type Tag = Counted;
    type Local = haphazard::HazardPointerArray<'static, haphazard::Global, 3>;
    type Guard<'a> = HpGuard<'a>;
    const VALIDATE: bool = true;

    fn local(&self) -> Self::Local {
        haphazard::HazardPointer::many::<3>()
    }

    #[inline]
    fn pin<'a>(&'a self, local: &'a mut Self::Local) -> HpGuard<'a> {
        HpGuard(local.as_refs())
    }

    #[inline]
    fn protect(
        g: &mut HpGuard<'_>,
        slot: usize,
        src: &AtomicPtr<Node<Counted>>,
    ) -> *mut Node<Counted> {
        // Acquire (both loads): pairs with the Release CAS that published the node.
        let mut v = src.load(Ordering::Acquire);
        loop {
            g.0[slot].protect_raw(unmarked(v));
            // SeqCst: orders the hazard pointer's store before the validating
            // load; pairs with the fence in haphazard's reclamation scan.
            fence(Ordering::SeqCst);
            let again = src.load(Ordering::Acquire);
            if again == v {
                return v;
            }
            v = again;
        }
    }

    #[inline]
    unsafe fn retire(_: &mut HpGuard<'_>, node: *mut Node<Counted>) {
        // SAFETY: unlinked, so no hazard pointer set from now on can
        // validate it; retired once; valid until freed as the `Box` it came
        // from.
        unsafe {
            haphazard::Domain::global().retire_ptr::<Node<Counted>, Box<Node<Counted>>>(node);
        }
    }

    fn drain(&self, counts: &Counts, timeout: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            haphazard::Domain::global().eager_reclaim();
            if counts.unreclaimed() == 0 {
                return Ok(());
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "drain gave up after {timeout:?}: {} nodes unreclaimed",
                    counts.unreclaimed()
                ));
            }
            std::thread::yield_now();
        }
    }
}

// ---------------------------------------------------------------------------
// The list.

/// A Harris–Michael sorted list over `R` (see the module docs).
pub(crate) struct List<R: Reclaimer> {
    head: AtomicPtr<Node<R::Tag>>,
    reclaimer: R,
    /// Owned (from `Box::into_raw`); freed by `Drop` when balanced.
    counts: *mut Counts,
}

// SAFETY: the list's nodes are reached only through atomics and freed only
// through the reclaimer; `Counts` is only updated atomically.
unsafe impl<R: Reclaimer> Sync for List<R> {}
// SAFETY: as above.
unsafe impl<R: Reclaimer + Send> Send for List<R> {}

/// Where a key is, or would be: `prev` points to `cur`, the first node whose
/// key is not below it (null at the end); both protected by the guard.
struct Position<C> {
    prev: *const AtomicPtr<Node<C>>,
    cur: *mut Node<C>,
    found: bool,
}

impl<R: Reclaimer> List<R> {
    pub(crate) fn new(reclaimer: R) -> Self {
        List {
            head: AtomicPtr::new(ptr::null_mut()),
            reclaimer,
            counts: Box::into_raw(Box::new(Counts::new())),
        }
    }

    pub(crate) fn counts(&self) -> &Counts {
        // SAFETY: freed only by `Drop`.
        unsafe { &*self.counts }
    }

    pub(crate) fn reclaimer(&self) -> &R {
        &self.reclaimer
    }

    /// The calling thread's state for this list's operations.
    pub(crate) fn local(&self) -> R::Local {
        self.reclaimer.local()
    }

    /// Retire `node` (counted).
    ///
    /// # Safety
    ///
    /// As [`Reclaimer::retire`].
    unsafe fn retire(&self, g: &mut R::Guard<'_>, node: *mut Node<R::Tag>) {
        self.counts().add_retired();
        // SAFETY: the caller's contract.
        unsafe { R::retire(g, node) }
    }

    /// Michael's `find`: the position of `key`, unlinking (and retiring) the
    /// marked nodes on the way. Protection slots rotate between the roles
    /// prev-node, cur and next.
    fn find(&self, g: &mut R::Guard<'_>, key: u64) -> Position<R::Tag> {
        'retry: loop {
            let mut prev: *const AtomicPtr<Node<R::Tag>> = &self.head;
            let (mut s_prev, mut s_cur, mut s_next) = (2, 1, 0);
            // SAFETY: `prev` is the head, which lives as long as `self`.
            let mut cur = R::protect(g, s_cur, unsafe { &*prev });
            loop {
                if cur.is_null() {
                    return Position {
                        prev,
                        cur,
                        found: false,
                    };
                }
                // SAFETY: `cur` is unmarked (read from `prev` when unmarked,
                // or swung there by our CAS) and protected in `s_cur`.
                let c = unsafe { &*cur };
                let next = R::protect(g, s_next, &c.next);
                // SAFETY: `prev` is the head or the `next` of a node
                // protected in `s_prev`.
                if R::VALIDATE && unsafe { &*prev }.load(Ordering::Acquire) != cur {
                    continue 'retry;
                }
                if !is_marked(next) {
                    if c.key >= key {
                        return Position {
                            prev,
                            cur,
                            found: c.key == key,
                        };
                    }
                    prev = &c.next;
                    (s_prev, s_cur, s_next) = (s_cur, s_next, s_prev);
                } else {
                    let succ = unmarked(next);
                    // Release: passes `succ`'s publication (acquired by the
                    // load of `cur.next` in `protect`) on to the readers that
                    // load `prev`. Relaxed on failure: we retry.
                    // SAFETY: as above.
                    let unlinked = unsafe { &*prev }
                        .compare_exchange(cur, succ, Ordering::Release, Ordering::Relaxed)
                        .is_ok();
                    if !unlinked {
                        continue 'retry;
                    }
                    // SAFETY: our CAS unlinked `cur` (the only way a node is
                    // unlinked), so it is retired once, by us; it came from
                    // `Box::into_raw` in `insert`.
                    unsafe { self.retire(g, cur) };
                    (s_cur, s_next) = (s_next, s_cur);
                }
                cur = unmarked(next);
            }
        }
    }

    /// Inserts `key` with `value`; `false` if it was there.
    pub(crate) fn insert(&self, local: &mut R::Local, key: u64, value: u64) -> bool {
        let mut g = self.reclaimer.pin(local);
        let mut node: *mut Node<R::Tag> = ptr::null_mut();
        loop {
            let pos = self.find(&mut g, key);
            if pos.found {
                if !node.is_null() {
                    // SAFETY: never published; retiring an unpublished node
                    // is freeing it through the scheme (rare: a lost race).
                    unsafe { self.retire(&mut g, node) };
                }
                return false;
            }
            if node.is_null() {
                node = Box::into_raw(Box::new(Node {
                    key,
                    value,
                    next: AtomicPtr::new(pos.cur),
                    tag: R::Tag::new(self.counts),
                }));
            } else {
                // SAFETY: not yet published, so ours alone.
                // Relaxed: published by the Release CAS below.
                unsafe { &*node }.next.store(pos.cur, Ordering::Relaxed);
            }
            // Release: publishes the node's fields; pairs with the Acquire
            // loads in `protect`.
            // SAFETY: `prev` is the head or a protected node's `next`.
            if unsafe { &*pos.prev }
                .compare_exchange(pos.cur, node, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Removes `key`; `false` if it was not there.
    pub(crate) fn remove(&self, local: &mut R::Local, key: u64) -> bool {
        let mut g = self.reclaimer.pin(local);
        loop {
            let pos = self.find(&mut g, key);
            if !pos.found {
                return false;
            }
            // SAFETY: `cur` is protected by the guard.
            let c = unsafe { &*pos.cur };
            // Relaxed: the value is only compared; the marking CAS orders.
            let next = c.next.load(Ordering::Relaxed);
            if is_marked(next) {
                // Someone else is removing it: find again (and help).
                continue;
            }
            // AcqRel: the Acquire takes `next`'s publication from the CAS
            // that stored it in `cur.next`, for the unlinking CAS below to
            // pass on; the Release passes it on to a helper that sees the
            // mark (its Acquire load in `protect`) and unlinks `cur` itself.
            if c.next
                .compare_exchange(next, marked(next), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // Release: passes `next`'s publication on to the readers that
            // load `prev`.
            // SAFETY: `prev` is the head or a protected node's `next`.
            let unlinked = unsafe { &*pos.prev }
                .compare_exchange(pos.cur, next, Ordering::Release, Ordering::Relaxed)
                .is_ok();
            if unlinked {
                // SAFETY: our CAS unlinked it; from `Box::into_raw`; once.
                unsafe { self.retire(&mut g, pos.cur) };
            } else {
                // Leave the unlinking to a traversal: this one.
                self.find(&mut g, key);
            }
            return true;
        }
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, local: &mut R::Local, key: u64) -> Option<u64> {
        let mut g = self.reclaimer.pin(local);
        let pos = self.find(&mut g, key);
        // SAFETY: `cur` is protected by the guard.
        pos.found.then(|| unsafe { &*pos.cur }.value)
    }

    /// The keys in the list, unmarked ones only (no other thread may be
    /// running operations).
    #[cfg(test)]
    fn keys(&self) -> Vec<u64> {
        let mut out = Vec::new();
        // Acquire: see `protect`; quiescent anyway.
        let mut p = unmarked(self.head.load(Ordering::Acquire));
        while !p.is_null() {
            // SAFETY: quiescent: every linked node is allocated.
            let n = unsafe { &*p };
            let next = n.next.load(Ordering::Acquire);
            if !is_marked(next) {
                out.push(n.key);
            }
            p = unmarked(next);
        }
        out
    }
}

impl<R: Reclaimer> Drop for List<R> {
    fn drop(&mut self) {
        // `&mut self`: no operation runs; free every node still linked
        // (marked ones included), counting each as retired and freed.
        let mut p = unmarked(*self.head.get_mut());
        let counts = self.counts();
        while !p.is_null() {
            // SAFETY: every linked node came from `Box::into_raw` and is
            // freed only here (unlinked nodes are the reclaimer's).
            let node = unsafe { Box::from_raw(p) };
            p = unmarked(node.next.load(Ordering::Relaxed));
            if R::Tag::COUNTED {
                counts.add_retired();
            }
            drop(node);
        }
        let (retired, freed) = counts.totals();
        if !R::Tag::COUNTED || retired == freed {
            // SAFETY: from `Box::into_raw` in `new`; every node that points
            // to it has been freed (counted) or never reads it (uncounted).
            drop(unsafe { Box::from_raw(self.counts) });
        }
        // Otherwise a node may still be freed later: leak the counts.
    }
}

// ---------------------------------------------------------------------------
// The measurement.

/// A fast per-thread random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(seed);
        Rng(h.finish() | 1)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One operation chosen by `r`: a `get` with probability `read_pct`%,
/// otherwise an insert or a remove, evenly.
#[inline]
fn operation<R: Reclaimer>(list: &List<R>, local: &mut R::Local, p: &ListParams, r: u64) {
    let key = (r >> 32) % p.keys;
    let pick = (r & 0xffff) % 100;
    if pick < u64::from(p.read_pct) {
        black_box(list.get(local, key));
    } else if r & (1 << 16) == 0 {
        black_box(list.insert(local, key, r));
    } else {
        black_box(list.remove(local, key));
    }
}

/// Fill the list to half the key range, on a thread of its own.
fn prefill<R: Reclaimer>(list: &List<R>, keys: u64) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut local = list.local();
            let mut rng = Rng::new(keys);
            let mut n = 0;
            while n < keys / 2 {
                let key = (rng.next() >> 32) % keys;
                if list.insert(&mut local, key, key) {
                    n += 1;
                }
            }
        })
        .join()
        .map_err(|_| "the prefill thread panicked".to_string())
    })
}

/// One round: `threads` workers for `duration`; returns (operations,
/// seconds, peak unreclaimed if `sample`).
fn round<R: Reclaimer>(
    list: &List<R>,
    p: &ListParams,
    round_no: u64,
    sample: bool,
) -> Result<(u64, f64, u64), String> {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(p.threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..p.threads)
            .map(|t| {
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let mut local = list.local();
                    let mut rng = Rng::new(round_no << 16 | t as u64);
                    start.wait();
                    let mut ops = 0;
                    // Relaxed: a flag; the join orders the counts.
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..CHECK_EVERY {
                            operation(list, &mut local, p, rng.next());
                        }
                        ops += CHECK_EVERY;
                    }
                    ops
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut peak = 0;
        loop {
            let elapsed = t0.elapsed();
            if elapsed >= p.duration {
                break;
            }
            std::thread::sleep(SAMPLE_EVERY.min(p.duration - elapsed));
            if sample {
                let now = match list.reclaimer().library_counts() {
                    Some((pending, _)) => pending,
                    None => list.counts().unreclaimed(),
                };
                peak = peak.max(now);
            }
        }
        // Relaxed: see the workers' loop.
        stop.store(true, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let mut ops = 0;
        for w in workers {
            ops += w.join().map_err(|_| "a worker panicked".to_string())?;
        }
        Ok((ops, secs, peak))
    })
}

/// The whole measurement of `list` (see the module docs). `exclusive`: the
/// process runs nothing else, so the library's counters are this run's.
fn measure<R: Reclaimer>(reclaimer: R, name: &str, p: &ListParams, exclusive: bool) -> ListResult {
    let list = List::new(reclaimer);
    let library_before = list.reclaimer().library_counts();
    if let Err(e) = prefill(&list, p.keys) {
        return ListResult::failed(name, p, e);
    }
    let mut rates = Vec::with_capacity(TIMED_ROUNDS);
    let (mut ops, mut peak, mut secs) = (0, 0, 0.0);
    for r in 0..=TIMED_ROUNDS {
        match round(&list, p, r as u64, r > 0) {
            Ok((n, s, pk)) if r > 0 => {
                rates.push(n as f64 / s);
                ops += n;
                secs += s;
                peak = peak.max(pk);
            }
            Ok(_) => {}
            Err(e) => return ListResult::failed(name, p, e),
        }
    }
    let timeout = Duration::from_secs(10) + p.duration * 10;
    let drained = list.reclaimer().drain(list.counts(), timeout);
    let (retired, freed) = list.counts().totals();
    let library = list.reclaimer().library_counts();
    let mut notes = Vec::new();
    let mut failure = drained.err();
    let leak = match (library_before, library) {
        // kvfree: everything this run retired was freed (other kvfree users
        // in the process can only add to the freed count), and, in a
        // process of its own, nothing is pending.
        (Some((_, freed_before)), Some((pending, freed_after))) => {
            let freed = freed_after.saturating_sub(freed_before);
            if freed < retired || (exclusive && pending > 0) {
                Some(format!(
                    "{retired} retired, kvfree freed {freed}, {pending} pending"
                ))
            } else {
                None
            }
        }
        _ => (freed != retired).then(|| format!("{retired} retired, {freed} freed")),
    };
    if let Some(leak) = leak {
        failure.get_or_insert(format!("BUG: nodes unreclaimed after the drain ({leak})"));
    }
    if library.is_some() && !exclusive {
        notes.push("kvfree's counters are process-wide: run in a shared process".to_string());
    }
    drop(list);
    rates.sort_by(f64::total_cmp);
    let mut r = ListResult {
        impl_name: name.to_string(),
        threads: p.threads,
        keys: p.keys,
        read_pct: p.read_pct,
        duration_s: secs / TIMED_ROUNDS as f64,
        rounds: TIMED_ROUNDS,
        ops,
        ops_per_s: rates[rates.len() / 2],
        ops_per_s_min: rates[0],
        ops_per_s_max: rates[rates.len() - 1],
        peak_unreclaimed: peak,
        unreclaimed_source: if library.is_some() {
            "library"
        } else {
            "counted"
        }
        .into(),
        retired,
        reclaimed_all: failure.is_none(),
        isolated: false,
        note: None,
    };
    if let Some(e) = failure {
        r.ops_per_s = f64::NAN;
        notes.insert(0, e);
    }
    r.note = (!notes.is_empty()).then(|| notes.join("; "));
    r
}

/// Measures `name` (one of [`list_impls`]) on the list with `p`, in this
/// process (see the module docs). `exclusive` says that nothing else in the
/// process uses grace's `kvfree` meanwhile, so that its counters can be
/// checked exactly (the `grace` CLI's child processes).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_list_one, ListParams};
///
/// let p = ListParams { threads: 2, keys: 1000, read_pct: 90, duration: Duration::from_millis(200) };
/// let r = run_list_one("grace-kvfree", &p, false);
/// println!("{:.1} Mops/s, peak {} nodes unreclaimed", r.ops_per_s / 1e6, r.peak_unreclaimed);
/// ```
pub fn run_list_one(name: &str, p: &ListParams, exclusive: bool) -> ListResult {
    if p.threads == 0 || p.keys < 2 || p.read_pct > 100 || p.duration.is_zero() {
        return ListResult::failed(
            name,
            p,
            format!(
                "bad parameters: {} threads, {} keys, {}% reads, {:?} (need at least 1 thread, \
                 2 keys, at most 100%, a duration)",
                p.threads, p.keys, p.read_pct, p.duration
            ),
        );
    }
    // On a thread of its own, so that the caller's thread is never
    // registered with any implementation (the drain runs on this one).
    std::thread::scope(|s| {
        s.spawn(|| match name {
            "grace-kvfree" => measure(GraceKvfree, name, p, exclusive),
            "grace-call" => measure(GraceCall, name, p, exclusive),
            "crossbeam-epoch" => measure(Crossbeam, name, p, exclusive),
            "seize" => measure(Seize(seize::Collector::new()), name, p, exclusive),
            "haphazard" => measure(Haphazard, name, p, exclusive),
            other => ListResult::failed(other, p, format!("unknown list implementation {other}")),
        })
        .join()
        .unwrap_or_else(|_| ListResult::failed(name, p, "the measurement panicked".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Random operations against a `BTreeSet` model, on one thread.
    fn sequential<R: Reclaimer>(r: R) {
        let list = List::new(r);
        let mut model = BTreeSet::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut local = list.local();
                let mut rng = Rng::new(7);
                for _ in 0..4000 {
                    let x = rng.next();
                    let key = (x >> 32) % 64;
                    match x % 3 {
                        0 => assert_eq!(list.insert(&mut local, key, key * 10), model.insert(key)),
                        1 => assert_eq!(list.remove(&mut local, key), model.remove(&key)),
                        _ => assert_eq!(
                            list.get(&mut local, key),
                            model.contains(&key).then_some(key * 10)
                        ),
                    }
                }
            });
        });
        assert_eq!(list.keys(), model.iter().copied().collect::<Vec<_>>());
        drained(&list);
    }

    /// Drains `list`'s reclaimer (on a thread of its own) and checks that every retired node
    /// was freed; returns `(retired, freed)`.
    fn drained<R: Reclaimer>(list: &List<R>) -> (u64, u64) {
        std::thread::scope(|s| {
            s.spawn(|| {
                list.reclaimer()
                    .drain(list.counts(), Duration::from_secs(30))
            })
            .join()
            .unwrap()
            .unwrap();
        });
        let (retired, freed) = list.counts().totals();
        if R::Tag::COUNTED {
            assert_eq!(retired, freed);
        }
        (retired, freed)
    }

    /// Two threads race inserts and removes on a few keys; every success
    /// changes the set by one, and every retired node is freed once.
    fn concurrent<R: Reclaimer>(r: R) {
        let list = List::new(r);
        let library_before = list.reclaimer().library_counts();
        let per_thread = if cfg!(miri) { 200 } else { 20_000 };
        let deltas: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2u64)
                .map(|t| {
                    let list = &list;
                    s.spawn(move || {
                        let mut local = list.local();
                        let mut rng = Rng::new(100 + t);
                        let mut delta = 0i64;
                        for _ in 0..per_thread {
                            let x = rng.next();
                            let key = (x >> 32) % 16;
                            if x & 1 == 0 {
                                delta += i64::from(list.insert(&mut local, key, x));
                            } else {
                                delta -= i64::from(list.remove(&mut local, key));
                            }
                            list.get(&mut local, key);
                        }
                        delta
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let keys = list.keys();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(keys.len() as i64, deltas.iter().sum::<i64>());
        let (retired, _) = drained(&list);
        assert!(retired > 0);
        if let (Some((_, before)), Some((_, after))) =
            (library_before, list.reclaimer().library_counts())
        {
            // Other tests may kvfree too: they can only add to the freed count.
            assert!(
                after - before >= retired,
                "{retired} retired, {} freed",
                after - before
            );
        }
    }

    #[test]
    fn sequential_matches_a_model() {
        sequential(GraceKvfree);
        sequential(GraceCall);
        sequential(Crossbeam);
        sequential(Seize(seize::Collector::new()));
        sequential(Haphazard);
    }

    #[test]
    fn concurrent_kvfree() {
        concurrent(GraceKvfree);
    }

    #[test]
    fn concurrent_call() {
        concurrent(GraceCall);
    }

    #[test]
    fn concurrent_crossbeam() {
        concurrent(Crossbeam);
    }

    #[test]
    fn concurrent_seize() {
        concurrent(Seize(seize::Collector::new()));
    }

    #[test]
    fn concurrent_haphazard() {
        concurrent(Haphazard);
    }

    #[test]
    fn nodes_are_32_bytes() {
        assert_eq!(std::mem::size_of::<Node<Counted>>(), 32);
        assert_eq!(std::mem::size_of::<Node<Uncounted>>(), 32);
        assert!(!std::mem::needs_drop::<Node<Uncounted>>());
    }

    #[test]
    fn every_impl_measures_and_reclaims() {
        let p = ListParams {
            threads: 2,
            keys: 100,
            read_pct: 50,
            duration: Duration::from_millis(10),
        };
        for name in list_impls() {
            let r = run_list_one(name, &p, false);
            assert!(r.is_measured() && r.reclaimed_all, "{r:?}");
            assert!(r.ops > 0 && r.retired > 0, "{r:?}");
            assert!(r.ops_per_s_min <= r.ops_per_s && r.ops_per_s <= r.ops_per_s_max);
        }
        let bad = run_list_one("seize", &ListParams { keys: 1, ..p }, false);
        assert!(!bad.is_measured() && bad.note.is_some());
    }
}
