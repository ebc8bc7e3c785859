//! The public face of `Pending<T>`: enqueue, the re-arming callback, the worker, dequeue and
//! the handle for type-stable reuse. The data structure itself is in `shard` and `chunks`.

use super::chunks::{ChunkPile, FreeChunk, FreeNode};
use super::shard::{
    After, Clock, Garbage, GpAction, Push, ShardCounts, ShardState, HELP_CHUNKS, WORKER_CHUNKS,
};
use super::{CHUNK_SLOTS, MAX_SHARDS};
use crate::cookie::{Cookie, RawCookie};
use crate::flavor::{Flavor, Rcu};
use crate::sync::{lock, AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard, Ordering};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

impl<F: Flavor> Clock for F {
    #[inline]
    fn get_state(&self) -> RawCookie {
        Flavor::get_state(self).erase()
    }
    #[inline]
    fn poll_state(&self, cookie: RawCookie) -> bool {
        Flavor::poll_state(self, self.cookie_from_raw(cookie.raw()))
    }
}

type Shard = CachePadded<Mutex<ShardState<CHUNK_SLOTS>>>;

/// An object that runs itself once its grace period has ended: the element type of a
/// [`Pending`] in "run as callback" mode ([`Process::run`], `rcu_pending`'s `RCU_PENDING_CALL_RCU`).
///
/// Every `FnOnce() + Send + 'static` closure is one; a type of your own can be one too.
///
/// # Examples
///
/// ```
/// use grace::pending::{Pending, Process, Run};
/// use grace::Rcu;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// struct Bump(Arc<AtomicUsize>);
/// impl Run for Bump {
///     fn run(self: Box<Self>) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let n = Arc::new(AtomicUsize::new(0));
/// let pending = Pending::new(Rcu, Process::run());
/// pending.enqueue(Box::new(Bump(n.clone())));
/// drop(pending); // waits until it ran
/// assert_eq!(n.load(Ordering::Relaxed), 1);
/// ```
pub trait Run: Send + 'static {
    /// Do the deferred work; called once, on the worker, after the grace period.
    fn run(self: Box<Self>);
}

impl<C: FnOnce() + Send + 'static> Run for C {
    fn run(self: Box<Self>) {
        (*self)()
    }
}

/// What a [`Pending`] does with an object once its grace period has ended.
///
/// # Where user code runs
///
/// Process closures, [`Run::run`] and the objects' `Drop` run:
///
/// * on the `Pending`'s worker thread, normally;
/// * if that thread cannot be started, on a callback worker of the flavor (the thread that
///   runs its `call` closures), and in [`Pending::barrier`] and `Drop for Pending` on the
///   calling thread (both wait for a grace period, so they are never inside a section);
/// * in [`Pending::enqueue`]'s last resort only (no memory at all for the object: it waits for
///   a grace period and processes the object itself, on the calling thread).
///
/// Never otherwise inside `enqueue`: an enqueuer inside a read-side section, or holding a
/// lock a closure takes, is safe. Plain frees of a `T` without drop glue ([`Process::free`])
/// run no user code and may be done by enqueuers helping with a backlog.
///
/// # Examples
///
/// ```
/// use grace::pending::Process;
/// let _free: Process<Vec<u8>> = Process::free(); // drop the Box (kvfree-like)
/// let _with: Process<Vec<u8>> = Process::with(|v: Box<Vec<u8>>| assert!(v.capacity() >= v.len()));
/// let _run: Process<Box<dyn FnOnce() + Send>> = Process::run(); // run it
/// ```
pub struct Process<T> {
    kind: Kind<T>,
}

enum Kind<T> {
    Free,
    With(Box<dyn Fn(Box<T>) + Send + Sync>),
    Run(fn(Box<T>)),
}

impl<T> Process<T> {
    /// Drop each object (its `Box`), in bulk: the `kvfree_rcu` mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let pending = Pending::new(grace::Rcu, Process::free());
    /// pending.enqueue(Box::new([0u8; 64]));
    /// # drop(pending);
    /// ```
    pub fn free() -> Process<T> {
        Process { kind: Kind::Free }
    }

    /// Hand each object to `f` (which then owns it: drop it, recycle it, send it somewhere).
    /// Runs on the worker thread; a panic in `f` is caught and counted
    /// ([`Stats::process_panics`]), and the other objects are still processed.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use std::sync::mpsc;
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let pending = Pending::new(grace::Rcu, Process::with(move |b: Box<u32>| {
    ///     tx.lock().unwrap().send(*b).unwrap();
    /// }));
    /// pending.enqueue(Box::new(7));
    /// drop(pending);
    /// assert_eq!(rx.recv().unwrap(), 7);
    /// ```
    pub fn with(f: impl Fn(Box<T>) + Send + Sync + 'static) -> Process<T> {
        Process {
            kind: Kind::With(Box::new(f)),
        }
    }
}

impl<T: Run> Process<T> {
    /// Run each object ([`Run::run`]): the `call_rcu` mode, with the callbacks stored as
    /// pointers in chunks rather than linked through a head embedded in each.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let pending: Pending<Box<dyn FnOnce() + Send>> = Pending::new(grace::Rcu, Process::run());
    /// pending.enqueue(Box::new(Box::new(|| println!("after a grace period"))));
    /// # drop(pending);
    /// ```
    pub fn run() -> Process<T> {
        Process {
            kind: Kind::Run(|b| b.run()),
        }
    }
}

impl<T> fmt::Debug for Process<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(kind_name(&self.kind))
    }
}

/// Counters and state of a [`Pending`], for diagnostics and tests. Counters only grow;
/// `pending` is sampled shard by shard, so under concurrent use it is approximate.
///
/// # Examples
///
/// ```
/// use grace::pending::{Pending, Process};
/// let pending = Pending::new(grace::Rcu, Process::free());
/// pending.enqueue(Box::new(1u64));
/// pending.barrier();
/// let s = pending.stats();
/// assert_eq!((s.enqueued, s.processed, s.pending), (1, 1, 0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Objects accepted (stored, or processed at once by the last-resort synchronous path).
    pub enqueued: u64,
    /// Objects processed after their grace period.
    pub processed: u64,
    /// Objects handed back by `dequeue*`.
    pub dequeued: u64,
    /// Objects held now: waiting for a grace period, or expired and not yet processed.
    pub pending: u64,
    /// `pending × size_of::<T>()`: the memory of the objects held now (not counting the
    /// 4 KiB chunks of pointers that hold them).
    pub bytes_pending: u64,
    /// The most objects held at once: the sum of each shard's own peak, so an upper bound of
    /// the true peak (exact with one shard, or when the shards peaked together).
    pub peak_pending: u64,
    /// `peak_pending × size_of::<T>()`.
    pub peak_bytes_pending: u64,
    /// Expired objects processed by enqueuing threads themselves (backpressure: see
    /// [`Pending::enqueue`]) rather than by the worker; included in `processed`.
    pub helped: u64,
    /// First objects of a batch that needed no `start_poll` because a grace period had
    /// already been requested for their cookie (a batch refilled after dequeues).
    pub polls_saved: u64,
    /// Chunks allocated on the enqueue path.
    pub chunks_allocated: u64,
    /// Chunk boundaries served by a shard's spare chunks (recycled or reserved) instead.
    pub spares_used: u64,
    /// Chunk allocations that failed (each then tried a fallback node).
    pub chunk_alloc_failures: u64,
    /// Objects stored in linked fallback nodes.
    pub fallback_nodes: u64,
    /// Fallback-node allocations that failed too.
    pub node_alloc_failures: u64,
    /// Objects for which `enqueue` waited for a grace period itself (last resort).
    pub synchronous: u64,
    /// Objects `try_enqueue` gave back because no memory could be had.
    pub given_back: u64,
    /// Process closures (or `Drop`s, or `Run::run`s) that panicked; caught.
    pub process_panics: u64,
    /// Batches whose cookie was moved forward for lack of a batch slot (only a flavor that
    /// breaks its outstanding-cookie promise causes this).
    pub relabels: u64,
    /// Shards (per-CPU lists).
    pub shards: usize,
    /// Shards whose re-arming callback is queued now.
    pub armed_shards: usize,
    /// Empty chunks kept by the shards for reuse (and as the emergency reserve).
    pub spare_chunks: usize,
    /// The worker thread could not be started, so expired objects are processed by whichever
    /// thread asks for a pass: the grace-period callback, `barrier`, drop, or an enqueue that
    /// found expired objects.
    pub inline_processing: bool,
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    chunks_allocated: AtomicU64,
    chunk_alloc_failures: AtomicU64,
    node_alloc_failures: AtomicU64,
    synchronous: AtomicU64,
    given_back: AtomicU64,
    process_panics: AtomicU64,
    helped: AtomicU64,
    /// Chicken switch (batching off): objects queued with a callback of their own.
    unbatched: AtomicU64,
    /// Chicken switch: those callbacks not yet finished.
    in_flight: AtomicU64,
    /// Chicken switch: the most callbacks in flight at once.
    peak_in_flight: AtomicU64,
}

