//! `grace::collections::List` under RCU and SRCU with real threads: every operation against
//! a `VecDeque` model; readers walking while writers add, remove and replace (no torn or freed
//! entry, no entry seen twice in one walk, every entry that stays in the list for a whole walk
//! seen by it); drop counts exact once the list is dropped and `retire_barrier` returns.

use grace::atomic::Retire;
use grace::collections::List;
use grace::srcu::Srcu;
use grace::Rcu;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

/// A value that knows whether it has been dropped, carries a check word derived from its id
/// (a torn value fails it), and counts drops.
struct Tracked {
    id: u64,
    check: u64,
    alive: AtomicBool,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

fn check_word(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5_a5a5_a5a5_a5a5
}

impl Tracked {
    fn new(id: u64, counts: &Arc<Counts>) -> Tracked {
        counts.made.fetch_add(1, Ordering::Relaxed);
        Tracked {
            id,
            check: check_word(id),
            alive: AtomicBool::new(true),
            counts: counts.clone(),
        }
    }

    /// The id, after checking the value is alive and whole.
    fn read(&self) -> u64 {
        assert!(self.alive.load(Ordering::Relaxed), "read a freed value");
        assert_eq!(self.check, check_word(self.id), "read a torn value");
        self.id
    }
}

impl PartialEq for Tracked {
    fn eq(&self, other: &Tracked) -> bool {
        self.read() == other.read()
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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ids<F: Retire>(list: &List<Tracked, F>, guard: &F::Guard<'_>) -> Vec<u64> {
    list.iter(guard).map(Tracked::read).collect()
}

/// Random operations on `list` and on a `VecDeque`, compared after each one.
fn against_a_vecdeque<F: Retire>(list: &List<Tracked, F>, counts: &Arc<Counts>, seed: u64) {
    let mut model: VecDeque<u64> = VecDeque::new();
    let mut rng = Rng(seed);
    let mut next_id = 0;
    for step in 0..2_000 {
        let v = rng.below(16); // values repeat, so "first match" matters
        match rng.below(7) {
            0 => {
                list.push_front(Tracked::new(v, counts));
                model.push_front(v);
            }
            1 | 2 => {
                list.push_back(Tracked::new(v, counts));
                model.push_back(v);
            }
            3 => {
                let removed = list.remove_first(|t| t.id == v);
                let pos = model.iter().position(|&x| x == v);
                assert_eq!(removed, pos.is_some(), "step {step}");
                if let Some(p) = pos {
                    model.remove(p);
                }
            }
            4 => {
                let w = 100 + next_id % 16;
                next_id += 1;
                let r = list.replace_first(|t| t.id == v, Tracked::new(w, counts));
                match model.iter().position(|&x| x == v) {
                    Some(p) => {
                        assert!(r.is_ok(), "step {step}");
                        model[p] = w;
                    }
                    None => assert_eq!(r.map_err(|t| t.id), Err(w), "step {step}"),
                }
            }
            5 => {
                list.retain(|t| t.id % 3 != v % 3);
                model.retain(|x| x % 3 != v % 3);
            }
            _ => {
                if rng.below(20) == 0 {
                    list.clear();
                    model.clear();
                }
            }
        }
        let g = list.pin();
        assert_eq!(ids(list, &g), Vec::from(model.clone()), "step {step}");
        assert_eq!(list.front(&g).map(Tracked::read), model.front().copied());
        assert_eq!(
            list.contains(&Tracked::new(v, counts), &g),
            model.contains(&v)
        );
        drop(g);
        assert_eq!(list.len(), model.len());
        assert_eq!(list.is_empty(), model.is_empty());
    }
}

/// After the list is gone and the flavor's barrier returned, every value made was dropped once.
fn assert_all_dropped<F: Retire>(flavor: &F, counts: &Counts) {
    flavor.retire_barrier();
    let made = counts.made.load(Ordering::Relaxed);
    assert!(made > 0);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), made);
}

#[test]
fn rcu_list_matches_a_vecdeque() {
    let counts = Arc::new(Counts::default());
    let list = List::new();
    against_a_vecdeque(&list, &counts, 0x1234_5678);
    drop(list);
    assert_all_dropped(&Rcu, &counts);
}

#[test]
fn srcu_list_matches_a_vecdeque() {
    let counts = Arc::new(Counts::default());
    let domain = Arc::new(Srcu::new().unwrap());
    let list = List::with_flavor(domain.clone());
    against_a_vecdeque(&list, &counts, 0x9abc_def1);
    drop(list);
    assert_all_dropped(&domain, &counts);
}

/// Ids below this stay in the list for the whole test; writers churn ids above it.
const STABLE: u64 = 8;

/// Readers walk while writers push, remove, replace and retain. Every walk must see every
/// stable id once, in order, and no id twice; every value it reads must be alive and whole.
fn readers_during_writers<F: Retire + Clone + Send + Sync + 'static>(flavor: F) {
    let counts = Arc::new(Counts::default());
    let list = Arc::new(List::with_flavor(flavor.clone()));
    for id in 0..STABLE {
        list.push_back(Tracked::new(id, &counts));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (list, stop, start) = (list.clone(), stop.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut walks = 0u64;
                while !stop.load(Ordering::Relaxed) || walks < 100 {
                    let g = list.pin();
                    let mut seen = HashSet::new();
                    let mut stable = Vec::new();
                    for t in list.iter(&g) {
                        let id = t.read();
                        assert!(
                            seen.insert(id),
                            "reader {r}: id {id} seen twice in one walk"
                        );
                        if id < STABLE {
                            stable.push(id);
                        }
                    }
                    assert_eq!(stable, (0..STABLE).collect::<Vec<_>>(), "reader {r}");
                    walks += 1;
                }
                walks
            })
        })
        .collect();
    // Two writers (the lock serializes them), each with its own ids above STABLE.
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (list, counts, start) = (list.clone(), counts.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut rng = Rng(0x5eed + w);
                let mut next = STABLE + w;
                let churn = |t: &Tracked| t.id >= STABLE;
                for _ in 0..3_000 {
                    next += 2;
                    match rng.below(5) {
                        0 => list.push_front(Tracked::new(next, &counts)),
                        1 => list.push_back(Tracked::new(next, &counts)),
                        2 => {
                            list.remove_first(churn);
                        }
                        3 => {
                            let _ = list.replace_first(churn, Tracked::new(next, &counts));
                        }
                        _ => {
                            if rng.below(50) == 0 {
                                list.retain(|t| !churn(t));
                            }
                        }
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
        assert!(r.join().unwrap() >= 100);
    }
    {
        let g = list.pin();
        let stable: Vec<u64> = list
            .iter(&g)
            .map(Tracked::read)
            .filter(|&id| id < STABLE)
            .collect();
        assert_eq!(stable, (0..STABLE).collect::<Vec<_>>());
    }
    // Dropping frees the linked entries at once; removed ones are freed by the barrier.
    drop(list);
    assert_all_dropped(&flavor, &counts);
}

#[test]
fn rcu_readers_during_writers() {
    readers_during_writers(Rcu);
}

#[test]
fn srcu_readers_during_writers() {
    readers_during_writers(Arc::new(Srcu::new().unwrap()));
}

#[test]
fn removed_entries_wait_for_readers() {
    // A reader holding an entry across a removal: the entry stays alive until the reader's
    // section ends, and is freed by the barrier after it.
    let counts = Arc::new(Counts::default());
    let list = Arc::new(List::new());
    list.push_back(Tracked::new(1, &counts));
    let g = list.pin();
    let held = list.front(&g).unwrap();
    let remover = {
        let list = list.clone();
        std::thread::spawn(move || assert!(list.remove_first(|t| t.id == 1)))
    };
    remover.join().unwrap();
    assert!(list.is_empty());
    assert_eq!(held.read(), 1); // still alive: our section began before the removal
    drop(g);
    drop(list);
    assert_all_dropped(&Rcu, &counts);
}

#[test]
#[should_panic(expected = "another domain")]
fn a_guard_of_another_domain_panics() {
    let list: List<u8, Srcu> = List::with_flavor(Srcu::new().unwrap());
    let other = Srcu::new().unwrap();
    let g = other.read_lock();
    let _ = list.iter(&g).count();
}

#[test]
fn a_panicking_predicate_leaves_the_list_whole_and_frees_what_it_removed() {
    let counts = Arc::new(Counts::default());
    let list = List::new();
    for id in 0..6 {
        list.push_back(Tracked::new(id, &counts));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        list.retain(|t| {
            assert!(t.id < 4, "predicate panics at 4");
            t.id % 2 == 0
        })
    }));
    assert!(r.is_err());
    // 1 and 3 were removed before the panic; the lock is usable again.
    let g = list.pin();
    assert_eq!(ids(&list, &g), [0, 2, 4, 5]);
    drop(g);
    assert_eq!(list.len(), 4);
    list.push_back(Tracked::new(6, &counts));
    assert_eq!(list.len(), 5);
    drop(list);
    assert_all_dropped(&Rcu, &counts);
}

#[test]
fn debug_default_and_extend() {
    let mut list: List<u32> = List::default();
    list.extend([1, 2]);
    list.push_front(0);
    assert_eq!(format!("{list:?}"), "[0, 1, 2]");
    let g = list.pin();
    assert_eq!(format!("{:?}", list.iter(&g)), "[0, 1, 2]");
}
