//! The memory-pressure layer end to end: accounting per API, the budget's help-then-wait
//! order, "never waits inside a read-side section", flood mode, and the shrinker.
//!
//! The budget and the thresholds are process-wide, so the tests of this binary run one at a
//! time (`ONE`), each restoring the settings it changed.

use grace::pending::{Pending, Process};
use grace::{pressure, rcu};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

static ONE: Mutex<()> = Mutex::new(());

/// A reader that sleeps `hold` inside its section, then leaves for 1 ms, until dropped: grace
/// periods keep ending, slowly, so memory piles up during a flood and comes back.
struct SleepyReader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl SleepyReader {
    fn start(hold: Duration) -> SleepyReader {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                {
                    let _g = rcu::read_lock();
                    std::thread::sleep(hold);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        SleepyReader { stop, t: Some(t) }
    }
}

impl Drop for SleepyReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            t.join().unwrap();
        }
    }
}

fn one() -> MutexGuard<'static, ()> {
    let g = ONE.lock().unwrap_or_else(|p| p.into_inner());
    pressure::set_budget(None);
    g
}

#[test]
fn rcu_call_bytes_are_accounted_and_given_back() {
    let _g = one();
    rcu::barrier();
    let base = pressure::usage().call_rcu;
    // A reader inside its section holds every grace period: nothing queued now can be freed.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let _g = rcu::read_lock();
        in_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    in_rx.recv().unwrap();
    for i in 0..2000u64 {
        let b = Box::new([i; 16]);
        rcu::call_sized(128, move || drop(b));
    }
    let held = rcu::stats();
    assert!(held.callbacks_pending >= 2000);
    assert!(
        held.bytes_pending >= base.bytes + 2000 * 128,
        "stated bytes counted while the reader holds the grace period: {held:?}"
    );
    assert!(pressure::usage().call_rcu.bytes >= 2000 * 128);
    tx.send(()).unwrap();
    reader.join().unwrap();
    rcu::barrier();
    let after = rcu::stats();
    assert_eq!(after.callbacks_pending, 0);
    assert_eq!(after.bytes_pending, 0);
}

/// A flood of `call`s that free 256-byte objects, under a 4 MiB budget: pending bytes stay
/// bounded (within the slack of what is in flight between checks), and the enqueuer helped
/// and/or waited, in that order.
#[test]
fn the_budget_bounds_an_rcu_call_flood() {
    let _g = one();
    rcu::barrier();
    let budget = 4u64 << 20;
    pressure::set_budget(Some(budget));
    let before = pressure::stats();
    let peak = Arc::new(AtomicU64::new(0));
    let freed = Arc::new(AtomicUsize::new(0));
    let reader = SleepyReader::start(Duration::from_millis(20));
    let n = 100_000;
    for i in 0..n {
        let b = Box::new([i as u8; 256]);
        let f = freed.clone();
        rcu::call_sized(256, move || {
            drop(b);
            f.fetch_add(1, Ordering::Relaxed);
        });
        if i % 4096 == 0 {
            peak.fetch_max(rcu::stats().bytes_pending, Ordering::Relaxed);
        }
    }
    drop(reader);
    rcu::barrier();
    pressure::set_budget(None);
    let after = pressure::stats();
    assert_eq!(
        freed.load(Ordering::Relaxed),
        n,
        "nothing lost, nothing run twice"
    );
    let p = peak.load(Ordering::Relaxed);
    // Slack: the budget is checked once per ring (256 callbacks) per thread, and a
    // help-then-wait round lets at most a few rings more in.
    assert!(
        p <= budget + (1 << 20),
        "peak pending {p} bytes over a {budget}-byte budget"
    );
    assert!(
        after.over_budget > before.over_budget,
        "a 25 MB flood beside a sleeping reader against a 4 MiB budget never met it"
    );
    assert!(
        after.helped + after.expedited + after.budget_waits
            > before.helped + before.expedited + before.budget_waits,
        "over the budget, the enqueuer neither helped, expedited nor waited"
    );
}

