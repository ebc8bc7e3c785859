//! # grace: the Linux kernel's RCU, in user space
//!
//! Read-copy-update lets readers traverse shared data with no locks, no atomic
//! read-modify-writes and no shared-cache-line writes: a read-side section costs a
//! thread-local load and store. Updaters publish new versions and reclaim old ones only after a
//! *grace period*, once every reader that could have seen them has moved on.
//!
//! ```
//! use grace::{rcu, RcuCell};
//! let cell = RcuCell::new(String::from("v1"));
//! { let g = rcu::read_lock(); assert_eq!(cell.load(&g), "v1"); }
//! cell.replace(String::from("v2")).defer_drop(); // freed after a grace period
//! ```
//!
//! ## Map of the crate
//!
//! | module | what it is |
//! |---|---|
//! | [`rcu`] | the RCU flavor: read side, `synchronize`, polled cookies, `call`, `barrier` |
//! | [`srcu`] | sleepable RCU: independent domains, regular and lite readers, static domains |
//! | [`cookie`] | grace-period cookies as types, and how many can be outstanding |
//! | [`flavor`] | the [`Flavor`] trait every flavor implements, so higher layers are generic |
//! | [`cell`] | [`RcuCell`], a safe pointer protected by any flavor, update loops, and [`Retired`] values |
//! | [`collections`] | [`HashMap`](collections::HashMap): a resizable hash map (the kernel's `rhashtable`) read under a guard with no lock |
//! | [`atomic`] | [`Atomic`](atomic::Atomic), [`Shared`](atomic::Shared), [`Owned`](atomic::Owned): tagged pointers for linked structures under any flavor, retired through `kvfree` or `call` |
//! | [`wait`] | futures: `synchronize_async`, awaiting a cookie, `barrier_async`, for any runtime |
//! | [`config`] | `GRACE_*` settings |
//! | [`kvfree`](mod@kvfree) | headless deferred free (`kvfree_rcu`): `Box`es freed in bulk after a grace period |
//! | [`alloc`] | fallible allocation and allocation-failure injection |
//! | [`pending`] | [`Pending<T>`](pending::Pending): objects waiting for a grace period, processed in bulk or taken back for reuse |
//! | [`report`](mod@report) | diagnostics: [`report()`] (text and JSON), stall warnings, the report signal (`GRACE_REPORT_SIGNAL`) |
//! | [`pressure`] | memory stranded behind grace periods: accounting, flood heuristics, a budget, the shrinker, a PSI monitor (`/proc/pressure/memory`, cgroup v2 `memory.pressure`) |
//! | [`sys`] | everything platform-specific: `membarrier`, CPU hint |
//! | `reader` (internal) | reader slots and their registry: what a grace period walks |
//! | `gp` (internal) | grace-period sequence arithmetic and the phase-named engine |
//! | `callback` (internal) | per-thread rings, per-shard segmented lists, workers |
//!
//! ## Guarantees
//!
//! * No early free: nothing handed to a grace-period API is reclaimed while a reader that
//!   could see it is inside its section.
//! * Nothing lost: every callback runs exactly once, also when the thread that queued it
//!   exits; a panicking callback is caught and does not take the others with it.
//! * Safe API: guards are `!Send`, references are tied to guards, callbacks are
//!   `Send + 'static`.
//!
//! ## Platforms
//!
//! Linux is the target: `membarrier(2)` makes the read side a plain load and store, and
//! pthread-key destructors give a thread's records back at its very last exit. Elsewhere (and
//! under Miri) grace builds and works with `SeqCst` fences on the read side instead, and
//! records used by a thread's last destructors are abandoned rather than reused. After
//! `fork()`, the child has none of grace's background threads: see [`sys`], "fork()".

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod alloc;
pub mod atomic;
pub(crate) mod callback;
pub mod collections;
pub mod config;
pub mod cookie;
pub(crate) mod gp;
pub mod kvfree;
/// The hand-driven stand-in flavor of the loom models and the Miri tests.
#[cfg(test)]
pub(crate) mod limbo;
pub mod pending;
#[cfg(not(loom))]
pub mod pressure;
pub mod rcu;
pub(crate) mod reader;
#[cfg(not(loom))]
pub mod report;
pub mod srcu;
pub(crate) mod sync;
pub mod sys;

#[cfg(not(loom))]
pub mod cell;
#[cfg(not(loom))]
pub mod flavor;
#[cfg(not(loom))]
pub mod wait;

#[cfg(not(loom))]
pub use cell::{RcuCell, Retired};
#[cfg(not(loom))]
pub use flavor::{Flavor, Rcu};
pub use gp::GpPhase;
#[cfg(not(loom))]
pub use kvfree::{kvfree, kvfree_barrier};
#[cfg(not(loom))]
pub use pending::Pending;
#[cfg(not(loom))]
pub use report::report;
pub use sys::BarrierMode;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
