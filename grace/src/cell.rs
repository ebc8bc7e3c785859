//! [`RcuCell`]: a pointer readers follow inside a read-side section, and updaters replace.
//!
//! The cell owns one heap value. Readers get `&T` tied to *both* their guard and the cell, so
//! the reference cannot outlive the section nor the cell. Updaters [`RcuCell::replace`] the
//! value and receive the old one as a [`Retired`], which refuses to hand the value out until a
//! grace period has passed:
//!
//! | `Retired` method | what it does |
//! |---|---|
//! | [`Retired::synchronize`] | waits for a grace period, returns the `Box<T>` |
//! | [`Retired::try_reclaim`] | returns the `Box<T>` if its grace period already ended |
//! | [`Retired::defer_drop`] | drops it after a grace period, via `rcu::call` |
//! | dropping the `Retired` | same as `defer_drop`: never an early free, never a leak |
//!
//! The retired pointer is kept raw (not a `Box`) until the grace period ends: readers may still
//! hold shared references to it, and a `Box` would claim uniqueness too early.

use crate::cookie::Cookie;
use crate::rcu::{self, Guard};
use crate::sync::{AtomicPtr, Ordering};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An RCU-protected, heap-allocated value.
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
pub struct RcuCell<T> {
    ptr: AtomicPtr<T>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the cell hands `&T` to readers on any thread (needs T: Sync) and moves retired
// values to whichever thread reclaims them (needs T: Send).
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell holding `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(5u32);
    /// # drop(cell);
    /// ```
    pub fn new(value: T) -> RcuCell<T> {
        RcuCell {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            _owns: PhantomData,
        }
    }

    /// The current value, valid while `guard` lives (the kernel's `rcu_dereference`).
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
        // Acquire: pairs with the AcqRel swap in `replace`; the value's contents are
        // initialized before we can see its address.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: the pointer is non-null and points to a live T: `replace` only frees a value
        // after a grace period, which cannot end while `_guard`'s section (begun before this
        // load) is open; and the cell itself outlives 'g, so `Drop` has not run.
        unsafe { &*p }
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
    pub fn replace(&self, value: T) -> Retired<T> {
        let new = Box::into_raw(Box::new(value));
        // AcqRel: Release publishes the new value's contents (pairs with the Acquire in
        // `load`); Acquire takes ownership of the old value's.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        Retired {
            // SAFETY-free: `old` came from Box::into_raw and is never null.
            ptr: NonNull::new(old).expect("RcuCell never holds null"),
            // Taken after the swap: the grace period it names starts after the unpublication.
            cookie: rcu::get_state(),
        }
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
        let p = self.ptr.load(Ordering::Relaxed);
        std::mem::forget(self);
        // SAFETY: consuming `self` proves no reader borrows the cell; the pointer is the
        // cell's own Box, reclaimed exactly once (Drop is skipped by `forget`).
        *unsafe { Box::from_raw(p) }
    }
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no other thread touches the cell now.
        let p = self.ptr.load(Ordering::Relaxed);
        // SAFETY: no reader can hold a reference into the cell (they borrow it), and the
        // current value was never retired, so this is its only owner.
        drop(unsafe { Box::from_raw(p) });
    }
}

impl<T: std::fmt::Debug + Send + Sync + 'static> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = rcu::read_lock();
        f.debug_tuple("RcuCell").field(self.load(&g)).finish()
    }
}

/// A value removed from an [`RcuCell`] that readers may still see. It becomes an ordinary
/// `Box<T>` only after a grace period. Dropping it defers the drop through `rcu::call`, so a
/// forgotten `Retired` is neither freed early nor leaked.
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
#[must_use = "dropping a Retired defers its free through rcu::call; say so with defer_drop()"]
pub struct Retired<T: Send + 'static> {
    ptr: NonNull<T>,
    cookie: Cookie,
}

// SAFETY: a Retired owns its T (it will be dropped or handed out exactly once), so sending it
// to another thread sends the T.
unsafe impl<T: Send + 'static> Send for Retired<T> {}

impl<T: Send + 'static> Retired<T> {
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
    pub fn cookie(&self) -> Cookie {
        self.cookie
    }

    /// Wait for the grace period and take ownership.
    ///
    /// # Panics
    ///
    /// If it would wait and is called inside a read-side section on the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(0);
    /// assert_eq!(*cell.replace(1).synchronize(), 0);
    /// ```
    pub fn synchronize(self) -> Box<T> {
        rcu::cond_synchronize(self.cookie);
        self.into_box()
    }

    /// Take ownership if the grace period has ended; otherwise give `self` back.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(0);
    /// let r = cell.replace(1);
    /// grace::rcu::synchronize();
    /// assert_eq!(*r.try_reclaim().ok().unwrap(), 0);
    /// ```
    pub fn try_reclaim(self) -> Result<Box<T>, Retired<T>> {
        if rcu::poll_state(self.cookie) {
            Ok(self.into_box())
        } else {
            Err(self)
        }
    }

    /// Drop the value after a grace period, without waiting (via `rcu::call`).
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = grace::RcuCell::new(vec![0u8; 1024]);
    /// cell.replace(vec![]).defer_drop();
    /// grace::rcu::barrier(); // the old vector is freed by now
    /// ```
    pub fn defer_drop(self) {
        let cookie = self.cookie;
        if rcu::poll_state(cookie) {
            drop(self.into_box());
            return;
        }
        let owned = SendPtr(self.ptr);
        std::mem::forget(self);
        rcu::call(move || {
            let owned = owned;
            // SAFETY: the callback runs after a grace period that began after the value was
            // unpublished, so no reader can reach it; the pointer came from Box::into_raw and
            // this is its only reclamation (the Retired was forgotten above).
            drop(unsafe { Box::from_raw(owned.0.as_ptr()) });
        });
    }

    fn into_box(self) -> Box<T> {
        let p = self.ptr;
        std::mem::forget(self);
        // SAFETY: callers checked that the grace period of `cookie` ended, so no reader holds
        // a reference; the pointer came from Box::into_raw and is reclaimed exactly once.
        unsafe { Box::from_raw(p.as_ptr()) }
    }
}

impl<T: Send + 'static> Drop for Retired<T> {
    fn drop(&mut self) {
        let me = Retired {
            ptr: self.ptr,
            cookie: self.cookie,
        };
        me.defer_drop();
    }
}

/// A pointer that may cross to a worker thread with the value it owns.
struct SendPtr<T>(NonNull<T>);
// SAFETY: it owns a T: Send (see Retired::defer_drop).
unsafe impl<T: Send> Send for SendPtr<T> {}
