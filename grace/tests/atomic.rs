//! `grace::atomic` on real structures: the Harris–Michael list and Michael hash map of
//! `src/atomic/tests/list.rs`, under RCU, a dynamic SRCU domain and a static one, with real
//! threads. Each thread owns a residue class of keys, so the result of each of its operations
//! is checked against its own sequential model while every other thread mutates the same
//! list; shared keys are then fought over by every thread. Values count their drops: after
//! the structure is dropped and `retire_barrier` returns, every value made was dropped exactly
//! once. A value read under a guard must still be alive (no early free).

use grace::atomic::{Atomic, Owned, Retire, Shared};
use grace::srcu::Srcu;
use grace::Rcu;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[path = "../src/atomic/tests/list.rs"]
mod list;

use list::{List, Map};

/// A value that knows whether it has been dropped, and counts drops.
struct Tracked {
    key: u64,
    alive: AtomicBool,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
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
        assert!(self.alive.load(Ordering::Relaxed), "read a freed value");
        assert_eq!(self.key, key);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const THREADS: u64 = 4;
const OPS: usize = 3_000;
const KEYS: u64 = 64;

/// The operations both structures offer, for one driver.
trait Structure<R: Retire>: Send + Sync {
    fn flavor(&self) -> &R;
    fn insert(&self, k: u64, v: Tracked, g: &R::Guard<'_>) -> bool;
    fn remove(&self, k: u64, g: &R::Guard<'_>) -> bool;
    fn get_checked(&self, k: u64, g: &R::Guard<'_>) -> bool;
}

impl<R: Retire + Send + 'static> Structure<R> for List<u64, Tracked, R> {
    fn flavor(&self) -> &R {
        List::flavor(self)
    }
    fn insert(&self, k: u64, v: Tracked, g: &R::Guard<'_>) -> bool {
        List::insert(self, k, v, g)
    }
    fn remove(&self, k: u64, g: &R::Guard<'_>) -> bool {
        List::remove(self, &k, g)
    }
    fn get_checked(&self, k: u64, g: &R::Guard<'_>) -> bool {
        self.get(&k, g).inspect(|v| v.check(k)).is_some()
    }
}

impl<R: Retire + Send + 'static> Structure<R> for Map<u64, Tracked, R> {
    fn flavor(&self) -> &R {
        Map::flavor(self)
    }
    fn insert(&self, k: u64, v: Tracked, g: &R::Guard<'_>) -> bool {
        Map::insert(self, k, v, g)
    }
    fn remove(&self, k: u64, g: &R::Guard<'_>) -> bool {
        Map::remove(self, &k, g)
    }
    fn get_checked(&self, k: u64, g: &R::Guard<'_>) -> bool {
        self.get(&k, g).inspect(|v| v.check(k)).is_some()
    }
}

/// Every thread: insert/remove/get on its own keys (checked against its model), and on the
/// shared keys (results unchecked, values still counted).
fn drive<R: Retire + Send + 'static, S: Structure<R>>(s: &S, counts: &Arc<Counts>) {
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                let mut model = BTreeMap::new();
                for i in 0..OPS {
                    let g = s.flavor().read_lock();
                    let r = rng.next();
                    let shared = i % 4 == 3;
                    let k = if shared {
                        KEYS * THREADS + r % 8 // keys every thread fights over
                    } else {
                        (r >> 8) % KEYS * THREADS + t // this thread's residue class
                    };
                    match r % 3 {
                        0 => {
                            let ok = s.insert(k, Tracked::new(k, counts), &g);
                            if !shared {
                                assert_eq!(ok, model.insert(k, ()).is_none(), "insert {k}");
                            }
                        }
                        1 => {
                            let ok = s.remove(k, &g);
                            if !shared {
                                assert_eq!(ok, model.remove(&k).is_some(), "remove {k}");
                            }
                        }
                        _ => {
                            let ok = s.get_checked(k, &g);
                            if !shared {
                                assert_eq!(ok, model.contains_key(&k), "get {k}");
                            }
                        }
                    }
                }
                // The final contents of this thread's class match its model.
                let g = s.flavor().read_lock();
                for k in (0..KEYS).map(|k| k * THREADS + t) {
                    assert_eq!(s.get_checked(k, &g), model.contains_key(&k), "final {k}");
                }
            });
        }
    });
}

