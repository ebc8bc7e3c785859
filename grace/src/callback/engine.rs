//! The background half of callbacks: one grace-period thread per flavor and a small pool of
//! worker threads.
//!
//! # The grace-period thread
//!
//! It sleeps until there is work, then runs one *cycle*, whose steps are:
//!
//! 1. **wait**: until hurried (`call_hurry`, `barrier`, a full ring), asked to poll
//!    (`start_poll`), or the lazy deadline passes (set by the first lazy `call` after a cycle;
//!    this is the batching that saves wake-ups, bounded by the configured delay);
//! 2. **drain**: clear `armed`, execute the heavy barrier, and move every ring's records into
//!    its shard, tagged with a fresh grace-period snapshot;
//! 3. **grace period**: run normal grace periods until the newest cookie any shard (or poller)
//!    waits for is done;
//! 4. **advance**: move completed segments to `done` and hand each such shard to a worker.
//!
//! # The lazy hand-shake (`armed`)
//!
//! ```text
//!   producer (call)                       GP thread (drain step)
//!   ring.tail.store(t+1, Release)         armed.store(false)
//!   light_barrier()                       heavy_barrier()
//!   if !armed.load() { arm() }            drain every ring (tail.load(Acquire))
//! ```
//!
//! Store-buffering: either the producer sees `armed == false` and arms (a new cycle follows),
//! or the drain sees the new tail. Without the barrier pair both could read the old values and
//! the record would sit in the ring until some later `call` armed the thread again.
//!
//! # Workers
//!
//! A shard whose `done` segment is non-empty is handed to one worker at a time (`busy`), so a
//! shard's callbacks run in FIFO order; that is what `barrier`'s entrained markers rely on. A
//! callback that panics is caught, counted and reported; the rest of the batch still runs.

use super::ring::{self, Ring};
use super::seglist::{Batch, Node};
use super::shard::{Invocation, Settle, Shard};
use super::Callback;
use crate::gp::seq;
#[cfg(not(loom))]
use crate::pressure;
use crate::reader::{Readers, Slot, NEST_MASK};
use crate::sync::{
    lock, wait, wait_timeout, AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering,
};
use crate::sys::{self, BarrierMode};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// Set on callback worker threads, and on a queuing thread while it runs callbacks itself
    /// (local invocation), so that `barrier` from a callback is refused and a `call` from a
    /// callback never starts a nested local run.
    pub(crate) static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Nodes (of up to a ring's worth of callbacks each) a queuing thread runs per local
/// invocation outside flood mode (the kernel's `blimit`): a bounded pause for the caller. In
/// flood mode it runs everything that is ready, so that frees keep up with a flood.
const LOCAL_SLICE_NODES: usize = 4;

/// In local mode a queuing thread looks for ready callbacks of its shard once every this many
/// `call`s (a power of two): often enough that its frees stay close behind its allocations,
/// rarely enough that the look (one load of a shared, read-mostly line) costs nothing per call.
#[cfg(not(miri))]
const LOCAL_CHECK_EVERY: usize = 64;
/// Small under Miri, so that the local path runs within its short tests.
#[cfg(miri)]
const LOCAL_CHECK_EVERY: usize = 2;

/// What a flavor lends its callback engine.
pub(crate) trait Host: Sync + 'static {
    fn readers(&self) -> &Readers;
    fn mode(&self) -> BarrierMode;
    /// Wait until the normal sequence reaches `snap`, running grace periods as needed;
    /// `expedite`: poll readers without sleeping (flood mode, budget, shrinker).
    fn run_until(&self, snap: u64, expedite: bool);
    fn snapshot(&self) -> u64;
    fn current(&self) -> u64;
    /// Thread-name prefix, e.g. `grace-rcu`.
    fn name(&self) -> &'static str;
}

/// How long a full ring lets the grace-period thread wait to gather more callbacks before a
/// cycle. Under a flood this caps cycles (each costs up to two membarriers, the drain's and
/// the grace period's, on every CPU running our threads) at one per window, while bounding
/// what piles up to one window's worth.
const FLOOD_WINDOW: Duration = Duration::from_micros(100);

/// Requests to the grace-period thread, under `Engine::ctl`.
#[derive(Default)]
struct Ctl {
    /// Someone polls for this snapshot (start_poll).
    poll_target: Option<u64>,
    /// When the lazily queued callbacks are due.
    lazy_deadline: Option<Instant>,
}

/// Counters for [`crate::rcu::Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) invoked: AtomicU64,
    /// Of `invoked`: run by the thread that queued on the shard (local invocation).
    pub(crate) invoked_locally: AtomicU64,
    /// Bytes the invoked callbacks freed, as stated when they were queued.
    pub(crate) invoked_bytes: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) cycles: AtomicU64,
}

