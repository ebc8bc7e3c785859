//! Who runs a shard's ready callbacks, model-checked: a queuing thread (local invocation)
//! against the grace-period thread handing the shard to a worker, against `barrier`.
//!
//! The shard starts with callbacks 0 and 1 ready (their grace period ended) and callback 2
//! waiting for the next grace period. Then, at once:
//!
//! * the **owner** (a thread calling `call`) looks at the `ready` hint, `try_lock`s, claims
//!   the ready callbacks, runs them outside the lock and releases the shard, as
//!   `Engine::invoke_local` does;
//! * the **grace-period thread** ends the next grace period and, cycle after cycle, advances
//!   and settles the shard with a patience of zero (the second look at unclaimed local work
//!   hands it to a worker), running the worker's loop itself when it claims the shard, as
//!   `Engine::advance_all` and `Engine::worker` do;
//! * optionally a **barrier** entrains its marker and settles with `force`, as
//!   `Engine::barrier` does.
//!
//! In every interleaving each callback runs exactly once, in FIFO order (the marker last), and
//! everything runs without the owner coming back: nothing waits forever for a queuing thread.
//! A negative model claims without marking the shard busy, and loom finds the callbacks of the
//! next grace period overtaking the claimed ones.

use crate::callback::seglist::Node;
use crate::callback::shard::{Invocation, Settle, Shard};
use crate::callback::Callback;
use crate::gp::seq;
use crate::sync::{lock, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::{Duration, Instant};

/// Callbacks 0..CALLBACKS are real; the barrier marker, when present, is number CALLBACKS.
pub(super) const CALLBACKS: usize = 3;

pub(super) struct Model {
    pub(super) shard: Shard,
    /// How many callbacks have run; callback `i` must see `i`.
    pub(super) ran: AtomicUsize,
}

pub(super) fn callback(m: &Arc<Model>, i: usize) -> Callback {
    let m = m.clone();
    Callback::new(move || {
        // Relaxed: the order of runs is what is checked; the shard's `busy` hand-over (under
        // its lock) is what must order them.
        let n = m.ran.fetch_add(1, Ordering::Relaxed);
        assert_eq!(n, i, "callback {i} ran out of order, or twice");
    })
}

pub(super) fn run_nodes(b: crate::callback::seglist::Batch) {
    for mut node in b.into_nodes() {
        for cb in node.cbs.drain(..) {
            cb.run();
        }
    }
}

/// Grace-period numbers: callbacks 0 and 1 wait for GP 1 (ended before the model starts),
/// callback 2 for GP 2 (ended by the grace-period thread during the model).
pub(super) fn setup() -> (Arc<Model>, u64) {
    let m = Arc::new(Model {
        shard: Shard::new(Invocation::Local),
        ran: AtomicUsize::new(0),
    });
    let s0 = 0u64;
    let gp1 = seq::snapshot(s0);
    let s1 = seq::started(s0);
    let gp2 = seq::snapshot(s1);
    {
        let mut l = lock(&m.shard.list);
        l.push(gp1, Node::new(vec![callback(&m, 0), callback(&m, 1)]), s1);
        l.push(gp2, Node::new(vec![callback(&m, 2)]), s1);
        l.advance(seq::ended(s1));
        // The grace-period thread published the first settle before the model starts.
        assert_eq!(
            l.settle(Instant::now(), Duration::ZERO, false),
            Settle::Owner
        );
        m.shard.set_ready(true);
    }
    (m, seq::ended(seq::started(seq::ended(s1))))
}

/// `Engine::invoke_local`, with `busy` optionally left out (the negative model).
fn owner(m: &Model, mark_busy: bool) {
    if !m.shard.looks_ready() {
        return;
    }
    let batch = {
        let Ok(mut l) = m.shard.list.try_lock() else {
            return;
        };
        let b = if mark_busy {
            l.claim_local(usize::MAX)
        } else if !l.busy && !l.done.is_empty() {
            Some(l.take_done()) // BUG under test: no `busy`
        } else {
            None
        };
        match b {
            Some(b) => b,
            None => return,
        }
    };
    m.shard.set_ready(false);
    run_nodes(batch);
    if mark_busy {
        let settled = lock(&m.shard.list).release_local(Instant::now(), Duration::ZERO, false);
        match settled {
            Settle::Worker => {
                m.shard.set_ready(false);
                worker(m);
            }
            Settle::Owner => m.shard.set_ready(true),
            Settle::Idle => {}
        }
    }
}

/// `Engine::worker`'s loop for one claimed shard.
pub(super) fn worker(m: &Model) {
    loop {
        let b = {
            let mut l = lock(&m.shard.list);
            let b = l.take_done();
            if b.is_empty() {
                l.busy = false;
                return;
            }
            b
        };
        run_nodes(b);
    }
}

/// The grace-period thread: end GP 2 (`cur`), then advance and settle until everything that
/// was queued has run.
pub(super) fn gp_thread(m: &Model, cur: u64, total: usize) {
    while m.ran.load(Ordering::Relaxed) < total {
        let claimed = {
            let mut l = lock(&m.shard.list);
            l.advance(cur);
            match l.settle(Instant::now(), Duration::ZERO, false) {
                Settle::Worker => {
                    m.shard.set_ready(false);
                    true
                }
                Settle::Owner => {
                    m.shard.set_ready(true);
                    false
                }
                Settle::Idle => false,
            }
        };
        if claimed {
            worker(m);
        }
        thread::yield_now();
    }
}

pub(super) fn barrier(m: &Arc<Model>) {
    let claimed = {
        let mut l = lock(&m.shard.list);
        let marker = Node::internal(callback(m, CALLBACKS));
        match l.entrain(marker) {
            Ok(()) => l.settle(Instant::now(), Duration::from_secs(3600), true) == Settle::Worker,
            Err(mut back) => {
                // Idle: everything queued before the barrier has run; nothing to wait for.
                for cb in back.cbs.drain(..) {
                    cb.discard();
                }
                // Relaxed: as in `callback`.
                let n = m.ran.fetch_add(1, Ordering::Relaxed);
                assert_eq!(n, CALLBACKS, "an idle shard with callbacks not run");
                false
            }
        }
    };
    if claimed {
        worker(m);
    }
}

fn model(with_barrier: bool, mark_busy: bool) {
    let (m, cur) = setup();
    let total = CALLBACKS + usize::from(with_barrier);
    let gp = {
        let m = m.clone();
        thread::spawn(move || gp_thread(&m, cur, total))
    };
    let b = with_barrier.then(|| {
        let m = m.clone();
        thread::spawn(move || barrier(&m))
    });
    owner(&m, mark_busy);
    gp.join().unwrap();
    if let Some(b) = b {
        b.join().unwrap();
    }
    assert_eq!(m.ran.load(Ordering::Relaxed), total);
    assert!(lock(&m.shard.list).is_idle(), "the shard is left idle");
}

#[test]
fn owner_vs_gp_thread_handoff() {
    loom::model(|| model(false, true));
}

#[test]
fn owner_vs_gp_thread_vs_barrier() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(true, true));
}

#[test]
#[should_panic(expected = "out of order")]
fn negative_claim_without_busy_lets_later_callbacks_overtake() {
    loom::model(|| model(false, false));
}
