//! Loom models of the pending-object shard (run by `.ci/loom.sh`).
//!
//! Declared from `pending/mod.rs` as `loom_tests`.

mod loom_shard;
