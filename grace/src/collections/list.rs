//! [`List`], the kernel's `rculist`: a linked list that readers walk without locks under a
//! read-side guard, while writers add, delete and replace entries under a writer lock and free
//! what they unlinked after a grace period.
//!
//! ```
//! use grace::collections::List;
//!
//! let list: List<u64> = (1..=3).collect();
//! list.push_front(0); // list_add_rcu
//! list.push_back(4); // list_add_tail_rcu
//! assert!(list.remove_first(|&v| v == 2)); // list_del_rcu, then kvfree_rcu
//! let g = list.pin(); // rcu_read_lock
//! let seen: Vec<u64> = list.iter(&g).copied().collect(); // list_for_each_entry_rcu
//! assert_eq!(seen, [0, 1, 3, 4]);
//! ```
//!
//! # Map to the kernel
//!
//! | the kernel (`include/linux/rculist.h`) | [`List`] |
//! |---|---|
//! | `LIST_HEAD_INIT`, `INIT_LIST_HEAD_RCU` | [`List::new`], [`List::with_flavor`] |
//! | `list_add_rcu(new, head)` | [`List::push_front`] |
//! | `list_add_tail_rcu(new, head)` | [`List::push_back`] |
//! | `list_for_each_entry_rcu(pos, head, member)` | [`List::iter`] (and `for v in list.iter(&g)`) |
//! | `list_first_or_null_rcu` | [`List::front`] |
//! | `list_del_rcu(entry)` + `kvfree_rcu(entry)` | [`List::remove_first`], [`List::retain`] |
//! | `list_replace_rcu(old, new)` + `kvfree_rcu(old)` | [`List::replace_first`] |
//! | `list_empty_rcu`-style check (`list_empty` under RCU) | [`List::is_empty`] |
//! | the updaters' spinlock | the writer lock inside the list (every mutator takes it) |
//! | `rcu_read_lock()` / `srcu_read_lock()` | [`List::pin`], or any guard of the list's flavor |
//!
//! Semantics are the kernel's: a reader may or may not see an entry added or removed while it
//! walks; it never sees a torn entry (an entry is fully written before it is published) nor a
//! freed one (an unlinked entry is freed only after a grace period, so a reader standing on it
//! finishes its walk through it: `list_del_rcu` leaves the entry's `next` pointer as it was).
//! An entry that stays in the list for a whole traversal is seen by it exactly once; no entry
//! is seen twice in one traversal (the list is singly linked in the readers' direction and
//! an entry is never re-linked: a replaced entry is a new node).
//!
//! # Writers
//!
//! Every mutator takes one writer lock (`crate::sync::Mutex`, the updaters' spinlock of a
//! kernel `rculist`), which serializes them; `len` is exact under it. Lock-free writers
//! (Harris–Michael marking, see the tests of [`crate::atomic`]) would let writers run in
//! parallel, but cost every reader a tag check per node and make replace and `len` racy; an
//! `rculist` is for read-mostly data, where one writer at a time is what the kernel does too.
//!
//! The writer side keeps a tail pointer for [`push_back`](List::push_back) (the kernel's list
//! is doubly linked for that; readers only ever follow `next`). Unlinked entries are handed to
//! the flavor's [`Retire`] *after* the writer lock is dropped: RCU's `kvfree` may, when its
//! allocations fail, wait for a grace period in place, and doing that under the lock would
//! deadlock against a reader that waits for the lock inside its section.
//!
//! # Why plain atomic pointers, not [`Atomic`](crate::atomic::Atomic)
//!
//! [`Atomic::load`](crate::atomic::Atomic::load) needs a guard, to tie the node's lifetime to
//! a read-side section. The writers walk the list under the writer lock instead: a linked entry
//! can only be unlinked (and so freed) by the lock's holder, so it stays valid for the whole
//! time the lock is held, with no section. The links are therefore `AtomicPtr`s (from
//! `crate::sync`, so loom checks them), dereferenced under one of two protections: a guard of
//! the list's flavor (readers) or the writer lock (writers). Retiring goes through the same
//! [`Retire::retire_raw`] that [`Shared::retire`](crate::atomic::Shared::retire) uses.
//!
//! # Orderings, each atomic with its partner
//!
//! * `head` and every `next` are written only under the writer lock, and read by readers with
//!   `Acquire` ([`Iter`]'s `next` and [`List::iter`], [`List::front`]): the kernel's
//!   `rcu_dereference`. Each store that links an entry, in [`push_front`](List::push_front),
//!   [`push_back`](List::push_back) and [`replace_first`](List::replace_first), is `Release`
//!   (`rcu_assign_pointer`): the entry's value and its own `next` are written before, so a
//!   reader that loads the pointer sees them (no torn entry).
//! * Unlinking stores ([`remove_first`](List::remove_first), [`retain`](List::retain)) are
//!   `Release` too: they write the successor's address into the predecessor, and a reader that
//!   acquires it must also see the successor's contents, which were published by another,
//!   earlier store (in the kernel, address dependency covers this; in Rust's model the
//!   reader's `Acquire` needs a `Release` on the store it reads from).
//! * [`clear`](List::clear) stores a null head with `Relaxed`: a reader that reads null follows
//!   nothing.
//! * Writers read links with `Relaxed`: every link was written under the writer lock, whose
//!   release/acquire orders it before the next holder's reads.
//! * [`is_empty`](List::is_empty) reads `head` with `Relaxed`: only its null-ness is used.
//! * The free is ordered after every reader that could still reach an unlinked entry by the
//!   flavor's grace period ([`Retire::retire_raw`]'s contract; the ordering guarantee in
//!   [`crate::rcu`]): a reader that loaded the pointer before the unlink finished its section
//!   before the grace period ended, and one that starts after the unlink cannot load it.

