//! [`HashMap`]: a resizable hash map whose lookups and iteration run under a read-side guard,
//! with no lock and no shared write, in the manner of the kernel's `rhashtable`.
//!
//! ```
//! use grace::collections::HashMap;
//! let map: HashMap<String, u64> = HashMap::new();
//! let g = map.guard();
//! map.insert("a".to_string(), 1, &g);
//! assert_eq!(map.get("a", &g), Some(&1));
//! assert_eq!(map.remove("a", &g), Some(&1)); // readable until `g` drops, then freed
//! assert!(!map.contains_key("a", &g));
//! ```
//!
//! # Design
//!
//! The table is an array of buckets, each a singly linked chain of immutable nodes
//! (`hash`, `key`, `value`, `next`) ending in a *nulls marker*: the address of the bucket that
//! owns the chain, with its low bit set. This is `rhashtable`'s layout (chains walked by
//! `rht_for_each_rcu`, ends marked with `RHT_NULLS_MARKER`).
//!
//! * **Readers** ([`get`](HashMap::get), [`iter`](HashMap::iter)) load the current table and
//!   walk the chain of the key's bucket with `Acquire` loads to its end. A miss then looks at
//!   the table's `next` pointer and, when a resize is under way, searches the new table too.
//!   Readers never wait and never write.
//! * **A bucket is one word**: the chain's first node (or its marker) with two flag bits a
//!   pointer leaves clear, the writers' lock and "migrated", like the bit spinlock
//!   `rhashtable` keeps in its bucket pointer (`rht_lock`). Readers mask the flags off, so a
//!   lookup touches one word of the bucket array, and a table of a million buckets is 8 MiB.
//!   The lock spins briefly, then yields (a holder only does a few stores).
//! * **Writers** ([`insert`](HashMap::insert), [`remove`](HashMap::remove),
//!   [`update`](HashMap::update)) lock the key's bucket in the current table. A bucket already
//!   migrated by a resize is marked so; the writer unlocks it and goes to the new table. A
//!   writer holds at most one bucket lock at a time. A value is never changed in place: a
//!   replacement is a new node spliced in where the old one was, and the old node is retired.
//! * **Why a locked, unmigrated bucket is the only place its keys live.** A key enters a table
//!   only through an insert that holds the lock of its bucket there. While a resize from table
//!   `T` to table `N` runs, inserts go to `T` for the buckets of `T` not yet migrated, and to
//!   `N` only once the key's bucket in `T` is migrated (the writer saw the mark under `T`'s
//!   lock); migration moves every node of a bucket to `N` before the mark is set. So a key
//!   hashing to an unmigrated bucket `b` of `T` is either in `b` or nowhere, and a writer
//!   holding `b`'s lock sees the whole truth about it. Once `b` is marked, the same holds for
//!   the key's bucket in `N`, since only migrations of `T` and writers that saw `b` marked
//!   touch it for that key.
//! * **Resize** is incremental and goes both ways: above 3/4 entries per bucket the table
//!   doubles, below 3/10 it halves (never below the capacity the map was created with; the
//!   gap between the two thresholds keeps one resize from triggering the reverse one).
//!   The writer that sees the load cross a threshold allocates the new bucket array through
//!   [`crate::alloc::try_vec`]; if that fails the resize is skipped and the map keeps working
//!   at its old size. It publishes the new table in the old one's `next`, and from then on
//!   every writer, after its own operation, claims a few old buckets from an atomic cursor and
//!   migrates them, so no writer stops for the whole table. Migrating a bucket (under its
//!   lock) moves its *tail* node, over and over: lock the target bucket in the new table, link
//!   the node at its head, unlock, then end the old chain before the node. A node is therefore
//!   reachable in the new table before it is unreachable in the old one, and a reader either
//!   finds it in the old chain, or reaches the old marker after it was moved and finds it in
//!   the new table. Locks are taken old, then new, never the reverse. The migrator of the last
//!   bucket makes the new table current and retires the old bucket array through the flavor.
//!   At most one resize runs at a time, so a reader sees at most two tables (three, if it
//!   still walks a table retired while it read).
//! * **Why a walk never restarts** (where `rhashtable` restarts). A reader standing on a node
//!   that a migration moves walks on into the node's new chain and ends at another bucket's
//!   marker. `rhashtable` then restarts the bucket; we do not, and go on to the next table
//!   instead. Migration moves the *tail*, so a node's `next` changes only after every node
//!   behind it has left the chain: everything the diverted walk skipped is already in the new
//!   table (linked before the move the reader saw, which its `Acquire` load of the link orders
//!   before its search there). A node is never re-inserted into another chain of the same
//!   table (an insert or a replacement is a new node; removal leaves `next` alone), which is
//!   the case `rhashtable`'s restart exists for. The restart would also make a reader spin
//!   for as long as a migrator is preempted between linking a node into the new table and
//!   unlinking it from the old one (loom finds that livelock in a shrink); readers must not
//!   wait for writers. The marker is still each bucket's own (the bucket's address), which
//!   keeps the end test a single bit and lets a debugger tell chains apart.
//! * **Memory.** Removed and replaced nodes, and old tables, are freed after a grace period
//!   of the map's flavor through [`Retire::retire_raw`]: in bulk through `kvfree` under RCU
//!   (so their bytes show in grace's pending-memory counters), through `call` under SRCU.
//!   Dropping the map frees what it still holds at once. (`kvfree` counts an object as
//!   `size_of` its type, so a retired table shows in the pending bytes as its header, not its
//!   bucket array.)
//! * **Length** is kept in per-CPU, cache-padded counters (the kernel's percpu counters;
//!   `rhashtable` keeps one atomic, which every writer on every CPU bounces), summed by
//!   [`len`](HashMap::len): exact when no write runs concurrently, approximate otherwise. A
//!   write touches only its CPU's line; the resize check sums the stripes on every write to
//!   a small table and on every 16th write of a CPU to a larger one (a load between checks
//!   can pass the threshold by those few writes per CPU).
//!
//! ## Why chaining, and not liburcu's split-ordered list
//!
//! liburcu's `lfht` keeps every node in one lock-free split-ordered list and resizes by
//! adding dummy nodes, never moving a node; its writers are lock-free, but every insert and
//! delete is a CAS protocol with logical-removal flags, and iteration is a walk of one long
//! list. Chained buckets with a lock each (the kernel's choice for `rhashtable`) make writers
//! simple (a lock, two stores), keep a miss to one short chain, and give resize in both
//! directions with plain stores; the cost is that writers to the same bucket serialize,
//! which the per-bucket locks keep rare.
//!
//! # Iteration during a resize
//!
//! [`iter`](HashMap::iter) visits the table current when it starts, one group of keys at a
//! time: the keys of one of its buckets. For each group it walks that bucket and then, if a
//! resize is under way, the buckets of the new table those keys go to, keeping only the keys
//! of the group and dropping keys it already has. So a key present for the whole iteration
//! is yielded exactly once (it is in the old bucket, or, once moved, in the new table, and
//! it is found there as a lookup finds it),
//! a key inserted or removed during the iteration may or may not be yielded, and no key is
//! yielded twice. Every value yielded stays readable until the guard drops.
//!
//! # Memory orderings
//!
//! | atomic | store | load | pairs with |
//! |---|---|---|---|
//! | a chain link (`Bucket::head`, `Node::next`) | `Release` (insert, replace, unlink, migration) | `Acquire` in the chain walks | each other: a reader that loads a link sees the linked node's fields and the chain behind it |
//! | the same, under the bucket lock | as above | `Relaxed` | the bucket lock orders every writer of a chain |
//! | a bucket word's lock bit (`LOCKED`) | `Acquire` compare-exchange (lock); `Release` store (unlock) | `Relaxed` (waiters' look) | each other: the next holder sees the previous holder's chain stores; a reader that reads a value written by the lock's compare-exchange still synchronizes with the unlock before it (release sequence) |
//! | a bucket word's `MIGRATED` bit | `Release` (set with the chain empty) | `Relaxed`, under the lock | the walks' `Acquire` loads, like the unlink before it: a reader that reads the empty chain from it sees the moved nodes in the next table |
//! | `Table::next` | `Release` (the compare-exchange that starts a resize) | `Acquire` (readers after a miss, writers after a migrated mark) | a reader that sees the new table sees its initialized buckets |
//! | `HashMap::root` | `Release` (the last migrator) | `Acquire` (every operation) | the last migrator's `AcqRel` count makes every migration happen before the new table becomes current |
//! | `Table::migrated` | `AcqRel` increments | — | the last increment acquires every earlier one |
//! | `Table::claim` | `Relaxed` | — | hands out bucket indices; the bucket lock orders the migration |
//! | the length stripes | `Relaxed` | `Relaxed` | counts only, no data published |
//!
//! The one ordering argument that is not a publication: a reader whose walk of old bucket
//! `b` missed a node that a migration moved read a link that the migrator stored (`Release`)
//! after the node was linked into the new table and after `Table::next` was set: the marker
//! that ended the old chain before the node, or the moved `next` of a node in front of it
//! that led the walk away. So its `Acquire` load of `next`, and its walk of the new bucket,
//! see the node (or a later state of it).

