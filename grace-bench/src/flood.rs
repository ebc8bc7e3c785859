//! The `flood` suite: every flooding thread frees 64-byte objects through a
//! deferral API as fast as it can for a duration, while reader threads run
//! read-side sections in a loop; how fast does it go, and how much memory is
//! stranded meanwhile?
//!
//! One run ([`run_flood_one`]) measures one implementation at one thread count:
//!
//! * `grace-kvfree`: `grace::kvfree(Box::new([i as u8; 64]))`; readers in
//!   `grace::rcu` sections;
//! * `grace-pending`: `pending.enqueue(Box::new([i as u8; 64]))` on one
//!   `Pending<[u8; 64]>` with `Process::free()` (RCU); readers as above;
//! * `liburcu-memb`: in C, `malloc(64)` + `call_rcu` with a callback that
//!   counts and frees (the `rcu_head` inside the 64 bytes); readers in
//!   liburcu's inline read-side sections;
//! * `crossbeam-epoch`: `pin()`, `Owned::new`, `defer_destroy`, unpin, per
//!   object (default collector); readers `pin()` and unpin;
//! * `seize`: `collector.retire(ptr, reclaim::boxed)` on one collector;
//!   readers enter and leave guards of it.
//!
//! Every flooding thread checks a stop flag every 256 objects. When the
//! duration is up the flooders and readers stop, and the implementation is
//! drained (`kvfree_barrier`, `Pending::barrier`, `rcu_barrier`, crossbeam
//! `pin().flush()` until every object is freed, seize `reclaim_all`); the
//! drain is timed separately and not part of `objects_per_s`. Afterwards every
//! object must have been freed (counted; a shortfall is noted as a bug).
//!
//! # Memory figures
//!
//! * **Peak bytes pending**: for `grace-kvfree`, the library's own
//!   `kvfree::stats().peak_bytes_pending` (objects plus the 4 KiB pointer
//!   arrays holding them, measured at every hand-off). For the others, the
//!   objects allocated but not yet freed, times 64: each flooder publishes how
//!   many it allocated (before each object), and each object's free adds one to its
//!   flooder's counter (Rust peers: the object's `Drop`; liburcu: the
//!   callback), on cache lines of their own; a sampler reads them every
//!   [`SAMPLE_EVERY`]. `sampled_peak_bytes_pending` is that sampled figure for
//!   every row (for grace, `stats().bytes_pending` and `stats().pending * 64`
//!   sampled the same way).
//! * **Peak RSS**: `VmHWM` from `/proc/self/status` at the end of the run,
//!   with `VmRSS` before the flood as the baseline, and the highest `VmRSS`
//!   sampled during it. Peak RSS is a per-process figure and the allocator
//!   keeps freed memory, so an honest per-implementation peak needs a process
//!   per implementation: the `grace` CLI runs each row in a child process
//!   (it re-executes itself with a hidden flag). Run in-process, this function
//!   first resets `VmHWM` (writing `5` to `/proc/self/clear_refs`), which
//!   still leaves memory kept by the allocator from earlier runs in the
//!   baseline; the result's note says so.
//!
//! # The memory-pressure set (`--budget`)
//!
//! [`pressure_impls`] is the set of the memory-pressure experiment: grace's four ways to
//! free, each with and without a memory budget (a `+budget` row runs with
//! `grace::pressure::set_budget(Some(budget))` in its process), beside the peers:
//!
//! * `grace-kvfree`: as above;
//! * `grace-call-rcu`: `grace::rcu::call_sized(64, move || drop(b))` per 64-byte box `b`, so
//!   that the callback engine accounts the bytes;
//! * `grace-call-srcu`: `call_sized(64, ..)` on a dynamic SRCU domain (`grace::srcu::Srcu::new()`), the
//!   same closure; readers in that domain's sections;
//! * `grace-pending-closure`: a `Pending<[u8; 64]>` with `Process::with(closure)` (the
//!   closure drops the box);
//! * the peers as above.
//!
//! Those runs ([`FloodSetup::pressure`]) add, for every implementation, a *sleeping reader*:
//! once every second it enters a read-side section (grace's RCU or the SRCU domain, a
//! liburcu read lock, a pinned crossbeam guard, a seize guard) and sleeps
//! [`SLEEP_IN_SECTION`] inside it. They also measure the *recovery*: after the flooders stop
//! (readers still running), how long until the pending bytes are under [`RECOVERED_BELOW`]
//! (1 MiB), polled every millisecond for at most [`recovery_limit`].
//!
//! Every run keeps its pending-bytes samples ([`FloodResult::pending_series`]: seconds since
//! the flood began, bytes), for the CLI's plot. For the grace rows the sampled figure is the
//! API's own: `kvfree::stats().bytes_pending`, `rcu::stats().bytes_pending`, the SRCU
//! domain's `callbacks_pending × 64`, the `Pending`'s `stats().bytes_pending`.
//!
//! A run whose pending memory exceeds a quarter of the machine's available
//! memory (at most 8 GiB) is stopped early rather than allowed to exhaust the
//! machine; its note says so, and its rate covers the time it ran.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::free::{drain_crossbeam, Counted, Counters};
use crate::harness::CounterPtr;
use crate::liburcu;

