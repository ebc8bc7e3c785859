//! `GRACE_REPORT_SIGNAL=USR1` installs the report signal when grace first initializes, with no
//! call from the program. A test binary of its own: the variable must be set before grace's
//! first use in the process, and this is the only test here.

#[cfg(target_os = "linux")]
#[test]
fn the_environment_variable_installs_the_report_signal() {
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    // Set before grace initializes (its first read_lock below); the only test in this binary,
    // so no other thread reads the environment meanwhile.
    std::env::set_var("GRACE_REPORT_SIGNAL", "USR1");
    drop(grace::rcu::read_lock());

    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    grace::report::set_report_sink(move |r| {
        let _ = tx.lock().unwrap().send(r.to_string());
    });
    // The handler is already there: installing the other signal is refused.
    assert!(
        grace::report::install_signal_report(grace::report::ReportSignal::Usr2).is_err(),
        "GRACE_REPORT_SIGNAL did not install the handler"
    );
    // SAFETY: raise(3) sends SIGUSR1 to this thread; grace installed a handler for it.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    let text = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a report arrives after the signal");
    assert!(text.starts_with("grace report"), "{text}");
}
