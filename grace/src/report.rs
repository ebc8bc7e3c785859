//! Diagnostics for when memory is high: a report a person can read, stall warnings, and a
//! signal that prints the report from a running program.
//!
//! # The report
//!
//! [`report()`] gathers, in one value, everything that explains why memory is stranded
//! behind grace periods (the questions the kernel's `rcu_cpu_stall` and `show_rcu_gp_kthreads`
//! output answers):
//!
//! * **what waits**: objects and bytes pending per API (`call` on RCU, `kvfree`, every live
//!   `Pending`, `call` on every live SRCU domain), and the RCU callbacks of each shard, split
//!   into those still waiting for a grace period (in how many segments, each waiting for its
//!   own grace period) and those whose grace period has ended, waiting to be invoked;
//! * **what it waits for**: the current grace-period number, its phase and how long it has
//!   been running, and the reader it waits on (its thread's name, and for how long), plus the
//!   threads inside a read-side section now;
//! * **what was done about it**: expedited grace periods and why (`synchronize_expedited`,
//!   flood mode, the memory budget, the shrinker), fallbacks taken by `kvfree` (reserve
//!   arrays, small nodes, synchronous grace periods), budget waits and overruns, shrinker
//!   scans and what they freed, and the stall warnings issued.
//!
//! [`Report`] implements [`Display`](std::fmt::Display) (text for a person) and
//! [`Report::to_json`] (one JSON object, written by hand: the library depends on no
//! serializer).
//!
//! Per-domain figures for SRCU and per-`Pending` figures are summed per API: the report reads
//! them through the memory-pressure layer ([`crate::pressure::usage`]), which sees every live
//! domain and `Pending` but not their names.
//!
//! # Stall warnings
//!
//! A grace period that has waited for one reader longer than the stall threshold
//! ([`set_stall_threshold`], `GRACE_STALL_MS`, 10 s by default) reports it once, through the
//! stall hook ([`set_stall_hook`]; by default one line on standard error), as the kernel's
//! "rcu_sched detected stalls" does:
//!
//! * RCU: the thread holding the grace period (its name, recorded when it registered) and how
//!   long the grace period has waited;
//! * SRCU: the domain (`SRCU domain #N`, see [`Srcu::id`](crate::srcu::Srcu::id)) whose grace
//!   period readers hold. SRCU readers are counters, not per-thread records, so the thread
//!   cannot be named cheaply; a reader blocked in one domain never holds another's.
//!
//! The checks run on the grace-period side only, while it waits; the read side pays nothing.
//! The time is measured from the start of the grace period, so it is a lower bound of how
//! long the reader has been inside.
//!
//! # The report signal
//!
//! With `GRACE_REPORT_SIGNAL=USR2` (or `USR1`) in its environment, a program prints the report
//! to standard error each time it receives that signal (`kill -USR2 <pid>`), with no change to
//! its code; [`install_signal_report`] does the same from code, and [`set_report_sink`] sends
//! the reports elsewhere. The signal handler only writes a byte to a pipe; a thread named
//! `grace-report` gathers and prints the report.
//!
//! # Settings
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRACE_STALL_MS` | stall-warning threshold in milliseconds (`0` or `off`: no warnings) | `10000` |
//! | `GRACE_REPORT_SIGNAL` | `USR1` or `USR2`: print the report on that signal | none |
//!
//! # Examples
//!
//! ```
//! grace::rcu::call(|| ());
//! let r = grace::report();
//! println!("{r}");
//! assert!(r.to_json().starts_with('{'));
//! # grace::rcu::barrier();
//! ```

use crate::gp::GpPhase;
use crate::pressure::{Counts, Usage};
use crate::reader::Slot;
use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Time and thread names
// ---------------------------------------------------------------------------------------

/// The process's reference instant: times in atomics are nanoseconds since it, plus one
/// (0 means "none").
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Now, as a stamp (see [`base`]).
fn stamp() -> u64 {
    base().elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64 + 1
}

/// How long ago `stamp` was (zero for "none").
fn since(stamp: u64) -> Duration {
    if stamp == 0 {
        return Duration::ZERO;
    }
    base()
        .elapsed()
        .saturating_sub(Duration::from_nanos(stamp - 1))
}

/// The calling thread's name as the operating system knows it (Rust's name, cut to 15 bytes
/// on Linux).
///
/// Not `std::thread::current`: a thread may register with RCU from a pthread-key destructor,
/// after std has torn its handle down, where `current` panics (found by the thread-exit
/// tests).
pub(crate) fn thread_name() -> Arc<str> {
    match crate::sys::thread_name() {
        Some(n) => Arc::from(n.as_str()),
        None => Arc::from("unnamed thread"),
    }
}

// ---------------------------------------------------------------------------------------
// Stall threshold and hook
// ---------------------------------------------------------------------------------------

/// The default stall-warning threshold: the kernel's `CONFIG_RCU_CPU_STALL_TIMEOUT` is 21 s;
/// a user-space reader held for 10 s is already far out of the ordinary.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_secs(10);

/// Threshold in milliseconds; 0: no warnings.
static STALL_MS: AtomicU64 = AtomicU64::new(DEFAULT_STALL_THRESHOLD.as_millis() as u64);
static STALL_ENV: Once = Once::new();

/// Parse a `GRACE_STALL_MS` value: milliseconds, or `0`/`off` for none.
fn parse_stall_ms(v: &str) -> Result<u64, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    v.parse::<u64>()
        .map_err(|_| format!("GRACE_STALL_MS={v:?}: expected milliseconds, or 0/off"))
}

fn stall_env() {
    STALL_ENV.call_once(|| {
        if let Ok(v) = std::env::var("GRACE_STALL_MS") {
            match parse_stall_ms(&v) {
                // Relaxed: a setting.
                Ok(ms) => STALL_MS.store(ms, Ordering::Relaxed),
                Err(e) => eprintln!("grace: ignoring {e}"),
            }
        }
    });
}

