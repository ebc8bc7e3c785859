//! The `map` suite: concurrent hash maps with `u64` keys and values, head to head.
//!
//! # The maps
//!
//! Every map is measured through one small trait, [`BenchMap`]: make one with a capacity
//! hint, take a per-thread *pin* (a read-side guard, reused for a batch of
//! [`CHECK_EVERY`] operations, so that guard-based maps pay one enter/exit per batch and not
//! per operation, as their users would), and `get`, `insert` (insert or overwrite) and
//! `remove` under it. Every map hashes with std's `RandomState`. The peers:
//!
//! * `dashmap`: `dashmap::DashMap` (sharded `RwLock`s around hashbrown tables);
//! * `papaya`: `papaya::HashMap`, read under its `guard()` (seize);
//! * `scc`: `scc::HashMap` (`read_sync`, `upsert_sync`, `remove_sync`);
//! * `rwlock-std`: `RwLock<std::collections::HashMap>`, the baseline.
//!
//! grace's own row (`grace::collections::HashMap`) is one more [`Entry`] in [`entries`];
//! the adapter it needs is sketched there.
//!
//! # The throughput rows
//!
//! [`run_map_one`] measures one map at one (key range, read share, key distribution, thread
//! count): the map is made with the prefill size as its capacity hint and prefilled with half
//! the key range (the keys whose mixed hash is even); then each of `threads` workers runs
//! operations, `read_pct` percent `get`, the rest half `insert` and half `remove` (so the size
//! stays about the same). Keys are uniform over the range, or Zipf-distributed with exponent
//! [`ZIPF_S`] (key 0 the hottest; a rejection-inversion sampler written here, Hörmann and
//! Derflinger 1996). Zipf keys are drawn before each round into a per-thread buffer of
//! [`ZIPF_BUFFER`] keys that the round cycles through (the sampler's two `exp`/`ln` would
//! otherwise cost as much as the lookup); uniform keys come from an xorshift generator inline.
//! An untimed warm-up round comes first, then three timed rounds of `duration`
//! each; `ops_per_s` is the median round's rate, with the slowest and fastest beside it.
//!
//! **Peak RSS** is the process's `VmHWM` at the end of the measurement, after resetting it at
//! the start (`/proc/self/clear_refs`), as the flood suite does. It means something only in a
//! process of its own, which is how the `grace` CLI runs every row (`grace bench map`); it
//! includes the process's baseline and, for Zipf rows, the threads' key buffers (512 KiB
//! each), the same for every map.
//!
//! # The resize rows
//!
//! [`run_resize_one`] makes the map with a capacity hint of [`RESIZE_START_CAPACITY`]; one
//! writer inserts `keys` keys (1,000,000 by default), forcing every doubling on the way, while
//! `readers` threads look up random keys in that range and time every 64th lookup with
//! `Instant`. Samples taken while the writer runs are the *during* set; after it finishes the
//! readers go on for `duration` (the *steady* set). The row reports the p99 of each and their
//! ratio.
//!
//! # Targets
//!
//! [`map_checks`] judges grace's row against the best peer at the same row: at 100% and 99%
//! reads at least [`TARGET_READ_MOSTLY`] times the best peer's ops/s, at 90% at least
//! [`TARGET_READ_90`], at 50% at least [`TARGET_READ_50`]; peak RSS at most
//! [`TARGET_RSS`] times the leanest peer's; p99 during the doublings at most
//! [`TARGET_RESIZE`] times grace's own steady-state p99. Without a grace row every check is
//! reported as not measured.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};

use crate::flood::{reset_peak_rss, rss};
use crate::harness::TIMED_ROUNDS;

/// Operations a worker runs under one pin, between two looks at the stop flag.
pub const CHECK_EVERY: u64 = 32;

/// The Zipf exponent of the skewed rows.
pub const ZIPF_S: f64 = 0.99;

/// Keys drawn per thread before each Zipf round, cycled through during it.
pub const ZIPF_BUFFER: usize = 1 << 16;

/// The capacity hint the resize rows start from.
pub const RESIZE_START_CAPACITY: usize = 16;

/// One lookup in this many is timed in the resize rows.
pub const RESIZE_SAMPLE_EVERY: u64 = 64;

/// The default key ranges of the throughput rows.
pub const MAP_KEYS: [u64; 2] = [1_000, 1_000_000];

/// The default read shares, in percent.
pub const MAP_READS: [u32; 4] = [100, 99, 90, 50];

/// The default number of keys the resize rows' writer inserts.
pub const RESIZE_KEYS: u64 = 1_000_000;

/// The name grace's row has (see [`entries`]).
pub const MAP_GRACE: &str = "grace";

