//! [`RcuCell`]: a pointer readers follow inside a read-side section, and updaters replace, for
//! every flavor.
//!
//! The cell owns one heap value and the flavor that protects it: [`Rcu`] by default (a
//! zero-sized value), or an SRCU domain (`&'static Srcu`, `Arc<Srcu>`, any [`Flavor`] that is
//! `Clone`). Readers get `&T` tied to *both* their section and the cell, so the reference
//! cannot outlive the section nor the cell:
//!
//! * [`RcuCell::read`] enters a section of the cell's own flavor and returns a [`CellRef`];
//!   it works for every flavor, and a section of the wrong SRCU domain cannot be used by
//!   mistake;
//! * [`RcuCell::load`] (RCU cells) borrows a section the caller already holds, for the
//!   cost of one load: RCU has a single domain, so the guard's type proves it is the right one.
//!
//! Updaters [`replace`](RcuCell::replace) the value, [`update`](RcuCell::update) it from the
//! current one (arc-swap's `rcu`: a compare-and-swap loop that retries on contention) or
//! [`compare_and_swap`](RcuCell::compare_and_swap) it, and receive the old one as a
//! [`Retired`], which refuses to hand the value out until a grace period has passed:
//!
//! | `Retired` method | what it does |
//! |---|---|
//! | [`Retired::synchronize`] | waits for a grace period, returns the `Box<T>` |
//! | [`Retired::try_reclaim`] | returns the `Box<T>` if its grace period already ended |
//! | [`Retired::defer_drop`] | drops it after a grace period: through [`kvfree`](crate::kvfree()) (batched, no allocation per value) for RCU, the flavor's `call` otherwise |
//! | [`Retired::kvfree`] | the same, and says so (RCU only) |
//! | [`Retired::into_pending`] | hands it to a [`Pending<T>`] of the same flavor and domain |
//! | dropping the `Retired` | same as `defer_drop`: never an early free, never a leak |
//!
//! The retired pointer is kept raw (not a `Box`) until the grace period ends: readers may still
//! hold shared references to it, and a `Box` would claim uniqueness too early.
//!
//! # The update loop
//!
//! [`RcuCell::update`] reads the current value inside a section of the cell's flavor, builds
//! the new one with the caller's function, and publishes it with a compare-and-swap that
//! succeeds only if the value is still the one it read. When another updater won in between,
//! the function runs again on the winner's value; the loser's value was never published, so it
//! is dropped at once (its allocation is reused for the next try). Exactly one value is
//! retired per successful update, and no update is lost: each one is computed from the value it
//! replaces.

use crate::cookie::Cookie;
use crate::flavor::{Flavor, Rcu};
use crate::pending::Pending;
use crate::rcu::Guard;
use crate::sync::{AtomicPtr, Ordering};
use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::{self, NonNull};

/// A heap value protected by a flavor's grace periods: RCU by default, or an SRCU domain.
///
/// # Examples
///
/// ```
/// use grace::{rcu, RcuCell};
/// use std::sync::Arc;
///
/// let config = Arc::new(RcuCell::new(vec![1, 2, 3]));
/// let reader = {
///     let config = config.clone();
///     std::thread::spawn(move || {
///         let guard = rcu::read_lock();
///         let v: &Vec<i32> = config.load(&guard);
///         assert!(v.len() == 3 || v.len() == 4);
///     })
/// };
/// let old = config.replace(vec![1, 2, 3, 4]);
/// let old: Box<Vec<i32>> = old.synchronize(); // waits out the reader
/// assert_eq!(*old, vec![1, 2, 3]);
/// reader.join().unwrap();
/// ```
///
/// On an SRCU domain, whose readers may sleep:
///
/// ```
/// use grace::srcu::Srcu;
/// use grace::RcuCell;
/// static DOMAIN: Srcu = Srcu::new_static();
///
/// let cell = RcuCell::with_flavor(&DOMAIN, String::from("v1"));
/// {
///     let v = cell.read(); // a section of DOMAIN, for as long as `v` lives
///     assert_eq!(*v, "v1");
/// }
/// cell.update(|old| format!("{old}+")).defer_drop(); // DOMAIN.call frees "v1"
/// assert_eq!(*cell.read(), "v1+");
/// ```
pub struct RcuCell<T, F: Flavor = Rcu> {
    ptr: AtomicPtr<T>,
    flavor: F,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the cell hands `&T` to readers on any thread (needs T: Sync) and moves retired
// values to whichever thread reclaims them (needs T: Send); it holds an F.
unsafe impl<T: Send + Sync, F: Flavor + Send> Send for RcuCell<T, F> {}
// SAFETY: as above; `&RcuCell` shares the flavor, which `Flavor: Sync` allows.
unsafe impl<T: Send + Sync, F: Flavor> Sync for RcuCell<T, F> {}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell holding `value`, protected by RCU.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(5u32);
    /// # drop(cell);
    /// ```
    pub fn new(value: T) -> RcuCell<T> {
        RcuCell::with_flavor(Rcu, value)
    }

