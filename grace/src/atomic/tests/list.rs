//! A Harris–Michael lock-free sorted list and a Michael hash map, written with
//! `grace::atomic`: the structures the pointer types are proven on.
//!
//! * The list (Harris 2001, with Michael's 2002 unlinking discipline): a node is deleted in two
//!   steps, first *marked* (tag 1 on its own `next` pointer, so that no insert can link after
//!   it), then *unlinked* by a compare-exchange on its predecessor. Whoever unlinks it (the
//!   remover, or a `find` that helps) retires it, once. Searches that only read (`get`) walk
//!   through marked nodes without helping: under a read-side guard a marked or even unlinked
//!   node stays allocated, and its `next` never changes once marked.
//! * The map (Michael 2002): a fixed number of buckets, each one such list.
//!
//! Generic over the flavor (`R: Retire`): RCU, an SRCU domain, or a stand-in under loom. Every
//! operation takes a guard and checks it against the structure's flavor value first, so a
//! guard of another SRCU domain panics instead of reading unprotected nodes.
//!
//! This file is compiled into the library's loom model (`loom_list.rs`) and, through
//! `#[path]`, into the integration tests `tests/atomic.rs` and `tests/atomic_miri.rs`: the
//! parent module provides `Atomic`, `Owned`, `Retire`, `Shared` and `Ordering`.

#![allow(dead_code)] // each includer uses a different part

use super::*;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::mem;

/// The tag of a `next` pointer whose node is deleted.
const DELETED: usize = 1;

struct Node<K, V, R> {
    key: K,
    value: V,
    next: Atomic<Node<K, V, R>, R>,
}

/// One Harris–Michael list, without its flavor (the map's buckets share the map's).
pub struct Bucket<K, V, R> {
    head: Atomic<Node<K, V, R>, R>,
}

/// Where `find` stopped: `curr` is the first node with a key `>=` the one looked for (or
/// null), `prev` the pointer to it.
struct Pos<'g, K, V, R> {
    found: bool,
    prev: &'g Atomic<Node<K, V, R>, R>,
    curr: Shared<'g, Node<K, V, R>, R>,
}

impl<K, V, R> Default for Bucket<K, V, R> {
    fn default() -> Self {
        Bucket {
            head: Atomic::null(),
        }
    }
}

