//! A callback shard: one CPU's segmented list, and who invokes its ready callbacks.
//!
//! # Invokers
//!
//! A shard's `done` segment is run by one *invoker* at a time (`SegList::busy`), which keeps
//! the shard FIFO: that is what `barrier`'s entrained markers rely on. The invoker is either
//!
//! * a **worker** thread ([`Invocation::Offloaded`], the kernel's offloaded `rcu_nocb`
//!   callbacks), or
//! * in [`Invocation::Local`] mode, a thread that queues callbacks on this shard, at one of
//!   its later `call`s made outside a read-side section: the kernel's default, where
//!   callbacks run on the CPU that queued them. A callback that frees an object then frees it
//!   on the thread that most likely allocated it, into that thread's allocator cache, instead
//!   of pushing it across CPUs (the reclamation-speed figures in `BENCHMARKS.md`).
//!
//! Local work must not wait forever for a queuing thread that went idle or exited, and
//! `barrier` must not wait on one either, so the grace-period thread hands a shard to a
//! worker when its ready callbacks have waited longer than the *patience* (the lazy delay),
//! and at once while a `barrier` is in flight or after a switch to offloaded mode.
//!
//! | step | who | under the shard lock | afterwards |
//! |---|---|---|---|
//! | [`SegList::settle`] → `Worker` | GP thread, `barrier`, mode switch | `busy = true` | queue the shard to a worker |
//! | [`SegList::settle`] → `Owner` | GP thread, local mode | `ready_since` set | publish [`Shard::ready`]; come back within the patience |
//! | [`SegList::claim_local`] | a queuing thread that saw `ready` | `busy = true`, take `done` | run the batch outside the lock |
//! | [`SegList::release_local`] | that thread, after the batch | `busy = false`, then as `settle` | as `settle` (a `barrier` or a switch that found the shard busy is served here) |
//!
//! `ready` is only a hint that saves the queuing threads a lock: every decision is made again
//! under the lock, so a stale `true` costs one `try_lock`, and a stale `false` at worst leaves
//! the work to a worker after the patience.

use super::seglist::{Batch, SegList};
use crate::sync::{AtomicBool, Mutex, Ordering};
use std::time::{Duration, Instant};

/// Where a flavor's callbacks run once their grace period has ended.
///
/// # Examples
///
/// ```
/// use grace::rcu::{self, Invocation};
/// let before = rcu::callback_invocation();
/// rcu::set_callback_invocation(Invocation::Offloaded);
/// rcu::call(|| ());
/// rcu::barrier();
/// rcu::set_callback_invocation(before);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invocation {
    /// On the threads that queued them, at one of their later `call`s made outside a
    /// read-side section (the kernel's default: callbacks run on the CPU that queued them).
    /// Work whose queuing threads go idle or exit moves to a worker within the lazy delay.
    Local,
    /// Always on grace's worker threads (the kernel's offloaded, `rcu_nocbs` callbacks).
    Offloaded,
}

/// What [`SegList::settle`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Nothing to run, or an invoker is already on it.
    Idle,
    /// Claimed (`busy`): the caller queues the shard to a worker.
    Worker,
    /// Left for a queuing thread (local mode): the caller publishes [`Shard::ready`].
    Owner,
}

/// One shard: its list, and the hint that local work is waiting.
pub(crate) struct Shard {
    pub(crate) list: Mutex<SegList>,
    /// Local mode: ready callbacks wait for a queuing thread (see the module docs). Written
    /// under `list`'s lock, read without it.
    pub(crate) ready: AtomicBool,
}

impl Shard {
    pub(crate) fn new(invocation: Invocation) -> Shard {
        let mut list = SegList::default();
        list.local = invocation == Invocation::Local;
        Shard {
            list: Mutex::new(list),
            ready: AtomicBool::new(false),
        }
    }

    /// Publish whether local work waits.
    pub(crate) fn set_ready(&self, ready: bool) {
        // Relaxed: a hint. A queuing thread that reads it takes the lock before acting, and
        // the lock orders everything the decision depends on.
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Does local work seem to wait?
    #[inline]
    pub(crate) fn looks_ready(&self) -> bool {
        // Relaxed: a hint, see `set_ready`.
        self.ready.load(Ordering::Relaxed)
    }
}

impl SegList {
    /// Decide who runs the `done` segment (see the module docs). `force` hands local work to a
    /// worker at once (`barrier` in flight, switch to offloaded); otherwise local work goes to
    /// a worker only once it has waited `patience` since `now` was first recorded for it.
    pub(crate) fn settle(&mut self, now: Instant, patience: Duration, force: bool) -> Settle {
        if self.busy {
            return Settle::Idle;
        }
        if self.done.is_empty() {
            self.ready_since = None;
            return Settle::Idle;
        }
        if self.local && !force && self.done.offload == 0 {
            match self.ready_since {
                None => {
                    self.ready_since = Some(now);
                    return Settle::Owner;
                }
                Some(t) if now.saturating_duration_since(t) < patience => return Settle::Owner,
                Some(_) => {}
            }
        }
        self.busy = true;
        self.ready_since = None;
        Settle::Worker
    }