/// Bump a statistic.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Relaxed: statistics; nothing is published through them.
    c.fetch_add(n, Ordering::Relaxed);
}

#[cold]
#[inline(never)]
fn too_many_shards(n: usize) -> ! {
    panic!(
        "grace: Pending::with_shards({n}): at most {MAX_SHARDS} shards (each costs a lock and a \
         4 KiB spare chunk; one per CPU is the useful maximum)"
    );
}

thread_local! {
    /// The `Inner` whose process function this thread is running (null outside one), so that
    /// a `barrier` of that same `Pending` from inside it panics instead of waiting for itself.
    static PROCESSING: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// Who runs the processing passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The worker thread.
    Thread,
    /// Whoever asks for a pass (the grace-period callback, `barrier`, drop): the thread could
    /// not be started.
    Inline,
}

/// Processing passes requested and completed, under `Inner::work`.
#[derive(Default)]
struct Work {
    /// Passes asked for (a counter: each kick and each flush adds one).
    requested: u64,
    /// `requested` as it was when the last completed pass began.
    done: u64,
    /// A pass is running (on the worker, or inline).
    running: bool,
    /// The worker thread should exit once no pass is owed.
    stop: bool,
    /// Without a worker: a pass has been handed to a flavor callback and has not begun yet
    /// (further kicks from enqueues need not queue another).
    handed_off: bool,
}

struct Inner<T, F> {
    flavor: F,
    process: Kind<T>,
    shards: Box<[Shard]>,
    work: Mutex<Work>,
    /// Signals changes of `work`: to the worker (a pass is owed, stop) and to flushers (a pass
    /// completed).
    work_cv: Condvar,
    mode: OnceLock<Mode>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: CachePadded<Counters>,
    /// `pending::batching()` when built: `false` routes every object through a callback of
    /// its own (the chicken switch, see the module docs).
    batched: bool,
    /// Flood mode (`crate::pressure`'s thresholds, checked per shard at each new chunk): the
    /// grace periods the objects wait for are expedited. Ends, with hysteresis, at a chunk
    /// boundary of a shard under half the thresholds.
    flooded: AtomicBool,
}

/// Objects waiting for a grace period, per CPU, keyed by cookie: the kernel's `rcu_pending`.
///
/// [`enqueue`](Pending::enqueue) hands over an object that readers may still be using; once a
/// grace period of the flavor `F` has ended after the call, the object is processed (see
/// [`Process`]) on a worker thread, in bulk. Until then, [`dequeue`](Pending::dequeue) and its
/// variants may take it back for *type-stable reuse* ([`Reused`]). Dropping the `Pending`
/// waits until every object has been processed.
///
/// Generic over the flavor: [`Rcu`], or a reference or `Arc` to any other [`Flavor`].
///
/// # Examples
///
/// Deferred freeing of objects readers may still hold:
///
/// ```
/// use grace::pending::{Pending, Process};
/// use grace::rcu;
/// use std::ptr::NonNull;
/// use std::sync::atomic::{AtomicPtr, Ordering};
///
/// let pending = Pending::new(grace::Rcu, Process::free());
/// let current = AtomicPtr::new(Box::into_raw(Box::new(String::from("v1"))));
///
/// // Readers: inside a section the pointer stays valid.
/// {
///     let _g = rcu::read_lock();
///     // SAFETY: published objects are only processed a grace period after removal.
///     let s = unsafe { &*current.load(Ordering::Acquire) };
///     assert_eq!(s, "v1");
/// }
///
/// // Updater: publish v2, hand v1 over; it is freed after a grace period.
/// let old = current.swap(Box::into_raw(Box::new(String::from("v2"))), Ordering::AcqRel);
/// // SAFETY: `old` came from Box::into_raw and is no longer published.
/// unsafe { pending.enqueue_raw(NonNull::new(old).unwrap()) };
///
/// drop(pending); // waits until v1 has been freed
/// # drop(unsafe { Box::from_raw(current.load(Ordering::Relaxed)) });
/// ```
pub struct Pending<T: Send + 'static, F: Flavor + Send + Sync + 'static = Rcu> {
    inner: Arc<Inner<T, F>>,
}

impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> Pending<T, F> {
    /// A `Pending` with one shard per CPU.
    ///
    /// Takes a cookie from the flavor once, so that a flavor's lazy initialization (which
    /// allocates) never happens under a shard lock; and gives each shard one spare chunk, the
    /// emergency reserve (when that allocation fails the shard simply starts without one).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use std::sync::Arc;
    /// // Any flavor, also behind a reference or an Arc.
    /// let a: Pending<u32> = Pending::new(grace::Rcu, Process::free());
    /// let b: Pending<u32, &'static grace::Rcu> = Pending::new(&grace::Rcu, Process::free());
    /// let c: Pending<u32, Arc<grace::Rcu>> = Pending::new(Arc::new(grace::Rcu), Process::free());
    /// # drop((a, b, c));
    /// ```
    pub fn new(flavor: F, process: Process<T>) -> Pending<T, F> {
        Self::with_shards(flavor, process, crate::sys::num_cpus().min(MAX_SHARDS))
    }

    /// Like [`new`](Pending::new) with `shards` shards (at least 1); objects go to shard
    /// `current CPU % shards`. One shard makes [`dequeue`](Pending::dequeue) see everything.
    ///
    /// # Panics
    ///
    /// If `shards` is more than [`MAX_SHARDS`](crate::pending::MAX_SHARDS) (each shard costs a
    /// lock and a 4 KiB spare chunk; more shards than CPUs buys nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p: Pending<u8> = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// assert_eq!(p.stats().shards, 1);
    /// ```
    pub fn with_shards(flavor: F, process: Process<T>, shards: usize) -> Pending<T, F> {
        if shards > MAX_SHARDS {
            too_many_shards(shards);
        }
        let _ = flavor.get_state();
        let shards: Box<[Shard]> = (0..shards.max(1))
            .map(|_| {
                let mut st = ShardState::new();
                if let Ok(c) = FreeChunk::try_new() {
                    let _ = st.offer_spare(c);
                }
                CachePadded::new(Mutex::new(st))
            })
            .collect();
        let inner = Arc::new(Inner {
            flavor,
            process: process.kind,
            shards,
            work: Mutex::new(Work::default()),
            work_cv: Condvar::new(),
            mode: OnceLock::new(),
            thread: Mutex::new(None),
            counters: CachePadded::new(Counters::default()),
            batched: super::batching(),
            flooded: AtomicBool::new(false),
        });
        // Seen by the memory-pressure layer while it lives.
        let weak: std::sync::Weak<dyn crate::pressure::Source> = Arc::downgrade(&inner) as _;
        crate::pressure::register(weak);
        Pending { inner }
    }

    /// The flavor whose grace periods this `Pending` waits for.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use grace::Flavor;
    /// let p: Pending<u8> = Pending::new(grace::Rcu, Process::free());
    /// let _g = p.flavor().read_lock();
    /// ```
    pub fn flavor(&self) -> &F {
        &self.inner.flavor
    }

    /// Hand `obj` over, to be processed once a grace period has ended after this call.
    ///
    /// The fast path takes the local shard's lock, a cookie (`get_state`, which starts
    /// nothing), finds the batch for that cookie and stores the pointer at its cursor. The
    /// first object of a batch queues the shard's re-arming callback, or starts the grace
    /// period with `start_poll` if the callback is already queued.
    ///
    /// When memory is short it falls back, in order, to: a spare chunk of the shard; a chunk
    /// allocated outside the lock (then a retry); a 16-byte fallback node; and as the last
    /// resort it waits for a grace period itself and processes `obj` on the calling thread.
    /// It never blocks on the allocator while holding a shard lock.
    ///
    /// # Panics
    ///
    /// Only on the last resort, if the flavor refuses to wait (the RCU flavor panics when
    /// called inside one of its read-side sections); `obj` is then leaked, never freed early.
    /// Inside a read-side section, use [`try_enqueue`](Pending::try_enqueue), which gives the
    /// object back instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::new(grace::Rcu, Process::free());
    /// for i in 0..1000u64 {
    ///     p.enqueue(Box::new(i));
    /// }
    /// p.barrier();
    /// assert_eq!(p.stats().processed, 1000);
    /// ```
    #[inline]
    pub fn enqueue(&self, obj: Box<T>) {
        let p = Box::into_raw(obj);
        // SAFETY: `p` is a fresh Box pointer that nobody else can reach.
        if let Err(p) = unsafe { self.inner.enqueue_ptr(p) } {
            self.inner.synchronous(p);
        }
    }

    /// Like [`enqueue`](Pending::enqueue), but never waits for a grace period: when no memory
    /// at all can be had (no spare chunk, no chunk, no fallback node), `obj` is given back.
    ///
    /// # Errors
    ///
    /// `Err(obj)` when every non-blocking path failed for lack of memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::alloc::{inject, FailurePlan};
    /// use grace::pending::{Pending, Process};
    /// let p: Pending<u64> = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// let _g = grace::rcu::read_lock(); // cannot wait for a grace period in here
    /// // The shard's spare chunk takes the first object without any allocation.
    /// assert!(p.try_enqueue(Box::new(1)).is_ok());
    /// let back = {
    ///     let _oom = inject(FailurePlan::AllAfter(0));
    ///     // Fill the chunk, then every allocation fails: the object comes back.
    ///     let mut r = Ok(());
    ///     for i in 0..100_000 {
    ///         r = p.try_enqueue(Box::new(i));
    ///         if r.is_err() { break; }
    ///     }
    ///     r.unwrap_err()
    /// };
    /// drop(_g);
    /// p.enqueue(back); // outside the section, the object can always be handed over
    /// ```
    pub fn try_enqueue(&self, obj: Box<T>) -> Result<(), Box<T>> {
        let p = Box::into_raw(obj);
        // SAFETY: `p` is a fresh Box pointer that nobody else can reach.
        match unsafe { self.inner.enqueue_ptr(p) } {
            Ok(()) => Ok(()),
            Err(p) => {
                bump(&self.inner.counters.given_back, 1);
                // SAFETY: enqueue_ptr gave ownership back untouched; it came from a Box.
                Err(unsafe { Box::from_raw(p) })
            }
        }
    }

    /// Hand over an object that readers may still be reading through a raw pointer: the way
    /// an RCU-protected structure retires what it unpublished. As
    /// [`enqueue`](Pending::enqueue) otherwise.
    ///
    /// Unlike `enqueue(Box::from_raw(ptr))`, this never materializes a `Box` (which asserts
    /// unique access) while readers may still hold shared references.
    ///
    /// # Safety
    ///
    /// * `ptr` came from `Box::<T>::into_raw` (or [`Reused::into_raw`]), and the caller gives
    ///   up ownership of it;
    /// * the object was unpublished before this call: readers that begin their section after
    ///   the call cannot reach it (those already inside may, which is what the grace period
    ///   is for);
    /// * nothing else frees it, processes it or enqueues it again.
    ///
    /// # Panics
    ///
    /// As [`enqueue`](Pending::enqueue).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use std::ptr::NonNull;
    /// use std::sync::atomic::{AtomicPtr, Ordering};
    ///
    /// let pending = Pending::new(grace::Rcu, Process::free());
    /// let slot = AtomicPtr::new(Box::into_raw(Box::new(1u64)));
    /// // Unpublish, then retire: readers inside a section may still hold the old value.
    /// let old = slot.swap(Box::into_raw(Box::new(2u64)), Ordering::AcqRel);
    /// // SAFETY: from Box::into_raw, unpublished by the swap, retired once.
    /// unsafe { pending.enqueue_raw(NonNull::new(old).unwrap()) };
    /// # drop(pending);
    /// # drop(unsafe { Box::from_raw(slot.load(Ordering::Relaxed)) });
    /// ```
    pub unsafe fn enqueue_raw(&self, ptr: NonNull<T>) {
        // SAFETY: forwarded from the caller's contract.
        if let Err(p) = unsafe { self.inner.enqueue_ptr(ptr.as_ptr()) } {
            self.inner.synchronous(p);
        }
    }

    /// [`enqueue_raw`](Pending::enqueue_raw) that never waits: gives `ptr` back (still owned
    /// by the caller, still under the same obligations) when no memory can be had.
    ///
    /// # Safety
    ///
    /// As [`enqueue_raw`](Pending::enqueue_raw).
    ///
    /// # Errors
    ///
    /// `Err(ptr)` when every non-blocking path failed for lack of memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use std::ptr::NonNull;
    /// let p = Pending::new(grace::Rcu, Process::free());
    /// let raw = NonNull::new(Box::into_raw(Box::new(5u8))).unwrap();
    /// // SAFETY: a fresh, never published Box pointer.
    /// assert!(unsafe { p.try_enqueue_raw(raw) }.is_ok());
    /// ```
    pub unsafe fn try_enqueue_raw(&self, ptr: NonNull<T>) -> Result<(), NonNull<T>> {
        // SAFETY: forwarded from the caller's contract.
        match unsafe { self.inner.enqueue_ptr(ptr.as_ptr()) } {
            Ok(()) => Ok(()),
            Err(p) => {
                bump(&self.inner.counters.given_back, 1);
                // SAFETY: the pointer given back is the caller's non-null `ptr`.
                Err(unsafe { NonNull::new_unchecked(p) })
            }
        }
    }

    /// Wait until every object enqueued before this call has been processed (or dequeued):
    /// waits for a grace period, then for the worker to process what it made due.
    ///
    /// # Panics
    ///
    /// If the flavor refuses to wait (the RCU flavor panics inside one of its read-side
    /// sections); if called from a process function (closure, `Run`, `Drop`) of the same
    /// `Pending`, which would wait for itself; and in a child process created by `fork()` after grace had started background threads in
    /// the parent (they do not exist in the child; see [`crate::sys`], "fork()"), instead of
    /// waiting forever.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::new(grace::Rcu, Process::free());
    /// p.enqueue(Box::new([1u8; 32]));
    /// p.barrier();
    /// assert_eq!(p.stats().pending, 0);
    /// ```
    pub fn barrier(&self) {
        crate::sys::assert_not_orphaned("Pending::barrier()");
        let me = Arc::as_ptr(&self.inner) as *const ();
        if PROCESSING.try_with(Cell::get).ok() == Some(me) {
            panic!(
                "grace: Pending::barrier() called from inside a process function of the same \
                 Pending; it would wait for the very pass running it (self-deadlock)"
            );
        }
        if !self.inner.batched {
            // Chicken switch: every object is a callback of the flavor.
            self.inner.flavor.barrier();
            return;
        }
        let cookie = self.inner.flavor.get_state();
        self.inner.flavor.cond_synchronize(cookie);
        // Every object enqueued before the call now has a completed cookie; a pass that
        // starts after this request expires and processes them all.
        self.inner.flush();
    }

    /// Counters and state.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p: Pending<u8> = Pending::new(grace::Rcu, Process::free());
    /// assert_eq!(p.stats().enqueued, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let mut sum = ShardCounts::default();
        let mut pending = 0u64;
        let mut armed = 0;
        let mut spares = 0;
        for s in inner.shards.iter() {
            let st = lock(s);
            let c = st.counts;
            sum.enqueued += c.enqueued;
            sum.dequeued += c.dequeued;
            sum.fallback_nodes += c.fallback_nodes;
            sum.spares_used += c.spares_used;
            sum.relabels += c.relabels;
            sum.polls_saved += c.polls_saved;
            sum.peak += c.peak;
            pending += st.len() as u64;
            armed += usize::from(st.armed());
            spares += st.spares();
        }
        let c = &inner.counters;
        // Relaxed: statistics.
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let synchronous = get(&c.synchronous);
        let in_flight = get(&c.in_flight);
        pending += in_flight;
        sum.peak += get(&c.peak_in_flight);
        Stats {
            enqueued: sum.enqueued + synchronous + get(&c.unbatched),
            processed: get(&c.processed),
            dequeued: sum.dequeued,
            pending,
            bytes_pending: pending * std::mem::size_of::<T>() as u64,
            peak_pending: sum.peak,
            peak_bytes_pending: sum.peak * std::mem::size_of::<T>() as u64,
            helped: get(&c.helped),
            polls_saved: sum.polls_saved,
            chunks_allocated: get(&c.chunks_allocated),
            spares_used: sum.spares_used,
            chunk_alloc_failures: get(&c.chunk_alloc_failures),
            fallback_nodes: sum.fallback_nodes,
            node_alloc_failures: get(&c.node_alloc_failures),
            synchronous,
            given_back: get(&c.given_back),
            process_panics: get(&c.process_panics),
            relabels: sum.relabels,
            shards: inner.shards.len(),
            armed_shards: armed,
            spare_chunks: spares,
            inline_processing: inner.mode.get() == Some(&Mode::Inline),
        }
    }
}

