//! Pointers for linked structures under any flavor's guard: [`Atomic`], [`Shared`], [`Owned`],
//! and [`Retire`] to free an unlinked node after a grace period.
//!
//! A lock-free list, tree or hash map read under RCU needs more than [`RcuCell`](crate::RcuCell)'s
//! single owned value: many nodes, each holding pointers to the next, replaced with
//! compare-and-swap, marked deleted with a bit in the pointer (Harris's trick), and freed once
//! no reader can still be walking through them. This module gives those pieces the shape a
//! Rust user of crossbeam-epoch already knows, with grace's flavors as the reclamation scheme.
//!
//! ```
//! use grace::atomic::{Atomic, Owned, Retire};
//! use grace::{rcu, Rcu};
//! use std::sync::atomic::Ordering::{AcqRel, Acquire};
//!
//! let head: Atomic<u64> = Atomic::new(1);
//! let g = rcu::read_lock();
//! let old = head.swap(Owned::new(2), AcqRel, &g); // publish the new node
//! // SAFETY: `old` is unlinked (nothing points to it any more) and retired once.
//! unsafe { old.retire(&Rcu) }; // kvfree'd after a grace period
//! // SAFETY: values of `head` are freed only by `retire` through RCU.
//! assert_eq!(unsafe { head.load(Acquire, &g).deref() }, &2);
//! # drop(g);
//! # drop(unsafe { head.into_owned() });
//! ```
//!
//! # Map to crossbeam-epoch and to the kernel
//!
//! | crossbeam-epoch | `grace::atomic` | the kernel |
//! |---|---|---|
//! | `Atomic<T>` | [`Atomic<T, F = Rcu>`](Atomic) | a `T __rcu *` field |
//! | `epoch::pin()`, `&Guard` | [`rcu::read_lock()`](crate::rcu::read_lock), [`Srcu::read_lock`](crate::srcu::Srcu::read_lock): `&F::Guard<'_>` | `rcu_read_lock()`, `srcu_read_lock()` |
//! | `Atomic::load(Acquire, &g)` | [`Atomic::load`] | `rcu_dereference()` (consume; Rust has only Acquire) |
//! | `Atomic::store(p, Release)` | [`Atomic::store`] | `rcu_assign_pointer()` |
//! | `swap`, `compare_exchange(_weak)`, `fetch_or/and/xor` | the same, same signatures plus the flavor | `xchg()`, `cmpxchg()` on an `__rcu` pointer |
//! | `Shared<'g, T>`, `deref`, `as_ref` (unsafe) | [`Shared<'g, T, F>`](Shared), the same (unsafe) | the pointer `rcu_dereference` returned |
//! | `Owned<T>`, `into_shared(&g)` | [`Owned<T>`](Owned), the same | a `kmalloc`'d node, not yet published |
//! | `tag()`, `with_tag()` | the same: low bits free by alignment | pointer marking by hand |
//! | `guard.defer_destroy(p)` | [`p.retire(&flavor)`](Shared::retire) | `kvfree_rcu(p)`, `call_srcu(..., free)` |
//!
//! A crossbeam-epoch structure ports with a handful of line changes (see
//! `examples/treiber_stack.rs`, crossbeam's Treiber stack with its diff listed at the top).
//!
//! # Flavors, and what a guard protects
//!
//! The flavor is a type parameter: `Atomic<T>` is read under RCU guards, `Atomic<T, Srcu>`
//! under guards of an SRCU domain (`Atomic<T, SrcuLite>`, `Atomic<T, Arc<Srcu>>`,
//! `Atomic<T, &'static Srcu>` likewise). [`Atomic::load`] takes `&F::Guard<'_>`, so loading an
//! SRCU-typed pointer under an RCU guard, or the reverse, does not compile; a [`Shared`] carries
//! its flavor too, so one loaded under an SRCU guard cannot be stored into an RCU-typed
//! `Atomic` either.
//!
//! Two SRCU domains *of the same type* have the same guard type, so the types cannot tell a
//! guard of domain A from one of domain B. A structure bound to a domain checks at run time,
//! once per operation, with [`Retire::assert_guard`]: it panics with a message naming the
//! mistake when the guard belongs to another domain. For RCU the check is free (one domain);
//! for SRCU it is a thread-local lookup and a compare on the common path. The `Atomic` itself
//! does not check: it would have to store its domain, a word per pointer in every node.
//!
//! # What is safe, and what is not
//!
//! Loading, storing, exchanging and tagging are safe: they move pointers, never dereference
//! them. Three things can cause undefined behaviour and are `unsafe`, each with its contract:
//!
//! * reading through a [`Shared`] ([`Shared::as_ref`], [`Shared::deref`]): the pointee may
//!   already be freed if the structure retired it through another domain, or freed it without
//!   a grace period, or if the pointer was kept from an earlier section;
//! * retiring ([`Shared::retire`]): the node must be unlinked first (no reader that starts
//!   later can reach it) and retired once;
//! * taking ownership back ([`Shared::into_owned`], [`Atomic::into_owned`]): no reader may
//!   still hold it.
//!
//! A structure built on these keeps the `unsafe` inside and offers a safe API, as the
//! Harris–Michael list and Michael hash map in this module's tests do.
//!
//! # Retiring a node
//!
//! [`Shared::retire`] frees an unlinked node after a grace period of the flavor, through
//! [`Retire::retire_raw`]:
//!
//! * **RCU**: [`kvfree_raw`](crate::kvfree::kvfree_raw), the kernel's headless `kvfree_rcu`.
//!   The node needs no embedded header; the pointer is stored in the thread's array for its
//!   type (a store and a cursor bump, no lock, no atomic read-modify-write, no allocation on the
//!   fast path), and arrays are freed in bulk after a grace period, usually by the same thread
//!   when the node has no drop glue. Its cost is that of `kvfree`; the `atomic_retire`
//!   benchmark of `grace-bench` measures swap + `retire` beside crossbeam-epoch's swap +
//!   `defer_destroy` of the same node.
//! * **SRCU** (and any other flavor): one `call` per node, a one-word closure that drops the
//!   box, queued on the domain's per-CPU callback list (a short lock; a list node of 64
//!   records is allocated per 64 calls) and run by the domain's callback processing after a
//!   grace period.
//!
//! [`Retire::retire_barrier`] waits until everything retired before it is freed.
//!
//! # Orderings
//!
//! Every operation takes the caller's orderings, as `AtomicPtr` does. The rules are the
//! kernel's: publish with `Release` (`rcu_assign_pointer`), read with `Acquire`
//! (`rcu_dereference`: the kernel's address-dependency ordering is not expressible in Rust,
//! and `Acquire` costs nothing more on x86 and little on Arm). Unlinking needs no ordering of
//! its own against readers: the grace period before the free orders every reader that could
//! see the node before the free (see the ordering guarantee in [`crate::rcu`]).

