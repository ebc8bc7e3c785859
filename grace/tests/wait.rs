//! Futures that wait for grace periods, on a tokio runtime: 10,000 waiters share one grace
//! period, cancellation, cookies awaited directly, `barrier_async`, on RCU and SRCU. The RCU
//! grace periods this binary counts are its own: one test function uses RCU.

use grace::srcu::Srcu;
use grace::{rcu, Flavor, RcuCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

const WAITERS: usize = 10_000;

#[test]
fn rcu_futures() {
    let rt = runtime();
    // Warm up: the engine's threads exist, nothing is in flight.
    rcu::synchronize();
    let before = rcu::stats();
    rt.block_on(async {
        // 10,000 waiters at once: taken together, then awaited by as many tasks.
        let futures: Vec<_> = (0..WAITERS).map(|_| rcu::synchronize_async()).collect();
        let mut set = tokio::task::JoinSet::new();
        for f in futures {
            set.spawn(f);
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    let after = rcu::stats();
    let gps = after.grace_periods - before.grace_periods;
    let wake_ups = after.callbacks_queued - before.callbacks_queued;
    // One grace period serves them all (two if one was in progress when the first cookie was
    // taken; one more if a late poll queued a second wake-up).
    assert!(gps <= 3, "{WAITERS} waiters took {gps} grace periods");
    assert!(
        wake_ups <= 3,
        "{WAITERS} waiters queued {wake_ups} wake-ups"
    );

    // A cookie is awaited directly, and `wait()` is the same.
    rt.block_on(async {
        let c = rcu::start_poll();
        c.await;
        assert!(rcu::poll_state(c));
        let c = rcu::get_state();
        c.wait().await;
        assert!(rcu::poll_state(c));
        // A completed cookie is ready at once.
        rcu::get_completed_state().await;
    });

    // Cancelled while waiting: dropped by the timeout, then everything still completes.
    rt.block_on(async {
        for _ in 0..100 {
            let _ = tokio::time::timeout(Duration::ZERO, rcu::synchronize_async()).await;
        }
        rcu::synchronize_async().await;
    });

    // barrier_async waits for the callbacks queued before it.
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let r = ran.clone();
        rcu::call(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    }
    rt.block_on(rcu::barrier_async());
    assert_eq!(ran.load(Ordering::SeqCst), 10);

    // The old value of a cell, freed once the grace period has passed.
    let cell = Arc::new(RcuCell::new(String::from("v1")));
    rt.block_on(async {
        let old = cell.replace(String::from("v2"));
        rcu::synchronize_async().await;
        let old = old.try_reclaim().ok().expect("the grace period has passed");
        assert_eq!(*old, "v1");
    });
}

#[test]
fn srcu_waiters_share_a_grace_period() {
    let rt = runtime();
    let d: &'static Srcu = Box::leak(Box::new(Srcu::new().unwrap()));
    d.synchronize();
    let before = d.stats().grace_periods;
    rt.block_on(async {
        let futures: Vec<_> = (0..WAITERS).map(|_| d.synchronize_async()).collect();
        let mut set = tokio::task::JoinSet::new();
        for f in futures {
            set.spawn(f);
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    let gps = d.stats().grace_periods - before;
    assert!(gps <= 3, "{WAITERS} waiters took {gps} SRCU grace periods");

    rt.block_on(async {
        let c = d.start_poll();
        d.wait_for(c).await;
        assert!(d.poll_state(c));
        for _ in 0..100 {
            let _ = tokio::time::timeout(Duration::ZERO, d.synchronize_async()).await;
        }
    });

    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    d.call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    rt.block_on((&d).barrier_async()); // on the `&'static Srcu`: a `Srcu` is not `Clone`
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reader_across_an_await_delays_only_its_own_domain() {
    // A task holding a raw SRCU section across awaits: another domain's futures complete.
    let rt = runtime();
    let held = Arc::new(Srcu::new().unwrap());
    let other = Arc::new(Srcu::new().unwrap());
    let token = held.read_lock_raw();
    rt.block_on(async {
        other.synchronize_async().await;
        let c = held.get_state();
        let waiting = tokio::time::timeout(Duration::from_millis(20), held.wait_for(c)).await;
        assert!(
            waiting.is_err(),
            "the held domain's grace period waits for its reader"
        );
    });
    held.read_unlock_raw(token);
    rt.block_on(held.synchronize_async());
}
