//! The chicken switch's per-object paths end to end, sized to run under Miri: with batching
//! off, `Pending` (every process mode) and `kvfree` send each object through its own RCU
//! callback while a reader dereferences what is published, so that Miri checks the hand-over
//! of each object to its callback for undefined behaviour, data races and use-after-free:
//!
//! ```text
//! MIRIFLAGS=-Zmiri-ignore-leaks cargo +nightly miri test -p grace --test chicken_miri
//! ```
//!
//! (`-Zmiri-ignore-leaks`: the flavor's background threads run for the life of the process.)
//! One test: the switch is process-wide.

use grace::pending::{self, Pending, Process};
use grace::{kvfree, kvfree::kvfree_raw, kvfree_barrier, rcu, Rcu};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

fn n(native: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// Knows whether it was dropped; readers check it, the destructor counts.
struct Obj {
    alive: AtomicBool,
    drops: Arc<AtomicUsize>,
}

impl Obj {
    fn new(drops: &Arc<AtomicUsize>) -> *mut Obj {
        Box::into_raw(Box::new(Obj {
            alive: AtomicBool::new(true),
            drops: drops.clone(),
        }))
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn unbatched_pending_and_kvfree_end_to_end() {
    pending::set_batching(false).expect("the first use of grace in this process");
    let drops = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(AtomicPtr::new(Obj::new(&drops)));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (current, stop) = (current.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let g = rcu::read_lock();
                // SAFETY: a published object is retired only after it was replaced, and freed
                // only after a grace period that waits for this section.
                let o = unsafe { &*current.load(Ordering::Acquire) };
                assert!(
                    o.alive.load(Ordering::Relaxed),
                    "a reader saw a dropped object"
                );
                drop(g);
                std::thread::yield_now();
            }
        })
    };

    // Pending with Process::free, retiring what the reader may still see.
    let free: Pending<Obj> = Pending::new(Rcu, Process::free());
    let rounds = n(200, 4);
    for _ in 0..rounds {
        let old = current.swap(Obj::new(&drops), Ordering::AcqRel);
        // SAFETY: from Box::into_raw, unpublished by the swap, retired once.
        unsafe { free.enqueue_raw(std::ptr::NonNull::new(old).unwrap()) };
    }
    assert!(free.dequeue().is_none());
    free.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), rounds);

    // kvfree_raw of what the reader may still see, then kvfree of plain data.
    for _ in 0..rounds {
        let old = current.swap(Obj::new(&drops), Ordering::AcqRel);
        // SAFETY: from Box::into_raw, unpublished by the swap, retired once.
        unsafe { kvfree_raw(old) };
        kvfree(Box::new([7u64; 4]));
    }
    kvfree_barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 2 * rounds);
    let s = grace::kvfree::stats();
    assert_eq!(
        (s.objects_queued, s.objects_freed, s.batches),
        (2 * rounds as u64, 2 * rounds as u64, 0)
    );

    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    // SAFETY: the reader has stopped; the last object is unpublished here.
    drop(unsafe { Box::from_raw(current.load(Ordering::Relaxed)) });

    // Process::with and Process::run, dropped with objects still in flight.
    let sum = Arc::new(AtomicUsize::new(0));
    let s2 = sum.clone();
    let with = Pending::new(
        Rcu,
        Process::with(move |v: Box<usize>| {
            s2.fetch_add(*v, Ordering::Relaxed);
        }),
    );
    let run: Pending<Box<dyn FnOnce() + Send>> = Pending::new(Rcu, Process::run());
    for i in 1..=n(100, 3) {
        with.enqueue(Box::new(i));
        let s3 = sum.clone();
        run.enqueue(Box::new(Box::new(move || {
            s3.fetch_add(1000, Ordering::Relaxed);
        })));
    }
    drop(with);
    drop(run);
    let k = n(100, 3);
    assert_eq!(sum.load(Ordering::Relaxed), k * (k + 1) / 2 + 1000 * k);
    assert_eq!(Arc::strong_count(&sum), 1, "drop dropped the closures");
}
