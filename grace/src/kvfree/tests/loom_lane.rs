//! kvfree's per-thread lane, model-checked.
//!
//! * **Hand-off vs drain**: the owner pushes five objects into a lane whose blocks hold two
//!   (`CAP` is 2 under loom), so it hands two full blocks off under the lock, exactly as
//!   `State::install` does; a sweeper concurrently copies what is published, as the background
//!   sweep does. In every interleaving each object is freed exactly once. Each object's payload
//!   is a loom `UnsafeCell` the owner writes before `kvfree`'s push and the destructor reads, so
//!   a pointer handed to the sweeper without happens-before (a `tail` store or load weaker than
//!   Release/Acquire) is reported by loom as a causality violation.
//! * **The idle hand-shake**: an owner publishes one object and checks `ARMED`; the background
//!   thread disarms and sweeps. In every interleaving the sweep takes the object or the owner
//!   re-arms (so a later sweep will). A negative model proves loom sees the stranded object
//!   when the owner's half of the barrier pair is missing.
//!
//! The model uses the production `Local`, `Block`, `free_batch` (through `Key`) and hand-shake functions, built
//! inside the model (not the process-wide statics). Loom can model only fence mode (a system
//! call's barrier is invisible to it), so the control word carries the `FENCE` bit, as
//! initialization sets it in that mode.

use crate::kvfree::block::{Block, Key, Kind, CAP};
use crate::kvfree::lane::{disarm, must_arm, state, Local, Run, ARMED, FENCE};
use crate::sync::{AtomicU8, AtomicUsize, Ordering};
use crate::sys::BarrierMode;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use std::any::TypeId;
use std::ptr;

const OBJECTS: usize = 5;