pub(crate) struct Engine {
    host: &'static dyn Host,
    shards: Box<[CachePadded<Shard>]>,
    /// See "The lazy hand-shake" in the module docs. Read by every `call`, so it has a cache
    /// line of its own: the fields workers write (counters, spare nodes) must not share it.
    armed: CachePadded<AtomicBool>,
    /// A cycle is wanted now (call_hurry, barrier). Set without the lock when already set, so
    /// a stream of hurries costs one wake-up per cycle, not one each.
    hurry_pending: AtomicBool,
    ctl: Mutex<Ctl>,
    wake: Condvar,
    work: Mutex<VecDeque<usize>>,
    work_ready: Condvar,
    lazy_delay: Duration,
    /// `barrier` calls in flight: while any is, ready callbacks go to workers at once rather
    /// than waiting for a queuing thread (local mode).
    barriers: AtomicUsize,
    /// Flood mode (see `crate::pressure`): a shard's waiting callbacks or bytes passed the
    /// thresholds. Grace periods are expedited, full rings kick a cycle at once, and local
    /// invokers run everything ready. Set by drainers, cleared by the grace-period thread once
    /// every shard is back under half the thresholds.
    flood: AtomicBool,
    /// The shrinker asked for the next grace periods to be expedited.
    expedite_once: AtomicBool,
    /// Callbacks moved from the threads' rings into the shards so far (for the flood rate).
    drained: AtomicU64,
    /// `drained` and the time at the grace-period thread's previous advance (its own).
    rate_mark: Mutex<(u64, Instant)>,
    /// The host's barrier mode, fixed before the engine starts; cached here because `call`
    /// needs it on every invocation.
    mode: BarrierMode,
    /// Emptied nodes kept for reuse, so a flood does not churn the allocator (and does not
    /// page-fault fresh memory in) for every ring's worth of callbacks.
    #[allow(clippy::vec_box)] // the boxes move in and out whole, to and from batches
    spare_nodes: Mutex<Vec<Box<Node>>>,
    pub(crate) counters: CachePadded<Counters>,
}

/// Most nodes kept in `spare_nodes` (8 KiB each, so at most 2 MiB): enough for the callbacks
/// of a flood window plus a grace period at ~100 M callbacks/s.
const SPARE_NODES: usize = 256;

