//! `Pending` end to end on a hand-driven flavor: grace periods and callbacks happen only when
//! the test says so, so the tests are deterministic, and they start no RCU engine threads
//! (Miri runs them with its leak check on; the worker thread is joined by `Drop`).

use super::{Pending, Process, Run};
use crate::alloc::{inject, FailurePlan};
use crate::cookie::Cookie;
use crate::flavor::Flavor;
use crate::gp::seq;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Cb = Box<dyn FnOnce() + Send>;

/// A flavor whose grace periods run only when driven, with the real cookie arithmetic.
/// Callbacks run on the thread that drives them.
#[derive(Default)]
struct Manual {
    seq: AtomicU64,
    callbacks: Mutex<Vec<(Cookie, Cb)>>,
    start_polls: AtomicUsize,
}

impl Manual {
    fn gp(&self) {
        let s = self.seq.load(Ordering::SeqCst);
        self.seq
            .store(seq::ended(seq::started(s)), Ordering::SeqCst);
    }

    /// One grace period, then the callbacks it made due (not those they queue in turn).
    fn drive(&self) {
        self.gp();
        let due: Vec<Cb> = {
            let mut q = self.callbacks.lock().unwrap();
            let (due, keep): (Vec<_>, Vec<_>) = q.drain(..).partition(|(c, _)| self.poll_state(*c));
            *q = keep;
            due.into_iter().map(|(_, f)| f).collect()
        };
        for f in due {
            f();
        }
    }

    fn queued(&self) -> usize {
        self.callbacks.lock().unwrap().len()
    }
}

impl Flavor for Manual {
    type Guard<'a> = ();
    type Issuer = crate::Rcu;
    fn read_lock(&self) {}
    fn synchronize(&self) {
        self.gp();
    }
    fn synchronize_expedited(&self) {
        self.gp();
    }
    fn get_state(&self) -> Cookie {
        Cookie::from_seq(seq::snapshot(self.seq.load(Ordering::SeqCst)))
    }
    fn start_poll(&self) -> Cookie {
        self.start_polls.fetch_add(1, Ordering::Relaxed);
        self.get_state()
    }
    fn poll_state(&self, cookie: Cookie) -> bool {
        seq::done(self.seq.load(Ordering::SeqCst), cookie.seq)
    }
    fn cookie_from_raw(&self, raw: u64) -> Cookie {
        Cookie::from_seq(raw)
    }
    fn call<C: FnOnce() + Send + 'static>(&self, f: C) {
        let c = self.get_state();
        self.callbacks.lock().unwrap().push((c, Box::new(f)));
    }
    fn call_hurry<C: FnOnce() + Send + 'static>(&self, f: C) {
        self.call(f)
    }
    fn barrier(&self) {
        let n = self.queued();
        if n > 0 {
            self.drive();
        }
    }
}

/// An object that records its own processing.
#[derive(Debug)]
struct Obj {
    id: usize,
    seen: Seen,
}

/// Ids of the objects processed, in order.
type Seen = Arc<Mutex<Vec<usize>>>;

fn counting(flavor: &Arc<Manual>, shards: usize) -> (Pending<Obj, Arc<Manual>>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pending::with_shards(
        flavor.clone(),
        Process::with(|o: Box<Obj>| o.seen.lock().unwrap().push(o.id)),
        shards,
    );
    (p, seen)
}

fn obj(id: usize, seen: &Seen) -> Box<Obj> {
    Box::new(Obj {
        id,
        seen: seen.clone(),
    })
}

#[test]
fn processed_once_each_and_only_after_the_grace_period() {
    let m = Arc::new(Manual::default());
    let (p, seen) = counting(&m, 2);
    let n = 9; // several chunks under Miri's two-slot chunks
    for i in 0..n {
        p.enqueue(obj(i, &seen));
    }
    assert_eq!(m.queued(), 1.min(n) * p.stats().armed_shards);
    assert!(seen.lock().unwrap().is_empty());
    p.barrier(); // waits a grace period and a worker pass
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let s = p.stats();
    assert_eq!(
        (s.enqueued, s.processed, s.pending),
        (n as u64, n as u64, 0)
    );
    drop(p);
    assert_eq!(seen.lock().unwrap().len(), n);
    assert_eq!(Arc::strong_count(&m), 1, "no callback outlives the Pending");
}

#[test]
fn callback_expires_rearms_and_disarms() {
    let m = Arc::new(Manual::default());
    let (p, seen) = counting(&m, 1);
    p.enqueue(obj(0, &seen));
    assert_eq!(m.queued(), 1);
    // A grace period starts (the callback's); an object enqueued now needs the next one.
    let s = m.seq.load(Ordering::SeqCst);
    m.seq.store(seq::started(s), Ordering::SeqCst);
    p.enqueue(obj(1, &seen));
    assert_eq!(
        m.start_polls.load(Ordering::Relaxed),
        1,
        "armed: start_poll instead"
    );
    m.seq.store(seq::ended(seq::started(s)), Ordering::SeqCst);
    // The callback fires: object 0 is due, object 1 is not, so it re-arms.
    let due = m.callbacks.lock().unwrap().pop().unwrap().1;
    due();
    assert_eq!(m.queued(), 1, "re-armed for the object still waiting");
    p.barrier();
    assert_eq!(seen.lock().unwrap().len(), 2);
    // Its next run finds nothing waiting and disarms.
    m.drive();
    assert_eq!(m.queued(), 0);
    assert_eq!(p.stats().armed_shards, 0);
}