/// An object handed to kvfree: its destructor checks the payload the owner wrote and counts
/// itself.
struct Obj {
    id: usize,
    payload: UnsafeCell<usize>,
    frees: Arc<[AtomicUsize; OBJECTS]>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        // SAFETY: loom's UnsafeCell hands out a valid pointer and checks the access for races
        // itself; that check (the owner's write before the push, this read after a hand-off
        // or a sweep) is what the model tests.
        let seen = self.payload.with(|p| unsafe { *p });
        assert_eq!(
            seen,
            100 + self.id,
            "object {} freed before it was written",
            self.id
        );
        // Relaxed: only the count matters, read after every thread has been joined.
        self.frees[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

fn new_obj(id: usize, frees: &Arc<[AtomicUsize; OBJECTS]>) -> *mut () {
    let obj = Box::new(Obj {
        id,
        payload: UnsafeCell::new(0),
        frees: frees.clone(),
    });
    // SAFETY: as in Obj::drop; the object is not shared yet.
    obj.payload.with_mut(|p| unsafe { *p = 100 + id });
    Box::into_raw(obj).cast()
}

fn key() -> TypeId {
    TypeId::of::<Obj>()
}

fn keyed_block() -> Block {
    let mut b = Block::alloc(Kind::Array).expect("memory");
    b.set_key(Key::of::<Obj>());
    b
}

/// What a grace period later does to a queued block; in the model, at once.
fn free_block(mut b: Block) {
    // SAFETY: the model has no readers; what it checks is that each object reaches exactly
    // one block, with its payload visible to whoever frees it.
    assert!(unsafe { b.free_objects() }.is_none());
}

/// A sweeper's copy of a run, freed at once.
fn free_run(run: Run, buf: &[*mut (); CAP]) {
    let mut b = Block::alloc(Kind::Array).expect("memory");
    b.set_key(run.key);
    for &p in &buf[..run.n] {
        assert!(b.push(p));
    }
    free_block(b);
}

/// One sweep of lane 0 under the lock, as `State::sweep` does; returns what it took.
fn sweep(local: &Local) -> usize {
    let mut buf = [ptr::null_mut(); CAP];
    let g = local.lock();
    let run = local.take_published(&g, 0, &mut buf);
    drop(g);
    run.map_or(0, |run| {
        free_run(run, &buf);
        run.n
    })
}

/// The owner's push, with the slow path's hand-off when the block is full.
fn push(local: &Local, p: *mut ()) {
    // SAFETY (both try_push calls and replace): this thread is the lane's owner.
    if unsafe { local.try_push(0, key(), p) } != 0 {
        return;
    }
    let g = local.lock();
    // Queued (here: freed) before the lock is released, as State::install does.
    if let Some(old) = unsafe { local.replace(&g, 0, Some(keyed_block())) } {
        free_block(old);
    }
    drop(g);
    assert_eq!(
        unsafe { local.try_push(0, key(), p) },
        1,
        "a fresh block refused"
    );
}

/// The owner's exit hook: hand the lane off.
fn retire(local: &Local) {
    let g = local.lock();
    // SAFETY: called by the owner (the model's main thread).
    if let Some(old) = unsafe { local.replace(&g, 0, None) } {
        free_block(old);
    }
}

fn frees() -> Arc<[AtomicUsize; OBJECTS]> {
    Arc::new(std::array::from_fn(|_| AtomicUsize::new(0)))
}

fn assert_each_freed_once(frees: &[AtomicUsize; OBJECTS]) {
    for (i, f) in frees.iter().enumerate() {
        // Relaxed: every thread has been joined.
        assert_eq!(f.load(Ordering::Relaxed), 1, "object {i} freed {f:?} times");
    }
}

fn handoff_vs_sweeps(sweeps: usize) {
    let frees = frees();
    let local = Arc::new(Local::new(state::IN_USE));
    let sweeper = {
        let local = local.clone();
        thread::spawn(move || (0..sweeps).map(|_| sweep(&local)).sum::<usize>())
    };
    for id in 0..OBJECTS {
        push(&local, new_obj(id, &frees));
    }
    let swept = sweeper.join().unwrap();
    assert!(swept <= OBJECTS);
    retire(&local);
    assert_each_freed_once(&frees);
}

/// The owner fills a block, hands it off and starts the next while a sweeper copies.
#[test]
fn loom_lane_owner_handoff_vs_one_sweep() {
    loom::model(|| handoff_vs_sweeps(1));
}

/// Two sweeps: the second finds the run the first left, or the new block after the hand-off.
#[test]
fn loom_lane_owner_handoff_vs_two_sweeps() {
    loom::model(|| handoff_vs_sweeps(2));
}

/// One idle hand-shake: returns whether the object was stranded (neither swept nor re-armed).
fn handshake(fence_bit: bool) -> bool {
    let frees = frees();
    let ctl = Arc::new(AtomicU8::new(ARMED | if fence_bit { FENCE } else { 0 }));
    let local = Arc::new(Local::new(state::IN_USE));
    {
        let g = local.lock();
        // SAFETY: the main thread is the owner.
        assert!(unsafe { local.replace(&g, 0, Some(keyed_block())) }.is_none());
    }
    let background = {
        let (ctl, local) = (ctl.clone(), local.clone());
        thread::spawn(move || {
            disarm(&ctl, BarrierMode::Fence);
            sweep(&local)
        })
    };
    push(&local, new_obj(0, &frees));
    let rearmed = must_arm(&ctl);
    let swept = background.join().unwrap();
    retire(&local);
    // Whatever happened, the object is freed exactly once at the end (the exit hook).
    // Relaxed: every thread has been joined.
    assert_eq!(frees[0].load(Ordering::Relaxed), 1);
    swept == 0 && !rearmed
}

#[test]
fn loom_lane_idle_handshake_never_strands_an_object() {
    loom::model(|| {
        assert!(
            !handshake(true),
            "an idle thread's object was neither swept nor re-armed"
        );
    });
}

/// Negative check: without the owner's fence (membarrier mode, minus the membarrier that
/// would make the owner's compiler fence a full one), loom finds the stranding execution.
#[test]
fn loom_lane_idle_handshake_without_the_owner_fence_can_strand() {
    let stranded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stranded.clone();
    loom::model(move || {
        if handshake(false) {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(
        stranded.load(std::sync::atomic::Ordering::Relaxed),
        "loom did not find the stranded object: the model cannot see the bug it guards against"
    );
}
