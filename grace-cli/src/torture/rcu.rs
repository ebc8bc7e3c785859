//! `grace torture rcu`: the pipeline check of the kernel's rcutorture, against `grace::rcu`.
//!
//! The pipeline, the reader's check and the writer are the parent module's (see
//! [`super`]); this module runs one pipeline on `grace::rcu` ([`grace::Rcu`] as the
//! [`Host`]'s flavor).
//!
//! # What is exercised
//!
//! The writer rotates between every grace-period API every few updates ([`ROTATION`]):
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
//!
//! Beside them, a *flooder* thread queues callbacks that free 64-byte boxes as fast as it can,
//! a *switcher* flips where callbacks run (`rcu::set_callback_invocation` for every shard, or
//! `set_shard_invocation` for one, local or offloaded) every few milliseconds, and a
//! *shrinker* calls `grace::pressure::scan` every few milliseconds (flushing lazy callbacks,
//! running expired ones on its own thread, expediting): the pipeline's own callbacks then run
//! on workers, on the writer, on the flooder (threads queuing on the same shard run each
//! other's ready callbacks) and on the shrinker, across switches and `barrier`s; every flood
//! callback must have run once by the end.
//!
//! The hidden `--inject-early-free` option makes the writer advance removed elements without
//! waiting for any grace period, and readers linger in their sections: the check must fire,
//! which proves that it can.

use super::{
    control, drain, dwell, histogram, join, linger, queue_exit_callback, read_until, spawn, Host,
    Mode, Options, Pipeline, ReaderCounts, Readers, Rng, Totals, Verdict, Writer,
};
use grace::rcu;
use grace::{Rcu, RcuCell};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The default reader count of `torture rcu`: the number of CPUs, at least 2.
pub fn default_readers() -> usize {
    grace::sys::num_cpus().max(2)
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

/// The writer's rotation: every API of `grace::rcu`.
const ROTATION: &[Mode] = &[
    Mode::Sync,
    Mode::Call,
    Mode::Poll,
    Mode::Expedited,
    Mode::CondSync,
    Mode::CallHurry,
    Mode::FullPoll,
    Mode::FullCond,
];

/// Everything the threads share: the pipeline and the side cell.
struct Shared {
    p: Pipeline,
    side: RcuCell<Side>,
    side_reads: AtomicU64,
    side_updates: AtomicU64,
}

impl Host for Shared {
    type F = Rcu;

    fn pipeline(&self) -> &Pipeline {
        &self.p
    }

    fn flavor(&self) -> &Rcu {
        &Rcu
    }

    fn wait_own(&self, mode: Mode, _rng: &mut Rng) {
        match mode {
            Mode::FullPoll => {
                let c = rcu::start_poll_full();
                while !rcu::poll_state_full(c) {
                    thread::yield_now();
                }
            }
            Mode::FullCond => {
                let c = rcu::get_state_full();
                rcu::cond_synchronize_full(c);
                self.p.expect(
                    rcu::poll_state_full(c),
                    "poll_state_full() is false right after cond_synchronize_full()",
                );
            }
            _ => unreachable!("mode {} is not in the RCU rotation", mode.name()),
        }
    }

    /// Checked with a full cookie: an expedited grace period completes the full state.
    fn expedited(&self) {
        let full = rcu::get_state_full();
        rcu::synchronize_expedited();
        self.p.expect(
            rcu::poll_state_full(full),
            "poll_state_full() is false for a cookie taken before synchronize_expedited()",
        );
    }

    fn after_update(&self, n: u64) {
        if n % 16 == 0 {
            self.update_side(n / 16);
        }
    }
}

impl Shared {
    /// Replace the side cell's value and retire the old one, rotating between the ways a
    /// [`grace::Retired`] can be disposed of.
    fn update_side(&self, seq: u64) {
        let retired = self.side.replace(Side::new(seq + 1));
        self.side_updates.fetch_add(1, Ordering::Relaxed);
        match seq % 4 {
            0 | 1 => retired.defer_drop(),
            2 => {
                let old = retired.synchronize();
                self.p.expect(
                    old.is_valid(),
                    "Retired::synchronize() returned a corrupted value",
                );
            }
            _ => {
                rcu::cond_synchronize(retired.cookie());
                if let Err(r) = retired.try_reclaim() {
                    self.p.api_error(
                        "Retired::try_reclaim() refused after cond_synchronize()".into(),
                    );
                    r.defer_drop();
                }
            }
        }
    }
}

/// One reader thread: read sections until told to exit, then queue one callback from the
/// exiting thread (it must run even though its thread is gone).
fn reader(s: &Arc<Shared>, exit: &AtomicBool, salt: u64) {
    let mut rng = Rng::seeded(salt);
    let linger = linger(s.p.inject);
    let mut side_reads = 0;
    read_until(&s.p, exit, |c| {
        read_once(s, &mut rng, c, linger, &mut side_reads)
    });
    s.side_reads.fetch_add(side_reads, Ordering::Relaxed);
    queue_exit_callback(s);
}

/// One read-side section of the pipeline check.
#[inline]
fn read_once(
    s: &Shared,
    rng: &mut Rng,
    c: &mut ReaderCounts,
    linger: (u64, Duration),
    side_reads: &mut u64,
) {
    let r = rng.next();
    let guard = rcu::read_lock();
    let look = s.p.look();
    // Sometimes nest a section; the outer one is what protects the element.
    let inner = (r & 3 == 0).then(rcu::read_lock);
    dwell(r, linger);
    if (r >> 4) & 7 == 0 {
        *side_reads += 1;
        let v = s.side.load(&guard);
        if !v.is_valid() {
            c.check_errors += 1;
            let (seq, check) = (
                v.seq.load(Ordering::Relaxed),
                v.check.load(Ordering::Relaxed),
            );
            s.p.note(|| format!("reader saw an invalid side-cell value (seq {seq:#x}, check {check:#x}): freed early"));
        }
    }
    drop(inner);
    s.p.verify(look, c);
    drop(guard);
}

/// The result of a run; also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What every torture reports (`flavor` is `"rcu"`).
    #[serde(flatten)]
    pub totals: Totals,
    /// Normal grace periods completed during the run (from `grace::rcu::stats()`).
    pub grace_periods: u64,
    /// Expedited grace periods completed during the run.
    pub expedited_grace_periods: u64,
    /// Updates per grace-period API.
    pub updates_by_mode: BTreeMap<&'static str, u64>,
    /// Callbacks invoked during the run (from `grace::rcu::stats()`).
    pub callbacks_invoked: u64,
    /// Of those, run by a thread that queued callbacks rather than a worker.
    pub callbacks_invoked_locally: u64,
    /// Callbacks queued by the flooder (each frees a 64-byte box).
    pub flood_callbacks: u64,
    /// Switches between local and offloaded invocation during the run.
    pub invocation_switches: u64,
    /// `pressure::scan` calls by the shrinker thread.
    pub shrinker_scans: u64,
    /// Callbacks and objects those scans processed on the shrinker's thread.
    pub shrinker_freed: u64,
    /// Of those, the pipeline's own callback steps.
    pub pipeline_callbacks: u64,
    /// rcutorture's "Free-Block Circulation": elements that left each stage.
    pub free_block_circulation: Vec<u64>,
    /// Reader threads alive at a time.
    pub readers: usize,
    /// Side-cell replacements.
    pub side_updates: u64,
    /// Reads that checked the side cell's value.
    pub side_reads: u64,
    /// The longest single grace-period wait of the writer, in milliseconds.
    pub max_gp_wait_ms: f64,
}

