//! The pointer types: [`Atomic`], [`Shared`], [`Owned`], and the tag arithmetic they share.
//!
//! A pointer is stored as one machine word: the address of a `T` (a `Box<T>` allocation) with a
//! *tag* in its low bits, which the alignment of `T` leaves zero (`align_of::<T>() == 8` gives
//! three bits). Tags are added and removed with byte offsets on the pointer itself, never by
//! casting an integer back to a pointer, so the pointer keeps its provenance (Miri's strict
//! provenance mode checks that).

use super::{Flavor, Rcu};
use crate::sync::{AtomicPtr, Ordering};
use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};

/// The mask of the tag bits available in a pointer to `T`: the low bits its alignment keeps
/// zero.
#[inline]
const fn low_bits<T>() -> usize {
    (1 << mem::align_of::<T>().trailing_zeros()) - 1
}

/// `ptr` (untagged) with `tag` in its low bits; tag bits that do not fit are dropped.
#[inline]
fn compose<T>(ptr: *mut T, tag: usize) -> *mut T {
    debug_assert_eq!(ptr as usize & low_bits::<T>(), 0, "unaligned pointer");
    ptr.cast::<u8>()
        .wrapping_add(tag & low_bits::<T>())
        .cast::<T>()
}

/// The untagged pointer and the tag of `data`.
#[inline]
fn decompose<T>(data: *mut T) -> (*mut T, usize) {
    let tag = data as usize & low_bits::<T>();
    (data.cast::<u8>().wrapping_sub(tag).cast::<T>(), tag)
}

mod sealed {
    /// How a pointer type becomes one tagged word and back.
    pub trait Sealed<T> {
        /// The tagged word; ownership (for `Owned`) moves into it.
        fn into_data(self) -> *mut T;
        /// Rebuild the pointer from a word `into_data` returned.
        ///
        /// # Safety
        ///
        /// `data` came from `into_data` of the same type, and (for `Owned`) is turned back
        /// into a value only once.
        unsafe fn from_data(data: *mut T) -> Self;
    }
}

use sealed::Sealed;

/// A pointer that can be stored into an [`Atomic<T, F>`]: an [`Owned<T>`] (which gives up its
/// box) or a [`Shared<'_, T, F>`] of the same flavor. Sealed.
///
/// The flavor parameter is what makes a pointer loaded under one flavor's guard impossible to
/// store into an `Atomic` of another flavor: `Shared<'_, T, Srcu>` is not a `Pointer<T, Rcu>`.
///
/// ```compile_fail
/// use grace::atomic::Atomic;
/// use grace::srcu::Srcu;
/// use std::sync::atomic::Ordering;
/// let domain = Srcu::new().unwrap();
/// let from: Atomic<u64, Srcu> = Atomic::new(1);
/// let to: Atomic<u64> = Atomic::null(); // read under RCU
/// let g = domain.read_lock();
/// to.store(from.load(Ordering::Acquire, &g), Ordering::Release); // an SRCU pointer
/// ```
///
/// # Examples
///
/// ```
/// use grace::atomic::{Atomic, Owned, Pointer};
/// use grace::rcu;
/// fn publish<P: Pointer<u64>>(a: &Atomic<u64>, p: P) {
///     a.store(p, std::sync::atomic::Ordering::Release);
/// }
/// let a = Atomic::null();
/// publish(&a, Owned::new(7));
/// let g = rcu::read_lock();
/// // SAFETY: nothing retires or frees the value while we read it.
/// assert_eq!(unsafe { a.load(std::sync::atomic::Ordering::Acquire, &g).deref() }, &7);
/// # drop(g);
/// # drop(unsafe { a.into_owned() });
/// ```
pub trait Pointer<T, F = Rcu>: sealed::Sealed<T> {}

