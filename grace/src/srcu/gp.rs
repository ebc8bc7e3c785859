//! An SRCU domain's grace period: the two-index flip, as a phase-named state machine that
//! never blocks.
//!
//! ```text
//!   Idle ──start──► Scan1 ──inactive index drained, flip──► Scan2 ──retired index drained──► Idle
//! ```
//!
//! * `Scan1` waits for the *inactive* index to drain. New readers do not use it, but a reader
//!   that loaded the index just before the previous flip may have counted itself there after
//!   the previous grace period last looked, and it may have started before this one.
//! * The flip makes the drained index the active one: readers arriving from now on count
//!   there, and this grace period need not wait for them.
//! * `Scan2` waits for the index the flip retired, where every reader that began before the
//!   flip (and after `Scan1`'s check) counted itself.
//!
//! [`Machine::advance`] runs as far as it can and returns when readers are still inside, so a
//! domain's grace period is advanced by whoever asks (a `synchronize` caller, the background
//! service) in short steps, and a reader blocked in one domain holds up only that domain.
//!
//! # The check (`drained`)
//!
//! Sum the unlock counts, fence **A**, sum the lock counts, compare (the kernel's
//! `srcu_readers_active_idx_check`). A section counted as ended was counted as begun (its lock
//! increment happens-before its unlock increment, whichever threads ran them), so equality
//! means no section of that index is open, except those that had not yet counted their lock
//! when we summed: fence A against the reader's fence **B** (after its lock increment) is the
//! store-buffering pattern, so those readers see everything this updater did before A.
//!
//! Regular readers execute B as a `SeqCst` fence. Lite readers execute only a compiler fence;
//! their updater pays with the heavy barrier (`membarrier`) at A, the role `synchronize_rcu()`
//! plays for the kernel's `srcu_read_lock_lite`. The flip follows `Scan1`'s check directly,
//! so that check's fence A also orders the flip (see `ReaderSide::flip`): a lite grace period
//! costs two `membarrier`s.

use super::shard::Registry;
use crate::gp::seq;
use crate::sync::{fence, AtomicU64, Ordering};
use crate::sys::{self, BarrierMode};

/// Where a domain's grace period is, for stall reports (the kernel's `SRCU_STATE_*`).
///
/// # Examples
///
/// ```
/// let d = grace::srcu::Srcu::new().unwrap();
/// assert_eq!(d.stats().phase, grace::srcu::SrcuPhase::Idle);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcuPhase {
    /// No grace period in progress.
    Idle,
    /// Waiting for stragglers on the inactive index.
    Scan1,
    /// Flipped; waiting for the readers of the retired index.
    Scan2,
}

/// How the updater's half of the fence pairs is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fences {
    /// Readers fence (regular SRCU): a `SeqCst` fence here.
    Regular,
    /// Readers only compiler-fence (lite SRCU): the heavy barrier here.
    Lite(BarrierMode),
}

impl Fences {
    fn full(self) {
        match self {
            // SeqCst: pairs with the reader's fence B (store-buffering).
            Fences::Regular => fence(Ordering::SeqCst),
            // Pairs with the lite reader's compiler fence, via membarrier.
            Fences::Lite(mode) => sys::heavy_barrier(mode),
        }
    }
}

/// What the readers and the grace period share: the flip counter (its low bit is the active
/// index) and the shards.
pub(crate) struct ReaderSide<'a> {
    pub(crate) flips: &'a AtomicU64,
    pub(crate) registry: &'a Registry,
}

impl ReaderSide<'_> {
    /// Is no section of index `idx` open? (Module docs, "The check".)
    pub(crate) fn drained(&self, idx: usize, fences: Fences) -> bool {
        let unlocks = self.registry.sum_unlocks(idx);
        fences.full(); // A
        let locks = self.registry.sum_locks(idx);
        locks == unlocks
    }

    /// The index readers do not use now.
    fn inactive(&self) -> usize {
        // Relaxed: only grace periods (serialized by the domain's machine lock) write it.
        (self.flips.load(Ordering::Relaxed) & 1) as usize ^ 1
    }

    /// Flip the index. Called right after a successful `drained` check of `Scan1`, whose
    /// fence A is the fence this store needs before it: a reader that loads the new index
    /// must see what the updater did before this grace period, since no scan waits for it.
    /// Regular readers: fence A, our store of the index || its load, its fence B (message
    /// passing). Lite readers: A's heavy barrier ran on the reader's CPU before A returned, so
    /// before the reader could load an index stored after it. (The kernel issues a separate
    /// barrier here; one fewer `membarrier` per lite grace period.)
    fn flip(&self) {
        // Relaxed: ordered by fence A before it and the fences after it.
        let flips = self.flips.load(Ordering::Relaxed) + 1;
        self.flips.store(flips, Ordering::Relaxed);
        // SeqCst: pairs with the fence in `Registry::adopt` (a shard joining now either is in
        // the walk below or reads the new count).
        fence(Ordering::SeqCst);
        self.registry.publish(flips);
        // After: the flip is visible before the next check sums anything, which bounds the
        // readers that can still count themselves on the retired index (the kernel's D).
        fence(Ordering::SeqCst);
    }

    /// Re-publish the current index to every shard: stragglers found by a check stop adding
    /// sections to the index being drained.
    fn republish(&self) {
        // Relaxed: written only under the machine lock, which we hold.
        self.registry.publish(self.flips.load(Ordering::Relaxed));
    }
}