impl<K, V, R> Bucket<K, V, R>
where
    K: Ord + Send + Sync + 'static,
    V: Send + Sync + 'static,
    R: Retire + 'static,
{
    /// Michael's `find`: unlinks (and retires) every marked node on the way, restarting from
    /// the head when the predecessor changed under it.
    fn find<'g>(&'g self, key: &K, flavor: &R, guard: &'g R::Guard<'_>) -> Pos<'g, K, V, R> {
        'retry: loop {
            let mut prev = &self.head;
            // Acquire: pairs with the Release that linked the node (insert, or an unlink).
            let mut curr = prev.load(Ordering::Acquire, guard);
            loop {
                // SAFETY: nodes are freed only by `retire` through `flavor` after they are
                // unlinked, and `guard` is `flavor`'s (checked by every public operation); we
                // reached `curr` from the head in this section.
                let Some(c) = (unsafe { curr.as_ref() }) else {
                    return Pos {
                        found: false,
                        prev,
                        curr,
                    };
                };
                // Acquire: pairs with the Release that linked the next node.
                let next = c.next.load(Ordering::Acquire, guard);
                if next.tag() == DELETED {
                    // Help: unlink the marked `c`. Release: publishes `next` (whose fields we
                    // acquired above) to readers of `prev`. Relaxed on failure: we restart.
                    match prev.compare_exchange(
                        curr,
                        next.with_tag(0),
                        Ordering::Release,
                        Ordering::Relaxed,
                        guard,
                    ) {
                        Ok(_) => {
                            // SAFETY: we unlinked it (no other pointer in the list leads to it:
                            // its predecessor was `prev`, and marked nodes never gain one);
                            // only the winner of this exchange retires it; readers hold
                            // `flavor`'s guards.
                            unsafe { curr.retire(flavor) };
                            curr = next.with_tag(0);
                        }
                        Err(_) => continue 'retry,
                    }
                } else {
                    if c.key >= *key {
                        return Pos {
                            found: c.key == *key,
                            prev,
                            curr,
                        };
                    }
                    prev = &c.next;
                    curr = next;
                }
            }
        }
    }

    /// Insert `key` → `value` unless `key` is present.
    pub fn insert(&self, key: K, value: V, flavor: &R, guard: &R::Guard<'_>) -> bool {
        let mut node = Owned::new(Node {
            key,
            value,
            next: Atomic::null(),
        });
        loop {
            let pos = self.find(&node.key, flavor, guard);
            if pos.found {
                return false; // `node` was never published: dropped here
            }
            // Relaxed: published by the Release exchange below.
            node.next.store(pos.curr, Ordering::Relaxed);
            // Release: publishes the node's fields (pairs with the Acquire loads of readers).
            // Relaxed on failure: we search again.
            match pos.prev.compare_exchange(
                pos.curr,
                node,
                Ordering::Release,
                Ordering::Relaxed,
                guard,
            ) {
                Ok(_) => return true,
                Err(e) => node = e.new,
            }
        }
    }

    /// Remove `key`; whether it was present.
    pub fn remove(&self, key: &K, flavor: &R, guard: &R::Guard<'_>) -> bool {
        loop {
            let pos = self.find(key, flavor, guard);
            if !pos.found {
                return false;
            }
            // SAFETY: as in `find`; `found` means non-null.
            let c = unsafe { pos.curr.deref() };
            // Acquire: pairs with the Release that linked the next node, which the unlink
            // below publishes again.
            let next = c.next.load(Ordering::Acquire, guard);
            if next.tag() == DELETED {
                continue; // another remover marked it first: search again (and help)
            }
            // Mark (the logical deletion, our linearization point). AcqRel: orders the mark
            // after our reads of the node and before the unlink; Relaxed on failure: retry.
            if c.next
                .compare_exchange(
                    next,
                    next.with_tag(DELETED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                    guard,
                )
                .is_err()
            {
                continue;
            }
            // Unlink. Release: publishes `next` to readers of `prev`; Relaxed on failure.
            match pos.prev.compare_exchange(
                pos.curr,
                next,
                Ordering::Release,
                Ordering::Relaxed,
                guard,
            ) {
                // SAFETY: as for the helping unlink in `find`.
                Ok(_) => unsafe { pos.curr.retire(flavor) },
                Err(_) => {
                    // Someone changed `prev`: a `find` passing the key unlinks our node.
                    self.find(key, flavor, guard);
                }
            }
            return true;
        }
    }

    /// The value of `key`, if present: a read-only walk, wait-free, no helping.
    pub fn get<'g>(&'g self, key: &K, guard: &'g R::Guard<'_>) -> Option<&'g V> {
        // Acquire: pairs with the Release that linked the node.
        let mut curr = self.head.load(Ordering::Acquire, guard);
        // SAFETY: as in `find`; a marked or unlinked node stays allocated while `guard` lives
        // (it is retired only after it was unlinked, and freed a grace period after that),
        // and a marked node's `next` never changes, so the walk stays on nodes reachable
        // during this section.
        while let Some(c) = unsafe { curr.as_ref() } {
            // Acquire: as above.
            let next = c.next.load(Ordering::Acquire, guard);
            if c.key >= *key {
                return (c.key == *key && next.tag() != DELETED).then_some(&c.value);
            }
            curr = next.with_tag(0);
        }
        None
    }

    /// The keys present, in order.
    pub fn keys(&self, guard: &R::Guard<'_>) -> Vec<K>
    where
        K: Clone,
    {
        let mut out = Vec::new();
        // Acquire: as in `get`.
        let mut curr = self.head.load(Ordering::Acquire, guard);
        // SAFETY: as in `get`.
        while let Some(c) = unsafe { curr.as_ref() } {
            // Acquire: as in `get`.
            let next = c.next.load(Ordering::Acquire, guard);
            if next.tag() != DELETED {
                out.push(c.key.clone());
            }
            curr = next.with_tag(0);
        }
        out
    }
}

