//! [`List`] model-checked with retirement: a writer adds, removes and replaces entries and
//! passes grace points while a reader walks the list; every entry the reader reaches is
//! allocated and fully written, the walk sees the entries that stay in the list throughout,
//! none twice, and every value is dropped exactly once. A second model covers `push_front`,
//! `retain` and `clear` against a reader.
//!
//! Values hold loom `UnsafeCell`s that their destructor overwrites: a reader that reads a value
//! without happening-before its free (or before its initialization) is a causality violation
//! for loom. A negative model (a grace point that ignores the reader counter) proves the model
//! sees an early free.

use super::{Limbo, List};
use crate::sync::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

const VALUES: usize = 5;

type Val = crate::limbo::Val<VALUES>;

/// List [0, 1, 2]. The writer removes 1, passes a grace point, replaces 2 with 3, pushes 4 at
/// the back, and passes another; the reader walks once, reading every value.
fn writer_vs_reader(broken: bool) {
    let drops: Arc<[AtomicUsize; VALUES]> = Arc::new(Default::default());
    let flavor = Limbo::new(broken);
    let list = Arc::new(List::with_flavor(flavor.clone()));
    for id in 0..3 {
        list.push_back(Val::new(id, &drops));
    }
    let writer = {
        let (list, flavor, drops) = (list.clone(), flavor.clone(), drops.clone());
        thread::spawn(move || {
            assert!(list.remove_first(|v| v.id == 1));
            flavor.grace_point();
            assert!(list
                .replace_first(|v| v.id == 2, Val::new(3, &drops))
                .is_ok());
            list.push_back(Val::new(4, &drops));
            flavor.grace_point();
        })
    };
    let seen: Vec<u64> = {
        let g = flavor.read_lock();
        list.iter(&g).map(Val::read).collect()
    };
    writer.join().unwrap();

    // 0 is in the list throughout; 1 maybe; exactly one of 2 and 3; 4 only after 3.
    assert_eq!(seen.first(), Some(&0), "{seen:?}");
    assert!(seen.contains(&2) != seen.contains(&3), "{seen:?}");
    assert!(!seen.contains(&4) || seen.contains(&3), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "seen twice or out of order: {seen:?}"
    );
    {
        let g = flavor.read_lock();
        let now: Vec<u64> = list.iter(&g).map(Val::read).collect();
        assert_eq!(now, [0, 3, 4]);
    }
    assert_eq!(list.len(), 3);
    drop(list);
    flavor.free_all();
    for (id, d) in drops.iter().enumerate() {
        // Relaxed: every thread has joined.
        assert_eq!(d.load(Ordering::Relaxed), 1, "value {id} dropped once");
    }
}

#[test]
fn loom_rculist_writer_vs_reader() {
    loom::model(|| writer_vs_reader(false));
}

/// List [1, 2, 3]. The writer pushes 0 at the front, retains all but 2, passes a grace
/// point, clears the list and passes another; the reader walks once. Every entry it reaches is
/// alive, in list order, once; afterwards the list is empty and every value dropped once.
#[test]
fn loom_rculist_push_front_retain_clear_vs_reader() {
    loom::model(|| {
        let drops: Arc<[AtomicUsize; VALUES]> = Arc::new(Default::default());
        let flavor = Limbo::new(false);
        let list = Arc::new(List::with_flavor(flavor.clone()));
        for id in 1..4 {
            list.push_back(Val::new(id, &drops));
        }
        let writer = {
            let (list, flavor, drops) = (list.clone(), flavor.clone(), drops.clone());
            thread::spawn(move || {
                list.push_front(Val::new(0, &drops));
                list.retain(|v| v.id != 2);
                flavor.grace_point();
                list.clear();
                flavor.grace_point();
            })
        };
        let seen: Vec<u64> = {
            let g = flavor.read_lock();
            list.iter(&g).map(Val::read).collect()
        };
        writer.join().unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        drop(list);
        flavor.free_all();
        for (id, d) in drops.iter().enumerate().take(4) {
            // Relaxed: every thread has joined.
            assert_eq!(d.load(Ordering::Relaxed), 1, "value {id} dropped once");
        }
    });
}

/// The negative model: a grace point that frees without waiting for readers must be caught.
#[test]
fn loom_rculist_early_free_is_detected() {
    // Loom reports a failing execution by panicking out of `model` (its model threads run on
    // the calling thread).
    let r = std::panic::catch_unwind(|| loom::model(|| writer_vs_reader(true)));
    let payload = r.expect_err("the model must catch a free while a reader can see the entry");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("Causality violation") || msg.contains("freed"),
        "unexpected failure: {msg}"
    );
}
