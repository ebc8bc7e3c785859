//! `grace torture rcu`: the pipeline check of the kernel's rcutorture, against `grace::rcu`.
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
//! # What is exercised
//!
//! The writer rotates between every grace-period API every few updates ([`Mode`]):
//! `synchronize`, `synchronize_expedited`, `call` and `call_hurry` (a callback that advances
//! the element and queues itself again until the element is freed), the polled API
//! (`start_poll` + `poll_state`/`poll_state_any`, `get_state` + `cond_synchronize`) and its
//! `_full` variants. After each wait it checks the API's own promises (a cookie taken before
//! a grace period reads as completed after it). It also replaces the value of a side
//! [`grace::RcuCell`] that readers load too, retiring the old value with `defer_drop`,
//! `Retired::synchronize` or `try_reclaim`, to exercise the safe API. Readers nest sections
//! now and then, occasionally sleep inside one so that grace periods must really wait, and are
//! replaced one at a time every half second (thread churn): each exiting reader queues one
//! callback, and all of those must have run by the end (nothing lost at thread exit).
//!
//! The hidden `--inject-early-free` option makes the writer advance removed elements without
//! waiting for any grace period, and readers linger in their sections: the check must fire,
//! which proves that it can.

use grace::rcu;
use grace::RcuCell;
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The number of pipe stages: an element is freed once it reaches this stage.
pub const PIPE_LEN: usize = 10;

/// Elements in the pool (rcutorture uses `10 * PIPE_LEN`; callback chains in flight need more).
const POOL_SIZE: usize = 32 * PIPE_LEN;

/// Updates made with one grace-period API before the writer moves on to the next.
const UPDATES_PER_MODE: u64 = 5;

/// How often one reader thread is replaced by a new one.
const CHURN_EVERY: Duration = Duration::from_millis(500);

/// How many error descriptions the report keeps.
const MAX_MESSAGES: usize = 8;

/// The `alive` bit of [`Element::check`]; the generation is in the bits above it.
const ALIVE: u64 = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long readers and writer run (the final drain comes on top).
    pub duration: Duration,
    /// Reader threads alive at any time.
    pub readers: usize,
    /// Advance removed elements without waiting for grace periods (a deliberate bug).
    pub inject_early_free: bool,
}

impl Options {
    /// The default reader count: the number of CPUs, at least 2.
    pub fn default_readers() -> usize {
        grace::sys::num_cpus().max(2)
    }
}

/// One element of the pool.
struct Element {
    /// Pipe stage: 0 current, 1 removed, then +1 per grace period; freed at [`PIPE_LEN`].
    pipe: AtomicU32,
    /// `generation << 1 | ALIVE`; the bit is cleared when the element is freed.
    check: AtomicU64,
}

/// The side cell's value: two words that must agree, poisoned when dropped.
struct Side {
    seq: AtomicU64,
    check: AtomicU64,
}

const SIDE_MAGIC: u64 = 0x9e37_79b9_7f4a_7c15;
const SIDE_POISON: u64 = 0xdead_dead_dead_dead;

impl Side {
    fn new(seq: u64) -> Side {
        Side {
            seq: AtomicU64::new(seq),
            check: AtomicU64::new(seq ^ SIDE_MAGIC),
        }
    }

    fn is_valid(&self) -> bool {
        let check = self.check.load(Ordering::Relaxed);
        check != SIDE_POISON && self.seq.load(Ordering::Relaxed) ^ SIDE_MAGIC == check
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        // Poisoned, so that a reader which (through a library bug) still sees it reads a value
        // that fails its check rather than one that happens to look fine.
        self.check.store(SIDE_POISON, Ordering::Relaxed);
    }
}

/// The grace-period API the writer uses for an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// `synchronize()`.
    Sync,
    /// `call()`, re-queued until the element is freed.
    Call,
    /// `start_poll()` then `poll_state()` / `poll_state_any()` until done.
    Poll,
    /// `synchronize_expedited()`, checked with a full cookie.
    Expedited,
    /// `get_state()` then `cond_synchronize()`.
    CondSync,
    /// `call_hurry()`, re-queued until the element is freed.
    CallHurry,
    /// `start_poll_full()` then `poll_state_full()` until done.
    FullPoll,
    /// `get_state_full()` then `cond_synchronize_full()`.
    FullCond,
    /// No grace period at all (`--inject-early-free`).
    Inject,
}

