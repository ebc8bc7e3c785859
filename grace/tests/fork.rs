//! `fork()` after grace started its background threads: in the child, every call that would
//! wait for one of those threads panics with a message naming the cause instead of hanging.
//! Alone in its binary (one test), so that no other test's thread holds a lock at the fork.
#![cfg(target_os = "linux")]

use grace::pending::{Pending, Process};
use grace::srcu::Srcu;
use grace::{kvfree, kvfree_barrier, rcu};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How the child ended.
#[derive(Debug, PartialEq)]
enum Child {
    /// It panicked with a message that names `fork()`.
    PanickedNamingFork,
    /// It panicked with another message.
    PanickedOtherwise,
    /// `f` returned.
    Returned,
    /// It was killed (by the alarm: it hung).
    Hung,
}

/// Run `f` in a child process created by `fork()`; the child is killed if it hangs for 10 s.
fn in_child(f: impl FnOnce()) -> Child {
    // SAFETY: the child only runs `f` (grace's own code, which must cope) and then `_exit`s;
    // the panic hook is silenced first so that the child touches no lock of the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(10) };
        std::panic::set_hook(Box::new(|_| {}));
        let code = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => 2,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if msg.contains("fork()") {
                    0
                } else {
                    1
                }
            }
        };
        // SAFETY: ends the child at once, without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        return Child::Hung;
    }
    match libc::WEXITSTATUS(status) {
        0 => Child::PanickedNamingFork,
        1 => Child::PanickedOtherwise,
        _ => Child::Returned,
    }
}

#[test]
fn waits_for_background_threads_panic_in_a_forked_child_instead_of_hanging() {
    // Start every background service in the parent.
    rcu::call(|| ());
    rcu::barrier();
    kvfree(Box::new([7u8; 64]));
    kvfree_barrier();
    let domain = Srcu::new().unwrap();
    domain.call(|| ());
    domain.barrier();
    let pending = Pending::new(grace::Rcu, Process::free());
    pending.enqueue(Box::new(1u64));
    pending.barrier();

    assert_eq!(
        in_child(rcu::barrier),
        Child::PanickedNamingFork,
        "rcu::barrier"
    );
    assert_eq!(
        in_child(kvfree_barrier),
        Child::PanickedNamingFork,
        "kvfree_barrier"
    );
    assert_eq!(
        in_child(|| domain.barrier()),
        Child::PanickedNamingFork,
        "Srcu::barrier"
    );
    assert_eq!(
        in_child(|| pending.barrier()),
        Child::PanickedNamingFork,
        "Pending::barrier"
    );
    let p2 = Pending::new(grace::Rcu, Process::free());
    p2.enqueue(Box::new(2u64));
    assert_eq!(
        in_child(move || drop(p2)),
        Child::PanickedNamingFork,
        "dropping a Pending"
    );

    // The parent is unaffected.
    rcu::barrier();
    pending.barrier();
}
