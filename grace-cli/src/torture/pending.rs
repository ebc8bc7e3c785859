//! `grace torture pending`: the pipeline check through `grace::pending::Pending`, with
//! `dequeue` reuse racing readers, under allocation-failure injection, on `Rcu` and on an SRCU
//! domain (`--flavor rcu|srcu`; both in turn by default, each for half of `--duration`).
//!
//! # The pipeline through `Pending`
//!
//! The pipeline, the reader's check and the writer are the parent module's (see [`super`]).
//! Here every removed element is handed to a `Pending` as a small token object naming it; the
//! element is freed ([`Pipeline::release`], which also proves it happens once per removal)
//! exactly when the `Pending` processes the token. Readers never touch tokens, only the
//! elements they name, so a library bug shows up as a marked element, never as a read of freed
//! memory. Three `Pending`s, one per processing mode, all on the run's flavor:
//!
//! * `Process::with(closure)`: the closure releases the element ([`Item`]);
//! * `Process::free()`: the token's `Drop` releases it ([`Dropper`]);
//! * `Process::run()`: the token's `Run::run` releases it ([`Runner`]).
//!
//! The writer rotates ([`ROTATION`]) through `enqueue`, `enqueue_raw`, `try_enqueue` from inside
//! a read-side section (giving back is allowed there, waiting is not), the `free` and `run`
//! pendings, and `enqueue` followed by `barrier()` (the element must be released when it
//! returns). After every update it also enqueues [`JUNK_PER_UPDATE`] private objects (one in
//! four with `try_enqueue` from inside a read-side section), so that chunk boundaries are
//! crossed and chunks allocated (and, under injection, refused); readers `try_enqueue` private
//! objects from inside their sections too. Every private object must be
//! processed exactly once.
//!
//! # `dequeue` reuse racing readers
//!
//! A second structure, [`Reuse`]: [`SLOTS`] published pointers to [`Obj`]ects, and a `Pending`
//! of evicted objects whose processing *poisons* the object and puts it in a quarantine (its
//! memory is never given back while threads run, so nothing here can touch freed memory).
//! A reuse writer keeps replacing a random slot's object. The replacement comes, most of the
//! time, from `dequeue` / `dequeue_from_all` / `dequeue_where`: an evicted object whose grace
//! period has **not** ended, that readers from before its eviction may still be reading. The
//! writer checks it was never processed, then rewrites it only through interior mutability,
//! seqlock-style (sequence odd, the value pair, sequence even), and publishes it again
//! (`Reused::into_raw`). Now and then it takes exclusive ownership instead (`into_box`, which
//! waits for the object's grace period, or `try_into_box`), or hands it back (`requeue`), or
//! allocates (from the quarantine, after processing, or fresh). The evicted object is enqueued
//! with `enqueue_raw` (`try_enqueue_raw` half the time).
//!
//! Readers, inside sections, read a random slot's object: a stable read of the pair must be
//! *whole* (`b == mix(a)`, never a mix of two rewrites, never the poison), and the object must
//! never be seen processed (its pipe stage, 0 published, 1 evicted, [`PIPE_LEN`] processed,
//! must stay at most 1: a second "Reader Pipe", `reuse_pipe`).
//!
//! Each object carries a state (published, waiting, reused, processed) moved with
//! compare-and-swap at every step, so that processing an object that is not waiting (twice, or
//! after `dequeue` handed it back) and `dequeue` handing back one that is not waiting are caught
//! at once. At the end every slot is evicted and the `Pending` is **dropped while it still holds
//! objects** (its drop must process them all); then the counts must balance: objects enqueued =
//! processed + handed back by `dequeue`, as counted here and by `Pending::stats()`, and every
//! object ever allocated must be in the quarantine, processed.
//!
//! # Allocation failures
//!
//! One in `--fail-one-in` (50 by default) of grace's fallible allocations fails, on every
//! thread (`grace::alloc::inject_globally`), from before the `Pending`s are built until after
//! they are dropped. Every [`OOM_EVERY`] updates the writer also has an *out-of-memory
//! episode* (unless `--fail-one-in 0`), under a thread-local failure plan: it enqueues private
//! objects until the first chunk allocation fails (a fallback node takes the object), then,
//! with every allocation failing, `try_enqueue`s until one is given back, and `enqueue`s two
//! (the synchronous last resort), and finally hands over what was given back. The report
//! gives each `Pending`'s fallback counters (spare chunks, chunk and node allocation
//! failures, fallback nodes, synchronous last resorts, objects given back).
//!
//! The hidden `--inject-early-free` option makes the writer dispose of each token at once
//! through the code that would process it: the check must fire.

use super::{
    control, drain, dwell, histogram, join, kvfree::injection_text, linger, lock,
    queue_exit_callback, read_until, spawn, FailureInjection, Host, Mode, Options, Pipeline,
    Readers, Rng, Totals, Verdict, Writer, PIPE_LEN,
};
use grace::pending::{Pending, Process, Reused, Run, Stats};
use grace::srcu::Srcu;
use grace::{Flavor, Rcu};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The default reader count of `torture pending`: the number of CPUs, at least 2.
pub fn default_readers() -> usize {
    grace::sys::num_cpus().max(2)
}

/// A flavor `torture pending` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PendingFlavor {
    /// `grace::Rcu`.
    Rcu,
    /// A dynamic SRCU domain (`Srcu::new()`).
    Srcu,
}

impl PendingFlavor {
    /// The flavor's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            PendingFlavor::Rcu => "rcu",
            PendingFlavor::Srcu => "srcu",
        }
    }
}

/// Private objects the writer enqueues after each update.
const JUNK_PER_UPDATE: u64 = 16;

/// Updates between two out-of-memory episodes (see the module docs).
pub const OOM_EVERY: u64 = 64;

/// The most private objects one step of an episode enqueues (four chunks' worth: past the
/// shard's two spares and a boundary).
const OOM_STEP_MAX: u64 = 2048;

/// Published slots of the reuse structure.
pub const SLOTS: usize = 16;

/// Replacements the reuse writer makes between two short rests.
const REUSE_BURST: u64 = 32;

/// The reuse writer's rest.
const REUSE_REST: Duration = Duration::from_micros(100);

/// The writer's rotation: every way into a `Pending`.
const ROTATION: &[Mode] = &[
    Mode::Enqueue,
    Mode::EnqueueFree,
    Mode::EnqueueRaw,
    Mode::EnqueueRun,
    Mode::TryEnqueue,
    Mode::PendingBarrier,
];

/// What the `Process::with` pending holds: a pipeline element's token, or a private object.
enum Item {
    /// Element `idx`, removed as `generation`.
    Element { idx: usize, generation: u64 },
    /// An unpublished object of the writer's or a reader's, only counted.
    Private(#[allow(dead_code)] u64),
}

/// A `Process::free()` token: dropping it releases the element.
struct Dropper {
    p: Arc<Pipeline>,
    idx: usize,
    generation: u64,
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.p.release(self.idx, self.generation);
    }
}