/// The stall-warning threshold in force: `None` when warnings are off.
///
/// # Examples
///
/// ```
/// let t = grace::report::stall_threshold();
/// println!("stall warnings after {t:?}");
/// ```
pub fn stall_threshold() -> Option<Duration> {
    stall_env();
    // Relaxed: a setting.
    match STALL_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Set the stall-warning threshold (overrides `GRACE_STALL_MS`): a grace period that has
/// waited for one reader longer than this warns once. `None`, or a duration under one
/// millisecond, turns warnings off. Takes effect for the checks that follow.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let before = grace::report::stall_threshold();
/// grace::report::set_stall_threshold(Some(Duration::from_secs(30)));
/// assert_eq!(grace::report::stall_threshold(), Some(Duration::from_secs(30)));
/// grace::report::set_stall_threshold(before);
/// ```
pub fn set_stall_threshold(threshold: Option<Duration>) {
    stall_env();
    let ms = threshold.map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64);
    // Relaxed: a setting.
    STALL_MS.store(ms, Ordering::Relaxed);
}

/// Which flavor a [`Stall`] is in.
///
/// # Examples
///
/// ```
/// use grace::report::StallFlavor;
/// assert_ne!(StallFlavor::Rcu, StallFlavor::Srcu { domain: 16 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallFlavor {
    /// The RCU flavor (`grace::rcu`).
    Rcu,
    /// An SRCU domain, by its number ([`Srcu::id`](crate::srcu::Srcu::id)).
    Srcu {
        /// The domain's number.
        domain: u64,
    },
}

/// One stall: a grace period held by a reader longer than the threshold.
///
/// # Examples
///
/// ```
/// grace::report::set_stall_hook(|s: &grace::report::Stall| {
///     eprintln!("{s} (grace period {})", s.grace_period);
/// });
/// # grace::report::reset_stall_hook();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The flavor, and for SRCU the domain.
    pub flavor: StallFlavor,
    /// RCU: the name of the reader's thread (its id where it has no name). SRCU: `None`.
    pub thread: Option<String>,
    /// How long the grace period had waited when the warning was issued (a lower bound of
    /// how long the reader has been inside).
    pub held: Duration,
    /// The grace period's number (1 for the first).
    pub grace_period: u64,
    /// Whether it was an expedited grace period (RCU).
    pub expedited: bool,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.expedited { "expedited " } else { "" };
        match self.flavor {
            StallFlavor::Rcu => write!(
                f,
                "RCU stall: thread '{}' has held {kind}grace period {} for {} inside a \
                 read-side section",
                self.thread.as_deref().unwrap_or("?"),
                self.grace_period,
                ms(self.held)
            ),
            StallFlavor::Srcu { domain } => write!(
                f,
                "SRCU stall: a reader in SRCU domain #{domain} has held its grace period {} \
                 for {}",
                self.grace_period,
                ms(self.held)
            ),
        }
    }
}

type Hook = Arc<dyn Fn(&Stall) + Send + Sync>;

static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

/// Stall warnings issued so far, and the most recent ones (for the report).
static STALLS_TOTAL: AtomicU64 = AtomicU64::new(0);
static RECENT: Mutex<VecDeque<Stall>> = Mutex::new(VecDeque::new());
/// How many stalls the report keeps.
const RECENT_MAX: usize = 8;

/// Replace the stall hook: `hook` is called once per stall, on the thread running the grace
/// period (or the SRCU background thread), with no lock of grace's held. It must not wait for
/// a grace period of the flavor that stalled. The default prints one line to standard error.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// static STALLS: AtomicU64 = AtomicU64::new(0);
/// grace::report::set_stall_hook(|_stall| {
///     STALLS.fetch_add(1, Ordering::Relaxed);
/// });
/// grace::report::reset_stall_hook();
/// ```
pub fn set_stall_hook(hook: impl Fn(&Stall) + Send + Sync + 'static) {
    *lock(&HOOK) = Some(Arc::new(hook));
}

/// Go back to the default stall hook (one line on standard error).
///
/// # Examples
///
/// ```
/// grace::report::set_stall_hook(|s| eprintln!("{s}"));
/// grace::report::reset_stall_hook();
/// ```
pub fn reset_stall_hook() {
    *lock(&HOOK) = None;
}

