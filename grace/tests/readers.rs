//! Readers never see reclaimed memory: many reader threads follow an `RcuCell` while a writer
//! replaces it through every reclamation path (synchronize, try_reclaim, defer_drop, drop).

mod common;

use common::HeldReader;
use grace::{rcu, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALIVE: u64 = 0xA11CE_A11CE;
const DEAD: u64 = 0xDEAD_DEAD;

/// A value that poisons itself when dropped: a reader that sees DEAD saw an early free.
struct Canary {
    magic: AtomicU64,
    payload: Vec<u64>,
}

impl Canary {
    fn new(n: u64) -> Canary {
        Canary {
            magic: AtomicU64::new(ALIVE),
            payload: vec![n; 8],
        }
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.magic.store(DEAD, Ordering::Relaxed);
    }
}

#[test]
fn readers_never_see_a_reclaimed_value() {
    let cell = Arc::new(RcuCell::new(Canary::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cell, stop, bad, reads) = (cell.clone(), stop.clone(), bad.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu::read_lock();
                    let v = cell.load(&g);
                    let first = v.payload[0];
                    for _ in 0..50 {
                        std::hint::spin_loop();
                    }
                    if v.magic.load(Ordering::Relaxed) != ALIVE
                        || v.payload.iter().any(|&x| x != first)
                    {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut n = 1;
    while Instant::now() < deadline {
        let old = cell.replace(Canary::new(n));
        match n % 4 {
            0 => drop(old.synchronize()),
            1 => {
                let mut r = old;
                rcu::cond_synchronize(r.cookie());
                r = match r.try_reclaim() {
                    Ok(b) => {
                        drop(b);
                        n += 1;
                        continue;
                    }
                    Err(r) => r,
                };
                panic!("cookie not done after cond_synchronize: {:?}", r.cookie());
            }
            2 => old.defer_drop(),
            _ => drop(old),
        }
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    rcu::barrier();
    grace::kvfree_barrier();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "a reader saw a reclaimed value"
    );
    assert!(reads.load(Ordering::Relaxed) > 100);
    assert!(n > 10);
}

#[test]
fn synchronize_waits_for_a_reader_that_started_before_it() {
    let reader = HeldReader::enter(false);
    reader.leave_after(Duration::from_millis(200));
    rcu::synchronize();
    assert!(
        reader.has_left(),
        "synchronize returned while the reader was inside"
    );
    reader.leave();
}

#[test]
fn expedited_waits_too() {
    let reader = HeldReader::enter(true);
    reader.leave_after(Duration::from_millis(100));
    rcu::synchronize_expedited();
    assert!(
        reader.has_left(),
        "synchronize_expedited returned while the reader was inside"
    );
    reader.leave();
}

#[test]
fn a_section_that_starts_after_synchronize_began_is_not_waited_for() {
    // A reader that keeps re-entering sections forever must not stall grace periods: each
    // new section copies the new epoch.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _g = rcu::read_lock();
                std::hint::spin_loop();
            }
        })
    };
    for _ in 0..50 {
        rcu::synchronize();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}
