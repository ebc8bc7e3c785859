//! Linux system calls: `membarrier(2)` and `sched_getcpu(3)`.

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier_syscall(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments (cmd, flags) and a cpu id that is ignored
    // without MEMBARRIER_CMD_FLAG_CPU; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    }
}

/// Query support for, and register this process with, private expedited membarrier.
/// Returns `false` (and the caller falls back to fences) if either step fails.
pub(super) fn membarrier_register() -> bool {
    let supported = membarrier_syscall(MEMBARRIER_CMD_QUERY);
    if supported < 0 {
        return false;
    }
    let need = (MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
        as libc::c_long;
    if supported & need != need {
        return false;
    }
    membarrier_syscall(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
}

/// Make every running thread of this process execute a full memory barrier.
pub(super) fn membarrier() {
    if membarrier_syscall(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
        // Registration succeeded before the mode was chosen, so the kernel cannot refuse the
        // command now; continuing would silently drop the reader/updater ordering. This is the
        // one "cannot happen" system-call failure we abort on (as liburcu's urcu_die does).
        let err = std::io::Error::last_os_error();
        eprintln!("grace: membarrier(PRIVATE_EXPEDITED) failed after registration: {err}");
        std::process::abort();
    }
}

#[inline]
pub(super) fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        0
    } else {
        cpu as usize
    }
}

/// Register `child` to run in the child process after every `fork()`. Returns `false` if
/// registration failed.
pub(super) fn at_fork_child(child: unsafe extern "C" fn()) -> bool {
    // SAFETY: `child` is a valid function for the life of the process and only performs
    // atomic stores (async-signal-safe, as a fork handler must be).
    unsafe { libc::pthread_atfork(None, None, Some(child)) == 0 }
}

/// Runs `dtor(arg)` when a thread exits, after the destructors of Rust thread-locals.
///
/// glibc's thread exit runs the C++-style thread-local destructors (which Rust's `thread_local!`
/// registers through `__cxa_thread_atexit_impl`) before the pthread-key destructors, so a key
/// destructor is the last hook a thread runs. One key per hook, created on first use.
pub(crate) struct FinalHook {
    dtor: unsafe extern "C" fn(*mut libc::c_void),
    key: std::sync::OnceLock<Option<libc::pthread_key_t>>,
}

impl FinalHook {
    pub(crate) const fn new(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> FinalHook {
        FinalHook {
            dtor,
            key: std::sync::OnceLock::new(),
        }
    }

    /// Arm the hook for the calling thread with `arg` (replacing an earlier `arg` of this
    /// thread). Returns `false` if no key could be created or set.
    pub(crate) fn arm(&self, arg: *mut libc::c_void) -> bool {
        let key = self.key.get_or_init(|| {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is a valid out-pointer and `dtor` a valid destructor for the
            // key's whole life (the key is never deleted).
            (unsafe { libc::pthread_key_create(&mut key, Some(self.dtor)) } == 0).then_some(key)
        });
        match key {
            // SAFETY: the key was created above; `arg` is stored, not dereferenced, by libc.
            Some(k) => unsafe { libc::pthread_setspecific(*k, arg) == 0 },
            None => false,
        }
    }

    /// Disarm the hook for the calling thread: it will not run at this thread's exit.
    pub(crate) fn disarm(&self) {
        if let Some(Some(k)) = self.key.get() {
            // SAFETY: the key was created by `arm`; a null value means "no destructor call".
            unsafe { libc::pthread_setspecific(*k, std::ptr::null()) };
        }
    }
}

/// The calling thread's name as the kernel knows it (`pthread_getname_np`; Rust sets it from
/// the thread's name, cut to 15 bytes), or `None`. Works at any point of the thread's life,
/// also in its last thread-exit destructors, where `std::thread::current` is gone.
pub(super) fn thread_name() -> Option<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `pthread_self` is always a valid handle for the calling thread; the buffer is
    // writable for its whole length, which is passed, and is at least the 16 bytes the call
    // needs.
    let r = unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string within its length.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    let s = s.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}
