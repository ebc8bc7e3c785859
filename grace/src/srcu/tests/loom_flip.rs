//! The SRCU index flip, model-checked: no reader ever reads a freed object.
//!
//! The grace period is the real one: [`Machine::advance`] over a [`ReaderSide`] whose
//! [`Registry`] holds real [`Shard`]s, with [`Fences::Regular`]. Around it sit short copies of
//! the code that is compiled out under loom (the public API is `cfg(not(loom))`):
//!
//! * the read side of `Srcu::lock` and `SrcuGuard::drop`: load the flip counter (Relaxed),
//!   count the lock on the thread's own shard, `fence(SeqCst)` (fence **B**), and at the end
//!   count the unlock on the shard of the thread that ends the section;
//! * the update side of `Cold::snapshot` and `Block::drive`: `fence(SeqCst)`, snapshot the
//!   sequence, then take the machine lock and `advance` until the snapshot is done, backing
//!   off (a loom yield) while readers are inside.
//!
//! An updater retires an object the way `loom_reader.rs` does: it swaps a new object into the
//! shared pointer, waits for a grace period, then "frees" the old one (sets its `freed` flag
//! and poisons its payload, a loom `UnsafeCell`, so that a reader access the free is not
//! ordered after is a causality violation). Memory is released after every thread is joined.
//!
//! # What is not modelled
//!
//! Only the regular flavor. Lite readers replace fence B with a compiler fence and rely on the
//! updater's `membarrier` to turn it into a full barrier on their CPU; loom has no compiler
//! fence and cannot model a system call's effect on other threads, so a lite reader in
//! membarrier mode cannot be modelled. (A lite domain in fence mode, the only mode `sys` picks
//! under loom, has readers that execute fence B and an updater whose heavy barrier is a
//! `fence(SeqCst)`: exactly the regular protocol modelled here.)
//!
//! # The models
//!
//! * (a) a straggler: a reader that loaded the index before a flip and counts itself after it,
//!   on the index that is now inactive, which `Scan1` exists for; deterministically (the
//!   machine has flipped once before the reader counts) and as a race with two back-to-back
//!   grace periods;
//! * (b) a section that migrates: locked on one shard, unlocked on another thread's shard, with
//!   counters starting at the wrap point;
//! * (c) two updaters advancing one machine under its lock: a `synchronize` caller and the
//!   background service (which only `try_lock`s, and frees its own retired object when its
//!   cookie is done);
//! * a sleeping reader with a nested section, the case the unlocks-first order of the check is
//!   for;
//! * (d) negative models, with a clearly labelled test-only copy of the grace period whose
//!   check can be mutated (`gp.rs` itself is not touched): skipping `Scan1`, or summing locks
//!   before unlocks, must be caught; the unmutated copy must pass the same scenarios, so the
//!   failures come from the mutations. A straggler that skips fence B must be caught too (the
//!   real grace period): the store-buffering pair is what the model relies on, and loom sees it.
//!
//! # Limits of loom worth knowing here
//!
//! * Loom orders `fence(SeqCst)`s totally and joins causality through them, which is stronger
//!   than C11 (only the store-buffering and message-passing consequences are guaranteed
//!   there). The protocol only relies on those consequences, but a bug that needs the
//!   weaker behaviour would go unseen.
//! * After a thread yields, loom no longer offers it values it had already seen before the
//!   yield when newer ones exist. So a "sleep" (yield) inside a section also refreshes the
//!   reader's view; the models that need a stale index get it before any yield, or by
//!   preemption.
//! * Loom does not explore load buffering.
//!
//! All models run in well under a second each with `LOOM_MAX_PREEMPTIONS=2` (`.ci/loom.sh`),
//! and pass with 3 and 4 as well.

