//! One shard of a `Pending`: the per-cookie batches, the expired batch and the armed flag,
//! behind the shard lock. Flavor-free (cookies come from a [`Clock`]), so that loom and Miri
//! can check it with a fake grace-period source.
//!
//! # State, under the shard lock
//!
//! | field | what it holds | who moves things out |
//! |---|---|---|
//! | `batches[..live]` | objects waiting for a grace period, one [`Batch`] per cookie, oldest first | `expire` (to `expired`), `pop`/`pop_where` (dequeue) |
//! | `expired` | objects whose grace period has ended | the worker, via `take_expired` |
//! | `armed` | the shard's one re-arming callback is queued (or about to be) | the callback, via `after_gp` |
//! | `spare` | up to [`SPARE_CHUNKS`] empty chunks: the emergency reserve | pushes at a chunk boundary |
//!
//! Invariants, each re-established before the lock is released:
//!
//! 1. every object is in exactly one place: a batch (chunks or fallback nodes) or `expired`;
//! 2. an object in a batch whose cookie has not completed implies `armed` (so the callback will
//!    come back for it); an object in `expired` implies a worker kick after it was put there;
//! 3. `batches[..live]` are ordered by when their cookie was first taken: a later entry's
//!    cookie is never older. Cookies are taken under the lock, so they only move forward.
//!
//! No method allocates or frees: chunks and nodes are allocated by the caller before taking
//! the lock, and anything emptied is handed back in a [`Garbage`] to be freed after unlocking.

use super::chunks::{ChunkPile, ChunkStack, FreeChunk, FreeNode, NodeList};
use crate::cookie::{RawCookie as Cookie, NUM_ACTIVE_POLL_OLDSTATE};

/// Batches a shard can hold: one per cookie that may be outstanding, plus one whose cookie has
/// just completed and has not been moved to `expired` yet (`rcu_pending`'s array of 4 shrunk to
/// what the cookie contract needs).
pub(crate) const BATCHES: usize = NUM_ACTIVE_POLL_OLDSTATE + 1;

/// Empty chunks a shard keeps for reuse: the first push of a new batch (and of each chunk
/// after it) usually finds one here instead of calling the allocator, and under allocation
/// failure they are the emergency reserve.
pub(crate) const SPARE_CHUNKS: usize = 2;

/// Chunks' worth of expired objects a shard may hold before an enqueue on it helps process
/// them (see [`After::help`]).
pub(crate) const HELP_ABOVE_CHUNKS: usize = 4;

/// Chunks of expired objects one helping enqueue takes (and processes outside the lock).
pub(crate) const HELP_CHUNKS: usize = 1;

/// Chunks of expired objects the worker takes per lock acquisition: the rest stays visible in
/// the shard, where enqueuers can help with it.
pub(crate) const WORKER_CHUNKS: usize = 8;

/// Deliberately broken steps, for the loom models' negative checks (loom builds only).
#[cfg(loom)]
pub(crate) mod mutation {
    use std::cell::Cell;

    pub(crate) const NONE: u8 = 0;
    /// The callback disarms even though objects still wait.
    pub(crate) const DISARM_ALWAYS: u8 = 1;
    /// Expiry moves batches without asking whether their cookie has completed.
    pub(crate) const EXPIRE_EARLY: u8 = 2;

    std::thread_local! {
        // Loom runs a model's threads on the thread that called `loom::model`.
        static ACTIVE: Cell<u8> = const { Cell::new(NONE) };
    }

    pub(crate) fn set(m: u8) {
        ACTIVE.with(|a| a.set(m));
    }

    pub(crate) fn is(m: u8) -> bool {
        ACTIVE.with(|a| a.get() == m)
    }
}

/// Where cookies come from: a flavor in production, a fake sequence in the models.
pub(crate) trait Clock {
    /// A cookie for a grace period after now (the flavor's `get_state`: starts nothing).
    fn get_state(&self) -> Cookie;
    /// Has `cookie`'s grace period ended?
    fn poll_state(&self, cookie: Cookie) -> bool;
}

/// Objects waiting for one cookie: the chunk storage, and the linked fallback for objects
/// that could get no chunk.
pub(crate) struct Batch<const CAP: usize> {
    pub(crate) cookie: Cookie,
    pub(crate) chunks: ChunkStack<CAP>,
    pub(crate) nodes: NodeList,
}

