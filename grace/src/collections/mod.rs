//! Concurrent collections read under a flavor's guard: [`List`], the kernel's `rculist`.
//!
//! Readers walk these structures without locks, inside a read-side critical section of the
//! collection's flavor; writers publish and unlink nodes and hand the unlinked ones to the
//! flavor's [`Retire`](crate::atomic::Retire), which frees them after a grace period (through
//! `kvfree` for RCU, so in bulk, and counted in grace's memory figures).

pub mod list;

pub use list::List;
