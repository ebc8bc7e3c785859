//! Criterion check of `kvfree` on a 64-byte box, *including its allocation and its final
//! free* (the DESIGN.md §3 figure), against a plain `Box::new` + drop and the peers'
//! deferred frees of the same box: crossbeam-epoch `defer_destroy` (one `pin` per object) and
//! seize `retire`. At 1 thread and at 2 threads (each thread frees `iters` boxes; the time is
//! per object and per thread).
//!
//! grace's timed region ends with `kvfree_barrier`, so every object it was handed is freed
//! inside it; crossbeam-epoch has no such barrier (what its collector still holds at the end
//! of a sample is freed later, untimed), and seize's timed region ends with `reclaim_all`.
//!
//! ```text
//! cargo bench -p grace-bench --bench kvfree
//! ```

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

type Obj = [u8; 64];

fn plain(n: u64) {
    for i in 0..n {
        drop(black_box(Box::new([i as u8; 64])));
    }
}

fn grace_kvfree(n: u64) {
    for i in 0..n {
        grace::kvfree(black_box(Box::new([i as u8; 64])));
    }
}

fn crossbeam(n: u64) {
    for i in 0..n {
        let g = crossbeam_epoch::pin();
        let p = crossbeam_epoch::Owned::new(black_box([i as u8; 64])).into_shared(&g);
        // SAFETY: the object was never published; destroying it after the epoch is trivially
        // safe, and it is destroyed exactly once.
        unsafe { g.defer_destroy(p) };
    }
}

fn seize_retire(collector: &seize::Collector, n: u64) {
    for i in 0..n {
        let p: *mut Obj = Box::into_raw(black_box(Box::new([i as u8; 64])));
        // SAFETY: `p` is a fresh Box pointer, never shared, retired once with the matching
        // reclaimer.
        unsafe { collector.retire(p, seize::reclaim::boxed) };
    }
}

/// Run `work(iters)` on `threads` threads at once (the bench thread itself for one), then
/// `end`; the elapsed time is per object and per thread, since each thread does `iters`.
fn on_threads(threads: usize, iters: u64, work: &(dyn Fn(u64) + Sync), end: &dyn Fn()) -> Duration {
    let t = Instant::now();
    if threads == 1 {
        work(iters);
    } else {
        let start_line = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    start_line.wait();
                    work(iters);
                });
            }
        });
    }
    end();
    t.elapsed()
}

fn kvfree_vs_peers(c: &mut Criterion) {
    let collector = seize::Collector::new();
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("free_64B_box/{threads}t"));
        group.bench_function("box-new-drop", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &plain, &|| ()))
        });
        group.bench_function("grace-kvfree", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &grace_kvfree, &grace::kvfree_barrier))
        });
        group.bench_function("crossbeam-epoch-defer_destroy", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &crossbeam, &|| ()))
        });
        group.bench_function("seize-retire", |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|n| seize_retire(&collector, n), &|| {
                    // SAFETY: no thread holds a guard of this collector between samples.
                    unsafe { collector.reclaim_all() }
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, kvfree_vs_peers);
criterion_main!(benches);