use crate::alloc::{try_box, try_vec, AllocError};
#[cfg(not(loom))]
use crate::atomic::Flavor;
use crate::atomic::{Rcu, Retire};
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::ptr;

#[cfg(test)]
mod tests;

/// The fewest buckets a map has (and the default capacity's bucket count).
const MIN_BUCKETS: usize = 8;
/// Old buckets a writer migrates after its own operation while a resize is under way.
const HELP_BATCH: usize = 4;
/// Writes per length stripe between two resize checks, once a table has [`SMALL_TABLE`]
/// buckets (a check sums every stripe, which costs a cache miss per stripe another CPU wrote).
const CHECK_EVERY: usize = 16;
/// Below this many buckets every write checks the load (a small table grows at once).
const SMALL_TABLE: usize = 256;

/// One CPU's part of the length: the net count of its inserts and removals, and the writes it
/// made (the resize check's sampling clock). One cache line each, written by one CPU.
struct Stripe {
    count: AtomicUsize,
    writes: AtomicUsize,
}

/// Length stripes (a power of two); one under loom, where each is a modelled atomic.
#[cfg(not(loom))]
const STRIPES: usize = 16;
#[cfg(loom)]
const STRIPES: usize = 1;

/// A deliberate bug, for loom's negative models: the model must catch it.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// None: the real algorithm.
    None,
    /// Migration ends the old chain before linking the node into the new table.
    UnlinkFirst,
    /// Insert publishes a new node with a Relaxed store.
    RelaxedPublish,
    /// Lookups restart their bucket when a walk ends at another bucket's marker, as
    /// `rhashtable` does: a reader then spins while a migrator is preempted.
    RestartOnForeignMarker,
}

/// One entry: immutable once published, except for `next`.
///
/// The key's hash is not stored (as in `rhashtable`): a lookup compares keys, and a resize
/// or an iteration during one hashes the keys it moves or filters. That keeps a node of
/// `u64` keys and values at 24 bytes, one 32-byte allocator chunk instead of 48.
struct Node<K, V> {
    /// The next node of the chain, or the chain's end marker.
    next: AtomicPtr<Node<K, V>>,
    key: K,
    value: V,
}

/// A chain head, with the lock its writers take in the same word (the kernel's
/// `rht_lock`: a bit spinlock in the bucket pointer), so that a bucket is one word and a
/// lookup touches one cache line of the bucket array for it.
///
/// The word holds the first node, or this bucket's end marker when the chain is empty, plus
/// two flags in bits a node pointer and a marker leave clear (both are 8-byte aligned, and a
/// marker's only set bit is bit 0): [`LOCKED`], held by a writer of this chain, and
/// [`MIGRATED`], set once a resize moved the bucket's keys to the next table. Readers mask
/// the flags off ([`Bucket::load`]); only the lock holder changes the word while [`LOCKED`]
/// is set, and others only try to set it.
struct Bucket<K, V> {
    head: AtomicPtr<Node<K, V>>,
}

/// A writer holds the bucket's lock.
const LOCKED: usize = 0b010;
/// A resize moved the bucket's keys to the next table (they live there from then on).
const MIGRATED: usize = 0b100;
/// Both flags.
const FLAGS: usize = LOCKED | MIGRATED;

/// `p` with `bits` (clear in `p`) set, keeping its provenance.
#[inline]
fn with_bits<K, V>(p: *mut Node<K, V>, bits: usize) -> *mut Node<K, V> {
    debug_assert_eq!(p as usize & bits, 0);
    p.cast::<u8>().wrapping_add(bits).cast()
}

/// `p` without the bucket flags, keeping its provenance.
#[inline]
fn without_flags<K, V>(p: *mut Node<K, V>) -> *mut Node<K, V> {
    p.cast::<u8>().wrapping_sub(p as usize & FLAGS).cast()
}

impl<K, V> Bucket<K, V> {
    /// The first node or the end marker, without the flags.
    #[inline]
    fn load(&self, order: Ordering) -> *mut Node<K, V> {
        without_flags(self.head.load(order))
    }

    /// Take the writers' lock: spin briefly, then yield (a holder only does a few stores, but
    /// may be preempted).
    fn lock(&self) -> BucketLock<'_, K, V> {
        #[cfg(not(loom))]
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            // Relaxed: a look; the compare-exchange below is what acquires.
            let cur = self.head.load(Ordering::Relaxed);
            if cur as usize & LOCKED == 0
                // Acquire: pairs with the Release store in `BucketLock::drop`: the previous
                // holder's stores to this chain happen before ours.
                && self
                    .head
                    .compare_exchange_weak(
                        cur,
                        with_bits(cur, LOCKED),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return BucketLock { bucket: self };
            }
            #[cfg(not(loom))]
            backoff.snooze();
            #[cfg(loom)]
            loom::thread::yield_now();
        }
    }
}

/// A bucket's writer lock, held: released when dropped.
struct BucketLock<'b, K, V> {
    bucket: &'b Bucket<K, V>,
}

impl<K, V> BucketLock<'_, K, V> {
    /// The word as the holder alone may change it. Relaxed: while we hold the lock nobody
    /// else writes it.
    #[inline]
    fn word(&self) -> *mut Node<K, V> {
        self.bucket.head.load(Ordering::Relaxed)
    }

    /// Whether a resize has moved this bucket's keys to the next table.
    #[inline]
    fn migrated(&self) -> bool {
        self.word() as usize & MIGRATED != 0
    }

    /// The first node, or the end marker.
    #[inline]
    fn head(&self) -> *mut Node<K, V> {
        without_flags(self.word())
    }

    /// Make `p` the first node (or the end marker), keeping the flags; `order` as for any
    /// store of a chain link (Release when it publishes or unlinks).
    #[inline]
    fn set_head(&self, p: *mut Node<K, V>, order: Ordering) {
        let flags = self.word() as usize & FLAGS;
        self.bucket.head.store(with_bits(p, flags), order);
    }

    /// Mark the bucket migrated (its chain is empty by then).
    fn set_migrated(&self) {
        let w = self.word();
        debug_assert_eq!(w as usize & MIGRATED, 0);
        // Release: a reader may read the empty chain's marker from this store rather than
        // from the unlink before it; it must still see every node moved to the next table
        // (pairs with the walks' Acquire loads, as the unlink's Release store does). Later
        // lock holders read the flag under the lock.
        self.bucket
            .head
            .store(with_bits(w, MIGRATED), Ordering::Release);
    }
}

impl<K, V> Drop for BucketLock<'_, K, V> {
    fn drop(&mut self) {
        let w = self.word();
        // Release: pairs with the Acquire compare-exchange in `Bucket::lock` (the next
        // holder sees our chain stores), and publishes like any head store for readers.
        self.bucket.head.store(
            w.cast::<u8>().wrapping_sub(LOCKED).cast(),
            Ordering::Release,
        );
    }
}

