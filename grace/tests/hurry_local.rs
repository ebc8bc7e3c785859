//! A thread that queues a `call_hurry` callback and then blocks until it has run (what the
//! wakers of `synchronize_async` do) must not depend on coming back to run it itself: in local
//! invocation mode the callback runs on a worker as soon as its grace period ends. With the lazy
//! delay set to a minute (which bounds how long local work may wait for its queuing thread),
//! the callback must still run: the bound below is liveness, far under that minute.
//!
//! Alone in its binary: `GRACE_LAZY_MS` is read once per process.

use grace::rcu::{self, Invocation};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn a_hurried_callback_runs_while_its_queuing_thread_waits_for_it() {
    std::env::set_var("GRACE_LAZY_MS", "60000");
    rcu::set_callback_invocation(Invocation::Local);
    for _ in 0..20 {
        let (tx, rx) = mpsc::channel();
        rcu::call_hurry(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a call_hurry callback waited for its blocked queuing thread");
    }
}
