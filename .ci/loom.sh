#!/usr/bin/env bash
# Model-check grace's concurrent state machines with loom (see grace/src/*/tests/loom_*.rs).
#
# The whole crate is rebuilt with `--cfg loom` (grace/src/sync.rs swaps std's atomics and
# locks for loom's), in its own target directory so that it never invalidates normal builds.
# Exits non-zero if any model fails. Extra arguments go to the test binary, e.g.
#   .ci/loom.sh --nocapture
#   LOOM_MAX_PREEMPTIONS=3 .ci/loom.sh        # a deeper (slower) search
set -euo pipefail
cd "$(dirname "$0")/.."

# -D warnings: a warning that only loom builds show (dead code behind cfg(loom)) fails CI too.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom -D warnings"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"

start=$(date +%s)
status=0
cargo test -p grace --lib --release loom -- "$@" || status=$?
end=$(date +%s)
echo "loom.sh: $([ $status -eq 0 ] && echo passed || echo FAILED) in $((end - start)) s" \
     "(LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS, build included)"
exit $status
