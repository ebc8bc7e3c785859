//! Safe wrappers around the liburcu peer: liburcu's `memb` flavour, the C
//! reference implementation of user-space RCU.
//!
//! Two read sides are measured:
//!
//! * **inline C** (`liburcu-memb-inline-c`): a loop in `csrc/urcu_peer.c`,
//!   compiled with `_LGPL_SOURCE` so that `urcu_memb_read_lock()` and
//!   `urcu_memb_read_unlock()` expand to liburcu's static inline read side,
//!   which is what a C program built against liburcu runs;
//! * **FFI** (`liburcu-memb-ffi`): Rust calling the out-of-line
//!   `urcu_memb_read_lock`/`urcu_memb_read_unlock` symbols exported by
//!   `liburcu-memb.so`, which is what a Rust program binding liburcu runs.
//!
//! Everything here needs liburcu-dev at build time. Without it the build
//! still succeeds, [`available`] returns `false`, [`unavailable_reason`] says
//! why, and [`Registration::new`] returns `None`, so no other entry point can
//! be reached.

use std::marker::PhantomData;
use std::time::Duration;

/// Whether the liburcu peer was compiled in (liburcu-dev found at build time).
pub fn available() -> bool {
    cfg!(grace_liburcu)
}

/// Why the liburcu peer is missing, or `""` when it is [`available`].
pub fn unavailable_reason() -> &'static str {
    if available() {
        ""
    } else {
        match env!("GRACE_BENCH_LIBURCU_REASON") {
            "" => "liburcu-dev not found at build time",
            reason => reason,
        }
    }
}

#[cfg(grace_liburcu)]
mod ffi {
    use std::ffi::c_void;

    extern "C" {
        // Exported by liburcu-memb.so (the out-of-line read side).
        pub fn urcu_memb_read_lock();
        pub fn urcu_memb_read_unlock();

        // Defined in csrc/urcu_peer.c.
        pub fn grace_urcu_register_thread();
        pub fn grace_urcu_unregister_thread();
        pub fn grace_urcu_read_loop_inline(iters: u64) -> u64;
        pub fn grace_urcu_synchronize();
        pub fn grace_urcu_barrier();
        pub fn grace_urcu_call_loop(n: u64) -> u64;
        pub fn grace_urcu_heads_new(n: u64, counter: *mut u64) -> *mut c_void;
        pub fn grace_urcu_call_queue(heads: *mut c_void);
        pub fn grace_urcu_heads_free(heads: *mut c_void);
        pub fn grace_urcu_free_loop(n: u64, counter: *mut u64) -> u64;
        pub fn grace_urcu_box_heads_new(
            n: u64,
            free_box: unsafe extern "C" fn(*mut c_void),
        ) -> *mut c_void;
        pub fn grace_urcu_box_call(heads: *mut c_void, i: u64, boxed: *mut c_void);
        pub fn grace_urcu_box_heads_free(heads: *mut c_void);
    }
}

#[cfg(grace_liburcu)]
thread_local! {
    /// Whether this thread holds a [`Registration`] (liburcu must not see a
    /// thread registered twice).
    static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling thread's registration as a liburcu-memb reader.
///
/// Holding one proves that the thread is registered, which every liburcu
/// read-side primitive, `call_rcu` and `rcu_barrier` require; dropping it
/// unregisters the thread. It cannot leave the thread (it is `!Send`), and
/// none of its methods leaves a read-side critical section open, so the
/// unregistration on drop never happens inside one.
pub struct Registration {
    /// `*mut ()` makes the type `!Send` and `!Sync`.
    _thread_bound: PhantomData<*mut ()>,
    /// Uninhabited when liburcu is missing: no value can then exist.
    #[cfg(not(grace_liburcu))]
    never: std::convert::Infallible,
}

/// Registers the calling thread, or says why it cannot be.
pub(crate) fn register() -> Result<Registration, String> {
    Registration::new().ok_or_else(|| {
        if available() {
            "this thread is already registered with liburcu".to_string()
        } else {
            unavailable_reason().to_string()
        }
    })
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("liburcu::Registration")
    }
}