#[test]
fn dequeue_hands_back_unexpired_objects_never_processed() {
    let m = Arc::new(Manual::default());
    let (p, seen) = counting(&m, 1);
    for i in 0..5 {
        p.enqueue(obj(i, &seen));
    }
    let r = p.dequeue().unwrap();
    assert_eq!(r.id, 4, "the newest first");
    assert!(!r.grace_period_elapsed());
    let r = r.try_into_box().unwrap_err(); // still waiting: the handle comes back
    let r2 = p.dequeue_where(|o| o.id == 1).unwrap();
    assert_eq!(r2.id, 1);
    // into_box waits for the object's own cookie (the whole batch's).
    let b = r2.into_box();
    assert!(r.grace_period_elapsed());
    let owned = r.try_into_box().ok().unwrap();
    p.barrier();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![0, 2, 3], "dequeued objects are never processed");
    assert_eq!((b.id, owned.id), (1, 4));
    assert_eq!(p.stats().dequeued, 2);
    // A dropped handle goes back and is processed after all.
    p.enqueue(obj(7, &seen));
    drop(p.dequeue_from_all().unwrap());
    p.barrier();
    assert!(seen.lock().unwrap().contains(&7));
    assert!(p.dequeue().is_none());
}

#[test]
fn allocation_failure_walks_the_fallback_ladder_and_loses_nothing() {
    let m = Arc::new(Manual::default());
    let (p, seen) = counting(&m, 1);
    p.enqueue(obj(0, &seen)); // starts the worker, uses the reserve chunk
    let per_chunk = super::CHUNK_SLOTS;
    {
        // Chunks fail, nodes succeed: fill the chunk, then fallback nodes.
        let _oom = inject(FailurePlan::AllAfter(0));
        for i in 1..per_chunk {
            p.enqueue(obj(i, &seen));
        }
        assert_eq!(
            p.stats().chunk_alloc_failures,
            0,
            "the chunk still had room"
        );
    }
    {
        let _chunks_fail = inject(FailurePlan::Nth(1));
        p.enqueue(obj(100_000, &seen)); // chunk fails, node succeeds
    }
    let s = p.stats();
    assert_eq!((s.chunk_alloc_failures, s.fallback_nodes), (1, 1));
    {
        // Everything fails: try_enqueue gives back, enqueue waits for a grace period itself.
        let _oom = inject(FailurePlan::AllAfter(0));
        let back = p.try_enqueue(obj(200_000, &seen)).unwrap_err();
        assert_eq!(back.id, 200_000);
        p.enqueue(back);
        assert!(
            seen.lock().unwrap().contains(&200_000),
            "processed at once, after a GP"
        );
    }
    let s = p.stats();
    assert_eq!(
        (s.given_back, s.synchronous, s.node_alloc_failures),
        (1, 1, 2)
    );
    drop(p);
    let got: HashSet<usize> = seen.lock().unwrap().iter().copied().collect();
    let want: HashSet<usize> = (0..per_chunk).chain([100_000, 200_000]).collect();
    assert_eq!(got, want);
    assert_eq!(seen.lock().unwrap().len(), want.len(), "exactly once");
}

#[test]
fn without_a_worker_thread_the_callback_processes_inline() {
    let m = Arc::new(Manual::default());
    let (p, seen) = counting(&m, 1);
    {
        // The spare chunk takes the object without allocating; starting the worker is the
        // first fallible allocation, and it fails.
        let _fail = inject(FailurePlan::Nth(1));
        p.enqueue(obj(0, &seen));
    }
    assert!(p.stats().inline_processing);
    m.drive();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![0],
        "processed by the callback itself"
    );
    p.enqueue(obj(1, &seen));
    drop(p);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn run_mode_and_caught_panics() {
    let m = Arc::new(Manual::default());
    let hits = Arc::new(AtomicUsize::new(0));
    let p: Pending<Box<dyn FnOnce() + Send>, Arc<Manual>> =
        Pending::with_shards(m.clone(), Process::run(), 1);
    for i in 0..4 {
        let h = hits.clone();
        p.enqueue(Box::new(Box::new(move || {
            if i == 2 {
                panic!("object {i} panics");
            }
            h.fetch_add(1, Ordering::Relaxed);
        })));
    }
    p.barrier();
    assert_eq!(hits.load(Ordering::Relaxed), 3);
    assert_eq!(p.stats().process_panics, 1);
    assert_eq!(p.stats().processed, 4);
}

#[test]
fn free_mode_drops_each_box_once() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let m = Arc::new(Manual::default());
    let drops = Arc::new(AtomicUsize::new(0));
    let p = Pending::with_shards(m.clone(), Process::free(), 2);
    for _ in 0..7 {
        p.enqueue(Box::new(Tracked(drops.clone())));
    }
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(p);
    assert_eq!(drops.load(Ordering::Relaxed), 7);
}

#[test]
fn a_custom_run_type() {
    struct Flag(Arc<AtomicBool>);
    impl Run for Flag {
        fn run(self: Box<Self>) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let m = Arc::new(Manual::default());
    let f = Arc::new(AtomicBool::new(false));
    let p = Pending::with_shards(m, Process::run(), 1);
    p.enqueue(Box::new(Flag(f.clone())));
    drop(p);
    assert!(f.load(Ordering::Relaxed));
}

#[test]
fn pending_is_send_and_sync_for_send_only_objects() {
    fn both<X: Send + Sync>() {}
    both::<Pending<std::cell::Cell<u8>, Arc<Manual>>>();
    both::<super::Reused<'static, u8, Arc<Manual>>>();
}