impl<const CAP: usize> Batch<CAP> {
    pub(crate) const fn new(cookie: Cookie) -> Batch<CAP> {
        Batch {
            cookie,
            chunks: ChunkStack::new(),
            nodes: NodeList::new(),
        }
    }

    /// Objects held.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len() + self.nodes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Move everything of `other` into this batch, in O(1).
    fn absorb(&mut self, other: Batch<CAP>) {
        let Batch { chunks, nodes, .. } = other;
        self.chunks.append(chunks);
        self.nodes.append(nodes);
    }

    /// Visit every object once (chunks first), handing emptied chunks to `spent` and freeing
    /// the fallback nodes. `each` must not unwind.
    pub(crate) fn drain(
        &mut self,
        mut each: impl FnMut(*mut ()),
        spent: impl FnMut(FreeChunk<CAP>),
    ) {
        self.chunks.drain(&mut each, spent);
        self.nodes.drain(each);
    }
}

/// What the caller must do once the lock is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GpAction {
    /// Nothing: the object joined a batch that is already being waited for.
    Nothing,
    /// The first object of a batch and the callback was idle: queue the re-arming callback
    /// (the flavor's `call`).
    Call,
    /// The first object of a batch while the callback is already queued: it may fire before
    /// this cookie completes and will re-arm then, but the grace period this cookie needs must
    /// be started, since the cookie came from `get_state` (the flavor's `start_poll`).
    StartPoll,
}

/// The follow-up of an operation on the shard, to be carried out after unlocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct After {
    pub(crate) gp: GpAction,
    /// Objects were moved to `expired`: wake the worker.
    pub(crate) kick: bool,
    /// More than [`HELP_ABOVE_CHUNKS`] chunks' worth of expired objects wait for the worker: the enqueuer should take
    /// a slice ([`ShardState::take_expired_slice`]) and process it itself, if it may.
    pub(crate) help: bool,
    /// Set when this push opened a new chunk: the objects the shard holds now, for the flood
    /// check (made once per chunk, not per object).
    pub(crate) held_at_chunk: Option<u64>,
}

/// Result of [`ShardState::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Stored.
    Done(After),
    /// The batch's head chunk is full and there is no spare: allocate a chunk outside the lock
    /// and retry (`rcu_pending`'s preallocate-then-retry). `kick` as in [`After`].
    NeedChunk { kick: bool },
}

/// What an operation emptied under the lock, to be freed after it is released.
#[derive(Default)]
pub(crate) struct Garbage<const CAP: usize> {
    pub(crate) chunks: ChunkPile<CAP>,
    pub(crate) node: Option<FreeNode>,
}

/// Per-shard counters, updated under the lock (no shared cache line on the fast path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardCounts {
    /// Objects stored (in chunks or fallback nodes).
    pub(crate) enqueued: u64,
    /// Objects handed back by `pop`/`pop_where`.
    pub(crate) dequeued: u64,
    /// Objects stored in fallback nodes.
    pub(crate) fallback_nodes: u64,
    /// Chunk boundaries served from `spare` instead of the allocator.
    pub(crate) spares_used: u64,
    /// Times a batch's cookie had to be moved forward because no batch slot was free (only a
    /// flavor that breaks the `NUM_ACTIVE_POLL_OLDSTATE` promise can cause it).
    pub(crate) relabels: u64,
    /// First objects of a batch that needed no `start_poll`: a grace period was already
    /// requested for their cookie (the batch had been emptied by dequeues and refilled).
    pub(crate) polls_saved: u64,
    /// Objects taken out for processing (by the worker or a helping enqueuer).
    pub(crate) taken: u64,
    /// The most objects this shard has held at once.
    pub(crate) peak: u64,
}

/// The state behind one shard lock. See the module docs.
pub(crate) struct ShardState<const CAP: usize> {
    batches: [Batch<CAP>; BATCHES],
    live: usize,
    expired: Batch<CAP>,
    armed: bool,
    /// The newest cookie a grace period was requested for (by queueing the callback or by
    /// `start_poll`): a batch refilled with this cookie needs no new request.
    polled: Cookie,
    spare: ChunkPile<CAP>,
    pub(crate) counts: ShardCounts,
}

