//! `grace torture map`: `grace::collections::HashMap` under readers that check every value
//! they see, writers that insert, replace, update and remove without pause, and a resizer that
//! forces the table through grow and shrink waves, with allocation failures injected.
//!
//! # What is checked
//!
//! * **Value integrity.** A value holds its key, a generation and a checksum of both, and
//!   its destructor poisons the checksum. Readers look keys up and iterate, inside read-side
//!   sections, and check every value they see: the right key, a matching checksum (a poisoned
//!   one is a value freed while a reader could still see it).
//! * **Iteration.** No key is yielded twice by one iteration.
//! * **Each writer's own model.** Writer `w` owns the keys `k` with `k % writers == w`, so it
//!   knows exactly what each of them holds: the result of every operation (the value an
//!   insert replaced, the value a remove took, the value an update made, the value
//!   `get_or_insert_with` found) must match its model, and a failed `try_insert` must leave
//!   the key as it was.
//! * **Resizes.** The resizer alternates `rehash` to a large and to a small table; every few
//!   rounds it runs one under a thread-local allocation failure (every allocation of the
//!   thread fails: the rehash is skipped, and the map must keep working). Besides, one in `--fail-one-in` of grace's fallible allocations fails on
//!   every thread (`grace::alloc::inject_globally`): load-triggered resizes are skipped,
//!   `try_insert`s fail, `kvfree` takes its fallbacks.
//! * **Nothing lost, nothing freed twice.** At the end the map must hold exactly the writers'
//!   models (lookups, `len`, and one iteration); after the map is dropped and
//!   `retire_barrier` returns, every value made was dropped exactly once.
//!
//! The run is split between RCU (half the duration) and an SRCU domain (the other half).

use super::{join, spawn, FailureInjection, Options, Rng, Verdict};
use grace::alloc::{inject, FailurePlan};
use grace::atomic::Retire;
use grace::collections::HashMap;
use grace::srcu::Srcu;
use grace::Rcu;
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys in the map's key space.
const KEYS: u64 = 1 << 14;
/// Writer threads.
const WRITERS: u64 = 2;
/// A writer injects a `try_insert` failure once per this many of its operations.
const TRY_FAIL_EVERY: u64 = 97;
/// The resizer's table sizes, alternated.
const WAVES: [usize; 2] = [1 << 15, 64];
/// The resizer runs one rehash of this many under an injected failure.
const RESIZE_FAIL_EVERY: u64 = 4;
/// How many error descriptions a run keeps.
const MAX_MESSAGES: usize = 8;
/// The checksum of a dropped value.
const POISON: u64 = 0xdead_dead_dead_dead;

/// The default number of reader threads.
pub fn default_readers() -> usize {
    grace::sys::num_cpus().max(2)
}

/// A value: its key, a generation, and a checksum of both that its destructor poisons.
struct Value {
    key: u64,
    gen: u64,
    sum: AtomicU64,
    stats: Arc<Stats>,
}

