//! Fallible allocation, and the failure injection that proves every fallback path.
//!
//! Rust's `Box::new` and `Vec::push` abort the process when the allocator fails. The parts of
//! grace that must survive allocation failure (constructing an SRCU domain, growing deferred-
//! free storage) allocate through [`try_box`] and [`try_vec`] instead, which report an
//! [`AllocError`] the caller turns into a fallback or a clear error.
//!
//! Both consult an *injection plan*, so grace's own tests and the `grace torture` tool can make
//! the N-th fallible allocation fail on purpose and check that nothing leaks, nothing is lost
//! and nothing is freed early. The injection hooks (`inject`, `inject_globally`,
//! `injected_failures`, `FailurePlan`, `Injection`) are `#[doc(hidden)]`: they exist for
//! testing grace, are not part of the stable API, and are kept compiled in (rather than behind
//! a cargo feature) because the torture tool injects failures into a release build and the
//! check costs one thread-local read on fallible allocation paths only, never on a fast path.
//!
//! Only grace's *fallible* allocation points are affected; everything else keeps allocating
//! normally.
//!
//! # Examples
//!
//! ```
//! use grace::alloc::try_box;
//!
//! let block = try_box([0u8; 64], "a test block").expect("64 bytes");
//! assert_eq!(block.len(), 64);
//! ```

use std::alloc::Layout;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A fallible allocation failed (for real, or because a [`FailurePlan`] said so).
///
/// # Examples
///
/// ```
/// use grace::alloc::{inject, try_vec, FailurePlan};
/// let _fail = inject(FailurePlan::Nth(1));
/// let err = try_vec::<u64>(16, "a pointer array").unwrap_err();
/// assert_eq!(err.to_string(), "out of memory allocating a pointer array (128 bytes)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError {
    /// What was being allocated.
    pub what: &'static str,
    /// How many bytes were asked for.
    pub bytes: usize,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "out of memory allocating {} ({} bytes)",
            self.what, self.bytes
        )
    }
}

impl std::error::Error for AllocError {}

// Testing hook, hidden from the docs: see the module docs for why it is public.
#[doc(hidden)]
/// Which fallible allocations of the calling thread fail, while an [`Injection`] lives.
///
/// # Examples
///
/// ```
/// use grace::alloc::{inject, try_box, FailurePlan};
/// let _all = inject(FailurePlan::AllAfter(1)); // the first succeeds, every later one fails
/// assert!(try_box(1u32, "first").is_ok());
/// assert!(try_box(2u32, "second").is_err());
/// assert!(try_box(3u32, "third").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePlan {
    /// Only the N-th fallible allocation from now (1-based) fails.
    Nth(u64),
    /// The first N succeed, every later one fails.
    AllAfter(u64),
}

thread_local! {
    /// The calling thread's plan and how many fallible allocations it has made under it.
    static PLAN: Cell<Option<(FailurePlan, u64)>> = const { Cell::new(None) };
}

/// One in this many fallible allocations fails on every thread; 0 = off.
static GLOBAL_ONE_IN: AtomicU32 = AtomicU32::new(0);
/// A counter that spreads global failures over the allocation points.
static GLOBAL_TICK: AtomicU64 = AtomicU64::new(0);
/// Failures injected so far (both kinds), for reports.
static INJECTED: AtomicU64 = AtomicU64::new(0);

// Testing hook, hidden from the docs: see the module docs for why it is public.
#[doc(hidden)]
/// Ends a thread's [`FailurePlan`] when dropped, restoring the plan that was there before.
///
/// # Examples
///
/// ```
/// let guard = grace::alloc::inject(grace::alloc::FailurePlan::Nth(3));
/// drop(guard); // allocations succeed again
/// ```
#[must_use = "the plan ends when the guard is dropped"]
pub struct Injection {
    previous: Option<(FailurePlan, u64)>,
    /// The plan is the calling thread's: the guard must be dropped there.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Injection {
    fn drop(&mut self) {
        PLAN.with(|p| p.set(self.previous));
    }
}

