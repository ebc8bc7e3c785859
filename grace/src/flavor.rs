//! One API over every flavor: the [`Flavor`] trait.
//!
//! Without one, code that wants to work on RCU or on an SRCU domain ends up with
//! `if (srcu) ... else ...` at every call ("interface fragmentation", as in the kernel's
//! `rcu_pending`, which takes an optional `srcu_struct` and branches on it).
//! Here the grace-period machinery is one engine and each flavor implements [`Flavor`], so
//! layers above (deferred freeing, pending-object tracking) are written once, generically.
//!
//! [`Rcu`] is the process-wide RCU flavor as a value.

use crate::cookie::Cookie;

/// What every RCU flavor offers: read-side sections, grace periods (blocking and polled),
/// callbacks and a callback barrier. The ordering guarantee is the same for every flavor; see
/// [`crate::rcu`].
///
/// # Examples
///
/// Code generic over the flavor:
///
/// ```
/// use grace::{Flavor, Rcu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// fn retire_all<F: Flavor>(flavor: &F, n: usize) -> Arc<AtomicUsize> {
///     let freed = Arc::new(AtomicUsize::new(0));
///     for _ in 0..n {
///         let f = freed.clone();
///         flavor.call(move || {
///             f.fetch_add(1, Ordering::Relaxed);
///         });
///     }
///     flavor.barrier();
///     freed
/// }
/// assert_eq!(retire_all(&Rcu, 10).load(Ordering::Relaxed), 10);
/// ```
pub trait Flavor: Sync {
    /// The read-side guard; the section lasts while it lives.
    type Guard<'a>
    where
        Self: 'a;

    /// Enter a read-side critical section.
    fn read_lock(&self) -> Self::Guard<'_>;
    /// Wait for a normal grace period.
    fn synchronize(&self);
    /// Wait for a grace period, driving it for the least latency.
    fn synchronize_expedited(&self);
    /// A cookie for a grace period after now; starts nothing.
    fn get_state(&self) -> Cookie;
    /// A cookie for a grace period after now, which will be run.
    fn start_poll(&self) -> Cookie;
    /// Has the cookie's grace period ended?
    fn poll_state(&self, cookie: Cookie) -> bool;
    /// Wait, if needed, until the cookie's grace period has ended.
    fn cond_synchronize(&self, cookie: Cookie) {
        if !self.poll_state(cookie) {
            // A grace period that starts after now also starts after the cookie was taken.
            self.synchronize();
        }
    }
    /// The index of the first expired cookie of `cookies`.
    fn poll_state_any(&self, cookies: &[Cookie]) -> Option<usize> {
        cookies.iter().position(|&c| self.poll_state(c))
    }
    /// Queue `f` to run after a grace period, lazily.
    fn call<F: FnOnce() + Send + 'static>(&self, f: F);
    /// Queue `f` to run after a grace period, without waiting to batch.
    fn call_hurry<F: FnOnce() + Send + 'static>(&self, f: F);
    /// Wait until every callback queued before this call has run.
    fn barrier(&self);
}

/// The process-wide RCU flavor ([`crate::rcu`]) as a [`Flavor`] value.
///
/// # Examples
///
/// ```
/// use grace::{Flavor, Rcu};
/// let g = Rcu.read_lock();
/// drop(g);
/// Rcu.synchronize();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Rcu;

impl Flavor for Rcu {
    type Guard<'a> = crate::rcu::Guard;

    #[inline]
    fn read_lock(&self) -> crate::rcu::Guard {
        crate::rcu::read_lock()
    }
    fn synchronize(&self) {
        crate::rcu::synchronize()
    }
    fn synchronize_expedited(&self) {
        crate::rcu::synchronize_expedited()
    }
    fn get_state(&self) -> Cookie {
        crate::rcu::get_state()
    }
    fn start_poll(&self) -> Cookie {
        crate::rcu::start_poll()
    }
    fn poll_state(&self, cookie: Cookie) -> bool {
        crate::rcu::poll_state(cookie)
    }
    fn cond_synchronize(&self, cookie: Cookie) {
        crate::rcu::cond_synchronize(cookie)
    }
    fn poll_state_any(&self, cookies: &[Cookie]) -> Option<usize> {
        crate::rcu::poll_state_any(cookies)
    }
    #[inline]
    fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
        crate::rcu::call(f)
    }
    fn call_hurry<F: FnOnce() + Send + 'static>(&self, f: F) {
        crate::rcu::call_hurry(f)
    }
    fn barrier(&self) {
        crate::rcu::barrier()
    }
}

/// Forward every [`Flavor`] method through a pointer type, so that generic code can hold a
/// `&'static Srcu` or an `Arc<Srcu>` (what a `'static` callback needs) as its flavor.
macro_rules! forward_flavor {
    ($($ptr:ty where $($bound:path),*;)*) => {$(
        impl<F: Flavor $(+ $bound)*> Flavor for $ptr {
            type Guard<'a> = F::Guard<'a> where Self: 'a;

            #[inline]
            fn read_lock(&self) -> Self::Guard<'_> {
                (**self).read_lock()
            }
            fn synchronize(&self) {
                (**self).synchronize()
            }
            fn synchronize_expedited(&self) {
                (**self).synchronize_expedited()
            }
            fn get_state(&self) -> Cookie {
                (**self).get_state()
            }
            fn start_poll(&self) -> Cookie {
                (**self).start_poll()
            }
            fn poll_state(&self, cookie: Cookie) -> bool {
                (**self).poll_state(cookie)
            }
            fn cond_synchronize(&self, cookie: Cookie) {
                (**self).cond_synchronize(cookie)
            }
            fn poll_state_any(&self, cookies: &[Cookie]) -> Option<usize> {
                (**self).poll_state_any(cookies)
            }
            #[inline]
            fn call<C: FnOnce() + Send + 'static>(&self, f: C) {
                (**self).call(f)
            }
            fn call_hurry<C: FnOnce() + Send + 'static>(&self, f: C) {
                (**self).call_hurry(f)
            }
            fn barrier(&self) {
                (**self).barrier()
            }
        }
    )*};
}

forward_flavor! {
    &F where;
    std::sync::Arc<F> where Send;
}

// Under Miri the lib tests run with the leak check on, and RCU's threads would outlive the
// test; tests/miri_smoke.rs covers the flavor there.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn generic<F: Flavor>(f: F) -> bool {
        let c = f.start_poll();
        f.cond_synchronize(c);
        drop(f.read_lock());
        f.poll_state(c)
    }

    #[test]
    #[allow(clippy::needless_borrows_for_generic_args)] // the reference is what is tested
    fn references_and_arcs_are_flavors() {
        assert!(generic(&Rcu));
        assert!(generic(Arc::new(Rcu)));
    }
}