/// Inside a read-side section the enqueuer must not wait (its own section holds the grace
/// period back): it goes over the budget, and that is counted.
#[test]
fn an_enqueuer_inside_a_section_never_waits_it_overruns() {
    let _g = one();
    rcu::barrier();
    pressure::set_budget(Some(1));
    let before = pressure::stats();
    {
        let _section = rcu::read_lock();
        for i in 0..2048u64 {
            let b = Box::new(i);
            rcu::call_sized(8, move || drop(b));
        }
        // Reaching here at all is the point: a wait would be for our own section.
    }
    pressure::set_budget(None);
    let after = pressure::stats();
    assert!(after.overruns > before.overruns, "{after:?}");
    assert_eq!(
        after.budget_waits, before.budget_waits,
        "no wait may happen inside a section"
    );
    rcu::barrier();
}

#[test]
fn kvfree_and_pending_are_accounted_and_budgeted() {
    let _g = one();
    let pending = Pending::new(grace::Rcu, Process::with(|b: Box<[u64; 8]>| drop(b)));
    grace::kvfree_barrier();
    let budget = 512u64 << 10;
    pressure::set_budget(Some(budget));
    let before = pressure::stats();
    // Held 50 ms at a time: far more than 512 KiB is queued meanwhile.
    let reader = SleepyReader::start(Duration::from_millis(50));
    let mut peak = 0;
    for i in 0..100_000u64 {
        grace::kvfree(Box::new([i; 8]));
        pending.enqueue(Box::new([i; 8]));
        if i % 1024 == 0 {
            peak = peak.max(pressure::pending_bytes());
        }
    }
    drop(reader);
    pressure::set_budget(None);
    // Slack: kvfree checks once per array (about 500 objects, 32 KiB) per thread.
    assert!(
        peak <= budget + (1 << 20),
        "peak {peak} over a {budget}-byte budget"
    );
    let after = pressure::stats();
    assert!(after.over_budget > before.over_budget, "{after:?}");
    grace::kvfree_barrier();
    drop(pending);
    let u = pressure::usage();
    assert_eq!(u.kvfree.objects, 0, "{u:?}");
    assert_eq!(
        u.pending.objects, 0,
        "a dropped Pending holds nothing: {u:?}"
    );
}

