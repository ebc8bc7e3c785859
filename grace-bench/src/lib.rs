//! Head-to-head benchmarks of `grace` against its peers, measured in the same
//! run and returned as data.
//!
//! Five suites, each a function returning one [`BenchResult`] per
//! implementation and thread count, a flood ([`run_flood_one`], one
//! [`FloodResult`] per run) and a list ([`run_list_one`], one [`ListResult`]
//! per measurement):
//!
//! * [`run_read`]: one outermost read-side critical section (enter + exit)
//!   for grace (RCU, SRCU regular and lite), liburcu (inline C and FFI),
//!   crossbeam-epoch, seize and haphazard;
//! * [`run_sync`]: the latency of one grace-period wait with idle readers,
//!   for grace (RCU normal and expedited, SRCU regular and lite, and SRCU
//!   across domains with one domain's reader blocked), the bare membarrier
//!   system call and liburcu;
//! * [`run_call`]: deferred-callback throughput (queue N per thread, then
//!   one drain) for grace, liburcu, crossbeam-epoch and seize;
//! * [`run_free`]: deferred free of a 64-byte object including its
//!   allocation and final free (N per thread, then one drain) for grace's
//!   `kvfree`, a plain `Box` drop, liburcu `call_rcu` + `free`,
//!   crossbeam-epoch `defer_destroy` and seize `retire`;
//! * [`run_reuse`]: an object cache recycling evicted entries through
//!   `Pending::dequeue` against allocating fresh entries;
//! * [`run_flood_one`]: every thread frees 64-byte objects as fast as it can
//!   for a duration beside readers: objects per second, peak bytes pending
//!   and peak RSS (see the [`flood`] module);
//! * [`run_list_one`]: a Harris–Michael sorted list written once over a
//!   small reclaimer trait, retiring through grace's `kvfree_raw` and
//!   `rcu::call`, crossbeam-epoch, seize and haphazard (hazard pointers):
//!   operations per second and peak unreclaimed nodes for a key range, a
//!   read share and a thread count;
//! * [`run_map_one`] and [`run_resize_one`]: concurrent hash maps (dashmap,
//!   papaya, scc, `RwLock<HashMap>`, and grace's own through one adapter)
//!   behind the small [`map::BenchMap`] trait: operations per second and
//!   peak RSS per key range, read share, key distribution (uniform or Zipf)
//!   and thread count, and the p99 lookup latency while the map doubles (see
//!   the [`map`] module);
//! * [`run_rculist_one`]: grace's `collections::List` (the kernel's
//!   `rculist`) against `RwLock<Vec<u64>>` and `Mutex<LinkedList<u64>>`:
//!   readers summing the whole list, writers replacing or removing and
//!   re-inserting one entry (see the [`rculist`] module).
//!
//! # Fairness
//!
//! Every implementation runs the same harness in the same process: the same
//! thread counts, the same start barrier, the same warm-up, the same clock
//! (`CLOCK_MONOTONIC`, which [`std::time::Instant`] uses and the C peer reads
//! directly) and the same batching (10 000 read sections per clock read).
//! Each peer is used the way its documentation recommends for the common
//! case (crossbeam's default collector, one shared seize collector, the
//! global haphazard domain, liburcu's default `call_rcu` thread), work is
//! kept identical and tiny (an empty section, a counter increment), and
//! results are checked: callback counts must match exactly. The suites
//! spawn every thread they use, so the caller's thread is never registered
//! with any implementation. The per-suite details are in the docs of
//! [`run_read`], [`run_sync`] and [`run_call`].
//!
//! # liburcu
//!
//! The liburcu peer (the C reference) needs liburcu-dev at build time; the
//! build script compiles `csrc/urcu_peer.c` when it finds liburcu-memb and
//! otherwise prints a cargo warning and leaves the liburcu rows out.
//! [`liburcu_status`] says which it was. See the [`liburcu`] module.
//!
//! # Implementation names
//!
//! [`BenchResult::impl_name`] is one of `grace-rcu`, `grace-rcu-expedited`,
//! `grace-srcu`, `grace-srcu-lite`, `grace-srcu-sync`,
//! `grace-srcu-lite-sync`, `grace-srcu-sync-cross`, `grace-kvfree`,
//! `grace-kvfree-drop`, `grace-pending-reuse`, `grace-pending-fresh`,
//! `grace-kvfree-fresh`, `box-drop`, `box-drop-no-gp`,
//! `liburcu-memb-inline-c`, `liburcu-memb-ffi`, `liburcu-memb`,
//! `crossbeam-epoch`, `seize`, `haphazard`, `membarrier-syscall`, the list
//! suite's `grace-call`, the `map` suite's `dashmap`, `papaya`, `scc`,
//! `rwlock-std` (and `grace`, grace's own map), the `rculist` suite's
//! `grace-list`, `rwlock-vec`, `mutex-linkedlist`, and the `call` suite's
//! second workload, the same names with `/free64` appended
//! (`grace-rcu/free64`, ...); other tools
//! parse these exactly. [`expected_impls`] lists them per suite, and
//! [`reference_impl`] names each suite's grace row, the one the others are
//! compared with.
//!
//! # Targets
//!
//! [`TARGETS`] bounds ratios of two rows of a suite, and [`check_targets`]
//! computes them: the `grace-srcu*` rows (grace's own SRCU domains) relative
//! to another grace row (an SRCU read section against an RCU one, a domain's
//! `synchronize` with another domain's reader blocked against the same
//! without), and DESIGN.md's `kvfree` figures: at most 1.5x a plain
//! allocate-and-free on one thread, and at least 3x faster than
//! crossbeam-epoch and seize at two threads and more.