/// How often the sampler reads the pending counters and `VmRSS`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Objects a flooder hands over between two looks at the stop flag.
const CHUNK: u64 = 256;

/// How long the sleeping reader of a pressure run stays inside its section, once a second.
pub const SLEEP_IN_SECTION: Duration = Duration::from_millis(50);

/// The pending bytes under which a pressure run counts memory as recovered after the flood.
pub const RECOVERED_BELOW: u64 = 1 << 20;

/// How often the recovery is polled.
const RECOVERY_POLL: Duration = Duration::from_millis(1);

/// The longest a pressure run waits for the recovery: the flood's duration, within 200 ms to
/// 2 s.
pub fn recovery_limit(duration: Duration) -> Duration {
    duration.clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// The suffix of a row that runs with grace's memory budget.
pub const BUDGET_SUFFIX: &str = "+budget";

/// How a flood is run, besides its implementation and sizes.
///
/// # Examples
///
/// ```
/// let setup = grace_bench::flood::FloodSetup::pressure(64 << 20);
/// assert!(setup.sleeping_reader && setup.measure_recovery);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloodSetup {
    /// The memory budget of a `+budget` row (`grace::pressure::set_budget`), in bytes.
    pub budget: Option<u64>,
    /// Run a reader that sleeps [`SLEEP_IN_SECTION`] inside its section once a second.
    pub sleeping_reader: bool,
    /// Measure how long pending memory takes to drop under [`RECOVERED_BELOW`] after the flood.
    pub measure_recovery: bool,
}

impl FloodSetup {
    /// The memory-pressure experiment: a sleeping reader, recovery measured, and `budget` for
    /// the `+budget` rows.
    pub fn pressure(budget: u64) -> FloodSetup {
        FloodSetup {
            budget: Some(budget),
            sleeping_reader: true,
            measure_recovery: true,
        }
    }
}

/// The implementations of the flood suite, in run order.
pub fn flood_impls() -> Vec<&'static str> {
    let mut v = vec!["grace-kvfree", "grace-pending"];
    if liburcu::available() {
        v.push("liburcu-memb");
    }
    v.extend(["crossbeam-epoch", "seize"]);
    v
}

/// The implementations of the memory-pressure set (see the module docs), in run order: each
/// grace row without, then with the budget, then the peers.
pub fn pressure_impls() -> Vec<String> {
    let mut v = Vec::new();
    for g in [
        "grace-kvfree",
        "grace-call-rcu",
        "grace-call-srcu",
        "grace-pending-closure",
    ] {
        v.push(g.to_string());
        v.push(format!("{g}{BUDGET_SUFFIX}"));
    }
    if liburcu::available() {
        v.push("liburcu-memb".into());
    }
    v.extend(["crossbeam-epoch".into(), "seize".into()]);
    v
}