/// Issue a stall warning: record it, then call the hook outside every lock.
#[cold]
#[inline(never)]
fn warn_stall(stall: Stall) {
    // Relaxed: a statistic.
    STALLS_TOTAL.fetch_add(1, Ordering::Relaxed);
    {
        let mut r = lock(&RECENT);
        if r.len() == RECENT_MAX {
            r.pop_front();
        }
        r.push_back(stall.clone());
    }
    let hook = lock(&HOOK).clone();
    match hook {
        Some(h) => {
            // The hook runs on a grace-period thread: a panic must not unwind into it.
            let run = std::panic::AssertUnwindSafe(|| h(&stall));
            if std::panic::catch_unwind(run).is_err() {
                eprintln!("grace: the stall hook panicked; the warning was: {stall}");
            }
        }
        None => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "grace: {stall}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The grace-period side: what the RCU engine and SRCU domains record
// ---------------------------------------------------------------------------------------

/// What the RCU grace-period engine records for reports and stall warnings. Written only by
/// the thread running the grace period (under the engine's lock); read racily by reports, so
/// the fields are independent snapshots.
pub(crate) struct GpWatch {
    /// Start of the running grace period (stamp); 0 when none runs.
    started: AtomicU64,
    /// Its number (1 for the first).
    number: AtomicU64,
    expedited: AtomicBool,
    /// The slot the running grace period waits on now, or null.
    slot: AtomicPtr<Slot>,
    /// Since when (stamp).
    slot_since: AtomicU64,
}

impl GpWatch {
    pub(crate) const fn new() -> GpWatch {
        GpWatch {
            started: AtomicU64::new(0),
            number: AtomicU64::new(0),
            expedited: AtomicBool::new(false),
            slot: AtomicPtr::new(std::ptr::null_mut()),
            slot_since: AtomicU64::new(0),
        }
    }

    /// A grace period (number `number`) starts.
    pub(crate) fn started(&self, number: u64, expedited: bool) {
        // Relaxed (all): diagnostics, read racily by reports.
        self.number.store(number, Ordering::Relaxed);
        self.expedited.store(expedited, Ordering::Relaxed);
        self.started.store(stamp(), Ordering::Relaxed);
    }

    /// The running grace period ends.
    pub(crate) fn ended(&self) {
        // Relaxed: diagnostics.
        self.started.store(0, Ordering::Relaxed);
    }

    fn now(&self) -> Option<(Duration, u64, bool, Option<WaitedReader>)> {
        // Relaxed (all): diagnostics; a report may pair fields of two grace periods, which
        // a person reading it can tell from the numbers.
        let started = self.started.load(Ordering::Relaxed);
        if started == 0 {
            return None;
        }
        let p = self.slot.load(Ordering::Relaxed);
        // SAFETY: slots are leaked by Readers::push and never freed.
        let waited = unsafe { p.as_ref() }.map(|s| WaitedReader {
            thread: s.name().map(|n| n.to_string()),
            waited: since(self.slot_since.load(Ordering::Relaxed)),
        });
        Some((
            since(started),
            self.number.load(Ordering::Relaxed),
            self.expedited.load(Ordering::Relaxed),
            waited,
        ))
    }
}

/// The wait of a grace period for one slot (`GpEngine::wait_slot`): records the slot in the
/// watch on the first look that finds it reading, checks the stall threshold every few looks,
/// warns once. Dropping it clears the slot.
pub(crate) struct SlotWait<'a> {
    watch: &'a GpWatch,
    slot: &'a Slot,
    ticks: u64,
    warned: bool,
}

impl<'a> SlotWait<'a> {
    #[inline]
    pub(crate) fn new(watch: &'a GpWatch, slot: &'a Slot) -> SlotWait<'a> {
        SlotWait {
            watch,
            slot,
            ticks: 0,
            warned: false,
        }
    }

    /// One more look found the slot reading.
    #[inline]
    pub(crate) fn tick(&mut self) {
        self.ticks += 1;
        if self.ticks == 1 {
            self.first();
        } else if self.ticks % 16 == 0 && !self.warned {
            self.check();
        }
    }

    #[cold]
    fn first(&self) {
        // Relaxed: diagnostics.
        self.watch.slot_since.store(stamp(), Ordering::Relaxed);
        self.watch
            .slot
            .store(self.slot as *const Slot as *mut Slot, Ordering::Relaxed);
    }

    #[cold]
    fn check(&mut self) {
        let Some(limit) = stall_threshold() else {
            return;
        };
        // Relaxed: written by this thread.
        let held = since(self.watch.started.load(Ordering::Relaxed));
        if held < limit {
            return;
        }
        self.warned = true;
        warn_stall(Stall {
            flavor: StallFlavor::Rcu,
            thread: Some(
                self.slot
                    .name()
                    .map_or_else(|| "?".to_string(), |n| n.to_string()),
            ),
            held,
            // Relaxed: written by this thread.
            grace_period: self.watch.number.load(Ordering::Relaxed),
            expedited: self.watch.expedited.load(Ordering::Relaxed),
        });
    }
}

impl Drop for SlotWait<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.ticks != 0 {
            // Relaxed: diagnostics.
            self.watch
                .slot
                .store(std::ptr::null_mut(), Ordering::Relaxed);
        }
    }
}

/// An SRCU domain's stall clock: since when its running grace period has found readers
/// inside, keyed by the sequence value, and whether that stall was reported.
pub(crate) struct SrcuWatch {
    state: Mutex<Option<(u64, Instant, bool)>>,
}

impl SrcuWatch {
    pub(crate) fn new() -> SrcuWatch {
        SrcuWatch {
            state: Mutex::new(None),
        }
    }

    /// Grace period `number` (sequence value `seq`) of `domain` found readers still inside;
    /// warn once if it has for longer than the threshold. Called with no lock held.
    pub(crate) fn waiting(&self, domain: u64, number: u64, seq: u64) {
        let now = Instant::now();
        let held = {
            let mut st = lock(&self.state);
            match &mut *st {
                Some((s, since, warned)) if *s == seq => {
                    if *warned {
                        return;
                    }
                    let held = now.saturating_duration_since(*since);
                    match stall_threshold() {
                        Some(limit) if held >= limit => {
                            *warned = true;
                            held
                        }
                        _ => return,
                    }
                }
                other => {
                    *other = Some((seq, now, false));
                    return;
                }
            }
        };
        warn_stall(Stall {
            flavor: StallFlavor::Srcu { domain },
            thread: None,
            held,
            grace_period: number,
            expedited: false,
        });
    }

    /// How long the grace period running at sequence value `seq` has found readers inside;
    /// `None` when it has not waited for any (or another one is running now).
    pub(crate) fn waited(&self, seq: u64) -> Option<Duration> {
        lock(&self.state)
            .as_ref()
            .filter(|(s, _, _)| *s == seq)
            .map(|(_, since, _)| since.elapsed())
    }
}