/// A link a writer may rewrite under the bucket lock: the bucket's head (whose flags stay)
/// or a node's `next`.
enum Link<'a, K, V> {
    Head(&'a BucketLock<'a, K, V>),
    Next(&'a AtomicPtr<Node<K, V>>),
}

impl<K, V> Link<'_, K, V> {
    /// What the link points to. Relaxed: under the bucket lock, which orders every store to
    /// the chain.
    #[inline]
    fn load(&self) -> *mut Node<K, V> {
        match self {
            Link::Head(lk) => lk.head(),
            Link::Next(a) => a.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn store(&self, p: *mut Node<K, V>, order: Ordering) {
        match self {
            Link::Head(lk) => lk.set_head(p, order),
            Link::Next(a) => a.store(p, order),
        }
    }
}

/// The end marker of `bucket`'s chain: its address with the low bit set (a node pointer is
/// even, so a marker is never a node). Unique while the table lives, which a reader's guard
/// ensures.
#[inline]
fn marker<K, V>(bucket: &Bucket<K, V>) -> *mut Node<K, V> {
    // wrapping_add on a byte pointer keeps the provenance (no integer-to-pointer cast).
    (bucket as *const Bucket<K, V> as *mut u8)
        .wrapping_add(1)
        .cast()
}

/// Whether `p` is a chain end (some bucket's marker).
#[inline]
fn is_marker<K, V>(p: *mut Node<K, V>) -> bool {
    p as usize & 1 == 1
}

/// A bucket array, and the resize that may be moving its entries to a successor.
struct Table<K, V> {
    buckets: Box<[Bucket<K, V>]>,
    /// `buckets.len() - 1` (the length is a power of two).
    mask: usize,
    /// The table a resize moves this one's entries to; null when none is under way.
    next: AtomicPtr<Table<K, V>>,
    /// The next bucket index a migrator may claim.
    claim: AtomicUsize,
    /// Buckets migrated so far.
    migrated: AtomicUsize,
}

impl<K, V> Table<K, V> {
    /// A table of `len` (a power of two) empty buckets; through [`crate::alloc`] when
    /// `fallible` (a resize), so that failure injection reaches it.
    fn alloc(len: usize, fallible: bool) -> Result<Box<Table<K, V>>, AllocError> {
        debug_assert!(len.is_power_of_two());
        let mut v = if fallible {
            try_vec(len, "a hash map bucket array")?
        } else {
            Vec::with_capacity(len)
        };
        for _ in 0..len {
            v.push(Bucket {
                head: AtomicPtr::new(ptr::null_mut()),
            });
        }
        let table = Table {
            buckets: v.into_boxed_slice(),
            mask: len - 1,
            next: AtomicPtr::new(ptr::null_mut()),
            claim: AtomicUsize::new(0),
            migrated: AtomicUsize::new(0),
        };
        let table = if fallible {
            try_box(table, "a hash map table")?
        } else {
            Box::new(table)
        };
        for b in table.buckets.iter() {
            // Relaxed: the table is not published yet; the Release store or exchange that
            // publishes it (root, `Table::next`) carries this.
            b.head.store(marker(b), Ordering::Relaxed);
        }
        Ok(table)
    }

    #[inline]
    fn bucket(&self, hash: u64) -> &Bucket<K, V> {
        &self.buckets[hash as usize & self.mask]
    }
}

/// A concurrent hash map read under a grace guard: the kernel's `rhashtable`, with the
/// interface of std's `HashMap`.
///
/// Lookups ([`get`](Self::get), [`contains_key`](Self::contains_key)) and iteration
/// ([`iter`](Self::iter)) take no lock and write nothing shared; they return references that
/// live as long as the guard (and the borrow of the map). Writers lock one bucket. Removed
/// and replaced entries, and the bucket arrays a resize leaves behind, are freed after a grace
/// period of the flavor `F`, in bulk. See the [module docs](self) for the design.
///
/// Every operation takes a guard of the map's flavor: [`guard`](Self::guard) takes one,
/// [`pin`](Self::pin) wraps one with the map for calls without a guard argument. With an SRCU
/// domain as the flavor, a guard of another domain panics (see
/// [`Retire::assert_guard`]).
///
/// Keys and values are `Send + 'static`: removed ones are dropped after a grace period, on
/// whichever thread frees them. `Hash` and `Eq` of the key run with a bucket lock held, and
/// must not call into the same map.
///
/// # Examples
///
/// ```
/// use grace::collections::HashMap;
/// use std::sync::Arc;
///
/// let map = Arc::new(HashMap::new());
/// let writer = {
///     let map = map.clone();
///     std::thread::spawn(move || {
///         let g = map.guard();
///         for i in 0..100u64 {
///             map.insert(i, i * i, &g);
///         }
///     })
/// };
/// writer.join().unwrap();
/// let g = map.guard();
/// assert_eq!(map.get(&7, &g), Some(&49));
/// assert_eq!(map.len(), 100);
/// ```
pub struct HashMap<K, V, S = RandomState, F = Rcu> {
    /// The current table: the one writers start from.
    root: AtomicPtr<Table<K, V>>,
    /// Striped length counters, each a wrapping count of inserts minus removals.
    count: Box<[CachePadded<Stripe>]>,
    /// The fewest buckets a shrink leaves.
    min_buckets: usize,
    hasher: S,
    flavor: F,
    #[cfg(loom)]
    fault: Fault,
    /// Under loom, resizes happen only when a model asks (`rehash`), not by load.
    #[cfg(loom)]
    auto_resize: bool,
    /// The map owns its nodes (for drop check and auto traits).
    _owns: PhantomData<Box<Node<K, V>>>,
}

/// What [`HashMap::put`] did.
enum Put<'g, K, V> {
    /// The node is in the map; no entry had its key.
    Inserted(&'g Node<K, V>),
    /// The node replaced this one, now retired.
    Replaced(&'g Node<K, V>),
    /// An entry had the key and was kept; the node was dropped, never published.
    Kept(&'g Node<K, V>),
}

/// Bucket count for `capacity` entries below the grow threshold.
fn buckets_for(capacity: usize) -> usize {
    let want = capacity.saturating_mul(4) / 3 + 1;
    want.max(MIN_BUCKETS)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
}

#[cfg(not(loom))]
impl<K, V> HashMap<K, V> {
    /// An empty map under RCU, with the default hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = HashMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_capacity_and_hasher(0, RandomState::new())
    }

    /// An empty map under RCU that holds `capacity` entries before it first grows; it never
    /// shrinks below that either.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = HashMap::with_capacity(1000);
    /// assert!(map.buckets(&map.guard()) >= 1000);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S> HashMap<K, V, S> {
    /// An empty map under RCU with `hasher`.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// use std::collections::hash_map::RandomState;
    /// let map: HashMap<u32, u32> = HashMap::with_hasher(RandomState::new());
    /// assert_eq!(map.len(), 0);
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// An empty map under RCU with `hasher`, for `capacity` entries before it grows.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// use std::collections::hash_map::RandomState;
    /// let map: HashMap<u32, u32> = HashMap::with_capacity_and_hasher(64, RandomState::new());
    /// assert!(map.buckets(&map.guard()) >= 64);
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        HashMap::with_capacity_hasher_and_flavor(capacity, hasher, Rcu)
    }
}

impl<K, V, F> HashMap<K, V, RandomState, F> {
    /// An empty map whose entries are freed after grace periods of `flavor` (an SRCU domain,
    /// `Arc<Srcu>`, `&'static Srcu`, ...), with the default hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// use grace::srcu::Srcu;
    /// use grace::Flavor;
    /// let domain = Srcu::new()?;
    /// let map: HashMap<u32, &str, _, &Srcu> = HashMap::with_flavor(&domain);
    /// let g = domain.read_lock();
    /// map.insert(1, "one", &g);
    /// assert_eq!(map.get(&1, &g), Some(&"one"));
    /// # drop(g);
    /// # drop(map);
    /// # domain.barrier();
    /// # Ok::<(), grace::srcu::SrcuError>(())
    /// ```
    pub fn with_flavor(flavor: F) -> Self {
        HashMap::with_capacity_hasher_and_flavor(0, RandomState::new(), flavor)
    }
}

impl<K, V, S, F> HashMap<K, V, S, F> {
    /// An empty map with every parameter: room for `capacity` entries before it grows (and
    /// the floor it never shrinks below), `hasher`, and the flavor whose grace periods free
    /// what it unlinks.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// use grace::Rcu;
    /// use std::collections::hash_map::RandomState;
    /// let map: HashMap<u8, u8> =
    ///     HashMap::with_capacity_hasher_and_flavor(16, RandomState::new(), Rcu);
    /// assert!(map.is_empty());
    /// ```
    pub fn with_capacity_hasher_and_flavor(capacity: usize, hasher: S, flavor: F) -> Self {
        Self::with_buckets(buckets_for(capacity), hasher, flavor)
    }

    /// An empty map of exactly `buckets` (a power of two) buckets, which is also the floor.
    fn with_buckets(buckets: usize, hasher: S, flavor: F) -> Self {
        let table = Table::alloc(buckets, false).unwrap_or_else(|e| panic!("{e}"));
        HashMap {
            root: AtomicPtr::new(Box::into_raw(table)),
            count: (0..STRIPES)
                .map(|_| {
                    CachePadded::new(Stripe {
                        count: AtomicUsize::new(0),
                        writes: AtomicUsize::new(0),
                    })
                })
                .collect(),
            min_buckets: buckets,
            hasher,
            flavor,
            #[cfg(loom)]
            fault: Fault::None,
            #[cfg(loom)]
            auto_resize: true,
            _owns: PhantomData,
        }
    }

    /// A map of `buckets` buckets that resizes only by `rehash`, with a deliberate bug or
    /// none, for loom's models.
    #[cfg(loom)]
    pub(crate) fn with_fault(buckets: usize, hasher: S, flavor: F, fault: Fault) -> Self {
        let mut m = Self::with_buckets(buckets, hasher, flavor);
        m.fault = fault;
        m.auto_resize = false;
        m.min_buckets = 1; // models shrink below their start
        m
    }

    /// The flavor whose grace periods free what the map unlinks.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u8, u8> = HashMap::new();
    /// let _rcu: &grace::Rcu = map.flavor();
    /// ```
    pub fn flavor(&self) -> &F {
        &self.flavor
    }

    /// The hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// use std::hash::BuildHasher;
    /// let map: HashMap<u8, u8> = HashMap::new();
    /// let _h = map.hasher().hash_one(1u8);
    /// ```
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of entries: the sum of the striped counters. Exact when no write runs
    /// concurrently; while writes run, approximate (a write counts itself just after it
    /// links or unlinks its entry, so the sum may lag or lead by the writes in flight).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
    /// assert_eq!(map.len(), 10);
    /// ```
    pub fn len(&self) -> usize {
        let sum = self.count.iter().fold(0usize, |acc, c| {
            // Relaxed: a count; no data is read through it.
            acc.wrapping_add(c.count.load(Ordering::Relaxed))
        });
        // A removal may count itself before the insert it undoes: never report below zero.
        (sum as isize).max(0) as usize
    }

    /// Whether [`len`](Self::len) is zero (approximate under concurrent writes, as `len`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = HashMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add `delta` to this CPU's stripe; returns whether this write is one the resize check
    /// samples (every [`CHECK_EVERY`]-th of the stripe's).
    #[inline]
    fn count(&self, delta: isize) -> bool {
        #[cfg(not(loom))]
        let i = crate::sys::current_cpu() & (STRIPES - 1);
        #[cfg(loom)]
        let i = 0;
        let s = &self.count[i];
        // Relaxed: a count (see `len`).
        s.count.fetch_add(delta as usize, Ordering::Relaxed);
        // Relaxed, and a load and a store rather than an atomic add: a sampling clock; two
        // threads on one stripe may lose a tick, which only moves the next check.
        let w = s.writes.load(Ordering::Relaxed);
        s.writes.store(w.wrapping_add(1), Ordering::Relaxed);
        w % CHECK_EVERY == 0
    }

    /// The current table.
    #[inline]
    fn root(&self) -> &Table<K, V> {
        // Acquire: pairs with the Release store in `finish_resize` (and the table's creation
        // before the map was shared): the table and every migration into it are visible.
        let t = self.root.load(Ordering::Acquire);
        // SAFETY: the root is never null; a table is retired only after the root moved off it,
        // and the caller holds a guard of the flavor (every caller takes one), so a table it
        // reads stays allocated while it uses it.
        unsafe { &*t }
    }
}

/// The successor of a table in which a bucket was found migrated, or a walk missed.
///
/// # Safety
///
/// The caller holds a guard of the map's flavor (tables are retired through it).
#[inline]
unsafe fn next_table<'t, K, V>(t: &Table<K, V>) -> Option<&'t Table<K, V>> {
    // Acquire: pairs with the Release compare-exchange in `try_start_resize`: the new
    // table's buckets are initialized.
    let n = t.next.load(Ordering::Acquire);
    // SAFETY: a published table is retired only after a later one became current, and freed
    // only after a grace period; the caller's guard keeps it.
    unsafe { n.as_ref() }
}

impl<K, V, S, F> HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
    F: Retire,
{
    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The node of `key`, found with no lock: the chain walk of the module docs.
    fn find<'g, Q>(&'g self, hash: u64, key: &Q) -> Option<&'g Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut t = self.root();
        loop {
            // Acquire: pairs with the Release stores that link a node (insert, replace,
            // unlink, migration): the node's fields are visible.
            let mut p = t.bucket(hash).load(Ordering::Acquire);
            while !is_marker(p) {
                // SAFETY: reached from the table through links of published nodes under the
                // caller's guard; a node is freed only a grace period after it was unlinked,
                // and the guard's section began before that.
                let n = unsafe { &*p };
                if n.key.borrow() == key {
                    return Some(n);
                }
                // Acquire: as above.
                p = n.next.load(Ordering::Acquire);
                #[cfg(loom)]
                if is_marker(p)
                    && p != marker(t.bucket(hash))
                    && self.fault == Fault::RestartOnForeignMarker
                {
                    // Acquire: as above.
                    p = t.bucket(hash).load(Ordering::Acquire);
                }
            }
            // The end of our bucket's chain, or of another one's if a migration moved a node
            // we stood on: either way, what this table may still hold for the key was moved
            // to the next one before (module docs, "Why a walk never restarts").
            // SAFETY: the caller holds a guard (every public entry takes one).
            t = unsafe { next_table(t) }?;
        }
    }

    /// Lock the bucket where keys of `hash` live now: the first unmigrated one, from the
    /// current table on.
    fn lock_home(&self, hash: u64) -> (&Table<K, V>, BucketLock<'_, K, V>) {
        let mut t = self.root();
        loop {
            let g = t.bucket(hash).lock();
            if !g.migrated() {
                return (t, g);
            }
            drop(g);
            // SAFETY: the caller holds a guard. A migrated mark is set after the table's
            // `next` was published, and we read the mark under the lock its migrator held.
            t = unsafe { next_table(t) }.expect("a migrated bucket has a next table");
        }
    }

    /// Under `b`'s lock: the link that points to `key`'s node, and the node (as the raw
    /// pointer the link holds, which keeps the provenance `retire_raw` needs).
    #[allow(clippy::type_complexity)]
    fn find_locked<'b, Q>(
        b: &'b BucketLock<'b, K, V>,
        key: &Q,
    ) -> Option<(Link<'b, K, V>, *mut Node<K, V>)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut prev = Link::Head(b);
        // Relaxed (inside `load`): under the bucket lock, which orders every store to this
        // chain.
        let mut p = prev.load();
        while !is_marker(p) {
            // SAFETY: a node of a chain we hold the lock of: nobody unlinks it meanwhile.
            let n: &'b Node<K, V> = unsafe { &*p };
            if n.key.borrow() == key {
                return Some((prev, p));
            }
            prev = Link::Next(&n.next);
            p = prev.load();
        }
        None
    }

    /// Link `node`, replacing an entry with its key (`replace`) or keeping it.
    fn put<'g>(&'g self, hash: u64, node: Box<Node<K, V>>, replace: bool) -> Put<'g, K, V> {
        let (_, lk) = self.lock_home(hash);
        let found = Self::find_locked(&lk, &node.key);
        // SAFETY: a node of the chain we hold the lock of; after the unlink below, freed only
        // a grace period later, which the caller's guard holds back.
        let found = found.map(|(prev, p)| (prev, p, unsafe { &*p }));
        let result = match found {
            Some((_, _, old)) if !replace => Put::Kept(old),
            Some((prev, old_ptr, old)) => {
                // Relaxed: the node is not published yet; the Release store below is.
                node.next
                    .store(old.next.load(Ordering::Relaxed), Ordering::Relaxed);
                let new = Box::into_raw(node);
                // Release: publishes the node's fields; pairs with the Acquire loads of the
                // chain walks.
                prev.store(new, Ordering::Release);
                drop(lk);
                // SAFETY: from Box::into_raw when linked; unlinked just now under the lock
                // (no reader starting later reaches it), and only the unlinker retires it;
                // readers hold guards of `self.flavor` (checked at every entry point).
                unsafe { self.flavor.retire_raw(old_ptr) };
                return Put::Replaced(old);
            }
            None => {
                // Relaxed: under the lock (see `find_locked`); the node is not published.
                node.next.store(lk.head(), Ordering::Relaxed);
                let new = Box::into_raw(node);
                #[cfg(loom)]
                let publish = if self.fault == Fault::RelaxedPublish {
                    Ordering::Relaxed
                } else {
                    Ordering::Release
                };
                #[cfg(not(loom))]
                let publish = Ordering::Release;
                // Release: publishes the node; pairs with the walks' Acquire loads.
                lk.set_head(new, publish);
                // SAFETY: just linked; freed only after being unlinked and a grace period
                // that the caller's guard holds back.
                Put::Inserted(unsafe { &*new })
            }
        };
        drop(lk);
        if let Put::Inserted(_) = result {
            let check = self.count(1);
            self.after_write(check);
        }
        result
    }

    /// The value of `key`, with no lock: the kernel's `rhashtable_lookup` under
    /// `rcu_read_lock`. It stays readable until the guard drops, even if the entry is removed
    /// meanwhile.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another SRCU domain than the map's.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert("k", 1, &g);
    /// assert_eq!(map.get("k", &g), Some(&1));
    /// assert_eq!(map.get("x", &g), None);
    /// ```
    #[inline]
    pub fn get<'g, Q>(&'g self, key: &Q, guard: &'g F::Guard<'_>) -> Option<&'g V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key, guard).map(|(_, v)| v)
    }

    /// The key and value of `key`'s entry (as [`get`](Self::get)).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert(String::from("k"), 1, &g);
    /// assert_eq!(map.get_key_value("k", &g), Some((&String::from("k"), &1)));
    /// ```
    pub fn get_key_value<'g, Q>(
        &'g self,
        key: &Q,
        guard: &'g F::Guard<'_>,
    ) -> Option<(&'g K, &'g V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.flavor.assert_guard(guard);
        self.find(self.hash(key), key).map(|n| (&n.key, &n.value))
    }

    /// Whether the map has an entry for `key` (as [`get`](Self::get)).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert(3, (), &g);
    /// assert!(map.contains_key(&3, &g));
    /// assert!(!map.contains_key(&4, &g));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q, guard: &F::Guard<'_>) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key, guard).is_some()
    }

    /// Insert `key` → `value`. Returns the value it replaced, which stays readable until the
    /// guard drops and is freed after a grace period (the kernel's `rhashtable_replace_fast`
    /// and `kvfree_rcu` of the old entry).
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another SRCU domain than the map's. Like std, aborts if memory
    /// for the entry cannot be had; [`try_insert`](Self::try_insert) reports that instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// assert_eq!(map.insert(1, "a", &g), None);
    /// assert_eq!(map.insert(1, "b", &g), Some(&"a"));
    /// assert_eq!(map.get(&1, &g), Some(&"b"));
    /// ```
    pub fn insert<'g>(&'g self, key: K, value: V, guard: &'g F::Guard<'_>) -> Option<&'g V> {
        self.flavor.assert_guard(guard);
        let hash = self.hash(&key);
        let node = Box::new(Node {
            next: AtomicPtr::new(ptr::null_mut()),
            key,
            value,
        });
        match self.put(hash, node, true) {
            Put::Replaced(old) => Some(&old.value),
            _ => None,
        }
    }

    /// [`insert`](Self::insert), reporting allocation failure instead of aborting: on
    /// `Err` the map is unchanged (the key and value are dropped). The entry's memory comes
    /// from [`crate::alloc::try_box`], so failure injection reaches it.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when the entry could not be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::alloc::{inject, FailurePlan};
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// {
    ///     let _fail = inject(FailurePlan::Nth(1));
    ///     assert!(map.try_insert(1, 10, &g).is_err());
    /// }
    /// assert!(map.is_empty());
    /// assert_eq!(map.try_insert(1, 10, &g), Ok(None));
    /// ```
    pub fn try_insert<'g>(
        &'g self,
        key: K,
        value: V,
        guard: &'g F::Guard<'_>,
    ) -> Result<Option<&'g V>, AllocError> {
        self.flavor.assert_guard(guard);
        let hash = self.hash(&key);
        let node = try_box(
            Node {
                next: AtomicPtr::new(ptr::null_mut()),
                key,
                value,
            },
            "a hash map entry",
        )?;
        Ok(match self.put(hash, node, true) {
            Put::Replaced(old) => Some(&old.value),
            _ => None,
        })
    }

    /// The value of `key`, inserting `make()` first if there is none (std's
    /// `entry(key).or_insert_with(make)`). `make` runs with no lock held, at most once; if
    /// another thread inserts the key meanwhile, its value wins and `make`'s is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// assert_eq!(*map.get_or_insert_with("k", || 1, &g), 1);
    /// assert_eq!(*map.get_or_insert_with("k", || 2, &g), 1);
    /// ```
    pub fn get_or_insert_with<'g>(
        &'g self,
        key: K,
        make: impl FnOnce() -> V,
        guard: &'g F::Guard<'_>,
    ) -> &'g V {
        self.flavor.assert_guard(guard);
        let hash = self.hash(&key);
        if let Some(n) = self.find(hash, &key) {
            return &n.value;
        }
        let node = Box::new(Node {
            next: AtomicPtr::new(ptr::null_mut()),
            key,
            value: make(),
        });
        match self.put(hash, node, false) {
            Put::Inserted(n) | Put::Kept(n) => &n.value,
            Put::Replaced(_) => unreachable!("put(_, false) never replaces"),
        }
    }

    /// Replace the value of `key` with `f(old)`, atomically with respect to other writers of
    /// the key; returns the new value, or `None` (and `f` is not called) if there is no entry.
    /// The old entry is freed after a grace period. `f` runs with the key's bucket lock held:
    /// it must not call into this map. Entries are immutable (a reader never sees a value
    /// change under it), so the new value goes into a new entry with a clone of the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert("hits", 1u64, &g);
    /// assert_eq!(map.update("hits", |n| n + 1, &g), Some(&2));
    /// assert_eq!(map.update("miss", |n| n + 1, &g), None);
    /// ```
    pub fn update<'g, Q>(
        &'g self,
        key: &Q,
        f: impl FnOnce(&V) -> V,
        guard: &'g F::Guard<'_>,
    ) -> Option<&'g V>
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
    {
        self.flavor.assert_guard(guard);
        let hash = self.hash(key);
        let (_, lk) = self.lock_home(hash);
        let (prev, old_ptr) = Self::find_locked(&lk, key)?;
        // SAFETY: a node of the chain we hold the lock of.
        let old = unsafe { &*old_ptr };
        let new = Box::into_raw(Box::new(Node {
            // Relaxed: under the lock; published by the Release store below.
            next: AtomicPtr::new(old.next.load(Ordering::Relaxed)),
            key: old.key.clone(),
            value: f(&old.value),
        }));
        // Release: publishes the new node; pairs with the walks' Acquire loads.
        prev.store(new, Ordering::Release);
        drop(lk);
        // SAFETY: as in `put`: unlinked under the lock, retired once, readers hold guards
        // of the flavor.
        unsafe { self.flavor.retire_raw(old_ptr) };
        // SAFETY: linked above; freed only a grace period after an unlink, which the
        // caller's guard holds back.
        Some(unsafe { &(*new).value })
    }

    /// Remove `key`'s entry; returns its value, readable until the guard drops and freed after
    /// a grace period (the kernel's `rhashtable_remove_fast` then `kvfree_rcu`).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert(1, "a", &g);
    /// assert_eq!(map.remove(&1, &g), Some(&"a"));
    /// assert_eq!(map.remove(&1, &g), None);
    /// ```
    pub fn remove<'g, Q>(&'g self, key: &Q, guard: &'g F::Guard<'_>) -> Option<&'g V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.flavor.assert_guard(guard);
        let hash = self.hash(key);
        let (_, lk) = self.lock_home(hash);
        let (prev, old_ptr) = Self::find_locked(&lk, key)?;
        // SAFETY: a node of the chain we hold the lock of; after the unlink, freed only a
        // grace period later, which the caller's guard holds back.
        let old = unsafe { &*old_ptr };
        // Release: a reader that loads this link walks on to the nodes behind it, which it
        // must see initialized (our lock acquired their publication); pairs with the walks'
        // Acquire loads. (The removed node's own `next` is left as it is, so a reader
        // standing on it walks on.)
        prev.store(old.next.load(Ordering::Relaxed), Ordering::Release);
        drop(lk);
        // SAFETY: as in `put`.
        unsafe { self.flavor.retire_raw(old_ptr) };
        let check = self.count(-1);
        self.after_write(check);
        Some(&old.value)
    }

    /// Remove every entry present when the call starts (entries inserted concurrently may
    /// stay). Removed entries are freed after a grace period; values borrowed under the guard
    /// stay readable until it drops.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = (0..100).map(|i| (i, i)).collect();
    /// map.clear(&map.guard());
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&self, guard: &F::Guard<'_>) {
        self.flavor.assert_guard(guard);
        let mut t = Some(self.root());
        while let Some(table) = t {
            for b in table.buckets.iter() {
                let lk = b.lock();
                if lk.migrated() {
                    continue; // migrated: its entries are in the next table, cleared next
                }
                let end = marker(b);
                let mut p = lk.head();
                if p == end {
                    continue;
                }
                // Release: readers that load the empty head need nothing published, but a
                // Release keeps this store uniform with the other unlinks (pairs with the
                // walks' Acquire loads).
                lk.set_head(end, Ordering::Release);
                drop(lk);
                while p != end {
                    // SAFETY: the chain was ours under the lock; its nodes are unlinked now
                    // (the head skips them all) and their `next` links are no longer written.
                    let n = unsafe { &*p };
                    // Relaxed: the node is unlinked; its `next` was last written under the
                    // lock we held.
                    let next = n.next.load(Ordering::Relaxed);
                    self.count(-1);
                    // SAFETY: unlinked above by us alone, retired once; readers hold guards of
                    // the flavor.
                    unsafe { self.flavor.retire_raw(p) };
                    p = next;
                }
            }
            // SAFETY: we hold a guard.
            t = unsafe { next_table(table) };
        }
        self.after_write(true);
    }

    /// Iterate over the entries under `guard` (the kernel's `rhashtable_walk_*`). Concurrent
    /// writes and resizes may run meanwhile: every entry present for the whole iteration is
    /// yielded exactly once, an entry inserted or removed during it may or may not be, and no
    /// key is yielded twice. See "Iteration during a resize" in the [module docs](self).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = (0..10).map(|i| (i, i * 2)).collect();
    /// let g = map.guard();
    /// let mut pairs: Vec<_> = map.iter(&g).map(|(k, v)| (*k, *v)).collect();
    /// pairs.sort();
    /// assert_eq!(pairs[3], (3, 6));
    /// assert_eq!(pairs.len(), 10);
    /// ```
    pub fn iter<'g>(&'g self, guard: &'g F::Guard<'_>) -> Iter<'g, K, V, S> {
        self.flavor.assert_guard(guard);
        let t = self.root();
        Iter {
            table: t,
            hasher: &self.hasher,
            group: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The number of buckets of the current table (the one writers start from).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = HashMap::new();
    /// assert!(map.buckets(&map.guard()).is_power_of_two());
    /// ```
    pub fn buckets(&self, guard: &F::Guard<'_>) -> usize {
        self.flavor.assert_guard(guard);
        self.root().buckets.len()
    }

    /// Resize the table to `buckets` buckets (rounded up to a power of two, at least the
    /// capacity the map was created with), migrating every bucket no other writer has claimed
    /// before returning; a resize already under way is finished first (helping, then
    /// yielding until the writers that claimed its last buckets are done). When no other
    /// writer runs, the resize is complete on return; otherwise the last of them to finish a
    /// claimed bucket completes it. Writers keep working throughout, and the load-based
    /// resizing may move the size again afterwards (this is the kernel's `rhashtable`
    /// deferred rehash, done by the caller).
    ///
    /// # Errors
    ///
    /// [`AllocError`] when the new bucket array could not be allocated: the map is
    /// unchanged and keeps working at its size.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map: HashMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
    /// let g = map.guard();
    /// map.rehash(1024, &g)?;
    /// assert_eq!(map.buckets(&g), 1024);
    /// assert_eq!(map.get(&7, &g), Some(&7));
    /// # Ok::<(), grace::alloc::AllocError>(())
    /// ```
    pub fn rehash(&self, buckets: usize, guard: &F::Guard<'_>) -> Result<(), AllocError> {
        self.flavor.assert_guard(guard);
        let want = buckets
            .max(self.min_buckets)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        loop {
            let t = self.root();
            // SAFETY: we hold a guard.
            if let Some(n) = unsafe { next_table(t) } {
                self.help(t, n, usize::MAX);
                // Every bucket is claimed; other writers are finishing theirs. This is the
                // one place that waits for another thread (an explicit rehash finishes the
                // resize under way before it starts its own); no lock is held meanwhile.
                #[cfg(not(loom))]
                std::thread::yield_now();
                #[cfg(loom)]
                loom::thread::yield_now();
                continue;
            }
            if t.buckets.len() == want {
                return Ok(());
            }
            if let Some(n) = self.try_start_resize(t, want)? {
                self.help(t, n, usize::MAX);
                return Ok(());
            }
        }
    }

    /// After a write: help a resize under way, or, when `check` (a sampled write) or the table
    /// is small, start one if the load crossed a threshold.
    fn after_write(&self, check: bool) {
        let t = self.root();
        // SAFETY: every writer holds a guard.
        if let Some(n) = unsafe { next_table(t) } {
            self.help(t, n, HELP_BATCH);
            return;
        }
        #[cfg(loom)]
        if !self.auto_resize {
            return;
        }
        let len = t.buckets.len();
        if !check && len >= SMALL_TABLE {
            return;
        }
        // The new size is the one for the count now (load between 3/8 and 3/4), so a map that
        // grew or shrank a lot (or whose earlier resizes failed to allocate) gets there in one
        // resize.
        let n = self.len();
        // Both ways on every check, whichever write it samples (with inserts and removals
        // alternating, the sampled writes may all be of one kind).
        let want = if n * 4 > len * 3 {
            Some(buckets_for(n).max(len * 2))
        } else if len > self.min_buckets && n * 10 < len * 3 {
            Some(buckets_for(n).clamp(self.min_buckets, len / 2))
        } else {
            None
        };
        if let Some(want) = want {
            // An allocation failure skips the resize: the map works at its current size.
            if let Ok(Some(n)) = self.try_start_resize(t, want) {
                self.help(t, n, HELP_BATCH);
            }
        }
    }

    /// Allocate a table of `len` buckets and publish it as `t`'s successor. `Ok(None)` if
    /// another resize won the race.
    fn try_start_resize<'t>(
        &self,
        t: &'t Table<K, V>,
        len: usize,
    ) -> Result<Option<&'t Table<K, V>>, AllocError> {
        let new = Box::into_raw(Table::alloc(len, true)?);
        // Release: publishes the new table's initialized buckets to readers and writers that
        // load `next` (pairs with the Acquire in `next_table`). Acquire on failure: the
        // winner's table, which we do not use.
        match t
            .next
            .compare_exchange(ptr::null_mut(), new, Ordering::Release, Ordering::Acquire)
        {
            // SAFETY: published now; retired only after it became current and was replaced,
            // a grace period after, and our caller holds a guard.
            Ok(_) => Ok(Some(unsafe { &*new })),
            Err(_) => {
                // SAFETY: never published: still ours alone.
                drop(unsafe { Box::from_raw(new) });
                Ok(None)
            }
        }
    }

    /// Migrate up to `batch` unclaimed buckets of `t` into `n`; the last migrator makes `n`
    /// current.
    fn help(&self, t: &Table<K, V>, n: &Table<K, V>, batch: usize) {
        let len = t.buckets.len();
        for _ in 0..batch {
            // Relaxed: hands out indices only; the bucket lock orders the migration.
            let i = t.claim.fetch_add(1, Ordering::Relaxed);
            if i >= len {
                return;
            }
            self.migrate(&t.buckets[i], n);
            // AcqRel: the last increment acquires every migration before it (each released
            // by its own increment), so the Release store of the root publishes them all.
            if t.migrated.fetch_add(1, Ordering::AcqRel) + 1 == len {
                self.finish_resize(t);
            }
        }
    }

    /// Move every node of old bucket `b` to `n`, tail first, then mark `b` migrated.
    fn migrate(&self, b: &Bucket<K, V>, n: &Table<K, V>) {
        let lk = b.lock();
        debug_assert!(!lk.migrated(), "a bucket is claimed once");
        let end = marker(b);
        loop {
            // Find the tail and the link to it. Relaxed: under b's lock, which orders every
            // store to this chain.
            let mut prev = Link::Head(&lk);
            let mut p = prev.load();
            if p == end {
                break;
            }
            loop {
                // SAFETY: a node of the chain we hold the lock of. Relaxed: as above.
                let next = unsafe { &*p }.next.load(Ordering::Relaxed);
                if next == end {
                    break;
                }
                // SAFETY: as above.
                prev = Link::Next(unsafe { &(*p).next });
                p = next;
            }
            // SAFETY: as above.
            let node = unsafe { &*p };
            let target = n.bucket(self.hash(&node.key));
            #[cfg(loom)]
            if self.fault == Fault::UnlinkFirst {
                // Release: as the real unlink below; only the order is wrong (the bug).
                prev.store(end, Ordering::Release);
            }
            {
                let tl = target.lock();
                debug_assert!(!tl.migrated(), "the new table is not being migrated");
                // Release: a reader standing on the node walks on into the target chain and
                // must see its nodes (our lock acquired their publication); pairs with the
                // walks' Acquire loads. The reader then ends at the target's marker and
                // searches the new table (module docs, "Why a walk never restarts").
                node.next.store(tl.head(), Ordering::Release);
                // Release: publishes the node in the new chain; pairs with the walks'
                // Acquire loads.
                tl.set_head(p, Ordering::Release);
                drop(tl);
            }
            // Release: after the node is reachable in `n`; a reader that reads this marker
            // then finds the node through `next` (module docs, "Memory orderings").
            prev.store(end, Ordering::Release);
        }
        lk.set_migrated();
    }

    /// Make `t`'s successor current and retire `t` (all its buckets migrated).
    fn finish_resize(&self, t: &Table<K, V>) {
        // Relaxed: we read `next` already (with Acquire) before migrating; this load only
        // takes the pointer with its provenance.
        let n = t.next.load(Ordering::Relaxed);
        // AcqRel: the Release half pairs with the Acquire in `root`: the migrations (acquired
        // by our AcqRel count) happen before a writer or reader that starts from `n`.
        let old = self.root.swap(n, Ordering::AcqRel);
        debug_assert!(ptr::eq(old, t), "only the current table is resized");
        // SAFETY: `old` came from Box::into_raw (root or `next`), is unreachable from the
        // root now (readers that still hold it hold guards of the flavor), and only the last
        // migrator gets here, once per table. Its drop frees the bucket array, not the nodes
        // (they all live in `n`).
        unsafe { self.flavor.retire_raw(old) };
    }
}

