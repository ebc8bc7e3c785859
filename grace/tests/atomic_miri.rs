//! The Harris–Michael list and Michael map of `src/atomic/tests/list.rs`, sized for Miri
//! (`cargo +nightly miri test -p grace --test atomic_miri`, see `.ci/miri.sh`): one thread,
//! then two threads racing inserts, removes (with helping unlinks) and searches, under RCU
//! (nodes retired through `kvfree_raw`) and an SRCU domain (through `call`). Under Miri a node
//! freed while a reader can still reach it is a use-after-free, a missing ordering on a link
//! a data race, a node freed twice a double free, and a node never freed a leak of its
//! counted value; natively the drop counts and `alive` flags catch the same bugs.

use grace::atomic::{Atomic, Owned, Retire, Shared};
use grace::srcu::Srcu;
use grace::Rcu;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[path = "../src/atomic/tests/list.rs"]
mod list;

use list::{List, Map};

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

/// A value that knows whether it has been dropped.
struct Tracked {
    alive: AtomicBool,
    counts: Arc<Counts>,
}

impl Tracked {
    fn new(counts: &Arc<Counts>) -> Tracked {
        counts.made.fetch_add(1, Ordering::Relaxed);
        Tracked {
            alive: AtomicBool::new(true),
            counts: counts.clone(),
        }
    }
    fn check(&self) {
        assert!(self.alive.load(Ordering::Relaxed), "read a freed value");
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn exactly_once(counts: &Counts) {
    let made = counts.made.load(Ordering::Relaxed);
    assert!(made > 0);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), made);
}

#[test]
fn one_thread_list_and_map_under_rcu() {
    let counts = Arc::new(Counts::default());
    let list = List::new(Rcu);
    let map = Map::new(2, Rcu);
    {
        let g = grace::rcu::read_lock();
        for k in [3u64, 1, 2, 1] {
            list.insert(k, Tracked::new(&counts), &g);
            map.insert(k, Tracked::new(&counts), &g);
        }
        assert_eq!(list.keys(&g), [1, 2, 3]);
        assert!(list.remove(&2, &g) && map.remove(&2, &g));
        assert!(!list.remove(&2, &g) && !map.remove(&2, &g));
        list.get(&1, &g).expect("present").check();
        map.get(&3, &g).expect("present").check();
        assert_eq!(map.len(&g), 2);
    }
    drop((list, map));
    Rcu.retire_barrier();
    exactly_once(&counts);
}

/// Two threads: each inserts and removes its own key and a shared one, and searches the
/// other's, so removes race with searches walking the same nodes, and a remover's unlink can
/// race a helper's.
fn two_threads<R: Retire + Clone + Send + 'static>(flavor: R) {
    let counts = Arc::new(Counts::default());
    let list = List::new(flavor.clone());
    {
        let g = flavor.read_lock();
        for k in [10u64, 20, 30] {
            list.insert(k, Tracked::new(&counts), &g);
        }
    }
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (list, counts) = (&list, &counts);
            s.spawn(move || {
                let mine = 10 + 10 * t; // 10 or 20
                let other = 20 - 10 * t;
                let g = list.flavor().read_lock();
                assert!(list.remove(&mine, &g));
                if let Some(v) = list.get(&other, &g) {
                    v.check();
                }
                list.insert(15, Tracked::new(counts), &g); // one of the two wins
                list.remove(&30, &g); // one of the two wins
                drop(g);
                let g = list.flavor().read_lock();
                assert!(list.insert(mine, Tracked::new(counts), &g));
            });
        }
    });
    let g = flavor.read_lock();
    assert_eq!(list.keys(&g), [10, 15, 20]);
    drop(g);
    drop(list);
    flavor.retire_barrier();
    exactly_once(&counts);
}

#[test]
fn two_threads_under_rcu() {
    two_threads(Rcu);
}

#[test]
fn two_threads_under_srcu() {
    two_threads(Arc::new(Srcu::new().unwrap()));
}

#[test]
fn swap_retire_and_tags_under_srcu() {
    let d = Srcu::new().unwrap();
    let a: Atomic<String, Srcu> = Atomic::new(String::from("a"));
    let g = d.read_lock();
    let old = a.swap(
        Owned::new(String::from("b")).with_tag(1),
        Ordering::AcqRel,
        &g,
    );
    // SAFETY: unlinked by the swap, retired once, read under `d` only.
    unsafe { old.retire(&d) };
    let now = a.load(Ordering::Acquire, &g);
    // SAFETY: live while `g` lives.
    assert_eq!((now.tag(), unsafe { now.deref() }.as_str()), (1, "b"));
    let e = a
        .compare_exchange(
            Shared::null(),
            Shared::null(),
            Ordering::AcqRel,
            Ordering::Acquire,
            &g,
        )
        .unwrap_err();
    assert_eq!(e.current, now);
    drop(g);
    // SAFETY: the last pointer to "b".
    drop(unsafe { a.into_owned() });
    d.retire_barrier();
}