/// What one flood run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodResult {
    /// The implementation (see [`flood_impls`]).
    pub impl_name: String,
    /// Flooding threads.
    pub threads: usize,
    /// Reader threads running beside them.
    pub readers: usize,
    /// Seconds the flood ran (the drain not included).
    pub duration_s: f64,
    /// Objects handed over, all flooders.
    pub objects: u64,
    /// `objects / duration_s`; `NaN` when the run failed.
    pub objects_per_s: f64,
    /// Read-side sections per second, all readers.
    pub reads_per_s: f64,
    /// Peak bytes pending: the library's figure for `grace-kvfree`, the
    /// sampled one otherwise (see the module docs).
    pub peak_bytes_pending: u64,
    /// Where `peak_bytes_pending` comes from: `"library"` or `"sampled"`.
    pub peak_bytes_source: String,
    /// The highest pending bytes the sampler saw.
    pub sampled_peak_bytes_pending: u64,
    /// `VmRSS` before the flood, in bytes.
    pub baseline_rss_bytes: Option<u64>,
    /// `VmHWM` at the end, in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The highest `VmRSS` sampled during the flood, in bytes.
    pub sampled_peak_rss_bytes: Option<u64>,
    /// Seconds the final drain took.
    pub drain_s: f64,
    /// Whether the run had a process of its own (set by the caller that
    /// re-executed itself; `false` from [`run_flood_one`]).
    pub isolated: bool,
    /// A caveat, or why the run failed.
    pub note: Option<String>,
    /// grace's memory budget during the run, in bytes (`+budget` rows).
    #[serde(default)]
    pub budget_bytes: Option<u64>,
    /// Whether a reader slept [`SLEEP_IN_SECTION`] inside its section once a second.
    #[serde(default)]
    pub sleeping_reader: bool,
    /// Seconds from the end of the flood until pending bytes were under [`RECOVERED_BELOW`]
    /// (readers still running); `None` when not measured or not reached within the limit.
    #[serde(default)]
    pub recovery_s: Option<f64>,
    /// Grace periods the row's flavor completed during `recovery_s` (grace rows only): the
    /// target is memory back within two.
    #[serde(default)]
    pub recovery_grace_periods: Option<u64>,
    /// How long the recovery was waited for at most (0 when not measured).
    #[serde(default)]
    pub recovery_limit_s: f64,
    /// Pending bytes over time: (seconds since the flood began, bytes), every
    /// [`SAMPLE_EVERY`] during the flood and every millisecond of the recovery.
    #[serde(default)]
    pub pending_series: Vec<(f64, u64)>,
}

impl FloodResult {
    /// Whether the run produced figures.
    pub fn is_measured(&self) -> bool {
        self.objects_per_s.is_finite() && self.objects_per_s > 0.0
    }

    /// A result for a run that could not be made.
    pub fn failed(impl_name: &str, threads: usize, readers: usize, why: String) -> FloodResult {
        FloodResult {
            impl_name: impl_name.to_string(),
            threads,
            readers,
            duration_s: 0.0,
            objects: 0,
            objects_per_s: f64::NAN,
            reads_per_s: f64::NAN,
            peak_bytes_pending: 0,
            peak_bytes_source: String::new(),
            sampled_peak_bytes_pending: 0,
            baseline_rss_bytes: None,
            peak_rss_bytes: None,
            sampled_peak_rss_bytes: None,
            drain_s: 0.0,
            isolated: false,
            note: Some(why),
            budget_bytes: None,
            sleeping_reader: false,
            recovery_s: None,
            recovery_grace_periods: None,
            recovery_limit_s: 0.0,
            pending_series: Vec::new(),
        }
    }
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
pub fn rss() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reset this process's `VmHWM` to its current RSS; whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The most pending memory a run may reach before it is stopped.
fn memory_cap() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024);
    (available / 4).min(8 << 30)
}

/// A flooder's counts: objects allocated (written by the flooder) and freed
/// (by whoever frees its objects), each on a cache line of its own.
struct FlooderCounts {
    allocated: Padded,
    freed: Counters,
}

#[repr(align(128))]
struct Padded(AtomicU64);

impl FlooderCounts {
    fn new() -> FlooderCounts {
        FlooderCounts {
            allocated: Padded(AtomicU64::new(0)),
            freed: Counters::new(1),
        }
    }

    fn freed_ptr(&self) -> CounterPtr {
        self.freed.ptr(0)
    }

    /// Objects allocated and not yet freed.
    fn outstanding(&self) -> u64 {
        // Relaxed: a sample.
        self.allocated
            .0
            .load(Ordering::Relaxed)
            .saturating_sub(self.freed.sum())
    }
}

/// One implementation's flood.
trait Flood: Sync {
    /// Whether objects are counted when freed (the sampled figure and the
    /// final check come from the counts).
    const COUNTED: bool;

