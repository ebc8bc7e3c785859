//! Threads whose thread-local destructors use RCU after grace's own exit hook has run: the
//! slot they register then is given back at the thread's final exit, not leaked. Alone in its
//! binary so the slot count is this test's own.

use grace::rcu;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct UsesRcuOnDrop(Arc<AtomicUsize>);

impl Drop for UsesRcuOnDrop {
    fn drop(&mut self) {
        let g = rcu::read_lock();
        drop(g);
        let ran = self.0.clone();
        rcu::call(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
}

thread_local! {
    static LATE: std::cell::RefCell<Option<UsesRcuOnDrop>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn rcu_used_during_thread_teardown_neither_leaks_slots_nor_loses_callbacks() {
    let ran = Arc::new(AtomicUsize::new(0));
    const THREADS: usize = 50;
    for _ in 0..THREADS {
        let ran = ran.clone();
        std::thread::spawn(move || {
            // Registered before grace's exit hook, so destroyed after it.
            LATE.with(|l| *l.borrow_mut() = Some(UsesRcuOnDrop(ran)));
            let g = rcu::read_lock();
            drop(g);
        })
        .join()
        .unwrap();
    }
    rcu::barrier();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        THREADS,
        "a callback queued at teardown was lost"
    );
    let slots = rcu::stats().reader_slots;
    assert!(
        slots < 10,
        "{slots} slots for {THREADS} sequential threads: teardown slots leak"
    );
    rcu::synchronize();
}