mod pointer;
#[cfg(test)]
mod tests;

pub use pointer::{Atomic, CompareExchangeError, Owned, Pointer, Shared};

#[cfg(not(loom))]
pub(crate) use crate::flavor::{Flavor, Rcu};
#[cfg(loom)]
pub(crate) use stand_in::{Flavor, Rcu};

/// Under loom the real flavors are compiled out; the pointer types are modelled with these
/// stand-ins (see `tests/loom_list.rs`).
#[cfg(loom)]
mod stand_in {
    /// The guard type of a flavor, as [`crate::flavor::Flavor`] declares it.
    pub trait Flavor: Sync {
        /// The read-side guard.
        type Guard<'a>
        where
            Self: 'a;
    }

    /// The default flavor parameter; the models name their own.
    #[derive(Debug)]
    pub struct Rcu;
}

/// A flavor that can free an unlinked node after one of its grace periods, and tell its own
/// guards from another domain's.
///
/// Implemented for [`Rcu`] (through `kvfree`), every [`Srcu`](crate::srcu::Srcu) domain
/// (through `call`), and references and `Arc`s of those.
///
/// # Safety
///
/// An implementation guarantees that:
///
/// * `retire_raw(ptr)` drops and frees `ptr` (as `Box::from_raw` would) exactly once, and only
///   after every read-side section of `self` that began before the call, and for which
///   `owns_guard` would answer `true`, has ended;
/// * `owns_guard(g)` answers `true` only for guards of sections that `self`'s grace periods
///   wait for;
/// * `retire_barrier` returns only once everything retired before it (on any thread) is freed.
///
/// # Examples
///
/// A structure generic over the flavor:
///
/// ```
/// use grace::atomic::{Atomic, Owned, Retire};
/// use grace::srcu::Srcu;
/// use std::sync::atomic::Ordering::AcqRel;
/// use std::sync::Arc;
///
/// struct Slot<R: Retire> {
///     value: Atomic<u64, R>,
///     flavor: R,
/// }
///
/// impl<R: Retire> Slot<R> {
///     fn set(&self, v: u64, guard: &R::Guard<'_>) {
///         self.flavor.assert_guard(guard);
///         let old = self.value.swap(Owned::new(v), AcqRel, guard);
///         // SAFETY: unlinked by the swap, retired once, through the flavor whose guards
///         // this slot is read under (checked above).
///         unsafe { old.retire(&self.flavor) };
///     }
/// }
///
/// let slot = Slot { value: Atomic::null(), flavor: Arc::new(Srcu::new()?) };
/// let g = slot.flavor.read_lock();
/// slot.set(1, &g);
/// slot.set(2, &g);
/// # drop(g);
/// # drop(unsafe { slot.value.into_owned() });
/// slot.flavor.retire_barrier();
/// # Ok::<(), grace::srcu::SrcuError>(())
/// ```
pub unsafe trait Retire: Flavor {
    /// Free `ptr` (drop its `T`, free its box) after a grace period of this flavor.
    ///
    /// # Safety
    ///
    /// * `ptr` came from `Box::<T>::into_raw` (an [`Owned`] or [`Atomic::new`]) and is not
    ///   freed otherwise, nor retired twice;
    /// * it is unlinked: no reader that starts after this call can reach it, and every reader
    ///   that could reach it before holds a guard of `self` (this domain).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Retire;
    /// use grace::Rcu;
    /// let p = Box::into_raw(Box::new([0u8; 64]));
    /// // SAFETY: from Box::into_raw, never published, retired once.
    /// unsafe { Rcu.retire_raw(p) };
    /// Rcu.retire_barrier();
    /// ```
    unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T);

    /// Whether `guard` is a section of this flavor value: always for RCU; for SRCU, whether
    /// it was taken from this very domain.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Retire;
    /// use grace::srcu::Srcu;
    /// let (a, b) = (Srcu::new()?, Srcu::new()?);
    /// let g = a.read_lock();
    /// assert!(a.owns_guard(&g));
    /// assert!(!b.owns_guard(&g));
    /// # Ok::<(), grace::srcu::SrcuError>(())
    /// ```
    fn owns_guard<'a>(&self, guard: &Self::Guard<'a>) -> bool
    where
        Self: 'a;

    /// Panic unless `guard` is a section of this flavor value (see
    /// [`owns_guard`](Retire::owns_guard)): what a structure bound to one SRCU domain calls at
    /// the start of each operation.
    ///
    /// # Panics
    ///
    /// When `guard` comes from another domain of the same type.
    ///
    /// # Examples
    ///
    /// ```should_panic
    /// use grace::atomic::Retire;
    /// use grace::srcu::Srcu;
    /// let (a, b) = (Srcu::new().unwrap(), Srcu::new().unwrap());
    /// let g = a.read_lock();
    /// b.assert_guard(&g); // panics: the guard protects domain `a` only
    /// ```
    #[inline]
    #[track_caller]
    fn assert_guard<'a>(&self, guard: &Self::Guard<'a>)
    where
        Self: 'a,
    {
        if !self.owns_guard(guard) {
            foreign_guard();
        }
    }

    /// Wait until everything retired before this call, on any thread, has been freed (for
    /// RCU, [`kvfree_barrier`](crate::kvfree_barrier); otherwise the flavor's `barrier`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Owned, Retire};
    /// use grace::Rcu;
    /// let p = Box::into_raw(Box::new(String::from("node")));
    /// // SAFETY: never published, retired once.
    /// unsafe { Rcu.retire_raw(p) };
    /// Rcu.retire_barrier(); // the String has been dropped
    /// ```
    fn retire_barrier(&self);
}

