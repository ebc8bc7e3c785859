//! Tests of the map's internals: small single-threaded and two-thread tests on a hand-driven
//! flavor (no RCU engine threads, so Miri runs them with its leak check on; see
//! `.ci/miri.sh`), and the loom models of `loom_map.rs` (run by `.ci/loom.sh`). The threaded
//! tests against RCU and SRCU are in `grace/tests/map.rs`.

#[cfg(loom)]
mod loom_map;

#[cfg(not(loom))]
mod unit {
    use super::super::HashMap;
    use crate::atomic::Retire;
    use crate::cookie::Cookie;
    use crate::flavor::Flavor;
    use std::collections::hash_map::RandomState;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    type Deferred = Box<dyn FnOnce() + Send>;

    /// A flavor whose "grace period" is [`Manual::flush`], called by the test once no thread
    /// reads the map any more: everything retired is freed then, never before.
    #[derive(Default)]
    struct Manual {
        retired: Mutex<Vec<Deferred>>,
    }

    impl Manual {
        fn flush(&self) {
            let batch = std::mem::take(&mut *self.retired.lock().unwrap());
            for f in batch {
                f();
            }
        }
        fn pending(&self) -> usize {
            self.retired.lock().unwrap().len()
        }
    }

    impl Drop for Manual {
        fn drop(&mut self) {
            self.flush();
        }
    }