#[cfg(not(loom))]
use crate::atomic::Rcu;
use crate::atomic::Retire;
use crate::sync::{lock, AtomicPtr, Mutex, Ordering};
use std::fmt;
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::ptr;

#[cfg(test)]
mod tests;

/// One entry: the value and the link readers follow.
struct Node<T> {
    value: T,
    next: AtomicPtr<Node<T>>,
}

/// The writers' side of the list, behind the writer lock.
struct Writer<T> {
    /// The last entry (null when the list is empty), for `push_back`.
    tail: *mut Node<T>,
    /// The number of linked entries.
    len: usize,
}

// SAFETY: `tail` points into the list's own entries, which the list owns (they hold `T`s, and
// the list is `Send`/`Sync` only when `T: Send + Sync`); it is only dereferenced under the
// writer lock.
unsafe impl<T: Send> Send for Writer<T> {}

/// A linked list that readers iterate under a read-side guard, without locks, while writers
/// add, remove and replace entries: the kernel's `rculist` (see the [module docs](self) for the
/// map of functions and the memory orderings).
///
/// `F` is the flavor whose guards readers hold and whose grace periods free removed entries:
/// [`crate::Rcu`] by default (removed entries go through `kvfree`, freed in bulk), or an
/// SRCU domain (`List<T, Srcu>`, `List<T, Arc<Srcu>>`, `List<T, &'static Srcu>`).
///
/// # Examples
///
/// ```
/// use grace::collections::List;
/// use std::sync::Arc;
///
/// let list = Arc::new(List::new());
/// list.push_back(String::from("a"));
/// let reader = {
///     let list = list.clone();
///     std::thread::spawn(move || {
///         let g = list.pin();
///         list.iter(&g).count() // sees "a", and "b" if it came first
///     })
/// };
/// list.push_back(String::from("b"));
/// assert!((1..=2).contains(&reader.join().unwrap()));
/// assert_eq!(list.len(), 2);
/// ```
pub struct List<T, F = crate::atomic::Rcu> {
    /// The first entry; readers start here. Written under the writer lock only.
    head: AtomicPtr<Node<T>>,
    writer: Mutex<Writer<T>>,
    flavor: F,
    /// The list owns `T`s (drop check).
    _owns: PhantomData<Box<Node<T>>>,
}

// SAFETY: the list owns its `T`s (moving the list moves them: `T: Send`) and hands `&T` to
// readers on other threads (`T: Sync`); removed entries are dropped by the flavor's grace-period
// machinery, possibly on another thread (`T: Send`). The flavor value moves with it.
unsafe impl<T: Send + Sync, F: Send> Send for List<T, F> {}