#[test]
fn the_shrinker_counts_and_frees_what_has_expired() {
    let _g = one();
    rcu::barrier();
    let pending = Pending::new(grace::Rcu, Process::free());
    for i in 0..10_000u64 {
        pending.enqueue(Box::new(i));
        grace::kvfree(Box::new([i; 8]));
    }
    let counted = pressure::count();
    assert!(counted.objects > 0, "{counted:?}");
    // Let the grace periods these wait for end, then shrink: what expired is processed here.
    rcu::synchronize();
    rcu::synchronize();
    let before = pressure::stats();
    let mut freed = 0;
    for _ in 0..50 {
        freed += pressure::scan(u64::MAX);
        if pressure::count().objects == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = pressure::stats();
    assert!(after.scans > before.scans);
    assert_eq!(after.scan_freed - before.scan_freed, freed);
    drop(pending);
    grace::kvfree_barrier();
    assert_eq!(pressure::count().objects, 0);
}

/// A shard past the flood threshold enters flood mode (counted), and everything still runs.
#[test]
fn a_flood_past_the_threshold_is_detected() {
    let _g = one();
    rcu::barrier();
    let s = pressure::settings();
    pressure::set_flood_thresholds(1000, 0);
    let before = pressure::stats().floods;
    let ran = Arc::new(AtomicUsize::new(0));
    // Hold the grace period so that callbacks pile up in the shards.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let _g = rcu::read_lock();
        in_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    in_rx.recv().unwrap();
    for _ in 0..20_000 {
        let r = ran.clone();
        rcu::call(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
    }
    tx.send(()).unwrap();
    reader.join().unwrap();
    rcu::barrier();
    pressure::set_flood_thresholds(s.flood_callbacks, s.flood_bytes);
    assert_eq!(ran.load(Ordering::Relaxed), 20_000);
    assert!(
        pressure::stats().floods > before,
        "20,000 waiting callbacks, no flood"
    );

    // The rate: any callback at all is a flood at one per second.
    pressure::set_flood_rate(1);
    let before = pressure::stats().floods;
    for _ in 0..10 {
        for _ in 0..1000 {
            rcu::call(|| ());
        }
        std::thread::sleep(Duration::from_millis(3));
        rcu::call_hurry(|| ());
    }
    rcu::barrier();
    pressure::set_flood_rate(s.flood_rate);
    assert!(
        pressure::stats().floods > before,
        "callbacks arriving faster than the rate threshold, no flood"
    );
}

#[test]
fn srcu_callbacks_are_accounted() {
    let _g = one();
    let d = grace::srcu::Srcu::new().unwrap();
    let before = pressure::usage().call_srcu;
    // A section held open keeps every callback waiting.
    let held = d.read_lock_raw();
    for i in 0..1000u64 {
        let b = Box::new([i; 4]);
        d.call(move || drop(b));
    }
    let during = pressure::usage().call_srcu;
    assert!(during.objects >= before.objects + 1000, "{during:?}");
    assert!(
        during.bytes >= before.bytes + 1000 * 8,
        "a boxed closure is one word"
    );
    d.read_unlock_raw(held);
    d.barrier();
    assert_eq!(pressure::usage().call_srcu.objects, before.objects);
}

#[test]
fn each_pending_is_listed_in_the_report() {
    let _g = one();
    let p: Pending<[u64; 4]> = Pending::new(grace::Rcu, Process::free());
    let held = rcu::read_lock();
    for i in 0..100u64 {
        p.enqueue(Box::new([i; 4]));
    }
    let r = grace::report();
    let row = r
        .pendings
        .iter()
        .find(|x| x.name.contains("[u64; 4]"))
        .unwrap_or_else(|| panic!("no row for Pending<[u64; 4]>: {:?}", r.pendings));
    assert_eq!(
        row.pending.objects, 100,
        "a read-side section holds them all"
    );
    assert_eq!(row.pending.bytes, 100 * 32);
    assert!(
        r.to_string()
            .contains("Pending<[u64; 4], grace::flavor::Rcu>"),
        "{r}"
    );
    assert!(r.to_json().contains("\"pendings\":[{"));
    drop(held);
    p.barrier();
}

#[test]
fn pending_and_kvfree_floods_are_detected() {
    let _g = one();
    let s = pressure::settings();
    // Pending: a shard holding more objects than the threshold, checked at each new chunk.
    pressure::set_flood_thresholds(1000, u64::MAX);
    let before = pressure::stats().floods;
    let p: Pending<u64> = Pending::new(grace::Rcu, Process::free());
    let held = rcu::read_lock();
    for i in 0..5000u64 {
        p.enqueue(Box::new(i));
    }
    drop(held);
    p.barrier();
    assert!(
        pressure::stats().floods > before,
        "5,000 objects in a Pending over a threshold of 1,000, no flood"
    );
    // kvfree: pending bytes over the threshold (objects with drop glue go through callbacks).
    pressure::set_flood_thresholds(u64::MAX, 64 << 10);
    let before = pressure::stats().floods;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let _g = rcu::read_lock();
        in_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    in_rx.recv().unwrap();
    for i in 0..20_000u64 {
        grace::kvfree(Box::new(vec![i]));
    }
    tx.send(()).unwrap();
    reader.join().unwrap();
    grace::kvfree_barrier();
    pressure::set_flood_thresholds(s.flood_callbacks, s.flood_bytes);
    assert!(
        pressure::stats().floods > before,
        "kvfree with over 64 KiB pending, no flood"
    );
}