impl Engine {
    /// Create the engine and start its threads.
    pub(crate) fn start(
        host: &'static dyn Host,
        lazy_delay: Duration,
        workers: usize,
        invocation: Invocation,
    ) -> &'static Engine {
        let shards = (0..sys::num_cpus())
            .map(|_| CachePadded::new(Shard::new(invocation)))
            .collect();
        let engine: &'static Engine = Box::leak(Box::new(Engine {
            host,
            shards,
            armed: CachePadded::new(AtomicBool::new(false)),
            hurry_pending: AtomicBool::new(false),
            ctl: Mutex::new(Ctl::default()),
            wake: Condvar::new(),
            work: Mutex::new(VecDeque::new()),
            work_ready: Condvar::new(),
            lazy_delay,
            barriers: AtomicUsize::new(0),
            flood: AtomicBool::new(false),
            expedite_once: AtomicBool::new(false),
            drained: AtomicU64::new(0),
            rate_mark: Mutex::new((0, Instant::now())),
            mode: host.mode(),
            spare_nodes: Mutex::new(Vec::new()),
            counters: CachePadded::new(Counters::default()),
        }));
        // Workers first, the grace-period thread last: if a spawn fails (and panics), no
        // grace-period thread of this never-published engine is left draining rings into
        // shards that nothing serves. Idle workers of a failed start only wait.
        for i in 0..workers.max(1) {
            spawn(format!("{}-cb{i}", host.name()), move || engine.worker());
        }
        spawn(format!("{}-gp", host.name()), move || engine.gp_thread());
        engine
    }

    /// Queue a callback from the thread owning `slot`. With `may_invoke`, the caller may run
    /// ready callbacks of its shard here first (local mode, outside read-side sections);
    /// grace's own callers that hold locks pass `false`.
    #[inline]
    pub(crate) fn call(
        &self,
        slot: &Slot,
        cb: Callback,
        bytes: u64,
        hurry: bool,
        may_invoke: bool,
    ) {
        // Relaxed: only the owner thread stores the ring pointer, in ring_slow.
        let ring = slot.ring.load(Ordering::Relaxed);
        let ring = if ring.is_null() {
            self.ring_slow(slot)
        } else {
            // SAFETY: rings are leaked by ring_slow and never freed.
            unsafe { &*ring }
        };
        if !may_invoke || hurry {
            // Relaxed: a hint; the push's Release publishes it with the record. A hurried
            // callback (`call_hurry`: barrier markers, wakers of futures) must not wait for
            // its queuing thread to come back, which may be blocked on it: it runs on a worker
            // as soon as its grace period ends.
            ring.offload.store(true, Ordering::Relaxed);
        }
        ring.add_bytes(bytes);
        // SAFETY: the caller runs on the thread that owns `slot`, hence the ring's producer.
        match unsafe { ring.push(cb) } {
            Ok(n) => {
                if may_invoke && n % LOCAL_CHECK_EVERY == 0 && self.shards[ring.shard].looks_ready()
                {
                    self.invoke_local(slot, ring.shard);
                }
            }
            Err(cb) => {
                self.ring_full(ring, cb);
                if may_invoke {
                    if self.shards[ring.shard].looks_ready() {
                        self.invoke_local(slot, ring.shard);
                    }
                    if pressure::over_budget() {
                        let may_wait = slot.ctr.load(Ordering::Relaxed) & NEST_MASK == 0
                            && !IN_CALLBACK.try_with(|c| c.get()).unwrap_or(true);
                        pressure::enforce(self, may_wait);
                    }
                }
            }
        }
        if hurry {
            self.hurry();
        } else {
            // Pairs with the heavy_barrier() in gp_thread's drain step ("The lazy hand-shake").
            sys::light_barrier(self.mode);
            // Relaxed: ordered by the barrier pair above.
            if !self.armed.load(Ordering::Relaxed) {
                self.arm();
            }
        }
    }

    /// Create the ring of the thread owning `slot` now, so that its later `call`s do not
    /// allocate (see `rcu::prewarm`).
    pub(crate) fn ensure_ring(&self, slot: &Slot) {
        // Relaxed: only the owner thread (the caller) stores the ring pointer.
        if slot.ring.load(Ordering::Relaxed).is_null() {
            self.ring_slow(slot);
        }
    }

    #[cold]
    #[inline(never)]
    fn ring_slow(&self, slot: &Slot) -> &'static Ring {
        let ring: &'static Ring =
            Box::leak(Box::new(Ring::new(sys::current_cpu() % self.shards.len())));
        // Release: pairs with the Acquire in drain_all; the ring is initialized before a
        // drainer can find it.
        slot.ring
            .store(ring as *const Ring as *mut Ring, Ordering::Release);
        ring
    }

    /// The ring is full: drain it ourselves (we are its producer; the consumer lock keeps us
    /// apart from the grace-period thread), make sure a cycle comes within the flood window,
    /// and queue `cb` in the emptied ring.
    #[cold]
    #[inline(never)]
    fn ring_full(&self, ring: &Ring, cb: Callback) {
        self.drain_ring(ring);
        // SAFETY: we are the ring's producer (see `call`).
        if let Err(cb) = unsafe { ring.push(cb) }.map(drop) {
            // Cannot happen: we just emptied it and only we produce. Keep the callback anyway.
            debug_assert!(false, "ring full right after draining");
            self.push_to_shard(ring.shard, Node::new(vec![cb]));
        }
        // Relaxed: a hint (see `flood`).
        if self.flood.load(Ordering::Relaxed) {
            self.hurry();
        } else {
            self.kick_within(FLOOD_WINDOW);
        }
    }

    #[cold]
    fn arm(&self) {
        // Relaxed: the flag is a hint guarded by the barrier pair (module docs); the mutex
        // in kick_within orders the deadline.
        if self.armed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.kick_within(self.lazy_delay);
    }

    /// Make sure a cycle starts within `delay`.
    fn kick_within(&self, delay: Duration) {
        let due = Instant::now() + delay;
        let mut ctl = lock(&self.ctl);
        match ctl.lazy_deadline {
            Some(d) if d <= due => {}
            _ => {
                ctl.lazy_deadline = Some(due);
                self.wake.notify_one();
            }
        }
    }

    /// Ask for a cycle now.
    pub(crate) fn hurry(&self) {
        // AcqRel: Release pairs with the swap in wait_for_work, so the thread that consumes
        // the request sees what we queued before it; a `true` already there means a wake-up
        // is on its way and ours would be redundant.
        if self.hurry_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        // Taking the lock before notifying closes the lost-wake-up window: the GP thread
        // tests the flag under this lock before it sleeps.
        let _ctl = lock(&self.ctl);
        self.wake.notify_one();
    }

    /// Ask the grace-period thread to run grace periods until `snap` is done.
    pub(crate) fn request_gp(&self, snap: u64) {
        let mut ctl = lock(&self.ctl);
        ctl.poll_target = Some(match ctl.poll_target {
            Some(t) if seq::ge(t, snap) => t,
            _ => snap,
        });
        self.wake.notify_one();
    }

    /// Move one ring's records into its shard.
    fn drain_ring(&self, ring: &Ring) {
        // Allocate before taking any lock (no allocation under the consumer or shard lock).
        let mut node = self.node();
        let consumer = lock(&ring.consumer);
        // SAFETY: we hold the ring's consumer lock.
        if unsafe { ring.drain_into(&mut node.cbs) } == 0 {
            drop(consumer);
            self.recycle(node);
            return;
        }
        // Relaxed: a hint (see `Ring::offload`), read after the drain's Acquire of the tail.
        node.offload = ring.offload.swap(false, Ordering::Relaxed);
        // SAFETY: we hold the ring's consumer lock.
        node.bytes = unsafe { ring.take_drained_bytes() };
        // Pushing while still holding `consumer` keeps each ring's records FIFO in its shard
        // even when two drainers race, and lets `barrier` wait for a drain in flight by taking
        // the same lock. Lock order: consumer, then shard.
        self.push_to_shard(ring.shard, node);
    }

    /// Run the ready callbacks of shard `idx` on this thread, the one owning `slot` (local
    /// invocation, see `callback::shard`). Never waits: it gives up if the shard's lock is
    /// taken, if another invoker has the callbacks, inside a read-side section (a callback may
    /// block, or wait for a grace period), and inside a callback (no nested runs).
    #[cold]
    #[inline(never)]
    fn invoke_local(&self, slot: &Slot, idx: usize) {
        // Relaxed: only this thread writes its reader word.
        if slot.ctr.load(Ordering::Relaxed) & NEST_MASK != 0 {
            return;
        }
        if IN_CALLBACK.try_with(|c| c.get()).unwrap_or(true) {
            return;
        }
        let shard = &self.shards[idx];
        let batch = {
            let mut l = match shard.list.try_lock() {
                Ok(l) => l,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            // Relaxed: a hint (see `flood`).
            let slice = if self.flood.load(Ordering::Relaxed) {
                usize::MAX
            } else {
                LOCAL_SLICE_NODES
            };
            let b = l.claim_local(slice);
            if b.is_none() && !l.busy {
                shard.set_ready(false);
            }
            match b {
                Some(b) => b,
                None => return,
            }
        };
        shard.set_ready(false);
        // Mark this thread as running callbacks while it does: `barrier` from one of them is
        // refused (it would wait for this very run), destructors that wait for workers hand
        // their wait to a thread of their own, and `call` from one starts no nested run.
        IN_CALLBACK.with(|c| c.set(true));
        let was_worker = super::set_worker(true);
        let ran = self.run_batch(batch);
        super::set_worker(was_worker);
        IN_CALLBACK.with(|c| c.set(false));
        // Relaxed: a statistic.
        self.counters
            .invoked_locally
            .fetch_add(ran, Ordering::Relaxed);
        let settled = {
            let mut l = lock(&shard.list);
            // Relaxed, under the shard lock: a barrier that entrained its marker here (under
            // this lock) incremented `barriers` before, so we see it and hand the shard to a
            // worker at once.
            let force = self.barriers.load(Ordering::Relaxed) > 0;
            l.release_local(Instant::now(), self.lazy_delay, force)
        };
        self.follow_settle(idx, settled);
    }

    /// Act on a `settle` decision made under shard `idx`'s lock (now released): a worker
    /// for a claimed shard; for work left to queuing threads, the `ready` hint and a
    /// grace-period cycle within the patience, which hands it to a worker if none comes.
    fn follow_settle(&self, idx: usize, settled: Settle) {
        match settled {
            Settle::Worker => {
                self.shards[idx].set_ready(false);
                self.to_workers(vec![idx]);
            }
            Settle::Owner => {
                self.shards[idx].set_ready(true);
                self.kick_within(self.lazy_delay);
            }
            Settle::Idle => {}
        }
    }

    /// Queue `node` on shard `idx`, waiting for a grace period that starts after now.
    fn push_to_shard(&self, idx: usize, node: Box<Node>) {
        let mut shard = lock(&self.shards[idx].list);
        // The snapshot is taken *under the shard lock*, so the cookies a shard receives never
        // decrease (two drainers that snapshot first and lock second could arrive in the
        // opposite order, and SegList keeps at most two pending cookies in order). Each record
        // was read from its ring with Acquire before this, so every `call` happened before the
        // snapshot, whose fence orders it after them: the cookie is at least as late as one
        // taken inside `call` would have been.
        let cookie = self.host.snapshot();
        // Relaxed: a statistic for the flood rate.
        self.drained
            .fetch_add(node.cbs.len() as u64, Ordering::Relaxed);
        shard.push(cookie, node, self.host.current());
        let w = shard.waiting();
        drop(shard);
        if pressure::is_flood(
            w.gp_callbacks + w.ready_callbacks,
            w.gp_bytes + w.ready_bytes,
        )
            // Relaxed: a hint; the hurry below wakes the grace-period thread to act on it.
            && !self.flood.swap(true, Ordering::Relaxed)
        {
            pressure::count_flood();
            self.hurry();
        }
    }

    /// An empty node with room for a ring's worth of callbacks, reused when possible.
    fn node(&self) -> Box<Node> {
        lock(&self.spare_nodes)
            .pop()
            .unwrap_or_else(|| Node::new(Vec::with_capacity(ring::CAP)))
    }

    /// Keep an emptied node for reuse (or free it when enough are kept).
    fn recycle(&self, node: Box<Node>) {
        debug_assert!(node.cbs.is_empty());
        if node.cbs.capacity() >= ring::CAP {
            let mut spare = lock(&self.spare_nodes);
            if spare.len() < SPARE_NODES {
                spare.push(node);
            }
        }
    }

    /// Drain every ring of every registered thread (live or exited).
    ///
    /// `Drain::Complete` (for `barrier`) takes every ring's consumer lock even when the ring
    /// looks empty: another drainer may have emptied it (head = tail) without having pushed
    /// the records into the shard yet, and only its lock says when it has. `Drain::Pending`
    /// (the grace-period thread) skips empty-looking rings: records in flight are some other
    /// drainer's to deliver, and the cycle that drainer kicks will see them.
    fn drain_all(&self, how: Drain) {
        for slot in self.host.readers().iter() {
            // Acquire: pairs with the Release in ring_slow.
            let ring = slot.ring.load(Ordering::Acquire);
            // SAFETY: rings are leaked and never freed.
            if let Some(ring) = unsafe { ring.as_ref() } {
                if how == Drain::Complete || ring.has_records() {
                    self.drain_ring(ring);
                }
            }
        }
    }

    fn gp_thread(&self) {
        loop {
            let poll_target = self.wait_for_work();
            // Relaxed: see "The lazy hand-shake"; the heavy barrier orders it. If nobody armed
            // since the last cycle, the barrier is not needed: a producer whose record the
            // drain below misses has yet to load `armed`, will see `false` and arm again.
            if self.armed.swap(false, Ordering::Relaxed) {
                sys::heavy_barrier(self.mode);
            }
            self.drain_all(Drain::Pending);

            let mut target = poll_target;
            for shard in self.shards.iter() {
                if let Some(c) = lock(&shard.list).newest_cookie() {
                    target = Some(match target {
                        Some(t) if seq::ge(t, c) => t,
                        _ => c,
                    });
                }
            }
            if let Some(t) = target {
                // Relaxed: hints (see `flood`, `expedite_once`).
                let expedite = self.flood.load(Ordering::Relaxed)
                    || self.expedite_once.swap(false, Ordering::Relaxed);
                self.host.run_until(t, expedite);
            }
            self.advance_all();
            // Relaxed: a statistic.
            self.counters.cycles.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sleep until a cycle is due; returns the poll target to satisfy, if any.
    fn wait_for_work(&self) -> Option<u64> {
        let mut ctl = lock(&self.ctl);
        loop {
            // Acquire: pairs with the AcqRel swap in `hurry`.
            let hurried = self.hurry_pending.swap(false, Ordering::Acquire);
            if hurried || ctl.poll_target.is_some() {
                ctl.lazy_deadline = None;
                return ctl.poll_target.take();
            }
            match ctl.lazy_deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        ctl.lazy_deadline = None;
                        return None;
                    }
                    ctl = wait_timeout(&self.wake, ctl, d - now);
                }
                None => {
                    ctl = wait(&self.wake, ctl);
                }
            }
        }
    }

    /// Move completed segments to `done`, and settle who runs them: workers, or (local mode)
    /// the threads queuing on each shard, coming back within the lazy delay to hand work that
    /// nobody picked up to a worker.
    fn advance_all(&self) {
        let cur = self.host.current();
        let now = Instant::now();
        // Relaxed: a barrier that starts after this load entrains its markers after our
        // advance and settles its shards itself (Engine::barrier); the GP thread only has to
        // see it eventually, at the next cycle the barrier's hurry starts.
        let force = self.barriers.load(Ordering::Relaxed) > 0;
        // Sized before any shard lock is taken: nothing allocates under one.
        let mut ready = Vec::with_capacity(self.shards.len());
        let mut waiting_for_owner = false;
        let mut still_flooded = {
            let mut mark = lock(&self.rate_mark);
            // Relaxed: a statistic.
            let d = self.drained.load(Ordering::Relaxed);
            let elapsed = now.saturating_duration_since(mark.1);
            // Over at least a millisecond: cycles that follow each other closely would make
            // a ring's worth look like a flood.
            if elapsed >= Duration::from_millis(1) {
                let fast = pressure::is_flood_rate(d - mark.0, elapsed);
                *mark = (d, now);
                fast
            } else {
                false
            }
        };
        // Relaxed: a hint (see `flood`).
        if still_flooded && !self.flood.swap(true, Ordering::Relaxed) {
            pressure::count_flood();
        }
        for (i, shard) in self.shards.iter().enumerate() {
            let mut l = lock(&shard.list);
            l.advance(cur);
            let w = l.waiting();
            // Hysteresis: flood mode ends once every shard is under half the thresholds.
            still_flooded |= pressure::is_flood(
                2 * (w.gp_callbacks + w.ready_callbacks),
                2 * (w.gp_bytes + w.ready_bytes),
            );
            match l.settle(now, self.lazy_delay, force) {
                Settle::Worker => {
                    shard.set_ready(false);
                    ready.push(i);
                }
                Settle::Owner => {
                    shard.set_ready(true);
                    waiting_for_owner = true;
                }
                Settle::Idle => {}
            }
        }
        self.to_workers(ready);
        if !still_flooded {
            // Relaxed: a hint (see `flood`).
            self.flood.store(false, Ordering::Relaxed);
        }
        if waiting_for_owner {
            self.kick_within(self.lazy_delay);
        }
    }

    /// Run up to `max` callbacks that are ready, on any shard, on this thread, whatever the
    /// mode (an enqueuer over the memory budget, the shrinker); returns how many ran. Never
    /// waits for a shard lock or another invoker. The caller is outside read-side sections
    /// and callbacks.
    pub(crate) fn help(&self, max: u64) -> u64 {
        if IN_CALLBACK.try_with(|c| c.get()).unwrap_or(true) {
            return 0;
        }
        let mut ran = 0;
        for (idx, shard) in self.shards.iter().enumerate() {
            while ran < max {
                let batch = {
                    let mut l = match shard.list.try_lock() {
                        Ok(l) => l,
                        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                        Err(std::sync::TryLockError::WouldBlock) => break,
                    };
                    // A node at a time, so that `max` bounds the work to a node's worth.
                    match l.claim_any(1) {
                        Some(b) => b,
                        None => break,
                    }
                };
                shard.set_ready(false);
                IN_CALLBACK.with(|c| c.set(true));
                let was_worker = super::set_worker(true);
                ran += self.run_batch(batch);
                super::set_worker(was_worker);
                IN_CALLBACK.with(|c| c.set(false));
                let settled = {
                    let mut l = lock(&shard.list);
                    // Relaxed, under the shard lock: as in `invoke_local`.
                    let force = self.barriers.load(Ordering::Relaxed) > 0;
                    l.release_local(Instant::now(), self.lazy_delay, force)
                };
                self.follow_settle(idx, settled);
            }
        }
        ran
    }

    /// Make the grace-period thread start, expedited, the grace period everything queued so
    /// far waits for (an enqueuer over the memory budget). Never waits itself: a reader may
    /// hold grace periods for a long time, and the enqueuer's wait is bounded elsewhere
    /// (`pressure::enforce`).
    pub(crate) fn expedite_now(&self) {
        // Relaxed: a hint the grace-period thread consumes at its next cycle, which the hurry
        // starts now.
        self.expedite_once.store(true, Ordering::Relaxed);
        self.hurry();
    }

    /// The shrinker: start the grace periods lazily batched callbacks wait for now, run up to
    /// `n` ready callbacks here, and expedite the next grace periods.
    pub(crate) fn shrink(&self, n: u64) -> u64 {
        // Relaxed: a hint the grace-period thread consumes at its next cycle.
        self.expedite_once.store(true, Ordering::Relaxed);
        self.hurry();
        self.help(n)
    }

    /// Give claimed shards (their `busy` set) to the workers.
    fn to_workers(&self, ready: Vec<usize>) {
        if !ready.is_empty() {
            let mut q = lock(&self.work);
            q.extend(ready);
            self.work_ready.notify_all();
        }
    }

    /// Switch every shard to `invocation`; a switch to offloaded hands the callbacks that
    /// wait for a queuing thread to workers at once. Callbacks a queuing thread is running
    /// right now finish there.
    pub(crate) fn set_invocation(&self, invocation: Invocation) {
        self.set_invocation_of(0..self.shards.len(), invocation);
    }

    /// Shards, for the per-shard switch.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// [`Engine::set_invocation`] for the shards in `which` only.
    pub(crate) fn set_invocation_of(&self, which: std::ops::Range<usize>, invocation: Invocation) {
        let local = invocation == Invocation::Local;
        let now = Instant::now();
        let mut ready = Vec::with_capacity(which.len());
        for (i, shard) in self
            .shards
            .iter()
            .enumerate()
            .take(which.end)
            .skip(which.start)
        {
            let mut l = lock(&shard.list);
            l.local = local;
            if !local {
                shard.set_ready(false);
                if l.settle(now, self.lazy_delay, true) == Settle::Worker {
                    ready.push(i);
                }
            }
        }
        self.to_workers(ready);
        if local {
            // Work already done stays with workers until the next cycle settles it again.
            self.kick_within(self.lazy_delay);
        }
    }

    /// The mode of shard `i`.
    pub(crate) fn invocation_of(&self, i: usize) -> Invocation {
        if lock(&self.shards[i].list).local {
            Invocation::Local
        } else {
            Invocation::Offloaded
        }
    }

    fn worker(&self) {
        IN_CALLBACK.with(|c| c.set(true));
        super::mark_worker();
        loop {
            let idx = {
                let mut q = lock(&self.work);
                loop {
                    if let Some(i) = q.pop_front() {
                        break i;
                    }
                    q = wait(&self.work_ready, q);
                }
            };
            // One batch per turn: a shard whose `done` keeps refilling under a flood must not
            // keep this worker from the other shards queued behind it (a `barrier`'s marker
            // there would wait, and the flood's memory with it). The shard stays `busy`, and so
            // FIFO, while it waits for its next turn at the back of the queue.
            let batch = {
                let mut l = lock(&self.shards[idx].list);
                let b = l.take_done();
                if b.is_empty() {
                    l.busy = false;
                    continue;
                }
                b
            };
            self.run_batch(batch);
            let more = {
                let mut l = lock(&self.shards[idx].list);
                if l.done.is_empty() {
                    l.busy = false;
                    false
                } else {
                    true
                }
            };
            if more {
                let mut q = lock(&self.work);
                q.push_back(idx);
                self.work_ready.notify_one();
            }
        }
    }

    /// Invoke every callback of `batch`, node by node, counting them (and the bytes they
    /// free) as invoked; returns how many user callbacks ran (barrier markers excluded).
    fn run_batch(&self, batch: Batch) -> u64 {
        let mut ran = 0;
        for mut node in batch.into_nodes() {
            let n = node.cbs.len() as u64;
            for cb in node.cbs.drain(..) {
                self.invoke(cb);
            }
            if !node.internal {
                ran += n;
                // Relaxed: statistics (barrier waits on its markers, not on these).
                self.counters.invoked.fetch_add(n, Ordering::Relaxed);
                self.counters
                    .invoked_bytes
                    .fetch_add(node.bytes, Ordering::Relaxed);
            }
            self.recycle(node);
        }
        ran
    }

    #[inline]
    fn invoke(&self, cb: Callback) {
        run_caught_named(cb, &self.counters.panics, || self.host.name());
    }

    /// Wait until every callback queued (on any thread) before this call has been invoked.
    pub(crate) fn barrier(&self) {
        // Relaxed: read by advance_all under no ordering duty of its own (see there); our
        // own shards are settled below under their locks.
        self.barriers.fetch_add(1, Ordering::Relaxed);
        self.barrier_inner();
        self.barriers.fetch_sub(1, Ordering::Relaxed);
    }

    fn barrier_inner(&self) {
        self.drain_all(Drain::Complete);
        let now = Instant::now();
        let state = Arc::new(BarrierState::default());
        let mut spare: Option<Box<Node>> = None;
        let mut entrained = 0usize;
        // Sized before any shard lock is taken: nothing allocates under one.
        let mut ready = Vec::with_capacity(self.shards.len());
        for (i, shard) in self.shards.iter().enumerate() {
            let node = spare.take().unwrap_or_else(|| {
                let s = state.clone();
                Node::internal(Callback::new(move || s.arrive()))
            });
            let mut l = lock(&shard.list);
            match l.entrain(node) {
                Ok(()) => {
                    entrained += 1;
                    if l.settle(now, self.lazy_delay, true) == Settle::Worker {
                        shard.set_ready(false);
                        ready.push(i);
                    }
                }
                Err(node) => spare = Some(node),
            }
        }
        if let Some(mut node) = spare {
            for cb in node.cbs.drain(..) {
                cb.discard();
            }
        }
        self.to_workers(ready);
        if entrained > 0 {
            self.hurry();
            state.wait_for(entrained);
        }
    }

    /// Callbacks queued by users since the engine started (barrier markers excluded), and
    /// the bytes they were stated to free.
    pub(crate) fn queued_total(&self) -> (u64, u64) {
        self.host
            .readers()
            .iter()
            .filter_map(|s| {
                // SAFETY: rings are leaked and never freed.
                unsafe { s.ring.load(Ordering::Acquire).as_ref() }
            })
            .map(|r| (r.produced() as u64, r.produced_bytes()))
            .fold((0, 0), |(n, b), (rn, rb)| (n + rn, b.wrapping_add(rb)))
    }

    /// What waits in the shards now, per shard (callbacks still in the threads' rings are
    /// not included: at most a ring's worth per thread). For the diagnostics report.
    #[allow(dead_code)] // read by the report, which is being added
    pub(crate) fn waiting(&self) -> Vec<super::seglist::Waiting> {
        self.shards
            .iter()
            .map(|s| lock(&s.list).waiting())
            .collect()
    }

    /// Each shard's segments waiting for a grace period (see `SegList::segments`), for
    /// `grace::report()`. The vector is sized before any shard lock is taken.
    #[cfg(not(loom))]
    pub(crate) fn segments(
        &self,
    ) -> Vec<[Option<(u64, u64, u64)>; crate::cookie::NUM_ACTIVE_POLL_OLDSTATE]> {
        self.shards
            .iter()
            .map(|s| lock(&s.list).segments())
            .collect()
    }
}

