//! Loom models of kvfree's per-thread lanes (run by `.ci/loom.sh`).

mod loom_lane;
