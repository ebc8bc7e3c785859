//! The `rculist` suite: grace's [`List`](grace::collections::List) (the kernel's `rculist`)
//! against the two locked lists a Rust user would write instead.
//!
//! * `grace-list`: `grace::collections::List<u64>`; a read is one RCU read-side section
//!   around a walk that sums every entry; writes take the list's writer lock and retire the
//!   unlinked entry through `kvfree`;
//! * `rwlock-vec`: `RwLock<Vec<u64>>`; a read sums under the read lock;
//! * `mutex-linkedlist`: `Mutex<std::collections::LinkedList<u64>>`; a read sums under the
//!   lock.
//!
//! The list holds `len` entries, one per slot `0..len`, each `slot << 32 | version`. Every
//! thread runs operations: `read_pct` percent reads (sum the whole list), the rest writes,
//! alternately a *replace* (find a random slot's entry and put a new version in its place:
//! `list_replace_rcu`) and a *remove + insert* (unlink a random slot's entry, then add a new
//! version at the back: `list_del_rcu` + `list_add_tail_rcu`), so the length never changes.
//! Writes find their entry by a linear scan in every implementation. An untimed warm-up round
//! comes first, then three timed rounds; `ops_per_s` is the median
//! round's rate. After the last round every implementation must still hold `len` entries, one
//! per slot; grace's removed entries must all be freed after `kvfree_barrier`.

use std::collections::LinkedList;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::harness::TIMED_ROUNDS;

/// The default list lengths.
pub const RCULIST_LENGTHS: [usize; 2] = [16, 1_000];

/// The default read shares, in percent.
pub const RCULIST_READS: [u32; 3] = [100, 99, 90];

/// The row the others are compared with.
pub const RCULIST_REFERENCE: &str = "grace-list";

/// Operations a worker runs between two looks at the stop flag.
const CHECK_EVERY: u64 = 16;

/// A list as the suite uses it.
trait BenchList: Sync + Sized {
    fn new(len: usize) -> Self;
    /// Sum every entry, as a reader.
    fn sum(&self) -> u64;
    /// Replace the entry of `slot` with `new`.
    fn replace(&self, slot: u64, new: u64);
    /// Remove the entry of `slot`, then add `new` at the back.
    fn remove_insert(&self, slot: u64, new: u64);
    /// The slots held, in order (after the run).
    fn slots(&self) -> Vec<u64>;
    /// Free everything retired (grace), and, when the process ran nothing else
    /// (`exclusive`), check that nothing is left pending.
    fn drain(_exclusive: bool) -> Result<(), String> {
        Ok(())
    }
}

fn slot_of(v: &u64) -> u64 {
    v >> 32
}

struct GraceList(grace::collections::List<u64>);

impl BenchList for GraceList {
    fn new(len: usize) -> Self {
        GraceList((0..len as u64).map(|s| s << 32).collect())
    }
    #[inline]
    fn sum(&self) -> u64 {
        let g = self.0.pin();
        self.0.iter(&g).fold(0u64, |a, &v| a.wrapping_add(v))
    }
    fn replace(&self, slot: u64, new: u64) {
        let _ = self.0.replace_first(|v| slot_of(v) == slot, new);
    }
    fn remove_insert(&self, slot: u64, new: u64) {
        if self.0.remove_first(|v| slot_of(v) == slot) {
            self.0.push_back(new);
        }
    }
    fn slots(&self) -> Vec<u64> {
        let g = self.0.pin();
        self.0.iter(&g).map(slot_of).collect()
    }
    fn drain(exclusive: bool) -> Result<(), String> {
        grace::kvfree_barrier();
        let s = grace::kvfree::stats();
        // kvfree's counters are process-wide: exact only in a process of its own.
        if exclusive && s.objects_pending != 0 {
            return Err(format!(
                "BUG: {} removed entries still pending after kvfree_barrier",
                s.objects_pending
            ));
        }
        Ok(())
    }
}

struct RwLockVec(RwLock<Vec<u64>>);