/// Run the torture test, showing progress on `bar`, whose length should be the duration in
/// milliseconds (see [`super::progress_bar`]).
pub fn run(opts: &Options, bar: &ProgressBar) -> Report {
    let before = rcu::stats();
    let s = Arc::new(Shared {
        p: Pipeline::new(opts.inject_early_free),
        side: RcuCell::new(Side::new(0)),
        side_reads: AtomicU64::new(0),
        side_updates: AtomicU64::new(0),
    });
    let readers = opts.readers.max(1);
    let started_at = Instant::now();

    let s2 = s.clone();
    let mut pool = Readers::start("torture-reader", readers, move |exit, salt| {
        reader(&s2, exit, salt)
    });
    let writer = Writer::new(s.clone(), ROTATION, 0);
    let writer = spawn("torture-writer", move || writer.run());
    let flood = Arc::new(Flood::default());
    let flooder = {
        let f = flood.clone();
        spawn("torture-flooder", move || f.flood())
    };
    let switcher = {
        let f = flood.clone();
        spawn("torture-switcher", move || f.switch())
    };
    let shrinker = {
        let f = flood.clone();
        spawn("torture-shrinker", move || f.shrink())
    };

    // Control loop: progress, and thread churn.
    let duration = control(opts.duration, Duration::ZERO, bar, &mut [&mut pool], || {
        format!(
            "{} reads, {} updates, {} errors",
            crate::ui::si(s.p.reads() as f64),
            crate::ui::si(s.p.updates.load(Ordering::Relaxed) as f64),
            s.p.errors()
        )
    });

    // Stop readers first (the pipe histogram is theirs), then the writer.
    pool.stop();
    s.p.stopping.store(true, Ordering::Relaxed);
    let writer = join(writer, "writer");
    flood.stop.store(true, Ordering::Relaxed);
    join(flooder, "flooder");
    join(switcher, "switcher");
    join(shrinker, "shrinker");
    rcu::set_callback_invocation(rcu::Invocation::Local);

    // Let every callback chain finish, and every exit callback run.
    let mut lost = drain(&*s);
    let (queued, ran) = (load_u64(&flood.queued), load_u64(&flood.ran));
    if queued != ran {
        lost += queued.abs_diff(ran);
        s.p.note(|| format!("{queued} flood callbacks queued, {ran} ran after barrier()"));
    }

    let after = rcu::stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Report {
        totals: s.p.totals(
            "rcu",
            lost,
            duration,
            started_at,
            pool.started,
            opts.inject_early_free,
        ),
        grace_periods: after.grace_periods - before.grace_periods,
        expedited_grace_periods: after.expedited_grace_periods - before.expedited_grace_periods,
        updates_by_mode: writer.by_name(),
        callbacks_invoked: after.callbacks_invoked - before.callbacks_invoked,
        callbacks_invoked_locally: after.callbacks_invoked_locally
            - before.callbacks_invoked_locally,
        flood_callbacks: queued,
        invocation_switches: load(&flood.switches),
        shrinker_scans: load(&flood.scans),
        shrinker_freed: load(&flood.scan_freed),
        pipeline_callbacks: load(&s.p.pipeline_callbacks),
        free_block_circulation: s.p.circulation(),
        readers,
        side_updates: load(&s.side_updates),
        side_reads: load(&s.side_reads),
        max_gp_wait_ms: writer.max_wait.as_secs_f64() * 1e3,
    }
}