const ROTATION: [Mode; 8] = [
    Mode::Sync,
    Mode::Call,
    Mode::Poll,
    Mode::Expedited,
    Mode::CondSync,
    Mode::CallHurry,
    Mode::FullPoll,
    Mode::FullCond,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Call => "call",
            Mode::Poll => "poll",
            Mode::Expedited => "expedited",
            Mode::CondSync => "cond_sync",
            Mode::CallHurry => "call_hurry",
            Mode::FullPoll => "poll_full",
            Mode::FullCond => "cond_sync_full",
            Mode::Inject => "inject_early_free",
        }
    }
}

/// Everything the threads share.
struct Shared {
    pool: Box<[Element]>,
    /// Index of the current element (published with Release, loaded with Acquire).
    current: AtomicUsize,
    free: Mutex<Vec<usize>>,
    side: RcuCell<Side>,
    inject: bool,
    /// The writer should finish; callbacks stop batching.
    stopping: AtomicBool,

    // Reader side.
    pipe: [AtomicU64; PIPE_LEN + 1],
    side_reads: AtomicU64,
    pipe_errors: AtomicU64,
    check_errors: AtomicU64,
    exit_callbacks_queued: AtomicU64,
    exit_callbacks_run: AtomicU64,

    // Writer side.
    /// rcutorture's "Free-Block Circulation": how many elements left stage `i`.
    circulation: [AtomicU64; PIPE_LEN + 1],
    updates: AtomicU64,
    /// Elements whose callback chain has not finished yet.
    chains_in_flight: AtomicU64,
    pipeline_callbacks: AtomicU64,
    side_updates: AtomicU64,
    api_errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

/// Lock `m`, also when a panicking thread poisoned it (the data are counters and indices).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new(inject: bool) -> Shared {
        let pool: Box<[Element]> = (0..POOL_SIZE)
            .map(|_| Element {
                pipe: AtomicU32::new(PIPE_LEN as u32),
                check: AtomicU64::new(0),
            })
            .collect();
        // Element 0 starts as the current one; the rest are free.
        pool[0].pipe.store(0, Ordering::Relaxed);
        pool[0].check.store(1 << 1 | ALIVE, Ordering::Relaxed);
        Shared {
            pool,
            current: AtomicUsize::new(0),
            free: Mutex::new((1..POOL_SIZE).rev().collect()),
            side: RcuCell::new(Side::new(0)),
            inject,
            stopping: AtomicBool::new(false),
            pipe: Default::default(),
            side_reads: AtomicU64::new(0),
            pipe_errors: AtomicU64::new(0),
            check_errors: AtomicU64::new(0),
            exit_callbacks_queued: AtomicU64::new(0),
            exit_callbacks_run: AtomicU64::new(0),
            circulation: Default::default(),
            updates: AtomicU64::new(0),
            chains_in_flight: AtomicU64::new(0),
            pipeline_callbacks: AtomicU64::new(0),
            side_updates: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
        }
    }

    /// Keep the first few error descriptions. Readers call this only when they found an
    /// error, so the lock is off the hot path.
    fn note(&self, msg: impl FnOnce() -> String) {
        let mut m = lock(&self.messages);
        if m.len() < MAX_MESSAGES {
            m.push(msg());
        }
    }

    fn api_error(&self, msg: String) {
        self.api_errors.fetch_add(1, Ordering::Relaxed);
        self.note(|| msg);
    }

    /// Count an API error described by `broken` unless `promise` holds.
    fn expect(&self, promise: bool, broken: &str) {
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
        // READ_ONCE); ordering against them is exactly what RCU's grace period provides and
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

    fn reads(&self) -> u64 {
        self.pipe.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn errors(&self) -> u64 {
        self.pipe_errors.load(Ordering::Relaxed)
            + self.check_errors.load(Ordering::Relaxed)
            + self.api_errors.load(Ordering::Relaxed)
    }
}

/// A small, fast pseudo-random generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((t ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A reader's counts, added to the shared ones now and then and when it exits.
#[derive(Default)]
struct ReaderCounts {
    pipe: [u64; PIPE_LEN + 1],
    side_reads: u64,
    pipe_errors: u64,
    check_errors: u64,
}

impl ReaderCounts {
    fn flush(&mut self, s: &Shared) {
        for (shared, local) in s.pipe.iter().zip(&mut self.pipe) {
            if *local > 0 {
                shared.fetch_add(std::mem::take(local), Ordering::Relaxed);
            }
        }
        s.side_reads
            .fetch_add(std::mem::take(&mut self.side_reads), Ordering::Relaxed);
        s.pipe_errors
            .fetch_add(std::mem::take(&mut self.pipe_errors), Ordering::Relaxed);
        s.check_errors
            .fetch_add(std::mem::take(&mut self.check_errors), Ordering::Relaxed);
    }
}

/// One reader thread: read sections until told to exit, then queue one callback from the
/// exiting thread (it must run even though its thread is gone).
fn reader(s: Arc<Shared>, exit: Arc<AtomicBool>, salt: u64) {
    let mut rng = Rng::seeded(salt);
    let mut c = ReaderCounts::default();
    // With injection, linger in sections much more often so the writer gets to run while a
    // reader holds an element.
    let (sleep_one_in, sleep_for) = if s.inject {
        (64, Duration::from_micros(200))
    } else {
        (10_000, Duration::from_micros(50))
    };
    let mut n: u64 = 0;
    while !exit.load(Ordering::Relaxed) {
        read_once(&s, &mut rng, &mut c, sleep_one_in, sleep_for);
        n += 1;
        if n % 4096 == 0 {
            c.flush(&s);
        }
    }
    c.flush(&s);
    s.exit_callbacks_queued.fetch_add(1, Ordering::Relaxed);
    let s2 = s.clone();
    rcu::call(move || {
        s2.exit_callbacks_run.fetch_add(1, Ordering::Relaxed);
    });
}

/// One read-side section of the pipeline check.
#[inline]
fn read_once(
    s: &Shared,
    rng: &mut Rng,
    c: &mut ReaderCounts,
    sleep_one_in: u64,
    sleep_for: Duration,
) {
    let r = rng.next();
    let guard = rcu::read_lock();
    // Acquire: pairs with the writer's AcqRel swap, so the element's initialization (stage 0,
    // new generation) is visible.
    let idx = s.current.load(Ordering::Acquire);
    let e = &s.pool[idx];
    // Sometimes nest a section; the outer one is what protects the element.
    let inner = (r & 3 == 0).then(rcu::read_lock);
    let stage1 = e.pipe.load(Ordering::Relaxed);
    let check1 = e.check.load(Ordering::Relaxed);
    if (r >> 8) % sleep_one_in == 0 {
        thread::sleep(sleep_for);
    } else {
        for _ in 0..(10 + (r >> 32) % 200) {
            std::hint::spin_loop();
        }
    }
    if (r >> 4) & 7 == 0 {
        c.side_reads += 1;
        let v = s.side.load(&guard);
        if !v.is_valid() {
            c.check_errors += 1;
            let (seq, check) = (
                v.seq.load(Ordering::Relaxed),
                v.check.load(Ordering::Relaxed),
            );
            s.note(|| format!("reader saw an invalid side-cell value (seq {seq:#x}, check {check:#x}): freed early"));
        }
    }
    drop(inner);
    let stage2 = e.pipe.load(Ordering::Relaxed);
    let check2 = e.check.load(Ordering::Relaxed);
    drop(guard);

    let stage = stage1.max(stage2) as usize;
    c.pipe[stage.min(PIPE_LEN)] += 1;
    if stage > 1 {
        c.pipe_errors += 1;
        s.note(|| {
            format!(
                "reader saw element {idx} at pipe stage {stage} inside its section: it was advanced {} time(s) past removal, each one a grace period that should have waited for this reader",
                stage - 1
            )
        });
    }
    if check1 & ALIVE == 0 || check2 != check1 {
        c.check_errors += 1;
        s.note(|| {
            format!(
                "reader saw element {idx} freed or reused inside its section (check {check1:#x} then {check2:#x})"
            )
        });
    }
}

/// The writer's own state.
struct Writer {
    s: Arc<Shared>,
    /// Elements removed and waiting for grace periods (the sync and polled modes).
    removed: Vec<usize>,
    generation: u64,
    rng: Rng,
    modes: BTreeMap<Mode, u64>,
    /// Longest single grace-period wait.
    max_wait: Duration,
}

impl Writer {
    fn run(mut self) -> Self {
        let mut n: u64 = 0;
        while !self.s.stopping.load(Ordering::Relaxed) {
            let Some(new) = self.take_free() else { break };
            self.generation += 1;
            let e = &self.s.pool[new];
            e.pipe.store(0, Ordering::Relaxed);
            e.check
                .store(self.generation << 1 | ALIVE, Ordering::Relaxed);
            // AcqRel: Release publishes the element's initialization to readers.
            let old = self.s.current.swap(new, Ordering::AcqRel);
            // Removed: stage 0 -> 1.
            self.s.advance(old);
            self.s.updates.fetch_add(1, Ordering::Relaxed);

            let mode = if self.s.inject {
                Mode::Inject
            } else {
                ROTATION[((n / UPDATES_PER_MODE) % ROTATION.len() as u64) as usize]
            };
            *self.modes.entry(mode).or_default() += 1;
            match mode {
                Mode::Call | Mode::CallHurry => {
                    self.s.chains_in_flight.fetch_add(1, Ordering::Relaxed);
                    queue_chain(self.s.clone(), old, mode == Mode::CallHurry);
                }
                _ => {
                    self.removed.push(old);
                    self.wait(mode);
                    self.advance_removed();
                }
            }
            if n % 16 == 0 {
                self.update_side(n / 16);
            }
            n += 1;
        }
        // Finish: give every removed element the grace periods it is owed.
        while !self.removed.is_empty() {
            let mode = if self.s.inject {
                Mode::Inject
            } else {
                Mode::Sync
            };
            self.wait(mode);
            self.advance_removed();
        }
        self
    }

    /// A free element, waiting for one if the pool is exhausted; `None` when stopping.
    fn take_free(&mut self) -> Option<usize> {
        loop {
            if let Some(i) = lock(&self.s.free).pop() {
                return Some(i);
            }
            if self.s.stopping.load(Ordering::Relaxed) {
                return None;
            }
            if self.removed.is_empty() {
                // Everything is in callback chains: let them run.
                thread::sleep(Duration::from_micros(200));
            } else {
                let mode = if self.s.inject {
                    Mode::Inject
                } else {
                    Mode::Sync
                };
                self.wait(mode);
                self.advance_removed();
            }
        }
    }

    fn advance_removed(&mut self) {
        let s = &self.s;
        self.removed.retain(|&i| !s.advance(i));
    }

    /// Wait for one grace period with `mode`'s API (nothing for [`Mode::Inject`]), and check
    /// the API's promises about cookies.
    fn wait(&mut self, mode: Mode) {
        let t = Instant::now();
        match mode {
            Mode::Sync => {
                let c = rcu::get_state();
                rcu::synchronize();
                self.s.expect(
                    rcu::poll_state(c),
                    "poll_state() is false for a cookie taken before synchronize()",
                );
            }
            Mode::Expedited => {
                let full = rcu::get_state_full();
                rcu::synchronize_expedited();
                self.s.expect(
                    rcu::poll_state_full(full),
                    "poll_state_full() is false for a cookie taken before synchronize_expedited()",
                );
            }
            Mode::Poll => {
                let c = rcu::start_poll();
                // Half the time poll with the multi-cookie API.
                let multi = self.rng.next() % 2 == 0;
                loop {
                    let done = if multi {
                        rcu::poll_state_any(&[c]).is_some()
                    } else {
                        rcu::poll_state(c)
                    };
                    if done {
                        break;
                    }
                    thread::yield_now();
                }
                let both = [rcu::get_completed_state(), c];
                self.s.expect(
                    rcu::poll_state(c) && rcu::poll_state_any(&both) == Some(0),
                    "poll_state() and poll_state_any() disagree",
                );
            }
            Mode::CondSync => {
                let c = rcu::get_state();
                if self.rng.next() % 4 == 0 {
                    // Sometimes let a grace period pass on its own first.
                    thread::sleep(Duration::from_micros(100));
                }
                rcu::cond_synchronize(c);
                self.s.expect(
                    rcu::poll_state(c),
                    "poll_state() is false right after cond_synchronize()",
                );
            }
            Mode::FullPoll => {
                let c = rcu::start_poll_full();
                while !rcu::poll_state_full(c) {
                    thread::yield_now();
                }
            }
            Mode::FullCond => {
                let c = rcu::get_state_full();
                rcu::cond_synchronize_full(c);
                self.s.expect(
                    rcu::poll_state_full(c),
                    "poll_state_full() is false right after cond_synchronize_full()",
                );
            }
            Mode::Call | Mode::CallHurry | Mode::Inject => {}
        }
        self.max_wait = self.max_wait.max(t.elapsed());
    }

    /// Replace the side cell's value and retire the old one, rotating between the ways a
    /// [`grace::Retired`] can be disposed of.
    fn update_side(&mut self, seq: u64) {
        let retired = self.s.side.replace(Side::new(seq + 1));
        self.s.side_updates.fetch_add(1, Ordering::Relaxed);
        match seq % 4 {
            0 | 1 => retired.defer_drop(),
            2 => {
                let old = retired.synchronize();
                self.s.expect(
                    old.is_valid(),
                    "Retired::synchronize() returned a corrupted value",
                );
            }
            _ => {
                rcu::cond_synchronize(retired.cookie());
                if let Err(r) = retired.try_reclaim() {
                    self.s.api_error(
                        "Retired::try_reclaim() refused after cond_synchronize()".into(),
                    );
                    r.defer_drop();
                }
            }
        }
    }
}

/// Hand element `idx` to a callback chain: each callback advances it one stage and queues the
/// next, until the element is freed.
fn queue_chain(s: Arc<Shared>, idx: usize, hurry: bool) {
    // An `Arc` and an index: two words, stored inline by `call`.
    let cb = move || chain_step(s, idx);
    if hurry {
        rcu::call_hurry(cb);
    } else {
        rcu::call(cb);
    }
}

fn chain_step(s: Arc<Shared>, idx: usize) {
    s.pipeline_callbacks.fetch_add(1, Ordering::Relaxed);
    if s.advance(idx) {
        s.chains_in_flight.fetch_sub(1, Ordering::Relaxed);
    } else {
        // Once stopping, do not wait to batch: the run is draining.
        let hurry = s.stopping.load(Ordering::Relaxed);
        queue_chain(s, idx, hurry);
    }
}

/// The result of a run; also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The flavor tortured: `"rcu"`.
    pub flavor: &'static str,
    /// Errors of every kind; non-zero fails the run.
    pub errors: u64,
    /// rcutorture's "Reader Pipe": how many reads saw each stage at most (index 0..=PIPE_LEN).
    pub pipe: Vec<u64>,
    /// Normal grace periods completed during the run (from `grace::rcu::stats()`).
    pub grace_periods: u64,
    /// Expedited grace periods completed during the run.
    pub expedited_grace_periods: u64,
    /// Read-side sections checked.
    pub reads: u64,
    /// Elements published by the writer.
    pub updates: u64,
    /// Updates per grace-period API.
    pub updates_by_mode: BTreeMap<&'static str, u64>,
    /// Seconds readers and writer ran (the drain is not included).
    pub duration_s: f64,
    /// Seconds the whole run took, drain included.
    pub total_s: f64,
    /// Callbacks invoked during the run (from `grace::rcu::stats()`).
    pub callbacks_invoked: u64,
    /// Of those, the pipeline's own callback steps.
    pub pipeline_callbacks: u64,
    /// rcutorture's "Free-Block Circulation": elements that left each stage.
    pub free_block_circulation: Vec<u64>,
    /// Reader threads alive at a time.
    pub readers: usize,
    /// Reader threads started in all (churn included).
    pub reader_threads_started: u64,
    /// Reads that saw a stage above 1.
    pub pipe_errors: u64,
    /// Reads that saw a freed or reused element, or an invalid side-cell value.
    pub check_errors: u64,
    /// Broken API promises (a cookie not completed after its grace period, ...).
    pub api_errors: u64,
    /// Callbacks or elements that never came back (included in `errors`).
    pub lost: u64,
    /// Side-cell replacements, and reads that checked its value.
    pub side_updates: u64,
    /// Reads of the side cell.
    pub side_reads: u64,
    /// The longest single grace-period wait of the writer, in milliseconds.
    pub max_gp_wait_ms: f64,
    /// `membarrier` or `fence`.
    pub barrier_mode: String,
    /// Whether the early free was injected on purpose.
    pub inject_early_free: bool,
    /// The first few errors, described.
    pub error_messages: Vec<String>,
}

