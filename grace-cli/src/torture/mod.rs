//! Torture tests: the pipeline check of the kernel's rcutorture, against `grace::rcu`
//! ([`rcu`]), against several SRCU domains at once ([`srcu`]), and through the two deferral
//! APIs built on the flavors: `Pending<T>` ([`pending`], with `dequeue` reuse racing readers)
//! and `kvfree` ([`kvfree`]), both under allocation-failure injection.
//!
//! This module holds what they share: the element pipeline, the reader's check, the writer
//! that rotates through the grace-period APIs (or hands removed elements to a deferral API),
//! the callback chains, reader-thread churn and the final drain. Each torture supplies a
//! [`Host`]: its grace-period API (a [`grace::Flavor`]) plus whatever only it has.
//!
//! # The pipeline
//!
//! A writer thread keeps publishing a fresh *element* as the current one. The element it
//! replaces is *removed* (pipe stage 1) and then advances one stage per grace period that
//! elapses after its removal; at stage [`PIPE_LEN`] it is freed (back to the free list, to be
//! reused). Reader threads, inside a read-side section, load the current element and read
//! its stage twice, a little while apart. A reader can legitimately see stage 0 (current) or
//! 1 (removed while it looked), but stage 2 or more means a whole grace period ended after
//! the removal while this section, which began before it, was still running: the library
//! would have let the element be freed under the reader's feet. Each such observation is an
//! error. The histogram of stages seen is rcutorture's "Reader Pipe"; everything but its
//! first two buckets must be zero.
//!
//! Besides the stage, every element carries a *check* word: a generation number, bumped
//! each time the element is reused, and an "alive" bit, cleared when it is freed. A reader
//! that finds the bit clear, or the word changed during its section, saw a freed or reused
//! element: also an error.
//!
//! # No undefined behaviour, even when a bug is caught
//!
//! Elements live in a type-stable pool allocated once and only dropped after every thread
//! that could touch it is gone (callbacks hold an `Arc` on it). "Freeing" an element only
//! marks it and puts its index on the free list, so a reader that wrongly holds a freed
//! element reads a valid, marked object and reports it, instead of reading freed memory.
//!
//! # The writer
//!
//! The writer rotates between grace-period APIs every [`UPDATES_PER_MODE`] updates
//! ([`Mode`]); after each wait it checks the API's own promises (a cookie taken before a
//! grace period reads as completed after it). In the callback modes the removed element is
//! handed to a *chain*: a callback that advances it one stage and queues itself again until
//! the element is freed. In the *deferred* modes ([`Mode::deferred`]) the removed element
//! (stage 1) is handed, as a small token object that names it, to a deferral API of the host
//! (`Pending::enqueue`, `kvfree`, ...); whatever that API does to the token once the grace
//! period has ended (process it, drop it, free its memory) frees the element at once
//! ([`Pipeline::release`], which also checks that it happens exactly once). The hidden
//! `--inject-early-free` option makes the writer advance removed elements without waiting for
//! any grace period (the deferral hosts: dispose of the token at once, through the same code
//! that marks it processed), and readers linger in their sections: the check must fire, which
//! proves that it can.

pub mod kvfree;
pub mod map;
pub mod pending;
pub mod rcu;
pub mod srcu;

use grace::cookie::Cookie;
use grace::Flavor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The number of pipe stages: an element is freed once it reaches this stage.
pub const PIPE_LEN: usize = 10;

/// Elements in a pool (rcutorture uses `10 * PIPE_LEN`; callback chains in flight need more).
const POOL_SIZE: usize = 32 * PIPE_LEN;

/// Updates made with one grace-period API before the writer moves on to the next.
const UPDATES_PER_MODE: u64 = 5;

/// How often one reader thread (of each pool) is replaced by a new one.
const CHURN_EVERY: Duration = Duration::from_millis(500);

/// How many error descriptions a pipeline keeps.
const MAX_MESSAGES: usize = 8;

/// The `alive` bit of [`Element::check`]; the generation is in the bits above it.
const ALIVE: u64 = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long readers and writers run (the final drain comes on top).
    pub duration: Duration,
    /// Reader threads per pipeline alive at any time (`torture rcu` has one pipeline,
    /// `torture srcu` one per domain).
    pub readers: usize,
    /// Advance removed elements without waiting for grace periods (a deliberate bug).
    pub inject_early_free: bool,
    /// Make one in this many of grace's fallible allocations fail, on every thread, while
    /// the torture runs (`grace::alloc::inject_globally`); 0 = off. Only the `pending` and
    /// `kvfree` tortures use it.
    pub fail_one_in: u32,
}

/// What every torture reports, flattened into its report (and its `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// What was tortured: `"rcu"`, `"srcu"`, `"pending"` or `"kvfree"`.
    pub flavor: &'static str,
    /// Errors of every kind; non-zero fails the run.
    pub errors: u64,
    /// rcutorture's "Reader Pipe": how many reads saw each stage at most (index 0..=PIPE_LEN),
    /// every pipeline together.
    pub pipe: Vec<u64>,
    /// Read-side sections checked.
    pub reads: u64,
    /// Elements published by the writers.
    pub updates: u64,
    /// Seconds readers and writers ran (the drain is not included).
    pub duration_s: f64,
    /// Seconds the whole run took, drain included.
    pub total_s: f64,
    /// Reader threads started in all (churn included).
    pub reader_threads_started: u64,
    /// Reads that saw a stage above 1.
    pub pipe_errors: u64,
    /// Reads that saw a freed or reused element (or, for RCU, an invalid side-cell value).
    pub check_errors: u64,
    /// Broken API promises (a cookie not completed after its grace period, ...).
    pub api_errors: u64,
    /// Callbacks or elements that never came back (included in `errors`).
    pub lost: u64,
    /// `membarrier` or `fence`.
    pub barrier_mode: String,
    /// Whether the early free was injected on purpose.
    pub inject_early_free: bool,
    /// The first few errors, described.
    pub error_messages: Vec<String>,
}