    /// The current value, valid while `guard` lives (the kernel's `rcu_dereference`): one
    /// load, in a section the caller already holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(5u32);
    /// let g = grace::rcu::read_lock();
    /// assert_eq!(*cell.load(&g), 5);
    /// ```
    #[inline]
    pub fn load<'g>(&'g self, _guard: &'g Guard) -> &'g T {
        // SAFETY: an RCU guard is a section of the cell's flavor (RCU has one domain), begun
        // before this load and outliving 'g.
        unsafe { self.load_in_section() }
    }
}

impl<T: Send + Sync + 'static, F: Flavor + Clone> RcuCell<T, F> {
    /// A cell holding `value`, protected by `flavor` (an SRCU domain as `&'static Srcu` or
    /// `Arc<Srcu>`, or [`Rcu`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let domain = Arc::new(grace::srcu::Srcu::new().unwrap());
    /// let cell = grace::RcuCell::with_flavor(domain.clone(), 5u32);
    /// assert_eq!(*cell.read(), 5);
    /// ```
    pub fn with_flavor(flavor: F, value: T) -> RcuCell<T, F> {
        RcuCell {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            flavor,
            _owns: PhantomData,
        }
    }

    /// The flavor that protects the cell.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::Flavor;
    /// let cell = grace::RcuCell::new(1);
    /// cell.flavor().synchronize();
    /// ```
    pub fn flavor(&self) -> &F {
        &self.flavor
    }

    /// The current value, in a read-side section of the cell's flavor that lasts as long as
    /// the returned [`CellRef`]. Sections nest, so this may be called inside another one.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(String::from("hi"));
    /// let v = cell.read();
    /// assert_eq!(v.len(), 2);
    /// ```
    #[inline]
    pub fn read(&self) -> CellRef<'_, T, F> {
        let guard = self.flavor.read_lock();
        // SAFETY: `guard` is a section of the cell's own flavor, begun before the load, and
        // the CellRef keeps it open for as long as the reference lives.
        let value = unsafe { self.load_in_section() };
        CellRef {
            value,
            _guard: guard,
        }
    }

    /// Publish `value` and retire the old one (the kernel's `rcu_replace_pointer`).
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(1);
    /// cell.replace(2).defer_drop();
    /// let g = grace::rcu::read_lock();
    /// assert_eq!(*cell.load(&g), 2);
    /// ```
    pub fn replace(&self, value: T) -> Retired<T, F> {
        let new = Box::into_raw(Box::new(value));
        // AcqRel: Release publishes the new value's contents (pairs with the Acquire in
        // `load_in_section`); Acquire takes ownership of the old value's.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        // SAFETY: `old` was the published value, unpublished by the swap just now, and the
        // swap handed it to us alone.
        unsafe { self.retire(old) }
    }

    /// Replace the value with `f(current)`, retrying when another updater replaced it in
    /// between (arc-swap's `rcu`, a compare-and-swap loop); returns the value it replaced.
    ///
    /// `f` may run more than once, each time on the newest value; the values of the runs that
    /// lost the race were never published and are dropped at once. `f` runs inside a read-side
    /// section of the cell's flavor, so it must not wait for a grace period of that flavor.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let counter = Arc::new(grace::RcuCell::new(0u64));
    /// let threads: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let c = counter.clone();
    ///         std::thread::spawn(move || {
    ///             for _ in 0..100 {
    ///                 c.update(|n| n + 1).defer_drop();
    ///             }
    ///         })
    ///     })
    ///     .collect();
    /// for t in threads {
    ///     t.join().unwrap();
    /// }
    /// assert_eq!(*counter.read(), 400); // no update lost
    /// ```
    pub fn update(&self, mut f: impl FnMut(&T) -> T) -> Retired<T, F> {
        let guard = self.flavor.read_lock();
        // Acquire: pairs with the Release of `replace`'s swap and of the CAS below; the
        // value's contents are visible before `f` reads them.
        let mut cur = self.ptr.load(Ordering::Acquire);
        // SAFETY: `cur` is published and stays alive while `guard`'s section is open.
        let mut new = Box::into_raw(Box::new(f(unsafe { &*cur })));
        loop {
            // AcqRel on success: Release publishes `new` (pairs with the Acquire loads),
            // Acquire takes ownership of the old value. Acquire on failure: we read the
            // winner's value next.
            match self
                .ptr
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(old) => {
                    drop(guard);
                    // SAFETY: the CAS unpublished `old` and handed it to us alone.
                    return unsafe { self.retire(old) };
                }
                Err(now) => {
                    cur = now;
                    // SAFETY: `new` was never published, so we own it uniquely. If `f`
                    // panics, `slot` frees it.
                    let mut slot = unsafe { Box::from_raw(new) };
                    // SAFETY: `now` is published and alive while `guard`'s section is open.
                    let value = f(unsafe { &*now });
                    // The losing value is dropped here; the allocation is reused.
                    *slot = value;
                    new = Box::into_raw(slot);
                }
            }
        }
    }

    /// Publish `new` if the cell still holds `current` (compared by address: pass a
    /// reference obtained from this cell); returns the replaced value, or gives `new` back.
    ///
    /// # Errors
    ///
    /// `Err(new)` when another value was published since `current` was read.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(1);
    /// let seen = cell.read();
    /// assert!(cell.compare_and_swap(&seen, *seen + 1).is_ok());
    /// assert_eq!(cell.compare_and_swap(&seen, 10).err(), Some(10)); // `seen` is stale now
    /// drop(seen);
    /// assert_eq!(*cell.read(), 2);
    /// ```
    pub fn compare_and_swap(&self, current: &T, new: T) -> Result<Retired<T, F>, T> {
        let new = Box::into_raw(Box::new(new));
        let current = ptr::from_ref(current).cast_mut();
        // AcqRel on success: as in `update`. Relaxed on failure: nothing is read.
        match self
            .ptr
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            // SAFETY: the CAS unpublished `old` and handed it to us alone.
            Ok(old) => Ok(unsafe { self.retire(old) }),
            // SAFETY: `new` was never published; we own it uniquely.
            Err(_) => Err(*unsafe { Box::from_raw(new) }),
        }
    }

    /// Wrap an unpublished value for reclamation after a grace period.
    ///
    /// # Safety
    ///
    /// `old` came from `Box::into_raw`, was published in this cell and has just been
    /// unpublished by the caller, who owns it alone and hands it over.
    unsafe fn retire(&self, old: *mut T) -> Retired<T, F> {
        Retired {
            // The cell never holds null.
            ptr: NonNull::new(old).expect("RcuCell never holds null"),
            // Taken after the unpublication: the grace period it names starts after it.
            cookie: self.flavor.get_state(),
            flavor: self.flavor.clone(),
        }
    }
}

