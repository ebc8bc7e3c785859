//! Loom models of the callback queues (run by `.ci/loom.sh`).
//!
//! Declared from `callback/mod.rs` as `loom_tests` (the name `tests` is taken by the inline
//! unit tests there).

mod loom_invoker;
mod loom_ring;
mod loom_switch;
