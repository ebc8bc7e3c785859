//! `Srcu::new` frees everything it allocated on every error path, counted by a
//! global allocator that tracks the bytes each thread holds.

use grace::alloc::{inject, FailurePlan};
use grace::srcu::{Srcu, SrcuError, SrcuLite};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static NET: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping touches only a
// const-initialized thread-local Cell (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let _ = NET.try_with(|n| n.set(n.get() + l.size() as isize));
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = NET.try_with(|n| n.set(n.get() - l.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn net() -> isize {
    NET.with(Cell::get)
}

/// Fail each allocation point of `make` in turn; every failure must be reported and must
/// leave this thread's heap exactly as it was. Returns the number of allocation points.
fn every_error_path_frees<T>(make: impl Fn() -> Result<T, SrcuError>) -> u64 {
    drop(make().expect("warm-up: settings and CPU count are initialized once"));
    let mut n = 1;
    loop {
        let before = net();
        let result = {
            let _fail = inject(FailurePlan::Nth(n));
            make()
        };
        match result {
            Err(SrcuError::OutOfMemory(e)) => {
                assert!(e.bytes > 0, "{e}");
                assert_eq!(net(), before, "allocation point {n} ({e}) leaked");
                n += 1;
            }
            Ok(domain) => {
                drop(domain);
                assert_eq!(
                    net(),
                    before,
                    "a domain that was never used frees everything"
                );
                return n - 1;
            }
        }
        assert!(n < 100, "runaway");
    }
}

#[test]
fn construction_reports_and_frees_on_every_error_path() {
    let points = every_error_path_frees(Srcu::new);
    assert_eq!(points, 3, "block, callback shards, updater state");
    assert_eq!(every_error_path_frees(SrcuLite::new_lite), 3);

    // The error says what failed.
    let _fail = inject(FailurePlan::AllAfter(0));
    let msg = Srcu::new().unwrap_err().to_string();
    assert!(
        msg.contains("out of memory allocating the SRCU domain block"),
        "{msg}"
    );
}

#[test]
fn a_static_domain_allocates_nothing_until_used() {
    static DOMAIN: Srcu = Srcu::new_static();
    let before = net();
    let s = DOMAIN.stats();
    assert!(!s.updater_allocated);
    // `stats` created the hot block (first use), but no updater state.
    assert!(net() > before);
    let with_block = net();
    drop(DOMAIN.read_lock());
    assert!(
        !DOMAIN.stats().updater_allocated,
        "readers never allocate the cold part"
    );
    DOMAIN.synchronize();
    assert!(DOMAIN.stats().updater_allocated);
    assert!(net() > with_block);
}