#[cfg(not(loom))]
impl<K, V, S, F> HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
    F: Retire,
{
    /// Enter a read-side critical section of the map's flavor: the guard every operation
    /// takes.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// let g = map.guard();
    /// map.insert(1, 1, &g);
    /// ```
    pub fn guard(&self) -> F::Guard<'_> {
        self.flavor.read_lock()
    }

    /// The map with a guard pinned: the same operations without a guard argument, for one
    /// call or a few (the guard lives as long as the [`MapRef`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::collections::HashMap;
    /// let map = HashMap::new();
    /// map.pin().insert(1, "one");
    /// assert_eq!(map.pin().get(&1), Some(&"one"));
    /// ```
    pub fn pin(&self) -> MapRef<'_, K, V, S, F> {
        MapRef {
            map: self,
            guard: self.guard(),
        }
    }
}

/// A [`HashMap`] with a guard of its flavor: [`HashMap::pin`].
///
/// # Examples
///
/// ```
/// use grace::collections::HashMap;
/// let map = HashMap::new();
/// let m = map.pin();
/// m.insert("a", 1);
/// assert!(m.contains_key("a"));
/// assert_eq!(m.len(), 1);
/// ```
#[cfg(not(loom))]
pub struct MapRef<'m, K, V, S, F: Flavor + 'm> {
    map: &'m HashMap<K, V, S, F>,
    guard: F::Guard<'m>,
}