impl BenchList for RwLockVec {
    fn new(len: usize) -> Self {
        RwLockVec(RwLock::new((0..len as u64).map(|s| s << 32).collect()))
    }
    #[inline]
    fn sum(&self) -> u64 {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v.iter().fold(0u64, |a, &x| a.wrapping_add(x))
    }
    fn replace(&self, slot: u64, new: u64) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = v.iter_mut().find(|x| slot_of(x) == slot) {
            *x = new;
        }
    }
    fn remove_insert(&self, slot: u64, new: u64) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|x| slot_of(x) == slot) {
            v.remove(i);
            v.push(new);
        }
    }
    fn slots(&self) -> Vec<u64> {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v.iter().map(slot_of).collect()
    }
}

struct MutexLinkedList(Mutex<LinkedList<u64>>);

impl BenchList for MutexLinkedList {
    fn new(len: usize) -> Self {
        MutexLinkedList(Mutex::new((0..len as u64).map(|s| s << 32).collect()))
    }
    #[inline]
    fn sum(&self) -> u64 {
        let l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().fold(0u64, |a, &x| a.wrapping_add(x))
    }
    fn replace(&self, slot: u64, new: u64) {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = l.iter_mut().find(|x| slot_of(x) == slot) {
            *x = new;
        }
    }
    fn remove_insert(&self, slot: u64, new: u64) {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = l.iter().position(|x| slot_of(x) == slot) {
            // Stable `LinkedList` has no remove-at: split, drop the head of the tail, rejoin.
            let mut tail = l.split_off(i);
            tail.pop_front();
            l.append(&mut tail);
            l.push_back(new);
        }
    }
    fn slots(&self) -> Vec<u64> {
        let l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().map(slot_of).collect()
    }
}

/// The implementations of the suite, in run order.
///
/// # Examples
///
/// ```
/// assert_eq!(grace_bench::rculist_impls()[0], "grace-list");
/// ```
pub fn rculist_impls() -> Vec<&'static str> {
    vec!["grace-list", "rwlock-vec", "mutex-linkedlist"]
}

/// What one measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RculistParams {
    /// Worker threads.
    pub threads: usize,
    /// Entries in the list.
    pub len: usize,
    /// The share of reads (whole-list sums), in percent; the rest are writes.
    pub read_pct: u32,
    /// How long each round runs.
    pub duration: Duration,
}

/// What one measurement measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RculistResult {
    /// The implementation (see [`rculist_impls`]).
    pub impl_name: String,
    /// Worker threads.
    pub threads: usize,
    /// Entries in the list.
    pub len: usize,
    /// The share of reads, in percent.
    pub read_pct: u32,
    /// Seconds per timed round (as run).
    pub duration_s: f64,
    /// Timed rounds.
    pub rounds: usize,
    /// Operations in the timed rounds, all threads.
    pub ops: u64,
    /// Operations per second, all threads: the median timed round's; `NaN` when the
    /// measurement failed.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s: f64,
    /// The slowest timed round's rate.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s_min: f64,
    /// The fastest timed round's rate.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s_max: f64,
    /// Whether the measurement had a process of its own.
    pub isolated: bool,
    /// The 1-minute load average when the measurement ended; `None` where unknown.
    pub load_avg: Option<f64>,
    /// A caveat, or why the measurement failed.
    pub note: Option<String>,
}

impl RculistResult {
    /// Whether the measurement produced figures.
    pub fn is_measured(&self) -> bool {
        self.ops_per_s.is_finite() && self.ops_per_s > 0.0
    }