impl<T, F: Flavor> RcuCell<T, F> {
    /// The current value.
    ///
    /// # Safety
    ///
    /// The caller is inside a read-side section of the cell's flavor (its domain, for SRCU)
    /// that began before this call and lasts as long as the returned reference (its
    /// lifetime is the borrow of the cell: callers narrow it to their guard's).
    #[inline]
    unsafe fn load_in_section(&self) -> &T {
        // Acquire: pairs with the Release of the swap in `replace` and of the CAS in `update`
        // and `compare_and_swap`; the value's contents are initialized before we can see its
        // address.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: the pointer is non-null and points to a live T: a replaced value is freed
        // only after a grace period of the cell's flavor, which cannot end while the caller's
        // section (begun before this load) is open; and the cell outlives 'g, so `Drop` has
        // not run.
        unsafe { &*p }
    }

    /// Exclusive access: no reader can hold a reference while `&mut self` exists.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut cell = grace::RcuCell::new(1);
    /// *cell.get_mut() += 1;
    /// let g = grace::rcu::read_lock();
    /// assert_eq!(*cell.load(&g), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` excludes every reader (their references borrow the cell), and the
        // pointer is a live, uniquely owned Box.
        unsafe { &mut *self.ptr.load(Ordering::Relaxed) }
    }

    /// Take the value out of the cell.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::RcuCell::new(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        let me = ManuallyDrop::new(self);
        let p = me.ptr.load(Ordering::Relaxed);
        // SAFETY: `me` is never used again and its Drop does not run; the flavor is moved out
        // once, to be dropped normally.
        drop(unsafe { ptr::read(&me.flavor) });
        // SAFETY: consuming `self` proves no reader borrows the cell; the pointer is the
        // cell's own Box, reclaimed exactly once (Drop is skipped).
        *unsafe { Box::from_raw(p) }
    }
}