use crate::gp::{seq, Backoff};
use crate::srcu::gp::{Fences, Machine, ReaderSide, SrcuPhase};
use crate::srcu::shard::{state, Registry, Shard};
use crate::sync::{fence, lock, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// An SRCU-protected object. "Freeing" it sets `freed` and poisons `payload`; the memory
/// itself is released at the end of the model, after every thread has been joined.
struct Obj {
    freed: AtomicBool,
    payload: UnsafeCell<u64>,
}

const POISON: u64 = 0xdead;

fn new_obj(v: u64) -> *mut Obj {
    Box::into_raw(Box::new(Obj {
        freed: AtomicBool::new(false),
        payload: UnsafeCell::new(v),
    }))
}

/// A pointer to an object that a section found, carried into another thread with the section.
struct Found(*const Obj);
// SAFETY: objects are released only after every thread has been joined; until then any
// thread may read them, and loom checks those reads against the free.
unsafe impl Send for Found {}

/// The updater's "free": mark the object freed and poison its payload.
fn free(old: *mut Obj) {
    // SAFETY: the object is still allocated (released only after the joins).
    let o = unsafe { &*old };
    o.freed.store(true, Ordering::Relaxed);
    // SAFETY: the pointer comes from loom's UnsafeCell, which checks this write against every
    // reader's read: a read not ordered before it is exactly the early free the model seeks.
    o.payload.with_mut(|v| unsafe { *v = POISON });
}

/// A reader's use of an object found inside its section.
fn check(p: *const Obj) {
    // SAFETY: objects are only released after every thread has been joined.
    let obj = unsafe { &*p };
    assert!(
        !obj.freed.load(Ordering::Relaxed),
        "reader saw a freed object"
    );
    // SAFETY: the pointer comes from loom's UnsafeCell, which itself checks this read against
    // the updater's poisoning write; finding such a race is the point of the model.
    let v = obj.payload.with(|v| unsafe { *v });
    assert_ne!(v, POISON, "reader saw a poisoned payload");
}

/// How the updaters run a grace period.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gp {
    /// The real `Machine::advance` (gp.rs).
    Real,
    /// The test-only copy below, possibly mutated.
    Copy(Mutation),
}

/// A deliberate bug in the test-only copy of the grace period.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mutation {
    /// None: the copy does what gp.rs does.
    None,
    /// Flip at once, without waiting for the inactive index to drain.
    SkipScan1,
    /// The check sums the locks first, then fence A, then the unlocks.
    LocksFirst,
}

/// One domain's reader-visible and updater state, as `Block` and `Cold` hold it.
struct Domain {
    flips: AtomicU64,
    registry: Registry,
    machine: Mutex<Machine>,
    seq: AtomicU64,
    /// The protected pointer.
    current: AtomicPtr<Obj>,
}

impl Domain {
    fn new() -> Arc<Domain> {
        Arc::new(Domain {
            flips: AtomicU64::new(0),
            registry: Registry::new(),
            machine: Mutex::new(Machine::new()),
            seq: AtomicU64::new(seq::INITIAL),
            current: AtomicPtr::new(new_obj(1)),
        })
    }

    fn readers(&self) -> ReaderSide<'_> {
        ReaderSide {
            flips: &self.flips,
            registry: &self.registry,
        }
    }

    /// A new shard owned by the calling thread, published as `local_slow` does; its counters
    /// start at `start`.
    fn new_shard(&self, start: u64) -> std::sync::Arc<Shard> {
        let s = std::sync::Arc::new(Shard::new(state::OWNED, start));
        self.registry.adopt(s.clone(), &self.flips);
        s
    }

    /// The updater's removal: publish a new object and return the old one.
    fn replace(&self, v: u64) -> *mut Obj {
        // AcqRel: Release publishes the new object's fields; Acquire makes the old object's
        // initialization ours before we poison it.
        self.current.swap(new_obj(v), Ordering::AcqRel)
    }

    /// `rcu_dereference` of the model.
    fn deref(&self) -> *const Obj {
        // Acquire: pairs with the Release half of `replace`.
        self.current.load(Ordering::Acquire)
    }

    /// `Cold::current`.
    fn current_seq(&self) -> u64 {
        // Acquire: pairs with the Release store in `Machine::gp_end`.
        self.seq.load(Ordering::Acquire)
    }

    /// `Cold::snapshot`: the fence orders the caller's removal before the load of the
    /// sequence (pairs with the fence in `Machine::gp_start`).
    fn snapshot(&self) -> u64 {
        fence(Ordering::SeqCst);
        seq::snapshot(self.current_seq())
    }

    /// `Block::drive` (without the expedite hint): advance until `snap` is done.
    fn drive(&self, snap: u64) {
        let mut backoff = Backoff::new();
        let readers = self.readers();
        loop {
            if seq::done(self.current_seq(), snap) {
                break;
            }
            if lock(&self.machine).advance(&readers, &self.seq, snap, Fences::Regular) {
                break;
            }
            backoff.wait(false);
        }
    }

    /// `Srcu::synchronize`, with the grace period `gp`.
    fn synchronize(&self, gp: Gp) {
        let snap = self.snapshot();
        match gp {
            Gp::Real => self.drive(snap),
            Gp::Copy(m) => copy::synchronize(self, snap, m),
        }
        assert!(
            seq::done(self.current_seq(), snap),
            "synchronize returned before its snapshot was done"
        );
    }

    /// Release the memory of the retired objects and of the current one. Call only after
    /// every thread has been joined.
    fn release(&self, retired: &[*mut Obj]) {
        // SAFETY: every thread has been joined, so nothing references these objects, and each
        // was created by new_obj (Box::into_raw) and is released exactly once, here.
        unsafe {
            for &o in retired {
                drop(Box::from_raw(o));
            }
            drop(Box::from_raw(self.current.load(Ordering::Relaxed)));
        }
    }
}

