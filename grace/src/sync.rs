//! The one synchronization facade of the crate.
//!
//! Every atomic, lock and cell the concurrent state machines use comes from here, so that
//! `RUSTFLAGS="--cfg loom"` swaps the whole crate onto loom's model-checked versions at once
//! (the pattern of tokio's `loom` module and crossbeam-epoch's `primitive`). Nothing else in
//! the crate names `std::sync::atomic` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
#[allow(unused_imports)] // AtomicU32: only the SRCU service uses it, compiled out under loom
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Loom has no compiler fence: under loom the light barrier is a real fence (see
/// [`crate::sys::light_barrier`]), so this is never the only ordering a model relies on.
#[cfg(loom)]
pub(crate) fn compiler_fence(_: Ordering) {}

/// Lock a mutex, ignoring poisoning.
///
/// Poisoning only says that some thread panicked while holding the lock; every structure
/// guarded by a grace mutex is left consistent at each unlock point (callbacks, the only
/// user code we run, never run under one of our locks), so the data is still good.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Wait on a condition variable, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(guard) {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Wait on a condition variable for at most `timeout`, ignoring poisoning (see [`lock`]).
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: std::time::Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(poisoned) => poisoned.into_inner().0,
    }
}