/// A `Process::run()` token: running it releases the element.
struct Runner {
    p: Arc<Pipeline>,
    idx: usize,
    generation: u64,
}

impl Run for Runner {
    fn run(self: Box<Self>) {
        self.p.release(self.idx, self.generation);
    }
}

/// Counts of the `Process::with` pending's objects.
#[derive(Default)]
struct ItemCounts {
    /// Elements and private objects accepted by the pending (our count).
    enqueued: AtomicU64,
    private_enqueued: AtomicU64,
    private_processed: AtomicU64,
    /// `try_enqueue` gave the object back (then enqueued outside the section).
    given_back: AtomicU64,
}

/// Process one `Item`: release the element, or count the private object.
fn process_item(p: &Pipeline, c: &ItemCounts, item: Item) {
    match item {
        Item::Element { idx, generation } => {
            p.release(idx, generation);
        }
        Item::Private(_) => {
            c.private_processed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The pipeline's host: three pendings on flavor `F`.
struct PendingHost<F: Flavor + Send + Sync + 'static> {
    p: Arc<Pipeline>,
    flavor: F,
    with: Pending<Item, F>,
    free: Pending<Dropper, F>,
    run: Pending<Runner, F>,
    items: Arc<ItemCounts>,
    /// Elements enqueued on the `free` and `run` pendings.
    free_enqueued: AtomicU64,
    run_enqueued: AtomicU64,
    barrier_checks: AtomicU64,
    /// Out-of-memory episodes run, and whether they run at all.
    oom_episodes: AtomicU64,
    oom: bool,
}

impl<F: Flavor + Clone + Send + Sync + 'static> PendingHost<F> {
    fn new(p: Arc<Pipeline>, flavor: F, oom: bool) -> PendingHost<F> {
        let items = Arc::new(ItemCounts::default());
        let (p2, c2) = (p.clone(), items.clone());
        PendingHost {
            with: Pending::new(
                flavor.clone(),
                Process::with(move |item: Box<Item>| process_item(&p2, &c2, *item)),
            ),
            free: Pending::new(flavor.clone(), Process::free()),
            run: Pending::new(flavor.clone(), Process::run()),
            p,
            flavor,
            items,
            free_enqueued: AtomicU64::new(0),
            run_enqueued: AtomicU64::new(0),
            barrier_checks: AtomicU64::new(0),
            oom_episodes: AtomicU64::new(0),
            oom,
        }
    }

    /// An out-of-memory episode on the calling (writer) thread; see the module docs.
    fn oom_episode(&self, n: u64) {
        use grace::alloc::{inject, FailurePlan};
        self.oom_episodes.fetch_add(1, Ordering::Relaxed);
        let c = &self.items;
        let stats = || self.with.stats();
        let mut tag = n << 32;
        let mut private = || {
            tag += 1;
            c.private_enqueued.fetch_add(1, Ordering::Relaxed);
            Box::new(Item::Private(tag))
        };
        {
            // The first allocation fails (a chunk, at a boundary with no spare): a node.
            let _oom = inject(FailurePlan::Nth(1));
            let before = stats().chunk_alloc_failures;
            for i in 0..OOM_STEP_MAX {
                c.enqueued.fetch_add(1, Ordering::Relaxed);
                self.with.enqueue(private());
                if i % 64 == 63 && stats().chunk_alloc_failures > before {
                    break;
                }
            }
        }
        let mut back = Vec::new();
        {
            // Every allocation fails: given back, then the synchronous last resort.
            let _oom = inject(FailurePlan::AllAfter(0));
            for _ in 0..OOM_STEP_MAX {
                match self.with.try_enqueue(private()) {
                    Ok(()) => {
                        c.enqueued.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(obj) => {
                        c.given_back.fetch_add(1, Ordering::Relaxed);
                        back.push(obj);
                        break;
                    }
                }
            }
            if !back.is_empty() {
                for _ in 0..2 {
                    c.enqueued.fetch_add(1, Ordering::Relaxed);
                    self.with.enqueue(private());
                }
            }
        }
        for obj in back {
            c.enqueued.fetch_add(1, Ordering::Relaxed);
            self.with.enqueue(obj);
        }
    }

    /// Enqueue a private object on the `with` pending, from inside a read-side section when
    /// `in_section` (with `try_enqueue`, then `enqueue` after the section if it came back).
    fn private(&self, tag: u64, in_section: bool) {
        let c = &self.items;
        let obj = Box::new(Item::Private(tag));
        if in_section {
            let g = self.flavor.read_lock();
            let back = self.with.try_enqueue(obj);
            drop(g);
            if let Err(obj) = back {
                c.given_back.fetch_add(1, Ordering::Relaxed);
                self.with.enqueue(obj);
            }
        } else {
            self.with.enqueue(obj);
        }
        c.private_enqueued.fetch_add(1, Ordering::Relaxed);
        c.enqueued.fetch_add(1, Ordering::Relaxed);
    }
}

impl<F: Flavor + Clone + Send + Sync + 'static> Host for PendingHost<F> {
    type F = F;

    fn pipeline(&self) -> &Pipeline {
        &self.p
    }

    fn flavor(&self) -> &F {
        &self.flavor
    }

    fn wait_own(&self, mode: Mode, _rng: &mut Rng) {
        self.p
            .api_error(format!("mode {} is not a pending mode", mode.name()));
    }

    fn retire(&self, mode: Mode, idx: usize, generation: u64) {
        let item = || Box::new(Item::Element { idx, generation });
        let dropper = || {
            Box::new(Dropper {
                p: self.p.clone(),
                idx,
                generation,
            })
        };
        let runner = || {
            Box::new(Runner {
                p: self.p.clone(),
                idx,
                generation,
            })
        };
        let c = &self.items;
        match mode {
            Mode::Enqueue => {
                c.enqueued.fetch_add(1, Ordering::Relaxed);
                self.with.enqueue(item());
            }
            Mode::EnqueueRaw => {
                c.enqueued.fetch_add(1, Ordering::Relaxed);
                let raw = NonNull::from(Box::leak(item()));
                // SAFETY: from a Box, never published (readers see the element, not the
                // token), handed over once.
                unsafe { self.with.enqueue_raw(raw) };
            }
            Mode::TryEnqueue => {
                c.enqueued.fetch_add(1, Ordering::Relaxed);
                let g = self.flavor.read_lock();
                let back = self.with.try_enqueue(item());
                drop(g);
                if let Err(obj) = back {
                    c.given_back.fetch_add(1, Ordering::Relaxed);
                    self.with.enqueue(obj);
                }
            }
            Mode::EnqueueFree => {
                self.free_enqueued.fetch_add(1, Ordering::Relaxed);
                self.free.enqueue(dropper());
            }
            Mode::EnqueueRun => {
                self.run_enqueued.fetch_add(1, Ordering::Relaxed);
                self.run.enqueue(runner());
            }
            Mode::PendingBarrier => {
                match generation % 3 {
                    0 => {
                        c.enqueued.fetch_add(1, Ordering::Relaxed);
                        self.with.enqueue(item());
                        self.with.barrier();
                    }
                    1 => {
                        self.free_enqueued.fetch_add(1, Ordering::Relaxed);
                        self.free.enqueue(dropper());
                        self.free.barrier();
                    }
                    _ => {
                        self.run_enqueued.fetch_add(1, Ordering::Relaxed);
                        self.run.enqueue(runner());
                        self.run.barrier();
                    }
                }
                self.barrier_checks.fetch_add(1, Ordering::Relaxed);
                if !self.p.is_released(idx, generation) {
                    self.p.api_error(format!(
                        "Pending::barrier() returned before the object enqueued just before it was processed (element {idx})"
                    ));
                }
            }
            Mode::EarlyFree => match generation % 3 {
                // The deliberate bug: process the token now, with the very code that
                // processes it after a grace period.
                0 => process_item(&self.p, c, *item()),
                1 => drop(dropper()),
                _ => runner().run(),
            },
            other => self
                .p
                .api_error(format!("mode {} is not a pending mode", other.name())),
        }
    }

    fn inject_mode(&self) -> Mode {
        Mode::EarlyFree
    }

    fn after_update(&self, n: u64) {
        if self.oom && n % OOM_EVERY == OOM_EVERY - 1 {
            self.oom_episode(n);
        }
        for i in 0..JUNK_PER_UPDATE {
            // One in four from inside a read-side section (`try_enqueue`).
            self.private(n * JUNK_PER_UPDATE + i, i % 4 == 0);
        }
    }

    fn barrier_all(&self) {
        self.flavor.barrier();
        self.with.barrier();
        self.free.barrier();
        self.run.barrier();
    }
}

/// An object's state, moved by compare-and-swap at every step.
const PUBLISHED: u8 = 0;
const WAITING: u8 = 1;
const REUSED: u8 = 2;
const PROCESSED: u8 = 3;

fn state_name(s: u8) -> &'static str {
    match s {
        PUBLISHED => "published",
        WAITING => "waiting",
        REUSED => "reused",
        PROCESSED => "processed",
        _ => "corrupt",
    }
}

