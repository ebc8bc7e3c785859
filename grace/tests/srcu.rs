//! SRCU domains: grace periods wait for their own readers only, sections may end on another
//! thread, polled cookies, callbacks, static domains, drop semantics.

use grace::cookie::Cookie;
use grace::srcu::{Srcu, SrcuLite, SrcuPhase};
use grace::Flavor;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// A thread that holds a section of `domain` open until told to stop.
fn hold_reader<F: Flavor + Send + Sync + 'static>(
    domain: Arc<F>,
) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let g = domain.read_lock();
        entered_tx.send(()).unwrap();
        let _ = stop_rx.recv();
        drop(g);
    });
    entered_rx.recv().unwrap();
    (stop_tx, h)
}

#[test]
fn synchronize_waits_for_a_preexisting_reader_of_its_own_domain() {
    check_waits(Arc::new(Srcu::new().unwrap()));
    check_waits(Arc::new(SrcuLite::new_lite().unwrap()));
}

fn check_waits<F: Flavor + Send + Sync + 'static>(d: Arc<F>) {
    let (stop, h) = hold_reader(d.clone());
    let released = Arc::new(AtomicBool::new(false));
    let r = released.clone();
    let waiter = {
        let d = d.clone();
        thread::spawn(move || {
            d.synchronize();
            assert!(
                r.load(Ordering::SeqCst),
                "synchronize returned under a reader"
            );
        })
    };
    thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "a grace period ended under a reader");
    released.store(true, Ordering::SeqCst);
    stop.send(()).unwrap();
    h.join().unwrap();
    waiter.join().unwrap();
}

#[test]
fn a_blocked_reader_delays_only_its_own_domain() {
    let blocked = Arc::new(Srcu::new().unwrap());
    let other = Srcu::new().unwrap();
    let other_lite = SrcuLite::new_lite().unwrap();
    let (stop, h) = hold_reader(blocked.clone());
    // These return although `blocked` has a reader inside for the whole test.
    for _ in 0..20 {
        other.synchronize();
        other.synchronize_expedited();
        other_lite.synchronize();
        grace::rcu::synchronize();
    }
    let c = other.start_poll();
    while !other.poll_state(c) {
        thread::yield_now();
    }
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    other.call_hurry(move || r.store(true, Ordering::SeqCst));
    other.barrier();
    assert!(ran.load(Ordering::SeqCst));
    // ... while the blocked domain's grace period is still stuck.
    let stuck = blocked.start_poll();
    thread::sleep(Duration::from_millis(30));
    assert!(!blocked.poll_state(stuck));
    assert_ne!(blocked.stats().phase, SrcuPhase::Idle);
    stop.send(()).unwrap();
    h.join().unwrap();
    blocked.cond_synchronize(stuck);
    assert!(blocked.poll_state(stuck));
}

#[test]
fn a_section_may_end_on_another_thread() {
    let d = Arc::new(Srcu::new().unwrap());
    let token = d.read_lock_raw();
    let unlocked = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (d, u) = (d.clone(), unlocked.clone());
        thread::spawn(move || {
            d.synchronize();
            assert!(
                u.load(Ordering::SeqCst),
                "grace period ended before the raw unlock"
            );
        })
    };
    thread::sleep(Duration::from_millis(30));
    assert!(!waiter.is_finished());
    // The token migrates; its unlock is counted in another thread's shard.
    let d2 = d.clone();
    let u = unlocked.clone();
    thread::spawn(move || {
        u.store(true, Ordering::SeqCst);
        d2.read_unlock_raw(token);
    })
    .join()
    .unwrap();
    waiter.join().unwrap();
}

#[test]
#[should_panic(expected = "given to read_unlock_raw of domain")]
fn a_token_of_another_domain_is_refused() {
    let a = Srcu::new().unwrap();
    let b = Srcu::new().unwrap();
    let t = a.read_lock_raw();
    b.read_unlock_raw(t);
}

#[test]
fn nested_guards_end_in_any_order() {
    let d = Srcu::new().unwrap();
    let a = d.read_lock();
    let b = d.read_lock();
    let t = d.read_lock_raw();
    drop(a);
    d.read_unlock_raw(t);
    drop(b);
    d.synchronize();
    assert_eq!(d.stats().grace_periods, 1);
}