impl<const CAP: usize> Default for ShardState<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> ShardState<CAP> {
    pub(crate) fn new() -> ShardState<CAP> {
        ShardState {
            batches: std::array::from_fn(|_| Batch::new(Cookie::completed())),
            live: 0,
            expired: Batch::new(Cookie::completed()),
            armed: false,
            polled: Cookie::completed(),
            spare: ChunkPile::new(),
            counts: ShardCounts::default(),
        }
    }

    /// Move every batch whose cookie has completed to `expired`, keeping the others in order.
    /// Returns whether any object moved.
    fn expire(&mut self, clock: &impl Clock) -> bool {
        let mut moved = false;
        let mut kept = 0;
        for i in 0..self.live {
            let due = clock.poll_state(self.batches[i].cookie);
            #[cfg(loom)]
            let due = due || mutation::is(mutation::EXPIRE_EARLY);
            if due {
                let b = std::mem::replace(&mut self.batches[i], Batch::new(Cookie::completed()));
                moved |= !b.is_empty();
                self.expired.absorb(b);
            } else {
                self.batches.swap(kept, i);
                kept += 1;
            }
        }
        self.live = kept;
        moved
    }

    /// The index of the batch for `cookie`, creating it if needed. Sets `*kick` if batches had
    /// to be expired to make room, `*relabeled` if even that found none (see
    /// [`ShardCounts::relabels`]).
    fn batch_for(
        &mut self,
        cookie: Cookie,
        clock: &impl Clock,
        kick: &mut bool,
        relabeled: &mut bool,
    ) -> usize {
        // Newest first: a new object almost always joins the newest batch.
        if let Some(i) = (0..self.live)
            .rev()
            .find(|&i| self.batches[i].cookie.same_state(cookie))
        {
            return i;
        }
        if self.live == BATCHES {
            *kick |= self.expire(clock);
        }
        if self.live < BATCHES {
            let i = self.live;
            debug_assert!(self.batches[i].is_empty());
            self.batches[i].cookie = cookie;
            self.live += 1;
            return i;
        }
        // More distinct outstanding cookies than the flavor promised. Moving the newest
        // batch's cookie forward to `cookie` is safe (a later cookie's grace period also
        // covers everything the earlier one did) and loses nothing; it only delays.
        let i = self.live - 1;
        self.batches[i].cookie = cookie;
        self.counts.relabels += 1;
        *relabeled = true;
        i
    }

    /// What the first object of a (new or emptied, or relabeled) batch with `cookie` must
    /// trigger.
    ///
    /// * Callback idle: queue it (it re-arms until no batch holds objects).
    /// * Callback queued and a grace period already requested for `cookie` (the batch was
    ///   emptied by dequeues and is being refilled, or another batch of this cookie was
    ///   started): nothing. The earlier `call` or `start_poll` made sure a grace period
    ///   covering `cookie` runs, and the queued callback re-arms while objects wait, so it
    ///   comes back for them: every outstanding cookie is still covered, with one request per
    ///   cookie instead of one per refill.
    /// * Otherwise `start_poll`, and remember the cookie. Cookies are taken under the lock and
    ///   only move forward (invariant 3), so "not the same as `polled`" means "newer".
    fn arm_for(&mut self, first: bool, cookie: Cookie) -> GpAction {
        if !first {
            GpAction::Nothing
        } else if !self.armed {
            self.armed = true;
            self.polled = cookie;
            GpAction::Call
        } else if self.polled.same_state(cookie) {
            self.counts.polls_saved += 1;
            GpAction::Nothing
        } else {
            self.polled = cookie;
            GpAction::StartPoll
        }
    }

    /// Count one more object held, and the peak.
    #[inline]
    /// Objects enqueued here and not yet dequeued or taken for processing.
    fn held(&self) -> u64 {
        let c = &self.counts;
        c.enqueued - c.dequeued - c.taken
    }

    fn note_stored(&mut self) {
        let c = &mut self.counts;
        c.enqueued += 1;
        let held = c.enqueued - c.dequeued - c.taken;
        if held > c.peak {
            c.peak = held;
        }
    }

    /// Whether enqueuers should help with the expired backlog.
    #[inline]
    fn should_help(&self) -> bool {
        self.expired.len() > HELP_ABOVE_CHUNKS * CAP
    }