// SAFETY: shared access gives `&T` to any thread (`T: Sync`) and lets any thread remove and
// so drop entries, or push them (`T: Send`); the links are atomics and the writer side is
// behind a mutex. The flavor is used through `&F` from many threads (`F: Sync`).
unsafe impl<T: Send + Sync, F: Sync> Sync for List<T, F> {}

#[cfg(not(loom))]
impl<T> List<T, Rcu> {
    /// An empty list read under RCU guards (`LIST_HEAD_INIT`); removed entries are freed
    /// through `kvfree` after a grace period.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u32> = grace::collections::List::new();
    /// assert!(list.is_empty());
    /// ```
    pub fn new() -> List<T, Rcu> {
        List::with_flavor(Rcu)
    }
}

impl<T, F> List<T, F> {
    /// An empty list of the flavor `flavor`: its readers hold guards of `flavor` (the same SRCU
    /// domain, which [`iter`](List::iter) checks) and removed entries are freed after its
    /// grace periods.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::List;
    /// use grace::srcu::Srcu;
    ///
    /// let list = List::with_flavor(Srcu::new()?);
    /// list.push_back(1u8);
    /// let g = list.pin(); // srcu_read_lock on the list's domain
    /// assert_eq!(list.front(&g), Some(&1));
    /// # Ok::<(), grace::srcu::SrcuError>(())
    /// ```
    pub fn with_flavor(flavor: F) -> List<T, F> {
        List {
            head: AtomicPtr::new(ptr::null_mut()),
            writer: Mutex::new(Writer {
                tail: ptr::null_mut(),
                len: 0,
            }),
            flavor,
            _owns: PhantomData,
        }
    }

    /// The flavor the list is read and reclaimed under.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::atomic::Retire;
    /// let list = grace::collections::List::<u8>::new();
    /// list.flavor().retire_barrier(); // wait until every removed entry is freed
    /// ```
    pub fn flavor(&self) -> &F {
        &self.flavor
    }

    /// The number of entries, exact: counted under the writer lock (so it waits for a writer
    /// in progress). Readers that need a figure while walking count what they see instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [1, 2, 3].into_iter().collect();
    /// assert_eq!(list.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        lock(&self.writer).len
    }

    /// Whether the list has no entries at this instant (the kernel's `list_empty` on an RCU
    /// list: no lock, and a writer may change the answer right after).
    ///
    /// # Examples
    ///
    /// ```
    /// let list = grace::collections::List::new();
    /// assert!(list.is_empty());
    /// list.push_front(1u8);
    /// assert!(!list.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        // Relaxed: only the null-ness is used; nothing is dereferenced.
        self.head.load(Ordering::Relaxed).is_null()
    }
}