/// The value a processed object's pair is poisoned with.
const POISON: u64 = 0xdead_beef_dead_beef;

/// The second word of a whole pair: a function of the first that a mix of two rewrites (or
/// the poison) does not satisfy.
fn mix(a: u64) -> u64 {
    (a ^ 0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
        .rotate_left(29)
        ^ 0x5a5a
}

/// A type-stable object of the reuse structure. Every field readers look at is atomic: a
/// recycled object may change under them.
struct Obj {
    /// Unique, fixed at allocation.
    serial: u64,
    state: AtomicU8,
    /// 0 published, 1 evicted (waiting), [`PIPE_LEN`] processed.
    pipe: AtomicU32,
    /// Even: stable; odd: being rewritten.
    seq: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

impl Obj {
    fn new(serial: u64, a: u64) -> Obj {
        Obj {
            serial,
            state: AtomicU8::new(PUBLISHED),
            pipe: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            a: AtomicU64::new(a),
            b: AtomicU64::new(mix(a)),
        }
    }

    /// Write the pair as one (the caller is the only writer; readers may be reading).
    fn write(&self, a: u64, b: u64) {
        // Relaxed: we are the only writer.
        let s = self.seq.load(Ordering::Relaxed);
        // The odd count is visible before the new pair (pairs with the reader's Acquire
        // fence).
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.a.store(a, Ordering::Relaxed);
        self.b.store(b, Ordering::Relaxed);
        // Release: the pair is visible before the even count (pairs with the reader's Acquire
        // load).
        self.seq.store(s + 2, Ordering::Release);
    }

    /// A stable read of the pair, `None` if it was being rewritten each of a few times.
    fn read(&self) -> Option<(u64, u64)> {
        for _ in 0..4 {
            // Acquire: pairs with the Release store that ended the last write.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let a = self.a.load(Ordering::Relaxed);
                let b = self.b.load(Ordering::Relaxed);
                // The pair loads happen before the second count load (pairs with the
                // writer's Release fence).
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return Some((a, b));
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Move the state from `from` to `to`; `Err(actual)` if it was not `from`.
    fn shift(&self, from: u8, to: u8) -> Result<(), u8> {
        // Relaxed: the state is a check; ordering comes from the pending's lock and the slots.
        self.state
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .map(|_| ())
    }
}

/// Processed objects, kept allocated until every thread is gone. Boxes, not objects: a
/// quarantined object must not move, since a (buggy) reader may still hold it.
#[allow(clippy::vec_box)]
type Quarantine = Mutex<Vec<Box<Obj>>>;

/// What the reuse pending does with an object after its grace period: check it was waiting,
/// mark it processed, poison its pair and quarantine it (its memory stays allocated).
fn process_obj(p: &Pipeline, c: &ReuseCounts, quarantine: &Quarantine, obj: Box<Obj>) {
    if let Err(s) = obj.shift(WAITING, PROCESSED) {
        p.api_error(format!(
            "Pending processed object #{} while it was {} (processed twice, or after dequeue handed it back)",
            obj.serial,
            state_name(s)
        ));
    }
    obj.pipe.store(PIPE_LEN as u32, Ordering::Relaxed);
    obj.write(POISON, POISON);
    c.processed.fetch_add(1, Ordering::Relaxed);
    lock(quarantine).push(obj);
}

/// The reuse structure's counters.
#[derive(Default)]
struct ReuseCounts {
    /// Objects processed at once, without a grace period (`--inject-early-free`).
    early: AtomicU64,
    /// Objects allocated fresh (`Box::new`).
    allocated: AtomicU64,
    /// Objects taken from the quarantine (after processing) and published again.
    recycled: AtomicU64,
    /// Handles `dequeue*` returned.
    dequeued: AtomicU64,
    /// ... rewritten in place and published again (shared access).
    reused_shared: AtomicU64,
    /// ... turned into a `Box` by `into_box` (after their grace period) and published again.
    into_box: AtomicU64,
    /// ... turned into a `Box` by `try_into_box`.
    try_into_box: AtomicU64,
    /// ... handed back with `requeue`.
    requeued: AtomicU64,
    /// Objects accepted by the pending: evictions and requeues (our count).
    enqueued: AtomicU64,
    /// `try_enqueue_raw` gave the pointer back (then `enqueue_raw`).
    given_back: AtomicU64,
    /// Objects the pending processed (poisoned, quarantined).
    processed: AtomicU64,
    /// Slot replacements.
    replacements: AtomicU64,
    /// Reader side: reads, whole stable reads, reads that found the object being rewritten
    /// each time, reads during which the object was rewritten (recycled under the reader).
    reads: AtomicU64,
    whole: AtomicU64,
    busy: AtomicU64,
    changed: AtomicU64,
    /// Reads that saw a torn or poisoned pair.
    torn: AtomicU64,
    /// The second reader pipe: the highest stage each read saw.
    pipe: [AtomicU64; PIPE_LEN + 1],
}

/// Slots of published objects, recycled through a `Pending` (see the module docs).
struct Reuse<F: Flavor + Send + Sync + 'static> {
    slots: Box<[AtomicPtr<Obj>]>,
    pending: Pending<Obj, F>,
    quarantine: Arc<Quarantine>,
    c: Arc<ReuseCounts>,
    /// Errors go to the pipeline's counters and messages.
    p: Arc<Pipeline>,
    stop: AtomicBool,
}

impl<F: Flavor + Clone + Send + Sync + 'static> Reuse<F> {
    fn new(p: Arc<Pipeline>, flavor: F) -> Reuse<F> {
        let c = Arc::new(ReuseCounts::default());
        let quarantine = Arc::new(Mutex::new(Vec::new()));
        let (c2, q2, p2) = (c.clone(), quarantine.clone(), p.clone());
        let pending = Pending::new(
            flavor,
            Process::with(move |obj: Box<Obj>| process_obj(&p2, &c2, &q2, obj)),
        );
        let slots: Box<[AtomicPtr<Obj>]> = (0..SLOTS)
            .map(|i| {
                c.allocated.fetch_add(1, Ordering::Relaxed);
                AtomicPtr::new(Box::into_raw(Box::new(Obj::new(i as u64, i as u64))))
            })
            .collect();
        Reuse {
            slots,
            pending,
            quarantine,
            c,
            p,
            stop: AtomicBool::new(false),
        }
    }

    /// The reuse writer: replace random slots' objects until told to stop.
    fn writer(&self, salt: u64) {
        let mut rng = Rng::seeded(salt);
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            self.replace(&mut rng);
            n += 1;
            if n % REUSE_BURST == 0 {
                thread::sleep(REUSE_REST);
            }
        }
    }

    /// Replace one slot's object and evict the old one into the pending.
    fn replace(&self, rng: &mut Rng) {
        let r = rng.next();
        let fresh = self.take(r, rng.next());
        let i = (r >> 40) as usize % SLOTS;
        // AcqRel: Release publishes the new object's fields (pairs with the readers'
        // Acquire); Acquire takes over the old one.
        let old = self.slots[i].swap(fresh.as_ptr(), Ordering::AcqRel);
        self.c.replacements.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = NonNull::new(old) {
            self.evict(old, r & (1 << 20) == 0);
        }
    }

    /// Hand an unpublished object to the pending (`try_enqueue_raw` first when `try_first`);
    /// under `--inject-early-free`, process it at once instead.
    fn evict(&self, old: NonNull<Obj>, try_first: bool) {
        // SAFETY: objects are never freed while threads run (processed ones are quarantined).
        let o = unsafe { old.as_ref() };
        if let Err(s) = o.shift(PUBLISHED, WAITING) {
            self.p.api_error(format!(
                "evicted object #{} was {}, not published",
                o.serial,
                state_name(s)
            ));
        }
        o.pipe.store(1, Ordering::Relaxed);
        if self.p.inject && !self.stop.load(Ordering::Relaxed) {
            // The deliberate bug: process it now, with the code the pending runs after the
            // grace period.
            // SAFETY: from Box::into_raw or Reused::into_raw, unpublished, owned by us alone;
            // readers that still hold it read memory that stays allocated (quarantined).
            let obj = unsafe { Box::from_raw(old.as_ptr()) };
            process_obj(&self.p, &self.c, &self.quarantine, obj);
            self.c.early.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.c.enqueued.fetch_add(1, Ordering::Relaxed);
        if try_first {
            // SAFETY: `old` came from Box::into_raw or Reused::into_raw, was unpublished by
            // the swap in `replace` (or at the end), and is handed over once.
            if let Err(back) = unsafe { self.pending.try_enqueue_raw(old) } {
                self.c.given_back.fetch_add(1, Ordering::Relaxed);
                // SAFETY: as above; `try_enqueue_raw` gave it back untouched.
                unsafe { self.pending.enqueue_raw(back) };
            }
        } else {
            // SAFETY: as above.
            unsafe { self.pending.enqueue_raw(old) };
        }
    }

    /// An object ready to publish: recycled through `dequeue*` most of the time.
    fn take(&self, r: u64, r2: u64) -> NonNull<Obj> {
        let got = match r % 8 {
            0..=3 => self.pending.dequeue(),
            4 => self.pending.dequeue_from_all(),
            5 => self.pending.dequeue_where(|o| o.serial % 2 == r2 % 2),
            _ => None,
        };
        match got {
            Some(reused) => match self.reuse(reused, r2) {
                Some(p) => p,
                None => self.allocate(r2),
            },
            None => self.allocate(r2),
        }
    }

    /// Check a dequeued object and make it publishable; `None` when it was handed back.
    fn reuse(&self, obj: Reused<'_, Obj, F>, r: u64) -> Option<NonNull<Obj>> {
        let c = &self.c;
        c.dequeued.fetch_add(1, Ordering::Relaxed);
        if let Err(s) = obj.shift(WAITING, REUSED) {
            self.p.api_error(format!(
                "dequeue handed back object #{} while it was {}, not waiting",
                obj.serial,
                state_name(s)
            ));
        }
        let stage = obj.pipe.load(Ordering::Relaxed);
        if stage != 1 {
            self.p.api_error(format!(
                "dequeue handed back object #{} at stage {stage}: it was processed",
                obj.serial
            ));
        }
        self.check_whole(&obj, "a dequeued object");
        match (r >> 8) % 32 {
            0 => {
                // Back to waiting: the pending processes it after a new grace period.
                obj.state.store(WAITING, Ordering::Relaxed);
                c.requeued.fetch_add(1, Ordering::Relaxed);
                c.enqueued.fetch_add(1, Ordering::Relaxed);
                obj.requeue();
                None
            }
            1 => {
                let owned = obj.into_box();
                c.into_box.fetch_add(1, Ordering::Relaxed);
                Some(self.republish_owned(owned, r))
            }
            2 | 3 => match obj.try_into_box() {
                Ok(owned) => {
                    c.try_into_box.fetch_add(1, Ordering::Relaxed);
                    Some(self.republish_owned(owned, r))
                }
                Err(obj) => Some(self.republish_shared(obj, r)),
            },
            _ => Some(self.republish_shared(obj, r)),
        }
    }

    /// Rewrite a dequeued object in place (readers may be reading it) and publish it.
    fn republish_shared(&self, obj: Reused<'_, Obj, F>, r: u64) -> NonNull<Obj> {
        let a = r | 1;
        obj.write(a, mix(a));
        obj.pipe.store(0, Ordering::Relaxed);
        if let Err(s) = obj.shift(REUSED, PUBLISHED) {
            self.p.api_error(format!(
                "reused object #{} changed to {} while the writer held it",
                obj.serial,
                state_name(s)
            ));
        }
        self.c.reused_shared.fetch_add(1, Ordering::Relaxed);
        obj.into_raw()
    }

    /// Re-initialize an object we own exclusively (its grace period ended) and publish it.
    fn republish_owned(&self, mut owned: Box<Obj>, r: u64) -> NonNull<Obj> {
        let state = *owned.state.get_mut();
        if state != REUSED {
            self.p.api_error(format!(
                "object #{} was {} when into_box() returned it",
                owned.serial,
                state_name(state)
            ));
        }
        *owned.state.get_mut() = PUBLISHED;
        *owned.pipe.get_mut() = 0;
        owned.write(r, mix(r));
        NonNull::from(Box::leak(owned))
    }

    /// A processed object from the quarantine, or a fresh one.
    fn allocate(&self, r: u64) -> NonNull<Obj> {
        let recycled = lock(&self.quarantine).pop();
        match recycled {
            Some(mut obj) => {
                let state = *obj.state.get_mut();
                if state != PROCESSED {
                    self.p.api_error(format!(
                        "quarantined object #{} was {}",
                        obj.serial,
                        state_name(state)
                    ));
                }
                *obj.state.get_mut() = PUBLISHED;
                *obj.pipe.get_mut() = 0;
                obj.write(r, mix(r));
                self.c.recycled.fetch_add(1, Ordering::Relaxed);
                NonNull::from(Box::leak(obj))
            }
            None => {
                let serial = self.c.allocated.fetch_add(1, Ordering::Relaxed);
                NonNull::from(Box::leak(Box::new(Obj::new(serial, r))))
            }
        }
    }

    /// A stable read of `obj`'s pair must be whole, and not the poison.
    fn check_whole(&self, obj: &Obj, whose: &str) -> Option<bool> {
        let (a, b) = obj.read()?;
        if a == POISON || b != mix(a) {
            self.c.torn.fetch_add(1, Ordering::Relaxed);
            self.p.check_errors.fetch_add(1, Ordering::Relaxed);
            let serial = obj.serial;
            self.p.note(|| {
                format!(
                    "{whose} (#{serial}) was not whole: ({a:#x}, {b:#x}){}",
                    if a == POISON {
                        ", poisoned: processed"
                    } else {
                        ""
                    }
                )
            });
            return Some(false);
        }
        Some(true)
    }

    /// Inside a reader's section: read slot `i`'s object and check it.
    #[inline]
    fn read_slot(&self, i: usize, linger: (u64, Duration), r: u64, local: &mut ReuseReader) {
        // Acquire: pairs with the writer's AcqRel swap.
        let p = self.slots[i % SLOTS].load(Ordering::Acquire);
        // SAFETY: objects are never freed while threads run (processed ones are
        // quarantined, freed only after every thread is joined), so the pointer stays valid;
        // the object may be recycled under us, which the checks allow for.
        let Some(o) = (unsafe { p.as_ref() }) else {
            return;
        };
        let stage1 = o.pipe.load(Ordering::Relaxed);
        let seq1 = o.seq.load(Ordering::Relaxed);
        match self.check_whole(o, "a reader's object") {
            Some(true) => local.whole += 1,
            Some(false) => {}
            None => local.busy += 1,
        }
        dwell(r, linger);
        let stage2 = o.pipe.load(Ordering::Relaxed);
        let state = o.state.load(Ordering::Relaxed);
        if o.seq.load(Ordering::Relaxed) != seq1 {
            local.changed += 1;
        }
        local.reads += 1;
        let stage = stage1.max(stage2) as usize;
        local.pipe[stage.min(PIPE_LEN)] += 1;
        if stage > 1 || state == PROCESSED {
            self.p.pipe_errors.fetch_add(1, Ordering::Relaxed);
            let serial = o.serial;
            self.p.note(|| {
                format!(
                    "a reader saw object #{serial} processed (stage {stage}, {}) inside its section",
                    state_name(state)
                )
            });
        }
    }
}

/// A reader's reuse counts, added to the shared ones when it exits.
#[derive(Default)]
struct ReuseReader {
    reads: u64,
    whole: u64,
    busy: u64,
    changed: u64,
    pipe: [u64; PIPE_LEN + 1],
}

impl ReuseReader {
    fn flush(&self, c: &ReuseCounts) {
        c.reads.fetch_add(self.reads, Ordering::Relaxed);
        c.whole.fetch_add(self.whole, Ordering::Relaxed);
        c.busy.fetch_add(self.busy, Ordering::Relaxed);
        c.changed.fetch_add(self.changed, Ordering::Relaxed);
        for (s, l) in c.pipe.iter().zip(self.pipe) {
            s.fetch_add(l, Ordering::Relaxed);
        }
    }
}

/// One reader thread: checked sections (the pipeline, and one slot of the reuse structure
/// one time in two), some of which `try_enqueue` a private object; then one callback queued
/// from the exiting thread.
fn reader<F: Flavor + Clone + Send + Sync + 'static>(
    h: &Arc<PendingHost<F>>,
    reuse: &Reuse<F>,
    exit: &AtomicBool,
    salt: u64,
) {
    let mut rng = Rng::seeded(salt);
    let linger = linger(h.p.inject);
    let mut local = ReuseReader::default();
    let mut tag = salt << 40;
    read_until(&h.p, exit, |c| {
        let r = rng.next();
        let guard = h.flavor.read_lock();
        let look = h.p.look();
        if r & 1 == 0 {
            reuse.read_slot((r >> 48) as usize, linger, r, &mut local);
        } else {
            dwell(r, linger);
        }
        let back = ((r >> 4) & 31 == 0).then(|| {
            tag += 1;
            h.with.try_enqueue(Box::new(Item::Private(tag)))
        });
        h.p.verify(look, c);
        drop(guard);
        if let Some(back) = back {
            if let Err(obj) = back {
                h.items.given_back.fetch_add(1, Ordering::Relaxed);
                h.with.enqueue(obj);
            }
            h.items.private_enqueued.fetch_add(1, Ordering::Relaxed);
            h.items.enqueued.fetch_add(1, Ordering::Relaxed);
        }
    });
    local.flush(&reuse.c);
    queue_exit_callback(h);
}

/// A `Pending`'s statistics, as reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PendingFigures {
    /// Which pending: `process_with`, `process_free`, `process_run` or `reuse`.
    pub name: &'static str,
    /// Objects it accepted.
    pub enqueued: u64,
    /// Objects it processed (for `reuse`: before its drop, which processed the rest).
    pub processed: u64,
    /// Objects `dequeue*` handed back.
    pub dequeued: u64,
    /// Chunks allocated on the enqueue path.
    pub chunks_allocated: u64,
    /// Chunk boundaries served by spare chunks.
    pub spares_used: u64,
    /// Chunk allocations that failed.
    pub chunk_alloc_failures: u64,
    /// Objects stored in fallback nodes.
    pub fallback_nodes: u64,
    /// Fallback-node allocations that failed too.
    pub node_alloc_failures: u64,
    /// Objects `enqueue` processed itself after waiting for a grace period (last resort).
    pub synchronous: u64,
    /// Objects `try_enqueue` gave back.
    pub given_back: u64,
    /// Processing that panicked.
    pub process_panics: u64,
    /// Whether its worker thread could not be started (processing inline).
    pub inline_processing: bool,
}