#[cold]
#[inline(never)]
#[track_caller]
fn foreign_guard() -> ! {
    panic!(
        "grace: a read-side guard of one SRCU domain was used with a structure of another \
         domain; it does not protect that structure's nodes (take the guard from the domain \
         the structure was built with)"
    )
}

impl<'g, T: Send + 'static, F: Retire> Shared<'g, T, F> {
    /// Free the pointee after a grace period of `flavor` (crossbeam's `defer_destroy`; the
    /// kernel's `kvfree_rcu` for RCU, `call_srcu` with a free for SRCU). A null pointer is
    /// ignored. See "Retiring a node" in the [module docs](self) for the cost.
    ///
    /// # Safety
    ///
    /// * The node is unlinked: no `Atomic` that a reader starting after this call can reach
    ///   points to it (the caller's own unlinking store or exchange happened before).
    ///   Pointers to it from other unlinked nodes do not count.
    /// * Every reader that may still reach it holds a guard of `flavor` itself (the same SRCU
    ///   domain, not merely the same type).
    /// * It is retired once, and not freed or taken by [`into_owned`](Shared::into_owned)
    ///   otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::{Atomic, Retire, Shared};
    /// use grace::srcu::Srcu;
    /// use std::sync::atomic::Ordering::AcqRel;
    /// let domain = Srcu::new()?;
    /// let a: Atomic<String, Srcu> = Atomic::new(String::from("old"));
    /// let g = domain.read_lock();
    /// let old = a.swap(Shared::null(), AcqRel, &g);
    /// // SAFETY: unlinked by the swap; readers of `a` use `domain`'s guards; retired once.
    /// unsafe { old.retire(&domain) };
    /// drop(g);
    /// domain.retire_barrier(); // "old" is dropped
    /// # Ok::<(), grace::srcu::SrcuError>(())
    /// ```
    #[inline]
    pub unsafe fn retire(self, flavor: &F) {
        let raw = self.as_raw() as *mut T;
        if !raw.is_null() {
            // SAFETY: the pointer of an `Owned` (the only way a non-null pointer gets into an
            // `Atomic`), untagged; unlinked, guarded by `flavor` and retired once per our
            // contract.
            unsafe { flavor.retire_raw(raw) }
        }
    }
}