/// Target: grace's ops/s over the best peer's at 100% and 99% reads, at least.
pub const TARGET_READ_MOSTLY: f64 = 1.5;
/// Target: grace's ops/s over the best peer's at 90% reads, at least.
pub const TARGET_READ_90: f64 = 1.0;
/// Target: grace's ops/s over the best peer's at 50% reads, at least.
pub const TARGET_READ_50: f64 = 0.8;
/// Target: grace's peak RSS over the leanest peer's, at most.
pub const TARGET_RSS: f64 = 1.5;
/// Target: grace's p99 lookup latency during the doublings over its steady-state p99, at most.
pub const TARGET_RESIZE: f64 = 2.0;

// ---------------------------------------------------------------------------
// The maps.

/// A concurrent map as the suite uses it: `u64` keys and values, std's `RandomState`.
pub trait BenchMap: Sync + Sized {
    /// What a thread holds over a batch of operations: a read-side guard, or `()`.
    type Pin<'a>
    where
        Self: 'a;

    /// A map sized for about `capacity` entries.
    fn with_capacity(capacity: usize) -> Self;

    /// Enter a batch of operations.
    fn pin(&self) -> Self::Pin<'_>;

    /// The value of `key`.
    fn get(&self, pin: &Self::Pin<'_>, key: u64) -> Option<u64>;

    /// Insert `key`, or overwrite its value.
    fn insert(&self, pin: &Self::Pin<'_>, key: u64, value: u64);

    /// Remove `key`; whether it was there.
    fn remove(&self, pin: &Self::Pin<'_>, key: u64) -> bool;
}

/// `dashmap::DashMap`.
pub struct DashMapBench(dashmap::DashMap<u64, u64, RandomState>);

impl BenchMap for DashMapBench {
    type Pin<'a> = ();
    fn with_capacity(capacity: usize) -> Self {
        DashMapBench(dashmap::DashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    fn pin(&self) {}
    #[inline]
    fn get(&self, _: &(), key: u64) -> Option<u64> {
        self.0.get(&key).map(|r| *r)
    }
    #[inline]
    fn insert(&self, _: &(), key: u64, value: u64) {
        black_box(self.0.insert(key, value));
    }
    #[inline]
    fn remove(&self, _: &(), key: u64) -> bool {
        self.0.remove(&key).is_some()
    }
}

/// `papaya::HashMap`, under its seize guard.
pub struct PapayaBench(papaya::HashMap<u64, u64, RandomState>);

impl BenchMap for PapayaBench {
    type Pin<'a> = papaya::LocalGuard<'a>;
    fn with_capacity(capacity: usize) -> Self {
        PapayaBench(papaya::HashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    #[inline]
    fn pin(&self) -> papaya::LocalGuard<'_> {
        self.0.guard()
    }
    #[inline]
    fn get(&self, g: &papaya::LocalGuard<'_>, key: u64) -> Option<u64> {
        self.0.get(&key, g).copied()
    }
    #[inline]
    fn insert(&self, g: &papaya::LocalGuard<'_>, key: u64, value: u64) {
        black_box(self.0.insert(key, value, g));
    }
    #[inline]
    fn remove(&self, g: &papaya::LocalGuard<'_>, key: u64) -> bool {
        self.0.remove(&key, g).is_some()
    }
}

/// `scc::HashMap`.
pub struct SccBench(scc::HashMap<u64, u64, RandomState>);

impl BenchMap for SccBench {
    type Pin<'a> = ();
    fn with_capacity(capacity: usize) -> Self {
        SccBench(scc::HashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    fn pin(&self) {}
    #[inline]
    fn get(&self, _: &(), key: u64) -> Option<u64> {
        self.0.read_sync(&key, |_, v| *v)
    }
    #[inline]
    fn insert(&self, _: &(), key: u64, value: u64) {
        black_box(self.0.upsert_sync(key, value));
    }
    #[inline]
    fn remove(&self, _: &(), key: u64) -> bool {
        self.0.remove_sync(&key).is_some()
    }
}

/// `RwLock<std::collections::HashMap>`.
pub struct RwLockBench(RwLock<HashMap<u64, u64, RandomState>>);

impl BenchMap for RwLockBench {
    type Pin<'a> = ();
    fn with_capacity(capacity: usize) -> Self {
        RwLockBench(RwLock::new(HashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        )))
    }
    fn pin(&self) {}
    #[inline]
    fn get(&self, _: &(), key: u64) -> Option<u64> {
        // A poisoned lock still holds a consistent map (no operation panics midway).
        let m = self.0.read().unwrap_or_else(|e| e.into_inner());
        m.get(&key).copied()
    }
    #[inline]
    fn insert(&self, _: &(), key: u64, value: u64) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        black_box(m.insert(key, value));
    }
    #[inline]
    fn remove(&self, _: &(), key: u64) -> bool {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        m.remove(&key).is_some()
    }
}

/// `grace::collections::HashMap`, under one RCU guard per batch of operations (as papaya's
/// guard).
pub struct GraceBench(grace::collections::HashMap<u64, u64>);

impl BenchMap for GraceBench {
    type Pin<'a> = grace::rcu::Guard;
    fn with_capacity(capacity: usize) -> Self {
        GraceBench(grace::collections::HashMap::with_capacity(capacity))
    }
    #[inline]
    fn pin(&self) -> grace::rcu::Guard {
        self.0.guard()
    }
    #[inline]
    fn get(&self, g: &grace::rcu::Guard, key: u64) -> Option<u64> {
        self.0.get(&key, g).copied()
    }
    #[inline]
    fn insert(&self, g: &grace::rcu::Guard, key: u64, value: u64) {
        black_box(self.0.insert(key, value, g));
    }
    #[inline]
    fn remove(&self, g: &grace::rcu::Guard, key: u64) -> bool {
        self.0.remove(&key, g).is_some()
    }
}

/// One map of the suite: its name and its two measurements, monomorphized.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The row's name.
    pub name: &'static str,
    throughput: fn(&MapParams, bool) -> MapResult,
    resize: fn(&ResizeParams, bool) -> ResizeResult,
}

impl Entry {
    /// The entry of map type `M`, named `name`.
    pub fn of<M: BenchMap>(name: &'static str) -> Entry {
        Entry {
            name,
            throughput: measure::<M>,
            resize: measure_resize::<M>,
        }
    }
}

/// Every map of the suite, in run order.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry::of::<GraceBench>(MAP_GRACE),
        Entry::of::<DashMapBench>("dashmap"),
        Entry::of::<PapayaBench>("papaya"),
        Entry::of::<SccBench>("scc"),
        Entry::of::<RwLockBench>("rwlock-std"),
    ]
}

/// The names of [`entries`], in run order.
///
/// # Examples
///
/// ```
/// assert!(grace_bench::map_impls().contains(&"papaya"));
/// ```
pub fn map_impls() -> Vec<&'static str> {
    entries().iter().map(|e| e.name).collect()
}

fn entry(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}

// ---------------------------------------------------------------------------
// Keys.

/// How the throughput rows draw keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Uniform over the key range.
    Uniform,
    /// Zipf with exponent [`ZIPF_S`] over the key range.
    Zipf,
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf",
        })
    }
}

