//! `kvfree` end to end, sized to run under Miri (its shared engine: lanes, hand-offs, retired
//! queues, sweeps, the callback batches and every fallback), so that Miri checks the whole
//! path for undefined behaviour, data races and use-after-free, not only the array code:
//!
//! ```text
//! MIRIFLAGS=-Zmiri-ignore-leaks cargo +nightly miri test -p grace --test kvfree_miri
//! ```
//!
//! (`-Zmiri-ignore-leaks`: the flavor's and kvfree's background threads run for the life of
//! the process, as in `miri_smoke`.) Under Miri an array holds 2 pointers and a node 1, so a
//! handful of objects crosses every hand-off path. Natively the test is a quick smoke test.

use grace::alloc::{inject, FailurePlan};
use grace::kvfree::{self as kv, kvfree_raw, testing};
use grace::{kvfree, kvfree_barrier, rcu};
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
    value: u64,
    drops: Arc<AtomicUsize>,
}

impl Obj {
    fn new(value: u64, drops: &Arc<AtomicUsize>) -> *mut Obj {
        Box::into_raw(Box::new(Obj {
            alive: AtomicBool::new(true),
            value,
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
fn kvfree_end_to_end() {
    let drops = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(AtomicPtr::new(Obj::new(0, &drops)));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (current, stop) = (current.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let g = rcu::read_lock();
                // SAFETY: published objects are freed only through kvfree_raw, after a grace
                // period this section holds back; Miri reports a use-after-free otherwise.
                let obj = unsafe { &*current.load(Ordering::Acquire) };
                assert!(obj.alive.load(Ordering::Relaxed));
                let _ = obj.value;
                drop(g);
                std::thread::yield_now();
            }
        })
    };
    // Replacements with drop glue (worker batches), objects without (retired queues), a
    // zero-sized type with a destructor, and one that needs nothing.
    let writes = n(2000, 12);
    for i in 1..=writes {
        let old = current.swap(Obj::new(i as u64, &drops), Ordering::AcqRel);
        // SAFETY: unpublished just above; never touched again by us.
        unsafe { kvfree_raw(old) };
        kvfree(Box::new([i as u64; 4]));
        if i % 3 == 0 {
            struct Zst(Arc<AtomicUsize>);
            impl Drop for Zst {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::Relaxed);
                }
            }
            kvfree(Box::new(Zst(drops.clone())));
            kvfree(Box::new(()));
        }
    }
    // A thread that exits with objects in its lanes and retired queue.
    {
        let drops = drops.clone();
        std::thread::spawn(move || {
            for i in 0..n(1000, 5) {
                kvfree(Box::new(i as u32));
                // SAFETY: a fresh, unpublished object.
                unsafe { kvfree_raw(Obj::new(i as u64, &drops)) };
            }
        })
        .join()
        .unwrap();
    }
    // Every fallback rung, on a thread of its own. Each rung frees a type the thread has not
    // freed before (a tag array of a new length), so that it needs a new block.
    {
        let drops = drops.clone();
        std::thread::spawn(move || {
            // SAFETY (every Box::from_raw below): a fresh object from Obj::new, owned here.
            let obj = |v| unsafe { Box::from_raw(Obj::new(v, &drops)) };
            kvfree(Box::new(0u8)); // register
            let _empty = testing::avoid(true, false);
            {
                let _fail = inject(FailurePlan::Nth(1)); // array fails: reserve
                kvfree(Box::new(([0u8; 1], obj(1))));
            }
            let _empty = testing::avoid(true, true);
            {
                let _fail = inject(FailurePlan::Nth(1)); // array fails, node succeeds
                kvfree(Box::new(([0u8; 2], obj(2))));
                kvfree(Box::new(([0u8; 2], obj(3))));
            }
            {
                let _fail = inject(FailurePlan::AllAfter(0));
                kvfree(Box::new(([0u8; 3], obj(4)))); // synchronous grace period
                let g = rcu::read_lock();
                kvfree(Box::new(([0u8; 4], obj(5)))); // retries, then a callback record
                drop(g);
            }
        })
        .join()
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    // SAFETY: the reader is gone; the last object is published only here.
    unsafe { kvfree_raw(current.load(Ordering::Relaxed)) };
    kvfree_barrier();
    let zsts = writes / 3;
    let exiting = n(1000, 5);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        (writes + 1) + zsts + exiting + 5,
        "an object was lost or freed twice"
    );
    let s = kv::stats();
    assert_eq!(s.objects_pending, 0, "{s:?}");
    assert!(s.fallback_reserve >= 1 && s.fallback_node >= 1, "{s:?}");
    assert!(s.fallback_sync_gp >= 1 && s.fallback_callback >= 1, "{s:?}");
}
