//! The chicken switch (`GRACE_PENDING=off`, [`grace::pending::set_batching`]): with batching
//! off, `Pending` and `kvfree` send every object through a callback of its own, and keep
//! their guarantees: every process mode, exactly-once processing, no processing while a reader
//! from before is inside, `barrier` and drop waiting, `dequeue` finding nothing, kvfree's
//! destructors run exactly once, its statistics and `kvfree_barrier`.
//!
//! The switch is process-wide and decided at first use, so this binary has it off for all of
//! its tests: each one turns it off first (idempotent), before anything else uses grace.

mod common;

use common::HeldReader;
use grace::pending::{self, Pending, Process};
use grace::{rcu, Rcu};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Turn batching off for this process (the first test to run decides it; the others confirm).
fn off() {
    pending::set_batching(false).expect("nothing used grace before the switch was set");
    assert!(!pending::batching());
}

#[test]
fn the_switch_cannot_be_turned_back_on_after_first_use() {
    off();
    let _p: Pending<u8> = Pending::new(Rcu, Process::free());
    let e = pending::set_batching(true).unwrap_err();
    assert!(!e.batching);
    assert!(e.to_string().contains("first use"), "{e}");
    assert!(pending::set_batching(false).is_ok());
}

#[test]
fn every_process_mode_processes_each_object_exactly_once() {
    off();
    // Free: each Box dropped once.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let free = Pending::new(Rcu, Process::free());
    for _ in 0..500 {
        free.enqueue(Box::new(Tracked(drops.clone())));
    }
    drop(free);
    assert_eq!(drops.load(Ordering::SeqCst), 500);

    // With: the closure owns each object; each id is seen once.
    let times: Arc<Vec<AtomicU8>> = Arc::new((0..4000).map(|_| AtomicU8::new(0)).collect());
    let t = times.clone();
    let with = Pending::new(
        Rcu,
        Process::with(move |id: Box<usize>| {
            t[*id].fetch_add(1, Ordering::SeqCst);
        }),
    );
    std::thread::scope(|s| {
        for k in 0..4 {
            let with = &with;
            s.spawn(move || {
                for i in 0..1000 {
                    with.enqueue(Box::new(k * 1000 + i));
                }
            });
        }
    });
    with.barrier();
    let st = with.stats();
    assert_eq!((st.enqueued, st.processed, st.pending), (4000, 4000, 0));
    assert!(st.peak_pending >= 1);
    assert_eq!(st.armed_shards, 0, "nothing is stored in the shards");
    drop(with);
    assert!(times.iter().all(|n| n.load(Ordering::SeqCst) == 1));

    // Run: each object is a callback; a panic is caught and the rest still run.
    let ran = Arc::new(AtomicUsize::new(0));
    let run: Pending<Box<dyn FnOnce() + Send>> = Pending::new(Rcu, Process::run());
    for i in 0..200 {
        let r = ran.clone();
        run.enqueue(Box::new(Box::new(move || {
            if i == 50 {
                panic!("callback {i}");
            }
            r.fetch_add(1, Ordering::SeqCst);
        })));
    }
    run.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 199);
    let st = run.stats();
    assert_eq!((st.process_panics, st.processed), (1, 200));
}

