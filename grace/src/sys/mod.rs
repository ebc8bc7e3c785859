//! Everything platform-specific: the asymmetric memory barrier (`membarrier`), the
//! current-CPU hint used for sharding, the CPU count, and the system calls of the PSI
//! monitor ([`crate::pressure::psi`]).
//!
//! # The barrier pair
//!
//! Readers pay for a grace period's ordering with a *light barrier*; updaters pay with a
//! *heavy barrier*. Two implementations exist, and one of them is chosen once, at
//! start-up, by [`init`], never a mix:
//!
//! | mode | light (reader) | heavy (updater) |
//! |---|---|---|
//! | [`BarrierMode::Membarrier`] | compiler fence only | `membarrier(PRIVATE_EXPEDITED)`: every running thread of the process executes a full fence |
//! | [`BarrierMode::Fence`] | `fence(SeqCst)` | `fence(SeqCst)` |
//!
//! The membarrier pair is the one liburcu's "memb" flavor uses: a reader's compiler fence plus
//! the updater's system call behave as if both sides had executed a full fence, because the
//! kernel interrupts every CPU running one of our threads (and a thread that is not running
//! passes through a context switch, itself a full barrier). The fence mode is the fallback for
//! kernels without the command, for Miri and loom (which cannot model a system call), and for
//! testing with `GRACE_NO_MEMBARRIER=1`.
//!
//! Under `cfg(miri)` and on non-Linux targets the system calls are replaced by the portable
//! `fallback` module, so the rest of the crate runs under Miri unchanged.
//!
//! # fork()
//!
//! A child process created by `fork()` has only the thread that called it: the grace-period,
//! callback, kvfree and `Pending` worker threads that grace started in the parent do not exist
//! there, and a lock one of them held at the moment of the fork stays held. grace does not
//! restart them (their state, locks included, was copied mid-flight). Instead, every call
//! that would wait for one of them in the child ([`crate::rcu::barrier`],
//! [`crate::kvfree_barrier`], [`crate::srcu::Srcu::barrier`], [`crate::Pending::barrier`] and
//! dropping a `Pending`) panics with a message naming the cause, rather than hang. A child that
//! calls `exec` (as `std::process::Command` does) is unaffected, and so is a process that forks
//! before grace starts any thread. `rcu::synchronize` and the other waits that the calling
//! thread drives itself are not covered: do not rely on them in such a child either.
//! Detection uses `pthread_atfork` on Linux; elsewhere (and under Miri) it is absent.

use crate::sync::{compiler_fence, fence, AtomicU8, Ordering};

#[cfg(all(target_os = "linux", not(miri), not(loom)))]
mod linux;
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
use linux as imp;

#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
mod fallback;

#[cfg(not(loom))] // its user, the pressure layer, is compiled out under loom
pub(crate) mod psi;
#[cfg(not(loom))]
pub(crate) mod signal;
#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
use fallback as imp;

/// Which pair of barriers the process uses. Chosen once by [`init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierMode {
    /// Readers use a compiler fence; updaters call `membarrier(PRIVATE_EXPEDITED)`.
    Membarrier,
    /// Both sides execute `fence(SeqCst)`.
    Fence,
}

const MODE_UNSET: u8 = 0;
const MODE_MEMBARRIER: u8 = 1;
const MODE_FENCE: u8 = 2;

#[cfg(not(loom))]
static MODE: AtomicU8 = AtomicU8::new(MODE_UNSET);

#[cfg(loom)]
loom::lazy_static! {
    static ref MODE: AtomicU8 = AtomicU8::new(MODE_FENCE);
}