    /// Hand over objects until `stop`, counting them into `c.allocated`.
    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts);

    /// Read-side sections until `stop`; returns how many.
    fn reader(&self, stop: &AtomicBool) -> u64;

    /// One read-side section that lasts `d` (the sleeping reader's).
    fn hold(&self, d: Duration);

    /// Pending bytes now, when the library knows (uncounted rows).
    fn library_pending(&self) -> u64 {
        0
    }

    /// Grace periods completed so far by the flavor the row waits on (grace rows only).
    fn grace_periods(&self) -> Option<u64> {
        None
    }

    /// Make every object handed over be freed.
    fn drain(&self, counts: &[FlooderCounts], total: u64) -> Result<(), String>;
}

/// Run `body` until `stop`, in chunks of [`CHUNK`], publishing the count before each object
/// (a relaxed store to the flooder's own cache line).
#[inline]
fn flood_loop(stop: &AtomicBool, c: &FlooderCounts, mut body: impl FnMut(u64)) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for i in n..n + CHUNK {
            // Counted before the object exists: its free can never be seen first.
            c.allocated.0.store(i + 1, Ordering::Relaxed);
            body(i);
        }
        n += CHUNK;
    }
}

/// The sleeping reader: a section of [`SLEEP_IN_SECTION`] through `imp.hold` at once and then
/// once every second, until `stop`.
fn sleeper<I: Flood>(imp: &I, stop: &AtomicBool) {
    let start = Instant::now();
    let mut next = start;
    while !stop.load(Ordering::Relaxed) {
        imp.hold(SLEEP_IN_SECTION);
        next += Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(SAMPLE_EVERY));
        }
    }
}

/// A section of grace's RCU that lasts `d`.
fn hold_rcu(d: Duration) {
    let g = grace::rcu::read_lock();
    std::thread::sleep(d);
    drop(g);
}

/// Read sections with `section` until `stop`, checking it every 1024.
#[inline]
fn read_loop(stop: &AtomicBool, mut section: impl FnMut()) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1024 {
            section();
        }
        n += 1024;
    }
    n
}

struct GraceKvfree;

impl Flood for GraceKvfree {
    const COUNTED: bool = false;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        flood_loop(stop, c, |i| {
            grace::kvfree(black_box(Box::new([i as u8; 64])))
        });
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(grace::rcu::read_lock())))
    }

    fn hold(&self, d: Duration) {
        hold_rcu(d);
    }

    fn grace_periods(&self) -> Option<u64> {
        Some(grace::rcu::stats().grace_periods)
    }

    fn library_pending(&self) -> u64 {
        grace::kvfree::stats().bytes_pending
    }

    fn drain(&self, _: &[FlooderCounts], _: u64) -> Result<(), String> {
        grace::kvfree_barrier();
        Ok(())
    }
}

/// `grace-pending` (`Process::free`) and `grace-pending-closure` (`Process::with`): the same
/// `Pending`, processed either way.
struct GracePending(grace::Pending<[u8; 64]>);

impl Flood for GracePending {
    const COUNTED: bool = false;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        flood_loop(stop, c, |i| {
            self.0.enqueue(black_box(Box::new([i as u8; 64])))
        });
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(grace::rcu::read_lock())))
    }

    fn hold(&self, d: Duration) {
        hold_rcu(d);
    }

    fn grace_periods(&self) -> Option<u64> {
        Some(grace::rcu::stats().grace_periods)
    }

    fn library_pending(&self) -> u64 {
        self.0.stats().bytes_pending
    }

    /// `barrier()`, then check that every object was processed.
    fn drain(&self, _: &[FlooderCounts], total: u64) -> Result<(), String> {
        self.0.barrier();
        let s = self.0.stats();
        if s.processed != total || s.pending != 0 {
            return Err(format!(
                "BUG: {} of {total} objects processed after barrier(), {} pending",
                s.processed, s.pending
            ));
        }
        Ok(())
    }
}

struct Liburcu;