/// One SRCU domain's callbacks and grace period in a [`Report`] (domains that have used
/// `call` or `start_poll`).
///
/// # Examples
///
/// ```
/// let d = grace::srcu::Srcu::new()?;
/// d.call(|| {});
/// let r = grace::report();
/// let row = r.srcu_domains.iter().find(|s| s.domain == d.id()).expect("listed");
/// println!("SRCU domain #{}: {} callbacks pending", row.domain, row.pending.objects);
/// # d.barrier();
/// # Ok::<(), grace::srcu::SrcuError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrcuDomainReport {
    /// The domain's number ([`Srcu::id`](crate::srcu::Srcu::id)).
    pub domain: u64,
    /// Callbacks queued and not yet run, and the bytes they free.
    pub pending: Counts,
    /// Grace periods completed.
    pub grace_periods: u64,
    /// The grace period's phase.
    pub phase: crate::srcu::SrcuPhase,
    /// How long the running grace period has waited for readers (`None`: it is not waiting).
    pub waiting_for_readers: Option<Duration>,
    /// Whether the domain is in flood mode now.
    pub flood: bool,
    /// Times it entered flood mode.
    pub floods: u64,
    /// Its callback shards with callbacks waiting (segments by grace-period number, counted
    /// from the domain's first). Callbacks queued lazily and not yet given a grace period (at
    /// most 64 per shard) are in [`pending`](Self::pending) but in no shard's segments yet.
    pub shards: Vec<ShardReport>,
}

/// One live [`Pending`](crate::pending::Pending) in a [`Report`].
///
/// # Examples
///
/// ```
/// for p in grace::report().pendings {
///     println!("{}: {} objects", p.name, p.pending.objects);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingReport {
    /// Its element and flavor types, e.g. `Pending<my_app::Node, grace::Rcu>`.
    pub name: String,
    /// Objects held back (waiting for a grace period or for processing) and their bytes.
    pub pending: Counts,
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// The reader a grace period waits on.
///
/// # Examples
///
/// ```
/// if let Some(w) = grace::report().grace_period.waiting_on {
///     println!("waiting on {:?} for {:?}", w.thread, w.waited);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitedReader {
    /// The reader's thread name (its id where it has no name).
    pub thread: Option<String>,
    /// How long the grace period has waited on it.
    pub waited: Duration,
}

/// The RCU flavor's grace-period state in a [`Report`].
///
/// # Examples
///
/// ```
/// let gp = grace::report().grace_period;
/// println!("{} grace periods, phase {:?}", gp.completed, gp.phase);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GracePeriodReport {
    /// Normal grace periods completed.
    pub completed: u64,
    /// Expedited grace periods completed.
    pub expedited_completed: u64,
    /// The engine's phase.
    pub phase: GpPhase,
    /// The running grace period's number (1 for the first); `None` when none runs.
    pub running: Option<u64>,
    /// Whether the running one is expedited.
    pub running_expedited: bool,
    /// How long it has been running.
    pub age: Option<Duration>,
    /// The reader it waits on, if it waits on one now: the oldest reader that matters.
    pub waiting_on: Option<WaitedReader>,
}

/// The RCU callbacks of one shard in a [`Report`].
///
/// # Examples
///
/// ```
/// for s in grace::report().shards {
///     println!("shard {}: {} waiting in {} segments", s.shard, s.waiting_callbacks, s.segments);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardReport {
    /// The shard's index (one shard per CPU).
    pub shard: usize,
    /// Segments waiting for a grace period (each for its own).
    pub segments: u64,
    /// Callbacks waiting for a grace period, in those segments.
    pub waiting_callbacks: u64,
    /// Bytes they free.
    pub waiting_bytes: u64,
    /// Callbacks whose grace period has ended (the done segment), not yet invoked.
    pub ready_callbacks: u64,
    /// Bytes they free.
    pub ready_bytes: u64,
    /// The waiting segments, oldest first: callbacks per segment.
    pub per_segment: Vec<SegmentReport>,
}

impl ShardReport {
    /// Shard `shard`'s row from its waiting segments, as (grace-period number, callbacks,
    /// bytes) oldest first, and its ready callbacks; `None` when nothing waits there.
    pub(crate) fn new(
        shard: usize,
        segments: impl IntoIterator<Item = (u64, u64, u64)>,
        ready_callbacks: u64,
        ready_bytes: u64,
    ) -> Option<ShardReport> {
        let per_segment: Vec<SegmentReport> = segments
            .into_iter()
            .map(|(grace_period, callbacks, bytes)| SegmentReport {
                grace_period,
                callbacks,
                bytes,
            })
            .collect();
        let s = ShardReport {
            shard,
            segments: per_segment.len() as u64,
            waiting_callbacks: per_segment.iter().map(|g| g.callbacks).sum(),
            waiting_bytes: per_segment.iter().map(|g| g.bytes).sum(),
            ready_callbacks,
            ready_bytes,
            per_segment,
        };
        (s.waiting_callbacks + s.ready_callbacks > 0).then_some(s)
    }

    /// The shard's lines of the text report.
    fn write(&self, f: &mut fmt::Formatter<'_>, indent: &str) -> fmt::Result {
        writeln!(
            f,
            "{indent}shard {:>3}: {} callbacks ({}) waiting for a grace period in {} segment(s), \
             {} ({}) ready to run",
            self.shard,
            self.waiting_callbacks,
            bytes(self.waiting_bytes),
            self.segments,
            self.ready_callbacks,
            bytes(self.ready_bytes)
        )?;
        for seg in &self.per_segment {
            writeln!(
                f,
                "{indent}  {} callbacks ({}) wait for grace period {}",
                seg.callbacks,
                bytes(seg.bytes),
                seg.grace_period
            )?;
        }
        Ok(())
    }

    fn json(&self, j: &mut Json) {
        j.open();
        j.num("shard", self.shard as u64);
        j.num("segments", self.segments);
        j.num("waiting_callbacks", self.waiting_callbacks);
        j.num("waiting_bytes", self.waiting_bytes);
        j.num("ready_callbacks", self.ready_callbacks);
        j.num("ready_bytes", self.ready_bytes);
        j.array("segments_waiting", &self.per_segment, |j, g| {
            j.open();
            j.num("grace_period", g.grace_period);
            j.num("callbacks", g.callbacks);
            j.num("bytes", g.bytes);
            j.close();
        });
        j.close();
    }
}

