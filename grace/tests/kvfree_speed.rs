//! A quick measurement of `kvfree`'s cost, for the figures in the report: not a timed test (it
//! asserts only that everything handed over was freed) and `#[ignore]`d so that CI never runs
//! it.
//!
//! ```text
//! cargo test --release -p grace --test kvfree_speed -- --ignored --nocapture --test-threads 1
//! ```
//!
//! * `box+drop`: `Box::new([u8; 64])` then drop, the baseline;
//! * `box+kvfree`: `Box::new([u8; 64])` then `kvfree`, with the final `kvfree_barrier` (every
//!   object freed) inside the timed region: the DESIGN.md §3 figure "incl. the final free".
//!   Both are the minimum over 15 interleaved rounds of 2 M objects: the other tenants of a
//!   small VM make single runs swing by 2x;
//! * `flood`: N threads `Box::new` + `kvfree` 64-byte objects as fast as they can, then one
//!   barrier: objects per second, and the peak bytes pending.

use grace::kvfree::{self as kv};
use grace::{kvfree, kvfree_barrier};
use std::hint::black_box;
use std::time::Instant;

const N: usize = 10_000_000;

fn per_op(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

fn box_drop(n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        drop(black_box(Box::new([i as u8; 64])));
    }
    per_op(start, n)
}

fn box_kvfree(n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        kvfree(black_box(Box::new([i as u8; 64])));
    }
    kvfree_barrier();
    per_op(start, n)
}

fn flood(threads: usize, per_thread: usize) -> (f64, u64) {
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    kvfree(black_box(Box::new([i as u8; 64])));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    kvfree_barrier();
    let secs = start.elapsed().as_secs_f64();
    (
        (threads * per_thread) as f64 / secs,
        kv::stats().peak_bytes_pending,
    )
}

#[test]
#[ignore = "a measurement, run by hand (see the module docs)"]
fn measure_kvfree() {
    // Warm up the allocator, the flavor and the kvfree machinery.
    box_drop(N / 10);
    box_kvfree(N / 10);
    let (gp0, a0) = (grace::rcu::stats().grace_periods, kv::stats().batches);
    let (mut k, mut b) = (f64::MAX, f64::MAX);
    for _ in 0..15 {
        k = k.min(box_kvfree(N / 5));
        b = b.min(box_drop(N / 5));
    }
    let (gp1, a1) = (grace::rcu::stats().grace_periods, kv::stats().batches);
    println!(
        "min of 15 x {} objects: box+drop {b:.2} ns/op, box+kvfree {k:.2} ns/op ({:.2}x); \
         {} grace periods for {} arrays",
        N / 5,
        k / b,
        gp1 - gp0,
        a1 - a0
    );
    for threads in [1, 2] {
        let (rate, peak) = flood(threads, N / threads);
        println!(
            "flood, {threads} thread(s): {:.1} M objects/s, peak pending so far {:.1} MiB",
            rate / 1e6,
            peak as f64 / (1 << 20) as f64
        );
    }
    let s = kv::stats();
    println!("{s:?}");
    assert_eq!(s.objects_pending, 0, "everything kvfreed was freed");
    assert_eq!(s.bytes_pending, 0);
}