impl<T, F: Flavor> Drop for RcuCell<T, F> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no other thread touches the cell now.
        let p = self.ptr.load(Ordering::Relaxed);
        // SAFETY: no reader can hold a reference into the cell (they borrow it), and the
        // current value was never retired, so this is its only owner.
        drop(unsafe { Box::from_raw(p) });
    }
}

impl<T: std::fmt::Debug + Send + Sync + 'static, F: Flavor + Clone> std::fmt::Debug
    for RcuCell<T, F>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RcuCell").field(&*self.read()).finish()
    }
}

/// A reference into an [`RcuCell`] together with the read-side section that keeps it valid
/// ([`RcuCell::read`]). Like the flavor's guard, it stays on its thread.
///
/// # Examples
///
/// ```
/// let cell = grace::RcuCell::new(vec![1, 2]);
/// let v: grace::cell::CellRef<'_, Vec<i32>> = cell.read();
/// assert_eq!(v[1], 2);
/// ```
pub struct CellRef<'a, T, F: Flavor + 'a = Rcu> {
    value: &'a T,
    _guard: F::Guard<'a>,
}

impl<T, F: Flavor> Deref for CellRef<'_, T, F> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: std::fmt::Debug, F: Flavor> std::fmt::Debug for CellRef<'_, T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

/// A value removed from an [`RcuCell`] that readers may still see. It becomes an ordinary
/// `Box<T>` only after a grace period of the cell's flavor. Dropping it defers the drop (as
/// [`defer_drop`](Retired::defer_drop)), so a forgotten `Retired` is neither freed early nor
/// leaked.
///
/// # Examples
///
/// ```
/// use grace::{rcu, RcuCell};
/// let cell = RcuCell::new(String::from("a"));
/// let mut retired = cell.replace(String::from("b"));
/// rcu::cond_synchronize(retired.cookie());
/// let old = loop {
///     match retired.try_reclaim() {
///         Ok(b) => break b,
///         Err(r) => retired = r,
///     }
/// };
/// assert_eq!(*old, "a");
/// ```
#[must_use = "dropping a Retired defers its free after a grace period; say so with defer_drop()"]
pub struct Retired<T: Send + 'static, F: Flavor = Rcu> {
    ptr: NonNull<T>,
    cookie: Cookie<F::Issuer>,
    flavor: F,
}

// SAFETY: a Retired owns its T (it will be dropped or handed out exactly once), so sending it
// to another thread sends the T; it holds an F (sent with it) and a Copy cookie.
unsafe impl<T: Send + 'static, F: Flavor + Send> Send for Retired<T, F> {}

