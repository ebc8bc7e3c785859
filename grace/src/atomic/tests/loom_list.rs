//! The Harris–Michael list of `list.rs` (the same code the threaded and Miri tests run),
//! model-checked with retirement: insert, delete and search race each other, and still every
//! node is freed exactly once, never while a reader can reach it, and every operation's result
//! is one some sequential order allows.
//!
//! The flavor is `crate::limbo`'s stand-in, driven by hand: a grace point frees a batch of
//! retired nodes only when no reader is counted inside a section (see that module for why
//! that is a correct grace period, and for its `broken` variant).
//!
//! Keys and values hold loom `UnsafeCell`s that their destructor overwrites: a reader that
//! compares a key or reads a value without happening-before its free is a causality
//! violation for loom. Values count their drops by id. A negative model (a grace point that
//! ignores the reader counter) proves the model sees an early free.

use super::list::List;
use crate::limbo::Limbo;
use crate::sync::{AtomicUsize, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use std::cmp::Ordering as Cmp;

const POISON: u64 = u64::MAX;

/// A key whose destructor poisons it.
struct Key(UnsafeCell<u64>);

impl Key {
    fn new(k: u64) -> Key {
        Key(UnsafeCell::new(k))
    }
    fn get(&self) -> u64 {
        // SAFETY: loom's cell checks the access against the destructor's write itself.
        let k = self.0.with(|p| unsafe { *p });
        assert_ne!(k, POISON, "read a freed key");
        k
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // loom is unwinding a failed execution: touching its objects would abort
        }
        // SAFETY: as in `get`; this write is what a reader racing with the free collides with.
        self.0.with_mut(|p| unsafe { *p = POISON });
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        Key::new(self.get())
    }
}

// SAFETY: the cell is loom's, which checks every access for races itself; that check is what
// the model is for.
unsafe impl Sync for Key {}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.get() == other.get()
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Cmp> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Cmp {
        self.get().cmp(&other.get())
    }
}

const VALUES: usize = 4;

type Val = crate::limbo::Val<VALUES>;

/// List {1, 2}. Thread A removes 1 and inserts 3; thread B removes 2 (its search meets 1
/// marked and may unlink and retire it, racing A's own unlink), looks 1 up, and inserts 1
/// again (which succeeds only after A's remove); each passes a grace point between its
/// sections.
fn remove_insert_search(broken: bool) {
    let drops: Arc<[AtomicUsize; VALUES]> = Arc::new(Default::default());
    let model = Limbo::new(broken);
    let list = Arc::new(List::new(model.clone()));
    {
        let g = model.read_lock();
        assert!(list.insert(Key::new(1), Val::new(0, &drops), &g));
        assert!(list.insert(Key::new(2), Val::new(1, &drops), &g));
    }
    let a = {
        let (list, model, drops) = (list.clone(), model.clone(), drops.clone());
        thread::spawn(move || {
            {
                let g = model.read_lock();
                assert!(list.remove(&Key::new(1), &g));
            }
            model.grace_point();
            let g = model.read_lock();
            assert!(list.insert(Key::new(3), Val::new(2, &drops), &g));
        })
    };
    {
        let g = model.read_lock();
        assert!(list.remove(&Key::new(2), &g));
        if let Some(v) = list.get(&Key::new(1), &g) {
            v.read();
        }
    }
    model.grace_point();
    let reinserted = {
        // Key 1 again: fails if A has not removed it yet; otherwise the old node may still
        // wait in limbo, or be mid-unlink.
        let g = model.read_lock();
        list.insert(Key::new(1), Val::new(3, &drops), &g)
    };
    a.join().unwrap();

    let g = model.read_lock();
    let keys: Vec<u64> = list.keys(&g).iter().map(Key::get).collect();
    assert_eq!(keys, if reinserted { &[1, 3][..] } else { &[3][..] });
    assert_eq!(list.get(&Key::new(3), &g).map(Val::read), Some(2));
    let one = list.get(&Key::new(1), &g).map(Val::read);
    assert_eq!(one, reinserted.then_some(3));
    drop(g);
    drop(list);
    model.free_all();
    for (id, d) in drops.iter().enumerate() {
        // Relaxed: every thread has joined.
        assert_eq!(d.load(Ordering::Relaxed), 1, "value {id} dropped once");
    }
}

#[test]
fn loom_list_remove_insert_search_with_retirement() {
    loom::model(|| remove_insert_search(false));
}

/// Two threads insert the same key and remove it: exactly one insert wins, the loser's node is
/// dropped unpublished, and the winner's is retired once.
#[test]
fn loom_list_same_key_insert_remove() {
    loom::model(|| {
        let drops: Arc<[AtomicUsize; VALUES]> = Arc::new(Default::default());
        let model = Limbo::new(false);
        let list = Arc::new(List::new(model.clone()));
        let spawn = |id: usize| {
            let (list, model, drops) = (list.clone(), model.clone(), drops.clone());
            thread::spawn(move || {
                let won = {
                    let g = model.read_lock();
                    list.insert(Key::new(7), Val::new(id, &drops), &g)
                };
                model.grace_point();
                let removed = {
                    let g = model.read_lock();
                    list.remove(&Key::new(7), &g)
                };
                model.grace_point();
                (won, removed)
            })
        };
        let (a, b) = (spawn(0), spawn(1));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        // Inserts and removes balance: at most one node holds the key at a time.
        let present = usize::from(a.0) + usize::from(b.0) - usize::from(a.1) - usize::from(b.1);
        let g = model.read_lock();
        assert_eq!(list.keys(&g).len(), present);
        drop(g);
        drop(list);
        model.free_all();
        for d in drops.iter().take(2) {
            // Relaxed: every thread has joined.
            assert_eq!(d.load(Ordering::Relaxed), 1);
        }
    });
}

/// The negative model: a grace point that frees without waiting for readers must be caught.
#[test]
fn loom_list_early_free_is_detected() {
    // Loom reports a failing execution by panicking out of `model` (its model threads run on
    // the calling thread).
    let r = std::panic::catch_unwind(|| loom::model(|| remove_insert_search(true)));
    let payload = r.expect_err("the model must catch a free while a reader can see the node");
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