/// A nullable atomic pointer to a heap-allocated `T`, with tag bits, for building linked
/// structures read under the guards of flavor `F` (the kernel's `__rcu` pointer, crossbeam's
/// `Atomic`).
///
/// [`load`](Atomic::load) takes a guard of `F` and returns a [`Shared`] that lives no longer
/// than that guard; every store takes an [`Owned`] or a `Shared` of the same flavor. An
/// `Atomic` does not own its pointee: dropping it frees nothing (use
/// [`into_owned`](Atomic::into_owned) in the owner's `Drop`).
///
/// # Examples
///
/// ```
/// use grace::atomic::{Atomic, Owned};
/// use grace::rcu;
/// use std::sync::atomic::Ordering;
///
/// let a: Atomic<String> = Atomic::new(String::from("first"));
/// let g = rcu::read_lock();
/// let p = a.load(Ordering::Acquire, &g);
/// // SAFETY: nothing retires or frees the value while `g` lives.
/// assert_eq!(unsafe { p.deref() }, "first");
/// # drop(g);
/// # drop(unsafe { a.into_owned() });
/// ```
pub struct Atomic<T, F = Rcu> {
    /// The tagged pointer (see the module docs of `pointer`).
    data: AtomicPtr<T>,
    /// Not `Send`/`Sync` by itself (see the `unsafe impl`s).
    _ptr: PhantomData<*mut T>,
    /// The flavor is a type tag only: never held, no effect on `Send`/`Sync`.
    _flavor: PhantomData<fn() -> F>,
}

// SAFETY: an `Atomic` hands `&T` to readers on any thread (needs `T: Sync`) and lets any thread
// take the pointee back as an `Owned` and drop it (needs `T: Send`), as crossbeam's `Atomic`.
// The flavor is a type tag (`fn() -> F`), never held.
unsafe impl<T: Send + Sync, F> Send for Atomic<T, F> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync, F> Sync for Atomic<T, F> {}

impl<T, F> Atomic<T, F> {
    /// A null pointer.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// static HEAD: Atomic<u64> = Atomic::null();
    /// let g = grace::rcu::read_lock();
    /// assert!(HEAD.load(std::sync::atomic::Ordering::Acquire, &g).is_null());
    /// ```
    #[cfg(not(loom))]
    pub const fn null() -> Atomic<T, F> {
        Atomic {
            data: AtomicPtr::new(ptr::null_mut()),
            _ptr: PhantomData,
            _flavor: PhantomData,
        }
    }

    /// A null pointer (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn null() -> Atomic<T, F> {
        Atomic {
            data: AtomicPtr::new(ptr::null_mut()),
            _ptr: PhantomData,
            _flavor: PhantomData,
        }
    }

    /// A pointer to `value`, moved to the heap.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// let a = Atomic::<u64>::new(1);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    pub fn new(value: T) -> Atomic<T, F> {
        Atomic::from(Owned::new(value))
    }

    /// Store `new` (the kernel's `rcu_assign_pointer` with `Ordering::Release`). The previous
    /// pointee is neither returned nor freed: use [`swap`](Atomic::swap) to retire it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned};
    /// use std::sync::atomic::Ordering;
    /// let a = Atomic::<u64>::null();
    /// a.store(Owned::new(5), Ordering::Release);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub fn store<P: Pointer<T, F>>(&self, new: P, order: Ordering) {
        // `order`, the caller's: Release pairs with the Acquire (or dependent) load of a
        // reader, so that it sees the pointee initialized.
        self.data.store(new.into_data(), order);
    }

    /// Take the pointee back.
    ///
    /// # Safety
    ///
    /// The pointer is non-null, and no other `Atomic`, `Shared` or `Owned` will be used to
    /// reach or free it again (typically: the structure is being dropped, and the pointee was
    /// not retired).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// let a = Atomic::<u64>::new(3);
    /// // SAFETY: `a` was the only pointer to the value.
    /// assert_eq!(*unsafe { a.into_owned() }, 3);
    /// ```
    pub unsafe fn into_owned(self) -> Owned<T> {
        // Relaxed: we own `self`; whatever published the value happened-before we got it.
        let data = self.data.load(Ordering::Relaxed);
        debug_assert!(!data.is_null(), "Atomic::into_owned of a null pointer");
        // SAFETY: per the contract, a non-null pointer we are the last user of; it came from
        // `Owned::into_data` (the only way a non-null pointer gets into an `Atomic`).
        unsafe { Owned::from_data(data) }
    }

    /// Take the pointee back, or `None` if the pointer is null.
    ///
    /// # Safety
    ///
    /// As [`into_owned`](Atomic::into_owned), except that the pointer may be null.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// let a = Atomic::<u64>::null();
    /// // SAFETY: nothing else points to the (absent) value.
    /// assert!(unsafe { a.try_into_owned() }.is_none());
    /// ```
    pub unsafe fn try_into_owned(self) -> Option<Owned<T>> {
        // Relaxed: as in `into_owned`.
        let data = self.data.load(Ordering::Relaxed);
        if decompose(data).0.is_null() {
            None
        } else {
            // SAFETY: as in `into_owned`.
            Some(unsafe { Owned::from_data(data) })
        }
    }
}

