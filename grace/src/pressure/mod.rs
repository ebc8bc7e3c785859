//! Memory stranded behind grace periods: how much there is, when to push back, and how to
//! give it back under pressure.
//!
//! Every deferral API holds memory from the moment an object is handed to it until the grace
//! period it waits for has ended *and* the object has been processed. Under a flood of frees,
//! or while one reader sleeps inside its section, that memory grows; this module is the one
//! place that sees all of it and decides what to do, in the kernel's order:
//!
//! 1. **Accounting** ([`usage`], [`pending_bytes`]): objects and bytes waiting, per API
//!    (`call` on RCU, `kvfree`, `Pending`, `call` on SRCU domains), summed from per-shard
//!    counters only when read, so the enqueue fast paths pay nothing for it.
//! 2. **Flood heuristics** (first line of defence, the kernel's `qhimark`/`blimit`): when a
//!    shard's waiting callbacks or bytes pass [`Settings::flood_callbacks`] or
//!    [`Settings::flood_bytes`], or callbacks arrive faster than [`Settings::flood_rate`], its
//!    grace periods are expedited (readers are polled without
//!    sleeping, so work waiting on a normal grace period completes sooner) and its invokers run
//!    everything that is ready instead of a bounded slice. Every deferral API has it:
//!
//!    | API | what is checked | what flood mode does |
//!    |---|---|---|
//!    | RCU `call` | each callback shard's waiting callbacks and bytes, at each hand-off from a thread's ring; the flavor's enqueue rate, per grace-period cycle | expedites the grace period, lazy callbacks go at once, invokers take everything ready |
//!    | SRCU `call` | each callback shard of the domain, at each sealed node of 64 callbacks; the domain's enqueue rate, per service visit | the domain's grace period is polled as an expedited one, lazy callbacks go at once |
//!    | `Pending` | each shard's held objects (bytes: `size_of::<T>()` each), at each new chunk | [`Flavor::expedite_pending`](crate::Flavor::expedite_pending) on its flavor, the worker woken |
//!    | `kvfree` | bytes pending process-wide, at each array handed over | arrays go with `call_hurry` (no lazy delay), on top of its own per-thread backpressure |
//!
//!    Flood mode ends with hysteresis, once what was checked is under half the thresholds.
//!    [`Stats::floods`] counts entries, and `grace::report()` shows each SRCU domain's state.
//! 3. **Budget** ([`set_budget`]): above it, an enqueuer first *helps* (runs expired work
//!    itself), then *drives an expedited grace period* (starts it at once, readers polled
//!    without sleeping, without waiting for it: a reader may hold it for long), and only then
//!    *waits*, at most [`BUDGET_WAIT_MAX`] per enqueue, for memory to come back. A caller inside a read-side section, or inside a callback,
//!    never waits (its own section would hold the grace period back): it goes over the budget,
//!    and that is counted ([`Stats::overruns`]). No path holds a lock of grace's while it
//!    waits.
//! 4. **Shrinker** ([`count`], [`scan`]), the second line, for an application's own
//!    memory-pressure logic: flushes lazily batched callbacks, frees what has expired at once,
//!    and expedites the rest, for every API and every SRCU domain that has callbacks.
//! 5. **A real pressure source** ([`psi`]): on Linux, a monitor of pressure stall information
//!    (the process's cgroup v2 `memory.pressure`, else `/proc/pressure/memory`) that calls a
//!    handler when memory stalls pass a threshold; [`start_psi_shrinker`] connects it to the
//!    shrinker.
//!
//! # Settings
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRACE_BUDGET` | bytes pending above which enqueuers help, expedite, then wait (`64MiB`, `512KiB`, `1G`, or plain bytes; `0` or `off`: none) | none |
//! | `GRACE_FLOOD_CALLBACKS` | waiting callbacks per shard that start flood mode | 10000 |
//! | `GRACE_FLOOD_BYTES` | waiting bytes per shard that start flood mode | 8 MiB |
//! | `GRACE_FLOOD_RATE` | callbacks queued per second on one flavor that start flood mode | 10000000 |
//!
//! The budget is off by default: it trades throughput for a bound, and only the application
//! knows what bound it needs. The flood thresholds follow the kernel's `qhimark` (10,000
//! callbacks per CPU) and bound a shard's backlog at a few MiB of 64-byte objects.
//!
//! # Examples
//!
//! ```
//! use grace::pressure;
//! pressure::set_budget(Some(64 << 20));
//! for i in 0..10_000u64 {
//!     let b = Box::new([i; 8]);
//!     grace::rcu::call_sized(64, move || drop(b));
//! }
//! grace::rcu::barrier();
//! println!("{}", pressure::usage());
//! pressure::set_budget(None);
//! ```