/// Run the torture test, showing progress on `bar`, whose length should be the duration in
/// milliseconds (see [`progress_bar`]).
pub fn run(opts: &Options, bar: &ProgressBar) -> Report {
    let before = rcu::stats();
    let s = Arc::new(Shared::new(opts.inject_early_free));
    let readers = opts.readers.max(1);
    let started_at = Instant::now();

    let spawn_reader = |salt: u64| -> (Arc<AtomicBool>, JoinHandle<()>) {
        let exit = Arc::new(AtomicBool::new(false));
        let (s2, e2) = (s.clone(), exit.clone());
        let h = thread::Builder::new()
            .name(format!("torture-reader-{salt}"))
            .spawn(move || reader(s2, e2, salt));
        match h {
            Ok(h) => (exit, h),
            // Without threads there is no test; say so plainly.
            Err(e) => fail(&format!("cannot start a reader thread: {e}")),
        }
    };
    let mut started: u64 = 0;
    let mut pool: Vec<(Arc<AtomicBool>, JoinHandle<()>)> = (0..readers)
        .map(|_| {
            started += 1;
            spawn_reader(started)
        })
        .collect();

    let writer = Writer {
        s: s.clone(),
        removed: Vec::new(),
        generation: 1,
        rng: Rng::seeded(0),
        modes: BTreeMap::new(),
        max_wait: Duration::ZERO,
    };
    let writer = match thread::Builder::new()
        .name("torture-writer".into())
        .spawn(move || writer.run())
    {
        Ok(h) => h,
        Err(e) => fail(&format!("cannot start the writer thread: {e}")),
    };

    // Control loop: progress, and thread churn.
    let start = Instant::now();
    let mut next_churn = start + CHURN_EVERY;
    let mut victim = 0usize;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= opts.duration {
            break;
        }
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.1}/{:.1} s, {} reads, {} updates, {} errors",
            elapsed.as_secs_f64(),
            opts.duration.as_secs_f64(),
            crate::ui::si(s.reads() as f64),
            crate::ui::si(s.updates.load(Ordering::Relaxed) as f64),
            s.errors()
        ));
        if Instant::now() >= next_churn {
            next_churn += CHURN_EVERY;
            // The old reader exits while its replacement is already reading.
            pool[victim].0.store(true, Ordering::Relaxed);
            started += 1;
            let (_, old) = std::mem::replace(&mut pool[victim], spawn_reader(started));
            join(old, "reader");
            victim = (victim + 1) % pool.len();
        }
        thread::sleep((opts.duration - elapsed).min(Duration::from_millis(50)));
    }
    bar.set_position(opts.duration.as_millis() as u64);
    bar.set_message("draining");

    // Stop readers first (the pipe histogram is theirs), then the writer.
    for (exit, _) in &pool {
        exit.store(true, Ordering::Relaxed);
    }
    for (_, h) in pool {
        join(h, "reader");
    }
    let duration = start.elapsed();
    s.stopping.store(true, Ordering::Relaxed);
    let writer = match writer.join() {
        Ok(w) => w,
        Err(_) => fail("the writer thread panicked"),
    };

    // Let every callback chain finish, and every exit callback run.
    let mut lost = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.chains_in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        rcu::barrier();
    }
    rcu::barrier();
    let chains = s.chains_in_flight.load(Ordering::Relaxed);
    if chains > 0 {
        lost += chains;
        s.note(|| format!("{chains} callback chain(s) still unfinished 10 s after the run"));
    }
    let (queued, ran) = (
        s.exit_callbacks_queued.load(Ordering::Relaxed),
        s.exit_callbacks_run.load(Ordering::Relaxed),
    );
    if ran != queued {
        lost += queued.abs_diff(ran);
        s.note(|| {
            format!(
                "{queued} callbacks queued by exiting reader threads, {ran} ran after barrier()"
            )
        });
    }
    let free = lock(&s.free).len();
    if chains == 0 && free + 1 != POOL_SIZE {
        let missing = (POOL_SIZE - 1).abs_diff(free) as u64;
        lost += missing;
        s.note(|| format!("{missing} element(s) never came back to the free list"));
    }

    let after = rcu::stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let errors = s.errors() + lost;
    let error_messages = lock(&s.messages).clone();
    Report {
        flavor: "rcu",
        errors,
        pipe: s.pipe.iter().map(load).collect(),
        grace_periods: after.grace_periods - before.grace_periods,
        expedited_grace_periods: after.expedited_grace_periods - before.expedited_grace_periods,
        reads: s.reads(),
        updates: load(&s.updates),
        updates_by_mode: writer.modes.iter().map(|(m, n)| (m.name(), *n)).collect(),
        duration_s: duration.as_secs_f64(),
        total_s: started_at.elapsed().as_secs_f64(),
        callbacks_invoked: after.callbacks_invoked - before.callbacks_invoked,
        pipeline_callbacks: load(&s.pipeline_callbacks),
        free_block_circulation: s.circulation.iter().map(load).collect(),
        readers,
        reader_threads_started: started,
        pipe_errors: load(&s.pipe_errors),
        check_errors: load(&s.check_errors),
        api_errors: load(&s.api_errors),
        lost,
        side_updates: load(&s.side_updates),
        side_reads: load(&s.side_reads),
        max_gp_wait_ms: writer.max_wait.as_secs_f64() * 1e3,
        barrier_mode: format!("{:?}", after.barrier_mode).to_lowercase(),
        inject_early_free: opts.inject_early_free,
        error_messages,
    }
}

