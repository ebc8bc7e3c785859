//! `grace torture srcu`: the pipeline check on five SRCU domains at once, one of them with a
//! reader that sleeps [`BLOCKED_SLEEP`] inside its section over and over, and the check that
//! the other four's grace periods do not notice.
//!
//! # The domains
//!
//! Three domains from `Srcu::new()` (`dynamic-0`, `dynamic-1`, `dynamic-2`), one `static`
//! (`Srcu::new_static()`, allocated on first use) and one `lite` (`SrcuLite::new_lite()`). Each
//! has a pipeline of its own (the parent module's, see [`super`]) with its own readers,
//! writer and callback chains, protected by that domain's grace periods only.
//!
//! Per domain:
//!
//! * **readers** check the pipeline inside sections of the domain; they nest sections (and
//!   end them in either order, the outer one first when both began before the element was
//!   loaded), and one section in 16 is a *raw* one (`read_lock_raw`) whose token goes over a
//!   channel to the domain's **closer** thread, which checks the element again and ends the
//!   section there (`read_unlock_raw`): a section that ends on another thread than the one
//!   that began it. Readers read in short bursts with rests, so that 2 CPUs are not saturated
//!   (a saturated machine preempts readers inside their sections, which delays every
//!   domain's grace periods for reasons that have nothing to do with SRCU). They are replaced
//!   one at a time every half second (thread churn, which hands reader shards to new
//!   threads); each exiting reader queues one callback that must have run by the end;
//! * the **writer** rotates through every API ([`ROTATION`]): `synchronize`,
//!   `synchronize_expedited` (both checked with a cookie taken before), `start_poll` +
//!   `poll_state` / `poll_state_any`, `get_state` + `cond_synchronize`, `get_state` with a later
//!   `start_poll` (the earlier cookie must never read as pending once the later one is done),
//!   `call` and `call_hurry` chains, `call` followed by `barrier` (the callback must have run
//!   when `barrier` returns), and a raw section the writer opens and hands to the closer, which
//!   holds it a random while and then ends it, around a `synchronize` that must not return
//!   before the closer ended it;
//! * a **probe** measures the domain's `synchronize()` latency every few milliseconds, and one
//!   time in four a `start_poll()` cookie's latency (the shared background service drives
//!   those).
//!
//! # The blocked domain and the isolation check
//!
//! `dynamic-2` also has a **sleeper**: a reader that takes a section, loads the current
//! element, sleeps [`BLOCKED_SLEEP`] (100 ms), checks the element (it must still be protected
//! after the sleep) and ends the section, over and over. Each time it enters, it tells the
//! domain's probe, which calls `synchronize()` at once: that grace period must last until the
//! sleeper left (it checks a counter the sleeper bumps just before ending its section), so at
//! least [`BLOCKED_SLEEP`] from the section's start. Meanwhile each other domain must
//! complete grace periods *inside* the sleeper's sections: at least one of its probe's waits
//! (synchronize or polled) must begin after a section began and end before that section ended.
//! A domain whose grace periods waited for the sleeping reader could never do that (each one
//! would last until the section's end), however fast the machine; and a loaded machine cannot
//! fail it, as long as one of the other domain's grace periods fits in one of the 100 ms
//! sections of the run. The check compares the domains of the same run with each other, with no
//! wall-clock bound. The figures are reported (`isolation` in `--json`); a breach of either
//! is an error.
//!
//! The hidden `--inject-early-free` option makes every writer advance removed elements
//! without waiting for grace periods while readers linger: the check must fire (the sleeper
//! alone sees a whole pipeline go by during its 100 ms).

use super::{
    drain, dwell, join, linger, lock, queue_exit_callback, read_until, spawn, Host, Look, Mode,
    Options, Pipeline, ReaderCounts, Readers, Rng, Totals, Verdict, Writer, WriterReport,
    CHURN_EVERY, PIPE_LEN,
};
use grace::srcu::{Lite, ReaderKind, Regular, Srcu, SrcuError, SrcuLite, SrcuStats, SrcuToken};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the blocked domain's sleeper stays inside each section.
pub const BLOCKED_SLEEP: Duration = Duration::from_millis(100);

/// The sleeper's pause between two sections.
const SLEEPER_GAP: Duration = Duration::from_millis(2);

/// The probes' pause between two measured waits.
const PROBE_GAP: Duration = Duration::from_millis(2);

/// How long a reader reads before a rest, and how long it rests: readers are busy about 7%
/// of the time whatever the build (a debug build's sections are ten times slower), so that
/// ten of them leave most of 2 CPUs to everyone else.
const READ_BURST: Duration = Duration::from_micros(150);
const READ_REST: Duration = Duration::from_millis(2);

/// The writers' pause after each update (rcutorture's writer pauses too), which leaves CPU
/// time for the fifteen other threads.
const WRITER_PAUSE: Duration = Duration::from_micros(300);

/// Raw sections (and writer hand-offs) queued for a closer at most.
const HANDOFF_QUEUE: usize = 256;

/// How much longer than `--duration` the run may go on to see the blocked domain's first
/// measured grace period.
const BLOCKED_GRACE: Duration = Duration::from_secs(2);

/// Error descriptions kept in the report, all domains together.
const MAX_REPORTED_MESSAGES: usize = 16;

