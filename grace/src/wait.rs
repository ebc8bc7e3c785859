//! Waiting for grace periods without blocking a thread: futures for `synchronize`, polled
//! cookies and `barrier`, on every flavor, for any async runtime.
//!
//! | future | made by | ready when |
//! |---|---|---|
//! | [`GraceFuture`] | [`rcu::synchronize_async`](crate::rcu::synchronize_async), [`Flavor::synchronize_async`] | a grace period that started after the call has ended |
//! | [`GraceFuture`] | [`Cookie::wait`], `cookie.await` (RCU), [`Flavor::wait_for`] | the cookie's grace period has ended ([`poll_state`](Flavor::poll_state) would say `true`) |
//! | [`BarrierFuture`] | [`rcu::barrier_async`](crate::rcu::barrier_async), [`Flavor::barrier_async`] | every callback queued before the call has run |
//!
//! # How a grace-period future is woken
//!
//! No timer and no runtime: the grace-period machinery wakes the task. Each flavor (each SRCU
//! domain) has one list of wakers. A future whose grace period has not ended yet puts its waker
//! in the list, and if no wake-up is queued, queues one with the flavor's `call_hurry`: a
//! callback that runs after a grace period that starts after it was queued, so after the grace
//! period of every cookie taken before, and that wakes every waker in the list. Woken futures
//! poll their cookie again; one that joined the list after the callback was queued may find its
//! grace period not over yet, and queues the next wake-up.
//!
//! So any number of futures waiting at the same time share one callback and one grace period:
//! 10,000 tasks awaiting `synchronize_async()` together cost one grace period, one callback
//! and one wake per task, plus one list insertion each.
//!
//! Dropping a future (cancelling it) removes its waker from the list; a wake-up already queued
//! then wakes nobody, and frees the list when it was the last user. Nothing is leaked.
//!
//! A [`BarrierFuture`] runs the flavor's blocking `barrier` on a short-lived thread of its own
//! (a barrier waits for callback queues, which have no per-waiter hook) and wakes the task when
//! it returns: one thread per call, so it is meant for shutdown paths, not hot loops.
//!
//! # Examples
//!
//! ```
//! # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! use grace::{rcu, RcuCell};
//! let cell = RcuCell::new(String::from("v1"));
//! block_on(async {
//!     let old = cell.replace(String::from("v2"));
//!     old.cookie().await; // the grace period of the old value, without blocking a thread
//!     let old: Box<String> = old.try_reclaim().ok().unwrap();
//!     assert_eq!(*old, "v1");
//!     rcu::synchronize_async().await;
//! });
//! ```

use crate::cookie::{Cookie, Issuer};
use crate::flavor::{Flavor, Rcu};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};
use std::any::TypeId;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

/// The RCU flavor, for futures that borrow their flavor for `'static`.
pub(crate) static RCU: Rcu = Rcu;

/// The tasks waiting for one flavor's (one SRCU domain's) grace periods.
#[derive(Default)]
struct Waiters {
    list: Mutex<WaitList>,
}

#[derive(Default)]
struct WaitList {
    /// Wakers by waiter id.
    wakers: HashMap<u64, Waker>,
    /// A callback is queued that will wake every waker in `wakers`.
    armed: bool,
}

impl Waiters {
    /// The queued callback: wake everyone who waited before it ran.
    fn wake_all(&self) {
        let wakers = {
            let mut l = lock(&self.list);
            l.armed = false;
            std::mem::take(&mut l.wakers)
        };
        // Woken outside the lock: a waker may poll its future at once, on this thread.
        for (_, w) in wakers {
            w.wake();
        }
    }
}

/// Waiter ids: unique, never reused.
static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

/// The waiter list of each flavor and domain that has a future waiting.
type Registry = Mutex<HashMap<(TypeId, u64), Weak<Waiters>>>;
static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The waiter list of the producer of `domain`, created if nobody waits on it now.
fn waiters_for<I: Issuer>(domain: I::Domain) -> Arc<Waiters> {
    let key = (TypeId::of::<I>(), I::domain_key(domain));
    let mut reg = lock(REGISTRY.get_or_init(Registry::default));
    if let Some(w) = reg.get(&key).and_then(Weak::upgrade) {
        return w;
    }
    // Lists nobody uses any more (their domain dropped, say) go on a miss, so the registry
    // holds at most one dead entry per live one.
    reg.retain(|_, w| w.strong_count() > 0);
    let w = Arc::new(Waiters::default());
    reg.insert(key, Arc::downgrade(&w));
    w
}

