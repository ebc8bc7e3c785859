//! `kvfree` and `kvfree_barrier` with real threads: no early free, every destructor exactly
//! once, zero-sized and no-drop types, the allocation-free first call after idle, every
//! fallback under allocation-failure injection, idle and exiting threads, and accounting.
//!
//! Every test holds `SERIAL`: several of them read process-wide counters or inject allocation
//! failures into every thread, so they must not overlap.

mod common;

use common::HeldReader;
use grace::alloc::{inject, inject_globally, FailurePlan};
use grace::kvfree::{self as kv, kvfree_raw, testing, ARRAY_CAPACITY};
use grace::{kvfree, kvfree_barrier, rcu};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counts the allocations and deallocations of each thread, so a test can prove a call
/// allocated nothing, or see which thread freed what.
struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static DEALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn allocs_here() -> u64 {
    ALLOCS.with(Cell::get)
}

fn deallocs_here() -> u64 {
    DEALLOCS.with(Cell::get)
}

// SAFETY: every method forwards to the system allocator with the caller's arguments; the
// thread-local counter is a const-initialized Cell without a destructor, so touching it never
// allocates or recurses.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's (valid) layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above; `ptr` was allocated by us with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = DEALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

/// Take the test lock, and start from a quiet state: everything earlier tests freed is freed.
fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    kvfree_barrier();
    g
}

/// The lazy delay the library runs with (`GRACE_LAZY_MS`, 10 ms by default).
fn lazy() -> Duration {
    grace::config::Config::from_env()
        .unwrap_or_default()
        .lazy_delay
}

/// Poll `cond` every millisecond for up to `limit`; returns how long it took, or `None`.
fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond().then(|| start.elapsed())
}

/// An object that records its destruction in a per-object slot: each slot must end at 1.
struct Tracked {
    id: usize,
    alive: AtomicBool,
    payload: [u64; 4],
    drops: Arc<Vec<AtomicU8>>,
}

const PAYLOAD: u64 = 0x5eed_5eed_5eed_5eed;

impl Tracked {
    fn new(id: usize, drops: &Arc<Vec<AtomicU8>>) -> Box<Tracked> {
        Box::new(Tracked {
            id,
            alive: AtomicBool::new(true),
            payload: [PAYLOAD; 4],
            drops: drops.clone(),
        })
    }