impl Flood for Liburcu {
    const COUNTED: bool = true;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        let Some(reg) = liburcu::Registration::new() else {
            return;
        };
        let freed = c.freed_ptr();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            // Counted before the objects exist, as in `flood_loop`.
            c.allocated.0.store(n + CHUNK, Ordering::Relaxed);
            // SAFETY: the counter outlives the drain's barrier, after which
            // every callback has run (the counters leak otherwise).
            let queued = unsafe { reg.free_loop(CHUNK, freed.as_ptr()) };
            n += queued;
            if queued < CHUNK {
                // malloc failed: count what was queued, and stop.
                c.allocated.0.store(n, Ordering::Relaxed);
                break;
            }
        }
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        let Some(reg) = liburcu::Registration::new() else {
            return 0;
        };
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            black_box(reg.read_loop_inline(1024));
            n += 1024;
        }
        n
    }

    fn hold(&self, d: Duration) {
        if let Some(reg) = liburcu::Registration::new() {
            reg.read_hold(d);
        }
    }

    fn drain(&self, _: &[FlooderCounts], _: u64) -> Result<(), String> {
        liburcu::register()?.barrier();
        Ok(())
    }
}

struct Crossbeam {
    timeout: Duration,
}

impl Flood for Crossbeam {
    const COUNTED: bool = true;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        let freed = c.freed_ptr();
        flood_loop(stop, c, |i| {
            let guard = crossbeam_epoch::pin();
            let p = crossbeam_epoch::Owned::new(Counted::new(freed, i)).into_shared(&guard);
            // SAFETY: never shared; destroyed once, after the epoch.
            unsafe { guard.defer_destroy(p) };
        });
        crossbeam_epoch::pin().flush();
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(crossbeam_epoch::pin())))
    }

    fn hold(&self, d: Duration) {
        let g = crossbeam_epoch::pin();
        std::thread::sleep(d);
        drop(g);
    }

    fn drain(&self, counts: &[FlooderCounts], total: u64) -> Result<(), String> {
        let freed = || counts.iter().map(|c| c.freed.sum()).sum();
        drain_crossbeam(&freed, total, self.timeout)
    }
}

struct Seize(seize::Collector);

impl Flood for Seize {
    const COUNTED: bool = true;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        let freed = c.freed_ptr();
        flood_loop(stop, c, |i| {
            let p = Box::into_raw(Box::new(Counted::new(freed, i)));
            // SAFETY: a fresh Box pointer, never shared, retired once with
            // the reclaimer matching its allocation.
            unsafe { self.0.retire(p, seize::reclaim::boxed) };
        });
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(self.0.enter())))
    }

    fn hold(&self, d: Duration) {
        let g = self.0.enter();
        std::thread::sleep(d);
        drop(g);
    }

    fn drain(&self, _: &[FlooderCounts], _: u64) -> Result<(), String> {
        // SAFETY: the flooders and readers have stopped (joined) and hold no
        // guard, and no retired object was ever shared.
        unsafe { self.0.reclaim_all() };
        Ok(())
    }
}

struct GraceCallRcu;

impl Flood for GraceCallRcu {
    const COUNTED: bool = false;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        flood_loop(stop, c, |i| {
            let b = black_box(Box::new([i as u8; 64]));
            grace::rcu::call_sized(64, move || drop(b));
        });
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(grace::rcu::read_lock())))
    }

    fn hold(&self, d: Duration) {
        hold_rcu(d);
    }

    fn grace_periods(&self) -> Option<u64> {
        Some(grace::rcu::stats().grace_periods)
    }

    fn library_pending(&self) -> u64 {
        grace::rcu::stats().bytes_pending
    }

    fn drain(&self, _: &[FlooderCounts], _: u64) -> Result<(), String> {
        grace::rcu::barrier();
        Ok(())
    }
}

struct GraceCallSrcu(grace::srcu::Srcu);

impl Flood for GraceCallSrcu {
    const COUNTED: bool = false;

    fn flooder(&self, stop: &AtomicBool, c: &FlooderCounts) {
        flood_loop(stop, c, |i| {
            let b = black_box(Box::new([i as u8; 64]));
            self.0.call_sized(64, move || drop(b));
        });
    }

    fn reader(&self, stop: &AtomicBool) -> u64 {
        read_loop(stop, || drop(black_box(self.0.read_lock())))
    }

    fn hold(&self, d: Duration) {
        let g = self.0.read_lock();
        std::thread::sleep(d);
        drop(g);
    }

    fn library_pending(&self) -> u64 {
        self.0.stats().callbacks_pending * 64
    }