pub mod psi;

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::sync::Once;
use std::time::{Duration, Instant};

/// The memory-pressure settings in force (see the module docs).
///
/// # Examples
///
/// ```
/// let s = grace::pressure::settings();
/// assert!(s.flood_callbacks > 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Bytes pending above which enqueuers help, expedite, then wait; `None`: no budget.
    pub budget: Option<u64>,
    /// Waiting callbacks (or objects) per shard above which the shard is in flood mode.
    pub flood_callbacks: u64,
    /// Waiting bytes per shard above which the shard is in flood mode.
    pub flood_bytes: u64,
    /// Callbacks queued per second, on one flavor, above which it is in flood mode.
    pub flood_rate: u64,
}

/// Default [`Settings::flood_callbacks`]: the kernel's `qhimark`.
pub const DEFAULT_FLOOD_CALLBACKS: u64 = 10_000;
/// Default [`Settings::flood_bytes`].
pub const DEFAULT_FLOOD_BYTES: u64 = 8 << 20;
/// Default [`Settings::flood_rate`]: at 10 million callbacks a second, one lazy delay (10 ms)
/// strands ten times the kernel's `qhimark`, so grace periods should not wait to batch.
pub const DEFAULT_FLOOD_RATE: u64 = 10_000_000;

/// The longest an enqueuer waits for the budget in one call. It then goes on over the budget
/// (counted in [`Stats::overruns`]): a reader that never finishes must not hang every updater
/// forever, and the next enqueue waits again.
pub const BUDGET_WAIT_MAX: Duration = Duration::from_millis(100);

static INIT: Once = Once::new();
/// 0: no budget.
static BUDGET: AtomicU64 = AtomicU64::new(0);
static FLOOD_CALLBACKS: AtomicU64 = AtomicU64::new(DEFAULT_FLOOD_CALLBACKS);
static FLOOD_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_FLOOD_BYTES);
static FLOOD_RATE: AtomicU64 = AtomicU64::new(DEFAULT_FLOOD_RATE);

/// Read the `GRACE_*` settings once (the API setters below override them).
fn init() {
    INIT.call_once(|| {
        let cfg = crate::config::Config::from_env_or_warn();
        // Relaxed: plain settings; every reader re-reads them at its own pace.
        BUDGET.store(cfg.budget.unwrap_or(0), Ordering::Relaxed);
        FLOOD_CALLBACKS.store(cfg.flood_callbacks, Ordering::Relaxed);
        FLOOD_BYTES.store(cfg.flood_bytes, Ordering::Relaxed);
        FLOOD_RATE.store(cfg.flood_rate, Ordering::Relaxed);
    });
}

/// The settings in force.
///
/// # Examples
///
/// ```
/// let s = grace::pressure::settings();
/// println!("budget {:?}, flood at {} callbacks or {} bytes per shard",
///          s.budget, s.flood_callbacks, s.flood_bytes);
/// ```
pub fn settings() -> Settings {
    init();
    // Relaxed: settings (see `init`).
    let b = BUDGET.load(Ordering::Relaxed);
    Settings {
        budget: (b != 0).then_some(b),
        flood_callbacks: FLOOD_CALLBACKS.load(Ordering::Relaxed),
        flood_bytes: FLOOD_BYTES.load(Ordering::Relaxed),
        flood_rate: FLOOD_RATE.load(Ordering::Relaxed),
    }
}