impl PendingFigures {
    fn of(name: &'static str, s: &Stats) -> PendingFigures {
        PendingFigures {
            name,
            enqueued: s.enqueued,
            processed: s.processed,
            dequeued: s.dequeued,
            chunks_allocated: s.chunks_allocated,
            spares_used: s.spares_used,
            chunk_alloc_failures: s.chunk_alloc_failures,
            fallback_nodes: s.fallback_nodes,
            node_alloc_failures: s.node_alloc_failures,
            synchronous: s.synchronous,
            given_back: s.given_back,
            process_panics: s.process_panics,
            inline_processing: s.inline_processing,
        }
    }
}

/// The reuse structure's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReuseFigures {
    /// Slot replacements made by the reuse writer.
    pub replacements: u64,
    /// Handles `dequeue*` returned.
    pub dequeued: u64,
    /// ... rewritten in place (shared access, seqlock) and published again.
    pub reused_shared: u64,
    /// ... made exclusive by `into_box` (waiting for their grace period).
    pub into_box: u64,
    /// ... made exclusive by `try_into_box`.
    pub try_into_box: u64,
    /// ... handed back with `requeue`.
    pub requeued: u64,
    /// Objects accepted by the pending (evictions and requeues).
    pub enqueued: u64,
    /// Objects it processed (its drop included).
    pub processed: u64,
    /// `try_enqueue_raw` gave the pointer back.
    pub given_back: u64,
    /// Objects allocated fresh.
    pub allocated: u64,
    /// Processed objects taken from the quarantine and published again.
    pub recycled_after_processing: u64,
    /// Reads of a slot's object by readers.
    pub reads: u64,
    /// ... whose stable read was whole.
    pub whole: u64,
    /// ... that found the object being rewritten each time they looked.
    pub busy: u64,
    /// ... during which the object was rewritten (recycled under the reader).
    pub changed_under_reader: u64,
    /// Torn or poisoned pairs seen (errors).
    pub torn: u64,
    /// The objects' reader pipe: the highest stage each read saw (past 1 is an error).
    pub pipe: Vec<u64>,
}

