//! Where RCU callbacks run: on the threads that queued them (`Invocation::Local`, the
//! default) or on workers (`Invocation::Offloaded`), and the switch between the two while
//! callbacks flood, `barrier`s run and other switches race.
//!
//! Every test here holds in both modes; the ones that look at *where* callbacks ran set the
//! mode they need, and the binary's tests are serialized by `MODE` so that they do not flip it
//! under each other.

use grace::rcu::{self, Invocation};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Serializes the tests of this binary: the mode is process-wide.
static MODE: Mutex<()> = Mutex::new(());

fn exclusive(mode: Invocation) -> MutexGuard<'static, ()> {
    let g = MODE.lock().unwrap_or_else(|p| p.into_inner());
    rcu::set_callback_invocation(mode);
    g
}

/// Counts drops of a 64-byte payload: what a callback that frees an object frees.
struct Payload {
    _bytes: [u8; 64],
    drops: Arc<AtomicUsize>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_flooding_thread_frees_its_own_objects_in_local_mode() {
    let _m = exclusive(Invocation::Local);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran_on = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let before = rcu::stats().callbacks_invoked_locally;
    let n = 200_000;
    let me = std::thread::current().id();
    let start = Instant::now();
    let mut queued = 0;
    // Queue until some callbacks ran locally (a grace period must end while we queue; on a
    // loaded machine that can take a while, so the loop is bounded by time, not count).
    while queued < n
        || (rcu::stats().callbacks_invoked_locally == before
            && start.elapsed() < Duration::from_secs(20))
    {
        let p = Box::new(Payload {
            _bytes: [queued as u8; 64],
            drops: drops.clone(),
        });
        let on = ran_on.clone();
        rcu::call(move || {
            if std::thread::current().id() == me {
                on.lock().unwrap().insert(me);
            }
            drop(p);
        });
        queued += 1;
    }
    rcu::barrier();
    assert_eq!(
        drops.load(Ordering::Relaxed),
        queued,
        "each object freed once"
    );
    assert!(
        rcu::stats().callbacks_invoked_locally > before,
        "no callback ran on the queuing thread"
    );
    assert!(ran_on.lock().unwrap().contains(&me));
}

#[test]
fn offloaded_mode_never_runs_callbacks_on_the_queuing_thread() {
    let _m = exclusive(Invocation::Offloaded);
    let me = std::thread::current().id();
    let wrong = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let n = 50_000;
    for _ in 0..n {
        let (w, h) = (wrong.clone(), hits.clone());
        rcu::call(move || {
            if std::thread::current().id() == me {
                w.fetch_add(1, Ordering::Relaxed);
            }
            h.fetch_add(1, Ordering::Relaxed);
        });
    }
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), n);
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    rcu::set_callback_invocation(Invocation::Local);
}

#[test]
fn callbacks_never_run_inside_the_queuing_threads_read_section() {
    let _m = exclusive(Invocation::Local);
    let inside = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let n = 100_000;
    // Alternate: bursts of calls inside a section, bursts outside, so ready callbacks meet
    // the queuing thread both ways.
    for burst in 0..(n / 1000) {
        let g = (burst % 2 == 0).then(rcu::read_lock);
        for _ in 0..1000 {
            let (i, h) = (inside.clone(), hits.clone());
            rcu::call(move || {
                if rcu::is_reading() {
                    i.fetch_add(1, Ordering::Relaxed);
                }
                h.fetch_add(1, Ordering::Relaxed);
            });
        }
        drop(g);
    }
    rcu::barrier();
    assert_eq!(hits.load(Ordering::Relaxed), n);
    assert_eq!(
        inside.load(Ordering::Relaxed),
        0,
        "a callback ran inside a read-side section"
    );
}

#[test]
fn callbacks_of_a_thread_that_goes_idle_still_run_without_a_barrier() {
    let _m = exclusive(Invocation::Local);
    let hits = Arc::new(AtomicUsize::new(0));
    let n = 5_000;
    let h = hits.clone();
    // The queuing thread stays alive but never calls again.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let h = h.clone();
            rcu::call(move || {
                h.fetch_add(1, Ordering::Relaxed);
            });
        }
        let _ = rx.recv();
    });
    // Liveness, not speed: a generous bound that only a lost hand-off misses.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hits.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        n,
        "an idle thread's callbacks never ran"
    );
    tx.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn barrier_and_nested_calls_from_a_locally_run_callback() {
    let _m = exclusive(Invocation::Local);
    let refused = Arc::new(AtomicUsize::new(0));
    let nested = Arc::new(AtomicUsize::new(0));
    let n = 50_000;
    for i in 0..n {
        let (r, c) = (refused.clone(), nested.clone());
        rcu::call(move || {
            if i % 10_000 == 0 {
                // A barrier here would wait for this very run: refused with a panic, caught.
                if std::panic::catch_unwind(rcu::barrier).is_err() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A callback may queue another; it runs after a later grace period.
            let c2 = c.clone();
            if i % 100 == 0 {
                rcu::call(move || {
                    c2.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    rcu::barrier();
    rcu::barrier(); // the nested calls were queued by callbacks the first barrier waited for
    assert_eq!(refused.load(Ordering::Relaxed), n / 10_000);
    assert_eq!(nested.load(Ordering::Relaxed), n / 100);
}

/// The switch, `barrier` and a callback flood at once: nothing lost, nothing run twice,
/// every `barrier` waits for everything queued before it, no deadlock.
#[test]
fn switching_modes_during_a_flood_with_barriers() {
    let _m = exclusive(Invocation::Local);
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let (stop, queued, ran) = (stop.clone(), queued.clone(), ran.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Bounded: a barrier that takes long on a loaded machine must not let the
                    // flood take the machine's memory with it.
                    while queued
                        .load(Ordering::Relaxed)
                        .saturating_sub(ran.load(Ordering::Relaxed))
                        > 1 << 20
                    {
                        std::thread::yield_now();
                    }
                    let r = ran.clone();
                    let p = Box::new([i; 8]);
                    rcu::call(move || {
                        drop(p);
                        r.fetch_add(1, Ordering::Relaxed);
                    });
                    queued.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let switcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut local = false;
            while !stop.load(Ordering::Relaxed) {
                rcu::set_callback_invocation(if local {
                    Invocation::Local
                } else {
                    Invocation::Offloaded
                });
                local = !local;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    for _ in 0..20 {
        // Everything queued before the barrier (counted before the call) must have run once
        // it returns; the count only grows, so `ran` at return is at least what was queued
        // at entry.
        let before = queued.load(Ordering::SeqCst);
        rcu::barrier();
        let after = ran.load(Ordering::SeqCst);
        assert!(
            after >= before,
            "barrier returned with {} callbacks queued before it not run",
            before - after
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for t in floods {
        t.join().unwrap();
    }
    switcher.join().unwrap();
    rcu::set_callback_invocation(Invocation::Local);
    rcu::barrier();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        queued.load(Ordering::Relaxed),
        "a callback was lost or run twice"
    );
}