/// A future that is ready once a grace period of flavor `F` has ended: the one a cookie
/// names ([`Cookie::wait`], [`Flavor::wait_for`]) or one that started after it was made
/// ([`Flavor::synchronize_async`], [`rcu::synchronize_async`](crate::rcu::synchronize_async)).
/// See the [module docs](self) for how it is woken and what it costs.
///
/// Unlike the blocking waits it may be awaited inside a read-side section of the same thread
/// without deadlocking the thread, but a task that holds a section across the `.await` delays
/// that very grace period: end sections before awaiting.
///
/// # Examples
///
/// ```
/// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// use grace::Flavor;
/// let domain = grace::srcu::Srcu::new().unwrap();
/// block_on(async {
///     let c = domain.get_state();
///     domain.wait_for(c).await;
///     assert!(domain.poll_state(c));
///     domain.synchronize_async().await;
/// });
/// ```
#[must_use = "a future does nothing unless awaited"]
pub struct GraceFuture<'a, F: Flavor> {
    flavor: &'a F,
    cookie: Cookie<F::Issuer>,
    /// The list our waker is in (possibly already taken out by a wake-up), and our id.
    waiting: Option<(Arc<Waiters>, u64)>,
}

// The future is never pinned structurally: every field moves freely.
impl<F: Flavor> Unpin for GraceFuture<'_, F> {}

impl<'a, F: Flavor> GraceFuture<'a, F> {
    /// A future for `cookie`'s grace period of `flavor`.
    pub(crate) fn new(flavor: &'a F, cookie: Cookie<F::Issuer>) -> GraceFuture<'a, F> {
        GraceFuture {
            flavor,
            cookie,
            waiting: None,
        }
    }

    /// The cookie this future waits for.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = grace::rcu::synchronize_async();
    /// grace::rcu::synchronize();
    /// assert!(grace::rcu::poll_state(f.cookie())); // so awaiting `f` returns at once
    /// # drop(f);
    /// ```
    pub fn cookie(&self) -> Cookie<F::Issuer> {
        self.cookie
    }

    /// Take our waker out of the list, if it is still there.
    fn leave(&mut self) {
        if let Some((w, id)) = self.waiting.take() {
            lock(&w.list).wakers.remove(&id);
        }
    }
}

impl<F: Flavor> Future for GraceFuture<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.flavor.poll_state(this.cookie) {
            this.leave();
            return Poll::Ready(());
        }
        let domain = this.cookie.domain;
        let (w, id) = this.waiting.get_or_insert_with(|| {
            // Relaxed: only uniqueness matters.
            let id = NEXT_WAITER.fetch_add(1, Ordering::Relaxed);
            (waiters_for::<F::Issuer>(domain), id)
        });
        let arm = {
            let mut l = lock(&w.list);
            // Again under the lock: the grace period may have ended, and its wake-up run,
            // since the check above; then nothing would wake us but a new wake-up.
            if this.flavor.poll_state(this.cookie) {
                l.wakers.remove(id);
                drop(l);
                this.waiting = None;
                return Poll::Ready(());
            }
            match l.wakers.entry(*id) {
                Entry::Occupied(mut e) => {
                    if !e.get().will_wake(cx.waker()) {
                        e.insert(cx.waker().clone());
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(cx.waker().clone());
                }
            }
            !std::mem::replace(&mut l.armed, true)
        };
        if arm {
            // Queued after our waker is in the list, and it runs after a grace period that
            // starts after now, so after our cookie's: it wakes us when we can complete.
            let w = w.clone();
            this.flavor.call_hurry(move || w.wake_all());
        }
        Poll::Pending
    }
}

impl<F: Flavor> Drop for GraceFuture<'_, F> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl<F: Flavor> fmt::Debug for GraceFuture<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraceFuture")
            .field("cookie", &self.cookie)
            .field("registered", &self.waiting.is_some())
            .finish()
    }
}

impl Cookie<Rcu> {
    /// A future that is ready once this cookie's grace period has ended, without blocking a
    /// thread (the async form of [`rcu::cond_synchronize`](crate::rcu::cond_synchronize)).
    /// `cookie.await` does the same.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// let c = grace::rcu::start_poll();
    /// block_on(c.wait());
    /// assert!(grace::rcu::poll_state(c));
    /// ```
    pub fn wait(self) -> GraceFuture<'static, Rcu> {
        GraceFuture::new(&RCU, self)
    }
}

impl IntoFuture for Cookie<Rcu> {
    type Output = ();
    type IntoFuture = GraceFuture<'static, Rcu>;

    /// [`Cookie::wait`], so that an RCU cookie can be awaited directly.
    fn into_future(self) -> GraceFuture<'static, Rcu> {
        self.wait()
    }
}

