//! One API over every flavor: the [`Flavor`] trait.
//!
//! Without one, code that wants to work on RCU or on an SRCU domain ends up with
//! `if (srcu) ... else ...` at every call ("interface fragmentation", as in the kernel's
//! `rcu_pending`, which takes an optional `srcu_struct` and branches on it).
//! Here the grace-period machinery is one engine and each flavor implements [`Flavor`], so
//! layers above (deferred freeing, pending-object tracking) are written once, generically.
//!
//! [`Rcu`] is the process-wide RCU flavor as a value.

use crate::cookie::{Cookie, Issuer};
use crate::wait::{BarrierFuture, GraceFuture};

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
    /// The flavor whose cookies this one hands out and accepts: [`Rcu`], or the SRCU domain
    /// type. A cookie of another flavor does not type-check. A flavor of your own that wraps
    /// one of grace's names that one's issuer, and its grace periods must be that flavor's:
    /// `Issuer = Rcu` promises that an RCU grace period also ends this flavor's sections (an
    /// [`RcuCell`](crate::RcuCell) of it frees through `kvfree`, which waits for RCU's).
    type Issuer: Issuer;

    /// Enter a read-side critical section.
    fn read_lock(&self) -> Self::Guard<'_>;
    /// Wait for a normal grace period.
    fn synchronize(&self);
    /// Wait for a grace period, driving it for the least latency.
    fn synchronize_expedited(&self);
    /// A cookie for a grace period after now; starts nothing.
    fn get_state(&self) -> Cookie<Self::Issuer>;
    /// A cookie for a grace period after now, which will be run.
    fn start_poll(&self) -> Cookie<Self::Issuer>;
    /// Has the cookie's grace period ended?
    ///
    /// # Panics
    ///
    /// If the cookie came from another domain of the same type (another SRCU domain).
    fn poll_state(&self, cookie: Cookie<Self::Issuer>) -> bool;
    /// This flavor's cookie whose [`raw`](Cookie::raw) value is `raw`: a cookie kept in an
    /// `AtomicU64`, turned back into one.
    fn cookie_from_raw(&self, raw: u64) -> Cookie<Self::Issuer>;
    /// Wait, if needed, until the cookie's grace period has ended.
    fn cond_synchronize(&self, cookie: Cookie<Self::Issuer>) {
        if !self.poll_state(cookie) {
            // A grace period that starts after now also starts after the cookie was taken.
            self.synchronize();
        }
    }
    /// The index of the first expired cookie of `cookies`.
    fn poll_state_any(&self, cookies: &[Cookie<Self::Issuer>]) -> Option<usize> {
        cookies.iter().position(|&c| self.poll_state(c))
    }
    /// Queue `f` to run after a grace period, lazily.
    fn call<F: FnOnce() + Send + 'static>(&self, f: F);
    /// Queue `f` to run after a grace period, without waiting to batch.
    fn call_hurry<F: FnOnce() + Send + 'static>(&self, f: F);
    /// Wait until every callback queued before this call has run.
    fn barrier(&self);

    /// Have the grace periods that work already queued on this flavor waits for run as
    /// expedited ones, without waiting for them: what grace's flood and memory-budget logic
    /// does when objects pile up (the kernel expedites grace periods when callbacks flood).
    /// The default starts a normal grace period ([`start_poll`](Flavor::start_poll)); RCU
    /// and SRCU domains expedite.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::{Flavor, Rcu};
    /// Rcu.call(|| {});
    /// Rcu.expedite_pending(); // returns at once
    /// Rcu.barrier();
    /// ```
    fn expedite_pending(&self) {
        let _ = self.start_poll();
    }

    /// [`call`](Flavor::call) for grace's own machinery (`Pending`'s re-arming callback):
    /// the callback always runs on a worker, never on a thread that queues callbacks later
    /// (see `rcu::Invocation`). Not meant for users; the default is `call`.
    #[doc(hidden)]
    fn call_offloaded<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.call(f)
    }

    /// A future that is ready once a grace period that starts after this call has ended:
    /// [`synchronize`](Flavor::synchronize) without blocking a thread (see [`crate::wait`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// use grace::Flavor;
    /// let domain = grace::srcu::Srcu::new().unwrap();
    /// block_on(domain.synchronize_async());
    /// ```
    fn synchronize_async(&self) -> GraceFuture<'_, Self>
    where
        Self: Sized,
    {
        GraceFuture::new(self, self.get_state())
    }

    /// A future that is ready once `cookie`'s grace period has ended:
    /// [`cond_synchronize`](Flavor::cond_synchronize) without blocking a thread.
    ///
    /// # Panics
    ///
    /// When polled, if the cookie came from another SRCU domain.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// use grace::Flavor;
    /// let domain = grace::srcu::Srcu::new().unwrap();
    /// let c = domain.start_poll();
    /// block_on(domain.wait_for(c));
    /// assert!(domain.poll_state(c));
    /// ```
    fn wait_for(&self, cookie: Cookie<Self::Issuer>) -> GraceFuture<'_, Self>
    where
        Self: Sized,
    {
        GraceFuture::new(self, cookie)
    }

    /// A future that is ready once every callback queued before this call has run:
    /// [`barrier`](Flavor::barrier) without blocking the caller's thread. The barrier runs on
    /// a thread of its own, so the flavor must be `'static` and `Clone`: for an SRCU domain,
    /// call it on an `Arc<Srcu>`, or on a `&'static Srcu` as `(&DOMAIN).barrier_async()`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// use grace::Flavor;
    /// use std::sync::Arc;
    /// let domain = Arc::new(grace::srcu::Srcu::new().unwrap());
    /// domain.call(|| {});
    /// block_on(domain.barrier_async());
    /// assert_eq!(domain.stats().callbacks_pending, 0);
    /// ```
    fn barrier_async(&self) -> BarrierFuture
    where
        Self: Clone + Send + 'static,
    {
        BarrierFuture::start(self.clone())
    }
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
    type Issuer = Rcu;

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
    fn cookie_from_raw(&self, raw: u64) -> Cookie {
        Cookie::from_seq(raw)
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
    fn call_offloaded<F: FnOnce() + Send + 'static>(&self, f: F) {
        crate::rcu::call_internal(f, false)
    }
    fn expedite_pending(&self) {
        crate::rcu::expedite_pending()
    }
}

