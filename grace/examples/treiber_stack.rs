//! Treiber's lock-free stack, ported from crossbeam-epoch (the `treiber_stack` of
//! crossbeam-epoch's `tests/loom.rs`, crossbeam's standard example of `Atomic`, `Owned` and
//! `defer_destroy`) to `grace::atomic`. Run with `cargo run -p grace --example treiber_stack`.
//!
//! The whole diff against crossbeam's version (the stack's code is otherwise line for line;
//! crossbeam's imports are `use crossbeam_epoch as epoch; use epoch::{Atomic, Owned};`):
//!
//! ```text
//! -use crossbeam_epoch as epoch;
//! -use epoch::{Atomic, Owned};
//! +use grace::atomic::{Atomic, Owned};
//! +use grace::{rcu as epoch, Rcu};
//! -pub struct TreiberStack<T> {
//! +pub struct TreiberStack<T: Send + Sync + 'static> {     // kvfree frees nodes on any thread
//! -impl<T> TreiberStack<T> {
//! +impl<T: Send + Sync + 'static> TreiberStack<T> {
//! -        let guard = epoch::pin();
//! +        let guard = epoch::read_lock();                 // (in push, pop and is_empty)
//! -                        guard.defer_destroy(head);
//! +                        head.retire(&Rcu);
//! -impl<T> Drop for TreiberStack<T> {
//! +impl<T: Send + Sync + 'static> Drop for TreiberStack<T> {
//! ```
//!
//! (`Default`, `main` and the `// SAFETY:` comments this project requires are additions.) `head.retire(&Rcu)` hands the popped node to
//! `kvfree`: no header in the node, batched with the thread's other frees, freed in bulk after
//! a grace period.

// crossbeam's `ptr::read(&(*h).data)`, kept verbatim.
#![allow(clippy::explicit_auto_deref)]

use grace::atomic::{Atomic, Owned};
use grace::{rcu as epoch, Rcu};
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Treiber's lock-free stack.
///
/// Usable with any number of producers and consumers.
#[derive(Debug)]
pub struct TreiberStack<T: Send + Sync + 'static> {
    head: Atomic<Node<T>>,
}

#[derive(Debug)]
struct Node<T> {
    data: ManuallyDrop<T>,
    next: Atomic<Node<T>>,
}

impl<T: Send + Sync + 'static> TreiberStack<T> {
    /// Creates a new, empty stack.
    pub fn new() -> TreiberStack<T> {
        TreiberStack {
            head: Atomic::null(),
        }
    }

    /// Pushes a value on top of the stack.
    pub fn push(&self, t: T) {
        let mut n = Owned::new(Node {
            data: ManuallyDrop::new(t),
            next: Atomic::null(),
        });

        let guard = epoch::read_lock();

        loop {
            let head = self.head.load(Relaxed, &guard);
            n.next.store(head, Relaxed);

            match self
                .head
                .compare_exchange(head, n, Release, Relaxed, &guard)
            {
                Ok(_) => break,
                Err(e) => n = e.new,
            }
        }
    }

    /// Attempts to pop the top element from the stack.
    ///
    /// Returns `None` if the stack is empty.
    pub fn pop(&self) -> Option<T> {
        let guard = epoch::read_lock();
        loop {
            let head = self.head.load(Acquire, &guard);

            // SAFETY: nodes are freed only by `retire` after being unlinked, and we loaded
            // `head` in this section.
            match unsafe { head.as_ref() } {
                Some(h) => {
                    let next = h.next.load(Relaxed, &guard);

                    if self
                        .head
                        .compare_exchange(head, next, Relaxed, Relaxed, &guard)
                        .is_ok()
                    {
                        // SAFETY: our exchange unlinked `head` (retired once, by the winner);
                        // its `data` is read out once, and `ManuallyDrop` keeps the node's
                        // drop from dropping it again.
                        unsafe {
                            head.retire(&Rcu);
                            return Some(ManuallyDrop::into_inner(ptr::read(&(*h).data)));
                        }
                    }
                }
                None => return None,
            }
        }
    }

    /// Returns `true` if the stack is empty.
    pub fn is_empty(&self) -> bool {
        let guard = epoch::read_lock();
        self.head.load(Acquire, &guard).is_null()
    }
}

impl<T: Send + Sync + 'static> Default for TreiberStack<T> {
    fn default() -> Self {
        TreiberStack::new()
    }
}

impl<T: Send + Sync + 'static> Drop for TreiberStack<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

fn main() {
    use std::sync::Arc;
    let stack = Arc::new(TreiberStack::new());
    let per_thread = 10_000;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let stack = stack.clone();
            std::thread::spawn(move || {
                let mut popped = 0u64;
                for i in 0..per_thread {
                    stack.push(format!("{t}:{i}"));
                    if stack.pop().is_some() {
                        popped += 1;
                    }
                }
                popped
            })
        })
        .collect();
    let popped: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let mut left = 0;
    while stack.pop().is_some() {
        left += 1;
    }
    assert_eq!(popped + left, 4 * per_thread);
    assert!(stack.is_empty());
    drop(stack);
    grace::kvfree_barrier(); // every retired node is freed
    println!("treiber_stack: {popped} popped concurrently, {left} left, all nodes retired through kvfree");
}