    /// The enqueue fast path: take a cookie, find its batch, store `p` at the cursor. At a
    /// chunk boundary the chunk comes from `prealloc` (allocated by the caller on an earlier
    /// try), else from `spare`; with neither, nothing is stored and the caller must allocate.
    /// An unused `prealloc` is kept as a spare when there is room.
    #[inline]
    pub(crate) fn push(
        &mut self,
        p: *mut (),
        clock: &impl Clock,
        prealloc: &mut Option<FreeChunk<CAP>>,
    ) -> Push {
        let cookie = clock.get_state();
        let mut kick = false;
        let mut relabeled = false;
        let i = self.batch_for(cookie, clock, &mut kick, &mut relabeled);
        let first = self.batches[i].is_empty() || relabeled;
        let mut new_chunk = false;
        if let Err(p) = self.batches[i].chunks.try_push(p) {
            new_chunk = true;
            let chunk = match prealloc.take() {
                Some(c) => c,
                None => match self.spare.pop() {
                    Some(c) => {
                        self.counts.spares_used += 1;
                        c
                    }
                    None => return Push::NeedChunk { kick },
                },
            };
            let chunks = &mut self.batches[i].chunks;
            chunks.push_chunk(chunk);
            let stored = chunks.try_push(p);
            debug_assert!(stored.is_ok(), "a fresh chunk has room");
        }
        if let Some(c) = prealloc.take() {
            if self.spare.len() < SPARE_CHUNKS {
                self.spare.push(c);
            } else {
                *prealloc = Some(c); // the caller frees it after unlocking
            }
        }
        self.note_stored();
        let cookie = self.batches[i].cookie;
        Push::Done(After {
            gp: self.arm_for(first, cookie),
            kick,
            help: self.should_help(),
            held_at_chunk: new_chunk.then(|| self.held()),
        })
    }

    /// The fallback: store the object carried by `node` in its batch's linked list.
    pub(crate) fn push_node(&mut self, node: FreeNode, clock: &impl Clock) -> After {
        let cookie = clock.get_state();
        let mut kick = false;
        let mut relabeled = false;
        let i = self.batch_for(cookie, clock, &mut kick, &mut relabeled);
        let first = self.batches[i].is_empty() || relabeled;
        self.batches[i].nodes.push(node);
        self.note_stored();
        self.counts.fallback_nodes += 1;
        let cookie = self.batches[i].cookie;
        After {
            gp: self.arm_for(first, cookie),
            kick,
            help: self.should_help(),
            held_at_chunk: Some(self.held()),
        }
    }

    /// The re-arming callback fired (a grace period has ended since it was queued): expire
    /// what is due. Returns `(kick, rearm)`: whether the worker has work, and whether objects
    /// still wait (then the callback stays armed and must be queued again; otherwise it is
    /// disarmed here).
    pub(crate) fn after_gp(&mut self, clock: &impl Clock) -> (bool, bool) {
        self.expire(clock);
        let rearm = self.batches[..self.live].iter().any(|b| !b.is_empty());
        #[cfg(loom)]
        let rearm = rearm && !mutation::is(mutation::DISARM_ALWAYS);
        if !rearm {
            self.armed = false;
        }
        (!self.expired.is_empty(), rearm)
    }

    /// For the worker: expire what is due and take the whole expired batch (O(1)), to be
    /// processed after unlocking.
    #[cfg(test)]
    pub(crate) fn take_expired(&mut self, clock: &impl Clock) -> Batch<CAP> {
        self.expire(clock);
        let b = std::mem::replace(&mut self.expired, Batch::new(Cookie::completed()));
        self.counts.taken += b.len() as u64;
        b
    }

    /// Expire what is due and take a bounded slice of the expired batch: up to `chunks` chunks
    /// (the newest), or, when no chunk is left, the fallback nodes (`nodes`: all of them, else
    /// none). To be processed after unlocking; the rest stays in `expired`, visible to the
    /// worker and to helping enqueuers.
    pub(crate) fn take_expired_slice(
        &mut self,
        clock: &impl Clock,
        chunks: usize,
        nodes: bool,
    ) -> Batch<CAP> {
        self.expire(clock);
        let mut b = Batch::new(Cookie::completed());
        b.chunks = self.expired.chunks.split_top(chunks);
        if b.chunks.is_empty() && nodes {
            b.nodes = std::mem::take(&mut self.expired.nodes);
        }
        self.counts.taken += b.len() as u64;
        b
    }

