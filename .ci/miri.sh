#!/usr/bin/env bash
# Run grace's unit tests and the end-to-end smoke test under Miri (undefined behaviour, data
# races, weak-memory effects, leaks). Under cfg(miri) the library uses the portable `sys`
# fallback (fence mode, no system calls) and the callback ring shrinks to 4 records.
#
# Each binary runs under several scheduler seeds (MIRI_SEEDS, default 0..8), with the default
# aliasing model (Stacked Borrows), then once more under Tree Borrows + strict provenance.
# Exits non-zero on the first failure. Takes about a minute on 2 cores once the sysroot exists.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1 \
   || ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "miri.sh: installing miri + rust-src for nightly"
  rustup component add miri rust-src --toolchain nightly
fi

# -D warnings: a warning that only Miri builds show (code behind cfg(miri)) fails CI too.
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"

seeds="${MIRI_SEEDS:-0..8}"
base="${MIRIFLAGS:-}"
start=$(date +%s)
step() { echo; echo "=== miri.sh: $* ($(( $(date +%s) - start )) s)"; }

step "cargo miri setup"
cargo +nightly miri setup

# The library's unit tests: no isolation escape needed, and the leak check stays on. They
# include collections::list's (a reader walking while a writer removes and replaces entries,
# with a hand-driven stand-in flavor, so no background threads).
step "lib unit tests, seeds $seeds"
MIRIFLAGS="$base -Zmiri-many-seeds=$seeds" cargo +nightly miri test -p grace --lib
step "lib unit tests, tree borrows + strict provenance"
MIRIFLAGS="$base -Zmiri-tree-borrows -Zmiri-strict-provenance" cargo +nightly miri test -p grace --lib

# The public API end to end. -Zmiri-ignore-leaks: the flavor's grace-period and callback
# worker threads run for the life of the process by design, and Miri reports threads still
# running when main returns as a leak.
step "miri_smoke, seeds $seeds"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-many-seeds=$seeds" \
  cargo +nightly miri test -p grace --test miri_smoke
step "miri_smoke, tree borrows + strict provenance"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-tree-borrows -Zmiri-strict-provenance" \
  cargo +nightly miri test -p grace --test miri_smoke

# kvfree end to end (lanes, hand-offs, sweeps, callback batches, every fallback), sized for
# Miri (arrays of 2 pointers under cfg(miri)). Fewer seeds: each run takes longer.
step "kvfree_miri, seeds ${KVFREE_MIRI_SEEDS:-0..4}"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-many-seeds=${KVFREE_MIRI_SEEDS:-0..4}" \
  cargo +nightly miri test -p grace --test kvfree_miri
step "kvfree_miri, tree borrows + strict provenance"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-tree-borrows -Zmiri-strict-provenance" \
  cargo +nightly miri test -p grace --test kvfree_miri

# The chicken switch (batching off): Pending's and kvfree's per-object callbacks.
step "chicken_miri, seeds $seeds"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-many-seeds=$seeds" \
  cargo +nightly miri test -p grace --test chicken_miri
step "chicken_miri, tree borrows + strict provenance"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-tree-borrows -Zmiri-strict-provenance" \
  cargo +nightly miri test -p grace --test chicken_miri

# The pointer types on real structures: the Harris-Michael list and Michael map, one thread
# and two, retiring through kvfree (RCU) and call (SRCU).
step "atomic_miri, seeds $seeds"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-many-seeds=$seeds" \
  cargo +nightly miri test -p grace --test atomic_miri
step "atomic_miri, tree borrows + strict provenance"
MIRIFLAGS="$base -Zmiri-ignore-leaks -Zmiri-tree-borrows -Zmiri-strict-provenance" \
  cargo +nightly miri test -p grace --test atomic_miri

step "passed"
echo "miri.sh: passed in $(( $(date +%s) - start )) s"