#[cfg(not(loom))]
impl<'m, K, V, S, F> MapRef<'m, K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
    F: Retire,
{
    /// [`HashMap::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// let m = map.pin();
    /// m.insert(1, 2);
    /// assert_eq!(m.get(&1), Some(&2));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key, &self.guard)
    }

    /// [`HashMap::contains_key`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// map.pin().insert(1, 2);
    /// assert!(map.pin().contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key, &self.guard)
    }

    /// [`HashMap::insert`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// let m = map.pin();
    /// assert_eq!(m.insert(1, 2), None);
    /// assert_eq!(m.insert(1, 3), Some(&2));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<&V> {
        self.map.insert(key, value, &self.guard)
    }

    /// [`HashMap::try_insert`].
    ///
    /// # Errors
    ///
    /// As [`HashMap::try_insert`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// assert_eq!(map.pin().try_insert(1, 2), Ok(None));
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<Option<&V>, AllocError> {
        self.map.try_insert(key, value, &self.guard)
    }

    /// [`HashMap::remove`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// let m = map.pin();
    /// m.insert(1, 2);
    /// assert_eq!(m.remove(&1), Some(&2));
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key, &self.guard)
    }

    /// [`HashMap::update`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// let m = map.pin();
    /// m.insert(1, 2);
    /// assert_eq!(m.update(&1, |v| v * 10), Some(&20));
    /// ```
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&V) -> V) -> Option<&V>
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
    {
        self.map.update(key, f, &self.guard)
    }

    /// [`HashMap::get_or_insert_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = grace::collections::HashMap::new();
    /// assert_eq!(*map.pin().get_or_insert_with(1, || 5), 5);
    /// ```
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> &V {
        self.map.get_or_insert_with(key, make, &self.guard)
    }

    /// [`HashMap::iter`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map: grace::collections::HashMap<u8, u8> = (0..4).map(|i| (i, i)).collect();
    /// assert_eq!(map.pin().iter().count(), 4);
    /// ```
    pub fn iter(&self) -> Iter<'_, K, V, S> {
        self.map.iter(&self.guard)
    }

    /// [`HashMap::clear`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map: grace::collections::HashMap<u8, u8> = (0..4).map(|i| (i, i)).collect();
    /// map.pin().clear();
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&self) {
        self.map.clear(&self.guard)
    }

    /// [`HashMap::len`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map: grace::collections::HashMap<u8, u8> = (0..4).map(|i| (i, i)).collect();
    /// assert_eq!(map.pin().len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// [`HashMap::is_empty`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map: grace::collections::HashMap<u8, u8> = grace::collections::HashMap::new();
    /// assert!(map.pin().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The guard this `MapRef` holds, for the [`HashMap`] methods it does not wrap.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: grace::collections::HashMap<u8, u8> = grace::collections::HashMap::new();
    /// let m = map.pin();
    /// assert_eq!(map.buckets(m.guard()), 8);
    /// ```
    pub fn guard(&self) -> &F::Guard<'m> {
        &self.guard
    }
}