    /// Expired objects waiting for the worker (for tests).
    #[cfg(test)]
    pub(crate) fn expired_len(&self) -> usize {
        self.expired.len()
    }

    /// Put emptied chunks back as spares (as many as there is room for); the rest stay in
    /// `pile` for the caller to free after unlocking.
    pub(crate) fn recycle(&mut self, pile: &mut ChunkPile<CAP>) {
        while self.spare.len() < SPARE_CHUNKS {
            match pile.pop() {
                Some(c) => self.spare.push(c),
                None => break,
            }
        }
    }

    /// Add one chunk to the reserve if it has room; otherwise give it back.
    pub(crate) fn offer_spare(&mut self, chunk: FreeChunk<CAP>) -> Option<FreeChunk<CAP>> {
        if self.spare.len() < SPARE_CHUNKS {
            self.spare.push(chunk);
            None
        } else {
            Some(chunk)
        }
    }

    /// Dequeue: take the most recently enqueued object still waiting for its grace period,
    /// with its batch's cookie. Emptied chunks go to `spare`, or to `garbage`.
    #[cfg(test)]
    pub(crate) fn pop(&mut self, garbage: &mut Garbage<CAP>) -> Option<(*mut (), Cookie)> {
        self.pop_where(|_| true, garbage)
    }

    /// Dequeue the newest waiting object for which `pred` is true.
    pub(crate) fn pop_where(
        &mut self,
        mut pred: impl FnMut(*mut ()) -> bool,
        garbage: &mut Garbage<CAP>,
    ) -> Option<(*mut (), Cookie)> {
        let spare = &mut self.spare;
        let pile = &mut garbage.chunks;
        let mut spent = |c: FreeChunk<CAP>| {
            if spare.len() < SPARE_CHUNKS {
                spare.push(c)
            } else {
                pile.push(c)
            }
        };
        for b in self.batches[..self.live].iter_mut().rev() {
            if let Some(p) = b.chunks.remove_where(&mut pred, &mut spent) {
                self.counts.dequeued += 1;
                return Some((p, b.cookie));
            }
            if let Some((p, node)) = b.nodes.remove_where(&mut pred) {
                garbage.node = Some(node);
                self.counts.dequeued += 1;
                return Some((p, b.cookie));
            }
        }
        None
    }

    /// Objects in this shard: waiting, and expired but not yet taken by the worker.
    pub(crate) fn len(&self) -> usize {
        self.batches[..self.live]
            .iter()
            .map(Batch::len)
            .sum::<usize>()
            + self.expired.len()
    }

    /// Anything held, or the callback still queued: what `Pending`'s drop waits out.
    pub(crate) fn busy(&self) -> bool {
        self.armed || self.len() > 0
    }

    /// Whether the re-arming callback is queued.
    pub(crate) fn armed(&self) -> bool {
        self.armed
    }

    /// Spare chunks held (for statistics and tests).
    pub(crate) fn spares(&self) -> usize {
        self.spare.len()
    }

    /// The cookies of the batches that hold objects (for the loom models' coverage check).
    #[cfg(all(test, loom))]
    pub(crate) fn waiting_cookies(&self) -> Vec<Cookie> {
        self.batches[..self.live]
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| b.cookie)
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use crate::gp::seq;
    use std::cell::Cell;
    use std::collections::HashSet;

    /// A grace-period sequence driven by hand, with the real cookie arithmetic.
    pub(crate) struct FakeClock(pub(crate) Cell<u64>);

    impl FakeClock {
        pub(crate) fn new() -> FakeClock {
            FakeClock(Cell::new(0))
        }
        /// Run one whole grace period.
        pub(crate) fn gp(&self) {
            self.start();
            self.end();
        }
        pub(crate) fn start(&self) {
            self.0.set(seq::started(self.0.get()));
        }
        pub(crate) fn end(&self) {
            self.0.set(seq::ended(self.0.get()));
        }
    }

    impl Clock for FakeClock {
        fn get_state(&self) -> Cookie {
            Cookie::from_seq(seq::snapshot(self.0.get()))
        }
        fn poll_state(&self, c: Cookie) -> bool {
            seq::done(self.0.get(), c.seq)
        }
    }