/// Set the memory budget: bytes pending (all APIs, all flavors together) above which
/// enqueuers help, expedite, then wait; `None` removes it. Takes effect at once.
///
/// # Examples
///
/// ```
/// grace::pressure::set_budget(Some(256 << 20));
/// assert_eq!(grace::pressure::settings().budget, Some(256 << 20));
/// grace::pressure::set_budget(None);
/// ```
pub fn set_budget(bytes: Option<u64>) {
    init();
    // Relaxed: a setting (see `init`).
    BUDGET.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// Set the flood thresholds, per shard: waiting callbacks (or objects) and bytes. Zero
/// disables a threshold.
///
/// # Examples
///
/// ```
/// use grace::pressure;
/// let before = pressure::settings();
/// pressure::set_flood_thresholds(50_000, 16 << 20);
/// assert_eq!(pressure::settings().flood_callbacks, 50_000);
/// pressure::set_flood_thresholds(before.flood_callbacks, before.flood_bytes);
/// ```
pub fn set_flood_thresholds(callbacks: u64, bytes: u64) {
    init();
    // Relaxed: settings (see `init`).
    FLOOD_CALLBACKS.store(
        if callbacks == 0 { u64::MAX } else { callbacks },
        Ordering::Relaxed,
    );
    FLOOD_BYTES.store(if bytes == 0 { u64::MAX } else { bytes }, Ordering::Relaxed);
}

/// Set the flood rate threshold: callbacks queued per second on one flavor; zero disables it.
///
/// # Examples
///
/// ```
/// use grace::pressure;
/// let before = pressure::settings().flood_rate;
/// pressure::set_flood_rate(1_000_000);
/// assert_eq!(pressure::settings().flood_rate, 1_000_000);
/// pressure::set_flood_rate(before);
/// ```
pub fn set_flood_rate(callbacks_per_second: u64) {
    init();
    // Relaxed: a setting (see `init`).
    FLOOD_RATE.store(
        if callbacks_per_second == 0 {
            u64::MAX
        } else {
            callbacks_per_second
        },
        Ordering::Relaxed,
    );
}

/// Is a flavor that queued `callbacks` callbacks in `elapsed` in flood?
pub(crate) fn is_flood_rate(callbacks: u64, elapsed: Duration) -> bool {
    init();
    // Relaxed: a setting (see `init`).
    let limit = FLOOD_RATE.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    secs > 0.0 && callbacks as f64 / secs > limit as f64
}

/// Is a shard with `callbacks` waiting callbacks of `bytes` bytes in flood?
#[inline]
pub(crate) fn is_flood(callbacks: u64, bytes: u64) -> bool {
    init();
    // Relaxed: settings (see `init`).
    callbacks > FLOOD_CALLBACKS.load(Ordering::Relaxed)
        || bytes > FLOOD_BYTES.load(Ordering::Relaxed)
}

/// Objects and bytes that one API holds back.
///
/// # Examples
///
/// ```
/// let u = grace::pressure::usage();
/// let c = u.kvfree;
/// println!("kvfree: {} objects, {} bytes", c.objects, c.bytes);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects or callbacks queued and not yet processed (waiting for their grace period, or
    /// expired and waiting to be processed).
    pub objects: u64,
    /// The bytes they hold (as stated: see each API's accounting notes).
    pub bytes: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.objects += o.objects;
        self.bytes += o.bytes;
    }
}

/// What every deferral API holds back now.
///
/// # Examples
///
/// ```
/// let u = grace::pressure::usage();
/// assert_eq!(u.total().bytes, u.call_rcu.bytes + u.kvfree.bytes + u.pending.bytes + u.call_srcu.bytes);
/// println!("{u}");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// `rcu::call` / `call_hurry` / `call_sized`.
    pub call_rcu: Counts,
    /// `kvfree` / `kvfree_raw`.
    pub kvfree: Counts,
    /// Every live `Pending`, whatever its flavor.
    pub pending: Counts,
    /// `call` on every live SRCU domain.
    pub call_srcu: Counts,
}

impl Usage {
    /// Every API together.
    ///
    /// # Examples
    ///
    /// ```
    /// let total = grace::pressure::usage().total();
    /// println!("{} bytes pending", total.bytes);
    /// ```
    pub fn total(&self) -> Counts {
        let mut t = self.call_rcu;
        t += self.kvfree;
        t += self.pending;
        t += self.call_srcu;
        t
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, c: Counts| {
            writeln!(
                f,
                "  {name:<10} {:>12} objects {:>14} bytes",
                c.objects, c.bytes
            )
        };
        writeln!(f, "memory waiting for grace periods or processing:")?;
        row(f, "rcu call", self.call_rcu)?;
        row(f, "kvfree", self.kvfree)?;
        row(f, "pending", self.pending)?;
        row(f, "srcu call", self.call_srcu)?;
        row(f, "total", self.total())
    }
}

/// What every API holds back now (summed from per-shard counters: a consistent total only
/// when nothing is being queued).
///
/// # Examples
///
/// ```
/// grace::kvfree(Box::new([0u8; 64]));
/// grace::kvfree_barrier();
/// assert_eq!(grace::pressure::usage().kvfree.objects, 0);
/// ```
pub fn usage() -> Usage {
    sources::usage()
}

/// Bytes held back by every API together (the figure the budget is compared with).
///
/// # Examples
///
/// ```
/// println!("{} bytes pending", grace::pressure::pending_bytes());
/// ```
pub fn pending_bytes() -> u64 {
    usage().total().bytes
}

