//! The fence fallback (`GRACE_NO_MEMBARRIER=1`): chosen once at start-up and used for the
//! whole process. Alone in its binary because the choice is process-wide.

use grace::{rcu, BarrierMode, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn fence_mode_is_chosen_once_and_works() {
    std::env::set_var("GRACE_NO_MEMBARRIER", "1");
    assert_eq!(rcu::stats().barrier_mode, BarrierMode::Fence);
    // The decision does not change afterwards, whatever anyone asks for.
    assert_eq!(grace::sys::init(false), BarrierMode::Fence);
    assert!(!grace::sys::membarrier_once());

    let cell = Arc::new(RcuCell::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (cell, stop, reads) = (cell.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            // At least one read, however fast the writer is.
            loop {
                let g = rcu::read_lock();
                let v = *cell.load(&g);
                assert!(v >= last, "values go backwards: {v} after {last}");
                last = v;
                reads.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    for i in 1..200u64 {
        cell.replace(i).defer_drop();
        if i % 50 == 0 {
            rcu::synchronize();
        }
    }
    grace::kvfree_barrier();
    // On a loaded machine the reader may not have been scheduled yet: let it read at least
    // once before stopping it (liveness, not speed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reads.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
}

/// Set in the child that `a_malformed_setting_keeps_the_valid_ones` starts.
const CHILD: &str = "GRACE_TEST_CONFIG_CHILD";

#[cfg(unix)]
#[test]
fn a_malformed_setting_keeps_the_valid_ones_and_is_reported_once() {
    use std::os::unix::ffi::OsStrExt;
    if std::env::var_os(CHILD).is_some() {
        // The child: initialize the flavor (twice over: kvfree reads the settings too).
        grace::kvfree(Box::new(1u64));
        grace::kvfree_barrier();
        println!("mode={:?}", rcu::stats().barrier_mode);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_malformed_setting_keeps_the_valid_ones_and_is_reported_once",
        ])
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("GRACE_NO_MEMBARRIER", "1")
        .env("GRACE_LAZY_MS", "abc")
        .env("GRACE_CB_WORKERS", std::ffi::OsStr::from_bytes(b"\xff2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("mode=Fence"),
        "GRACE_NO_MEMBARRIER=1 was dropped:\n{stdout}"
    );
    assert_eq!(
        stderr.matches("GRACE_LAZY_MS=\"abc\"").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("GRACE_CB_WORKERS=").count(), 1, "{stderr}");
}
