//! A small key → value cache that recycles its entries through a [`Pending`] instead of
//! freeing them: the pattern of bcachefs's btree key cache, and the replacement for
//! `SLAB_TYPESAFE_BY_RCU`. `cargo run --release --example object_cache -- [MILLISECONDS]`.
//!
//! * Readers look entries up inside an RCU read-side section, with no lock and no reference
//!   count. An entry they found stays *memory* of type `Entry` for as long as they are inside:
//!   it may be evicted and even recycled for another key under them, but never freed.
//! * Evicting unpublishes an entry and enqueues it. After a grace period it is freed in bulk
//!   by the `Pending`'s worker, unless an insert takes it back first with
//!   [`Pending::dequeue`]: then it is reused at once, no allocation, no waiting.
//! * Because a recycled entry may still be read by readers from before its eviction, the
//!   [`Reused`](grace::pending::Reused) handle gives only shared access: the entry is rewritten
//!   through atomics, under a sequence count (a seqlock), and readers validate what they read
//!   (sequence unchanged and even, key matching). That is the type-stable contract: readers
//!   must expect the object to change identity under them, and check.
//!
//! Readers here verify every hit (`value == key * 7`) and count the misses caused by an entry
//! changing under them; the program asserts that no reader ever saw a torn or foreign entry.

use grace::pending::{Pending, Process};
use grace::rcu;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A cache entry. Every field is atomic: readers may read it while it is being recycled.
struct Entry {
    /// Even: stable. Odd: being rewritten. Bumped twice per rewrite.
    seq: AtomicU64,
    key: AtomicU64,
    value: AtomicU64,
}

impl Entry {
    /// Rewrite the entry for `key` (the writer is exclusive: the entry is not published, but
    /// readers from before its eviction may still be reading it).
    fn rewrite(&self, key: u64, value: u64) {
        // Relaxed: we are the only writer (the entry is unpublished and ours).
        let s = self.seq.load(Ordering::Relaxed);
        // Relaxed + Release fence: the odd count is visible before any of the new fields
        // (pairs with the Acquire fence in `read`).
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.key.store(key, Ordering::Relaxed);
        self.value.store(value, Ordering::Relaxed);
        // Release: the new fields are visible before the even count (pairs with the Acquire
        // load of `seq` in `read`).
        self.seq.store(s + 2, Ordering::Release);
    }

    /// The entry's value if it currently holds `key`, or `None` (also when it was being
    /// rewritten while we looked).
    fn read(&self, key: u64) -> Option<u64> {
        // Acquire: pairs with the Release store that ended the last rewrite.
        let s1 = self.seq.load(Ordering::Acquire);
        let k = self.key.load(Ordering::Relaxed);
        let v = self.value.load(Ordering::Relaxed);
        // Acquire fence: the field loads happen before the second count load (pairs with the
        // Release fence in `rewrite`).
        fence(Ordering::Acquire);
        let s2 = self.seq.load(Ordering::Relaxed);
        (s1 == s2 && s1 % 2 == 0 && k == key).then_some(v)
    }
}

struct Cache {
    /// Direct-mapped: key `k` lives in bucket `k % len`, or nowhere.
    buckets: Vec<AtomicPtr<Entry>>,
    /// Evicted entries, waiting for a grace period to be freed, or to be recycled.
    evicted: Pending<Entry>,
    allocated: AtomicUsize,
    recycled: AtomicUsize,
}

impl Cache {
    fn new(buckets: usize) -> Cache {
        Cache {
            buckets: (0..buckets)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            // Freed entries go back to the allocator, in bulk, after their grace period.
            evicted: Pending::new(grace::Rcu, Process::free()),
            allocated: AtomicUsize::new(0),
            recycled: AtomicUsize::new(0),
        }
    }

    fn bucket(&self, key: u64) -> &AtomicPtr<Entry> {
        &self.buckets[(key % self.buckets.len() as u64) as usize]
    }