/// The progress bar for a run of `opts` (hidden unless `show` and standard error is a
/// terminal).
pub fn progress_bar(opts: &Options, show: bool) -> ProgressBar {
    crate::ui::bar(opts.duration.as_millis() as u64, "torture rcu", show)
}

fn join(h: JoinHandle<()>, what: &str) {
    if h.join().is_err() {
        fail(&format!("a {what} thread panicked"));
    }
}

/// An internal failure that makes the run meaningless: report it and exit with status 3.
fn fail(msg: &str) -> ! {
    eprintln!("grace: torture: {msg}");
    std::process::exit(3)
}

impl Report {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.errors == 0
    }

    /// The report for a person, in rcutorture's terms.
    pub fn human(&self) -> String {
        use crate::ui::{count, si};
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let mut o = String::new();
        o.push_str(&format!(
            "grace torture rcu: {:.1} s, {} readers ({} reader threads in all), barrier mode {}{}\n",
            self.duration_s,
            self.readers,
            self.reader_threads_started,
            self.barrier_mode,
            if self.inject_early_free {
                ", EARLY FREE INJECTED"
            } else {
                ""
            }
        ));
        o.push_str(&format!(
            "rcu-torture: Reader Pipe:  {}\n",
            join(&self.pipe)
        ));
        o.push_str(&format!(
            "rcu-torture: Free-Block Circulation:  {}\n",
            join(&self.free_block_circulation)
        ));
        let rate = |n: u64| si(n as f64 / self.duration_s.max(1e-9));
        o.push_str(&format!(
            "  reads              {:>14}  ({}/s; {} checked the side cell)\n",
            count(self.reads),
            rate(self.reads),
            count(self.side_reads)
        ));
        let modes = self
            .updates_by_mode
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        o.push_str(&format!(
            "  updates            {:>14}  ({}/s: {modes})\n",
            count(self.updates),
            rate(self.updates)
        ));
        o.push_str(&format!(
            "  grace periods      {:>14}  normal, {} expedited (longest wait {:.2} ms)\n",
            count(self.grace_periods),
            count(self.expedited_grace_periods),
            self.max_gp_wait_ms
        ));
        o.push_str(&format!(
            "  callbacks invoked  {:>14}  ({} pipeline steps)\n",
            count(self.callbacks_invoked),
            count(self.pipeline_callbacks)
        ));
        o.push_str(&format!(
            "  side-cell updates  {:>14}\n",
            count(self.side_updates)
        ));
        o.push_str(&format!(
            "  errors             {:>14}  (pipe {}, check {}, api {}, lost {})\n",
            count(self.errors),
            self.pipe_errors,
            self.check_errors,
            self.api_errors,
            self.lost
        ));
        o.push_str(&format!(
            "  duration           {:>12.2} s  ({:.2} s with the drain)\n",
            self.duration_s, self.total_s
        ));
        for m in &self.error_messages {
            o.push_str(&format!("  ! {m}\n"));
        }
        if self.passed() {
            o.push_str("--- End of test: SUCCESS\n");
        } else {
            o.push_str(&format!(
                "--- End of test: FAILURE ({} errors)\n",
                count(self.errors)
            ));
        }
        o
    }
}