    fn grace_periods(&self) -> Option<u64> {
        Some(self.0.stats().grace_periods)
    }

    fn drain(&self, _: &[FlooderCounts], _: u64) -> Result<(), String> {
        self.0.barrier();
        let left = self.0.stats().callbacks_pending;
        if left != 0 {
            return Err(format!(
                "BUG: {left} SRCU callbacks pending after barrier()"
            ));
        }
        Ok(())
    }
}

/// Flood with `imp` on `threads` flooders beside `readers` readers for
/// `duration`.
fn flood<I: Flood>(
    imp: &I,
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    setup: &FloodSetup,
) -> FloodResult {
    let mut notes = Vec::new();
    if !reset_peak_rss() {
        notes.push("VmHWM could not be reset".to_string());
    }
    let (baseline, _) = rss();
    let cap = memory_cap();
    let counts: Vec<FlooderCounts> = (0..threads).map(|_| FlooderCounts::new()).collect();
    let stop_flood = AtomicBool::new(false);
    let stop_read = AtomicBool::new(false);
    let kvfree_peak_before = grace::kvfree::stats().peak_bytes_pending;
    let mut sampled_peak = 0u64;
    let mut rss_peak = baseline;
    let mut stopped_early = false;
    let mut series: Vec<(f64, u64)> = Vec::new();
    let mut recovery = None;
    let mut recovery_gps = None;
    let limit = recovery_limit(duration);
    let sample = || {
        if I::COUNTED {
            counts.iter().map(FlooderCounts::outstanding).sum::<u64>() * 64
        } else {
            imp.library_pending()
        }
    };
    let (ran, reads, drained, drain_s) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..readers)
            .map(|_| s.spawn(|| imp.reader(&stop_read)))
            .collect();
        let sleeper = setup
            .sleeping_reader
            .then(|| s.spawn(|| sleeper(imp, &stop_read)));
        let start = Instant::now();
        let flooders: Vec<_> = counts
            .iter()
            .map(|c| {
                let stop = &stop_flood;
                s.spawn(move || imp.flooder(stop, c))
            })
            .collect();
        // The sampler: this thread.
        while start.elapsed() < duration {
            std::thread::sleep(SAMPLE_EVERY.min(duration.saturating_sub(start.elapsed())));
            let pending = sample();
            series.push((start.elapsed().as_secs_f64(), pending));
            sampled_peak = sampled_peak.max(pending);
            if let (Some(now), _) = rss() {
                rss_peak = Some(rss_peak.map_or(now, |p| p.max(now)));
            }
            if pending > cap {
                stopped_early = true;
                break;
            }
        }
        let stopped_at = Instant::now();
        let gps_at_stop = imp.grace_periods();
        stop_flood.store(true, Ordering::Relaxed);
        for f in flooders {
            if f.join().is_err() {
                notes.push("a flooding thread panicked".into());
            }
        }
        let ran = start.elapsed();
        // The recovery: readers (the sleeping one too) keep running, nothing is flushed.
        if setup.measure_recovery {
            loop {
                let pending = sample();
                series.push((start.elapsed().as_secs_f64(), pending));
                if pending < RECOVERED_BELOW {
                    recovery = Some(stopped_at.elapsed().as_secs_f64());
                    recovery_gps = gps_at_stop
                        .zip(imp.grace_periods())
                        .map(|(a, b)| b.saturating_sub(a));
                    break;
                }
                if stopped_at.elapsed() >= limit {
                    break;
                }
                std::thread::sleep(RECOVERY_POLL);
            }
        }
        stop_read.store(true, Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap_or(0)).sum();
        if sleeper.is_some_and(|h| h.join().is_err()) {
            notes.push("the sleeping reader panicked".into());
        }
        let total = counts
            .iter()
            .map(|c| c.allocated.0.load(Ordering::Relaxed))
            .sum();
        let t = Instant::now();
        let drained = imp.drain(&counts, total);
        (ran, reads, drained, t.elapsed())
    });
    let objects: u64 = counts
        .iter()
        .map(|c| c.allocated.0.load(Ordering::Relaxed))
        .sum();
    let mut failed = drained.err();
    if I::COUNTED {
        for c in counts {
            let each = c.allocated.0.load(Ordering::Relaxed);
            if let Err(e) = c.freed.finish(each) {
                failed.get_or_insert(e);
            }
        }
    }
    if objects == 0 {
        failed.get_or_insert_with(|| "no object was handed over".into());
    }
    if stopped_early {
        notes.push(format!(
            "stopped after {:.1} s: pending memory passed {} MiB",
            ran.as_secs_f64(),
            cap >> 20
        ));
    }
    let (_, hwm) = rss();
    let library_peak = name.starts_with("grace-kvfree").then(|| {
        let peak = grace::kvfree::stats().peak_bytes_pending;
        if kvfree_peak_before > 0 {
            notes.push(format!(
                "kvfree's peak is process-wide; {} MiB were pending before this run",
                kvfree_peak_before >> 20
            ));
        }
        peak
    });
    let secs = ran.as_secs_f64();
    let mut r = FloodResult {
        impl_name: name.to_string(),
        threads,
        readers,
        duration_s: secs,
        objects,
        objects_per_s: objects as f64 / secs,
        reads_per_s: reads as f64 / secs,
        peak_bytes_pending: library_peak.unwrap_or(sampled_peak),
        peak_bytes_source: if library_peak.is_some() {
            "library"
        } else {
            "sampled"
        }
        .into(),
        sampled_peak_bytes_pending: sampled_peak,
        baseline_rss_bytes: baseline,
        peak_rss_bytes: hwm,
        sampled_peak_rss_bytes: rss_peak,
        drain_s: drain_s.as_secs_f64(),
        isolated: false,
        note: None,
        budget_bytes: name
            .ends_with(BUDGET_SUFFIX)
            .then_some(setup.budget)
            .flatten(),
        sleeping_reader: setup.sleeping_reader,
        recovery_s: recovery,
        recovery_grace_periods: recovery_gps,
        recovery_limit_s: if setup.measure_recovery {
            limit.as_secs_f64()
        } else {
            0.0
        },
        pending_series: series,
    };
    if let Some(e) = failed {
        r.objects_per_s = f64::NAN;
        notes.insert(0, e);
    }
    r.note = (!notes.is_empty()).then(|| notes.join("; "));
    r
}