impl<T: Send + 'static, F: Flavor> Retired<T, F> {
    /// The grace period after which the value may be reclaimed.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(0);
    /// let r = cell.replace(1);
    /// let c = r.cookie();
    /// grace::rcu::cond_synchronize(c);
    /// assert!(r.try_reclaim().is_ok());
    /// ```
    pub fn cookie(&self) -> Cookie<F::Issuer> {
        self.cookie
    }

    /// Wait for the grace period and take ownership.
    ///
    /// # Panics
    ///
    /// If it would wait and is called inside a read-side section of RCU on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(0);
    /// assert_eq!(*cell.replace(1).synchronize(), 0);
    /// ```
    pub fn synchronize(self) -> Box<T> {
        self.flavor.cond_synchronize(self.cookie);
        self.into_box()
    }

    /// Take ownership if the grace period has ended; otherwise give `self` back.
    ///
    /// # Errors
    ///
    /// `Err(self)` while the grace period is still running.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(0);
    /// let r = cell.replace(1);
    /// grace::rcu::synchronize();
    /// assert_eq!(*r.try_reclaim().ok().unwrap(), 0);
    /// ```
    pub fn try_reclaim(self) -> Result<Box<T>, Retired<T, F>> {
        if self.flavor.poll_state(self.cookie) {
            Ok(self.into_box())
        } else {
            Err(self)
        }
    }

    /// Drop the value after a grace period, without waiting. For RCU this goes through
    /// [`kvfree`](crate::kvfree()) (batched with other objects, no allocation or callback per
    /// value; [`kvfree_barrier`](crate::kvfree_barrier) waits for it); for other flavors
    /// through the flavor's `call` (its `barrier` waits for it).
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(vec![0u8; 1024]);
    /// cell.replace(vec![]).defer_drop();
    /// grace::kvfree_barrier(); // the old vector is freed by now
    /// ```
    pub fn defer_drop(self) {
        drop(self);
    }

    /// Hand the value to `pending`, which processes it after a grace period like any object
    /// it was given (the kernel's `rcu_pending_enqueue` of an unpublished object).
    ///
    /// # Panics
    ///
    /// If `pending` waits for another SRCU domain than the cell's: its grace periods would not
    /// wait for the cell's readers. Mixing RCU and SRCU does not compile.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::{Pending, Process};
    /// let pending = Pending::new(grace::Rcu, Process::free());
    /// let cell = grace::RcuCell::new(String::from("old"));
    /// cell.replace(String::from("new")).into_pending(&pending);
    /// # drop(pending);
    /// ```
    pub fn into_pending<P>(self, pending: &Pending<T, P>)
    where
        P: Flavor<Issuer = F::Issuer> + Send + Sync + 'static,
    {
        let theirs = pending.flavor().cookie_from_raw(self.cookie.raw());
        assert!(
            theirs == self.cookie,
            "grace: a value retired from a cell of one SRCU domain handed to the Pending of \
             another ({:?} vs {:?}); its grace periods would not wait for the cell's readers",
            self.cookie,
            theirs
        );
        let p = self.into_raw();
        // SAFETY: `p` came from Box::into_raw and was unpublished before the Retired was made
        // (before this call); we gave up ownership (into_raw) and hand it over once. The
        // Pending's grace periods are the cell's: same flavor type, same domain (checked).
        unsafe { pending.enqueue_raw(p) };
    }

    /// The pointer, giving up ownership without reclaiming it.
    fn into_raw(self) -> NonNull<T> {
        let me = ManuallyDrop::new(self);
        // SAFETY: `me` is not used again and its Drop does not run; the flavor is moved out
        // once, to be dropped normally.
        drop(unsafe { ptr::read(&me.flavor) });
        me.ptr
    }

    fn into_box(self) -> Box<T> {
        let p = self.into_raw();
        // SAFETY: callers checked that the grace period of `cookie` ended, so no reader holds
        // a reference; the pointer came from Box::into_raw and is reclaimed exactly once.
        unsafe { Box::from_raw(p.as_ptr()) }
    }
}

impl<T: Send + 'static, F: Flavor<Issuer = Rcu>> Retired<T, F> {
    /// Free the value after an RCU grace period through [`kvfree`](crate::kvfree()): batched
    /// with other objects, without a callback or an allocation per value. What
    /// [`defer_drop`](Retired::defer_drop) does for RCU, by name.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new([0u8; 64]);
    /// cell.replace([1u8; 64]).kvfree();
    /// grace::kvfree_barrier();
    /// ```
    pub fn kvfree(self) {
        let p = self.into_raw();
        // SAFETY: from Box::into_raw, unpublished before this call, given up here and freed
        // once; the flavor's issuer is RCU, so RCU grace periods are the ones readers need.
        unsafe { crate::kvfree::kvfree_raw(p.as_ptr()) };
    }
}

impl<T: Send + 'static, F: Flavor> Drop for Retired<T, F> {
    fn drop(&mut self) {
        let p = self.ptr;
        if self.flavor.poll_state(self.cookie) {
            // SAFETY: the grace period ended: no reader holds it; from Box::into_raw, and this
            // is its only reclamation (we are its Drop).
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        } else if TypeId::of::<F::Issuer>() == TypeId::of::<Rcu>() {
            // SAFETY: unpublished before the Retired was made, from Box::into_raw, reclaimed
            // once (we are its Drop); the flavor's issuer is RCU, so an RCU grace period
            // (what kvfree waits for) is the one its readers need.
            unsafe { crate::kvfree::kvfree_raw(p.as_ptr()) };
        } else {
            let owned = SendPtr(p);
            self.flavor.call(move || {
                let owned = owned;
                // SAFETY: the callback runs after a grace period of the cell's flavor that
                // began after the value was unpublished, so no reader can reach it; the
                // pointer came from Box::into_raw and this is its only reclamation.
                drop(unsafe { Box::from_raw(owned.0.as_ptr()) });
            });
        }
    }
}

/// A pointer that may cross to a worker thread with the value it owns.
struct SendPtr<T>(NonNull<T>);
// SAFETY: it owns a T: Send (see Retired's Drop).
unsafe impl<T: Send> Send for SendPtr<T> {}
