//! The pending-object shard, model-checked: enqueue, arm, expire, process and dequeue race
//! each other, and still every object is processed or dequeued exactly once, never before its
//! grace period, and never stranded.
//!
//! The flavor is replaced by a fake one: a grace-period sequence (the real cookie arithmetic of
//! `gp::seq`) advanced by a "grace-period thread", and `call` modelled as a counter of queued
//! callbacks that the same thread runs after each grace period, exactly as the flavor would:
//! a callback queued before a grace period started runs after it ended. The worker is a thread
//! that processes the expired batch when kicked. All of it goes through the real
//! `ShardState` behind a loom mutex, with one-slot chunks so that every enqueue crosses a
//! chunk boundary (preallocate-then-retry, spares).
//!
//! Each object records, before it is enqueued, a cookie taken at that point: a grace period
//! that ends after it has waited out every reader that could have found the object. The
//! processing step asserts that cookie has completed (no early free), writes a poison value
//! into the object's loom `UnsafeCell` (so a dequeuer's read that is not ordered with it is a
//! causality violation), and marks the object; dequeuers mark it too, and the end of the model
//! checks exactly-once. The end also checks that objects never get stranded: running queued
//! callbacks and kicked passes until there are none must leave the shard empty.
//!
//! Negative checks prove the models see the bugs they guard against: a callback that disarms
//! although objects wait (stranded objects), and an expiry that ignores the cookie (early
//! processing), must both fail.

use crate::cookie::RawCookie as Cookie;
use crate::gp::seq;
use crate::pending::chunks::{ChunkPile, FreeChunk};
use crate::pending::shard::{mutation, After, Clock, Garbage, GpAction, Push, ShardState};
use crate::sync::{lock, AtomicU64, AtomicU8, AtomicUsize, Mutex, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// One slot per chunk: every push is at a chunk boundary.
const CAP: usize = 1;

const LIVE: u8 = 0;
const PROCESSED: u8 = 1;
const DEQUEUED: u8 = 2;
const POISON: u64 = 0xdead;

struct Obj {
    /// A cookie taken just before the (latest) enqueue: processing before it completes is
    /// early.
    before: AtomicU64,
    fate: AtomicU8,
    payload: UnsafeCell<u64>,
}

/// The fake flavor: a sequence only the grace-period thread advances.
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn get_state(&self) -> Cookie {
        // SeqCst: the stand-in for the flavor's full fence in `get_state`.
        Cookie::from_seq(seq::snapshot(self.0.load(Ordering::SeqCst)))
    }
    fn poll_state(&self, c: Cookie) -> bool {
        // SeqCst: as the flavor's Acquire load of its sequence, and more.
        seq::done(self.0.load(Ordering::SeqCst), c.seq)
    }
}

impl FakeClock {
    fn gp(&self) {
        // SeqCst: one writer; the two steps are the start and the end of a grace period.
        let s = self.0.load(Ordering::SeqCst);
        self.0.store(seq::started(s), Ordering::SeqCst);
        self.0.store(seq::ended(seq::started(s)), Ordering::SeqCst);
    }
}