/// Private objects of the `Process::with` pending.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PrivateFigures {
    /// Enqueued (writer junk, readers' in-section `try_enqueue`).
    pub enqueued: u64,
    /// Processed (must match).
    pub processed: u64,
    /// Given back by `try_enqueue` (element tokens too), then enqueued outside the section.
    pub given_back: u64,
}

/// One flavor's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct FlavorReport {
    /// `rcu` or `srcu`.
    pub flavor: &'static str,
    /// Errors of this flavor's run (pipe, check, api, lost).
    pub errors: u64,
    /// The pipeline's reader pipe histogram.
    pub pipe: Vec<u64>,
    /// Sections checked.
    pub reads: u64,
    /// Elements published by the writer.
    pub updates: u64,
    /// Updates per way into a pending.
    pub updates_by_mode: BTreeMap<&'static str, u64>,
    /// Elements released by the pendings (each exactly once).
    pub released: u64,
    /// `barrier()` checks made by the writer.
    pub barrier_checks: u64,
    /// Out-of-memory episodes the writer ran.
    pub oom_episodes: u64,
    /// Reads that saw a stage above 1 (the pipeline's and the reuse objects').
    pub pipe_errors: u64,
    /// Reads that saw a freed, reused, torn or poisoned element or object.
    pub check_errors: u64,
    /// Broken API promises and broken object state transitions.
    pub api_errors: u64,
    /// Elements or objects that never came back.
    pub lost: u64,
    /// Grace periods of the flavor during the run.
    pub grace_periods: u64,
    /// Allocation failures injected during this flavor's run.
    pub injected_failures: u64,
    /// Seconds readers and writers ran.
    pub duration_s: f64,
    /// Reader threads started (churn included).
    pub reader_threads_started: u64,
    /// rcutorture's "Free-Block Circulation".
    pub free_block_circulation: Vec<u64>,
    /// Private objects of the `Process::with` pending.
    pub private: PrivateFigures,
    /// The `dequeue` reuse structure.
    pub reuse: ReuseFigures,
    /// Each pending's statistics.
    pub pendings: Vec<PendingFigures>,
}