#[test]
fn every_object_is_processed_exactly_once_on_an_srcu_domain() {
    off();
    let domain = Arc::new(grace::srcu::Srcu::new().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let p = Pending::new(
        domain,
        Process::with(move |_: Box<u64>| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    );
    for i in 0..2000 {
        p.enqueue(Box::new(i));
    }
    p.barrier();
    assert_eq!(n.load(Ordering::SeqCst), 2000);
    assert_eq!(p.stats().pending, 0);
}

#[test]
fn dequeue_finds_nothing_and_try_enqueue_always_takes_the_object() {
    off();
    let p = Pending::with_shards(Rcu, Process::free(), 1);
    assert!(p.try_enqueue(Box::new(AtomicU64::new(1))).is_ok());
    p.enqueue(Box::new(AtomicU64::new(2)));
    assert!(p.dequeue().is_none());
    assert!(p.dequeue_from_all().is_none());
    assert!(p.dequeue_where(|_| true).is_none());
    p.barrier();
    let s = p.stats();
    assert_eq!(
        (s.enqueued, s.processed, s.dequeued, s.pending),
        (2, 2, 0, 0)
    );
}

/// An object readers find through an `AtomicPtr`; processing marks and poisons it and parks it
/// in a graveyard freed at the end, so a reader that reached a processed object would see it.
struct Obj {
    id: usize,
    value: AtomicU64,
    freed: AtomicBool,
}

const POISON: u64 = u64::MAX;

#[test]
fn readers_never_see_processed_objects() {
    off();
    const SLOTS: usize = 4;
    const UPDATES: usize = 3000;
    let ids = SLOTS + 2 * UPDATES;
    let times: Arc<Vec<AtomicU8>> = Arc::new((0..ids).map(|_| AtomicU8::new(0)).collect());
    #[allow(clippy::vec_box)] // a body must stay at the address readers may still hold
    let graveyard: Arc<Mutex<Vec<Box<Obj>>>> = Arc::default();
    let (t, g) = (times.clone(), graveyard.clone());
    let pending = Pending::new(
        Rcu,
        Process::with(move |o: Box<Obj>| {
            o.freed.store(true, Ordering::SeqCst);
            o.value.store(POISON, Ordering::SeqCst);
            t[o.id].fetch_add(1, Ordering::SeqCst);
            g.lock().unwrap().push(o);
        }),
    );
    let obj = |id: usize| {
        Box::into_raw(Box::new(Obj {
            id,
            value: AtomicU64::new(id as u64),
            freed: AtomicBool::new(false),
        }))
    };
    let slots: Vec<AtomicPtr<Obj>> = (0..SLOTS).map(|i| AtomicPtr::new(obj(i))).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _g = rcu::read_lock();
                    for slot in &slots {
                        // SAFETY: published objects are processed only a grace period after
                        // they were unpublished, and processing keeps the body alive anyway.
                        let o = unsafe { &*slot.load(Ordering::Acquire) };
                        assert!(
                            !o.freed.load(Ordering::SeqCst),
                            "reader saw a processed object"
                        );
                        assert_eq!(o.value.load(Ordering::SeqCst), o.id as u64);
                    }
                }
            });
        }
        let updaters: Vec<_> = (0..2)
            .map(|k| {
                let (slots, pending) = (&slots, &pending);
                s.spawn(move || {
                    for i in 0..UPDATES {
                        let id = SLOTS + k * UPDATES + i;
                        let old = slots[id % SLOTS].swap(obj(id), Ordering::AcqRel);
                        // SAFETY: from Box::into_raw, unpublished by the swap, retired once.
                        unsafe { pending.enqueue_raw(std::ptr::NonNull::new(old).unwrap()) };
                    }
                })
            })
            .collect();
        for u in updaters {
            u.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    for slot in &slots {
        // SAFETY: unpublished below by dropping `slots`; retired once.
        unsafe {
            pending.enqueue_raw(std::ptr::NonNull::new(slot.load(Ordering::Acquire)).unwrap())
        };
    }
    drop(pending);
    assert!(times.iter().all(|n| n.load(Ordering::SeqCst) == 1));
}

#[test]
fn barrier_and_drop_wait_for_a_reader_that_was_inside() {
    off();
    let reader = HeldReader::enter(true);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let pending = Pending::new(
        Rcu,
        Process::with(move |_: Box<[u8; 48]>| {
            d.fetch_add(1, Ordering::SeqCst);
        }),
    );
    for _ in 0..300 {
        pending.enqueue(Box::new([7u8; 48]));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "processed while a reader was inside"
    );
    assert_eq!(pending.stats().pending, 300);
    reader.leave_after(Duration::from_millis(50));
    drop(pending);
    assert!(
        reader.has_left(),
        "drop returned while a reader from before was inside"
    );
    assert_eq!(done.load(Ordering::SeqCst), 300);
    assert_eq!(
        Arc::strong_count(&done),
        1,
        "drop dropped the process closure"
    );
    reader.leave();
}

/// Every kvfree check in one test: kvfree's statistics are process-wide.
#[test]
fn kvfree_frees_each_object_exactly_once_with_one_callback_each() {
    off();
    struct Counted(usize, Arc<Vec<AtomicU8>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1[self.0].fetch_add(1, Ordering::SeqCst);
        }
    }
    const THREADS: usize = 3;
    const EACH: usize = 2000;
    let times: Arc<Vec<AtomicU8>> =
        Arc::new((0..THREADS * EACH).map(|_| AtomicU8::new(0)).collect());
    let before = grace::kvfree::stats();

    // Nothing is freed while a reader from before the kvfree is inside.
    let reader = HeldReader::enter(false);
    std::thread::scope(|s| {
        for k in 0..THREADS {
            let times = &times;
            s.spawn(move || {
                for i in 0..EACH {
                    grace::kvfree(Box::new(Counted(k * EACH + i, times.clone())));
                    // Plain data, too (no drop glue: the batched path frees it on this thread).
                    grace::kvfree(Box::new([i as u64; 8]));
                }
                // Inside a read-side section, kvfree still only queues.
                let _g = rcu::read_lock();
                grace::kvfree(Box::new([0u64; 8]));
            });
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        times.iter().all(|n| n.load(Ordering::SeqCst) == 0),
        "freed early"
    );
    let mid = grace::kvfree::stats();
    let n = (THREADS * (2 * EACH + 1)) as u64;
    assert_eq!(mid.objects_queued - before.objects_queued, n);
    assert!(mid.objects_pending >= (THREADS * EACH) as u64);
    assert!(mid.bytes_pending > 0);
    assert!(grace::pressure::pending_bytes() > 0);
    reader.leave();

    grace::kvfree_barrier();
    assert!(times.iter().all(|n| n.load(Ordering::SeqCst) == 1));
    let after = grace::kvfree::stats();
    assert_eq!(after.objects_freed - before.objects_freed, n);
    assert_eq!((after.objects_pending, after.bytes_pending), (0, 0));
    // No batching machinery was used: no arrays, no hand-offs, no sweeps of lanes.
    assert_eq!(
        (after.batches, after.arrays_allocated, after.objects_swept),
        (0, 0, 0)
    );
    assert_eq!(after.fallback_callback, 0, "not counted as a fallback");
}
