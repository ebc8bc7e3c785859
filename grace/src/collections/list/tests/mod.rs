//! Tests of [`List`] with a stand-in flavor driven by hand (`Limbo`), so that they need none
//! of grace's background threads: Miri runs them with its leak check on
//! (`cargo +nightly miri test -p grace --lib collections::list`, under `.ci/miri.sh`'s seeds),
//! and the loom model of `loom_rculist.rs` uses the same stand-in. The threaded tests against
//! the real flavors are in `tests/list.rs`.
//!
//! The stand-in: a guard counts itself in a reader counter; `retire_raw` puts the node in a
//! limbo list; a thread outside any section calls `grace_point`, which takes the limbo list,
//! executes a `SeqCst` fence and frees the batch only if it then reads the counter at zero
//! (otherwise it puts the batch back). That is a correct, if impatient, grace period: a
//! reader counted as zero either ended (its Release decrement pairs with our Acquire load) or
//! started after the fence, and then sees every unlink made before the batch was taken
//! (store-buffering through the two `SeqCst` fences). The negative loom model sets `broken`:
//! its grace point drops the batch without looking at the readers (the memory itself is
//! deallocated only at the end, so the early drop is a race loom reports, not a use-after-free
//! of the test's own memory).

#[cfg(loom)]
use super::List;
use crate::atomic::{Flavor, Retire};
use crate::sync::{fence, lock, AtomicUsize, Mutex, Ordering};
#[cfg(loom)]
use loom::sync::Arc;
#[cfg(not(loom))]
use std::sync::Arc;

#[cfg(loom)]
mod loom_rculist;

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
pub(super) struct Limbo(Arc<Domain>);

pub(super) struct LimboGuard<'a>(&'a Domain);

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
    pub(super) fn new(broken: bool) -> Limbo {
        Limbo(Arc::new(Domain {
            readers: AtomicUsize::new(0),
            limbo: Mutex::new(Vec::new()),
            broken,
            zombies: Mutex::new(Vec::new()),
        }))
    }

    pub(super) fn read_lock(&self) -> LimboGuard<'_> {
        // SeqCst, then the fence: a grace point that misses this increment is SeqCst-before
        // our fence, so our loads after it see every unlink made before that grace point's
        // batch was taken (pairs with the fence in `grace_point`).
        self.0.readers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        LimboGuard(&self.0)
    }

    /// Free what was retired before now if no reader is inside a section; outside sections.
    pub(super) fn grace_point(&self) {
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
    pub(super) fn free_all(&self) {
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

/// Small enough for Miri's many seeds: one thread against a `VecDeque`, and a reader thread
/// racing a writer, with values in boxes (so a freed one is a use-after-free Miri reports).
#[cfg(not(loom))]
mod unit {
    use super::Limbo;
    use crate::collections::List;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A value that counts its drops.
    struct Counted(Box<u64>, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            // Relaxed: read after every thread joined.
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(list: &List<Counted, Limbo>) -> Vec<u64> {
        let g = list.flavor().read_lock();
        list.iter(&g).map(|c| *c.0).collect()
    }

    #[test]
    fn every_operation_matches_a_vecdeque_and_frees_each_value_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let c = |v: u64| Counted(Box::new(v), drops.clone());
        let flavor = Limbo::new(false);
        let list = List::with_flavor(flavor.clone());
        let mut model = VecDeque::new();
        for v in 0..4 {
            list.push_back(c(v));
            model.push_back(v);
        }
        list.push_front(c(10));
        model.push_front(10);
        assert!(list.remove_first(|x| *x.0 == 2));
        model.retain(|&x| x != 2);
        assert!(!list.remove_first(|x| *x.0 == 2));
        assert!(list.replace_first(|x| *x.0 == 3, c(30)).is_ok()); // the tail
        model
            .iter_mut()
            .for_each(|x| *x = if *x == 3 { 30 } else { *x });
        assert!(list.replace_first(|x| *x.0 == 99, c(99)).is_err()); // dropped here
        list.push_back(c(4)); // after the replaced tail
        model.push_back(4);
        list.retain(|x| *x.0 % 2 == 0);
        model.retain(|x| x % 2 == 0);
        assert_eq!(snapshot(&list), Vec::from(model.clone()));
        assert_eq!(list.len(), model.len());
        {
            let g = flavor.read_lock();
            assert_eq!(list.front(&g).map(|x| *x.0), model.front().copied());
        }
        flavor.grace_point();
        // Removed: 2, 3 (replaced), 1 (odd), and the rejected 99.
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        list.clear();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        list.push_back(c(5)); // the tail was reset by `clear`
        assert_eq!(snapshot(&list), [5]);
        flavor.grace_point();
        drop(list);
        flavor.free_all();
        assert_eq!(drops.load(Ordering::Relaxed), 9);
    }

    #[test]
    fn a_reader_walks_through_entries_removed_and_replaced_under_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let flavor = Limbo::new(false);
        let list = Arc::new(List::with_flavor(flavor.clone()));
        for v in 0..3 {
            list.push_back(Counted(Box::new(v), drops.clone()));
        }
        let reader = {
            let list = list.clone();
            std::thread::spawn(move || {
                let g = list.flavor().read_lock();
                let seen: Vec<u64> = list.iter(&g).map(|c| *c.0).collect();
                seen
            })
        };
        assert!(list.remove_first(|c| *c.0 == 1));
        assert!(list
            .replace_first(|c| *c.0 == 2, Counted(Box::new(20), drops.clone()))
            .is_ok());
        flavor.grace_point(); // frees only if the reader is not inside its walk
        let seen = reader.join().unwrap();
        // 0 stays for the whole walk; 1 may or may not be seen; 2 or 20 (never both).
        assert_eq!(seen.first(), Some(&0));
        assert!(seen.contains(&2) != seen.contains(&20), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        drop(list);
        flavor.free_all();
        assert_eq!(drops.load(Ordering::Relaxed), 4);
    }
}