impl<T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Pending<T, F> {
    /// Take back an object from the local shard whose grace period has **not** ended yet, for
    /// type-stable reuse: the replacement for `SLAB_TYPESAFE_BY_RCU` (bcachefs's btree key
    /// cache allocates from its pending frees this way). The most recently enqueued object is
    /// preferred (its memory is the most likely to be in cache).
    ///
    /// Readers that found the object before it was enqueued may still be reading it, so the
    /// [`Reused`] handle gives shared access only (update through interior mutability, and
    /// make readers validate what they find: the object may have been recycled under them).
    /// It becomes a `Box<T>` only after its grace period ([`Reused::into_box`]); dropping the
    /// handle enqueues the object again. A dequeued object is never processed.
    ///
    /// Returns `None` when the local shard holds no waiting object, and always with batching
    /// off (the chicken switch, see the [module docs](crate::pending#the-chicken-switch)). It looks at the shard of
    /// the CPU the thread runs on *now* only: a thread that migrated since its `enqueue` (or
    /// objects enqueued by threads on other CPUs) may get `None` while objects wait in other
    /// shards. Use [`dequeue_from_all`](Pending::dequeue_from_all) to look everywhere, or
    /// [`with_shards`](Pending::with_shards)`(.., 1)` for a single shard.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(AtomicU64::new(1)));
    /// let obj = p.dequeue().expect("still waiting for its grace period");
    /// obj.store(2, Ordering::Relaxed); // shared access: readers may still look
    /// let owned: Box<AtomicU64> = obj.into_box(); // waits for the grace period
    /// assert_eq!(owned.into_inner(), 2);
    /// ```
    pub fn dequeue(&self) -> Option<Reused<'_, T, F>> {
        let local = self.inner.shard_index();
        self.inner
            .dequeue_from(local, &mut |_| true)
            .map(|(p, cookie)| Reused::new(self, p, cookie))
    }

    /// Like [`dequeue`](Pending::dequeue), trying every shard when the local one has nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::new(grace::Rcu, Process::free());
    /// p.enqueue(Box::new(3u32));
    /// let got = std::thread::scope(|s| s.spawn(|| p.dequeue_from_all().map(|r| *r)).join().unwrap());
    /// assert_eq!(got, Some(3));
    /// ```
    pub fn dequeue_from_all(&self) -> Option<Reused<'_, T, F>> {
        self.dequeue_where(|_| true)
    }

    /// Take back the most recently enqueued waiting object for which `pred` is true, trying
    /// the local shard first, then every other.
    ///
    /// `pred` runs under the shard lock, on each waiting object until one matches: keep it
    /// short, and do not call into this `Pending` from it (that would deadlock) nor allocate
    /// or block in it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::new(grace::Rcu, Process::free());
    /// for size in [64usize, 4096, 128] {
    ///     p.enqueue(Box::new(vec![0u8; size]));
    /// }
    /// let big = p.dequeue_where(|v| v.len() >= 4096).unwrap();
    /// assert_eq!(big.len(), 4096);
    /// ```
    pub fn dequeue_where(&self, mut pred: impl FnMut(&T) -> bool) -> Option<Reused<'_, T, F>> {
        let n = self.inner.shards.len();
        let local = self.inner.shard_index();
        let mut test = |p: *mut ()| {
            // SAFETY: `p` is an object held by a waiting batch of the shard whose lock the
            // caller (dequeue_from) holds: it is live (processing only starts after removal
            // under that lock), and only shared references to it exist (readers', and this
            // one); T: Sync allows sharing them across threads.
            pred(unsafe { &*(p as *const T) })
        };
        (0..n)
            .map(|k| (local + k) % n)
            .find_map(|i| self.inner.dequeue_from(i, &mut test))
            .map(|(p, cookie)| Reused::new(self, p, cookie))
    }
}

impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> Drop for Pending<T, F> {
    /// Waits until every object has been processed (the kernel's `rcu_pending_exit`): while any
    /// shard holds objects or has its callback queued, wait for the flavor's callbacks
    /// (`barrier`) and for the worker's passes. Then stops the worker.
    ///
    /// Dropped on one of grace's worker threads (inside a callback, or from a process
    /// function), where waiting could wait for itself, the `Pending` hands that wait to a
    /// thread of its own and returns at once; nothing is lost either way.
    ///
    /// Panics like [`Pending::barrier`] if the flavor refuses to wait: do not drop a `Pending`
    /// inside a read-side section of its flavor. Panics as well, rather than wait forever, in
    /// a child process created by `fork()` after grace had started background threads in the
    /// parent (see [`crate::sys`], "fork()").
    fn drop(&mut self) {
        crate::sys::assert_not_orphaned("dropping a Pending");
        if crate::callback::on_worker() {
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("grace-pending-drop".into())
                // Only this clone remains once the dropped `Pending` has let go of its own.
                .spawn(move || Inner::teardown(inner, 1));
            if spawned.is_ok() {
                return;
            }
            // No thread: wait here after all (it may deadlock only in the self-wait cases).
        }
        // Ours and the `Pending`'s: the last reference is dropped here, with the `Pending`.
        Inner::teardown(Arc::clone(&self.inner), 2);
    }
}

impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> fmt::Debug for Pending<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("process", &kind_name(&self.inner.process))
            .field("stats", &self.stats())
            .finish()
    }
}

fn kind_name<T>(k: &Kind<T>) -> &'static str {
    match k {
        Kind::Free => "Process::free",
        Kind::With(_) => "Process::with",
        Kind::Run(_) => "Process::run",
    }
}

impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> Inner<T, F> {
    /// `rcu_pending_exit`: wait until every object has been processed, stop the worker, and
    /// wait until only `keep` references to `inner` remain (the caller's and the dropped
    /// `Pending`'s): a callback that disarmed its shard may still be returning, and the
    /// process closure is then dropped with the last reference, never inside a callback.
    fn teardown(inner: Arc<Self>, keep: usize) {
        // Acquire: pairs with the Release decrement in `process_unbatched`, so the processing
        // of every object happens-before the teardown goes on.
        while inner.counters.in_flight.load(Ordering::Acquire) > 0 {
            inner.flavor.barrier();
        }
        while inner.shards.iter().any(|s| lock(s).busy()) {
            inner.flavor.barrier();
            inner.flush();
        }
        inner.stop_worker();
        while Arc::strong_count(&inner) > keep {
            std::thread::yield_now();
        }
    }

    #[inline]
    fn shard_index(&self) -> usize {
        crate::sys::current_cpu() % self.shards.len()
    }

    /// The enqueue path without the synchronous last resort.
    ///
    /// # Safety
    ///
    /// `p` satisfies [`Pending::enqueue_raw`]'s contract. On `Err` it is given back untouched
    /// (ownership returns to the caller).
    #[inline]
    unsafe fn enqueue_ptr(self: &Arc<Self>, p: *mut T) -> Result<(), *mut T> {
        if !self.batched {
            // SAFETY: forwarded from the caller.
            unsafe { self.enqueue_unbatched(p) };
            return Ok(());
        }
        let i = self.shard_index();
        let r = lock(&self.shards[i]).push(p.cast(), &self.flavor, &mut None);
        match r {
            Push::Done(after) => {
                if after.gp != GpAction::Nothing || after.kick || after.help {
                    self.follow_up(i, after);
                }
                if crate::pressure::over_budget_sampled() {
                    // Outside RCU read-side sections only may the enqueuer wait. (A caller
                    // inside a section of another flavor is not seen here: its wait is bounded,
                    // and it never drives a grace period synchronously.)
                    crate::pressure::enforce(&**self, !crate::rcu::is_reading());
                }
                Ok(())
            }
            // SAFETY: forwarded from the caller.
            Push::NeedChunk { kick } => unsafe { self.enqueue_slow(p, kick) },
        }
    }

    /// A chunk boundary with no spare: allocate outside the lock and retry; if chunks cannot
    /// be had, use a fallback node; if that fails too, give `p` back.
    ///
    /// # Safety
    ///
    /// As [`Inner::enqueue_ptr`].
    #[cold]
    #[inline(never)]
    unsafe fn enqueue_slow(self: &Arc<Self>, p: *mut T, kick: bool) -> Result<(), *mut T> {
        if kick {
            self.kick(false);
        }
        let c = &self.counters;
        loop {
            let mut prealloc = match FreeChunk::try_new() {
                Ok(chunk) => {
                    bump(&c.chunks_allocated, 1);
                    Some(chunk)
                }
                Err(_) => {
                    bump(&c.chunk_alloc_failures, 1);
                    break;
                }
            };
            // We may be on another CPU now; any shard will do, the chunk goes where we are.
            let i = self.shard_index();
            let r = lock(&self.shards[i]).push(p.cast(), &self.flavor, &mut prealloc);
            drop(prealloc.take()); // not used, and no room for a spare: freed outside the lock
            match r {
                Push::Done(after) => {
                    self.follow_up(i, after);
                    return Ok(());
                }
                // Only when `prealloc` was empty, which it was not; but stay correct.
                Push::NeedChunk { kick } => {
                    if kick {
                        self.kick(false);
                    }
                }
            }
        }
        match FreeNode::try_new(p.cast()) {
            Ok(node) => {
                let i = self.shard_index();
                let after = lock(&self.shards[i]).push_node(node, &self.flavor);
                self.follow_up(i, after);
                Ok(())
            }
            Err(_) => {
                bump(&c.node_alloc_failures, 1);
                Err(p)
            }
        }
    }

    /// The chicken switch (batching off): queue `p` alone, with a callback of the flavor that
    /// processes it after the grace period. Never runs it on this thread (`call_offloaded`).
    ///
    /// # Safety
    ///
    /// As [`Inner::enqueue_ptr`]; ownership of `p` passes to the callback.
    #[cold]
    #[inline(never)]
    unsafe fn enqueue_unbatched(self: &Arc<Self>, p: *mut T) {
        let c = &self.counters;
        bump(&c.unbatched, 1);
        // Relaxed: a count; the decrement that pairs with teardown's Acquire load is Release.
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        // Relaxed: a statistic.
        c.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let me = Arc::clone(self);
        let obj = Unbatched(p);
        self.flavor
            .call_offloaded(move || me.process_unbatched(obj));
    }

    /// The per-object callback of the chicken switch: a grace period has ended since `obj`
    /// was enqueued.
    fn process_unbatched(&self, obj: Unbatched<T>) {
        self.process_one(obj.0);
        bump(&self.counters.processed, 1);
        // Release: pairs with the Acquire load in `teardown`.
        self.counters.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// The last resort of `enqueue`: wait for a grace period here, then process `p` here.
    #[cold]
    #[inline(never)]
    fn synchronous(&self, p: *mut T) {
        let cookie = self.flavor.get_state();
        // A panic here (the flavor refusing to wait) leaks `p`: never an early free.
        self.flavor.cond_synchronize(cookie);
        bump(&self.counters.synchronous, 1);
        self.process_one(p);
        bump(&self.counters.processed, 1);
    }

    /// Carry out what a shard operation asked for, after its lock was released.
    fn follow_up(self: &Arc<Self>, shard: usize, after: After) {
        if after.kick {
            self.kick(false);
        }
        match after.gp {
            GpAction::Nothing => {}
            GpAction::Call => self.arm(shard),
            GpAction::StartPoll => {
                let _ = self.flavor.start_poll();
            }
        }
        if after.help {
            self.help(shard);
        }
        if let Some(held) = after.held_at_chunk {
            self.check_flood(held);
        }
    }

    /// The kernel's flood response for one shard holding `held` objects: over the thresholds,
    /// expedite the grace periods they wait for (objects waiting on a normal one complete on
    /// the expedited one) and wake the worker; under half of them, leave flood mode.
    #[cold]
    fn check_flood(&self, held: u64) {
        let bytes = held.saturating_mul(std::mem::size_of::<T>() as u64);
        // Relaxed: a hint; it only decides whether to expedite again.
        if crate::pressure::is_flood(held, bytes) {
            if !self.flooded.swap(true, Ordering::Relaxed) {
                crate::pressure::count_flood();
                self.flavor.expedite_pending();
                self.wake_worker();
            }
        } else if !crate::pressure::is_flood(2 * held, 2 * bytes) {
            self.flooded.store(false, Ordering::Relaxed);
        }
    }

    /// Whether enqueuing threads may process expired objects themselves: only when processing
    /// is a plain deallocation (`Process::free` of a `T` without drop glue). That runs no user
    /// code, so it cannot block (on readers, on a lock the enqueuer holds), call back into this
    /// `Pending`, or panic, and is sound anywhere, inside a read-side section included: the
    /// objects' grace periods have already ended. Process closures, `Run` objects and `Drop`
    /// impls keep running on the worker only, as documented.
    const fn may_help() -> bool {
        !std::mem::needs_drop::<T>()
    }

    /// Backpressure: the shard's expired backlog is over its bound, so this enqueuer frees a
    /// bounded slice of it ([`HELP_CHUNKS`] chunks) outside the lock, like the kernel's
    /// enqueue doing work inline, instead of letting a single worker fall further behind.
    #[cold]
    #[inline(never)]
    fn help(&self, shard: usize) {
        if !Self::may_help() || !matches!(self.process, Kind::Free) {
            return;
        }
        let n = self.process_slice(lock(&self.shards[shard]), shard, false);
        bump(&self.counters.helped, n);
    }

    /// Take a bounded slice ([`HELP_CHUNKS`] chunks; the fallback nodes too with `nodes`) of
    /// shard `shard`'s expired objects under `l`, and process it on this thread after
    /// unlocking; returns how many were processed.
    fn process_slice(
        &self,
        mut l: crate::sync::MutexGuard<'_, ShardState<CHUNK_SLOTS>>,
        shard: usize,
        nodes: bool,
    ) -> u64 {
        let mut batch = l.take_expired_slice(&self.flavor, HELP_CHUNKS, nodes);
        drop(l);
        let n = batch.len() as u64;
        let mut pile = ChunkPile::new();
        batch.drain(|p| self.process_one(p.cast()), |c| pile.push(c));
        bump(&self.counters.processed, n);
        if !pile.is_empty() {
            lock(&self.shards[shard]).recycle(&mut pile);
        }
        drop(pile); // what did not fit as spares, freed outside the lock
        n
    }

    /// Process up to about `max` expired objects of every shard on this thread, whatever the
    /// process mode (an enqueuer over the memory budget, the shrinker); never waits for a
    /// shard lock. Returns how many were processed.
    fn process_here(&self, max: u64) -> u64 {
        let mut done = 0;
        for s in 0..self.shards.len() {
            while done < max {
                let l = match self.shards[s].try_lock() {
                    Ok(l) => l,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => break,
                };
                let n = self.process_slice(l, s, true);
                if n == 0 {
                    break;
                }
                done += n;
            }
        }
        done
    }

    /// Queue shard `shard`'s re-arming callback. Its closure is an `Arc` and an index, small
    /// enough for the flavor to store without allocating.
    #[cold]
    fn arm(self: &Arc<Self>, shard: usize) {
        self.ensure_worker();
        let me = Arc::clone(self);
        self.flavor.call_offloaded(move || me.after_gp(shard));
    }

    /// The re-arming callback: a grace period has ended since it was queued. Move what is due
    /// to the expired batch and wake the worker; queue again while objects still wait.
    fn after_gp(self: Arc<Self>, shard: usize) {
        let (kick, rearm) = lock(&self.shards[shard]).after_gp(&self.flavor);
        if kick {
            self.kick(true);
        }
        if rearm {
            let me = Arc::clone(&self);
            self.flavor.call_offloaded(move || me.after_gp(shard));
        }
    }

    /// Start the worker thread on first use, or settle for inline processing if it cannot be
    /// started. Starting it counts as a fallible allocation for failure injection.
    fn ensure_worker(self: &Arc<Self>) {
        self.mode.get_or_init(|| {
            if crate::alloc::try_box((), "the pending worker thread").is_err() {
                return Mode::Inline;
            }
            let me = Arc::clone(self);
            crate::sys::thread_starting();
            match std::thread::Builder::new()
                .name("grace-pending".into())
                .spawn(move || me.worker_main())
            {
                Ok(handle) => {
                    *lock(&self.thread) = Some(handle);
                    Mode::Thread
                }
                Err(_) => Mode::Inline,
            }
        });
    }

    fn mode(&self) -> Mode {
        self.mode.get().copied().unwrap_or(Mode::Inline)
    }

    /// Ask for a processing pass (objects were moved to an expired batch). `here`: the caller
    /// is a flavor callback (`after_gp`), which runs in no caller's section and holds no
    /// caller's lock. Without a worker thread the pass runs there; from an enqueue it is handed
    /// to a flavor callback instead, so that user code never runs inside `enqueue`, in the
    /// enqueuer's read-side section or under its locks.
    fn kick(self: &Arc<Self>, here: bool) {
        let mut w = lock(&self.work);
        w.requested += 1;
        match self.mode() {
            Mode::Thread => self.work_cv.notify_all(),
            Mode::Inline if here => {
                w.handed_off = false;
                if !w.running {
                    drop(self.run_passes(w));
                }
            }
            Mode::Inline => {
                if !std::mem::replace(&mut w.handed_off, true) {
                    drop(w);
                    let me = Arc::clone(self);
                    self.flavor.call(move || me.kick(true));
                }
            }
        }
    }

    /// Ask the worker thread, if there is one, for a pass (the memory-pressure layer; without
    /// a worker, passes run on flavor callbacks, and the caller processes what it can itself).
    fn wake_worker(&self) {
        if self.mode() == Mode::Thread {
            lock(&self.work).requested += 1;
            self.work_cv.notify_all();
        }
    }

    /// Ask for a pass and wait until one that began after the request has completed.
    fn flush(&self) {
        let mut w = lock(&self.work);
        w.requested += 1;
        let target = w.requested;
        match self.mode() {
            Mode::Thread => self.work_cv.notify_all(),
            Mode::Inline => {
                if !w.running {
                    w = self.run_passes(w);
                }
            }
        }
        while w.done < target {
            w = wait(&self.work_cv, w);
        }
    }

    /// Run passes until none is owed. Called with `running == false`; returns the lock.
    fn run_passes<'a>(&'a self, mut w: MutexGuard<'a, Work>) -> MutexGuard<'a, Work> {
        w.running = true;
        loop {
            let target = w.requested;
            drop(w);
            self.process_all();
            w = lock(&self.work);
            w.done = target;
            self.work_cv.notify_all();
            if w.requested == target {
                break;
            }
        }
        w.running = false;
        w
    }

    fn worker_main(self: Arc<Self>) {
        crate::callback::mark_worker();
        let mut w = lock(&self.work);
        loop {
            if w.done < w.requested && !w.running {
                w = self.run_passes(w);
            } else if w.stop && !w.running {
                break;
            } else {
                w = wait(&self.work_cv, w);
            }
        }
    }

    fn stop_worker(&self) {
        lock(&self.work).stop = true;
        self.work_cv.notify_all();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// One pass: for every shard, take its expired batch in slices of [`WORKER_CHUNKS`]
    /// chunks and process each outside the lock, until the shard has nothing expired left.
    /// Slices keep the rest of the backlog in the shard, where enqueuers can help with it.
    fn process_all(&self) {
        for shard in self.shards.iter() {
            loop {
                let mut batch = lock(shard).take_expired_slice(&self.flavor, WORKER_CHUNKS, true);
                let n = batch.len() as u64;
                let mut pile = ChunkPile::new();
                batch.drain(|p| self.process_one(p.cast()), |c| pile.push(c));
                bump(&self.counters.processed, n);
                if !pile.is_empty() {
                    lock(shard).recycle(&mut pile);
                }
                drop(pile); // what did not fit as spares, freed outside the lock
                if n == 0 {
                    break;
                }
            }
        }
    }

    /// Process one object whose grace period has ended. Never unwinds.
    fn process_one(&self, p: *mut T) {
        // SAFETY: `p` came from Box::into_raw (enqueue's contract); its grace period has ended
        // (it was taken from an expired batch, or `synchronous` waited, or it is the object of
        // its own flavor callback under the chicken switch), so no reader can still hold a
        // reference; it was removed from the shard under its lock (or owned by that callback
        // alone), so this is its only processing.
        let obj = unsafe { Box::from_raw(p) };
        let me = self as *const Self as *const ();
        let outer = PROCESSING.with(|c| c.replace(me));
        let r = catch_unwind(AssertUnwindSafe(|| match &self.process {
            Kind::Free => drop(obj),
            Kind::With(f) => f(obj),
            Kind::Run(f) => f(obj),
        }));
        PROCESSING.with(|c| c.set(outer));
        if let Err(payload) = r {
            self.process_panicked(payload);
        }
    }

    #[cold]
    fn process_panicked(&self, payload: Box<dyn std::any::Any + Send>) {
        bump(&self.counters.process_panics, 1);
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".into());
        // The payload's own Drop may panic too; such a second payload is leaked.
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
        crate::sys::report(format_args!(
            "grace: a Pending process function panicked ({msg}); caught, the other objects \
             are still processed"
        ));
    }

    /// Dequeue from shard `i`: the newest waiting object that `pred` accepts.
    fn dequeue_from(
        &self,
        i: usize,
        pred: &mut dyn FnMut(*mut ()) -> bool,
    ) -> Option<(NonNull<T>, RawCookie)> {
        let mut garbage = Garbage::default();
        let r = lock(&self.shards[i]).pop_where(pred, &mut garbage);
        drop(garbage); // emptied chunks and the node, freed outside the lock
                       // Object pointers are never null (they come from boxes).
        r.and_then(|(p, c)| NonNull::new(p.cast::<T>()).map(|p| (p, c)))
    }
}

/// An object travelling alone in its callback (the chicken switch).
struct Unbatched<T>(*mut T);

// SAFETY: the callback owns the object (a `Box<T>` given up by the enqueuer) and is its only
// user until it processes it; moving that ownership to another thread needs only `T: Send`.
unsafe impl<T: Send> Send for Unbatched<T> {}

/// Wait on a condition variable, ignoring poisoning (as [`lock`] does).
fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(g) {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// An object taken back by [`Pending::dequeue`] before its grace period ended.
///
/// Readers that found it earlier may still be reading it, so the handle gives only shared
/// access (`Deref<Target = T>`): update it through interior mutability, as readers of a
/// type-stable object must expect it to change under them. It turns into a `Box<T>` only after
/// its grace period ([`into_box`](Reused::into_box), [`try_into_box`](Reused::try_into_box)).
/// Dropping the handle hands the object back to its `Pending` ([`requeue`](Reused::requeue)),
/// so it is neither lost nor freed early.
///
/// # Examples
///
/// ```
/// use grace::pending::{Pending, Process};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
/// p.enqueue(Box::new(AtomicU32::new(0)));
/// let obj = p.dequeue().unwrap();
/// obj.fetch_add(1, Ordering::Relaxed);
/// obj.requeue(); // back to waiting; processed after a (new) grace period
/// # drop(p);
/// ```
pub struct Reused<'a, T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static = Rcu> {
    ptr: NonNull<T>,
    cookie: RawCookie,
    pending: &'a Pending<T, F>,
}

// SAFETY: the handle owns the object (moving it moves a T: Send) while other threads' readers
// may share it (T: Sync); the `&Pending` it carries is Sync.
unsafe impl<T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Send for Reused<'_, T, F> {}
// SAFETY: `&Reused` gives only `&T` (T: Sync) and shared use of the Pending.
unsafe impl<T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Sync for Reused<'_, T, F> {}

impl<'a, T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Reused<'a, T, F> {
    fn new(pending: &'a Pending<T, F>, ptr: NonNull<T>, cookie: RawCookie) -> Reused<'a, T, F> {
        Reused {
            ptr,
            cookie,
            pending,
        }
    }

    /// The cookie of the grace period the object was waiting for: once it has completed, no
    /// reader from before the object's enqueue can still hold it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// use grace::Flavor;
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(1u8));
    /// let r = p.dequeue().unwrap();
    /// p.flavor().cond_synchronize(r.cookie());
    /// assert!(r.grace_period_elapsed());
    /// # drop(r);
    /// ```
    pub fn cookie(&self) -> Cookie<F::Issuer> {
        self.pending.flavor().cookie_from_raw(self.cookie.raw())
    }

    /// Whether the grace period has ended, so [`try_into_box`](Reused::try_into_box) would
    /// succeed.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(1u8));
    /// let r = p.dequeue().unwrap();
    /// grace::rcu::synchronize();
    /// assert!(r.grace_period_elapsed());
    /// # drop(r);
    /// ```
    pub fn grace_period_elapsed(&self) -> bool {
        self.pending.inner.flavor.poll_state(self.cookie())
    }

    /// Wait for the grace period (if it has not ended yet) and take exclusive ownership.
    ///
    /// # Panics
    ///
    /// If it would wait and the flavor refuses to (the RCU flavor panics inside one of its
    /// read-side sections); the object then goes back to the `Pending`.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(String::from("x")));
    /// let mut owned = p.dequeue().unwrap().into_box();
    /// owned.push('y'); // exclusive access now
    /// assert_eq!(*owned, "xy");
    /// ```
    pub fn into_box(self) -> Box<T> {
        // If this panics, `self` is dropped while unwinding, which requeues the object.
        self.pending.inner.flavor.cond_synchronize(self.cookie());
        self.take_box()
    }

    /// Take exclusive ownership if the grace period has ended; otherwise give the handle back.
    ///
    /// # Errors
    ///
    /// `Err(self)` while the grace period is still running.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(9u16));
    /// let mut r = p.dequeue().unwrap();
    /// let owned = loop {
    ///     match r.try_into_box() {
    ///         Ok(b) => break b,
    ///         Err(back) => { r = back; grace::rcu::synchronize(); }
    ///     }
    /// };
    /// assert_eq!(*owned, 9);
    /// ```
    pub fn try_into_box(self) -> Result<Box<T>, Reused<'a, T, F>> {
        if self.grace_period_elapsed() {
            Ok(self.take_box())
        } else {
            Err(self)
        }
    }

    /// Hand the object back to its `Pending`, to wait for a grace period after now (what
    /// dropping the handle does).
    ///
    /// # Panics
    ///
    /// As [`Pending::enqueue`], on its last resort only.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(1u8));
    /// p.dequeue().unwrap().requeue();
    /// p.barrier();
    /// assert_eq!(p.stats().processed, 1);
    /// ```
    pub fn requeue(self) {
        drop(self)
    }

    /// Give up the handle for the raw pointer, to publish the recycled object again in an
    /// RCU-protected structure. The caller takes over the handle's obligations: the object
    /// may be read by readers of the old grace period until [`cookie`](Reused::cookie)
    /// completes, and when it is unpublished again it must go back to a `Pending` (with
    /// [`Pending::enqueue_raw`]) or wait for a grace period before being freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let p = Pending::with_shards(grace::Rcu, Process::free(), 1);
    /// p.enqueue(Box::new(1u8));
    /// let raw = p.dequeue().unwrap().into_raw();
    /// // ... published, used, unpublished again ...
    /// // SAFETY: came from into_raw and is not published.
    /// unsafe { p.enqueue_raw(raw) };
    /// ```
    pub fn into_raw(self) -> NonNull<T> {
        let p = self.ptr;
        std::mem::forget(self);
        p
    }

    fn take_box(self) -> Box<T> {
        let p = self.ptr;
        std::mem::forget(self);
        // SAFETY: callers checked that the grace period of `cookie` ended. The object was
        // unpublished before its enqueue, and a Reused hands out no reference that outlives
        // it, so no reader can hold a reference now; the pointer came from Box::into_raw and
        // ownership leaves the handle here, once.
        unsafe { Box::from_raw(p.as_ptr()) }
    }
}

impl<T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Deref for Reused<'_, T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the handle owns the live object; only shared references to it exist (the
        // handle's and those of readers from before its enqueue), and they are compatible.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Send + Sync + 'static, F: Flavor + Send + Sync + 'static> Drop for Reused<'_, T, F> {
    fn drop(&mut self) {
        // SAFETY: the object came from Box::into_raw, is owned by this handle (so nothing else
        // frees or enqueues it) and is not published (it was unpublished before its first
        // enqueue, and the handle never republishes it).
        unsafe { self.pending.enqueue_raw(self.ptr) };
    }
}

