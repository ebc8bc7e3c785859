//! Sleepable RCU: independent domains whose readers may block.
//!
//! An [`Srcu`] domain has its own readers and its own grace periods. A reader that sleeps,
//! blocks on I/O or holds its section across an `.await` delays the grace periods of *its*
//! domain only: never those of another domain, nor of [`crate::rcu`]. The API is the RCU
//! flavor's ([`Flavor`](crate::Flavor)): `synchronize`, `synchronize_expedited`, polled cookies, `call`,
//! `call_hurry`, `barrier`.
//!
//! ```
//! use grace::srcu::Srcu;
//! use grace::Flavor;
//!
//! let domain = Srcu::new()?;
//! {
//!     let guard = domain.read_lock();
//!     // ... read data protected by `domain`; sleeping here is allowed ...
//!     drop(guard);
//! }
//! domain.synchronize(); // waits for this domain's readers only
//! # Ok::<(), grace::srcu::SrcuError>(())
//! ```
//!
//! # Readers
//!
//! * [`Srcu::read_lock`] returns an [`SrcuGuard`] holding the index; sections nest and may
//!   sleep. The guard stays on its thread (`!Send`), like an RCU guard.
//! * [`Srcu::read_lock_raw`] / [`Srcu::read_unlock_raw`] let a section end on another thread
//!   (the kernel allows `srcu_read_unlock` on another task): the [`SrcuToken`] is `Send`, has
//!   no lifetime, and must be given back to the same domain. This is the form for a section
//!   held across an `.await` in a work-stealing runtime. Neither function is `unsafe`: a lost
//!   token blocks the domain's grace periods, it cannot free anything early.
//! * Two reader kinds, chosen by type: [`Srcu`] (`Srcu<Regular>`) executes a full fence when a
//!   section starts, so its grace periods need no system call; [`SrcuLite`] (`Srcu<Lite>`,
//!   the kernel's `srcu_read_lock_lite`) executes only a compiler fence and its updater pays
//!   with `membarrier`. Read-mostly domains want lite; domains with frequent grace periods
//!   want regular. The kind is part of the type, so a domain can never mix the two (the
//!   kernel checks that at run time).
//!
//! # Layout: reader-hot, updater-cold (as the kernel's `srcu_struct` / `srcu_usage` split)
//!
//! ```text
//!   Srcu (16 bytes, in your struct or static: block pointer and a copy of the id)
//!     └─► Block ─ hot line (readers): flip counter, domain id, fence flag   (one cache line)
//!           │   ─ shard registry, reference count
//!           └─► Cold (updater state, allocated on first update): grace-period machine and
//!               sequence, callback shards, service hooks, statistics
//!   per thread: Shard (lock/unlock counts for both indices), found through a thread-local
//!               cache keyed by domain id
//! ```
//!
//! A reader touches the 16-byte handle, one read-mostly cache line and its own thread's
//! shard. [`layout`] reports the sizes. The block lives on the heap so that it does not move
//! when the `Srcu` value moves (the background service keeps a pointer to it).
//!
//! # Construction
//!
//! * [`Srcu::new`] allocates the block and the updater state up front and returns
//!   [`SrcuError`] if any allocation fails, having freed everything it allocated (partial
//!   work leaked on an error path is a classic bug of C constructors such as
//!   `init_srcu_struct`; here ownership frees it, and the tests fail each allocation point in
//!   turn and count bytes).
//! * [`Srcu::new_static`] is a `const fn` for `static` domains (the kernel's
//!   `DEFINE_STATIC_SRCU`): nothing is
//!   allocated until first use, no start-up hook is needed, and the updater state appears on
//!   the first update-side call.
//!
//! # Drop
//!
//! Dropping a domain first waits for its callbacks (a `barrier`), then frees it. A domain on
//! which `call` was never used skips that: a flag set by the first `call` says so, and no
//! callback shard is scanned. Dropping a domain while a section is still open is impossible
//! with guards (they borrow the domain); with a raw token left unreleased (or a guard passed
//! to `mem::forget`) it is reported on standard error and the domain is leaked, never freed
//! under a reader.
//!
//! # Grace periods
//!
//! The two-index flip of the kernel's SRCU, as a state machine that never blocks (see the
//! `gp` submodule): `synchronize` drives it from the calling thread; domains with callbacks
//! or polled cookies are driven by a background service shared by all domains, which visits
//! each domain briefly and never waits for a reader.
//!
//! The ordering guarantee is [`crate::rcu`]'s: a section that began before a grace period
//! started ends before the grace period does, and happens-before whatever follows it.
//!
//! # Callbacks, and memory under pressure
//!
//! `call` queues on a per-CPU shard of the domain, lazily (the first callback of a node
//! schedules a visit `GRACE_LAZY_MS` later; `call_hurry` at once). Callbacks always run on
//! grace's SRCU worker threads once their grace period has ended, never on the thread that
//! queued them: this is what the kernel does for SRCU too (its callbacks run from a workqueue,
//! not from the softirq RCU's run in), and it keeps a thread inside a section of a domain
//! from running that domain's callbacks, which may wait for one of its grace periods.
//! ([`crate::rcu`]'s callbacks, by contrast, run on the queuing thread by default; see
//! `rcu::Invocation`.)
//!
//! Each domain is its own row in [`grace::report()`](crate::report()) (pending callbacks and
//! bytes, grace periods, how long the running one has waited for readers, flood mode) and in
//! [`Srcu::stats`]. It has the memory-pressure layer's defences ([`crate::pressure`]): a shard
//! over the flood thresholds, or callbacks arriving faster than the flood rate, put the
//! domain in flood mode (lazy callbacks go at once, the grace period is polled as an
//! expedited one); an enqueuer over the memory budget expedites; and the shrinker
//! ([`crate::pressure::scan`]) flushes every domain's lazy callbacks, hands what is ready to
//! the workers and expedites the rest.
//!
//! Waiting for a grace period of a domain from inside a section of *the same domain* on the
//! same thread waits forever (as in the kernel); unlike RCU this is not detected, because a
//! section may legitimately be closed by another thread.

// Under loom only the state machine and the shards are modelled; their users are compiled out.
#[cfg_attr(loom, allow(dead_code))]
mod gp;
#[cfg_attr(loom, allow(dead_code))]
mod shard;
#[cfg(all(test, loom))]
mod tests;

#[cfg(not(loom))]
mod service;