impl Totals {
    /// Whether the run passed: no error, and something was checked (a run too short for one
    /// update and one read proves nothing, and must not say SUCCESS).
    pub fn passed(&self) -> bool {
        self.errors == 0 && !self.ran_nothing()
    }

    /// No update or no read happened (the duration was too short for the threads to start).
    fn ran_nothing(&self) -> bool {
        self.updates == 0 || self.reads == 0
    }

    /// rcutorture's Reader Pipe line: `<flavor>-torture: Reader Pipe:  <histogram>`.
    fn reader_pipe_line(&self) -> String {
        format!(
            "{}-torture: Reader Pipe:  {}\n",
            self.flavor,
            histogram(&self.pipe)
        )
    }

    /// `, EARLY FREE INJECTED` when it was.
    fn injected(&self) -> &'static str {
        if self.inject_early_free {
            ", EARLY FREE INJECTED"
        } else {
            ""
        }
    }

    /// The report's closing lines: errors (with `more` kinds of them, e.g. `isolation 0, `),
    /// duration, error descriptions, verdict.
    fn tail(&self, more: &str) -> String {
        use crate::ui::count;
        let mut o = format!(
            "  errors             {:>14}  (pipe {}, check {}, api {}, {more}lost {})\n",
            count(self.errors),
            self.pipe_errors,
            self.check_errors,
            self.api_errors,
            self.lost
        );
        o.push_str(&format!(
            "  duration           {:>12.2} s  ({:.2} s with the drain)\n",
            self.duration_s, self.total_s
        ));
        for m in &self.error_messages {
            o.push_str(&format!("  ! {m}\n"));
        }
        if self.passed() {
            o.push_str("--- End of test: SUCCESS\n");
        } else if self.errors == 0 {
            o.push_str(&format!(
                "--- End of test: FAILURE (nothing checked: {} updates, {} reads; use a longer \
                 --duration)\n",
                self.updates, self.reads
            ));
        } else {
            o.push_str(&format!(
                "--- End of test: FAILURE ({} errors)\n",
                count(self.errors)
            ));
        }
        o
    }
}

/// What the command line needs of a torture's report.
pub trait Verdict: Serialize {
    /// Whether the run passed (no error of any kind).
    fn passed(&self) -> bool;
    /// The report for a person.
    fn human(&self) -> String;
}

/// The progress bar of a torture of `flavor` run with `opts` (hidden unless `show` and
/// standard error is a terminal); its length is the duration in milliseconds, as `run`
/// expects.
pub fn progress_bar(flavor: &str, opts: &Options, show: bool) -> indicatif::ProgressBar {
    crate::ui::bar(
        opts.duration.as_millis() as u64,
        &format!("torture {flavor}"),
        show,
    )
}

/// One element of the pool.
struct Element {
    /// Pipe stage: 0 current, 1 removed, then +1 per grace period; freed at [`PIPE_LEN`].
    pipe: AtomicU32,
    /// `generation << 1 | ALIVE`; the bit is cleared when the element is freed.
    check: AtomicU64,
}

/// The grace-period API the writer uses for an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    /// `synchronize()`.
    Sync,
    /// `call()`, re-queued until the element is freed.
    Call,
    /// `start_poll()` then `poll_state()` / `poll_state_any()` until done.
    Poll,
    /// `synchronize_expedited()`.
    Expedited,
    /// `get_state()` then `cond_synchronize()`.
    CondSync,
    /// `call_hurry()`, re-queued until the element is freed.
    CallHurry,
    /// RCU: `start_poll_full()` then `poll_state_full()` until done.
    FullPoll,
    /// RCU: `get_state_full()` then `cond_synchronize_full()`.
    FullCond,
    /// `get_state()`, then a later `start_poll()`, polling both: the earlier cookie must
    /// never read as pending once the later one reads as completed.
    GetStatePoll,
    /// `call()` as in [`Mode::Call`], then `barrier()`: the chain's first step must have run
    /// when it returns.
    Barrier,
    /// SRCU: a raw section opened by the writer and closed by another thread
    /// (`read_lock_raw` / `read_unlock_raw` across a channel) around a `synchronize()`, which
    /// must wait for the close.
    RawHandoff,
    /// `Pending::enqueue` of a token that a `Process::with` closure releases.
    Enqueue,
    /// `Pending::enqueue_raw` (a raw pointer from `Box::into_raw`), same closure.
    EnqueueRaw,
    /// `Pending::try_enqueue` from inside a read-side section of the flavor (where the
    /// last-resort synchronous grace period is not allowed), `enqueue` outside it if the
    /// object came back.
    TryEnqueue,
    /// `Pending::enqueue` on a `Process::free()` pending: the token's `Drop` releases.
    EnqueueFree,
    /// `Pending::enqueue` on a `Process::run()` pending: the token's `Run::run` releases.
    EnqueueRun,
    /// `Pending::enqueue`, then `Pending::barrier()`: the element must be released when the
    /// barrier returns.
    PendingBarrier,
    /// `kvfree` of a token whose `Drop` releases (drop glue: the callback-engine path).
    Kvfree,
    /// `kvfree_raw` of the same kind of token.
    KvfreeRaw,
    /// `kvfree` of a token without drop glue, whose *deallocation* releases (the owner-frees
    /// path; seen by the `grace` binary's global allocator).
    KvfreeNoDrop,
    /// `kvfree` from inside a read-side section (no waiting allowed there).
    KvfreeInSection,
    /// `kvfree`, then `kvfree_barrier()`: the element must be released when it returns.
    KvfreeBarrier,
    /// No grace period at all (`--inject-early-free`).
    Inject,
    /// `--inject-early-free` for the deferral hosts: the token is disposed of at once, by the
    /// code that would process it after the grace period.
    EarlyFree,
}