impl<T, F: Retire> List<T, F> {
    /// Iterate over the entries, front to back, under `guard` (`list_for_each_entry_rcu`).
    ///
    /// The walk takes no lock. It sees every entry that stays in the list for the whole walk,
    /// once; an entry added or removed meanwhile may or may not be seen, and none is seen
    /// twice. References live as long as both the guard and the borrow of the list.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another SRCU domain than the list's (see
    /// [`Retire::assert_guard`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::List;
    /// let list: List<u64> = (1..=4).collect();
    /// let g = grace::rcu::read_lock();
    /// let sum: u64 = list.iter(&g).sum();
    /// assert_eq!(sum, 10);
    /// ```
    ///
    /// The references cannot outlive the guard, nor the list:
    ///
    /// ```compile_fail
    /// use grace::collections::List;
    /// let list: List<u64> = (1..=4).collect();
    /// let first = {
    ///     let g = grace::rcu::read_lock();
    ///     list.front(&g) // error: `g` does not live long enough
    /// };
    /// # let _ = first;
    /// ```
    ///
    /// ```compile_fail
    /// use grace::collections::List;
    /// let list: List<u64> = (1..=4).collect();
    /// let g = grace::rcu::read_lock();
    /// let it = list.iter(&g);
    /// drop(list); // error: cannot move out of `list` because it is borrowed
    /// # let _ = it.count();
    /// ```
    #[inline]
    pub fn iter<'g>(&'g self, guard: &'g F::Guard<'_>) -> Iter<'g, T> {
        self.flavor.assert_guard(guard);
        Iter {
            // Acquire: pairs with the Release stores that link an entry (push_front,
            // push_back, replace_first) or unlink one (remove_first, retain).
            next: self.head.load(Ordering::Acquire),
            _guarded: PhantomData,
        }
    }

    /// The first entry, if any (`list_first_or_null_rcu`).
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another SRCU domain than the list's.
    ///
    /// # Examples
    ///
    /// ```
    /// let list = grace::collections::List::new();
    /// let g = list.pin();
    /// assert_eq!(list.front(&g), None);
    /// list.push_front("x");
    /// assert_eq!(list.front(&g), Some(&"x"));
    /// ```
    #[inline]
    pub fn front<'g>(&'g self, guard: &'g F::Guard<'_>) -> Option<&'g T> {
        self.iter(guard).next()
    }

    /// Whether some entry equals `value`, as a reader sees the list under `guard`.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another SRCU domain than the list's.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [3, 5].into_iter().collect();
    /// let g = list.pin();
    /// assert!(list.contains(&5, &g));
    /// assert!(!list.contains(&4, &g));
    /// ```
    pub fn contains(&self, value: &T, guard: &F::Guard<'_>) -> bool
    where
        T: PartialEq,
    {
        self.iter(guard).any(|v| v == value)
    }
}

#[cfg(not(loom))]
impl<T, F: Retire> List<T, F> {
    /// Enter a read-side critical section of the list's flavor (`rcu_read_lock`, or
    /// `srcu_read_lock` on the list's domain): the guard to pass to [`iter`](List::iter).
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [1].into_iter().collect();
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).next(), Some(&1));
    /// ```
    #[inline]
    pub fn pin(&self) -> F::Guard<'_> {
        self.flavor.read_lock()
    }
}

