//! `Limbo`: a stand-in flavor driven by hand, for the model checks (loom) and the Miri tests
//! of the structures built on [`Retire`](crate::atomic::Retire): the `atomic` module's
//! Harris–Michael list, `collections::List` and `collections::HashMap`. It needs none of
//! grace's background threads, so Miri runs its tests with the leak check on.
//!
//! A guard counts itself in a reader counter; `retire_raw` puts the node in a limbo list; a
//! thread outside any section calls `grace_point`, which takes the limbo list, executes a
//! `SeqCst` fence and frees the batch only if it then reads the counter at zero (otherwise it
//! puts the batch back). That is a correct, if impatient, grace period: a reader counted as
//! zero either ended (its Release decrement pairs with our Acquire load) or started after the
//! fence, and then sees every unlink made before the batch was taken (store-buffering through
//! the two `SeqCst` fences). A negative model builds it `broken`: its grace point drops the
//! batch without looking at the readers (the memory itself is deallocated only at the end, so
//! that the early drop is a race loom reports, not a use-after-free of the test's own memory).

use crate::atomic::{Flavor, Retire};
use crate::sync::{fence, lock, AtomicUsize, Mutex, Ordering};
#[cfg(loom)]
use loom::sync::Arc;
#[cfg(not(loom))]
use std::sync::Arc;

/// A retired box, with its typed destructor and deallocation.
struct Retired {
    ptr: *mut (),
    drop: unsafe fn(*mut ()),
    dealloc: unsafe fn(*mut ()),
}

// SAFETY: it stands for a `Box<T>` with `T: Send` (`retire_raw`'s bound).
unsafe impl Send for Retired {}

/// # Safety
///
/// `p` is a `Box<T>::into_raw` pointer whose `T` nothing uses any more and is dropped once.
unsafe fn drop_value<T>(p: *mut ()) {
    // SAFETY: per the contract.
    unsafe { std::ptr::drop_in_place(p.cast::<T>()) }
}

/// # Safety
///
/// `p` is a `Box<T>::into_raw` pointer whose `T` was dropped, and nothing uses it any more.
unsafe fn dealloc<T>(p: *mut ()) {
    // SAFETY: per the contract; `ManuallyDrop` does not drop the `T` again.
    drop(unsafe { Box::from_raw(p.cast::<std::mem::ManuallyDrop<T>>()) });
}

impl Retired {
    /// Drop and free.
    ///
    /// # Safety
    ///
    /// Nothing uses the object any more.
    unsafe fn free(self) {
        // SAFETY: per the contract.
        unsafe {
            (self.drop)(self.ptr);
            (self.dealloc)(self.ptr);
        }
    }
}

struct Domain {
    readers: AtomicUsize,
    limbo: Mutex<Vec<Retired>>,
    broken: bool,
    /// Dropped early by the negative model; deallocated by `free_all`.
    zombies: Mutex<Vec<Retired>>,
}

/// The stand-in flavor, a handle on a `Domain`.
#[derive(Clone)]
pub(crate) struct Limbo(Arc<Domain>);

pub(crate) struct LimboGuard<'a>(&'a Domain);

impl Drop for LimboGuard<'_> {
    fn drop(&mut self) {
        // Release: the section's accesses happen-before a grace point's Acquire load that
        // counts this decrement (every update of the counter is a read-modify-write, so the
        // release sequence carries it).
        self.0.readers.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(loom)]
impl Flavor for Limbo {
    type Guard<'a> = LimboGuard<'a>;
}

/// Only `read_lock` and retirement are used by `List`; the rest is the simplest honest
/// implementation (no polled grace periods: every cookie is already completed, because
/// `synchronize` waits in place).
#[cfg(not(loom))]
impl Flavor for Limbo {
    type Guard<'a> = LimboGuard<'a>;
    type Issuer = crate::Rcu;
    fn read_lock(&self) -> LimboGuard<'_> {
        Limbo::read_lock(self)
    }
    fn synchronize(&self) {
        while !lock(&self.0.limbo).is_empty() {
            self.grace_point();
            std::thread::yield_now();
        }
    }
    fn synchronize_expedited(&self) {
        self.synchronize()
    }
    fn get_state(&self) -> crate::cookie::Cookie<crate::Rcu> {
        crate::cookie::Cookie::completed()
    }
    fn start_poll(&self) -> crate::cookie::Cookie<crate::Rcu> {
        crate::cookie::Cookie::completed()
    }
    fn poll_state(&self, _: crate::cookie::Cookie<crate::Rcu>) -> bool {
        true
    }
    fn cookie_from_raw(&self, _: u64) -> crate::cookie::Cookie<crate::Rcu> {
        crate::cookie::Cookie::completed()
    }
    fn call<C: FnOnce() + Send + 'static>(&self, f: C) {
        self.synchronize();
        f()
    }
    fn call_hurry<C: FnOnce() + Send + 'static>(&self, f: C) {
        self.call(f)
    }
    fn barrier(&self) {}
}