impl Mode {
    /// The mode's name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Call => "call",
            Mode::Poll => "poll",
            Mode::Expedited => "expedited",
            Mode::CondSync => "cond_sync",
            Mode::CallHurry => "call_hurry",
            Mode::FullPoll => "poll_full",
            Mode::FullCond => "cond_sync_full",
            Mode::GetStatePoll => "get_state_poll",
            Mode::Barrier => "barrier",
            Mode::RawHandoff => "raw_handoff",
            Mode::Enqueue => "enqueue",
            Mode::EnqueueRaw => "enqueue_raw",
            Mode::TryEnqueue => "try_enqueue_in_section",
            Mode::EnqueueFree => "enqueue_process_free",
            Mode::EnqueueRun => "enqueue_process_run",
            Mode::PendingBarrier => "enqueue_barrier",
            Mode::Kvfree => "kvfree_drop",
            Mode::KvfreeRaw => "kvfree_raw",
            Mode::KvfreeNoDrop => "kvfree_no_drop_glue",
            Mode::KvfreeInSection => "kvfree_in_section",
            Mode::KvfreeBarrier => "kvfree_barrier",
            Mode::Inject | Mode::EarlyFree => "inject_early_free",
        }
    }

    /// Whether the mode hands the removed element to a deferral API of the host
    /// ([`Host::retire`]) rather than waiting or queueing callbacks itself.
    pub(crate) fn deferred(self) -> bool {
        matches!(
            self,
            Mode::Enqueue
                | Mode::EnqueueRaw
                | Mode::TryEnqueue
                | Mode::EnqueueFree
                | Mode::EnqueueRun
                | Mode::PendingBarrier
                | Mode::Kvfree
                | Mode::KvfreeRaw
                | Mode::KvfreeNoDrop
                | Mode::KvfreeInSection
                | Mode::KvfreeBarrier
                | Mode::EarlyFree
        )
    }

    /// `Some(hurry)` when the mode hands the removed element to a callback chain.
    fn chain(self) -> Option<bool> {
        match self {
            Mode::Call | Mode::Barrier => Some(false),
            Mode::CallHurry => Some(true),
            _ => None,
        }
    }
}

/// Lock `m`, also when a panicking thread poisoned it (the data are counters and indices).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One pipeline: the pool, the current element, and everything its threads count.
pub(crate) struct Pipeline {
    pool: Box<[Element]>,
    /// Index of the current element (published with Release, loaded with Acquire).
    current: AtomicUsize,
    free: Mutex<Vec<usize>>,
    /// `--inject-early-free`.
    pub(crate) inject: bool,
    /// The writer should finish; callbacks stop batching.
    pub(crate) stopping: AtomicBool,

    // Reader side.
    pipe: [AtomicU64; PIPE_LEN + 1],
    pub(crate) pipe_errors: AtomicU64,
    pub(crate) check_errors: AtomicU64,
    exit_callbacks_queued: AtomicU64,
    exit_callbacks_run: AtomicU64,

    // Writer side.
    /// rcutorture's "Free-Block Circulation": how many elements left stage `i`.
    circulation: [AtomicU64; PIPE_LEN + 1],
    pub(crate) updates: AtomicU64,
    /// Elements whose callback chain has not finished yet, or that a deferral API holds.
    in_flight: AtomicU64,
    /// Elements a deferral API released.
    released: AtomicU64,
    pub(crate) pipeline_callbacks: AtomicU64,
    pub(crate) api_errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

/// A reader's first look at the current element, from inside a section; checked again by
/// [`Pipeline::verify`] before the section ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Look {
    idx: usize,
    stage: u32,
    check: u64,
}

impl Pipeline {
    pub(crate) fn new(inject: bool) -> Pipeline {
        let pool: Box<[Element]> = (0..POOL_SIZE)
            .map(|_| Element {
                pipe: AtomicU32::new(PIPE_LEN as u32),
                check: AtomicU64::new(0),
            })
            .collect();
        // Element 0 starts as the current one; the rest are free.
        pool[0].pipe.store(0, Ordering::Relaxed);
        pool[0].check.store(1 << 1 | ALIVE, Ordering::Relaxed);
        Pipeline {
            pool,
            current: AtomicUsize::new(0),
            free: Mutex::new((1..POOL_SIZE).rev().collect()),
            inject,
            stopping: AtomicBool::new(false),
            pipe: Default::default(),
            pipe_errors: AtomicU64::new(0),
            check_errors: AtomicU64::new(0),
            exit_callbacks_queued: AtomicU64::new(0),
            exit_callbacks_run: AtomicU64::new(0),
            circulation: Default::default(),
            updates: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            released: AtomicU64::new(0),
            pipeline_callbacks: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
        }
    }