struct Shared {
    shard: Mutex<ShardState<CAP>>,
    clock: FakeClock,
    /// Callbacks queued with the fake `call` and not yet run.
    queued: AtomicUsize,
    /// Worker passes asked for and not yet run.
    kicks: AtomicUsize,
    /// The newest cookie a grace period was requested for (by `call` or `start_poll`, as a
    /// snapshot taken when the request was made, which is what the flavor's `start_poll`
    /// returns): every waiting batch's cookie must be covered by it.
    requested: AtomicU64,
    /// Objects processed before their grace period; checked by `finish`, after the joins (a
    /// panic while another model thread is still alive makes loom abort the whole process).
    early: AtomicUsize,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            shard: Mutex::new(ShardState::new()),
            clock: FakeClock(AtomicU64::new(0)),
            queued: AtomicUsize::new(0),
            kicks: AtomicUsize::new(0),
            requested: AtomicU64::new(seq::COMPLETED),
            early: AtomicUsize::new(0),
        })
    }

    /// What `Pending::follow_up` does after unlocking.
    fn follow_up(&self, after: After) {
        if after.kick {
            // SeqCst (here and for the other model counters): the model's own bookkeeping,
            // ordered as strongly as possible so that only the shard's behaviour is explored.
            self.kicks.fetch_add(1, Ordering::SeqCst);
        }
        if after.gp == GpAction::Call {
            self.queued.fetch_add(1, Ordering::SeqCst);
        }
        if after.gp != GpAction::Nothing {
            // The grace periods themselves run anyway (the fake grace-period thread); what is
            // checked is that a request covering each waiting cookie was made (see `finish`).
            self.requested
                .fetch_max(self.clock.get_state().seq, Ordering::SeqCst);
        }
    }

    /// `Pending::enqueue_ptr` + `enqueue_slow`: push, allocating a chunk outside the lock on
    /// NeedChunk and retrying.
    fn enqueue(&self, o: *mut Obj) {
        let mut prealloc = None;
        loop {
            let r = lock(&self.shard).push(o.cast(), &self.clock, &mut prealloc);
            drop(prealloc.take());
            match r {
                Push::Done(after) => return self.follow_up(after),
                Push::NeedChunk { kick } => {
                    self.follow_up(After {
                        gp: GpAction::Nothing,
                        kick,
                        help: false,
                        held_at_chunk: None,
                    });
                    prealloc = Some(FreeChunk::try_new().expect("memory"));
                }
            }
        }
    }

    /// One grace period, then run one queued callback if one was queued before it started
    /// (`Inner::after_gp`: expire, kick, re-arm or disarm).
    fn gp_and_callback(&self) {
        let had = self.queued.load(Ordering::SeqCst) > 0;
        self.clock.gp();
        if had {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let (kick, rearm) = lock(&self.shard).after_gp(&self.clock);
            if kick {
                self.kicks.fetch_add(1, Ordering::SeqCst);
            }
            if rearm {
                self.queued.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// A worker pass if one was asked for (`Inner::process_all` for one shard).
    fn work(&self) {
        if self.kicks.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.kicks.fetch_sub(1, Ordering::SeqCst);
        self.pass();
    }

    /// A worker pass, asked for or not: a pass may come at any time (any shard's expiry, a
    /// `barrier`, a drop requests one for all shards), so an unrequested one must be harmless.
    fn pass(&self) {
        loop {
            // One chunk per slice (as the worker's and helpers' bounded slices).
            let mut batch = lock(&self.shard).take_expired_slice(&self.clock, 1, true);
            let n = batch.len();
            let mut pile = ChunkPile::new();
            batch.drain(|p| process(self, p.cast()), |c| pile.push(c));
            lock(&self.shard).recycle(&mut pile);
            if n == 0 {
                break;
            }
        }
    }

    /// Dequeue one object (if any) and keep it (`Pending::dequeue`, then the handle kept).
    fn dequeue(&self) {
        if let Some(o) = self.take_back() {
            let was = o.fate.swap(DEQUEUED, Ordering::SeqCst);
            assert_eq!(was, LIVE, "dequeued an object twice, or a processed one");
        }
    }

    /// Dequeue one object (if any) and hand it back (`Reused` dropped: a fresh enqueue).
    fn dequeue_and_requeue(&self) {
        if let Some(o) = self.take_back() {
            assert_eq!(o.fate.load(Ordering::SeqCst), LIVE);
            o.before.store(self.clock.get_state().seq, Ordering::SeqCst);
            self.enqueue(o as *const Obj as *mut Obj);
        }
    }

    fn take_back(&self) -> Option<&Obj> {
        let mut g = Garbage::default();
        let r = lock(&self.shard).pop_where(|_| true, &mut g);
        drop(g);
        let (p, _cookie) = r?;
        // SAFETY: objects are released only after the joins.
        let o = unsafe { &*p.cast::<Obj>() };
        // SAFETY: loom's UnsafeCell checks this read against the processing write.
        let v = o.payload.with(|v| unsafe { *v });
        assert_ne!(v, POISON, "dequeued a processed object");
        Some(o)
    }
}

/// The "processing" of an object: check the grace period, poison, mark.
fn process(sh: &Shared, o: *mut Obj) {
    // SAFETY: objects are released only after the joins.
    let o = unsafe { &*o };
    // SeqCst: model bookkeeping (see `follow_up`).
    if !sh
        .clock
        .poll_state(Cookie::from_seq(o.before.load(Ordering::SeqCst)))
    {
        sh.early.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: loom's UnsafeCell checks this write against the enqueuer's and dequeuers'.
    o.payload.with_mut(|v| unsafe { *v = POISON });
    let was = o.fate.swap(PROCESSED, Ordering::SeqCst);
    assert_eq!(was, LIVE, "processed an object twice, or a dequeued one");
}

/// A new object, its payload written by the enqueuing thread.
fn new_obj(sh: &Shared, v: u64) -> *mut Obj {
    Box::into_raw(Box::new(Obj {
        before: AtomicU64::new(sh.clock.get_state().seq),
        fate: AtomicU8::new(LIVE),
        payload: UnsafeCell::new(v),
    }))
}

/// Run queued callbacks and kicked passes until none is left, then check that every object
/// was processed or dequeued exactly once and the shard is empty. Releases the objects.
fn finish(sh: &Shared, objs: &[*mut Obj]) {
    assert_eq!(
        sh.early.load(Ordering::SeqCst),
        0,
        "processed before a grace period since its enqueue ended"
    );
    // Every batch still waiting has had a grace period requested for its cookie (or a newer
    // one): refilling a batch after dequeues skips `start_poll` only when that holds.
    let req = sh.requested.load(Ordering::SeqCst);
    for c in lock(&sh.shard).waiting_cookies() {
        assert!(
            sh.clock.poll_state(c) || seq::ge(req, c.seq),
            "a waiting cookie with no grace period requested for it"
        );
    }
    let mut rounds = 0;
    while sh.queued.load(Ordering::SeqCst) > 0 || sh.kicks.load(Ordering::SeqCst) > 0 {
        sh.gp_and_callback();
        sh.work();
        rounds += 1;
        assert!(
            rounds < 20,
            "the callback keeps re-arming with nothing to wait for"
        );
    }
    let st = lock(&sh.shard);
    assert_eq!(
        st.len(),
        0,
        "objects stranded: no callback or pass will come for them"
    );
    assert!(!st.armed());
    drop(st);
    for &o in objs {
        // SAFETY: every thread has been joined; each object was created by new_obj and is
        // released exactly once, here.
        let o = unsafe { Box::from_raw(o) };
        assert_ne!(o.fate.load(Ordering::SeqCst), LIVE, "an object was lost");
    }
}

/// An object already waiting (the callback armed), then: an enqueuer adds two more (a new
/// batch), a grace-period thread runs grace periods and the callback (which may find the
/// shard empty of waiting objects and disarm just as the enqueuer arrives), a worker processes.
fn enqueue_arm_expire_process() {
    let sh = Shared::new();
    let first = new_obj(&sh, 1);
    sh.enqueue(first);

    let enqueuer = {
        let sh = sh.clone();
        thread::spawn(move || {
            let a = new_obj(&sh, 2);
            sh.enqueue(a);
            let b = new_obj(&sh, 3);
            sh.enqueue(b);
            [a, b]
        })
    };
    let gp = {
        let sh = sh.clone();
        thread::spawn(move || {
            sh.gp_and_callback();
            sh.gp_and_callback();
        })
    };
    sh.pass();
    sh.work();
    let [a, b] = enqueuer.join().unwrap();
    gp.join().unwrap();
    finish(&sh, &[first, a, b]);
}

/// Two waiting objects; a dequeuer takes one back and hands it back again (a dropped
/// `Reused`), then takes one for good, while a grace-period thread expires them and a worker
/// processes them: each object goes exactly one way, and a dequeued object is never poisoned.
fn dequeue_races_expiry() {
    let sh = Shared::new();
    let objs = [new_obj(&sh, 1), new_obj(&sh, 2)];
    for &o in &objs {
        sh.enqueue(o);
    }
    let dequeuer = {
        let sh = sh.clone();
        thread::spawn(move || {
            sh.dequeue_and_requeue();
            sh.dequeue();
        })
    };
    let gp = {
        let sh = sh.clone();
        thread::spawn(move || {
            sh.gp_and_callback();
            sh.work();
        })
    };
    sh.pass(); // an unrequested pass must find nothing due, or only what is due
    dequeuer.join().unwrap();
    gp.join().unwrap();
    finish(&sh, &objs);
}

#[test]
fn enqueue_arm_expire_process_model() {
    loom::model(enqueue_arm_expire_process);
}

#[test]
fn dequeue_races_expiry_model() {
    loom::model(dequeue_races_expiry);
}

std::thread_local! {
    /// Set while this thread runs a model expected to fail: its panics are not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `model` under loom with `bug` injected; return the failure loom found, if any.
fn failure(bug: u8, model: fn()) -> Option<String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info)
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    mutation::set(bug);
    let r = std::panic::catch_unwind(|| loom::model(model));
    mutation::set(mutation::NONE);
    QUIET.with(|q| q.set(false));
    let payload = r.err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

#[test]
fn negative_a_callback_that_disarms_early_strands_objects() {
    let msg = failure(mutation::DISARM_ALWAYS, enqueue_arm_expire_process)
        .expect("the model must catch a callback that disarms while objects wait");
    assert!(msg.contains("stranded"), "unexpected failure: {msg}");
}

#[test]
fn negative_expiry_that_ignores_the_cookie_processes_early() {
    let msg = failure(mutation::EXPIRE_EARLY, dequeue_races_expiry)
        .expect("the model must catch processing before the grace period");
    assert!(
        msg.contains("processed before a grace period"),
        "unexpected failure: {msg}"
    );
}