/// The writer's rotation: every grace-period API of a domain.
const ROTATION: &[Mode] = &[
    Mode::Sync,
    Mode::Call,
    Mode::Poll,
    Mode::Expedited,
    Mode::CondSync,
    Mode::CallHurry,
    Mode::GetStatePoll,
    Mode::Barrier,
    Mode::RawHandoff,
];

/// The static domain (one per process; a second run in the same process reuses it, which
/// the before/after statistics allow for).
static STATIC_DOMAIN: Srcu = Srcu::new_static();

/// The default reader count of `torture srcu`, per domain (the sleeper not counted).
pub fn default_readers() -> usize {
    2
}

/// A domain, owned or `static`.
enum Handle<K: ReaderKind> {
    Static(&'static Srcu<K>),
    Owned(Srcu<K>),
}

impl<K: ReaderKind> Deref for Handle<K> {
    type Target = Srcu<K>;

    fn deref(&self) -> &Srcu<K> {
        match self {
            Handle::Static(d) => d,
            Handle::Owned(d) => d,
        }
    }
}

/// A section handed to a domain's closer thread.
enum Handoff {
    /// A reader's raw section: the closer checks the element again, then ends the section.
    Reader { token: SrcuToken, look: Look },
    /// The writer's raw section number `seq`: the closer holds it for `hold`, records `seq`
    /// as closed, then ends it.
    Writer {
        token: SrcuToken,
        seq: u64,
        hold: Duration,
    },
}

/// Everything one domain's threads share.
struct Dom<K: ReaderKind> {
    name: &'static str,
    domain: Handle<K>,
    p: Pipeline,
    /// The closer's channel; taken at the end so that the closer finishes.
    handoff: Mutex<Option<SyncSender<Handoff>>>,
    /// Reader raw sections the closer ended.
    raw_sections: AtomicU64,
    /// The writer's raw sections: the last one opened, and the last one the closer ended.
    raw_opened: AtomicU64,
    raw_closed: AtomicU64,
    /// The sleeper's sections: begun, and ended (bumped just before the section ends).
    sleeper_entered: AtomicU64,
    sleeper_done: AtomicU64,
    /// The sleeper's sections as time intervals, each a little inside the real section (taken
    /// after `read_lock` returned and before the guard drops).
    sections: Mutex<Vec<(Instant, Instant)>>,
    /// The probe's measured waits so far (the control loop waits for the blocked one's).
    probe_samples: AtomicU64,
}

impl<K: ReaderKind> Host for Dom<K> {
    type F = Srcu<K>;

    fn pipeline(&self) -> &Pipeline {
        &self.p
    }

    fn flavor(&self) -> &Srcu<K> {
        &self.domain
    }

    fn wait_own(&self, mode: Mode, rng: &mut Rng) {
        assert_eq!(mode, Mode::RawHandoff, "not an SRCU mode");
        let d = &*self.domain;
        let Some(tx) = lock(&self.handoff).clone() else {
            d.synchronize();
            return;
        };
        // Relaxed: only this writer writes it.
        let seq = self.raw_opened.load(Ordering::Relaxed) + 1;
        self.raw_opened.store(seq, Ordering::Relaxed);
        let token = d.read_lock_raw();
        let hold = Duration::from_micros(rng.next() % 500);
        if let Err(mpsc::SendError(Handoff::Writer { token, .. })) =
            tx.send(Handoff::Writer { token, seq, hold })
        {
            d.read_unlock_raw(token);
            self.p.api_error("the closer thread is gone".into());
            return;
        }
        let c = d.get_state();
        d.synchronize();
        // Acquire: pairs with the closer's Release store, made before it ended the section
        // that this grace period waited for.
        let closed = self.raw_closed.load(Ordering::Acquire);
        self.p.expect(
            closed >= seq,
            "synchronize() returned before a raw section opened before it was ended (by another thread)",
        );
        self.p.expect(
            d.poll_state(c),
            "poll_state() is false for a cookie taken before synchronize()",
        );
    }

    fn after_update(&self, _n: u64) {
        thread::sleep(WRITER_PAUSE);
    }

