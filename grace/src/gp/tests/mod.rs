//! Loom models of the grace-period engine (run by `.ci/loom.sh`).

mod loom_seq;
