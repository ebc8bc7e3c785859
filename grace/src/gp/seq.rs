//! Grace-period sequence arithmetic: the only place that knows the bit layout.
//!
//! ```text
//!  63                                   2 1 0
//! +--------------------------------------+---+
//! |      number of grace periods ended    |st |
//! +--------------------------------------+---+
//!   st = 0: idle        st = 1: a grace period is in progress
//! ```
//!
//! This is the kernel's `gp_seq` layout (`kernel/rcu/rcu.h`): starting a grace period sets
//! the state to 1, ending it clears the state and adds one to the counter. A *snapshot* is the
//! value the sequence must reach before a grace period has both started and ended after the
//! snapshot was taken; a snapshot is *done* once the sequence has reached it.
//!
//! Comparisons are wrap-safe (a difference interpreted as signed), and at one grace period per
//! microsecond the 62-bit counter would take 146,000 years to wrap, so the wrap-safety is
//! belt and braces. The unit tests start the counter just below the wrap point to prove it.
//!
//! Every helper here is a pure function of `u64`s; the atomics that hold the values live in
//! the grace-period engine.

/// Low bits holding the state.
pub(crate) const STATE_BITS: u32 = 2;
/// Mask of the state bits.
pub(crate) const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// One grace period, in sequence units.
#[cfg(test)]
pub(crate) const GP_UNIT: u64 = 1 << STATE_BITS;
/// The value a cookie takes when it must always read as completed. Its state bits are 1 (in
/// progress), which no snapshot ever has, so it cannot collide with a real cookie.
pub(crate) const COMPLETED: u64 = 0x1;

/// `a >= b`, wrap-safe: true if `a` is at most 2^63 steps ahead of `b`.
#[inline]
pub(crate) const fn ge(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) >= 0
}

/// Is a grace period in progress in sequence value `s`?
#[inline]
pub(crate) const fn in_progress(s: u64) -> bool {
    s & STATE_MASK != 0
}

/// The value after starting a grace period from idle value `s`.
#[inline]
pub(crate) const fn started(s: u64) -> u64 {
    debug_assert!(!in_progress(s));
    s.wrapping_add(1)
}

/// The value after ending the grace period in progress in `s`.
#[inline]
pub(crate) const fn ended(s: u64) -> u64 {
    debug_assert!(in_progress(s));
    (s | STATE_MASK).wrapping_add(1)
}

/// The value the sequence must reach for a full grace period to elapse after now, when it
/// now reads `s`: the end of the next grace period if idle, of the one after the current one
/// if one is in progress (the current one may have started before our update).
#[inline]
pub(crate) const fn snapshot(s: u64) -> u64 {
    s.wrapping_add(2 * STATE_MASK + 1) & !STATE_MASK
}

/// Has the sequence, now reading `cur`, reached snapshot `snap`?
#[inline]
pub(crate) const fn done(cur: u64, snap: u64) -> bool {
    snap == COMPLETED || ge(cur, snap)
}

/// The number of grace periods ended in sequence value `s` (for statistics).
#[inline]
pub(crate) const fn count(s: u64) -> u64 {
    s >> STATE_BITS
}

/// The initial sequence value. Tests start near the wrap point; production starts at zero.
pub(crate) const INITIAL: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    fn check_from(start: u64) {
        let mut s = start;
        // Idle: a snapshot needs exactly the next grace period.
        let snap_idle = snapshot(s);
        assert!(!done(s, snap_idle));
        s = started(s);
        assert!(in_progress(s));
        // In progress: a snapshot needs the one after the current one.
        let snap_busy = snapshot(s);
        assert_ne!(snap_idle, snap_busy);
        assert!(!done(s, snap_idle));
        s = ended(s);
        assert!(!in_progress(s));
        assert!(
            done(s, snap_idle),
            "the GP that started after snap_idle ended"
        );
        assert!(
            !done(s, snap_busy),
            "the GP in progress at snap_busy does not count"
        );
        s = ended(started(s));
        assert!(done(s, snap_busy));
        assert!(done(s, COMPLETED));
        // Old cookies stay done.
        for _ in 0..10 {
            s = ended(started(s));
            assert!(done(s, snap_idle) && done(s, snap_busy));
        }
        assert_eq!(
            snapshot(s) & STATE_MASK,
            0,
            "a snapshot is never in progress"
        );
    }

    #[test]
    fn arithmetic_from_zero() {
        check_from(INITIAL);
    }

    #[test]
    fn arithmetic_across_the_wrap() {
        // 1, 2 and 3 grace periods before the counter wraps.
        for back in 1..=3 {
            check_from(0u64.wrapping_sub(back * GP_UNIT));
        }
    }

    #[test]
    fn completed_never_equals_a_snapshot() {
        for s in [0u64, 1, 4, 5, u64::MAX - 3, u64::MAX - 2] {
            assert_ne!(snapshot(s), COMPLETED);
        }
    }

    #[test]
    fn at_most_two_distinct_pending_snapshots() {
        // Whatever moment a snapshot is taken in, a snapshot that is not yet done is one of
        // the two values { end of next GP, end of the GP after }.
        let mut s = 0u64;
        let mut pending = vec![];
        for step in 0..20 {
            pending.push(snapshot(s));
            pending.retain(|&c| !done(s, c));
            pending.sort();
            pending.dedup();
            assert!(pending.len() <= 2, "step {step}: {pending:?}");
            s = if in_progress(s) { ended(s) } else { started(s) };
        }
    }
}