// SAFETY: `grace_point` frees a node only when no section that could reach it is still
// running (module docs); every guard of a `Limbo` counts in its own domain, which is the only
// domain a test uses with it (and `owns_guard` checks it).
unsafe impl Retire for Limbo {
    unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
        lock(&self.0.limbo).push(Retired {
            ptr: ptr.cast(),
            drop: drop_value::<T>,
            dealloc: dealloc::<T>,
        });
    }
    fn owns_guard<'a>(&self, guard: &LimboGuard<'a>) -> bool
    where
        Self: 'a,
    {
        std::ptr::eq(guard.0, &*self.0)
    }
    fn retire_barrier(&self) {
        self.free_all();
    }
}

impl Limbo {
    pub(crate) fn new(broken: bool) -> Limbo {
        Limbo(Arc::new(Domain {
            readers: AtomicUsize::new(0),
            limbo: Mutex::new(Vec::new()),
            broken,
            zombies: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn read_lock(&self) -> LimboGuard<'_> {
        // SeqCst, then the fence: a grace point that misses this increment is SeqCst-before
        // our fence, so our loads after it see every unlink made before that grace point's
        // batch was taken (pairs with the fence in `grace_point`).
        self.0.readers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        LimboGuard(&self.0)
    }

    /// Free what was retired before now if no reader is inside a section; outside sections.
    pub(crate) fn grace_point(&self) {
        let batch = std::mem::take(&mut *lock(&self.0.limbo));
        // SeqCst: pairs with the fence in `read_lock` (see there).
        fence(Ordering::SeqCst);
        if self.0.broken {
            for r in &batch {
                // SAFETY: the negative model's deliberate early drop (dropped once: the batch
                // goes to the zombies, which are only deallocated).
                unsafe { (r.drop)(r.ptr) };
            }
            lock(&self.0.zombies).extend(batch);
        // Acquire: pairs with the Release decrements of ended sections.
        } else if self.0.readers.load(Ordering::Acquire) == 0 {
            for r in batch {
                // SAFETY: retired (so unlinked) before we took the batch, and no reader can
                // still reach it (module docs).
                unsafe { r.free() };
            }
        } else {
            lock(&self.0.limbo).extend(batch);
        }
    }

    /// After every reader is gone: free what is left.
    pub(crate) fn free_all(&self) {
        for r in std::mem::take(&mut *lock(&self.0.limbo)) {
            // SAFETY: no reader is left (the callers' contract: after every thread joined).
            unsafe { r.free() };
        }
        for z in std::mem::take(&mut *lock(&self.0.zombies)) {
            // SAFETY: dropped already by the negative model; no reader is left.
            unsafe { (z.dealloc)(z.ptr) };
        }
    }
}

/// What a loom model stores: a value that counts its drops by id (in an array of `N` counters)
/// and overwrites itself with a poison when dropped. Its payload is a loom `UnsafeCell`, so a
/// read that does not happen-before the drop (or after the write that made it) is a causality
/// violation loom reports.
#[cfg(loom)]
pub(crate) struct Val<const N: usize> {
    pub(crate) id: usize,
    payload: loom::cell::UnsafeCell<u64>,
    drops: Arc<[AtomicUsize; N]>,
}

/// What a dropped [`Val`]'s payload holds.
#[cfg(loom)]
const POISON: u64 = u64::MAX;

#[cfg(loom)]
impl<const N: usize> Val<N> {
    pub(crate) fn new(id: usize, drops: &Arc<[AtomicUsize; N]>) -> Self {
        Val {
            id,
            payload: loom::cell::UnsafeCell::new(id as u64),
            drops: drops.clone(),
        }
    }

    /// The payload, checked: panics if the value was freed.
    pub(crate) fn read(&self) -> u64 {
        // SAFETY: loom's cell checks the access against the destructor's write itself.
        let v = self.payload.with(|p| unsafe { *p });
        assert_eq!(v, self.id as u64, "read a freed value");
        v
    }
}

// SAFETY: the cell is loom's, which checks every access for races itself; that check is what
// the models are for.
#[cfg(loom)]
unsafe impl<const N: usize> Sync for Val<N> {}

#[cfg(loom)]
impl<const N: usize> Drop for Val<N> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // loom is unwinding a failed execution: touching its objects would abort
        }
        // SAFETY: as in `read`; this write is what a reader racing with the free collides with.
        self.payload.with_mut(|p| unsafe { *p = POISON });
        // Relaxed: read after every thread joined.
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}