// Testing hook, hidden from the docs: see the module docs for why it is public.
#[doc(hidden)]
/// Make fallible allocations of the calling thread fail according to `plan`, until the
/// returned guard is dropped.
///
/// # Examples
///
/// ```
/// use grace::alloc::{inject, try_box, AllocError, FailurePlan};
/// // Something with two allocation points.
/// fn pair() -> Result<(Box<u64>, Box<u64>), AllocError> {
///     Ok((try_box(1, "left")?, try_box(2, "right")?))
/// }
/// // Fail each allocation point in turn: every one reports an error.
/// let mut n = 1;
/// loop {
///     let _fail = inject(FailurePlan::Nth(n));
///     match pair() {
///         Err(_) => n += 1,
///         Ok(_) => break, // `n` is past the last allocation point
///     }
/// }
/// assert_eq!(n, 3);
/// ```
pub fn inject(plan: FailurePlan) -> Injection {
    let previous = PLAN.with(|p| p.replace(Some((plan, 0))));
    Injection {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

// Testing hook, hidden from the docs: see the module docs for why it is public.
#[doc(hidden)]
/// Make one in `one_in` fallible allocations fail, on every thread; `0` turns it off.
///
/// For the torture tool, whose failures must reach worker threads as well. Tests prefer
/// [`inject`], which does not disturb other tests running in parallel.
///
/// # Examples
///
/// ```
/// grace::alloc::inject_globally(1000);
/// grace::alloc::inject_globally(0);
/// ```
pub fn inject_globally(one_in: u32) {
    // Relaxed: a setting; allocation points tolerate seeing it late.
    GLOBAL_ONE_IN.store(one_in, Ordering::Relaxed);
}

// Testing hook, hidden from the docs: see the module docs for why it is public.
#[doc(hidden)]
/// How many allocation failures have been injected in this process so far.
///
/// # Examples
///
/// ```
/// let before = grace::alloc::injected_failures();
/// let _fail = grace::alloc::inject(grace::alloc::FailurePlan::Nth(1));
/// let _ = grace::alloc::try_box(7u8, "a byte");
/// assert_eq!(grace::alloc::injected_failures(), before + 1);
/// ```
pub fn injected_failures() -> u64 {
    INJECTED.load(Ordering::Relaxed)
}

/// Should this fallible allocation fail on purpose?
#[inline]
fn injected() -> bool {
    let local = PLAN.with(|p| match p.get() {
        None => false,
        Some((plan, n)) => {
            let n = n + 1;
            p.set(Some((plan, n)));
            match plan {
                FailurePlan::Nth(k) => n == k,
                FailurePlan::AllAfter(k) => n > k,
            }
        }
    });
    // Relaxed: a setting and a spreading counter; no data is published through them.
    let one_in = GLOBAL_ONE_IN.load(Ordering::Relaxed);
    let global =
        one_in != 0 && GLOBAL_TICK.fetch_add(1, Ordering::Relaxed) % u64::from(one_in) == 0;
    if local || global {
        INJECTED.fetch_add(1, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// Allocate a `Box<T>`, or report the failure instead of aborting; honours the injection plan.
///
/// # Examples
///
/// ```
/// let b = grace::alloc::try_box(5u32, "a counter").expect("memory");
/// assert_eq!(*b, 5);
/// ```
pub fn try_box<T>(value: T, what: &'static str) -> Result<Box<T>, AllocError> {
    let layout = Layout::new::<T>();
    let err = AllocError {
        what,
        bytes: layout.size(),
    };
    if injected() {
        return Err(err);
    }
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let raw = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if raw.is_null() {
        return Err(err);
    }
    // SAFETY: `raw` is a fresh allocation with T's layout, from the global allocator, which is
    // what Box::from_raw requires; writing initializes it.
    unsafe {
        raw.write(value);
        Ok(Box::from_raw(raw))
    }
}

/// An empty `Vec<T>` with room for exactly `cap` elements, or the failure; honours the
/// injection plan.
///
/// # Examples
///
/// ```
/// let v: Vec<u64> = grace::alloc::try_vec(32, "a pointer array").expect("memory");
/// assert!(v.capacity() >= 32 && v.is_empty());
/// ```
pub fn try_vec<T>(cap: usize, what: &'static str) -> Result<Vec<T>, AllocError> {
    let err = AllocError {
        what,
        bytes: cap.saturating_mul(std::mem::size_of::<T>()),
    };
    if injected() {
        return Err(err);
    }
    let mut v = Vec::new();
    v.try_reserve_exact(cap).map_err(|_| err)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_fails_exactly_once_and_the_guard_restores() {
        {
            let _g = inject(FailurePlan::Nth(2));
            assert!(try_box(1u32, "a").is_ok());
            assert!(try_vec::<u8>(8, "b").is_err());
            assert!(try_box(3u32, "c").is_ok());
        }
        assert!(try_box(4u32, "d").is_ok());
    }

    #[test]
    fn all_after_fails_from_then_on_and_plans_nest() {
        let _outer = inject(FailurePlan::AllAfter(1));
        assert!(try_box(1u8, "a").is_ok());
        assert!(try_box(2u8, "b").is_err());
        {
            let _inner = inject(FailurePlan::Nth(5));
            assert!(try_box(3u8, "c").is_ok());
        }
        assert!(try_box(4u8, "d").is_err(), "the outer plan is back");
    }

    #[test]
    fn errors_name_what_and_how_much() {
        let _g = inject(FailurePlan::Nth(1));
        let e = try_vec::<u64>(4, "test array").unwrap_err();
        assert_eq!(e.bytes, 32);
        assert_eq!(
            e.to_string(),
            "out of memory allocating test array (32 bytes)"
        );
    }
}