    /// A result for a measurement that could not be made.
    pub fn failed(impl_name: &str, p: &RculistParams, why: String) -> RculistResult {
        RculistResult {
            impl_name: impl_name.to_string(),
            threads: p.threads,
            len: p.len,
            read_pct: p.read_pct,
            duration_s: 0.0,
            rounds: 0,
            ops: 0,
            ops_per_s: f64::NAN,
            ops_per_s_min: f64::NAN,
            ops_per_s_max: f64::NAN,
            isolated: false,
            load_avg: crate::harness::load_average(),
            note: Some(why),
        }
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One round: `(operations, seconds)`.
fn round<L: BenchList>(list: &L, p: &RculistParams, round_no: u64) -> Result<(u64, f64), String> {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(p.threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..p.threads)
            .map(|t| {
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let mut rng = Rng((round_no << 20 | t as u64) * 0x9e37_79b9 + 1);
                    let mut version = 1u64;
                    start.wait();
                    let mut ops = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..CHECK_EVERY {
                            let r = rng.next();
                            if ((r >> 8) % 100) < u64::from(p.read_pct) {
                                black_box(list.sum());
                            } else {
                                let slot = (r >> 32) % p.len as u64;
                                version = version.wrapping_add(1);
                                let new = slot << 32 | (version & 0xffff_ffff);
                                if r & 1 == 0 {
                                    list.replace(slot, new);
                                } else {
                                    list.remove_insert(slot, new);
                                }
                            }
                        }
                        ops += CHECK_EVERY;
                    }
                    ops
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(p.duration);
        stop.store(true, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let mut ops = 0;
        for w in workers {
            ops += w.join().map_err(|_| "a worker panicked".to_string())?;
        }
        Ok((ops, secs))
    })
}

fn measure<L: BenchList>(name: &str, p: &RculistParams, exclusive: bool) -> RculistResult {
    let list = L::new(p.len);
    let mut rates = Vec::with_capacity(TIMED_ROUNDS);
    let (mut ops, mut secs) = (0, 0.0);
    for r in 0..=TIMED_ROUNDS {
        match round(&list, p, r as u64) {
            Ok((n, s)) if r > 0 => {
                rates.push(n as f64 / s);
                ops += n;
                secs += s;
            }
            Ok(_) => {}
            Err(e) => return RculistResult::failed(name, p, e),
        }
    }
    let mut slots = list.slots();
    slots.sort_unstable();
    let mut failure = (slots != (0..p.len as u64).collect::<Vec<_>>()).then(|| {
        format!(
            "BUG: the list lost or doubled entries ({} held)",
            slots.len()
        )
    });
    drop(list);
    if let Err(e) = L::drain(exclusive) {
        failure.get_or_insert(e);
    }
    rates.sort_by(f64::total_cmp);
    let mut r = RculistResult {
        impl_name: name.to_string(),
        threads: p.threads,
        len: p.len,
        read_pct: p.read_pct,
        duration_s: secs / TIMED_ROUNDS as f64,
        rounds: TIMED_ROUNDS,
        ops,
        ops_per_s: rates[rates.len() / 2],
        ops_per_s_min: rates[0],
        ops_per_s_max: rates[rates.len() - 1],
        isolated: false,
        load_avg: crate::harness::load_average(),
        note: None,
    };
    if let Some(e) = failure {
        r.ops_per_s = f64::NAN;
        r.note = Some(e);
    }
    r
}

/// Measures `name` (one of [`rculist_impls`]) with `p`, in this process (see the module
/// docs). `exclusive` says the process runs nothing else, so that kvfree's process-wide
/// counters can be checked exactly after the run (the `grace` CLI's child processes).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grace_bench::{run_rculist_one, RculistParams};
///
/// let p = RculistParams { threads: 1, len: 16, read_pct: 90, duration: Duration::from_millis(5) };
/// let r = run_rculist_one("grace-list", &p, false);
/// assert!(r.is_measured(), "{:?}", r.note);
/// ```
pub fn run_rculist_one(name: &str, p: &RculistParams, exclusive: bool) -> RculistResult {
    if p.threads == 0 || p.len == 0 || p.read_pct > 100 || p.duration.is_zero() {
        return RculistResult::failed(
            name,
            p,
            format!(
                "bad parameters: threads {} (>= 1), len {} (>= 1), reads {}% (<= 100), \
                 duration {:?} (> 0)",
                p.threads, p.len, p.read_pct, p.duration
            ),
        );
    }
    match name {
        "grace-list" => measure::<GraceList>(name, p, exclusive),
        "rwlock-vec" => measure::<RwLockVec>(name, p, exclusive),
        "mutex-linkedlist" => measure::<MutexLinkedList>(name, p, exclusive),
        _ => RculistResult::failed(
            name,
            p,
            format!(
                "unknown implementation {name:?} (known: {})",
                rculist_impls().join(", ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_keeps_one_entry_per_slot() {
        for name in rculist_impls() {
            let p = RculistParams {
                threads: 2,
                len: 16,
                read_pct: 50,
                duration: Duration::from_millis(2),
            };
            let r = run_rculist_one(name, &p, false);
            assert!(r.is_measured(), "{r:?}");
        }
        let p = RculistParams {
            threads: 1,
            len: 0,
            read_pct: 50,
            duration: Duration::from_millis(1),
        };
        assert!(!run_rculist_one("grace-list", &p, false).is_measured());
    }
}