impl<T, F: Flavor> Atomic<T, F> {
    /// Load the pointer (the kernel's `rcu_dereference` with `Ordering::Acquire`). The result
    /// lives no longer than `guard`, a read-side section of this pointer's flavor: a guard of
    /// another flavor does not compile.
    ///
    /// ```compile_fail
    /// use grace::atomic::Atomic;
    /// use grace::srcu::Srcu;
    /// let a: Atomic<u64, Srcu> = Atomic::null();
    /// let g = grace::rcu::read_lock(); // an RCU guard for an SRCU-typed pointer
    /// a.load(std::sync::atomic::Ordering::Acquire, &g);
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// use grace::srcu::Srcu;
    /// use std::sync::atomic::Ordering;
    /// let domain = Srcu::new()?;
    /// let a: Atomic<u64, Srcu> = Atomic::new(9);
    /// let g = domain.read_lock();
    /// // SAFETY: nothing retires or frees the value while `g` lives.
    /// assert_eq!(unsafe { a.load(Ordering::Acquire, &g).deref() }, &9);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// # Ok::<(), grace::srcu::SrcuError>(())
    /// ```
    #[inline]
    pub fn load<'g>(&self, order: Ordering, _guard: &'g F::Guard<'_>) -> Shared<'g, T, F> {
        // `order`, the caller's: Acquire pairs with the Release store or exchange that
        // published the pointee.
        Shared::from_data(self.data.load(order))
    }

