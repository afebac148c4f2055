#!/usr/bin/env bash
# corecast against redis-server on this machine, one after the other, with the same load:
# clients, pipeline depth, value size, key space and operation (SET/GET/INCR =
# map-put/map-get/map-incr).
# Prints one table: ops/s, p50 and p99, the server's CPU use and its throughput per CPU-second
# for each, and corecast ÷ redis.
#
#   scripts/bench-vs-redis.sh [--cases "50x1 50x16 1x1"] [--value-size 100] [--keys 100000]
#                             [--seconds 5] [--corecast-connections 2] [--quick]
#
# A case CxP is C connections with P requests each in flight (1x1: serial, one request at a
# time). Per core: the corecast member runs one shard (one core) and redis-server its one main
# thread (io-threads 1); the load generators run on the same machine, so each server gets what
# its load generator leaves of the two cores: "ops per CPU-s" (operations ÷ the server process's
# CPU time, from /proc) is the per-core throughput, ops/s the throughput on this machine.
# redis-benchmark holds C connections; corecast-bench holds `--corecast-connections` (at most
# C × P) smart-client connections with the same number of operations in flight in all. Then the
# same redis-benchmark, same flags, against a one-shard corecast member's Redis front door
# (`--resp-port`): SET, GET and INCR on both, the fairest comparison (same client, same
# connections). Installs redis-server and redis-benchmark with apt-get if absent.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="50x1 50x16 1x1" value_size=100 keys=100000 seconds=5 connections=2
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) cases=$2; shift 2 ;;
        --value-size) value_size=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --corecast-connections) connections=$2; shift 2 ;;
        --quick) seconds=1; keys=10000; cases="50x16"; shift ;;
        *) echo "bench-vs-redis: unknown argument $1" >&2; exit 2 ;;
    esac
