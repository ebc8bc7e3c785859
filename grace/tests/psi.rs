//! The PSI monitor against the running kernel: start it on the real memory pressure source
//! (kernel trigger, then sampled), on the CPU file where stalls are common, check its mode,
//! drop it and check that its thread and handler are gone.
//!
//! Then the same as an unprivileged thread (root only: one thread of the test sets its own
//! effective uid), where the kernel refuses a 1 s window and the monitor must sample instead.
//!
//! Where PSI cannot be opened (not Linux, a kernel without `CONFIG_PSI`, a container that
//! masks the files) each part prints why and returns. One test function, so that counting
//! `grace-psi` threads is not disturbed by another test of this binary.

use grace::pressure::psi::{
    PsiError, PsiEvent, PsiMode, PsiMonitor, PsiSource, StallKind, Trigger,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many threads of this process are named `name` (from `/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Start a monitor, or say why PSI is not usable here and return `None`.
fn start(
    what: &str,
    source: PsiSource,
    trigger: Trigger,
    sampled: bool,
    events: &Arc<Mutex<Vec<PsiEvent>>>,
) -> Option<PsiMonitor> {
    let sink = Arc::clone(events);
    let handler = move |e: PsiEvent| sink.lock().unwrap().push(e);
    let started = if sampled {
        PsiMonitor::start_sampled(source, trigger, handler)
    } else {
        PsiMonitor::start(source, trigger, handler)
    };
    match started {
        Ok(m) => Some(m),
        Err(e @ (PsiError::NotPresent { .. } | PsiError::NotPermitted { .. })) => {
            println!("psi live test ({what}): skipped, PSI cannot be opened here: {e}");
            None
        }
        Err(e) => panic!("psi live test ({what}): {e}"),
    }
}

/// Drop the monitor and check that it stopped: the handler (which holds a clone of
/// `events`) is dropped, and the `grace-psi` thread is gone.
fn stop(what: &str, monitor: PsiMonitor, events: &Arc<Mutex<Vec<PsiEvent>>>, before: usize) {
    assert!(
        monitor.is_running(),
        "{what}: the monitor thread ended early"
    );
    let t = Instant::now();
    drop(monitor);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{what}: dropping the monitor took {:?}",
        t.elapsed()
    );
    assert_eq!(
        Arc::strong_count(events),
        1,
        "{what}: the handler outlived the monitor"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads_named("grace-psi") > before {
        assert!(
            Instant::now() < deadline,
            "{what}: the grace-psi thread is still there"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `f` on a thread whose effective uid is `nobody` (so it has no effective capabilities,
/// `CAP_SYS_RESOURCE` included); `None` if the process may not do that (not root).
#[cfg(target_os = "linux")]
fn as_unprivileged_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    const NOBODY: libc::uid_t = 65534;
    const UNCHANGED: libc::uid_t = libc::uid_t::MAX; // -1
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setresuid takes three integer ids and touches no memory of ours. The raw
            // system call (unlike glibc's wrapper, which signals every thread) changes the
            // credentials of this thread only, and this thread ends right after `f`.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, UNCHANGED, NOBODY, UNCHANGED) };
            (r == 0).then(f)
        })
        .join()
        .expect("the unprivileged thread panicked")
    })
}

#[test]
fn live_monitor_starts_and_stops() {
    let before = threads_named("grace-psi");

    // The real source, with the default trigger (a 2 s window, allowed without privileges):
    // the kernel's trigger where it accepts it, sampling where it refuses.
    let events = Arc::new(Mutex::new(Vec::new()));
    if let Some(m) = start(
        "memory, auto",
        PsiSource::Auto,
        Trigger::default(),
        false,
        &events,
    ) {
        println!(
            "psi live test: watching {} in {:?} mode (refusal: {:?})",
            m.path().display(),
            m.mode(),
            m.refusal()
        );
        assert!(m.path().ends_with("memory.pressure") || m.path().ends_with("memory"));
        match m.mode() {
            PsiMode::KernelTrigger => assert!(m.refusal().is_none()),
            PsiMode::Sampled => assert!(m.refusal().is_some()),
        }
        // The thread names itself once it runs; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads_named("grace-psi") != before + 1 {
            assert!(Instant::now() < deadline, "no grace-psi thread appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop("memory, auto", m, &events, before);
    }

    // The same source, always sampled.
    let events = Arc::new(Mutex::new(Vec::new()));
    if let Some(m) = start(
        "memory, sampled",
        PsiSource::System,
        Trigger::default(),
        true,
        &events,
    ) {
        assert_eq!(m.mode(), PsiMode::Sampled);
        assert!(m.refusal().is_none());
        std::thread::sleep(Duration::from_millis(300)); // a sample or two
        stop("memory, sampled", m, &events, before);
    }

    // The CPU file, where some stall is common on a busy machine: any event that arrives
    // within a couple of windows must describe the file and the trigger it came from. (No
    // event is required: an idle machine has no stall.)
    let cpu = PsiSource::Path("/proc/pressure/cpu".into());
    let trigger = Trigger::new(
        StallKind::Some,
        Duration::from_micros(1),
        Duration::from_secs(2),
    )
    .expect("valid trigger");
    for sampled in [false, true] {
        let what = if sampled { "cpu, sampled" } else { "cpu" };
        let events = Arc::new(Mutex::new(Vec::new()));
        let Some(m) = start(what, cpu.clone(), trigger, sampled, &events) else {
            continue;
        };
        let mode = m.mode();
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(what, m, &events, before);
        let got = std::mem::take(&mut *events.lock().unwrap());
        println!("psi live test ({what}, {mode:?}): {} event(s)", got.len());
        for e in got {
            assert_eq!(e.path, std::path::Path::new("/proc/pressure/cpu"));
            assert_eq!(e.mode, mode);
            assert_eq!(e.trigger, trigger);
            assert!(e.pressure.is_some(), "{e:?}");
            if mode == PsiMode::Sampled {
                assert!(e.stall >= Some(trigger.stall()), "{e:?}");
            }
        }
    }

    // Unprivileged: the kernel refuses a 1 s window (not a multiple of 2 s), and the monitor
    // samples instead and says why; a 2 s window it accepts.
    #[cfg(target_os = "linux")]
    {
        let one_s: Trigger = "some 100000 1000000".parse().unwrap();
        let two_s: Trigger = "some 100000 2000000".parse().unwrap();
        let outcome = as_unprivileged_thread(|| {
            let mut modes = Vec::new();
            for trigger in [one_s, two_s] {
                let events = Arc::new(Mutex::new(Vec::new()));
                let what = format!("unprivileged, {trigger}");
                let Some(m) = start(&what, PsiSource::System, trigger, false, &events) else {
                    return modes;
                };
                modes.push((trigger, m.mode(), m.refusal().map(|e| e.to_string())));
                stop(&what, m, &events, before);
            }
            modes
        });
        match outcome {
            None => println!("psi live test (unprivileged): skipped, not root"),
            Some(modes) => {
                println!("psi live test (unprivileged): {modes:?}");
                for (trigger, mode, refusal) in modes {
                    if trigger == one_s {
                        assert_eq!(mode, PsiMode::Sampled, "{trigger}: {refusal:?}");
                        assert!(refusal.is_some());
                    } else {
                        // Kernels before 6.4 refuse every unprivileged trigger.
                        assert_eq!(refusal.is_some(), mode == PsiMode::Sampled);
                    }
                }
            }
        }
    }
}