    /// Keep the first few error descriptions. Readers call this only when they found an
    /// error, so the lock is off the hot path.
    pub(crate) fn note(&self, msg: impl FnOnce() -> String) {
        let mut m = lock(&self.messages);
        if m.len() < MAX_MESSAGES {
            m.push(msg());
        }
    }

    /// The error descriptions kept so far.
    pub(crate) fn messages(&self) -> Vec<String> {
        lock(&self.messages).clone()
    }

    pub(crate) fn api_error(&self, msg: String) {
        self.api_errors.fetch_add(1, Ordering::Relaxed);
        self.note(|| msg);
    }

    /// Count an API error described by `broken` unless `promise` holds.
    pub(crate) fn expect(&self, promise: bool, broken: &str) {
        if !promise {
            self.api_error(broken.to_string());
        }
    }

    /// Move element `idx` one stage down the pipe; free it when it reaches [`PIPE_LEN`].
    /// Returns whether it was freed. Only the element's owner (the writer, or the callback
    /// chain that carries it) calls this.
    fn advance(&self, idx: usize) -> bool {
        let e = &self.pool[idx];
        // Relaxed: readers load the stage with Relaxed too (the kernel's WRITE_ONCE /
        // READ_ONCE); ordering against them is exactly what the grace period provides and
        // what this tool checks.
        let old = e.pipe.fetch_add(1, Ordering::Relaxed) as usize;
        self.circulation[old.min(PIPE_LEN)].fetch_add(1, Ordering::Relaxed);
        if old + 1 >= PIPE_LEN {
            e.check.fetch_and(!ALIVE, Ordering::Relaxed);
            lock(&self.free).push(idx);
            true
        } else {
            false
        }
    }

    /// The generation element `idx` was last published with (what a deferral token carries).
    pub(crate) fn generation(&self, idx: usize) -> u64 {
        self.pool[idx].check.load(Ordering::Relaxed) >> 1
    }

