//! The invocation switch against the shrinker against `barrier`, model-checked: the race of
//! the kernel's lazy-callback shrinker against switching callback offloading at run time.
//!
//! From the state of `loom_invoker` (callbacks 0 and 1 ready for a queuing thread in local
//! mode, callback 2 waiting for the next grace period), at once:
//!
//! * the **switcher** turns the shard to offloaded mode and settles it with `force`, handing
//!   ready callbacks to a worker, as `Engine::set_invocation_of` does;
//! * the **shrinker** `try_lock`s the shard (it never blocks on the switch, or on anything
//!   else), claims one node of ready callbacks, runs it on its own thread and releases the
//!   shard, as `Engine::help` does;
//! * the **barrier** (the main thread) entrains its marker and settles with `force`;
//! * the **grace-period thread** ends the next grace period and settles until all has run.
//!
//! In every interleaving: no deadlock, every callback runs exactly once and in FIFO order (the
//! marker last), the shard ends idle and offloaded. A negative model lets the shrinker take
//! ready callbacks without marking the shard busy, and loom finds a later callback overtaking
//! them.

use super::loom_invoker::{barrier, gp_thread, run_nodes, setup, worker, Model, CALLBACKS};
use crate::callback::shard::Settle;
use crate::sync::{lock, Ordering};
use loom::thread;
use std::time::{Duration, Instant};

fn switch_to_offloaded(m: &Model) {
    let claimed = {
        let mut l = lock(&m.shard.list);
        l.local = false;
        m.shard.set_ready(false);
        l.settle(Instant::now(), Duration::from_secs(3600), true) == Settle::Worker
    };
    if claimed {
        worker(m);
    }
}

fn shrink(m: &Model, mark_busy: bool) {
    let batch = {
        let Ok(mut l) = m.shard.list.try_lock() else {
            return;
        };
        if mark_busy {
            l.claim_any(1)
        } else if !l.busy && !l.done.is_empty() {
            Some(l.take_done_upto(1)) // BUG under test: no `busy`
        } else {
            None
        }
    };
    let Some(b) = batch else { return };
    run_nodes(b);
    if mark_busy {
        let settled = lock(&m.shard.list).release_local(Instant::now(), Duration::ZERO, false);
        if settled == Settle::Worker {
            m.shard.set_ready(false);
            worker(m);
        }
    }
}

fn model(mark_busy: bool) {
    let (m, cur) = setup();
    let total = CALLBACKS + 1;
    let gp = {
        let m = m.clone();
        thread::spawn(move || gp_thread(&m, cur, total))
    };
    let switcher = {
        let m = m.clone();
        thread::spawn(move || switch_to_offloaded(&m))
    };
    let shrinker = {
        let m = m.clone();
        thread::spawn(move || shrink(&m, mark_busy))
    };
    barrier(&m);
    switcher.join().unwrap();
    shrinker.join().unwrap();
    gp.join().unwrap();
    assert_eq!(m.ran.load(Ordering::Relaxed), total);
    let l = lock(&m.shard.list);
    assert!(l.is_idle(), "the shard is left idle");
    assert!(!l.local, "the switch stuck");
}

#[test]
fn switch_vs_shrinker_vs_barrier() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(true));
}

#[test]
#[should_panic(expected = "out of order")]
fn negative_shrinker_without_busy_lets_later_callbacks_overtake() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(false));
}