    /// Store `new` and return the previous pointer, valid while `guard` lives. Retire it with
    /// [`Shared::retire`] once no new reader can reach it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned};
    /// use grace::Rcu;
    /// use std::sync::atomic::Ordering;
    /// let a = Atomic::<u64>::new(1);
    /// let g = grace::rcu::read_lock();
    /// let old = a.swap(Owned::new(2), Ordering::AcqRel, &g);
    /// // SAFETY: `old` is unlinked (a points to the new value) and retired once.
    /// unsafe { old.retire(&Rcu) };
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub fn swap<'g, P: Pointer<T, F>>(
        &self,
        new: P,
        order: Ordering,
        _guard: &'g F::Guard<'_>,
    ) -> Shared<'g, T, F> {
        // `order`, the caller's: its Release half publishes `new`, its Acquire half pairs
        // with the store that published the old pointee.
        Shared::from_data(self.data.swap(new.into_data(), order))
    }

    /// Store `new` if the pointer (tag included) equals `current`. On success, returns `new`
    /// as a [`Shared`]; on failure, the pointer found and `new` back, unchanged. The orderings
    /// are those of [`AtomicPtr::compare_exchange`](std::sync::atomic::AtomicPtr::compare_exchange).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned, Shared};
    /// use std::sync::atomic::Ordering::{Acquire, AcqRel};
    /// let a = Atomic::<u64>::null();
    /// let g = grace::rcu::read_lock();
    /// let won = a.compare_exchange(Shared::null(), Owned::new(1), AcqRel, Acquire, &g);
    /// assert!(won.is_ok());
    /// let lost = a.compare_exchange(Shared::null(), Owned::new(2), AcqRel, Acquire, &g);
    /// let e = lost.unwrap_err();
    /// // SAFETY: the value is live while `g` lives (nothing retires it).
    /// assert_eq!(unsafe { e.current.deref() }, &1);
    /// assert_eq!(*e.new, 2); // our box, back
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    #[allow(clippy::type_complexity)]
    pub fn compare_exchange<'g, P: Pointer<T, F>>(
        &self,
        current: Shared<'_, T, F>,
        new: P,
        success: Ordering,
        failure: Ordering,
        _guard: &'g F::Guard<'_>,
    ) -> Result<Shared<'g, T, F>, CompareExchangeError<'g, T, P, F>> {
        let new = new.into_data();
        // `success`/`failure`, the caller's: on success Release publishes `new` and Acquire
        // pairs with the publisher of `current`; on failure Acquire pairs with the publisher
        // of the pointer found.
        match self
            .data
            .compare_exchange(current.data, new, success, failure)
        {
            Ok(_) => Ok(Shared::from_data(new)),
            Err(found) => Err(CompareExchangeError {
                current: Shared::from_data(found),
                // SAFETY: `new` came from `into_data` of a `P` just above and was not stored.
                new: unsafe { P::from_data(new) },
            }),
        }
    }

    /// Like [`compare_exchange`](Atomic::compare_exchange), but may fail spuriously (even when
    /// the pointer equals `current`), which is cheaper on some platforms inside a retry loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned};
    /// use std::sync::atomic::Ordering::{Acquire, AcqRel, Relaxed};
    /// let a = Atomic::<u64>::null();
    /// let g = grace::rcu::read_lock();
    /// let mut new = Owned::new(1);
    /// loop {
    ///     let cur = a.load(Relaxed, &g);
    ///     match a.compare_exchange_weak(cur, new, AcqRel, Acquire, &g) {
    ///         Ok(_) => break,
    ///         Err(e) => new = e.new,
    ///     }
    /// }
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    #[allow(clippy::type_complexity)]
    pub fn compare_exchange_weak<'g, P: Pointer<T, F>>(
        &self,
        current: Shared<'_, T, F>,
        new: P,
        success: Ordering,
        failure: Ordering,
        _guard: &'g F::Guard<'_>,
    ) -> Result<Shared<'g, T, F>, CompareExchangeError<'g, T, P, F>> {
        let new = new.into_data();
        // `success`/`failure`, the caller's: as in `compare_exchange`.
        match self
            .data
            .compare_exchange_weak(current.data, new, success, failure)
        {
            Ok(_) => Ok(Shared::from_data(new)),
            Err(found) => Err(CompareExchangeError {
                current: Shared::from_data(found),
                // SAFETY: as in `compare_exchange`.
                new: unsafe { P::from_data(new) },
            }),
        }
    }

    /// Set tag bits: the tag becomes `tag | old tag` (the pointer is unchanged). Returns the
    /// previous value. This is how a Harris list marks a node deleted.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// use std::sync::atomic::Ordering::{AcqRel, Acquire};
    /// let a = Atomic::<u64>::new(1);
    /// let g = grace::rcu::read_lock();
    /// assert_eq!(a.fetch_or(1, AcqRel, &g).tag(), 0);
    /// assert_eq!(a.load(Acquire, &g).tag(), 1);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub fn fetch_or<'g>(
        &self,
        tag: usize,
        order: Ordering,
        guard: &'g F::Guard<'_>,
    ) -> Shared<'g, T, F> {
        self.update_tag(|t| t | tag, order, guard)
    }

    /// Clear tag bits: the tag becomes `tag & old tag`. Returns the previous value.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned};
    /// use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
    /// let a = Atomic::<u64>::null();
    /// a.store(Owned::new(1).with_tag(3), Release);
    /// let g = grace::rcu::read_lock();
    /// assert_eq!(a.fetch_and(1, AcqRel, &g).tag(), 3);
    /// assert_eq!(a.load(Acquire, &g).tag(), 1);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub fn fetch_and<'g>(
        &self,
        tag: usize,
        order: Ordering,
        guard: &'g F::Guard<'_>,
    ) -> Shared<'g, T, F> {
        self.update_tag(|t| t & tag, order, guard)
    }

    /// Flip tag bits: the tag becomes `tag ^ old tag`. Returns the previous value.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// use std::sync::atomic::Ordering::{AcqRel, Acquire};
    /// let a = Atomic::<u64>::new(1);
    /// let g = grace::rcu::read_lock();
    /// a.fetch_xor(1, AcqRel, &g);
    /// assert_eq!(a.load(Acquire, &g).tag(), 1);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub fn fetch_xor<'g>(
        &self,
        tag: usize,
        order: Ordering,
        guard: &'g F::Guard<'_>,
    ) -> Shared<'g, T, F> {
        self.update_tag(|t| t ^ tag, order, guard)
    }

    /// A compare-exchange loop that rewrites the tag only (`AtomicPtr::fetch_or` keeps
    /// provenance only on newer toolchains, and loom has none).
    #[inline]
    fn update_tag<'g>(
        &self,
        f: impl Fn(usize) -> usize,
        order: Ordering,
        _guard: &'g F::Guard<'_>,
    ) -> Shared<'g, T, F> {
        // Relaxed: a first guess; the exchange below is what is ordered.
        let mut cur = self.data.load(Ordering::Relaxed);
        loop {
            let (raw, tag) = decompose(cur);
            let new = compose(raw, f(tag));
            // `order`, the caller's, on success; on failure Relaxed: we only retry.
            match self
                .data
                .compare_exchange_weak(cur, new, order, Ordering::Relaxed)
            {
                Ok(_) => return Shared::from_data(cur),
                Err(found) => cur = found,
            }
        }
    }
}