#![warn(missing_docs)]

use std::time::Duration;

mod call;
pub mod flood;
mod free;
mod harness;
pub mod liburcu;
mod list;
pub mod map;
pub mod rculist;
mod read;
mod reuse;
mod sync;

pub use flood::{
    flood_impls, pressure_impls, run_flood_one, run_flood_with, FloodResult, FloodSetup,
};
pub use list::{
    list_impls, run_list_one, ListParams, ListResult, LIST_KEYS, LIST_READS, LIST_REFERENCE,
};
pub use map::{
    map_checks, map_impls, run_map_one, run_resize_one, Dist, MapCheck, MapParams, MapResult,
    ResizeParams, ResizeResult, Zipf,
};
pub use rculist::{rculist_impls, run_rculist_one, RculistParams, RculistResult};

/// The suites, by the names used in [`BenchResult::suite`] (the flood, whose
/// results are [`FloodResult`]s, is not one of them).
pub const SUITES: [&str; 5] = ["read", "sync", "call", "free", "reuse"];

/// One measured figure: one implementation at one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// The suite: one of [`SUITES`].
    pub suite: &'static str,
    /// The implementation (see the [crate docs](crate#implementation-names)).
    pub impl_name: String,
    /// Threads taking part (readers for `sync`, queuing workers for `call`,
    /// freeing workers for `free`, cache workers for `reuse`).
    pub threads: usize,
    /// Nanoseconds per operation: the mean over threads of each thread's
    /// ns/op for `read`; the mean latency of one wait for `sync`; total time
    /// over total callbacks (objects, cache operations) for `call` (`free`,
    /// `reuse`). `NaN` when the measurement could not be taken (then `note`
    /// says why).
    pub ns_per_op: f64,
    /// Operations per second: the sum of the threads' rates for `read`;
    /// waits per second for `sync`; callbacks per second, all threads
    /// together, for `call`. `NaN` when not measured.
    pub ops_per_s: f64,
    /// A caveat, or why the row was not measured.
    pub note: Option<String>,
    /// The spread of `ns_per_op` over the timed rounds it is the median of; `None` for suites
    /// measured in one run (`read`, `sync`) and for rows not measured.
    pub spread: Option<Spread>,
    /// The 1-minute load average when the row was recorded (`/proc/loadavg`); `None` where
    /// there is none. A load near or above the CPU count means the figures are noise.
    pub load_avg: Option<f64>,
}

/// The spread of a median over its timed rounds, in ns per operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The fastest round.
    pub min_ns_per_op: f64,
    /// The slowest round.
    pub max_ns_per_op: f64,
    /// How many timed rounds there were.
    pub rounds: usize,
}

impl BenchResult {
    /// Whether the row holds a measurement (finite, positive figures) rather
    /// than a skip notice.
    pub fn is_measured(&self) -> bool {
        self.ns_per_op.is_finite() && self.ns_per_op > 0.0
    }
}

