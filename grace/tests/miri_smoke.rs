//! A small end-to-end pass over the public API, sized to run under Miri
//! (`cargo +nightly miri test -p grace --test miri_smoke`, see `.ci/miri.sh`): `RcuCell`
//! readers against `replace` + every reclamation path, `synchronize`, polled cookies,
//! `call`/`call_hurry` (more callbacks than a Miri-sized ring holds, so the full-ring path
//! runs) and `barrier`, including callbacks left behind by an exiting thread.
//!
//! Under Miri, a value freed while a reader can still see it is reported as a use-after-free,
//! and a race on it as a data race; natively the `alive` check catches the same bug. Under
//! Miri the library uses the portable `sys` fallback (fence mode, no system calls).

use grace::{rcu, BarrierMode, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Iterations: tiny under Miri, where every step is interpreted.
fn n(native: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// A value that knows whether it has been dropped.
struct Tracked {
    value: usize,
    alive: AtomicBool,
    drops: Arc<AtomicUsize>,
}

impl Tracked {
    fn new(value: usize, drops: &Arc<AtomicUsize>) -> Tracked {
        Tracked {
            value,
            alive: AtomicBool::new(true),
            drops: drops.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::Relaxed), "dropped twice");
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn readers_vs_replace_with_every_reclamation_path() {
    if cfg!(miri) {
        // No membarrier system call under Miri: the fallback always picks fence mode.
        assert_eq!(rcu::stats().barrier_mode, BarrierMode::Fence);
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(RcuCell::new(Tracked::new(0, &drops)));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cell, stop) = (cell.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut sections = 0usize;
                while !stop.load(Ordering::Relaxed) || sections < 2 {
                    let g = rcu::read_lock();
                    let t = cell.load(&g);
                    assert!(t.alive.load(Ordering::Relaxed), "read a dropped value");
                    assert!(t.value >= last, "values go backwards");
                    {
                        let inner = rcu::read_lock();
                        let t2 = cell.load(&inner);
                        assert!(t2.alive.load(Ordering::Relaxed), "read a dropped value");
                        assert!(t2.value >= t.value, "values go backwards");
                    }
                    // The inner unlock must not end the outer section: `t` stays valid.
                    assert!(rcu::is_reading());
                    std::thread::yield_now();
                    assert!(
                        t.alive.load(Ordering::Relaxed),
                        "nested unlock ended the section"
                    );
                    last = t.value;
                    drop(g);
                    sections += 1;
                    std::thread::yield_now();
                }
                assert!(!rcu::is_reading());
            })
        })
        .collect();

    let rounds = n(200, 3);
    let mut v = 0;
    for _ in 0..rounds {
        // 1. Wait for the grace period, then own the old value.
        v += 1;
        let old = cell.replace(Tracked::new(v, &drops)).synchronize();
        assert!(old.alive.load(Ordering::Relaxed));
        drop(old);
        // 2. Poll: cond_synchronize on the cookie, then try_reclaim must succeed.
        v += 1;
        let r = cell.replace(Tracked::new(v, &drops));
        rcu::cond_synchronize(r.cookie());
        assert!(rcu::poll_state(r.cookie()));
        drop(r.try_reclaim().ok().expect("grace period ended"));
        // 3. Defer the drop through rcu::call.
        v += 1;
        cell.replace(Tracked::new(v, &drops)).defer_drop();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    rcu::barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 3 * rounds);
}

#[test]
fn cookies_and_synchronize() {
    let c = rcu::get_state();
    let full = rcu::get_state_full();
    rcu::synchronize();
    assert!(rcu::poll_state(c));
    assert!(rcu::poll_state_full(full));

    let full = rcu::get_state_full();
    rcu::synchronize_expedited();
    assert!(rcu::poll_state_full(full));

    // start_poll: the grace-period thread completes it without our help.
    let c = rcu::start_poll();
    while !rcu::poll_state(c) {
        std::thread::yield_now();
    }
    let cs = [rcu::get_state(), rcu::get_completed_state()];
    assert_eq!(rcu::poll_state_any(&cs), Some(1));
    rcu::cond_synchronize(cs[0]);
    assert!(rcu::poll_state(cs[0]));
}

#[test]
fn call_and_barrier_lose_nothing() {
    let hits = Arc::new(AtomicUsize::new(0));
    // More than a ring holds under Miri (4), from two threads, one of which exits with its
    // callbacks still queued.
    let per_thread = n(1000, 6);
    let t = {
        let hits = hits.clone();
        std::thread::spawn(move || {
            for _ in 0..per_thread {
                let h = hits.clone();
                rcu::call(move || {
                    h.fetch_add(1, Ordering::Relaxed);
                });
            }
        })
    };
    for i in 0..per_thread {
        let h = hits.clone();
        let f = move || {
            h.fetch_add(1, Ordering::Relaxed);
        };
        if i % 3 == 0 {
            rcu::call_hurry(f);
        } else {
            rcu::call(f);
        }
    }
    t.join().unwrap();
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), 2 * per_thread);
    // Every callback's captures were dropped after running.
    assert_eq!(Arc::strong_count(&hits), 1);
}