impl<T, F> Default for Atomic<T, F> {
    /// A null pointer.
    fn default() -> Atomic<T, F> {
        Atomic::null()
    }
}

impl<T, F> From<Owned<T>> for Atomic<T, F> {
    /// A pointer to the box of `owned`, tag included.
    fn from(owned: Owned<T>) -> Atomic<T, F> {
        Atomic {
            data: AtomicPtr::new(owned.into_data()),
            _ptr: PhantomData,
            _flavor: PhantomData,
        }
    }
}

impl<T, F> From<Box<T>> for Atomic<T, F> {
    fn from(b: Box<T>) -> Atomic<T, F> {
        Atomic::from(Owned::from(b))
    }
}

impl<T, F> fmt::Debug for Atomic<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a diagnostic snapshot.
        let (raw, tag) = decompose(self.data.load(Ordering::Relaxed));
        f.debug_struct("Atomic")
            .field("raw", &raw)
            .field("tag", &tag)
            .finish()
    }
}

/// The error of a failed [`Atomic::compare_exchange`]: the pointer found, and the proposed
/// pointer given back (an [`Owned`] is not lost).
///
/// # Examples
///
/// ```
/// use grace::atomic::{Atomic, Owned, Shared};
/// use std::sync::atomic::Ordering::{AcqRel, Acquire};
/// let a = Atomic::<u64>::new(1);
/// let g = grace::rcu::read_lock();
/// let e = a.compare_exchange(Shared::null(), Owned::new(2), AcqRel, Acquire, &g).unwrap_err();
/// assert!(!e.current.is_null());
/// assert_eq!(*e.new, 2);
/// # drop(g);
/// # drop(unsafe { a.into_owned() });
/// ```
pub struct CompareExchangeError<'g, T, P: Pointer<T, F>, F = Rcu> {
    /// The pointer found in the `Atomic`.
    pub current: Shared<'g, T, F>,
    /// The pointer that was to be stored, given back.
    pub new: P,
}

impl<T, P: Pointer<T, F> + fmt::Debug, F> fmt::Debug for CompareExchangeError<'_, T, P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompareExchangeError")
            .field("current", &self.current)
            .field("new", &self.new)
            .finish()
    }
}