#[test]
fn readers_never_see_a_reclaimed_value() {
    const LIVE: u64 = 0x600d_600d;
    let d = Arc::new(Srcu::new().unwrap());
    let slot = Arc::new(AtomicPtr::new(Box::into_raw(Box::new(LIVE))));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (d, slot, stop, reads) = (d.clone(), slot.clone(), stop.clone(), reads.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let g = d.read_lock();
                    let p = slot.load(Ordering::Acquire);
                    // SAFETY: the pointer was published before or during our section, and it
                    // is freed only after a grace period that started after it was replaced.
                    let v = unsafe { std::ptr::read_volatile(p) };
                    assert_eq!(v, LIVE, "reader saw a reclaimed value");
                    if i == 0 {
                        thread::yield_now(); // sometimes sleep-ish inside the section
                    }
                    drop(g);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for round in 0..2000u32 {
        let old = slot.swap(Box::into_raw(Box::new(LIVE)), Ordering::AcqRel);
        let poison = move || {
            // SAFETY: `old` was unpublished before this callback was queued (or before the
            // grace period below); no reader can still see it.
            unsafe {
                *old = 0xdead;
                drop(Box::from_raw(old));
            }
        };
        let old_addr = old as usize;
        match round % 4 {
            0 => {
                d.synchronize();
                poison();
            }
            1 => {
                let c = d.get_state();
                d.cond_synchronize(c);
                poison();
            }
            2 => d.call(move || {
                let old = old_addr as *mut u64;
                // SAFETY: as above, after the callback's grace period.
                unsafe {
                    *old = 0xdead;
                    drop(Box::from_raw(old));
                }
            }),
            _ => {
                d.synchronize_expedited();
                poison();
            }
        }
    }
    d.barrier();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    // SAFETY: no reader is left.
    drop(unsafe { Box::from_raw(slot.load(Ordering::Acquire)) });
}

#[test]
fn polled_cookies_complete_and_compose() {
    let d = Srcu::new().unwrap();
    assert!(d.poll_state(Cookie::completed()));
    let c = d.get_state();
    assert!(!d.poll_state(c), "get_state starts nothing and nothing ran");
    let p = d.start_poll();
    while !d.poll_state(p) {
        thread::yield_now();
    }
    assert!(d.poll_state(c), "the same or an earlier grace period");
    let newer = d.get_state();
    assert_eq!(Flavor::poll_state_any(&d, &[newer, c]), Some(1));
    d.cond_synchronize(newer);
    assert!(d.poll_state(newer));
    // At most two distinct cookies are outstanding at once (NUM_ACTIVE_POLL_OLDSTATE).
    let d = Arc::new(Srcu::new().unwrap());
    let (stop, h) = hold_reader(d.clone());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        seen.insert(d.start_poll());
        thread::sleep(Duration::from_micros(200));
    }
    assert!(
        seen.len() <= grace::cookie::NUM_ACTIVE_POLL_OLDSTATE,
        "{seen:?}"
    );
    stop.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn callbacks_run_once_after_a_grace_period_and_barrier_waits_for_all() {
    let d = Arc::new(Srcu::new().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    // Held reader: nothing may run yet.
    let (stop, h) = hold_reader(d.clone());
    let c = count.clone();
    d.call_hurry(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    thread::sleep(Duration::from_millis(40));
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "callback ran under a reader"
    );
    stop.send(()).unwrap();
    h.join().unwrap();
    // Four threads queue 1000 each, lazily and hurried.
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (d, count, start) = (d.clone(), count.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for i in 0..1000 {
                    let c = count.clone();
                    let f = move || {
                        c.fetch_add(1, Ordering::Relaxed);
                    };
                    if (i + t) % 7 == 0 {
                        d.call_hurry(f)
                    } else {
                        d.call(f)
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    d.barrier();
    assert_eq!(count.load(Ordering::SeqCst), 4001);
    let s = d.stats();
    assert_eq!(
        (s.callbacks_queued, s.callbacks_invoked, s.callbacks_pending),
        (4001, 4001, 0)
    );
    assert!(s.call_used);
}

#[test]
fn a_panicking_callback_and_a_barrier_from_a_callback_are_caught() {
    let d = Arc::new(Srcu::new().unwrap());
    d.call_hurry(|| panic!("deliberate"));
    let d2 = d.clone();
    d.call_hurry(move || d2.barrier()); // refused with a panic, caught
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    d.call_hurry(move || r.store(true, Ordering::SeqCst));
    d.barrier();
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(d.stats().callback_panics, 2);
}

#[test]
fn drop_waits_for_callbacks() {
    let count = Arc::new(AtomicUsize::new(0));
    let d = Srcu::new().unwrap();
    for _ in 0..100 {
        let c = count.clone();
        d.call(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
    }
    drop(d);
    assert_eq!(
        count.load(Ordering::SeqCst),
        100,
        "drop returned before its callbacks ran"
    );
    assert_eq!(Arc::strong_count(&count), 1, "every closure was dropped");
}

#[test]
fn drop_without_call_skips_the_barrier_and_frees() {
    let d = SrcuLite::new_lite().unwrap();
    drop(d.read_lock());
    d.synchronize();
    let c = d.start_poll();
    d.cond_synchronize(c);
    assert!(!d.stats().call_used);
    drop(d);
}

#[test]
fn dropping_with_an_open_raw_section_leaks_instead_of_freeing() {
    let d = Srcu::new().unwrap();
    let token = d.read_lock_raw();
    let witness = Arc::new(());
    let w = witness.clone();
    d.call_hurry(move || drop(w));
    drop(d); // reported on stderr; the callback never runs and its closure is never freed
    assert_eq!(
        Arc::strong_count(&witness),
        2,
        "the pending callback was neither run nor dropped"
    );
    let _never_unlocked = token;
}

#[test]
fn static_domains_initialize_lazily_and_shards_are_reused_after_thread_exit() {
    static DOMAIN: Srcu = Srcu::new_static();
    static LITE: SrcuLite = SrcuLite::new_static_lite();
    for _ in 0..20 {
        thread::spawn(|| {
            drop(DOMAIN.read_lock());
            drop(LITE.read_lock());
        })
        .join()
        .unwrap();
    }
    // Each thread gave its shard back when it exited; the next one took it over.
    assert!(DOMAIN.stats().reader_shards <= 2, "{:?}", DOMAIN.stats());
    assert!(LITE.stats().reader_shards <= 2);
    DOMAIN.synchronize();
    LITE.synchronize_expedited();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    LITE.call(move || r.store(true, Ordering::SeqCst));
    LITE.barrier();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn many_domains_many_threads() {
    let domains: Arc<Vec<Srcu>> = Arc::new((0..12).map(|_| Srcu::new().unwrap()).collect());
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let domains = domains.clone();
            thread::spawn(move || {
                for i in 0..3000usize {
                    let d = &domains[(i * 7 + t) % domains.len()];
                    let g = d.read_lock();
                    let inner = domains[(i + 1) % domains.len()].read_lock();
                    drop(g);
                    drop(inner);
                    if i % 500 == 0 {
                        d.synchronize();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for d in domains.iter() {
        d.synchronize();
        assert!(d.stats().reader_shards <= 3);
    }
}

#[test]
fn the_flavor_trait_works_through_references_and_arcs() {
    fn use_flavor<F: Flavor>(f: F) -> bool {
        let c = f.start_poll();
        drop(f.read_lock());
        f.cond_synchronize(c);
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        f.call(move || d.store(true, Ordering::SeqCst));
        f.barrier();
        f.poll_state(c) && done.load(Ordering::SeqCst)
    }
    static S: Srcu = Srcu::new_static();
    assert!(use_flavor(&S));
    assert!(use_flavor(Arc::new(SrcuLite::new_lite().unwrap())));
}

#[test]
fn sections_in_late_thread_local_destructors_do_not_grow_the_registry() {
    static LATE_DOMAIN: Srcu = Srcu::new_static();
    struct ReadsOnDrop;
    impl Drop for ReadsOnDrop {
        fn drop(&mut self) {
            // Runs during thread-local teardown, possibly after grace's own thread-locals.
            drop(LATE_DOMAIN.read_lock());
            let t = LATE_DOMAIN.read_lock_raw();
            LATE_DOMAIN.read_unlock_raw(t);
        }
    }
    thread_local! {
        static GUARD: ReadsOnDrop = const { ReadsOnDrop };
    }
    for _ in 0..60 {
        thread::spawn(|| {
            // Registered before the thread's first SRCU read, so destroyed after grace's.
            GUARD.with(|_| {});
            drop(LATE_DOMAIN.read_lock());
        })
        .join()
        .unwrap();
    }
    for _ in 0..60 {
        // This thread never reads before teardown: its only shard is a late one.
        thread::spawn(|| GUARD.with(|_| {})).join().unwrap();
    }
    let shards = LATE_DOMAIN.stats().reader_shards;
    assert!(shards <= 3, "{shards} shards for 120 exited threads");
    LATE_DOMAIN.synchronize();
}

#[test]
fn a_domain_first_read_in_a_late_destructor_reuses_free_shards() {
    // The thread reads another domain, so grace's thread-locals exist, but after `LATE`, so
    // they are destroyed before it: the late read finds no shard of its own for this domain
    // and must claim a free one, not add a shard per exiting thread.
    static OTHER: Srcu = Srcu::new_static();
    static FIRST_LATE: Srcu = Srcu::new_static();
    struct ReadsOnDrop;
    impl Drop for ReadsOnDrop {
        fn drop(&mut self) {
            drop(FIRST_LATE.read_lock());
        }
    }
    thread_local! {
        static LATE: ReadsOnDrop = const { ReadsOnDrop };
    }
    for _ in 0..100 {
        thread::spawn(|| {
            LATE.with(|_| {}); // registered first, so destroyed after grace's thread-locals
            drop(OTHER.read_lock());
        })
        .join()
        .unwrap();
    }
    let shards = FIRST_LATE.stats().reader_shards;
    assert!(shards <= 3, "{shards} shards for 100 exited threads");
    FIRST_LATE.synchronize();
}

#[cfg(target_os = "linux")]
#[test]
fn a_domain_read_from_a_pthread_key_destructor_reuses_free_shards() {
    // A pthread-key destructor runs after every Rust thread-local destructor, grace's own
    // final hook included (or before it, depending on the keys' order): either way the shard
    // it takes must be given back.
    static KEY_DOMAIN: Srcu = Srcu::new_static();
    unsafe extern "C" fn reads(_arg: *mut std::ffi::c_void) {
        drop(KEY_DOMAIN.read_lock());
    }
    let key = {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer and `reads` a destructor valid for the process.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(reads)) },
            0
        );
        key
    };
    for i in 0..100 {
        thread::spawn(move || {
            if i % 2 == 0 {
                drop(KEY_DOMAIN.read_lock()); // half the threads also read while alive
            }
            // SAFETY: the key was created above; a non-null value makes its destructor run.
            unsafe { libc::pthread_setspecific(key, 1 as *mut std::ffi::c_void) };
        })
        .join()
        .unwrap();
    }
    let shards = KEY_DOMAIN.stats().reader_shards;
    assert!(shards <= 3, "{shards} shards for 100 exited threads");
    KEY_DOMAIN.synchronize();
}

#[test]
fn a_domain_dropped_inside_its_own_callback_finishes_its_teardown() {
    let ran = Arc::new(AtomicUsize::new(0));
    for panics in [false, true] {
        let d = Arc::new(Srcu::new().unwrap());
        for _ in 0..10 {
            let r = ran.clone();
            d.call(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        let d2 = d.clone();
        let r = ran.clone();
        d.call_hurry(move || {
            let _last = d2; // the last reference: the domain is dropped in this callback
            r.fetch_add(1, Ordering::SeqCst);
            if panics {
                panic!("a callback that owns its domain panics"); // drop while unwinding
            }
        });
        drop(d);
    }
    // The hand-off thread waits for the remaining callbacks; nothing is lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ran.load(Ordering::SeqCst) < 22 {
        assert!(std::time::Instant::now() < deadline, "callbacks lost");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[should_panic(expected = "polled on SRCU domain")]
fn a_cookie_polled_on_another_domain_panics() {
    let a = Srcu::new().unwrap();
    let b = Srcu::new().unwrap();
    let c = a.get_state();
    b.poll_state(c);
}

#[test]
#[should_panic(expected = "polled on SRCU domain #0")]
fn a_cookie_polled_on_an_unused_static_domain_panics() {
    static UNUSED: Srcu = Srcu::new_static();
    let a = Srcu::new().unwrap();
    UNUSED.poll_state(a.get_state());
}

#[test]
fn cookies_carry_their_domain_through_raw_values() {
    let a = Srcu::new().unwrap();
    let b = Srcu::new().unwrap();
    let c = a.get_state();
    assert_eq!(a.cookie_from_raw(c.raw()), c);
    assert_ne!(
        b.cookie_from_raw(c.raw()),
        c,
        "another domain's cookie is another cookie"
    );
    // Arcs and references of a domain are the domain.
    let arc = Arc::new(Srcu::new().unwrap());
    let c = arc.start_poll();
    Flavor::cond_synchronize(&arc, c);
    assert!(Flavor::poll_state(&&*arc, c));
    // The completed sentinel is every domain's.
    assert!(b.poll_state(Cookie::completed()));
    let lite: SrcuLite = Srcu::new_lite().unwrap();
    assert!(lite.poll_state(Cookie::completed()));
}
