//! The grace-period engine: sequence numbers, phases, and the wait for readers.
//!
//! One [`GpEngine`] belongs to each flavor. It keeps two sequences in the layout of
//! [`seq`]: `normal`, advanced by [`GpEngine::synchronize`] callers and by the background
//! grace-period thread, and `expedited`, advanced by
//! [`GpEngine::synchronize_expedited`]. A plain [`Cookie`](crate::cookie::Cookie) watches the
//! first; a [`FullCookie`](crate::cookie::FullCookie) watches both, as in the kernel.
//!
//! A grace period is three named phases, each published in `phase` for stall reports
//! (the kernel's `rcu_gp_kthread` / `gp_state`):
//!
//! 1. [`GpPhase::Init`] (`gp_init`): mark the sequence in progress, execute the heavy barrier,
//!    and advance the readers' epoch.
//! 2. [`GpPhase::WaitReaders`] (`gp_wait_readers`): walk the registry and wait for every slot
//!    still reading with an older epoch.
//! 3. [`GpPhase::Cleanup`] (`gp_cleanup`): end the sequence, releasing pollers.
//!
//! Only one grace period runs at a time (`lock`). Callers of `synchronize` queue on that lock
//! and re-check their snapshot once they hold it, so N concurrent callers share about two
//! grace periods: the one in progress when they arrived does not count for them, the next
//! one serves them all.
//!
//! # Why one heavy barrier is enough
//!
//! liburcu's memb flavor issues a membarrier at the start and at the end of a grace period.
//! The start one is essential (see `gp_init`). The end one orders each reader's section before
//! the updater's free; here the reader's unlock is a store-release, and `gp_wait_readers`
//! reads it with load-acquire, which gives the same order in the language's model and costs
//! nothing on x86 (both are plain `mov`s). That halves the system calls per grace period.

pub(crate) mod seq;
#[cfg(all(test, loom))]
mod tests;

use crate::reader::{quiescent, Readers, Slot, EPOCH_UNIT};
use crate::sync::{fence, lock, AtomicU64, AtomicU8, AtomicUsize, Mutex, Ordering};
use crate::sys::{self, BarrierMode};

/// Which phase the grace-period engine is in, for stall reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpPhase {
    /// No grace period is running.
    Idle,
    /// Starting: sequence marked, heavy barrier, epoch advance.
    Init,
    /// Waiting for pre-existing readers to leave their sections.
    WaitReaders,
    /// Ending: sequence advanced, pollers and waiters released.
    Cleanup,
}

impl GpPhase {
    fn from_u8(v: u8) -> GpPhase {
        match v {
            1 => GpPhase::Init,
            2 => GpPhase::WaitReaders,
            3 => GpPhase::Cleanup,
            _ => GpPhase::Idle,
        }
    }
}

/// Normal or expedited: which sequence a grace period advances, and how hard it waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GpKind {
    /// Waits for readers with a gentle back-off (spin, yield, then sleeps up to 1 ms).
    Normal,
    /// Waits for readers by spinning and yielding; completes full cookies only.
    Expedited,
}

/// The grace-period state of one flavor.
pub(crate) struct GpEngine {
    /// Normal grace-period sequence ([`seq`] layout). Written only under `lock`.
    normal: AtomicU64,
    /// Expedited grace-period sequence. Written only under `lock`.
    expedited: AtomicU64,
    /// Held for the whole of a grace period: one at a time.
    lock: Mutex<()>,
    /// [`GpPhase`] as a byte.
    phase: AtomicU8,
    /// Number of threads waiting in `synchronize_expedited`; a normal grace period that sees
    /// one stops sleeping between polls and spins instead, so it does not delay them.
    expedite_waiters: AtomicUsize,
    /// When the running grace period started and which reader it waits on, for
    /// `grace::report()` and stall warnings. Written by the grace period only.
    #[cfg(not(loom))]
    watch: crate::report::GpWatch,
}