impl FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Dist, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(Dist::Uniform),
            "zipf" => Ok(Dist::Zipf),
            _ => Err(format!("expected uniform or zipf, got {s:?}")),
        }
    }
}

/// The default key distributions.
pub const MAP_DISTS: [Dist; 2] = [Dist::Uniform, Dist::Zipf];

/// xorshift64*, seeded through `RandomState` so that runs differ.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(seed);
        Rng(h.finish() | 1)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(n, s) over `1..=n` by rejection-inversion (Hörmann and Derflinger 1996, as Apache
/// Commons RNG writes it): O(1) memory, about one iteration per sample.
///
/// # Examples
///
/// ```
/// let z = grace_bench::Zipf::new(1000, 0.99).unwrap();
/// assert!(z.sample_with(|| 0.5) >= 1 && z.sample_with(|| 0.5) <= 1000);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl Zipf {
    /// The distribution over `1..=n` with exponent `s` (`s > 0`, `s != 1`; 0.99 is the usual
    /// "skewed" setting); `None` otherwise or when `n` is 0.
    pub fn new(n: u64, s: f64) -> Option<Zipf> {
        if n == 0 || !s.is_finite() || s <= 0.0 || (s - 1.0).abs() < 1e-9 {
            return None;
        }
        let mut z = Zipf {
            n: n as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            cut: 0.0,
        };
        z.h_x1 = z.h_integral(1.5) - 1.0;
        z.h_n = z.h_integral(z.n + 0.5);
        z.cut = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        Some(z)
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }

    /// One sample in `1..=n`, drawing uniforms in `[0, 1)` from `unit`.
    pub fn sample_with(&self, mut unit: impl FnMut() -> f64) -> u64 {
        loop {
            let u = self.h_n + unit() * (self.h_x1 - self.h_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(exp(x) - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// A worker's keys for one round.
enum Keys {
    Uniform { rng: Rng, keys: u64 },
    Buffered { buf: Vec<u64>, at: usize },
}

impl Keys {
    fn new(p: &MapParams, seed: u64) -> Keys {
        let mut rng = Rng::new(seed);
        match p.dist {
            Dist::Uniform => Keys::Uniform { rng, keys: p.keys },
            Dist::Zipf => {
                // `run_map_one` checked the parameters, so the distribution exists.
                let z = Zipf::new(p.keys, ZIPF_S).expect("valid Zipf parameters");
                let buf = (0..ZIPF_BUFFER)
                    .map(|_| z.sample_with(|| rng.unit()) - 1)
                    .collect();
                Keys::Buffered { buf, at: 0 }
            }
        }
    }

    #[inline]
    fn next(&mut self) -> u64 {
        match self {
            Keys::Uniform { rng, keys } => (rng.next() >> 16) % *keys,
            Keys::Buffered { buf, at } => {
                let k = buf[*at];
                *at = (*at + 1) % buf.len();
                k
            }
        }
    }
}

/// A fixed mix of the key, to pick the prefilled half.
fn mix(k: u64) -> u64 {
    let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Reads a figure that JSON wrote as `null` (serde_json writes a `NaN`, a figure that was not
/// measured, as `null`) back as `NaN`, so that a child's failed figure reaches the parent.
pub(crate) fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

// ---------------------------------------------------------------------------
// Throughput.

/// What one throughput measurement runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapParams {
    /// Worker threads.
    pub threads: usize,
    /// The key range `0..keys`; the map is prefilled with half of it.
    pub keys: u64,
    /// The share of `get`s, in percent; the rest are half inserts, half removes.
    pub read_pct: u32,
    /// How keys are drawn.
    pub dist: Dist,
    /// How long each round runs.
    pub duration: Duration,
}

/// What one throughput measurement measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapResult {
    /// The map (see [`map_impls`]).
    pub impl_name: String,
    /// Worker threads.
    pub threads: usize,
    /// The key range.
    pub keys: u64,
    /// The share of `get`s, in percent.
    pub read_pct: u32,
    /// How keys were drawn.
    pub dist: Dist,
    /// Seconds per timed round (as run).
    pub duration_s: f64,
    /// Timed rounds.
    pub rounds: usize,
    /// Operations in the timed rounds, all threads.
    pub ops: u64,
    /// Operations per second, all threads: the median timed round's; `NaN` when the
    /// measurement failed.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s: f64,
    /// The slowest timed round's rate.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s_min: f64,
    /// The fastest timed round's rate.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub ops_per_s_max: f64,
    /// `VmHWM` at the end, in bytes, when measured in a process of its own.
    pub peak_rss: Option<u64>,
    /// Whether the measurement had a process of its own.
    pub isolated: bool,
    /// The 1-minute load average when the measurement ended; `None` where unknown.
    pub load_avg: Option<f64>,
    /// A caveat, or why the measurement failed.
    pub note: Option<String>,
}

impl MapResult {
    /// Whether the measurement produced figures.
    pub fn is_measured(&self) -> bool {
        self.ops_per_s.is_finite() && self.ops_per_s > 0.0
    }

    /// A result for a measurement that could not be made.
    pub fn failed(impl_name: &str, p: &MapParams, why: String) -> MapResult {
        MapResult {
            impl_name: impl_name.to_string(),
            threads: p.threads,
            keys: p.keys,
            read_pct: p.read_pct,
            dist: p.dist,
            duration_s: 0.0,
            rounds: 0,
            ops: 0,
            ops_per_s: f64::NAN,
            ops_per_s_min: f64::NAN,
            ops_per_s_max: f64::NAN,
            peak_rss: None,
            isolated: false,
            load_avg: crate::harness::load_average(),
            note: Some(why),
        }
    }
}

fn prefill<M: BenchMap>(map: &M, keys: u64) {
    let pin = map.pin();
    for k in (0..keys).filter(|&k| mix(k) & 1 == 0) {
        map.insert(&pin, k, k);
    }
}

/// One round: `(operations, seconds)`.
fn round<M: BenchMap>(map: &M, p: &MapParams, round_no: u64) -> Result<(u64, f64), String> {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(p.threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..p.threads)
            .map(|t| {
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let seed = round_no << 16 | t as u64;
                    let mut keys = Keys::new(p, seed);
                    let mut rng = Rng::new(!seed);
                    start.wait();
                    let mut ops = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let pin = map.pin();
                        for _ in 0..CHECK_EVERY {
                            let key = keys.next();
                            let r = rng.next();
                            if ((r >> 8) % 100) < u64::from(p.read_pct) {
                                black_box(map.get(&pin, key));
                            } else if r & 1 == 0 {
                                map.insert(&pin, key, r);
                            } else {
                                black_box(map.remove(&pin, key));
                            }
                        }
                        drop(pin);
                        ops += CHECK_EVERY;
                    }
                    ops
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(p.duration);
        stop.store(true, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let mut ops = 0;
        for w in workers {
            ops += w.join().map_err(|_| "a worker panicked".to_string())?;
        }
        Ok((ops, secs))
    })
}

fn measure<M: BenchMap>(p: &MapParams, exclusive: bool) -> MapResult {
    let name = "";
    let hwm_reset = exclusive && reset_peak_rss();
    let map = M::with_capacity((p.keys / 2) as usize);
    prefill(&map, p.keys);
    let mut rates = Vec::with_capacity(TIMED_ROUNDS);
    let (mut ops, mut secs) = (0, 0.0);
    for r in 0..=TIMED_ROUNDS {
        match round(&map, p, r as u64) {
            Ok((n, s)) if r > 0 => {
                rates.push(n as f64 / s);
                ops += n;
                secs += s;
            }
            Ok(_) => {}
            Err(e) => return MapResult::failed(name, p, e),
        }
    }
    let peak_rss = if exclusive { rss().1 } else { None };
    drop(map);
    rates.sort_by(f64::total_cmp);
    let mut notes = Vec::new();
    if exclusive && !hwm_reset {
        notes.push("VmHWM could not be reset: peak RSS includes the process start".to_string());
    }
    if !exclusive {
        notes.push("no peak RSS: measured in a shared process".to_string());
    }
    MapResult {
        impl_name: name.to_string(),
        threads: p.threads,
        keys: p.keys,
        read_pct: p.read_pct,
        dist: p.dist,
        duration_s: secs / TIMED_ROUNDS as f64,
        rounds: TIMED_ROUNDS,
        ops,
        ops_per_s: rates[rates.len() / 2],
        ops_per_s_min: rates[0],
        ops_per_s_max: rates[rates.len() - 1],
        peak_rss,
        isolated: false,
        load_avg: crate::harness::load_average(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// Measures `name` (one of [`map_impls`]) with `p`, in this process (see the module docs).
/// `exclusive` says the process runs nothing else, so that its peak RSS is the row's (the
/// `grace` CLI's child processes).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grace_bench::{run_map_one, Dist, MapParams};
///
/// let p = MapParams { threads: 1, keys: 100, read_pct: 90, dist: Dist::Zipf, duration: Duration::from_millis(5) };
/// let r = run_map_one("dashmap", &p, false);
/// assert!(r.is_measured(), "{:?}", r.note);
/// ```
pub fn run_map_one(name: &str, p: &MapParams, exclusive: bool) -> MapResult {
    if p.threads == 0 || p.keys < 2 || p.read_pct > 100 || p.duration.is_zero() {
        return MapResult::failed(
            name,
            p,
            format!(
                "bad parameters: threads {} (>= 1), keys {} (>= 2), reads {}% (<= 100), \
                 duration {:?} (> 0)",
                p.threads, p.keys, p.read_pct, p.duration
            ),
        );
    }
    let Some(e) = entry(name) else {
        return MapResult::failed(
            name,
            p,
            format!("unknown map {name:?} (known: {})", map_impls().join(", ")),
        );
    };
    let mut r = (e.throughput)(p, exclusive);
    r.impl_name = name.to_string();
    r
}

// ---------------------------------------------------------------------------
// Resize latency.

/// What one resize measurement runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeParams {
    /// Reader threads timing lookups.
    pub readers: usize,
    /// Keys the writer inserts, from a map of capacity [`RESIZE_START_CAPACITY`].
    pub keys: u64,
    /// How long the readers go on after the writer finished (the steady state).
    pub duration: Duration,
}

/// What one resize measurement measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeResult {
    /// The map.
    pub impl_name: String,
    /// Reader threads.
    pub readers: usize,
    /// Keys inserted.
    pub keys: u64,
    /// Seconds the writer took to insert them.
    pub insert_s: f64,
    /// Timed lookups while the writer ran.
    pub samples_during: u64,
    /// Timed lookups after it finished.
    pub samples_steady: u64,
    /// The 99th percentile lookup latency while the writer ran, in ns; `NaN` if not measured.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub p99_during_ns: f64,
    /// The 99th percentile lookup latency after, in ns.
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub p99_steady_ns: f64,
    /// The slowest timed lookup while the writer ran, in ns (a doubling's stall shows here
    /// when it is rarer than one sample in a hundred).
    #[serde(deserialize_with = "crate::map::null_as_nan")]
    pub max_during_ns: f64,
    /// `VmHWM` at the end, in bytes, when measured in a process of its own.
    pub peak_rss: Option<u64>,
    /// Whether the measurement had a process of its own.
    pub isolated: bool,
    /// The 1-minute load average when the measurement ended; `None` where unknown.
    pub load_avg: Option<f64>,
    /// A caveat, or why the measurement failed.
    pub note: Option<String>,
}

impl ResizeResult {
    /// Whether both percentiles were measured.
    pub fn is_measured(&self) -> bool {
        self.p99_during_ns.is_finite() && self.p99_steady_ns.is_finite()
    }

    /// The p99 during the doublings over the steady-state p99.
    pub fn ratio(&self) -> Option<f64> {
        (self.is_measured() && self.p99_steady_ns > 0.0)
            .then(|| self.p99_during_ns / self.p99_steady_ns)
    }

    /// A result for a measurement that could not be made.
    pub fn failed(impl_name: &str, p: &ResizeParams, why: String) -> ResizeResult {
        ResizeResult {
            impl_name: impl_name.to_string(),
            readers: p.readers,
            keys: p.keys,
            insert_s: 0.0,
            samples_during: 0,
            samples_steady: 0,
            p99_during_ns: f64::NAN,
            p99_steady_ns: f64::NAN,
            max_during_ns: f64::NAN,
            peak_rss: None,
            isolated: false,
            load_avg: crate::harness::load_average(),
            note: Some(why),
        }
    }
}

/// The `q` quantile of `samples` (sorted in place), `NaN` when empty.
fn quantile(samples: &mut [u64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i] as f64
}

fn measure_resize<M: BenchMap>(p: &ResizeParams, exclusive: bool) -> ResizeResult {
    let hwm_reset = exclusive && reset_peak_rss();
    let map = M::with_capacity(RESIZE_START_CAPACITY);
    let writing = AtomicBool::new(true);
    let stop = AtomicBool::new(false);
    let start = Barrier::new(p.readers + 1);
    let outcome = std::thread::scope(|s| {
        let readers: Vec<_> = (0..p.readers)
            .map(|t| {
                let (map, writing, stop, start) = (&map, &writing, &stop, &start);
                s.spawn(move || {
                    let mut rng = Rng::new(t as u64);
                    let (mut during, mut steady) = (Vec::new(), Vec::new());
                    start.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let pin = map.pin();
                        for _ in 0..CHECK_EVERY {
                            let key = (rng.next() >> 16) % p.keys;
                            n += 1;
                            if n % RESIZE_SAMPLE_EVERY == 0 {
                                // Relaxed: a phase marker; a sample at the edge may land in
                                // either set.
                                let w = writing.load(Ordering::Relaxed);
                                let t0 = Instant::now();
                                black_box(map.get(&pin, key));
                                let ns = t0.elapsed().as_nanos() as u64;
                                if w {
                                    during.push(ns);
                                } else {
                                    steady.push(ns);
                                }
                            } else {
                                black_box(map.get(&pin, key));
                            }
                        }
                    }
                    (during, steady)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut k = 0;
        while k < p.keys {
            let pin = map.pin();
            for _ in 0..CHECK_EVERY.min(p.keys - k) {
                map.insert(&pin, k, k);
                k += 1;
            }
        }
        let insert_s = t0.elapsed().as_secs_f64();
        writing.store(false, Ordering::Relaxed);
        std::thread::sleep(p.duration);
        stop.store(true, Ordering::Relaxed);
        let (mut during, mut steady) = (Vec::new(), Vec::new());
        for r in readers {
            let (d, s) = r.join().map_err(|_| "a reader panicked".to_string())?;
            during.extend(d);
            steady.extend(s);
        }
        Ok::<_, String>((insert_s, during, steady))
    });
    let peak_rss = if exclusive { rss().1 } else { None };
    drop(map);
    let (insert_s, mut during, mut steady) = match outcome {
        Ok(o) => o,
        Err(e) => return ResizeResult::failed("", p, e),
    };
    let mut notes = Vec::new();
    if during.len() < 100 {
        notes.push(format!(
            "only {} lookups timed during the doublings: the p99 is rough",
            during.len()
        ));
    }
    if exclusive && !hwm_reset {
        notes.push("VmHWM could not be reset".to_string());
    }
    ResizeResult {
        impl_name: String::new(),
        readers: p.readers,
        keys: p.keys,
        insert_s,
        samples_during: during.len() as u64,
        samples_steady: steady.len() as u64,
        p99_during_ns: quantile(&mut during, 0.99),
        max_during_ns: quantile(&mut during, 1.0),
        p99_steady_ns: quantile(&mut steady, 0.99),
        peak_rss,
        isolated: false,
        load_avg: crate::harness::load_average(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// Measures the resize latency of `name` (one of [`map_impls`]) with `p`, in this process
/// (see the module docs).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grace_bench::{run_resize_one, ResizeParams};
///
/// let p = ResizeParams { readers: 1, keys: 10_000, duration: Duration::from_millis(5) };
/// let r = run_resize_one("scc", &p, false);
/// assert!(r.p99_steady_ns > 0.0, "{:?}", r.note);
/// ```
pub fn run_resize_one(name: &str, p: &ResizeParams, exclusive: bool) -> ResizeResult {
    if p.readers == 0 || p.keys < 2 || p.duration.is_zero() {
        return ResizeResult::failed(
            name,
            p,
            format!(
                "bad parameters: readers {} (>= 1), keys {} (>= 2), duration {:?} (> 0)",
                p.readers, p.keys, p.duration
            ),
        );
    }
    let Some(e) = entry(name) else {
        return ResizeResult::failed(
            name,
            p,
            format!("unknown map {name:?} (known: {})", map_impls().join(", ")),
        );
    };
    let mut r = (e.resize)(p, exclusive);
    r.impl_name = name.to_string();
    r
}

// ---------------------------------------------------------------------------
// Targets.

/// One target, judged at one row.
#[derive(Debug, Clone, PartialEq)]
pub struct MapCheck {
    /// What is compared, for a person: the row and the figure.
    pub what: String,
    /// The peer compared with (the best, or the leanest), or `"grace"` for the resize ratio.
    pub against: String,
    /// The measured ratio; `NaN` when a figure is missing.
    pub ratio: f64,
    /// The bound.
    pub bound: f64,
    /// Whether the ratio must be at least the bound (else at most).
    pub at_least: bool,
}

impl MapCheck {
    /// `Some(true)` when met, `Some(false)` when missed, `None` when not measured.
    pub fn met(&self) -> Option<bool> {
        if !self.ratio.is_finite() {
            None
        } else if self.at_least {
            Some(self.ratio >= self.bound)
        } else {
            Some(self.ratio <= self.bound)
        }
    }
}

/// The ops/s bound at a read share: [`TARGET_READ_MOSTLY`] at 99% and above,
/// [`TARGET_READ_90`] from 90%, [`TARGET_READ_50`] below.
pub fn ops_target(read_pct: u32) -> f64 {
    match read_pct {
        99..=100 => TARGET_READ_MOSTLY,
        90..=98 => TARGET_READ_90,
        _ => TARGET_READ_50,
    }
}

/// Every target at every throughput row set and every resize row set that was run: grace's
/// row against the best peer's (ops/s), the leanest peer's (peak RSS), and its own steady
/// state (resize p99). A check whose grace row (or every peer) is missing has a `NaN` ratio.
///
/// # Examples
///
/// ```
/// let checks = grace_bench::map_checks(&[], &[]);
/// assert!(checks.is_empty());
/// ```
pub fn map_checks(results: &[MapResult], resize: &[ResizeResult]) -> Vec<MapCheck> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for r in results {
        let key = (r.keys, r.read_pct, r.dist, r.threads);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let same = |c: &&MapResult| (c.keys, c.read_pct, c.dist, c.threads) == key;
        let grace = results
            .iter()
            .filter(same)
            .find(|c| c.impl_name == MAP_GRACE && c.is_measured());
        let peers: Vec<&MapResult> = results
            .iter()
            .filter(same)
            .filter(|c| c.impl_name != MAP_GRACE && c.is_measured())
            .collect();
        let row = format!(
            "keys={} reads={}% {} t={}",
            r.keys, r.read_pct, r.dist, r.threads
        );
        let best = peers
            .iter()
            .max_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
        out.push(MapCheck {
            what: format!("{row}: ops/s vs the best peer"),
            against: best.map_or("-".into(), |b| b.impl_name.clone()),
            ratio: match (grace, best) {
                (Some(g), Some(b)) => g.ops_per_s / b.ops_per_s,
                _ => f64::NAN,
            },
            bound: ops_target(r.read_pct),
            at_least: true,
        });
        let leanest = peers
            .iter()
            .filter(|c| c.peak_rss.is_some())
            .min_by_key(|c| c.peak_rss);
        out.push(MapCheck {
            what: format!("{row}: peak RSS vs the leanest peer"),
            against: leanest.map_or("-".into(), |b| b.impl_name.clone()),
            ratio: match (
                grace.and_then(|g| g.peak_rss),
                leanest.and_then(|l| l.peak_rss),
            ) {
                (Some(g), Some(l)) if l > 0 => g as f64 / l as f64,
                _ => f64::NAN,
            },
            bound: TARGET_RSS,
            at_least: false,
        });
    }
    let mut seen = Vec::new();
    for r in resize {
        if seen.contains(&(r.keys, r.readers)) {
            continue;
        }
        seen.push((r.keys, r.readers));
        let grace = resize
            .iter()
            .find(|c| c.impl_name == MAP_GRACE && (c.keys, c.readers) == (r.keys, r.readers));
        out.push(MapCheck {
            what: format!(
                "resize keys={} readers={}: p99 during the doublings vs steady",
                r.keys, r.readers
            ),
            against: MAP_GRACE.into(),
            ratio: grace.and_then(ResizeResult::ratio).unwrap_or(f64::NAN),
            bound: TARGET_RESIZE,
            at_least: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, ZIPF_S).unwrap();
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1001];
        for _ in 0..100_000 {
            let k = z.sample_with(|| rng.unit());
            assert!((1..=1000).contains(&k));
            counts[k as usize] += 1;
        }
        // P(1) / P(2) = 2^s ~ 1.99; the head takes far more than a uniform share.
        let ratio = f64::from(counts[1]) / f64::from(counts[2]);
        assert!((1.7..2.3).contains(&ratio), "{ratio}");
        let head: u32 = counts[1..=10].iter().sum();
        assert!(head > 30_000, "{head}"); // about 39% for n = 1000, s = 0.99
        assert!(Zipf::new(0, 0.99).is_none() && Zipf::new(10, 1.0).is_none());
    }

    #[test]
    fn every_peer_agrees_with_a_model() {
        fn check<M: BenchMap>() {
            let m = M::with_capacity(4);
            let pin = m.pin();
            for k in 0..100 {
                m.insert(&pin, k, k * 2);
            }
            m.insert(&pin, 5, 55);
            assert!(m.remove(&pin, 6));
            assert!(!m.remove(&pin, 6));
            assert_eq!(m.get(&pin, 5), Some(55));
            assert_eq!(m.get(&pin, 6), None);
            assert_eq!(m.get(&pin, 99), Some(198));
        }
        check::<DashMapBench>();
        check::<PapayaBench>();
        check::<SccBench>();
        check::<RwLockBench>();
    }

    #[test]
    fn quantiles() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut [5], 0.99), 5.0);
        assert!(quantile(&mut [], 0.99).is_nan());
    }

    fn row(name: &str, reads: u32, rate: f64, rss: u64) -> MapResult {
        let p = MapParams {
            threads: 1,
            keys: 1000,
            read_pct: reads,
            dist: Dist::Uniform,
            duration: Duration::from_millis(1),
        };
        let mut r = MapResult::failed(name, &p, String::new());
        r.note = None;
        (r.ops_per_s, r.ops_per_s_min, r.ops_per_s_max) = (rate, rate, rate);
        r.peak_rss = Some(rss);
        r
    }

    #[test]
    fn checks_compare_grace_with_the_best_and_the_leanest_peer() {
        let rows = [
            row(MAP_GRACE, 99, 30.0, 150),
            row("dashmap", 99, 10.0, 100),
            row("papaya", 99, 20.0, 200),
            row("dashmap", 50, 10.0, 100),
        ];
        let c = map_checks(&rows, &[]);
        assert_eq!(c.len(), 4);
        assert_eq!((c[0].against.as_str(), c[0].ratio), ("papaya", 1.5));
        assert_eq!(c[0].met(), Some(true));
        assert_eq!((c[1].against.as_str(), c[1].ratio), ("dashmap", 1.5));
        assert_eq!(c[1].met(), Some(true));
        // No grace row at 50%: not measured.
        assert_eq!((c[2].met(), c[2].bound), (None, TARGET_READ_50));
        let mut resize = ResizeResult::failed(
            MAP_GRACE,
            &ResizeParams {
                readers: 1,
                keys: 10,
                duration: Duration::from_millis(1),
            },
            String::new(),
        );
        (resize.p99_during_ns, resize.p99_steady_ns) = (300.0, 100.0);
        let c = map_checks(&[], &[resize]);
        assert_eq!((c[0].ratio, c[0].met()), (3.0, Some(false)));
    }

    #[test]
    fn tiny_runs_measure_every_peer() {
        for name in map_impls() {
            let p = MapParams {
                threads: 2,
                keys: 64,
                read_pct: 90,
                dist: Dist::Zipf,
                duration: Duration::from_millis(2),
            };
            let r = run_map_one(name, &p, false);
            assert!(r.is_measured() && r.impl_name == name, "{r:?}");
            let r = run_resize_one(
                name,
                &ResizeParams {
                    readers: 1,
                    keys: 2_000,
                    duration: Duration::from_millis(2),
                },
                false,
            );
            assert!(r.p99_steady_ns.is_finite(), "{r:?}");
        }
        assert!(!run_map_one(
            "nope",
            &MapParams {
                threads: 1,
                keys: 10,
                read_pct: 50,
                dist: Dist::Uniform,
                duration: Duration::from_millis(1),
            },
            false
        )
        .is_measured());
    }
}
