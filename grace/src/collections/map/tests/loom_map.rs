//! The map's code (the same that runs natively), model-checked by loom on tiny tables:
//!
//! 1. a bucket's insert and remove against a lock-free reader, with retirement: a reader that
//!    finds a node sees its value initialized, and nothing is freed while it can be reached;
//! 2. the migration of a 2-bucket table to 4 buckets (tail moves, the migrated mark, the root
//!    swing and the old table's retirement) against a reader of a stable key and a writer
//!    removing another key of the same bucket: the stable key is never missed;
//! 3. the reverse, 4 buckets shrinking to 2 (two old chains merging into one) against a
//!    reader and a writer inserting into the merged bucket.
//!
//! Each has a negative model that loom must catch: an insert that publishes its node with a
//! `Relaxed` store (the reader's read of the value is then a causality violation), and a
//! migration that ends the old chain before linking the node into the new table (the
//! reader then misses a key that was present throughout; for models 2 and 3). A third
//! negative model restarts a walk that ends at another bucket's marker, as `rhashtable`
//! does, and loom reports the reader spinning while the migrator is preempted: the reason
//! the map's walks go on to the next table instead (module docs).
//!
//! The flavor is `crate::limbo`'s stand-in driven by hand: a guard counts itself in a reader
//! counter; `retire` puts the box in a limbo list; `grace_point`, called outside any section,
//! frees the limbo list only if, after a `SeqCst` fence, it reads the counter at zero. Values
//! hold loom `UnsafeCell`s that their destructor overwrites, so a
//! read of a freed (or not yet visible) value is a causality violation for loom.

use super::super::{Fault, HashMap};
use crate::limbo::Limbo;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use std::hash::{BuildHasher, Hasher};

const POISON: u64 = u64::MAX;

/// A value that poisons itself when dropped.
struct Val(UnsafeCell<u64>);

impl Val {
    fn new(v: u64) -> Val {
        // Written after creation: loom tracks this write, so a reader that reads the value
        // without happening-after it (an unordered publication) is a causality violation.
        let val = Val(UnsafeCell::new(POISON));
        // SAFETY: a fresh cell, not shared yet.
        val.0.with_mut(|p| unsafe { *p = v });
        val
    }
    fn read(&self) -> u64 {
        // SAFETY: loom's cell checks the access against every write to it itself.
        let v = self.0.with(|p| unsafe { *p });
        assert_ne!(v, POISON, "read a freed value");
        v
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // loom is unwinding a failed execution: touching its objects would abort
        }
        // SAFETY: as in `read`; this write is what a reader racing with the free collides with.
        self.0.with_mut(|p| unsafe { *p = POISON });
    }
}

// SAFETY: the cell is loom's, which checks every access for races itself; that check is what
// the model is for.
unsafe impl Sync for Val {}

/// The identity hash: key `k` goes to bucket `k & mask`, so a model places its keys.
#[derive(Clone, Copy, Default)]
struct Identity;

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

type Map = HashMap<u64, Val, Identity, Limbo>;

/// Limbo 1. Bucket 0 of 8 holds key 0. A writer inserts key 8 (same bucket) and removes key
/// 0, then passes a grace point; the reader looks up 8 and 0 and reads what it finds.
fn insert_remove_vs_reader(fault: Fault) {
    let model = Limbo::new(false);
    let map = Arc::new(Map::with_fault(8, Identity, model.clone(), fault));
    {
        let g = model.read_lock();
        map.insert(0, Val::new(100), &g);
    }
    let writer = {
        let (map, model) = (map.clone(), model.clone());
        thread::spawn(move || {
            {
                let g = model.read_lock();
                assert!(map.insert(8, Val::new(108), &g).is_none());
                assert_eq!(map.remove(&0, &g).map(Val::read), Some(100));
            }
            model.grace_point();
        })
    };
    {
        let g = model.read_lock();
        if let Some(v) = map.get(&8, &g) {
            assert_eq!(v.read(), 108);
        }
        if let Some(v) = map.get(&0, &g) {
            assert_eq!(v.read(), 100);
        }
    }
    writer.join().unwrap();
    let g = model.read_lock();
    assert_eq!(map.get(&8, &g).map(Val::read), Some(108));
    assert!(map.get(&0, &g).is_none());
    assert_eq!(map.len(), 1);
    drop(g);
    drop(map);
    model.free_all();
}

#[test]
fn loom_map_bucket_insert_remove_vs_reader() {
    loom::model(|| insert_remove_vs_reader(Fault::None));
}

