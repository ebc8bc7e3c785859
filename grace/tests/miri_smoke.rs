//! A small end-to-end pass over the public API, sized to run under Miri
//! (`cargo +nightly miri test -p grace --test miri_smoke`, see `.ci/miri.sh`): `RcuCell`
//! readers against `replace` + every reclamation path, the `update` loop from two threads on
//! RCU and SRCU, `synchronize`, polled cookies,
//! `call`/`call_hurry` (more callbacks than a Miri-sized ring holds, so the full-ring path
//! runs) and `barrier`, including callbacks left behind by an exiting thread. For SRCU: a
//! dynamic and a static domain, guard sections and raw sections that end on another thread,
//! `synchronize`, polled cookies, `call`/`call_hurry` + `barrier`, and dropping a domain.
//!
//! Under Miri, a value freed while a reader can still see it is reported as a use-after-free,
//! and a race on it as a data race; natively the `alive` check catches the same bug. Under
//! Miri the library uses the portable `sys` fallback (fence mode, no system calls).

use grace::srcu::{ReaderKind, Srcu, SrcuLite};
use grace::{rcu, BarrierMode, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

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
        // 3. Defer the drop (through kvfree, for RCU).
        v += 1;
        cell.replace(Tracked::new(v, &drops)).defer_drop();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    grace::kvfree_barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 3 * rounds);
}

/// `RcuCell::update` from two threads while a reader follows the cell: the compare-and-swap
/// loop, its losers (dropped at once, their allocation reused) and the winners' retirement, on
/// RCU (through kvfree) and on an SRCU domain (through its `call`).
fn update_loop<F: grace::Flavor + Clone + Send + Sync + 'static>(flavor: F, wait: impl Fn()) {
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(RcuCell::with_flavor(flavor, Tracked::new(0, &drops)));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (cell, stop) = (cell.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let v = cell.read();
                assert!(v.alive.load(Ordering::Relaxed), "read after free");
            }
        })
    };
    let rounds = n(200, 4);
    let calls = Arc::new(AtomicUsize::new(0));
    let updaters: Vec<_> = (0..2)
        .map(|_| {
            let (cell, drops, calls) = (cell.clone(), drops.clone(), calls.clone());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    cell.update(|cur| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        Tracked::new(cur.value + 1, &drops)
                    })
                    .defer_drop();
                }
            })
        })
        .collect();
    for u in updaters {
        u.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(cell.read().value, 2 * rounds, "an update was lost");
    wait();
    // Every value made but the current one is dropped, exactly once.
    assert_eq!(drops.load(Ordering::Relaxed), calls.load(Ordering::Relaxed));
}

#[test]
fn cell_update_loop_rcu() {
    update_loop(grace::Rcu, grace::kvfree_barrier);
}

