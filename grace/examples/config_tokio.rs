//! A read-mostly configuration on a tokio runtime: many tasks read it on every request, one
//! task updates it now and then, and each old version is freed once no reader can still see
//! it, after `rcu::synchronize_async().await`, without blocking a runtime thread.
//!
//! `cargo run -p grace --example config_tokio`

use grace::{rcu, RcuCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The configuration every request reads.
#[derive(Debug)]
struct Config {
    version: u64,
    upstream: String,
    timeout: Duration,
}

/// Counts the versions freed, to show that each old one is.
static FREED: AtomicU64 = AtomicU64::new(0);

impl Drop for Config {
    fn drop(&mut self) {
        FREED.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = Arc::new(RcuCell::new(Config {
        version: 0,
        upstream: "10.0.0.1:80".into(),
        timeout: Duration::from_millis(100),
    }));

    // Readers: each "request" reads the configuration inside a short section. The section
    // (`read()`'s guard) cannot be held across an `.await`: it is not `Send`, so a task that
    // tried would not compile.
    let requests = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (config, requests) = (config.clone(), requests.clone());
            tokio::spawn(async move {
                let mut last = 0;
                for _ in 0..2_000 {
                    let version = {
                        let c = config.read();
                        assert!(!c.upstream.is_empty() && c.timeout > Duration::ZERO);
                        c.version
                    };
                    assert!(version >= last, "versions only move forward");
                    last = version;
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    // The updater: publish a new version, wait for a grace period without blocking, free the
    // old one. `synchronize_async` shares its grace period with every other task waiting.
    let updater = {
        let config = config.clone();
        tokio::spawn(async move {
            for version in 1..=20 {
                let old = config.replace(Config {
                    version,
                    upstream: format!("10.0.0.{}:80", version % 4 + 1),
                    timeout: Duration::from_millis(100 + version),
                });
                rcu::synchronize_async().await;
                let old = old
                    .try_reclaim()
                    .ok()
                    .expect("a grace period has passed since the replace");
                drop(old); // freed here, on this task, after every reader of it has finished
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    updater.await.expect("the updater does not panic");
    for r in readers {
        r.await.expect("a reader does not panic");
    }
    let current = config.read().version;
    println!(
        "{} requests served; configuration at version {current}; {} old versions freed",
        requests.load(Ordering::Relaxed),
        FREED.load(Ordering::Relaxed)
    );
    assert_eq!(FREED.load(Ordering::Relaxed), 20);
}