/// Drive, drop, wait for every retired node, and check exactly-once drops.
fn run<R: Retire + Send + 'static, S: Structure<R>>(s: S, flavor: R) {
    let counts = Arc::new(Counts::default());
    drive(&s, &counts);
    drop(s);
    flavor.retire_barrier();
    let made = counts.made.load(Ordering::Relaxed);
    assert!(made > 0);
    assert_eq!(
        counts.dropped.load(Ordering::Relaxed),
        made,
        "drops != values made"
    );
}

#[test]
fn rcu_list_against_models_and_exactly_once() {
    run(List::new(Rcu), Rcu);
}

#[test]
fn rcu_map_against_models_and_exactly_once() {
    run(Map::new(16, Rcu), Rcu);
}

#[test]
fn srcu_list_and_map_against_models_and_exactly_once() {
    let d = Arc::new(Srcu::new().unwrap());
    run(List::new(d.clone()), d.clone());
    run(Map::new(16, d.clone()), d);
}

#[test]
fn static_srcu_map_against_models_and_exactly_once() {
    static DOMAIN: Srcu = Srcu::new_static();
    run(Map::new(8, &DOMAIN), &DOMAIN);
}

#[test]
fn sequential_list_matches_a_btreemap() {
    let list = List::new(Rcu);
    let mut model = BTreeMap::new();
    let mut rng = Rng(7);
    let g = grace::rcu::read_lock();
    for _ in 0..2_000 {
        let r = rng.next();
        let k = (r >> 4) % 50;
        match r % 3 {
            0 => assert_eq!(
                list.insert(k, k * 10, &g),
                model.insert(k, k * 10).is_none()
            ),
            1 => assert_eq!(list.remove(&k, &g), model.remove(&k).is_some()),
            _ => assert_eq!(list.get(&k, &g), model.get(&k)),
        }
    }
    assert_eq!(list.keys(&g), model.keys().copied().collect::<Vec<_>>());
    drop(g);
    drop(list);
    Rcu.retire_barrier();
}

#[test]
#[should_panic(expected = "guard of one SRCU domain was used with a structure of another")]
fn a_guard_of_another_domain_panics() {
    let (a, b) = (Arc::new(Srcu::new().unwrap()), Srcu::new().unwrap());
    let list: List<u64, u64, _> = List::new(a);
    let g = b.read_lock();
    list.insert(1, 1, &g);
}

#[test]
fn owns_guard_tells_domains_apart_and_survives_cache_misses() {
    let domains: Vec<Srcu> = (0..12).map(|_| Srcu::new().unwrap()).collect();
    let guards: Vec<_> = domains.iter().map(|d| d.read_lock()).collect();
    // 12 domains evict each other from the 8-way shard cache; the registry walk answers.
    for (i, d) in domains.iter().enumerate() {
        for (j, g) in guards.iter().enumerate() {
            assert_eq!(d.owns_guard(g), i == j, "domain {i}, guard {j}");
        }
    }
    static S: Srcu = Srcu::new_static();
    assert!(
        !S.owns_guard(&guards[0]),
        "an uninstalled static domain owns nothing"
    );
    assert!(Rcu.owns_guard(&grace::rcu::read_lock()));
}

#[test]
fn tags_survive_exchanges_and_a_marked_pointer_is_not_its_unmarked_self() {
    let a: Atomic<u64> = Atomic::new(5);
    let g = grace::rcu::read_lock();
    let p = a.load(Ordering::Acquire, &g);
    assert_eq!(a.fetch_or(1, Ordering::AcqRel, &g), p);
    // The unmarked pointer no longer matches: a Harris list's insert after a marked node fails.
    let e = a
        .compare_exchange(p, Shared::null(), Ordering::AcqRel, Ordering::Acquire, &g)
        .unwrap_err();
    assert_eq!(e.current, p.with_tag(1));
    assert_eq!(a.fetch_and(0, Ordering::AcqRel, &g).tag(), 1);
    assert_eq!(a.fetch_xor(6, Ordering::AcqRel, &g).tag(), 0);
    assert_eq!(a.load(Ordering::Acquire, &g).tag(), 6);
    let old = a.swap(Owned::new(6).with_tag(2), Ordering::AcqRel, &g);
    assert_eq!((old.tag(), old.as_raw()), (6, p.as_raw()));
    // SAFETY: unlinked by the swap, retired once, read under RCU only.
    unsafe { old.retire(&Rcu) };
    let now = a.load(Ordering::Acquire, &g);
    // SAFETY: live while `g` lives.
    assert_eq!((now.tag(), unsafe { *now.deref() }), (2, 6));
    drop(g);
    // SAFETY: the last pointer to the value.
    drop(unsafe { a.into_owned() });
    Rcu.retire_barrier();
}
