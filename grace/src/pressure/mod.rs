//! The memory-pressure layer: what tells grace that memory is short, so that work waiting on
//! grace periods can be flushed, expedited or shrunk before the system runs out.
//!
//! For now it holds the operating system's signal: [`psi`], a monitor of Linux pressure
//! stall information (`/proc/pressure/memory`, and the cgroup v2 `memory.pressure` of the
//! process's own cgroup when there is one) that calls a handler when memory stalls pass a
//! threshold.
//!
//! # Examples
//!
//! ```
//! use grace::pressure::psi::{StallKind, Trigger};
//! use std::time::Duration;
//! let t = Trigger::new(StallKind::Some, Duration::from_millis(150), Duration::from_secs(1))?;
//! assert_eq!(t.to_string(), "some 150000 1000000");
//! # Ok::<(), grace::pressure::psi::PsiError>(())
//! ```

pub mod psi;
