//! A shard's segmented callback list, after the kernel's `rcu_segcblist`.
//!
//! ```text
//!   done ─────────► pending[0] (cookie a) ─────► pending[1] (cookie b)      a < b
//!   ready to run     waits for GP a               waits for GP b
//! ```
//!
//! New batches join the *tail* segment when they wait for the same cookie, or open a new
//! pending segment. [`SegList::advance`] moves every segment whose cookie has completed into
//! `done`. Order is FIFO end to end: callbacks leave in the order they arrived, which is what
//! lets `barrier` entrain a marker at the tail and know that everything before it has run once
//! the marker has.
//!
//! Why two pending segments suffice: a cookie that is not yet done is one of at most
//! [`NUM_ACTIVE_POLL_OLDSTATE`] values (see `gp::seq`), and each arriving batch carries a
//! cookie at least as new as the tail's. If both pending segments are taken and a newer cookie
//! arrives, the older segment's cookie must already be done; [`SegList::push`] advances first,
//! and in the impossible case that it did not complete, merges the new batch into the tail with
//! the newer cookie, which only ever makes callbacks wait longer, never shorter.
//!
//! Batches are linked [`Node`]s the caller allocates before taking the shard lock, so the list
//! itself never allocates.

use super::Callback;
use crate::cookie::NUM_ACTIVE_POLL_OLDSTATE;
use crate::gp::seq;
use std::ptr::NonNull;

/// A block of callbacks, allocated outside any lock.
pub(crate) struct Node {
    /// The next node of the batch this node is linked into; owned by that batch (see
    /// [`Batch`]). `None` whenever the node is outside a batch.
    next: Option<NonNull<Node>>,
    pub(crate) cbs: Vec<Callback>,
    /// Holds the engine's own callbacks (barrier markers), which statistics leave out.
    pub(crate) internal: bool,
    /// Holds callbacks that must run on a worker, never on a queuing thread: grace's own,
    /// queued under its locks (kvfree arrays with destructors, `Pending`'s re-arming
    /// callback). A shard whose ready callbacks include one goes to a worker at once.
    pub(crate) offload: bool,
    /// Bytes its callbacks free, as stated by their callers (`rcu::call_sized`; a closure's
    /// own size otherwise): what the memory-pressure accounting counts as stranded.
    pub(crate) bytes: u64,
}

// SAFETY: `next` is only ever set while the node is owned by a `Batch` (which owns the whole
// chain, see there); a node outside a batch owns nothing through it. Everything else is Send.
unsafe impl Send for Node {}

impl Node {
    pub(crate) fn new(cbs: Vec<Callback>) -> Box<Node> {
        Box::new(Node {
            next: None,
            cbs,
            internal: false,
            offload: false,
            bytes: 0,
        })
    }

    /// A node for one of the engine's own callbacks.
    pub(crate) fn internal(cb: Callback) -> Box<Node> {
        Box::new(Node {
            next: None,
            cbs: vec![cb],
            internal: true,
            offload: false,
            bytes: 0,
        })
    }
}

/// A FIFO of nodes.
///
/// The chain is linked with raw pointers, each node a leaked `Box` owned by the batch (the
/// pattern of `std::collections::LinkedList`). `Box` links would not do: moving the `Box` that
/// owns the last node (into the previous node, or moving a one-node batch) asserts its
/// uniqueness and invalidates `tail` (undefined behaviour under Stacked and Tree Borrows,
/// found by Miri).
#[derive(Default)]
pub(crate) struct Batch {
    /// First node; `None` when empty.
    head: Option<NonNull<Node>>,
    /// Last node; `None` when empty.
    tail: Option<NonNull<Node>>,
    len: usize,
    /// How many of the nodes are `offload` nodes.
    pub(crate) offload: usize,
    /// The nodes' `bytes`, summed.
    pub(crate) bytes: u64,
}

// SAFETY: the batch owns its nodes outright (nothing else points into the chain), and nodes
// are Send.
unsafe impl Send for Batch {}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push_node(&mut self, mut node: Box<Node>) {
        self.len += node.cbs.len();
        self.offload += usize::from(node.offload);
        self.bytes += node.bytes;
        node.next = None;
        let raw = NonNull::from(Box::leak(node));
        self.link(raw, raw);
    }

    /// Link the chain `first..=last` (owned by the caller, handed over) after our tail.
    fn link(&mut self, first: NonNull<Node>, last: NonNull<Node>) {
        match self.tail {
            // SAFETY: `tail` is the last node of the chain this batch owns, and we hold
            // `&mut self`.
            Some(mut t) => unsafe { t.as_mut().next = Some(first) },
            None => self.head = Some(first),
        }
        self.tail = Some(last);
    }

    fn append(&mut self, mut other: Batch) {
        if let (Some(first), Some(last)) = (other.head.take(), other.tail.take()) {
            self.len += std::mem::take(&mut other.len);
            self.offload += std::mem::take(&mut other.offload);
            self.bytes += std::mem::take(&mut other.bytes);
            self.link(first, last);
        }
    }

    /// Unlink and return the first node.
    fn pop_front(&mut self) -> Option<Box<Node>> {
        let first = self.head?;
        // SAFETY: `first` was leaked from a Box by push_node and is owned by this batch; taking
        // it out of the chain hands that ownership back.
        let mut node = unsafe { Box::from_raw(first.as_ptr()) };
        self.head = node.next.take();
        if self.head.is_none() {
            self.tail = None;
        }
        self.len -= node.cbs.len();
        self.offload -= usize::from(node.offload);
        self.bytes -= node.bytes;
        Some(node)
    }

    /// Consume the batch node by node (for invoking; nodes are freed as they are emptied).
    /// Nodes the iterator does not reach are dropped with it, as by dropping the batch.
    pub(crate) fn into_nodes(mut self) -> impl Iterator<Item = Box<Node>> {
        std::iter::from_fn(move || self.pop_front())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Iterative (no recursion on long chains). Callbacks still inside are discarded, which
        // only happens when a shard is torn down in tests.
        while let Some(mut n) = self.pop_front() {
            for cb in n.cbs.drain(..) {
                cb.discard();
            }
        }
    }
}