/// Limbo 2. Two buckets: keys 1 and 3 in bucket 1 (which splits into buckets 1 and 3 of the
/// new table), key 0 in bucket 0. A migrator resizes to 4 buckets; a writer removes key 3; the
/// reader looks up key 1, present throughout, and must find it.
fn migration_vs_reader_and_writer(fault: Fault) {
    let model = Limbo::new(false);
    let map = Arc::new(Map::with_fault(2, Identity, model.clone(), fault));
    {
        let g = model.read_lock();
        map.insert(0, Val::new(100), &g);
        map.insert(3, Val::new(103), &g);
        map.insert(1, Val::new(101), &g);
    }
    let migrator = {
        let (map, model) = (map.clone(), model.clone());
        thread::spawn(move || {
            {
                let g = model.read_lock();
                map.rehash(4, &g).unwrap();
            }
            model.grace_point();
        })
    };
    let writer = {
        let (map, model) = (map.clone(), model.clone());
        thread::spawn(move || {
            {
                let g = model.read_lock();
                assert_eq!(map.remove(&3, &g).map(Val::read), Some(103));
            }
            model.grace_point();
        })
    };
    {
        let g = model.read_lock();
        assert_eq!(
            map.get(&1, &g).map(Val::read),
            Some(101),
            "a stable key was missed"
        );
    }
    migrator.join().unwrap();
    writer.join().unwrap();
    let g = model.read_lock();
    assert_eq!(map.buckets(&g), 4);
    assert_eq!(map.get(&0, &g).map(Val::read), Some(100));
    assert_eq!(map.get(&1, &g).map(Val::read), Some(101));
    assert!(map.get(&3, &g).is_none());
    drop(g);
    drop(map);
    model.free_all();
}

#[test]
fn loom_map_migration_vs_reader_and_writer() {
    loom::model(|| migration_vs_reader_and_writer(Fault::None));
}

/// Limbo 3. The reverse: four buckets shrink to two, old buckets 1 and 3 merging into new
/// bucket 1, while a writer inserts key 5 (old bucket 1, new bucket 1) and the reader looks up
/// key 3, present throughout.
fn shrink_vs_reader_and_writer(fault: Fault) {
    let model = Limbo::new(false);
    let map = Arc::new(Map::with_fault(4, Identity, model.clone(), fault));
    {
        let g = model.read_lock();
        map.insert(1, Val::new(101), &g);
        map.insert(3, Val::new(103), &g);
    }
    let migrator = {
        let (map, model) = (map.clone(), model.clone());
        thread::spawn(move || {
            {
                let g = model.read_lock();
                map.rehash(2, &g).unwrap();
            }
            model.grace_point();
        })
    };
    let writer = {
        let (map, model) = (map.clone(), model.clone());
        thread::spawn(move || {
            let g = model.read_lock();
            assert!(map.insert(5, Val::new(105), &g).is_none());
        })
    };
    {
        let g = model.read_lock();
        assert_eq!(
            map.get(&3, &g).map(Val::read),
            Some(103),
            "a stable key was missed"
        );
        if let Some(v) = map.get(&5, &g) {
            assert_eq!(v.read(), 105);
        }
    }
    migrator.join().unwrap();
    writer.join().unwrap();
    let g = model.read_lock();
    assert_eq!(map.buckets(&g), 2);
    for k in [1, 3, 5] {
        assert_eq!(map.get(&k, &g).map(Val::read), Some(100 + k));
    }
    assert_eq!(map.iter(&g).count(), 3);
    drop(g);
    drop(map);
    model.free_all();
}

#[test]
fn loom_map_shrink_vs_reader_and_writer() {
    loom::model(|| shrink_vs_reader_and_writer(Fault::None));
}

#[test]
fn loom_map_shrink_unlink_before_relink_is_detected() {
    must_fail(
        shrink_vs_reader_and_writer,
        Fault::UnlinkFirst,
        "the model must catch a reader missing a key that a shrink moved",
    );
}

/// Run a negative model: loom must report a failing execution.
fn must_fail(f: fn(Fault), fault: Fault, what: &str) {
    // Loom reports a failing execution by panicking out of `model`.
    let r = std::panic::catch_unwind(|| loom::model(move || f(fault)));
    let payload = r.expect_err(what);
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("Causality violation")
            || msg.contains("missed")
            || msg.contains("freed")
            || msg.contains("maximum number of branches"),
        "unexpected failure: {msg}"
    );
}

#[test]
fn loom_map_relaxed_publication_is_detected() {
    must_fail(
        insert_remove_vs_reader,
        Fault::RelaxedPublish,
        "the model must catch a reader seeing a node whose value is not yet visible",
    );
}

#[test]
fn loom_map_unlink_before_relink_is_detected() {
    must_fail(
        migration_vs_reader_and_writer,
        Fault::UnlinkFirst,
        "the model must catch a reader missing a key that a migration moved",
    );
}

#[test]
fn loom_map_restart_on_foreign_marker_livelocks() {
    // rhashtable's restart: the reader spins on the old bucket while the migrator is
    // preempted between linking the node into the new table and unlinking it from the old
    // one; loom reports the spin (a reader waiting for a writer).
    must_fail(
        shrink_vs_reader_and_writer,
        Fault::RestartOnForeignMarker,
        "the model must catch a reader spinning on a preempted migrator",
    );
}
