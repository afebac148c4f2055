#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, integration, doc, and the
# example the tutorial test runs), and a short smoke run of the benchmark binary.
# Usage: scripts/test.sh            (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# glommio locks io_uring memory; a non-root shell with a tiny `ulimit -l` gets a clear
# StartError from the member, but say it up front too.
if [ "$(id -u)" != 0 ] && [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt 4096 ]; then
    echo "warning: ulimit -l is $(ulimit -l) KiB; members need io-memory-kib x shards (default 512 KiB per shard)" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "corecast-bench smoke run"
cargo run --release -q -p corecast-bench -- --duration 0.3 --warmup 0.1 --counters 16 --keys 1000

echo
echo "all checks passed"
