#!/usr/bin/env bash
# AddressSanitizer run of the torture tool: a use-after-free that the pipeline check misses
# (the RcuCell side cell really frees its retired values) still aborts here. Needs nightly with
# rust-src (installed by .ci/deps.sh --miri). Leak detection is off: the grace-period and worker
# threads and the reader registry live for the whole process by design.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
  cargo +nightly build -Zbuild-std --target "$target" --release -p grace-cli
bin=target/asan/$target/release/grace
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1
"$bin" torture rcu --duration 15s
GRACE_NO_MEMBARRIER=1 "$bin" torture rcu --duration 5s
"$bin" torture srcu --duration 8s
echo "asan.sh: passed in $(( $(date +%s) - start )) s"