/// Choose the barrier mode for the life of the process and return it.
///
/// The first call decides: membarrier is used when the kernel supports
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` and registration succeeds, unless `force_fence` is set
/// (from `GRACE_NO_MEMBARRIER=1`). Later calls return the decision already made, whatever
/// they pass, so the two halves of a barrier pair can never disagree. Note that the RCU
/// flavor reads `GRACE_NO_MEMBARRIER` when it first initializes; a program that calls this
/// (or [`membarrier_once`]) earlier makes the decision itself, and the variable is then ignored.
pub fn init(force_fence: bool) -> BarrierMode {
    // Acquire: pairs with the Release of the winning store below, so a thread that sees the
    // decision also sees the membarrier registration that preceded it.
    match MODE.load(Ordering::Acquire) {
        MODE_MEMBARRIER => return BarrierMode::Membarrier,
        MODE_FENCE => return BarrierMode::Fence,
        _ => {}
    }
    init_slow(force_fence)
}

#[cold]
#[inline(never)]
fn init_slow(force_fence: bool) -> BarrierMode {
    let want = if !force_fence && imp::membarrier_register() {
        MODE_MEMBARRIER
    } else {
        MODE_FENCE
    };
    // AcqRel: first writer wins; Release publishes the registration done above, Acquire on
    // failure reads the winner's registration (pairs with itself in racing initializers).
    let decided = match MODE.compare_exchange(MODE_UNSET, want, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => want,
        Err(already) => already,
    };
    if decided == MODE_MEMBARRIER {
        BarrierMode::Membarrier
    } else {
        BarrierMode::Fence
    }
}

/// The mode chosen by [`init`], or `None` before anything initialized it.
pub fn mode() -> Option<BarrierMode> {
    match MODE.load(Ordering::Acquire) {
        MODE_MEMBARRIER => Some(BarrierMode::Membarrier),
        MODE_FENCE => Some(BarrierMode::Fence),
        _ => None,
    }
}

/// The reader's half of the barrier pair, for code that does not carry the mode in a word
/// of its own (the read side of RCU keeps it in the epoch word instead).
#[inline]
pub(crate) fn light_barrier(mode: BarrierMode) {
    match mode {
        // Pairs with heavy_barrier(): the updater's membarrier turns this compiler fence into
        // a full fence on our CPU at whatever point we happen to be.
        BarrierMode::Membarrier => compiler_fence(Ordering::SeqCst),
        // Pairs with the SeqCst fence in heavy_barrier() (store-buffering pattern).
        BarrierMode::Fence => fence(Ordering::SeqCst),
    }
}

/// The updater's half of the barrier pair: after it returns, every thread of the process has
/// executed a full memory barrier since this call began (membarrier mode), or this thread has
/// executed a `SeqCst` fence that pairs with the readers' own (fence mode).
pub(crate) fn heavy_barrier(mode: BarrierMode) {
    // SeqCst: orders this thread's own earlier accesses in the language's model too; the
    // system call's barrier is invisible to the Rust memory model.
    fence(Ordering::SeqCst);
    if mode == BarrierMode::Membarrier {
        imp::membarrier();
        // SeqCst: and this thread's later accesses after the call.
        fence(Ordering::SeqCst);
    }
}

/// The calling thread's name as the operating system knows it (on Linux, Rust's thread name
/// cut to 15 bytes), usable at any point of the thread's life; `None` where unknown.
#[cfg_attr(loom, allow(dead_code))] // its user, the report, is compiled out under loom
pub(crate) fn thread_name() -> Option<String> {
    imp::thread_name()
}

/// A hint of the CPU the calling thread runs on, in `0..num_cpus()`. It may be stale by the
/// time it is used; callers use it only to spread load, never for correctness.
#[inline]
pub fn current_cpu() -> usize {
    imp::current_cpu() % num_cpus()
}

/// How many CPUs the process may run on (at least 1). Computed once.
pub fn num_cpus() -> usize {
    use std::sync::OnceLock;
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// A hook that runs `dtor(arg)` when a thread exits, after every Rust thread-local destructor
/// of that thread has run (a pthread-key destructor on Linux). Declare one `static` per
/// destructor; [`FinalHook::arm`] returns `false` where no such hook exists (Miri, other
/// platforms), and callers then need a fallback.
#[cfg_attr(loom, allow(unused_imports))] // its users are compiled out under loom
pub(crate) use imp::FinalHook;

/// Issue one bare `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` system call, for measuring
/// what a grace period's heavy barrier costs. Returns `false` if the process is not in
/// membarrier mode (see [`init`]) and nothing was issued.
///
/// Hidden from the docs and not a stable API: it exists for the benchmark that prices a grace
/// period's heavy barrier (`grace bench sync`), which lives in another crate.
///
/// # Examples
///
/// ```
/// let issued = grace::sys::membarrier_once();
/// assert_eq!(issued, grace::sys::init(false) == grace::sys::BarrierMode::Membarrier);
/// ```
#[doc(hidden)]
pub fn membarrier_once() -> bool {
    if init(false) != BarrierMode::Membarrier {
        return false;
    }
    imp::membarrier();
    true
}

/// Print one report line on standard error without ever panicking.
///
/// `eprintln!` goes through the test harness's output capture when there is one, so a test that
/// provokes a report on purpose (a panicking callback, a leaked domain) does not print it as if
/// something had failed; but `eprintln!` panics when standard error is closed, and a report
/// must not, so that panic is caught (where panics abort, the line goes straight to the raw
/// stream instead, uncaptured).
#[cfg_attr(loom, allow(dead_code))] // its users are compiled out under loom
pub(crate) fn report(args: std::fmt::Arguments<'_>) {
    #[cfg(panic = "unwind")]
    {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eprintln!("{args}")));
    }
    #[cfg(not(panic = "unwind"))]
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{args}");
    }
}

/// Detection of a `fork()` after grace started threads: see "fork()" in the module docs.
#[cfg(not(loom))]
mod fork {
    use crate::sync::{AtomicBool, Ordering};

    /// Some grace background thread has been started in this process.
    static STARTED: AtomicBool = AtomicBool::new(false);
    /// The fork handler is registered (inherited by children, so never reset).
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    /// This process was forked from one that had grace background threads.
    static ORPHANED: AtomicBool = AtomicBool::new(false);

    /// Note that grace is about to start a background thread in this process.
    pub(crate) fn thread_starting() {
        // Relaxed: flags; the fork handler runs on the forking thread, which either made this
        // call itself or synchronized with the thread that did (it observed its effects).
        STARTED.store(true, Ordering::Relaxed);
        if !REGISTERED.swap(true, Ordering::Relaxed) {
            super::imp::at_fork_child(child);
        }
    }

    /// Runs in the child after `fork()`: async-signal-safe (atomic loads and stores only).
    unsafe extern "C" fn child() {
        // Relaxed: the child has a single thread now.
        if STARTED.load(Ordering::Relaxed) {
            ORPHANED.store(true, Ordering::Relaxed);
        }
    }

    /// Panic if this process was forked after grace started background threads: `what` would
    /// wait for a thread that does not exist here.
    pub(crate) fn assert_not_orphaned(what: &str) {
        // Relaxed: written before this process's other threads existed.
        if ORPHANED.load(Ordering::Relaxed) {
            orphaned_panic(what);
        }
    }

    #[cold]
    #[inline(never)]
    fn orphaned_panic(what: &str) -> ! {
        panic!(
            "grace: {what} called in a child process created by fork() after grace had started \
             its background threads in the parent; those threads do not exist in the child, so \
             it would wait forever. Fork before using grace's deferred services (call, kvfree, \
             Pending, SRCU call), or exec in the child."
        );
    }
}
#[cfg(not(loom))]
pub(crate) use fork::{assert_not_orphaned, thread_starting};

/// Under loom there is no process to fork: nothing to note.
#[cfg(loom)]
pub(crate) fn thread_starting() {}
