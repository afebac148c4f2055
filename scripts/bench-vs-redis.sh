#!/usr/bin/env bash
# corecast against redis-server on this machine, one after the other, with the same load:
# clients, pipeline depth, value size, key space and operation (SET/GET = map-put/map-get).
# Prints one table: ops/s, p50 and p99 for each, and corecast ÷ redis.
#
#   scripts/bench-vs-redis.sh [--clients 50] [--pipelines "1 16"] [--value-size 100]
#                             [--keys 100000] [--seconds 5] [--corecast-connections 2] [--quick]
#
# Per core: the corecast member runs one shard (one core) and redis-server its one main thread
# (io-threads 1); the load generators run on the same machine. redis-benchmark holds `clients`
# connections with `pipeline` requests each in flight; corecast-bench holds
# `--corecast-connections` connections (one smart client each) with the same number of
# operations in flight in all. Then the same redis-benchmark, same flags, against a one-shard
# corecast member's Redis front door (`--resp-port`): SET, GET and INCR on both, the fairest
# comparison (same client, same connections). Installs redis-server and redis-benchmark with
# apt-get if absent.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=50 pipelines="1 16" value_size=100 keys=100000 seconds=5 connections=2
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --pipelines) pipelines=$2; shift 2 ;;
        --value-size) value_size=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --corecast-connections) connections=$2; shift 2 ;;
        --quick) seconds=1; keys=10000; pipelines="16"; shift ;;
        *) echo "bench-vs-redis: unknown argument $1" >&2; exit 2 ;;
    esac
done
for n in "$clients" "$value_size" "$keys" "$connections"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-redis: expected a positive integer, got '$n'" >&2; exit 2; }
done

scripts/install-redis.sh

echo "== building corecast (release)" >&2
cargo build --release -q -p corecast-services --bin corecast -p corecast-bench

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

out=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$out"; }
trap cleanup EXIT

# redis-benchmark's CSV as table rows: op, pipeline, system, in flight, ops/s, p50 and p99 (µs).
benchmark_rows() {
    python3 - "$@" <<'PY'
import csv, sys
path, pipeline, clients, system = sys.argv[1:5]
for r in csv.DictReader(open(path)):
    op = {"SET": "SET", "GET": "GET", "INCR": "INCR"}.get(r["test"])
    if op:
        print("\t".join([op, pipeline, system, f"{clients} conn x {pipeline}",
                         str(float(r["rps"])), str(float(r["p50_latency_ms"]) * 1000),
                         str(float(r["p99_latency_ms"]) * 1000)]))
PY
}

rows="$out/rows.tsv"
: > "$rows"
redis_version=$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')

for pipeline in $pipelines; do
    inflight=$((clients * pipeline))
    # redis: a fresh server per pipeline depth; SET first, so GET finds the keys.
    port=$(free_port)
    redis-server --port "$port" --save "" --appendonly no --io-threads 1 --daemonize no \
        > "$out/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    # About `seconds` of requests at the rate the last run reached (at least 100k).
    requests=$((seconds * (pipeline > 1 ? 800000 : 150000)))
    echo "== redis-benchmark -c $clients -P $pipeline -d $value_size -r $keys -n $requests" >&2
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -P "$pipeline" -d "$value_size" \
        -r "$keys" -n "$requests" -t set,get,incr --csv -q > "$out/redis.csv"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    benchmark_rows "$out/redis.csv" "$pipeline" "$clients" redis >> "$rows"

    # corecast: a one-shard member, backup-count 0 (redis keeps no replica either).
    base=$(free_port)
    target/release/corecast member --bind "127.0.0.1:$base" --shards 1 --backup-count 0 \
        > "$out/member.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q "joined the cluster" "$out/member.log" && break; sleep 0.1; done
    callers=$(( (inflight + connections - 1) / connections ))
    echo "== corecast-bench --connections $connections --callers $callers (in flight $inflight)" >&2
    RUST_LOG=error target/release/corecast-bench --members "127.0.0.1:$base" \
        --workloads map-put,map-get --connections "$connections" --threads 1 \
        --callers "$callers" --value-size "$value_size" --keys "$keys" \
        --duration "$seconds" --warmup 1 --no-baseline --output "$out/corecast" \
        --set io-memory-kib=256 > "$out/corecast.txt"
    kill "${pids[-1]}" 2>/dev/null || true

    # corecast's Redis front door, driven by the same redis-benchmark with the same flags.
    base=$(free_port)
    resp=$(free_port)
    target/release/corecast member --bind "127.0.0.1:$base" --shards 1 --backup-count 0 \
        --resp-port "$resp" > "$out/resp-member.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q "serving the Redis protocol" "$out/resp-member.log" && break; sleep 0.1; done
    echo "== redis-benchmark against corecast's RESP port: -c $clients -P $pipeline" >&2
    redis-benchmark -h 127.0.0.1 -p "$resp" -c "$clients" -P "$pipeline" -d "$value_size" \
        -r "$keys" -n "$requests" -t set,get,incr --csv -q 2>/dev/null > "$out/resp.csv"
    kill "${pids[-1]}" 2>/dev/null || true
    benchmark_rows "$out/resp.csv" "$pipeline" "$clients" corecast-resp >> "$rows"
    python3 - "$out/corecast/summary.json" "$pipeline" "$connections" "$callers" >> "$rows" <<'PY'
import json, sys
path, pipeline, conns, callers = sys.argv[1:5]
s = json.load(open(path))
for r in s["results"]:
    op = {"map-put": "SET", "map-get": "GET"}.get(r["workload"])
    if op and r["target"] == "corecast":
        p = dict(r["percentiles"])
        print("\t".join([op, pipeline, "corecast", f"{conns} conn x {callers}",
                         str(r["ops_per_sec"]), str(p["p50"] / 1000), str(p["p99"] / 1000)]))
PY
done

cores=$(nproc)
echo
echo "corecast vs redis on $cores cores: corecast member 1 shard, redis-server $redis_version (1 thread);"
echo "$clients clients, values $value_size B, $keys keys, ~$seconds s per run, load generators on the same machine;"
echo "corecast: corecast-bench through the smart client; corecast-resp: redis-benchmark on corecast's RESP port"
python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
fmt = "{:<4} {:>8} {:<13} {:<16} {:>12} {:>10} {:>10}"
print(fmt.format("op", "pipeline", "system", "in flight", "ops/s", "p50 us", "p99 us"))
ratio = lambda a, b: f"{float(a) / max(float(b), 1e-9):.2f}x"
for op in ("SET", "GET", "INCR"):
    for pipeline in dict.fromkeys(r[1] for r in rows):
        pair = {r[2]: r for r in rows if r[0] == op and r[1] == pipeline}
        for system in ("redis", "corecast", "corecast-resp"):
            r = pair.get(system)
            if r:
                print(fmt.format(op, pipeline, system, r[3], f"{float(r[4]):,.0f}",
                                 f"{float(r[5]):.1f}", f"{float(r[6]):.1f}"))
        for system in ("corecast", "corecast-resp"):
            if "redis" in pair and system in pair:
                rd, cc = pair["redis"], pair[system]
                print(fmt.format("", "", "ratio", f"{system}/redis", ratio(cc[4], rd[4]),
                                 ratio(cc[5], rd[5]), ratio(cc[6], rd[6])))
PY