#[test]
fn cell_update_loop_srcu() {
    static DOMAIN: Srcu = Srcu::new_static();
    update_loop(&DOMAIN, || DOMAIN.barrier());
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

/// A pointer protected by an SRCU domain: readers load it inside a section, the updater swaps
/// in a new value and frees the old one after a grace period of that domain (by waiting, by
/// polling, or from a callback).
struct Protected(AtomicPtr<Tracked>);

impl Protected {
    fn new(value: usize, drops: &Arc<AtomicUsize>) -> Protected {
        Protected(AtomicPtr::new(Box::into_raw(Box::new(Tracked::new(
            value, drops,
        )))))
    }

    /// The current value; the caller must be inside a section of the protecting domain.
    fn load(&self) -> *const Tracked {
        // Acquire: pairs with the Release half of the swap in `replace` (publication).
        self.0.load(Ordering::Acquire)
    }

    /// Publish a new value; the old one may be freed after a grace period that starts later.
    fn replace(&self, value: usize, drops: &Arc<AtomicUsize>) -> Old {
        let new = Box::into_raw(Box::new(Tracked::new(value, drops)));
        // AcqRel: Release publishes the new value; Acquire makes the old one ours to free.
        Old(self.0.swap(new, Ordering::AcqRel))
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        // SAFETY: the last value came from Box::into_raw and nobody reads it any more (the
        // owner of `Protected` outlives every reader).
        drop(unsafe { Box::from_raw(*self.0.get_mut()) });
    }
}

/// An unpublished value, to be freed once a grace period has ended, on any thread.
struct Old(*mut Tracked);

// SAFETY: `Tracked` is Send; the pointer is unpublished and owned by whoever holds `Old`.
unsafe impl Send for Old {}

impl Old {
    /// # Safety
    ///
    /// A grace period of the protecting domain has ended since the value was unpublished.
    unsafe fn free(self) {
        // SAFETY: from Box::into_raw in `replace`; no reader can still see it (per the
        // contract), and `Old` is not Clone, so this runs once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// What a reader found inside its section, sent with the section's token to another thread.
struct Seen(*const Tracked);

// SAFETY: `Tracked` is Sync; the section that keeps it alive travels with the pointer.
unsafe impl Send for Seen {}

/// Read `p` inside a section that is still open.
fn check_alive(p: *const Tracked) -> usize {
    // SAFETY: the caller's section began before the grace period that could free `p` (we
    // loaded `p` inside it) and has not ended.
    let t = unsafe { &*p };
    assert!(t.alive.load(Ordering::Relaxed), "read a dropped value");
    t.value
}

/// One domain end to end: guard readers on one thread, raw sections that start on one thread
/// and end on another, against an updater that reclaims through `synchronize`, a polled
/// cookie, `start_poll`, and `call`/`call_hurry` + `barrier`.
fn srcu_smoke<K: ReaderKind>(d: &Srcu<K>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let prot = Protected::new(0, &drops);
    let rounds = n(50, 2);
    // A fixed number of sections rather than "until the updater is done": under Miri, time
    // only jumps to the service's next timed wake-up when no thread is runnable.
    let sections = n(500, 4);
    std::thread::scope(|s| {
        let prot = &prot;
        // Guard sections, nested, sleeping inside.
        s.spawn(|| {
            for _ in 0..sections {
                let g = d.read_lock();
                let p = prot.load();
                let v = check_alive(p);
                {
                    let inner = d.read_lock();
                    assert!(check_alive(prot.load()) >= v, "values go backwards");
                    drop(inner);
                }
                std::thread::yield_now();
                assert_eq!(check_alive(p), v, "nested unlock ended the section");
                drop(g);
                std::thread::yield_now();
            }
        });
        // Raw sections, each ended by the other thread.
        let (tx, rx) = mpsc::channel::<(grace::srcu::SrcuToken, Seen)>();
        s.spawn(move || {
            for (token, seen) in rx {
                std::thread::yield_now();
                check_alive(seen.0);
                d.read_unlock_raw(token);
            }
        });
        s.spawn(move || {
            for _ in 0..sections {
                let token = d.read_lock_raw();
                let p = prot.load();
                check_alive(p);
                tx.send((token, Seen(p))).unwrap();
                std::thread::yield_now();
            }
        });

        let mut v = 0;
        for _ in 0..rounds {
            // 1. synchronize.
            v += 1;
            let old = prot.replace(v, &drops);
            d.synchronize();
            // SAFETY: a full grace period has ended since the value was unpublished.
            unsafe { old.free() };
            // 2. A cookie, completed by cond_synchronize.
            v += 1;
            let old = prot.replace(v, &drops);
            let c = d.get_state();
            d.cond_synchronize(c);
            assert!(d.poll_state(c));
            // SAFETY: the cookie, taken after the value was unpublished, is done.
            unsafe { old.free() };
            // 3. A cookie the background service completes.
            v += 1;
            let old = prot.replace(v, &drops);
            let c = d.start_poll();
            while !d.poll_state(c) {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            // SAFETY: as above.
            unsafe { old.free() };
            // 4. Callbacks.
            for hurry in [false, true] {
                v += 1;
                let old = prot.replace(v, &drops);
                // SAFETY: a callback runs after a grace period that started after `call`.
                let free = move || unsafe { old.free() };
                if hurry {
                    d.call_hurry(free);
                } else {
                    d.call(free);
                }
            }
        }
        // The readers are joined by the scope; the callbacks by the barrier below.
    });
    d.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 5 * rounds);
    let st = d.stats();
    assert!(st.grace_periods >= 3 * rounds as u64, "{st:?}");
    assert_eq!(st.callbacks_queued, 2 * rounds as u64, "{st:?}");
    assert_eq!(st.callbacks_pending, 0, "{st:?}");
    assert!(st.call_used);
}

#[test]
fn srcu_dynamic_domain_end_to_end_and_drop() {
    let d = Srcu::new().unwrap();
    srcu_smoke(&d);
    // Drop after `call`: waits for the callbacks (none left) and frees the domain. A callback
    // queued just before the drop must still run.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    d.call(move || r.store(true, Ordering::Relaxed));
    drop(d);
    assert!(
        ran.load(Ordering::Relaxed),
        "drop did not wait for a callback"
    );
}

#[test]
fn srcu_static_domains_end_to_end() {
    static DOMAIN: Srcu = Srcu::new_static();
    static LITE: SrcuLite = SrcuLite::new_static_lite();
    assert!(!DOMAIN.stats().updater_allocated);
    srcu_smoke(&DOMAIN);
    // A lite domain in fence mode (the only mode under Miri): readers fence, the updater's
    // heavy barrier is a fence.
    drop(LITE.read_lock());
    let c = LITE.get_state();
    LITE.synchronize_expedited();
    assert!(LITE.poll_state(c));
}
