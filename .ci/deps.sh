#!/usr/bin/env bash
# Install what the workspace needs beyond cargo: liburcu-dev (the C reference peer for the
# benchmarks; the build degrades without it) and nightly Miri. Safe to run repeatedly.
set -u
if ! pkg-config --exists liburcu-memb 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing liburcu-dev"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburcu-dev pkg-config) \
      >/tmp/grace-apt.log 2>&1 || echo "deps: apt-get failed (see /tmp/grace-apt.log); liburcu peer will be skipped"
  else
    echo "deps: liburcu-dev missing and cannot install it here (not root or no apt-get); liburcu peer will be skipped"
  fi
fi
if [ "${1:-}" = "--miri" ]; then
  if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "deps: installing miri + rust-src for nightly"
    rustup component add miri rust-src --toolchain nightly
  fi
fi
exit 0