/// A shard's callbacks, by segment.
/// A shard's waiting callbacks, counted (see [`SegList::waiting`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Waiting {
    /// Callbacks waiting for a grace period.
    pub(crate) gp_callbacks: u64,
    /// Bytes they free.
    pub(crate) gp_bytes: u64,
    /// Callbacks whose grace period has ended, not yet taken by an invoker.
    pub(crate) ready_callbacks: u64,
    /// Bytes they free.
    pub(crate) ready_bytes: u64,
    /// Pending segments in use (each waits for its own grace period).
    pub(crate) segments: u64,
}

impl std::ops::AddAssign for Waiting {
    fn add_assign(&mut self, o: Waiting) {
        self.gp_callbacks += o.gp_callbacks;
        self.gp_bytes += o.gp_bytes;
        self.ready_callbacks += o.ready_callbacks;
        self.ready_bytes += o.ready_bytes;
        self.segments += o.segments;
    }
}

#[derive(Default)]
pub(crate) struct SegList {
    pub(crate) done: Batch,
    /// In cookie order; `None` entries only at the end.
    pending: [Option<(u64, Batch)>; NUM_ACTIVE_POLL_OLDSTATE],
    /// An invoker (a worker, or a queuing thread in local mode) is running a batch taken
    /// from `done`.
    pub(crate) busy: bool,
    /// Ready callbacks wait for a queuing thread to run them (`Invocation::Local`, see
    /// `callback::shard`) instead of going to a worker at once.
    pub(crate) local: bool,
    /// Since when, in local mode, ready callbacks have waited for a queuing thread.
    pub(crate) ready_since: Option<std::time::Instant>,
}