    /// A deferral API processed the token of element `idx`, published as `generation`: free
    /// the element at once (stage [`PIPE_LEN`], back to the free list). Checks that this is
    /// the first time for this removal: the element must be removed (stage 1) and still carry
    /// that generation, alive. Anything else (a token processed twice, or after a stale
    /// hand-back) is an API error and frees nothing. Returns whether it freed the element.
    ///
    /// Called from worker threads, destructors and the global allocator's `dealloc` (see
    /// [`kvfree`]): it takes only the free list's lock, a leaf lock, and never allocates
    /// (the free list has room for the whole pool).
    pub(crate) fn release(&self, idx: usize, generation: u64) -> bool {
        let Some(e) = self.pool.get(idx) else {
            self.api_error(format!("a token names element {idx}, outside the pool"));
            return false;
        };
        let want = generation << 1 | ALIVE;
        // Relaxed: only the token's owner (this caller, exactly once) moves a removed
        // element; the check below is what proves it.
        let stage = e.pipe.load(Ordering::Relaxed);
        if stage != 1
            || e.check
                .compare_exchange(want, generation << 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            let check = e.check.load(Ordering::Relaxed);
            self.api_error(format!(
                "element {idx} (generation {generation}) was processed twice or after it was reused: stage {stage}, check {check:#x}"
            ));
            return false;
        }
        e.pipe.store(PIPE_LEN as u32, Ordering::Relaxed);
        self.circulation[1].fetch_add(1, Ordering::Relaxed);
        lock(&self.free).push(idx);
        self.released.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Whether element `idx`, removed as `generation`, has been released since (and not
    /// reused yet: only the writer, which asks, reuses elements).
    pub(crate) fn is_released(&self, idx: usize, generation: u64) -> bool {
        self.pool[idx].check.load(Ordering::Relaxed) == generation << 1
    }

    /// Elements released by deferral APIs so far.
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Inside a section: load the current element and read its stage and check word.
    #[inline]
    pub(crate) fn look(&self) -> Look {
        // Acquire: pairs with the writer's AcqRel swap, so the element's initialization
        // (stage 0, new generation) is visible.
        let idx = self.current.load(Ordering::Acquire);
        let e = &self.pool[idx];
        Look {
            idx,
            stage: e.pipe.load(Ordering::Relaxed),
            check: e.check.load(Ordering::Relaxed),
        }
    }

    /// Still inside the section that took `look`: read the element again and count what
    /// was seen, and any error, in `c`.
    #[inline]
    pub(crate) fn verify(&self, look: Look, c: &mut ReaderCounts) {
        let e = &self.pool[look.idx];
        let stage2 = e.pipe.load(Ordering::Relaxed);
        let check2 = e.check.load(Ordering::Relaxed);
        let (idx, check1) = (look.idx, look.check);
        let stage = look.stage.max(stage2) as usize;
        c.pipe[stage.min(PIPE_LEN)] += 1;
        if stage > 1 {
            c.pipe_errors += 1;
            self.note(|| {
                if look.stage <= 1 && stage2 as usize >= PIPE_LEN && check2 & ALIVE == 0 {
                    format!(
                        "reader saw element {idx} freed (pipe stage {stage}) inside its section: a deferral API processed it while this reader, which found it before its removal, could still see it"
                    )
                } else {
                    format!(
                        "reader saw element {idx} at pipe stage {stage} inside its section: it was advanced {} time(s) past removal, each one a grace period that should have waited for this reader",
                        stage - 1
                    )
                }
            });
        }
        if check1 & ALIVE == 0 || check2 != check1 {
            c.check_errors += 1;
            self.note(|| {
                format!(
                    "reader saw element {idx} freed or reused inside its section (check {check1:#x} then {check2:#x})"
                )
            });
        }
    }

    /// Reads checked so far (the sum of the reader pipe histogram).
    pub(crate) fn reads(&self) -> u64 {
        self.pipe.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The reader pipe histogram.
    pub(crate) fn pipe(&self) -> Vec<u64> {
        self.pipe
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The free-block circulation histogram.
    pub(crate) fn circulation(&self) -> Vec<u64> {
        self.circulation
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Errors found so far (not counting what [`drain`] finds lost).
    pub(crate) fn errors(&self) -> u64 {
        self.pipe_errors.load(Ordering::Relaxed)
            + self.check_errors.load(Ordering::Relaxed)
            + self.api_errors.load(Ordering::Relaxed)
    }

    /// The [`Totals`] of a torture of `flavor` that ran this pipeline alone: `lost` elements
    /// found by [`drain`], readers and writers run for `duration`, the whole run (drain
    /// included) begun at `started_at`, `reader_threads_started` reader threads in all.
    pub(crate) fn totals(
        &self,
        flavor: &'static str,
        lost: u64,
        duration: Duration,
        started_at: Instant,
        reader_threads_started: u64,
        inject_early_free: bool,
    ) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            flavor,
            errors: self.errors() + lost,
            pipe: self.pipe(),
            reads: self.reads(),
            updates: load(&self.updates),
            duration_s: duration.as_secs_f64(),
            total_s: started_at.elapsed().as_secs_f64(),
            reader_threads_started,
            pipe_errors: load(&self.pipe_errors),
            check_errors: load(&self.check_errors),
            api_errors: load(&self.api_errors),
            lost,
            barrier_mode: barrier_mode(),
            inject_early_free,
            error_messages: self.messages(),
        }
    }
}

/// RCU's barrier mode, as the reports spell it: `membarrier` or `fence`.
pub(crate) fn barrier_mode() -> String {
    format!("{:?}", grace::rcu::stats().barrier_mode).to_lowercase()
}

/// Whether `Pending` and `kvfree` batch in this process: `"on"`, or `"off"` under the chicken
/// switch (`GRACE_PENDING=off`).
pub(crate) fn batching_text() -> &'static str {
    if grace::pending::batching() {
        "on"
    } else {
        "off"
    }
}

/// Updates per mode, for a person: `sync 12, poll 3, ...`.
pub(crate) fn modes_line(by_mode: &BTreeMap<&'static str, u64>) -> String {
    by_mode
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A small, fast pseudo-random generator (xorshift64*), one per thread.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((t ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A reader's counts, added to its pipeline's now and then and when it exits.
#[derive(Default)]
pub(crate) struct ReaderCounts {
    pipe: [u64; PIPE_LEN + 1],
    pub(crate) pipe_errors: u64,
    pub(crate) check_errors: u64,
}

impl ReaderCounts {
    pub(crate) fn flush(&mut self, p: &Pipeline) {
        for (shared, local) in p.pipe.iter().zip(&mut self.pipe) {
            if *local > 0 {
                shared.fetch_add(std::mem::take(local), Ordering::Relaxed);
            }
        }
        p.pipe_errors
            .fetch_add(std::mem::take(&mut self.pipe_errors), Ordering::Relaxed);
        p.check_errors
            .fetch_add(std::mem::take(&mut self.check_errors), Ordering::Relaxed);
    }
}

/// How long readers stay in a section: `(one_in, how_long)`: one section in `one_in`
/// sleeps `how_long`, the others spin briefly. With injection they linger much more often,
/// so that the writer gets to run while a reader holds an element.
pub(crate) fn linger(inject: bool) -> (u64, Duration) {
    if inject {
        (64, Duration::from_micros(200))
    } else {
        (10_000, Duration::from_micros(50))
    }
}

/// Spend a little time inside a section, chosen by the random word `r`: a short spin, or
/// once in `sleep_one_in` a sleep of `sleep_for`.
#[inline]
pub(crate) fn dwell(r: u64, (sleep_one_in, sleep_for): (u64, Duration)) {
    if (r >> 8) % sleep_one_in == 0 {
        thread::sleep(sleep_for);
    } else {
        for _ in 0..(10 + (r >> 32) % 200) {
            std::hint::spin_loop();
        }
    }
}

/// Run `once` (one checked section) until `exit` is set, flushing the counts to `p` now and
/// then and at the end.
pub(crate) fn read_until(p: &Pipeline, exit: &AtomicBool, mut once: impl FnMut(&mut ReaderCounts)) {
    let mut c = ReaderCounts::default();
    let mut n: u64 = 0;
    while !exit.load(Ordering::Relaxed) {
        once(&mut c);
        n += 1;
        if n % 4096 == 0 {
            c.flush(p);
        }
    }
    c.flush(p);
}

/// What a torture supplies to the shared writer, chains and drain: its pipeline and its
/// grace-period API.
pub(crate) trait Host: Send + Sync + Sized + 'static {
    /// The flavor whose grace periods protect the pipeline.
    type F: Flavor;

    /// The pipeline.
    fn pipeline(&self) -> &Pipeline;

    /// The flavor.
    fn flavor(&self) -> &Self::F;

    /// Wait for one grace period with a mode only this flavor has, checking its promises.
    fn wait_own(&self, mode: Mode, rng: &mut Rng);

    /// `synchronize_expedited()`, checked with a cookie taken before it (a flavor whose
    /// expedited grace periods need another kind of cookie overrides this).
    fn expedited(&self) {
        let (f, p) = (self.flavor(), self.pipeline());
        let c = f.get_state();
        f.synchronize_expedited();
        p.expect(
            f.poll_state(c),
            "poll_state() is false for a cookie taken before synchronize_expedited()",
        );
    }

    /// Called by the writer after every update, with the update's number.
    fn after_update(&self, _n: u64) {}

    /// Hand removed element `idx` (stage 1, published as `generation`) to the host's deferral
    /// API, in a deferred `mode` ([`Mode::deferred`]); whatever processes it must call
    /// [`Pipeline::release`] exactly once. The element is already counted in flight.
    fn retire(&self, mode: Mode, idx: usize, generation: u64) {
        let _ = (idx, generation);
        self.pipeline().api_error(format!(
            "mode {} has no deferral API on this host",
            mode.name()
        ));
    }

    /// The mode the writer uses under `--inject-early-free`: [`Mode::Inject`] (advance
    /// without waiting), or for a deferral host [`Mode::EarlyFree`] (its `retire` disposes of
    /// the token at once).
    fn inject_mode(&self) -> Mode {
        Mode::Inject
    }

    /// Wait until every callback and every deferred object queued so far has been processed
    /// (the drain); the flavor's `barrier()` unless the host has more to wait for.
    fn barrier_all(&self) {
        self.flavor().barrier();
    }

    /// Pause between two polls of a cookie.
    fn poll_pause(&self) {
        thread::yield_now();
    }
}

/// What the writer reports when it finishes.
pub(crate) struct WriterReport {
    /// Updates per mode.
    pub(crate) modes: BTreeMap<Mode, u64>,
    /// The longest single grace-period wait.
    pub(crate) max_wait: Duration,
}

impl WriterReport {
    /// Updates per mode, by name.
    pub(crate) fn by_name(&self) -> BTreeMap<&'static str, u64> {
        self.modes.iter().map(|(m, n)| (m.name(), *n)).collect()
    }
}

/// The writer: publishes elements and waits for grace periods with each mode of `rotation`
/// in turn.
pub(crate) struct Writer<H: Host> {
    h: Arc<H>,
    rotation: &'static [Mode],
    /// Elements removed and waiting for grace periods (the modes that wait).
    removed: Vec<usize>,
    generation: u64,
    rng: Rng,
    modes: BTreeMap<Mode, u64>,
    max_wait: Duration,
}

impl<H: Host> Writer<H> {
    pub(crate) fn new(h: Arc<H>, rotation: &'static [Mode], salt: u64) -> Writer<H> {
        Writer {
            h,
            rotation,
            removed: Vec::new(),
            generation: 1,
            rng: Rng::seeded(salt),
            modes: BTreeMap::new(),
            max_wait: Duration::ZERO,
        }
    }

    /// The mode that waits when the pool is exhausted and when draining.
    fn fallback(&self) -> Mode {
        if self.h.pipeline().inject {
            Mode::Inject
        } else {
            Mode::Sync
        }
    }

    /// Publish and retire elements until the pipeline is stopping, then give every removed
    /// element the grace periods it is owed.
    pub(crate) fn run(mut self) -> WriterReport {
        let mut n: u64 = 0;
        let h = self.h.clone();
        let p = h.pipeline();
        while !p.stopping.load(Ordering::Relaxed) {
            let Some(new) = self.take_free() else { break };
            self.generation += 1;
            let e = &p.pool[new];
            e.pipe.store(0, Ordering::Relaxed);
            e.check
                .store(self.generation << 1 | ALIVE, Ordering::Relaxed);
            // AcqRel: Release publishes the element's initialization to readers.
            let old = p.current.swap(new, Ordering::AcqRel);
            // Removed: stage 0 -> 1.
            p.advance(old);
            p.updates.fetch_add(1, Ordering::Relaxed);

            let mode = if p.inject {
                h.inject_mode()
            } else {
                self.rotation[((n / UPDATES_PER_MODE) % self.rotation.len() as u64) as usize]
            };
            *self.modes.entry(mode).or_default() += 1;
            if mode.deferred() {
                p.in_flight.fetch_add(1, Ordering::Relaxed);
                h.retire(mode, old, p.generation(old));
                h.after_update(n);
                n += 1;
                continue;
            }
            match mode.chain() {
                Some(hurry) => {
                    p.in_flight.fetch_add(1, Ordering::Relaxed);
                    queue_chain(h.clone(), old, hurry);
                    if mode == Mode::Barrier {
                        self.barrier_then_check(old);
                    }
                }
                None => {
                    self.removed.push(old);
                    self.wait(mode);
                    self.advance_removed();
                }
            }
            h.after_update(n);
            n += 1;
        }
        // Finish: give every removed element the grace periods it is owed.
        while !self.removed.is_empty() {
            self.wait(self.fallback());
            self.advance_removed();
        }
        WriterReport {
            modes: self.modes,
            max_wait: self.max_wait,
        }
    }

    /// A free element, waiting for one if the pool is exhausted; `None` when stopping.
    fn take_free(&mut self) -> Option<usize> {
        let h = self.h.clone();
        let p = h.pipeline();
        loop {
            if let Some(i) = lock(&p.free).pop() {
                return Some(i);
            }
            if p.stopping.load(Ordering::Relaxed) {
                return None;
            }
            if self.removed.is_empty() {
                // Everything is in callback chains: let them run.
                thread::sleep(Duration::from_micros(200));
            } else {
                self.wait(self.fallback());
                self.advance_removed();
            }
        }
    }

    fn advance_removed(&mut self) {
        let p = self.h.pipeline();
        self.removed.retain(|&i| !p.advance(i));
    }

    /// `barrier()` right after element `idx` was handed to a chain: the chain's first step
    /// (stage 1 to 2) must have run when it returns. Only this writer reuses elements, so
    /// the element cannot have been reused meanwhile.
    fn barrier_then_check(&mut self, idx: usize) {
        let t = Instant::now();
        self.h.flavor().barrier();
        self.max_wait = self.max_wait.max(t.elapsed());
        let p = self.h.pipeline();
        let stage = p.pool[idx].pipe.load(Ordering::Relaxed);
        if stage < 2 {
            p.api_error(format!(
                "barrier() returned before the callback queued just before it ran (element {idx} still at stage {stage})"
            ));
        }
    }

    /// Wait for one grace period with `mode`'s API (nothing for [`Mode::Inject`] and the
    /// chain modes), and check the API's promises about cookies.
    fn wait(&mut self, mode: Mode) {
        let t = Instant::now();
        let h = self.h.clone();
        let (f, p) = (h.flavor(), h.pipeline());
        match mode {
            Mode::Sync => {
                let c = f.get_state();
                f.synchronize();
                p.expect(
                    f.poll_state(c),
                    "poll_state() is false for a cookie taken before synchronize()",
                );
            }
            Mode::Expedited => h.expedited(),
            Mode::Poll => {
                let c = f.start_poll();
                // Half the time poll with the multi-cookie API.
                let multi = self.rng.next() % 2 == 0;
                loop {
                    let done = if multi {
                        f.poll_state_any(&[c]).is_some()
                    } else {
                        f.poll_state(c)
                    };
                    if done {
                        break;
                    }
                    h.poll_pause();
                }
                let both = [Cookie::completed(), c];
                p.expect(
                    f.poll_state(c) && f.poll_state_any(&both) == Some(0),
                    "poll_state() and poll_state_any() disagree",
                );
            }
            Mode::CondSync => {
                let c = f.get_state();
                if self.rng.next() % 4 == 0 {
                    // Sometimes let a grace period pass on its own first.
                    thread::sleep(Duration::from_micros(100));
                }
                f.cond_synchronize(c);
                p.expect(
                    f.poll_state(c),
                    "poll_state() is false right after cond_synchronize()",
                );
            }
            Mode::GetStatePoll => {
                let early = f.get_state();
                let late = f.start_poll();
                loop {
                    // The later cookie first: the sequence only grows, so if it reads as
                    // completed the earlier one must too.
                    let late_done = f.poll_state(late);
                    let early_done = f.poll_state(early);
                    if late_done {
                        p.expect(
                            early_done,
                            "a get_state() cookie is still pending though a later start_poll() one completed",
                        );
                        break;
                    }
                    h.poll_pause();
                }
            }
            Mode::FullPoll | Mode::FullCond | Mode::RawHandoff => h.wait_own(mode, &mut self.rng),
            Mode::Call | Mode::CallHurry | Mode::Barrier | Mode::Inject => {}
            // Deferred modes never wait here: the writer hands them to the host.
            Mode::Enqueue
            | Mode::EnqueueRaw
            | Mode::TryEnqueue
            | Mode::EnqueueFree
            | Mode::EnqueueRun
            | Mode::PendingBarrier
            | Mode::Kvfree
            | Mode::KvfreeRaw
            | Mode::KvfreeNoDrop
            | Mode::KvfreeInSection
            | Mode::KvfreeBarrier
            | Mode::EarlyFree => {}
        }
        self.max_wait = self.max_wait.max(t.elapsed());
    }
}

/// Hand element `idx` to a callback chain: each callback advances it one stage and queues the
/// next, until the element is freed.
fn queue_chain<H: Host>(h: Arc<H>, idx: usize, hurry: bool) {
    // An `Arc` and an index: two words, stored inline by `call`.
    let host = h.clone();
    let cb = move || chain_step(host, idx);
    if hurry {
        h.flavor().call_hurry(cb);
    } else {
        h.flavor().call(cb);
    }
}

fn chain_step<H: Host>(h: Arc<H>, idx: usize) {
    let p = h.pipeline();
    p.pipeline_callbacks.fetch_add(1, Ordering::Relaxed);
    if p.advance(idx) {
        p.in_flight.fetch_sub(1, Ordering::Relaxed);
    } else {
        // Once stopping, do not wait to batch: the run is draining.
        let hurry = p.stopping.load(Ordering::Relaxed);
        queue_chain(h, idx, hurry);
    }
}

/// From an exiting reader thread: queue one callback that must run even though its thread is
/// gone (checked by [`drain`]).
pub(crate) fn queue_exit_callback<H: Host>(h: &Arc<H>) {
    h.pipeline()
        .exit_callbacks_queued
        .fetch_add(1, Ordering::Relaxed);
    let host = h.clone();
    h.flavor().call(move || {
        host.pipeline()
            .exit_callbacks_run
            .fetch_add(1, Ordering::Relaxed);
    });
}

/// After the writer has stopped: let every callback chain finish and every exit callback run
/// (`barrier()`), then count what never came back: unfinished chains, exit callbacks that did
/// not run, elements missing from the free list. Each is noted; returns the count.
pub(crate) fn drain<H: Host>(h: &H) -> u64 {
    let (f, p) = (h.flavor(), h.pipeline());
    let mut lost = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        h.barrier_all();
        if p.in_flight.load(Ordering::Relaxed) > 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    h.barrier_all();
    f.barrier();
    let chains = p.in_flight.load(Ordering::Relaxed);
    if chains > 0 {
        lost += chains;
        p.note(|| {
            format!(
                "{chains} element(s) still in callback chains or deferral APIs 10 s after the run"
            )
        });
    }
    let (queued, ran) = (
        p.exit_callbacks_queued.load(Ordering::Relaxed),
        p.exit_callbacks_run.load(Ordering::Relaxed),
    );
    if ran != queued {
        lost += queued.abs_diff(ran);
        p.note(|| {
            format!(
                "{queued} callbacks queued by exiting reader threads, {ran} ran after barrier()"
            )
        });
    }
    let free = lock(&p.free).len();
    if chains == 0 && free + 1 != POOL_SIZE {
        let missing = (POOL_SIZE - 1).abs_diff(free) as u64;
        lost += missing;
        p.note(|| format!("{missing} element(s) never came back to the free list"));
    }
    lost
}

/// What a reader thread runs: `body(exit, salt)`, until its `exit` flag is set.
type ReaderBody = Arc<dyn Fn(&AtomicBool, u64) + Send + Sync>;

/// A pool of reader threads of one body, replaced one at a time by [`Readers::churn`].
pub(crate) struct Readers {
    name: String,
    body: ReaderBody,
    live: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
    victim: usize,
    /// Threads started so far, churn included.
    pub(crate) started: u64,
}

impl Readers {
    /// Start `count` threads named `name-N`, each running `body(exit, salt)` until its `exit`
    /// flag is set.
    pub(crate) fn start(
        name: &str,
        count: usize,
        body: impl Fn(&AtomicBool, u64) + Send + Sync + 'static,
    ) -> Readers {
        let mut r = Readers {
            name: name.to_string(),
            body: Arc::new(body),
            live: Vec::new(),
            victim: 0,
            started: 0,
        };
        for _ in 0..count {
            let t = r.spawn_one();
            r.live.push(t);
        }
        r
    }

    fn spawn_one(&mut self) -> (Arc<AtomicBool>, JoinHandle<()>) {
        self.started += 1;
        let salt = self.started;
        let exit = Arc::new(AtomicBool::new(false));
        let (body, e) = (self.body.clone(), exit.clone());
        let h = spawn(&format!("{}-{salt}", self.name), move || body(&e, salt));
        (exit, h)
    }

    /// Replace one thread: the old one exits while its replacement is already running.
    pub(crate) fn churn(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let fresh = self.spawn_one();
        let i = self.victim % self.live.len();
        let (exit, old) = std::mem::replace(&mut self.live[i], fresh);
        exit.store(true, Ordering::Relaxed);
        join(old, "reader");
        self.victim = i + 1;
    }

    /// Stop every thread and wait for them.
    pub(crate) fn stop(&mut self) {
        for (exit, _) in &self.live {
            exit.store(true, Ordering::Relaxed);
        }
        for (_, h) in self.live.drain(..) {
            join(h, "reader");
        }
    }
}

/// Start a thread named `name`; without threads there is no test, so failing to start one
/// ends the run (status 3).
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    match thread::Builder::new().name(name.to_string()).spawn(f) {
        Ok(h) => h,
        Err(e) => fail(&format!("cannot start thread {name}: {e}")),
    }
}

/// Wait for a thread; a panic in it makes the run meaningless (status 3).
pub(crate) fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    match h.join() {
        Ok(v) => v,
        Err(_) => fail(&format!("a {what} thread panicked")),
    }
}

/// An internal failure that makes the run meaningless: report it and exit with status 3.
pub(crate) fn fail(msg: &str) -> ! {
    eprintln!("grace: torture: {msg}");
    std::process::exit(3)
}

/// `1 2 3`: a histogram on one line, as rcutorture prints it.
pub(crate) fn histogram(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// The control loop of a torture: until `duration` has passed, show progress on `bar` (the
/// elapsed time, then what `status` says; the bar's position is `offset` plus the elapsed
/// time, for a run in several parts) and replace one reader thread of each of `pools` every
/// [`CHURN_EVERY`]. Returns the time it ran.
pub(crate) fn control(
    duration: Duration,
    offset: Duration,
    bar: &indicatif::ProgressBar,
    pools: &mut [&mut Readers],
    status: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    let mut next_churn = start + CHURN_EVERY;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        bar.set_position((offset + elapsed).as_millis() as u64);
        bar.set_message(format!(
            "{:.1}/{:.1} s, {}",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            status()
        ));
        if Instant::now() >= next_churn {
            next_churn += CHURN_EVERY;
            pools.iter_mut().for_each(|p| p.churn());
        }
        thread::sleep((duration - elapsed).min(Duration::from_millis(50)));
    }
    bar.set_position((offset + duration).as_millis() as u64);
    bar.set_message("draining");
    start.elapsed()
}

/// Allocation-failure injection for the length of a torture: one in `one_in` of grace's
/// fallible allocations fails, on every thread, until [`FailureInjection::finish`].
pub(crate) struct FailureInjection {
    before: u64,
}

impl FailureInjection {
    /// Turn injection on (nothing when `one_in` is 0).
    pub(crate) fn start(one_in: u32) -> FailureInjection {
        let before = grace::alloc::injected_failures();
        grace::alloc::inject_globally(one_in);
        FailureInjection { before }
    }

    /// Turn it off; returns how many failures were injected meanwhile.
    pub(crate) fn finish(self) -> u64 {
        grace::alloc::inject_globally(0);
        grace::alloc::injected_failures() - self.before
    }
}
