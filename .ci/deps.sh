#!/usr/bin/env bash
# Install what the workspace needs beyond cargo: liburcu-dev (the C reference peer for the
# benchmarks; the build degrades without it) and nightly Miri. Safe to run repeatedly.
set -u
cd "$(dirname "$0")/.."
if ! pkg-config --exists liburcu-memb 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing liburcu-dev"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburcu-dev pkg-config) \
      >/tmp/grace-apt.log 2>&1 || echo "deps: apt-get failed (see /tmp/grace-apt.log); liburcu peer will be skipped"
  else
    echo "deps: liburcu-dev missing and cannot install it here (not root or no apt-get); liburcu peer will be skipped"
  fi
fi
# The library's declared minimum Rust version (workspace `rust-version`), which CI builds it with.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
case "$msrv" in *.*.*) ;; ?*) msrv="$msrv.0" ;; esac # rustup names 1.80 as 1.80.0
if [ -n "$msrv" ] && ! rustup toolchain list | grep -q "^$msrv"; then
  echo "deps: installing Rust $msrv (the library's rust-version)"
  rustup toolchain install "$msrv" --profile minimal >/tmp/grace-rustup.log 2>&1 \
    || echo "deps: could not install Rust $msrv (see /tmp/grace-rustup.log)"
fi
if [ "${1:-}" = "--miri" ]; then
  # Miri, and rust-src (Miri's sysroot and the ASan run's -Zbuild-std both need it).
  installed=$(rustup component list --toolchain nightly --installed 2>/dev/null)
  for c in miri rust-src; do
    if ! printf '%s\n' "$installed" | grep -q "^$c"; then
      echo "deps: installing $c for nightly"
      rustup component add "$c" --toolchain nightly
    fi
  done
fi
exit 0