/// One segment of a shard's callbacks in a [`Report`]: the callbacks that wait for the same
/// grace period (the kernel's `rcu_segcblist` segments).
///
/// # Examples
///
/// ```
/// for shard in grace::report().shards {
///     for seg in shard.per_segment {
///         println!("{} callbacks wait for grace period {}", seg.callbacks, seg.grace_period);
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentReport {
    /// The grace period they wait for (its number: it ends when that many have completed).
    pub grace_period: u64,
    /// Callbacks in the segment.
    pub callbacks: u64,
    /// Bytes they free.
    pub bytes: u64,
}

/// Everything that explains memory stranded behind grace periods, from [`report()`]: print
/// it (`{}`), or write it as JSON ([`Report::to_json`]).
///
/// # Examples
///
/// ```
/// let r = grace::report();
/// println!("{} bytes pending; {r}", r.usage.total().bytes);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// Objects and bytes pending per API.
    pub usage: Usage,
    /// The memory budget, if any ([`crate::pressure::set_budget`]).
    pub budget: Option<u64>,
    /// The RCU grace period: number, phase, age, the reader it waits on.
    pub grace_period: GracePeriodReport,
    /// Threads inside an RCU read-side section when the report was taken (names, or ids
    /// where unnamed).
    pub readers_inside: Vec<String>,
    /// RCU callbacks per shard (shards with nothing waiting are left out). Callbacks still
    /// in the queuing threads' rings are not in any shard yet.
    pub shards: Vec<ShardReport>,
    /// The RCU flavor's counters.
    pub rcu: crate::rcu::Stats,
    /// `kvfree`'s counters, fallbacks included.
    pub kvfree: crate::kvfree::Stats,
    /// The memory-pressure layer's counters: budget, flood mode, shrinker.
    pub pressure: crate::pressure::Stats,
    /// Every SRCU domain with callbacks or polled cookies, one row each.
    pub srcu_domains: Vec<SrcuDomainReport>,
    /// Every live `Pending`, one row each.
    pub pendings: Vec<PendingReport>,
    /// Stall warnings issued so far.
    pub stalls: u64,
    /// The most recent of them (up to 8), oldest first.
    pub recent_stalls: Vec<Stall>,
}

/// Take a [`Report`] now: a snapshot of counters read one after another (each is exact, the
/// set is not one atomic picture).
///
/// # Examples
///
/// ```
/// for i in 0..100u64 {
///     grace::rcu::call_sized(64, move || { let _ = i; });
/// }
/// let r = grace::report();
/// eprintln!("{r}");
/// grace::rcu::barrier();
/// assert_eq!(grace::report().usage.call_rcu.objects, 0);
/// ```
pub fn report() -> Report {
    let rcu = crate::rcu::stats();
    let watch = crate::rcu::gp_watch().now();
    let grace_period = GracePeriodReport {
        completed: rcu.grace_periods,
        expedited_completed: rcu.expedited_grace_periods,
        phase: rcu.phase,
        running: watch.as_ref().map(|w| w.1),
        running_expedited: watch.as_ref().is_some_and(|w| w.2),
        age: watch.as_ref().map(|w| w.0),
        waiting_on: watch.and_then(|w| w.3),
    };
    // Each shard's waiting figures come from one snapshot of its segments (so they add up);
    // the ready figures from another look.
    let segments = crate::rcu::shard_segments();
    let ready = crate::rcu::shard_waiting();
    let shards = segments
        .into_iter()
        .enumerate()
        .filter_map(|(i, segs)| {
            let w = ready.get(i).copied().unwrap_or_default();
            ShardReport::new(i, segs, w.ready_callbacks, w.ready_bytes)
        })
        .collect();
    Report {
        usage: crate::pressure::usage(),
        budget: crate::pressure::settings().budget,
        grace_period,
        readers_inside: crate::rcu::readers_inside()
            .into_iter()
            .map(|n| n.map_or_else(|| "?".to_string(), |n| n.to_string()))
            .collect(),
        shards,
        rcu,
        kvfree: crate::kvfree::stats(),
        pressure: crate::pressure::stats(),
        srcu_domains: crate::srcu::domain_reports(),
        pendings: crate::pressure::pending_reports(),
        // Relaxed: a statistic.
        stalls: STALLS_TOTAL.load(Ordering::Relaxed),
        recent_stalls: lock(&RECENT).iter().cloned().collect(),
    }
}

