//! The chicken switch: a process-wide way to turn off the batching of [`Pending`] and
//! [`kvfree`], so that a user who suspects it can rule it out in production without a rebuild.
//!
//! With batching off, every object goes through its own callback of the flavor (`call_rcu` for
//! RCU), queued when it is handed over and processed by that callback after the grace period:
//! the per-object path the kernel's `rcu_pending` and `kvfree_rcu` replace. Slower and bigger
//! (one callback record per object), but with nothing of the batching machinery in the way:
//! no shards, no chunks of pointers, no lanes, no retired queues, no sweeps.
//!
//! The switch is decided once per process, at the *first use*: the first [`Pending`] built,
//! or the first [`kvfree`] that registers its thread, or the first call of [`batching`],
//! whichever comes first. Until then [`set_batching`] may set it; otherwise `GRACE_PENDING`
//! (`on`, the default, or `off`; see [`crate::config`]) decides. It never changes afterwards,
//! so a `Pending` never mixes the two paths.
//!
//! # State word
//!
//! | `STATE` | meaning |
//! |---|---|
//! | `UNDECIDED` (0) | no use yet; [`set_batching`] or the environment will decide |
//! | `ON` (1) | batched (the default) |
//! | `OFF` (2) | the chicken switch: one callback per object |
//!
//! It moves once, from `UNDECIDED` to `ON` or `OFF`, by compare-and-swap; the loser of a race
//! adopts the winner's value.
//!
//! [`Pending`]: crate::pending::Pending
//! [`kvfree`]: crate::kvfree()

use crate::sync::{AtomicU8, Ordering};
use std::fmt;

const UNDECIDED: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

/// The switch (see the table in the module docs).
static STATE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Whether `Pending` and `kvfree` batch their objects in this process: `true` unless the
/// chicken switch is off (`GRACE_PENDING=off`, or [`set_batching`]`(false)` before first use).
///
/// The first call decides the switch (from the environment, when [`set_batching`] was not
/// called before), so the answer never changes afterwards.
///
/// # Examples
///
/// ```
/// // With GRACE_PENDING unset, batching is on.
/// # if std::env::var_os("GRACE_PENDING").is_none() {
/// assert!(grace::pending::batching());
/// # }
/// ```
#[inline]
pub fn batching() -> bool {
    // Relaxed: the switch publishes no data; every thread only needs the one value it settles
    // on, and the compare-and-swap in `decide` makes that value unique.
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => decide(),
    }
}

/// First use: settle the switch from the environment.
#[cold]
#[inline(never)]
fn decide() -> bool {
    let want = crate::config::Config::from_env_or_warn().batching;
    settle(want)
}

/// Move the switch from `UNDECIDED` to `want`; return the value it holds afterwards (the
/// winner's, when another thread settled it first).
fn settle(want: bool) -> bool {
    let new = if want { ON } else { OFF };
    // Relaxed: as in `batching`; the CAS alone picks one value for the whole process.
    match STATE.compare_exchange(UNDECIDED, new, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => want,
        Err(now) => now == ON,
    }
}

/// The chicken switch was already decided, the other way, when [`set_batching`] was called.
///
/// # Examples
///
/// ```
/// let now = grace::pending::batching(); // decides the switch
/// let err = grace::pending::set_batching(!now).unwrap_err();
/// assert_eq!(err.batching, now);
/// assert!(err.to_string().contains("first use"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwitchError {
    /// The value the switch holds (and keeps): `true` for batched.
    pub batching: bool,
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Pending/kvfree batching switch was already decided at first use (batching {}); \
             call set_batching before the first Pending or kvfree, or set GRACE_PENDING",
            if self.batching { "on" } else { "off" }
        )
    }
}

impl std::error::Error for SwitchError {}

/// Turn the batching of `Pending` and `kvfree` on or off for this process (`false` is the
/// chicken switch: one callback of the flavor per object; see the
/// [module docs](crate::pending#the-chicken-switch)). Takes precedence over `GRACE_PENDING`.
///
/// Honoured only before first use: before the first [`Pending`](crate::pending::Pending) is
/// built, the first [`kvfree`](crate::kvfree()) registers its thread, or [`batching`] is
/// called. Afterwards the switch stays as it is.
///
/// # Errors
///
/// [`SwitchError`] (holding the value in force) when the switch was already decided the other
/// way. `Ok(())` when batching is now `on` (the argument), whether this call decided it or an
/// earlier use already had.
///
/// # Examples
///
/// ```
/// // First thing in main, before any Pending or kvfree:
/// match grace::pending::set_batching(false) {
///     Ok(()) => assert!(!grace::pending::batching()),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
pub fn set_batching(on: bool) -> Result<(), SwitchError> {
    let now = settle(on);
    if now == on {
        Ok(())
    } else {
        Err(SwitchError { batching: now })
    }
}
