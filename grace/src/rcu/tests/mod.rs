//! Loom models of the read side (run by `.ci/loom.sh`).

mod loom_reader;