/// Flood with `name` (see [`flood_impls`]) on `threads` flooding threads
/// beside `readers` reader threads for `duration`, in this process; see the
/// module docs.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let r = grace_bench::run_flood_one("grace-kvfree", 1, 1, Duration::from_secs(1));
/// println!("{:.1} M objects/s, peak {} bytes pending", r.objects_per_s / 1e6, r.peak_bytes_pending);
/// ```
pub fn run_flood_one(
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
) -> FloodResult {
    run_flood_with(name, threads, readers, duration, &FloodSetup::default())
}

/// [`run_flood_one`] with a [`FloodSetup`]: `name` may be any of [`flood_impls`] and
/// [`pressure_impls`]; a `+budget` row runs with `setup.budget` as grace's memory budget
/// (`grace::pressure::set_budget`, removed again afterwards).
///
/// # Examples
///
/// ```no_run
/// use grace_bench::flood::{run_flood_with, FloodSetup};
/// use std::time::Duration;
/// let setup = FloodSetup::pressure(64 << 20);
/// let r = run_flood_with("grace-call-rcu+budget", 1, 1, Duration::from_secs(1), &setup);
/// println!("peak {} bytes pending, back under 1 MiB after {:?} s", r.peak_bytes_pending, r.recovery_s);
/// ```
pub fn run_flood_with(
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    setup: &FloodSetup,
) -> FloodResult {
    let threads = threads.max(1);
    // On a thread of its own, so that the caller's thread is never registered with any
    // implementation (the drain runs on this one).
    std::thread::scope(|s| {
        s.spawn(|| flood_one(name, threads, readers, duration, setup))
            .join()
            .unwrap_or_else(|_| {
                FloodResult::failed(name, threads, readers, "the flood panicked".into())
            })
    })
}

fn flood_one(
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    setup: &FloodSetup,
) -> FloodResult {
    let (base, budget) = match name.strip_suffix(BUDGET_SUFFIX) {
        Some(base) if base.starts_with("grace-") => match setup.budget {
            Some(b) if b > 0 => (base, Some(b)),
            _ => {
                return FloodResult::failed(
                    name,
                    threads,
                    readers,
                    format!("{name} needs a budget (--budget)"),
                )
            }
        },
        _ => (name, None),
    };
    if budget.is_some() {
        grace::pressure::set_budget(budget);
    }
    let r = flood_base(base, name, threads, readers, duration, setup);
    if budget.is_some() {
        grace::pressure::set_budget(None);
    }
    r
}