/// A domain's grace-period state machine. Lives behind the domain's machine lock.
pub(crate) struct Machine {
    phase: SrcuPhase,
}

impl Machine {
    pub(crate) const fn new() -> Machine {
        Machine {
            phase: SrcuPhase::Idle,
        }
    }

    pub(crate) fn phase(&self) -> SrcuPhase {
        self.phase
    }

    /// Run grace periods until `seq_word` reaches `target`, or until readers are still
    /// inside; returns whether the target was reached.
    pub(crate) fn advance(
        &mut self,
        readers: &ReaderSide<'_>,
        seq_word: &AtomicU64,
        target: u64,
        fences: Fences,
    ) -> bool {
        loop {
            match self.phase {
                SrcuPhase::Idle => {
                    // Relaxed: only the holder of the machine lock writes the sequence.
                    let cur = seq_word.load(Ordering::Relaxed);
                    if seq::done(cur, target) {
                        return true;
                    }
                    self.gp_start(seq_word, cur);
                }
                SrcuPhase::Scan1 => {
                    if !readers.drained(readers.inactive(), fences) {
                        readers.republish();
                        return false;
                    }
                    readers.flip();
                    self.phase = SrcuPhase::Scan2;
                }
                SrcuPhase::Scan2 => {
                    if !readers.drained(readers.inactive(), fences) {
                        return false;
                    }
                    self.gp_end(seq_word);
                }
            }
        }
    }

    fn gp_start(&mut self, seq_word: &AtomicU64, cur: u64) {
        // Relaxed: the fence below orders it before the scans.
        seq_word.store(seq::started(cur), Ordering::Relaxed);
        // SeqCst: pairs with the fence in a snapshot (`Srcu::get_state` and friends): a caller
        // whose snapshot read the sequence before this start had its update ordered before
        // our scans, so readers we miss see it.
        fence(Ordering::SeqCst);
        self.phase = SrcuPhase::Scan1;
    }

    fn gp_end(&mut self, seq_word: &AtomicU64) {
        // Release: pairs with the Acquire loads of the sequence by pollers and waiters: who
        // sees the grace period ended sees the readers' sections ended (the chain runs through
        // the Acquire loads of the unlock counts in `drained`).
        seq_word.store(
            seq::ended(seq_word.load(Ordering::Relaxed)),
            Ordering::Release,
        );
        self.phase = SrcuPhase::Idle;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::shard::{state, Shard};
    use super::*;
    use std::sync::Arc;

    fn snap(s: &AtomicU64) -> u64 {
        seq::snapshot(s.load(Ordering::Relaxed))
    }

    #[test]
    fn a_reader_holds_the_right_scan_and_only_while_inside() {
        let flips = AtomicU64::new(0);
        let registry = Registry::new();
        let shard = Arc::new(Shard::new(state::OWNED, 0));
        registry.push(shard.clone());
        let readers = ReaderSide {
            flips: &flips,
            registry: &registry,
        };
        let s = AtomicU64::new(0);
        let mut m = Machine::new();

        // A reader on the active index 0: scan 1 (index 1) passes, the flip happens, scan 2
        // (index 0) waits.
        shard.count_lock(0);
        let target = snap(&s);
        assert!(!m.advance(&readers, &s, target, Fences::Regular));
        assert_eq!(m.phase(), SrcuPhase::Scan2);
        assert_eq!(flips.load(Ordering::Relaxed), 1);
        shard.count_unlock(0);
        assert!(m.advance(&readers, &s, target, Fences::Regular));
        assert_eq!(m.phase(), SrcuPhase::Idle);

        // A straggler that counted itself on the now-inactive index 0 holds scan 1.
        shard.count_lock(0);
        let target = snap(&s);
        assert!(!m.advance(&readers, &s, target, Fences::Regular));
        assert_eq!(m.phase(), SrcuPhase::Scan1);
        shard.count_unlock(0);
        assert!(m.advance(&readers, &s, target, Fences::Regular));
        assert_eq!(seq::count(s.load(Ordering::Relaxed)), 2);
    }
}