/// The result of a run; also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What every torture reports (`flavor` is `"pending"`), every flavor's run together.
    #[serde(flatten)]
    pub totals: Totals,
    /// `"on"`, or `"off"` under the chicken switch (`GRACE_PENDING=off`: one callback per
    /// object, no batching; see `grace::pending::set_batching`).
    pub batching: &'static str,
    /// Reader threads alive at a time.
    pub readers: usize,
    /// One in this many fallible allocations failed on purpose (0: off).
    pub fail_one_in: u32,
    /// Allocation failures injected, all flavors.
    pub injected_failures: u64,
    /// Each flavor's run, in order.
    pub flavors: Vec<FlavorReport>,
}

/// Run the torture on each of `flavors` in turn, each for an equal share of the duration,
/// showing progress on `bar`, whose length should be the duration in milliseconds (see
/// [`super::progress_bar`]).
pub fn run(opts: &Options, flavors: &[PendingFlavor], bar: &ProgressBar) -> Report {
    let started_at = Instant::now();
    let share = opts.duration / flavors.len().max(1) as u32;
    let mut reports = Vec::new();
    let mut messages = Vec::new();
    for (i, &f) in flavors.iter().enumerate() {
        let offset = share * i as u32;
        let (report, m) = match f {
            PendingFlavor::Rcu => {
                let gps = || grace::rcu::stats().grace_periods;
                run_flavor(opts, share, offset, bar, "rcu", Rcu, gps)
            }
            PendingFlavor::Srcu => {
                // Built before injection starts: a domain that cannot be built is no test.
                let domain = match Srcu::new() {
                    Ok(d) => Arc::new(d),
                    Err(e) => super::fail(&format!("cannot create an SRCU domain: {e}")),
                };
                let d2 = domain.clone();
                let gps = move || d2.stats().grace_periods;
                run_flavor(opts, share, offset, bar, "srcu", domain, gps)
            }
        };
        messages.extend(m.into_iter().map(|m| format!("[{}] {m}", f.name())));
        reports.push(report);
    }
    messages.truncate(16);
    let sum = |f: fn(&FlavorReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut pipe = vec![0u64; PIPE_LEN + 1];
    for r in &reports {
        for (t, x) in pipe.iter_mut().zip(&r.pipe) {
            *t += x;
        }
    }
    Report {
        totals: Totals {
            flavor: "pending",
            errors: sum(|r| r.errors),
            pipe,
            reads: sum(|r| r.reads),
            updates: sum(|r| r.updates),
            duration_s: reports.iter().map(|r| r.duration_s).sum(),
            total_s: started_at.elapsed().as_secs_f64(),
            reader_threads_started: sum(|r| r.reader_threads_started),
            pipe_errors: sum(|r| r.pipe_errors),
            check_errors: sum(|r| r.check_errors),
            api_errors: sum(|r| r.api_errors),
            lost: sum(|r| r.lost),
            barrier_mode: super::barrier_mode(),
            inject_early_free: opts.inject_early_free,
            error_messages: messages,
        },
        batching: super::batching_text(),
        readers: opts.readers.max(1),
        fail_one_in: opts.fail_one_in,
        injected_failures: sum(|r| r.injected_failures),
        flavors: reports,
    }
}

/// One flavor's run: returns its report and its error descriptions.
fn run_flavor<F: Flavor + Clone + Send + Sync + 'static>(
    opts: &Options,
    duration: Duration,
    offset: Duration,
    bar: &ProgressBar,
    name: &'static str,
    flavor: F,
    grace_periods: impl Fn() -> u64,
) -> (FlavorReport, Vec<String>) {
    let gp_before = grace_periods();
    let injection = FailureInjection::start(opts.fail_one_in);
    let p = Arc::new(Pipeline::new(opts.inject_early_free));
    let h = Arc::new(PendingHost::new(
        p.clone(),
        flavor.clone(),
        opts.fail_one_in != 0,
    ));
    let reuse = Arc::new(Reuse::new(p.clone(), flavor));

    let (h2, r2) = (h.clone(), reuse.clone());
    let mut pool = Readers::start(
        &format!("pending-{name}-reader"),
        opts.readers.max(1),
        move |exit, salt| reader(&h2, &r2, exit, salt),
    );
    let writer = Writer::new(h.clone(), ROTATION, 0);
    let writer = spawn(&format!("pending-{name}-writer"), move || writer.run());
    let r2 = reuse.clone();
    let reuser = spawn(&format!("pending-{name}-reuse"), move || r2.writer(7));

    let ran = control(duration, offset, bar, &mut [&mut pool], || {
        format!(
            "{name}: {} reads, {} updates, {} reused, {} errors",
            crate::ui::si(p.reads() as f64),
            crate::ui::si(p.updates.load(Ordering::Relaxed) as f64),
            crate::ui::si(reuse.c.dequeued.load(Ordering::Relaxed) as f64),
            p.errors()
        )
    });

    // Stop readers first (the pipe histograms are theirs), then the writers.
    pool.stop();
    let reader_threads_started = pool.started;
    drop(pool);
    reuse.stop.store(true, Ordering::Relaxed);
    join(reuser, "reuse writer");
    p.stopping.store(true, Ordering::Relaxed);
    let writer = join(writer, "writer");

    // The pipeline's pendings: everything comes back through barrier().
    let mut lost = drain(&*h);
    let figures: Vec<PendingFigures> = [
        PendingFigures::of("process_with", &h.with.stats()),
        PendingFigures::of("process_free", &h.free.stats()),
        PendingFigures::of("process_run", &h.run.stats()),
    ]
    .into();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let items = &h.items;
    let private = PrivateFigures {
        enqueued: load(&items.private_enqueued),
        processed: load(&items.private_processed),
        given_back: load(&items.given_back),
    };
    let mut missing = |n: u64, what: String| {
        if n > 0 {
            lost += n;
            p.note(|| what);
        }
    };
    missing(
        private.enqueued.abs_diff(private.processed),
        format!(
            "{} private objects enqueued, {} processed after barrier()",
            private.enqueued, private.processed
        ),
    );
    for (f, ours) in figures.iter().zip([
        load(&items.enqueued),
        load(&h.free_enqueued),
        load(&h.run_enqueued),
    ]) {
        missing(
            f.enqueued.abs_diff(ours) + f.enqueued.abs_diff(f.processed + f.dequeued),
            format!(
                "{}: {ours} objects handed over; stats(): {} enqueued, {} processed, {} dequeued after barrier()",
                f.name, f.enqueued, f.processed, f.dequeued
            ),
        );
    }

    // The reuse structure: evict every slot, then drop its pending while it holds them.
    let reuse = match Arc::try_unwrap(reuse) {
        Ok(r) => r,
        Err(_) => super::fail("the reuse structure is still shared after its threads ended"),
    };
    for slot in reuse.slots.iter() {
        if let Some(o) = NonNull::new(slot.swap(ptr::null_mut(), Ordering::AcqRel)) {
            reuse.evict(o, false);
        }
    }
    let reuse_stats = PendingFigures::of("reuse", &reuse.pending.stats());
    let Reuse {
        pending,
        quarantine,
        c,
        ..
    } = reuse;
    drop(pending); // must process every object it still holds
    let rf = ReuseFigures {
        replacements: load(&c.replacements),
        dequeued: load(&c.dequeued),
        reused_shared: load(&c.reused_shared),
        into_box: load(&c.into_box),
        try_into_box: load(&c.try_into_box),
        requeued: load(&c.requeued),
        enqueued: load(&c.enqueued),
        processed: load(&c.processed),
        given_back: load(&c.given_back),
        allocated: load(&c.allocated),
        recycled_after_processing: load(&c.recycled),
        reads: load(&c.reads),
        whole: load(&c.whole),
        busy: load(&c.busy),
        changed_under_reader: load(&c.changed),
        torn: load(&c.torn),
        pipe: c.pipe.iter().map(load).collect(),
    };
    let mut missing = |n: u64, what: String| {
        if n > 0 {
            lost += n;
            p.note(|| what);
        }
    };
    missing(
        (rf.enqueued + load(&c.early)).abs_diff(rf.processed + rf.dequeued),
        format!(
            "reuse: {} objects enqueued, {} processed (drop included) + {} handed back by dequeue",
            rf.enqueued, rf.processed, rf.dequeued
        ),
    );
    missing(
        reuse_stats.enqueued.abs_diff(rf.enqueued) + reuse_stats.dequeued.abs_diff(rf.dequeued),
        format!(
            "reuse: stats() says {} enqueued and {} dequeued, the writer counted {} and {}",
            reuse_stats.enqueued, reuse_stats.dequeued, rf.enqueued, rf.dequeued
        ),
    );
    let quarantined = lock(&quarantine).len() as u64;
    missing(
        rf.allocated.abs_diff(quarantined),
        format!(
            "reuse: {} objects allocated, {quarantined} processed and quarantined at the end",
            rf.allocated
        ),
    );
    let unprocessed = lock(&quarantine)
        .iter()
        .filter(|o| o.state.load(Ordering::Relaxed) != PROCESSED)
        .count() as u64;
    missing(
        unprocessed,
        format!("reuse: {unprocessed} quarantined objects are not marked processed"),
    );
    // Every thread is gone and the pending dropped: the objects can be freed for real.
    drop(quarantine);

    let writer_modes = writer.by_name();
    let barrier_checks = load(&h.barrier_checks);
    let oom_episodes = load(&h.oom_episodes);
    let free_block_circulation = p.circulation();
    // The host's last references: its pendings are empty, and dropped here.
    match Arc::try_unwrap(h) {
        Ok(h) => drop(h),
        Err(_) => {
            lost += 1;
            p.note(|| "the pipeline's pendings are still referenced after the drain".into());
        }
    }
    let injected = injection.finish();

    let report = FlavorReport {
        flavor: name,
        errors: p.errors() + lost,
        pipe: p.pipe(),
        reads: p.reads(),
        updates: load(&p.updates),
        updates_by_mode: writer_modes,
        released: p.released(),
        barrier_checks,
        oom_episodes,
        pipe_errors: load(&p.pipe_errors),
        check_errors: load(&p.check_errors),
        api_errors: load(&p.api_errors),
        lost,
        grace_periods: grace_periods() - gp_before,
        injected_failures: injected,
        duration_s: ran.as_secs_f64(),
        reader_threads_started,
        free_block_circulation,
        private,
        reuse: rf,
        pendings: figures.into_iter().chain([reuse_stats]).collect(),
    };
    (report, p.messages())
}