fn checksum(key: u64, gen: u64) -> u64 {
    (key ^ gen.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

impl Value {
    fn new(key: u64, gen: u64, stats: &Arc<Stats>) -> Value {
        stats.made.fetch_add(1, Ordering::Relaxed);
        Value {
            key,
            gen,
            sum: AtomicU64::new(checksum(key, gen)),
            stats: stats.clone(),
        }
    }

    /// Check the value seen under `key`; describe what is wrong.
    fn check(&self, key: u64) -> Result<u64, String> {
        // Relaxed: the value was published to us by the map (Acquire); the poison is written
        // only by the destructor, which must not have run while we can see the value.
        let sum = self.sum.load(Ordering::Relaxed);
        if sum == POISON {
            return Err(format!(
                "key {key}: read a freed value (generation {})",
                self.gen
            ));
        }
        if self.key != key || sum != checksum(self.key, self.gen) {
            return Err(format!(
                "key {key}: corrupt value (key {}, generation {}, checksum {sum:#x})",
                self.key, self.gen
            ));
        }
        Ok(self.gen)
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // Relaxed: a marker for readers that should not exist (see `check`).
        if self.sum.swap(POISON, Ordering::Relaxed) == POISON {
            self.stats.error("a value was dropped twice".into());
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters and errors shared by every thread of a run. Every counter is updated and read
/// with `Relaxed`: counts only, read after the threads joined (the joins order them); no data
/// is published through them. The `stop` flag is `Relaxed` too: threads only need to see it
/// eventually, and the joins order what they did before.
#[derive(Default)]
struct Stats {
    made: AtomicU64,
    dropped: AtomicU64,
    reads: AtomicU64,
    iterations: AtomicU64,
    updates: AtomicU64,
    try_insert_failures: AtomicU64,
    resizes: AtomicU64,
    resize_failures: AtomicU64,
    max_buckets: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, msg: String) {
        // Relaxed: counted; read after every thread joined.
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut m = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() < MAX_MESSAGES {
            m.push(msg);
        }
    }
}

/// What one flavor's half of the run found.
#[derive(Clone, Debug, Serialize)]
pub struct FlavorReport {
    /// `"rcu"` or `"srcu"`.
    pub flavor: &'static str,
    /// Lookups checked.
    pub reads: u64,
    /// Whole-map iterations checked.
    pub iterations: u64,
    /// Writer operations.
    pub updates: u64,
    /// `try_insert`s that failed (injected), each checked to leave the map unchanged.
    pub try_insert_failures: u64,
    /// Forced resizes that completed.
    pub resizes: u64,
    /// Forced resizes that failed to allocate (and left the size unchanged).
    pub resize_failures: u64,
    /// The most buckets seen.
    pub max_buckets: u64,
    /// Entries at the end.
    pub final_len: u64,
    /// Values made and dropped (equal when nothing leaked or was dropped twice).
    pub values_made: u64,
    /// See `values_made`.
    pub values_dropped: u64,
    /// Errors of every kind.
    pub errors: u64,
}

/// The report of `grace torture map` (its `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `"map"`.
    pub flavor: &'static str,
    /// Errors of every kind, every flavor; non-zero fails the run.
    pub errors: u64,
    /// Reader threads per flavor.
    pub readers: usize,
    /// Seconds the run took.
    pub duration_s: f64,
    /// `--fail-one-in`.
    pub fail_one_in: u32,
    /// Allocation failures injected in all (global and thread-local).
    pub injected_failures: u64,
    /// One entry per flavor.
    pub runs: Vec<FlavorReport>,
    /// The first few errors, described.
    pub error_messages: Vec<String>,
}

impl Verdict for Report {
    fn passed(&self) -> bool {
        self.errors == 0 && self.runs.iter().all(|r| r.reads > 0 && r.updates > 0)
    }

    fn human(&self) -> String {
        use crate::ui::{count, si};
        let mut o = format!(
            "grace torture map: {:.1} s, {} readers per flavor, {} writers, {} allocation failures injected (one in {} globally, plus try_insert and resize failures)\n",
            self.duration_s,
            self.readers,
            WRITERS,
            count(self.injected_failures),
            self.fail_one_in
        );
        for r in &self.runs {
            o.push_str(&format!(
                "  {:<5} reads {:>12}  iterations {:>7}  updates {:>12}  ({}/s)\n",
                r.flavor,
                count(r.reads),
                count(r.iterations),
                count(r.updates),
                si(r.updates as f64 / (self.duration_s / self.runs.len() as f64).max(1e-9))
            ));
            o.push_str(&format!(
                "        resizes {} ({} skipped: allocation failed), up to {} buckets; try_insert failures {}; {} entries at the end; values made {}, dropped {}; errors {}\n",
                count(r.resizes),
                count(r.resize_failures),
                count(r.max_buckets),
                count(r.try_insert_failures),
                count(r.final_len),
                count(r.values_made),
                count(r.values_dropped),
                r.errors
            ));
        }
        o.push_str(&format!(
            "  errors             {:>14}\n",
            count(self.errors)
        ));
        for m in &self.error_messages {
            o.push_str(&format!("  ! {m}\n"));
        }
        if self.passed() {
            o.push_str("--- End of test: SUCCESS\n");
        } else if self.errors == 0 {
            o.push_str("--- End of test: FAILURE (nothing checked; use a longer --duration)\n");
        } else {
            o.push_str(&format!(
                "--- End of test: FAILURE ({} errors)\n",
                count(self.errors)
            ));
        }
        o
    }
}

type Map<F> = HashMap<u64, Value, RandomState, F>;

/// Run the torture: half the duration on RCU, half on an SRCU domain.
pub fn run(opts: &Options, bar: &ProgressBar) -> Report {
    let started = Instant::now();
    // The domain is made before the global injection starts: its construction is a fallible
    // allocation too, and the torture is about the map, not about refusing to start.
    let srcu = match Srcu::new() {
        Ok(d) => Arc::new(d),
        Err(e) => super::fail(&format!("cannot create an SRCU domain: {e}")),
    };
    let injection = FailureInjection::start(opts.fail_one_in);
    let half = opts.duration / 2;
    let mut messages = Vec::new();
    let rcu = run_flavor(Rcu, "rcu", half, opts, bar, Duration::ZERO, &mut messages);
    let srcu = run_flavor(
        srcu,
        "srcu",
        opts.duration - half,
        opts,
        bar,
        half,
        &mut messages,
    );
    let injected_failures = injection.finish();
    let runs = vec![rcu, srcu];
    Report {
        flavor: "map",
        errors: runs.iter().map(|r| r.errors).sum(),
        readers: opts.readers.max(1),
        duration_s: started.elapsed().as_secs_f64(),
        fail_one_in: opts.fail_one_in,
        injected_failures,
        runs,
        error_messages: messages,
    }
}

/// One flavor's run of `duration`; the progress bar starts at `offset`.
fn run_flavor<F: Retire + Clone + Send + Sync + 'static>(
    flavor: F,
    name: &'static str,
    duration: Duration,
    opts: &Options,
    bar: &ProgressBar,
    offset: Duration,
    messages: &mut Vec<String>,
) -> FlavorReport {
    let stats = Arc::new(Stats::default());
    let map: Arc<Map<F>> = Arc::new(HashMap::with_capacity_hasher_and_flavor(
        0,
        RandomState::new(),
        flavor.clone(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..opts.readers.max(1) as u64)
        .map(|r| {
            let (map, stats, stop) = (map.clone(), stats.clone(), stop.clone());
            spawn(&format!("map-reader-{r}"), move || {
                reader(&map, &stats, &stop, r)
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (map, stats, stop) = (map.clone(), stats.clone(), stop.clone());
            spawn(&format!("map-writer-{w}"), move || {
                writer(&map, &stats, &stop, w)
            })
        })
        .collect();
    let resizer = {
        let (map, stats, stop) = (map.clone(), stats.clone(), stop.clone());
        spawn("map-resizer", move || resizer(&map, &stats, &stop))
    };
    let start = Instant::now();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(20).min(duration));
        bar.set_position((offset + start.elapsed().min(duration)).as_millis() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    join(resizer, "map resizer");
    let models: Vec<Vec<Option<u64>>> =
        writers.into_iter().map(|w| join(w, "map writer")).collect();
    for r in readers {
        join(r, "map reader");
    }

    // The final state must be exactly the writers' models.
    let mut present = 0u64;
    {
        let g = map.flavor().read_lock();
        for k in 0..KEYS {
            let want = models[(k % WRITERS) as usize][(k / WRITERS) as usize];
            let got = map.get(&k, &g).map(|v| v.check(k));
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(Ok(g))) if w == g => present += 1,
                (want, got) => stats.error(format!(
                    "key {k}: the map holds {got:?} at the end, its writer expected {want:?}"
                )),
            }
        }
        if map.len() as u64 != present {
            stats.error(format!("len() is {} at rest, {present} entries", map.len()));
        }
        let n = map.iter(&g).count() as u64;
        if n != present {
            stats.error(format!(
                "an iteration at rest yields {n} entries, {present} expected"
            ));
        }
    }
    let final_len = map.len() as u64;
    drop(map);
    flavor.retire_barrier();
    let (made, dropped) = (
        stats.made.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
    if made != dropped {
        stats.error(format!(
            "{made} values made, {dropped} dropped after the barrier"
        ));
    }
    messages.extend(
        stats
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| format!("{name}: {m}")),
    );
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    FlavorReport {
        flavor: name,
        reads: load(&stats.reads),
        iterations: load(&stats.iterations),
        updates: load(&stats.updates),
        try_insert_failures: load(&stats.try_insert_failures),
        resizes: load(&stats.resizes),
        resize_failures: load(&stats.resize_failures),
        max_buckets: load(&stats.max_buckets),
        final_len,
        values_made: made,
        values_dropped: dropped,
        errors: load(&stats.errors),
    }
}

/// Look keys up and iterate, checking every value.
fn reader<F: Retire>(map: &Map<F>, stats: &Stats, stop: &AtomicBool, salt: u64) {
    let mut rng = Rng::seeded(salt + 1);
    let mut seen = HashSet::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let g = map.flavor().read_lock();
        for _ in 0..64 {
            let k = rng.next() % KEYS;
            if let Some(v) = map.get(&k, &g) {
                if let Err(e) = v.check(k) {
                    stats.error(e);
                }
            }
        }
        stats.reads.fetch_add(64, Ordering::Relaxed);
        round += 1;
        if round % 64 == salt % 64 {
            seen.clear();
            for (k, v) in map.iter(&g) {
                if let Err(e) = v.check(*k) {
                    stats.error(e);
                }
                if !seen.insert(*k) {
                    stats.error(format!("key {k} yielded twice by one iteration"));
                }
            }
            stats.iterations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Random operations on the writer's own keys, each checked against its model; returns the
/// model (generation per owned key).
fn writer<F: Retire>(
    map: &Map<F>,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
    w: u64,
) -> Vec<Option<u64>> {
    let mut model: Vec<Option<u64>> = vec![None; (KEYS / WRITERS) as usize];
    let mut rng = Rng::seeded(1000 + w);
    let mut gen = 0u64;
    let mut ops = 0u64;
    let check = |got: Option<&Value>, want: Option<u64>, k: u64, op: &str| {
        let got = match got.map(|v| v.check(k)) {
            Some(Err(e)) => return stats.error(e),
            Some(Ok(g)) => Some(g),
            None => None,
        };
        if got != want {
            stats.error(format!(
                "key {k}: {op} returned generation {got:?}, expected {want:?}"
            ));
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let g = map.flavor().read_lock();
        for _ in 0..32 {
            ops += 1;
            gen += 1;
            let r = rng.next();
            // Waves of mostly inserts, then mostly removes, so the load moves both ways.
            let filling = (ops / 20_000) % 2 == 0;
            let i = (r >> 8) % (KEYS / WRITERS);
            let k = i * WRITERS + w;
            let slot = &mut model[i as usize];
            match r % 8 {
                0 if ops % TRY_FAIL_EVERY == 0 => {
                    let _fail = inject(FailurePlan::Nth(1));
                    match map.try_insert(k, Value::new(k, gen, stats), &g) {
                        Err(_) => {
                            stats.try_insert_failures.fetch_add(1, Ordering::Relaxed);
                            check(map.get(&k, &g), *slot, k, "get after a failed try_insert");
                        }
                        Ok(_) => stats.error("an injected try_insert failure did not fail".into()),
                    }
                }
                0 => {
                    let old = map.try_insert(k, Value::new(k, gen, stats), &g);
                    match old {
                        Ok(old) => {
                            check(old, *slot, k, "try_insert");
                            *slot = Some(gen);
                        }
                        // A global injection hit it: the key must be as it was.
                        Err(_) => check(map.get(&k, &g), *slot, k, "get after a failed try_insert"),
                    }
                }
                1..=3 if filling => {
                    check(
                        map.insert(k, Value::new(k, gen, stats), &g),
                        *slot,
                        k,
                        "insert",
                    );
                    *slot = Some(gen);
                }
                1 | 4 => {
                    let want = slot.map(|_| gen);
                    check(
                        map.update(&k, |v| Value::new(v.key, gen, &v.stats), &g),
                        want,
                        k,
                        "update",
                    );
                    if slot.is_some() {
                        *slot = Some(gen);
                    }
                }
                5 => {
                    let want = slot.unwrap_or(gen);
                    check(
                        Some(map.get_or_insert_with(k, || Value::new(k, gen, stats), &g)),
                        Some(want),
                        k,
                        "get_or_insert_with",
                    );
                    *slot = Some(want);
                }
                _ => {
                    check(map.remove(&k, &g), *slot, k, "remove");
                    *slot = None;
                }
            }
        }
        stats.updates.fetch_add(32, Ordering::Relaxed);
    }
    model
}

/// Force grow and shrink waves; every few rounds under an injected allocation failure.
fn resizer<F: Retire>(map: &Map<F>, stats: &Stats, stop: &AtomicBool) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let g = map.flavor().read_lock();
        let want = WAVES[(round % 2) as usize];
        let before = map.buckets(&g);
        stats
            .max_buckets
            .fetch_max(before as u64, Ordering::Relaxed);
        if round % RESIZE_FAIL_EVERY == 0 {
            // Every allocation of this thread fails: the rehash fails unless the table already
            // has that size, and the map keeps working (the readers and writers check it).
            let _fail = inject(FailurePlan::AllAfter(0));
            if map.rehash(want, &g).is_err() {
                stats.resize_failures.fetch_add(1, Ordering::Relaxed);
            }
        } else if map.rehash(want, &g).is_ok() {
            stats.resizes.fetch_add(1, Ordering::Relaxed);
        } else {
            // A global injection failed it; the map works at its size.
            stats.resize_failures.fetch_add(1, Ordering::Relaxed);
        }
        drop(g);
        std::thread::sleep(Duration::from_millis(5));
    }
}