/// What to measure and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The thread counts to measure at, in order. Zeros are ignored.
    pub threads: Vec<usize>,
    /// How long each measurement runs (after its warm-up); for `call`, it
    /// sets the number of callbacks per thread (one million per second,
    /// clamped to 5 000..=2 000 000).
    pub duration: Duration,
}

impl Default for Options {
    /// One thread and, if the machine has more than one CPU, as many
    /// threads as it has CPUs; 300 ms per measurement.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let mut threads = vec![1];
        if cpus > 1 {
            threads.push(cpus);
        }
        Self {
            threads,
            duration: Duration::from_millis(300),
        }
    }
}

impl Options {
    /// The thread counts actually used: `threads` without zeros.
    fn thread_counts(&self) -> impl Iterator<Item = usize> + '_ {
        self.threads.iter().copied().filter(|&t| t > 0)
    }
}

/// Runs the read suite: the cost of one outermost read-side critical
/// section.
///
/// For each thread count in `opts.threads`, each implementation runs on that
/// many threads at once; every thread builds its per-thread state, waits on
/// a common barrier, warms up, then times batches of 10 000 sections per
/// clock read for `opts.duration`. A row's `ns_per_op` is the mean of the
/// threads' ns/op and `ops_per_s` the sum of their rates. `grace-rcu`,
/// `grace-srcu` and `grace-srcu-lite` are measured together, the same threads
/// timing batches of each in turn, so that the ratios [`TARGETS`] bounds
/// compare figures taken on the same machine state. One operation is:
///
/// * `grace-rcu`: `grace::rcu::read_lock()` and drop of the guard;
/// * `grace-srcu`, `grace-srcu-lite`: `domain.read_lock()` and drop of the
///   guard on one `grace::srcu::Srcu` (regular readers) or `SrcuLite` domain
///   shared by the threads;
/// * `liburcu-memb-inline-c`: `urcu_memb_read_lock(); barrier();
///   urcu_memb_read_unlock()` in C with liburcu's inline read side
///   (`_LGPL_SOURCE`), what a C program gets;
/// * `liburcu-memb-ffi`: the same through liburcu's exported symbols called
///   from Rust, what a Rust binding to liburcu gets;
/// * `crossbeam-epoch`: `crossbeam_epoch::pin()` and drop (default
///   collector);
/// * `seize`: `collector.enter()` and drop, one collector shared by all
///   threads;
/// * `haphazard`: `protect` of a shared `haphazard::AtomicPtr` through the
///   thread's `HazardPointer`, then `reset_protection()`.
///
/// Every guard passes through [`std::hint::black_box`]. `progress` is called
/// with a short label (`"read grace-rcu t=2"`) before each measurement.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_read, Options};
///
/// let opts = Options { threads: vec![1, 2], duration: Duration::from_millis(100) };
/// for r in run_read(&opts, &mut |label| eprintln!("measuring {label}")) {
///     println!("{:<24} t={} {:>8.2} ns/op", r.impl_name, r.threads, r.ns_per_op);
/// }
/// ```
pub fn run_read(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    read::run(opts, progress)
}

/// Runs the sync suite: the latency of one grace-period wait with idle
/// readers.
///
/// For thread count `T`, the measuring thread and `T - 1` idle reader
/// threads register with the implementation (one read-side section each, or
/// liburcu's `register_thread`) and the idle ones park outside any section;
/// the measuring thread warms up and then waits back to back for
/// `opts.duration`. `ns_per_op` is the mean latency of one call:
///
/// * `grace-rcu`: `grace::rcu::synchronize()`;
/// * `grace-rcu-expedited`: `grace::rcu::synchronize_expedited()`;
/// * `membarrier-syscall`: one bare `membarrier(PRIVATE_EXPEDITED)` system
///   call after `REGISTER_PRIVATE_EXPEDITED`, the kernel's floor under an
///   expedited grace period (a `NaN` row with a note if the kernel refuses);
/// * `liburcu-memb`: `urcu_memb_synchronize_rcu()`;
/// * `grace-srcu-sync`, `grace-srcu-lite-sync`: `domain.synchronize()` on an
///   `Srcu` / `SrcuLite` domain whose idle readers are the other threads;
/// * `grace-srcu-sync-cross`: `grace-srcu-sync` on a domain B while a reader
///   of another domain A sleeps inside its section throughout (with A's grace
///   period pending); its ratio to `grace-srcu-sync` is a [`Target`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_sync, Options};
///
/// let opts = Options { threads: vec![1, 4], duration: Duration::from_millis(200) };
/// let rows = run_sync(&opts, &mut |_| {});
/// assert!(rows.iter().any(|r| r.impl_name == "grace-rcu-expedited"));
/// ```
pub fn run_sync(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    sync::run(opts, progress)
}