    /// Look `key` up: lock-free, inside a read-side section.
    fn get(&self, key: u64) -> Option<u64> {
        let _guard = rcu::read_lock();
        // Acquire: pairs with the AcqRel swap in `insert`, so a fresh entry's fields are seen.
        let p = self.bucket(key).load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: entries are freed only by `evicted`, a grace period after they were
        // unpublished, so this one stays allocated while `_guard` lives. It may be recycled
        // meanwhile (all its fields are atomics), which `read` detects.
        let entry = unsafe { &*p };
        entry.read(key)
    }

    /// Insert (or replace) `key`, evicting whatever the bucket held.
    fn insert(&self, key: u64, value: u64) {
        // Recycle an evicted entry if one is waiting: readers may still be looking at it, so
        // the handle gives shared access only, and we rewrite it the seqlock way.
        let entry: NonNull<Entry> = match self.evicted.dequeue() {
            Some(reused) => {
                reused.rewrite(key, value);
                // Relaxed (both counters): statistics, read after the threads are joined.
                self.recycled.fetch_add(1, Ordering::Relaxed);
                // Published again below; when evicted again it goes back to `evicted`.
                reused.into_raw()
            }
            None => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                let fresh = Box::new(Entry {
                    seq: AtomicU64::new(0),
                    key: AtomicU64::new(key),
                    value: AtomicU64::new(value),
                });
                NonNull::new(Box::into_raw(fresh)).expect("Box pointers are non-null")
            }
        };
        // AcqRel: Release publishes the entry's fields (pairs with the Acquire in `get`);
        // Acquire takes over the old entry.
        let old = self.bucket(key).swap(entry.as_ptr(), Ordering::AcqRel);
        if let Some(old) = NonNull::new(old) {
            // SAFETY: `old` came from Box::into_raw or Reused::into_raw, was unpublished by the swap
            // just above, and is owned by us alone from here on.
            unsafe { self.evicted.enqueue_raw(old) };
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // `&mut self`: no reader can be inside `get`, so published entries can go to the
        // Pending too; dropping it (next) waits for their grace period and frees everything.
        for b in &self.buckets {
            if let Some(e) = NonNull::new(b.swap(ptr::null_mut(), Ordering::Relaxed)) {
                // SAFETY: as in `insert`; the entry is unpublished and ours.
                unsafe { self.evicted.enqueue_raw(e) };
            }
        }
    }
}

fn main() {
    let millis: u64 = std::env::args()
        .nth(1)
        .map_or(300, |a| a.parse().expect("MILLISECONDS"));
    let cache = Cache::new(64);
    let stop = AtomicBool::new(false);
    let (hits, misses) = (AtomicU64::new(0), AtomicU64::new(0));

    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (cache, stop, hits, misses) = (&cache, &stop, &hits, &misses);
            s.spawn(move || {
                let mut key = r;
                // Relaxed: a stop request; the scope's joins order everything else.
                while !stop.load(Ordering::Relaxed) {
                    key = key
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = key % 512;
                    match cache.get(k) {
                        Some(v) => {
                            assert_eq!(v, k * 7, "a reader saw a torn or foreign entry");
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let (cache, stop) = (&cache, &stop);
        s.spawn(move || {
            let end = Instant::now() + Duration::from_millis(millis);
            let mut key = 99u64;
            while Instant::now() < end {
                for _ in 0..64 {
                    key = key
                        .wrapping_mul(2862933555777941757)
                        .wrapping_add(3037000493);
                    let k = key % 512;
                    cache.insert(k, k * 7);
                }
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });

    let stats = cache.evicted.stats();
    let (allocated, recycled) = (
        cache.allocated.load(Ordering::Relaxed),
        cache.recycled.load(Ordering::Relaxed),
    );
    println!(
        "lookups: {} hits, {} misses; entries: {allocated} allocated, {recycled} recycled \
         from pending frees; pending: {} freed after a grace period, {} waiting",
        hits.load(Ordering::Relaxed),
        misses.load(Ordering::Relaxed),
        stats.processed,
        stats.pending,
    );
    assert!(
        recycled > 0,
        "inserts should find evicted entries to recycle"
    );
    drop(cache); // waits until every entry has been freed
}
