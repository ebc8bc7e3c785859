//! Criterion check of retiring an unlinked node of a linked structure, one thread: grace's
//! `Atomic::swap` + `Shared::retire(&Rcu)` (headless, through `kvfree_raw`) against
//! crossbeam-epoch's `Atomic::swap` + `Guard::defer_destroy`, on the same 64-byte node (seven
//! words of payload and a `next` pointer), in the same run. Each iteration opens a read-side
//! section (`rcu::read_lock` / `epoch::pin`), allocates the new node, swaps it in and retires
//! the old one: what a writer of a linked structure does per update.
//!
//! The figure is the steady-state cost per node: both schemes free their earlier nodes as
//! they go (grace inside later `kvfree` calls or on a worker, crossbeam inside later `pin`s),
//! and neither timed region waits for the last nodes at its end.
//!
//! ```text
//! cargo bench -p grace-bench --bench atomic_retire
//! ```

use std::hint::black_box;
use std::sync::atomic::Ordering::AcqRel;

use criterion::{criterion_group, criterion_main, Criterion};

mod g {
    #[allow(dead_code)] // a linked node's shape; the bench only writes it
    pub struct Node {
        pub payload: [u64; 7],
        pub next: grace::atomic::Atomic<Node>,
    }
}

mod cb {
    #[allow(dead_code)] // as above
    pub struct Node {
        pub payload: [u64; 7],
        pub next: crossbeam_epoch::Atomic<Node>,
    }
}

fn retire_vs_defer_destroy(c: &mut Criterion) {
    assert_eq!(std::mem::size_of::<g::Node>(), 64);
    assert_eq!(std::mem::size_of::<cb::Node>(), 64);
    let mut group = c.benchmark_group("retire_64B_node/1t");

    let grace_head = grace::atomic::Atomic::<g::Node>::null();
    group.bench_function("grace-swap-retire", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let guard = grace::rcu::read_lock();
            let new = grace::atomic::Owned::new(g::Node {
                payload: [black_box(i); 7],
                next: grace::atomic::Atomic::null(),
            });
            let old = grace_head.swap(new, AcqRel, &guard);
            // SAFETY: the swap unlinked `old` (`grace_head` was its only link), it is retired once,
            // and readers of `head` use RCU guards.
            unsafe { old.retire(&grace::Rcu) };
        })
    });

    let cb_head = crossbeam_epoch::Atomic::<cb::Node>::null();
    group.bench_function("crossbeam-swap-defer_destroy", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let guard = crossbeam_epoch::pin();
            let new = crossbeam_epoch::Owned::new(cb::Node {
                payload: [black_box(i); 7],
                next: crossbeam_epoch::Atomic::null(),
            });
            let old = cb_head.swap(new, AcqRel, &guard);
            if !old.is_null() {
                // SAFETY: as above, with crossbeam's epoch guards.
                unsafe { guard.defer_destroy(old) };
            }
        })
    });
    group.finish();

    // Retire the last nodes too.
    let guard = grace::rcu::read_lock();
    let last = grace_head.swap(grace::atomic::Shared::null(), AcqRel, &guard);
    // SAFETY: as in the loop.
    unsafe { last.retire(&grace::Rcu) };
    drop(guard);
    grace::kvfree_barrier();
    let guard = crossbeam_epoch::pin();
    let last = cb_head.swap(crossbeam_epoch::Shared::null(), AcqRel, &guard);
    if !last.is_null() {
        // SAFETY: as in the loop.
        unsafe { guard.defer_destroy(last) };
    }
}

criterion_group!(benches, retire_vs_defer_destroy);
criterion_main!(benches);