/// Runs the call suite: deferred-callback throughput, end to end.
///
/// For thread count `T`, `T` workers each queue `N` callbacks (one million
/// per second of `opts.duration`, clamped to 5 000..=2 000 000) that each
/// increment a shared counter, then one drain makes every callback run; the
/// time from the workers' common start to the end of the drain, divided by
/// `T * N`, is `ns_per_op`. An untimed warm-up round comes first, and the
/// counter must equal `T * N` afterwards (otherwise the row is `NaN` with a
/// note: a bug).
///
/// * `grace-rcu`: `grace::rcu::call(closure)` ×N, then
///   `grace::rcu::barrier()`;
/// * `liburcu-memb`: `call_rcu` ×N on preallocated heads (grace stores small
///   closures inline, so no allocation is timed for either), then
///   `rcu_barrier()`;
/// * `crossbeam-epoch`: `guard.defer(closure)` ×N, re-pinning every 64 and
///   flushing at the end, then `pin().flush()` in a loop until the count is
///   complete (gives up with a note after 10 s + 10 × duration);
/// * `seize`: `collector.retire(boxed, reclaimer)` ×N (seize retires
///   pointers, so the box is part of the cost), in guards re-entered every
///   64, then `Collector::reclaim_all()` once no thread is active.
///
/// The rows named `<impl>/free64` (`grace-rcu/free64`, ...) run a second
/// workload: each callback frees a 64-byte `Box` allocated just before it is
/// queued (`move || drop(b)` for every peer; liburcu's C callback hands the
/// same Rust box back to Rust to drop), the allocation inside the timing.
/// They are compared with `grace-rcu/free64` ([`reference_row`]). Every row
/// also reports its fastest and slowest timed round
/// ([`BenchResult::spread`]).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_call, Options};
///
/// let opts = Options { threads: vec![2], duration: Duration::from_millis(300) };
/// for r in run_call(&opts, &mut |_| {}) {
///     println!("{} {:.1} Mcallbacks/s", r.impl_name, r.ops_per_s / 1e6);
/// }
/// ```
pub fn run_call(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    call::run(opts, progress)
}

/// Runs the free suite: deferred free of a 64-byte object, including its
/// allocation and its final free, end to end.
///
/// For thread count `T`, `T` workers each allocate and hand over `N` objects
/// (ten million per second of `opts.duration`, clamped to
/// 50 000..=20 000 000), then one drain makes sure every object is freed; the
/// time from the workers' common start to the end of the drain, divided by
/// `T * N`, is `ns_per_op` (a full-size untimed warm-up round, then the median
/// of three timed rounds, as in [`run_call`]):
///
/// * `box-drop`: `Box::new([i as u8; 64])` and drop (the baseline);
/// * `grace-kvfree`: `grace::kvfree(Box::new([i as u8; 64]))`, drained by
///   `kvfree_barrier()`;
/// * `grace-kvfree-drop`: the same with the peers' 64-byte object whose
///   `Drop` counts (kvfree's drop-glue path);
/// * `liburcu-memb`: `malloc(64)` + `call_rcu` of a callback that counts and
///   frees, drained by `rcu_barrier()`;
/// * `crossbeam-epoch`: `pin()` + `defer_destroy` of the counting object per
///   object, drained by `pin().flush()` until every `Drop` has run;
/// * `seize`: `retire(ptr, reclaim::boxed)` of the counting object, drained
///   by `reclaim_all()`.
///
/// Counts are checked: a row whose objects were not all freed is `NaN` with
/// a note. See the `free` module docs for the details.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_free, Options};
///
/// let opts = Options { threads: vec![1, 2], duration: Duration::from_millis(300) };
/// for r in run_free(&opts, &mut |_| {}) {
///     println!("{} t={} {:.1} ns/object", r.impl_name, r.threads, r.ns_per_op);
/// }
/// ```
pub fn run_free(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    free::run(opts, progress)
}