    fn poll_pause(&self) {
        // Sleep rather than yield: fifteen threads poll or read on two CPUs.
        thread::sleep(Duration::from_micros(20));
    }
}

/// One reader thread of domain `d`.
fn reader<K: ReaderKind>(d: &Arc<Dom<K>>, exit: &AtomicBool, salt: u64) {
    let mut rng = Rng::seeded(salt);
    let linger = linger(d.p.inject);
    let tx = lock(&d.handoff).clone();
    let mut n: u64 = 0;
    let mut burst = Instant::now();
    read_until(&d.p, exit, |c| {
        n += 1;
        if n % 8 == 0 && burst.elapsed() >= READ_BURST {
            thread::sleep(READ_REST);
            burst = Instant::now();
        }
        read_once(d, &mut rng, c, linger, tx.as_ref());
    });
    drop(tx);
    queue_exit_callback(d);
}

/// One checked section: a guarded one (sometimes two nested, ended in either order), or one
/// time in 16 a raw one handed to the closer.
#[inline]
fn read_once<K: ReaderKind>(
    d: &Dom<K>,
    rng: &mut Rng,
    c: &mut ReaderCounts,
    linger: (u64, Duration),
    tx: Option<&SyncSender<Handoff>>,
) {
    let r = rng.next();
    if let Some(tx) = tx.filter(|_| r & 15 == 0) {
        let token = d.domain.read_lock_raw();
        let look = d.p.look();
        dwell(r, linger);
        if let Err(mpsc::SendError(Handoff::Reader { token, look })) =
            tx.send(Handoff::Reader { token, look })
        {
            // The closer is gone (the run is ending): close it here.
            d.p.verify(look, c);
            d.domain.read_unlock_raw(token);
        }
        return;
    }
    let outer = d.domain.read_lock();
    // Both sections begin before the element is loaded, so either protects it alone.
    let inner = (r & 0x30 == 0).then(|| d.domain.read_lock());
    let look = d.p.look();
    dwell(r, linger);
    match inner {
        Some(inner) if r & 0x40 != 0 => {
            drop(outer);
            d.p.verify(look, c);
            drop(inner);
        }
        inner => {
            drop(inner);
            d.p.verify(look, c);
            drop(outer);
        }
    }
}

/// The closer of domain `d`: ends the sections handed to it until every sender is gone.
fn closer<K: ReaderKind>(d: &Dom<K>, rx: Receiver<Handoff>) {
    let mut c = ReaderCounts::default();
    let mut n: u64 = 0;
    for h in rx {
        match h {
            Handoff::Reader { token, look } => {
                d.p.verify(look, &mut c);
                d.domain.read_unlock_raw(token);
                n += 1;
                if n % 1024 == 0 {
                    c.flush(&d.p);
                }
            }
            Handoff::Writer { token, seq, hold } => {
                thread::sleep(hold);
                // Release: before the section ends (see `wait_own`).
                d.raw_closed.store(seq, Ordering::Release);
                d.domain.read_unlock_raw(token);
            }
        }
    }
    c.flush(&d.p);
    d.raw_sections.fetch_add(n, Ordering::Relaxed);
}

/// The blocked domain's sleeper: a section of [`BLOCKED_SLEEP`], checked, over and over;
/// each section's number and start go to the probe.
fn sleeper<K: ReaderKind>(d: &Dom<K>, exit: &AtomicBool, probe: Sender<(u64, Instant)>) {
    let mut c = ReaderCounts::default();
    let mut n: u64 = 0;
    while !exit.load(Ordering::Relaxed) {
        n += 1;
        let g = d.domain.read_lock();
        let start = Instant::now();
        let look = d.p.look();
        d.sleeper_entered.store(n, Ordering::Relaxed);
        let _ = probe.send((n, start));
        thread::sleep(BLOCKED_SLEEP);
        d.p.verify(look, &mut c);
        let end = Instant::now();
        lock(&d.sections).push((start, end));
        // Release: a grace period that waited for this section happens-after its end, so
        // whoever returns from it sees this store.
        d.sleeper_done.store(n, Ordering::Release);
        drop(g);
        thread::sleep(SLEEPER_GAP);
    }
    c.flush(&d.p);
}

/// What a probe measured.
#[derive(Default)]
struct ProbeSamples {
    /// `synchronize()` latencies.
    sync: Vec<Duration>,
    /// `start_poll()` until `poll_state()`.
    poll: Vec<Duration>,
    /// Blocked domain: from the sleeper's section start to the end of the grace period that
    /// waited for it.
    from_section_start: Vec<Duration>,
    /// Other domains: every measured wait (synchronize and polled), as begin and end.
    intervals: Vec<(Instant, Instant)>,
    /// Blocked domain: the sleeper's sections (see `Dom::sections`).
    sections: Vec<(Instant, Instant)>,
}

/// The probe of a domain without a sleeper: time a wait every [`PROBE_GAP`].
fn probe<K: ReaderKind>(d: &Dom<K>, stop: &AtomicBool) -> ProbeSamples {
    let mut s = ProbeSamples::default();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        if i % 4 == 3 {
            let c = d.domain.start_poll();
            while !d.domain.poll_state(c) {
                thread::sleep(Duration::from_micros(20));
            }
            s.poll.push(t.elapsed());
        } else {
            d.domain.synchronize();
            s.sync.push(t.elapsed());
        }
        s.intervals.push((t, Instant::now()));
        d.probe_samples.fetch_add(1, Ordering::Relaxed);
        i += 1;
        thread::sleep(PROBE_GAP);
    }
    s
}

/// The blocked domain's probe: `synchronize()` as soon as the sleeper is inside, checking
/// that it lasted until the sleeper left.
fn blocked_probe<K: ReaderKind>(d: &Dom<K>, rx: Receiver<(u64, Instant)>) -> ProbeSamples {
    let mut s = ProbeSamples::default();
    while let Ok(mut newest) = rx.recv() {
        // Catch up with the sleeper if this thread fell behind.
        while let Ok(m) = rx.try_recv() {
            newest = m;
        }
        let (n, start) = newest;
        // Acquire: pairs with the sleeper's Release.
        if d.sleeper_done.load(Ordering::Acquire) >= n {
            continue; // that section is over already: nothing to measure
        }
        let t = Instant::now();
        d.domain.synchronize();
        let (took, since_start) = (t.elapsed(), start.elapsed());
        // Acquire: pairs with the sleeper's Release before its section ended.
        let done = d.sleeper_done.load(Ordering::Acquire);
        if done < n || since_start < BLOCKED_SLEEP {
            d.p.api_error(format!(
                "synchronize() returned {:.1} ms after the sleeping reader's section #{n} began, while it was still inside (it sleeps {} ms)",
                since_start.as_secs_f64() * 1e3,
                BLOCKED_SLEEP.as_millis()
            ));
        }
        s.sync.push(took);
        s.from_section_start.push(since_start);
        d.probe_samples.fetch_add(1, Ordering::Relaxed);
    }
    s
}

