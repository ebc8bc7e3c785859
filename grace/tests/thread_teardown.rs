//! Threads whose thread-local destructors use RCU after grace's own exit hook has run: the
//! slot they register then is given back at the thread's final exit, not leaked. In a binary
//! of their own, one test at a time (`SERIAL`), so that the slot counts are the tests' own.

use grace::rcu;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slots after `THREADS` sequential threads: a handful (the test thread, grace's own threads,
/// a slot in flight), never one per thread.
const FEW: usize = 10;

struct UsesRcuOnDrop(Arc<AtomicUsize>);

impl Drop for UsesRcuOnDrop {
    fn drop(&mut self) {
        let g = rcu::read_lock();
        drop(g);
        let ran = self.0.clone();
        rcu::call(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
}

thread_local! {
    static LATE: std::cell::RefCell<Option<UsesRcuOnDrop>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn rcu_used_during_thread_teardown_neither_leaks_slots_nor_loses_callbacks() {
    let _s = serial();
    let ran = Arc::new(AtomicUsize::new(0));
    const THREADS: usize = 50;
    for _ in 0..THREADS {
        let ran = ran.clone();
        std::thread::spawn(move || {
            // Registered before grace's exit hook, so destroyed after it.
            LATE.with(|l| *l.borrow_mut() = Some(UsesRcuOnDrop(ran)));
            let g = rcu::read_lock();
            drop(g);
        })
        .join()
        .unwrap();
    }
    rcu::barrier();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        THREADS,
        "a callback queued at teardown was lost"
    );
    let slots = rcu::stats().reader_slots;
    assert!(
        slots < FEW,
        "{slots} slots for {THREADS} sequential threads: teardown slots leak"
    );
    rcu::synchronize();
}

#[test]
fn a_guard_held_by_a_late_thread_local_gives_its_slot_back_when_it_drops() {
    let _s = serial();
    thread_local! {
        static HELD: std::cell::RefCell<Option<rcu::Guard>> = const { std::cell::RefCell::new(None) };
    }
    const THREADS: usize = 100;
    for _ in 0..THREADS {
        std::thread::spawn(|| {
            // `HELD` is initialized first, so it is destroyed after grace's exit hook, which
            // then finds the section still open.
            HELD.with(|h| *h.borrow_mut() = Some(rcu::read_lock()));
        })
        .join()
        .unwrap();
    }
    let slots = rcu::stats().reader_slots;
    assert!(
        slots < FEW,
        "{slots} slots for {THREADS} sequential threads"
    );
    rcu::synchronize(); // no section was left open
}

#[cfg(target_os = "linux")]
#[test]
fn rcu_first_used_in_a_pthread_key_destructor_gives_its_slot_back() {
    let _s = serial();
    unsafe extern "C" fn reads(_arg: *mut std::ffi::c_void) {
        drop(rcu::read_lock());
    }
    let key = {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer and `reads` a destructor valid for the process.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(reads)) },
            0
        );
        key
    };
    const THREADS: usize = 100;
    for _ in 0..THREADS {
        std::thread::spawn(move || {
            // SAFETY: the key was created above; a non-null value makes its destructor run.
            unsafe { libc::pthread_setspecific(key, 1 as *mut std::ffi::c_void) };
        })
        .join()
        .unwrap();
    }
    let slots = rcu::stats().reader_slots;
    assert!(
        slots < FEW,
        "{slots} slots for {THREADS} sequential threads"
    );
    rcu::synchronize();
}

/// Set in the child process that `a_leaked_guard_is_reported_once_at_thread_exit` starts.
const CHILD: &str = "GRACE_TEST_LEAKED_GUARD_CHILD";

#[test]
fn a_leaked_guard_is_reported_once_at_thread_exit() {
    if std::env::var_os(CHILD).is_some() {
        // The child: two threads leak a guard each and exit. Grace periods would now wait
        // forever, so the child does nothing else.
        for _ in 0..2 {
            std::thread::spawn(|| std::mem::forget(rcu::read_lock()))
                .join()
                .unwrap();
        }
        return;
    }
    let _s = serial();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_leaked_guard_is_reported_once_at_thread_exit"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let n = stderr
        .matches("exited inside an RCU read-side section")
        .count();
    assert_eq!(n, 1, "expected one report, got:\n{stderr}");
    assert!(stderr.contains("mem::forget"), "{stderr}");
}