#[cfg(grace_liburcu)]
impl Registration {
    /// Registers the calling thread with liburcu-memb.
    ///
    /// Returns `None` when liburcu is not [`available`] or when the thread
    /// already holds a registration.
    pub fn new() -> Option<Self> {
        if REGISTERED.with(|r| r.replace(true)) {
            return None;
        }
        // SAFETY: the thread-local flag above guarantees that this thread is
        // not registered yet, so liburcu sees one registration per thread;
        // the matching unregistration runs in `Drop` on this same thread
        // (`Registration` is `!Send`).
        unsafe { ffi::grace_urcu_register_thread() };
        Some(Self {
            _thread_bound: PhantomData,
        })
    }

    /// One outermost read-side critical section through the exported
    /// (out-of-line) `urcu_memb_read_lock`/`urcu_memb_read_unlock` symbols.
    #[inline]
    pub fn read_section_ffi(&self) {
        // SAFETY: `self` proves this thread is registered with liburcu-memb;
        // the lock is released before returning, so sections stay balanced
        // and none is open when the registration is dropped.
        unsafe {
            ffi::urcu_memb_read_lock();
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            ffi::urcu_memb_read_unlock();
        }
    }

    /// One outermost read-side critical section that lasts `d` (the thread
    /// sleeps inside it): a reader that holds grace periods back.
    pub fn read_hold(&self, d: Duration) {
        // SAFETY: `self` proves this thread is registered with liburcu-memb;
        // the lock is released before returning (sleeping touches no liburcu
        // state), so sections stay balanced.
        unsafe {
            ffi::urcu_memb_read_lock();
            std::thread::sleep(d);
            ffi::urcu_memb_read_unlock();
        }
    }

    /// Runs `iters` outermost read-side critical sections in C with
    /// liburcu's inline read side and returns the time they took.
    pub fn read_loop_inline(&self, iters: u64) -> Duration {
        // SAFETY: `self` proves this thread is registered, which is the only
        // precondition of the C loop; it leaves no section open.
        let ns = unsafe { ffi::grace_urcu_read_loop_inline(iters) };
        Duration::from_nanos(ns)
    }

    /// Waits for a liburcu grace period (`urcu_memb_synchronize_rcu`).
    pub fn synchronize(&self) {
        // SAFETY: synchronize_rcu must not run inside a read-side section;
        // no method of `Registration` leaves one open, so this thread is
        // outside any section.
        unsafe { ffi::grace_urcu_synchronize() };
    }

    /// Waits until every `call_rcu` callback queued before it, by any thread,
    /// has run (`urcu_memb_barrier`).
    pub fn barrier(&self) {
        // SAFETY: rcu_barrier must not be called from a call_rcu worker
        // thread nor inside a read-side section: this is a registered
        // application thread outside any section (see `synchronize`).
        unsafe { ffi::grace_urcu_barrier() };
    }

    /// The liburcu equivalent of `kvfree(Box::new([0u8; 64]))`, `n` times:
    /// `malloc(64)`, then `call_rcu` with a callback that adds one to
    /// `counter` and `free`s the object. Returns how many were queued (fewer
    /// than `n` only if `malloc` failed).
    ///
    /// # Safety
    ///
    /// `counter` must stay valid until every callback queued here has run
    /// (after a [`Registration::barrier`] that follows this call).
    pub unsafe fn free_loop(&self, n: u64, counter: *const std::sync::atomic::AtomicU64) -> u64 {
        // SAFETY: `self` proves this thread is registered, as call_rcu
        // requires; the callbacks only add to the counter (valid for as
        // long as the caller promised; `AtomicU64` has the layout of `u64`)
        // and free their own objects.
        unsafe { ffi::grace_urcu_free_loop(n, counter as *mut u64) }
    }

    /// Single-thread `call_rcu` throughput: queues `n` preallocated
    /// callbacks that each increment a counter, then `rcu_barrier()`.
    /// Returns the elapsed time, barrier included, or an error when the
    /// counter does not reach `n`.
    pub fn call_loop(&self, n: u64) -> Result<Duration, String> {
        // SAFETY: `self` proves this thread is registered, as call_rcu and
        // rcu_barrier require; the C routine owns its heads and counter.
        let ns = unsafe { ffi::grace_urcu_call_loop(n) };
        if ns == u64::MAX {
            Err(format!(
                "liburcu call_rcu loop of {n} callbacks failed (see stderr)"
            ))
        } else {
            Ok(Duration::from_nanos(ns))
        }
    }
}

