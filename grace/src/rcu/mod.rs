//! The RCU flavor: one process-wide domain with the kernel's full API.
//!
//! # Read side
//!
//! [`read_lock`] returns a [`Guard`]; the section lasts until the guard is dropped. Sections
//! nest (an inner lock only bumps a count). The outermost lock is one load of a global word
//! and one store into this thread's slot, plus a compiler fence; unlock is one store. The
//! guard is neither `Send` nor `Sync`: the section belongs to the thread that opened it.
//!
//! Threads register on their first `read_lock` (or `call`), and unregister when they exit,
//! also when they exit by panicking (unwinding drops their guards first). See "Thread exit"
//! below.
//!
//! # Update side
//!
//! * [`synchronize`] waits for a normal grace period; [`synchronize_expedited`] drives one
//!   with the least latency. Concurrent callers share grace periods.
//! * Polling: [`get_state`] / [`start_poll`] give a [`Cookie`](crate::cookie::Cookie); [`poll_state`],
//!   [`poll_state_any`], [`cond_synchronize`] consume it. The `_full` variants use a
//!   [`FullCookie`](crate::cookie::FullCookie), which an expedited grace period also completes.
//! * [`call`] queues a closure to run after a grace period, lazily (batched for up to the
//!   configured delay, `GRACE_LAZY_MS`); [`call_hurry`] does not wait to batch; [`barrier`]
//!   waits until every callback queued before it has run.
//!
//! # Ordering guarantee
//!
//! If a read-side section began before a grace period started, the grace period ends after
//! the section does, and every access of the section happens-before whatever follows the end
//! of the grace period (the return of `synchronize`, a `poll_state` that returns `true`, the
//! invocation of a callback). Every access made before the grace period started (the call to
//! `synchronize`, `get_state`, `start_poll` or `call`) happens-before the accesses of every
//! section that did not end before it.
//!
//! # Misuse
//!
//! Waiting for a grace period inside a read-side section of the same thread would wait for
//! itself. [`synchronize`], [`synchronize_expedited`], [`barrier`] and a [`cond_synchronize`]
//! that would wait panic at once with a message naming the mistake (one thread-local read,
//! kept in release builds). [`barrier`] called from inside a callback panics as well.
//!
//! # Thread exit
//!
//! A thread's registration is a thread-local value whose destructor gives its slot back. A
//! thread that exits outside any section never delays a grace period again. A guard that
//! outlives the registration because another thread-local destroyed later holds it keeps its
//! section open until it drops, exactly as on a live thread; the slot is then given back by a
//! pthread-key destructor, which runs after every Rust thread-local destructor (on Linux;
//! elsewhere the slot is abandoned, one per such thread). A thread-local destructor that runs
//! after grace's own and uses RCU registers the thread again, and that slot is given back the
//! same way. A guard that is *leaked* (`mem::forget`, `Box::leak`) keeps its section open
//! forever, and must: a `&'static` obtained under it may still be read. Grace periods then wait
//! for it forever; when its thread exits, grace says so once on standard error. Callbacks
//! queued by an exiting thread are not lost: they stay in its ring until the grace-period
//! thread drains them.
//!
//! Callbacks still queued when the *process* exits are not run; call [`barrier`] before
//! returning from `main` if they must.

