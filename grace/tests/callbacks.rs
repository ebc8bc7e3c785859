//! `call`, `call_hurry` and `barrier`: nothing lost, panics contained, exiting threads.

mod common;

use common::HeldReader;
use grace::rcu;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn barrier_waits_for_every_callback_from_every_thread() {
    let hits = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let hits = hits.clone();
            std::thread::spawn(move || {
                // More than a ring holds, so the full-ring path runs too.
                for i in 0..3000 {
                    let h = hits.clone();
                    if (i + t) % 97 == 0 {
                        rcu::call_hurry(move || {
                            h.fetch_add(1, Ordering::Relaxed);
                        });
                    } else {
                        rcu::call(move || {
                            h.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                }
            })
        })
        .collect();
    // The threads exit with callbacks still in their rings: nothing may be lost.
    for t in threads {
        t.join().unwrap();
    }
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), 4 * 3000);
}

#[test]
fn callbacks_run_after_a_grace_period() {
    // A reader inside a section when `call` is made holds the callback back.
    let reader = HeldReader::enter(false);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    rcu::call_hurry(move || r.store(true, Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !ran.load(Ordering::SeqCst),
        "callback ran while a pre-existing reader was inside"
    );
    reader.leave();
    rcu::barrier();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn lazy_callbacks_run_without_a_barrier() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    rcu::call(move || r.store(true, Ordering::SeqCst));
    // Bounded by the lazy delay (10 ms by default) plus a grace period.
    for _ in 0..2000 {
        if ran.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("a lazy callback did not run within 2 s");
}

#[test]
fn a_panicking_callback_is_caught_and_the_others_run() {
    let before = rcu::stats().callback_panics;
    let hits = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let h = hits.clone();
        rcu::call(move || {
            if i == 3 {
                panic!("callback {i} fails on purpose");
            }
            h.fetch_add(1, Ordering::Relaxed);
        });
    }
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), 9);
    assert!(rcu::stats().callback_panics > before);
    // The workers survived: more callbacks still run.
    let h = hits.clone();
    rcu::call(move || {
        h.fetch_add(1, Ordering::Relaxed);
    });
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), 10);
}

#[test]
fn large_closures_are_boxed_and_run() {
    let sum = Arc::new(AtomicUsize::new(0));
    let big = [3usize; 32];
    let s = sum.clone();
    rcu::call(move || {
        s.fetch_add(big.iter().sum(), Ordering::Relaxed);
    });
    rcu::barrier();
    assert_eq!(sum.load(Ordering::Relaxed), 96);
}

#[test]
fn barrier_inside_a_callback_is_refused_not_deadlocked() {
    let before = rcu::stats().callback_panics;
    rcu::call(rcu::barrier);
    rcu::barrier();
    assert!(rcu::stats().callback_panics > before);
}

#[test]
fn barrier_markers_are_not_counted_as_callbacks() {
    // Alone in this check: other tests in this binary run concurrently, so compare deltas
    // of a quiet moment only loosely, and exactly in the dedicated cookies binary.
    rcu::call(|| ());
    rcu::barrier();
    let s = rcu::stats();
    assert!(s.callbacks_invoked <= s.callbacks_queued, "{s:?}");
}

#[test]
fn stats_account_for_every_callback() {
    for _ in 0..100 {
        rcu::call(|| ());
    }
    rcu::barrier();
    let s = rcu::stats();
    assert!(s.callbacks_queued >= 100);
    assert!(s.callbacks_invoked >= 100);
}

/// A panic payload whose own destructor panics.
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the panic payload's destructor panics too");
    }
}

#[test]
fn a_payload_that_panics_on_drop_does_not_kill_the_workers() {
    // Enough callbacks that every worker (and so every shard's worker) meets one.
    for _ in 0..8 {
        rcu::call(|| std::panic::panic_any(Bomb));
    }
    rcu::barrier();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let r = ran.clone();
        rcu::call(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
    }
    rcu::barrier();
    assert_eq!(ran.load(Ordering::Relaxed), 100);
}

#[test]
fn barrier_covers_callbacks_in_flight_between_ring_and_shard() {
    // Reviewer's reproduction, shortened: producers count each returned `call`; a barrier
    // that starts after reading the count must see at least that many callbacks run, even
    // while other drainers (full rings, the GP thread) are moving records to shards.
    use std::sync::atomic::AtomicBool;
    let issued = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let (issued, ran, stop) = (issued.clone(), ran.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Bursts a little over a ring's worth (so full-ring drains race the
                    // barrier), then a pause: an unthrottled flood outruns the workers and
                    // every barrier would wait out an ever-growing backlog.
                    for _ in 0..300 {
                        let r = ran.clone();
                        rcu::call(move || {
                            r.fetch_add(1, Ordering::Relaxed);
                        });
                        issued.fetch_add(1, Ordering::Release);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        let before = issued.load(Ordering::Acquire);
        rcu::barrier();
        let after = ran.load(Ordering::Relaxed);
        assert!(
            after >= before,
            "barrier returned with {after} run of {before} issued before it"
        );
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    assert!(rounds >= 2, "only {rounds} barrier rounds ran");
}