impl Verdict for Report {
    fn passed(&self) -> bool {
        self.totals.passed()
    }

    /// The report for a person, in rcutorture's terms, one block per flavor.
    fn human(&self) -> String {
        use crate::ui::{count, si, Align, Table};
        let t = &self.totals;
        let mut o = format!(
            "grace torture pending: {:.1} s on {}, {} readers ({} reader threads in all), barrier mode {}, batching {}, {}{}\n",
            t.duration_s,
            self.flavors
                .iter()
                .map(|f| f.flavor)
                .collect::<Vec<_>>()
                .join(" then "),
            self.readers,
            t.reader_threads_started,
            t.barrier_mode,
            self.batching,
            injection_text(self.fail_one_in, self.injected_failures),
            t.injected()
        );
        for f in &self.flavors {
            let rate = |n: u64| si(n as f64 / f.duration_s.max(1e-9));
            o.push_str(&format!(
                "[{}] pending-torture: Reader Pipe:  {}\n",
                f.flavor,
                histogram(&f.pipe)
            ));
            o.push_str(&format!(
                "[{}] pending-torture: Reuse Pipe:  {}\n",
                f.flavor,
                histogram(&f.reuse.pipe)
            ));
            o.push_str(&format!(
                "  reads              {:>14}  ({}/s; {} of a reuse slot: {} whole, {} busy, {} rewritten under the reader)\n",
                count(f.reads),
                rate(f.reads),
                count(f.reuse.reads),
                count(f.reuse.whole),
                count(f.reuse.busy),
                count(f.reuse.changed_under_reader)
            ));
            let modes = super::modes_line(&f.updates_by_mode);
            o.push_str(&format!(
                "  updates            {:>14}  ({}/s: {modes}); {} released, each once; {} barrier checks\n",
                count(f.updates),
                rate(f.updates),
                count(f.released),
                count(f.barrier_checks)
            ));
            o.push_str(&format!(
                "  private objects    {:>14}  enqueued, {} processed, {} given back by try_enqueue\n",
                count(f.private.enqueued),
                count(f.private.processed),
                count(f.private.given_back)
            ));
            let r = &f.reuse;
            o.push_str(&format!(
                "  reuse              {:>14}  replacements; dequeued {} (rewritten in place {}, into_box {}, try_into_box {}, requeued {}); enqueued {} = processed {} + dequeued {}; allocated {}, recycled after processing {}\n",
                count(r.replacements),
                count(r.dequeued),
                count(r.reused_shared),
                count(r.into_box),
                count(r.try_into_box),
                count(r.requeued),
                count(r.enqueued),
                count(r.processed),
                count(r.dequeued),
                count(r.allocated),
                count(r.recycled_after_processing)
            ));
            o.push_str(&format!(
                "  grace periods      {:>14}  ({} allocation failures injected, {} out-of-memory episodes)\n",
                count(f.grace_periods),
                count(f.injected_failures),
                count(f.oom_episodes)
            ));
            let mut table = Table::new(&[
                ("pending", Align::Left),
                ("enqueued", Align::Right),
                ("processed", Align::Right),
                ("dequeued", Align::Right),
                ("chunks", Align::Right),
                ("spares", Align::Right),
                ("chunk fail", Align::Right),
                ("nodes", Align::Right),
                ("node fail", Align::Right),
                ("sync", Align::Right),
                ("given back", Align::Right),
            ]);
            for p in &f.pendings {
                table.row(vec![
                    format!(
                        "{}{}",
                        p.name,
                        if p.inline_processing { " (inline)" } else { "" }
                    ),
                    count(p.enqueued),
                    count(p.processed),
                    count(p.dequeued),
                    count(p.chunks_allocated),
                    count(p.spares_used),
                    count(p.chunk_alloc_failures),
                    count(p.fallback_nodes),
                    count(p.node_alloc_failures),
                    count(p.synchronous),
                    count(p.given_back),
                ]);
            }
            o.push_str(&table.render(2));
            o.push_str(&format!(
                "  errors             {:>14}  (pipe {}, check {}, api {}, lost {})\n",
                count(f.errors),
                f.pipe_errors,
                f.check_errors,
                f.api_errors,
                f.lost
            ));
        }
        o.push_str(
            "  (reuse processed counts its pending's drop; its stats() row is taken before it)\n",
        );
        o.push_str(&t.tail(""));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_pair_is_not_whole() {
        let (a1, a2) = (0x1234, 0x5678);
        assert_ne!(mix(a1), mix(a2));
        assert_ne!(mix(POISON), POISON);
        let o = Obj::new(0, a1);
        assert_eq!(o.read(), Some((a1, mix(a1))));
        o.write(a2, mix(a2));
        assert_eq!(o.read(), Some((a2, mix(a2))));
        assert_eq!(o.seq.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn states_move_only_from_the_expected_one() {
        let o = Obj::new(0, 1);
        assert_eq!(o.shift(PUBLISHED, WAITING), Ok(()));
        assert_eq!(o.shift(PUBLISHED, WAITING), Err(WAITING));
        assert_eq!(o.shift(WAITING, PROCESSED), Ok(()));
        assert_eq!(o.shift(WAITING, REUSED), Err(PROCESSED));
    }
}
