//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use grace::rcu;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread that sits inside an RCU read-side section until told to leave.
pub struct HeldReader {
    leave: Arc<AtomicBool>,
    left: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl HeldReader {
    /// Spawn the reader and return once it is inside its section (nested two deep if
    /// `nested`, with the inner guard already dropped: the outer section still counts).
    pub fn enter(nested: bool) -> HeldReader {
        let entered = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicBool::new(false));
        let thread = {
            let (entered, leave, left) = (entered.clone(), leave.clone(), left.clone());
            std::thread::spawn(move || {
                let g = rcu::read_lock();
                if nested {
                    drop(rcu::read_lock());
                }
                entered.store(true, Ordering::SeqCst);
                while !leave.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Set before the section ends: whoever sees the section over sees this.
                left.store(true, Ordering::SeqCst);
                drop(g);
            })
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        HeldReader {
            leave,
            left,
            thread,
        }
    }

    /// Tell the reader to leave after `delay`, from another thread.
    pub fn leave_after(&self, delay: Duration) {
        let leave = self.leave.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            leave.store(true, Ordering::SeqCst);
        });
    }

    /// Whether the reader has (begun to) leave its section.
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// Let the reader leave and wait for its thread to end.
    pub fn leave(self) {
        self.leave.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}
