//! Reader vs `synchronize`, model-checked: no early free.
//!
//! One updater publishes a new object, waits for a grace period and then "frees" the old one
//! (sets its `freed` flag and overwrites its payload). One reader thread registers a slot,
//! opens a section, dereferences the current object and checks that it is not freed. Both the
//! flag (a value check) and the payload (a loom `UnsafeCell`, so loom reports any access pair
//! without happens-before as a causality violation) must come out clean in every
//! interleaving and every value the memory model permits.
//!
//! The `Readers` and `GpEngine` are built inside the model, not the flavor's statics. The
//! barrier mode is fence mode (the only one loom can model: a system call's barrier is
//! invisible to it), so the epoch word gets its FENCE bit as in the flavor's initialization.
//!
//! Negative checks prove the model can see the bugs it guards against: the same model without
//! the grace period, or with readers that skip the fence of the barrier pair (membarrier mode
//! with no membarrier), must fail.

use crate::gp::{GpEngine, GpKind};
use crate::reader::{state, Readers, Slot};
use crate::sync::{AtomicBool, AtomicPtr, Ordering};
use crate::sys::BarrierMode;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// An RCU-protected object. "Freeing" it sets `freed` and poisons `payload`; the memory itself
/// is released at the end of the model, after every thread has been joined.
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

struct Shared {
    readers: Readers,
    gp: GpEngine,
    current: AtomicPtr<Obj>,
}

impl Shared {
    /// A fresh reader set and engine with object 1 published; the epoch word gets its FENCE
    /// bit if `fence_bit` (as the flavor's initialization does in fence mode).
    fn new(fence_bit: bool) -> Arc<Shared> {
        let sh = Arc::new(Shared {
            readers: Readers::new(),
            gp: GpEngine::new(),
            current: AtomicPtr::new(new_obj(1)),
        });
        if fence_bit {
            sh.readers.set_fence_mode();
        }
        sh
    }

    /// The updater's removal: publish object 2 and return the old one.
    fn replace(&self) -> *mut Obj {
        // AcqRel: Release publishes the new object's fields (rcu_assign_pointer); Acquire makes
        // the old object's initialization ours before we poison it.
        self.current.swap(new_obj(2), Ordering::AcqRel)
    }

    /// Release both objects' memory. Call only after every thread has been joined.
    fn release(&self, old: *mut Obj) {
        // SAFETY: every thread has been joined, so nothing references either object, and each
        // was created by new_obj (Box::into_raw) and is released exactly once, here.
        unsafe {
            drop(Box::from_raw(old));
            drop(Box::from_raw(self.current.load(Ordering::Relaxed)));
        }
    }

    /// Wait for a normal grace period.
    fn synchronize(&self) {
        self.gp
            .synchronize(&self.readers, BarrierMode::Fence, GpKind::Normal);
    }
}

/// The updater's "free": mark the object freed and poison its payload (the memory itself is
/// released by `Shared::release` after the joins).
fn free(old: *mut Obj) {
    // SAFETY: the object is still allocated (released only after the joins).
    let o = unsafe { &*old };
    o.freed.store(true, Ordering::Relaxed);
    // SAFETY: the pointer comes from loom's UnsafeCell, which checks this write against every
    // reader's read: a read not ordered before it is exactly the early free the model seeks.
    o.payload.with_mut(|v| unsafe { *v = POISON });
}

#[derive(Clone, Copy)]
struct Variant {
    /// The updater waits for a grace period before freeing (the correct protocol).
    synchronize: bool,
    /// The epoch word has its FENCE bit, so readers execute the fence of the barrier pair.
    fence_bit: bool,
    /// The reader registers its slot inside the model (racing with the grace period's
    /// registry walk) rather than before the threads start.
    register_in_thread: bool,
}

const CORRECT: Variant = Variant {
    synchronize: true,
    fence_bit: true,
    register_in_thread: true,
};

/// One reader section: lock, dereference, check, unlock.
fn read_section(sh: &Shared, slot: &Slot) {
    slot.lock(&sh.readers.epoch);
    // Acquire: the rcu_dereference of the model (RcuCell::load uses Acquire).
    let p = sh.current.load(Ordering::Acquire);
    // SAFETY: objects are only released after every thread has been joined.
    let obj = unsafe { &*p };
    assert!(
        !obj.freed.load(Ordering::Relaxed),
        "reader saw a freed object"
    );
    // A causality violation here means the free was not ordered after this read.
    // SAFETY: the pointer comes from loom's UnsafeCell, which itself checks this read against
    // the updater's poisoning write; finding such a race is the point of the model.
    let v = obj.payload.with(|v| unsafe { *v });
    assert_ne!(v, POISON, "reader saw a poisoned payload");
    slot.unlock();
}

fn model_once(var: Variant) {
    let sh = Shared::new(var.fence_bit);
    let pre_slot = if var.register_in_thread {
        None
    } else {
        Some(sh.readers.acquire())
    };

    let reader = {
        let sh = sh.clone();
        thread::spawn(move || {
            let slot = match pre_slot {
                Some(s) => s,
                None => sh.readers.acquire(),
            };
            read_section(&sh, slot);
            sh.readers.release(slot);
        })
    };

    // The updater: publish, wait, free.
    let old = sh.replace();
    if var.synchronize {
        sh.synchronize();
    }
    free(old);

    reader.join().unwrap();
    sh.release(old);
    if var.synchronize {
        assert_eq!(sh.gp.completed(GpKind::Normal), 1);
    }
    for s in sh.readers.iter() {
        assert_eq!(s.depth(), 0);
        assert_eq!(s.state.load(Ordering::Relaxed), state::FREE);
    }
}