/// A future that is ready once every callback queued on a flavor before it was made has run
/// (the async form of `barrier`). See the [module docs](self) for its cost.
///
/// # Examples
///
/// ```
/// # fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// let ran = Arc::new(AtomicBool::new(false));
/// let r = ran.clone();
/// grace::rcu::call(move || r.store(true, Ordering::Relaxed));
/// block_on(grace::rcu::barrier_async());
/// assert!(ran.load(Ordering::Relaxed));
/// ```
#[must_use = "a future does nothing unless awaited (the barrier runs anyway)"]
pub struct BarrierFuture {
    shared: Arc<Mutex<BarrierState>>,
}

#[derive(Default)]
struct BarrierState {
    done: bool,
    waker: Option<Waker>,
}

impl BarrierFuture {
    /// Start `flavor.barrier()` now, on a thread of its own.
    pub(crate) fn start<F: Flavor + Send + 'static>(flavor: F) -> BarrierFuture {
        let shared = Arc::new(Mutex::new(BarrierState::default()));
        // The flavor travels to the thread through a slot, so that it is still ours if no
        // thread can be started.
        let slot = Arc::new(Mutex::new(Some(flavor)));
        let (theirs, their_slot) = (shared.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name("grace-barrier-async".into())
            .spawn(move || {
                let flavor = lock(&their_slot).take();
                if let Some(f) = flavor {
                    f.barrier();
                }
                finish(&theirs);
            });
        if spawned.is_err() {
            // No thread to be had: run the barrier here, blocking the caller, rather than
            // never completing.
            let flavor = lock(&slot).take();
            if let Some(f) = flavor {
                f.barrier();
            }
            finish(&shared);
        }
        BarrierFuture { shared }
    }
}

/// The barrier has returned: complete the future and wake its task.
fn finish(shared: &Mutex<BarrierState>) {
    let waker = {
        let mut s = lock(shared);
        s.done = true;
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

impl Future for BarrierFuture {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.shared);
        if s.done {
            return Poll::Ready(());
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl fmt::Debug for BarrierFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierFuture")
            .field("done", &lock(&self.shared).done)
            .finish()
    }
}

#[cfg(test)]
// Under Miri the one test that uses these helpers is compiled out (see there).
#[cfg_attr(miri, allow(dead_code))]
mod tests {
    use super::*;
    use crate::srcu::Srcu;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F, w: &Arc<CountingWaker>) -> Poll<F::Output> {
        let waker = Waker::from(w.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    fn list_of(d: &Srcu) -> Option<Arc<Waiters>> {
        let key = (TypeId::of::<Srcu>(), d.get_state().domain);
        let reg = lock(REGISTRY.get_or_init(Registry::default));
        reg.get(&key).and_then(Weak::upgrade)
    }

    // Under Miri the lib tests run with the leak check on, and the SRCU service's threads
    // would outlive the test; tests/wait.rs covers the futures end to end.
    #[cfg(not(miri))]
    #[test]
    fn cancelled_futures_leave_nothing_behind_and_share_one_wake_up() {
        let d = Srcu::new().unwrap();
        let w = Arc::new(CountingWaker::default());
        // A section held open: no grace period of `d` can end while the futures are polled
        // (the first poll queues the wake-up, which starts one at once).
        let held = d.read_lock_raw();
        let mut futures: Vec<_> = (0..100).map(|_| d.synchronize_async()).collect();
        for f in &mut futures {
            assert!(poll_once(f, &w).is_pending());
        }
        let list = list_of(&d).expect("the waiters are listed");
        assert_eq!(lock(&list.list).wakers.len(), 100);
        assert!(lock(&list.list).armed, "one wake-up queued for all");
        // Cancel half of them: their wakers go.
        futures.truncate(50);
        assert_eq!(lock(&list.list).wakers.len(), 50);
        drop(list);
        d.read_unlock_raw(held);
        // The one queued wake-up wakes the 50 left, once each.
        d.barrier();
        assert_eq!(w.0.load(std::sync::atomic::Ordering::SeqCst), 50);
        for f in &mut futures {
            assert!(poll_once(f, &w).is_ready());
        }
        drop(futures);
        assert!(
            list_of(&d).is_none(),
            "the list is freed with its last user"
        );
    }

    #[cfg(not(miri))]
    #[test]
    fn a_future_dropped_before_its_wake_up_is_not_woken() {
        let d = Srcu::new().unwrap();
        let w = Arc::new(CountingWaker::default());
        let mut f = d.synchronize_async();
        assert!(poll_once(&mut f, &w).is_pending());
        drop(f);
        d.barrier(); // the queued wake-up has run, and found nobody
        assert_eq!(w.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(list_of(&d).is_none());
    }
}
