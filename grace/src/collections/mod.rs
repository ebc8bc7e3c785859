//! Concurrent collections read under a flavor's guard: [`List`], the kernel's `rculist`.
//!
//! Readers walk these structures without locks, inside a read-side critical section of the
//! collection's flavor; writers publish and unlink nodes and hand the unlinked ones to the
//! flavor's [`Retire`](crate::atomic::Retire), which frees them after a grace period (through
//! `kvfree` for RCU, so in bulk, and counted in grace's memory figures).
//!
//! ```
//! use grace::collections::List;
//!
//! let routes: List<(u32, &str)> = [(10, "eth0"), (20, "eth1")].into_iter().collect();
//! routes.replace_first(|r| r.0 == 20, (20, "eth2")).unwrap(); // list_replace_rcu
//! let g = routes.pin();
//! assert_eq!(routes.iter(&g).find(|r| r.0 == 20), Some(&(20, "eth2")));
//! ```

pub mod list;

pub use list::List;