/// A duration as milliseconds with one decimal, or seconds above ten.
fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Bytes for a person: B, KiB, MiB, GiB.
fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if b < 1024 {
        format!("{b} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.2} GiB", f / (K * K * K))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.usage.total();
        writeln!(f, "grace report")?;
        write!(
            f,
            "  pending: {} objects, {}",
            total.objects,
            bytes(total.bytes)
        )?;
        match self.budget {
            Some(b) => writeln!(f, " (budget {})", bytes(b))?,
            None => writeln!(f, " (no budget)")?,
        }
        let row = |f: &mut fmt::Formatter<'_>, name: &str, c: Counts| {
            writeln!(
                f,
                "    {name:<24} {:>12} objects {:>12}",
                c.objects,
                bytes(c.bytes)
            )
        };
        row(f, "rcu call", self.usage.call_rcu)?;
        row(f, "kvfree", self.usage.kvfree)?;
        row(f, "Pending (all)", self.usage.pending)?;
        for p in &self.pendings {
            writeln!(
                f,
                "      {:<22} {:>12} objects {:>12}",
                p.name,
                p.pending.objects,
                bytes(p.pending.bytes)
            )?;
        }
        row(f, "srcu call (all domains)", self.usage.call_srcu)?;
        for d in &self.srcu_domains {
            write!(
                f,
                "      SRCU domain #{:<8}     {:>12} objects {:>12}; {} grace periods, phase {:?}",
                d.domain,
                d.pending.objects,
                bytes(d.pending.bytes),
                d.grace_periods,
                d.phase
            )?;
            if let Some(w) = d.waiting_for_readers {
                write!(f, ", waiting for readers for {}", ms(w))?;
            }
            if d.flood {
                write!(f, ", in flood mode")?;
            }
            writeln!(f, " (flood mode entered {} times)", d.floods)?;
            for s in &d.shards {
                s.write(f, "        ")?;
            }
        }

        let gp = &self.grace_period;
        write!(
            f,
            "  rcu grace periods: {} completed, {} expedited; ",
            gp.completed, gp.expedited_completed
        )?;
        match (gp.running, gp.age) {
            (Some(n), Some(age)) => {
                let kind = if gp.running_expedited {
                    "expedited "
                } else {
                    ""
                };
                write!(
                    f,
                    "{kind}grace period {n}, phase {:?}, running for {}",
                    gp.phase,
                    ms(age)
                )?;
                if let Some(w) = &gp.waiting_on {
                    write!(
                        f,
                        ", waiting on thread '{}' for {}",
                        w.thread.as_deref().unwrap_or("?"),
                        ms(w.waited)
                    )?;
                }
                writeln!(f)?;
            }
            _ => writeln!(f, "idle")?,
        }
        if self.readers_inside.is_empty() {
            writeln!(f, "  rcu readers inside a section: none")?;
        } else {
            let names: Vec<String> = self
                .readers_inside
                .iter()
                .map(|n| format!("'{n}'"))
                .collect();
            writeln!(f, "  rcu readers inside a section: {}", names.join(", "))?;
        }
        writeln!(
            f,
            "  rcu callbacks: {} queued, {} invoked ({} by queuing threads), {} pending, {} panicked",
            self.rcu.callbacks_queued,
            self.rcu.callbacks_invoked,
            self.rcu.callbacks_invoked_locally,
            self.rcu.callbacks_pending,
            self.rcu.callback_panics
        )?;
        for s in &self.shards {
            s.write(f, "    ")?;
        }
        let p = &self.pressure;
        writeln!(
            f,
            "  expedites: {} synchronize_expedited; flood mode entered {} times (expedites \
             that shard's grace periods); {} by enqueuers over the budget; {} shrinker scans \
             (each expedites)",
            self.rcu.expedited_grace_periods, p.floods, p.expedited, p.scans
        )?;
        writeln!(
            f,
            "  budget: {} enqueues over it, {} helped ({} objects run), {} waited, {} overran",
            p.over_budget, p.helped, p.helped_objects, p.budget_waits, p.overruns
        )?;
        writeln!(
            f,
            "  shrinker: {} scans, {} objects freed at once",
            p.scans, p.scan_freed
        )?;
        let k = &self.kvfree;
        writeln!(
            f,
            "  kvfree fallbacks: {} reserve arrays, {} small nodes, {} synchronous grace \
             periods, {} retries, {} callback records; {} backpressure waits; peak {}",
            k.fallback_reserve,
            k.fallback_node,
            k.fallback_sync_gp,
            k.fallback_retry,
            k.fallback_callback,
            k.backpressure_waits,
            bytes(k.peak_bytes_pending)
        )?;
        write!(f, "  stall warnings: {}", self.stalls)?;
        match stall_threshold() {
            Some(t) => writeln!(f, " (threshold {})", ms(t))?,
            None => writeln!(f, " (off)")?,
        }
        for s in &self.recent_stalls {
            writeln!(f, "    {s}")?;
        }
        Ok(())
    }
}

/// A small JSON writer: objects with keys in the order written, strings escaped per RFC 8259.
struct Json {
    out: String,
    /// Whether the current object has a member already (one entry per open object).
    first: Vec<bool>,
}

impl Json {
    fn new() -> Json {
        Json {
            out: String::new(),
            first: Vec::new(),
        }
    }

    fn open(&mut self) {
        self.out.push('{');
        self.first.push(true);
    }

    fn close(&mut self) {
        self.out.push('}');
        self.first.pop();
    }

    fn key(&mut self, k: &str) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(',');
            }
            *first = false;
        }
        string(&mut self.out, k);
        self.out.push(':');
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    fn opt_num(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.out.push_str("null");
            }
        }
    }

    fn secs(&mut self, k: &str, d: Option<Duration>) {
        self.key(k);
        match d {
            Some(d) => {
                let _ = write!(self.out, "{:.6}", d.as_secs_f64());
            }
            None => self.out.push_str("null"),
        }
    }

    fn boolean(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    fn str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        match v {
            Some(v) => string(&mut self.out, v),
            None => self.out.push_str("null"),
        }
    }

    fn counts(&mut self, k: &str, c: Counts) {
        self.key(k);
        self.open();
        self.num("objects", c.objects);
        self.num("bytes", c.bytes);
        self.close();
    }

    fn array<T>(&mut self, k: &str, items: &[T], mut each: impl FnMut(&mut Json, &T)) {
        self.key(k);
        self.out.push('[');
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            each(self, it);
        }
        self.out.push(']');
    }
}

/// Append `s` as a JSON string.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn stall_json(j: &mut Json, s: &Stall) {
    j.open();
    match s.flavor {
        StallFlavor::Rcu => j.str("flavor", Some("rcu")),
        StallFlavor::Srcu { domain } => {
            j.str("flavor", Some("srcu"));
            j.num("domain", domain);
        }
    }
    j.str("thread", s.thread.as_deref());
    j.secs("held_s", Some(s.held));
    j.num("grace_period", s.grace_period);
    j.boolean("expedited", s.expedited);
    j.close();
}