    /// What a reader checks: not yet destroyed, payload intact.
    fn check(&self) {
        assert!(
            self.alive.load(Ordering::Relaxed),
            "a reader saw object {} after its destructor ran",
            self.id
        );
        assert_eq!(self.payload, [PAYLOAD; 4], "a reader saw a poisoned object");
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(
            self.alive.swap(false, Ordering::Relaxed),
            "destructor ran twice"
        );
        self.payload = [0xdead; 4];
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

fn counters(n: usize) -> Arc<Vec<AtomicU8>> {
    Arc::new((0..n).map(|_| AtomicU8::new(0)).collect())
}

fn assert_each_dropped_once(drops: &[AtomicU8]) {
    for (i, d) in drops.iter().enumerate() {
        assert_eq!(
            d.load(Ordering::Relaxed),
            1,
            "object {i}: destructor ran {d:?} times"
        );
    }
}

/// A destructor that only sets a flag.
struct Flag(Arc<AtomicBool>);
impl Drop for Flag {
    fn drop(&mut self) {
        assert!(!self.0.swap(true, Ordering::SeqCst), "destructor ran twice");
    }
}

fn flag() -> (Arc<AtomicBool>, Box<Flag>) {
    let f = Arc::new(AtomicBool::new(false));
    (f.clone(), Box::new(Flag(f)))
}

#[test]
fn readers_never_see_a_freed_object() {
    let _s = serial();
    let n = 40_000;
    let drops = counters(n + 1);
    let current = Arc::new(AtomicPtr::new(Box::into_raw(Tracked::new(n, &drops))));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (current, stop) = (current.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu::read_lock();
                    // Acquire: pairs with the AcqRel swap of the updater.
                    let p = current.load(Ordering::Acquire);
                    // SAFETY: published objects are freed only through kvfree, after a grace
                    // period that this section (begun before the unpublishing) holds back.
                    let obj = unsafe { &*p };
                    for _ in 0..4 {
                        obj.check();
                        std::hint::spin_loop();
                    }
                    drop(g);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for id in 0..n {
        let old = current.swap(Box::into_raw(Tracked::new(id, &drops)), Ordering::AcqRel);
        // SAFETY: `old` came from Box::into_raw and is unpublished now; we never touch it again.
        unsafe { kvfree_raw(old) };
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    // SAFETY: no reader is left.
    kvfree(unsafe { Box::from_raw(current.load(Ordering::Relaxed)) });
    kvfree_barrier();
    assert_each_dropped_once(&drops);
}

/// Five types (one more than a thread's lanes, so lanes are evicted), four threads, some of
/// which exit before the barrier and some of which stay idle.
#[test]
fn every_destructor_runs_exactly_once_across_threads_and_types() {
    let _s = serial();
    let per = 6_000;
    let drops = counters(4 * per);
    let (park_tx, park_rx) = mpsc::channel::<()>();
    let park_rx = Arc::new(Mutex::new(park_rx));
    let (done_tx, done_rx) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (drops, park_rx, done_tx) = (drops.clone(), park_rx.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for i in 0..per {
                    let id = t * per + i;
                    let obj = Tracked::new(id, &drops);
                    match (i / 7 + t) % 5 {
                        0 => kvfree(obj),
                        1 => kvfree(Box::new((obj, 1u8))),
                        2 => kvfree(Box::new([obj])),
                        3 => kvfree(Box::new(Some(obj))),
                        _ => kvfree(Box::new((0u16, obj, [0u8; 100]))),
                    }
                }
                done_tx.send(()).unwrap();
                if t % 2 == 0 {
                    // Stay alive and idle until the barrier has run.
                    let _ = park_rx.lock().unwrap().recv();
                }
            })
        })
        .collect();
    for _ in 0..4 {
        done_rx.recv().unwrap();
    }
    kvfree_barrier();
    assert_each_dropped_once(&drops);
    drop(park_tx);
    for t in threads {
        t.join().unwrap();
    }
    let s = kv::stats();
    assert_eq!(s.objects_pending, 0, "{s:?}");
    assert_eq!(s.objects_queued, s.objects_freed);
}

#[test]
fn zero_sized_and_no_drop_types() {
    let _s = serial();
    static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            ZST_DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    struct Empty;
    let before = kv::stats();
    for i in 0..3 * ARRAY_CAPACITY {
        kvfree(Box::new(Zst));
        kvfree(Box::new(Empty));
        kvfree(Box::new(()));
        kvfree(Box::new([i as u8; 64]));
        kvfree(Box::new(i as u64));
    }
    kvfree_barrier();
    assert_eq!(ZST_DROPS.load(Ordering::Relaxed), 3 * ARRAY_CAPACITY);
    let after = kv::stats();
    // Zero-sized types without drop glue are not counted; the other three types are.
    assert_eq!(
        after.objects_freed - before.objects_freed,
        3 * 3 * ARRAY_CAPACITY as u64
    );
    assert_eq!(after.objects_pending, 0);
}

#[test]
fn a_zero_sized_destructor_waits_for_readers() {
    let _s = serial();
    static RAN: AtomicBool = AtomicBool::new(false);
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            RAN.store(true, Ordering::SeqCst);
        }
    }
    let reader = HeldReader::enter(false);
    kvfree(Box::new(Zst));
    reader.leave_after(Duration::from_millis(60));
    let t = std::thread::spawn(kvfree_barrier);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        !RAN.load(Ordering::SeqCst),
        "ran while a pre-existing reader was inside"
    );
    t.join().unwrap();
    assert!(reader.has_left());
    assert!(RAN.load(Ordering::SeqCst));
    reader.leave();
}

