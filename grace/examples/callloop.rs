//! Times `call` of a counter-increment closure N times plus one final `barrier`, and
//! `synchronize` with no readers inside: `cargo run --release --example callloop`.
use std::sync::atomic::{AtomicU64, Ordering};
static HITS: AtomicU64 = AtomicU64::new(0);
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(2_000_000, |a| a.parse().expect("N"));
    for round in 0..3 {
        HITS.store(0, Ordering::Relaxed);
        let t = Instant::now();
        for _ in 0..n {
            grace::rcu::call(|| {
                HITS.fetch_add(1, Ordering::Relaxed);
            });
        }
        let queued = t.elapsed();
        grace::rcu::barrier();
        let total = t.elapsed();
        assert_eq!(HITS.load(Ordering::Relaxed), n);
        println!(
            "round {round}: call {:.1} ns/op enqueue, barrier {:?}, {:.1} ns/op incl. barrier",
            queued.as_nanos() as f64 / n as f64,
            total - queued,
            total.as_nanos() as f64 / n as f64
        );
    }
    let m = 20_000;
    let t = Instant::now();
    for _ in 0..m {
        grace::rcu::synchronize();
    }
    println!(
        "synchronize: {:.0} ns",
        t.elapsed().as_nanos() as f64 / m as f64
    );
    let t = Instant::now();
    for _ in 0..m {
        grace::sys::membarrier_once();
    }
    println!(
        "membarrier: {:.0} ns",
        t.elapsed().as_nanos() as f64 / m as f64
    );
}
