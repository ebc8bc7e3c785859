//! Criterion bench of waiting for an RCU grace period from async code, on a tokio runtime:
//! `rcu::synchronize_async().await` against the blocking `rcu::synchronize` moved to a
//! dedicated thread with `spawn_blocking` (what a tokio user does without grace's futures),
//! and the cost of 10,000 tasks waiting at once (one grace period shared by all; the blocking
//! form would need a thread each, tokio's pool has at most 512).
//!
//! `cargo bench -p grace-bench --bench wait`; figures are in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a tokio runtime")
}

fn waits(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("wait");
    group.bench_function("synchronize_async().await", |b| {
        b.iter(|| rt.block_on(grace::rcu::synchronize_async()))
    });
    group.bench_function("spawn_blocking(synchronize).await", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokio::task::spawn_blocking(grace::rcu::synchronize)
                    .await
                    .expect("synchronize does not panic outside a section")
            })
        })
    });
    group.sample_size(10);
    group.bench_function("10000 tasks awaiting synchronize_async()", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..10_000 {
                    set.spawn(grace::rcu::synchronize_async());
                }
                while let Some(r) = set.join_next().await {
                    r.expect("a waiter does not panic");
                }
            })
        })
    });
    group.bench_function("10000 tasks spawned, no wait (baseline)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..10_000 {
                    set.spawn(async {});
                }
                while let Some(r) = set.join_next().await {
                    r.expect("an empty task does not panic");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, waits);
criterion_main!(benches);