/// The entries of a [`HashMap`], under a guard: [`HashMap::iter`].
///
/// # Examples
///
/// ```
/// use grace::collections::HashMap;
/// let map: HashMap<u32, u32> = (0..3).map(|i| (i, i)).collect();
/// let g = map.guard();
/// let sum: u32 = map.iter(&g).map(|(_, v)| v).sum();
/// assert_eq!(sum, 3);
/// ```
pub struct Iter<'g, K, V, S = RandomState> {
    /// The table current when the iteration started; its buckets are the groups.
    table: &'g Table<K, V>,
    /// The map's hasher: where a walk may hold nodes of other groups (a shrunk table, or a
    /// chain a migration diverted it into), it hashes their keys to keep its group's only.
    hasher: &'g S,
    /// The next group to collect.
    group: usize,
    /// The current group's nodes.
    buf: Vec<&'g Node<K, V>>,
    /// The next of `buf` to yield.
    pos: usize,
}

impl<'g, K: Hash + Eq, V, S: BuildHasher> Iter<'g, K, V, S> {
    /// Walk bucket `j` of `x`, adding the nodes of group `i` (hash & `m` == `i`) whose keys
    /// `buf` does not have yet. A walk that a migration diverted into another chain (it ends
    /// at another bucket's marker) goes on to its end: what it skipped is in the next table,
    /// which `collect` walks next.
    fn walk(&mut self, x: &'g Table<K, V>, j: usize, i: usize, m: usize) {
        let start = self.buf.len();
        let b = &x.buckets[j];
        // Acquire: pairs with the Release stores that link nodes (see `HashMap::find`).
        let mut p = b.load(Ordering::Acquire);
        while !is_marker(p) {
            // SAFETY: as in `HashMap::find`: reached through published links under the
            // iterator's guard (`'g`).
            let n: &'g Node<K, V> = unsafe { &*p };
            // A node of another group never has the key of one of ours (its hash differs).
            if !self.buf.iter().any(|q| q.key == n.key) {
                self.buf.push(n);
            }
            // Acquire: as above.
            p = n.next.load(Ordering::Acquire);
        }
        // Bucket j of a table at least as large as the first holds group i's keys only
        // (j & m == i); a smaller table's bucket, or a chain a migration diverted the walk
        // into (it ended at another bucket's marker), may hold other groups' keys.
        if x.mask < m || p != marker(b) {
            let mut kept = start;
            for k in start..self.buf.len() {
                if self.hasher.hash_one(&self.buf[k].key) as usize & m == i {
                    self.buf.swap(kept, k);
                    kept += 1;
                }
            }
            self.buf.truncate(kept);
        }
    }

