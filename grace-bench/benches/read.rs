//! Criterion bench of one outermost read-side critical section (enter +
//! exit) on one thread: grace (RCU, and SRCU domains with regular and lite
//! readers), crossbeam-epoch, seize and liburcu through
//! its exported symbols (FFI; only when liburcu-dev was found at build
//! time). `grace bench read` measures the same operations across threads and
//! adds the inline-C liburcu and haphazard peers.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

fn read_sections(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_lock_unlock");

    group.bench_function("grace-rcu", |b| {
        b.iter(|| {
            let g = grace::rcu::read_lock();
            black_box(&g);
            drop(g);
        })
    });

    let srcu = grace::srcu::Srcu::new().expect("an SRCU domain");
    group.bench_function("grace-srcu", |b| {
        b.iter(|| {
            let g = srcu.read_lock();
            black_box(&g);
            drop(g);
        })
    });

    let lite = grace::srcu::SrcuLite::new_lite().expect("an SRCU lite domain");
    group.bench_function("grace-srcu-lite", |b| {
        b.iter(|| {
            let g = lite.read_lock();
            black_box(&g);
            drop(g);
        })
    });

    group.bench_function("crossbeam-epoch", |b| {
        b.iter(|| {
            let g = crossbeam_epoch::pin();
            black_box(&g);
            drop(g);
        })
    });

    let collector = seize::Collector::new();
    group.bench_function("seize", |b| {
        b.iter(|| {
            let g = collector.enter();
            black_box(&g);
            drop(g);
        })
    });

    match grace_bench::liburcu::Registration::new() {
        Some(reg) => {
            group.bench_function("liburcu-memb-ffi", |b| b.iter(|| reg.read_section_ffi()));
        }
        None => eprintln!(
            "skipping liburcu-memb-ffi: {}",
            grace_bench::liburcu::unavailable_reason()
        ),
    }

    group.finish();
}

criterion_group!(benches, read_sections);
criterion_main!(benches);
