#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, integration, doc, and the
# example the tutorial test runs), and short smoke runs of the benchmark binary, embedded and
# against a member process.
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

step "redis-cli and redis-server for the RESP tests and the comparison (apt-get if absent)"
scripts/install-redis.sh

step "cargo test"
cargo test --workspace

step "seeded simulation of membership, tables, migrations and data: 2,000 more seeds (release)"
# The debug run above covers seeds 0-39 (0.5 s a seed unoptimised, 0.09 s optimised, one worker
# per core); these 2,000 take about 1.5 minutes optimised on two cores. A failure prints its seed
# and the command that replays it.
CORECAST_SIM_SEED=40 CORECAST_SIM_SEEDS=2000 cargo test --release -q -p corecast-net --lib seeded

step "corecast-bench smoke run (embedded), built with the PGO profile"
cargo run --release -q -p corecast-bench -- --duration 0.3 --warmup 0.1 --counters 16 --keys 1000 \
    | tee target/smoke-bench.txt
# Optimised builds take pgo/corecast.profdata through scripts/rustc-pgo; a profile this toolchain
# cannot use (another LLVM) would silently cost a fifth of the throughput: retrain it.
grep -q "profile-guided build" target/smoke-bench.txt || {
    echo "the release build did not use pgo/corecast.profdata: run scripts/pgo-train.sh" >&2
    exit 1
}

step "corecast-bench smoke run (map memory per entry, 100k entries)"
cargo run --release -q -p corecast-bench -- --map-memory 100000

step "corecast-bench smoke run (migration: 16 MiB on one member, a second joins)"
cargo run --release -q -p corecast-bench -- --migration-mib 16

step "corecast-bench smoke run (networked, against a member process)"
# The same build as bench-vs-redis.sh's: corecast-services built on its own gets other features
# (the bench turns some on), so `--bin corecast` alone would compile it twice.
cargo build --release -q -p corecast-services -p corecast-bench --bins
member_pid=""
trap '[ -n "$member_pid" ] && kill "$member_pid" 2>/dev/null || true' EXIT
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 10000))
    target/release/corecast member --bind "127.0.0.1:$port" --shards 1 > target/smoke-member.log 2>&1 &
    member_pid=$!
    for _ in $(seq 1 50); do
        grep -q "joined the cluster" target/smoke-member.log && break
        kill -0 "$member_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "joined the cluster" target/smoke-member.log && break
    kill "$member_pid" 2>/dev/null || true
    member_pid=""
done
[ -n "$member_pid" ] || { echo "no member started for the networked smoke run" >&2; exit 1; }
target/release/corecast-bench --members "127.0.0.1:$port" --shards 1 --callers 8 \
    --duration 0.3 --warmup 0.1 --counters 16 --keys 1000
kill "$member_pid"
wait "$member_pid" || true
member_pid=""

step "bench-vs-redis smoke run (installs redis-server with apt-get if absent)"
scripts/bench-vs-redis.sh --quick

echo
echo "all checks passed"
