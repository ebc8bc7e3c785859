//! The report signal: an opt-in signal handler that wakes a thread, which then prints
//! `grace::report()` (see [`crate::report::install_signal_report`]).
//!
//! A signal handler may only call async-signal-safe functions, so the handler here does one
//! thing: it `write`s a byte to a pipe. The reporting thread blocks in `read` on the other
//! end and does the real work (gathering statistics takes locks and allocates) outside the
//! handler. The handler saves and restores `errno`, as every handler that makes a system call
//! must, since it may interrupt code that is about to read `errno`.
//!
//! On targets without this support (not Linux, Miri, loom) [`install`] reports
//! [`std::io::ErrorKind::Unsupported`].

#[cfg(all(target_os = "linux", not(miri), not(loom)))]
use crate::sync::{AtomicU32, Ordering};

/// The write end of the pipe the handler writes to, plus one; 0 before installation. (A
/// lock-free atomic load is async-signal-safe.)
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
static WAKE_FD: AtomicU32 = AtomicU32::new(0);

/// The signal handler: one `write(2)` of one byte, `errno` preserved.
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
extern "C" fn on_signal(_signo: libc::c_int) {
    // Relaxed: the descriptor was stored before the handler was installed (sigaction is the
    // ordering point), and never changes afterwards.
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd == 0 {
        return;
    }
    let fd = (fd - 1) as libc::c_int;
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: reading this thread's errno slot (see above).
    let saved = unsafe { *errno };
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; it reads one byte from a live local. A full pipe
    // (EAGAIN: the descriptor is non-blocking) means a report is already requested.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    // SAFETY: restoring the slot read above.
    unsafe { *errno = saved };
}

/// Install the handler for `signo` and return the read end of its pipe: each byte read from
/// it is one request for a report. Called once (the caller serializes).
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
pub(crate) fn install(signo: i32) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The write end must not block the handler: a full pipe already holds a request.
    // SAFETY: fcntl on a descriptor we just created and own.
    unsafe {
        let fl = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    // Relaxed: sigaction below orders this store before any run of the handler.
    WAKE_FD.store(fds[1] as u32 + 1, Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags) that we fill in; the
    // handler is an `extern "C" fn(c_int)` that only calls async-signal-safe functions.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signo, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: both descriptors are ours and unused elsewhere (the handler was not
        // installed, so nothing writes to the write end).
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        // Relaxed: as above.
        WAKE_FD.store(0, Ordering::Relaxed);
        return Err(e);
    }
    // SAFETY: fds[0] is a descriptor we own and hand over to the File.
    Ok(unsafe { std::fs::File::from_raw_fd(fds[0]) })
}

/// Unsupported here: see the module docs.
#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
pub(crate) fn install(_signo: i32) -> std::io::Result<std::fs::File> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the report signal needs Linux",
    ))
}

/// The number of `SIGUSR1` / `SIGUSR2` on this target (None where there are none).
pub(crate) fn signo(usr2: bool) -> Option<i32> {
    #[cfg(unix)]
    {
        Some(if usr2 { libc::SIGUSR2 } else { libc::SIGUSR1 })
    }
    #[cfg(not(unix))]
    {
        let _ = usr2;
        None
    }
}