    /// A queuing thread takes the ready callbacks to run them itself, or `None` if another
    /// invoker has them, nothing is ready, the shard is offloaded, or a callback among them
    /// must run on a worker.
    pub(crate) fn claim_local(&mut self, max_nodes: usize) -> Option<Batch> {
        if !self.local || self.done.offload > 0 {
            return None;
        }
        self.claim_any(max_nodes)
    }

    /// A thread that is not the shard's usual invoker takes up to `max_nodes` nodes of ready
    /// callbacks to run them itself, whatever the mode: an enqueuer over the memory budget,
    /// or the shrinker. `None` if another invoker has them or nothing is ready.
    pub(crate) fn claim_any(&mut self, max_nodes: usize) -> Option<Batch> {
        if self.busy || self.done.is_empty() {
            return None;
        }
        self.busy = true;
        self.ready_since = None;
        Some(self.take_done_upto(max_nodes))
    }

    /// The queuing thread has run what it claimed: settle what became ready meanwhile, as
    /// the grace-period thread would have (it found the shard busy and left it alone). So a
    /// `barrier` or a switch to offloaded mode that came while the thread ran is served by a
    /// worker, and anything else stays for the next queuing thread.
    pub(crate) fn release_local(
        &mut self,
        now: Instant,
        patience: Duration,
        force: bool,
    ) -> Settle {
        debug_assert!(self.busy);
        self.busy = false;
        self.settle(now, patience, force)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::seglist::Node;
    use crate::callback::Callback;
    use crate::gp::seq;

    fn ready_list(local: bool) -> SegList {
        let mut l = SegList::default();
        l.local = local;
        l.push(seq::snapshot(0), Node::new(vec![Callback::new(|| ())]), 0);
        l.advance(seq::ended(seq::started(0)));
        assert!(!l.done.is_empty());
        l
    }

    fn run(b: Batch) {
        for mut n in b.into_nodes() {
            for cb in n.cbs.drain(..) {
                cb.run();
            }
        }
    }

    #[test]
    fn offloaded_work_goes_to_a_worker_at_once() {
        let mut l = ready_list(false);
        let now = Instant::now();
        assert!(
            l.claim_local(usize::MAX).is_none(),
            "offloaded shards are never run locally"
        );
        assert_eq!(l.settle(now, Duration::from_secs(1), false), Settle::Worker);
        assert!(l.busy);
        assert_eq!(l.settle(now, Duration::ZERO, false), Settle::Idle);
        run(l.take_done());
    }

    #[test]
    fn local_work_waits_for_a_queuing_thread_until_the_patience_runs_out() {
        let mut l = ready_list(true);
        let t0 = Instant::now();
        let patience = Duration::from_millis(10);
        assert_eq!(l.settle(t0, patience, false), Settle::Owner);
        assert_eq!(l.settle(t0 + patience / 2, patience, false), Settle::Owner);
        assert_eq!(l.settle(t0 + patience, patience, false), Settle::Worker);
        assert!(l.claim_local(usize::MAX).is_none(), "a worker has it");
        run(l.take_done());
    }

    #[test]
    fn a_queuing_thread_claims_runs_and_releases() {
        let mut l = ready_list(true);
        let t0 = Instant::now();
        assert_eq!(l.settle(t0, Duration::from_secs(1), false), Settle::Owner);
        let b = l.claim_local(usize::MAX).expect("ready and unclaimed");
        assert!(l.busy);
        assert_eq!(
            l.settle(t0, Duration::ZERO, true),
            Settle::Idle,
            "one invoker"
        );
        run(b);
        assert_eq!(l.release_local(t0, Duration::ZERO, false), Settle::Idle);
        assert!(l.is_idle());
    }

    #[test]
    fn work_that_must_run_on_a_worker_is_never_claimed_locally() {
        let mut l = ready_list(true);
        let mut n = Node::new(vec![Callback::new(|| ())]);
        n.offload = true;
        l.push(seq::snapshot(seq::ended(seq::started(0))), n, 0);
        l.advance(seq::ended(seq::started(seq::ended(seq::started(0)))));
        assert_eq!(l.done.offload, 1);
        assert!(l.claim_local(usize::MAX).is_none());
        let b = l.claim_any(1).expect("anyone may help");
        assert_eq!(b.len(), 1, "one node of two");
        assert_eq!(
            l.release_local(Instant::now(), Duration::from_secs(60), false),
            Settle::Worker
        );
        run(b);
        run(l.take_done());
    }

    #[test]
    fn force_hands_local_work_to_a_worker() {
        let mut l = ready_list(true);
        let t0 = Instant::now();
        assert_eq!(l.settle(t0, Duration::from_secs(60), true), Settle::Worker);
        run(l.take_done());
    }
}
