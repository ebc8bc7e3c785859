//! `RcuCell` on every flavor: the update loop under contention (no lost update, every value
//! dropped exactly once, losers dropped at once), compare-and-swap, and every way of
//! reclaiming a `Retired` (kvfree, the flavor's `call`, a `Pending`).

use grace::pending::{Pending, Process};
use grace::srcu::Srcu;
use grace::{kvfree_barrier, rcu, Flavor, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Counts its creations and drops; a drop of a dropped value, or a read of one, is caught.
struct Tracked {
    value: u64,
    alive: AtomicBool,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

impl Tracked {
    fn new(value: u64, counts: &Arc<Counts>) -> Tracked {
        counts.made.fetch_add(1, Ordering::Relaxed);
        Tracked {
            value,
            alive: AtomicBool::new(true),
            counts: counts.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Four updaters add 1 each 300 times while two readers check that every value they see is
/// alive; the old values are reclaimed every way a `Retired` allows, `wait` waits for the
/// deferred ones, then the counts are checked.
fn contended_updates<F>(cell: Arc<RcuCell<Tracked, F>>, counts: &Arc<Counts>, wait: impl Fn())
where
    F: Flavor + Clone + Send + Sync + 'static,
{
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cell, stop) = (cell.clone(), stop.clone());
            thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v = cell.read();
                    assert!(
                        v.alive.load(Ordering::Relaxed),
                        "a reader saw a freed value"
                    );
                    assert!(v.value >= last, "values go backwards");
                    last = v.value;
                }
            })
        })
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let updaters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cell, counts, calls) = (cell.clone(), counts.clone(), calls.clone());
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let old = cell.update(|cur| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        Tracked::new(cur.value + 1, &counts)
                    });
                    match (t + i) % 3 {
                        0 => old.defer_drop(),
                        1 => drop(old),
                        _ => drop(old.synchronize()),
                    }
                }
            })
        })
        .collect();
    for u in updaters {
        u.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(
        cell.read().value,
        THREADS * PER_THREAD,
        "an update was lost"
    );
    wait();
    let made = counts.made.load(Ordering::Relaxed);
    // One value per call of the update function (the losers included), plus the initial one.
    assert_eq!(made, calls.load(Ordering::Relaxed) + 1);
    // Every value but the current one was dropped, once (Tracked's Drop checks "once").
    assert_eq!(counts.dropped.load(Ordering::Relaxed), made - 1);
    drop(cell);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), made);
}

#[test]
fn rcu_update_loop_loses_nothing_under_contention() {
    let counts = Arc::new(Counts::default());
    let cell = Arc::new(RcuCell::new(Tracked::new(0, &counts)));
    contended_updates(cell, &counts, || {
        rcu::barrier();
        kvfree_barrier();
    });
}

#[test]
fn srcu_update_loop_loses_nothing_under_contention() {
    let counts = Arc::new(Counts::default());
    let domain = Arc::new(Srcu::new().unwrap());
    let cell = Arc::new(RcuCell::with_flavor(
        domain.clone(),
        Tracked::new(0, &counts),
    ));
    contended_updates(cell, &counts, || domain.barrier());
}

#[test]
fn static_srcu_cells_update_and_reclaim() {
    static DOMAIN: Srcu = Srcu::new_static();
    let counts = Arc::new(Counts::default());
    let cell = Arc::new(RcuCell::with_flavor(&DOMAIN, Tracked::new(0, &counts)));
    contended_updates(cell, &counts, || DOMAIN.barrier());
}

#[test]
fn compare_and_swap_publishes_only_over_the_value_it_saw() {
    let cell = RcuCell::new(String::from("a"));
    let seen = cell.read();
    let old = cell
        .compare_and_swap(&seen, String::from("b"))
        .expect("nothing changed in between");
    drop(seen); // end the section before waiting for a grace period
    assert_eq!(*old.synchronize(), "a");
    let seen = cell.read();
    cell.replace(String::from("c")).defer_drop();
    let refused = cell.compare_and_swap(&seen, String::from("d"));
    assert_eq!(
        refused.err().as_deref(),
        Some("d"),
        "the new value comes back"
    );
    drop(seen);
    assert_eq!(*cell.read(), "c");
}

#[test]
fn retired_values_go_to_kvfree_and_to_pending() {
    let counts = Arc::new(Counts::default());
    let cell = RcuCell::new(Tracked::new(0, &counts));
    cell.replace(Tracked::new(1, &counts)).kvfree();
    cell.replace(Tracked::new(2, &counts)).defer_drop();
    kvfree_barrier();
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 2);

    let processed = Arc::new(AtomicU64::new(0));
    let p = processed.clone();
    let pending = Pending::new(
        grace::Rcu,
        Process::with(move |t: Box<Tracked>| {
            p.fetch_add(t.value, Ordering::Relaxed);
        }),
    );
    cell.replace(Tracked::new(3, &counts))
        .into_pending(&pending);
    cell.replace(Tracked::new(4, &counts))
        .into_pending(&pending);
    drop(pending); // waits for everything it holds
    assert_eq!(processed.load(Ordering::Relaxed), 2 + 3);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 4);

    // SRCU: the Pending of the cell's own domain.
    let domain = Arc::new(Srcu::new().unwrap());
    let cell = RcuCell::with_flavor(domain.clone(), Tracked::new(10, &counts));
    let pending = Pending::new(domain.clone(), Process::free());
    cell.replace(Tracked::new(11, &counts))
        .into_pending(&pending);
    drop(pending);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 5);
}

#[test]
#[should_panic(expected = "handed to the Pending of another")]
fn a_retired_value_of_one_domain_is_refused_by_another_domains_pending() {
    let a = Arc::new(Srcu::new().unwrap());
    let b = Arc::new(Srcu::new().unwrap());
    let cell = RcuCell::with_flavor(a, 1u32);
    let pending = Pending::new(b, Process::free());
    cell.replace(2).into_pending(&pending);
}

#[test]
fn cells_hand_out_values_and_flavors() {
    let mut cell = RcuCell::new(vec![1]);
    cell.get_mut().push(2);
    assert_eq!(format!("{cell:?}"), "RcuCell([1, 2])");
    cell.flavor().synchronize();
    let r = cell.replace(vec![]);
    assert!(!r.cookie().same_state(rcu::get_completed_state()));
    drop(r);
    assert_eq!(cell.into_inner(), Vec::<i32>::new());
    let domain = Arc::new(Srcu::new().unwrap());
    let cell = RcuCell::with_flavor(domain.clone(), 5u8);
    let r = cell.replace(6);
    domain.cond_synchronize(r.cookie());
    assert_eq!(*r.try_reclaim().ok().unwrap(), 5);
    assert_eq!(cell.into_inner(), 6);
}