#[cfg(grace_liburcu)]
impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: this thread registered in `new` (the value cannot have
        // moved to another thread) and no read-side section is open.
        unsafe { ffi::grace_urcu_unregister_thread() };
        REGISTERED.with(|r| r.set(false));
    }
}

#[cfg(not(grace_liburcu))]
impl Registration {
    /// Registers the calling thread with liburcu-memb; always `None` here
    /// because liburcu is not [`available`].
    pub fn new() -> Option<Self> {
        None
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn read_section_ffi(&self) {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn read_hold(&self, _d: Duration) {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn read_loop_inline(&self, _iters: u64) -> Duration {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn synchronize(&self) {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn barrier(&self) {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    pub fn call_loop(&self, _n: u64) -> Result<Duration, String> {
        match self.never {}
    }

    /// See the liburcu build; unreachable without liburcu.
    ///
    /// # Safety
    ///
    /// As in the liburcu build.
    pub unsafe fn free_loop(&self, _n: u64, _counter: *const std::sync::atomic::AtomicU64) -> u64 {
        match self.never {}
    }
}

/// `n` preallocated `call_rcu` heads whose callbacks each add one to a
/// counter (used by the multi-thread call suite).
pub(crate) struct CallHeads {
    #[cfg(grace_liburcu)]
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    /// Set once queued: the heads then belong to liburcu until a barrier.
    queued: bool,
    /// Heads are tied to the registered thread that queues them.
    _thread_bound: PhantomData<*mut ()>,
    #[cfg(not(grace_liburcu))]
    never: std::convert::Infallible,
}

#[cfg(grace_liburcu)]
impl CallHeads {
    /// Allocates (and touches) `n` heads counting into `counter`.
    ///
    /// # Safety
    ///
    /// `counter` must stay valid until every callback queued by
    /// [`CallHeads::queue`] has run.
    pub(crate) unsafe fn new(
        _reg: &Registration,
        n: u64,
        counter: *const std::sync::atomic::AtomicU64,
    ) -> Option<Self> {
        // SAFETY: the C side only stores the counter pointer (valid for as
        // long as the caller promised) and increments it atomically from the
        // callbacks; `AtomicU64` has the layout of `u64`.
        let ptr = unsafe { ffi::grace_urcu_heads_new(n, counter as *mut u64) };
        Some(Self {
            ptr: std::ptr::NonNull::new(ptr)?,
            queued: false,
            _thread_bound: PhantomData,
        })
    }

    /// Queues every head with `call_rcu` (once).
    pub(crate) fn queue(&mut self, _reg: &Registration) {
        assert!(!self.queued, "liburcu heads queued twice");
        self.queued = true;
        // SAFETY: `_reg` proves the thread is registered; the heads were
        // never queued before (checked above), and they are not freed until
        // the caller has seen all callbacks run (see `free_after_barrier`),
        // or never.
        unsafe { ffi::grace_urcu_call_queue(self.ptr.as_ptr()) };
    }

    /// Frees the heads; call it only once a barrier has shown that all of
    /// their callbacks ran (`all_ran`). Otherwise they are leaked, since a
    /// late callback could still touch them.
    pub(crate) fn free_after_barrier(self, all_ran: bool) {
        if !self.queued || all_ran {
            // SAFETY: either liburcu never saw the heads, or every queued
            // callback has run, so liburcu holds no reference to them.
            unsafe { ffi::grace_urcu_heads_free(self.ptr.as_ptr()) };
        }
    }
}

#[cfg(not(grace_liburcu))]
impl CallHeads {
    pub(crate) unsafe fn new(
        reg: &Registration,
        _n: u64,
        _counter: *const std::sync::atomic::AtomicU64,
    ) -> Option<Self> {
        match reg.never {}
    }

    pub(crate) fn queue(&mut self, _reg: &Registration) {
        let _ = (self.queued, &self._thread_bound);
        match self.never {}
    }

    pub(crate) fn free_after_barrier(self, _all_ran: bool) {
        match self.never {}
    }
}

/// `n` preallocated `call_rcu` heads whose callbacks each free one object the
/// caller allocated, through the caller's function (the call suite's free64
/// rows: liburcu has no headless form, so the object travels beside a head).
pub(crate) struct BoxHeads {
    #[cfg(grace_liburcu)]
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    /// Heads queued so far (each once).
    queued: u64,
    /// Heads allocated.
    n: u64,
    /// Heads are tied to the registered thread that queues them.
    _thread_bound: PhantomData<*mut ()>,
    #[cfg(not(grace_liburcu))]
    never: std::convert::Infallible,
}

#[cfg(grace_liburcu)]
impl BoxHeads {
    /// Allocates (and touches) `n` heads whose callbacks free their object
    /// with `free_box`.
    pub(crate) fn new(
        _reg: &Registration,
        n: u64,
        free_box: unsafe extern "C" fn(*mut std::ffi::c_void),
    ) -> Option<Self> {
        // SAFETY: the C side allocates and initialises the heads and only
        // stores the function pointer, which is called from callbacks with
        // the objects handed to `call`, whose contract covers it.
        let ptr = unsafe { ffi::grace_urcu_box_heads_new(n, free_box) };
        Some(Self {
            ptr: std::ptr::NonNull::new(ptr)?,
            queued: 0,
            n,
            _thread_bound: PhantomData,
        })
    }

    /// Queues the next head with `call_rcu`: after a grace period its
    /// callback passes `boxed` to the heads' free function. `false` (and
    /// nothing queued) once every head is used.
    ///
    /// # Safety
    ///
    /// `boxed` must be valid to pass, once, to the `free_box` given to
    /// [`BoxHeads::new`], from another thread.
    #[inline]
    pub(crate) unsafe fn call(
        &mut self,
        _reg: &Registration,
        boxed: *mut std::ffi::c_void,
    ) -> bool {
        if self.queued == self.n {
            return false;
        }
        // SAFETY: `_reg` proves the thread is registered; head `queued` is
        // in bounds and was never queued (the count only grows); the heads
        // are not freed before every queued callback has run (see
        // `free_after_barrier`); `boxed` is the caller's to hand over.
        unsafe { ffi::grace_urcu_box_call(self.ptr.as_ptr(), self.queued, boxed) };
        self.queued += 1;
        true
    }

    /// Frees the heads; call it only once a barrier has shown that all of
    /// their callbacks ran (`all_ran`). Otherwise they are leaked.
    pub(crate) fn free_after_barrier(self, all_ran: bool) {
        if self.queued == 0 || all_ran {
            // SAFETY: either liburcu never saw the heads, or every queued
            // callback has run, so liburcu holds no reference to them.
            unsafe { ffi::grace_urcu_box_heads_free(self.ptr.as_ptr()) };
        }
    }
}

#[cfg(not(grace_liburcu))]
impl BoxHeads {
    pub(crate) fn new(
        reg: &Registration,
        _n: u64,
        _free_box: unsafe extern "C" fn(*mut std::ffi::c_void),
    ) -> Option<Self> {
        match reg.never {}
    }

    pub(crate) unsafe fn call(
        &mut self,
        _reg: &Registration,
        _boxed: *mut std::ffi::c_void,
    ) -> bool {
        let _ = (self.queued, self.n, &self._thread_bound);
        match self.never {}
    }

    pub(crate) fn free_after_barrier(self, _all_ran: bool) {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_consistent() {
        assert_eq!(available(), unavailable_reason().is_empty());
        assert_eq!(available(), Registration::new().is_some());
    }

    #[test]
    #[cfg(grace_liburcu)]
    fn double_registration_is_refused() {
        {
            let _reg = Registration::new().expect("first registration");
            assert!(Registration::new().is_none());
        }
        assert!(Registration::new().is_some());
    }

    #[test]
    #[cfg(grace_liburcu)]
    fn peer_routines_run() {
        let reg = Registration::new().expect("registration");
        reg.read_section_ffi();
        assert!(reg.read_loop_inline(1000) > Duration::ZERO);
        reg.synchronize();
        reg.call_loop(1000).expect("call_rcu loop");
        let counter = std::sync::atomic::AtomicU64::new(0);
        // SAFETY: the barrier below runs every callback before `counter` goes away.
        assert_eq!(unsafe { reg.free_loop(1000, &counter) }, 1000);
        reg.barrier();
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1000);
    }
}
