#!/usr/bin/env bash
# Makes the profile that optimised builds use (pgo/corecast.profdata; scripts/rustc-pgo adds it to
# every opt-level-3 compile): builds the bench and the member instrumented, runs them on the
# loads they are measured with, and merges what they counted. Run it again after changing a hot
# path: a function whose code changed no longer matches its profile and is built as without one.
# bench/README.md, Profile-guided builds.
#
#   scripts/pgo-train.sh [--seconds N]     (N seconds per measured workload, default 1)
#
# Needs the rustup component llvm-tools (for llvm-profdata, which must be this rustc's LLVM);
# installs it if absent. Installs redis-benchmark with the other Redis tools if absent, to drive
# the member's Redis front door.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        *) echo "pgo-train: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "pgo-train: --seconds expects a positive integer, got '$seconds'" >&2; exit 2; }

profdata_tool() { find "$(rustc --print sysroot)/lib/rustlib" -name llvm-profdata -type f | head -1; }
if [ -z "$(profdata_tool)" ]; then
    echo "== rustup component add llvm-tools" >&2
    rustup component add llvm-tools
fi
tool=$(profdata_tool)
[ -n "$tool" ] || { echo "pgo-train: llvm-profdata not found in this toolchain" >&2; exit 1; }
scripts/install-redis.sh

dir=$PWD/target/pgo-train
raw=$dir/raw
out=$dir/out
rm -rf "$raw" "$out"
mkdir -p "$raw" "$out"

echo "== building instrumented binaries (target/pgo-train)" >&2
# The same crates as bench-vs-redis.sh's build, so the features (and functions) are the same.
CORECAST_PGO=off RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release -q -p corecast-services -p corecast-bench --bins --target-dir "$dir"
# Build scripts ran instrumented too: only the runs below count.
rm -rf "$raw" && mkdir -p "$raw"
export LLVM_PROFILE_FILE="$raw/%p-%m.profraw"
bin=$dir/release
bench=(--duration "$seconds" --warmup 0.5 --output "$out")

echo "== embedded: every workload, 2 shards, then 1 shard and --locality shard" >&2
all=counter-inc,atomic-add,map-put,map-get,map-mixed,map-incr,kv-put,kv-get
"$bin/corecast-bench" --workloads "$all" --shards 2 "${bench[@]}" > /dev/null
"$bin/corecast-bench" --workloads "$all" --shards 1 --no-baseline "${bench[@]}" > /dev/null
"$bin/corecast-bench" --workloads counter-inc,map-put,map-get --shards 2 --locality shard \
    --no-baseline "${bench[@]}" > /dev/null

echo "== embedded cluster of 3 (backups)" >&2
"$bin/corecast-bench" --workloads counter-inc,map-put,map-get --cluster-size 3 --shards 1 \
    --no-baseline "${bench[@]}" > /dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
member_pid=""
trap '[ -n "$member_pid" ] && kill "$member_pid" 2>/dev/null || true' EXIT
base=$(free_port)
resp=$(free_port)
"$bin/corecast" member --bind "127.0.0.1:$base" --shards 1 --backup-count 0 --resp-port "$resp" \
    > "$out/member.log" 2>&1 &
member_pid=$!
for _ in $(seq 1 100); do grep -q "serving the Redis protocol" "$out/member.log" && break; sleep 0.1; done
grep -q "serving the Redis protocol" "$out/member.log" || { echo "pgo-train: the member did not start:" >&2; tail -5 "$out/member.log" >&2; exit 1; }

echo "== networked: smart client, pipelined and serial" >&2
net=(--members "127.0.0.1:$base" --threads 1 --no-baseline --set io-memory-kib=256)
RUST_LOG=error "$bin/corecast-bench" "${net[@]}" --workloads map-put,map-get,map-incr,counter-inc \
    --connections 2 --callers 400 "${bench[@]}" > /dev/null
RUST_LOG=error "$bin/corecast-bench" "${net[@]}" --workloads map-put,map-get,map-incr \
    --connections 1 --callers 1 "${bench[@]}" > /dev/null

echo "== networked: redis-benchmark on the Redis front door" >&2
for p in 16 1; do
    redis-benchmark -h 127.0.0.1 -p "$resp" -c 50 -P "$p" -d 100 -r 100000 -n $((seconds * 300000)) \
        -t set,get,incr -q > /dev/null
done
# The member writes its counts when it exits: stop it as an operator would.
kill -INT "$member_pid"
wait "$member_pid" || true
member_pid=""

ls "$raw"/*.profraw > /dev/null
"$tool" merge --sparse -o pgo/corecast.profdata "$raw"/*.profraw
rustc -vV | sed -n 's/^LLVM version: //p' > pgo/llvm-version
echo "wrote pgo/corecast.profdata ($(du -h pgo/corecast.profdata | cut -f1), LLVM $(cat pgo/llvm-version)) from $(ls "$raw" | wc -l) runs" >&2