impl<T: Send + 'static, F: Retire> List<T, F> {
    /// Insert `value` at the front (`list_add_rcu`). Readers that already passed the head do
    /// not see it; later ones do.
    ///
    /// # Examples
    ///
    /// ```
    /// let list = grace::collections::List::new();
    /// list.push_front(2);
    /// list.push_front(1);
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).copied().collect::<Vec<i32>>(), [1, 2]);
    /// ```
    pub fn push_front(&self, value: T) {
        let node = Box::into_raw(Box::new(Node {
            value,
            next: AtomicPtr::new(ptr::null_mut()),
        }));
        let mut w = lock(&self.writer);
        // Relaxed: `head` is written only under the writer lock, which we hold.
        let first = self.head.load(Ordering::Relaxed);
        // SAFETY: `node` is ours, not yet published.
        // Relaxed: the node is published by the Release store below.
        unsafe { (*node).next.store(first, Ordering::Relaxed) };
        // Release: publishes the node's value and `next` (rcu_assign_pointer); pairs with the
        // Acquire load of `head` in `List::iter`.
        self.head.store(node, Ordering::Release);
        if w.tail.is_null() {
            w.tail = node;
        }
        w.len += 1;
    }

    /// Insert `value` at the back (`list_add_tail_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// let list = grace::collections::List::new();
    /// list.push_back(1);
    /// list.push_back(2);
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).copied().collect::<Vec<i32>>(), [1, 2]);
    /// ```
    pub fn push_back(&self, value: T) {
        let node = Box::into_raw(Box::new(Node {
            value,
            next: AtomicPtr::new(ptr::null_mut()),
        }));
        let mut w = lock(&self.writer);
        let link = if w.tail.is_null() {
            &self.head
        } else {
            // SAFETY: `tail` is a linked entry (the writer lock keeps it linked, and only a
            // holder of the lock unlinks and retires entries).
            unsafe { &(*w.tail).next }
        };
        // Release: publishes the node (its `next` is null from construction); pairs with the
        // Acquire loads in `List::iter` and `Iter::next`.
        link.store(node, Ordering::Release);
        w.tail = node;
        w.len += 1;
    }

    /// Remove the first entry for which `pred` is true (`list_del_rcu`), and free it after a
    /// grace period (`kvfree_rcu` for RCU). Readers standing on it finish their walk through
    /// it. Returns whether an entry was removed.
    ///
    /// `pred` runs under the writer lock: it must not call into this list's writers.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [1, 2, 1].into_iter().collect();
    /// assert!(list.remove_first(|&v| v == 1));
    /// assert!(!list.remove_first(|&v| v == 7));
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), [2, 1]);
    /// ```
    pub fn remove_first(&self, mut pred: impl FnMut(&T) -> bool) -> bool {
        let removed = {
            let mut w = lock(&self.writer);
            let mut prev: *mut Node<T> = ptr::null_mut();
            // Relaxed: written under the writer lock, which we hold (module docs).
            let mut curr = self.head.load(Ordering::Relaxed);
            loop {
                if curr.is_null() {
                    break None;
                }
                // SAFETY: a linked entry, kept linked (so allocated) by the writer lock.
                let c = unsafe { &*curr };
                if pred(&c.value) {
                    // SAFETY: `prev` is null or a linked entry, under the writer lock.
                    unsafe { self.unlink(&mut w, prev, curr) };
                    break Some(curr);
                }
                prev = curr;
                // Relaxed: as above.
                curr = c.next.load(Ordering::Relaxed);
            }
        };
        match removed {
            Some(node) => {
                // SAFETY: unlinked above (no reader starting now can reach it), retired once,
                // and every reader holds a guard of `self.flavor` (`iter` checks it).
                unsafe { self.flavor.retire_raw(node) };
                true
            }
            None => false,
        }
    }

    /// Remove every entry for which `keep` is false (a `list_del_rcu` each), and free them
    /// after a grace period.
    ///
    /// `keep` runs under the writer lock: it must not call into this list's writers.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u32> = (1..=6).collect();
    /// list.retain(|v| v % 2 == 0);
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), [2, 4, 6]);
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&T) -> bool) {
        // Declared before the lock is taken, so that if `keep` panics the lock is released
        // first and what was unlinked so far is still retired (by `Retiring`'s drop).
        let mut removed = Retiring {
            flavor: &self.flavor,
            nodes: Vec::new(),
        };
        {
            let mut w = lock(&self.writer);
            let mut prev: *mut Node<T> = ptr::null_mut();
            // Relaxed: written under the writer lock, which we hold (module docs).
            let mut curr = self.head.load(Ordering::Relaxed);
            while !curr.is_null() {
                // SAFETY: a linked entry, kept linked (so allocated) by the writer lock.
                let c = unsafe { &*curr };
                // Relaxed: as above. Read before the unlink; the unlink leaves it as it is.
                let next = c.next.load(Ordering::Relaxed);
                if keep(&c.value) {
                    prev = curr;
                } else {
                    if removed.nodes.try_reserve(1).is_err() {
                        // Out of memory for the list of removed entries: keep this entry
                        // (and the rest) rather than lose it; nothing is left half-done.
                        break;
                    }
                    // SAFETY: `prev` is null or a linked entry, under the writer lock.
                    unsafe { self.unlink(&mut w, prev, curr) };
                    removed.nodes.push(curr);
                }
                curr = next;
            }
        }
        drop(removed); // retires them, outside the lock
    }

    /// Replace the first entry for which `pred` is true with `new` (`list_replace_rcu`), and
    /// free the old one after a grace period. A reader sees either the old entry or the new
    /// one at that place, never neither and never both. Gives `new` back when no entry
    /// matches.
    ///
    /// `pred` runs under the writer lock: it must not call into this list's writers.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<&str> = ["a", "b"].into_iter().collect();
    /// assert_eq!(list.replace_first(|&v| v == "b", "B"), Ok(()));
    /// assert_eq!(list.replace_first(|&v| v == "z", "Z"), Err("Z"));
    /// let g = list.pin();
    /// assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), ["a", "B"]);
    /// ```
    pub fn replace_first(&self, mut pred: impl FnMut(&T) -> bool, new: T) -> Result<(), T> {
        let node = Box::into_raw(Box::new(Node {
            value: new,
            next: AtomicPtr::new(ptr::null_mut()),
        }));
        let replaced = {
            let mut w = lock(&self.writer);
            let mut link = &self.head;
            // Relaxed: written under the writer lock, which we hold (module docs).
            let mut curr = link.load(Ordering::Relaxed);
            loop {
                if curr.is_null() {
                    break None;
                }
                // SAFETY: a linked entry, kept linked (so allocated) by the writer lock.
                let c = unsafe { &*curr };
                if pred(&c.value) {
                    // SAFETY: `node` is ours, not yet published.
                    // Relaxed: `c.next` was written under the lock; `node` is published by
                    // the Release store below.
                    unsafe {
                        (*node)
                            .next
                            .store(c.next.load(Ordering::Relaxed), Ordering::Relaxed)
                    };
                    // Release: publishes the new node (its value and `next`); pairs with the
                    // Acquire loads in `List::iter` and `Iter::next`.
                    link.store(node, Ordering::Release);
                    if w.tail == curr {
                        w.tail = node;
                    }
                    break Some(curr);
                }
                link = &c.next;
                curr = link.load(Ordering::Relaxed);
            }
        };
        match replaced {
            Some(old) => {
                // SAFETY: unlinked by the store above, retired once; readers hold guards of
                // `self.flavor`.
                unsafe { self.flavor.retire_raw(old) };
                Ok(())
            }
            None => {
                // SAFETY: never published; we own it.
                let node = unsafe { Box::from_raw(node) };
                Err(node.value)
            }
        }
    }

    /// Remove every entry, and free them after a grace period. Readers in a walk finish it
    /// through the old entries.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [1, 2].into_iter().collect();
    /// list.clear();
    /// assert!(list.is_empty());
    /// assert_eq!(list.len(), 0);
    /// ```
    pub fn clear(&self) {
        let first = {
            let mut w = lock(&self.writer);
            // Relaxed: written under the writer lock, which we hold.
            let first = self.head.load(Ordering::Relaxed);
            // Relaxed: a reader that reads null follows nothing (module docs).
            self.head.store(ptr::null_mut(), Ordering::Relaxed);
            w.tail = ptr::null_mut();
            w.len = 0;
            first
        };
        // The detached chain is ours now: no writer can reach it, readers only read it.
        let mut curr = first;
        while !curr.is_null() {
            // SAFETY: an entry of the detached chain, not retired yet (we retire each after
            // reading its `next`), so allocated.
            // Relaxed: written under the writer lock before we took it.
            let next = unsafe { (*curr).next.load(Ordering::Relaxed) };
            // SAFETY: unlinked with the whole chain above, retired once; readers hold guards
            // of `self.flavor`.
            unsafe { self.flavor.retire_raw(curr) };
            curr = next;
        }
    }

    /// Unlink `curr`, whose predecessor is `prev` (null: `curr` is the first entry), and fix
    /// the tail and the length. `curr`'s own `next` is left as it is, for readers standing on
    /// it (`list_del_rcu`).
    ///
    /// # Safety
    ///
    /// Called under the writer lock (`w` is its guard), with `curr` a linked entry and `prev`
    /// null or the linked entry just before it.
    unsafe fn unlink(&self, w: &mut Writer<T>, prev: *mut Node<T>, curr: *mut Node<T>) {
        // SAFETY: `curr` is linked, so allocated (our contract).
        // Relaxed: written under the writer lock, which we hold.
        let next = unsafe { (*curr).next.load(Ordering::Relaxed) };
        let link = if prev.is_null() {
            &self.head
        } else {
            // SAFETY: `prev` is linked, so allocated (our contract).
            unsafe { &(*prev).next }
        };
        // Release: a reader that acquires `next` here must see the successor's contents,
        // published by an earlier Release store (module docs); pairs with the Acquire loads
        // in `List::iter` and `Iter::next`.
        link.store(next, Ordering::Release);
        if w.tail == curr {
            w.tail = prev;
        }
        w.len -= 1;
    }
}