/// How thoroughly `Engine::drain_all` drains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Rings that look non-empty.
    Pending,
    /// Every ring, waiting out drains in flight.
    Complete,
}

/// Run `cb`, catching a panic: count it in `panics` and report it on stderr, naming the
/// flavor `who`. Nothing here may unwind into a worker loop: a dead worker would leave its
/// shard `busy` forever, so no later callback of that shard would run and `barrier` would
/// hang.
#[inline]
pub(crate) fn run_caught(cb: Callback, panics: &AtomicU64, who: &str) {
    run_caught_named(cb, panics, || who);
}

/// [`run_caught`], asking for the flavor's name only when there is a panic to report (the
/// engine's host gives it through a virtual call, which a callback that frees an object
/// should not pay for).
#[inline]
pub(crate) fn run_caught_named<'a>(
    cb: Callback,
    panics: &AtomicU64,
    who: impl FnOnce() -> &'a str,
) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| cb.run())) {
        report_panic(payload, panics, who());
    }
}

#[cold]
#[inline(never)]
fn report_panic(payload: Box<dyn std::any::Any + Send>, panics: &AtomicU64, who: &str) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    {
        // Relaxed: a statistic.
        let n = panics.fetch_add(1, Ordering::Relaxed) + 1;
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".into());
        // The payload's own Drop may panic too (std guards its payload drops the same way);
        // such a second payload is leaked rather than dropped.
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
        crate::sys::report(format_args!(
            "grace: a {who} callback panicked ({msg}); caught, {n} so far; the other callbacks still run"
        ));
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    crate::sys::thread_starting();
    if let Err(e) = std::thread::Builder::new().name(name.clone()).spawn(f) {
        // Without this thread no callback would ever run; refusing loudly beats losing them.
        panic!("grace: cannot start thread {name}: {e}");
    }
}

