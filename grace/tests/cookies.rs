//! Polled grace-period cookies. This binary runs alone in its process so that the grace-period
//! counts it reads are its own.

mod common;

use common::HeldReader;
use grace::cookie::{Cookie, FullCookie, NUM_ACTIVE_POLL_OLDSTATE};
use grace::rcu;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

// One test function: the process-wide grace-period counters must not be disturbed by other
// tests running in parallel threads.
#[test]
fn cookie_semantics() {
    get_state_does_not_start_a_grace_period();
    start_poll_does();
    poll_and_cond_synchronize();
    completed_and_same_state();
    full_cookies_complete_on_expedited_grace_periods();
    poll_state_any_returns_the_first_expired();
    at_most_num_active_cookies_outstanding();
    concurrent_synchronize_callers_share_grace_periods();
}

fn get_state_does_not_start_a_grace_period() {
    let before = rcu::stats().grace_periods;
    let c = rcu::get_state();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!rcu::poll_state(c));
    assert_eq!(
        rcu::stats().grace_periods,
        before,
        "get_state started a grace period"
    );
}

fn start_poll_does() {
    let c = rcu::start_poll();
    for _ in 0..5000 {
        if rcu::poll_state(c) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("start_poll's grace period never completed");
}

fn poll_and_cond_synchronize() {
    let c = rcu::get_state();
    assert!(!rcu::poll_state(c));
    rcu::cond_synchronize(c);
    assert!(rcu::poll_state(c));
    // Old cookies stay completed forever.
    for _ in 0..5 {
        rcu::synchronize();
    }
    assert!(rcu::poll_state(c));
    // A cookie taken now is newer.
    let d = rcu::get_state();
    assert!(!rcu::poll_state(d));
    assert!(!rcu::same_state(c, d));
    rcu::synchronize();
    assert!(rcu::poll_state(d));
}

fn completed_and_same_state() {
    let done = rcu::get_completed_state();
    assert!(rcu::poll_state(done));
    assert_eq!(done, Cookie::completed());
    assert!(rcu::same_state(done, Cookie::completed()));
    // Two snapshots with no grace period between them are the same state.
    let a = rcu::get_state();
    let b = rcu::get_state();
    assert!(rcu::same_state(a, b));
    assert!(rcu::poll_state_full(FullCookie::completed()));
}

fn full_cookies_complete_on_expedited_grace_periods() {
    let normal = rcu::get_state();
    let full = rcu::get_state_full();
    assert!(!rcu::poll_state_full(full));
    let gps = rcu::stats().grace_periods;
    rcu::synchronize_expedited();
    assert!(
        rcu::poll_state_full(full),
        "expedited GP must complete a full cookie"
    );
    if rcu::stats().grace_periods == gps {
        // No normal grace period ran meanwhile: the plain cookie must still be waiting.
        assert!(
            !rcu::poll_state(normal),
            "an expedited GP completed a plain cookie"
        );
    }
    // And a normal grace period completes a full cookie too.
    let full = rcu::get_state_full();
    rcu::synchronize();
    assert!(rcu::poll_state_full(full));
    let full = rcu::start_poll_full();
    rcu::cond_synchronize_full(full);
    assert!(rcu::poll_state_full(full));
    assert!(full.normal().raw() != 0);
}

fn poll_state_any_returns_the_first_expired() {
    let old = rcu::get_state();
    rcu::synchronize();
    let fresh = rcu::get_state();
    assert_eq!(rcu::poll_state_any(&[fresh, old, fresh]), Some(1));
    assert_eq!(rcu::poll_state_any(&[fresh, fresh]), None);
    assert_eq!(rcu::poll_state_any(&[]), None);
}

fn at_most_num_active_cookies_outstanding() {
    // Take cookies continuously while grace periods run on another thread; at every moment
    // the cookies not yet completed have at most NUM_ACTIVE_POLL_OLDSTATE distinct values.
    let stop = Arc::new(AtomicBool::new(false));
    let gp = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rcu::synchronize();
            }
        })
    };
    let mut outstanding: Vec<Cookie> = Vec::new();
    for _ in 0..20_000 {
        outstanding.push(rcu::get_state());
        outstanding.retain(|c| !rcu::poll_state(*c));
        let distinct: HashSet<u64> = outstanding.iter().map(|c| c.raw()).collect();
        assert!(distinct.len() <= NUM_ACTIVE_POLL_OLDSTATE, "{distinct:?}");
    }
    stop.store(true, Ordering::Relaxed);
    gp.join().unwrap();
}

fn concurrent_synchronize_callers_share_grace_periods() {
    // Hold a reader so the first grace period stalls in WaitReaders, let 8 callers pile up
    // behind it, then release the reader: the 8 need about two grace periods, not 8.
    const CALLERS: usize = 8;
    let reader = HeldReader::enter(false);
    let before = rcu::stats().grace_periods;
    let start = Arc::new(Barrier::new(CALLERS));
    let returned = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (start, returned) = (start.clone(), returned.clone());
            std::thread::spawn(move || {
                start.wait();
                rcu::synchronize();
                returned.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        returned.load(Ordering::SeqCst),
        0,
        "synchronize returned under a reader"
    );
    reader.leave();
    for c in callers {
        c.join().unwrap();
    }
    let used = rcu::stats().grace_periods - before;
    assert!(
        (1..=3).contains(&used),
        "{CALLERS} concurrent callers used {used} grace periods"
    );
}