/// `Srcu::lock`: load the index our shard was last given, count the lock there, fence B.
fn read_lock(_d: &Domain, shard: &Shard) -> usize {
    // The index as the flip (or `Registry::adopt`) published it to this shard.
    let idx = shard.index();
    shard.count_lock(idx);
    // B: pairs with fence A of the check (store-buffering) and the fence before the flip.
    fence(Ordering::SeqCst);
    idx
}

/// One whole section on `shard`: lock, dereference, use, unlock.
fn read_section(d: &Domain, shard: &Shard) {
    let idx = read_lock(d, shard);
    check(d.deref());
    shard.count_unlock(idx);
}

/// TEST-ONLY COPY of the grace period of `gp.rs` (`Machine::advance` with one updater,
/// `ReaderSide::{drained, inactive, flip}`), written straight-line, so that the negative
/// models can break it on purpose without touching `gp.rs`. With `Mutation::None` it must
/// behave as the real one; the `copy_*` controls check that it does.
mod copy {
    use super::{Domain, Mutation};
    use crate::gp::{seq, Backoff};
    use crate::sync::{fence, Ordering};

    /// `ReaderSide::drained`, with the order of the sums mutable.
    fn drained(d: &Domain, idx: usize, m: Mutation) -> bool {
        if m == Mutation::LocksFirst {
            // MUTATION: a lock sum taken first misses sections that begin after it, while the
            // unlock sum taken next counts their ends: they cancel open sections out.
            let locks = d.registry.sum_locks(idx);
            fence(Ordering::SeqCst);
            let unlocks = d.registry.sum_unlocks(idx);
            locks == unlocks
        } else {
            let unlocks = d.registry.sum_unlocks(idx);
            fence(Ordering::SeqCst); // A
            let locks = d.registry.sum_locks(idx);
            locks == unlocks
        }
    }

    fn inactive(d: &Domain) -> usize {
        (d.flips.load(Ordering::Relaxed) & 1) as usize ^ 1
    }

    fn wait_drained(d: &Domain, m: Mutation) {
        let mut backoff = Backoff::new();
        while !drained(d, inactive(d), m) {
            backoff.wait(false);
        }
    }