std::thread_local! {
    /// Set while this thread runs a model expected to fail: its panics are not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `var` under loom; return the failure loom found, if any. Loom reports a failing
/// execution by panicking out of `model` (its model threads run on the calling thread).
fn failure(var: Variant) -> Option<String> {
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
    let r = std::panic::catch_unwind(|| loom::model(move || model_once(var)));
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

/// The failure must be the early free itself: the reader's access to the payload racing with
/// the free (loom's causality check), or the reader seeing the freed flag or the poison.
fn assert_caught(var: Variant, what: &str) {
    match failure(var) {
        None => panic!("loom did not find {what}: the model cannot see the bug it guards against"),
        Some(msg) => assert!(
            msg.contains("Causality violation") || msg.contains("reader saw"),
            "loom failed {what} for an unexpected reason: {msg}"
        ),
    }
}

#[test]
fn reader_registering_during_synchronize_never_sees_a_free() {
    loom::model(|| model_once(CORRECT));
}

#[test]
fn registered_reader_vs_synchronize_never_sees_a_free() {
    loom::model(|| {
        model_once(Variant {
            register_in_thread: false,
            ..CORRECT
        })
    });
}

/// Two sections on one slot, the second one after the slot's epoch went stale: the grace
/// period must wait for the first section only if it is still running, and the second must
/// see the new object or be waited for.
#[test]
fn back_to_back_sections_never_see_a_free() {
    loom::model(|| {
        let sh = Shared::new(true);
        let slot = sh.readers.acquire();
        let reader = {
            let sh = sh.clone();
            thread::spawn(move || {
                read_section(&sh, slot);
                read_section(&sh, slot);
            })
        };
        let old = sh.replace();
        sh.synchronize();
        free(old);
        reader.join().unwrap();
        sh.release(old);
    });
}

/// A second updater runs grace periods of its own, so the first one's `synchronize` may be
/// served by a grace period it did not run (seen through the sequence alone, without the
/// lock), or may find one in progress that must not count for it. Exercises the fence in
/// `GpEngine::snapshot`, the snapshot arithmetic, and the Release/Acquire pair on the sequence.
#[test]
fn synchronize_served_by_another_updaters_grace_period() {
    loom::model(|| {
        let sh = Shared::new(true);
        let slot = sh.readers.acquire();
        let reader = {
            let sh = sh.clone();
            thread::spawn(move || read_section(&sh, slot))
        };
        let other = {
            let sh = sh.clone();
            thread::spawn(move || sh.synchronize())
        };
        let old = sh.replace();
        sh.synchronize();
        free(old);
        reader.join().unwrap();
        other.join().unwrap();
        sh.release(old);
    });
}

/// The polled path (`get_state`, then `poll_state` until done, then free), with the grace
/// period run by another thread (the grace-period thread): the updater never takes the
/// engine's lock, so the sequence's Release/Acquire pair is all that orders the reader's
/// section before the free. The updater polls a bounded number of times (loom needs bounded
/// loops) and frees only if it saw its cookie done; the interleavings in which the other
/// thread's grace period started after the cookie was taken are the ones that free.
#[test]
fn polled_cookie_completed_by_another_thread_never_frees_early() {
    // Executions in which the updater saw its cookie done and freed (outside loom's model).
    static FREED_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    loom::model(|| {
        let sh = Shared::new(true);
        let slot = sh.readers.acquire();
        let reader = {
            let sh = sh.clone();
            thread::spawn(move || read_section(&sh, slot))
        };
        let gp_thread = {
            let sh = sh.clone();
            thread::spawn(move || sh.synchronize())
        };
        let old = sh.replace();
        let c = sh.gp.snapshot(GpKind::Normal);
        let mut freed = false;
        for _ in 0..3 {
            if sh.gp.done(GpKind::Normal, c) {
                free(old);
                freed = true;
                break;
            }
            thread::yield_now();
        }
        reader.join().unwrap();
        gp_thread.join().unwrap();
        if freed {
            FREED_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        sh.release(old);
    });
    assert!(
        FREED_RUNS.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no execution freed: the model never reached the case it is about"
    );
}

/// Negative check: freeing without a grace period must be caught.
#[test]
fn loom_catches_a_free_without_synchronize() {
    assert_caught(
        Variant {
            synchronize: false,
            ..CORRECT
        },
        "a free without synchronize",
    );
}

/// Negative check: readers that skip the fence of the barrier pair (membarrier mode with the
/// membarrier missing: under loom the reader's compiler fence is nothing) must be caught. This
/// is the store-buffering case of `GpEngine::gp_init`.
#[test]
fn loom_catches_a_reader_without_its_fence() {
    assert_caught(
        Variant {
            fence_bit: false,
            register_in_thread: false,
            ..CORRECT
        },
        "a reader without its fence",
    );
}