pub use gp::SrcuPhase;

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use super::gp::{Fences, Machine, ReaderSide};
    use super::service::{service, Service, IN_SRCU_CALLBACK};
    use super::shard::{cached, count_unlock_at, local, unlock_index, Registry, Shard};
    use super::SrcuPhase;
    use crate::alloc::{try_box, try_vec, AllocError};
    use crate::callback::engine::{claim_for_worker, run_caught, BarrierState};
    use crate::callback::seglist::{Node, SegList};
    use crate::callback::Callback;
    use crate::cookie::{self, Cookie, Issuer};
    use crate::flavor::Flavor;
    use crate::gp::{seq, Backoff};
    use crate::sync::{
        compiler_fence, fence, lock, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
        Mutex, Ordering,
    };
    use crate::sys::{self, BarrierMode};
    use crossbeam_utils::CachePadded;
    use std::fmt;
    use std::marker::PhantomData;
    use std::ptr::{self, NonNull};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    mod sealed {
        pub trait Sealed {}
    }

    /// The reader kind of a domain: [`Regular`] or [`Lite`]. Sealed.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::srcu::{Lite, ReaderKind, Regular};
    /// assert!(!Regular::LITE && Lite::LITE);
    /// ```
    pub trait ReaderKind: sealed::Sealed + Send + Sync + 'static {
        /// Readers skip the full fence; the updater uses `membarrier` instead.
        const LITE: bool;
    }

    /// Readers execute a full fence at the start of each section; grace periods need no
    /// system call. The default kind of [`Srcu`].
    ///
    /// # Examples
    ///
    /// ```
    /// let d: grace::srcu::Srcu<grace::srcu::Regular> = grace::srcu::Srcu::new().unwrap();
    /// drop(d.read_lock());
    /// ```
    #[derive(Debug)]
    pub enum Regular {}
    /// Readers execute only a compiler fence; each grace period's checks use the heavy
    /// barrier (`membarrier`) instead (the kernel's `srcu_read_lock_lite`).
    ///
    /// # Examples
    ///
    /// ```
    /// let d = grace::srcu::SrcuLite::new_lite().unwrap();
    /// drop(d.read_lock());
    /// ```
    #[derive(Debug)]
    pub enum Lite {}
    impl sealed::Sealed for Regular {}
    impl sealed::Sealed for Lite {}
    impl ReaderKind for Regular {
        const LITE: bool = false;
    }
    impl ReaderKind for Lite {
        const LITE: bool = true;
    }

    /// An SRCU domain whose readers use the lite (fence-free) read side.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::srcu::SrcuLite;
    /// static DOMAIN: SrcuLite = SrcuLite::new_static_lite();
    /// drop(DOMAIN.read_lock());
    /// DOMAIN.synchronize();
    /// ```
    pub type SrcuLite = Srcu<Lite>;

    /// Creating a domain failed; everything allocated on the way was freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::alloc::{inject, FailurePlan};
    /// let _fail = inject(FailurePlan::Nth(1));
    /// let err = grace::srcu::Srcu::new().unwrap_err();
    /// assert!(err.to_string().starts_with("cannot create an SRCU domain: out of memory"));
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SrcuError {
        /// An allocation failed.
        OutOfMemory(AllocError),
    }

    impl fmt::Display for SrcuError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                SrcuError::OutOfMemory(e) => write!(f, "cannot create an SRCU domain: {e}"),
            }
        }
    }

    impl std::error::Error for SrcuError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                SrcuError::OutOfMemory(e) => Some(e),
            }
        }
    }

    impl From<AllocError> for SrcuError {
        fn from(e: AllocError) -> SrcuError {
            SrcuError::OutOfMemory(e)
        }
    }

    /// Sizes of a domain's parts, in bytes (see "Layout" in the module docs).
    ///
    /// # Examples
    ///
    /// ```
    /// let l = grace::srcu::layout();
    /// assert_eq!(l.handle, 16);
    /// assert!(l.hot <= 64, "what readers touch fits in one cache line");
    /// assert!(l.cold > l.hot);
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Layout {
        /// The `Srcu` value itself.
        pub handle: usize,
        /// The fields readers read on every lock (alone on their cache line).
        pub hot: usize,
        /// The whole block: hot line, shard registry, orphan shard, reference count.
        pub block: usize,
        /// The updater state, allocated on the first update-side call (not counting the
        /// callback shards it points to).
        pub cold: usize,
        /// One callback shard (one per CPU).
        pub callback_shard: usize,
        /// One reader shard (one per thread that reads the domain).
        pub reader_shard: usize,
    }

    /// The sizes of a domain's parts.
    ///
    /// # Examples
    ///
    /// ```
    /// println!("{:?}", grace::srcu::layout());
    /// ```
    pub fn layout() -> Layout {
        use std::mem::size_of;
        Layout {
            handle: size_of::<Srcu>(),
            hot: size_of::<Hot>(),
            block: size_of::<Block>(),
            cold: size_of::<Cold>(),
            callback_shard: size_of::<CachePadded<Mutex<CbShard>>>(),
            reader_shard: size_of::<super::shard::Shard>(),
        }
    }

    /// An SRCU domain. See the [module documentation](crate::srcu).
    ///
    /// # Examples
    ///
    /// A static domain, and a callback that runs once no reader can see the old value:
    ///
    /// ```
    /// use grace::srcu::Srcu;
    /// use grace::Flavor;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// static CONFIG_DOMAIN: Srcu = Srcu::new_static();
    ///
    /// let freed = Arc::new(AtomicBool::new(false));
    /// let f = freed.clone();
    /// CONFIG_DOMAIN.call(move || f.store(true, Ordering::Relaxed));
    /// CONFIG_DOMAIN.barrier();
    /// assert!(freed.load(Ordering::Relaxed));
    /// ```
    pub struct Srcu<K: ReaderKind = Regular> {
        /// The heap block (null until first use for a static domain). Holds one reference.
        block: AtomicPtr<Block>,
        /// A copy of the block's id word (0 until the block is installed), so that the read
        /// side can look up its shard without waiting for the block pointer's load.
        id: AtomicU64,
        _kind: PhantomData<K>,
    }

    /// Read on every lock; written by grace periods (flips) only.
    #[repr(C)]
    struct Hot {
        /// Index flips so far; readers use the low bit.
        flips: AtomicU64,
        /// The domain's id (never 0, never reused; keys the thread-local shard cache), with
        /// [`FENCE_READERS`] set when lite readers must execute real fences (the process is
        /// in fence mode). One word, so the lite fast path loads it once for both uses.
        id: u64,
    }

    /// In [`Hot::id`]: lite readers fence.
    const FENCE_READERS: u64 = 1 << 63;

    struct Block {
        hot: CachePadded<Hot>,
        registry: Registry,
        /// References: the `Srcu`, the service while registered, each queued worker job.
        refs: AtomicUsize,
        /// This block, as `Box::into_raw` returned it: references are made from it, since one
        /// derived from `&Block` could not free the allocation. Set once, before the block is
        /// shared.
        this: AtomicPtr<Block>,
        /// Null until the first update-side call (or created by `Srcu::new`).
        cold: AtomicPtr<Cold>,
        fences: Fences,
        lazy_delay: Duration,
    }

    /// A callback shard: a segmented list plus the node being filled.
    struct CbShard {
        list: SegList,
        /// Callbacks queued since the last seal; they get their cookie when sealed.
        open: Option<Box<Node>>,
        queued: u64,
    }

    /// Callbacks per node: nodes are allocated outside the shard lock, one per this many.
    const CB_NODE: usize = 64;

    /// Every SRCU domain's callbacks together, for the memory-pressure layer: queued and
    /// invoked callbacks, and the bytes of their closures (`size_of_val`), written under the
    /// shard lock or per invoked node, so they cost the `call` path one uncontended add.
    struct SrcuTotals {
        queued: AtomicU64,
        queued_bytes: AtomicU64,
        invoked: AtomicU64,
        invoked_bytes: AtomicU64,
    }

    static TOTALS: SrcuTotals = SrcuTotals {
        queued: AtomicU64::new(0),
        queued_bytes: AtomicU64::new(0),
        invoked: AtomicU64::new(0),
        invoked_bytes: AtomicU64::new(0),
    };

    /// What an SRCU `call` over the memory budget does (see `Block::call`).
    struct SrcuHelper<'a> {
        block: &'a Block,
        cold: &'a Cold,
    }

    impl crate::pressure::Helper for SrcuHelper<'_> {
        fn help(&self, _max: u64) -> u64 {
            0
        }
        fn expedite(&self) {
            self.block.seal_all(self.cold);
            // Relaxed: a hint for the service's poll interval, cleared when it is reached.
            self.cold.hurry_once.store(true, Ordering::Relaxed);
            self.block.request_visit(self.cold, Instant::now());
        }
    }

    /// What SRCU callbacks of every domain hold back now, for `crate::pressure`.
    pub(crate) fn pressure_counts() -> crate::pressure::Counts {
        // Relaxed: statistics; invoked first, so the differences never go negative.
        let invoked = TOTALS.invoked.load(Ordering::Relaxed);
        let invoked_bytes = TOTALS.invoked_bytes.load(Ordering::Relaxed);
        crate::pressure::Counts {
            objects: TOTALS
                .queued
                .load(Ordering::Relaxed)
                .saturating_sub(invoked),
            bytes: TOTALS
                .queued_bytes
                .load(Ordering::Relaxed)
                .saturating_sub(invoked_bytes),
        }
    }

    /// The shrinker for every SRCU domain that has callbacks (see `Block::shrink`); returns
    /// the ready callbacks handed to the workers. Starts nothing if no domain ever queued one.
    pub(crate) fn shrink() -> u64 {
        super::service::started().map_or(0, |svc| svc.domains().iter().map(DomainRef::shrink).sum())
    }

    /// One row per SRCU domain that has used `call` or `start_poll`, for `grace::report()`.
    pub(crate) fn domain_reports() -> Vec<crate::report::SrcuDomainReport> {
        super::service::started().map_or_else(Vec::new, |svc| {
            svc.domains().iter().map(DomainRef::report).collect()
        })
    }

    struct Cold {
        machine: Mutex<Machine>,
        /// Grace-period sequence (`gp::seq` layout). Written under `machine`.
        seq: AtomicU64,
        /// The newest snapshot a `start_poll` asked the service to reach.
        needed: Mutex<Option<u64>>,
        cbs: Box<[CachePadded<Mutex<CbShard>>]>,
        /// Set by the first `call`: drop and barrier skip the shards when
        /// it is clear.
        call_used: AtomicBool,
        /// Registered with the background service.
        registered: AtomicBool,
        /// When the service should visit next.
        due: Mutex<Option<Instant>>,
        /// Visits in a row that found readers inside (the service's back-off).
        waits: AtomicU32,
        expedite_waiters: AtomicUsize,
        invoked: AtomicU64,
        /// Bytes of the closures queued and invoked in this domain (`size_of_val`, or what
        /// `call_sized` stated): the domain's row in `grace::report()`.
        queued_bytes: AtomicU64,
        invoked_bytes: AtomicU64,
        /// Flood mode: a shard's callbacks passed the flood thresholds, or the domain's
        /// enqueue rate did (`crate::pressure`). While set, the service polls the running
        /// grace period as an expedited one does and lazy callbacks are not held back.
        /// Cleared by a visit that finds every shard under half the thresholds.
        flood: AtomicBool,
        /// Times flood mode was entered.
        floods: AtomicU64,
        /// The shrinker asked for speed: poll like an expedited grace period until the
        /// wanted one is reached.
        hurry_once: AtomicBool,
        /// (callbacks queued, when) at the last rate check, for the flood rate.
        rate_mark: Mutex<(u64, Instant)>,
        panics: AtomicU64,
        /// How long the running grace period has waited for readers: stall warnings.
        watch: crate::report::SrcuWatch,
    }

    /// Ids are multiples of [`super::shard::ID_STEP`] (see there); 0 is never used.
    static NEXT_ID: AtomicU64 = AtomicU64::new(super::shard::ID_STEP);

    impl Block {
        fn new(lite: bool) -> Result<Box<Block>, AllocError> {
            let mode = crate::rcu::mode();
            // Relaxed: a unique number is all we need.
            let id = NEXT_ID.fetch_add(super::shard::ID_STEP, Ordering::Relaxed);
            try_box(
                Block {
                    hot: CachePadded::new(Hot {
                        flips: AtomicU64::new(0),
                        id: if mode == BarrierMode::Fence {
                            id | FENCE_READERS
                        } else {
                            id
                        },
                    }),
                    registry: Registry::new(),
                    refs: AtomicUsize::new(1),
                    this: AtomicPtr::new(ptr::null_mut()),
                    cold: AtomicPtr::new(ptr::null_mut()),
                    fences: if lite {
                        Fences::Lite(mode)
                    } else {
                        Fences::Regular
                    },
                    lazy_delay: crate::rcu::config().lazy_delay,
                },
                "the SRCU domain block",
            )
        }

        fn readers(&self) -> ReaderSide<'_> {
            ReaderSide {
                flips: &self.hot.flips,
                registry: &self.registry,
            }
        }

        /// This domain's cookie for sequence value `seq`.
        fn cookie<K: ReaderKind>(&self, seq: u64) -> SrcuCookie<K> {
            Cookie {
                seq,
                domain: self.hot.id & !FENCE_READERS,
            }
        }

        fn cold_ref(&self) -> Option<&Cold> {
            // Acquire: pairs with the Release CAS in `try_cold`.
            let p = self.cold.load(Ordering::Acquire);
            // SAFETY: once installed, the cold part lives as long as the block.
            unsafe { p.as_ref() }
        }

        /// The updater state, created if needed.
        fn try_cold(&self) -> Result<&Cold, AllocError> {
            if let Some(c) = self.cold_ref() {
                return Ok(c);
            }
            let fresh = Box::into_raw(Cold::new()?);
            // Release: publishes the initialized cold part (pairs with `cold_ref`).
            match self.cold.compare_exchange(
                ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // SAFETY: installed; it lives as long as the block.
                Ok(_) => Ok(unsafe { &*fresh }),
                Err(winner) => {
                    // SAFETY: ours lost the race and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    // SAFETY: the winner's, installed for the block's life.
                    Ok(unsafe { &*winner })
                }
            }
        }

        /// The updater state; on allocation failure, the process aborts like any failed
        /// `Box::new` (a static domain has no caller to report to).
        fn cold(&self) -> &Cold {
            match self.try_cold() {
                Ok(c) => c,
                Err(e) => {
                    let _ = e;
                    std::alloc::handle_alloc_error(std::alloc::Layout::new::<Cold>())
                }
            }
        }

        /// Leak `block` to the heap, recording its own address (see `this`).
        fn into_raw(block: Box<Block>) -> *mut Block {
            let raw = Box::into_raw(block);
            // SAFETY: fresh from Box::into_raw, not shared yet.
            // Relaxed: published with the block itself (Release CAS / Srcu construction).
            unsafe { &*raw }.this.store(raw, Ordering::Relaxed);
            raw
        }

        fn new_ref(&self) -> DomainRef {
            // Relaxed: a new reference is made from an existing one (the caller's), as Arc.
            self.refs.fetch_add(1, Ordering::Relaxed);
            // Relaxed: set before the block was shared.
            let this = self.this.load(Ordering::Relaxed);
            DomainRef(NonNull::new(this).expect("set by Block::into_raw"))
        }

        /// Drive grace periods from this thread until the sequence reaches `snap`.
        fn drive(&self, cold: &Cold, snap: u64, expedited: bool) {
            if expedited {
                // Relaxed: a hint to other drivers to stop sleeping.
                cold.expedite_waiters.fetch_add(1, Ordering::Relaxed);
            }
            let mut backoff = Backoff::new();
            let readers = self.readers();
            loop {
                if seq::done(cold.current(), snap) {
                    break;
                }
                if lock(&cold.machine).advance(&readers, &cold.seq, snap, self.fences) {
                    break;
                }
                self.note_wait(cold);
                // Relaxed: a hint.
                let hurry = expedited || cold.expedite_waiters.load(Ordering::Relaxed) > 0;
                backoff.wait(hurry);
            }
            if expedited {
                cold.expedite_waiters.fetch_sub(1, Ordering::Relaxed);
            }
        }

        fn request_visit(&self, cold: &Cold, at: Instant) {
            let changed = {
                let mut due = lock(&cold.due);
                match *due {
                    Some(d) if d <= at => false,
                    _ => {
                        *due = Some(at);
                        true
                    }
                }
            };
            if changed {
                service().kick();
            }
        }

        fn ensure_registered(&self, cold: &Cold) {
            // Relaxed: the swap decides who registers; registering twice is what it prevents.
            if !cold.registered.load(Ordering::Relaxed)
                && !cold.registered.swap(true, Ordering::Relaxed)
            {
                service().register(self.new_ref());
            }
        }

        /// Give every filled-in node its cookie and move it into its shard's list.
        fn seal_all(&self, cold: &Cold) {
            for shard in cold.cbs.iter() {
                let mut s = lock(shard);
                if s.open.as_ref().is_some_and(|n| !n.cbs.is_empty()) {
                    let node = s.open.take().expect("checked");
                    // Under the shard lock, so a shard's cookies never decrease (see
                    // callback::engine::Engine::push_to_shard).
                    let snap = cold.snapshot();
                    s.list.push(snap, node, cold.current());
                }
            }
        }

        fn call(&self, cb: Callback, bytes: u64, hurry: bool) {
            let cold = self.cold();
            if !cold.call_used.load(Ordering::Relaxed) {
                // Relaxed: read by drop/barrier of this domain, which happen-after every
                // `call` on it (the caller's synchronization: a drop needs the last reference).
                cold.call_used.store(true, Ordering::Relaxed);
            }
            self.ensure_registered(cold);
            let shard = &cold.cbs[sys::current_cpu() % cold.cbs.len()];
            let mut cb = Some(cb);
            let mut spare: Option<Box<Node>> = None;
            // Whether this call sealed a full node and found the shard over the flood
            // thresholds (checked once per node, not per call).
            let mut flooded = false;
            let first = loop {
                let mut s = lock(shard);
                if let Some(open) = s.open.as_mut() {
                    if open.cbs.len() < open.cbs.capacity() {
                        open.cbs.push(cb.take().expect("pushed once"));
                        open.bytes += bytes;
                        let first = open.cbs.len() == 1;
                        s.queued += 1;
                        // Relaxed: statistics.
                        TOTALS.queued.fetch_add(1, Ordering::Relaxed);
                        TOTALS.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                        cold.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                        break first;
                    }
                    let full = s.open.take().expect("checked");
                    let snap = cold.snapshot();
                    s.list.push(snap, full, cold.current());
                    let w = s.list.waiting();
                    flooded |= crate::pressure::is_flood(
                        w.gp_callbacks + w.ready_callbacks,
                        w.gp_bytes + w.ready_bytes,
                    );
                }
                if let Some(node) = spare.take() {
                    s.open = Some(node);
                    continue;
                }
                // Allocate outside the shard lock, then retry.
                drop(s);
                spare = Some(Node::new(Vec::with_capacity(CB_NODE)));
            };
            drop(spare);
            // Relaxed: a hint; the visit it asks for re-reads the shards under their locks.
            if flooded && !cold.flood.swap(true, Ordering::Relaxed) {
                cold.floods.fetch_add(1, Ordering::Relaxed);
                crate::pressure::count_flood();
                // Flood mode flushes what waits lazily at once.
                self.request_visit(cold, Instant::now());
            }
            if hurry {
                self.request_visit(cold, Instant::now());
            } else if first {
                // In flood mode lazy callbacks are not held back (Relaxed: a hint).
                let delay = if cold.flood.load(Ordering::Relaxed) {
                    Duration::ZERO
                } else {
                    self.lazy_delay
                };
                self.request_visit(cold, Instant::now() + delay);
            }
            if crate::pressure::over_budget_sampled() {
                // The caller may be inside a section of this very domain, which grace cannot
                // see: it never runs callbacks here, only starts the grace period at once,
                // and waits a bounded time, and not at all inside an RCU section or an SRCU
                // callback.
                let may_wait = !crate::rcu::is_reading()
                    && !IN_SRCU_CALLBACK.try_with(|c| c.get()).unwrap_or(true);
                crate::pressure::enforce(&SrcuHelper { block: self, cold }, may_wait);
            }
        }

        fn barrier(&self) {
            if IN_SRCU_CALLBACK.with(|c| c.get()) {
                panic!(
                    "grace: srcu barrier() called from inside an SRCU callback: it would wait \
                     for the callback that is running it (self-deadlock)"
                );
            }
            let Some(cold) = self.cold_ref() else { return };
            // Relaxed: see `call`.
            if !cold.call_used.load(Ordering::Relaxed) {
                return;
            }
            self.seal_all(cold);
            let state = Arc::new(BarrierState::default());
            let mut entrained = 0usize;
            // Sized before any shard lock is taken: nothing allocates under one.
            let mut jobs = Vec::with_capacity(cold.cbs.len());
            let mut spare: Option<Box<Node>> = None;
            for (i, shard) in cold.cbs.iter().enumerate() {
                let node = spare.take().unwrap_or_else(|| {
                    let s = state.clone();
                    Node::internal(Callback::new(move || s.arrive()))
                });
                let mut l = lock(shard);
                match l.list.entrain(node) {
                    Ok(()) => {
                        entrained += 1;
                        if claim_for_worker(&mut l.list) {
                            jobs.push((self.new_ref(), i));
                        }
                    }
                    Err(node) => spare = Some(node),
                }
            }
            if let Some(mut node) = spare {
                for cb in node.cbs.drain(..) {
                    cb.discard();
                }
            }
            service().queue(jobs);
            if entrained > 0 {
                self.request_visit(cold, Instant::now());
                state.wait_for(entrained);
            }
        }

        /// A visit by the background service. Returns when it wants the next one.
        fn visit(&self, now: Instant, svc: &Service) -> Option<Instant> {
            let cold = self.cold_ref()?;
            {
                let mut due = lock(&cold.due);
                match *due {
                    Some(d) if d <= now => *due = None,
                    other => return other,
                }
            }
            self.seal_all(cold);
            let mut target = *lock(&cold.needed);
            for shard in cold.cbs.iter() {
                if let Some(c) = lock(shard).list.newest_cookie() {
                    target = Some(match target {
                        Some(t) if seq::ge(t, c) => t,
                        _ => c,
                    });
                }
            }
            let reached = match target {
                None => true,
                Some(t) if seq::done(cold.current(), t) => true,
                Some(t) => match cold.machine.try_lock() {
                    Ok(mut m) => m.advance(&self.readers(), &cold.seq, t, self.fences),
                    Err(std::sync::TryLockError::Poisoned(p)) => {
                        p.into_inner()
                            .advance(&self.readers(), &cold.seq, t, self.fences)
                    }
                    // A `synchronize` caller is driving; look again soon.
                    Err(std::sync::TryLockError::WouldBlock) => false,
                },
            };
            if !reached {
                self.note_wait(cold);
            }
            let cur = cold.current();
            {
                let mut needed = lock(&cold.needed);
                if needed.is_some_and(|n| seq::done(cur, n)) {
                    *needed = None;
                }
            }
            // Sized before any shard lock is taken: nothing allocates under one.
            let mut jobs = Vec::with_capacity(cold.cbs.len());
            let mut more = false;
            let mut still_flooded = false;
            let mut queued = 0u64;
            for (i, shard) in cold.cbs.iter().enumerate() {
                let mut l = lock(shard);
                l.list.advance(cur);
                let w = l.list.waiting();
                // Hysteresis: flood mode ends once every shard is under half the thresholds.
                still_flooded |= crate::pressure::is_flood(
                    2 * (w.gp_callbacks + w.ready_callbacks),
                    2 * (w.gp_bytes + w.ready_bytes),
                );
                queued += l.queued;
                if claim_for_worker(&mut l.list) {
                    jobs.push((self.new_ref(), i));
                }
                more |= l.list.newest_cookie().is_some();
            }
            svc.queue(jobs);
            self.update_flood(cold, queued, now, still_flooded);
            if reached {
                // Relaxed: a hint, consumed once the wanted grace period is reached.
                cold.hurry_once.store(false, Ordering::Relaxed);
            }
            let next = if reached {
                // Relaxed: the back-off counter is the service's alone.
                cold.waits.store(0, Ordering::Relaxed);
                // More grace periods wanted (callbacks queued meanwhile): right away.
                more.then_some(now)
            } else {
                let n = cold.waits.fetch_add(1, Ordering::Relaxed);
                // Relaxed: hints.
                let hurry = cold.expedite_waiters.load(Ordering::Relaxed) > 0
                    || cold.flood.load(Ordering::Relaxed)
                    || cold.hurry_once.load(Ordering::Relaxed);
                let us = if hurry {
                    20
                } else {
                    (10u64 << n.min(7)).min(1000)
                };
                Some(now + Duration::from_micros(us))
            };
            let mut due = lock(&cold.due);
            if let Some(n) = next {
                *due = Some(due.map_or(n, |d| d.min(n)));
            }
            *due
        }

        /// Flood mode by rate (callbacks queued per second since the last check, over at
        /// least a millisecond), and its end by hysteresis (`still_flooded`: some shard is
        /// over half the thresholds). Called by a visit with no shard lock held.
        fn update_flood(&self, cold: &Cold, queued: u64, now: Instant, still_flooded: bool) {
            let fast = {
                let mut mark = lock(&cold.rate_mark);
                let elapsed = now.saturating_duration_since(mark.1);
                if elapsed >= Duration::from_millis(1) {
                    let fast = crate::pressure::is_flood_rate(queued - mark.0, elapsed);
                    *mark = (queued, now);
                    fast
                } else {
                    false
                }
            };
            // Relaxed: a hint read by `call` and by the next visit's poll interval.
            if fast {
                if !cold.flood.swap(true, Ordering::Relaxed) {
                    cold.floods.fetch_add(1, Ordering::Relaxed);
                    crate::pressure::count_flood();
                }
            } else if !still_flooded {
                cold.flood.store(false, Ordering::Relaxed);
            }
        }

        /// The shrinker's work on this domain: seal what waits lazily, poll the grace period
        /// as an expedited one would until it is reached, and hand every shard's ready
        /// callbacks to the workers now. Returns the callbacks handed over. Never waits.
        fn shrink(&self) -> u64 {
            let Some(cold) = self.cold_ref() else {
                return 0;
            };
            self.seal_all(cold);
            // Relaxed: a hint for the service's poll interval (see `visit`).
            cold.hurry_once.store(true, Ordering::Relaxed);
            let cur = cold.current();
            let mut jobs = Vec::with_capacity(cold.cbs.len());
            let mut handed = 0u64;
            for (i, shard) in cold.cbs.iter().enumerate() {
                let mut l = lock(shard);
                l.list.advance(cur);
                let ready = l.list.waiting().ready_callbacks;
                if claim_for_worker(&mut l.list) {
                    handed += ready;
                    jobs.push((self.new_ref(), i));
                }
            }
            service().queue(jobs);
            self.request_visit(cold, Instant::now());
            handed
        }

        /// This domain's row in `grace::report()`.
        fn report(&self) -> crate::report::SrcuDomainReport {
            let cold = self.cold_ref();
            let (queued, invoked, queued_bytes, invoked_bytes) = cold.map_or((0, 0, 0, 0), |c| {
                // Relaxed: statistics; invoked first, so the differences never go negative.
                let invoked = c.invoked.load(Ordering::Relaxed);
                let invoked_bytes = c.invoked_bytes.load(Ordering::Relaxed);
                let queued = c.cbs.iter().map(|s| lock(s).queued).sum::<u64>();
                (
                    queued,
                    invoked,
                    c.queued_bytes.load(Ordering::Relaxed),
                    invoked_bytes,
                )
            });
            crate::report::SrcuDomainReport {
                domain: self.hot.id & !FENCE_READERS,
                pending: crate::pressure::Counts {
                    objects: queued.saturating_sub(invoked),
                    bytes: queued_bytes.saturating_sub(invoked_bytes),
                },
                grace_periods: cold
                    .map_or(0, |c| seq::count(c.current().wrapping_sub(seq::INITIAL))),
                phase: cold.map_or(SrcuPhase::Idle, |c| lock(&c.machine).phase()),
                // Relaxed: diagnostics (the stall clock is keyed on the value).
                waiting_for_readers: cold
                    .and_then(|c| c.watch.waited(c.seq.load(Ordering::Relaxed))),
                // Relaxed: statistics.
                flood: cold.is_some_and(|c| c.flood.load(Ordering::Relaxed)),
                floods: cold.map_or(0, |c| c.floods.load(Ordering::Relaxed)),
                shards: cold.map_or_else(Vec::new, |c| {
                    c.cbs
                        .iter()
                        .enumerate()
                        .filter_map(|(i, shard)| {
                            // One look under the lock, so that the figures add up.
                            let (segs, w) = {
                                let l = lock(shard);
                                (l.list.segments(), l.list.waiting())
                            };
                            let segs = segs.into_iter().flatten().map(|(cookie, n, b)| {
                                (seq::count(cookie.wrapping_sub(seq::INITIAL)), n, b)
                            });
                            crate::report::ShardReport::new(
                                i,
                                segs,
                                w.ready_callbacks,
                                w.ready_bytes,
                            )
                        })
                        .collect()
                }),
            }
        }

        /// Readers still hold the running grace period: warn once if they have for longer
        /// than the stall threshold (called with no lock held).
        fn note_wait(&self, cold: &Cold) {
            // Relaxed: a snapshot for the stall clock, which keys on the value.
            let seq_now = cold.seq.load(Ordering::Relaxed);
            cold.watch.waiting(
                self.hot.id & !FENCE_READERS,
                seq::count(seq_now.wrapping_sub(seq::INITIAL)) + 1,
                seq_now,
            );
        }

        /// Invoke shard `idx`'s ready callbacks (a worker claimed it).
        fn invoke_shard(&self, idx: usize) {
            let Some(cold) = self.cold_ref() else { return };
            loop {
                let batch = {
                    let mut l = lock(&cold.cbs[idx]);
                    let b = l.list.take_done();
                    if b.is_empty() {
                        l.list.busy = false;
                        break;
                    }
                    b
                };
                for mut node in batch.into_nodes() {
                    let n = node.cbs.len() as u64;
                    for cb in node.cbs.drain(..) {
                        run_caught(cb, &cold.panics, "grace-srcu");
                    }
                    if !node.internal {
                        // Relaxed: statistics.
                        cold.invoked.fetch_add(n, Ordering::Relaxed);
                        cold.invoked_bytes.fetch_add(node.bytes, Ordering::Relaxed);
                        TOTALS.invoked.fetch_add(n, Ordering::Relaxed);
                        TOTALS
                            .invoked_bytes
                            .fetch_add(node.bytes, Ordering::Relaxed);
                    }
                }
            }
        }

        /// Open sections of index 0 and 1 (locks minus unlocks), as of a check now.
        fn open_sections(&self) -> u64 {
            (0..2)
                .map(|i| {
                    let unlocks = self.registry.sum_unlocks(i);
                    fence(Ordering::SeqCst);
                    self.registry.sum_locks(i).wrapping_sub(unlocks)
                })
                .fold(0u64, u64::wrapping_add)
        }
    }

    impl Drop for Block {
        fn drop(&mut self) {
            let p = *self.cold.get_mut();
            if !p.is_null() {
                // SAFETY: installed by `try_cold` from Box::into_raw; the block owns it and
                // this is the last reference to the block.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }

    impl Cold {
        fn new() -> Result<Box<Cold>, AllocError> {
            let n = sys::num_cpus();
            let mut cbs = try_vec(n, "the SRCU callback shards")?;
            cbs.extend((0..n).map(|_| {
                CachePadded::new(Mutex::new(CbShard {
                    list: SegList::default(),
                    open: None,
                    queued: 0,
                }))
            }));
            try_box(
                Cold {
                    machine: Mutex::new(Machine::new()),
                    seq: AtomicU64::new(seq::INITIAL),
                    needed: Mutex::new(None),
                    cbs: cbs.into_boxed_slice(),
                    call_used: AtomicBool::new(false),
                    registered: AtomicBool::new(false),
                    due: Mutex::new(None),
                    waits: AtomicU32::new(0),
                    expedite_waiters: AtomicUsize::new(0),
                    invoked: AtomicU64::new(0),
                    queued_bytes: AtomicU64::new(0),
                    invoked_bytes: AtomicU64::new(0),
                    flood: AtomicBool::new(false),
                    floods: AtomicU64::new(0),
                    hurry_once: AtomicBool::new(false),
                    rate_mark: Mutex::new((0, Instant::now())),
                    panics: AtomicU64::new(0),
                    watch: crate::report::SrcuWatch::new(),
                },
                "the SRCU updater state",
            )
        }

        #[inline]
        fn current(&self) -> u64 {
            // Acquire: pairs with the Release in Machine::gp_end.
            self.seq.load(Ordering::Acquire)
        }

        #[inline]
        fn snapshot(&self) -> u64 {
            // SeqCst: orders the caller's earlier accesses (the removal) before the load of
            // the sequence; pairs with the fence in Machine::gp_start.
            fence(Ordering::SeqCst);
            seq::snapshot(self.current())
        }
    }

    /// A counted reference to a block, held by the service and by queued worker jobs.
    pub(crate) struct DomainRef(NonNull<Block>);

    // SAFETY: a Block is Sync (atomics and mutexes) and is freed only by the last reference,
    // from whichever thread drops it.
    unsafe impl Send for DomainRef {}
    // SAFETY: as above; shared access is all a DomainRef gives.
    unsafe impl Sync for DomainRef {}

    impl DomainRef {
        fn block(&self) -> &Block {
            // SAFETY: our reference keeps the block alive.
            unsafe { self.0.as_ref() }
        }

        pub(crate) fn same(&self, other: &DomainRef) -> bool {
            self.0 == other.0
        }

        pub(crate) fn visit(&self, now: Instant, svc: &Service) -> Option<Instant> {
            self.block().visit(now, svc)
        }

        pub(crate) fn invoke_shard(&self, idx: usize) {
            self.block().invoke_shard(idx)
        }

        pub(crate) fn shrink(&self) -> u64 {
            self.block().shrink()
        }

        pub(crate) fn report(&self) -> crate::report::SrcuDomainReport {
            self.block().report()
        }
    }

    impl Clone for DomainRef {
        fn clone(&self) -> DomainRef {
            self.block().new_ref()
        }
    }

    impl Drop for DomainRef {
        fn drop(&mut self) {
            // Release: our uses of the block happen-before its freeing; the Acquire fence on
            // the last reference pairs with every other holder's Release (as Arc does).
            if self.block().refs.fetch_sub(1, Ordering::Release) == 1 {
                fence(Ordering::Acquire);
                // SAFETY: the last reference; the pointer is the one Box::into_raw returned
                // (`Block::into_raw`), which keeps the right to free the allocation.
                drop(unsafe { Box::from_raw(self.0.as_ptr()) });
            }
        }
    }

    /// A read-side section of an [`Srcu`] domain; it ends when the guard is dropped.
    ///
    /// Like an RCU guard it is neither `Send` nor `Sync`: it counts the section in its
    /// thread's shard and ends it there, which keeps every shard written by one thread. To end
    /// a section on another thread, use [`Srcu::read_lock_raw`].
    ///
    /// # Examples
    ///
    /// ```
    /// let d = grace::srcu::Srcu::new().unwrap();
    /// let g = d.read_lock();
    /// std::thread::sleep(std::time::Duration::from_millis(1)); // sleeping readers are fine
    /// drop(g);
    /// d.synchronize();
    /// ```
    ///
    /// ```compile_fail
    /// let d = grace::srcu::Srcu::new().unwrap();
    /// let g = d.read_lock();
    /// std::thread::spawn(move || drop(g)); // a guard cannot move to another thread
    /// ```
    #[must_use = "the section ends when the guard is dropped"]
    pub struct SrcuGuard<'a, K: ReaderKind = Regular> {
        /// The unlock counter to bump: it names the shard and the index at once.
        unlock: &'a AtomicU64,
        _domain: PhantomData<&'a Srcu<K>>,
        /// `!Send`, `!Sync`: see the type's docs.
        _not_send: PhantomData<*const ()>,
    }

    impl<K: ReaderKind> SrcuGuard<'_, K> {
        /// The index (0 or 1) the section counted itself under (the kernel's return value of
        /// `srcu_read_lock`).
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// assert!(d.read_lock().index() < 2);
        /// ```
        pub fn index(&self) -> usize {
            unlock_index(self.unlock)
        }
    }

    impl<K: ReaderKind> Drop for SrcuGuard<'_, K> {
        #[inline]
        fn drop(&mut self) {
            count_unlock_at(self.unlock);
        }
    }

    impl<K: ReaderKind> fmt::Debug for SrcuGuard<'_, K> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SrcuGuard")
                .field("idx", &self.index())
                .finish()
        }
    }

    /// An open section started by [`Srcu::read_lock_raw`]; give it back to
    /// [`Srcu::read_unlock_raw`] of the same domain, on any thread.
    ///
    /// Dropping a token without unlocking leaves the section open forever: that domain's
    /// grace periods never complete again (never undefined behaviour).
    ///
    /// # Examples
    ///
    /// ```
    /// let d = grace::srcu::Srcu::new().unwrap();
    /// let token = d.read_lock_raw();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| d.read_unlock_raw(token));
    /// });
    /// ```
    #[must_use = "a token that is not unlocked blocks the domain's grace periods forever"]
    #[derive(Debug)]
    pub struct SrcuToken {
        id: u64,
        idx: u8,
    }

    impl SrcuToken {
        /// The index (0 or 1) the section counted itself under.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let t = d.read_lock_raw();
        /// assert!(t.index() < 2);
        /// d.read_unlock_raw(t);
        /// ```
        pub fn index(&self) -> usize {
            usize::from(self.idx)
        }
    }

    /// Statistics of one domain, from [`Srcu::stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// let d = grace::srcu::Srcu::new().unwrap();
    /// d.synchronize();
    /// assert_eq!(d.stats().grace_periods, 1);
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SrcuStats {
        /// Grace periods completed.
        pub grace_periods: u64,
        /// Callbacks queued with `call` / `call_hurry`.
        pub callbacks_queued: u64,
        /// Callbacks that have run (barrier markers not counted).
        pub callbacks_invoked: u64,
        /// Callbacks queued and not yet run.
        pub callbacks_pending: u64,
        /// Bytes of the callbacks queued and not yet run (`size_of_val` of each closure, or
        /// what [`Srcu::call_sized`] stated).
        pub bytes_pending: u64,
        /// Times this domain entered flood mode (see [`crate::pressure`]).
        pub floods: u64,
        /// Callbacks that panicked (caught).
        pub callback_panics: u64,
        /// Reader shards handed out (about one per thread that read the domain).
        pub reader_shards: usize,
        /// The grace period's phase.
        pub phase: SrcuPhase,
        /// Whether the updater state has been allocated.
        pub updater_allocated: bool,
        /// Whether `call` was ever used (drop and barrier skip the callback shards if not).
        pub call_used: bool,
    }

    impl Srcu<Regular> {
        /// A new domain with regular readers; allocates everything it needs now and reports
        /// failure instead of aborting, having freed whatever it had allocated.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new()?;
        /// d.synchronize();
        /// # Ok::<(), grace::srcu::SrcuError>(())
        /// ```
        pub fn new() -> Result<Srcu<Regular>, SrcuError> {
            Srcu::create()
        }

        /// A domain for a `static` (the kernel's `DEFINE_STATIC_SRCU`): allocates nothing
        /// until first used; the updater state appears on the first update-side call.
        ///
        /// # Examples
        ///
        /// ```
        /// use grace::srcu::Srcu;
        /// static DOMAIN: Srcu = Srcu::new_static();
        /// assert!(!DOMAIN.stats().updater_allocated);
        /// drop(DOMAIN.read_lock());
        /// DOMAIN.synchronize();
        /// assert!(DOMAIN.stats().updater_allocated);
        /// ```
        pub const fn new_static() -> Srcu<Regular> {
            Srcu {
                block: AtomicPtr::new(ptr::null_mut()),
                id: AtomicU64::new(0),
                _kind: PhantomData,
            }
        }
    }

    impl Srcu<Lite> {
        /// A new domain with lite readers (see [`Lite`]); fallible like [`Srcu::new`].
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::SrcuLite::new_lite()?;
        /// drop(d.read_lock());
        /// d.synchronize();
        /// # Ok::<(), grace::srcu::SrcuError>(())
        /// ```
        pub fn new_lite() -> Result<Srcu<Lite>, SrcuError> {
            Srcu::create()
        }

        /// A static domain with lite readers.
        ///
        /// # Examples
        ///
        /// ```
        /// static DOMAIN: grace::srcu::SrcuLite = grace::srcu::SrcuLite::new_static_lite();
        /// DOMAIN.synchronize_expedited();
        /// ```
        pub const fn new_static_lite() -> Srcu<Lite> {
            Srcu {
                block: AtomicPtr::new(ptr::null_mut()),
                id: AtomicU64::new(0),
                _kind: PhantomData,
            }
        }
    }

    impl<K: ReaderKind> Srcu<K> {
        /// The domain's number: unique in the process, never reused, and the one stall
        /// warnings and `grace::report()` name (`SRCU domain #N`).
        ///
        /// # Examples
        ///
        /// ```
        /// let a = grace::srcu::Srcu::new().unwrap();
        /// let b = grace::srcu::Srcu::new().unwrap();
        /// assert_ne!(a.id(), b.id());
        /// ```
        pub fn id(&self) -> u64 {
            self.block().hot.id & !FENCE_READERS
        }

        fn create() -> Result<Srcu<K>, SrcuError> {
            let mut block = Block::new(K::LITE)?;
            let cold = Cold::new()?;
            *block.cold.get_mut() = Box::into_raw(cold);
            let id = block.hot.id;
            Ok(Srcu {
                block: AtomicPtr::new(Block::into_raw(block)),
                id: AtomicU64::new(id),
                _kind: PhantomData,
            })
        }

        #[inline]
        fn block(&self) -> &Block {
            // Acquire: pairs with the Release CAS in `install`.
            let p = self.block.load(Ordering::Acquire);
            if p.is_null() {
                self.install()
            } else {
                // SAFETY: the block lives until this `Srcu` is dropped (we hold a reference).
                unsafe { &*p }
            }
        }

        /// First use of a static domain: create its block.
        #[cold]
        #[inline(never)]
        fn install(&self) -> &Block {
            let fresh = match Block::new(K::LITE) {
                Ok(b) => Block::into_raw(b),
                Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<Block>()),
            };
            // Release: publishes the initialized block (pairs with the Acquire in `block`).
            let block = match self.block.compare_exchange(
                ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // SAFETY: installed; it lives as long as `self`.
                Ok(_) => unsafe { &*fresh },
                Err(winner) => {
                    // SAFETY: ours lost the race and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    // SAFETY: the winner's, installed for our life.
                    unsafe { &*winner }
                }
            };
            // Relaxed: every racer stores the winner's id; readers that see 0 take the slow
            // path, which goes through `block()` (see `lock`).
            self.id.store(block.hot.id, Ordering::Relaxed);
            block
        }

        #[inline]
        fn lock(&self) -> (&Shard, usize) {
            // Relaxed: 0 (not installed yet) or the id, which never changes afterwards.
            let id = self.id.load(Ordering::Relaxed);
            // SAFETY: `self` (this domain) outlives the borrow we return.
            let (shard, id) = match unsafe { cached(id) } {
                None => self.lock_slow(),
                Some(shard) => (shard, id),
            };
            let idx = shard.index();
            shard.count_lock(idx);
            if K::LITE && id & FENCE_READERS == 0 {
                // B, lite: pairs with the updater's heavy barrier (module docs of `gp`).
                compiler_fence(Ordering::SeqCst);
            } else {
                // B: pairs with fence A of the grace period's check (store-buffering, and
                // message passing with the flip that follows a check).
                fence(Ordering::SeqCst);
            }
            (shard, idx)
        }

        #[cold]
        #[inline(never)]
        fn lock_slow(&self) -> (&Shard, u64) {
            let block = self.block();
            let id = block.hot.id;
            (local(id, &block.registry, &block.hot.flips), id)
        }

        /// Enter a read-side section; it lasts until the guard is dropped.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let outer = d.read_lock();
        /// let inner = d.read_lock(); // sections nest
        /// drop(outer);
        /// drop(inner); // in any order
        /// ```
        #[inline]
        pub fn read_lock(&self) -> SrcuGuard<'_, K> {
            let (shard, idx) = self.lock();
            SrcuGuard {
                unlock: shard.unlock_counter(idx),
                _domain: PhantomData,
                _not_send: PhantomData,
            }
        }

        /// Enter a read-side section without a guard; end it with [`Srcu::read_unlock_raw`].
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let t = d.read_lock_raw();
        /// d.read_unlock_raw(t);
        /// d.synchronize();
        /// ```
        #[inline]
        pub fn read_lock_raw(&self) -> SrcuToken {
            let (_, idx) = self.lock();
            SrcuToken {
                id: self.block().hot.id,
                idx: idx as u8,
            }
        }

        /// End a section started by [`Srcu::read_lock_raw`], on any thread.
        ///
        /// # Panics
        ///
        /// If `token` came from another domain (closing the wrong domain's section would let
        /// a grace period of the right one end under a reader). Nothing is counted then.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let t = d.read_lock_raw();
        /// let t = std::thread::spawn(move || t).join().unwrap(); // tokens are Send
        /// d.read_unlock_raw(t);
        /// ```
        #[inline]
        pub fn read_unlock_raw(&self, token: SrcuToken) {
            let block = self.block();
            let id = block.hot.id;
            assert!(
                token.id == id,
                "grace: SRCU token of domain #{} given to read_unlock_raw of domain #{}",
                token.id & !FENCE_READERS,
                id & !FENCE_READERS
            );
            local(id, &block.registry, &block.hot.flips).count_unlock(usize::from(token.idx));
        }

        fn updater(&self) -> (&Block, &Cold) {
            let b = self.block();
            (b, b.cold())
        }

        /// Wait until every section of this domain that began before this call has ended.
        /// Other domains' readers do not delay it.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// d.synchronize();
        /// ```
        pub fn synchronize(&self) {
            let (b, c) = self.updater();
            b.drive(c, c.snapshot(), false);
        }

        /// [`Srcu::synchronize`], polling the readers without sleeping for the least latency.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// d.synchronize_expedited();
        /// ```
        pub fn synchronize_expedited(&self) {
            let (b, c) = self.updater();
            b.drive(c, c.snapshot(), true);
        }

        /// A cookie for a grace period of this domain that starts after now; starts nothing.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let c = d.get_state();
        /// assert!(!d.poll_state(c));
        /// d.synchronize();
        /// assert!(d.poll_state(c));
        /// ```
        pub fn get_state(&self) -> SrcuCookie<K> {
            let (b, c) = self.updater();
            b.cookie(c.snapshot())
        }

        /// A cookie, as [`Srcu::get_state`], whose grace period the background service will
        /// run without anyone waiting.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let c = d.start_poll();
        /// while !d.poll_state(c) {
        ///     std::thread::yield_now();
        /// }
        /// ```
        pub fn start_poll(&self) -> SrcuCookie<K> {
            let (b, c) = self.updater();
            let snap = c.snapshot();
            {
                let mut needed = lock(&c.needed);
                *needed = Some(match *needed {
                    Some(n) if seq::ge(n, snap) => n,
                    _ => snap,
                });
            }
            b.ensure_registered(c);
            b.request_visit(c, Instant::now());
            b.cookie(snap)
        }

        /// Start the grace period that everything queued so far on this domain waits for,
        /// and poll it as an expedited one (the service checks for readers every few
        /// microseconds instead of backing off) until it ends, without waiting for it: the
        /// flood and memory-budget response, also [`Flavor::expedite_pending`].
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new()?;
        /// d.call(|| {});
        /// d.expedite_pending(); // returns at once
        /// d.barrier();
        /// # Ok::<(), grace::srcu::SrcuError>(())
        /// ```
        pub fn expedite_pending(&self) {
            let (b, c) = self.updater();
            b.seal_all(c);
            let _ = self.start_poll();
            // Relaxed: a hint for the service's poll interval, cleared when it is reached.
            c.hurry_once.store(true, Ordering::Relaxed);
        }

        /// Has the cookie's grace period ended?
        ///
        /// # Panics
        ///
        /// If `cookie` was taken from another domain: its grace periods are not this
        /// domain's, and no answer would be right.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// assert!(d.poll_state(grace::cookie::Cookie::completed()));
        /// ```
        ///
        /// A cookie of the RCU flavor is not an SRCU cookie:
        ///
        /// ```compile_fail
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// d.poll_state(grace::rcu::get_state()); // expected `Cookie<Srcu>`, found `Cookie<Rcu>`
        /// ```
        #[inline]
        pub fn poll_state(&self, cookie: SrcuCookie<K>) -> bool {
            // Acquire: pairs with the Release CAS in `install`. A domain not yet installed has
            // run no grace period, and polling is no reason to allocate its block.
            let block = self.block.load(Ordering::Acquire);
            // SAFETY: a non-null block lives as long as `self`.
            let block = unsafe { block.as_ref() };
            let id = block.map_or(0, |b| b.hot.id & !FENCE_READERS);
            if cookie.domain != id && cookie.domain != <Srcu<K> as Issuer>::ANY {
                wrong_domain(cookie.domain, id);
            }
            let cur = block
                .and_then(Block::cold_ref)
                .map_or(seq::INITIAL, Cold::current);
            seq::done(cur, cookie.seq)
        }

        /// Wait, if needed, until the cookie's grace period has ended.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let c = d.get_state();
        /// d.cond_synchronize(c);
        /// assert!(d.poll_state(c));
        /// ```
        pub fn cond_synchronize(&self, cookie: SrcuCookie<K>) {
            if !self.poll_state(cookie) {
                let (b, c) = self.updater();
                b.drive(c, cookie.seq, false);
            }
        }

        /// Queue `f` to run after a grace period of this domain, lazily (batched for up to
        /// `GRACE_LAZY_MS`). Runs on a worker of the SRCU service; a panic is caught and
        /// counted.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::sync::atomic::{AtomicUsize, Ordering};
        /// use std::sync::Arc;
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let n = Arc::new(AtomicUsize::new(0));
        /// let m = n.clone();
        /// d.call(move || { m.fetch_add(1, Ordering::Relaxed); });
        /// d.barrier();
        /// assert_eq!(n.load(Ordering::Relaxed), 1);
        /// ```
        pub fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
            let bytes = std::mem::size_of_val(&f) as u64;
            self.block().call(Callback::new(f), bytes, false);
        }

        /// [`call`](Srcu::call), stating that `f` frees `bytes` bytes when it runs, so that the
        /// memory-pressure accounting ([`crate::pressure::usage`]) counts what a flood of
        /// callbacks really strands (`call` counts the closure's own size).
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let node = Box::new([0u8; 256]);
        /// d.call_sized(256, move || drop(node));
        /// d.barrier();
        /// ```
        pub fn call_sized<F: FnOnce() + Send + 'static>(&self, bytes: usize, f: F) {
            self.block().call(Callback::new(f), bytes as u64, false);
        }

        /// Queue `f` to run after a grace period, without waiting to batch.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// let (tx, rx) = std::sync::mpsc::channel();
        /// d.call_hurry(move || tx.send(()).unwrap());
        /// rx.recv().unwrap();
        /// ```
        pub fn call_hurry<F: FnOnce() + Send + 'static>(&self, f: F) {
            let bytes = std::mem::size_of_val(&f) as u64;
            self.block().call(Callback::new(f), bytes, true);
        }

        /// Wait until every callback queued on this domain before this call has run. Returns
        /// at once if `call` was never used on the domain.
        ///
        /// # Panics
        ///
        /// When called from inside an SRCU callback (it would wait for itself); and
        /// in a child process created by `fork()` after grace had started background threads in
        /// the parent (they do not exist in the child; see [`crate::sys`], "fork()"), instead of
        /// waiting forever.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// d.barrier(); // nothing queued: returns at once
        /// ```
        pub fn barrier(&self) {
            crate::sys::assert_not_orphaned("Srcu::barrier()");
            self.block().barrier();
        }

        /// The domain's statistics.
        ///
        /// # Examples
        ///
        /// ```
        /// let d = grace::srcu::Srcu::new().unwrap();
        /// drop(d.read_lock());
        /// assert_eq!(d.stats().reader_shards, 1);
        /// ```
        pub fn stats(&self) -> SrcuStats {
            let b = self.block();
            let cold = b.cold_ref();
            let (queued, phase) = cold.map_or((0, SrcuPhase::Idle), |c| {
                let q = c.cbs.iter().map(|s| lock(s).queued).sum::<u64>();
                (q, lock(&c.machine).phase())
            });
            let invoked = cold.map_or(0, |c| c.invoked.load(Ordering::Relaxed));
            SrcuStats {
                grace_periods: cold
                    .map_or(0, |c| seq::count(c.current().wrapping_sub(seq::INITIAL))),
                callbacks_queued: queued,
                callbacks_invoked: invoked,
                callbacks_pending: queued.saturating_sub(invoked),
                // Relaxed: statistics; invoked first, so the difference never goes negative.
                bytes_pending: cold.map_or(0, |c| {
                    let done = c.invoked_bytes.load(Ordering::Relaxed);
                    c.queued_bytes.load(Ordering::Relaxed).saturating_sub(done)
                }),
                floods: cold.map_or(0, |c| c.floods.load(Ordering::Relaxed)),
                callback_panics: cold.map_or(0, |c| c.panics.load(Ordering::Relaxed)),
                reader_shards: b.registry.len(),
                phase,
                updater_allocated: cold.is_some(),
                call_used: cold.is_some_and(|c| c.call_used.load(Ordering::Relaxed)),
            }
        }
    }

    /// A cookie of an SRCU domain: the domain's grace-period sequence and the domain's id.
    /// Only the domain that issued it may poll it (another domain panics), and it is not an
    /// RCU cookie (that does not compile).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::srcu::{Srcu, SrcuCookie};
    /// let d = Srcu::new().unwrap();
    /// let c: SrcuCookie = d.get_state();
    /// d.cond_synchronize(c);
    /// assert!(d.poll_state(c));
    /// ```
    pub type SrcuCookie<K = Regular> = Cookie<Srcu<K>>;

    impl<K: ReaderKind> cookie::sealed::Sealed for Srcu<K> {}
    impl<K: ReaderKind> Issuer for Srcu<K> {
        /// The domain id without the [`FENCE_READERS`] flag; never 0 for a real domain.
        type Domain = u64;
        const ANY: u64 = 0;
        fn domain_key(domain: u64) -> u64 {
            domain
        }
    }

    /// A cookie of domain `cookie` polled on domain `here` (0: not yet in use).
    #[cold]
    #[inline(never)]
    fn wrong_domain(cookie: u64, here: u64) -> ! {
        panic!(
            "grace: a cookie of SRCU domain #{cookie} polled on SRCU domain #{here}; a cookie \
             is only meaningful to the domain that issued it"
        )
    }

    impl<K: ReaderKind> Drop for Srcu<K> {
        fn drop(&mut self) {
            let Some(p) = NonNull::new(*self.block.get_mut()) else {
                return;
            };
            // Our reference, as a DomainRef (from the Box::into_raw pointer we stored).
            let me = DomainRef(p);
            let block = me.block();
            let open = block.open_sections();
            if open != 0 {
                // A raw token never unlocked, or a guard forgotten: callbacks could never run
                // and freeing could free under that reader. Leak instead, loudly.
                crate::sys::report(format_args!(
                    "grace: SRCU domain #{} dropped with {open} read-side section(s) still open \
                     (a raw token never unlocked, or a guard passed to mem::forget); leaking it \
                     and its callbacks instead of freeing them",
                    block.hot.id & !FENCE_READERS
                ));
                if block
                    .cold_ref()
                    .is_some_and(|c| c.registered.load(Ordering::Relaxed))
                {
                    service().deregister(&me);
                }
                std::mem::forget(me);
                return;
            }
            // Only a domain that used `call` pays for a barrier.
            let call_used = block
                .cold_ref()
                .is_some_and(|c| c.call_used.load(Ordering::Relaxed));
            if call_used && crate::callback::on_worker() {
                // Dropped inside a callback (an `Arc` of the domain captured by one of its own
                // callbacks, say): waiting here could wait for this very worker. Hand the wait
                // to a thread of its own; the block lives on until it is done.
                let spawned = std::thread::Builder::new()
                    .name("grace-srcu-drop".into())
                    .spawn(move || teardown(me, true));
                // If no thread can start, the closure (and `me`) is dropped: the service keeps
                // its reference, so the callbacks still run, and the block is leaked.
                let _ = spawned;
                return;
            }
            teardown(me, call_used);
        }
    }

    /// Wait for a dropped domain's callbacks (if `call` was used), stop serving it, and drop
    /// the `Srcu`'s reference `me` (the block is freed with its last reference).
    fn teardown(me: DomainRef, call_used: bool) {
        let block = me.block();
        if call_used {
            block.barrier();
        }
        if block
            .cold_ref()
            .is_some_and(|c| c.registered.load(Ordering::Relaxed))
        {
            service().deregister(&me);
        }
        drop(me);
    }

    impl<K: ReaderKind> fmt::Debug for Srcu<K> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Srcu")
                .field("lite", &K::LITE)
                .field("stats", &self.stats())
                .finish()
        }
    }

    impl<K: ReaderKind> Flavor for Srcu<K> {
        type Guard<'a> = SrcuGuard<'a, K>;
        type Issuer = Srcu<K>;

        #[inline]
        fn read_lock(&self) -> SrcuGuard<'_, K> {
            Srcu::read_lock(self)
        }
        fn synchronize(&self) {
            Srcu::synchronize(self)
        }
        fn synchronize_expedited(&self) {
            Srcu::synchronize_expedited(self)
        }
        fn get_state(&self) -> SrcuCookie<K> {
            Srcu::get_state(self)
        }
        fn start_poll(&self) -> SrcuCookie<K> {
            Srcu::start_poll(self)
        }
        fn poll_state(&self, cookie: SrcuCookie<K>) -> bool {
            Srcu::poll_state(self, cookie)
        }
        fn cookie_from_raw(&self, raw: u64) -> SrcuCookie<K> {
            self.block().cookie(raw)
        }
        fn cond_synchronize(&self, cookie: SrcuCookie<K>) {
            Srcu::cond_synchronize(self, cookie)
        }
        fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
            Srcu::call(self, f)
        }
        fn call_hurry<F: FnOnce() + Send + 'static>(&self, f: F) {
            Srcu::call_hurry(self, f)
        }
        fn expedite_pending(&self) {
            Srcu::expedite_pending(self)
        }
        fn barrier(&self) {
            Srcu::barrier(self)
        }
    }

    impl<K: ReaderKind> Srcu<K> {
        /// Whether `guard` is a section of this domain (for [`crate::atomic::Retire`]). A guard
        /// counts in its thread's shard of its own domain, so this compares the guard's shard
        /// with this domain's shard for the calling thread (the guard is `!Send`, so that is
        /// its thread): a thread-local lookup and a compare, as `read_lock`'s fast path. On a
        /// cache miss, the domain's shard registry is searched instead, which allocates
        /// nothing. Only addresses are compared; the guard's shard is never dereferenced.
        pub(crate) fn owns_guard(&self, guard: &SrcuGuard<'_, K>) -> bool {
            // Acquire: pairs with the Release CAS in `install`. A domain not installed yet
            // has had no section at all.
            if self.block.load(Ordering::Acquire).is_null() {
                return false;
            }
            let block = self.block();
            let unlock = guard.unlock as *const AtomicU64 as usize;
            let mine = |s: &Shard| {
                let base = s as *const Shard as usize;
                (base..base + std::mem::size_of::<Shard>()).contains(&unlock)
            };
            // SAFETY: `self` (this domain) outlives the borrow.
            if let Some(shard) = unsafe { cached(block.hot.id) } {
                if mine(shard) {
                    return true;
                }
            }
            block.registry.iter().any(mine)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn readers_touch_one_line_and_the_handle_is_a_pointer() {
            let l = layout();
            assert_eq!(l.handle, 16);
            assert!(l.hot <= 64, "{l:?}");
            assert!(l.block >= l.hot);
            assert!(l.cold > 0 && l.reader_shard >= 32);
        }
    }
}
