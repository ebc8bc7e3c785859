use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
static DROPS: AtomicU64 = AtomicU64::new(0);
struct B([u8; 64]);
impl Drop for B {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}
fn measure(name: &str, threads: usize, n: u64, f: &(dyn Fn(u64) + Sync), drain: &dyn Fn()) {
    let t0 = Instant::now();
    let c0 = cpu();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for i in 0..n {
                    f(i)
                }
            });
        }
    });
    drain();
    let tot = (n * threads as u64) as f64;
    println!(
        "{name:>8}: wall {:5.1} ns/op  cpu {:5.1} ns/op",
        t0.elapsed().as_nanos() as f64 / tot,
        (cpu() - c0) / tot
    );
}
fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let what = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "call,kvfree,plain,word".into());
    let n: u64 = 2_000_000;
    for _round in 0..4 {
        if what.contains("call") {
            DROPS.store(0, Ordering::Relaxed);
            measure(
                "callfree",
                threads,
                n,
                &|i| {
                    let b = Box::new(B([i as u8; 64]));
                    grace::rcu::call(move || drop(b));
                },
                &|| grace::rcu::barrier(),
            );
            assert_eq!(DROPS.load(Ordering::Relaxed), n * threads as u64);
            let st = grace::rcu::stats();
            println!(
                "          local {} of {} cycles {} gps {}",
                st.callbacks_invoked_locally,
                st.callbacks_invoked,
                st.gp_thread_cycles,
                st.grace_periods
            );
        }
        if what.contains("word") {
            DROPS.store(0, Ordering::Relaxed);
            measure(
                "callword",
                threads,
                n,
                &|_| {
                    grace::rcu::call(|| {
                        DROPS.fetch_add(1, Ordering::Relaxed);
                    });
                },
                &|| grace::rcu::barrier(),
            );
            assert_eq!(DROPS.load(Ordering::Relaxed), n * threads as u64);
        }
        if what.contains("kvfree") {
            measure(
                "kvfree",
                threads,
                n,
                &|i| grace::kvfree(Box::new([i as u8; 64])),
                &|| grace::kvfree_barrier(),
            );
        }
        if what.contains("plain") {
            measure(
                "plain",
                threads,
                n,
                &|i| drop(std::hint::black_box(Box::new([i as u8; 64]))),
                &|| (),
            );
        }
    }
}
