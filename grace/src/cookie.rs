//! Grace-period cookies: small copyable values that remember "a grace period that starts
//! after now", to be polled later instead of blocked on.
//!
//! A [`Cookie`] tracks normal grace periods only. A [`FullCookie`] also completes when an
//! *expedited* grace period ends, like the kernel's `struct rcu_gp_oldstate`. Cookies are
//! ordered by the flavor that produced them; polling a cookie with another flavor (or another
//! SRCU domain) answers nothing useful.
//!
//! At most [`NUM_ACTIVE_POLL_OLDSTATE`] distinct [`Cookie`] values (and
//! [`NUM_ACTIVE_POLL_FULL_OLDSTATE`] distinct [`FullCookie`] values) can be not-yet-completed
//! at any one time, so a structure that keeps one bucket per outstanding cookie (as
//! `Pending<T>` does) can size an array by them.

use crate::gp::seq;

/// How many distinct [`Cookie`] values can be outstanding (not yet completed) at once: one
/// for the grace period in progress and one for the grace period after it. The kernel's
/// `NUM_ACTIVE_RCU_POLL_OLDSTATE`.
///
/// # Examples
///
/// ```
/// use grace::cookie::{Cookie, NUM_ACTIVE_POLL_OLDSTATE};
/// // One bucket per cookie that may still be waiting, plus one for the expired ones.
/// let buckets: [Vec<u32>; NUM_ACTIVE_POLL_OLDSTATE + 1] = Default::default();
/// assert_eq!(buckets.len(), 3);
/// ```
pub const NUM_ACTIVE_POLL_OLDSTATE: usize = 2;

/// How many distinct [`FullCookie`] values can be outstanding at once: two normal snapshots
/// times two expedited snapshots. The kernel's `NUM_ACTIVE_RCU_POLL_FULL_OLDSTATE`.
///
/// # Examples
///
/// ```
/// assert_eq!(grace::cookie::NUM_ACTIVE_POLL_FULL_OLDSTATE, 4);
/// ```
pub const NUM_ACTIVE_POLL_FULL_OLDSTATE: usize = 4;

/// A snapshot of a flavor's normal grace-period sequence: "the grace period that ends after
/// every reader active now has finished".
///
/// Get one from `get_state` (starts nothing) or `start_poll` (makes sure a grace period will
/// run), then ask `poll_state` whether it has completed.
///
/// # Examples
///
/// ```
/// use grace::rcu;
/// let cookie = rcu::start_poll();
/// rcu::cond_synchronize(cookie); // returns at once if a grace period already elapsed
/// assert!(rcu::poll_state(cookie));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie(pub(crate) u64);

impl Cookie {
    /// A cookie that always reads as completed, like the kernel's
    /// `get_completed_synchronize_rcu()`: a sentinel for "nothing to wait for".
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::cookie::Cookie::completed();
    /// assert!(grace::rcu::poll_state(c));
    /// ```
    pub const fn completed() -> Cookie {
        Cookie(seq::COMPLETED)
    }

    /// Whether two cookies stand for the same grace period (the kernel's
    /// `same_state_synchronize_rcu`). Cheaper than comparing poll results, and exact.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let a = rcu::get_state();
    /// let b = rcu::get_state();
    /// // With no grace period started in between, both wait for the same one.
    /// # let _ = (a, b);
    /// assert!(a.same_state(a));
    /// ```
    pub const fn same_state(self, other: Cookie) -> bool {
        self.0 == other.0
    }

    /// The raw sequence value, for diagnostics. Its layout is private and may change.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// A cookie that completes when either a normal or an expedited grace period that started
/// after it was taken has ended (the kernel's `struct rcu_gp_oldstate`).
///
/// # Examples
///
/// ```
/// use grace::rcu;
/// let c = rcu::get_state_full();
/// rcu::synchronize_expedited();
/// assert!(rcu::poll_state_full(c), "an expedited grace period completes a full cookie");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FullCookie {
    pub(crate) normal: u64,
    pub(crate) expedited: u64,
}

impl FullCookie {
    /// A full cookie that always reads as completed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(grace::rcu::poll_state_full(grace::cookie::FullCookie::completed()));
    /// ```
    pub const fn completed() -> FullCookie {
        FullCookie {
            normal: seq::COMPLETED,
            expedited: seq::COMPLETED,
        }
    }

    /// Whether two full cookies stand for the same pair of grace periods.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::rcu::get_state_full();
    /// assert!(c.same_state(c));
    /// ```
    pub const fn same_state(self, other: FullCookie) -> bool {
        self.normal == other.normal && self.expedited == other.expedited
    }

    /// The normal-grace-period part, as a plain [`Cookie`].
    ///
    /// # Examples
    ///
    /// ```
    /// let full = grace::rcu::get_state_full();
    /// let _plain: grace::cookie::Cookie = full.normal();
    /// ```
    pub const fn normal(self) -> Cookie {
        Cookie(self.normal)
    }
}