/// What the pressure layer did so far.
///
/// # Examples
///
/// ```
/// let s = grace::pressure::stats();
/// println!("{} budget waits, {} overruns, {} shrinker scans", s.budget_waits, s.overruns, s.scans);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Enqueues that found the budget exceeded.
    pub over_budget: u64,
    /// Of those, enqueues that helped: ran expired work themselves.
    pub helped: u64,
    /// Objects or callbacks processed by helping enqueuers.
    pub helped_objects: u64,
    /// Grace periods enqueuers drove themselves, expedited, over the budget.
    pub expedited: u64,
    /// Enqueues that waited for memory to come back.
    pub budget_waits: u64,
    /// Enqueues that went over the budget without waiting: inside a read-side section or a
    /// callback, or after waiting the longest allowed.
    pub overruns: u64,
    /// Times a shard entered flood mode.
    pub floods: u64,
    /// Shrinker scans.
    pub scans: u64,
    /// Objects or callbacks the shrinker freed at once.
    pub scan_freed: u64,
}

#[derive(Default)]
struct Counters {
    over_budget: AtomicU64,
    helped: AtomicU64,
    helped_objects: AtomicU64,
    expedited: AtomicU64,
    budget_waits: AtomicU64,
    overruns: AtomicU64,
    floods: AtomicU64,
    scans: AtomicU64,
    scan_freed: AtomicU64,
}

#[cfg(not(loom))]
static COUNTERS: Counters = Counters {
    over_budget: AtomicU64::new(0),
    helped: AtomicU64::new(0),
    helped_objects: AtomicU64::new(0),
    expedited: AtomicU64::new(0),
    budget_waits: AtomicU64::new(0),
    overruns: AtomicU64::new(0),
    floods: AtomicU64::new(0),
    scans: AtomicU64::new(0),
    scan_freed: AtomicU64::new(0),
};

fn bump(c: &AtomicU64, n: u64) {
    // Relaxed: statistics.
    c.fetch_add(n, Ordering::Relaxed);
}

/// Count a shard entering flood mode.
pub(crate) fn count_flood() {
    bump(&COUNTERS.floods, 1);
}

/// The pressure layer's counters.
///
/// # Examples
///
/// ```
/// let before = grace::pressure::stats().scans;
/// grace::pressure::scan(0);
/// assert_eq!(grace::pressure::stats().scans, before + 1);
/// ```
pub fn stats() -> Stats {
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &COUNTERS;
    Stats {
        over_budget: l(&c.over_budget),
        helped: l(&c.helped),
        helped_objects: l(&c.helped_objects),
        expedited: l(&c.expedited),
        budget_waits: l(&c.budget_waits),
        overruns: l(&c.overruns),
        floods: l(&c.floods),
        scans: l(&c.scans),
        scan_freed: l(&c.scan_freed),
    }
}

/// Is the budget exceeded? Cheap when there is no budget (one load). With one, the total is
/// summed over every source (taking `Pending` shard locks), so callers on a per-object path
/// use [`over_budget_sampled`]; callers already on a slow path (a full ring, a kvfree array
/// hand-off: once per hundreds of objects) ask every time.
#[inline]
pub(crate) fn over_budget() -> bool {
    init();
    // Relaxed: a setting.
    let b = BUDGET.load(Ordering::Relaxed);
    b != 0 && over_budget_slow(b)
}

/// Per-object callers' check (`Pending::enqueue`, SRCU `call`): [`over_budget`], summed
/// afresh once every [`SAMPLE_EVERY`] calls on this thread, the answer in between reused. A
/// flood overshoots the budget by at most that many objects per thread before it helps.
#[inline]
pub(crate) fn over_budget_sampled() -> bool {
    init();
    // Relaxed: a setting.
    if BUDGET.load(Ordering::Relaxed) == 0 {
        return false;
    }
    SAMPLED.with(|s| {
        let (n, last) = s.get();
        if n == 0 {
            let now = over_budget();
            s.set((SAMPLE_EVERY - 1, now));
            now
        } else {
            s.set((n - 1, last));
            last
        }
    })
}

/// See [`over_budget_sampled`].
const SAMPLE_EVERY: u32 = 64;

thread_local! {
    /// Calls left before this thread sums the budget again, and its last answer.
    static SAMPLED: std::cell::Cell<(u32, bool)> = const { std::cell::Cell::new((0, false)) };
}