#[cfg(all(test, loom))]
mod tests;

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use crate::callback::engine::{Engine, Host, IN_CALLBACK};
    use crate::callback::Callback;
    pub use crate::callback::Invocation;
    use crate::config::Config;
    use crate::cookie::{Cookie, FullCookie};
    use crate::gp::{seq, GpEngine, GpKind, GpPhase};
    use crate::reader::{Readers, Slot};
    use crate::sync::{fence, Ordering};
    use crate::sys::{self, BarrierMode};
    use std::cell::Cell;
    use std::marker::PhantomData;
    use std::ptr;
    use std::sync::OnceLock;

    /// The flavor's reader set and grace-period engine. A static, so that the read side
    /// addresses the epoch word directly.
    static READERS: Readers = Readers::new();
    static GP: GpEngine = GpEngine::new();
    static CONFIG: OnceLock<Config> = OnceLock::new();
    static ENGINE: OnceLock<&'static Engine> = OnceLock::new();

    thread_local! {
        /// This thread's slot, or null before registration. No destructor, so access is a
        /// plain thread-local load with no state check.
        static LOCAL: Cell<*const Slot> = const { Cell::new(ptr::null()) };
        /// Gives the slot back when the thread exits.
        static EXIT_HOOK: ExitHook = const { ExitHook(Cell::new(ptr::null())) };
    }

    struct ExitHook(Cell<*const Slot>);

    impl Drop for ExitHook {
        fn drop(&mut self) {
            let p = self.0.get();
            if p.is_null() {
                return;
            }
            // SAFETY: slots are never freed.
            let slot = unsafe { &*p };
            if slot.depth() == 0 {
                // A later read_lock on this thread (from another thread-local's destructor)
                // registers afresh (see register_slow).
                let _ = LOCAL.try_with(|l| l.set(ptr::null()));
                // Before the release: once free, the slot may be another thread's.
                FINAL.disarm();
                READERS.release(slot);
            } else if !FINAL.arm(slot as *const Slot as *mut std::ffi::c_void) {
                // A guard outlives the registration: leaked, or held by a thread-local that is
                // destroyed after this one. Where the final hook exists, the slot stays this
                // thread's (LOCAL keeps pointing at it, for that guard's drop and any later
                // read_lock) and the hook decides at the very end. Where it does not, the slot
                // is abandoned now: honoured by grace periods, never reused.
                warn_open_at_exit();
                READERS.release(slot);
            }
        }
    }

    /// The thread's last hook (a pthread-key destructor on Linux): gives back a slot that was
    /// still in a section when `ExitHook` ran, or that was registered during teardown.
    static FINAL: sys::FinalHook = sys::FinalHook::new(release_at_final_exit);

    /// Report, once per process, a thread that exits for good inside a section: a guard that
    /// was leaked (`mem::forget`, `Box::leak`) keeps its section open forever, so the hang of
    /// every later grace period must be explainable.
    #[cold]
    fn warn_open_at_exit() {
        static WARNED: crate::sync::AtomicBool = crate::sync::AtomicBool::new(false);
        // Relaxed: a once-only report; nothing is published through the flag.
        if !WARNED.swap(true, Ordering::Relaxed) {
            crate::sys::report(format_args!(
                "grace: a thread exited inside an RCU read-side section (an rcu::Guard leaked \
                 with mem::forget or Box::leak); the section stays open forever, so every later \
                 grace period (synchronize, barrier, call, kvfree) waits for it. Reported once."
            ));
        }
    }

    /// Initialize the flavor once: settings, barrier mode, the epoch word's FENCE bit.
    pub(crate) fn config() -> &'static Config {
        CONFIG.get_or_init(|| {
            let cfg = Config::from_env_or_warn();
            if sys::init(cfg.no_membarrier) == BarrierMode::Fence {
                READERS.set_fence_mode();
            }
            // GRACE_STALL_MS, and GRACE_REPORT_SIGNAL's handler and thread (opt-in).
            crate::report::init_from_env();
            cfg
        })
    }

    #[inline]
    pub(crate) fn mode() -> BarrierMode {
        match sys::mode() {
            Some(m) if CONFIG.get().is_some() => m,
            _ => {
                config();
                sys::mode().unwrap_or(BarrierMode::Fence)
            }
        }
    }

    #[inline]
    fn local_slot() -> &'static Slot {
        let p = LOCAL.with(Cell::get);
        if p.is_null() {
            register_slow()
        } else {
            // SAFETY: slots are leaked by Readers::push and never freed.
            unsafe { &*p }
        }
    }

    #[cold]
    #[inline(never)]
    fn register_slow() -> &'static Slot {
        // Initialization (and the FENCE bit) happens before our slot can exist.
        config();
        let slot = if EXIT_HOOK.try_with(|_| ()).is_ok() {
            let slot = READERS.acquire();
            let _ = EXIT_HOOK.try_with(|h| h.0.set(slot));
            // The thread's name, for stall warnings and `grace::report()` (here only: during
            // thread-local teardown below, `thread::current` may be gone).
            slot.set_name(crate::report::thread_name());
            // In case EXIT_HOOK's destructor never runs: a thread whose first read is in a
            // pthread-key destructor, after Rust's thread-local destructors ran (registering
            // one then is too late). ExitHook disarms it when it gives the slot back itself.
            FINAL.arm(slot as *const Slot as *mut std::ffi::c_void);
            slot
        } else {
            // Registering while this thread's thread-locals are being destroyed (a destructor
            // of another thread-local uses RCU after ours ran). Give the slot back from the
            // thread's very last hook; where there is none, abandon it rather than risk two
            // owners.
            let slot = READERS.acquire();
            slot.set_name(std::sync::Arc::from("(a thread during its exit)"));
            let arg = slot as *const Slot as *mut std::ffi::c_void;
            if !FINAL.arm(arg) {
                READERS.release_abandoned(slot);
            }
            slot
        };
        LOCAL.with(|l| l.set(slot));
        slot
    }

    /// The final thread-exit hook of a slot registered during thread-local teardown.
    ///
    /// # Safety
    ///
    /// `arg` is a `*const Slot` owned by the exiting thread (armed by `register_slow` or
    /// `ExitHook`).
    unsafe extern "C" fn release_at_final_exit(arg: *mut std::ffi::c_void) {
        // SAFETY: per the contract `arg` is a slot, and slots are never freed.
        let slot = unsafe { &*(arg as *const Slot) };
        // A later use on this thread (yet another destructor) registers afresh.
        LOCAL.with(|l| l.set(ptr::null()));
        if slot.depth() != 0 {
            warn_open_at_exit();
        }
        READERS.release(slot);
    }

    fn assert_not_reading(what: &str) {
        let p = LOCAL.try_with(Cell::get).unwrap_or(ptr::null());
        // SAFETY: slots are never freed.
        if !p.is_null() && unsafe { &*p }.depth() > 0 {
            reading_panic(what);
        }
    }

    #[cold]
    #[inline(never)]
    fn reading_panic(what: &str) -> ! {
        panic!(
            "grace: rcu::{what}() called inside an RCU read-side critical section on the same \
             thread; it would wait for that very section to end (self-deadlock). Drop the \
             read guard first."
        );
    }

    /// A read-side critical section of the RCU flavor. Dropping it ends the section.
    ///
    /// Neither `Send` nor `Sync`: the section belongs to the thread that opened it.
    ///
    /// A guard that is never dropped (leaked with `mem::forget` or `Box::leak`) keeps its
    /// section open forever, on purpose: a `&'static` obtained under it may still be read. Every
    /// later grace period then waits forever; when the guard's thread exits with the section
    /// still open, a one-time warning on standard error says so. A guard kept in a
    /// thread-local that is destroyed after grace's own is fine: the section ends when it drops.
    ///
    /// Dropping a guard twice (through `unsafe` code such as `ManuallyDrop::drop`) panics,
    /// naming the mistake: in debug builds at the second drop; in release builds, where the
    /// read side pays for no check, at the thread's next `read_lock` (and a thread that exits
    /// first says so on standard error). Grace periods never wait for such a thread in
    /// between: it is outside any section.
    ///
    /// ```compile_fail
    /// fn needs_send<T: Send>(_: T) {}
    /// needs_send(grace::rcu::read_lock());
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// let outer = grace::rcu::read_lock();
    /// let inner = grace::rcu::read_lock(); // nesting is cheap
    /// drop(inner);
    /// drop(outer);
    /// ```
    #[must_use = "the read-side section ends when the guard is dropped"]
    pub struct Guard {
        slot: &'static Slot,
        _not_send: PhantomData<*mut ()>,
    }

    impl Drop for Guard {
        #[inline]
        fn drop(&mut self) {
            self.slot.unlock();
        }
    }

    impl std::fmt::Debug for Guard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("rcu::Guard")
                .field("depth", &self.slot.depth())
                .finish()
        }
    }

    /// Enter a read-side critical section (the kernel's `rcu_read_lock`).
    ///
    /// Objects reached through RCU-protected pointers while the guard lives are not freed
    /// by any grace-period-based reclamation until it is dropped.
    ///
    /// # Panics
    ///
    /// If sections nest more than 65534 deep (a leaked guard in a loop), or, in release
    /// builds, after a guard of this thread was dropped twice (see [`Guard`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::{rcu, RcuCell};
    /// let cell = RcuCell::new(String::from("hello"));
    /// let guard = rcu::read_lock();
    /// assert_eq!(cell.load(&guard), "hello");
    /// ```
    #[inline]
    pub fn read_lock() -> Guard {
        let slot = local_slot();
        slot.lock(&READERS.epoch);
        Guard {
            slot,
            _not_send: PhantomData,
        }
    }

    /// Whether this thread is inside a read-side section (the kernel's
    /// `rcu_read_lock_held`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!grace::rcu::is_reading());
    /// let g = grace::rcu::read_lock();
    /// assert!(grace::rcu::is_reading());
    /// # drop(g);
    /// ```
    pub fn is_reading() -> bool {
        let p = LOCAL.try_with(Cell::get).unwrap_or(ptr::null());
        // SAFETY: slots are never freed.
        !p.is_null() && unsafe { &*p }.depth() > 0
    }

    /// Wait until every read-side section that began before this call has ended (the
    /// kernel's `synchronize_rcu`). See the module docs for the ordering guarantee.
    ///
    /// Concurrent callers share grace periods. Readers are waited for with a gentle back-off
    /// (spin, yield, then short sleeps), so a long reader costs the waiter little CPU.
    ///
    /// # Panics
    ///
    /// If called inside a read-side section on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::{rcu, RcuCell};
    /// let cell = RcuCell::new(1);
    /// let old = cell.replace(2);
    /// rcu::synchronize();
    /// // No reader can still see the old value.
    /// # drop(old);
    /// ```
    pub fn synchronize() {
        assert_not_reading("synchronize");
        GP.synchronize(&READERS, mode(), GpKind::Normal);
    }

    /// Like [`synchronize`], but drives the grace period now and waits by spinning and
    /// yielding, for the least latency (the kernel's `synchronize_rcu_expedited`). Completes
    /// [`FullCookie`]s, not plain [`Cookie`]s.
    ///
    /// # Panics
    ///
    /// If called inside a read-side section on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// grace::rcu::synchronize_expedited();
    /// ```
    pub fn synchronize_expedited() {
        assert_not_reading("synchronize_expedited");
        GP.synchronize(&READERS, mode(), GpKind::Expedited);
    }

    /// A cookie for the grace period that will end after every section active now has
    /// ended; starts nothing (the kernel's `get_state_synchronize_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::get_state();
    /// rcu::synchronize();
    /// assert!(rcu::poll_state(c));
    /// ```
    #[inline]
    pub fn get_state() -> Cookie {
        mode();
        Cookie::from_seq(GP.snapshot(GpKind::Normal))
    }

    /// Like [`get_state`], and makes sure that grace period will run, on the background
    /// grace-period thread (the kernel's `start_poll_synchronize_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::start_poll();
    /// while !rcu::poll_state(c) {
    ///     std::thread::yield_now();
    /// }
    /// ```
    pub fn start_poll() -> Cookie {
        let c = get_state();
        if !poll_state(c) {
            engine().request_gp(c.seq);
        }
        c
    }

    /// Has the grace period of `cookie` ended (the kernel's `poll_state_synchronize_rcu`)?
    /// A `true` answer gives the ordering guarantee of [`synchronize`] returning.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// assert!(rcu::poll_state(rcu::get_completed_state()));
    /// ```
    #[inline]
    pub fn poll_state(cookie: Cookie) -> bool {
        GP.done(GpKind::Normal, cookie.seq)
    }

    /// The index of the first cookie in `cookies` whose grace period has ended, reading the
    /// sequence once (the multi-cookie poll offered in the `rcu_pending` review).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let cs = [rcu::get_state(), rcu::get_completed_state()];
    /// assert_eq!(rcu::poll_state_any(&cs), Some(1));
    /// ```
    pub fn poll_state_any(cookies: &[Cookie]) -> Option<usize> {
        let cur = GP.current(GpKind::Normal);
        cookies.iter().position(|c| seq::done(cur, c.seq))
    }

    /// Wait, if needed, until the grace period of `cookie` has ended (the kernel's
    /// `cond_synchronize_rcu`). Returns at once when it already has.
    ///
    /// # Panics
    ///
    /// If it would wait and is called inside a read-side section on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::get_state();
    /// rcu::cond_synchronize(c);
    /// assert!(rcu::poll_state(c));
    /// ```
    pub fn cond_synchronize(cookie: Cookie) {
        if !poll_state(cookie) {
            assert_not_reading("cond_synchronize");
            GP.run_until(&READERS, mode(), GpKind::Normal, cookie.seq);
        }
    }

    /// A cookie that always reads as completed (the kernel's
    /// `get_completed_synchronize_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(grace::rcu::poll_state(grace::rcu::get_completed_state()));
    /// ```
    pub const fn get_completed_state() -> Cookie {
        Cookie::completed()
    }

    /// Whether two cookies stand for the same grace period (the kernel's
    /// `same_state_synchronize_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::rcu::get_state();
    /// assert!(grace::rcu::same_state(c, c));
    /// ```
    pub fn same_state(a: Cookie, b: Cookie) -> bool {
        a.same_state(b)
    }

    /// A [`FullCookie`]: completes on the next normal *or* expedited grace period (the
    /// kernel's `get_state_synchronize_rcu_full`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::get_state_full();
    /// rcu::synchronize_expedited();
    /// assert!(rcu::poll_state_full(c));
    /// ```
    pub fn get_state_full() -> FullCookie {
        mode();
        // SeqCst: as in GpEngine::snapshot, for both sequences at once.
        fence(Ordering::SeqCst);
        FullCookie {
            normal: seq::snapshot(GP.current(GpKind::Normal)),
            expedited: seq::snapshot(GP.current(GpKind::Expedited)),
        }
    }

    /// Like [`get_state_full`], and makes sure a normal grace period will run.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::start_poll_full();
    /// rcu::cond_synchronize_full(c);
    /// assert!(rcu::poll_state_full(c));
    /// ```
    pub fn start_poll_full() -> FullCookie {
        let c = get_state_full();
        if !poll_state_full(c) {
            engine().request_gp(c.normal);
        }
        c
    }

    /// Has a normal or an expedited grace period ended since `cookie` was taken?
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let c = rcu::get_state_full();
    /// rcu::synchronize();
    /// assert!(rcu::poll_state_full(c));
    /// ```
    pub fn poll_state_full(cookie: FullCookie) -> bool {
        GP.done(GpKind::Normal, cookie.normal) || GP.done(GpKind::Expedited, cookie.expedited)
    }

    /// Wait, if needed, until [`poll_state_full`] would return `true`.
    ///
    /// # Panics
    ///
    /// If it would wait and is called inside a read-side section on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::rcu::get_state_full();
    /// grace::rcu::cond_synchronize_full(c);
    /// ```
    pub fn cond_synchronize_full(cookie: FullCookie) {
        if !poll_state_full(cookie) {
            assert_not_reading("cond_synchronize_full");
            GP.run_until(&READERS, mode(), GpKind::Normal, cookie.normal);
        }
    }

    /// A future that is ready once a grace period that starts after this call has ended:
    /// [`synchronize`] without blocking a thread, for any async runtime. Many tasks waiting at
    /// once share one grace period (see [`crate::wait`]). Dropping it is cancelling it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// let c = grace::rcu::get_state();
    /// block_on(grace::rcu::synchronize_async());
    /// assert!(grace::rcu::poll_state(c));
    /// ```
    pub fn synchronize_async() -> crate::wait::GraceFuture<'static, crate::Rcu> {
        get_state().wait()
    }

    /// A future that is ready once every callback queued before this call has run:
    /// [`barrier`] without blocking the caller's thread (it runs on a thread of its own).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// grace::rcu::call(|| {});
    /// block_on(grace::rcu::barrier_async());
    /// assert_eq!(grace::rcu::stats().callbacks_pending, 0);
    /// ```
    pub fn barrier_async() -> crate::wait::BarrierFuture {
        crate::wait::BarrierFuture::start(crate::Rcu)
    }

    struct RcuHost;

    impl Host for RcuHost {
        fn readers(&self) -> &Readers {
            &READERS
        }
        fn mode(&self) -> BarrierMode {
            mode()
        }
        fn run_until(&self, snap: u64, expedite: bool) {
            if expedite {
                GP.run_until_hurried(&READERS, mode(), snap)
            } else {
                GP.run_until(&READERS, mode(), GpKind::Normal, snap)
            }
        }
        fn snapshot(&self) -> u64 {
            GP.snapshot(GpKind::Normal)
        }
        fn current(&self) -> u64 {
            GP.current(GpKind::Normal)
        }
        fn name(&self) -> &'static str {
            "grace-rcu"
        }
    }

    static HOST: RcuHost = RcuHost;

    /// Make sure the calling thread's later `call`, `call_hurry` and `start_poll` allocate
    /// nothing and start no thread (short of a full ring): start the engine, register the
    /// thread, create its ring. For code that calls them under a lock of its own (kvfree).
    pub(crate) fn prewarm() {
        let slot = local_slot();
        engine().ensure_ring(slot);
    }

    #[inline]
    fn engine() -> &'static Engine {
        ENGINE.get_or_init(|| {
            let cfg = config();
            Engine::start(&HOST, cfg.lazy_delay, cfg.workers, cfg.invocation)
        })
    }

    /// Queue `f` to run after a grace period (the kernel's `call_rcu`), lazily: it may wait
    /// up to the configured delay (`GRACE_LAZY_MS`, 10 ms by default) to be batched with
    /// others, saving wake-ups. A panic in `f` is caught, counted in
    /// [`Stats::callback_panics`] and reported, and the other callbacks still run.
    ///
    /// # Where `f` runs
    ///
    /// In the default [`Invocation::Local`] mode, as in the kernel (callbacks run on the CPU
    /// that queued them), `f` runs on a thread that queues callbacks on the same shard (one per
    /// CPU), at one of its later `call`s or `call_hurry`s made **outside** a read-side section
    /// and outside any callback; a callback that frees an object so frees it next to where it
    /// was allocated, into that thread's allocator cache. Callbacks whose queuing threads go
    /// idle or exit, and everything a [`barrier`] waits for, run on grace's worker threads
    /// within the lazy delay; callbacks queued with [`call_hurry`] always run on a worker, as
    /// soon as their grace period ends (a thread may wait on them). So, in local mode, **a callback must not take a lock that a
    /// thread may hold while it calls `call`** (the kernel's rule for callbacks, which run in
    /// softirq context, is the same). With [`Invocation::Offloaded`]
    /// ([`set_callback_invocation`], or `GRACE_CB_OFFLOAD=1`), callbacks only ever run on
    /// workers.
    ///
    /// Closures of up to three words (an `Arc`, a `Box`, a pointer and two integers) are stored
    /// without allocating.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r = ran.clone();
    /// grace::rcu::call(move || r.store(true, Ordering::Relaxed));
    /// grace::rcu::barrier();
    /// assert!(ran.load(Ordering::Relaxed));
    /// ```
    ///
    /// # Memory accounting
    ///
    /// The memory-pressure accounting ([`Stats::bytes_pending`]) counts a callback queued by
    /// `call` as freeing `size_of_val(&f)` bytes, the closure's own size: it cannot see what
    /// the closure owns. Use [`call_sized`] to state what the callback frees.
    #[inline]
    pub fn call<F: FnOnce() + Send + 'static>(f: F) {
        let bytes = std::mem::size_of_val(&f) as u64;
        let slot = local_slot();
        engine().call(slot, Callback::new(f), bytes, false, true);
    }

    /// [`call`], stating that `f` frees `bytes` bytes when it runs (for instance the size of
    /// the object it drops), so that [`Stats::bytes_pending`] and the memory-pressure layer
    /// count the memory a flood of callbacks really strands.
    ///
    /// # Examples
    ///
    /// ```
    /// let node = Box::new([0u8; 256]);
    /// grace::rcu::call_sized(std::mem::size_of_val(&*node), move || drop(node));
    /// grace::rcu::barrier();
    /// assert_eq!(grace::rcu::stats().bytes_pending, 0);
    /// ```
    #[inline]
    pub fn call_sized<F: FnOnce() + Send + 'static>(bytes: usize, f: F) {
        let slot = local_slot();
        engine().call(slot, Callback::new(f), bytes as u64, false, true);
    }

    /// [`call`] or [`call_hurry`] for grace's own callers, which may hold locks of their own:
    /// never runs ready callbacks on the calling thread. Counts no bytes: those callers
    /// account for their memory themselves (kvfree, `Pending`).
    pub(crate) fn call_internal<F: FnOnce() + Send + 'static>(f: F, hurry: bool) {
        let slot = local_slot();
        engine().call(slot, Callback::new(f), 0, hurry, false);
    }

    /// What RCU callbacks hold back now, for `crate::pressure`: callbacks queued and not yet
    /// invoked, and the bytes stated for them.
    pub(crate) fn pressure_counts() -> crate::pressure::Counts {
        let s = stats();
        crate::pressure::Counts {
            objects: s.callbacks_pending,
            bytes: s.bytes_pending,
        }
    }

    /// Have the grace period every callback queued so far waits for started now, expedited,
    /// without waiting for it (an enqueuer over the memory budget).
    pub(crate) fn expedite_pending() {
        if let Some(e) = ENGINE.get() {
            e.expedite_now();
        }
    }

    /// For `grace::report()`: the grace-period engine's watch.
    pub(crate) fn gp_watch() -> &'static crate::report::GpWatch {
        GP.watch()
    }

    /// For `grace::report()`: what waits in each callback shard (empty before the first
    /// `call`).
    pub(crate) fn shard_waiting() -> Vec<crate::callback::seglist::Waiting> {
        ENGINE.get().map(|e| e.waiting()).unwrap_or_default()
    }

    /// For `grace::report()`: each shard's segments waiting for a grace period, as (grace
    /// period number, callbacks, bytes), oldest first.
    pub(crate) fn shard_segments() -> Vec<Vec<(u64, u64, u64)>> {
        let Some(e) = ENGINE.get() else {
            return Vec::new();
        };
        e.segments()
            .into_iter()
            .map(|segs| {
                segs.into_iter()
                    .flatten()
                    .map(|(cookie, n, b)| (seq::count(cookie.wrapping_sub(seq::INITIAL)), n, b))
                    .collect()
            })
            .collect()
    }

    /// For `grace::report()`: the names of the threads inside a read-side section now (a
    /// racy snapshot; touches only the registry, never a reader's fast path).
    pub(crate) fn readers_inside() -> Vec<Option<std::sync::Arc<str>>> {
        READERS
            .iter()
            .filter(|s| s.reading())
            .map(|s| s.name())
            .collect()
    }

    /// The shrinker's part for RCU callbacks (see `crate::pressure::scan`).
    pub(crate) fn shrink(n: u64) -> u64 {
        if is_reading() {
            return 0;
        }
        match ENGINE.get() {
            Some(e) => e.shrink(n),
            None => 0,
        }
    }

    /// Choose where RCU callbacks run once their grace period has ended (see [`call`]):
    /// on the threads that queued them ([`Invocation::Local`], the default) or on grace's
    /// worker threads ([`Invocation::Offloaded`]). Takes effect at once for every shard, also
    /// for callbacks already waiting; safe to call at any time, from any thread, concurrently
    /// with `call`, `barrier` and other switches. The initial mode comes from
    /// `GRACE_CB_OFFLOAD`.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu::{self, Invocation};
    /// rcu::set_callback_invocation(Invocation::Offloaded);
    /// assert_eq!(rcu::callback_invocation(), Invocation::Offloaded);
    /// rcu::set_callback_invocation(Invocation::Local);
    /// assert_eq!(rcu::callback_invocation(), Invocation::Local);
    /// ```
    pub fn set_callback_invocation(invocation: Invocation) {
        engine().set_invocation(invocation);
    }

    /// Where RCU callbacks run now (see [`set_callback_invocation`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let now = grace::rcu::callback_invocation();
    /// println!("RCU callbacks run {now:?}");
    /// ```
    pub fn callback_invocation() -> Invocation {
        engine().invocation_of(0)
    }

    /// The number of callback shards (one per CPU): the valid indices of
    /// [`set_shard_invocation`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(grace::rcu::callback_shards() >= 1);
    /// ```
    pub fn callback_shards() -> usize {
        engine().shard_count()
    }

    /// [`set_callback_invocation`] for one shard (the kernel switches offloading per CPU):
    /// callbacks queued by threads on the CPU of shard `shard` run on those threads, or on
    /// workers. Safe at any time, concurrently with `call`, `barrier`, the shrinker and other
    /// switches.
    ///
    /// # Errors
    ///
    /// [`ShardOutOfRange`] if `shard` is not below [`callback_shards`].
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu::{self, Invocation};
    /// rcu::set_shard_invocation(0, Invocation::Offloaded).unwrap();
    /// assert_eq!(rcu::shard_invocation(0).unwrap(), Invocation::Offloaded);
    /// rcu::set_shard_invocation(0, Invocation::Local).unwrap();
    /// assert!(rcu::set_shard_invocation(usize::MAX, Invocation::Local).is_err());
    /// ```
    pub fn set_shard_invocation(
        shard: usize,
        invocation: Invocation,
    ) -> Result<(), ShardOutOfRange> {
        let e = engine();
        if shard >= e.shard_count() {
            return Err(ShardOutOfRange {
                shard,
                shards: e.shard_count(),
            });
        }
        e.set_invocation_of(shard..shard + 1, invocation);
        Ok(())
    }

    /// Where callbacks of shard `shard` run now (see [`set_shard_invocation`]).
    ///
    /// # Errors
    ///
    /// [`ShardOutOfRange`] if `shard` is not below [`callback_shards`].
    ///
    /// # Examples
    ///
    /// ```
    /// println!("{:?}", grace::rcu::shard_invocation(0).unwrap());
    /// ```
    pub fn shard_invocation(shard: usize) -> Result<Invocation, ShardOutOfRange> {
        let e = engine();
        if shard >= e.shard_count() {
            return Err(ShardOutOfRange {
                shard,
                shards: e.shard_count(),
            });
        }
        Ok(e.invocation_of(shard))
    }

    /// A callback shard index that does not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = grace::rcu::shard_invocation(usize::MAX).unwrap_err();
    /// assert!(e.to_string().contains("shard"));
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ShardOutOfRange {
        /// The index asked for.
        pub shard: usize,
        /// How many shards there are.
        pub shards: usize,
    }

    impl std::fmt::Display for ShardOutOfRange {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "callback shard {} does not exist: there are {} (one per CPU)",
                self.shard, self.shards
            )
        }
    }

    impl std::error::Error for ShardOutOfRange {}

    /// Like [`call`], without waiting to batch: the grace period starts now (the kernel's
    /// `call_rcu_hurry`).
    ///
    /// # Examples
    ///
    /// ```
    /// grace::rcu::call_hurry(|| println!("after a grace period"));
    /// grace::rcu::barrier();
    /// ```
    pub fn call_hurry<F: FnOnce() + Send + 'static>(f: F) {
        let slot = local_slot();
        let bytes = std::mem::size_of_val(&f) as u64;
        engine().call(slot, Callback::new(f), bytes, true, true);
    }

    /// Wait until every callback queued by [`call`] or [`call_hurry`] before this call, on
    /// any thread, has run (the kernel's `rcu_barrier`). Does not wait for callbacks queued
    /// after it starts.
    ///
    /// # Panics
    ///
    /// If called inside a read-side section, or from inside a callback (both would wait for
    /// themselves); and in a child process created by `fork()` after grace had started background threads in
    /// the parent (they do not exist in the child; see [`crate::sys`], "fork()"), instead of
    /// waiting forever.
    ///
    /// # Examples
    ///
    /// ```
    /// grace::rcu::call(|| ());
    /// grace::rcu::barrier();
    /// assert_eq!(grace::rcu::stats().callbacks_pending, 0);
    /// ```
    pub fn barrier() {
        assert_not_reading("barrier");
        if IN_CALLBACK.try_with(Cell::get).unwrap_or(false) {
            panic!(
                "grace: rcu::barrier() called from inside an RCU callback; it would wait for \
                 the very worker running it (self-deadlock)"
            );
        }
        if let Some(e) = ENGINE.get() {
            sys::assert_not_orphaned("rcu::barrier()");
            e.barrier();
        }
    }

    /// Counters and state of the RCU flavor, for diagnostics and tests.
    ///
    /// # Examples
    ///
    /// ```
    /// let before = grace::rcu::stats().grace_periods;
    /// grace::rcu::synchronize();
    /// assert!(grace::rcu::stats().grace_periods > before);
    /// ```
    #[derive(Clone, Debug)]
    #[non_exhaustive]
    pub struct Stats {
        /// Normal grace periods completed.
        pub grace_periods: u64,
        /// Expedited grace periods completed.
        pub expedited_grace_periods: u64,
        /// Callbacks queued by `call`/`call_hurry` since start.
        pub callbacks_queued: u64,
        /// Callbacks invoked since start (panicked ones included).
        pub callbacks_invoked: u64,
        /// Of `callbacks_invoked`: run by a thread that queued callbacks, at one of its later
        /// `call`s ([`Invocation::Local`]) rather than by a worker.
        pub callbacks_invoked_locally: u64,
        /// Callbacks queued and not yet invoked.
        pub callbacks_pending: u64,
        /// Bytes those callbacks free when they run: what [`call_sized`] stated, or each
        /// closure's own size for [`call`] and [`call_hurry`] (see "Memory accounting" there).
        pub bytes_pending: u64,
        /// Callbacks that panicked.
        pub callback_panics: u64,
        /// Grace-period thread cycles run.
        pub gp_thread_cycles: u64,
        /// Reader slots ever registered (live, free for reuse, or abandoned).
        pub reader_slots: usize,
        /// Threads registered now (slots in use by a live thread).
        pub readers_live: usize,
        /// The barrier mode in use.
        pub barrier_mode: BarrierMode,
        /// The grace-period engine's phase now.
        pub phase: GpPhase,
    }

    /// A snapshot of the flavor's [`Stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// let s = grace::rcu::stats();
    /// println!("{} grace periods, mode {:?}", s.grace_periods, s.barrier_mode);
    /// ```
    pub fn stats() -> Stats {
        // Invoked before queued: a callback counted as invoked was queued before, so the
        // differences below never go negative.
        let (invoked, invoked_bytes, (queued, queued_bytes), locally, panics, cycles) =
            match ENGINE.get() {
                Some(e) => (
                    e.counters.invoked.load(Ordering::Relaxed),
                    e.counters.invoked_bytes.load(Ordering::Relaxed),
                    e.queued_total(),
                    e.counters.invoked_locally.load(Ordering::Relaxed),
                    e.counters.panics.load(Ordering::Relaxed),
                    e.counters.cycles.load(Ordering::Relaxed),
                ),
                None => (0, 0, (0, 0), 0, 0, 0),
            };
        Stats {
            grace_periods: GP.completed(GpKind::Normal),
            expedited_grace_periods: GP.completed(GpKind::Expedited),
            callbacks_queued: queued,
            callbacks_invoked: invoked,
            callbacks_invoked_locally: locally,
            callbacks_pending: queued.saturating_sub(invoked),
            bytes_pending: queued_bytes
                .wrapping_sub(invoked_bytes)
                .min(i64::MAX as u64),
            callback_panics: panics,
            gp_thread_cycles: cycles,
            reader_slots: READERS.iter().count(),
            readers_live: READERS
                .iter()
                .filter(|s| s.state.load(Ordering::Relaxed) == crate::reader::state::IN_USE)
                .count(),
            barrier_mode: mode(),
            phase: GP.phase(),
        }
    }
}