/// Run the implementation `base`, reporting it as `name`.
fn flood_base(
    base: &str,
    name: &str,
    threads: usize,
    readers: usize,
    duration: Duration,
    setup: &FloodSetup,
) -> FloodResult {
    match base {
        "grace-kvfree" => flood(&GraceKvfree, name, threads, readers, duration, setup),
        "grace-pending" => {
            let p = GracePending(grace::Pending::new(
                grace::Rcu,
                grace::pending::Process::free(),
            ));
            flood(&p, name, threads, readers, duration, setup)
        }
        "grace-call-rcu" => flood(&GraceCallRcu, name, threads, readers, duration, setup),
        "grace-call-srcu" => match grace::srcu::Srcu::new() {
            Ok(d) => flood(&GraceCallSrcu(d), name, threads, readers, duration, setup),
            Err(e) => FloodResult::failed(
                name,
                threads,
                readers,
                format!("cannot create an SRCU domain: {e}"),
            ),
        },
        "grace-pending-closure" => {
            let p = GracePending(grace::Pending::new(
                grace::Rcu,
                grace::pending::Process::with(|b: Box<[u8; 64]>| drop(black_box(b))),
            ));
            flood(&p, name, threads, readers, duration, setup)
        }
        "liburcu-memb" if liburcu::available() => {
            flood(&Liburcu, name, threads, readers, duration, setup)
        }
        "liburcu-memb" => {
            FloodResult::failed(name, threads, readers, liburcu::unavailable_reason().into())
        }
        "crossbeam-epoch" => flood(
            &Crossbeam {
                timeout: Duration::from_secs(30) + duration * 2,
            },
            name,
            threads,
            readers,
            duration,
            setup,
        ),
        "seize" => flood(
            &Seize(seize::Collector::new()),
            name,
            threads,
            readers,
            duration,
            setup,
        ),
        other => FloodResult::failed(
            other,
            threads,
            readers,
            format!("unknown flood implementation {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read() {
        let (rss, hwm) = rss();
        if std::path::Path::new("/proc/self/status").exists() {
            let (rss, hwm) = (rss.unwrap(), hwm.unwrap());
            assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
        }
    }

    #[test]
    fn every_flood_runs_and_drains() {
        for name in flood_impls() {
            let r = run_flood_one(name, 2, 1, Duration::from_millis(60));
            assert!(r.is_measured(), "{r:?}");
            assert!(r.objects > 0, "{r:?}");
            assert!(r.reads_per_s > 0.0, "{r:?}");
        }
    }

    #[test]
    fn every_pressure_flood_runs_with_a_sleeping_reader_and_recovers() {
        let setup = FloodSetup::pressure(8 << 20);
        for name in pressure_impls() {
            let r = run_flood_with(&name, 1, 1, Duration::from_millis(60), &setup);
            assert!(r.is_measured(), "{r:?}");
            assert_eq!(r.impl_name, name);
            assert!(r.sleeping_reader);
            assert!(!r.pending_series.is_empty(), "{name}: no samples");
            assert!(r.recovery_limit_s > 0.0);
            if r.recovery_s.is_some() {
                assert_eq!(
                    r.recovery_grace_periods.is_some(),
                    name.starts_with("grace-"),
                    "{r:?}"
                );
            }
            assert_eq!(
                r.budget_bytes,
                name.ends_with(BUDGET_SUFFIX).then_some(8 << 20),
                "{name}"
            );
        }
        // Budget rows need a budget; grace's budget is off again afterwards.
        let r = run_flood_with(
            "grace-kvfree+budget",
            1,
            0,
            Duration::from_millis(10),
            &FloodSetup::default(),
        );
        assert!(!r.is_measured() && r.note.unwrap().contains("--budget"));
        assert_eq!(grace::pressure::settings().budget, None);
    }

    #[test]
    fn the_recovery_limit_is_bounded() {
        assert_eq!(
            recovery_limit(Duration::from_millis(1)),
            Duration::from_millis(200)
        );
        assert_eq!(
            recovery_limit(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
    }
}