#[cold]
#[inline(never)]
fn over_budget_slow(budget: u64) -> bool {
    pending_bytes() > budget
}

/// What an enqueuer that found the budget exceeded can do, API by API (see [`enforce`]).
pub(crate) trait Helper {
    /// Run expired work on this thread, at most `max` objects; returns how many ran.
    fn help(&self, max: u64) -> u64;
    /// Drive an expedited grace period from this thread and make what it completed ready.
    fn expedite(&self);
}

/// The budget is exceeded (the caller checked [`over_budget`]): help, expedite, then wait, in
/// that order, stopping as soon as the budget holds again. `may_wait` is false inside a
/// read-side section or a callback: then nothing waits, and the overrun is counted.
#[cold]
#[inline(never)]
pub(crate) fn enforce(h: &dyn Helper, may_wait: bool) {
    bump(&COUNTERS.over_budget, 1);
    if !may_wait {
        bump(&COUNTERS.overruns, 1);
        return;
    }
    let helped = h.help(u64::MAX);
    if helped > 0 {
        bump(&COUNTERS.helped, 1);
        bump(&COUNTERS.helped_objects, helped);
        if !over_budget() {
            return;
        }
    }
    bump(&COUNTERS.expedited, 1);
    h.expedite();
    bump(&COUNTERS.helped_objects, h.help(u64::MAX));
    if !over_budget() {
        return;
    }
    bump(&COUNTERS.budget_waits, 1);
    let deadline = Instant::now() + BUDGET_WAIT_MAX;
    while over_budget() {
        if Instant::now() >= deadline {
            bump(&COUNTERS.overruns, 1);
            return;
        }
        // Others' workers and the grace-period threads make progress meanwhile; help with
        // whatever expires.
        std::thread::sleep(Duration::from_micros(200));
        h.expedite();
        bump(&COUNTERS.helped_objects, h.help(u64::MAX));
    }
}

/// What the shrinker could free: objects and bytes held back now.
///
/// # Examples
///
/// ```
/// let c = grace::pressure::count();
/// println!("{} objects ({} bytes) could be given back", c.objects, c.bytes);
/// ```
pub fn count() -> Counts {
    usage().total()
}

/// Give memory back now: flush lazily batched callbacks (their grace periods start at once),
/// process up to `n` objects whose grace period has already ended on this thread, and
/// expedite the grace periods the rest wait for. Returns how many objects were processed
/// here (SRCU callbacks whose grace period has ended are handed to grace's workers at once
/// and counted too). Never waits for readers; callbacks and `Pending` processing may run on this thread,
/// so call it outside read-side sections and without holding locks such code takes (the
/// PSI monitor's thread, or an application's own memory-pressure logic, are the intended
/// callers). `scan(0)` only flushes and expedites.
///
/// # Examples
///
/// ```
/// for i in 0..1000u64 {
///     grace::kvfree(Box::new([i; 8]));
/// }
/// let freed = grace::pressure::scan(u64::MAX);
/// println!("the shrinker freed {freed} objects at once");
/// ```
pub fn scan(n: u64) -> u64 {
    bump(&COUNTERS.scans, 1);
    let freed = sources::scan(n);
    bump(&COUNTERS.scan_freed, freed);
    freed
}

mod sources;
pub(crate) use sources::{pending_reports, register, Kind, Source};

/// Start a PSI monitor ([`psi::PsiMonitor`]) on `source` that runs the shrinker
/// ([`scan`]) with no limit each time memory stalls pass `trigger`: the kernel's answer to
/// memory pressure (shrinkers run when reclaim stalls), driven by the operating system's own
/// signal. The shrinker runs on the monitor's thread, outside any read-side section. Keep
/// the returned monitor alive for as long as it should watch; dropping it stops it.
///
/// # Errors
///
/// What [`psi::PsiMonitor::start`] reports: PSI missing (not Linux, or a kernel without it),
/// not permitted, or an invalid trigger.
///
/// # Examples
///
/// ```
/// use grace::pressure::{self, psi};
/// match pressure::start_psi_shrinker(psi::PsiSource::Auto, psi::Trigger::default()) {
///     Ok(monitor) => drop(monitor),
///     Err(e) => eprintln!("no memory-pressure monitor: {e}"),
/// }
/// ```
pub fn start_psi_shrinker(
    source: psi::PsiSource,
    trigger: psi::Trigger,
) -> Result<psi::PsiMonitor, psi::PsiError> {
    psi::PsiMonitor::start(source, trigger, |_event| {
        scan(u64::MAX);
    })
}
