//! Tests of [`List`] with the hand-driven stand-in flavor of `crate::limbo`, so that they
//! need none of grace's background threads: Miri runs them with its leak check on
//! (`cargo +nightly miri test -p grace --lib collections::list`, under `.ci/miri.sh`'s seeds),
//! and the loom model of `loom_rculist.rs` uses the same stand-in. The threaded tests against
//! the real flavors are in `tests/list.rs`.

#[cfg(loom)]
use super::List;
use crate::limbo::Limbo;

#[cfg(loom)]
mod loom_rculist;

/// Small enough for Miri's many seeds: one thread against a `VecDeque`, and a reader thread
/// racing a writer, with values in boxes (so a freed one is a use-after-free Miri reports).
#[cfg(not(loom))]
mod unit {
    use super::Limbo;
    use crate::collections::List;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A value that counts its drops.
    struct Counted(Box<u64>, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            // Relaxed: read after every thread joined.
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(list: &List<Counted, Limbo>) -> Vec<u64> {
        let g = list.flavor().read_lock();
        list.iter(&g).map(|c| *c.0).collect()
    }

    #[test]
    fn every_operation_matches_a_vecdeque_and_frees_each_value_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let c = |v: u64| Counted(Box::new(v), drops.clone());
        let flavor = Limbo::new(false);
        let list = List::with_flavor(flavor.clone());
        let mut model = VecDeque::new();
        for v in 0..4 {
            list.push_back(c(v));
            model.push_back(v);
        }
        list.push_front(c(10));
        model.push_front(10);
        assert!(list.remove_first(|x| *x.0 == 2));
        model.retain(|&x| x != 2);
        assert!(!list.remove_first(|x| *x.0 == 2));
        assert!(list.replace_first(|x| *x.0 == 3, c(30)).is_ok()); // the tail
        model
            .iter_mut()
            .for_each(|x| *x = if *x == 3 { 30 } else { *x });
        assert!(list.replace_first(|x| *x.0 == 99, c(99)).is_err()); // dropped here
        list.push_back(c(4)); // after the replaced tail
        model.push_back(4);
        list.retain(|x| *x.0 % 2 == 0);
        model.retain(|x| x % 2 == 0);
        assert_eq!(snapshot(&list), Vec::from(model.clone()));
        assert_eq!(list.len(), model.len());
        {
            let g = flavor.read_lock();
            assert_eq!(list.front(&g).map(|x| *x.0), model.front().copied());
        }
        flavor.grace_point();
        // Removed: 2, 3 (replaced), 1 (odd), and the rejected 99.
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        list.clear();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        list.push_back(c(5)); // the tail was reset by `clear`
        assert_eq!(snapshot(&list), [5]);
        flavor.grace_point();
        drop(list);
        flavor.free_all();
        assert_eq!(drops.load(Ordering::Relaxed), 9);
    }

    #[test]
    fn a_reader_walks_through_entries_removed_and_replaced_under_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let flavor = Limbo::new(false);
        let list = Arc::new(List::with_flavor(flavor.clone()));
        for v in 0..3 {
            list.push_back(Counted(Box::new(v), drops.clone()));
        }
        let reader = {
            let list = list.clone();
            std::thread::spawn(move || {
                let g = list.flavor().read_lock();
                let seen: Vec<u64> = list.iter(&g).map(|c| *c.0).collect();
                seen
            })
        };
        assert!(list.remove_first(|c| *c.0 == 1));
        assert!(list
            .replace_first(|c| *c.0 == 2, Counted(Box::new(20), drops.clone()))
            .is_ok());
        flavor.grace_point(); // frees only if the reader is not inside its walk
        let seen = reader.join().unwrap();
        // 0 stays for the whole walk; 1 may or may not be seen; 2 or 20 (never both).
        assert_eq!(seen.first(), Some(&0));
        assert!(seen.contains(&2) != seen.contains(&20), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        drop(list);
        flavor.free_all();
        assert_eq!(drops.load(Ordering::Relaxed), 4);
    }
}
