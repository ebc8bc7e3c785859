//! `call` throughput from a fresh thread per round, drained by `barrier` from another thread
//! while the producer stays parked (as the peer harness does):
//! `cargo run --release --example spawnloop -- [N]`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

struct P(*const AtomicU64);
unsafe impl Send for P {}
impl Clone for P {
    fn clone(&self) -> P {
        P(self.0)
    }
}
impl Copy for P {}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(300_000, |a| a.parse().expect("N"));
    for round in 0..6 {
        let hits: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let p = P(hits);
        let queued = Arc::new(Barrier::new(2));
        let drained = Arc::new(Barrier::new(2));
        let t = Instant::now();
        let th = {
            let (queued, drained) = (queued.clone(), drained.clone());
            std::thread::spawn(move || {
                for _ in 0..n {
                    grace::rcu::call(move || {
                        let p = p;
                        unsafe { (*p.0).fetch_add(1, Ordering::Relaxed) };
                    });
                }
                queued.wait();
                drained.wait();
            })
        };
        queued.wait();
        let q = t.elapsed();
        grace::rcu::barrier();
        let total = t.elapsed();
        drained.wait();
        th.join().unwrap();
        assert_eq!(hits.load(Ordering::Relaxed), n);
        println!(
            "round {round}: enqueue {:.1} ns/op, barrier {:?}, total {:.1} ns/op",
            q.as_nanos() as f64 / n as f64,
            total - q,
            total.as_nanos() as f64 / n as f64
        );
    }
}