/// Runs the reuse suite: an object cache recycling its evicted entries
/// through `Pending::dequeue` (`grace-pending-reuse`) against allocating a
/// fresh entry for every operation and retiring the evicted one through a
/// `Pending` (`grace-pending-fresh`) or `kvfree` (`grace-kvfree-fresh`), and
/// the no-grace-period floor (`box-drop-no-gp`). One operation replaces one
/// published 64-byte entry; `ns_per_op` is total time (final drain included)
/// over total operations, median of three rounds after a warm-up.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use grace_bench::{run_reuse, Options};
///
/// let opts = Options { threads: vec![1], duration: Duration::from_millis(300) };
/// let rows = run_reuse(&opts, &mut |_| {});
/// assert!(rows.iter().any(|r| r.impl_name == "grace-pending-reuse"));
/// ```
pub fn run_reuse(opts: &Options, progress: &mut dyn FnMut(&str)) -> Vec<BenchResult> {
    reuse::run(opts, progress)
}

/// A bound on the ratio of two rows of one suite at the same thread count:
/// `impl_name`'s ns/op divided by `reference`'s must be at most `max`, at
/// thread counts from `min_threads` to `max_threads`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The suite both rows belong to.
    pub suite: &'static str,
    /// The row being bounded.
    pub impl_name: &'static str,
    /// The row it is divided by.
    pub reference: &'static str,
    /// The largest acceptable ratio (below 1: `impl_name` must be that much
    /// faster).
    pub max: f64,
    /// The smallest thread count the target applies at.
    pub min_threads: usize,
    /// The largest thread count the target applies at.
    pub max_threads: usize,
    /// What the ratio means, for a person.
    pub what: &'static str,
}

impl Target {
    /// Whether the target applies at `threads`.
    pub fn applies_at(&self, threads: usize) -> bool {
        (self.min_threads..=self.max_threads).contains(&threads)
    }
}

/// The targets the suites are checked against (see [`check_targets`]).
pub const TARGETS: [Target; 6] = [
    Target {
        suite: "read",
        impl_name: "grace-srcu-lite",
        reference: "grace-rcu",
        max: 1.5,
        min_threads: 1,
        max_threads: usize::MAX,
        what: "an SRCU lite read section vs an RCU one",
    },
    Target {
        suite: "read",
        impl_name: "grace-srcu",
        reference: "grace-rcu",
        max: 3.0,
        min_threads: 1,
        max_threads: usize::MAX,
        what: "a regular SRCU read section vs an RCU one",
    },
    Target {
        suite: "sync",
        impl_name: "grace-srcu-sync-cross",
        reference: "grace-srcu-sync",
        max: 1.2,
        min_threads: 1,
        max_threads: usize::MAX,
        what: "domain B's synchronize with a reader of domain A blocked vs without",
    },
    Target {
        suite: "free",
        impl_name: "grace-kvfree",
        reference: "box-drop",
        max: 1.5,
        min_threads: 1,
        max_threads: 1,
        what: "kvfree of a 64-byte box vs a plain allocate+free, one thread",
    },
    Target {
        suite: "free",
        impl_name: "grace-kvfree",
        reference: "crossbeam-epoch",
        max: 1.0 / 3.0,
        min_threads: 2,
        max_threads: usize::MAX,
        what: "kvfree vs crossbeam-epoch defer_destroy (at least 3x faster), 2+ threads",
    },
    Target {
        suite: "free",
        impl_name: "grace-kvfree",
        reference: "seize",
        max: 1.0 / 3.0,
        min_threads: 2,
        max_threads: usize::MAX,
        what: "kvfree vs seize retire (at least 3x faster), 2+ threads",
    },
];

/// One [`Target`] evaluated at one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// The target.
    pub target: Target,
    /// The thread count both rows were measured at.
    pub threads: usize,
    /// `target.impl_name`'s ns/op divided by `target.reference`'s; `NaN`
    /// when either row is missing or was not measured.
    pub ratio: f64,
}

