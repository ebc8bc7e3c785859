//! Where the pressure layer finds stranded memory: the process-wide RCU callback engine,
//! `kvfree` and the SRCU domains' callbacks (process-wide counters) directly, and every live
//! `Pending` through a registry of weak references (registered when created, pruned when
//! gone).

use super::{Counts, Usage};
use crate::sync::{lock, Mutex};
use std::sync::{Arc, Weak};

/// Which [`Usage`] field a registered source adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `Pending<T, F>`.
    Pending,
}

/// A deferral structure the pressure layer can see and shrink.
pub(crate) trait Source: Send + Sync {
    fn kind(&self) -> Kind;
    /// What a person reading `grace::report()` calls it (its types).
    fn name(&self) -> String;
    /// Objects and bytes held back now.
    fn counts(&self) -> Counts;
    /// The shrinker: flush lazily batched work, process up to `n` expired objects on this
    /// thread, expedite what still waits; returns how many were processed. Never waits for
    /// readers, never blocks on a lock another thread may hold for long.
    fn shrink(&self, n: u64) -> u64;
}

#[cfg(not(loom))]
static REGISTRY: Mutex<Vec<Weak<dyn Source>>> = Mutex::new(Vec::new());

/// Make `s` visible to [`super::usage`] and [`super::scan`] while it lives.
pub(crate) fn register(s: Weak<dyn Source>) {
    let mut r = lock(&REGISTRY);
    r.retain(|w| w.strong_count() > 0);
    r.push(s);
}

/// The live registered sources (strong references, taken under the registry lock and used
/// after it is released, so a source's methods never run under it).
fn live() -> Vec<Arc<dyn Source>> {
    lock(&REGISTRY).iter().filter_map(Weak::upgrade).collect()
}

pub(super) fn usage() -> Usage {
    let mut u = Usage {
        call_rcu: crate::rcu::pressure_counts(),
        kvfree: crate::kvfree::pressure_counts(),
        call_srcu: crate::srcu::pressure_counts(),
        ..Usage::default()
    };
    for s in live() {
        match s.kind() {
            Kind::Pending => u.pending += s.counts(),
        }
    }
    u
}

pub(super) fn scan(n: u64) -> u64 {
    let mut freed = 0u64;
    freed += crate::kvfree::shrink(n);
    freed += crate::rcu::shrink(n.saturating_sub(freed));
    freed += crate::srcu::shrink();
    for s in live() {
        freed += s.shrink(n.saturating_sub(freed));
    }
    freed
}

/// One row per live registered `Pending`, for `grace::report()`.
pub(crate) fn pending_reports() -> Vec<crate::report::PendingReport> {
    live()
        .into_iter()
        .filter(|s| s.kind() == Kind::Pending)
        .map(|s| crate::report::PendingReport {
            name: s.name(),
            pending: s.counts(),
        })
        .collect()
}
