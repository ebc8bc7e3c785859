//! SRCU domains under memory pressure: flood mode and the shrinker flush lazy callbacks, and
//! both show in the per-domain report.
//!
//! Alone in its binary: `GRACE_LAZY_MS` is read once per process, and set here to a minute, so
//! a callback that runs well within that minute was flushed by the flood or the shrinker, not
//! by its lazy timer. The bounds below are liveness (far under the minute), not speed.

use grace::pressure;
use grace::srcu::Srcu;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE: Mutex<()> = Mutex::new(());

fn one() -> MutexGuard<'static, ()> {
    std::env::set_var("GRACE_LAZY_MS", "60000");
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait until `ran` reaches `n`, failing after 20 s (a third of the lazy delay).
fn wait_for(ran: &AtomicU64, n: u64, what: &str) {
    let start = Instant::now();
    while ran.load(Ordering::Relaxed) < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: {} of {n} callbacks ran; they waited for the one-minute lazy delay",
            ran.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_shrinker_flushes_an_srcu_domains_lazy_callbacks() {
    let _g = one();
    let d = Srcu::new().unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    for _ in 0..100 {
        let r = ran.clone();
        d.call(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
    }
    let row = grace::report()
        .srcu_domains
        .into_iter()
        .find(|r| r.domain == d.id())
        .expect("a domain with callbacks is in the report");
    assert_eq!(row.pending.objects, 100 - ran.load(Ordering::Relaxed));
    let scans = pressure::stats().scans;
    pressure::scan(u64::MAX);
    assert!(pressure::stats().scans > scans);
    wait_for(&ran, 100, "after pressure::scan");
    // Handed to the workers by a later scan, or run by them: either way all are gone.
    assert_eq!(d.stats().callbacks_pending, 0);
    assert_eq!(d.stats().bytes_pending, 0);
}

#[test]
fn an_srcu_flood_expedites_and_flushes_lazy_callbacks() {
    let _g = one();
    let s = pressure::settings();
    pressure::set_flood_thresholds(1000, u64::MAX);
    let d = Srcu::new().unwrap();
    let other = Srcu::new().unwrap();
    other.call(|| {});
    let ran = Arc::new(AtomicU64::new(0));
    // A reader holds the domain's grace period, so that callbacks pile up in its shards.
    let held = d.read_lock_raw();
    for i in 0..5000u64 {
        let r = ran.clone();
        let b = Box::new([i; 8]);
        d.call(move || {
            drop(b);
            r.fetch_add(1, Ordering::Relaxed);
        });
    }
    let report = grace::report();
    let row = report
        .srcu_domains
        .iter()
        .find(|r| r.domain == d.id())
        .expect("listed");
    assert!(
        row.flood,
        "5,000 waiting callbacks over a threshold of 1,000: {row:?}"
    );
    assert!(row.floods >= 1);
    assert_eq!(row.pending.objects, 5000);
    // Each closure holds an `Arc` and a `Box`: two words.
    assert_eq!(row.pending.bytes, 5000 * 16);
    assert!(
        report.srcu_domains.iter().any(|r| r.domain == other.id()),
        "every domain with callbacks has its own row"
    );
    let text = report.to_string();
    assert!(text.contains(&format!("SRCU domain #{}", d.id())), "{text}");
    assert!(text.contains("in flood mode"), "{text}");
    let json = report.to_json();
    assert!(json.contains("\"srcu_domains\":[{"), "{json}");
    // Sealed nodes of 64 wait in the shards' segments; the rest are queued lazily.
    let in_segments: u64 = row.shards.iter().map(|s| s.waiting_callbacks).sum();
    assert!(
        in_segments >= 5000 - 64 * row.shards.len() as u64,
        "{row:?}"
    );
    assert!(
        row.shards.iter().all(|s| s.ready_callbacks == 0),
        "a reader holds them"
    );
    d.read_unlock_raw(held);
    // The flood flushed the open nodes and polls the grace period: no minute-long wait.
    wait_for(&ran, 5000, "after an SRCU flood");
    pressure::set_flood_thresholds(s.flood_callbacks, s.flood_bytes);
    assert!(d.stats().floods >= 1);
    other.barrier();
}