/// Entries a writer unlinked, retired when this is dropped (after the writer lock is
/// released, also when a user predicate panicked).
struct Retiring<'a, T: Send + 'static, F: Retire> {
    flavor: &'a F,
    /// Each unlinked from the list (under the writer lock) and in no other `Retiring`.
    nodes: Vec<*mut Node<T>>,
}

impl<T: Send + 'static, F: Retire> Drop for Retiring<'_, T, F> {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            // SAFETY: unlinked (field contract), so no reader starting now can reach it;
            // retired once (it is in this list only, and drained); every reader holds a guard
            // of this flavor (`List::iter` checks it).
            unsafe { self.flavor.retire_raw(node) };
        }
    }
}

impl<T: Send + 'static, F: Retire> Extend<T> for List<T, F> {
    /// Push every item at the back, in order (`list_add_tail_rcu` each).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut list = grace::collections::List::new();
    /// list.extend([1, 2]);
    /// assert_eq!(list.len(), 2);
    /// ```
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for v in iter {
            self.push_back(v);
        }
    }
}

impl<T: Send + 'static, F: Retire + Default> FromIterator<T> for List<T, F> {
    /// A list of the items in order, of the default flavor value.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<char> = "abc".chars().collect();
    /// assert_eq!(list.len(), 3);
    /// ```
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut list = List::with_flavor(F::default());
        list.extend(iter);
        list
    }
}