/// The kernel's reason for the preallocated page cache of `kvfree_rcu`: the first kvfree after a
/// quiet period must not depend on allocation. A thread fills its array to the brim, goes idle
/// (the background sweep takes its objects), and then frees one more object with every
/// fallible allocation failing: the new array comes from the shard cache, no fallback is taken,
/// and the thread does not allocate at all.
#[test]
fn first_kvfree_after_idle_takes_the_cache_and_does_not_allocate() {
    let _s = serial();
    let drops = counters(ARRAY_CAPACITY + 1);
    let d = drops.clone();
    let (before, after, allocs) = std::thread::spawn(move || {
        for id in 0..ARRAY_CAPACITY {
            kvfree(Tracked::new(id, &d));
        }
        // Idle until the background sweep has taken everything published: the array is full
        // but still this thread's, so only a sweep can have freed its objects.
        let swept = within(Duration::from_secs(5), || {
            d[..ARRAY_CAPACITY]
                .iter()
                .all(|c| c.load(Ordering::Relaxed) == 1)
        });
        assert!(swept.is_some(), "no idle sweep came");
        let obj = Tracked::new(ARRAY_CAPACITY, &d); // allocated before we start counting
        let before = kv::stats();
        let allocs = allocs_here();
        {
            let _nothing = inject(FailurePlan::AllAfter(0));
            kvfree(obj);
        }
        let allocs = allocs_here() - allocs;
        (before, kv::stats(), allocs)
    })
    .join()
    .unwrap();
    assert_eq!(allocs, 0, "the first kvfree after idle allocated");
    assert_eq!(after.arrays_from_cache, before.arrays_from_cache + 1);
    assert_eq!(after.arrays_allocated, before.arrays_allocated);
    for (name, b, a) in [
        ("reserve", before.fallback_reserve, after.fallback_reserve),
        ("node", before.fallback_node, after.fallback_node),
        ("sync_gp", before.fallback_sync_gp, after.fallback_sync_gp),
        ("retry", before.fallback_retry, after.fallback_retry),
        (
            "callback",
            before.fallback_callback,
            after.fallback_callback,
        ),
    ] {
        assert_eq!(a, b, "fallback {name} taken");
    }
    kvfree_barrier();
    assert_each_dropped_once(&drops);
}

/// Run `f` on a fresh thread that has already registered (one kvfree of another type), so
/// that `f`'s first kvfree of a new type needs a new block from the ladder.
fn on_registered_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        kvfree(Box::new(1u32));
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn reserve_is_used_when_allocation_fails_and_is_refilled() {
    let _s = serial();
    let before = kv::stats();
    let (freed, obj) = flag();
    on_registered_thread(move || {
        let _no_cache = testing::avoid(true, false);
        let _fail = inject(FailurePlan::Nth(1)); // the array allocation
        kvfree(obj);
    });
    let after = kv::stats();
    assert_eq!(after.fallback_reserve, before.fallback_reserve + 1);
    assert_eq!(after.fallback_node, before.fallback_node);
    assert!(!freed.load(Ordering::SeqCst) || after.objects_freed > before.objects_freed);
    kvfree_barrier();
    assert!(freed.load(Ordering::SeqCst));
    // The background thread tops the reserve up again (or a freed batch gives it an array).
    let full = before.reserve_arrays.max(1);
    assert!(
        within(Duration::from_secs(5), || kv::stats().reserve_arrays
            >= full)
        .is_some(),
        "the reserve was not refilled"
    );
}

#[test]
fn node_is_used_when_no_array_can_be_had() {
    let _s = serial();
    let before = kv::stats();
    let flags: Vec<_> = (0..12).map(|_| flag()).collect();
    let seen: Vec<_> = flags.iter().map(|(f, _)| f.clone()).collect();
    let objs: Vec<_> = flags.into_iter().map(|(_, o)| o).collect();
    on_registered_thread(move || {
        let _no_cache = testing::avoid(true, true);
        // The array allocation fails, the node's succeeds; the node (8 slots) then takes the
        // next objects on the fast path, and the 9th needs a new block again.
        let _fail = inject(FailurePlan::Nth(1));
        for o in objs {
            kvfree(o);
        }
    });
    let after = kv::stats();
    assert_eq!(after.fallback_node, before.fallback_node + 1);
    assert_eq!(after.fallback_reserve, before.fallback_reserve);
    assert_eq!(after.fallback_sync_gp, before.fallback_sync_gp);
    kvfree_barrier();
    assert!(seen.iter().all(|f| f.load(Ordering::SeqCst)));
}

#[test]
fn synchronous_grace_period_outside_a_section_waits_for_readers() {
    let _s = serial();
    let before = kv::stats();
    let reader = HeldReader::enter(false);
    reader.leave_after(Duration::from_millis(50));
    let (freed, obj) = flag();
    let reader_left_first = on_registered_thread(move || {
        let _nothing = testing::avoid(true, true);
        let _fail = inject(FailurePlan::AllAfter(0));
        kvfree(obj);
        // The object is freed when kvfree returns, and only after the reader left.
        freed.load(Ordering::SeqCst)
    });
    assert!(
        reader.has_left(),
        "freed synchronously while a reader was inside"
    );
    assert!(
        reader_left_first,
        "the synchronous fallback returned before freeing"
    );
    reader.leave();
    let after = kv::stats();
    assert_eq!(after.fallback_sync_gp, before.fallback_sync_gp + 1);
    assert_eq!(after.fallback_callback, before.fallback_callback);
}