/// A pointer loaded from an [`Atomic`] under a guard of flavor `F`, valid for the guard's
/// lifetime `'g` (crossbeam's `Shared`; what `rcu_dereference` returns in the kernel). Copy,
/// possibly null, possibly tagged.
///
/// Reading through it is `unsafe` ([`as_ref`](Shared::as_ref), [`deref`](Shared::deref)):
/// whether the pointee is still allocated depends on how the structure retires its nodes,
/// which the type cannot see.
///
/// # Examples
///
/// ```
/// use grace::atomic::{Atomic, Shared};
/// use std::sync::atomic::Ordering;
/// let a = Atomic::<u64>::new(4);
/// let g = grace::rcu::read_lock();
/// let p: Shared<'_, u64> = a.load(Ordering::Acquire, &g);
/// // SAFETY: the value is retired by nobody while `g` lives.
/// assert_eq!(unsafe { p.as_ref() }, Some(&4));
/// # drop(g);
/// # drop(unsafe { a.into_owned() });
/// ```
pub struct Shared<'g, T, F = Rcu> {
    /// The tagged pointer.
    data: *mut T,
    /// `&'g ()`: borrowed from the guard. `*mut T` keeps it on the guard's thread, like the
    /// guard (`!Send`, `!Sync`).
    _guard: PhantomData<(&'g (), *mut T)>,
    /// The flavor, a type tag only.
    _flavor: PhantomData<fn() -> F>,
}

impl<T, F> Clone for Shared<'_, T, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, F> Copy for Shared<'_, T, F> {}

impl<'g, T, F> Shared<'g, T, F> {
    #[inline]
    fn from_data(data: *mut T) -> Shared<'g, T, F> {
        Shared {
            data,
            _guard: PhantomData,
            _flavor: PhantomData,
        }
    }

    /// A null pointer.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// let p: Shared<'_, u64> = Shared::null();
    /// assert!(p.is_null());
    /// ```
    #[inline]
    pub fn null() -> Shared<'g, T, F> {
        Shared::from_data(ptr::null_mut())
    }

    /// Whether the pointer is null (a tagged null pointer is null).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// assert!(Shared::<u64>::null().with_tag(1).is_null());
    /// ```
    #[inline]
    pub fn is_null(&self) -> bool {
        decompose(self.data).0.is_null()
    }

    /// The pointer without its tag.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// assert!(Shared::<u64>::null().with_tag(1).as_raw().is_null());
    /// ```
    #[inline]
    pub fn as_raw(&self) -> *const T {
        decompose(self.data).0
    }

    /// The tag (`0..=mask`, where the mask is `align_of::<T>() - 1`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// assert_eq!(Shared::<u64>::null().with_tag(5).tag(), 5);
    /// ```
    #[inline]
    pub fn tag(&self) -> usize {
        decompose(self.data).1
    }

    /// The same pointer with its tag replaced by `tag`. Bits that do not fit (at or above
    /// `align_of::<T>()`) are dropped, as crossbeam does.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// let p = Shared::<u64>::null();
    /// assert_eq!(p.with_tag(1).tag(), 1);
    /// assert_eq!(p.with_tag(8).tag(), 0); // u64 has 3 tag bits
    /// assert_eq!(p.with_tag(1).with_tag(0), p);
    /// ```
    #[inline]
    pub fn with_tag(&self, tag: usize) -> Shared<'g, T, F> {
        Shared::from_data(compose(decompose(self.data).0, tag))
    }

    /// A reference to the pointee for the guard's lifetime, or `None` if null.
    ///
    /// # Safety
    ///
    /// The pointee is not freed during `'g`, which holds when the pointer was reached from an
    /// `Atomic` under the guard `'g` borrows and:
    ///
    /// * nodes of this structure are freed only through [`Shared::retire`] (or another grace
    ///   period) of **the flavor value (the domain) that guard belongs to**, after they were
    ///   unlinked; or they are not freed at all while readers may run;
    /// * the pointee was reachable when this guard's section could see it: it was loaded
    ///   from an `Atomic` it was stored in, not kept from an earlier section.
    ///
    /// Also, no `&mut T` to the pointee exists (only an `Owned` gives one).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// use std::sync::atomic::Ordering;
    /// let a = Atomic::<u64>::null();
    /// let g = grace::rcu::read_lock();
    /// // SAFETY: null; and nothing frees a pointee of `a` while `g` lives.
    /// assert_eq!(unsafe { a.load(Ordering::Acquire, &g).as_ref() }, None);
    /// ```
    #[inline]
    pub unsafe fn as_ref(&self) -> Option<&'g T> {
        // SAFETY: null or, per the contract, a live `T` with no `&mut` for 'g.
        unsafe { self.as_raw().as_ref() }
    }

    /// A reference to the pointee for the guard's lifetime.
    ///
    /// # Safety
    ///
    /// As [`as_ref`](Shared::as_ref), and the pointer is not null.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Atomic;
    /// use std::sync::atomic::Ordering;
    /// let a = Atomic::<u64>::new(2);
    /// let g = grace::rcu::read_lock();
    /// // SAFETY: non-null; nothing frees it while `g` lives.
    /// assert_eq!(*unsafe { a.load(Ordering::Acquire, &g).deref() }, 2);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub unsafe fn deref(&self) -> &'g T {
        debug_assert!(!self.is_null(), "Shared::deref of a null pointer");
        // SAFETY: per the contract.
        unsafe { &*self.as_raw() }
    }

    /// Take the pointee as an [`Owned`] (tag kept).
    ///
    /// # Safety
    ///
    /// The pointer is non-null, and nothing else will reach it again: it is unlinked from
    /// every `Atomic`, no reader can still hold it (a grace period has passed since it was
    /// unlinked, or none could ever have seen it), and it is not retired or taken twice.
    ///
    /// # Examples
    ///
    /// A node that lost the race to be published was never seen by anyone:
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned, Shared};
    /// use std::sync::atomic::Ordering::{AcqRel, Acquire};
    /// let a = Atomic::<u64>::new(1);
    /// let g = grace::rcu::read_lock();
    /// let mine = Owned::new(2).into_shared(&g);
    /// if let Err(e) = a.compare_exchange(Shared::null(), mine, AcqRel, Acquire, &g) {
    ///     // SAFETY: `mine` was never stored anywhere; nobody else has it.
    ///     let back: Owned<u64> = unsafe { e.new.into_owned() };
    ///     assert_eq!(*back, 2);
    /// }
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    #[inline]
    pub unsafe fn into_owned(self) -> Owned<T> {
        debug_assert!(!self.is_null(), "Shared::into_owned of a null pointer");
        // SAFETY: per the contract; the non-null pointer came from `Owned::into_data`.
        unsafe { Owned::from_data(self.data) }
    }

    /// Like [`into_owned`](Shared::into_owned), but `None` for a null pointer.
    ///
    /// # Safety
    ///
    /// As [`into_owned`](Shared::into_owned), except that the pointer may be null.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Shared;
    /// // SAFETY: null.
    /// assert!(unsafe { Shared::<u64>::null().try_into_owned() }.is_none());
    /// ```
    #[inline]
    pub unsafe fn try_into_owned(self) -> Option<Owned<T>> {
        if self.is_null() {
            None
        } else {
            // SAFETY: per the contract.
            Some(unsafe { Owned::from_data(self.data) })
        }
    }
}

