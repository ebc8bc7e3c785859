//! Times outermost `read_lock` + drop in a loop: `cargo run --release --example readloop`.
use std::time::Instant;

#[inline(never)]
fn section() {
    let g = grace::rcu::read_lock();
    std::hint::black_box(&g);
}

fn main() {
    let n = 100_000_000u64;
    section();
    let t = Instant::now();
    for _ in 0..n {
        section();
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "grace rcu read_lock+unlock: {ns:.2} ns/op ({:?})",
        grace::rcu::stats().barrier_mode
    );
}
