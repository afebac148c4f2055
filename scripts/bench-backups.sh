#!/usr/bin/env bash
# Increment latency by replica policy, one run: 3 member processes (1 shard each) per policy,
# `corecast-bench --members` with one caller (serial round trips), then the failover time with
# the default failure detector. Prints one table; ratios are against backup-count 0.
#
#   scripts/bench-backups.sh [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-3}"
cargo build --release -q -p corecast-services --bin corecast -p corecast-bench
bin=${CORECAST_BIN:-target/release/corecast}
pids=()
# kill -9 and wait: a graceful leave takes the members seconds, into the next policy's run.
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT

free_base() {
    while :; do
        local p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
}

# start_cluster SYNC ASYNC: three members; sets `addr` to the first member's address. (Not
# called in a command substitution: its subshell would keep the members' pids from cleanup.)
start_cluster() {
    local base; base=$(free_base)
    local seed="127.0.0.1:$base"
    for i in 0 1 2; do
        local port=$((base + i * 10))
        RUST_LOG=warn "$bin" member --bind "127.0.0.1:$port" --shards 1 \
            --backup-count "$1" --async-backup-count "$2" \
            $([ "$i" -gt 0 ] && echo "--seeds $seed") > "target/bench-backups-$i.log" 2>&1 &
        pids+=($!)
        sleep 0.3
    done
    for _ in $(seq 1 100); do
        # Read the whole status first: `grep -q` exits at its match, and under pipefail the
        # writer's broken pipe would fail the test.
        if grep -q "^members: 3" <<< "$("$bin" cluster status --members "$seed" 2>/dev/null || true)"; then
            addr="$seed"; return
        fi
        sleep 0.1
    done
    echo "the cluster did not form" >&2
    exit 1
}

# ops/s, p50, p90, p99 of counter-inc (and of the raw TCP ping-pong baseline) from a bench run.
measure() {
    RUST_LOG=warn target/release/corecast-bench --members "$1" --shards 1 --callers 1 \
        --workloads counter-inc --duration "$duration" --warmup 1 --counters 64 2>/dev/null \
        | awk '$1 == "counter-inc" { printf "%-13s %10s %9s %9s %9s\n", $2, $3, $5, $6, $7 }'
}

printf '%-16s %-13s %10s %9s %9s %9s\n' "policy" "target" "ops/s" "p50" "p90" "p99"
for policy in "0 0" "1 0" "2 0" "0 1"; do
    set -- $policy
    start_cluster "$1" "$2"
    measure "$addr" | sed "s/^/$(printf '%-16s' "sync $1 async $2") /"
    cleanup
    sleep 0.5
done

echo
echo "failover (kill -9 of a member under load, default timing; longest call across the kill):"
CORECAST_FAILOVER_DEFAULT_TIMING=1 CORECAST_FAILOVER_CYCLES=3 \
    cargo test --release -q -p corecast-services --test failover -- --nocapture --test-threads 1 2>&1 \
    | grep -o 'seed.*longest call.*'