#[cfg(not(loom))]
mod impls {
    use super::Retire;
    use crate::flavor::{Flavor, Rcu};
    use crate::srcu::{ReaderKind, Srcu};
    use std::sync::Arc;

    // SAFETY: `kvfree_raw` frees after a full RCU grace period that began after the call, and
    // waits for every RCU section; `kvfree_barrier` waits for everything kvfreed before it.
    unsafe impl Retire for Rcu {
        #[inline]
        unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
            // SAFETY: `kvfree_raw`'s contract is ours.
            unsafe { crate::kvfree::kvfree_raw(ptr) }
        }
        #[inline]
        fn owns_guard<'a>(&self, _guard: &crate::rcu::Guard) -> bool
        where
            Self: 'a,
        {
            true
        }
        fn retire_barrier(&self) {
            crate::kvfree::kvfree_barrier()
        }
    }

    /// A retired box on its way to a callback.
    struct SendPtr<T>(*mut T);

    // SAFETY: it stands for a `Box<T>` with `T: Send`, which moves to the callback's thread.
    unsafe impl<T: Send> Send for SendPtr<T> {}

    impl<T> SendPtr<T> {
        /// Free the box.
        ///
        /// # Safety
        ///
        /// The pointer came from `Box::into_raw` and nothing uses it any more.
        unsafe fn free(self) {
            // SAFETY: per the contract.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    // SAFETY: `call` runs the closure after a grace period of this domain that began after the
    // call, which waits for every section of the domain; `owns_guard` answers `true` only
    // for this domain's guards; `barrier` waits for every callback queued before it.
    unsafe impl<K: ReaderKind> Retire for Srcu<K> {
        #[inline]
        unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
            let p = SendPtr(ptr);
            self.call(move || {
                // SAFETY: from Box::into_raw (our contract); nothing uses it after a grace
                // period, since it was unlinked and every reader holds this domain's guard.
                unsafe { p.free() }
            });
        }
        #[inline]
        fn owns_guard<'a>(&self, guard: &Self::Guard<'a>) -> bool
        where
            Self: 'a,
        {
            Srcu::owns_guard(self, guard)
        }
        fn retire_barrier(&self) {
            Flavor::barrier(self)
        }
    }

    // SAFETY: forwards to `R`, whose guards and grace periods these are.
    unsafe impl<R: Retire> Retire for &R {
        #[inline]
        unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
            // SAFETY: the same contract.
            unsafe { (**self).retire_raw(ptr) }
        }
        #[inline]
        fn owns_guard<'a>(&self, guard: &Self::Guard<'a>) -> bool
        where
            Self: 'a,
        {
            (**self).owns_guard(guard)
        }
        fn retire_barrier(&self) {
            (**self).retire_barrier()
        }
    }

    // SAFETY: as for `&R`.
    unsafe impl<R: Retire + Send> Retire for Arc<R> {
        #[inline]
        unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
            // SAFETY: the same contract.
            unsafe { (**self).retire_raw(ptr) }
        }
        #[inline]
        fn owns_guard<'a>(&self, guard: &Self::Guard<'a>) -> bool
        where
            Self: 'a,
        {
            (**self).owns_guard(guard)
        }
        fn retire_barrier(&self) {
            (**self).retire_barrier()
        }
    }
}