impl<T, F> Default for Shared<'_, T, F> {
    fn default() -> Self {
        Shared::null()
    }
}

impl<T, F> PartialEq for Shared<'_, T, F> {
    /// Equal pointers with equal tags.
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl<T, F> Eq for Shared<'_, T, F> {}

impl<T, F> fmt::Debug for Shared<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("raw", &self.as_raw())
            .field("tag", &self.tag())
            .finish()
    }
}

impl<T, F> fmt::Pointer for Shared<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&self.as_raw(), f)
    }
}

impl<T, F> sealed::Sealed<T> for Shared<'_, T, F> {
    fn into_data(self) -> *mut T {
        self.data
    }
    unsafe fn from_data(data: *mut T) -> Self {
        Shared::from_data(data)
    }
}

impl<T, F> Pointer<T, F> for Shared<'_, T, F> {}

/// A uniquely owned heap value with a tag: a `Box<T>` that can be stored into an [`Atomic`]
/// (crossbeam's `Owned`). Dropping it drops the value.
///
/// # Examples
///
/// ```
/// use grace::atomic::{Atomic, Owned};
/// use std::sync::atomic::Ordering::Release;
/// let mut o = Owned::new(vec![1]);
/// o.push(2); // unique: mutable access
/// let a: Atomic<Vec<i32>> = Atomic::null();
/// a.store(o, Release);
/// # drop(unsafe { a.into_owned() });
/// ```
pub struct Owned<T> {
    /// The tagged `Box::into_raw` pointer.
    data: NonNull<T>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: an `Owned` is a `Box<T>`: sending it sends the `T`.
unsafe impl<T: Send> Send for Owned<T> {}
// SAFETY: as a `Box<T>`: sharing it shares `&T` only.
unsafe impl<T: Sync> Sync for Owned<T> {}

impl<T> Owned<T> {
    /// Move `value` to the heap.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = grace::atomic::Owned::new(1u8);
    /// assert_eq!(*o, 1);
    /// ```
    pub fn new(value: T) -> Owned<T> {
        Owned::from(Box::new(value))
    }