impl<T, F: Default> Default for List<T, F> {
    /// An empty list of the default flavor value.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = Default::default();
    /// assert!(list.is_empty());
    /// ```
    fn default() -> Self {
        List::with_flavor(F::default())
    }
}

#[cfg(not(loom))]
impl<T: fmt::Debug, F: Retire> fmt::Debug for List<T, F> {
    /// The entries as a reader sees them, in a read-side section of the list's flavor.
    ///
    /// # Examples
    ///
    /// ```
    /// let list: grace::collections::List<u8> = [1, 2].into_iter().collect();
    /// assert_eq!(format!("{list:?}"), "[1, 2]");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.pin();
        f.debug_list().entries(self.iter(&g)).finish()
    }
}

impl<T, F> Drop for List<T, F> {
    fn drop(&mut self) {
        // `&mut self`: no reader holds a borrow of the list (`iter` ties its references to
        // one), so no reader can be on an entry and they are freed at once.
        // Relaxed: we have the list to ourselves; every store to it happened-before we got
        // `&mut` (and loom's atomics have no `get_mut`).
        let mut curr = self.head.load(Ordering::Relaxed);
        while !curr.is_null() {
            // SAFETY: every linked entry came from `Box::into_raw` and is owned by the list;
            // each is freed once, after reading its `next`.
            let node = unsafe { Box::from_raw(curr) };
            // Relaxed: as above.
            curr = node.next.load(Ordering::Relaxed);
        }
    }
}

/// The entries of a [`List`], front to back, as a reader under a guard sees them: returned by
/// [`List::iter`].
///
/// # Examples
///
/// ```
/// let list: grace::collections::List<u8> = [1, 2].into_iter().collect();
/// let g = list.pin();
/// let mut it = list.iter(&g);
/// assert_eq!(it.next(), Some(&1));
/// assert_eq!(it.next(), Some(&2));
/// assert_eq!(it.next(), None);
/// ```
pub struct Iter<'g, T> {
    /// The next entry to yield (null at the end).
    next: *const Node<T>,
    /// The references live as long as the guard and the borrow of the list.
    _guarded: PhantomData<&'g T>,
}

impl<'g, T> Iterator for Iter<'g, T> {
    type Item = &'g T;

    #[inline]
    fn next(&mut self) -> Option<&'g T> {
        // SAFETY: `next` was loaded from a link of the list within the guard's section, whose
        // flavor frees an entry only after a grace period that began after its unlink (ours
        // was reachable when we loaded it, so it is freed after this section ends), and 'g
        // keeps the guard and the list's borrow alive; the value was fully written before the
        // Release store we acquired it through.
        let node = unsafe { self.next.as_ref()? };
        // Acquire: pairs with the Release stores that link or unlink entries (push_back,
        // replace_first, remove_first, retain).
        self.next = node.next.load(Ordering::Acquire);
        Some(&node.value)
    }
}

impl<T> FusedIterator for Iter<'_, T> {}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            next: self.next,
            _guarded: PhantomData,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}