/// Latency figures of a set of samples, in milliseconds (zeros when there are none).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// How many waits were measured.
    pub samples: u64,
    /// The shortest.
    pub min_ms: f64,
    /// The median.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The longest.
    pub max_ms: f64,
}

impl Latency {
    fn of(samples: &[Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Latency {
            samples: v.len() as u64,
            min_ms: v[0],
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

/// One domain's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct DomainReport {
    /// `dynamic-0`, `dynamic-1`, `dynamic-2`, `static` or `lite`.
    pub name: &'static str,
    /// `regular` or `lite` readers.
    pub readers_kind: &'static str,
    /// `dynamic` (`Srcu::new`, dropped at the end) or `static` (`Srcu::new_static`).
    pub storage: &'static str,
    /// Whether this domain had the sleeping reader.
    pub blocked: bool,
    /// Sections the sleeping reader entered (0 for the other domains).
    pub sleeper_sections: u64,
    /// Errors of this domain (pipe, check, api, lost).
    pub errors: u64,
    /// The domain's reader pipe histogram.
    pub pipe: Vec<u64>,
    /// Sections checked (guarded, raw and the sleeper's).
    pub reads: u64,
    /// Raw sections ended by the closer thread.
    pub raw_sections: u64,
    /// Elements published by the writer.
    pub updates: u64,
    /// Updates per grace-period API.
    pub updates_by_mode: BTreeMap<&'static str, u64>,
    /// Grace periods of this domain during the run (from its `stats()`).
    pub grace_periods: u64,
    /// Callbacks of this domain invoked during the run.
    pub callbacks_invoked: u64,
    /// Of those, the pipeline's own callback steps.
    pub pipeline_callbacks: u64,
    /// rcutorture's "Free-Block Circulation" for this domain.
    pub free_block_circulation: Vec<u64>,
    /// Reader shards the domain handed out (about one per thread alive at once that read it).
    pub reader_shards: usize,
    /// Reader threads started (churn included; the sleeper not counted).
    pub reader_threads_started: u64,
    /// The writer's longest single wait, in milliseconds.
    pub max_gp_wait_ms: f64,
    /// The probe's `synchronize()` latencies.
    pub sync_latency: Latency,
    /// The probe's `start_poll()`-to-completed latencies (none for the blocked domain).
    pub poll_latency: Latency,
    /// Reads that saw a stage above 1.
    pub pipe_errors: u64,
    /// Reads that saw a freed or reused element.
    pub check_errors: u64,
    /// Broken API promises.
    pub api_errors: u64,
    /// Callbacks, elements or the domain itself that never came back.
    pub lost: u64,
}

/// The isolation figures: the blocked domain's grace periods against everyone else's.
#[derive(Clone, Debug, Serialize)]
pub struct Isolation {
    /// The domain with the sleeping reader.
    pub blocked_domain: &'static str,
    /// How long the sleeper stays in each section, in milliseconds.
    pub reader_sleep_ms: f64,
    /// Sections the sleeper entered.
    pub blocked_sections: u64,
    /// The blocked domain's `synchronize()` latency, called while the sleeper was inside.
    pub blocked_sync: Latency,
    /// The shortest time from a sleeper section's start to the end of a grace period that
    /// waited for it; at least `reader_sleep_ms` when the library is right.
    pub blocked_gp_min_ms: f64,
    /// Every other domain's `synchronize()` latency, together.
    pub others_sync: Latency,
    /// Every other domain's polled grace-period latency, together.
    pub others_poll: Latency,
    /// The other domains' grace periods that began and ended inside one of the sleeper's
    /// sections (each other domain needs at least one; a domain coupled to the blocked one has
    /// none), all together.
    pub others_inside_sections: u64,
    /// The fewest such grace periods of any one other domain.
    pub others_inside_min: u64,
    /// The longest of those grace periods as a fraction of the section it fitted in (well
    /// below 1 when the domains are independent).
    pub others_inside_max_fraction: f64,
    /// The blocked domain's longest `synchronize()` divided by the others' longest.
    pub blocked_over_others: f64,
    /// Whether the blocked domain waited for its reader and every other domain completed grace
    /// periods while it was inside.
    pub passed: bool,
}

/// The result of a run; also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What every torture reports (`flavor` is `"srcu"`), all domains together; `errors`
    /// counts the isolation errors too.
    #[serde(flatten)]
    pub totals: Totals,
    /// Grace periods completed, all domains.
    pub grace_periods: u64,
    /// Callbacks invoked, all domains.
    pub callbacks_invoked: u64,
    /// Reader threads per domain alive at a time.
    pub readers_per_domain: usize,
    /// Grace periods that broke the isolation check.
    pub isolation_errors: u64,
    /// The blocked reader against the other domains' grace periods.
    pub isolation: Isolation,
    /// Each domain's figures.
    pub domains: Vec<DomainReport>,
}

/// A domain's threads, while they run.
struct DomainRun<K: ReaderKind> {
    d: Arc<Dom<K>>,
    storage: &'static str,
    blocked: bool,
    before: SrcuStats,
    readers: Option<Readers>,
    sleeper: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    closer: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<WriterReport>>,
    probe_stop: Arc<AtomicBool>,
    probe: Option<JoinHandle<ProbeSamples>>,
    writer_report: Option<WriterReport>,
    samples: Option<ProbeSamples>,
}

/// What the control loop does with a domain, whatever its reader kind.
trait Running {
    fn progress(&self) -> (u64, u64, u64);
    fn blocked_samples(&self) -> Option<u64>;
    fn churn(&mut self);
    fn stop_readers(&mut self);
    fn stop_writer(&mut self);
    fn finish(self: Box<Self>) -> (DomainReport, ProbeSamples, Vec<String>);
}

impl<K: ReaderKind> DomainRun<K> {
    fn start(
        name: &'static str,
        tag: &str,
        domain: Handle<K>,
        storage: &'static str,
        blocked: bool,
        opts: &Options,
        salt: u64,
    ) -> DomainRun<K> {
        let before = domain.stats();
        let (tx, rx) = mpsc::sync_channel(HANDOFF_QUEUE);
        let d = Arc::new(Dom {
            name,
            domain,
            p: Pipeline::new(opts.inject_early_free),
            handoff: Mutex::new(Some(tx)),
            raw_sections: AtomicU64::new(0),
            raw_opened: AtomicU64::new(0),
            raw_closed: AtomicU64::new(0),
            sleeper_entered: AtomicU64::new(0),
            sleeper_done: AtomicU64::new(0),
            sections: Mutex::new(Vec::new()),
            probe_samples: AtomicU64::new(0),
        });
        let d2 = d.clone();
        let closer = spawn(&format!("{tag}-closer"), move || closer(&d2, rx));
        let d2 = d.clone();
        let readers = Readers::start(&format!("{tag}-reader"), opts.readers, move |exit, s| {
            reader(&d2, exit, s)
        });
        let writer = Writer::new(d.clone(), ROTATION, salt);
        let writer = spawn(&format!("{tag}-writer"), move || writer.run());
        let probe_stop = Arc::new(AtomicBool::new(false));
        let (sleeper, probe) = if blocked {
            let (tx, rx) = mpsc::channel();
            let exit = Arc::new(AtomicBool::new(false));
            let (d2, e2) = (d.clone(), exit.clone());
            let s = spawn(&format!("{tag}-sleeper"), move || sleeper(&d2, &e2, tx));
            let d2 = d.clone();
            let p = spawn(&format!("{tag}-probe"), move || blocked_probe(&d2, rx));
            (Some((exit, s)), p)
        } else {
            let (d2, stop) = (d.clone(), probe_stop.clone());
            let p = spawn(&format!("{tag}-probe"), move || probe(&d2, &stop));
            (None, p)
        };
        DomainRun {
            d,
            storage,
            blocked,
            before,
            readers: Some(readers),
            sleeper,
            closer: Some(closer),
            writer: Some(writer),
            probe_stop,
            probe: Some(probe),
            writer_report: None,
            samples: None,
        }
    }
}

impl<K: ReaderKind> Running for DomainRun<K> {
    fn progress(&self) -> (u64, u64, u64) {
        let p = &self.d.p;
        (p.reads(), p.updates.load(Ordering::Relaxed), p.errors())
    }

    fn blocked_samples(&self) -> Option<u64> {
        self.sleeper
            .is_some()
            .then(|| self.d.probe_samples.load(Ordering::Relaxed))
    }

    fn churn(&mut self) {
        if let Some(r) = self.readers.as_mut() {
            r.churn();
        }
    }

    fn stop_readers(&mut self) {
        if let Some(r) = self.readers.as_mut() {
            r.stop();
        }
        if let Some((exit, h)) = self.sleeper.take() {
            exit.store(true, Ordering::Relaxed);
            join(h, "sleeper");
        }
    }

    fn stop_writer(&mut self) {
        self.d.p.stopping.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            self.writer_report = Some(join(w, "writer"));
        }
        self.probe_stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.probe.take() {
            self.samples = Some(join(p, "probe"));
        }
    }

    fn finish(mut self: Box<Self>) -> (DomainReport, ProbeSamples, Vec<String>) {
        // The readers' body holds a reference to the domain; the closer ends once the last
        // sender (the readers' and the writer's are gone) is dropped.
        let started = self.readers.take().map_or(0, |r| r.started);
        drop(lock(&self.d.handoff).take());
        if let Some(c) = self.closer.take() {
            join(c, "closer");
        }
        let d = &self.d;
        let mut lost = drain(&**d);
        let after = d.domain.stats();
        if after.callbacks_pending != 0 {
            lost += after.callbacks_pending;
            d.p.note(|| {
                format!(
                    "{} callback(s) still pending after barrier()",
                    after.callbacks_pending
                )
            });
        }
        let panics = after.callback_panics - self.before.callback_panics;
        if panics != 0 {
            d.p.api_error(format!("{panics} callback(s) panicked"));
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let writer = self.writer_report.take();
        let mut report = DomainReport {
            name: d.name,
            readers_kind: if K::LITE { "lite" } else { "regular" },
            storage: self.storage,
            blocked: self.blocked,
            sleeper_sections: load(&d.sleeper_entered),
            errors: 0,
            pipe: d.p.pipe(),
            reads: d.p.reads(),
            raw_sections: load(&d.raw_sections),
            updates: load(&d.p.updates),
            updates_by_mode: writer
                .as_ref()
                .map(WriterReport::by_name)
                .unwrap_or_default(),
            grace_periods: after.grace_periods - self.before.grace_periods,
            callbacks_invoked: after.callbacks_invoked - self.before.callbacks_invoked,
            pipeline_callbacks: load(&d.p.pipeline_callbacks),
            free_block_circulation: d.p.circulation(),
            reader_shards: after.reader_shards,
            reader_threads_started: started,
            max_gp_wait_ms: writer.map_or(0.0, |w| w.max_wait.as_secs_f64() * 1e3),
            sync_latency: Latency::default(),
            poll_latency: Latency::default(),
            pipe_errors: load(&d.p.pipe_errors),
            check_errors: load(&d.p.check_errors),
            api_errors: 0,
            lost: 0,
        };
        let mut samples = self.samples.take().unwrap_or_default();
        samples.sections = std::mem::take(&mut *lock(&d.sections));
        report.sync_latency = Latency::of(&samples.sync);
        report.poll_latency = Latency::of(&samples.poll);

        // Every thread is gone and every callback has run: ours must be the last reference,
        // and a dynamic domain is dropped here (its drop waits for nothing: no callback is
        // left).
        let name = d.name;
        match Arc::try_unwrap(self.d) {
            Ok(dom) => {
                report.api_errors = load(&dom.p.api_errors);
                report.lost = lost;
                report.errors = dom.p.errors() + lost;
                let messages = dom.p.messages();
                drop(dom);
                (report, samples, messages)
            }
            Err(d) => {
                lost += 1;
                d.p.note(|| "the domain is still referenced after the drain".into());
                report.api_errors = load(&d.p.api_errors);
                report.lost = lost;
                report.errors = d.p.errors() + lost;
                let messages = d.p.messages();
                // Leak it: dropping it here could free it under whoever still holds it.
                std::mem::forget(d);
                eprintln!("grace: torture srcu: domain {name} leaked");
                (report, samples, messages)
            }
        }
    }
}

/// Run the torture test, showing progress on `bar`, whose length should be the duration in
/// milliseconds (see [`super::progress_bar`]).
pub fn run(opts: &Options, bar: &ProgressBar) -> Report {
    let started_at = Instant::now();
    let owned = |name: &str, r: Result<Srcu<Regular>, SrcuError>| match r {
        Ok(d) => Handle::Owned(d),
        Err(e) => super::fail(&format!("cannot create domain {name}: {e}")),
    };
    let dynamic = |i: u64, blocked: bool| -> Box<dyn Running> {
        let name = ["dynamic-0", "dynamic-1", "dynamic-2"][i as usize];
        let domain = owned(name, Srcu::new());
        let tag = format!("d{i}");
        Box::new(DomainRun::start(
            name, &tag, domain, "dynamic", blocked, opts, i,
        ))
    };
    let lite: Handle<Lite> = match SrcuLite::new_lite() {
        Ok(d) => Handle::Owned(d),
        Err(e) => super::fail(&format!("cannot create domain lite: {e}")),
    };
    let mut runs: Vec<Box<dyn Running>> = vec![
        dynamic(0, false),
        dynamic(1, false),
        dynamic(2, true),
        Box::new(DomainRun::start(
            "static",
            "st",
            Handle::Static(&STATIC_DOMAIN),
            "static",
            false,
            opts,
            3,
        )),
        Box::new(DomainRun::start(
            "lite", "lt", lite, "dynamic", false, opts, 4,
        )),
    ];

    // Control loop: progress, and thread churn. It runs past the duration (by at most
    // BLOCKED_GRACE) until the blocked domain has measured one grace period.
    let start = Instant::now();
    let mut next_churn = start + CHURN_EVERY;
    loop {
        let elapsed = start.elapsed();
        let measured = runs.iter().all(|r| r.blocked_samples().unwrap_or(1) > 0);
        if elapsed >= opts.duration && (measured || elapsed >= opts.duration + BLOCKED_GRACE) {
            break;
        }
        let (reads, updates, errors) = runs
            .iter()
            .map(|r| r.progress())
            .fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
        bar.set_position(elapsed.min(opts.duration).as_millis() as u64);
        bar.set_message(format!(
            "{:.1}/{:.1} s, {} domains, {} reads, {} updates, {} errors",
            elapsed.as_secs_f64(),
            opts.duration.as_secs_f64(),
            runs.len(),
            crate::ui::si(reads as f64),
            crate::ui::si(updates as f64),
            errors
        ));
        if Instant::now() >= next_churn {
            next_churn += CHURN_EVERY;
            runs.iter_mut().for_each(|r| r.churn());
        }
        let left = opts.duration.saturating_sub(elapsed);
        thread::sleep(left.clamp(Duration::from_millis(5), Duration::from_millis(50)));
    }
    bar.set_position(opts.duration.as_millis() as u64);
    bar.set_message("draining");

    // Stop readers first (the pipe histogram is theirs), then the writers and probes.
    runs.iter_mut().for_each(|r| r.stop_readers());
    let duration = start.elapsed();
    runs.iter_mut().for_each(|r| r.stop_writer());
    let finished: Vec<_> = runs.into_iter().map(|r| r.finish()).collect();

    // A few from each domain, so that one domain's flood does not hide another's errors.
    let mut messages = Vec::new();
    for (r, _, m) in &finished {
        let each = MAX_REPORTED_MESSAGES / finished.len().max(1);
        messages.extend(m.iter().take(each).map(|m| format!("[{}] {m}", r.name)));
    }
    let (isolation, isolation_messages) = isolation(&finished);
    let isolation_errors = isolation_messages.len() as u64;
    messages.extend(isolation_messages);
    messages.truncate(MAX_REPORTED_MESSAGES);

    let domains: Vec<DomainReport> = finished.into_iter().map(|(r, _, _)| r).collect();
    let sum = |f: fn(&DomainReport) -> u64| domains.iter().map(f).sum::<u64>();
    let mut pipe = vec![0u64; PIPE_LEN + 1];
    for d in &domains {
        for (t, x) in pipe.iter_mut().zip(&d.pipe) {
            *t += x;
        }
    }
    Report {
        totals: Totals {
            flavor: "srcu",
            errors: sum(|d| d.errors) + isolation_errors,
            pipe,
            reads: sum(|d| d.reads),
            updates: sum(|d| d.updates),
            duration_s: duration.as_secs_f64(),
            total_s: started_at.elapsed().as_secs_f64(),
            reader_threads_started: sum(|d| d.reader_threads_started),
            pipe_errors: sum(|d| d.pipe_errors),
            check_errors: sum(|d| d.check_errors),
            api_errors: sum(|d| d.api_errors),
            lost: sum(|d| d.lost),
            barrier_mode: super::barrier_mode(),
            inject_early_free: opts.inject_early_free,
            error_messages: messages,
        },
        grace_periods: sum(|d| d.grace_periods),
        callbacks_invoked: sum(|d| d.callbacks_invoked),
        readers_per_domain: opts.readers,
        isolation_errors,
        isolation,
        domains,
    }
}

/// The isolation figures, and one message per breach.
fn isolation(finished: &[(DomainReport, ProbeSamples, Vec<String>)]) -> (Isolation, Vec<String>) {
    let sleep_ms = BLOCKED_SLEEP.as_secs_f64() * 1e3;
    let mut errors = Vec::new();
    let (mut others_sync, mut others_poll) = (Vec::new(), Vec::new());
    let blocked = finished.iter().find(|(r, _, _)| r.blocked);
    let sections: &[(Instant, Instant)] = blocked.map_or(&[], |(_, s, _)| &s.sections);
    let (mut inside_total, mut inside_min, mut max_fraction) = (0u64, u64::MAX, 0f64);
    for (r, s, _) in finished {
        if r.blocked {
            continue;
        }
        others_sync.extend_from_slice(&s.sync);
        others_poll.extend_from_slice(&s.poll);
        let (inside, fraction) = inside_sections(&s.intervals, sections);
        inside_total += inside;
        inside_min = inside_min.min(inside);
        max_fraction = max_fraction.max(fraction);
        if inside == 0 && !sections.is_empty() {
            errors.push(format!(
                "[{}] none of its {} grace periods began and ended inside one of the {} sections of another domain's sleeping reader: they wait for that reader",
                r.name,
                s.intervals.len(),
                sections.len()
            ));
        }
        if r.sync_latency.samples == 0 {
            errors.push(format!("[{}] no synchronize() was measured", r.name));
        }
    }
    let blocked = blocked.map(|(r, s, _)| (r, s));
    let (name, sections, blocked_sync, gp_min) = match blocked {
        Some((r, s)) => {
            let gp_min = s
                .from_section_start
                .iter()
                .min()
                .map_or(0.0, |d| d.as_secs_f64() * 1e3);
            (r.name, r.sleeper_sections, Latency::of(&s.sync), gp_min)
        }
        None => ("dynamic-2", 0, Latency::default(), 0.0),
    };
    if blocked_sync.samples == 0 {
        errors.push(format!(
            "[{name}] no grace period was measured while the sleeping reader was inside"
        ));
    } else if gp_min < sleep_ms {
        errors.push(format!(
            "[{name}] a grace period ended {gp_min:.1} ms after the sleeping reader's section began; it sleeps {sleep_ms:.0} ms"
        ));
    }
    let others = Latency::of(&others_sync);
    let iso = Isolation {
        blocked_domain: name,
        reader_sleep_ms: sleep_ms,
        blocked_sections: sections,
        blocked_gp_min_ms: gp_min,
        blocked_over_others: if others.max_ms > 0.0 {
            blocked_sync.max_ms / others.max_ms
        } else {
            f64::NAN
        },
        blocked_sync,
        others_sync: others,
        others_poll: Latency::of(&others_poll),
        others_inside_sections: inside_total,
        others_inside_min: if inside_min == u64::MAX {
            0
        } else {
            inside_min
        },
        others_inside_max_fraction: max_fraction,
        passed: errors.is_empty(),
    };
    (iso, errors)
}

/// How many of `waits` began and ended inside one of `sections` (both sorted by start, as
/// recorded), and the longest such wait as a fraction of its section.
fn inside_sections(waits: &[(Instant, Instant)], sections: &[(Instant, Instant)]) -> (u64, f64) {
    let (mut n, mut fraction) = (0, 0f64);
    for &(a, b) in waits {
        // The last section that began no later than the wait.
        let i = sections.partition_point(|&(s, _)| s <= a);
        if i == 0 {
            continue;
        }
        let (s, e) = sections[i - 1];
        // Strictly before: a wait coupled to the section ends after it (and the recorded end
        // precedes the real one).
        if b < e {
            n += 1;
            let f = (b - a).as_secs_f64() / (e - s).as_secs_f64().max(f64::MIN_POSITIVE);
            fraction = fraction.max(f);
        }
    }
    (n, fraction)
}

/// Milliseconds for a table: three decimals below 1 ms (uncontended grace periods take
/// microseconds), two above.
fn ms(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

impl Verdict for Report {
    fn passed(&self) -> bool {
        self.totals.passed()
    }

    /// The report for a person, in rcutorture's terms, one line per domain.
    fn human(&self) -> String {
        use crate::ui::{count, si, Align, Table};
        let t = &self.totals;
        let mut o = String::new();
        o.push_str(&format!(
            "grace torture srcu: {:.1} s, {} domains, {} readers each ({} reader threads in all), barrier mode {}{}\n",
            t.duration_s,
            self.domains.len(),
            self.readers_per_domain,
            t.reader_threads_started,
            t.barrier_mode,
            t.injected()
        ));
        o.push_str(&t.reader_pipe_line());
        let mut table = Table::new(&[
            ("domain", Align::Left),
            ("readers", Align::Left),
            ("reads", Align::Right),
            ("raw", Align::Right),
            ("updates", Align::Right),
            ("GPs", Align::Right),
            ("cbs", Align::Right),
            ("shards", Align::Right),
            ("sync p50/p99/max ms", Align::Right),
            ("poll max ms", Align::Right),
            ("errors", Align::Right),
        ]);
        for d in &self.domains {
            let l = &d.sync_latency;
            table.row(vec![
                format!("{}{}", d.name, if d.blocked { " *" } else { "" }),
                format!("{} {}", d.storage, d.readers_kind),
                si(d.reads as f64),
                si(d.raw_sections as f64),
                count(d.updates),
                count(d.grace_periods),
                count(d.callbacks_invoked),
                d.reader_shards.to_string(),
                format!("{}/{}/{}", ms(l.p50_ms), ms(l.p99_ms), ms(l.max_ms)),
                if d.poll_latency.samples > 0 {
                    ms(d.poll_latency.max_ms)
                } else {
                    "-".into()
                },
                count(d.errors),
            ]);
        }
        o.push_str(&table.render(2));
        let i = &self.isolation;
        o.push_str(&format!(
            "  * {} has a reader that sleeps {:.0} ms in its section ({} times): its synchronize() took {:.1} to {:.1} ms, each lasting >= {:.1} ms from the section's start\n",
            i.blocked_domain,
            i.reader_sleep_ms,
            i.blocked_sections,
            i.blocked_sync.min_ms,
            i.blocked_sync.max_ms,
            i.blocked_gp_min_ms
        ));
        o.push_str(&format!(
            "  isolation: the other domains completed {} grace periods inside its sections (at least {} each, the longest {:.0}% of its section); their synchronize() p99 {} ms, max {} ms; polled max {} ms: {}\n",
            i.others_inside_sections,
            i.others_inside_min,
            i.others_inside_max_fraction * 100.0,
            ms(i.others_sync.p99_ms),
            ms(i.others_sync.max_ms),
            ms(i.others_poll.max_ms),
            if i.passed { "isolated" } else { "NOT ISOLATED" }
        ));
        let modes: Vec<&str> = ROTATION.iter().map(|m| m.name()).collect();
        o.push_str(&format!(
            "  updates rotate through {} (each domain)\n",
            modes.join(", ")
        ));
        o.push_str(&t.tail(&format!("isolation {}, ", self.isolation_errors)));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_counts_waits_inside_sections_and_a_coupled_domain_has_none() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Two sleeper sections: 0..100 and 102..202 ms.
        let sections = [(at(0), at(100)), (at(102), at(202))];
        // An independent domain: short waits all along, under any load.
        let free: Vec<_> = (0..60).map(|i| (at(i * 4), at(i * 4 + 3))).collect();
        let (n, fraction) = inside_sections(&free, &sections);
        assert!(n >= 40, "{n}");
        assert!((0.0..=0.05).contains(&fraction), "{fraction}");
        // A coupled domain: a wait that begins inside a section lasts until it ends, or later;
        // one that begins in the gap is short. None fits inside a section.
        let coupled = [
            (at(5), at(100)),
            (at(100), at(101)),
            (at(101), at(102)),
            (at(150), at(203)),
        ];
        assert_eq!(inside_sections(&coupled, &sections).0, 0);
        // No sections at all: nothing can be inside.
        assert_eq!(inside_sections(&free, &[]).0, 0);
    }

    #[test]
    fn latency_percentiles() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let l = Latency::of(&ms(&(1..=100).rev().collect::<Vec<_>>()));
        assert_eq!(l.samples, 100);
        assert_eq!(
            (l.min_ms, l.p50_ms, l.p99_ms, l.max_ms),
            (1.0, 50.0, 99.0, 100.0)
        );
        let one = Latency::of(&ms(&[7]));
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(&[]).samples, 0);
    }

    #[test]
    fn the_rotation_has_every_srcu_api() {
        for m in [
            Mode::Sync,
            Mode::Expedited,
            Mode::Poll,
            Mode::CondSync,
            Mode::GetStatePoll,
            Mode::Call,
            Mode::CallHurry,
            Mode::Barrier,
            Mode::RawHandoff,
        ] {
            assert!(ROTATION.contains(&m), "{m:?}");
        }
    }
}