impl<K, V, R> Drop for Bucket<K, V, R> {
    fn drop(&mut self) {
        // `&mut self`: no reader is left, and every retired node was unlinked before, so the
        // nodes still linked are ours alone.
        let mut next = mem::take(&mut self.head);
        // SAFETY: as above; each node is taken once, walking the links.
        while let Some(mut node) = unsafe { next.try_into_owned() } {
            next = mem::take(&mut node.next);
        }
    }
}

/// A Harris–Michael list bound to its flavor value.
pub struct List<K, V, R> {
    bucket: Bucket<K, V, R>,
    flavor: R,
}

impl<K, V, R> List<K, V, R>
where
    K: Ord + Send + Sync + 'static,
    V: Send + Sync + 'static,
    R: Retire + 'static,
{
    pub fn new(flavor: R) -> Self {
        List {
            bucket: Bucket::default(),
            flavor,
        }
    }

    pub fn flavor(&self) -> &R {
        &self.flavor
    }

    pub fn insert(&self, key: K, value: V, guard: &R::Guard<'_>) -> bool {
        self.flavor.assert_guard(guard);
        self.bucket.insert(key, value, &self.flavor, guard)
    }

    pub fn remove(&self, key: &K, guard: &R::Guard<'_>) -> bool {
        self.flavor.assert_guard(guard);
        self.bucket.remove(key, &self.flavor, guard)
    }

    pub fn get<'g>(&'g self, key: &K, guard: &'g R::Guard<'_>) -> Option<&'g V> {
        self.flavor.assert_guard(guard);
        self.bucket.get(key, guard)
    }

    pub fn contains(&self, key: &K, guard: &R::Guard<'_>) -> bool {
        self.get(key, guard).is_some()
    }

    pub fn keys(&self, guard: &R::Guard<'_>) -> Vec<K>
    where
        K: Clone,
    {
        self.flavor.assert_guard(guard);
        self.bucket.keys(guard)
    }
}

/// Michael's hash map: a fixed number of buckets, each a Harris–Michael list.
pub struct Map<K, V, R> {
    buckets: Box<[Bucket<K, V, R>]>,
    flavor: R,
    hasher: RandomState,
}

impl<K, V, R> Map<K, V, R>
where
    K: Hash + Ord + Send + Sync + 'static,
    V: Send + Sync + 'static,
    R: Retire + 'static,
{
    pub fn new(buckets: usize, flavor: R) -> Self {
        Map {
            buckets: (0..buckets.max(1)).map(|_| Bucket::default()).collect(),
            flavor,
            hasher: RandomState::new(),
        }
    }

    pub fn flavor(&self) -> &R {
        &self.flavor
    }

    fn bucket(&self, key: &K) -> &Bucket<K, V, R> {
        let h = self.hasher.hash_one(key);
        &self.buckets[(h % self.buckets.len() as u64) as usize]
    }

    pub fn insert(&self, key: K, value: V, guard: &R::Guard<'_>) -> bool {
        self.flavor.assert_guard(guard);
        self.bucket(&key).insert(key, value, &self.flavor, guard)
    }

    pub fn remove(&self, key: &K, guard: &R::Guard<'_>) -> bool {
        self.flavor.assert_guard(guard);
        self.bucket(key).remove(key, &self.flavor, guard)
    }

    pub fn get<'g>(&'g self, key: &K, guard: &'g R::Guard<'_>) -> Option<&'g V> {
        self.flavor.assert_guard(guard);
        self.bucket(key).get(key, guard)
    }

    pub fn len(&self, guard: &R::Guard<'_>) -> usize
    where
        K: Clone,
    {
        self.flavor.assert_guard(guard);
        self.buckets.iter().map(|b| b.keys(guard).len()).sum()
    }
}
