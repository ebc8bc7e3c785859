//! The grace-period sequence state machine, model-checked.
//!
//! Invariants checked in every interleaving:
//!
//! * **Completion.** After `synchronize` returns, every snapshot taken before it was called is
//!   done, including a snapshot another thread took and handed over (happens-before) before
//!   the call.
//! * **Monotonicity.** Every thread sees the sequence move only forward, and a snapshot that
//!   reads as done stays done.
//! * **Sharing.** Two concurrent `synchronize` callers run at least one and at most two grace
//!   periods between them, and the engine ends idle.
//! * **Readers.** A snapshot taken inside a read-side section is not done while that section
//!   is still open (the section began before the snapshot, so every grace period that can
//!   complete the snapshot must wait for it).
//! * **Kinds.** Normal and expedited grace periods advance only their own sequence.

use crate::gp::{seq, GpEngine, GpKind, GpPhase};
use crate::reader::Readers;
use crate::sync::{AtomicU64, Ordering};
use crate::sys::BarrierMode;
use loom::sync::Arc;
use loom::thread;

const N: GpKind = GpKind::Normal;

struct Shared {
    readers: Readers,
    gp: GpEngine,
    /// A snapshot the poller hands to the synchronizers (0: none yet; real snapshots are > 0).
    handed: AtomicU64,
}

fn shared() -> Arc<Shared> {
    let sh = Shared {
        readers: Readers::new(),
        gp: GpEngine::new(),
        handed: AtomicU64::new(0),
    };
    sh.readers.set_fence_mode();
    Arc::new(sh)
}

/// A `synchronize` caller checking completion and monotonicity around its call.
fn synchronizer(sh: &Shared, kind: GpKind) {
    let before = sh.gp.current(kind);
    let pre = sh.gp.snapshot(kind);
    // Acquire: pairs with the poller's Release; its snapshot happens-before our call.
    let handed = sh.handed.load(Ordering::Acquire);
    sh.gp.synchronize(&sh.readers, BarrierMode::Fence, kind);
    let after = sh.gp.current(kind);
    assert!(seq::ge(after, before), "sequence went backwards");
    assert!(
        sh.gp.done(kind, pre),
        "synchronize returned before its own snapshot was done"
    );
    assert!(
        seq::done(after, seq::snapshot(before)),
        "synchronize returned before a full grace period elapsed"
    );
    if handed != 0 && kind == N {
        assert!(
            sh.gp.done(N, handed),
            "a snapshot handed over before synchronize is not done"
        );
    }
}

/// A poller: takes a snapshot, hands it over, then watches the sequence.
fn poller(sh: &Shared) {
    let s = sh.gp.snapshot(N);
    assert!(!seq::in_progress(s) && s != 0);
    sh.handed.store(s, Ordering::Release);
    let mut last = sh.gp.current(N);
    let mut was_done = seq::done(last, s);
    for _ in 0..2 {
        thread::yield_now();
        let cur = sh.gp.current(N);
        assert!(
            seq::ge(cur, last),
            "sequence went backwards: {cur} after {last}"
        );
        let d = seq::done(cur, s);
        assert!(d || !was_done, "a done snapshot became not done");
        // A snapshot needs at most the end of the grace period after the current one.
        assert!(
            seq::ge(seq::snapshot(cur), s),
            "snapshot {s} is further ahead than any current one ({cur})"
        );
        last = cur;
        was_done = d;
    }
}

fn check_idle_end(sh: &Shared, min: u64, max: u64) {
    let n = sh.gp.completed(N);
    assert!(
        (min..=max).contains(&n),
        "{n} grace periods, expected {min}..={max}"
    );
    assert!(!seq::in_progress(sh.gp.current(N)));
    assert_eq!(sh.gp.phase(), GpPhase::Idle);
}

#[test]
fn two_synchronizers_and_a_poller() {
    loom::model(|| {
        let sh = shared();
        let a = {
            let sh = sh.clone();
            thread::spawn(move || synchronizer(&sh, N))
        };
        let p = {
            let sh = sh.clone();
            thread::spawn(move || poller(&sh))
        };
        synchronizer(&sh, N);
        a.join().unwrap();
        p.join().unwrap();
        check_idle_end(&sh, 1, 2);
    });
}

#[test]
fn synchronize_vs_a_snapshot_inside_a_reader_section() {
    loom::model(|| {
        let sh = shared();
        let slot = sh.readers.acquire();
        let reader = {
            let sh = sh.clone();
            thread::spawn(move || {
                slot.lock(&sh.readers.epoch);
                let s = sh.gp.snapshot(N);
                for _ in 0..2 {
                    assert!(
                        !sh.gp.done(N, s),
                        "a grace period that began after our section began ended inside it"
                    );
                    thread::yield_now();
                }
                slot.unlock();
                sh.readers.release(slot);
            })
        };
        let a = {
            let sh = sh.clone();
            thread::spawn(move || synchronizer(&sh, N))
        };
        synchronizer(&sh, N);
        a.join().unwrap();
        reader.join().unwrap();
        check_idle_end(&sh, 1, 2);
    });
}

#[test]
fn normal_and_expedited_advance_their_own_sequences() {
    loom::model(|| {
        let sh = shared();
        let e = {
            let sh = sh.clone();
            thread::spawn(move || synchronizer(&sh, GpKind::Expedited))
        };
        synchronizer(&sh, N);
        e.join().unwrap();
        assert_eq!(sh.gp.completed(N), 1);
        assert_eq!(sh.gp.completed(GpKind::Expedited), 1);
        assert_eq!(sh.gp.phase(), GpPhase::Idle);
        // Both grace periods advanced the readers' epoch once each.
        let epoch = sh.readers.epoch.load(Ordering::Relaxed) >> crate::reader::EPOCH_SHIFT;
        assert_eq!(epoch, 3);
    });
}