#[test]
fn inside_a_section_nothing_blocks_and_nothing_is_freed_early() {
    let _s = serial();
    let before = kv::stats();
    let (freed, obj) = flag();
    let f = freed.clone();
    let took = on_registered_thread(move || {
        let g = rcu::read_lock();
        let start = Instant::now();
        {
            let _nothing = testing::avoid(true, true);
            let _fail = inject(FailurePlan::AllAfter(0));
            kvfree(obj); // must not wait for a grace period: we are inside a section
        }
        let took = start.elapsed();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !f.load(Ordering::SeqCst),
            "freed while its kvfree caller was still reading"
        );
        drop(g);
        took
    });
    assert!(
        took < Duration::from_secs(1),
        "kvfree inside a section took {took:?}"
    );
    let after = kv::stats();
    assert_eq!(after.fallback_retry, before.fallback_retry + 1);
    assert_eq!(after.fallback_callback, before.fallback_callback + 1);
    assert_eq!(after.fallback_sync_gp, before.fallback_sync_gp);
    kvfree_barrier();
    assert!(freed.load(Ordering::SeqCst));
}

/// Allocation failures everywhere (one in two fallible allocations, on every thread,
/// background refills and sweeps included), writers that bypass the block cache (so every
/// array is allocated, and every rung of the ladder is reached), readers checking every object
/// they reach: nothing is freed early and every destructor runs once.
#[test]
fn failure_injection_everywhere_loses_nothing_and_frees_nothing_early() {
    let _s = serial();
    let n_per = 3_000;
    let threads_n = 3;
    let drops = counters(threads_n * n_per + threads_n);
    let slots: Arc<Vec<AtomicPtr<Tracked>>> = Arc::new(
        (0..threads_n)
            .map(|t| AtomicPtr::new(Box::into_raw(Tracked::new(threads_n * n_per + t, &drops))))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (slots, stop) = (slots.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let g = rcu::read_lock();
                for s in slots.iter() {
                    // Acquire: pairs with the writers' AcqRel swap.
                    // SAFETY: as in readers_never_see_a_freed_object.
                    unsafe { &*s.load(Ordering::Acquire) }.check();
                }
                drop(g);
            }
        })
    };
    let before = kv::stats();
    inject_globally(2);
    let writers: Vec<_> = (0..threads_n)
        .map(|t| {
            let (slots, drops) = (slots.clone(), drops.clone());
            std::thread::spawn(move || {
                let _no_cache = testing::avoid(true, false);
                for i in 0..n_per {
                    let new = Box::into_raw(Tracked::new(t * n_per + i, &drops));
                    let old = slots[t].swap(new, Ordering::AcqRel);
                    // Every few objects, from inside a read-side section, as callers may.
                    if i % 5 == 0 {
                        let _g = rcu::read_lock();
                        // SAFETY: unpublished just above; we never touch it again.
                        unsafe { kvfree_raw(old) };
                    } else {
                        // SAFETY: as above.
                        unsafe { kvfree_raw(old) };
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    inject_globally(0);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    for s in slots.iter() {
        // SAFETY: no reader is left; each final object is still published only here.
        kvfree(unsafe { Box::from_raw(s.load(Ordering::Relaxed)) });
    }
    kvfree_barrier();
    assert_each_dropped_once(&drops);
    let after = kv::stats();
    assert_eq!(after.objects_pending, 0, "{after:?}");
    let (reserve, node, sync) = (
        after.fallback_reserve - before.fallback_reserve,
        after.fallback_node - before.fallback_node,
        after.fallback_sync_gp - before.fallback_sync_gp,
    );
    // Which rungs are reached depends on how the failures interleave; each rung has its own
    // deterministic test above. Here it is enough that the ladder was exercised under load.
    assert!(
        reserve + node + sync > 0,
        "injection did not reach the fallbacks: {after:?}"
    );
}

#[test]
fn an_idle_threads_objects_are_freed_within_the_lazy_bound() {
    let _s = serial();
    let drops = counters(3);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let d = drops.clone();
    let t = std::thread::spawn(move || {
        for id in 0..3 {
            kvfree(Tracked::new(id, &d));
        }
        done_tx.send(()).unwrap();
        let _ = go_rx.recv(); // alive, and idle, until the check is over
    });
    done_rx.recv().unwrap();
    let all = || drops.iter().all(|d| d.load(Ordering::Relaxed) == 1);
    let took = within(Duration::from_secs(2), all);
    drop(go_tx);
    t.join().unwrap();
    let took = took.expect("an idle thread's objects were stranded");
    // The bound: the lazy delay until the sweep, a grace period, the worker's free. Generous
    // for a loaded 2-core CI machine.
    assert!(
        took < lazy() * 20 + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_each_dropped_once(&drops);
}

#[test]
fn an_exiting_threads_objects_are_freed_without_a_barrier() {
    let _s = serial();
    let drops = counters(5);
    let d = drops.clone();
    std::thread::spawn(move || {
        for id in 0..5 {
            kvfree(Tracked::new(id, &d));
        }
    })
    .join()
    .unwrap();
    let took = within(Duration::from_secs(2), || {
        drops.iter().all(|d| d.load(Ordering::Relaxed) == 1)
    });
    assert!(took.is_some(), "an exiting thread's objects were stranded");
    assert_each_dropped_once(&drops);
}

#[test]
fn kvfree_from_a_thread_local_destructor_after_the_exit_hook() {
    let _s = serial();
    struct Late(Option<Box<Flag>>);
    impl Drop for Late {
        fn drop(&mut self) {
            if let Some(obj) = self.0.take() {
                kvfree(obj);
            }
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Late> = const { std::cell::RefCell::new(Late(None)) };
    }
    let (freed, obj) = flag();
    std::thread::spawn(move || {
        // Registered before kvfree's own exit hook, so destroyed after it (reverse order).
        LATE.with(|l| l.borrow_mut().0 = Some(obj));
        kvfree(Box::new(5u64));
    })
    .join()
    .unwrap();
    kvfree_barrier();
    assert!(freed.load(Ordering::SeqCst));
}

#[test]
fn kvfrees_from_late_thread_local_destructors_are_batched() {
    let _s = serial();
    const N: usize = 1000;
    #[allow(clippy::vec_box)] // the pool holds the boxes kvfree takes
    struct Pool(Vec<Box<Tracked>>);
    impl Drop for Pool {
        fn drop(&mut self) {
            for obj in self.0.drain(..) {
                kvfree(obj);
            }
        }
    }
    thread_local! {
        static POOL: std::cell::RefCell<Pool> = const { std::cell::RefCell::new(Pool(Vec::new())) };
    }
    let drops = counters(N);
    let objs: Vec<_> = (0..N).map(|id| Tracked::new(id, &drops)).collect();
    kvfree_barrier();
    let before = kv::stats().batches;
    std::thread::spawn(move || {
        // Registered before kvfree's own exit hook, so drained after it (reverse order).
        POOL.with(|p| p.borrow_mut().0 = objs);
        kvfree(Box::new(5u64));
    })
    .join()
    .unwrap();
    kvfree_barrier();
    assert_each_dropped_once(&drops);
    let batches = kv::stats().batches - before;
    // One array per ARRAY_CAPACITY objects, plus the thread's own lane and slack for sweeps;
    // not one array and one callback per object.
    let most = (N / ARRAY_CAPACITY + 1) as u64 + 4;
    assert!(
        batches <= most,
        "{batches} batches for {N} objects kvfreed at thread exit"
    );
}

#[test]
fn barrier_waits_for_objects_held_back_by_a_reader() {
    let _s = serial();
    let drops = counters(2 * ARRAY_CAPACITY);
    let reader = HeldReader::enter(true);
    for id in 0..2 * ARRAY_CAPACITY {
        kvfree(Tracked::new(id, &drops));
    }
    let s = kv::stats();
    // Objects of at least 56 bytes each, plus at least one array, are stranded by the reader.
    let obj = std::mem::size_of::<Tracked>() as u64;
    assert!(s.bytes_pending >= 2 * ARRAY_CAPACITY as u64 * obj, "{s:?}");
    assert!(
        s.peak_bytes_pending >= ARRAY_CAPACITY as u64 * obj + 4096,
        "{s:?}"
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        drops
            .iter()
            .map(|d| d.load(Ordering::Relaxed) as usize)
            .sum::<usize>(),
        0,
        "freed while a pre-existing reader was inside"
    );
    reader.leave_after(Duration::from_millis(20));
    kvfree_barrier();
    assert!(reader.has_left());
    assert_each_dropped_once(&drops);
    let s = kv::stats();
    assert_eq!((s.objects_pending, s.bytes_pending), (0, 0), "{s:?}");
    reader.leave();
}

#[test]
fn a_panicking_destructor_is_contained_and_its_batch_still_freed() {
    let _s = serial();
    struct Bomb {
        _flag: Box<Flag>,
        explode: bool,
    }
    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.explode {
                panic!("a kvfree destructor panicked (expected by this test)");
            }
        }
    }
    let before = rcu::stats().callback_panics;
    let flags: Vec<_> = (0..50).map(|_| Arc::new(AtomicBool::new(false))).collect();
    for (i, f) in flags.iter().enumerate() {
        kvfree(Box::new(Bomb {
            _flag: Box::new(Flag(f.clone())),
            explode: i % 20 == 3,
        }));
    }
    kvfree_barrier();
    // A panicking destructor's fields are still dropped while it unwinds, so every flag is set.
    for f in &flags {
        assert!(
            f.load(Ordering::SeqCst),
            "an object of a panicking batch was not freed"
        );
    }
    assert!(rcu::stats().callback_panics > before);
    assert_eq!(kv::stats().objects_pending, 0);
}

/// Objects without drop glue are freed by the thread that kvfreed them, inside its later
/// kvfree calls, once their grace period is over (memory back where it was allocated).
#[test]
fn objects_without_drop_glue_are_freed_by_their_own_thread() {
    let _s = serial();
    let arrays = 64;
    let n = arrays * ARRAY_CAPACITY;
    let freed_here = std::thread::spawn(move || {
        let boxes: Vec<Box<[u64; 8]>> = (0..n).map(|i| Box::new([i as u64; 8])).collect();
        let before = deallocs_here();
        for (i, b) in boxes.into_iter().enumerate() {
            kvfree(b);
            if i % (4 * ARRAY_CAPACITY) == 0 {
                // Let grace periods end, so that later hand-offs find expired arrays.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // The Vec's own buffer is freed by the loop's end too: count objects only roughly.
        deallocs_here() - before
    })
    .join()
    .unwrap();
    assert!(
        freed_here as usize >= n / 2,
        "only {freed_here} of {n} objects were freed by their own thread"
    );
    kvfree_barrier();
    assert_eq!(kv::stats().objects_pending, 0);
}

/// An idle thread's retired arrays (no drop glue) and partly filled lane are freed without
/// any further call, within about two lazy delays plus a grace period.
#[test]
fn an_idle_threads_retired_arrays_are_freed_within_the_lazy_bound() {
    let _s = serial();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        for i in 0..3 * ARRAY_CAPACITY + 5 {
            kvfree(Box::new([i as u8; 48]));
        }
        done_tx.send(()).unwrap();
        let _ = go_rx.recv(); // alive, and idle, until the check is over
    });
    done_rx.recv().unwrap();
    let took = within(Duration::from_secs(3), || kv::stats().objects_pending == 0);
    drop(go_tx);
    t.join().unwrap();
    let took = took.expect("an idle thread's retired arrays were stranded");
    assert!(
        took < lazy() * 40 + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(kv::stats().bytes_pending, 0);
}

/// A thread that floods while grace periods cannot end (a reader holds them back) waits for
/// one itself once too much is waiting, instead of growing without bound; inside a read-side
/// section of its own it never waits.
#[test]
fn backpressure_waits_for_a_late_grace_period_but_never_inside_a_section() {
    let _s = serial();
    let n = 80 * ARRAY_CAPACITY;
    // Inside its own section: a grace period cannot end, and kvfree must not wait for one.
    let before = kv::stats().backpressure_waits;
    std::thread::spawn(move || {
        let g = rcu::read_lock();
        for i in 0..n {
            kvfree(Box::new([i as u8; 32]));
        }
        drop(g);
    })
    .join()
    .unwrap();
    assert_eq!(kv::stats().backpressure_waits, before);
    kvfree_barrier();
    // Outside: the flooding thread waits until the reader leaves.
    let reader = HeldReader::enter(false);
    reader.leave_after(Duration::from_millis(100));
    std::thread::spawn(move || {
        for i in 0..n {
            kvfree(Box::new([i as u8; 32]));
        }
    })
    .join()
    .unwrap();
    assert!(
        reader.has_left(),
        "the flood finished while grace periods were held back: no backpressure"
    );
    assert!(kv::stats().backpressure_waits > before);
    reader.leave();
    kvfree_barrier();
    assert_eq!(kv::stats().objects_pending, 0);
}

#[test]
#[should_panic(expected = "kvfree_barrier() called inside an RCU read-side critical section")]
fn barrier_inside_a_section_panics() {
    let _s = serial();
    let _g = rcu::read_lock();
    kvfree_barrier();
}