    /// The box back (the tag is dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// let b: Box<u8> = grace::atomic::Owned::new(1u8).with_tag(0).into_box();
    /// assert_eq!(*b, 1);
    /// ```
    pub fn into_box(self) -> Box<T> {
        let raw = decompose(self.into_data()).0;
        // SAFETY: the untagged pointer is the one `Box::into_raw` gave, owned by us alone.
        unsafe { Box::from_raw(raw) }
    }

    /// Give up ownership to a [`Shared`] valid while `guard` lives, for linking into a
    /// structure. Unless it is then stored into an `Atomic`, the value leaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Owned};
    /// use std::sync::atomic::Ordering::Release;
    /// let a = Atomic::<u64>::null();
    /// let g = grace::rcu::read_lock();
    /// let p = Owned::new(6).into_shared(&g);
    /// a.store(p, Release);
    /// # drop(g);
    /// # drop(unsafe { a.into_owned() });
    /// ```
    pub fn into_shared<'g, F: Flavor>(self, _guard: &'g F::Guard<'_>) -> Shared<'g, T, F> {
        Shared::from_data(self.into_data())
    }

    /// The tag.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::atomic::Owned::new(1u64).with_tag(2).tag(), 2);
    /// ```
    pub fn tag(&self) -> usize {
        decompose(self.data.as_ptr()).1
    }

    /// The same box with its tag replaced by `tag` (bits that do not fit are dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// let o = grace::atomic::Owned::new(1u64).with_tag(1);
    /// assert_eq!((o.tag(), *o), (1, 1));
    /// ```
    pub fn with_tag(self, tag: usize) -> Owned<T> {
        let data = compose(decompose(self.into_data()).0, tag);
        // SAFETY: the same box, re-tagged; ownership moves from `self` to the result.
        unsafe { Owned::from_data(data) }
    }

    #[inline]
    fn raw(&self) -> *mut T {
        decompose(self.data.as_ptr()).0
    }
}

impl<T> sealed::Sealed<T> for Owned<T> {
    fn into_data(self) -> *mut T {
        let data = self.data.as_ptr();
        mem::forget(self);
        data
    }
    unsafe fn from_data(data: *mut T) -> Self {
        debug_assert!(!decompose(data).0.is_null());
        Owned {
            // SAFETY: per the contract, the (non-null) word of an `Owned`.
            data: unsafe { NonNull::new_unchecked(data) },
            _owns: PhantomData,
        }
    }
}

impl<T, F> Pointer<T, F> for Owned<T> {}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: the untagged pointer came from `Box::into_raw` and we own it alone.
        drop(unsafe { Box::from_raw(self.raw()) });
    }
}

impl<T> Deref for Owned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a live box we own.
        unsafe { &*self.raw() }
    }
}

impl<T> DerefMut for Owned<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: a live box we own uniquely (`&mut self`).
        unsafe { &mut *self.raw() }
    }
}

impl<T> From<Box<T>> for Owned<T> {
    fn from(b: Box<T>) -> Owned<T> {
        Owned {
            // SAFETY: `Box::into_raw` is never null.
            data: unsafe { NonNull::new_unchecked(Box::into_raw(b)) },
            _owns: PhantomData,
        }
    }
}

impl<T> From<T> for Owned<T> {
    fn from(value: T) -> Owned<T> {
        Owned::new(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for Owned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owned")
            .field("value", &**self)
            .field("tag", &self.tag())
            .finish()
    }
}