impl Report {
    /// The report as one JSON object (no serializer involved; durations in seconds, sizes in
    /// bytes, absent values as `null`). Top-level keys: `pending` (per API and `total`),
    /// `pendings` and `srcu_domains` (one object each), `budget_bytes`, `grace_period`, `readers_inside`, `rcu_callbacks` (with `shards`),
    /// `expedites`, `budget`, `shrinker`, `kvfree_fallbacks`, `stalls`.
    ///
    /// # Examples
    ///
    /// ```
    /// let json = grace::report().to_json();
    /// assert!(json.starts_with('{') && json.ends_with('}'));
    /// assert!(json.contains("\"grace_period\""));
    /// ```
    pub fn to_json(&self) -> String {
        let mut j = Json::new();
        j.open();
        j.key("pending");
        j.open();
        j.counts("rcu_call", self.usage.call_rcu);
        j.counts("kvfree", self.usage.kvfree);
        j.counts("pending", self.usage.pending);
        j.counts("srcu_call", self.usage.call_srcu);
        j.counts("total", self.usage.total());
        j.close();
        j.array("pendings", &self.pendings, |j, p| {
            j.open();
            j.str("name", Some(&p.name));
            j.counts("pending", p.pending);
            j.close();
        });
        j.array("srcu_domains", &self.srcu_domains, |j, d| {
            j.open();
            j.num("domain", d.domain);
            j.counts("pending", d.pending);
            j.num("grace_periods", d.grace_periods);
            j.str("phase", Some(&format!("{:?}", d.phase)));
            j.secs("waiting_for_readers_s", d.waiting_for_readers);
            j.boolean("flood", d.flood);
            j.num("floods", d.floods);
            j.array("shards", &d.shards, |j, s| s.json(j));
            j.close();
        });
        j.opt_num("budget_bytes", self.budget);

        let gp = &self.grace_period;
        j.key("grace_period");
        j.open();
        j.num("completed", gp.completed);
        j.num("expedited_completed", gp.expedited_completed);
        j.str("phase", Some(&format!("{:?}", gp.phase)));
        j.opt_num("running", gp.running);
        j.boolean("running_expedited", gp.running_expedited);
        j.secs("age_s", gp.age);
        j.key("waiting_on");
        match &gp.waiting_on {
            Some(w) => {
                j.open();
                j.str("thread", w.thread.as_deref());
                j.secs("waited_s", Some(w.waited));
                j.close();
            }
            None => j.out.push_str("null"),
        }
        j.close();

        j.array("readers_inside", &self.readers_inside, |j, n| {
            string(&mut j.out, n)
        });

        j.key("rcu_callbacks");
        j.open();
        j.num("queued", self.rcu.callbacks_queued);
        j.num("invoked", self.rcu.callbacks_invoked);
        j.num("invoked_locally", self.rcu.callbacks_invoked_locally);
        j.num("pending", self.rcu.callbacks_pending);
        j.num("bytes_pending", self.rcu.bytes_pending);
        j.num("panics", self.rcu.callback_panics);
        j.array("shards", &self.shards, |j, s| s.json(j));
        j.close();

        let p = &self.pressure;
        j.key("expedites");
        j.open();
        j.num("synchronize_expedited", self.rcu.expedited_grace_periods);
        j.num("flood_mode", p.floods);
        j.num("over_budget", p.expedited);
        j.num("shrinker_scans", p.scans);
        j.close();

        j.key("budget");
        j.open();
        j.num("over_budget", p.over_budget);
        j.num("helped", p.helped);
        j.num("helped_objects", p.helped_objects);
        j.num("waits", p.budget_waits);
        j.num("overruns", p.overruns);
        j.close();

        j.key("shrinker");
        j.open();
        j.num("scans", p.scans);
        j.num("freed", p.scan_freed);
        j.close();

        let k = &self.kvfree;
        j.key("kvfree_fallbacks");
        j.open();
        j.num("reserve", k.fallback_reserve);
        j.num("node", k.fallback_node);
        j.num("sync_gp", k.fallback_sync_gp);
        j.num("retry", k.fallback_retry);
        j.num("callback", k.fallback_callback);
        j.num("backpressure_waits", k.backpressure_waits);
        j.num("peak_bytes_pending", k.peak_bytes_pending);
        j.close();

        j.key("stalls");
        j.open();
        j.num("total", self.stalls);
        j.secs("threshold_s", stall_threshold());
        j.array("recent", &self.recent_stalls, stall_json);
        j.close();

        j.close();
        j.out
    }
}

// ---------------------------------------------------------------------------------------
// The report signal
// ---------------------------------------------------------------------------------------

/// The signals [`install_signal_report`] can use.
///
/// # Examples
///
/// ```
/// let s: grace::report::ReportSignal = "USR2".parse().unwrap();
/// assert_eq!(s, grace::report::ReportSignal::Usr2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportSignal {
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
}

impl std::str::FromStr for ReportSignal {
    type Err = String;

    /// `USR1`, `SIGUSR1`, `USR2`, `SIGUSR2` (any case).
    fn from_str(s: &str) -> Result<ReportSignal, String> {
        let u = s.trim().to_ascii_uppercase();
        match u.strip_prefix("SIG").unwrap_or(&u) {
            "USR1" => Ok(ReportSignal::Usr1),
            "USR2" => Ok(ReportSignal::Usr2),
            _ => Err(format!("GRACE_REPORT_SIGNAL={s:?}: expected USR1 or USR2")),
        }
    }
}

type Sink = Arc<dyn Fn(&Report) + Send + Sync>;

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
/// The signal installed, as its number; 0 for none.
static INSTALLED: Mutex<i32> = Mutex::new(0);

/// Send the reports the signal asks for to `sink` instead of standard error (a logger, a
/// file, a test's channel). Called on the `grace-report` thread.
///
/// # Examples
///
/// ```
/// grace::report::set_report_sink(|r| eprintln!("{}", r.to_json()));
/// # grace::report::reset_report_sink();
/// ```
pub fn set_report_sink(sink: impl Fn(&Report) + Send + Sync + 'static) {
    *lock(&SINK) = Some(Arc::new(sink));
}

