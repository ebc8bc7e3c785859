//! The system side of the PSI monitor ([`crate::pressure::psi`]): open a pressure file and
//! install a trigger on it, an `eventfd` that stops the monitor thread, and `poll(2)` over
//! both.
//!
//! A PSI trigger lives exactly as long as the file descriptor it was written to: the kernel
//! checks the trigger text when it is written (`psi_trigger_create`), and from then on a
//! `poll` on that descriptor reports `POLLPRI` once per event (each poll clears the event),
//! or `POLLERR` when the source is gone (a cgroup removed while we watch it). Closing the
//! descriptor destroys the trigger.
//!
//! Under Miri, loom and on targets other than Linux, every entry point answers
//! [`std::io::ErrorKind::Unsupported`], and the portable layer reports "PSI not present".

use std::io;
use std::time::Duration;

/// What one [`wait`] saw.
#[cfg_attr(
    not(all(target_os = "linux", not(miri), not(loom))),
    allow(dead_code) // the fallback constructs none of them
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The trigger fired (`POLLPRI`).
    Event,
    /// The [`Waker`] was woken: the monitor is being dropped.
    Woken,
    /// Nothing happened within the timeout (or a signal interrupted the wait).
    Timeout,
    /// The trigger's source is gone (`POLLERR`, `POLLHUP` or `POLLNVAL`).
    Gone,
}

/// Why installing a trigger failed, and at which step.
#[cfg_attr(
    not(all(target_os = "linux", not(miri), not(loom))),
    allow(dead_code) // the fallback constructs none of them
)]
#[derive(Debug)]
pub(crate) enum TriggerFailure {
    /// Opening the file for reading and writing failed.
    Open(io::Error),
    /// The kernel refused the trigger text.
    Write(io::Error),
}

#[cfg(all(target_os = "linux", not(miri), not(loom)))]
mod imp {
    use super::{TriggerFailure, Wait};
    use std::fs::File;
    use std::io::{self, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::time::Duration;

    /// An open pressure file with a trigger installed on it. Dropping it closes the
    /// descriptor, which destroys the trigger.
    #[derive(Debug)]
    pub(crate) struct TriggerFd(File);

    /// Open `path` read-write and non-blocking, as the kernel's PSI documentation does, and
    /// write `text` (which must end with a NUL byte: the kernel overwrites the last byte of a
    /// write with one, so without it the window's last digit would be lost).
    pub(crate) fn open_trigger(path: &Path, text: &[u8]) -> Result<TriggerFd, TriggerFailure> {
        debug_assert_eq!(text.last(), Some(&0));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(TriggerFailure::Open)?;
        loop {
            return match file.write(text) {
                Ok(n) if n == text.len() => Ok(TriggerFd(file)),
                Ok(_) => Err(TriggerFailure::Write(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the kernel accepted only part of the trigger text",
                ))),
                // A signal before anything was written: the trigger is not installed yet.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(TriggerFailure::Write(e)),
            };
        }
    }

    /// A non-blocking `eventfd`: [`Waker::wake`] makes every later [`wait`] return
    /// [`Wait::Woken`] (the counter is never drained).
    #[derive(Debug)]
    pub(crate) struct Waker(OwnedFd);

