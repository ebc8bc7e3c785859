//! `grace::report()`: its contents while a reader holds a grace period and callbacks wait,
//! after a barrier, its JSON (parsed by a real JSON parser), and the report signal.

use grace::rcu;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests here look at process-wide counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread name that needs escaping in JSON.
/// At most 15 bytes: the name grace reports is the one the operating system keeps.
const READER: &str = "rep \"rd\" \\ 1";

#[test]
fn report_names_the_reader_and_counts_what_waits() {
    let _serial = serial();
    let leave = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let leave = leave.clone();
        std::thread::Builder::new()
            .name(READER.into())
            .spawn(move || {
                let g = rcu::read_lock();
                tx.send(()).unwrap();
                while !leave.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(g);
            })
            .unwrap()
    };
    rx.recv().unwrap();
    const N: u64 = 500;
    for i in 0..N {
        rcu::call_sized(100, move || {
            std::hint::black_box(i);
        });
    }
    rcu::call_hurry(|| ());

    // The grace period the callbacks need cannot end while the reader is inside: wait for the
    // report to show it waiting on the reader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = grace::report();
        let waiting_on = r.grace_period.waiting_on.as_ref();
        let in_segments = r.shards.iter().any(|s| !s.per_segment.is_empty());
        if in_segments && waiting_on.and_then(|w| w.thread.as_deref()) == Some(READER) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no grace period waits on the reader: {r}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(r.usage.call_rcu.objects >= N, "{r}");
    assert!(r.usage.call_rcu.bytes >= N * 100, "{r}");
    assert!(r.rcu.callbacks_pending >= N, "{r}");
    assert!(r.grace_period.running.is_some(), "{r}");
    assert!(r.grace_period.age.is_some(), "{r}");
    assert!(r.readers_inside.iter().any(|n| n == READER), "{r}");
    // Callbacks per segment: each waiting one is in a segment for a grace period not yet
    // completed.
    let seg = r
        .shards
        .iter()
        .flat_map(|s| s.per_segment.iter())
        .find(|g| g.callbacks > 0)
        .unwrap_or_else(|| panic!("no waiting segment: {r}"));
    assert!(seg.grace_period > r.grace_period.completed, "{r}");
    assert!(text_has_segment(&r.to_string()), "{r}");

    let text = r.to_string();
    assert!(
        text.contains(&format!("waiting on thread '{READER}'")),
        "{text}"
    );
    assert!(text.contains("phase WaitReaders"), "{text}");

    let v: Value = serde_json::from_str(&r.to_json()).expect("the report is valid JSON");
    assert!(v["pending"]["rcu_call"]["objects"].as_u64().unwrap() >= N);
    assert_eq!(
        v["grace_period"]["waiting_on"]["thread"].as_str(),
        Some(READER)
    );
    assert_eq!(v["grace_period"]["phase"].as_str(), Some("WaitReaders"));
    assert!(v["readers_inside"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str() == Some(READER)));

    leave.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    rcu::barrier();
    let after = grace::report();
    assert_eq!(after.usage.call_rcu.objects, 0, "{after}");
    assert_eq!(after.usage.call_rcu.bytes, 0, "{after}");
    assert!(after.shards.is_empty(), "{after}");
    assert!(!after.readers_inside.iter().any(|n| n == READER), "{after}");
}

fn text_has_segment(text: &str) -> bool {
    text.lines()
        .any(|l| l.contains("callbacks (") && l.contains("wait for grace period"))
}

#[test]
fn json_has_every_section() {
    let _serial = serial();
    let v: Value = serde_json::from_str(&grace::report().to_json()).expect("valid JSON");
    for key in [
        "pending",
        "budget_bytes",
        "grace_period",
        "readers_inside",
        "rcu_callbacks",
        "expedites",
        "budget",
        "shrinker",
        "kvfree_fallbacks",
        "stalls",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    for api in ["rcu_call", "kvfree", "pending", "srcu_call", "total"] {
        assert!(v["pending"][api]["bytes"].is_u64(), "{api}: {v}");
    }
}

#[test]
fn shrinker_and_kvfree_show_up() {
    let _serial = serial();
    let before = grace::report();
    for i in 0..100u64 {
        grace::kvfree(Box::new([i; 8]));
    }
    grace::pressure::scan(u64::MAX);
    grace::kvfree_barrier();
    let after = grace::report();
    assert!(after.pressure.scans > before.pressure.scans);
    assert!(after.kvfree.objects_freed >= before.kvfree.objects_freed + 100);
    let text = after.to_string();
    assert!(text.contains("shrinker:"), "{text}");
    assert!(text.contains("kvfree fallbacks:"), "{text}");
}

#[cfg(target_os = "linux")]
#[test]
fn the_report_signal_produces_a_report() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    grace::report::set_report_sink(move |r| {
        let _ = tx.lock().unwrap().send(r.to_json());
    });
    grace::report::install_signal_report(grace::report::ReportSignal::Usr2)
        .expect("the handler installs");
    // Installing the same signal again is a no-op; another one is refused.
    grace::report::install_signal_report(grace::report::ReportSignal::Usr2).unwrap();
    assert!(grace::report::install_signal_report(grace::report::ReportSignal::Usr1).is_err());

    // SAFETY: raise(3) sends a signal to this thread; a handler is installed for it.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
    let json = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a report arrives after the signal");
    let v: Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(v["grace_period"]["completed"].is_u64());

    // And again: one report per signal.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a second report arrives");
    grace::report::reset_report_sink();
}