    impl Flavor for Manual {
        type Guard<'a> = ();
        type Issuer = crate::Rcu;
        fn read_lock(&self) {}
        fn synchronize(&self) {}
        fn synchronize_expedited(&self) {}
        fn get_state(&self) -> Cookie {
            Cookie::from_seq(0)
        }
        fn start_poll(&self) -> Cookie {
            Cookie::from_seq(0)
        }
        fn poll_state(&self, _cookie: Cookie) -> bool {
            false
        }
        fn cookie_from_raw(&self, raw: u64) -> Cookie {
            Cookie::from_seq(raw)
        }
        fn call<C: FnOnce() + Send + 'static>(&self, f: C) {
            self.retired.lock().unwrap().push(Box::new(f));
        }
        fn call_hurry<C: FnOnce() + Send + 'static>(&self, f: C) {
            self.call(f)
        }
        fn barrier(&self) {}
    }

    /// A retired box on its way to `flush`.
    struct SendPtr<T>(*mut T);
    // SAFETY: it stands for a `Box<T>` with `T: Send`.
    unsafe impl<T: Send> Send for SendPtr<T> {}

    // SAFETY: `retire_raw` frees only in `flush`, which the tests call when no thread reads
    // the map (the stand-in for a grace period); every guard is this flavor's.
    unsafe impl Retire for Manual {
        unsafe fn retire_raw<T: Send + 'static>(&self, ptr: *mut T) {
            let p = SendPtr(ptr);
            self.call(move || {
                let p = p;
                // SAFETY: from Box::into_raw (our contract), freed once, after every reader.
                drop(unsafe { Box::from_raw(p.0) });
            });
        }
        fn owns_guard<'a>(&self, _guard: &()) -> bool
        where
            Self: 'a,
        {
            true
        }
        fn retire_barrier(&self) {
            self.flush();
        }
    }

    /// A value that counts its drops.
    struct Counted(u64, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    type Map<V> = HashMap<u64, V, RandomState, Arc<Manual>>;

    fn map<V>(buckets: usize) -> (Map<V>, Arc<Manual>) {
        let f = Arc::new(Manual::default());
        (
            HashMap::with_buckets(buckets, RandomState::new(), f.clone()),
            f,
        )
    }

    const N: u64 = if cfg!(miri) { 16 } else { 400 };

    #[test]
    fn model_ops_match_std_and_resize_both_ways() {
        let (m, f) = map::<u64>(2);
        let mut model = std::collections::HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..N * 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % N;
            // Grow during the first half, shrink during the second.
            let insert = if step < N * 2 { x % 4 != 0 } else { x % 4 == 0 };
            if insert {
                assert_eq!(m.insert(k, step, &()).copied(), model.insert(k, step));
            } else {
                assert_eq!(m.remove(&k, &()).copied(), model.remove(&k));
            }
            if step % 7 == 0 {
                assert_eq!(
                    m.update(&k, |v| v + 1, &()).copied(),
                    model.get_mut(&k).map(|v| {
                        *v += 1;
                        *v
                    })
                );
            }
            assert_eq!(m.get(&k, &()).copied(), model.get(&k).copied());
            assert_eq!(m.len(), model.len());
            if step == N * 2 {
                assert!(m.buckets(&()) > 2, "the map grew");
            }
        }
        let mut pairs: Vec<_> = m.iter(&()).map(|(k, v)| (*k, *v)).collect();
        pairs.sort_unstable();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort_unstable();
        assert_eq!(pairs, want);
        f.flush();
    }

    #[test]
    fn every_value_is_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let made = N as usize * 3;
        {
            let (m, f) = map::<Counted>(2);
            for i in 0..N {
                m.insert(i, Counted(i, drops.clone()), &());
            }
            for i in 0..N {
                // Replaced: the old value is retired.
                m.insert(i, Counted(i, drops.clone()), &());
            }
            assert_eq!(
                drops.load(Ordering::Relaxed),
                0,
                "nothing freed before the flush"
            );
            f.flush();
            assert_eq!(drops.load(Ordering::Relaxed), N as usize);
            for i in 0..N / 2 {
                assert_eq!(m.remove(&i, &()).map(|c| c.0), Some(i));
            }
            m.clear(&());
            assert!(m.is_empty());
            f.flush();
            assert_eq!(drops.load(Ordering::Relaxed), 2 * N as usize);
            for i in 0..N {
                m.insert(i, Counted(i, drops.clone()), &());
            }
            // The map's drop frees the rest; the flavor's (when `f` goes) what it retired.
        }
        assert_eq!(drops.load(Ordering::Relaxed), made);
    }

    #[test]
    fn get_or_insert_with_keeps_the_first_value() {
        let (m, _f) = map::<u64>(8);
        assert_eq!(*m.get_or_insert_with(1, || 10, &()), 10);
        assert_eq!(*m.get_or_insert_with(1, || 20, &()), 10);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn iteration_in_the_middle_of_a_resize_yields_each_key_once() {
        for migrated in 0..=4 {
            let (m, f) = map::<u64>(4);
            for i in 0..3 {
                m.insert(i, i, &());
            }
            let t = m.root();
            let n = m.try_start_resize(t, 16).unwrap().unwrap();
            m.help(t, n, migrated);
            // A key inserted in a migrated bucket goes to the new table.
            for i in 3..12 {
                m.insert(i, i, &());
            }
            let mut keys: Vec<u64> = m.iter(&()).map(|(k, _)| *k).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                (0..12).collect::<Vec<_>>(),
                "{migrated} buckets migrated"
            );
            for i in 0..12 {
                assert_eq!(m.get(&i, &()), Some(&i));
            }
            f.flush();
        }
    }

    #[test]
    fn a_failed_table_allocation_skips_the_resize() {
        let (m, f) = map::<u64>(2);
        {
            let _fail = crate::alloc::inject(crate::alloc::FailurePlan::AllAfter(0));
            for i in 0..N {
                let e = m.try_insert(i, i, &()).unwrap_err();
                assert!(e.to_string().contains("a hash map entry"), "{e}");
            }
            assert!(m.is_empty());
            for i in 0..N {
                m.insert(i, i, &());
            }
            assert_eq!(m.buckets(&()), 2, "every resize failed to allocate");
            assert!(m.rehash(64, &()).is_err());
        }
        for i in 0..N {
            assert_eq!(m.get(&i, &()), Some(&i));
        }
        m.insert(N, N, &()); // allocations work again: the next write resizes
        assert!(m.buckets(&()) > 2);
        f.flush();
    }

    #[test]
    fn two_threads_write_while_a_third_resizes_and_reads() {
        let (m, f) = map::<u64>(2);
        let m = &m;
        std::thread::scope(|s| {
            for t in 0..2u64 {
                s.spawn(move || {
                    for i in 0..N / 2 {
                        let k = t * 1000 + i;
                        m.insert(k, k, &());
                        assert_eq!(m.get(&k, &()), Some(&k));
                        if i % 3 == 0 {
                            assert_eq!(m.remove(&k, &()), Some(&k));
                        }
                    }
                });
            }
            for b in [64, 4, 32] {
                m.rehash(b, &()).unwrap();
                for (k, v) in m.iter(&()) {
                    assert_eq!(k, v);
                }
            }
        });
        for t in 0..2u64 {
            for i in 0..N / 2 {
                let k = t * 1000 + i;
                assert_eq!(m.get(&k, &()).copied(), (i % 3 != 0).then_some(k));
            }
        }
        assert_eq!(m.iter(&()).count(), m.len());
        f.flush();
        assert_eq!(f.pending(), 0);
    }
}
