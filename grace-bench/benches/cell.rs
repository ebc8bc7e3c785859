//! Criterion bench of `RcuCell` against arc-swap's `ArcSwap`, in the same run: `load`
//! (grace: a section plus the load, `read()`; and the load alone inside a section the reader
//! already holds, re-entered every 256 loads), `store` (grace: `replace` + `defer_drop`, which frees through `kvfree`) and
//! `rcu` (grace: `update`), on one thread, and on two threads where a second thread either
//! loads (read-mostly) or updates (update-heavy) the same cell in a loop meanwhile.
//!
//! `cargo bench -p grace-bench --bench cell`; figures are in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use arc_swap::ArcSwap;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use grace::RcuCell;

/// What the second thread does while the measured one runs.
#[derive(Clone, Copy)]
enum Background {
    /// Nothing: one thread.
    Idle,
    /// Loads in a loop (read-mostly).
    Reads,
    /// Updates in a loop (update-heavy).
    Updates,
}

impl Background {
    fn name(self) -> &'static str {
        match self {
            Background::Idle => "1 thread",
            Background::Reads => "2 threads, read-mostly",
            Background::Updates => "2 threads, update-heavy",
        }
    }
}

/// Runs `work` on another thread until dropped.
struct Helper {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Helper {
    fn start(mut work: impl FnMut() + Send + 'static) -> Helper {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    work();
                }
            }
        });
        Helper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn grace_helper(cell: &Arc<RcuCell<u64>>, bg: Background) -> Option<Helper> {
    let cell = cell.clone();
    match bg {
        Background::Idle => None,
        Background::Reads => Some(Helper::start(move || {
            black_box(*cell.read());
        })),
        Background::Updates => Some(Helper::start(move || {
            cell.update(|v| v + 1).defer_drop();
        })),
    }
}

fn arc_swap_helper(cell: &Arc<ArcSwap<u64>>, bg: Background) -> Option<Helper> {
    let cell = cell.clone();
    match bg {
        Background::Idle => None,
        Background::Reads => Some(Helper::start(move || {
            black_box(**cell.load());
        })),
        Background::Updates => Some(Helper::start(move || {
            cell.rcu(|v| **v + 1);
        })),
    }
}

fn one_setting(group: &mut BenchmarkGroup<'_, WallTime>, bg: Background) {
    let name = bg.name();
    let grace_cell = Arc::new(RcuCell::new(0u64));
    let swap = Arc::new(ArcSwap::from_pointee(0u64));
    {
        let _h = grace_helper(&grace_cell, bg);
        group.bench_function(format!("load/grace read()/{name}"), |b| {
            b.iter(|| black_box(*grace_cell.read()))
        });
        group.bench_function(format!("load/grace load() in a held section/{name}"), |b| {
            // A reader that keeps its section over a batch of loads, as a traversal does;
            // sections end often enough for grace periods to go on.
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let g = grace::rcu::read_lock();
                    for _ in 0..left.min(256) {
                        black_box(*grace_cell.load(&g));
                    }
                    drop(g);
                    left -= left.min(256);
                }
                start.elapsed()
            })
        });
        group.bench_function(format!("store/grace replace+defer_drop/{name}"), |b| {
            b.iter(|| grace_cell.replace(black_box(1)).defer_drop())
        });
        group.bench_function(format!("rcu/grace update/{name}"), |b| {
            b.iter(|| grace_cell.update(|v| v + 1).defer_drop())
        });
    }
    grace::kvfree_barrier();
    {
        let _h = arc_swap_helper(&swap, bg);
        group.bench_function(format!("load/arc-swap load()/{name}"), |b| {
            b.iter(|| black_box(**swap.load()))
        });
        group.bench_function(format!("store/arc-swap store/{name}"), |b| {
            b.iter(|| swap.store(Arc::new(black_box(1))))
        });
        group.bench_function(format!("rcu/arc-swap rcu/{name}"), |b| {
            b.iter(|| {
                swap.rcu(|v| **v + 1);
            })
        });
    }
}

fn cell_vs_arc_swap(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell");
    for bg in [Background::Idle, Background::Reads, Background::Updates] {
        one_setting(&mut group, bg);
    }
    group.finish();
}

criterion_group!(benches, cell_vs_arc_swap);
criterion_main!(benches);