impl Verdict for Report {
    fn passed(&self) -> bool {
        self.totals.passed()
    }

    /// The report for a person, in rcutorture's terms.
    fn human(&self) -> String {
        use crate::ui::{count, si};
        let t = &self.totals;
        let mut o = String::new();
        o.push_str(&format!(
            "grace torture rcu: {:.1} s, {} readers ({} reader threads in all), barrier mode {}{}\n",
            t.duration_s,
            self.readers,
            t.reader_threads_started,
            t.barrier_mode,
            t.injected()
        ));
        o.push_str(&t.reader_pipe_line());
        o.push_str(&format!(
            "rcu-torture: Free-Block Circulation:  {}\n",
            histogram(&self.free_block_circulation)
        ));
        let rate = |n: u64| si(n as f64 / t.duration_s.max(1e-9));
        o.push_str(&format!(
            "  reads              {:>14}  ({}/s; {} checked the side cell)\n",
            count(t.reads),
            rate(t.reads),
            count(self.side_reads)
        ));
        let modes = super::modes_line(&self.updates_by_mode);
        o.push_str(&format!(
            "  updates            {:>14}  ({}/s: {modes})\n",
            count(t.updates),
            rate(t.updates)
        ));
        o.push_str(&format!(
            "  grace periods      {:>14}  normal, {} expedited (longest wait {:.2} ms)\n",
            count(self.grace_periods),
            count(self.expedited_grace_periods),
            self.max_gp_wait_ms
        ));
        o.push_str(&format!(
            "  callbacks invoked  {:>14}  ({} pipeline steps, {} flood; {} run locally, {} invocation switches)\n",
            count(self.callbacks_invoked),
            count(self.pipeline_callbacks),
            count(self.flood_callbacks),
            count(self.callbacks_invoked_locally),
            count(self.invocation_switches)
        ));
        o.push_str(&format!(
            "  shrinker scans     {:>14}  ({} processed on the shrinker's thread)\n",
            count(self.shrinker_scans),
            count(self.shrinker_freed)
        ));
        o.push_str(&format!(
            "  side-cell updates  {:>14}\n",
            count(self.side_updates)
        ));
        o.push_str(&t.tail(""));
        o
    }
}

fn load_u64(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The callback flood and the invocation switch that run beside the pipeline.
#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    queued: AtomicU64,
    ran: Arc<AtomicU64>,
    switches: AtomicU64,
    scans: AtomicU64,
    scan_freed: AtomicU64,
}

impl Flood {
    /// Queue callbacks that free a 64-byte box, in bursts, until stopped.
    fn flood(&self) {
        let mut i = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            for _ in 0..256 {
                let b = Box::new([i; 8]);
                let ran = self.ran.clone();
                rcu::call(move || {
                    std::hint::black_box(&b);
                    drop(b);
                    ran.fetch_add(1, Ordering::Relaxed);
                });
                i += 1;
            }
            self.queued.fetch_add(256, Ordering::Relaxed);
            // Leave the CPU to the readers and the writer now and then.
            thread::yield_now();
        }
    }

    /// Flip between local and offloaded invocation every few milliseconds until stopped:
    /// every shard at once, or (every third switch) one shard.
    fn switch(&self) {
        let mut local = false;
        let mut n = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(3));
            let mode = if local {
                rcu::Invocation::Local
            } else {
                rcu::Invocation::Offloaded
            };
            if n % 3 == 2 {
                let shard = n % rcu::callback_shards();
                rcu::set_shard_invocation(shard, mode).expect("shard index in range");
            } else {
                rcu::set_callback_invocation(mode);
            }
            local = !local;
            n += 1;
            self.switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Run the shrinker every few milliseconds until stopped.
    fn shrink(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(2));
            let freed = grace::pressure::scan(4096);
            self.scans.fetch_add(1, Ordering::Relaxed);
            self.scan_freed.fetch_add(freed, Ordering::Relaxed);
        }
    }
}