impl TargetCheck {
    /// `Some(true)` when the ratio is within the target, `Some(false)` when
    /// it is above it, `None` when it could not be computed.
    pub fn met(&self) -> Option<bool> {
        self.ratio
            .is_finite()
            .then_some(self.ratio <= self.target.max)
    }
}

/// The [`TARGETS`] of the suite(s) in `results`, evaluated at every thread
/// count in which the bounded row appears and the target applies, in
/// [`TARGETS`] order then thread order.
///
/// # Examples
///
/// ```
/// use grace_bench::{check_targets, BenchResult};
/// let row = |name: &str, ns: f64| BenchResult {
///     suite: "read",
///     impl_name: name.into(),
///     threads: 1,
///     ns_per_op: ns,
///     ops_per_s: 1e9 / ns,
///     note: None,
///     spread: None,
///     load_avg: None,
/// };
/// let rows = [row("grace-rcu", 1.0), row("grace-srcu-lite", 1.25), row("grace-srcu", 4.0)];
/// let checks = check_targets(&rows);
/// assert_eq!(checks.len(), 2);
/// assert_eq!((checks[0].ratio, checks[0].met()), (1.25, Some(true)));
/// assert_eq!((checks[1].ratio, checks[1].met()), (4.0, Some(false)));
/// ```
pub fn check_targets(results: &[BenchResult]) -> Vec<TargetCheck> {
    let find = |suite: &str, name: &str, threads: usize| {
        results
            .iter()
            .find(|r| r.suite == suite && r.impl_name == name && r.threads == threads)
    };
    let mut out = Vec::new();
    for target in TARGETS {
        let mut threads: Vec<usize> = results
            .iter()
            .filter(|r| r.suite == target.suite && r.impl_name == target.impl_name)
            .map(|r| r.threads)
            .filter(|&t| target.applies_at(t))
            .collect();
        threads.dedup();
        for t in threads {
            let ratio = match (
                find(target.suite, target.impl_name, t),
                find(target.suite, target.reference, t),
            ) {
                (Some(row), Some(reference)) if row.is_measured() && reference.is_measured() => {
                    row.ns_per_op / reference.ns_per_op
                }
                _ => f64::NAN,
            };
            out.push(TargetCheck {
                target,
                threads: t,
                ratio,
            });
        }
    }
    out
}

/// Runs the suite named `suite` (one of [`SUITES`]); `None` for another
/// name.
pub fn run_suite(
    suite: &str,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> Option<Vec<BenchResult>> {
    match suite {
        "read" => Some(run_read(opts, progress)),
        "sync" => Some(run_sync(opts, progress)),
        "call" => Some(run_call(opts, progress)),
        "free" => Some(run_free(opts, progress)),
        "reuse" => Some(run_reuse(opts, progress)),
        _ => None,
    }
}

/// The grace row of `suite` that every other row is compared with:
/// `grace-rcu` for `read`, `sync` and `call`, `grace-kvfree` for `free` (and
/// the flood), `grace-pending-reuse` for `reuse`.
pub fn reference_impl(suite: &str) -> &'static str {
    match suite {
        "free" | "flood" => "grace-kvfree",
        "reuse" => "grace-pending-reuse",
        _ => "grace-rcu",
    }
}

/// The row that `impl_name` of `suite` is compared with: [`reference_impl`]
/// with the row's workload suffix, so that a second workload of a suite (the
/// `call` suite's `/free64` rows) is compared within itself.
///
/// # Examples
///
/// ```
/// use grace_bench::reference_row;
/// assert_eq!(reference_row("call", "seize"), "grace-rcu");
/// assert_eq!(reference_row("call", "seize/free64"), "grace-rcu/free64");
/// ```
pub fn reference_row(suite: &str, impl_name: &str) -> String {
    let workload = impl_name.find('/').map_or("", |i| &impl_name[i..]);
    format!("{}{workload}", reference_impl(suite))
}

/// The implementations `suite` reports, in run order, given whether liburcu
/// is available in this build; empty for an unknown suite.
pub fn expected_impls(suite: &str) -> Vec<&'static str> {
    match suite {
        "read" => read::impls(),
        "sync" => sync::impls(),
        "call" => call::impls(),
        "free" => free::impls(),
        "reuse" => reuse::impls(),
        "flood" => flood::flood_impls(),
        "list" => list::list_impls(),
        "map" => map::map_impls(),
        "rculist" => rculist::rculist_impls(),
        _ => Vec::new(),
    }
}