    /// Collect group `i`: its bucket in the first table, then where a resize moved it.
    fn collect(&mut self, i: usize) {
        self.buf.clear();
        self.pos = 0;
        let m = self.table.mask;
        let mut x: &'g Table<K, V> = self.table;
        loop {
            if x.mask >= m {
                // Same size or larger: the group's keys are in buckets i, i + (m+1), ...
                let mut j = i;
                while j < x.buckets.len() {
                    self.walk(x, j, i, m);
                    j += m + 1;
                }
            } else {
                self.walk(x, i & x.mask, i, m);
            }
            // SAFETY: the iterator borrows a guard for `'g`.
            match unsafe { next_table(x) } {
                Some(n) => x = n,
                None => return,
            }
        }
    }
}

impl<'g, K: Hash + Eq, V, S: BuildHasher> Iterator for Iter<'g, K, V, S> {
    type Item = (&'g K, &'g V);

    fn next(&mut self) -> Option<(&'g K, &'g V)> {
        loop {
            if let Some(n) = self.buf.get(self.pos) {
                self.pos += 1;
                return Some((&n.key, &n.value));
            }
            if self.group >= self.table.buckets.len() {
                return None;
            }
            let g = self.group;
            self.group += 1;
            self.collect(g);
        }
    }
}

impl<K, V, S, F> Drop for HashMap<K, V, S, F> {
    fn drop(&mut self) {
        // Relaxed throughout: `&mut self`, so no other thread touches the map.
        let mut t = self.root.load(Ordering::Relaxed);
        while !t.is_null() {
            // SAFETY: the root and the tables linked from it are ours (retired tables are
            // off the root and not linked from it: a retired table's successor is the root
            // or later); no reader can use them without borrowing the map.
            let table = unsafe { Box::from_raw(t) };
            for b in table.buckets.iter() {
                let end = marker(b);
                let mut p = b.load(Ordering::Relaxed);
                while p != end {
                    // SAFETY: at rest each node is in exactly one chain (a migration moves a
                    // node under its bucket's lock, which no one holds now); freed once.
                    let n = unsafe { Box::from_raw(p) };
                    p = n.next.load(Ordering::Relaxed);
                }
            }
            t = table.next.load(Ordering::Relaxed);
        }
    }
}

