//! Concurrent collections read under a grace guard: lookups and traversals take no lock and
//! write nothing shared, updates are serialized where they must be, and whatever an update
//! unlinks is freed after a grace period of the collection's flavor, in bulk.
//!
//! | type | the kernel's | what it is |
//! |---|---|---|
//! | [`List`] | `rculist` (`list_add_rcu`, `list_del_rcu`, `list_for_each_entry_rcu`) | a linked list: lock-free traversal, writers under one lock |
//! | [`HashMap`] | `rhashtable` | a resizable hash map: lock-free lookups and iteration, per-bucket writer locks, incremental resize in both directions |
//!
//! Every collection is generic over the flavor (RCU by default, any SRCU domain through the
//! [`Flavor`](crate::Flavor) and [`Retire`](crate::atomic::Retire) traits), and frees what it
//! unlinks through [`Retire::retire_raw`](crate::atomic::Retire::retire_raw): `kvfree` under
//! RCU, so the bytes waiting for a grace period show in grace's counters and reports.
//!
//! # Examples
//!
//! ```
//! use grace::collections::{HashMap, List};
//! let map: HashMap<u32, &str> = HashMap::new();
//! let g = map.guard();
//! map.insert(1, "one", &g);
//! assert_eq!(map.get(&1, &g), Some(&"one"));
//!
//! let list: List<u32> = List::new();
//! list.push_back(7);
//! assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), [7]);
//! ```

pub mod list;
pub mod map;

pub use list::List;
pub use map::HashMap;