/// What a `barrier` waits on: its markers, one per shard, arrive here when invoked.
#[derive(Default)]
pub(crate) struct BarrierState {
    arrived: Mutex<usize>,
    cv: Condvar,
}

impl BarrierState {
    pub(crate) fn arrive(&self) {
        *lock(&self.arrived) += 1;
        self.cv.notify_all();
    }

    pub(crate) fn wait_for(&self, n: usize) {
        let mut a = lock(&self.arrived);
        while *a < n {
            a = wait(&self.cv, a);
        }
    }
}

/// If `l` has ready callbacks and no invoker, mark it busy; the caller then queues it to a
/// worker (SRCU, whose callbacks always run on workers).
pub(crate) fn claim_for_worker(l: &mut super::seglist::SegList) -> bool {
    if !l.busy && !l.done.is_empty() {
        l.busy = true;
        true
    } else {
        false
    }
}

#[cfg(not(loom))]
impl pressure::Helper for Engine {
    fn help(&self, max: u64) -> u64 {
        Engine::help(self, max)
    }
    fn expedite(&self) {
        self.expedite_now();
    }
}

/// Under loom the memory-pressure layer (process-wide statics) is compiled out; the engine's
/// own models do not exercise it.
#[cfg(loom)]
mod pressure {
    pub(crate) fn over_budget() -> bool {
        false
    }
    pub(crate) fn is_flood(_callbacks: u64, _bytes: u64) -> bool {
        false
    }
    pub(crate) fn is_flood_rate(_callbacks: u64, _elapsed: std::time::Duration) -> bool {
        false
    }
    pub(crate) fn count_flood() {}
    pub(crate) fn enforce(_h: &super::Engine, _may_wait: bool) {}
}