    impl Waker {
        pub(crate) fn new() -> io::Result<Waker> {
            // SAFETY: eventfd takes an initial value and flags and touches no memory of ours;
            // it returns a new descriptor or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by eventfd: it is open and owned by nobody else.
            Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        pub(crate) fn wake(&self) {
            let one: u64 = 1;
            // SAFETY: the buffer is the 8 bytes of `one`, valid for reads for the whole call;
            // the descriptor is open for as long as `self` lives. The only failure is EAGAIN
            // when the counter would overflow, which still leaves it readable (woken).
            let _ = unsafe {
                libc::write(
                    self.0.as_raw_fd(),
                    (&one as *const u64).cast::<libc::c_void>(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Whether `e` means "no PSI here": disabled (`EOPNOTSUPP`) or no such system call.
    pub(crate) fn is_unsupported(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
            || e.kind() == io::ErrorKind::Unsupported
    }

    /// Whether the kernel refused a trigger for a reason that still leaves the file readable:
    /// no permission (`EPERM`, `EACCES`, `EROFS`), a trigger it does not accept from this
    /// process (`EINVAL`: an unprivileged window that is not a multiple of 2 s), polling
    /// disabled (`EOPNOTSUPP`), or a trigger already on the descriptor (`EBUSY`).
    pub(crate) fn is_refusal(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(
                libc::EPERM
                    | libc::EACCES
                    | libc::EROFS
                    | libc::EINVAL
                    | libc::EOPNOTSUPP
                    | libc::EBUSY
            )
        )
    }

    /// Wait up to `timeout` for the waker, or for an event on `trigger` when there is one.
    /// The waker wins when both are ready.
    pub(crate) fn wait(
        trigger: Option<&TriggerFd>,
        waker: &Waker,
        timeout: Duration,
    ) -> io::Result<Wait> {
        let mut fds = [
            libc::pollfd {
                fd: waker.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is ignored by poll: sampled mode waits on the waker only.
                fd: trigger.map_or(-1, |t| t.0.as_raw_fd()),
                events: libc::POLLPRI,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(libc::c_int::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is an array of two initialized pollfd structures that lives across
        // the call, and the count passed is its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Wait::Timeout)
            } else {
                Err(e)
            };
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return Ok(Wait::Woken);
        }
        let rev = fds[1].revents;
        if rev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            Ok(Wait::Gone)
        } else if rev & libc::POLLPRI != 0 {
            Ok(Wait::Event)
        } else {
            Ok(Wait::Timeout)
        }
    }
}

#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
mod imp {
    //! No PSI: every entry point answers `Unsupported`.
    use super::{TriggerFailure, Wait};
    use std::io;
    use std::path::Path;
    use std::time::Duration;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "pressure stall information exists only on Linux (and not under Miri or loom)",
        )
    }

    /// Never constructed here.
    #[derive(Debug)]
    pub(crate) struct TriggerFd(());

    pub(crate) fn open_trigger(_path: &Path, _text: &[u8]) -> Result<TriggerFd, TriggerFailure> {
        Err(TriggerFailure::Open(unsupported()))
    }

    /// Never constructed here: [`Waker::new`] refuses.
    #[derive(Debug)]
    pub(crate) struct Waker(());

    impl Waker {
        pub(crate) fn new() -> io::Result<Waker> {
            Err(unsupported())
        }

        pub(crate) fn wake(&self) {}
    }

    pub(crate) fn is_unsupported(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Unsupported
    }

    pub(crate) fn is_refusal(_e: &io::Error) -> bool {
        // No trigger is ever attempted here: open_trigger refuses first.
        true
    }

    pub(crate) fn wait(
        _trigger: Option<&TriggerFd>,
        _waker: &Waker,
        _timeout: Duration,
    ) -> io::Result<Wait> {
        Err(unsupported())
    }
}

pub(crate) use imp::{is_refusal, is_unsupported, open_trigger, wait, TriggerFd, Waker};

/// The poll timeout of the monitor thread: long, because a [`Waker`] ends the wait at once;
/// it only bounds how long a lost wake-up could go unnoticed.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

#[cfg(all(test, target_os = "linux", not(miri), not(loom)))]
mod tests {
    use super::*;
    use std::path::Path;

    /// The kernel's answer to a trigger it rejects is one the monitor treats as a refusal
    /// (and then samples), not as a failure.
    #[test]
    fn kernel_rejections_are_refusals() {
        let path = Path::new("/proc/pressure/memory");
        if !path.exists() {
            println!("skipped: {} does not exist", path.display());
            return;
        }
        for bad in [&b"some 0 1000000\0"[..], b"none 1 1000000\0"] {
            match open_trigger(path, bad) {
                Err(TriggerFailure::Open(e) | TriggerFailure::Write(e)) => {
                    assert!(is_refusal(&e), "{e}")
                }
                Ok(_) => panic!("the kernel accepted {bad:?}"),
            }
        }
        assert!(!is_refusal(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(is_unsupported(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
    }

    #[test]
    fn a_woken_waker_stays_woken() {
        let w = Waker::new().unwrap();
        assert_eq!(
            wait(None, &w, Duration::from_millis(1)).unwrap(),
            Wait::Timeout
        );
        w.wake();
        for _ in 0..2 {
            assert_eq!(wait(None, &w, Duration::from_secs(5)).unwrap(), Wait::Woken);
        }
    }
}
