//! `grace::collections::HashMap` with real threads, under RCU and SRCU domains:
//!
//! * a single-threaded comparison with std's `HashMap` over random operations;
//! * linearizability-style checks: each key goes through "inserted", "removing", "removed",
//!   published by its writer after each step; a reader that saw "inserted" before a lookup
//!   must find the key unless "removing" was published by the time the lookup returned, and a
//!   key seen "removed" is never found again (no resurrection); values encode their key;
//! * resizes both ways under concurrent readers and writers, with iterations that must yield
//!   every stable key exactly once and no key twice;
//! * drop counts: every value made is dropped exactly once (replace, remove, clear, map drop);
//! * allocation failure: `try_insert` leaves the map unchanged and leaks nothing; a failed
//!   table allocation skips the resize and the map stays correct.

use grace::alloc::{inject, FailurePlan};
use grace::atomic::Retire;
use grace::collections::HashMap;
use grace::srcu::Srcu;
use grace::Rcu;
use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// A tiny deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

/// A value that encodes its key, knows whether it was dropped, and counts drops.
struct Tracked {
    key: u64,
    alive: AtomicBool,
    counts: Arc<Counts>,
}

impl Tracked {
    fn new(key: u64, counts: &Arc<Counts>) -> Tracked {
        counts.made.fetch_add(1, Ordering::Relaxed);
        Tracked {
            key,
            alive: AtomicBool::new(true),
            counts: counts.clone(),
        }
    }
    fn check(&self, key: u64) {
        assert!(self.alive.load(Ordering::Relaxed), "read a dropped value");
        assert_eq!(self.key, key, "a value under the wrong key");
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn assert_all_dropped(counts: &Counts) {
    assert_eq!(
        counts.made.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        "every value made is dropped exactly once"
    );
}

#[test]
fn random_ops_match_std_hashmap() {
    let map: HashMap<u64, u64> = HashMap::new();
    let mut model = std::collections::HashMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let g = map.guard();
    for step in 0..20_000u64 {
        let r = rng.next();
        let k = r % 512;
        // Waves: mostly inserts, then mostly removes, so the table grows and shrinks.
        let grow = (step / 4000) % 2 == 0;
        match r >> 60 {
            0..=9 if grow => assert_eq!(map.insert(k, step, &g).copied(), model.insert(k, step)),
            0..=3 => assert_eq!(map.insert(k, step, &g).copied(), model.insert(k, step)),
            10 | 11 => {
                let want = model.get_mut(&k).map(|v| {
                    *v = v.wrapping_mul(3);
                    *v
                });
                assert_eq!(map.update(&k, |v| v.wrapping_mul(3), &g).copied(), want);
            }
            12 => {
                let want = *model.entry(k).or_insert(step);
                assert_eq!(*map.get_or_insert_with(k, || step, &g), want);
            }
            _ => assert_eq!(map.remove(&k, &g).copied(), model.remove(&k)),
        }
        assert_eq!(map.get(&k, &g).copied(), model.get(&k).copied());
        assert_eq!(map.contains_key(&(k ^ 1), &g), model.contains_key(&(k ^ 1)));
        assert_eq!(map.len(), model.len());
    }
    let mut got: Vec<_> = map.iter(&g).map(|(k, v)| (*k, *v)).collect();
    got.sort_unstable();
    let mut want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(format!("{:?}", HashMap::<u8, u8>::new()), "{}");
}

const INSERTED: u8 = 1;
const REMOVING: u8 = 2;
const REMOVED: u8 = 3;

/// The linearizability-style check of the module docs, on any flavor.
fn writers_and_readers<F: Retire + Send + Sync + 'static>(
    map: Arc<HashMap<u64, Tracked, RandomState, F>>,
    counts: Arc<Counts>,
) {
    const WRITERS: u64 = 3;
    const KEYS: u64 = 1500; // per writer
    let state: Arc<Vec<AtomicU8>> =
        Arc::new((0..WRITERS * KEYS).map(|_| AtomicU8::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (map, state, counts) = (map.clone(), state.clone(), counts.clone());
            std::thread::spawn(move || {
                let keys: Vec<u64> = (0..KEYS).map(|i| i * WRITERS + w).collect();
                for chunk in keys.chunks(100) {
                    for &k in chunk {
                        let g = map.flavor().read_lock();
                        assert!(map.insert(k, Tracked::new(k, &counts), &g).is_none());
                        // Release: the insert completed before a reader sees INSERTED.
                        state[k as usize].store(INSERTED, Ordering::Release);
                    }
                    // Remove the first half of the chunk again: the map grows and shrinks.
                    for &k in &chunk[..50] {
                        state[k as usize].store(REMOVING, Ordering::Release);
                        let g = map.flavor().read_lock();
                        map.remove(&k, &g).expect("our own key").check(k);
                        drop(g);
                        state[k as usize].store(REMOVED, Ordering::Release);
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (map, state, stop) = (map.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + r);
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) || checked < 1000 {
                    let k = rng.next() % (WRITERS * KEYS);
                    let g = map.flavor().read_lock();
                    // Acquire: pairs with the writers' Release stores.
                    let before = state[k as usize].load(Ordering::Acquire);
                    let found = map.get(&k, &g);
                    if let Some(v) = found {
                        v.check(k);
                    }
                    let after = state[k as usize].load(Ordering::Acquire);
                    match (before, found) {
                        (REMOVED, Some(_)) => panic!("key {k} resurrected"),
                        (INSERTED, None) => assert!(after >= REMOVING, "key {k} lost"),
                        _ => {}
                    }
                    checked += 1;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let g = map.flavor().read_lock();
    for (k, s) in state.iter().enumerate() {
        let k = k as u64;
        let present = map.get(&k, &g);
        assert_eq!(present.is_some(), s.load(Ordering::Relaxed) == INSERTED);
    }
    assert_eq!(map.len(), (WRITERS * KEYS / 2) as usize);
}

#[test]
fn completed_inserts_are_visible_and_removals_never_resurrect_rcu() {
    let counts = Arc::new(Counts::default());
    let map = Arc::new(HashMap::new());
    writers_and_readers(map.clone(), counts.clone());
    drop(map);
    Rcu.retire_barrier();
    assert_all_dropped(&counts);
}

#[test]
fn completed_inserts_are_visible_and_removals_never_resurrect_srcu() {
    let counts = Arc::new(Counts::default());
    let domain = Arc::new(Srcu::new().unwrap());
    let map = Arc::new(HashMap::with_flavor(domain.clone()));
    writers_and_readers(map.clone(), counts.clone());
    drop(map);
    domain.retire_barrier();
    assert_all_dropped(&counts);
}

#[test]
#[should_panic(expected = "another")]
fn a_guard_of_another_domain_panics() {
    let (a, b) = (Srcu::new().unwrap(), Srcu::new().unwrap());
    let map: HashMap<u8, u8, _, &Srcu> = HashMap::with_flavor(&a);
    let g = b.read_lock();
    map.get(&1, &g);
}

#[test]
fn resize_both_ways_under_readers_and_iterations() {
    const STABLE: u64 = 200;
    const CHURN: u64 = 4000;
    let map: Arc<HashMap<u64, u64>> = Arc::new(HashMap::new());
    {
        let g = map.guard();
        for k in 0..STABLE {
            map.insert(k, k, &g);
        }
    }
    let min = map.buckets(&map.guard());
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (map, stop, max_seen) = (map.clone(), stop.clone(), max_seen.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(77 + r);
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds < 3 {
                    let g = map.guard();
                    max_seen.fetch_max(map.buckets(&g), Ordering::Relaxed);
                    for _ in 0..200 {
                        let k = rng.next() % STABLE;
                        assert_eq!(map.get(&k, &g), Some(&k), "stable key {k} missing");
                    }
                    // Iteration: every stable key exactly once, no key twice, values intact.
                    let mut seen = std::collections::HashSet::new();
                    for (k, v) in map.iter(&g) {
                        assert_eq!(k, v);
                        assert!(seen.insert(*k), "key {k} yielded twice");
                    }
                    assert!(
                        (0..STABLE).all(|k| seen.contains(&k)),
                        "a stable key was skipped"
                    );
                    rounds += 1;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (map, max_seen) = (map.clone(), max_seen.clone());
            std::thread::spawn(move || {
                for wave in 0..2 {
                    let keys = (0..CHURN).map(|i| STABLE + i * 2 + w);
                    for k in keys.clone() {
                        map.insert(k, k, &map.guard());
                    }
                    max_seen.fetch_max(map.buckets(&map.guard()), Ordering::Relaxed);
                    if wave == 0 {
                        map.rehash(8, &map.guard()).unwrap(); // a forced shrink, mid-load
                    }
                    for k in keys {
                        assert_eq!(map.remove(&k, &map.guard()), Some(&k));
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    // A resize moves on with writes (a few buckets each): drive the last one to its end.
    for _ in 0..4096 {
        map.insert(u64::MAX, 0, &map.guard());
        map.remove(&u64::MAX, &map.guard());
    }
    let g = map.guard();
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max >= 8 * min, "the table grew: {max} buckets at most");
    assert_eq!(map.len(), STABLE as usize);
    assert!(
        map.buckets(&g) <= 512,
        "the table shrank back: {} of {max}",
        map.buckets(&g)
    );
    assert_eq!(map.iter(&g).count(), STABLE as usize);
}

#[test]
fn every_value_is_dropped_exactly_once() {
    let counts = Arc::new(Counts::default());
    let map = HashMap::new();
    {
        let g = map.guard();
        for k in 0..2000 {
            map.insert(k, Tracked::new(k, &counts), &g);
        }
        for k in 0..1000 {
            map.insert(k, Tracked::new(k, &counts), &g)
                .unwrap()
                .check(k);
        }
        for k in 0..500 {
            map.remove(&k, &g).unwrap().check(k);
        }
        map.clear(&g);
        assert!(map.is_empty());
        for k in 0..300 {
            map.get_or_insert_with(k, || Tracked::new(k, &counts), &g);
            map.get_or_insert_with(k, || Tracked::new(k, &counts), &g); // made, then dropped
        }
    }
    drop(map);
    Rcu.retire_barrier();
    assert_all_dropped(&counts);
}

#[test]
fn srcu_map_with_static_domain() {
    static DOMAIN: Srcu = Srcu::new_static();
    let counts = Arc::new(Counts::default());
    let map: HashMap<u64, Tracked, _, &'static Srcu> = HashMap::with_flavor(&DOMAIN);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (map, counts) = (&map, &counts);
            s.spawn(move || {
                for i in 0..500 {
                    let k = i * 2 + t;
                    let m = map.pin();
                    m.insert(k, Tracked::new(k, counts));
                    m.get(&k).unwrap().check(k);
                    if i % 2 == 0 {
                        m.remove(&k).unwrap().check(k);
                    }
                }
            });
        }
    });
    assert_eq!(map.len(), 500);
    drop(map);
    DOMAIN.retire_barrier();
    assert_all_dropped(&counts);
}

#[test]
fn try_insert_failure_leaves_the_map_unchanged() {
    let counts = Arc::new(Counts::default());
    let map = HashMap::new();
    let g = map.guard();
    for k in 0..100 {
        map.insert(k, Tracked::new(k, &counts), &g);
    }
    for n in 1..=3 {
        let _fail = inject(FailurePlan::Nth(n));
        let mut failed = 0;
        for k in 0..6 {
            match map.try_insert(k, Tracked::new(k, &counts), &g) {
                Ok(old) => old.unwrap().check(k),
                Err(e) => {
                    failed += 1;
                    assert!(e.to_string().contains("hash map entry"), "{e}");
                }
            }
        }
        assert_eq!(failed, 1);
    }
    {
        let _fail = inject(FailurePlan::AllAfter(0));
        assert!(map
            .try_insert(1000, Tracked::new(1000, &counts), &g)
            .is_err());
    }
    assert_eq!(map.len(), 100);
    assert!(map.get(&1000, &g).is_none());
    for k in 0..100 {
        map.get(&k, &g).unwrap().check(k);
    }
    drop(g);
    drop(map);
    Rcu.retire_barrier();
    assert_all_dropped(&counts);
}

#[test]
fn failed_table_allocation_skips_the_resize() {
    let map: HashMap<u64, u64> = HashMap::new();
    let g = map.guard();
    let before = map.buckets(&g);
    {
        let _fail = inject(FailurePlan::AllAfter(0)); // every fallible allocation of this thread
        for k in 0..1000 {
            map.insert(k, k, &g);
        }
        assert_eq!(map.buckets(&g), before, "every resize was skipped");
        assert!(map.rehash(4096, &g).is_err());
        for k in 0..1000 {
            assert_eq!(map.get(&k, &g), Some(&k));
        }
    }
    // The next write starts the resize; each write migrates a few buckets.
    for k in 1000..1010 {
        map.insert(k, k, &g);
    }
    assert!(
        map.buckets(&g) >= 1024,
        "a resize to the size for the count"
    );
    for k in 0..1010 {
        assert_eq!(map.get(&k, &g), Some(&k));
    }
    assert_eq!(map.iter(&g).count(), 1010);
}

#[test]
fn std_like_traits() {
    let mut map: HashMap<String, usize> = ["a", "b"].iter().map(|s| (s.to_string(), 1)).collect();
    map.extend([("c".to_string(), 2)]);
    assert_eq!(map.len(), 3);
    assert_eq!(
        format!("{:?}", {
            let m: HashMap<u8, u8> = [(1, 2)].into_iter().collect();
            m
        }),
        "{1: 2}"
    );
    let d: HashMap<u8, u8> = Default::default();
    assert!(d.is_empty());
    let m = map.pin();
    assert_eq!(m.get("c"), Some(&2));
    assert_eq!(m.update("c", |v| v + 1), Some(&3));
    assert_eq!(*m.get_or_insert_with("d".to_string(), || 9), 9);
    assert_eq!(m.iter().count(), 4);
    m.clear();
    assert!(m.is_empty());
    fn send_sync<T: Send + Sync>() {}
    send_sync::<HashMap<String, Vec<u8>>>();
}