impl GpEngine {
    /// A fresh engine, both sequences idle.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> GpEngine {
        GpEngine {
            normal: AtomicU64::new(seq::INITIAL),
            expedited: AtomicU64::new(seq::INITIAL),
            lock: Mutex::new(()),
            phase: AtomicU8::new(0),
            expedite_waiters: AtomicUsize::new(0),
            watch: crate::report::GpWatch::new(),
        }
    }

    /// A fresh engine, both sequences idle.
    #[cfg(loom)]
    pub(crate) fn new() -> GpEngine {
        GpEngine {
            normal: AtomicU64::new(seq::INITIAL),
            expedited: AtomicU64::new(seq::INITIAL),
            lock: Mutex::new(()),
            phase: AtomicU8::new(0),
            expedite_waiters: AtomicUsize::new(0),
        }
    }

    fn seq_of(&self, kind: GpKind) -> &AtomicU64 {
        match kind {
            GpKind::Normal => &self.normal,
            GpKind::Expedited => &self.expedited,
        }
    }

    /// The current value of a sequence.
    #[inline]
    pub(crate) fn current(&self, kind: GpKind) -> u64 {
        // Acquire: pairs with the Release in gp_cleanup, so a caller that sees a grace period
        // ended also sees every reader's section ended (the chain through gp_wait_readers).
        self.seq_of(kind).load(Ordering::Acquire)
    }

    /// A snapshot: the sequence value at which a grace period will have started and ended
    /// after every access this thread made before the call.
    #[inline]
    pub(crate) fn snapshot(&self, kind: GpKind) -> u64 {
        // SeqCst: orders the caller's earlier accesses (typically the removal of an object)
        // before the load of the sequence. Without it the load could read an idle sequence
        // whose next grace period has already executed its heavy barrier without seeing our
        // removal (the kernel's smp_mb() in get_state_synchronize_rcu). Pairs with the fence
        // at the start of heavy_barrier() in gp_init.
        fence(Ordering::SeqCst);
        seq::snapshot(self.seq_of(kind).load(Ordering::Acquire))
    }

    /// Has the sequence of `kind` reached `snap`?
    #[inline]
    pub(crate) fn done(&self, kind: GpKind, snap: u64) -> bool {
        seq::done(self.current(kind), snap)
    }

    /// What `grace::report()` and stall warnings read about the running grace period.
    #[cfg(not(loom))]
    pub(crate) fn watch(&self) -> &crate::report::GpWatch {
        &self.watch
    }

    /// The phase of the grace period in progress.
    pub(crate) fn phase(&self) -> GpPhase {
        GpPhase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Number of grace periods of `kind` completed so far.
    pub(crate) fn completed(&self, kind: GpKind) -> u64 {
        seq::count(self.current(kind).wrapping_sub(seq::INITIAL))
    }

    /// Wait until a grace period of `kind` that started after this call has ended, running
    /// it on this thread unless another caller's grace period serves.
    pub(crate) fn synchronize(&self, readers: &Readers, mode: BarrierMode, kind: GpKind) {
        let snap = self.snapshot(kind);
        if kind == GpKind::Expedited {
            // Relaxed: a hint to a concurrent normal grace period to stop sleeping.
            self.expedite_waiters.fetch_add(1, Ordering::Relaxed);
        }
        self.run_until(readers, mode, kind, snap);
        if kind == GpKind::Expedited {
            self.expedite_waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Run normal grace periods on this thread until the sequence reaches `snap`, polling
    /// readers without sleeping, as when an expedited waiter is present: callbacks waiting on
    /// a normal grace period complete sooner (flood mode, the memory budget, the shrinker).
    #[cfg(not(loom))]
    pub(crate) fn run_until_hurried(&self, readers: &Readers, mode: BarrierMode, snap: u64) {
        // Relaxed: a hint to the wait loop, as in `synchronize_expedited`.
        self.expedite_waiters.fetch_add(1, Ordering::Relaxed);
        self.run_until(readers, mode, GpKind::Normal, snap);
        self.expedite_waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Run grace periods of `kind` on this thread until its sequence reaches `snap`.
    pub(crate) fn run_until(&self, readers: &Readers, mode: BarrierMode, kind: GpKind, snap: u64) {
        if self.done(kind, snap) {
            return;
        }
        let _one_at_a_time = lock(&self.lock);
        // Re-check under the lock: a grace period that ran while we queued may serve us.
        while !self.done(kind, snap) {
            self.run_one(readers, mode, kind);
        }
    }

    /// One grace period. The caller holds `lock`.
    fn run_one(&self, readers: &Readers, mode: BarrierMode, kind: GpKind) {
        let target = self.gp_init(readers, mode, kind);
        self.gp_wait_readers(readers, target, kind);
        self.gp_cleanup(kind);
    }

    /// Phase 1. Returns the epoch word readers must reach.
    fn gp_init(&self, readers: &Readers, mode: BarrierMode, kind: GpKind) -> u64 {
        self.phase.store(GpPhase::Init as u8, Ordering::Relaxed);
        #[cfg(not(loom))]
        self.watch
            .started(self.completed(kind) + 1, kind == GpKind::Expedited);
        let s = self.seq_of(kind);
        // Relaxed: only this thread (holding `lock`) writes the sequence; the SeqCst fence in
        // heavy_barrier() below orders it before the epoch advance and the registry walk.
        s.store(seq::started(s.load(Ordering::Relaxed)), Ordering::Relaxed);
        // Heavy barrier. Pairs with the light barrier in Slot::lock. Three cases for a reader
        // that might still see what the updater removed before this grace period:
        //  - its slot store is visible to the walk below: we wait for it;
        //  - it stores its slot after the barrier (a slot registered after the walk passed
        //    the registry head is the same case: its first store comes later still): the
        //    light barrier right after that store orders its section's loads after the heavy
        //    barrier's effect on its CPU (or after the context switch that stood in for it),
        //    so they see the removal;
        //  - both cannot fail at once: that is the store-buffering guarantee of the pair.
        // Also pairs with the fence in GpEngine::snapshot (see there).
        sys::heavy_barrier(mode);
        // Relaxed: the barrier above did the ordering; a reader that copies the old value
        // after this is one we wait for, which is merely conservative.
        readers.epoch.fetch_add(EPOCH_UNIT, Ordering::Relaxed) + EPOCH_UNIT
    }

    /// Phase 2: wait until every slot is quiescent or reading in epoch `target`.
    fn gp_wait_readers(&self, readers: &Readers, target: u64, kind: GpKind) {
        self.phase
            .store(GpPhase::WaitReaders as u8, Ordering::Relaxed);
        for slot in readers.iter() {
            self.wait_slot(slot, target, kind);
        }
    }

    fn wait_slot(&self, slot: &Slot, target: u64, kind: GpKind) {
        let mut backoff = Backoff::new();
        // Records the slot we wait on and warns once if it stalls; costs nothing when the
        // slot is quiescent at the first look (the loop body never runs).
        #[cfg(not(loom))]
        let mut stall = crate::report::SlotWait::new(&self.watch, slot);
        // Acquire: pairs with the Release stores in Slot::unlock and Slot::lock, so every
        // access of the section we waited out happens-before the caller's reclamation.
        while !quiescent(slot.ctr.load(Ordering::Acquire), target) {
            let hurry = kind == GpKind::Expedited
                // Relaxed: a hint only.
                || self.expedite_waiters.load(Ordering::Relaxed) > 0;
            #[cfg(not(loom))]
            stall.tick();
            backoff.wait(hurry);
        }
    }

    /// Phase 3.
    fn gp_cleanup(&self, kind: GpKind) {
        self.phase.store(GpPhase::Cleanup as u8, Ordering::Relaxed);
        let s = self.seq_of(kind);
        // Release: pairs with the Acquire in `current`: whoever sees the new value sees the
        // readers' sections as ended.
        s.store(seq::ended(s.load(Ordering::Relaxed)), Ordering::Release);
        #[cfg(not(loom))]
        self.watch.ended();
        self.phase.store(GpPhase::Idle as u8, Ordering::Relaxed);
    }
}

/// How a grace period waits for a reader: spin briefly, then yield, then sleep with an
/// exponentially growing period capped at 1 ms (normal) or keep yielding (hurried).
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { step: 0 }
    }

    pub(crate) fn wait(&mut self, hurry: bool) {
        self.step = self.step.saturating_add(1);
        #[cfg(loom)]
        {
            let _ = hurry;
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        {
            if self.step <= 64 {
                std::hint::spin_loop();
            } else if self.step <= 128 || (hurry && self.step <= 100_000) {
                std::thread::yield_now();
            } else {
                let exp = (self.step.saturating_sub(128)).min(7);
                let us = if hurry { 20 } else { 10u64 << exp };
                std::thread::sleep(std::time::Duration::from_micros(us.min(1000)));
            }
        }
    }
}
