//! Loom models of SRCU domains (run by `.ci/loom.sh`).

mod loom_flip;