done
for n in "$value_size" "$keys" "$connections" "$seconds"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-redis: expected a positive integer, got '$n'" >&2; exit 2; }
done
for c in $cases; do
    [[ "$c" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "bench-vs-redis: a case is CONNECTIONSxPIPELINE (like 50x16), got '$c'" >&2; exit 2; }
done

scripts/install-redis.sh

echo "== building corecast (release)" >&2
cargo build --release -q -p corecast-services -p corecast-bench --bins

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# CPU seconds (user + system, all threads) process $1 has used; USER_HZ is 100 on Linux.
cpu_secs() { awk '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / 100 }' "/proc/$1/stat"; }

out=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$out"; }
trap cleanup EXIT

# One redis-benchmark test against the server $pid on $port: a table row (op, case, system, in
# flight, ops/s, p50 and p99 in µs, the server's CPU seconds and the run's wall seconds).
benchmark() {
    local system=$1 pid=$2 port=$3 test=$4 clients=$5 pipeline=$6 requests=$7
    local cpu0 cpu1 t0 t1
    cpu0=$(cpu_secs "$pid") t0=$(date +%s.%N)
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -P "$pipeline" -d "$value_size" \
        -r "$keys" -n "$requests" -t "$test" --csv -q 2>/dev/null > "$out/bench.csv"
    cpu1=$(cpu_secs "$pid") t1=$(date +%s.%N)
    python3 - "$out/bench.csv" "${clients}x$pipeline" "$system" "$cpu0" "$cpu1" "$t0" "$t1" <<'PY'
import csv, sys
path, case, system, cpu0, cpu1, t0, t1 = sys.argv[1:8]
for r in csv.DictReader(open(path)):
    op = r["test"]
    if op in ("SET", "GET", "INCR"):
        print("\t".join([op, case, system, case.replace("x", " conn x "), r["rps"],
                         str(float(r["p50_latency_ms"]) * 1000),
                         str(float(r["p99_latency_ms"]) * 1000),
                         str(float(cpu1) - float(cpu0)), str(float(t1) - float(t0))]))
PY
}

# Waits until the member's log says `$2`.
await_log() {
    for _ in $(seq 1 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
    echo "bench-vs-redis: the member did not start ($1):" >&2
    tail -5 "$1" >&2
    exit 1
}

rows="$out/rows.tsv"
: > "$rows"
redis_version=$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')

for case in $cases; do
    clients=${case%x*} pipeline=${case#*x}
    inflight=$((clients * pipeline))
    # About `seconds` of requests per test at the rates these loads reach here.
    if [ "$pipeline" -gt 1 ]; then rate=800000; elif [ "$clients" -gt 1 ]; then rate=150000; else rate=40000; fi
    requests=$((seconds * rate))

    # redis: a fresh server per case; SET first, so GET finds the keys.
    port=$(free_port)
    redis-server --port "$port" --save "" --appendonly no --io-threads 1 --daemonize no \
        > "$out/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "== redis-benchmark -c $clients -P $pipeline -d $value_size -r $keys -n $requests" >&2
    for test in set get incr; do
        benchmark redis "${pids[-1]}" "$port" "$test" "$clients" "$pipeline" "$requests" >> "$rows"
    done
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true

    # corecast: a one-shard member, backup-count 0 (redis keeps no replica either).
    base=$(free_port)
    target/release/corecast member --bind "127.0.0.1:$base" --shards 1 --backup-count 0 \
        > "$out/member.log" 2>&1 &
    pids+=($!)
    await_log "$out/member.log" "joined the cluster"
    conns=$(( connections < inflight ? connections : inflight ))
    callers=$(( (inflight + conns - 1) / conns ))
    echo "== corecast-bench --connections $conns --callers $callers (in flight $inflight)" >&2
    RUST_LOG=error target/release/corecast-bench --members "127.0.0.1:$base" \
        --workloads map-put,map-get,map-incr --connections "$conns" --threads 1 \
        --callers "$callers" --value-size "$value_size" --keys "$keys" \
        --duration "$seconds" --warmup 1 --no-baseline --output "$out/corecast" \
        --server-pid "${pids[-1]}" --set io-memory-kib=256 > "$out/corecast.txt"
    kill "${pids[-1]}" 2>/dev/null || true
    python3 - "$out/corecast/summary.json" "$case" "$conns" "$callers" >> "$rows" <<'PY'
import json, sys
path, case, conns, callers = sys.argv[1:5]
s = json.load(open(path))
for r in s["results"]:
    op = {"map-put": "SET", "map-get": "GET", "map-incr": "INCR"}.get(r["workload"])
    if op and r["target"] == "corecast":
        p = dict(r["percentiles"])
        print("\t".join([op, case, "corecast", f"{conns} conn x {callers}",
                         str(r["ops_per_sec"]), str(p["p50"] / 1000), str(p["p99"] / 1000),
                         str(r["server_cpu_secs"]), str(r["count"] / r["ops_per_sec"])]))
PY

    # corecast's Redis front door, driven by the same redis-benchmark with the same flags.
    base=$(free_port)
    resp=$(free_port)
    target/release/corecast member --bind "127.0.0.1:$base" --shards 1 --backup-count 0 \
        --resp-port "$resp" > "$out/resp-member.log" 2>&1 &
    pids+=($!)
    await_log "$out/resp-member.log" "serving the Redis protocol"
    echo "== redis-benchmark against corecast's RESP port: -c $clients -P $pipeline" >&2
    for test in set get incr; do
        benchmark corecast-resp "${pids[-1]}" "$resp" "$test" "$clients" "$pipeline" "$requests" >> "$rows"
    done
    kill "${pids[-1]}" 2>/dev/null || true
done

cores=$(nproc)
echo
echo "corecast vs redis on $cores cores: corecast member 1 shard, redis-server $redis_version (1 thread);"
echo "values $value_size B, $keys keys, ~$seconds s per run, load generators on the same machine;"
echo "corecast: corecast-bench through the smart client; corecast-resp: redis-benchmark on corecast's RESP port;"
echo "cores: the server's CPU time / wall time; ops/CPU-s: operations per second of server CPU (per core)"
python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
fmt = "{:<4} {:<6} {:<13} {:<16} {:>12} {:>9} {:>9} {:>6} {:>12}"
print(fmt.format("op", "case", "system", "in flight", "ops/s", "p50 us", "p99 us", "cores", "ops/CPU-s"))
ratio = lambda a, b: f"{a / max(b, 1e-9):.2f}x"
def numbers(r):
    ops, p50, p99, cpu, wall = (float(x) for x in r[4:9])
    return ops, p50, p99, cpu / max(wall, 1e-9), ops * wall / max(cpu, 1e-9)
for op in ("SET", "GET", "INCR"):
    for case in dict.fromkeys(r[1] for r in rows):
        pair = {r[2]: r for r in rows if r[0] == op and r[1] == case}
        for system in ("redis", "corecast", "corecast-resp"):
            r = pair.get(system)
            if r:
                ops, p50, p99, cores, per_cpu = numbers(r)
                print(fmt.format(op, case, system, r[3], f"{ops:,.0f}", f"{p50:.1f}",
                                 f"{p99:.1f}", f"{cores:.2f}", f"{per_cpu:,.0f}"))
        for system in ("corecast", "corecast-resp"):
            if "redis" in pair and system in pair:
                a, b = numbers(pair[system]), numbers(pair["redis"])
                print(fmt.format("", "", "ratio", f"{system}/redis", ratio(a[0], b[0]),
                                 ratio(a[1], b[1]), ratio(a[2], b[2]), "", ratio(a[4], b[4])))
PY