/// Forward every [`Flavor`] method through a pointer type, so that generic code can hold a
/// `&'static Srcu` or an `Arc<Srcu>` (what a `'static` callback needs) as its flavor.
macro_rules! forward_flavor {
    ($($ptr:ty where $($bound:path),*;)*) => {$(
        impl<F: Flavor $(+ $bound)*> Flavor for $ptr {
            type Guard<'a> = F::Guard<'a> where Self: 'a;
            type Issuer = F::Issuer;

            #[inline]
            fn read_lock(&self) -> Self::Guard<'_> {
                (**self).read_lock()
            }
            fn expedite_pending(&self) {
                (**self).expedite_pending()
            }
            fn synchronize(&self) {
                (**self).synchronize()
            }
            fn synchronize_expedited(&self) {
                (**self).synchronize_expedited()
            }
            fn get_state(&self) -> Cookie<F::Issuer> {
                (**self).get_state()
            }
            fn start_poll(&self) -> Cookie<F::Issuer> {
                (**self).start_poll()
            }
            fn poll_state(&self, cookie: Cookie<F::Issuer>) -> bool {
                (**self).poll_state(cookie)
            }
            fn cookie_from_raw(&self, raw: u64) -> Cookie<F::Issuer> {
                (**self).cookie_from_raw(raw)
            }
            fn cond_synchronize(&self, cookie: Cookie<F::Issuer>) {
                (**self).cond_synchronize(cookie)
            }
            fn poll_state_any(&self, cookies: &[Cookie<F::Issuer>]) -> Option<usize> {
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
            fn call_offloaded<C: FnOnce() + Send + 'static>(&self, f: C) {
                (**self).call_offloaded(f)
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
