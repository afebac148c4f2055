#!/usr/bin/env bash
# Starts a cluster of corecast members on this machine and keeps it running until Ctrl-C.
#
#   scripts/cluster.sh [--members N] [--base-port PORT] [--shards S] [--secret S] [-- EXTRA MEMBER FLAGS]
#
# Member i binds 127.0.0.1:(PORT + 10*i) (its shards listen on that port + shard index) and joins
# through member 0. Logs go to target/cluster/member-i.log. Then, from another terminal:
#
#   target/release/corecast cluster status --members 127.0.0.1:5701
#   target/release/corecast client --members 127.0.0.1:5701 counter inc 0counter
set -euo pipefail

members=3
base=5701
shards=2
secret=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members="$2"; shift 2 ;;
        --base-port) base="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        --secret) secret="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "cluster.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
cargo build --release -p corecast-services --bin corecast >&2
bin=target/release/corecast
mkdir -p target/cluster
secret_flag=()
if [ -n "$secret" ]; then secret_flag=(--secret "$secret"); fi

pids=()
stop() {
    echo "stopping ${#pids[@]} members" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT INT TERM

first="127.0.0.1:$base"
for ((i = 0; i < members; i++)); do
    addr="127.0.0.1:$((base + 10 * i))"
    seeds=()
    if [ "$i" -gt 0 ]; then seeds=(--seeds "$first"); fi
    "$bin" member --bind "$addr" --shards "$shards" "${seeds[@]}" "${secret_flag[@]}" "${extra[@]}" \
        > "target/cluster/member-$i.log" 2>&1 &
    pids+=($!)
    # Wait for the join line before starting the next one, so the first is the master.
    for _ in $(seq 1 100); do
        if grep -q "joined the cluster" "target/cluster/member-$i.log"; then break; fi
        if ! kill -0 "${pids[-1]}" 2>/dev/null; then
            echo "member $i did not start:" >&2; tail -3 "target/cluster/member-$i.log" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "member $i: $addr (shard ports $((base + 10 * i))-$((base + 10 * i + shards - 1))), log target/cluster/member-$i.log" >&2
done
"$bin" cluster status --members "$first" "${secret_flag[@]}"
echo "cluster up; try: $bin client --members $first counter inc 0counter   (Ctrl-C stops it)" >&2
wait