/// How many times `run_<suite>` will call `progress` (one per measurement)
/// with these options: for sizing a progress bar. 0 for an unknown suite.
pub fn planned_steps(suite: &str, opts: &Options) -> usize {
    expected_impls(suite).len() * opts.thread_counts().count()
}

/// `Ok` when the liburcu peer was built in; otherwise why not (for example
/// that liburcu-dev was not found at build time).
pub fn liburcu_status() -> Result<(), &'static str> {
    if liburcu::available() {
        Ok(())
    } else {
        Err(liburcu::unavailable_reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_steps_counts_measurements() {
        let opts = Options {
            threads: vec![1, 0, 2],
            duration: Duration::from_millis(1),
        };
        let extra = usize::from(liburcu::available());
        assert_eq!(planned_steps("read", &opts), (6 + 2 * extra) * 2);
        assert_eq!(planned_steps("sync", &opts), (6 + extra) * 2);
        assert_eq!(planned_steps("call", &opts), (6 + 2 * extra) * 2);
        assert_eq!(planned_steps("free", &opts), (5 + extra) * 2);
        assert_eq!(planned_steps("reuse", &opts), 4 * 2);
        assert_eq!(planned_steps("nope", &opts), 0);
    }

    fn row(name: &str, threads: usize, ns: f64) -> BenchResult {
        harness::row("sync", name, threads, ns, 1e9 / ns, None)
    }

    #[test]
    fn targets_divide_by_the_reference_at_the_same_thread_count() {
        let rows = [
            row("grace-srcu-sync", 1, 100.0),
            row("grace-srcu-sync-cross", 1, 110.0),
            row("grace-srcu-sync", 2, 100.0),
            row("grace-srcu-sync-cross", 2, 150.0),
            row("grace-srcu-sync-cross", 4, 100.0),
        ];
        let checks = check_targets(&rows);
        let got: Vec<(usize, Option<bool>)> = checks.iter().map(|c| (c.threads, c.met())).collect();
        assert_eq!(got, [(1, Some(true)), (2, Some(false)), (4, None)]);
        assert!((checks[0].ratio - 1.1).abs() < 1e-12);
        assert!(checks[2].ratio.is_nan());
        // Rows of another suite with the same names are not mixed in.
        let mut read = rows.to_vec();
        read.iter_mut().for_each(|r| r.suite = "read");
        assert!(check_targets(&read).is_empty());
    }

    #[test]
    fn every_target_names_rows_of_its_suite() {
        for t in TARGETS {
            let impls = expected_impls(t.suite);
            assert!(impls.contains(&t.impl_name), "{t:?}");
            assert!(impls.contains(&t.reference), "{t:?}");
            assert!(t.max > 0.0 && t.min_threads <= t.max_threads, "{t:?}");
        }
    }

    #[test]
    fn targets_apply_only_at_their_thread_counts() {
        let row = |name: &str, threads: usize, ns: f64| {
            harness::row("free", name, threads, ns, 1e9 / ns, None)
        };
        let rows = [
            row("box-drop", 1, 10.0),
            row("grace-kvfree", 1, 12.0),
            row("crossbeam-epoch", 1, 100.0),
            row("box-drop", 2, 10.0),
            row("grace-kvfree", 2, 20.0),
            row("crossbeam-epoch", 2, 100.0),
            row("seize", 2, 50.0),
        ];
        let got: Vec<(&str, usize, Option<bool>)> = check_targets(&rows)
            .iter()
            .map(|c| (c.target.reference, c.threads, c.met()))
            .collect();
        assert_eq!(
            got,
            [
                ("box-drop", 1, Some(true)),
                ("crossbeam-epoch", 2, Some(true)),
                ("seize", 2, Some(false)),
            ]
        );
    }

    #[test]
    fn call_sizes_are_clamped() {
        assert_eq!(call::calls_per_thread(Duration::ZERO), 5_000);
        assert_eq!(call::calls_per_thread(Duration::from_millis(300)), 300_000);
        assert_eq!(call::calls_per_thread(Duration::from_secs(60)), 2_000_000);
    }
}