    /// One updater's `drive` to `snap`.
    pub(super) fn synchronize(d: &Domain, snap: u64, m: Mutation) {
        loop {
            let cur = d.seq.load(Ordering::Relaxed);
            if seq::done(cur, snap) {
                return;
            }
            // gp_start
            d.seq.store(seq::started(cur), Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // Scan1
            if m != Mutation::SkipScan1 {
                wait_drained(d, m);
            }
            // flip
            fence(Ordering::SeqCst);
            d.flips
                .store(d.flips.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // Scan2
            wait_drained(d, m);
            // gp_end
            d.seq
                .store(seq::ended(d.seq.load(Ordering::Relaxed)), Ordering::Release);
        }
    }
}

// ----------------------------------------------------------------------------------------
// (a) Stragglers.

/// A straggler model.
#[derive(Clone, Copy)]
struct Straggler {
    gp: Gp,
    /// The reader publishes its shard inside the model, racing the grace period's walks of
    /// the registry (as `local_slow` on a thread's first lock).
    register_in_thread: bool,
    /// The reader executes fence B (false only in a negative model).
    fence_b: bool,
}

const STRAGGLER: Straggler = Straggler {
    gp: Gp::Real,
    register_in_thread: false,
    fence_b: true,
};

/// A reader that loaded the index (0) before a flip and counts itself on it after the flip,
/// when 0 is the inactive index, racing a grace period that must wait for it in `Scan1`.
fn straggler(v: Straggler) {
    let gp = v.gp;
    let d = Domain::new();
    let pre = (!v.register_in_thread).then(|| d.new_shard(0));
    // Relaxed: the model's only thread so far.
    let stale = (d.flips.load(Ordering::Relaxed) & 1) as usize;
    // A grace period with no reader inside: it flips the index to 1.
    d.synchronize(gp);
    assert_eq!(d.flips.load(Ordering::Relaxed), 1);
    assert_eq!(stale, 0);

    let reader = {
        let d = d.clone();
        thread::spawn(move || {
            let shard = pre.unwrap_or_else(|| d.new_shard(0));
            // The rest of `read_lock`, with the index loaded before the flip.
            shard.count_lock(stale);
            if v.fence_b {
                fence(Ordering::SeqCst);
            }
            check(d.deref());
            shard.count_unlock(stale);
        })
    };

    let old = d.replace(2);
    d.synchronize(gp);
    free(old);

    reader.join().unwrap();
    d.release(&[old]);
    if gp == Gp::Real {
        assert_eq!(lock(&d.machine).phase(), SrcuPhase::Idle);
    }
    assert_eq!(seq::count(d.current_seq()), 2);
    assert_eq!(d.flips.load(Ordering::Relaxed), 2);
}

#[test]
fn straggler_on_the_inactive_index_holds_scan1() {
    loom::model(|| straggler(STRAGGLER));
}

#[test]
fn straggler_registering_its_shard_during_the_grace_period() {
    loom::model(|| {
        straggler(Straggler {
            register_in_thread: true,
            ..STRAGGLER
        })
    });
}

/// Readers, each running `sections` sections one after the other on its own shard, against
/// two back-to-back grace periods that each retire and free an object. A reader may load the
/// index before the first flip and count itself after the first grace period ended (or load a
/// stale index, which is the same thing), as a straggler of the second one; a later section
/// of the same reader starts on whichever index it finds.
fn back_to_back(gp: Gp, readers: usize, sections: usize) {
    let d = Domain::new();
    let readers: Vec<_> = (0..readers)
        .map(|_| {
            let shard = d.new_shard(0);
            let d = d.clone();
            thread::spawn(move || {
                for _ in 0..sections {
                    read_section(&d, &shard);
                }
            })
        })
        .collect();
    let mut retired = Vec::new();
    for v in 2..4 {
        let old = d.replace(v);
        d.synchronize(gp);
        free(old);
        retired.push(old);
    }
    for r in readers {
        r.join().unwrap();
    }
    d.release(&retired);
    assert_eq!(seq::count(d.current_seq()), 2);
}

#[test]
fn readers_racing_two_back_to_back_grace_periods() {
    loom::model(|| back_to_back(Gp::Real, 2, 2));
}

// ----------------------------------------------------------------------------------------
// (b) Migration.

/// A section locked on shard A by one thread and unlocked on shard B by another (a raw token
/// sent across threads, or a task resumed on another worker). The grace period's sums over
/// every shard must see it open until B's unlock. Both shards start at the wrap point, so the
/// sums wrap during the model.
#[test]
fn section_locked_on_one_shard_and_unlocked_on_another() {
    loom::model(|| {
        let d = Domain::new();
        let a = d.new_shard(u64::MAX);
        let b = d.new_shard(u64::MAX);
        let first = {
            let d = d.clone();
            thread::spawn(move || {
                let idx = read_lock(&d, &a);
                let found = Found(d.deref());
                check(found.0);
                // Hand the open section (its index) and what it found to another thread.
                let second = thread::spawn(move || {
                    let found = found;
                    check(found.0);
                    b.count_unlock(idx);
                });
                second.join().unwrap();
            })
        };
        let old = d.replace(2);
        d.synchronize(Gp::Real);
        free(old);
        first.join().unwrap();
        d.release(&[old]);
    });
}

// ----------------------------------------------------------------------------------------
// (c) Two updaters on one machine.

/// A `synchronize` caller and the background service advance the same machine under its
/// lock. The service retired an object (a `call`) and took its cookie; each visit it
/// `try_lock`s the machine (skipping the visit if the caller holds it), advances towards the
/// cookie and frees the object once the cookie is done, as seen through the sequence alone.
/// The caller's snapshot may be served by a grace period the service ran, or find one in
/// progress that must not count for it.
#[test]
fn service_and_synchronize_caller_share_the_machine() {
    // Executions in which the service saw its cookie done and freed (outside loom's model).
    static SERVICE_FREED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    loom::model(|| {
        let d = Domain::new();
        let shard = d.new_shard(0);
        let reader = {
            let d = d.clone();
            thread::spawn(move || read_section(&d, &shard))
        };
        let service = {
            let d = d.clone();
            thread::spawn(move || {
                let old = d.replace(2);
                let cookie = d.snapshot();
                for _ in 0..3 {
                    if !seq::done(d.current_seq(), cookie) {
                        if let Ok(mut m) = d.machine.try_lock() {
                            m.advance(&d.readers(), &d.seq, cookie, Fences::Regular);
                        }
                    }
                    if seq::done(d.current_seq(), cookie) {
                        free(old);
                        return (old, cookie, true);
                    }
                    thread::yield_now();
                }
                (old, cookie, false)
            })
        };
        let old = d.replace(3);
        d.synchronize(Gp::Real);
        free(old);

        reader.join().unwrap();
        let (s_old, cookie, s_freed) = service.join().unwrap();
        // Later visits of the service: finish its grace period.
        d.drive(cookie);
        if s_freed {
            SERVICE_FREED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            free(s_old);
        }
        d.release(&[old, s_old]);
        assert_eq!(lock(&d.machine).phase(), SrcuPhase::Idle);
        let n = seq::count(d.current_seq());
        assert!((1..=2).contains(&n), "{n} grace periods, expected 1..=2");
    });
    assert!(
        SERVICE_FREED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the service never freed: the model never reached the case it is about"
    );
}

// ----------------------------------------------------------------------------------------
// Nested sections of a sleeping reader.

/// A reader that is inside its section when the update starts opens and closes a nested
/// section (whose index it may load just before the flip), sleeps (a loom yield), then uses
/// again what the outer section found. A check that sums locks before unlocks can count the
/// outer lock, miss the nested one and count its unlock, and so call the index drained while
/// the outer section is open.
///
/// The reader is the model's main thread and the updater the spawned one, so that the bad
/// interleaving fits in two preemptions (updater preempted after its lock sum; reader after
/// loading the nested section's index).
fn nested_sleeper(gp: Gp) {
    let d = Domain::new();
    let shard = d.new_shard(0);
    let outer = read_lock(&d, &shard);
    let found = d.deref();
    check(found);
    let updater = {
        let d = d.clone();
        thread::spawn(move || {
            let old = d.replace(2);
            d.synchronize(gp);
            free(old);
            Found(old)
        })
    };
    read_section(&d, &shard);
    thread::yield_now(); // sleeps in its section
    check(found);
    shard.count_unlock(outer);
    let old = updater.join().unwrap();
    d.release(&[old.0.cast_mut()]);
}

#[test]
fn sleeping_reader_with_a_nested_section() {
    loom::model(|| nested_sleeper(Gp::Real));
}

// ----------------------------------------------------------------------------------------
// (d) Negative models, and controls for the test-only copy.

std::thread_local! {
    /// Set while this thread runs a model expected to fail: its panics are not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` under loom and expect it to fail with an early free (the reader's access to the
/// payload racing the free, reported by loom's causality check, or the reader seeing the
/// freed flag or the poison). Panics with "loom caught the early free" if it does, with
/// another message if it failed for another reason, and returns if it passed.
fn expect_early_free(f: fn()) {
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
    // Loom reports a failing execution by panicking out of `model` (its model threads run on
    // the calling thread).
    let r = std::panic::catch_unwind(|| loom::model(f));
    QUIET.with(|q| q.set(false));
    let Err(payload) = r else { return };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    if msg.contains("Causality violation") || msg.contains("reader saw") {
        panic!("loom caught the early free: {msg}");
    }
    panic!("the model failed, but not with an early free: {msg}");
}

#[test]
#[should_panic(expected = "loom caught the early free")]
fn loom_catches_a_grace_period_without_scan1() {
    expect_early_free(|| {
        straggler(Straggler {
            gp: Gp::Copy(Mutation::SkipScan1),
            ..STRAGGLER
        })
    });
}

/// The back-to-back race reaches the straggler case on its own (within the preemption bound):
/// without `Scan1` it fails too.
#[test]
#[should_panic(expected = "loom caught the early free")]
fn loom_catches_back_to_back_grace_periods_without_scan1() {
    expect_early_free(|| back_to_back(Gp::Copy(Mutation::SkipScan1), 1, 1));
}

/// The store-buffering pair (fence B against fence A) is what makes a reader that the lock
/// sum missed see the removal: a straggler without fence B must be caught.
#[test]
#[should_panic(expected = "loom caught the early free")]
fn loom_catches_a_reader_without_fence_b() {
    expect_early_free(|| {
        straggler(Straggler {
            fence_b: false,
            ..STRAGGLER
        })
    });
}

#[test]
#[should_panic(expected = "loom caught the early free")]
fn loom_catches_a_check_that_sums_locks_first() {
    expect_early_free(|| nested_sleeper(Gp::Copy(Mutation::LocksFirst)));
}

/// Control: the unmutated copy passes the scenarios the mutated ones fail.
#[test]
fn copy_of_the_grace_period_passes_unmutated() {
    let none = Gp::Copy(Mutation::None);
    loom::model(move || {
        straggler(Straggler {
            gp: none,
            ..STRAGGLER
        })
    });
    loom::model(move || back_to_back(none, 2, 2));
    loom::model(move || nested_sleeper(none));
}