impl SegList {
    /// Total callbacks in all segments (not counting a batch a worker took).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.done.len()
            + self
                .pending
                .iter()
                .flatten()
                .map(|(_, b)| b.len())
                .sum::<usize>()
    }

    /// What waits here: callbacks and bytes still waiting for their grace period, and those
    /// whose grace period has ended, waiting to be invoked (not counting a batch an invoker
    /// took).
    pub(crate) fn waiting(&self) -> Waiting {
        let mut w = Waiting {
            ready_callbacks: self.done.len() as u64,
            ready_bytes: self.done.bytes,
            ..Waiting::default()
        };
        for (_, b) in self.pending.iter().flatten() {
            w.gp_callbacks += b.len() as u64;
            w.gp_bytes += b.bytes;
            w.segments += 1;
        }
        w
    }

    /// The segments waiting for a grace period, oldest first, as (cookie, callbacks, bytes),
    /// for `grace::report()`. Allocates nothing (it runs under the shard lock).
    #[cfg(not(loom))]
    pub(crate) fn segments(&self) -> [Option<(u64, u64, u64)>; NUM_ACTIVE_POLL_OLDSTATE] {
        let mut out = [None; NUM_ACTIVE_POLL_OLDSTATE];
        for (o, (cookie, b)) in out.iter_mut().zip(self.pending.iter().flatten()) {
            *o = Some((*cookie, b.len() as u64, b.bytes));
        }
        out
    }

    /// Nothing queued and nothing being invoked.
    pub(crate) fn is_idle(&self) -> bool {
        !self.busy && self.done.is_empty() && self.pending.iter().all(Option::is_none)
    }

    /// The newest cookie anything here waits for.
    pub(crate) fn newest_cookie(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|(c, _)| *c).next_back()
    }

    /// Queue `node` to wait for `cookie`; `cur` is the sequence's current value.
    pub(crate) fn push(&mut self, cookie: u64, node: Box<Node>, cur: u64) {
        self.advance(cur);
        let used = self.pending.iter().filter(|p| p.is_some()).count();
        if let Some(last) = used.checked_sub(1) {
            let (c, b) = self.pending[last].as_mut().expect("counted");
            if *c == cookie || used == NUM_ACTIVE_POLL_OLDSTATE || seq::ge(*c, cookie) {
                // Same grace period; or no room (see module docs); or an older cookie than the
                // tail's (the engine snapshots under the shard lock so it never sends one, but
                // a segment out of order would stall `advance`): join the tail, waiting for the
                // newer of the two cookies, which is never too early.
                if seq::ge(cookie, *c) {
                    *c = cookie;
                }
                b.push_node(node);
                return;
            }
        }
        let mut b = Batch::default();
        b.push_node(node);
        self.pending[used] = Some((cookie, b));
    }

    /// Entrain `node` behind everything already queued, waiting for nothing new (the marker of
    /// `barrier`). Returns `false`, leaving the node to the caller, if the shard is idle.
    pub(crate) fn entrain(&mut self, node: Box<Node>) -> Result<(), Box<Node>> {
        if self.is_idle() {
            return Err(node);
        }
        match self.pending.iter_mut().flatten().next_back() {
            Some((_, b)) => b.push_node(node),
            None => self.done.push_node(node),
        }
        Ok(())
    }

    /// Move every pending segment whose cookie is done (at sequence value `cur`) into `done`.
    pub(crate) fn advance(&mut self, cur: u64) {
        while let Some((c, _)) = &self.pending[0] {
            if !seq::done(cur, *c) {
                break;
            }
            let (_, b) = self.pending[0].take().expect("checked");
            self.done.append(b);
            self.pending.rotate_left(1);
        }
    }

    /// Take the `done` segment for invoking.
    pub(crate) fn take_done(&mut self) -> Batch {
        std::mem::take(&mut self.done)
    }

    /// Take at most `max_nodes` nodes from the front of `done` (all of it for `usize::MAX`).
    pub(crate) fn take_done_upto(&mut self, max_nodes: usize) -> Batch {
        if max_nodes == usize::MAX {
            return self.take_done();
        }
        let mut b = Batch::default();
        for _ in 0..max_nodes {
            match self.done.pop_front() {
                Some(n) => b.push_node(n),
                None => break,
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn node(log: &Arc<Mutex<Vec<u32>>>, ids: &[u32]) -> Box<Node> {
        Node::new(
            ids.iter()
                .map(|&i| {
                    let log = log.clone();
                    Callback::new(move || log.lock().unwrap().push(i))
                })
                .collect(),
        )
    }

    fn run(b: Batch) {
        for mut n in b.into_nodes() {
            for cb in n.cbs.drain(..) {
                cb.run();
            }
        }
    }

    #[test]
    fn segments_advance_in_cookie_order_and_stay_fifo() {
        let log = Arc::new(Mutex::new(vec![]));
        let mut l = SegList::default();
        let mut s = 0u64;
        let a = seq::snapshot(s); // end of GP 1
        l.push(a, node(&log, &[1, 2]), s);
        s = seq::started(s);
        let b = seq::snapshot(s); // end of GP 2
        l.push(b, node(&log, &[3]), s);
        l.push(b, node(&log, &[4]), s);
        assert_eq!(l.newest_cookie(), Some(b));
        assert_eq!(l.len(), 4);
        l.advance(s);
        assert!(l.done.is_empty(), "nothing completes while GP 1 runs");
        s = seq::ended(s);
        l.advance(s);
        assert_eq!(l.done.len(), 2);
        // Marker entrained behind 3 and 4.
        l.entrain(node(&log, &[99])).ok().unwrap();
        s = seq::ended(seq::started(s));
        l.advance(s);
        run(l.take_done());
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3, 4, 99]);
        assert!(l.is_idle());
        let mut back = l
            .entrain(node(&log, &[100]))
            .expect_err("idle shard needs no marker");
        // A Callback must be consumed: dropping it would leak its closure (and `log`).
        for cb in back.cbs.drain(..) {
            cb.discard();
        }
    }

    #[test]
    fn an_older_cookie_joins_the_tail_and_never_stalls_advance() {
        let log = Arc::new(Mutex::new(vec![]));
        let mut l = SegList::default();
        let s = seq::started(0u64);
        let newer = seq::snapshot(s); // end of GP 2
        let older = seq::snapshot(0); // end of GP 1
        l.push(newer, node(&log, &[1]), s);
        l.push(older, node(&log, &[2]), s);
        assert_eq!(
            l.newest_cookie(),
            Some(newer),
            "the tail keeps the newer cookie"
        );
        let s = seq::ended(seq::started(seq::ended(s)));
        l.advance(s);
        run(l.take_done());
        assert_eq!(*log.lock().unwrap(), vec![1, 2]);
    }

    #[test]
    fn a_third_cookie_advances_the_oldest_first() {
        let log = Arc::new(Mutex::new(vec![]));
        let mut l = SegList::default();
        let mut s = 0u64;
        l.push(seq::snapshot(s), node(&log, &[1]), s);
        s = seq::started(s);
        l.push(seq::snapshot(s), node(&log, &[2]), s);
        s = seq::ended(s);
        s = seq::started(s);
        // GP 1 ended, GP 2 running: a new snapshot needs GP 3.
        l.push(seq::snapshot(s), node(&log, &[3]), s);
        assert_eq!(l.done.len(), 1);
        assert_eq!(l.len(), 3);
    }
}