#[cfg(not(loom))]
impl<K, V, S, F> std::fmt::Debug for HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static + std::fmt::Debug,
    V: Send + 'static + std::fmt::Debug,
    S: BuildHasher,
    F: Retire,
{
    /// The entries, as std's `HashMap` prints them, read under a guard.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.guard();
        f.debug_map().entries(self.iter(&g)).finish()
    }
}

#[cfg(not(loom))]
impl<K, V, S: Default, F: Default> Default for HashMap<K, V, S, F> {
    /// An empty map.
    fn default() -> Self {
        HashMap::with_capacity_hasher_and_flavor(0, S::default(), F::default())
    }
}

#[cfg(not(loom))]
impl<K, V, S, F> FromIterator<(K, V)> for HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Default,
    F: Retire + Default,
{
    /// A map of the pairs; a later pair replaces an earlier one with the same key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = HashMap::default();
        map.extend(iter);
        map
    }
}

#[cfg(not(loom))]
impl<K, V, S, F> Extend<(K, V)> for HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
    F: Retire,
{
    /// Insert each pair, under one guard.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        (&*self).extend(iter)
    }
}

#[cfg(not(loom))]
impl<K, V, S, F> Extend<(K, V)> for &HashMap<K, V, S, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
    F: Retire,
{
    /// Insert each pair, under one guard; through a shared reference, as the map is
    /// concurrent.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let g = self.guard();
        for (k, v) in iter {
            self.insert(k, v, &g);
        }
    }
}
