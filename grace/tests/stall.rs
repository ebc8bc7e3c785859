//! Stall warnings: a reader held past the threshold is reported once, by thread name (RCU) or
//! by domain (SRCU). A test binary of its own: the threshold and the hook are process-wide.

use grace::report::{Stall, StallFlavor};
use grace::{rcu, srcu};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

static STALLS: Mutex<Vec<Stall>> = Mutex::new(Vec::new());
/// The hook is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn setup() -> std::sync::MutexGuard<'static, ()> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    grace::report::set_stall_threshold(Some(Duration::from_millis(50)));
    grace::report::set_stall_hook(|s| STALLS.lock().unwrap().push(s.clone()));
    serial
}

/// Hold a section (entered through `enter`) on a thread named `name` for `hold`, and run
/// `wait` meanwhile on this thread once the section has begun.
fn hold_while<G>(
    name: &str,
    hold: Duration,
    enter: impl FnOnce() -> G + Send,
    wait: impl FnOnce(),
) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(s, move || {
                let g = enter();
                tx.send(()).unwrap();
                std::thread::sleep(hold);
                drop(g);
            })
            .unwrap();
        rx.recv().unwrap();
        wait();
    });
}

#[test]
fn an_rcu_reader_held_too_long_is_reported_once_by_name() {
    let _serial = setup();
    hold_while(
        "stalling-reader",
        Duration::from_millis(400),
        rcu::read_lock,
        rcu::synchronize,
    );
    let rcu_stalls: Vec<Stall> = STALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.flavor == StallFlavor::Rcu)
        .cloned()
        .collect();
    assert_eq!(rcu_stalls.len(), 1, "{rcu_stalls:?}");
    let s = &rcu_stalls[0];
    assert_eq!(s.thread.as_deref(), Some("stalling-reader"));
    assert!(s.held >= Duration::from_millis(50), "{s:?}");
    assert!(s.grace_period >= 1);
    assert!(s.to_string().contains("'stalling-reader'"), "{s}");
    // The report keeps it.
    let r = grace::report();
    assert!(r.stalls >= 1);
    assert!(r
        .recent_stalls
        .iter()
        .any(|s| s.thread.as_deref() == Some("stalling-reader")));
}

#[test]
fn an_srcu_reader_held_too_long_names_its_domain_once() {
    let _serial = setup();
    let d = srcu::Srcu::new().unwrap();
    let other = srcu::Srcu::new().unwrap();
    hold_while(
        "srcu-stalling-reader",
        Duration::from_millis(400),
        || d.read_lock(),
        || {
            // The other domain is not held up, and warns about nothing.
            other.synchronize();
            d.synchronize();
        },
    );
    let mine: Vec<Stall> = STALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| matches!(s.flavor, StallFlavor::Srcu { .. }))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].flavor, StallFlavor::Srcu { domain: d.id() });
    assert!(mine[0].held >= Duration::from_millis(50));
    assert!(
        mine[0]
            .to_string()
            .contains(&format!("SRCU domain #{}", d.id())),
        "{}",
        mine[0]
    );
}

#[test]
fn a_panicking_stall_hook_does_not_break_grace_periods() {
    let _serial = setup();
    grace::report::set_stall_hook(|_| panic!("a stall hook that panics (expected by this test)"));
    hold_while(
        "reader-for-a-bad-hook",
        Duration::from_millis(200),
        rcu::read_lock,
        rcu::synchronize,
    );
    // The grace-period machinery still works: callbacks run, grace periods end.
    let before = rcu::stats().grace_periods;
    rcu::call_hurry(|| ());
    rcu::barrier();
    rcu::synchronize();
    assert!(rcu::stats().grace_periods > before);
    grace::report::reset_stall_hook();
}