/// Send the signal's reports to standard error again (the default).
///
/// # Examples
///
/// ```
/// grace::report::set_report_sink(|r| println!("{r}"));
/// grace::report::reset_report_sink();
/// ```
pub fn reset_report_sink() {
    *lock(&SINK) = None;
}

/// Print [`report()`] each time the process receives `signal` (`kill -USR2 <pid>`): installs
/// a handler that only writes a byte to a pipe, and a thread, `grace-report`, that gathers the
/// report and prints it to standard error (or hands it to [`set_report_sink`]'s sink).
/// `GRACE_REPORT_SIGNAL=USR2` does the same when grace first initializes, with no change to
/// the program. Replaces any handler the program had for that signal. Installing the same
/// signal again does nothing.
///
/// # Errors
///
/// Not supported on this target (the handler needs Linux), another signal already
/// installed, or the system refused the pipe, the handler or the thread.
///
/// # Examples
///
/// ```
/// match grace::report::install_signal_report(grace::report::ReportSignal::Usr2) {
///     Ok(()) => println!("kill -USR2 {} prints a grace report", std::process::id()),
///     Err(e) => eprintln!("no report signal: {e}"),
/// }
/// ```
pub fn install_signal_report(signal: ReportSignal) -> std::io::Result<()> {
    let Some(signo) = crate::sys::signal::signo(signal == ReportSignal::Usr2) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no such signal on this target",
        ));
    };
    let mut installed = lock(&INSTALLED);
    if *installed == signo {
        return Ok(());
    }
    if *installed != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("the report signal is already installed on signal {installed}"),
        ));
    }
    let pipe = crate::sys::signal::install(signo)?;
    std::thread::Builder::new()
        .name("grace-report".into())
        .spawn(move || report_thread(pipe))?;
    *installed = signo;
    Ok(())
}

/// The `grace-report` thread: one report per request byte (requests that arrive while one is
/// printed are merged by the pipe's reads).
fn report_thread(mut pipe: std::fs::File) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {
                let r = report();
                let sink = lock(&SINK).clone();
                match sink {
                    Some(s) => {
                        // Keep the thread (and the signal) working after a panicking sink.
                        let run = std::panic::AssertUnwindSafe(|| s(&r));
                        if std::panic::catch_unwind(run).is_err() {
                            eprintln!("grace: the report sink panicked");
                        }
                    }
                    None => {
                        use std::io::Write;
                        let _ = write!(std::io::stderr(), "{r}");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("grace: the report signal's thread stops: {e}");
                return;
            }
        }
    }
}

/// `GRACE_REPORT_SIGNAL` and `GRACE_STALL_MS`, read when the RCU flavor first initializes.
pub(crate) fn init_from_env() {
    stall_env();
    if let Ok(v) = std::env::var("GRACE_REPORT_SIGNAL") {
        if v.trim().is_empty() || v.trim() == "0" || v.trim().eq_ignore_ascii_case("off") {
            return;
        }
        match v.parse::<ReportSignal>() {
            Ok(sig) => {
                if let Err(e) = install_signal_report(sig) {
                    eprintln!("grace: GRACE_REPORT_SIGNAL={v}: cannot install: {e}");
                }
            }
            Err(e) => eprintln!("grace: ignoring {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}e\u{7f}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e\\u007fé\"");
    }

    #[test]
    fn json_round_trips_through_a_real_parser() {
        let mut r = report();
        let odd = "tab\there \"quoted\" back\\slash \u{1b}[0m ünïcode";
        r.recent_stalls = vec![
            Stall {
                flavor: StallFlavor::Rcu,
                thread: Some(odd.to_string()),
                held: Duration::from_millis(1500),
                grace_period: 7,
                expedited: true,
            },
            Stall {
                flavor: StallFlavor::Srcu { domain: 32 },
                thread: None,
                held: Duration::from_secs(11),
                grace_period: 3,
                expedited: false,
            },
        ];
        r.grace_period.waiting_on = Some(WaitedReader {
            thread: Some(odd.to_string()),
            waited: Duration::from_millis(2),
        });
        r.shards = vec![ShardReport {
            shard: 3,
            segments: 1,
            waiting_callbacks: 5,
            waiting_bytes: 320,
            ready_callbacks: 0,
            ready_bytes: 0,
            per_segment: vec![SegmentReport {
                grace_period: 9,
                callbacks: 5,
                bytes: 320,
            }],
        }];
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(v["stalls"]["recent"][0]["thread"].as_str(), Some(odd));
        assert_eq!(v["stalls"]["recent"][0]["expedited"], true);
        assert_eq!(v["stalls"]["recent"][1]["domain"], 32);
        assert!(v["stalls"]["recent"][1]["thread"].is_null());
        assert_eq!(
            v["grace_period"]["waiting_on"]["thread"].as_str(),
            Some(odd)
        );
        assert_eq!(
            v["rcu_callbacks"]["shards"][0]["segments_waiting"][0]["grace_period"],
            9
        );
        let text = r.to_string();
        assert!(text.contains("SRCU domain #32"), "{text}");
        assert!(
            text.contains("5 callbacks (320 B) wait for grace period 9"),
            "{text}"
        );
    }

    #[test]
    fn stall_ms_parses() {
        assert_eq!(parse_stall_ms("250"), Ok(250));
        assert_eq!(parse_stall_ms("off"), Ok(0));
        assert!(parse_stall_ms("soon").is_err());
    }

    #[test]
    fn signal_names_parse() {
        assert_eq!("sigusr1".parse(), Ok(ReportSignal::Usr1));
        assert_eq!("USR2".parse(), Ok(ReportSignal::Usr2));
        assert!("HUP".parse::<ReportSignal>().is_err());
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(ms(Duration::from_millis(1500)), "1500.0 ms");
        assert_eq!(ms(Duration::from_secs(12)), "12.0 s");
    }
}