impl<T: Send + Sync + fmt::Debug + 'static, F: Flavor + Send + Sync + 'static> fmt::Debug
    for Reused<'_, T, F>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reused")
            .field("value", &**self)
            .field("cookie", &self.cookie)
            .finish()
    }
}

/// An enqueuer over the memory budget helps by processing expired objects itself, and expedites
/// by starting the grace period its objects wait for (never synchronously: the caller may be
/// inside a read-side section of this `Pending`'s flavor, which grace cannot see for every
/// flavor).
impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> crate::pressure::Helper for Inner<T, F> {
    fn help(&self, max: u64) -> u64 {
        self.process_here(max)
    }
    fn expedite(&self) {
        self.flavor.expedite_pending();
        self.wake_worker();
    }
}

impl<T: Send + 'static, F: Flavor + Send + Sync + 'static> crate::pressure::Source for Inner<T, F> {
    fn kind(&self) -> crate::pressure::Kind {
        crate::pressure::Kind::Pending
    }
    fn name(&self) -> String {
        format!(
            "Pending<{}, {}>",
            std::any::type_name::<T>(),
            std::any::type_name::<F>()
        )
    }
    fn counts(&self) -> crate::pressure::Counts {
        let objects: u64 = self.shards.iter().map(|s| lock(s).len() as u64).sum();
        crate::pressure::Counts {
            objects,
            bytes: objects * std::mem::size_of::<T>() as u64,
        }
    }
    fn shrink(&self, n: u64) -> u64 {
        let _ = self.flavor.start_poll();
        self.wake_worker();
        self.process_here(n)
    }
}