    fn objs(n: usize) -> (Vec<u64>, Vec<*mut ()>) {
        let mut backing = vec![0u64; n];
        let ptrs = backing
            .iter_mut()
            .map(|x| x as *mut u64 as *mut ())
            .collect();
        (backing, ptrs)
    }

    /// Enqueue like `Pending` does: retry with a fresh chunk on NeedChunk.
    fn enqueue<const CAP: usize>(st: &mut ShardState<CAP>, p: *mut (), clock: &FakeClock) -> After {
        let mut pre = None;
        loop {
            match st.push(p, clock, &mut pre) {
                Push::Done(a) => return a,
                Push::NeedChunk { .. } => pre = Some(FreeChunk::try_new().unwrap()),
            }
        }
    }

    fn drain_expired<const CAP: usize>(
        st: &mut ShardState<CAP>,
        clock: &FakeClock,
    ) -> Vec<*mut ()> {
        let mut out = Vec::new();
        let mut pile = ChunkPile::new();
        st.take_expired(clock)
            .drain(|p| out.push(p), |c| pile.push(c));
        st.recycle(&mut pile);
        out
    }

    #[test]
    fn first_object_arms_then_start_polls_then_nothing() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(4);
        let mut st: ShardState<2> = ShardState::new();
        assert_eq!(enqueue(&mut st, ptrs[0], &clock).gp, GpAction::Call);
        assert_eq!(enqueue(&mut st, ptrs[1], &clock).gp, GpAction::Nothing);
        assert_eq!(enqueue(&mut st, ptrs[2], &clock).gp, GpAction::Nothing); // a new chunk, same batch
        clock.start(); // a new cookie: a grace period is now in progress
        assert_eq!(enqueue(&mut st, ptrs[3], &clock).gp, GpAction::StartPoll);
        assert_eq!(st.live, 2);
        assert!(st.armed());
    }

    #[test]
    fn a_batch_refilled_after_dequeue_asks_for_no_new_grace_period() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(2);
        let mut st: ShardState<2> = ShardState::new();
        assert_eq!(enqueue(&mut st, ptrs[0], &clock).gp, GpAction::Call);
        clock.start();
        assert_eq!(enqueue(&mut st, ptrs[1], &clock).gp, GpAction::StartPoll);
        let mut g = Garbage::default();
        for _ in 0..10 {
            // Empty the newest batch and refill it: same cookie, already requested.
            let (p, _) = st.pop(&mut g).unwrap();
            assert_eq!(enqueue(&mut st, p, &clock).gp, GpAction::Nothing);
        }
        assert_eq!(st.counts.polls_saved, 10);
        // A newer cookie is requested again, once.
        clock.end();
        clock.start();
        let (p, _) = st.pop(&mut g).unwrap();
        assert_eq!(enqueue(&mut st, p, &clock).gp, GpAction::StartPoll);
        let (p, _) = st.pop(&mut g).unwrap();
        assert_eq!(enqueue(&mut st, p, &clock).gp, GpAction::Nothing);
        // Every waiting cookie is still covered: the callback is armed, and after it has
        // disarmed a refill queues it again.
        assert!(st.armed());
        clock.end();
        clock.gp();
        st.after_gp(&clock);
        drain_expired(&mut st, &clock);
        assert!(!st.armed());
        assert_eq!(enqueue(&mut st, ptrs[0], &clock).gp, GpAction::Call);
    }

    #[test]
    fn expired_backlog_asks_for_help_and_slices_are_bounded() {
        let clock = FakeClock::new();
        let n = (HELP_ABOVE_CHUNKS + 2) * 2;
        let (_b, ptrs) = objs(n + 1);
        let mut st: ShardState<2> = ShardState::new();
        for &p in &ptrs[..n] {
            assert!(!enqueue(&mut st, p, &clock).help);
        }
        clock.gp();
        st.after_gp(&clock);
        assert_eq!(st.expired_len(), n);
        assert!(enqueue(&mut st, ptrs[n], &clock).help);
        let mut pile = ChunkPile::new();
        let mut got = HashSet::new();
        let mut slice = st.take_expired_slice(&clock, HELP_CHUNKS, false);
        assert_eq!(slice.len(), 2);
        slice.drain(|p| assert!(got.insert(p)), |c| pile.push(c));
        while st.expired_len() > 0 {
            let mut s = st.take_expired_slice(&clock, WORKER_CHUNKS, true);
            assert!(s.len() <= WORKER_CHUNKS * 2);
            s.drain(|p| assert!(got.insert(p)), |c| pile.push(c));
        }
        assert_eq!(got, ptrs[..n].iter().copied().collect());
        assert_eq!(st.counts.peak, n as u64 + 1);
        st.recycle(&mut pile);
        clock.gp();
        assert_eq!(drain_expired(&mut st, &clock), vec![ptrs[n]]);
    }

    #[test]
    fn nothing_expires_early_and_everything_expires_once() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(9);
        let mut st: ShardState<2> = ShardState::new();
        for &p in &ptrs[..5] {
            enqueue(&mut st, p, &clock);
        }
        clock.start();
        for &p in &ptrs[5..] {
            enqueue(&mut st, p, &clock);
        }
        // The first batch needs the grace period in progress... which started after its
        // cookie, so it is enough; the second batch needs the one after.
        assert_eq!(st.after_gp(&clock), (false, true));
        assert!(drain_expired(&mut st, &clock).is_empty());
        clock.end();
        assert_eq!(st.after_gp(&clock), (true, true));
        let first: HashSet<_> = drain_expired(&mut st, &clock).into_iter().collect();
        assert_eq!(first, ptrs[..5].iter().copied().collect());
        clock.gp();
        assert_eq!(st.after_gp(&clock), (true, false));
        assert!(!st.armed(), "nothing left to wait for: disarmed");
        let second: HashSet<_> = drain_expired(&mut st, &clock).into_iter().collect();
        assert_eq!(second, ptrs[5..].iter().copied().collect());
        assert!(!st.busy());
        assert_eq!(st.counts.enqueued, 9);
        // The emptied chunks were kept as spares (up to the limit).
        assert_eq!(st.spares(), SPARE_CHUNKS);
    }

    #[test]
    fn spares_serve_chunk_boundaries_before_the_allocator() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(4);
        let mut st: ShardState<2> = ShardState::new();
        let mut pile = ChunkPile::new();
        pile.push(FreeChunk::try_new().unwrap());
        pile.push(FreeChunk::try_new().unwrap());
        st.recycle(&mut pile);
        assert_eq!(st.spares(), 2);
        let mut pre = None;
        for &p in &ptrs {
            assert!(matches!(st.push(p, &clock, &mut pre), Push::Done(_)));
        }
        assert_eq!(st.counts.spares_used, 2);
        // No spare left: the next boundary asks the caller.
        let (_b2, more) = objs(1);
        assert_eq!(
            st.push(more[0], &clock, &mut pre),
            Push::NeedChunk { kick: false }
        );
        // An unused preallocated chunk becomes a spare.
        let mut pre = Some(FreeChunk::try_new().unwrap());
        let mut pre2 = Some(FreeChunk::try_new().unwrap());
        assert!(matches!(st.push(more[0], &clock, &mut pre), Push::Done(_)));
        assert!(pre.is_none());
        clock.gp();
        drain_expired(&mut st, &clock);
        let (_b3, last) = objs(1);
        assert!(matches!(st.push(last[0], &clock, &mut pre2), Push::Done(_)));
        assert!(pre2.is_none(), "kept as a spare, or used");
        clock.gp();
        assert_eq!(drain_expired(&mut st, &clock), vec![last[0]]);
    }

    #[test]
    fn fallback_nodes_join_the_same_batch_and_expire_with_it() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(3);
        let mut st: ShardState<4> = ShardState::new();
        assert_eq!(enqueue(&mut st, ptrs[0], &clock).gp, GpAction::Call);
        let a = st.push_node(FreeNode::try_new(ptrs[1]).unwrap(), &clock);
        assert_eq!(a.gp, GpAction::Nothing);
        assert_eq!(st.live, 1);
        // A node first in a fresh batch arms like an object in a chunk.
        clock.start();
        let a = st.push_node(FreeNode::try_new(ptrs[2]).unwrap(), &clock);
        assert_eq!(a.gp, GpAction::StartPoll);
        clock.end();
        clock.gp();
        st.after_gp(&clock);
        let got: HashSet<_> = drain_expired(&mut st, &clock).into_iter().collect();
        assert_eq!(got, ptrs.iter().copied().collect());
        assert_eq!(st.counts.fallback_nodes, 2);
    }

    #[test]
    fn dequeue_takes_the_newest_waiting_object_never_an_expired_one() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(6);
        let mut st: ShardState<2> = ShardState::new();
        for &p in &ptrs[..3] {
            enqueue(&mut st, p, &clock);
        }
        let old_cookie = clock.get_state();
        clock.gp();
        for &p in &ptrs[3..] {
            enqueue(&mut st, p, &clock);
        }
        let mut g = Garbage::default();
        let (p, c) = st.pop(&mut g).unwrap();
        assert_eq!(p, ptrs[5]);
        assert!(!clock.poll_state(c));
        // The old batch is due: after the callback moves it, dequeue never sees it.
        st.after_gp(&clock);
        let mut seen = Vec::new();
        while let Some((p, c)) = st.pop(&mut g) {
            assert!(!clock.poll_state(c), "dequeued an expired object");
            assert!(!c.same_state(old_cookie));
            seen.push(p);
        }
        assert_eq!(seen, vec![ptrs[4], ptrs[3]]);
        let expired: HashSet<_> = drain_expired(&mut st, &clock).into_iter().collect();
        assert_eq!(expired, ptrs[..3].iter().copied().collect());
        assert_eq!(st.counts.dequeued, 3);
    }

    #[test]
    fn pop_where_finds_matches_in_chunks_and_nodes() {
        let clock = FakeClock::new();
        let (_b, ptrs) = objs(6);
        let mut st: ShardState<2> = ShardState::new();
        for &p in &ptrs[..4] {
            enqueue(&mut st, p, &clock);
        }
        st.push_node(FreeNode::try_new(ptrs[4]).unwrap(), &clock);
        let mut g = Garbage::default();
        assert_eq!(
            st.pop_where(|p| p == ptrs[0], &mut g).map(|x| x.0),
            Some(ptrs[0])
        );
        assert_eq!(
            st.pop_where(|p| p == ptrs[4], &mut g).map(|x| x.0),
            Some(ptrs[4])
        );
        assert!(
            g.node.is_some(),
            "the node goes back to the caller, to free after unlocking"
        );
        assert_eq!(st.pop_where(|p| p == ptrs[5], &mut g), None);
        clock.gp();
        st.after_gp(&clock);
        let rest: HashSet<_> = drain_expired(&mut st, &clock).into_iter().collect();
        assert_eq!(rest, ptrs[1..4].iter().copied().collect());
    }

    /// A flavor that hands out more distinct outstanding cookies than it promised: the shard
    /// relabels instead of looping or losing anything, and still never expires early.
    struct LyingClock(Cell<u64>);
    impl Clock for LyingClock {
        fn get_state(&self) -> Cookie {
            let n = self.0.get() + 1;
            self.0.set(n);
            Cookie::from_seq(n << 8) // a new cookie every time; nothing ever completes
        }
        fn poll_state(&self, _: Cookie) -> bool {
            false
        }
    }

    #[test]
    fn too_many_outstanding_cookies_relabel_the_newest_batch() {
        let clock = LyingClock(Cell::new(0));
        let (_b, ptrs) = objs(6);
        let mut st: ShardState<2> = ShardState::new();
        for &p in &ptrs {
            let mut pre = Some(FreeChunk::try_new().unwrap());
            let a = match st.push(p, &clock, &mut pre) {
                Push::Done(a) => a,
                Push::NeedChunk { .. } => unreachable!("a chunk was supplied"),
            };
            assert_ne!(
                a.gp,
                GpAction::Nothing,
                "every relabel must make sure a grace period runs"
            );
        }
        assert_eq!(st.live, BATCHES);
        assert_eq!(st.counts.relabels, 3);
        assert_eq!(st.len(), 6);
        // The newest batch carries the newest cookie.
        assert!(st.batches[BATCHES - 1]
            .cookie
            .same_state(Cookie::from_seq(6 << 8)));
        let mut g = Garbage::default();
        let mut n = 0;
        while st.pop(&mut g).is_some() {
            n += 1;
        }
        assert_eq!(n, 6);
    }
}
